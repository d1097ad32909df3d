//! The reducer on OVSDB replies recorded from a real ovsdb-server (`fixtures/`, see its
//! README for how), against graphs holding the netlink nodes the agent would have.

use serde_json::Value as Json;
use skydive_graph::{Edge, Graph, Id, Map, Node, Value, metadata};

use super::reducer::{Inputs, OfTables, OvsState, desired, ops, prefix_holds};
use crate::ovsdb::{TableUpdates, Tables};

/// A recorded monitor reply, and the update notifications recorded after it (if any).
fn fixture(name: &str) -> (Tables, Vec<TableUpdates>) {
    let text = match name {
        "bridge_internal_patch" => include_str!("fixtures/bridge_internal_patch.json"),
        "vxlan_tunnel" => include_str!("fixtures/vxlan_tunnel.json"),
        "statistics" => include_str!("fixtures/statistics.json"),
        "internal_port_ns" => include_str!("fixtures/internal_port_ns.json"),
        other => panic!("no fixture {other}"),
    };
    let v: Json = serde_json::from_str(text).unwrap();
    let (initial, updates) = match v.get("initial") {
        Some(i) => (i.clone(), v["updates"].clone()),
        None => (v, Json::Array(Vec::new())),
    };
    let mut t = Tables::default();
    t.apply(&serde_json::from_value(initial).unwrap());
    (t, serde_json::from_value(updates).unwrap())
}

/// `t` without one column, as a monitor that does not ask for it sees the table.
fn without_column(mut t: Tables, table: &str, column: &str) -> Tables {
    for row in
        t.0.get_mut(table)
            .into_iter()
            .flat_map(|rows| rows.values_mut())
    {
        row.remove(column);
    }
    t
}

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

/// The probe's state for `t` at `now`, after `prev`, without OpenFlow rules.
fn desired_at(t: &Tables, g: &Graph, host: &Id, prev: &OvsState, now: i64) -> OvsState {
    desired(&Inputs {
        tables: t,
        graph: g,
        host,
        host_id: "h",
        prev,
        now,
        oflow: &OfTables::default(),
    })
}

fn desired_now(t: &Tables, g: &Graph, host: &Id) -> OvsState {
    desired_at(t, g, host, &OvsState::default(), 1)
}

fn str_at<'a>(m: &'a Map, path: &str) -> Option<&'a str> {
    m.get_path(path).and_then(Value::as_str)
}

/// The probe's node named `name` of type `ty` (a bridge, its port and its interface share
/// a name).
fn created<'a>(s: &'a OvsState, name: &str, ty: &str) -> (&'a Id, &'a Map) {
    s.created
        .iter()
        .find(|(_, m)| str_at(m, "Name") == Some(name) && str_at(m, "Type") == Some(ty))
        .unwrap_or_else(|| panic!("no {ty} {name} in {s:?}"))
}

#[test]
fn bridges_ports_and_interfaces_merge_with_netlink() {
    let (t, _) = fixture("bridge_internal_patch");
    let (host, mut g) = host_graph();
    // The bridge's internal port, as the netlink probe shows it (a tap device of the
    // userspace datapath).
    owned(
        &mut g,
        "host",
        "nl-fxbr0",
        metadata! {"Name" => "fxbr0", "Type" => "tun", "MTU" => 1500, "IfIndex" => 6},
    );

    let s = desired_now(&t, &g, &host);
    let (_, bridge) = created(&s, "fxbr0", "ovsbridge");
    assert_eq!(str_at(bridge, "ExtID.team"), Some("net"));
    assert_eq!(str_at(bridge, "Ovs.DatapathType"), Some("netdev"));
    let ports: Vec<&Map> = s
        .created
        .values()
        .filter(|m| str_at(m, "Type") == Some("ovsport"))
        .collect();
    assert_eq!(
        ports.len(),
        6,
        "fxbr0, fxint1, fxint2, fxpatch-a; fxbr1, fxpatch-b"
    );
    let tagged = ports
        .iter()
        .find(|m| str_at(m, "Name") == Some("fxpatch-a"))
        .unwrap();
    assert_eq!(
        tagged.get("Vlans"),
        Some(&Value::Array(vec![Value::Int(10)]))
    );
    // fxbr0's interface is the netlink node, with OVS keys added.
    let merged = &s.merged[&Id::from("nl-fxbr0")];
    assert_eq!(merged.get("OfPort"), Some(&Value::Int(65534)));
    assert_eq!(str_at(merged, "Ovs.Type"), Some("internal"));
    // The interfaces netlink does not show are nodes of the probe, owned by their bridge.
    for (name, ty) in [
        ("fxint1", "internal"),
        ("fxint2", "internal"),
        ("fxpatch-a", "patch"),
        ("fxpatch-b", "patch"),
    ] {
        let (id, m) = created(&s, name, ty);
        assert_eq!(str_at(m, "Driver"), Some("openvswitch"));
        assert!(
            s.edges
                .values()
                .any(|(_, c, e)| c == id && str_at(e, "RelationType") == Some("ownership")),
            "{name} is owned"
        );
    }
    // The patch peers: one layer2 edge between them.
    let (a, _) = created(&s, "fxpatch-a", "patch");
    let peered: Vec<_> = s
        .edges
        .values()
        .filter(|(_, _, m)| str_at(m, "Type") == Some("patch"))
        .collect();
    assert_eq!(peered.len(), 1);
    assert!(peered[0].0 == *a || peered[0].1 == *a);
    // host → 2 bridges; bridge → port twice (ownership and layer2) for 6 ports; port →
    // interface for 6; bridge → its 5 probe-made interfaces; host → ovs-system; the patch.
    assert_eq!(s.edges.len(), 2 + 6 * 2 + 6 + 5 + 1 + 1);

    // Applied, then the bridges gone: everything of the probe goes, the netlink node
    // loses only the OVS keys.
    let o = ops(&OvsState::default(), &s, &g);
    crate::topology::apply_ops(&mut g, o, "h", "agent.h", 2);
    assert_eq!(
        g.node("nl-fxbr0").unwrap().metadata.get("OfPort"),
        Some(&Value::Int(65534))
    );
    let gone = desired_now(&Tables::default(), &g, &host);
    let o = ops(&s, &gone, &g);
    crate::topology::apply_ops(&mut g, o, "h", "agent.h", 3);
    let n = g.node("nl-fxbr0").unwrap();
    assert!(n.metadata.get("OfPort").is_none() && n.metadata.get("UUID").is_none());
    assert_eq!(n.metadata.get("MTU"), Some(&Value::Int(1500)));
    assert_eq!(g.node_count(), 2, "host and the netlink node remain");
    assert_eq!(g.edge_count(), 1);
}

#[test]
fn an_internal_port_moved_into_a_namespace_is_found_by_its_mac() {
    // The reply recorded before the move: OVS still shows the device's MAC.
    let (t, _) = fixture("internal_port_ns");
    let (host, mut g) = host_graph();
    owned(
        &mut g,
        "host",
        "ns",
        metadata! {"Name" => "fxns1", "Type" => "netns"},
    );
    // Two interfaces named like the port: another namespace's (other MAC) and the moved one.
    for (id, mac) in [
        ("other", "02:00:00:00:00:99"),
        ("moved", "42:a6:d2:00:1c:9a"),
    ] {
        owned(
            &mut g,
            "ns",
            id,
            metadata! {"Name" => "fxvm1", "Type" => "tun", "MAC" => mac, "IfIndex" => 3},
        );
    }
    let s = desired_now(&t, &g, &host);
    assert!(s.merged.contains_key(&Id::from("moved")), "{s:?}");
    assert!(!s.merged.contains_key(&Id::from("other")));
    assert!(
        s.created
            .values()
            .all(|m| str_at(m, "Name") != Some("fxvm1") || str_at(m, "Type") == Some("ovsport")),
        "no second node for the device"
    );
}

#[test]
fn a_moved_internal_port_whose_mac_ovsdb_forgot_is_its_only_tap_of_that_name() {
    // The userspace datapath shows neither the MAC nor the ifindex of a port moved away.
    let (t, _) = fixture("internal_port_ns");
    let t = without_column(t, "Interface", "mac_in_use");
    let (host, mut g) = host_graph();
    owned(
        &mut g,
        "host",
        "ns",
        metadata! {"Name" => "fxns1", "Type" => "netns"},
    );
    owned(
        &mut g,
        "ns",
        "moved",
        metadata! {"Name" => "fxvm1", "Type" => "tap", "MAC" => "42:a6:d2:00:1c:9a", "IfIndex" => 3},
    );
    // A veth of the same name elsewhere is not a candidate.
    owned(
        &mut g,
        "ns",
        "veth",
        metadata! {"Name" => "fxvm1", "Type" => "veth", "MAC" => "02:00:00:00:00:98", "IfIndex" => 4},
    );
    let s = desired_now(&t, &g, &host);
    assert!(s.merged.contains_key(&Id::from("moved")), "{s:?}");
    assert!(!s.merged.contains_key(&Id::from("veth")));
    // Two taps of that name: which one is unknown, so neither is taken.
    owned(
        &mut g,
        "ns",
        "moved2",
        metadata! {"Name" => "fxvm1", "Type" => "tap", "MAC" => "02:00:00:00:00:97", "IfIndex" => 5},
    );
    let s = desired_now(&t, &g, &host);
    assert!(!s.merged.contains_key(&Id::from("moved")), "{s:?}");
    assert!(!s.merged.contains_key(&Id::from("moved2")));
}

#[test]
fn interface_statistics_become_metrics_with_deltas() {
    // fxst0 was brought up while recording: IPv6 traffic moved its counters 0 → 6 → 7.
    let (mut t, updates) = fixture("statistics");
    let (host, g) = host_graph();
    let ovs_of = |s: &OvsState| {
        created(s, "fxst0", "internal")
            .1
            .get("Ovs")
            .unwrap()
            .clone()
    };
    let first = desired_at(&t, &g, &host, &OvsState::default(), 1000);
    let ovs = ovs_of(&first);
    let m = ovs.as_map().unwrap();
    assert_eq!(m.get_path("Metric.RxPackets"), Some(&Value::Int(0)));
    assert_eq!(m.get_path("Metric.Collisions"), Some(&Value::Int(0)));
    assert_eq!(m.get_path("Metric.Last"), Some(&Value::Int(1000)));
    // The same counters later: nothing changes, not even the times.
    let again = desired_at(&t, &g, &host, &first, 5000);
    assert_eq!(again, first);
    // New counters: the delta since the previous ones, over the time between them.
    t.apply(&updates[0]);
    let next = desired_at(&t, &g, &host, &first, 6000);
    let ovs = ovs_of(&next);
    let m = ovs.as_map().unwrap();
    assert_eq!(m.get_path("Metric.RxPackets"), Some(&Value::Int(6)));
    assert_eq!(m.get_path("Metric.RxBytes"), Some(&Value::Int(516)));
    assert_eq!(
        m.get_path("LastUpdateMetric.RxPackets"),
        Some(&Value::Int(6))
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
    t.apply(&updates[1]);
    let later = desired_at(&t, &g, &host, &next, 11000);
    let ovs = ovs_of(&later);
    let m = ovs.as_map().unwrap();
    assert_eq!(m.get_path("Metric.RxPackets"), Some(&Value::Int(7)));
    assert_eq!(
        m.get_path("LastUpdateMetric.RxPackets"),
        Some(&Value::Int(1))
    );
    assert_eq!(
        m.get_path("LastUpdateMetric.RxBytes"),
        Some(&Value::Int(70))
    );
    assert_eq!(
        m.get_path("LastUpdateMetric.Start"),
        Some(&Value::Int(6000))
    );
    // The bridge's own interface, down, dropped what it was given to send.
    let (_, own) = created(&later, "fxbr3", "internal");
    assert_eq!(own.get_path("Ovs.Metric.TxDropped"), Some(&Value::Int(7)));
    // Without the statistics column (ovs.enable_stats off): no metrics.
    let plain = desired_now(&without_column(t, "Interface", "statistics"), &g, &host);
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
    let (t, _) = fixture("statistics");
    let (host, mut g) = host_graph();
    let s = desired_now(&t, &g, &host);
    let (id, m) = created(&s, "ovs-system", "openvswitch");
    assert_eq!(str_at(m, "Ovs.Version"), Some("3.1.0"));
    assert_eq!(str_at(m, "Ovs.DBVersion"), Some("8.3.1"));
    assert_eq!(
        str_at(m, "Ovs.OtherConfig.stats-update-interval"),
        Some("5000")
    );
    assert_eq!(str_at(m, "ExtID.hostname"), Some("vm"));
    assert!(str_at(m, "ExtID.system-id").is_some());
    assert!(
        s.edges.values().any(|(p, c, e)| p == &host
            && c == id
            && str_at(e, "RelationType") == Some("ownership"))
    );
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
            .all(|m| str_at(m, "Name") != Some("ovs-system"))
    );
    assert_eq!(
        s.merged
            .get(&Id::from("nl-ovs"))
            .and_then(|m| str_at(m, "Ovs.Version")),
        Some("3.1.0")
    );
}

#[test]
fn a_tunnel_leaves_by_the_interface_with_the_longest_route() {
    let (t, _) = fixture("vxlan_tunnel");
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
    // The recorded tunnel (remote 192.0.2.10), then the same row with other remotes.
    let tunnel = |remote: Option<&str>| {
        let mut t = t.clone();
        if let Some(remote) = remote {
            let row =
                t.0.get_mut("Interface")
                    .unwrap()
                    .values_mut()
                    .find(|r| r["name"] == "fxvx0")
                    .unwrap();
            row.insert(
                "options".into(),
                serde_json::json!(["map", [["remote_ip", remote]]]),
            );
        }
        let s = desired_now(&t, &g, &host);
        let m = created(&s, "fxvx0", "vxlan").1.clone();
        let get = |k: &str| str_at(&m, k).map(str::to_string);
        (
            get("TunEgressIface"),
            get("TunEgressIfaceCarrier"),
            get("RemoteIP"),
            get("LocalIP"),
        )
    };
    assert_eq!(
        tunnel(None),
        (
            Some("eth1".into()),
            Some("DOWN".into()),
            Some("192.0.2.10".into()),
            Some("192.0.2.1".into())
        )
    );
    let egress = |remote| {
        let (i, c, _, _) = tunnel(Some(remote));
        (i, c)
    };
    assert_eq!(
        egress("198.51.100.1"),
        (Some("eth0".into()), Some("UP".into()))
    );
    assert_eq!(egress("2001:db8::7").0.as_deref(), Some("eth1"));
    assert_eq!(egress("2001:db9::7").0, None);
    assert_eq!(egress("flow").0, None);
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
