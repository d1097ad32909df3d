//! The analyzer's WebSocket endpoints over real sockets (Skydive's WebSocket protocol): handshake,
//! subscribers (sync, events, filters, partial updates, chunked syncs), publishers (schema
//! validation, origin), agents (protobuf framing, grace period) and bad clients.

mod common;

use std::time::Duration;

use common::*;
use prost::Message as _;
use serde_json::{Value, json};
use skydive_api::message::PbStructMessage;
use tokio_tungstenite::tungstenite::Message;

const SHORT: Duration = Duration::from_secs(3);

fn sync_request(ws: &mut Ws, filter: Option<&str>) -> Value {
    let obj = match filter {
        Some(f) => json!({"GremlinFilter": f}),
        None => json!({}),
    };
    ws_send(
        ws,
        json!({"Namespace": "Graph", "Type": "SyncRequest", "UUID": "req-1", "Obj": obj}),
    );
    ws_wait(ws, SHORT, |m| m["Type"] == "SyncReply").expect("a SyncReply")
}

fn names(graph: &Value) -> Vec<String> {
    let mut v: Vec<String> = graph["Nodes"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|n| n["Metadata"]["Name"].as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn handshake_requires_a_client_type_and_refuses_duplicates() {
    let a = TestAnalyzer::start();
    // Without X-Client-Type: upgraded, then closed with code 1000.
    let mut ws = a.ws("/ws/subscriber", &[]);
    let closed = loop {
        match ws.read() {
            Ok(Message::Close(c)) => break c,
            Ok(_) => continue,
            Err(e) => panic!("expected a close frame, got {e}"),
        }
    };
    let c = closed.expect("a close frame with a reason");
    assert_eq!(u16::from(c.code), 1000);
    assert_eq!(c.reason.as_str(), "X-Client-Type header not provided");
    // A second connection with the same host ID on the same endpoint: 409.
    let _first = a.ws(
        "/ws/subscriber",
        &[("X-Client-Type", "webui"), ("X-Host-ID", "same")],
    );
    let second = ws_connect(
        &a.addr(),
        "/ws/subscriber",
        &[("X-Client-Type", "webui"), ("X-Host-ID", "same")],
    );
    assert_eq!(second.err(), Some(409));
    // An unknown protocol: refused.
    let bad = ws_connect(
        &a.addr(),
        "/ws/subscriber",
        &[("X-Client-Type", "webui"), ("X-Client-Protocol", "xml")],
    );
    assert_eq!(bad.err(), Some(400));
    // Browsers pass the handshake as query parameters.
    let mut ws = a.ws("/ws/subscriber?x-client-type=webui&x-host-id=browser", &[]);
    assert!(sync_request(&mut ws, None)["Obj"]["Nodes"].is_array());
    assert!(a.get("/api/status")["Subscribers"].get("browser").is_some());
}

#[test]
fn subscriber_syncs_then_receives_every_event() {
    let a = TestAnalyzer::start();
    a.send("POST", "/api/node", Some(node("n1", "eth0", "veth")), &[]);
    let mut ws = a.ws(
        "/ws/subscriber",
        &[("X-Client-Type", "webui"), ("X-Host-ID", "ui")],
    );
    // No initial push: the client asks.
    assert!(ws_drain(&mut ws, Duration::from_millis(300)).is_empty());
    let reply = sync_request(&mut ws, None);
    assert_eq!(reply["UUID"], "req-1", "a reply reuses the request's UUID");
    assert_eq!(reply["Status"], 200);
    assert_eq!(names(&reply["Obj"]), vec!["eth0"]);

    a.send("POST", "/api/node", Some(node("n2", "eth1", "veth")), &[]);
    let m = ws_wait(&mut ws, SHORT, |m| m["Type"] == "NodeAdded").expect("NodeAdded");
    assert_eq!(m["Namespace"], "Graph");
    assert_eq!(m["Obj"]["ID"], "n2");
    a.send(
        "PATCH",
        "/api/node/n2",
        Some(json!([{"op": "add", "path": "/Metadata/MTU", "value": 1500}])),
        &[],
    );
    let m = ws_wait(&mut ws, SHORT, |m| m["Type"] == "NodeUpdated").expect("NodeUpdated");
    assert_eq!(m["Obj"]["Metadata"]["MTU"], 1500);
    a.send("DELETE", "/api/node/n2", None, &[]);
    let m = ws_wait(&mut ws, SHORT, |m| m["Type"] == "NodeDeleted").expect("NodeDeleted");
    assert_eq!(m["Obj"]["ID"], "n2");
    assert!(m["Obj"]["DeletedAt"].as_i64().unwrap() > 0);
}

#[test]
fn partial_update_policy_sends_only_the_changed_keys() {
    let a = TestAnalyzer::start();
    a.send("POST", "/api/node", Some(node("n1", "eth0", "veth")), &[]);
    let mut ws = a.ws(
        "/ws/subscriber",
        &[("X-Client-Type", "webui"), ("X-Update-Policy", "partial")],
    );
    sync_request(&mut ws, None);
    a.send(
        "PATCH",
        "/api/node/n1",
        Some(json!([{"op": "add", "path": "/Metadata/MTU", "value": 9000}])),
        &[],
    );
    let m = ws_wait(&mut ws, SHORT, |m| m["Type"] == "NodePartiallyUpdated")
        .expect("NodePartiallyUpdated");
    assert_eq!(m["Obj"]["ID"], "n1");
    assert_eq!(m["Obj"]["Revision"], 2);
    assert_eq!(
        m["Obj"]["Ops"],
        json!([{"Type": 1, "Key": "MTU", "Value": 9000}])
    );
}

#[test]
fn gremlin_filter_limits_what_a_subscriber_sees() {
    let a = TestAnalyzer::start();
    a.send("POST", "/api/node", Some(node("n1", "tor", "fabric")), &[]);
    a.send("POST", "/api/node", Some(node("n2", "eth0", "veth")), &[]);
    let mut ws = a.ws(
        "/ws/subscriber",
        &[
            ("X-Client-Type", "webui"),
            ("X-Gremlin-Filter", "G.V().Has('Type', 'fabric')"),
        ],
    );
    assert_eq!(names(&sync_request(&mut ws, None)["Obj"]), vec!["tor"]);
    // A node outside the filter: nothing. Inside: NodeAdded.
    a.send("POST", "/api/node", Some(node("n3", "eth1", "veth")), &[]);
    a.send("POST", "/api/node", Some(node("n4", "port", "fabric")), &[]);
    let seen = ws_drain(&mut ws, Duration::from_millis(800));
    let added: Vec<&Value> = seen.iter().filter(|m| m["Type"] == "NodeAdded").collect();
    assert_eq!(added.len(), 1, "{seen:?}");
    assert_eq!(added[0]["Obj"]["ID"], "n4");
    // A node that stops matching leaves the subscriber's view.
    a.send(
        "PATCH",
        "/api/node/n4",
        Some(json!([{"op": "add", "path": "/Metadata/Foo", "value": 1}])),
        &[],
    );
    ws_wait(&mut ws, SHORT, |m| {
        m["Type"] == "NodeUpdated" && m["Obj"]["ID"] == "n4"
    })
    .expect("update inside the filter");
    // A SyncRequest may change the filter; "" removes it.
    assert_eq!(
        names(&sync_request(&mut ws, Some(""))["Obj"]),
        vec!["eth0", "eth1", "port", "tor"]
    );
    let r = sync_request(&mut ws, Some("G.V().Count()"));
    assert_eq!(r["Status"], 400, "a filter must return a graph: {r}");
    // An invalid filter at connection time is refused.
    let bad = ws_connect(
        &a.addr(),
        "/ws/subscriber",
        &[
            ("X-Client-Type", "webui"),
            ("X-Gremlin-Filter", "G.V().Foo()"),
        ],
    );
    assert_eq!(bad.err(), Some(400));
}

#[test]
fn publisher_validates_and_owns_its_elements() {
    // What the Python client's test_injection does.
    let a = TestAnalyzer::start();
    let mut ws = a.ws(
        "/ws/publisher",
        &[
            ("X-Client-Type", "skydive-python-client"),
            ("X-Host-ID", "pub1"),
            ("X-Persistence-Policy", "Persistent"),
        ],
    );
    let msg = |kind: &str, obj: Value| json!({"UUID": "9f0c2d0a1b2c4d5e6f708192a3b4c5d6", "Namespace": "Graph", "Type": kind, "Obj": obj, "Status": 200});
    ws_send(
        &mut ws,
        msg(
            "NodeAdded",
            json!({"ID": "TOR_TEST", "Host": "h", "Metadata": {"Name": "Test TOR", "Type": "fabric"}}),
        ),
    );
    ws_send(
        &mut ws,
        msg(
            "NodeAdded",
            json!({"ID": "PORT_TEST", "Host": "h", "Metadata": {"Name": "Test port", "Type": "fabric"}}),
        ),
    );
    ws_send(
        &mut ws,
        msg(
            "NodeAdded",
            json!({"ID": "BAD_NODE", "Host": "h", "Metadata": {"Name": "Bad node"}}),
        ),
    );
    ws_send(
        &mut ws,
        msg(
            "NodeAdded",
            json!({"ID": "BAD_NETNS", "Host": "h", "Metadata": {"Name": "Bad netns", "Type": "netns"}}),
        ),
    );
    ws_send(
        &mut ws,
        msg(
            "EdgeAdded",
            json!({"ID": "TOR_L2LINK", "Host": "h", "Parent": "TOR_TEST", "Child": "PORT_TEST", "Metadata": {"RelationType": "layer2"}}),
        ),
    );
    ws_send(
        &mut ws,
        msg(
            "EdgeAdded",
            json!({"ID": "BAD_LINK", "Host": "h", "Parent": "", "Child": "", "Metadata": {"RelationType": "layer2"}}),
        ),
    );
    eventually(SHORT, "the valid elements", || {
        a.count("G.E().Has('RelationType', 'layer2')") == 1
    });
    let port = a.query("G.V().Has('Name', 'Test port')");
    assert_eq!(port.as_array().unwrap().len(), 1);
    assert_eq!(port[0]["ID"], "PORT_TEST");
    assert_eq!(
        port[0]["Origin"], "skydive-python-client.pub1",
        "the publisher's origin"
    );
    assert_eq!(port[0]["Revision"], 1);
    assert_eq!(a.count("G.V().Has('Name', 'Bad netns')"), 0);
    assert_eq!(a.count("G.V().Has('Name', 'Bad node')"), 0);
    // Persistent: the elements stay after the publisher leaves.
    drop(ws);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(a.count("G.V()"), 2);
}

/// A publisher changes and deletes only the elements of its own origin: not another
/// publisher's, not the API's; refusals are answered with status 403 and the reason.
#[test]
fn a_publisher_changes_only_its_own_elements() {
    let a = TestAnalyzer::start();
    assert_eq!(
        a.send(
            "POST",
            "/api/node",
            Some(node("api1", "from the API", "device")),
            &[]
        )
        .status,
        201
    );
    let publisher = |host: &str| {
        a.ws(
            "/ws/publisher",
            &[
                ("X-Client-Type", "skydive-python-client"),
                ("X-Host-ID", host),
            ],
        )
    };
    let msg = |kind: &str, uuid: &str, obj: Value| json!({"UUID": uuid, "Namespace": "Graph", "Type": kind, "Obj": obj});
    let mut alice = publisher("alice");
    ws_send(
        &mut alice,
        msg("NodeAdded", "u1", node("a1", "alice's", "device")),
    );
    ws_send(
        &mut alice,
        msg("NodeAdded", "u2", node("a2", "alice's too", "device")),
    );
    ws_send(
        &mut alice,
        msg(
            "EdgeAdded",
            "u3",
            json!({"ID": "ae", "Parent": "a1", "Child": "a2", "Metadata": {"RelationType": "layer2"}}),
        ),
    );
    eventually(SHORT, "alice's elements", || {
        a.count("G.V().Has('Name', Regex(\"alice.*\"))") == 2 && a.count("G.E()") == 1
    });

    let mut mallory = publisher("mallory");
    let refused = |ws: &mut Ws, uuid: &str| {
        let m = ws_wait(ws, SHORT, |m| m["UUID"] == uuid).expect("an answer");
        assert_eq!(m["Status"], 403, "{m}");
        m["Obj"].as_str().unwrap().to_string()
    };
    // Take over, rename, patch and delete alice's node; delete her edge and the API's node.
    ws_send(
        &mut mallory,
        msg("NodeAdded", "m1", node("a1", "mallory's now", "device")),
    );
    let why = refused(&mut mallory, "m1");
    assert_eq!(
        why,
        "node a1 belongs to skydive-python-client.alice: a publisher changes only the elements of its own origin (skydive-python-client.mallory)"
    );
    ws_send(
        &mut mallory,
        msg("NodeUpdated", "m2", node("a1", "renamed", "device")),
    );
    refused(&mut mallory, "m2");
    ws_send(
        &mut mallory,
        msg(
            "NodePartiallyUpdated",
            "m3",
            json!({"ID": "a1", "Revision": 9, "UpdatedAt": 1, "Ops": [{"Type": 1, "Key": "Name", "Value": "patched"}]}),
        ),
    );
    refused(&mut mallory, "m3");
    ws_send(&mut mallory, msg("NodeDeleted", "m4", json!({"ID": "a1"})));
    refused(&mut mallory, "m4");
    ws_send(&mut mallory, msg("EdgeDeleted", "m5", json!({"ID": "ae"})));
    refused(&mut mallory, "m5");
    ws_send(
        &mut mallory,
        msg("NodeDeleted", "m6", json!({"ID": "api1"})),
    );
    let why = refused(&mut mallory, "m6");
    assert!(why.starts_with("node api1 belongs to "), "{why}");
    // A sync of its own with someone else's node in it: that one is left out.
    ws_send(
        &mut mallory,
        msg(
            "Sync",
            "m8",
            json!({"Nodes": [node("m1", "mallory's", "device"), node("a2", "stolen", "device")], "Edges": []}),
        ),
    );
    refused(&mut mallory, "m8");
    eventually(SHORT, "mallory's own node", || {
        a.count("G.V().Has('Name', \"mallory's\")") == 1
    });
    let names = a.query("G.V().Values('Name')");
    let mut names: Vec<&str> = names
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    names.sort_unstable();
    assert_eq!(
        names,
        ["alice's", "alice's too", "from the API", "mallory's"],
        "nothing of others changed"
    );
    assert_eq!(a.count("G.E()"), 1);
    // Alice changes and deletes her own.
    ws_send(
        &mut alice,
        msg("NodeUpdated", "u4", node("a1", "alice renamed", "device")),
    );
    ws_send(&mut alice, msg("NodeDeleted", "u5", json!({"ID": "a2"})));
    eventually(SHORT, "alice's own changes", || {
        a.count("G.V().Has('Name', 'alice renamed')") == 1 && a.count("G.E()") == 0
    });
}

/// Subscribers whose filter is expensive, re-evaluated on every change, do not stall the
/// server's other requests: filters run off the async workers, and changes that come while one
/// runs are covered by one evaluation.
#[test]
fn expensive_subscriber_filters_do_not_stall_other_requests() {
    let a = TestAnalyzer::start();
    // A mesh: 150 nodes, each linked to the 10 next.
    let n = 150;
    let nodes: Vec<Value> = (0..n)
        .map(|i| node(&format!("m{i}"), &format!("m{i}"), "device"))
        .collect();
    let edges: Vec<Value> = (0..n)
        .flat_map(|i| {
            (1..=10).map(move |k| {
                json!({"ID": format!("e{i}-{k}"), "Parent": format!("m{i}"), "Child": format!("m{}", (i + k) % n), "Metadata": {"RelationType": "layer2"}})
            })
        })
        .collect();
    let mut publisher = a.ws(
        "/ws/publisher",
        &[("X-Client-Type", "tool"), ("X-Host-ID", "mesh")],
    );
    ws_send(
        &mut publisher,
        json!({"Namespace": "Graph", "Type": "Sync", "Obj": {"Nodes": nodes, "Edges": edges}}),
    );
    eventually(SHORT, "the mesh", || a.count("G.E()") == n * 10);
    let filter = "G.V().Both().Both().Both().Dedup()";
    let t = std::time::Instant::now();
    assert_eq!(a.count(filter), n);
    let one = t.elapsed();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut readers = Vec::new();
    for i in 0..3 {
        let mut sub = a.ws(
            "/ws/subscriber",
            &[
                ("X-Client-Type", "webui"),
                ("X-Host-ID", &format!("heavy{i}")),
                ("X-Gremlin-Filter", filter),
            ],
        );
        let stop = stop.clone();
        readers.push(std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = ws_drain(&mut sub, Duration::from_millis(50));
            }
        }));
    }
    // A change every 20 ms, each one a reason to evaluate every filter again.
    let mut lat = Vec::new();
    for round in 0..40 {
        ws_send(
            &mut publisher,
            json!({"Namespace": "Graph", "Type": "NodeUpdated", "Obj": node("m0", &format!("m0-{round}"), "device")}),
        );
        if round % 2 == 0 {
            let t = std::time::Instant::now();
            assert_eq!(a.send("GET", "/api/status", None, &[]).status, 200);
            lat.push(t.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for r in readers {
        r.join().unwrap();
    }
    lat.sort();
    let median = lat[lat.len() / 2];
    eprintln!(
        "one evaluation: {one:?}; GET /api/status median {median:?}, max {:?}",
        lat.last().unwrap()
    );
    assert!(
        median < Duration::from_millis(100).max(one / 4),
        "GET /api/status waited {median:?} (median) behind filters of {one:?} each"
    );
}

#[test]
fn agents_publish_in_protobuf_frames_and_get_a_grace_period() {
    let a = TestAnalyzer::start_with(|s| s.analyzer.topology.agent_grace_period = 1);
    let headers = [
        ("X-Client-Type", "agent"),
        ("X-Host-ID", "h1"),
        ("X-Client-Protocol", "protobuf"),
        ("X-Persistence-Policy", "DeleteOnDisconnect"),
    ];
    let pb = |kind: &str, obj: Value| {
        Message::binary(
            PbStructMessage {
                namespace: "Graph".into(),
                kind: kind.into(),
                uuid: "u".into(),
                status: 200,
                format: 0,
                obj: obj.to_string().into_bytes(),
            }
            .encode_to_vec(),
        )
    };
    let host = |rev: i64, state: &str| {
        json!({"ID": "host-h1", "Host": "h1", "Origin": "agent.h1", "Revision": rev, "CreatedAt": 1, "UpdatedAt": 1,
               "Metadata": {"Name": "h1", "Type": "host", "State": state}})
    };
    let mut ws = a.ws("/ws/agent/topology", &headers);
    ws.send(pb("Sync", json!({"Nodes": [host(1, "UP")], "Edges": []})))
        .unwrap();
    eventually(SHORT, "the agent's host", || {
        a.count("G.V().Has('Type', 'host')") == 1
    });
    // A partial update applies when its revision is newer, and only then.
    ws.send(pb("NodePartiallyUpdated", json!({"ID": "host-h1", "UpdatedAt": 5, "Revision": 2, "Ops": [{"Type": 1, "Key": "State", "Value": "DOWN"}]}))).unwrap();
    eventually(SHORT, "the partial update", || {
        a.query("G.V('host-h1').Values('State')") == json!(["DOWN"])
    });
    ws.send(pb("NodePartiallyUpdated", json!({"ID": "host-h1", "UpdatedAt": 6, "Revision": 2, "Ops": [{"Type": 1, "Key": "State", "Value": "STALE"}]}))).unwrap();
    // A SyncRequest is answered in protobuf.
    ws.send(pb("SyncRequest", json!({}))).unwrap();
    let reply =
        ws_wait(&mut ws, SHORT, |m| m["Type"] == "SyncReply").expect("a protobuf SyncReply");
    assert_eq!(
        reply["Obj"]["Nodes"][0]["Metadata"]["State"], "DOWN",
        "a stale revision is ignored"
    );

    // Gone, then back within the grace period: the graph stays, nothing churns.
    let mut sub = a.ws("/ws/subscriber", &[("X-Client-Type", "webui")]);
    sync_request(&mut sub, None);
    drop(ws);
    std::thread::sleep(Duration::from_millis(400));
    let mut ws = a.ws("/ws/agent/topology", &headers);
    ws.send(pb("Sync", json!({"Nodes": [host(2, "DOWN")], "Edges": []})))
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        a.count("G.V().Has('Type', 'host')"),
        1,
        "still there after the grace period"
    );
    let churn: Vec<Value> = ws_drain(&mut sub, Duration::from_millis(200))
        .into_iter()
        .filter(|m| m["Namespace"] == "Graph")
        .collect();
    assert!(
        churn.is_empty(),
        "an unchanged resync sends nothing: {churn:?}"
    );

    // Gone for longer than the grace period: removed.
    drop(ws);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(a.count("G.V()"), 1, "still within the grace period");
    eventually(SHORT, "the agent's graph is removed", || {
        a.count("G.V()") == 0
    });
    ws_wait(&mut sub, SHORT, |m| m["Type"] == "NodeDeleted").expect("subscribers see the removal");
}

#[test]
fn big_syncs_arrive_in_chunks() {
    let a = TestAnalyzer::start_with(|s| s.http.ws.sync_chunk_size = 10);
    for i in 0..25 {
        a.send(
            "POST",
            "/api/node",
            Some(node(&format!("n{i:02}"), &format!("eth{i}"), "veth")),
            &[],
        );
    }
    let mut ws = a.ws("/ws/subscriber", &[("X-Client-Type", "webui")]);
    let reply = sync_request(&mut ws, None);
    assert_eq!(reply["Obj"]["Nodes"].as_array().unwrap().len(), 10);
    let rest: Vec<Value> = ws_drain(&mut ws, Duration::from_millis(500));
    assert_eq!(rest.iter().filter(|m| m["Type"] == "NodeAdded").count(), 15);
}

#[test]
fn bad_messages_get_an_error_and_the_connection_carries_on() {
    let a = TestAnalyzer::start();
    let mut ws = a.ws(
        "/ws/publisher",
        &[("X-Client-Type", "tool"), ("X-Host-ID", "bad")],
    );
    ws.send(Message::text("{not json")).unwrap();
    let e = ws_wait(&mut ws, SHORT, |m| m["Type"] == "Error").expect("an Error message");
    assert_eq!(e["Status"], 400);
    assert!(
        e["Obj"]
            .as_str()
            .unwrap()
            .starts_with("malformed JSON message"),
        "{e}"
    );
    ws_send(
        &mut ws,
        json!({"Namespace": "Graph", "Type": "Teleport", "UUID": "t1", "Obj": {}}),
    );
    let e = ws_wait(&mut ws, SHORT, |m| m["UUID"] == "t1").expect("a reply to the unknown type");
    assert_eq!(e["Status"], 400);
    ws_send(
        &mut ws,
        json!({"Namespace": "Graph", "Type": "NodeAdded", "UUID": "t2", "Obj": [1, 2]}),
    );
    let e = ws_wait(&mut ws, SHORT, |m| m["UUID"] == "t2").expect("a reply to the malformed node");
    assert_eq!(e["Status"], 400);
    ws.send(Message::binary(vec![0xff, 0xff, 0xff])).unwrap();
    ws_wait(&mut ws, SHORT, |m| m["Type"] == "Error")
        .expect("an Error message for a bad protobuf frame");
    // The same connection still works.
    ws_send(
        &mut ws,
        json!({"Namespace": "Graph", "Type": "NodeAdded", "Obj": node("ok", "fine", "device")}),
    );
    eventually(SHORT, "the good node after the bad ones", || {
        a.count("G.V().Has('Name', 'fine')") == 1
    });
}

#[test]
fn a_subscriber_that_never_reads_is_disconnected_alone() {
    let a = TestAnalyzer::start_with(|s| s.http.ws.queue_size = 16);
    let mut stuck = a.ws(
        "/ws/subscriber",
        &[("X-Client-Type", "webui"), ("X-Host-ID", "stuck")],
    );
    sync_request(&mut stuck, None);
    let mut good = a.ws(
        "/ws/subscriber",
        &[("X-Client-Type", "webui"), ("X-Host-ID", "good")],
    );
    sync_request(&mut good, None);
    // Big nodes, so that the socket buffers fill up and the stuck client's queue overflows.
    let pad = "x".repeat(64 * 1024);
    let mut got = 0;
    for i in 0..150 {
        let n = json!({"ID": format!("n{i}"), "Metadata": {"Name": format!("n{i}"), "Type": "device", "Pad": pad}});
        assert_eq!(a.send("POST", "/api/node", Some(n), &[]).status, 201);
        got += ws_drain(&mut good, Duration::from_millis(5))
            .iter()
            .filter(|m| m["Type"] == "NodeAdded")
            .count();
    }
    got += ws_drain(&mut good, Duration::from_millis(1500))
        .iter()
        .filter(|m| m["Type"] == "NodeAdded")
        .count();
    assert_eq!(got, 150, "the reading subscriber gets every event");
    eventually(
        Duration::from_secs(5),
        "the stuck subscriber is dropped",
        || a.get("/api/status")["Subscribers"].get("stuck").is_none(),
    );
    assert!(a.get("/api/status")["Subscribers"].get("good").is_some());
}

#[test]
fn pubsub_publishes_without_echo_and_subscribes() {
    let a = TestAnalyzer::start();
    let mut author = a.ws(
        "/ws/pubsub",
        &[("X-Client-Type", "seed"), ("X-Host-ID", "seed1")],
    );
    let mut other = a.ws(
        "/ws/subscriber",
        &[("X-Client-Type", "webui"), ("X-Host-ID", "ui")],
    );
    sync_request(&mut author, None);
    sync_request(&mut other, None);
    ws_send(
        &mut author,
        json!({"Namespace": "Graph", "Type": "NodeAdded", "Obj": node("s1", "from-seed", "device")}),
    );
    let seen = ws_wait(&mut other, SHORT, |m| m["Type"] == "NodeAdded")
        .expect("the other subscriber sees it");
    assert_eq!(seen["Obj"]["Origin"], "seed.seed1");
    let echoed = ws_drain(&mut author, Duration::from_millis(500));
    assert!(
        echoed.iter().all(|m| m["Type"] != "NodeAdded"),
        "not echoed to its author: {echoed:?}"
    );
    // The author still sees what others do.
    a.send(
        "POST",
        "/api/node",
        Some(node("n2", "from-api", "device")),
        &[],
    );
    ws_wait(&mut author, SHORT, |m| {
        m["Type"] == "NodeAdded" && m["Obj"]["ID"] == "n2"
    })
    .expect("events of others");
}

/// The queue is bounded in bytes too: with room for 10,000 messages, a subscriber that does not
/// read is dropped once 1 MiB is queued for it, well before the 10 s write deadline.
#[test]
fn a_subscriber_that_never_reads_is_dropped_at_its_byte_bound() {
    let a = TestAnalyzer::start_with(|s| s.http.ws.queue_bytes = 1 << 20);
    let mut stuck = a.ws(
        "/ws/subscriber",
        &[("X-Client-Type", "webui"), ("X-Host-ID", "stuck")],
    );
    sync_request(&mut stuck, None);
    let mut good = a.ws(
        "/ws/subscriber",
        &[("X-Client-Type", "webui"), ("X-Host-ID", "good")],
    );
    sync_request(&mut good, None);
    // 40 nodes of 1 MiB: more than the socket buffers hold, far less than 10,000 messages.
    let pad = "x".repeat(1 << 20);
    let start = std::time::Instant::now();
    let mut got = 0;
    for i in 0..40 {
        let n = json!({"ID": format!("n{i}"), "Metadata": {"Name": format!("n{i}"), "Type": "device", "Pad": pad}});
        assert_eq!(a.send("POST", "/api/node", Some(n), &[]).status, 201);
        got += ws_drain(&mut good, Duration::from_millis(5))
            .iter()
            .filter(|m| m["Type"] == "NodeAdded")
            .count();
        // 16 MiB sent: the socket buffers hold a few, the bound 1 more; the write deadline
        // (10 s from the first stuck write) has not passed.
        if i == 15 {
            assert!(
                a.get("/api/status")["Subscribers"].get("stuck").is_none(),
                "the stuck subscriber is dropped by its byte bound ({:?} after the first node)",
                start.elapsed()
            );
        }
    }
    got += ws_drain(&mut good, Duration::from_millis(1500))
        .iter()
        .filter(|m| m["Type"] == "NodeAdded")
        .count();
    assert_eq!(got, 40, "the reading subscriber gets every event");
    assert!(a.get("/api/status")["Subscribers"].get("good").is_some());
}

#[test]
fn an_oversized_message_closes_only_its_connection() {
    let a = TestAnalyzer::start();
    let mut big = a.ws(
        "/ws/publisher",
        &[("X-Client-Type", "tool"), ("X-Host-ID", "big")],
    );
    let mut fine = a.ws(
        "/ws/subscriber",
        &[("X-Client-Type", "webui"), ("X-Host-ID", "fine")],
    );
    sync_request(&mut fine, None);
    let huge = format!(
        "{{\"Namespace\":\"Graph\",\"Type\":\"NodeAdded\",\"Obj\":{{\"Pad\":\"{}\"}}}}",
        "x".repeat(65 << 20)
    );
    let _ = big.send(Message::text(huge));
    let closed = (0..100).any(|_| matches!(big.read(), Ok(Message::Close(_)) | Err(_)));
    assert!(closed, "the oversized message closes its connection");
    eventually(SHORT, "the publisher is gone", || {
        a.get("/api/status")["Publishers"].get("big").is_none()
    });
    a.send(
        "POST",
        "/api/node",
        Some(node("n1", "still", "device")),
        &[],
    );
    ws_wait(&mut fine, SHORT, |m| m["Type"] == "NodeAdded").expect("the others are served");
}

/// A frame announced over the size limit is answered with close code 1009 and a reason, not a
/// reset. The client writes only the frame's header: a client still pushing megabytes when the
/// analyzer closes gets a reset from its own kernel whatever the analyzer sends.
#[test]
fn a_message_too_big_is_closed_with_1009() {
    use std::io::Write;
    let a = TestAnalyzer::start();
    let mut ws = a.ws(
        "/ws/publisher",
        &[
            ("X-Client-Type", "skydive-python-client"),
            ("X-Host-ID", "big1"),
        ],
    );
    // FIN + text, masked, 64-bit length of 64 MiB + 1, a mask key, a few payload bytes.
    let mut header = vec![0x81u8, 0x80 | 127];
    header.extend_from_slice(&((64u64 << 20) + 1).to_be_bytes());
    header.extend_from_slice(&[1, 2, 3, 4, b'x', b'x']);
    let tokio_tungstenite::tungstenite::stream::MaybeTlsStream::Plain(tcp) = ws.get_mut() else {
        panic!("a plain TCP stream")
    };
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    tcp.write_all(&header).unwrap();
    let close = loop {
        match ws.read() {
            Ok(Message::Close(c)) => break c,
            Ok(_) => {}
            Err(e) => panic!("no close frame: {e}"),
        }
    };
    let close = close.expect("a close frame with a code");
    assert_eq!(u16::from(close.code), 1009, "{close:?}");
    assert!(close.reason.contains("message too big"), "{}", close.reason);
    eventually(SHORT, "the publisher is gone", || {
        a.get("/api/status")["Publishers"].get("big1").is_none()
    });
    assert_eq!(a.get("/api")["Service"], "analyzer");
}
