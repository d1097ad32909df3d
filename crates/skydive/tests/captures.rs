//! Captures end to end with a real `skydive allinone`: a capture defined before its veth
//! exists starts when the veth appears (inside a namespace), a ping makes a flow that the
//! agent's table answers live and the analyzer's store answers in a time context, and
//! deleting the capture stops the probe. Needs root.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use skydive_api::client::Client;

fn allinone(dir: &std::path::Path) -> (Proc, String) {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let conf = write_config(
        dir,
        "allinone.yml",
        &format!(
            "host_id: cap-e2e\nanalyzer:\n  listen: {addr}\nagent:\n  listen: 127.0.0.1:{}\nflow:\n  update: 1\n  expire: 5\nstorage:\n  embedded:\n    path: {}\n",
            free_port(),
            dir.join("data").display()
        ),
    );
    let p = Proc::spawn(
        &["-c", conf.to_str().unwrap(), "allinone"],
        &dir.join("allinone.log"),
    );
    wait_api(&addr);
    (p, addr)
}

fn json_query(c: &Client, q: &str) -> Value {
    let r = c.query(q, "application/json").unwrap();
    serde_json::from_slice(&r.body).unwrap_or(Value::Null)
}

#[test]
fn a_capture_defined_in_advance_gives_flows_live_and_stored() {
    if !root("a_capture_defined_in_advance_gives_flows_live_and_stored") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (p, addr) = allinone(dir.path());
    let c = Client::new(&addr, None);
    let (ns_a, ns_b) = ("cape2e-a", "cape2e-b");
    let (veth, peer) = ("vcape2e", "vcape2ep");
    let mut clean = Cleanup(Vec::new());

    // The capture first: nothing matches yet.
    let cap: Value = c
        .json(
            "POST",
            "/api/capture",
            &json!({"GremlinQuery": format!("G.V().Has('Name', '{veth}')"), "BPFFilter": "icmp", "Name": "e2e"}),
            &[],
        )
        .unwrap();
    let id = cap["UUID"].as_str().unwrap().to_string();

    clean.netns(ns_a);
    clean.netns(ns_b);
    sh(&format!(
        "ip link add {veth} netns {ns_a} type veth peer name {peer} netns {ns_b}"
    ));
    sh(&format!("ip -n {ns_a} addr add 10.78.1.1/24 dev {veth}"));
    sh(&format!("ip -n {ns_b} addr add 10.78.1.2/24 dev {peer}"));
    sh(&format!("ip -n {ns_a} link set {veth} up"));
    sh(&format!("ip -n {ns_b} link set {peer} up"));

    let active =
        format!("G.V().Has('Name', '{veth}', 'Captures.ID', '{id}', 'Captures.State', 'active')");
    let took = eventually(
        Duration::from_secs(20),
        "the capture starts on the new veth",
        || count(&c, &active) == 1,
    );
    eprintln!("capture active {took:?} after the veth came up");
    let got: Value = c.get(&format!("/api/capture/{id}")).unwrap();
    assert_eq!(got["Count"], 1);

    sh(&format!(
        "ip netns exec {ns_a} ping -q -c 3 -i 0.2 -s 1024 -W 1 10.78.1.2"
    ));
    let flows_q = format!("G.V().Has('Name', '{veth}').Flows().Has('Network.A', '10.78.1.1')");
    eventually(
        Duration::from_secs(15),
        "the live flow with its 3 echoes each way",
        || {
            json_query(&c, &flows_q)
                .as_array()
                .and_then(|fs| fs.first().cloned())
                .is_some_and(|f| f["Metric"]["ABPackets"] == 3 && f["Metric"]["BAPackets"] == 3)
        },
    );
    let flow = json_query(&c, &flows_q)[0].clone();
    let bytes = 3 * (14 + 20 + 8 + 1024);
    assert_eq!(flow["Metric"]["ABBytes"], bytes);
    assert_eq!(flow["Metric"]["BABytes"], bytes);
    assert_eq!(flow["Application"], "ICMPv4");
    assert!(flow["Metric"]["RTT"].as_i64().unwrap() > 0);
    assert_eq!(flow["CaptureID"], id.as_str());
    // The BPF filter kept ARP out.
    assert_eq!(
        count(
            &c,
            &format!("G.V().Has('Name', '{veth}').Flows().Has('Application', 'ARP')")
        ),
        0
    );
    // Predicates on the exact boundary.
    for (pred, n) in [
        (format!("Gt({bytes})"), 0),
        (format!("Gte({bytes})"), 1),
        (format!("Lt({bytes})"), 0),
        (format!("Lte({bytes})"), 1),
        (format!("Between({bytes}, {})", bytes + 1), 1),
    ] {
        assert_eq!(
            count(&c, &format!("{flows_q}.Has('Metric.ABBytes', {pred})")),
            n,
            "Metric.ABBytes {pred}"
        );
    }

    // Stored: the same flow in a time context, with its metric updates.
    let stored_q = format!(
        "G.Context(NOW, 300).V().Has('Name', '{veth}').Flows().Has('Network.A', '10.78.1.1')"
    );
    eventually(Duration::from_secs(15), "the stored flow", || {
        json_query(&c, &stored_q)
            .as_array()
            .and_then(|fs| fs.first().cloned())
            .is_some_and(|f| f["Metric"]["ABPackets"] == 3)
    });
    let stored = json_query(&c, &stored_q)[0].clone();
    assert_eq!(stored["UUID"], flow["UUID"]);
    assert_eq!(stored["TrackingID"], flow["TrackingID"]);
    let metrics = json_query(&c, &format!("{stored_q}.Metrics()"));
    let samples = metrics[0][flow["UUID"].as_str().unwrap()]
        .as_array()
        .unwrap_or_else(|| panic!("{metrics}"))
        .clone();
    let total: i64 = samples
        .iter()
        .map(|m| m["ABPackets"].as_i64().unwrap())
        .sum();
    assert_eq!(total, 3, "the updates add up to the flow: {samples:?}");

    // Deleting the capture stops the probe and clears the node.
    c.delete(&format!("/api/capture/{id}")).unwrap();
    eventually(Duration::from_secs(10), "the probe stops", || {
        count(
            &c,
            &format!("G.V().Has('Name', '{veth}', 'Captures.ID', '{id}')"),
        ) == 0
    });
    let status: Value = c.get("/api/status").unwrap();
    assert!(status["Flows"]["Stored"].as_u64().unwrap() >= 1, "{status}");
    assert_eq!(status["Flows"]["Dropped"], 0);
    drop(clean);
    drop(p);
}
