//! The OVS probe's pure part: the monitored tables (and the netlink nodes of the graph) in,
//! the elements the probe owns out ([`desired`]), and the changes from what it put in the
//! graph before ([`ops`]).

use std::collections::{BTreeMap, HashMap};

use skydive_graph::{Graph, Id, Map, Value, gen_id_from};

use crate::oflow::{OfGroup, OfRule};
use crate::ovsdb::{Row, Tables, map, set, string};
use crate::topology::Op;

/// The tables and columns the probe monitors.
pub const MONITORED: &[(&str, &[&str])] = &[
    (
        "Bridge",
        &[
            "name",
            "ports",
            "external_ids",
            "other_config",
            "datapath_type",
            "protocols",
        ],
    ),
    (
        "Port",
        &[
            "name",
            "interfaces",
            "external_ids",
            "tag",
            "bond_mode",
            "lacp",
        ],
    ),
    (
        "Interface",
        &[
            "name",
            "type",
            "options",
            "external_ids",
            "ofport",
            "mac_in_use",
            "ifindex",
            "error",
        ],
    ),
    (
        "Open_vSwitch",
        &["ovs_version", "db_version", "other_config", "external_ids"],
    ),
];

/// The monitored tables and columns; with `stats` (`ovs.enable_stats`), the interfaces'
/// `statistics` too (OVS refreshes them every `stats-update-interval`, 5 s by default).
pub fn monitored(stats: bool) -> Vec<(&'static str, Vec<&'static str>)> {
    MONITORED
        .iter()
        .map(|(table, cols)| {
            let mut c = cols.to_vec();
            if stats && *table == "Interface" {
                c.push("statistics");
            }
            (*table, c)
        })
        .collect()
}

/// OVS interface statistics and the names Skydive gives them in `Ovs.Metric`.
const STATISTICS: [(&str, &str); 12] = [
    ("collisions", "Collisions"),
    ("rx_bytes", "RxBytes"),
    ("rx_crc_err", "RxCrcErrors"),
    ("rx_dropped", "RxDropped"),
    ("rx_errors", "RxErrors"),
    ("rx_frame_err", "RxFrameErrors"),
    ("rx_over_err", "RxOverErrors"),
    ("rx_packets", "RxPackets"),
    ("tx_bytes", "TxBytes"),
    ("tx_dropped", "TxDropped"),
    ("tx_errors", "TxErrors"),
    ("tx_packets", "TxPackets"),
];

/// `Ovs.Metric` and `Ovs.LastUpdateMetric` of an interface from its `statistics`: the counters,
/// and what they grew by since the previous ones (`prev`, the `Ovs` map the probe wrote
/// before). Unchanged counters give the previous maps back, times included, so that an
/// unchanged row changes nothing in the graph.
fn interface_metrics(row: &Row, prev: Option<&Map>, now: i64) -> Option<(Value, Value)> {
    row.get("statistics")?;
    let stats = map(row, "statistics");
    let mut metric = Map::new();
    for (ovs, ours) in STATISTICS {
        if let Some(v) = stats.get(ovs).and_then(|v| v.parse::<i64>().ok()) {
            metric.insert(ours, Value::Int(v));
        }
    }
    if metric.is_empty() {
        return None;
    }
    let prev_metric = prev.and_then(|p| p.get("Metric")).and_then(Value::as_map);
    let counters_of = |m: &Map| -> Vec<(String, i64)> {
        m.iter()
            .filter(|(k, _)| !matches!(k.as_str(), "Start" | "Last"))
            .filter_map(|(k, v)| Some((k.to_string(), v.as_i64()?)))
            .collect()
    };
    if let Some(pm) = prev_metric
        && counters_of(pm) == counters_of(&metric)
        && let Some(pl) = prev.and_then(|p| p.get("LastUpdateMetric"))
    {
        return Some((Value::Map(pm.clone()), pl.clone()));
    }
    let start = prev_metric
        .and_then(|m| m.get("Last"))
        .and_then(Value::as_i64)
        .unwrap_or(now);
    let mut delta = Map::new();
    for (k, v) in counters_of(&metric) {
        let was = prev_metric
            .and_then(|m| m.get(&k))
            .and_then(Value::as_i64)
            .unwrap_or(0);
        delta.insert(k.as_str(), Value::Int((v - was).max(0)));
    }
    for m in [&mut metric, &mut delta] {
        m.insert("Start", Value::Int(start));
        m.insert("Last", Value::Int(now));
    }
    Some((Value::Map(metric), Value::Map(delta)))
}

/// OpenFlow rules and groups by bridge UUID (with `ovs.oflow.enable`).
pub type OfTables = BTreeMap<String, (Vec<OfRule>, Vec<OfGroup>)>;

/// What the probe puts in the graph.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OvsState {
    /// Nodes of the probe's own, with their metadata.
    pub created: BTreeMap<Id, Map>,
    /// Netlink nodes the probe adds keys to, with those keys.
    pub merged: BTreeMap<Id, Map>,
    /// Edges: (parent, child, metadata).
    pub edges: BTreeMap<Id, (Id, Id, Map)>,
}

fn str_map(m: BTreeMap<String, String>) -> Value {
    let mut out = Map::new();
    for (k, v) in m {
        out.insert(k.as_str(), v.as_str());
    }
    Value::Map(out)
}

fn edge(state: &mut OvsState, parent: &Id, child: &Id, relation: &str, extra: &[(&str, &str)]) {
    let id = gen_id_from(&[parent.as_str(), child.as_str(), relation]);
    let mut m = Map::new();
    m.insert("RelationType", relation);
    for (k, v) in extra {
        m.insert(*k, *v);
    }
    state.edges.insert(id, (parent.clone(), child.clone(), m));
}

/// The netlink node of an OVS interface: the interface of the host's namespace with its
/// name, or, when it was moved into another namespace (an internal port given to a
/// container), the interface anywhere with its name and MAC; when OVSDB no longer shows the
/// MAC of a moved internal port (the userspace datapath forgets it), the only tap or
/// internal device anywhere with its name.
fn netlink_node(g: &Graph, host: &Id, name: &str, mac: Option<&str>, internal: bool) -> Option<Id> {
    let candidates: Vec<&std::sync::Arc<skydive_graph::Node>> = g
        .index_lookup("Name", name)
        .into_iter()
        .flatten()
        .filter(|n| !matches!(n.type_str(), "ovsbridge" | "ovsport" | "host" | "netns"))
        .filter(|n| n.metadata.get("IfIndex").is_some())
        .collect();
    let host_owned = |n: &skydive_graph::Node| {
        g.in_edges(&n.id)
            .any(|e| e.relation_type() == "ownership" && &e.parent == host)
    };
    candidates
        .iter()
        .find(|n| host_owned(n))
        .or_else(|| {
            let mac = mac?;
            candidates
                .iter()
                .find(|n| n.str_at("MAC").is_some_and(|m| m.eq_ignore_ascii_case(mac)))
        })
        .or_else(|| {
            if !internal || mac.is_some() {
                return None;
            }
            let mut taps = candidates.iter().filter(|n| {
                matches!(n.type_str(), "tap" | "tun" | "internal")
                    || n.str_at("Driver") == Some("openvswitch")
            });
            let only = taps.next()?;
            taps.next().is_none().then_some(only)
        })
        .map(|n| n.id.clone())
}

/// Whether `prefix` (`a.b.c.d/len`, `x::/len`) holds `ip`; the prefix length when it does.
pub(super) fn prefix_holds(prefix: &str, ip: std::net::IpAddr) -> Option<u8> {
    use std::net::IpAddr;
    let (net, len) = prefix.split_once('/').unwrap_or((prefix, ""));
    let net: IpAddr = net.parse().ok()?;
    let (a, b, bits) = match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(i)) => (u32::from(n) as u128, u32::from(i) as u128, 32u8),
        (IpAddr::V6(n), IpAddr::V6(i)) => (u128::from(n), u128::from(i), 128u8),
        _ => return None,
    };
    let len: u8 = if len.is_empty() {
        bits
    } else {
        len.parse().ok()?
    };
    if len > bits {
        return None;
    }
    let shift = u32::from(bits - len);
    let same = len == 0 || (a >> shift) == (b >> shift);
    same.then_some(len)
}

/// The interface of the host's namespace whose routes (local and main tables) reach `ip` with
/// the longest prefix, as the kernel would choose without policy rules.
fn egress_interface(g: &Graph, host: &Id, ip: &str) -> Option<std::sync::Arc<skydive_graph::Node>> {
    let ip: std::net::IpAddr = ip.parse().ok()?;
    let mut best: Option<(u8, &std::sync::Arc<skydive_graph::Node>)> = None;
    for e in g.out_edges(host) {
        if e.relation_type() != "ownership" {
            continue;
        }
        let Some(n) = g.node(&e.child) else { continue };
        let Some(Value::Array(tables)) = n.metadata.get("RoutingTables") else {
            continue;
        };
        for t in tables.iter().filter_map(Value::as_map) {
            if !matches!(t.get("ID").and_then(Value::as_i64), Some(254 | 255)) {
                continue;
            }
            let Some(Value::Array(routes)) = t.get("Routes") else {
                continue;
            };
            for r in routes.iter().filter_map(Value::as_map) {
                let Some(len) = r
                    .get("Prefix")
                    .and_then(Value::as_str)
                    .and_then(|p| prefix_holds(p, ip))
                else {
                    continue;
                };
                if best.is_none_or(|(l, _)| len > l) {
                    best = Some((len, n));
                }
            }
        }
    }
    best.map(|(_, n)| n.clone())
}

fn ovs_keys(row: &Row, uuid: &str) -> Map {
    let mut m = Map::new();
    m.insert("UUID", uuid);
    let ext = map(row, "external_ids");
    if !ext.is_empty() {
        m.insert("ExtID", str_map(ext));
    }
    m
}

/// `ofrule` and `ofgroup` nodes, owned by their bridge.
fn of_nodes(
    s: &mut OvsState,
    bridge: &Id,
    buuid: &str,
    host_id: &str,
    rules: &[OfRule],
    groups: &[OfGroup],
) {
    for r in rules {
        let (table, priority) = (r.table.to_string(), r.priority.to_string());
        let id = gen_id_from(&[host_id, "ofrule", buuid, &table, &priority, &r.filters]);
        let mut m = Map::new();
        let shown = if r.filters.is_empty() {
            "*"
        } else {
            r.filters.as_str()
        };
        m.insert(
            "Name",
            format!("table={table} priority={priority} {shown}").as_str(),
        );
        m.insert("Type", "ofrule");
        m.insert("UUID", id.as_str());
        m.insert("Cookie", r.cookie.as_str());
        m.insert("Table", Value::Int(r.table));
        m.insert("Priority", Value::Int(r.priority));
        m.insert("Filters", crate::oflow::filters_value(&r.filters));
        m.insert("Actions", crate::oflow::actions_value(&r.actions));
        s.created.insert(id.clone(), m);
        edge(s, bridge, &id, "ownership", &[]);
    }
    for gr in groups {
        let gid = gr.id.to_string();
        let id = gen_id_from(&[host_id, "ofgroup", buuid, &gid]);
        let mut m = Map::new();
        m.insert("Name", format!("group {gid}").as_str());
        m.insert("Type", "ofgroup");
        m.insert("UUID", id.as_str());
        m.insert("GroupId", Value::Int(gr.id));
        m.insert("GroupType", gr.kind.as_str());
        if !gr.meta.is_empty() {
            m.insert("Meta", gr.meta.as_str());
        }
        m.insert(
            "Buckets",
            Value::Array(gr.buckets.iter().map(|b| Value::from(b.as_str())).collect()),
        );
        s.created.insert(id.clone(), m);
        edge(s, bridge, &id, "ownership", &[]);
    }
}

/// What the reducer reads: the monitored tables, the agent's graph (for the netlink nodes
/// an interface merges with, and the routes a tunnel leaves by), the host, what the probe put
/// in the graph before (for the metrics' deltas), the time, and the OpenFlow rules read.
#[derive(Clone, Copy, Debug)]
pub struct Inputs<'a> {
    pub tables: &'a Tables,
    pub graph: &'a Graph,
    pub host: &'a Id,
    pub host_id: &'a str,
    pub prev: &'a OvsState,
    pub now: i64,
    pub oflow: &'a OfTables,
}

impl Inputs<'_> {
    /// The node of an OVS row of the probe's own.
    fn node_id(&self, uuid: &str) -> Id {
        gen_id_from(&[self.host_id, "ovs", uuid])
    }
}

/// The elements the probe owns for these tables.
pub fn desired(input: &Inputs<'_>) -> OvsState {
    let mut s = OvsState::default();
    let ifaces = interfaces(input, &mut s);
    for (uuid, row) in input.tables.rows("Bridge") {
        bridge(input, uuid, row, &ifaces, &mut s);
    }
    switch(input, &mut s);
    patch_peers(input, &ifaces, &mut s);
    s
}

/// Every interface: merged into its netlink node, or a node of the probe's. Returns the
/// node of each interface row.
fn interfaces(input: &Inputs<'_>, s: &mut OvsState) -> HashMap<String, Id> {
    let mut iface_node = HashMap::new();
    for (uuid, row) in input.tables.rows("Interface") {
        let name = string(row, "name").unwrap_or_default();
        let kind = string(row, "type").unwrap_or_default();
        let mac = string(row, "mac_in_use");
        let merged_into = netlink_node(
            input.graph,
            input.host,
            &name,
            mac.as_deref(),
            kind == "internal",
        );
        let id = merged_into.clone().unwrap_or_else(|| input.node_id(uuid));
        let prev_ovs = input
            .prev
            .merged
            .get(&id)
            .or_else(|| input.prev.created.get(&id))
            .and_then(|m| m.get("Ovs"))
            .and_then(Value::as_map);
        let mut keys = interface_keys(input, uuid, row, &kind, prev_ovs);
        if merged_into.is_some() {
            s.merged.insert(id.clone(), keys);
        } else {
            keys.insert("Name", name.as_str());
            keys.insert(
                "Type",
                if kind.is_empty() {
                    "device"
                } else {
                    kind.as_str()
                },
            );
            keys.insert("Driver", "openvswitch");
            s.created.insert(id.clone(), keys);
        }
        iface_node.insert(uuid.clone(), id);
    }
    iface_node
}

/// The keys the probe sets on an interface's node: its OVS identity, its tunnel ends, and
/// `Ovs` (type, options, error, metrics since `prev_ovs`).
fn interface_keys(
    input: &Inputs<'_>,
    uuid: &str,
    row: &Row,
    kind: &str,
    prev_ovs: Option<&Map>,
) -> Map {
    let mut keys = ovs_keys(row, uuid);
    if let Some(ofport) = row.get("ofport").and_then(|v| v.as_i64()) {
        keys.insert("OfPort", Value::Int(ofport));
    }
    let options = map(row, "options");
    if matches!(kind, "vxlan" | "geneve" | "gre" | "stt" | "erspan") {
        tunnel_keys(input, &options, &mut keys);
    }
    let mut ovs = Map::new();
    if !options.is_empty() {
        ovs.insert("Options", str_map(options));
    }
    ovs.insert("Type", if kind.is_empty() { "system" } else { kind });
    if let Some(e) = set(row, "error").first().and_then(|v| v.as_str()) {
        ovs.insert("Error", e);
    }
    if let Some((metric, delta)) = interface_metrics(row, prev_ovs, input.now) {
        ovs.insert("Metric", metric);
        ovs.insert("LastUpdateMetric", delta);
    }
    keys.insert("Ovs", Value::Map(ovs));
    keys
}

/// A tunnel's end points, as Skydive shows them, and where its packets leave the host by its
/// routes.
fn tunnel_keys(input: &Inputs<'_>, options: &BTreeMap<String, String>, keys: &mut Map) {
    if let Some(ip) = options.get("remote_ip") {
        keys.insert("RemoteIP", ip.as_str());
        if let Some(out) = egress_interface(input.graph, input.host, ip) {
            if let Some(name) = out.str_at("Name") {
                keys.insert("TunEgressIface", name);
            }
            let carrier = out.str_at("State").unwrap_or("UNKNOWN");
            keys.insert("TunEgressIfaceCarrier", carrier);
        }
    }
    if let Some(ip) = options.get("local_ip") {
        keys.insert("LocalIP", ip.as_str());
    }
}

/// A bridge, owned by the host, with its ports and their interfaces and its OpenFlow rules.
fn bridge(
    input: &Inputs<'_>,
    buuid: &str,
    brow: &Row,
    ifaces: &HashMap<String, Id>,
    s: &mut OvsState,
) {
    let bid = input.node_id(buuid);
    let mut m = ovs_keys(brow, buuid);
    m.insert("Name", string(brow, "name").unwrap_or_default().as_str());
    m.insert("Type", "ovsbridge");
    // Flows captured on the bridge (ovssflow) carry it as their NodeTID.
    m.insert("TID", bid.as_str());
    let mut ovs = Map::new();
    let oc = map(brow, "other_config");
    if !oc.is_empty() {
        ovs.insert("OtherConfig", str_map(oc));
    }
    if let Some(dp) = string(brow, "datapath_type").filter(|d| !d.is_empty()) {
        ovs.insert("DatapathType", dp.as_str());
    }
    let protocols: Vec<Value> = set(brow, "protocols")
        .iter()
        .filter_map(|v| v.as_str().map(Value::from))
        .collect();
    if !protocols.is_empty() {
        ovs.insert("Protocols", Value::Array(protocols));
    }
    if !ovs.is_empty() {
        m.insert("Ovs", Value::Map(ovs));
    }
    s.created.insert(bid.clone(), m);
    edge(s, input.host, &bid, "ownership", &[]);
    if let Some((rules, groups)) = input.oflow.get(buuid) {
        of_nodes(s, &bid, buuid, input.host_id, rules, groups);
    }
    for p in set(brow, "ports") {
        let Some(puuid) = p.as_str() else { continue };
        if let Some(prow) = input.tables.row("Port", puuid) {
            port(input, &bid, puuid, prow, ifaces, s);
        }
    }
}

/// A port of bridge `bid`, linked to its interfaces; the probe's own interface nodes belong
/// to the bridge.
fn port(
    input: &Inputs<'_>,
    bid: &Id,
    puuid: &str,
    prow: &Row,
    ifaces: &HashMap<String, Id>,
    s: &mut OvsState,
) {
    let pid = input.node_id(puuid);
    let mut pm = ovs_keys(prow, puuid);
    pm.insert("Name", string(prow, "name").unwrap_or_default().as_str());
    pm.insert("Type", "ovsport");
    pm.insert("TID", pid.as_str());
    if let Some(tag) = prow.get("tag").and_then(|v| v.as_i64()) {
        pm.insert("Vlans", Value::Array(vec![Value::Int(tag)]));
    }
    if let Some(b) = string(prow, "bond_mode").filter(|b| !b.is_empty()) {
        pm.insert("BondMode", b.as_str());
    }
    s.created.insert(pid.clone(), pm);
    edge(s, bid, &pid, "ownership", &[]);
    edge(s, bid, &pid, "layer2", &[]);
    for i in set(prow, "interfaces") {
        let Some(iid) = i.as_str().and_then(|iuuid| ifaces.get(iuuid)) else {
            continue;
        };
        edge(s, &pid, iid, "layer2", &[]);
        if s.created.contains_key(iid) {
            edge(s, bid, iid, "ownership", &[]);
        }
    }
}

/// The switch itself, on the `ovs-system` device of the kernel datapath, or on a node of its
/// own when there is none (userspace datapath): its version and configuration.
fn switch(input: &Inputs<'_>, s: &mut OvsState) {
    let Some((uuid, row)) = input.tables.rows("Open_vSwitch").next() else {
        return;
    };
    let mut m = ovs_keys(row, uuid);
    let mut ovs = Map::new();
    let oc = map(row, "other_config");
    if !oc.is_empty() {
        ovs.insert("OtherConfig", str_map(oc));
    }
    if let Some(v) = set(row, "ovs_version").first().and_then(|v| v.as_str()) {
        ovs.insert("Version", v);
    }
    if let Some(v) = set(row, "db_version").first().and_then(|v| v.as_str()) {
        ovs.insert("DBVersion", v);
    }
    m.insert("Ovs", Value::Map(ovs));
    match netlink_node(input.graph, input.host, "ovs-system", None, false) {
        Some(id) => {
            s.merged.insert(id, m);
        }
        None => {
            let id = gen_id_from(&[input.host_id, "ovs-system"]);
            m.insert("Name", "ovs-system");
            m.insert("Type", "openvswitch");
            m.insert("Driver", "openvswitch");
            s.created.insert(id.clone(), m);
            edge(s, input.host, &id, "ownership", &[]);
        }
    }
}

/// Patch peers: one layer2 edge per pair.
fn patch_peers(input: &Inputs<'_>, ifaces: &HashMap<String, Id>, s: &mut OvsState) {
    let t = input.tables;
    let by_name: HashMap<String, &String> = t
        .rows("Interface")
        .filter_map(|(u, r)| Some((string(r, "name")?, u)))
        .collect();
    for (uuid, row) in t.rows("Interface") {
        if string(row, "type").as_deref() != Some("patch") {
            continue;
        }
        let Some(peer) = map(row, "options").get("peer").cloned() else {
            continue;
        };
        let Some(&peer_uuid) = by_name.get(&peer) else {
            continue;
        };
        if peer_uuid.as_str() < uuid.as_str() {
            continue;
        }
        if let (Some(a), Some(b)) = (ifaces.get(uuid), ifaces.get(peer_uuid)) {
            edge(s, a, b, "layer2", &[("Type", "patch")]);
        }
    }
}

/// The changes from `prev` to `next`, in an order the graph accepts: edges gone, nodes gone,
/// nodes set, edges added. Merged keys are set with their previous value so that only the
/// probe's keys move.
pub fn ops(prev: &OvsState, next: &OvsState, g: &Graph) -> Vec<Op> {
    let mut out = Vec::new();
    for id in prev.edges.keys() {
        if !next.edges.contains_key(id) {
            out.push(Op::DeleteEdge(id.clone()));
        }
    }
    for id in prev.created.keys() {
        if !next.created.contains_key(id) {
            out.push(Op::DeleteNode(id.clone()));
        }
    }
    for (id, m) in &prev.merged {
        if !next.merged.contains_key(id) && g.node(id).is_some() {
            out.push(Op::SetNode {
                id: id.clone(),
                metadata: Map::new(),
                prev: Some(m.clone()),
            });
        }
    }
    for (id, m) in &next.created {
        if prev.created.get(id) != Some(m) {
            out.push(Op::SetNode {
                id: id.clone(),
                metadata: m.clone(),
                prev: prev.created.get(id).cloned(),
            });
        }
    }
    for (id, m) in &next.merged {
        // Never create a netlink node: it may just have gone.
        if prev.merged.get(id) != Some(m) && g.node(id).is_some() {
            out.push(Op::SetNode {
                id: id.clone(),
                metadata: m.clone(),
                prev: prev.merged.get(id).cloned(),
            });
        }
    }
    for (id, (p, c, m)) in &next.edges {
        if !prev.edges.contains_key(id) {
            out.push(Op::AddEdge {
                id: id.clone(),
                parent: p.clone(),
                child: c.clone(),
                metadata: m.clone(),
            });
        }
    }
    out
}
