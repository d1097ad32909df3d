//! The ovsdb probe with a real Open vSwitch (userspace datapath) and `skydive allinone`:
//! bridges, ports, the internal port's device as one node with its netlink twin, patch
//! peers, and everything gone with the bridges. Needs root and a running Open vSwitch (the
//! test script starts it).

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use skydive_api::client::Client;

const SOCK: &str = "/var/run/openvswitch/db.sock";

fn vsctl(args: &str) {
    sh(&format!("ovs-vsctl {args}"));
}

/// What `ovs-vsctl ARGS…` prints.
fn vsctl_output(args: &[&str]) -> String {
    let o = Command::new("ovs-vsctl").args(args).output().unwrap();
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn ofctl(args: &str) {
    sh(&format!("ovs-ofctl {args}"));
}

struct Bridges(&'static [&'static str]);

impl Drop for Bridges {
    fn drop(&mut self) {
        for b in self.0 {
            let _ = Command::new("ovs-vsctl")
                .args(["--if-exists", "del-br", b])
                .status();
        }
    }
}

/// One test at a time: they share the host's Open vSwitch, and a reconfiguration of the
/// userspace datapath (another test adding a bridge) recreates the tap devices of internal
/// ports, including one just moved into a namespace.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn ovs_ready(test: &str) -> bool {
    if !root(test) {
        return false;
    }
    if !require(
        test,
        std::path::Path::new(SOCK).exists(),
        &format!("an ovsdb-server at {SOCK}"),
    ) {
        return false;
    }
    true
}

/// What every test here runs in: its turn (see [`SERIAL`]), and `skydive allinone` with the
/// ovsdb probe pointed at the server, `extra` following the `ovs.ovsdb` line. Fields drop in
/// order: the process stops before its directory goes and the next test's turn comes.
struct Lab {
    c: Client,
    addr: String,
    _p: Proc,
    _dir: tempfile::TempDir,
    _one: std::sync::MutexGuard<'static, ()>,
}

/// The lab of `test`, or `None` when it is skipped (not root, no Open vSwitch outside CI).
fn lab(test: &str, host_id: &str, extra: &str) -> Option<Lab> {
    let one = serial();
    if !ovs_ready(test) {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let (p, addr) = allinone(
        dir.path(),
        host_id,
        &format!("ovs:\n  ovsdb: unix://{SOCK}\n{extra}"),
    );
    Some(Lab {
        c: Client::new(&addr, None),
        addr,
        _p: p,
        _dir: dir,
        _one: one,
    })
}

/// The settings of most tests: flows sent every second.
const FLOWS_EVERY_SECOND: &str = "flow:\n  update: 1\n";

#[test]
fn an_ovssflow_capture_gives_the_flows_through_the_bridge() {
    let Some(lab) = lab(
        "an_ovssflow_capture_gives_the_flows_through_the_bridge",
        "ovs-e2e",
        FLOWS_EVERY_SECOND,
    ) else {
        return;
    };
    let c = &lab.c;
    let _br = Bridges(&["skyovs7"]);
    let mut clean = Cleanup(Vec::new());
    vsctl("--may-exist add-br skyovs7 -- set bridge skyovs7 datapath_type=netdev");
    for (ns, ip, end) in [
        ("ovsf-a", "10.78.7.1", "vo7a"),
        ("ovsf-b", "10.78.7.2", "vo7b"),
    ] {
        clean.host_veth(ns, end, ip);
        vsctl(&format!("add-port skyovs7 {end}"));
    }
    eventually(Duration::from_secs(15), "the bridge in the graph", || {
        count(c, "G.V().Has('Type', 'ovsbridge', 'Name', 'skyovs7')") == 1
    });
    let tid = query(c, "G.V().Has('Type', 'ovsbridge', 'Name', 'skyovs7')").unwrap()[0]["Metadata"]
        ["TID"]
        .as_str()
        .unwrap()
        .to_string();
    let cap: serde_json::Value = c
        .json(
            "POST",
            "/api/capture",
            &serde_json::json!({"GremlinQuery": "G.V().Has('Type', 'ovsbridge', 'Name', 'skyovs7')", "SamplingRate": 1, "PollingInterval": 1}),
            &[],
        )
        .unwrap();
    let id = cap["UUID"].as_str().unwrap().to_string();
    eventually(
        Duration::from_secs(15),
        "the ovssflow capture active",
        || {
            count(
                c,
                &format!(
                    "G.V().Has('Name', 'skyovs7', 'Captures.ID', '{id}', 'Captures.Type', 'ovssflow')"
                ),
            ) == 1
        },
    );
    let sflow_rows = || vsctl_output(&["--columns=external_ids", "list", "sflow"]);
    assert!(
        sflow_rows().contains("skydive-probe-id"),
        "{}",
        sflow_rows()
    );
    sh("ip netns exec ovsf-a ping -q -c 5 -i 0.2 -W 1 10.78.7.2");
    let q =
        "G.V().Has('Name', 'skyovs7', 'Type', 'ovsbridge').Flows().Has('Application', 'ICMPv4')";
    eventually(
        Duration::from_secs(20),
        "ICMP flows with the bridge's TID",
        || {
            query(c, q)
                .and_then(|v| v.as_array().cloned())
                .is_some_and(|fs| !fs.is_empty() && fs.iter().all(|f| f["NodeTID"] == tid.as_str()))
        },
    );
    c.delete(&format!("/api/capture/{id}")).unwrap();
    eventually(
        Duration::from_secs(10),
        "the sFlow row gone from OVSDB",
        || !sflow_rows().contains("skydive-probe-id"),
    );
    drop(clean);
}

#[test]
fn ovs_bridges_ports_and_patch_peers_follow_ovsdb() {
    let Some(lab) = lab(
        "ovs_bridges_ports_and_patch_peers_follow_ovsdb",
        "ovs-e2e",
        FLOWS_EVERY_SECOND,
    ) else {
        return;
    };
    let c = &lab.c;

    let _br = Bridges(&["skyovs5", "skyovs6"]);
    for b in ["skyovs5", "skyovs6"] {
        vsctl(&format!(
            "--may-exist add-br {b} -- set bridge {b} datapath_type=netdev external_ids:skydive=test"
        ));
    }
    vsctl("add-port skyovs5 sky-p5 -- set interface sky-p5 type=patch options:peer=sky-p6");
    vsctl("add-port skyovs6 sky-p6 -- set interface sky-p6 type=patch options:peer=sky-p5");

    eventually(
        Duration::from_secs(15),
        "both bridges with their two ports",
        || {
            count(c, "G.V().Has('Type', 'ovsbridge', 'ExtID.skydive', 'test')") == 2
                && count(
                    c,
                    "G.V().Has('Type', 'ovsbridge', 'Name', 'skyovs5').Out('Type', 'ovsport').Dedup()",
                ) == 2
        },
    );
    // Ports are linked from the bridge twice (ownership and layer2), as Skydive does.
    assert_eq!(
        count(
            c,
            "G.V().Has('Type', 'ovsbridge', 'Name', 'skyovs5').Out('Type', 'ovsport')"
        ),
        4
    );
    // The patch peers, one layer2 edge of Type patch between them.
    eventually(Duration::from_secs(10), "the patch peering", || {
        count(
            c,
            "G.V().Has('Name', 'sky-p5', 'Type', 'patch').Both('Name', 'sky-p6', 'Type', 'patch')",
        ) == 1
    });
    assert_eq!(
        count(c, "G.E().Has('RelationType', 'layer2', 'Type', 'patch')"),
        1
    );
    // The internal port's device (a tap of the userspace datapath) is one node: the netlink
    // node, with the OVS keys.
    eventually(
        Duration::from_secs(15),
        "the internal interface merged",
        || {
            count(
                c,
                "G.V().Has('Name', 'skyovs5', 'OfPort', 65534).Has('MTU')",
            ) == 1
        },
    );
    let iface = query(c, "G.V().Has('Name', 'skyovs5', 'OfPort', 65534)").unwrap()[0].clone();
    assert_eq!(iface["Metadata"]["Ovs"]["Type"], "internal");
    assert!(
        iface["Metadata"]["IfIndex"].as_i64().unwrap() > 0,
        "a netlink node: {iface}"
    );
    assert_eq!(
        count(
            c,
            "G.V().Has('Name', 'skyovs5', 'Type', 'ovsport').Out('Name', 'skyovs5', 'OfPort', 65534)"
        ),
        1,
        "port → interface"
    );

    // (Internal ports moved into a namespace: see the last test.)
    vsctl("del-br skyovs5");
    vsctl("del-br skyovs6");
    eventually(
        Duration::from_secs(15),
        "everything of the bridges gone",
        || {
            count(c, "G.V().Has('ExtID.skydive', 'test')") == 0
                && count(c, "G.V().Has('Type', 'ovsport')") == 0
                && count(c, "G.V().Has('Name', 'sky-p5')") == 0
                && count(c, "G.V().Has('OfPort')") == 0
        },
    );
}

#[test]
fn two_bridges_joined_by_patch_ports_see_the_same_tracking_id() {
    let Some(lab) = lab(
        "two_bridges_joined_by_patch_ports_see_the_same_tracking_id",
        "ovs-e2e",
        FLOWS_EVERY_SECOND,
    ) else {
        return;
    };
    let c = &lab.c;
    let _br = Bridges(&["skyovs8", "skyovs9"]);
    let mut clean = Cleanup(Vec::new());
    for b in ["skyovs8", "skyovs9"] {
        vsctl(&format!(
            "--may-exist add-br {b} -- set bridge {b} datapath_type=netdev"
        ));
    }
    vsctl("add-port skyovs8 sky-p8 -- set interface sky-p8 type=patch options:peer=sky-p9");
    vsctl("add-port skyovs9 sky-p9 -- set interface sky-p9 type=patch options:peer=sky-p8");
    for (ns, ip, end, br) in [
        ("ovsp-a", "10.78.8.1", "vo8a", "skyovs8"),
        ("ovsp-b", "10.78.8.2", "vo8b", "skyovs9"),
    ] {
        clean.host_veth(ns, end, ip);
        vsctl(&format!("add-port {br} {end}"));
    }
    eventually(Duration::from_secs(15), "both bridges in the graph", || {
        count(
            c,
            "G.V().Has('Type', 'ovsbridge', 'Name', Regex('skyovs[89]'))",
        ) == 2
    });
    let cap: serde_json::Value = c
        .json(
            "POST",
            "/api/capture",
            &serde_json::json!({"GremlinQuery": "G.V().Has('Type', 'ovsbridge', 'Name', Regex('skyovs[89]'))", "SamplingRate": 1, "PollingInterval": 1}),
            &[],
        )
        .unwrap();
    let id = cap["UUID"].as_str().unwrap().to_string();
    eventually(
        Duration::from_secs(15),
        "the capture on both bridges",
        || {
            count(
                c,
                &format!("G.V().Has('Type', 'ovsbridge', 'Captures.ID', '{id}')"),
            ) == 2
        },
    );
    sh("ip netns exec ovsp-a ping -q -c 5 -i 0.2 -W 1 10.78.8.2");
    let q = "G.V().Has('Type', 'ovsbridge', 'Name', Regex('skyovs[89]')).Flows().Has('Application', 'ICMPv4')";
    eventually(
        Duration::from_secs(20),
        "the ICMP flow seen on both bridges",
        || {
            let flows = query(c, q)
                .and_then(|v| v.as_array().cloned())
                .unwrap_or_default();
            let tids: std::collections::BTreeSet<String> = flows
                .iter()
                .filter_map(|f| f["NodeTID"].as_str().map(str::to_string))
                .collect();
            let tracking: std::collections::BTreeSet<String> = flows
                .iter()
                .filter_map(|f| f["TrackingID"].as_str().map(str::to_string))
                .collect();
            tids.len() == 2 && tracking.len() == 1
        },
    );
    c.delete(&format!("/api/capture/{id}")).unwrap();
    drop(clean);
}

/// Restores the switch's `stats-update-interval` when dropped.
struct StatsInterval;

impl Drop for StatsInterval {
    fn drop(&mut self) {
        let _ = Command::new("ovs-vsctl")
            .args([
                "remove",
                "Open_vSwitch",
                ".",
                "other_config",
                "stats-update-interval",
            ])
            .status();
    }
}

#[test]
fn the_switch_its_interface_statistics_and_a_tunnels_egress() {
    let Some(lab) = lab(
        "the_switch_its_interface_statistics_and_a_tunnels_egress",
        "ovs-stats",
        "  enable_stats: true\n",
    ) else {
        return;
    };
    let c = &lab.c;
    // The switch: one openvswitch node with the version ovs-vsctl reports.
    let version = vsctl_output(&["get", "Open_vSwitch", ".", "ovs_version"])
        .trim()
        .trim_matches('"')
        .to_string();
    assert!(!version.is_empty());
    eventually(Duration::from_secs(15), "the ovs-system node", || {
        query(c, "G.V().Has('Type', 'openvswitch').Values('Ovs.Version')")
            .is_some_and(|v| v == serde_json::json!([version]))
    });

    // Statistics every second, and traffic through a bridge.
    let _interval = StatsInterval;
    vsctl("set Open_vSwitch . other_config:stats-update-interval=1000");
    let _br = Bridges(&["skyovs8"]);
    let mut clean = Cleanup(Vec::new());
    vsctl("--may-exist add-br skyovs8 -- set bridge skyovs8 datapath_type=netdev");
    for (ns, ip, end) in [
        ("ovst-a", "10.78.8.1", "vo8a"),
        ("ovst-b", "10.78.8.2", "vo8b"),
    ] {
        clean.host_veth(ns, end, ip);
        vsctl(&format!("add-port skyovs8 {end}"));
    }
    let rx = |c: &Client| -> i64 {
        query(
            c,
            "G.V().Has('Name', 'vo8a').Values('Ovs.Metric.RxPackets')",
        )
        .and_then(|v| v[0].as_i64())
        .unwrap_or(-1)
    };
    eventually(Duration::from_secs(15), "the port's statistics", || {
        rx(c) >= 0
    });
    let before = rx(c);
    sh("ip netns exec ovst-a ping -q -c 5 -i 0.2 -W 1 10.78.8.2");
    eventually(
        Duration::from_secs(15),
        "the pings counted by OVS on the port",
        || rx(c) >= before + 5,
    );
    let delta = query(
        c,
        "G.V().Has('Name', 'vo8a').Values('Ovs.LastUpdateMetric')",
    )
    .unwrap()[0]
        .clone();
    assert!(delta["Last"].as_i64() > delta["Start"].as_i64(), "{delta}");
    assert!(delta["RxPackets"].as_i64().unwrap() >= 0, "{delta}");

    // A vxlan port towards an address the host reaches through one of its interfaces.
    clean.host_veth("ovst-t", "vo8t", "10.78.9.2");
    sh("ip addr add 10.78.9.1/24 dev vo8t");
    vsctl("add-port skyovs8 vx8 -- set interface vx8 type=vxlan options:remote_ip=10.78.9.2");
    let want = serde_json::json!(["vxlan", "10.78.9.2", "vo8t", "UP"]);
    let mut seen = serde_json::Value::Null;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::time::Instant::now() < deadline {
        if let Some(v) = query(c, "G.V().Has('Name', 'vx8', 'Type', 'vxlan')") {
            let m = &v[0]["Metadata"];
            seen = serde_json::json!([
                m["Type"],
                m["RemoteIP"],
                m["TunEgressIface"],
                m["TunEgressIfaceCarrier"]
            ]);
            if seen == want {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let routes = query(c, "G.V().Has('Name', 'vo8t').Values('RoutingTables')");
    let state = query(c, "G.V().Has('Name', 'vo8t').Values('State')");
    assert_eq!(
        seen, want,
        "the tunnel's egress; vo8t: {state:?}, routes {routes:?}"
    );
    drop(clean);
}

#[test]
fn openflow_rules_and_groups_follow_the_bridge() {
    let Some(lab) = lab(
        "openflow_rules_and_groups_follow_the_bridge",
        "ovs-oflow",
        "  oflow:\n    enable: true\n",
    ) else {
        return;
    };
    let c = &lab.c;
    let _br = Bridges(&["skyovs9"]);
    vsctl("--may-exist add-br skyovs9 -- set bridge skyovs9 datapath_type=netdev");
    ofctl("add-flow skyovs9 'table=0,priority=100,ip,nw_src=10.0.0.0/8,actions=resubmit(,1)'");
    ofctl("add-flow skyovs9 'table=1,cookie=0x2a,priority=50,in_port=1,actions=output:2'");
    ofctl("-O OpenFlow13 add-group skyovs9 'group_id=5,type=all,bucket=output:1,bucket=output:2'");
    let rules = "G.V().Has('Type', 'ovsbridge', 'Name', 'skyovs9').Out('Type', 'ofrule')";
    // The bridge's default rule (priority 0, NORMAL) and ours.
    eventually(
        Duration::from_secs(15),
        "the rules under the bridge",
        || count(c, rules) == 3,
    );
    let r = query(c, &format!("{rules}.Has('Priority', 50)")).unwrap()[0]["Metadata"].clone();
    assert_eq!(r["Cookie"], "0x2a");
    assert_eq!(r["Table"], 1);
    assert_eq!(
        r["Filters"],
        serde_json::json!([{"Key": "in_port", "Value": "1", "Mask": ""}])
    );
    assert_eq!(r["Actions"][0]["Function"], "output");
    assert_eq!(r["Actions"][0]["Arguments"], serde_json::json!(["2"]));
    let r = query(c, &format!("{rules}.Has('Priority', 100)")).unwrap()[0]["Metadata"].clone();
    assert_eq!(
        r["Filters"][1],
        serde_json::json!({"Key": "nw_src", "Value": "10.0.0.0", "Mask": "8"})
    );
    assert_eq!(r["Actions"][0]["Function"], "resubmit");
    // The group may come with a later reading of the bridge than the rules.
    let groups = "G.V().Has('Name', 'skyovs9').Out('Type', 'ofgroup')";
    eventually(
        Duration::from_secs(15),
        "the group under the bridge",
        || count(c, groups) == 1,
    );
    let g = query(c, groups).unwrap()[0]["Metadata"].clone();
    assert_eq!(
        (g["GroupId"].clone(), g["GroupType"].clone()),
        (5.into(), "all".into())
    );
    assert_eq!(g["Buckets"].as_array().unwrap().len(), 2);
    // A rule deleted in OVS leaves the graph.
    ofctl("del-flows skyovs9 'table=1,in_port=1'");
    eventually(Duration::from_secs(15), "the deleted rule gone", || {
        count(c, rules) == 2 && count(c, &format!("{rules}.Has('Priority', 50)")) == 0
    });
}

#[test]
fn internal_ports_stay_internal_across_updates_restarts_and_a_namespace_move() {
    let Some(mut lab) = lab(
        "internal_ports_stay_internal_across_updates_restarts_and_a_namespace_move",
        "ovs-int",
        "",
    ) else {
        return;
    };
    let _br = Bridges(&["skyovs8"]);
    let mut clean = Cleanup(Vec::new());
    clean.netns("skyovsmv");
    vsctl("--may-exist add-br skyovs8 -- set bridge skyovs8 datapath_type=netdev");
    let ports = ["skyint1", "skyint2", "skyint3"];
    for p in ports {
        vsctl(&format!(
            "add-port skyovs8 {p} -- set interface {p} type=internal"
        ));
    }
    let devices = ["skyovs8", "skyint1", "skyint2", "skyint3"];
    // Each device is one node (netlink's, with the OVS keys): Type internal, and the TID
    // made of it.
    let device = |c: &Client, name: &str| {
        query(c, &format!("G.V().Has('Name', '{name}').Has('IfIndex')"))
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
    };
    let all_internal = |c: &Client, owner_tid: &str| {
        devices.iter().all(|d| {
            let nodes = device(c, d);
            nodes.len() == 1
                && nodes[0]["Metadata"]["Type"] == "internal"
                && nodes[0]["Metadata"]["TID"]
                    == skydive_graph::id::child_tid(owner_tid, d, "internal").as_str()
        })
    };
    let host_tid = |c: &Client| {
        query(c, "G.V().Has('Type', 'host')").unwrap()[0]["Metadata"]["TID"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let tid = host_tid(&lab.c);
    eventually(Duration::from_secs(15), "four internal devices", || {
        all_internal(&lab.c, &tid)
    });
    // Netlink updates (state, MTU) keep the type.
    sh("ip link set skyint1 up && ip link set skyint2 mtu 1400 && ip link set skyovs8 mtu 1450");
    eventually(Duration::from_secs(10), "the MTUs updated", || {
        device(&lab.c, "skyint2")
            .first()
            .is_some_and(|n| n["Metadata"]["MTU"] == 1400)
            && device(&lab.c, "skyovs8")
                .first()
                .is_some_and(|n| n["Metadata"]["MTU"] == 1450)
    });
    assert!(all_internal(&lab.c, &tid), "after netlink updates");

    // The agent restarts: both probes report again, in whatever order.
    lab._p.kill9();
    lab._p.start();
    wait_api(&lab.addr);
    eventually(
        Duration::from_secs(20),
        "internal again after a restart",
        || all_internal(&lab.c, &tid),
    );

    // An internal port moved into a namespace: still one node, internal, its TID made of
    // the namespace's.
    sh("ip link set skyint3 netns skyovsmv");
    let moved = |c: &Client| {
        query(
            c,
            "G.V().Has('Type', 'netns', 'Name', 'skyovsmv').Out().Has('Name', 'skyint3')",
        )
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
    };
    eventually(
        Duration::from_secs(15),
        "the moved port in its namespace",
        || {
            let ns_tid = query(&lab.c, "G.V().Has('Type', 'netns', 'Name', 'skyovsmv')")
                .and_then(|v| v[0]["Metadata"]["TID"].as_str().map(str::to_string));
            let m = moved(&lab.c);
            m.len() == 1
                && m[0]["Metadata"]["Type"] == "internal"
                && m[0]["Metadata"]["Ovs"]["Type"] == "internal"
                && ns_tid.is_some_and(|t| {
                    m[0]["Metadata"]["TID"]
                        == skydive_graph::id::child_tid(&t, "skyint3", "internal").as_str()
                })
                && count(
                    &lab.c,
                    "G.V().Has('Name', 'skyint3', 'Driver', 'openvswitch')",
                ) == 0
        },
    );
    sh("ip netns exec skyovsmv ip link set skyint3 mtu 1300");
    eventually(Duration::from_secs(10), "the moved port's MTU", || {
        moved(&lab.c)
            .first()
            .is_some_and(|n| n["Metadata"]["MTU"] == 1300)
    });
    assert_eq!(moved(&lab.c)[0]["Metadata"]["Type"], "internal");
    drop(clean);
}
