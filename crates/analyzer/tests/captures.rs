//! `/api/capture` over real sockets: validation, duplicates, `Count`, persistence
//! (Skydive's generic CRUD handler; Skydive's resource shapes; Skydive's capture resource).

mod common;

use common::*;
use std::time::Duration;

use serde_json::{Value, json};

fn create(a: &TestAnalyzer, body: Value) -> (u16, String) {
    let r = a.send("POST", "/api/capture", Some(body), &[]);
    (r.status, r.text())
}

#[test]
fn captures_are_validated_with_the_reason() {
    let a = TestAnalyzer::start();
    let cases = [
        (
            json!({"GremlinQuery": "G.V().Has("}),
            "invalid GremlinQuery",
        ),
        (json!({}), "GremlinQuery is required"),
        (
            json!({"GremlinQuery": "G.V()", "BPFFilter": "port eighty"}),
            "invalid BPF filter \"port eighty\": ",
        ),
        (
            json!({"GremlinQuery": "G.V()", "Type": "afpackt"}),
            "unknown capture type \"afpackt\"",
        ),
        (
            json!({"GremlinQuery": "G.V()", "HeaderSize": 5000}),
            "HeaderSize must be 0 or between 14 and 4096",
        ),
        (
            json!({"GremlinQuery": "G.V()", "LayerKeyMode": "L4"}),
            "LayerKeyMode must be L2 or L3",
        ),
        (
            json!({"GremlinQuery": "G.V()", "Target": "nowhere"}),
            "Target \"nowhere\" must be an address and a port",
        ),
        // Refused rather than run locally while the user believes they export.
        (
            json!({"GremlinQuery": "G.V()", "Target": "127.0.0.1:2055", "TargetType": "netflowv5"}),
            "Target \"127.0.0.1:2055\" (TargetType \"netflowv5\") is not available in this build yet",
        ),
        (
            json!({"GremlinQuery": "G.V()", "ReassembleTCP": true}),
            "ReassembleTCP is not available in this build",
        ),
    ];
    for (body, reason) in cases {
        let (status, text) = create(&a, body.clone());
        assert_eq!(status, 400, "{body}: {text}");
        assert!(text.starts_with(reason), "{body}: {text}");
    }
    assert!(
        a.get("/api/capture").as_object().unwrap().is_empty(),
        "nothing was stored"
    );
}

#[test]
fn a_capture_naming_no_layer_key_mode_takes_the_configured_default() {
    let a = TestAnalyzer::start_with(|s| s.flow.default_layer_key_mode = "L3".into());
    let (status, text) = create(&a, json!({"GremlinQuery": "G.V().Has('Name', 'x')"}));
    assert_eq!(status, 201, "{text}");
    let c: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(c["LayerKeyMode"], "L3");
    let (_, text) = create(
        &a,
        json!({"GremlinQuery": "G.V().Has('Name', 'y')", "LayerKeyMode": "L2"}),
    );
    let c: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(c["LayerKeyMode"], "L2", "a mode asked for is kept");
}

#[test]
fn capture_crud_duplicates_count_and_restart() {
    let mut a = TestAnalyzer::start();
    let (status, text) = create(
        &a,
        json!({"GremlinQuery": "G.V().Has('Name', 'eth-cap')", "BPFFilter": "icmp", "Name": "c1"}),
    );
    assert_eq!(status, 201, "{text}");
    let c: Value = serde_json::from_str(&text).unwrap();
    let id = c["UUID"].as_str().unwrap().to_string();
    assert_eq!(id.len(), 36);
    assert_eq!(c["LayerKeyMode"], "L2");
    assert_eq!(c["Count"], 0);

    // Same query, same filter: a duplicate; another filter: a second capture.
    let (status, text) = create(
        &a,
        json!({"GremlinQuery": "G.V().Has('Name', 'eth-cap')", "BPFFilter": "icmp"}),
    );
    assert_eq!((status, text.as_str()), (409, "duplicated resource\n"));
    let (status, _) = create(
        &a,
        json!({"GremlinQuery": "G.V().Has('Name', 'eth-cap')", "BPFFilter": "arp"}),
    );
    assert_eq!(status, 201);
    assert_eq!(a.get("/api/capture").as_object().unwrap().len(), 2);

    // Count: the nodes of the query where this capture is active.
    let node = json!({"ID": "n-cap", "Metadata": {"Name": "eth-cap", "Type": "veth",
        "Captures": [{"ID": id, "State": "active", "Type": "afpacket"}]}});
    assert_eq!(a.send("POST", "/api/node", Some(node), &[]).status, 201);
    assert_eq!(a.get(&format!("/api/capture/{id}"))["Count"], 1);
    assert_eq!(a.get("/api/capture")[&id]["Count"], 1);

    // Captures are not updatable.
    let r = a.send(
        "PATCH",
        &format!("/api/capture/{id}"),
        Some(json!([{"op": "replace", "path": "/Name", "value": "c2"}])),
        &[],
    );
    assert_eq!(r.status, 400);
    assert_eq!(
        r.text(),
        "updating resource with patched version: resource not updatable\n"
    );

    a.restart();
    let got = a.get(&format!("/api/capture/{id}"));
    assert_eq!(got["BPFFilter"], "icmp");
    assert_eq!(got["Name"], "c1");

    assert_eq!(
        a.send("DELETE", &format!("/api/capture/{id}"), None, &[])
            .status,
        200
    );
    let r = a.send("GET", &format!("/api/capture/{id}"), None, &[]);
    assert_eq!(r.status, 404);
    assert_eq!(r.text(), format!("Capture '{id}' not found\n"));
}

#[test]
fn the_startup_capture_is_created_once_and_checked() {
    let mut a = TestAnalyzer::start_with(|s| {
        s.analyzer.startup.capture_gremlin = "G.V().Has('Name', 'eth-startup')".into();
        s.analyzer.startup.capture_bpf = "tcp".into();
    });
    let list = a.get("/api/capture");
    let caps: Vec<&Value> = list.as_object().unwrap().values().collect();
    assert_eq!(caps.len(), 1);
    assert_eq!(caps[0]["GremlinQuery"], "G.V().Has('Name', 'eth-startup')");
    assert_eq!(caps[0]["BPFFilter"], "tcp");
    a.restart();
    assert_eq!(
        a.get("/api/capture").as_object().unwrap().len(),
        1,
        "not twice"
    );

    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(dir.path(), "127.0.0.1:0");
    s.analyzer.startup.capture_gremlin = "G.V(".into();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let err = rt
        .block_on(skydive_analyzer::Analyzer::start(&s))
        .map(|_| ())
        .unwrap_err();
    assert!(
        format!("{err:#}").starts_with("analyzer.startup.capture_gremlin: invalid GremlinQuery"),
        "{err:#}"
    );
}

#[test]
fn subscribers_hear_of_captures() {
    use tokio_tungstenite::tungstenite::Message;
    let a = TestAnalyzer::start();
    let mut ws = a.ws(
        "/ws/subscriber",
        &[("X-Host-ID", "watcher"), ("X-Client-Type", "webui")],
    );
    let (status, text) = create(&a, json!({"GremlinQuery": "G.V().Has('Name', 'eth-note')"}));
    assert_eq!(status, 201);
    let id = serde_json::from_str::<Value>(&text).unwrap()["UUID"]
        .as_str()
        .unwrap()
        .to_string();
    let node = json!({"ID": "n-note", "Metadata": {"Name": "eth-note", "Type": "veth",
        "Captures": [{"ID": id, "State": "active"}]}});
    assert_eq!(a.send("POST", "/api/node", Some(node), &[]).status, 201);
    let mut kinds = Vec::new();
    let next_kind = |ws: &mut Ws| loop {
        let m = ws.read();
        let Ok(m) = m else {
            panic!("{m:?}");
        };
        if let Message::Text(t) = m {
            let v: Value = serde_json::from_str(t.as_str()).unwrap();
            if v["Namespace"] == "OnDemandCaptureNotification" {
                assert_eq!(v["Obj"]["UUID"], id.as_str());
                return v["Type"].as_str().unwrap().to_string();
            }
        }
    };
    // (A capture deleted before its activation is seen is not announced as active: delete it
    // once the activation was announced.)
    kinds.push(next_kind(&mut ws));
    kinds.push(next_kind(&mut ws));
    assert_eq!(
        a.send("DELETE", &format!("/api/capture/{id}"), None, &[])
            .status,
        200
    );
    kinds.push(next_kind(&mut ws));
    assert_eq!(kinds, vec!["Added", "NodeUpdated", "Deleted"]);
}

#[test]
fn flow_subscribers_get_the_capture_statistics_when_they_change() {
    let a = TestAnalyzer::start();
    let mut ws = a.ws(
        "/ws/subscriber/flow",
        &[
            ("X-Host-ID", "stats-watcher"),
            ("X-Client-Type", "webui"),
            ("X-Websocket-Namespace", "stats"),
        ],
    );
    let entry = |rx: i64, flows: i64| {
        json!({"ID": "cap-stats", "State": "active", "PacketsReceived": rx, "PacketsDropped": 2,
               "FlowCount": flows, "FlowDropped": 1})
    };
    let node = json!({"ID": "n-stats", "Metadata": {"Name": "eth-stats", "Type": "veth",
        "Captures": [entry(10, 3)]}});
    assert_eq!(a.send("POST", "/api/node", Some(node), &[]).status, 201);
    let first = ws_wait(&mut ws, Duration::from_secs(5), |m| {
        m["Namespace"] == "stats"
    })
    .expect("a stats message");
    assert_eq!(first["Type"], "stats");
    assert_eq!(
        first["Obj"],
        json!({"CaptureID": "cap-stats", "FlowCount": 3, "FlowDropped": 1, "KernelFlowDropped": 0,
               "PacketsDropped": 2, "PacketsReceived": 10})
    );
    // An update that changes something else of the node repeats nothing.
    let patch = json!([{"op": "add", "path": "/Metadata/MTU", "value": 1400}]);
    assert_eq!(
        a.send("PATCH", "/api/node/n-stats", Some(patch), &[])
            .status,
        200
    );
    assert!(
        ws_drain(&mut ws, Duration::from_millis(500))
            .iter()
            .all(|m| m["Namespace"] != "stats")
    );
    // New counters: a new message.
    let patch = json!([{"op": "replace", "path": "/Metadata/Captures/0", "value": entry(25, 4)}]);
    assert_eq!(
        a.send("PATCH", "/api/node/n-stats", Some(patch), &[])
            .status,
        200
    );
    let next = ws_wait(&mut ws, Duration::from_secs(5), |m| {
        m["Namespace"] == "stats"
    })
    .expect("a second stats message");
    assert_eq!(next["Obj"]["PacketsReceived"], 25);
    assert_eq!(next["Obj"]["FlowCount"], 4);
}
