//! The topology probes on real namespaces, veth pairs, bridges, vxlan and macvlan devices,
//! checked through the analyzer's API with the Gremlin queries a user would write. Needs
//! root; without it the tests say so and pass, except under `CI=true` where they fail.
//! Every test names what it creates after itself and removes it, even when it fails.

mod common;

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use skydive_agent::{Agent, AgentOptions, NoRequests};
use skydive_analyzer::Analyzer;
use skydive_api::client::Client;
use skydive_config::Settings;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A short unique prefix (interface names have 15 characters at most).
fn prefix() -> String {
    format!(
        "t{}{}",
        std::process::id() % 1000,
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// An analyzer and an agent with its probes, in this process.
struct Lab {
    rt: tokio::runtime::Runtime,
    analyzer: Option<Analyzer>,
    agent: Option<Agent>,
    settings: Settings,
    client: Client,
    _dir: tempfile::TempDir,
}

impl Lab {
    fn start() -> Lab {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Settings {
            host_id: format!("probe-host-{}", NEXT.fetch_add(1, Ordering::Relaxed)),
            ..Default::default()
        };
        s.analyzer.listen = format!("127.0.0.1:{}", free_port());
        s.agent.listen = "127.0.0.1:0".into();
        s.analyzers = vec![s.analyzer.listen.clone()];
        s.agent.topology.netlink.metrics_update = 1;
        s.storage.insert(
            "embedded".into(),
            json!({"driver": "embedded", "path": dir.path().display().to_string()}),
        );
        let rt = tokio::runtime::Runtime::new().unwrap();
        let analyzer = rt.block_on(Analyzer::start(&s)).unwrap();
        let agent = rt.block_on(Lab::agent(&s)).unwrap();
        let client = Client::new(&s.analyzer.listen, None);
        let lab = Lab {
            rt,
            analyzer: Some(analyzer),
            agent: Some(agent),
            settings: s,
            client,
            _dir: dir,
        };
        eventually(Duration::from_secs(10), "the host's loopback", || {
            lab.count("G.V().Has('Type', 'host').Out().Has('Name', 'lo')") == 1
        });
        lab
    }

    async fn agent(s: &Settings) -> anyhow::Result<Agent> {
        let options = AgentOptions {
            process_scan_every: Duration::from_millis(500),
            ..Default::default()
        };
        Agent::start_with(s, Arc::new(NoRequests), options).await
    }

    fn restart_agent(&mut self) {
        let a = self.agent.take().unwrap();
        self.rt.block_on(a.shutdown());
        self.agent = Some(self.rt.block_on(Lab::agent(&self.settings)).unwrap());
    }

    fn query(&self, q: &str) -> Value {
        query(&self.client, q).unwrap_or(Value::Null)
    }

    fn count(&self, q: &str) -> i64 {
        count(&self.client, q)
    }

    /// Sorted `Values('Name')` of a query.
    fn names(&self, q: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .query(&format!("{q}.Values('Name')"))
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    /// The node named `name` (the first), as JSON.
    fn node(&self, name: &str) -> Value {
        self.query(&format!("G.V().Has('Name', '{name}')"))
            .get(0)
            .cloned()
            .unwrap_or(Value::Null)
    }

    fn converge(&self, what: &str, mut cond: impl FnMut() -> bool) {
        let start = std::time::Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if cond() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let status: Value = Client::new(&self.agent.as_ref().unwrap().addr.to_string(), None)
            .get("/api/status")
            .unwrap_or(Value::Null);
        let nss: Vec<(String, Vec<String>)> = self
            .names("G.V().Has('Type', 'netns')")
            .into_iter()
            .map(|n| {
                let out = self.names(&format!("G.V().Has('Type', 'netns', 'Name', '{n}').Out()"));
                (n, out)
            })
            .collect();
        panic!(
            "timed out waiting for: {what}\nnamespaces: {nss:?}\nprobes: {}",
            status["TopologyProbes"]
        );
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(a) = self.agent.take() {
            self.rt.block_on(a.shutdown());
        }
        if let Some(a) = self.analyzer.take() {
            self.rt.block_on(a.shutdown());
        }
    }
}

#[test]
fn veth_pairs_are_one_layer2_edge_even_across_namespaces() {
    if !root("veth_pairs_are_one_layer2_edge_even_across_namespaces") {
        return;
    }
    let p = prefix();
    let (a, b) = (format!("{p}a"), format!("{p}b"));
    let mut c = Cleanup(Vec::new());
    let lab = Lab::start();
    c.netns(&a);
    c.netns(&b);
    // One end on the host, the other in a namespace.
    c.link(
        &format!("{p}h"),
        &format!("ip link add {p}h type veth peer name {p}n netns {a}"),
    );
    // Both ends in two namespaces.
    sh(&format!(
        "ip -n {a} link add {p}x type veth peer name {p}y netns {b}"
    ));
    lab.converge("both namespaces with their interfaces", || {
        lab.names(&format!("G.V().Has('Type', 'netns', 'Name', '{a}').Out()"))
            == vec!["lo".to_string(), format!("{p}n"), format!("{p}x")]
            && lab.names(&format!("G.V().Has('Type', 'netns', 'Name', '{b}').Out()"))
                == vec!["lo".to_string(), format!("{p}y")]
    });
    lab.converge("the host end linked to its peer", || {
        lab.names(&format!(
            "G.V().Has('Name', '{p}h').Both().Has('Type', 'veth')"
        )) == vec![format!("{p}n")]
    });
    lab.converge("the namespace pair linked", || {
        lab.names(&format!(
            "G.V().Has('Name', '{p}x').Both().Has('Type', 'veth')"
        )) == vec![format!("{p}y")]
    });
    // One edge per pair, whichever way it is walked.
    assert_eq!(
        lab.count(&format!(
            "G.V().Has('Name', '{p}x').BothE().Has('RelationType', 'layer2')"
        )),
        1
    );
    // Ownership: the namespace owns its end, the host owns its own.
    assert_eq!(
        lab.names(&format!(
            "G.V().Has('Name', '{p}h').In().Has('Type', 'host')"
        ))
        .len(),
        1
    );
    let host_end = lab.node(&format!("{p}h"));
    assert_eq!(host_end["Metadata"]["LinkNetNsName"], json!(a));
    assert_eq!(host_end["Metadata"]["Type"], "veth");
    assert_eq!(host_end["Metadata"]["Driver"], "veth");
    let ns = lab.node(&a);
    assert_eq!(ns["Metadata"]["Path"], json!(format!("/var/run/netns/{a}")));
    assert!(ns["Metadata"]["Inode"].as_i64().unwrap() > 0);
}

#[test]
fn veths_between_two_named_namespaces_are_peered_whatever_the_order() {
    if !root("veths_between_two_named_namespaces_are_peered_whatever_the_order") {
        return;
    }
    let lab = Lab::start();
    // Each round: the namespaces made in one order or the other, the veth made at once
    // (before the agent knows the namespaces) or once they are in the graph.
    for round in 0..12 {
        let p = prefix();
        let (a, b) = (format!("{p}a"), format!("{p}b"));
        let mut c = Cleanup(Vec::new());
        let (first, second) = if round % 2 == 0 { (&a, &b) } else { (&b, &a) };
        c.netns(first);
        c.netns(second);
        let late = round % 4 >= 2;
        if late {
            lab.converge("both namespaces known", || {
                lab.count(&format!(
                    "G.V().Has('Type', 'netns').Has('Name', Within('{a}', '{b}'))"
                )) == 2
            });
        }
        sh(&format!(
            "ip -n {a} link add {p}x type veth peer name {p}y netns {b}"
        ));
        let what = format!("round {round} (namespace {first} first, veth made late: {late})");
        lab.converge(&what, || {
            let x = lab.node(&format!("{p}x"));
            let y = lab.node(&format!("{p}y"));
            x["Metadata"]["LinkNetNsName"] == json!(b)
                && y["Metadata"]["LinkNetNsName"] == json!(a)
                && lab.count(&format!(
                    "G.V().Has('Name', '{p}x').BothE().Has('RelationType', 'layer2').BothV().Has('Name', '{p}y')"
                )) == 1
        });
        drop(c);
        lab.converge("the namespaces gone", || {
            lab.count(&format!(
                "G.V().Has('Type', 'netns').Has('Name', Within('{a}', '{b}'))"
            )) == 0
        });
    }
}

#[test]
fn bridges_vxlan_and_macvlan_link_to_their_ports_and_lower_devices() {
    if !root("bridges_vxlan_and_macvlan_link_to_their_ports_and_lower_devices") {
        return;
    }
    let p = prefix();
    let n = format!("{p}n");
    let mut c = Cleanup(Vec::new());
    let lab = Lab::start();
    c.netns(&n);
    sh(&format!("ip -n {n} link add br0 type bridge"));
    sh(&format!("ip -n {n} tuntap add tap0 mode tap"));
    sh(&format!("ip -n {n} tuntap add tap1 mode tap"));
    sh(&format!("ip -n {n} link set tap0 master br0"));
    sh(&format!("ip -n {n} link set tap1 master br0"));
    sh(&format!("ip -n {n} link add v0 type veth peer name v1"));
    sh(&format!(
        "ip -n {n} link add vx0 type vxlan id 42 dev v0 dstport 4789"
    ));
    sh(&format!(
        "ip -n {n} link add mv0 link v0 type macvlan mode bridge"
    ));
    let in_ns = |q: &str| format!("G.V().Has('Type', 'netns', 'Name', '{n}').Out(){q}");
    lab.converge("the bridge and its ports", || {
        lab.names(&in_ns(".Has('Name', 'br0').Out().Has('Type', 'tap')")) == vec!["tap0", "tap1"]
    });
    lab.converge("vxlan and macvlan under their lower device", || {
        lab.names(&in_ns(
            ".Has('Name', 'v0').Out().Has('Type', Within('vxlan', 'macvlan'))",
        )) == vec!["mv0", "vx0"]
    });
    let vx = lab.query(&in_ns(".Has('Name', 'vx0')"));
    assert_eq!(vx[0]["Metadata"]["VNI"], 42);
    // A port leaves the bridge: its layer2 edge goes.
    sh(&format!("ip -n {n} link set tap1 nomaster"));
    lab.converge("the detached port", || {
        lab.names(&in_ns(".Has('Name', 'br0').Out().Has('Type', 'tap')")) == vec!["tap0"]
    });
    assert_eq!(
        lab.query(&in_ns(".Has('Name', 'tap1')"))[0]["Metadata"].get("MasterIndex"),
        None
    );
}

#[test]
fn kernel_changes_reach_the_analyzer() {
    if !root("kernel_changes_reach_the_analyzer") {
        return;
    }
    let p = prefix();
    let n = format!("{p}n");
    let mut c = Cleanup(Vec::new());
    let lab = Lab::start();
    c.netns(&n);
    sh(&format!("ip -n {n} link add e0 type veth peer name e1"));
    let q = |rest: &str| {
        format!("G.V().Has('Type', 'netns', 'Name', '{n}').Out().Has('IfIndex', {rest})")
    };
    lab.converge("the interface", || {
        lab.names(&format!("G.V().Has('Type', 'netns', 'Name', '{n}').Out()"))
            .contains(&"e0".to_string())
    });
    let e0 = lab.query(&format!(
        "G.V().Has('Type', 'netns', 'Name', '{n}').Out().Has('Name', 'e0')"
    ))[0]
        .clone();
    let id = e0["ID"].as_str().unwrap().to_string();
    let ifindex = e0["Metadata"]["IfIndex"].as_i64().unwrap();
    let get = |key: &str| {
        lab.query(&format!("G.V('{id}').Values('{key}')"))
            .get(0)
            .cloned()
            .unwrap_or(Value::Null)
    };
    // Up, MAC, MTU, rename.
    sh(&format!(
        "ip -n {n} link set e0 address 02:00:00:00:00:42 mtu 1400 up"
    ));
    lab.converge("MAC and MTU", || {
        get("MAC") == json!("02:00:00:00:00:42") && get("MTU") == json!(1400)
    });
    lab.converge("up", || {
        get("LinkFlags")
            .as_array()
            .is_some_and(|f| f.contains(&json!("UP")))
    });
    sh(&format!("ip -n {n} link set e0 name e0renamed"));
    lab.converge("the new name, same node", || {
        get("Name") == json!("e0renamed")
    });
    assert_eq!(lab.count(&q(&ifindex.to_string())), 1);
    // Addresses, routes in another table, a static neighbour.
    sh(&format!("ip -n {n} link set e1 up"));
    sh(&format!("ip -n {n} addr add 169.254.30.1/24 dev e0renamed"));
    sh(&format!(
        "ip -n {n} route add 192.0.2.0/24 via 169.254.30.254 dev e0renamed table 100"
    ));
    sh(&format!(
        "ip -n {n} neigh add 169.254.30.254 lladdr 02:00:00:00:00:fe dev e0renamed nud permanent"
    ));
    lab.converge("the address", || get("IPV4") == json!(["169.254.30.1/24"]));
    lab.converge("the route of table 100 with its gateway's MAC", || {
        let tables = get("RoutingTables");
        tables.as_array().is_some_and(|t| {
            t.iter().any(|t| {
                t["ID"] == 100
                    && t["Routes"][0]["Prefix"] == "192.0.2.0/24"
                    && t["Routes"][0]["NextHops"][0]["IP"] == "169.254.30.254"
                    && t["Routes"][0]["NextHops"][0]["MAC"] == "02:00:00:00:00:fe"
            })
        })
    });
    lab.converge("the neighbour", || {
        get("Neighbors").as_array().is_some_and(|a| {
            a.iter()
                .any(|x| x["IP"] == "169.254.30.254" && x["State"] == json!(["NUD_PERMANENT"]))
        })
    });
    // Gremlin finds the interface by address.
    assert_eq!(
        lab.count("G.V().Has('IPV4', Ipv4Range('169.254.30.0/24'))"),
        1
    );
    sh(&format!("ip -n {n} addr del 169.254.30.1/24 dev e0renamed"));
    lab.converge("the address gone, and its key", || get("IPV4").is_null());
    // Down.
    sh(&format!("ip -n {n} link set e0renamed down"));
    lab.converge("down", || get("State") == json!("DOWN"));
    // Moved to another namespace: it leaves the first one.
    let m = format!("{p}m");
    c.netns(&m);
    sh(&format!("ip -n {n} link set e0renamed netns {m}"));
    lab.converge("moved", || {
        lab.names(&format!("G.V().Has('Type', 'netns', 'Name', '{m}').Out()"))
            .contains(&"e0renamed".to_string())
            && !lab
                .names(&format!("G.V().Has('Type', 'netns', 'Name', '{n}').Out()"))
                .contains(&"e0renamed".to_string())
    });
    // The pair is still one layer2 edge, now across the two namespaces.
    lab.converge("the pair across namespaces", || {
        lab.names("G.V().Has('Name', 'e0renamed').Both().Has('Type', 'veth')") == vec!["e1"]
    });
    // Deleted.
    sh(&format!("ip -n {n} link del e1"));
    lab.converge("both ends gone", || {
        lab.count("G.V().Has('Name', Within('e0renamed', 'e1'))") == 0
    });
}

#[test]
fn namespaces_that_go_take_their_subgraph() {
    if !root("namespaces_that_go_take_their_subgraph") {
        return;
    }
    let p = prefix();
    let n = format!("{p}n");
    let mut c = Cleanup(Vec::new());
    let lab = Lab::start();
    c.netns(&n);
    sh(&format!("ip -n {n} link add g0 type veth peer name g1"));
    lab.converge("the namespace", || {
        lab.count(&format!("G.V().Has('Type', 'netns', 'Name', '{n}').Out()")) == 3
    });
    sh(&format!("ip netns del {n}"));
    lab.converge("the namespace and its interfaces gone", || {
        lab.count(&format!("G.V().Has('Type', 'netns', 'Name', '{n}')")) == 0
            && lab.count("G.V().Has('Name', Within('g0', 'g1'))") == 0
    });
}

#[test]
fn namespaces_of_processes_are_found_without_a_container_probe() {
    if !root("namespaces_of_processes_are_found_without_a_container_probe") {
        return;
    }
    let lab = Lab::start();
    // A process in a namespace of its own, as a container runtime makes them.
    let mut child = Command::new("unshare")
        .args(["--net", "sleep", "60"])
        .spawn()
        .unwrap();
    let pid = child.id();
    let name = format!("sleep-{pid}");
    lab.converge("the process's namespace", || {
        lab.names(&format!(
            "G.V().Has('Type', 'netns', 'Name', '{name}').Out()"
        )) == vec!["lo"]
    });
    let ns = lab.node(&name);
    assert_eq!(ns["Metadata"]["Path"], json!(format!("/proc/{pid}/ns/net")));
    let _ = child.kill();
    let _ = child.wait();
    lab.converge("the namespace gone with its process", || {
        lab.count(&format!("G.V().Has('Name', '{name}')")) == 0
    });
}

#[test]
fn ethtool_and_counters_fill_the_interfaces() {
    if !root("ethtool_and_counters_fill_the_interfaces") {
        return;
    }
    let p = prefix();
    let n = format!("{p}n");
    let mut c = Cleanup(Vec::new());
    let lab = Lab::start();
    let m = format!("{p}m");
    c.netns(&n);
    c.netns(&m);
    sh(&format!(
        "ip -n {n} link add c0 type veth peer name c1 netns {m}"
    ));
    sh(&format!("ip -n {n} addr add 169.254.40.1/24 dev c0"));
    sh(&format!("ip -n {m} addr add 169.254.40.2/24 dev c1"));
    sh(&format!("ip -n {n} link set c0 up"));
    sh(&format!("ip -n {m} link set c1 up"));
    let q = format!("G.V().Has('Type', 'netns', 'Name', '{n}').Out().Has('Name', 'c0')");
    lab.converge("ethtool's driver, speed and features", || {
        let v = lab.query(&q);
        v[0]["Metadata"]["Driver"] == "veth"
            && v[0]["Metadata"]["Speed"] == 10000
            && v[0]["Metadata"]["Features"]
                .get("tx-checksum-ip-generic")
                .is_some()
    });
    // Traffic: the counters follow (metrics_update is 1 s here).
    sh(&format!(
        "ip netns exec {n} bash -c 'for i in 1 2 3 4 5; do echo x > /dev/udp/169.254.40.2/9; done'"
    ));
    lab.converge("counters with a delta", || {
        let v = lab.query(&q);
        v[0]["Metadata"]["Metric"]["TxPackets"]
            .as_i64()
            .unwrap_or(0)
            >= 5
            && v[0]["Metadata"]["LastUpdateMetric"]["Last"]
                .as_i64()
                .unwrap_or(0)
                > 0
    });
    let status: Value = Client::new(&lab.agent.as_ref().unwrap().addr.to_string(), None)
        .get("/api/status")
        .unwrap();
    assert_eq!(status["TopologyProbes"]["netlink"]["Status"], "running");
    assert!(
        status["TopologyProbes"]["netns"]["Namespaces"]
            .as_u64()
            .unwrap()
            >= 1
    );
}

#[test]
fn ids_and_tids_survive_an_agent_restart() {
    if !root("ids_and_tids_survive_an_agent_restart") {
        return;
    }
    let p = prefix();
    let n = format!("{p}n");
    let mut c = Cleanup(Vec::new());
    let mut lab = Lab::start();
    c.netns(&n);
    sh(&format!("ip -n {n} link add r0 type veth peer name r1"));
    let q = format!("G.V().Has('Type', 'netns', 'Name', '{n}').Out()");
    lab.converge("the namespace", || lab.count(&q) == 3);
    let ids = |lab: &Lab| {
        let mut all = lab
            .query(&format!("G.V().Has('Type', 'netns', 'Name', '{n}')"))
            .as_array()
            .cloned()
            .unwrap_or_default();
        all.extend(
            lab.query(&format!("G.V().Has('Type', 'netns', 'Name', '{n}').Out()"))
                .as_array()
                .cloned()
                .unwrap_or_default(),
        );
        let mut v: Vec<(String, String)> = all
            .iter()
            .map(|x| {
                (
                    x["ID"].as_str().unwrap_or("").to_string(),
                    x["Metadata"]["TID"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect();
        v.sort();
        v
    };
    let before = ids(&lab);
    assert_eq!(before.len(), 4, "{before:?}");
    lab.restart_agent();
    lab.converge("the same IDs and TIDs after the restart", || {
        ids(&lab) == before
    });
}
