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
];

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

fn ovs_keys(row: &Row, uuid: &str) -> Map {
    let mut m = Map::new();
    m.insert("UUID", uuid);
    let ext = map(row, "external_ids");
    if !ext.is_empty() {
        m.insert("ExtID", str_map(ext));
    }
    m
}

/// The elements the probe owns for these tables, given the netlink nodes of `g`.
pub fn desired(t: &Tables, g: &Graph, host: &Id, host_id: &str) -> OvsState {
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
        keys.insert("Ovs", Value::Map(ovs));
        let mac = string(row, "mac_in_use");
        match netlink_node(g, host, &name, mac.as_deref()) {
            Some(id) => {
                s.merged.insert(id.clone(), keys);
                iface_node.insert(uuid.clone(), id);
            }
            None => {
                let id = node_id(uuid);
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
}

impl OvsStatus {
    fn set(&self, connected: bool, error: String) {
        *self.state.lock().unwrap_or_else(|e| e.into_inner()) = (connected, error);
    }

    pub fn document(&self) -> serde_json::Value {
        let (connected, error) = self.state.lock().unwrap_or_else(|e| e.into_inner()).clone();
        serde_json::json!({"Connected": connected, "LastError": error})
    }
}

/// Runs the probe: connects to `addr` (`unix:///path`, `unix:/path`, `tcp:host:port` or
/// `host:port`), monitors the tables and keeps the graph in step with them and with the
/// netlink nodes; reconnects every second while OVSDB is away (its elements then leave the
/// graph until it is back).
pub async fn run(
    addr: String,
    hub: skydive_api::hub::HubHandle,
    host: Id,
    host_id: String,
    status: std::sync::Arc<OvsStatus>,
) {
    let origin = format!("agent.{host_id}");
    let mut state = OvsState::default();
    let mut logged = false;
    loop {
        match crate::ovsdb::OvsdbClient::connect(&addr).await {
            Ok((client, mut notes)) => {
                let monitored = client
                    .monitor("Open_vSwitch", serde_json::json!("skydive"), MONITORED)
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
                loop {
                    state = sync(&hub, &tables, &host, &host_id, &origin, state).await;
                    tokio::select! {
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
                state = sync(&hub, &Tables::default(), &host, &host_id, &origin, state).await;
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

/// Puts the graph in step with `tables`; returns the new state.
async fn sync(
    hub: &skydive_api::hub::HubHandle,
    tables: &Tables,
    host: &Id,
    host_id: &str,
    origin: &str,
    prev: OvsState,
) -> OvsState {
    let snap = hub.snapshot();
    let next = desired(tables, &snap.graph, host, host_id);
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
        let host = Id::from("host");
        let mut g = Graph::new();
        g.add_node(Node::new(
            "host",
            metadata! {"Name" => "h", "Type" => "host"},
            "h",
            "agent.h",
            1,
        ))
        .unwrap();
        // The internal port's device, as the netlink probe shows it.
        g.add_node(Node::new(
            "nl-br0",
            metadata! {"Name" => "br0", "Type" => "tun", "MTU" => 1500, "IfIndex" => 7},
            "h",
            "agent.h",
            1,
        ))
        .unwrap();
        g.add_edge(Edge::new(
            "e",
            "host",
            "nl-br0",
            metadata! {"RelationType" => "ownership"},
            "h",
            "agent.h",
            1,
        ))
        .unwrap();

        let s = desired(&tables(), &g, &host, "h");
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
        let gone = desired(&Tables::default(), &g, &host, "h");
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
        let host = Id::from("host");
        let mut g = Graph::new();
        g.add_node(Node::new(
            "host",
            metadata! {"Name" => "h", "Type" => "host"},
            "h",
            "agent.h",
            1,
        ))
        .unwrap();
        g.add_node(Node::new(
            "ns",
            metadata! {"Name" => "c1", "Type" => "netns"},
            "h",
            "agent.h",
            1,
        ))
        .unwrap();
        g.add_edge(Edge::new(
            "e1",
            "host",
            "ns",
            metadata! {"RelationType" => "ownership"},
            "h",
            "agent.h",
            1,
        ))
        .unwrap();
        // Two interfaces named like the port: another namespace's (other MAC) and the moved one.
        for (id, mac) in [
            ("other", "02:00:00:00:00:99"),
            ("moved", "02:00:00:00:00:01"),
        ] {
            g.add_node(Node::new(
                id,
                metadata! {"Name" => "vm1", "Type" => "tun", "MAC" => mac, "IfIndex" => 3},
                "h",
                "agent.h",
                1,
            ))
            .unwrap();
            g.add_edge(Edge::new(
                format!("e-{id}").as_str(),
                "ns",
                id,
                metadata! {"RelationType" => "ownership"},
                "h",
                "agent.h",
                1,
            ))
            .unwrap();
        }
        let u: TableUpdates = serde_json::from_value(json!({"Interface": {"i9": {"new": {
            "name": "vm1", "type": "internal", "options": ["map", []], "external_ids": ["map", []],
            "ofport": 2, "mac_in_use": "02:00:00:00:00:01", "error": ["set", []]}}}}))
        .unwrap();
        let mut t = Tables::default();
        t.apply(&u);
        let s = desired(&t, &g, &host, "h");
        assert!(s.merged.contains_key(&Id::from("moved")), "{s:?}");
        assert!(s.created.is_empty(), "no second node for the device");
    }
}
