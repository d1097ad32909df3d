//! The netlink reducer fed with recorded kernel messages (fixtures/README.md says how they
//! were recorded) and with messages built byte by byte for the kinds this kernel cannot
//! create.

use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::link::LinkAttribute;
use skydive_graph::{Map, Value};

use super::reducer::{Changes, NsModel};

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn parse(bytes: &[u8]) -> RouteNetlinkMessage {
    match NetlinkMessage::<RouteNetlinkMessage>::deserialize(bytes)
        .unwrap()
        .payload
    {
        NetlinkPayload::InnerMessage(m) => m,
        other => panic!("not an rtnetlink message: {other:?}"),
    }
}

fn fixture(name: &str) -> Vec<Vec<u8>> {
    let text = match name {
        "link" => include_str!("fixtures/ns-link.hex"),
        "addr" => include_str!("fixtures/ns-addr.hex"),
        "route" => include_str!("fixtures/ns-route.hex"),
        "neigh" => include_str!("fixtures/ns-neigh.hex"),
        _ => unreachable!(),
    };
    text.lines().filter(|l| !l.is_empty()).map(hex).collect()
}

fn recorded_model() -> NsModel {
    let mut m = NsModel::new();
    for kind in ["link", "addr", "route", "neigh"] {
        for b in fixture(kind) {
            m.apply(&parse(&b));
        }
    }
    m
}

fn by_name(m: &NsModel, name: &str) -> (u32, Map) {
    let i = m
        .links
        .values()
        .find(|l| l.name == name)
        .unwrap_or_else(|| panic!("no {name}"))
        .index;
    (i, m.metadata(i).unwrap())
}

fn s<'a>(m: &'a Map, k: &str) -> &'a str {
    m.get_path(k)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no string {k} in {m:?}"))
}

fn int(m: &Map, k: &str) -> i64 {
    m.get_path(k)
        .and_then(Value::as_i64)
        .unwrap_or_else(|| panic!("no integer {k} in {m:?}"))
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn recorded_links_get_skydive_types_and_metadata() {
    let m = recorded_model();
    assert_eq!(m.links.len(), 7);
    let (_, lo) = by_name(&m, "lo");
    assert_eq!(
        (s(&lo, "Type"), s(&lo, "EncapType")),
        ("device", "loopback")
    );
    assert_eq!(strings(lo.get("IPV4")), vec!["127.0.0.1/8"]);
    assert_eq!(strings(lo.get("LinkFlags")), vec!["UP", "LOOPBACK"]);

    let (veth, v) = by_name(&m, "veth0");
    assert_eq!(s(&v, "Type"), "veth");
    assert_eq!(s(&v, "MAC"), "02:00:00:00:00:01");
    assert_eq!(int(&v, "MTU"), 1500);
    assert_eq!(s(&v, "EncapType"), "ether");
    assert_eq!(strings(v.get("IPV4")), vec!["169.254.20.1/24"]);
    assert!(strings(v.get("IPV6")).contains(&"2001:db8::1/64".to_string()));
    // The peer is in another namespace: its index there, and the nsid of that namespace.
    assert!(v.get("PeerIfIndex").is_some());
    assert!(v.get("LinkNetNsID").is_some());
    assert!(v.get("ParentIndex").is_none());

    let (br, b) = by_name(&m, "br0");
    assert_eq!(s(&b, "Type"), "bridge");
    let (_, tap) = by_name(&m, "tap0");
    assert_eq!(s(&tap, "Type"), "tap");
    assert_eq!(int(&tap, "MasterIndex"), br as i64);
    let (_, tun) = by_name(&m, "tun0");
    assert_eq!((s(&tun, "Type"), s(&tun, "EncapType")), ("tun", "none"));
    assert_eq!(s(&tun, "State"), "DOWN");

    let (_, vx) = by_name(&m, "vx0");
    assert_eq!(s(&vx, "Type"), "vxlan");
    assert_eq!(int(&vx, "VNI"), 42);
    assert_eq!(
        int(&vx, "ParentIndex"),
        veth as i64,
        "vxlan → its lower device"
    );
    let (_, mv) = by_name(&m, "mv0");
    assert_eq!(s(&mv, "Type"), "macvlan");
    assert_eq!(int(&mv, "ParentIndex"), veth as i64);
}

#[test]
fn recorded_routes_and_neighbours_hang_on_their_interface() {
    let m = recorded_model();
    let (_, v) = by_name(&m, "veth0");
    let tables = v.get("RoutingTables").and_then(Value::as_array).unwrap();
    let table = |id: i64| {
        tables
            .iter()
            .find(|t| t.as_map().unwrap().get("ID") == Some(&Value::Int(id)))
            .unwrap_or_else(|| panic!("no table {id} in {tables:?}"))
            .as_map()
            .unwrap()
            .clone()
    };
    let t100 = table(100);
    let routes = t100.get("Routes").and_then(Value::as_array).unwrap();
    assert_eq!(routes.len(), 1);
    let r = routes[0].as_map().unwrap();
    assert_eq!(s(r, "Prefix"), "192.0.2.0/24");
    let hop = r.get("NextHops").and_then(Value::as_array).unwrap()[0]
        .as_map()
        .unwrap()
        .clone();
    assert_eq!(s(&hop, "IP"), "169.254.20.254");
    assert_eq!(
        s(&hop, "MAC"),
        "02:00:00:00:00:fe",
        "the gateway's MAC from the neighbour table"
    );
    let main = table(254);
    let metric50 = main
        .get("Routes")
        .and_then(Value::as_array)
        .unwrap()
        .iter()
        .map(|r| r.as_map().unwrap().clone())
        .find(|r| s(r, "Prefix") == "198.51.100.0/24")
        .unwrap();
    assert_eq!(
        int(&metric50, "Protocol"),
        3,
        "RTPROT_BOOT, as `ip route add` sets it"
    );
    let hop = metric50.get("NextHops").and_then(Value::as_array).unwrap()[0]
        .as_map()
        .unwrap()
        .clone();
    assert_eq!(int(&hop, "Priority"), 50);
    let neighbors = v.get("Neighbors").and_then(Value::as_array).unwrap();
    let n = neighbors
        .iter()
        .map(|n| n.as_map().unwrap().clone())
        .find(|n| n.get("IP").and_then(Value::as_str) == Some("169.254.20.254"))
        .unwrap();
    assert_eq!(s(&n, "MAC"), "02:00:00:00:00:fe");
    assert_eq!(strings(n.get("State")), vec!["NUD_PERMANENT"]);
}

/// The same bytes as a different message type (`RTM_NEW*` → `RTM_DEL*`).
fn retype(b: &[u8], ty: u16) -> Vec<u8> {
    let mut b = b.to_vec();
    b[4..6].copy_from_slice(&ty.to_ne_bytes());
    b
}

const RTM_DELLINK: u16 = 17;
const RTM_DELADDR: u16 = 21;
const RTM_DELROUTE: u16 = 25;
const RTM_DELNEIGH: u16 = 29;

#[test]
fn deletions_change_exactly_what_they_touch() {
    let mut m = recorded_model();
    let (veth, _) = by_name(&m, "veth0");
    // The IPv4 address goes.
    let addr = fixture("addr")
        .into_iter()
        .find(|b| matches!(parse(b), RouteNetlinkMessage::NewAddress(a) if a.header.index == veth && a.header.prefix_len == 24))
        .unwrap();
    let c = m.apply(&parse(&retype(&addr, RTM_DELADDR)));
    assert_eq!(c.changed.into_iter().collect::<Vec<_>>(), vec![veth]);
    assert!(
        m.metadata(veth).unwrap().get("IPV4").is_none(),
        "the key goes with the last address"
    );
    // Deleting it again changes nothing.
    assert!(m.apply(&parse(&retype(&addr, RTM_DELADDR))).is_empty());
    // The table-100 route goes.
    let route = fixture("route")
        .into_iter()
        .find(|b| matches!(parse(b), RouteNetlinkMessage::NewRoute(r) if r.header.table == 100))
        .unwrap();
    assert!(
        m.apply(&parse(&retype(&route, RTM_DELROUTE)))
            .changed
            .contains(&veth)
    );
    let tables = m.metadata(veth).unwrap();
    let ids: Vec<i64> = tables
        .get("RoutingTables")
        .and_then(Value::as_array)
        .unwrap()
        .iter()
        .filter_map(|t| t.as_map().unwrap().get("ID").and_then(Value::as_i64))
        .collect();
    assert!(!ids.contains(&100), "{ids:?}");
    // The neighbour goes.
    let neigh = fixture("neigh")
        .into_iter()
        .find(|b| matches!(parse(b), RouteNetlinkMessage::NewNeighbour(n) if n.header.ifindex == veth))
        .unwrap();
    assert!(
        m.apply(&parse(&retype(&neigh, RTM_DELNEIGH)))
            .changed
            .contains(&veth)
    );
    // The link goes, with everything that hung on it.
    let link = fixture("link")
        .into_iter()
        .find(|b| matches!(parse(b), RouteNetlinkMessage::NewLink(l) if l.header.index == veth))
        .unwrap();
    let c = m.apply(&parse(&retype(&link, RTM_DELLINK)));
    assert_eq!(c.removed.into_iter().collect::<Vec<_>>(), vec![veth]);
    assert!(m.metadata(veth).is_none());
    assert!(
        m.routes
            .values()
            .all(|r| r.nexthops.iter().all(|h| h.ifindex != veth))
    );
    assert!(!m.addrs.contains_key(&veth));
}

#[test]
fn renames_mac_and_state_changes_are_updates() {
    let mut m = recorded_model();
    let (veth, _) = by_name(&m, "veth0");
    let link = fixture("link")
        .into_iter()
        .map(|b| parse(&b))
        .find(|msg| matches!(msg, RouteNetlinkMessage::NewLink(l) if l.header.index == veth))
        .unwrap();
    // The same message again: nothing changes.
    assert!(m.apply(&link).is_empty());
    let RouteNetlinkMessage::NewLink(mut l) = link else {
        unreachable!()
    };
    for a in &mut l.attributes {
        match a {
            LinkAttribute::IfName(n) => *n = "eth-renamed".into(),
            LinkAttribute::Address(mac) => *mac = vec![2, 0, 0, 0, 0, 0x99],
            LinkAttribute::Mtu(mtu) => *mtu = 9000,
            _ => {}
        }
    }
    let c = m.apply(&RouteNetlinkMessage::NewLink(l));
    assert_eq!(
        c,
        Changes {
            changed: [veth].into_iter().collect(),
            removed: Default::default()
        }
    );
    let md = m.metadata(veth).unwrap();
    assert_eq!(s(&md, "Name"), "eth-renamed");
    assert_eq!(s(&md, "MAC"), "02:00:00:00:00:99");
    assert_eq!(int(&md, "MTU"), 9000);
    assert_eq!(
        strings(md.get("IPV4")),
        vec!["169.254.20.1/24"],
        "addresses stay"
    );
}

/// An rtnetlink message built from the uapi layouts: `nlmsghdr` (16 bytes), `ifinfomsg`
/// (family u8, pad, type u16, index i32, flags u32, change u32), then attributes.
struct LinkBytes {
    attrs: Vec<u8>,
    index: i32,
    arphrd: u16,
}

fn nla(ty: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&((4 + payload.len()) as u16).to_ne_bytes());
    v.extend_from_slice(&ty.to_ne_bytes());
    v.extend_from_slice(payload);
    while v.len() % 4 != 0 {
        v.push(0);
    }
    v
}

fn cstr(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

// linux/if_link.h
const IFLA_ADDRESS: u16 = 1;
const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
const IFLA_LINK: u16 = 5;
const IFLA_MASTER: u16 = 10;
const IFLA_OPERSTATE: u16 = 16;
const IFLA_LINKINFO: u16 = 18;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const IFLA_VLAN_ID: u16 = 1;
const NLA_F_NESTED: u16 = 0x8000;
// linux/if_arp.h
const ARPHRD_ETHER: u16 = 1;
const ARPHRD_IPGRE: u16 = 778;
// linux/if.h
const IFF_UP: u32 = 0x1;
const IFF_BROADCAST: u32 = 0x2;
const IFF_MULTICAST: u32 = 0x1000;

impl LinkBytes {
    fn new(index: i32, name: &str, kind: &str, arphrd: u16) -> LinkBytes {
        let mut attrs = nla(IFLA_IFNAME, &cstr(name));
        attrs.extend(nla(IFLA_MTU, &1500u32.to_ne_bytes()));
        attrs.extend(nla(IFLA_OPERSTATE, &[6])); // IF_OPER_UP
        let mut info = nla(IFLA_INFO_KIND, &cstr(kind));
        if kind == "vlan" {
            info.extend(nla(
                IFLA_INFO_DATA | NLA_F_NESTED,
                &nla(IFLA_VLAN_ID, &100u16.to_ne_bytes()),
            ));
        }
        attrs.extend(nla(IFLA_LINKINFO | NLA_F_NESTED, &info));
        LinkBytes {
            attrs,
            index,
            arphrd,
        }
    }

    fn attr(mut self, ty: u16, payload: &[u8]) -> LinkBytes {
        self.attrs.extend(nla(ty, payload));
        self
    }

    fn message(&self) -> RouteNetlinkMessage {
        let mut body = vec![0u8, 0];
        body.extend_from_slice(&self.arphrd.to_ne_bytes());
        body.extend_from_slice(&self.index.to_ne_bytes());
        body.extend_from_slice(&(IFF_UP | IFF_BROADCAST | IFF_MULTICAST).to_ne_bytes());
        body.extend_from_slice(&0u32.to_ne_bytes());
        body.extend_from_slice(&self.attrs);
        let mut msg = Vec::new();
        msg.extend_from_slice(&((16 + body.len()) as u32).to_ne_bytes());
        msg.extend_from_slice(&16u16.to_ne_bytes()); // RTM_NEWLINK
        msg.extend_from_slice(&0u16.to_ne_bytes());
        msg.extend_from_slice(&0u32.to_ne_bytes());
        msg.extend_from_slice(&0u32.to_ne_bytes());
        msg.extend_from_slice(&body);
        parse(&msg)
    }
}

#[test]
fn kinds_this_kernel_cannot_create_are_typed_from_their_link_kind() {
    let mut m = NsModel::new();
    let mac = [2u8, 0, 0, 0, 0, 1];
    m.apply(
        &LinkBytes::new(2, "eth0", "dummy", ARPHRD_ETHER)
            .attr(IFLA_ADDRESS, &mac)
            .message(),
    );
    m.apply(
        &LinkBytes::new(3, "eth0.100", "vlan", ARPHRD_ETHER)
            .attr(IFLA_LINK, &2u32.to_ne_bytes())
            .message(),
    );
    m.apply(&LinkBytes::new(4, "bond0", "bond", ARPHRD_ETHER).message());
    m.apply(
        &LinkBytes::new(5, "eth1", "dummy", ARPHRD_ETHER)
            .attr(IFLA_MASTER, &4u32.to_ne_bytes())
            .message(),
    );
    m.apply(&LinkBytes::new(6, "gre1", "gre", ARPHRD_IPGRE).message());
    m.apply(&LinkBytes::new(7, "gnv0", "geneve", ARPHRD_ETHER).message());
    let md = |i| m.metadata(i).unwrap();
    assert_eq!(s(&md(2), "Type"), "dummy");
    assert_eq!(s(&md(2), "MAC"), "02:00:00:00:00:01");
    assert_eq!(s(&md(3), "Type"), "vlan");
    assert_eq!(int(&md(3), "Vlan"), 100);
    assert_eq!(int(&md(3), "ParentIndex"), 2);
    assert_eq!(s(&md(4), "Type"), "bond");
    assert_eq!(
        int(&md(5), "MasterIndex"),
        4,
        "a bond slave points at its bond"
    );
    assert_eq!((s(&md(6), "Type"), s(&md(6), "EncapType")), ("gre", "gre"));
    assert_eq!(s(&md(7), "Type"), "geneve");
    assert_eq!(s(&md(7), "State"), "UP");
    assert_eq!(
        strings(md(7).get("LinkFlags")),
        vec!["UP", "BROADCAST", "MULTICAST"]
    );
}

#[test]
fn bridge_port_notifications_do_not_replace_the_device() {
    let mut m = recorded_model();
    let (tap, before) = by_name(&m, "tap0");
    // RTM_NEWLINK of family AF_BRIDGE (7) for the port: the kernel sends it beside the
    // AF_UNSPEC one when a port changes.
    let mut port = LinkBytes::new(tap as i32, "tap0", "tun", ARPHRD_ETHER).message();
    if let RouteNetlinkMessage::NewLink(l) = &mut port {
        l.header.interface_family = netlink_packet_route::AddressFamily::Bridge;
    }
    assert!(m.apply(&port).is_empty());
    assert_eq!(m.metadata(tap).unwrap(), before);
}
