//! The netlink reducer: rtnetlink messages of one network namespace in, the state of its
//! interfaces out, as the metadata Skydive's netlink probe wrote.
//!
//! Pure: it keeps links, addresses, routes, neighbours and bridge FDB entries, and tells
//! which interfaces a message changed. The adapter feeds it from the kernel; the tests feed it
//! recorded messages.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use netlink_packet_route::AddressFamily;
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVlan, InfoVxlan, LinkAttribute, LinkFlags, LinkInfo, LinkLayerType,
    LinkMessage, State, Stats64,
};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteMessage, RouteType,
};
use skydive_graph::{Map, Value};

use crate::ethtool::EthtoolInfo;

/// An interface as the kernel describes it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LinkRecord {
    pub index: u32,
    pub name: String,
    /// Skydive's `Type`, from the link kind.
    pub ty: String,
    pub encap: String,
    pub mac: Option<String>,
    pub mtu: Option<u32>,
    pub flags: u32,
    pub oper_state: String,
    pub master: Option<u32>,
    /// `IFLA_LINK`: the peer of a veth, the lower device of a vlan or macvlan.
    pub link: Option<u32>,
    /// The namespace of `link`, when it is another one (an nsid of this namespace).
    pub link_netnsid: Option<i32>,
    pub vlan: Option<u16>,
    pub vni: Option<u32>,
    pub alias: Option<String>,
    pub stats: Option<Stats64>,
}

/// A route.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct RouteRecord {
    pub table: u32,
    pub prefix: String,
    pub protocol: u8,
    pub priority: u32,
    pub src: Option<String>,
    pub nexthops: Vec<NextHop>,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct NextHop {
    pub ip: Option<String>,
    pub ifindex: u32,
    pub weight: u8,
}

/// An ARP/NDP neighbour or a bridge FDB entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NeighborRecord {
    pub ifindex: u32,
    pub ip: Option<String>,
    pub mac: Option<String>,
    pub state: u16,
    pub flags: u8,
    pub vlan: Option<u16>,
    pub vni: Option<u32>,
}

type RouteKey = (u32, u8, String, u32, u8);
type NeighborKey = (u32, u8, String);

/// The interfaces of one namespace.
#[derive(Clone, Debug, Default)]
pub struct NsModel {
    pub links: BTreeMap<u32, LinkRecord>,
    /// Per interface: (family, "addr/prefix").
    pub addrs: BTreeMap<u32, BTreeSet<(u8, String)>>,
    pub routes: BTreeMap<RouteKey, RouteRecord>,
    pub neighbors: BTreeMap<NeighborKey, NeighborRecord>,
    pub fdb: BTreeMap<NeighborKey, NeighborRecord>,
    pub ethtool: BTreeMap<u32, EthtoolInfo>,
}

/// What a message changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub changed: BTreeSet<u32>,
    pub removed: BTreeSet<u32>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.changed.is_empty() && self.removed.is_empty()
    }
    pub fn merge(&mut self, other: Changes) {
        for r in &other.removed {
            self.changed.remove(r);
        }
        self.changed.extend(
            other
                .changed
                .into_iter()
                .filter(|i| !other.removed.contains(i)),
        );
        self.removed.extend(other.removed);
    }
}

/// The MAC address form Skydive uses: lowercase, colon-separated.
pub fn mac_string(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len() * 3);
    for (i, byte) in b.iter().enumerate() {
        if i > 0 {
            s.push(':');
        }
        s.push_str(&format!("{byte:02x}"));
    }
    s
}

fn encap_name(t: LinkLayerType) -> String {
    match t {
        LinkLayerType::Ether => "ether".into(),
        LinkLayerType::Loopback => "loopback".into(),
        LinkLayerType::None => "none".into(),
        LinkLayerType::Ipgre => "gre".into(),
        LinkLayerType::Tunnel => "ipip".into(),
        LinkLayerType::Tunnel6 => "tunnel6".into(),
        LinkLayerType::Sit => "sit".into(),
        LinkLayerType::Ip6gre => "ip6gre".into(),
        LinkLayerType::Void => "void".into(),
        other => format!("{other:?}").to_ascii_lowercase(),
    }
}

fn state_name(s: &State) -> String {
    match s {
        State::Up => "UP".into(),
        State::Down => "DOWN".into(),
        State::Unknown => "UNKNOWN".into(),
        State::LowerLayerDown => "LOWERLAYERDOWN".into(),
        State::NotPresent => "NOTPRESENT".into(),
        State::Testing => "TESTING".into(),
        State::Dormant => "DORMANT".into(),
        other => format!("{other:?}").to_ascii_uppercase(),
    }
}

/// `IFLA_TUN_TYPE` (attribute 3 of the tun link data, after `IFLA_TUN_OWNER` and
/// `IFLA_TUN_GROUP`): 1 is tun, 2 is tap.
fn tun_type(data: &[netlink_packet_route::link::InfoTun]) -> &'static str {
    use netlink_packet_core::Nla;
    for nla in data {
        let netlink_packet_route::link::InfoTun::Other(n) = nla else {
            continue;
        };
        if n.kind() == 3 {
            let mut v = [0u8; 1];
            if n.value_len() == 1 {
                n.emit_value(&mut v);
                return if v[0] == 2 { "tap" } else { "tun" };
            }
        }
    }
    "tun"
}

/// Reads a link message.
pub fn link_record(msg: &LinkMessage) -> LinkRecord {
    let mut r = LinkRecord {
        index: msg.header.index,
        encap: encap_name(msg.header.link_layer_type),
        flags: msg.header.flags.bits(),
        ..Default::default()
    };
    let mut kind: Option<InfoKind> = None;
    let mut tun = "tun";
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::IfName(n) => r.name = n.clone(),
            LinkAttribute::Address(a) if !a.is_empty() => r.mac = Some(mac_string(a)),
            LinkAttribute::Mtu(m) => r.mtu = Some(*m),
            LinkAttribute::OperState(s) => r.oper_state = state_name(s),
            LinkAttribute::Controller(m) if *m != 0 => r.master = Some(*m),
            LinkAttribute::Link(l) if *l != 0 => r.link = Some(*l),
            LinkAttribute::LinkNetNsId(n) => r.link_netnsid = Some(*n),
            LinkAttribute::IfAlias(a) if !a.is_empty() => r.alias = Some(a.clone()),
            LinkAttribute::Stats64(s) => r.stats = Some(*s),
            LinkAttribute::LinkInfo(infos) => {
                for info in infos {
                    match info {
                        LinkInfo::Kind(k) => kind = Some(k.clone()),
                        LinkInfo::Data(InfoData::Vlan(v)) => {
                            for i in v {
                                if let InfoVlan::Id(id) = i {
                                    r.vlan = Some(*id);
                                }
                            }
                        }
                        LinkInfo::Data(InfoData::Vxlan(v)) => {
                            for i in v {
                                match i {
                                    InfoVxlan::Id(id) => r.vni = Some(*id),
                                    InfoVxlan::Link(l) if *l != 0 => r.link = Some(*l),
                                    _ => {}
                                }
                            }
                        }
                        LinkInfo::Data(InfoData::Tun(t)) => tun = tun_type(t),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    // A device whose IFLA_LINK is itself has no lower device; in another namespace the same
    // number is another device (a veth peer is often index 2 on both sides).
    if r.link == Some(r.index) && r.link_netnsid.is_none() {
        r.link = None;
    }
    r.ty = match kind {
        None => "device".into(),
        Some(InfoKind::Tun) => tun.into(),
        Some(k) => k.to_string(),
    };
    r
}

fn family_code(f: AddressFamily) -> u8 {
    u8::from(f)
}

const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
const AF_BRIDGE: u8 = 7;

fn address_of(msg: &AddressMessage) -> Option<String> {
    let mut addr: Option<IpAddr> = None;
    let mut local: Option<IpAddr> = None;
    for a in &msg.attributes {
        match a {
            AddressAttribute::Address(ip) => addr = Some(*ip),
            AddressAttribute::Local(ip) => local = Some(*ip),
            _ => {}
        }
    }
    // For IPv4, IFA_LOCAL is the interface's address (IFA_ADDRESS is the peer's on
    // point-to-point links).
    let ip = local.or(addr)?;
    Some(format!("{ip}/{}", msg.header.prefix_len))
}

fn route_ip(a: &RouteAddress) -> Option<String> {
    match a {
        RouteAddress::Inet(ip) => Some(ip.to_string()),
        RouteAddress::Inet6(ip) => Some(ip.to_string()),
        _ => None,
    }
}

/// Reads a route message; `None` for the routes Skydive does not show (cached clones).
pub fn route_record(msg: &RouteMessage) -> Option<RouteRecord> {
    if msg.header.flags.contains(RouteFlags::Cloned) {
        return None;
    }
    let family = family_code(msg.header.address_family);
    if family != AF_INET && family != AF_INET6 {
        return None;
    }
    let mut table = u32::from(msg.header.table);
    let mut dst: Option<String> = None;
    let mut gateway: Option<String> = None;
    let mut oif = 0u32;
    let mut priority = 0u32;
    let mut src = None;
    let mut multipath = Vec::new();
    for a in &msg.attributes {
        match a {
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Destination(d) => dst = route_ip(d),
            RouteAttribute::Gateway(g) => gateway = route_ip(g),
            RouteAttribute::Oif(o) => oif = *o,
            RouteAttribute::Priority(p) => priority = *p,
            RouteAttribute::PrefSource(s) => src = route_ip(s),
            RouteAttribute::MultiPath(hops) => {
                for h in hops {
                    let ip = h.attributes.iter().find_map(|a| match a {
                        RouteAttribute::Gateway(g) => route_ip(g),
                        _ => None,
                    });
                    multipath.push(NextHop {
                        ip,
                        ifindex: h.interface_index,
                        weight: h.hops,
                    });
                }
            }
            _ => {}
        }
    }
    let dst = dst.unwrap_or_else(|| {
        if family == AF_INET {
            "0.0.0.0".into()
        } else {
            "::".into()
        }
    });
    let nexthops = if multipath.is_empty() {
        vec![NextHop {
            ip: gateway,
            ifindex: oif,
            weight: 0,
        }]
    } else {
        multipath
    };
    Some(RouteRecord {
        table,
        prefix: format!("{dst}/{}", msg.header.destination_prefix_length),
        protocol: u8::from(msg.header.protocol),
        priority,
        src,
        nexthops,
    })
}

fn route_key(msg: &RouteMessage, r: &RouteRecord) -> RouteKey {
    (
        r.table,
        family_code(msg.header.address_family),
        r.prefix.clone(),
        r.priority,
        msg.header.tos,
    )
}

fn neighbor_record(msg: &NeighbourMessage) -> NeighborRecord {
    let mut n = NeighborRecord {
        ifindex: msg.header.ifindex,
        ip: None,
        mac: None,
        state: u16::from(msg.header.state),
        flags: msg.header.flags.bits(),
        vlan: None,
        vni: None,
    };
    for a in &msg.attributes {
        match a {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => {
                n.ip = Some(ip.to_string());
            }
            NeighbourAttribute::Destination(NeighbourAddress::Inet6(ip)) => {
                n.ip = Some(ip.to_string());
            }
            NeighbourAttribute::LinkLayerAddress(m) if !m.is_empty() => n.mac = Some(mac_string(m)),
            NeighbourAttribute::Vlan(v) => n.vlan = Some(*v),
            NeighbourAttribute::Vni(v) => n.vni = Some(*v),
            _ => {}
        }
    }
    n
}

fn neighbor_key(family: u8, n: &NeighborRecord) -> NeighborKey {
    let id = match (family, &n.ip, &n.mac) {
        (AF_BRIDGE, _, Some(mac)) => format!("{mac}/{}", n.vlan.unwrap_or(0)),
        (_, Some(ip), _) => ip.clone(),
        (_, _, Some(mac)) => mac.clone(),
        _ => String::new(),
    };
    (n.ifindex, family, id)
}

impl NsModel {
    pub fn new() -> NsModel {
        NsModel::default()
    }

    /// Applies a message; returns the interfaces it changed or removed.
    pub fn apply(&mut self, msg: &RouteNetlinkMessage) -> Changes {
        let mut c = Changes::default();
        match msg {
            RouteNetlinkMessage::NewLink(l) => {
                // Bridge port notifications (family AF_BRIDGE) repeat the link with less
                // in it; the AF_UNSPEC message is the one that describes the device.
                if family_code(l.header.interface_family) == AF_BRIDGE {
                    return c;
                }
                let mut r = link_record(l);
                let old = self.links.get(&r.index);
                // Counters are polled on their own schedule (and travel in every link event).
                r.stats = old.and_then(|o| o.stats).or(r.stats);
                if old != Some(&r) {
                    c.changed.insert(r.index);
                    self.links.insert(r.index, r);
                }
            }
            RouteNetlinkMessage::DelLink(l) => {
                if family_code(l.header.interface_family) == AF_BRIDGE {
                    return c;
                }
                let i = l.header.index;
                if self.links.remove(&i).is_some() {
                    c.removed.insert(i);
                }
                self.addrs.remove(&i);
                self.ethtool.remove(&i);
                self.neighbors.retain(|k, _| k.0 != i);
                self.fdb.retain(|k, _| k.0 != i);
                let before = self.routes.len();
                let mut touched = BTreeSet::new();
                self.routes.retain(|_, r| {
                    if r.nexthops.iter().any(|h| h.ifindex == i) {
                        touched.extend(r.nexthops.iter().map(|h| h.ifindex));
                        false
                    } else {
                        true
                    }
                });
                if self.routes.len() != before {
                    c.changed.extend(
                        touched
                            .into_iter()
                            .filter(|t| *t != i && self.links.contains_key(t)),
                    );
                }
            }
            RouteNetlinkMessage::NewAddress(a) | RouteNetlinkMessage::DelAddress(a) => {
                let Some(addr) = address_of(a) else { return c };
                let fam = family_code(a.header.family);
                let set = self.addrs.entry(a.header.index).or_default();
                let changed = if matches!(msg, RouteNetlinkMessage::NewAddress(_)) {
                    set.insert((fam, addr))
                } else {
                    set.remove(&(fam, addr))
                };
                if set.is_empty() {
                    self.addrs.remove(&a.header.index);
                }
                if changed && self.links.contains_key(&a.header.index) {
                    c.changed.insert(a.header.index);
                }
            }
            RouteNetlinkMessage::NewRoute(r) | RouteNetlinkMessage::DelRoute(r) => {
                if r.header.kind == RouteType::Unspec {
                    return c;
                }
                let Some(rec) = route_record(r) else { return c };
                let key = route_key(r, &rec);
                let touched: Vec<u32> = rec.nexthops.iter().map(|h| h.ifindex).collect();
                let old = if matches!(msg, RouteNetlinkMessage::NewRoute(_)) {
                    let same = self.routes.get(&key) == Some(&rec);
                    if same {
                        return c;
                    }
                    self.routes.insert(key, rec)
                } else {
                    match self.routes.remove(&key) {
                        Some(o) => Some(o),
                        None => return c,
                    }
                };
                let mut all: BTreeSet<u32> = touched.into_iter().collect();
                if let Some(o) = old {
                    all.extend(o.nexthops.iter().map(|h| h.ifindex));
                }
                c.changed
                    .extend(all.into_iter().filter(|i| self.links.contains_key(i)));
            }
            RouteNetlinkMessage::NewNeighbour(n) | RouteNetlinkMessage::DelNeighbour(n) => {
                let fam = family_code(n.header.family);
                let rec = neighbor_record(n);
                let key = neighbor_key(fam, &rec);
                let ifindex = rec.ifindex;
                let table = if fam == AF_BRIDGE {
                    &mut self.fdb
                } else {
                    &mut self.neighbors
                };
                let changed = if matches!(msg, RouteNetlinkMessage::NewNeighbour(_)) {
                    table.insert(key, rec.clone()).as_ref() != Some(&rec)
                } else {
                    table.remove(&key).is_some()
                };
                if changed && self.links.contains_key(&ifindex) {
                    c.changed.insert(ifindex);
                }
            }
            _ => {}
        }
        c
    }

    /// The routing tables whose routes go through interface `ifindex`.
    fn routing_tables(&self, ifindex: u32) -> Option<Value> {
        let mut tables: BTreeMap<u32, Vec<Value>> = BTreeMap::new();
        for r in self.routes.values() {
            if !r.nexthops.iter().any(|h| h.ifindex == ifindex) {
                continue;
            }
            let hops: Vec<Value> = r
                .nexthops
                .iter()
                .map(|h| {
                    let mut m = Map::new();
                    m.insert("Priority", r.priority as i64);
                    if let Some(ip) = &h.ip {
                        m.insert("IP", ip.as_str());
                        // The gateway's MAC, when the neighbour table knows it.
                        let mac = self
                            .neighbors
                            .values()
                            .find(|n| n.ifindex == h.ifindex && n.ip.as_ref() == Some(ip))
                            .and_then(|n| n.mac.clone());
                        if let Some(mac) = mac {
                            m.insert("MAC", mac.as_str());
                        }
                    }
                    m.insert("IfIndex", h.ifindex as i64);
                    if h.weight != 0 {
                        m.insert("Weight", h.weight as i64 + 1);
                    }
                    Value::Map(m)
                })
                .collect();
            let mut route = Map::new();
            route.insert("Protocol", r.protocol as i64);
            route.insert("Prefix", r.prefix.as_str());
            if let Some(src) = &r.src {
                route.insert("Src", src.as_str());
            }
            route.insert("NextHops", Value::Array(hops));
            tables.entry(r.table).or_default().push(Value::Map(route));
        }
        if tables.is_empty() {
            return None;
        }
        Some(Value::Array(
            tables
                .into_iter()
                .map(|(id, routes)| {
                    let mut t = Map::new();
                    t.insert("ID", id as i64);
                    t.insert("Routes", Value::Array(routes));
                    Value::Map(t)
                })
                .collect(),
        ))
    }

    fn neighbor_list(table: &BTreeMap<NeighborKey, NeighborRecord>, ifindex: u32) -> Option<Value> {
        let list: Vec<Value> = table
            .range((ifindex, 0, String::new())..)
            .take_while(|(k, _)| k.0 == ifindex)
            .map(|(_, n)| {
                let mut m = Map::new();
                m.insert("Flags", Value::Array(neighbor_flags(n.flags)));
                if let Some(mac) = &n.mac {
                    m.insert("MAC", mac.as_str());
                }
                if let Some(ip) = &n.ip {
                    m.insert("IP", ip.as_str());
                }
                m.insert("State", Value::Array(nud_states(n.state)));
                m.insert("IfIndex", n.ifindex as i64);
                if let Some(v) = n.vlan {
                    m.insert("Vlan", v as i64);
                }
                if let Some(v) = n.vni {
                    m.insert("VNI", v as i64);
                }
                Value::Map(m)
            })
            .collect();
        (!list.is_empty()).then_some(Value::Array(list))
    }

    /// The metadata of interface `ifindex` that this probe owns (without `TID` and the
    /// cross-namespace keys, which the topology adds), or `None` if it is unknown.
    pub fn metadata(&self, ifindex: u32) -> Option<Map> {
        let l = self.links.get(&ifindex)?;
        let mut m = Map::new();
        m.insert("Name", l.name.as_str());
        m.insert("IfIndex", l.index as i64);
        m.insert("EncapType", l.encap.as_str());
        if let Some(mac) = &l.mac {
            m.insert("MAC", mac.as_str());
        }
        if let Some(mtu) = l.mtu {
            m.insert("MTU", mtu as i64);
        }
        m.insert(
            "State",
            if l.oper_state.is_empty() {
                "UNKNOWN"
            } else {
                l.oper_state.as_str()
            },
        );
        m.insert("LinkFlags", Value::Array(link_flags(l.flags)));
        if let Some(mi) = l.master {
            m.insert("MasterIndex", mi as i64);
        }
        let eth = self.ethtool.get(&ifindex);
        let mut ty = l.ty.clone();
        // As Skydive: a device whose driver is veth is a veth.
        if eth.is_some_and(|e| e.driver.as_deref() == Some("veth")) {
            ty = "veth".into();
        }
        if let Some(link) = l.link {
            if ty == "veth" {
                m.insert("PeerIfIndex", link as i64);
            } else {
                m.insert("ParentIndex", link as i64);
            }
        }
        if let Some(n) = l.link_netnsid {
            m.insert("LinkNetNsID", n as i64);
        }
        m.insert("Type", ty.as_str());
        if let Some(v) = l.vlan {
            m.insert("Vlan", v as i64);
        }
        if let Some(v) = l.vni {
            m.insert("VNI", v as i64);
        }
        if let Some(a) = &l.alias {
            m.insert("Alias", a.as_str());
        }
        if let Some(addrs) = self.addrs.get(&ifindex) {
            for (fam, key) in [(AF_INET, "IPV4"), (AF_INET6, "IPV6")] {
                let list: Vec<Value> = addrs
                    .iter()
                    .filter(|(f, _)| *f == fam)
                    .map(|(_, a)| Value::from(a.as_str()))
                    .collect();
                if !list.is_empty() {
                    m.insert(key, Value::Array(list));
                }
            }
        }
        if let Some(rt) = self.routing_tables(ifindex) {
            m.insert("RoutingTables", rt);
        }
        if let Some(n) = Self::neighbor_list(&self.neighbors, ifindex) {
            m.insert("Neighbors", n);
        }
        if let Some(n) = Self::neighbor_list(&self.fdb, ifindex) {
            m.insert("FDB", n);
        }
        if let Some(e) = eth {
            e.write_metadata(&mut m);
        }
        Some(m)
    }
}

/// `LinkFlags` as Skydive listed them.
pub fn link_flags(bits: u32) -> Vec<Value> {
    let f = LinkFlags::from_bits_retain(bits);
    [
        (LinkFlags::Up, "UP"),
        (LinkFlags::Broadcast, "BROADCAST"),
        (LinkFlags::Loopback, "LOOPBACK"),
        (LinkFlags::Pointopoint, "POINTTOPOINT"),
        (LinkFlags::Multicast, "MULTICAST"),
    ]
    .into_iter()
    .filter(|(flag, _)| f.contains(*flag))
    .map(|(_, name)| Value::from(name))
    .collect()
}

fn nud_states(state: u16) -> Vec<Value> {
    const NAMES: [(u16, &str); 8] = [
        (0x01, "NUD_INCOMPLETE"),
        (0x02, "NUD_REACHABLE"),
        (0x04, "NUD_STALE"),
        (0x08, "NUD_DELAY"),
        (0x10, "NUD_PROBE"),
        (0x20, "NUD_FAILED"),
        (0x40, "NUD_NOARP"),
        (0x80, "NUD_PERMANENT"),
    ];
    if state == 0 {
        return vec![Value::from("NUD_NONE")];
    }
    NAMES
        .iter()
        .filter(|(b, _)| state & b != 0)
        .map(|(_, n)| Value::from(*n))
        .collect()
}

fn neighbor_flags(flags: u8) -> Vec<Value> {
    let f = NeighbourFlags::from_bits_retain(flags);
    [
        (NeighbourFlags::Use, "NTF_USE"),
        (NeighbourFlags::Own, "NTF_SELF"),
        (NeighbourFlags::Controller, "NTF_MASTER"),
        (NeighbourFlags::Proxy, "NTF_PROXY"),
        (NeighbourFlags::ExtLearned, "NTF_EXT_LEARNED"),
        (NeighbourFlags::Offloaded, "NTF_OFFLOADED"),
        (NeighbourFlags::Sticky, "NTF_STICKY"),
        (NeighbourFlags::Router, "NTF_ROUTER"),
    ]
    .into_iter()
    .filter(|(flag, _)| f.contains(*flag))
    .map(|(_, name)| Value::from(name))
    .collect()
}

/// Interface counters as Skydive's `InterfaceMetric` (zero counters left out).
pub fn metric(s: &Stats64, start: i64, last: i64) -> Map {
    let mut m = Map::new();
    let fields: [(&str, u64); 23] = [
        ("Collisions", s.collisions),
        ("Multicast", s.multicast),
        ("RxBytes", s.rx_bytes),
        ("RxCompressed", s.rx_compressed),
        ("RxCrcErrors", s.rx_crc_errors),
        ("RxDropped", s.rx_dropped),
        ("RxErrors", s.rx_errors),
        ("RxFifoErrors", s.rx_fifo_errors),
        ("RxFrameErrors", s.rx_frame_errors),
        ("RxLengthErrors", s.rx_length_errors),
        ("RxMissedErrors", s.rx_missed_errors),
        ("RxOverErrors", s.rx_over_errors),
        ("RxPackets", s.rx_packets),
        ("TxAbortedErrors", s.tx_aborted_errors),
        ("TxBytes", s.tx_bytes),
        ("TxCarrierErrors", s.tx_carrier_errors),
        ("TxCompressed", s.tx_compressed),
        ("TxDropped", s.tx_dropped),
        ("TxErrors", s.tx_errors),
        ("TxFifoErrors", s.tx_fifo_errors),
        ("TxHeartbeatErrors", s.tx_heartbeat_errors),
        ("TxPackets", s.tx_packets),
        ("TxWindowErrors", s.tx_window_errors),
    ];
    for (k, v) in fields {
        if v != 0 {
            m.insert(k, v.min(i64::MAX as u64) as i64);
        }
    }
    m.insert("Start", start);
    m.insert("Last", last);
    m
}

/// The difference of two counter sets (a counter that went back, after a reset, counts
/// from zero).
pub fn delta(now: &Stats64, before: &Stats64) -> Stats64 {
    let d = |a: u64, b: u64| a.saturating_sub(b);
    let mut out = *now;
    out.rx_packets = d(now.rx_packets, before.rx_packets);
    out.tx_packets = d(now.tx_packets, before.tx_packets);
    out.rx_bytes = d(now.rx_bytes, before.rx_bytes);
    out.tx_bytes = d(now.tx_bytes, before.tx_bytes);
    out.rx_errors = d(now.rx_errors, before.rx_errors);
    out.tx_errors = d(now.tx_errors, before.tx_errors);
    out.rx_dropped = d(now.rx_dropped, before.rx_dropped);
    out.tx_dropped = d(now.tx_dropped, before.tx_dropped);
    out.multicast = d(now.multicast, before.multicast);
    out.collisions = d(now.collisions, before.collisions);
    out.rx_length_errors = d(now.rx_length_errors, before.rx_length_errors);
    out.rx_over_errors = d(now.rx_over_errors, before.rx_over_errors);
    out.rx_crc_errors = d(now.rx_crc_errors, before.rx_crc_errors);
    out.rx_frame_errors = d(now.rx_frame_errors, before.rx_frame_errors);
    out.rx_fifo_errors = d(now.rx_fifo_errors, before.rx_fifo_errors);
    out.rx_missed_errors = d(now.rx_missed_errors, before.rx_missed_errors);
    out.tx_aborted_errors = d(now.tx_aborted_errors, before.tx_aborted_errors);
    out.tx_carrier_errors = d(now.tx_carrier_errors, before.tx_carrier_errors);
    out.tx_fifo_errors = d(now.tx_fifo_errors, before.tx_fifo_errors);
    out.tx_heartbeat_errors = d(now.tx_heartbeat_errors, before.tx_heartbeat_errors);
    out.tx_window_errors = d(now.tx_window_errors, before.tx_window_errors);
    out.rx_compressed = d(now.rx_compressed, before.rx_compressed);
    out.tx_compressed = d(now.tx_compressed, before.tx_compressed);
    out
}
