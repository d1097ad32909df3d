//! The Open vSwitch probe (compat spec §3.4 "OVSDB"): bridges, ports and interfaces from the
//! OVSDB `Bridge`, `Port` and `Interface` tables, kept live through a monitor.
//!
//! * `ovsbridge` nodes, owned by the host; `ovsport` nodes, linked from their bridge by an
//!   ownership and a layer2 edge (as Skydive draws them);
//! * an interface whose device the netlink probe already shows in the host's namespace (same
//!   name) is **that** node: the probe adds its OVS keys (`UUID`, `OfPort`, `ExtID`, `Ovs`) to
//!   it; otherwise (patch ports, tunnels of the userspace datapath) the probe creates the node,
//!   owned by the bridge;
//! * `port → interface` layer2 edges, and a layer2 edge with `Type: patch` between patch peers.
//!
//! The pure part, [`desired`], turns the tables (and the netlink nodes of the graph) into the
//! elements the probe owns; [`ops`] works out the changes from what it put in the graph before.

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
        // Tunnels and patch ports keep no statistics.
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
/// container), the interface anywhere with its name and MAC.
fn netlink_node(g: &Graph, host: &Id, name: &str, mac: Option<&str>) -> Option<Id> {
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
        .map(|n| n.id.clone())
}

/// Whether `prefix` (`a.b.c.d/len`, `x::/len`) holds `ip`; the prefix length when it does.
fn prefix_holds(prefix: &str, ip: std::net::IpAddr) -> Option<u8> {
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

/// The elements the probe owns for these tables, given the netlink nodes of `g`.
pub fn desired(
    t: &Tables,
    g: &Graph,
    host: &Id,
    host_id: &str,
    prev: &OvsState,
    now: i64,
    oflow: &OfTables,
) -> OvsState {
    let mut s = OvsState::default();
    let node_id = |uuid: &str| gen_id_from(&[host_id, "ovs", uuid]);
    // Interface uuid → its node.
    let mut iface_node: HashMap<String, Id> = HashMap::new();
    for (uuid, row) in t.rows("Interface") {
        let name = string(row, "name").unwrap_or_default();
        let kind = string(row, "type").unwrap_or_default();
        let mut keys = ovs_keys(row, uuid);
        if let Some(ofport) = row.get("ofport").and_then(|v| v.as_i64()) {
            keys.insert("OfPort", Value::Int(ofport));
        }
        let mut ovs = Map::new();
        let options = map(row, "options");
        // Tunnels: their end points, as Skydive shows them.
        if matches!(kind.as_str(), "vxlan" | "geneve" | "gre" | "stt" | "erspan") {
            if let Some(ip) = options.get("remote_ip") {
                keys.insert("RemoteIP", ip.as_str());
                // Where the tunnel's packets leave the host, by its routes.
                if let Some(out) = egress_interface(g, host, ip) {
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
        if !options.is_empty() {
            ovs.insert("Options", str_map(options));
        }
        ovs.insert(
            "Type",
            if kind.is_empty() {
                "system"
            } else {
                kind.as_str()
            },
        );
        if let Some(e) = set(row, "error").first().and_then(|v| v.as_str()) {
            ovs.insert("Error", e);
        }
        let mac = string(row, "mac_in_use");
        let merged_into = netlink_node(g, host, &name, mac.as_deref());
        let id = merged_into.clone().unwrap_or_else(|| node_id(uuid));
        let prev_ovs = prev
            .merged
            .get(&id)
            .or_else(|| prev.created.get(&id))
            .and_then(|m| m.get("Ovs"))
            .and_then(Value::as_map);
        if let Some((metric, delta)) = interface_metrics(row, prev_ovs, now) {
            ovs.insert("Metric", metric);
            ovs.insert("LastUpdateMetric", delta);
        }
        keys.insert("Ovs", Value::Map(ovs));
        match merged_into {
            Some(id) => {
                s.merged.insert(id.clone(), keys);
                iface_node.insert(uuid.clone(), id);
            }
            None => {
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
                iface_node.insert(uuid.clone(), id);
            }
        }
    }
    // Port uuid → bridge node, for the interfaces' owner.
    for (buuid, brow) in t.rows("Bridge") {
        let bid = node_id(buuid);
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
        edge(&mut s, host, &bid, "ownership", &[]);
        if let Some((rules, groups)) = oflow.get(buuid) {
            of_nodes(&mut s, &bid, buuid, host_id, rules, groups);
        }
        for p in set(brow, "ports") {
            let Some(puuid) = p.as_str() else { continue };
            let Some(prow) = t.row("Port", puuid) else {
                continue;
            };
            let pid = node_id(puuid);
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
            edge(&mut s, &bid, &pid, "ownership", &[]);
            edge(&mut s, &bid, &pid, "layer2", &[]);
            for i in set(prow, "interfaces") {
                let Some(iuuid) = i.as_str() else { continue };
                let Some(iid) = iface_node.get(iuuid) else {
                    continue;
                };
                edge(&mut s, &pid, iid, "layer2", &[]);
                // The probe's own interface nodes belong to the bridge.
                if s.created.contains_key(iid) {
                    edge(&mut s, &bid, iid, "ownership", &[]);
                }
            }
        }
    }
    // The switch itself, on the `ovs-system` device of the kernel datapath, or on a node of its
    // own when there is none (userspace datapath): its version and configuration.
    if let Some((uuid, row)) = t.rows("Open_vSwitch").next() {
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
        match netlink_node(g, host, "ovs-system", None) {
            Some(id) => {
                s.merged.insert(id, m);
            }
            None => {
                let id = gen_id_from(&[host_id, "ovs-system"]);
                m.insert("Name", "ovs-system");
                m.insert("Type", "openvswitch");
                m.insert("Driver", "openvswitch");
                s.created.insert(id.clone(), m);
                edge(&mut s, host, &id, "ownership", &[]);
            }
        }
    }
    // Patch peers: one layer2 edge per pair.
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
        if let (Some(a), Some(b)) = (iface_node.get(uuid), iface_node.get(peer_uuid)) {
            edge(&mut s, a, b, "layer2", &[("Type", "patch")]);
        }
    }
    s
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

/// The probe's connection state, for `/api/status`.
#[derive(Debug, Default)]
pub struct OvsStatus {
    state: std::sync::Mutex<(bool, String)>,
    /// The last failure to read OpenFlow rules (`ovs-ofctl`), logged once.
    oflow_error: std::sync::Mutex<String>,
}

impl OvsStatus {
    fn set(&self, connected: bool, error: String) {
        *self.state.lock().unwrap_or_else(|e| e.into_inner()) = (connected, error);
    }

    fn set_oflow_error(&self, error: String) {
        let mut last = self.oflow_error.lock().unwrap_or_else(|e| e.into_inner());
        if *last != error {
            tracing::warn!("OpenFlow rules: {error}");
            *last = error;
        }
    }

    pub fn document(&self) -> serde_json::Value {
        let (connected, error) = self.state.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let oflow = self
            .oflow_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        serde_json::json!({"Connected": connected, "LastError": error, "OpenFlowError": oflow})
    }
}

/// Runs the probe: connects to `addr` (`unix:///path`, `unix:/path`, `tcp:host:port` or
/// `host:port`), monitors the tables and keeps the graph in step with them and with the
/// netlink nodes; reconnects every second while OVSDB is away (its elements then leave the
/// graph until it is back).
pub async fn run(
    addr: String,
    hub: skydive_hub::HubHandle,
    host: Id,
    host_id: String,
    status: std::sync::Arc<OvsStatus>,
    stats: bool,
    oflow: bool,
) {
    let origin = format!("agent.{host_id}");
    let columns = monitored(stats);
    let columns: Vec<(&str, &[&str])> = columns.iter().map(|(t, c)| (*t, c.as_slice())).collect();
    let mut state = OvsState::default();
    let mut logged = false;
    loop {
        match crate::ovsdb::OvsdbClient::connect(&addr).await {
            Ok((client, mut notes)) => {
                let monitored = client
                    .monitor("Open_vSwitch", serde_json::json!("skydive"), &columns)
                    .await;
                let mut tables = Tables::default();
                match monitored {
                    Ok(initial) => {
                        tracing::info!(%addr, "OVSDB monitor started");
                        logged = false;
                        status.set(true, String::new());
                        tables.apply(&initial);
                    }
                    Err(e) => {
                        status.set(false, e.to_string());
                        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                        continue;
                    }
                }
                let mut events = hub.subscribe();
                let mut of = OfTables::default();
                let mut of_tick = tokio::time::interval(OFLOW_EVERY);
                of_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    state = sync(&hub, &tables, &host, &host_id, &origin, state, &of).await;
                    tokio::select! {
                        _ = of_tick.tick(), if oflow => {
                            of = dump_oflow(&tables, &status).await;
                        }
                        n = notes.recv() => match n {
                            Some(crate::ovsdb::Notification::Update(_, u)) => tables.apply(&u),
                            Some(crate::ovsdb::Notification::Closed(_)) | None => break,
                        },
                        e = events.recv() => {
                            // Netlink nodes come and go: the merge may change.
                            if e.is_err() {
                                events = events.resubscribe();
                            }
                            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                            while events.try_recv().is_ok() {}
                        }
                    }
                }
                tracing::warn!(%addr, "OVSDB connection lost");
                status.set(false, "connection lost".into());
                state = sync(
                    &hub,
                    &Tables::default(),
                    &host,
                    &host_id,
                    &origin,
                    state,
                    &OfTables::default(),
                )
                .await;
            }
            Err(e) => {
                if !logged {
                    tracing::info!("the ovsdb probe waits for OVSDB: {e}");
                    logged = true;
                }
                status.set(false, e.to_string());
            }
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}

/// How often the bridges' OpenFlow rules are read (`ovs.oflow.enable`).
const OFLOW_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// The OpenFlow rules and groups of every bridge; a bridge that cannot be read has none, and
/// the reason is in the probe's status.
async fn dump_oflow(tables: &Tables, status: &OvsStatus) -> OfTables {
    let mut out = OfTables::default();
    for (uuid, row) in tables.rows("Bridge") {
        let Some(name) = string(row, "name") else {
            continue;
        };
        match crate::oflow::dump(&name).await {
            Ok(v) => {
                out.insert(uuid.clone(), v);
            }
            Err(e) => status.set_oflow_error(e),
        }
    }
    out
}

/// Puts the graph in step with `tables`; returns the new state.
async fn sync(
    hub: &skydive_hub::HubHandle,
    tables: &Tables,
    host: &Id,
    host_id: &str,
    origin: &str,
    prev: OvsState,
    oflow: &OfTables,
) -> OvsState {
    let snap = hub.snapshot();
    let next = desired(
        tables,
        &snap.graph,
        host,
        host_id,
        &prev,
        skydive_graph::now_ms(),
        oflow,
    );
    if next == prev {
        return prev;
    }
    let (h, o, p, n) = (host_id.to_string(), origin.to_string(), prev, next.clone());
    let _ = hub
        .apply(None, move |g| {
            let changes = ops(&p, &n, g);
            Ok(crate::topology::apply_ops(
                g,
                changes,
                &h,
                &o,
                skydive_graph::now_ms(),
            ))
        })
        .await;
    next
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ovsdb::TableUpdates;
    use serde_json::json;
    use skydive_graph::{Edge, Node, metadata};

    /// A graph with the host node `host` only.
    fn host_graph() -> (Id, Graph) {
        let mut g = Graph::new();
        g.add_node(Node::new(
            "host",
            metadata! {"Name" => "h", "Type" => "host"},
            "h",
            "agent.h",
            1,
        ))
        .unwrap();
        (Id::from("host"), g)
    }

    /// Adds node `id` owned by `parent`, as the netlink probe would.
    fn owned(g: &mut Graph, parent: &str, id: &str, metadata: Map) {
        g.add_node(Node::new(id, metadata, "h", "agent.h", 1))
            .unwrap();
        g.add_edge(Edge::new(
            format!("e-{id}").as_str(),
            parent,
            id,
            metadata! {"RelationType" => "ownership"},
            "h",
            "agent.h",
            1,
        ))
        .unwrap();
    }

    /// The probe's state for `t`, from nothing, without OpenFlow rules.
    fn desired_now(t: &Tables, g: &Graph, host: &Id) -> OvsState {
        desired(
            t,
            g,
            host,
            "h",
            &OvsState::default(),
            1,
            &OfTables::default(),
        )
    }

    fn tables() -> Tables {
        let u: TableUpdates = serde_json::from_value(json!({
            "Bridge": {"b1": {"new": {"name": "br0", "ports": ["set", [["uuid", "p1"], ["uuid", "p2"]]],
                "external_ids": ["map", [["team", "net"]]], "other_config": ["map", []],
                "datapath_type": "netdev", "protocols": ["set", []]}}},
            "Port": {
                "p1": {"new": {"name": "br0", "interfaces": ["uuid", "i1"], "external_ids": ["map", []], "tag": ["set", []], "bond_mode": ["set", []], "lacp": ["set", []]}},
                "p2": {"new": {"name": "patch-a", "interfaces": ["uuid", "i2"], "external_ids": ["map", []], "tag": 10, "bond_mode": ["set", []], "lacp": ["set", []]}}
            },
            "Interface": {
                "i1": {"new": {"name": "br0", "type": "internal", "options": ["map", []], "external_ids": ["map", []], "ofport": 65534, "error": ["set", []]}},
                "i2": {"new": {"name": "patch-a", "type": "patch", "options": ["map", [["peer", "patch-b"]]], "external_ids": ["map", []], "ofport": 1, "error": ["set", []]}},
                "i3": {"new": {"name": "patch-b", "type": "patch", "options": ["map", [["peer", "patch-a"]]], "external_ids": ["map", []], "ofport": 1, "error": ["set", []]}}
            }
        }))
        .unwrap();
        let mut t = Tables::default();
        t.apply(&u);
        t
    }

    #[test]
    fn bridges_ports_and_interfaces_merge_with_netlink() {
        let (host, mut g) = host_graph();
        // The internal port's device, as the netlink probe shows it.
        owned(
            &mut g,
            "host",
            "nl-br0",
            metadata! {"Name" => "br0", "Type" => "tun", "MTU" => 1500, "IfIndex" => 7},
        );

        let s = desired_now(&tables(), &g, &host);
        let bridge = s
            .created
            .values()
            .find(|m| m.get("Type").and_then(Value::as_str) == Some("ovsbridge"))
            .unwrap();
        assert_eq!(
            bridge.get_path("ExtID.team").and_then(Value::as_str),
            Some("net")
        );
        assert_eq!(
            bridge.get_path("Ovs.DatapathType").and_then(Value::as_str),
            Some("netdev")
        );
        assert_eq!(
            s.created
                .values()
                .filter(|m| m.get("Type").and_then(Value::as_str) == Some("ovsport"))
                .count(),
            2
        );
        // br0's interface is the netlink node, with OVS keys added.
        let merged = &s.merged[&Id::from("nl-br0")];
        assert_eq!(merged.get("OfPort"), Some(&Value::Int(65534)));
        assert_eq!(
            merged.get_path("Ovs.Type").and_then(Value::as_str),
            Some("internal")
        );
        // The patch interfaces are nodes of the probe, owned by the bridge (patch-a) or
        // by nothing known (patch-b has no port here), and peered.
        let patch_a = s
            .created
            .iter()
            .find(|(_, m)| {
                m.get("Name").and_then(Value::as_str) == Some("patch-a")
                    && m.get("Type").and_then(Value::as_str) == Some("patch")
            })
            .unwrap()
            .0
            .clone();
        let peered: Vec<_> = s
            .edges
            .values()
            .filter(|(_, _, m)| m.get("Type").and_then(Value::as_str) == Some("patch"))
            .collect();
        assert_eq!(peered.len(), 1);
        assert!(peered[0].0 == patch_a || peered[0].1 == patch_a);
        // Bridge → port twice (ownership and layer2), host → bridge, port → interface.
        assert_eq!(s.edges.len(), 1 + 2 * 2 + 2 + 1 + 1);

        // Applied, then the bridge gone: everything of the probe goes, the netlink node
        // loses only the OVS keys.
        let host_s = "h";
        let o = ops(&OvsState::default(), &s, &g);
        crate::topology::apply_ops(&mut g, o, host_s, "agent.h", 2);
        assert_eq!(
            g.node("nl-br0").unwrap().metadata.get("OfPort"),
            Some(&Value::Int(65534))
        );
        let gone = desired_now(&Tables::default(), &g, &host);
        let o = ops(&s, &gone, &g);
        crate::topology::apply_ops(&mut g, o, host_s, "agent.h", 3);
        let n = g.node("nl-br0").unwrap();
        assert!(n.metadata.get("OfPort").is_none() && n.metadata.get("UUID").is_none());
        assert_eq!(n.metadata.get("MTU"), Some(&Value::Int(1500)));
        assert_eq!(g.node_count(), 2, "host and the netlink node remain");
        assert_eq!(g.edge_count(), 1);
    }

    #[test]
    fn an_internal_port_moved_into_a_namespace_is_found_by_its_mac() {
        let (host, mut g) = host_graph();
        owned(
            &mut g,
            "host",
            "ns",
            metadata! {"Name" => "c1", "Type" => "netns"},
        );
        // Two interfaces named like the port: another namespace's (other MAC) and the moved one.
        for (id, mac) in [
            ("other", "02:00:00:00:00:99"),
            ("moved", "02:00:00:00:00:01"),
        ] {
            owned(
                &mut g,
                "ns",
                id,
                metadata! {"Name" => "vm1", "Type" => "tun", "MAC" => mac, "IfIndex" => 3},
            );
        }
        let u: TableUpdates = serde_json::from_value(json!({"Interface": {"i9": {"new": {
            "name": "vm1", "type": "internal", "options": ["map", []], "external_ids": ["map", []],
            "ofport": 2, "mac_in_use": "02:00:00:00:00:01", "error": ["set", []]}}}}))
        .unwrap();
        let mut t = Tables::default();
        t.apply(&u);
        let s = desired_now(&t, &g, &host);
        assert!(s.merged.contains_key(&Id::from("moved")), "{s:?}");
        assert!(s.created.is_empty(), "no second node for the device");
    }

    fn stats_row(rx: i64) -> Tables {
        let u: TableUpdates = serde_json::from_value(json!({"Interface": {"i1": {"new": {
            "name": "t1", "type": "internal", "options": ["map", []], "external_ids": ["map", []],
            "ofport": 1, "error": ["set", []],
            "statistics": ["map", [["rx_packets", rx], ["rx_bytes", rx * 100], ["tx_packets", 2], ["collisions", 0]]]
        }}}}))
        .unwrap();
        let mut t = Tables::default();
        t.apply(&u);
        t
    }

    #[test]
    fn interface_statistics_become_metrics_with_deltas() {
        let (host, g) = host_graph();
        let ovs_of = |s: &OvsState| {
            s.created
                .values()
                .next()
                .unwrap()
                .get("Ovs")
                .unwrap()
                .clone()
        };
        let first = desired(
            &stats_row(10),
            &g,
            &host,
            "h",
            &OvsState::default(),
            1000,
            &OfTables::default(),
        );
        let ovs = ovs_of(&first);
        let m = ovs.as_map().unwrap();
        assert_eq!(m.get_path("Metric.RxPackets"), Some(&Value::Int(10)));
        assert_eq!(m.get_path("Metric.RxBytes"), Some(&Value::Int(1000)));
        assert_eq!(m.get_path("Metric.TxPackets"), Some(&Value::Int(2)));
        assert_eq!(m.get_path("Metric.Collisions"), Some(&Value::Int(0)));
        assert_eq!(m.get_path("Metric.Last"), Some(&Value::Int(1000)));
        assert_eq!(
            m.get_path("LastUpdateMetric.RxPackets"),
            Some(&Value::Int(10))
        );
        // The same counters later: nothing changes, not even the times.
        let again = desired(
            &stats_row(10),
            &g,
            &host,
            "h",
            &first,
            5000,
            &OfTables::default(),
        );
        assert_eq!(again, first);
        // New counters: the delta since the previous ones, over the time between them.
        let next = desired(
            &stats_row(25),
            &g,
            &host,
            "h",
            &first,
            6000,
            &OfTables::default(),
        );
        let ovs = ovs_of(&next);
        let m = ovs.as_map().unwrap();
        assert_eq!(m.get_path("Metric.RxPackets"), Some(&Value::Int(25)));
        assert_eq!(
            m.get_path("LastUpdateMetric.RxPackets"),
            Some(&Value::Int(15))
        );
        assert_eq!(
            m.get_path("LastUpdateMetric.RxBytes"),
            Some(&Value::Int(1500))
        );
        assert_eq!(
            m.get_path("LastUpdateMetric.TxPackets"),
            Some(&Value::Int(0))
        );
        assert_eq!(
            m.get_path("LastUpdateMetric.Start"),
            Some(&Value::Int(1000))
        );
        assert_eq!(m.get_path("LastUpdateMetric.Last"), Some(&Value::Int(6000)));
        // Without the statistics column (ovs.enable_stats off): no metrics.
        let plain = desired_now(&tables(), &g, &host);
        assert!(
            plain
                .created
                .values()
                .chain(plain.merged.values())
                .all(|m| m.get_path("Ovs.Metric").is_none())
        );
    }

    #[test]
    fn the_switch_is_an_ovs_system_node_with_its_version() {
        let (host, mut g) = host_graph();
        let u: TableUpdates = serde_json::from_value(json!({"Open_vSwitch": {"o1": {"new": {
            "ovs_version": "3.1.0", "db_version": "8.3.1",
            "other_config": ["map", [["stats-update-interval", "1000"]]],
            "external_ids": ["map", [["system-id", "abc"]]]
        }}}}))
        .unwrap();
        let mut t = Tables::default();
        t.apply(&u);
        let s = desired_now(&t, &g, &host);
        let (id, m) = s
            .created
            .iter()
            .find(|(_, m)| m.get("Name").and_then(Value::as_str) == Some("ovs-system"))
            .unwrap();
        assert_eq!(m.get("Type").and_then(Value::as_str), Some("openvswitch"));
        assert_eq!(
            m.get_path("Ovs.Version").and_then(Value::as_str),
            Some("3.1.0")
        );
        assert_eq!(
            m.get_path("Ovs.DBVersion").and_then(Value::as_str),
            Some("8.3.1")
        );
        assert_eq!(
            m.get_path("Ovs.OtherConfig.stats-update-interval")
                .and_then(Value::as_str),
            Some("1000")
        );
        assert_eq!(
            m.get_path("ExtID.system-id").and_then(Value::as_str),
            Some("abc")
        );
        assert!(s.edges.values().any(|(p, c, e)| p == &host
            && c == id
            && e.get("RelationType").and_then(Value::as_str) == Some("ownership")));
        // With the kernel datapath, its ovs-system device is that node.
        owned(
            &mut g,
            "host",
            "nl-ovs",
            metadata! {"Name" => "ovs-system", "Type" => "openvswitch", "IfIndex" => 3},
        );
        let s = desired_now(&t, &g, &host);
        assert!(
            s.created
                .values()
                .all(|m| m.get("Name").and_then(Value::as_str) != Some("ovs-system"))
        );
        assert_eq!(
            s.merged
                .get(&Id::from("nl-ovs"))
                .and_then(|m| m.get_path("Ovs.Version"))
                .and_then(Value::as_str),
            Some("3.1.0")
        );
    }

    #[test]
    fn a_tunnel_leaves_by_the_interface_with_the_longest_route() {
        let (host, mut g) = host_graph();
        let iface = |g: &mut Graph, id: &str, name: &str, state: &str, prefixes: &[&str]| {
            let routes: Vec<Value> = prefixes
                .iter()
                .map(|p| Value::Map(metadata! {"Prefix" => *p}))
                .collect();
            let table = Value::Map(metadata! {"ID" => 254, "Routes" => Value::Array(routes)});
            owned(
                g,
                "host",
                id,
                metadata! {"Name" => name, "Type" => "device", "IfIndex" => 2, "State" => state,
                "RoutingTables" => Value::Array(vec![table])},
            );
        };
        iface(&mut g, "n0", "eth0", "UP", &["0.0.0.0/0"]);
        iface(
            &mut g,
            "n1",
            "eth1",
            "DOWN",
            &["192.0.2.0/24", "2001:db8::/32"],
        );
        let tunnel = |remote: &str| {
            let u: TableUpdates = serde_json::from_value(json!({"Interface": {"t": {"new": {
                "name": "vx0", "type": "vxlan", "options": ["map", [["remote_ip", remote]]],
                "external_ids": ["map", []], "ofport": 3, "error": ["set", []]
            }}}}))
            .unwrap();
            let mut t = Tables::default();
            t.apply(&u);
            let s = desired_now(&t, &g, &host);
            let m = s.created.values().next().unwrap().clone();
            (
                m.get("TunEgressIface")
                    .and_then(Value::as_str)
                    .map(str::to_string),
                m.get("TunEgressIfaceCarrier")
                    .and_then(Value::as_str)
                    .map(str::to_string),
            )
        };
        assert_eq!(
            tunnel("192.0.2.9"),
            (Some("eth1".into()), Some("DOWN".into()))
        );
        assert_eq!(
            tunnel("198.51.100.1"),
            (Some("eth0".into()), Some("UP".into()))
        );
        assert_eq!(tunnel("2001:db8::7").0.as_deref(), Some("eth1"));
        assert_eq!(tunnel("2001:db9::7").0, None);
        assert_eq!(tunnel("flow").0, None);
        assert_eq!(
            prefix_holds("10.0.0.0/8", "10.255.1.1".parse().unwrap()),
            Some(8)
        );
        assert_eq!(
            prefix_holds("10.0.0.0/8", "11.0.0.1".parse().unwrap()),
            None
        );
        assert_eq!(
            prefix_holds("10.1.2.3", "10.1.2.3".parse().unwrap()),
            Some(32)
        );
        assert_eq!(
            prefix_holds("10.0.0.0/33", "10.0.0.1".parse().unwrap()),
            None
        );
    }
}
