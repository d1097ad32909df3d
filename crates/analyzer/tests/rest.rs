//! The analyzer's REST API over real sockets: status codes, bodies and side effects as
//! Skydive 0.28 had them (Skydive's REST API).

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};

#[test]
fn api_info_names_the_service() {
    let a = TestAnalyzer::start();
    let v = a.get("/api");
    assert_eq!(v["Host"], "test-analyzer");
    assert_eq!(v["Service"], "analyzer");
    assert!(v["Version"].as_str().unwrap().starts_with("0.28.0"));
}

#[test]
fn topology_query_status_codes_and_formats() {
    let a = TestAnalyzer::start();
    a.send("POST", "/api/node", Some(node("n1", "eth0", "veth")), &[]);
    // Empty body or query: 204.
    assert_eq!(a.send("POST", "/api/topology", None, &[]).status, 204);
    assert_eq!(
        a.send(
            "POST",
            "/api/topology",
            Some(json!({"GremlinQuery": ""})),
            &[]
        )
        .status,
        204
    );
    // A parse error: 400 with the parser's message.
    let r = a.send(
        "POST",
        "/api/topology",
        Some(json!({"GremlinQuery": "G.V().Foo()"})),
        &[],
    );
    assert_eq!(r.status, 400);
    assert_eq!(r.text(), "Expected step function, got: Foo at column 7\n");
    // JSON, with the content type the Python client relies on.
    let r = a
        .client
        .query("G.V().Has('Name', 'eth0')", "application/json")
        .unwrap();
    assert_eq!(r.content_type, "application/json; charset=UTF-8");
    let nodes: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(nodes[0]["ID"], "n1");
    // Count is a bare number.
    assert_eq!(a.query("G.V().Count()"), json!(1));
    // DOT for graphs only.
    let r = a.client.query("G", "text/vnd.graphviz").unwrap();
    assert!(r.content_type.starts_with("text/vnd.graphviz"));
    assert!(r.text().starts_with("digraph g {"), "{}", r.text());
    assert!(r.text().contains("\"n1\" [label=\"eth0 (veth)\"]"));
    let r = a
        .client
        .send(
            "POST",
            "/api/topology",
            Some(("application/json", br#"{"GremlinQuery":"G.V()"}"#.to_vec())),
            &[("Accept", "text/vnd.graphviz".into())],
        )
        .unwrap();
    assert_eq!(
        (r.status, r.text()),
        (406, "Only graph can be outputted as dot\n".to_string())
    );
    // The whole graph.
    let g = a.get("/api/topology");
    assert_eq!(g["Nodes"].as_array().unwrap().len(), 1);
    assert_eq!(g["Edges"], json!([]));
}

#[test]
fn node_api_create_get_list_delete() {
    let a = TestAnalyzer::start();
    let r = a.send("POST", "/api/node", Some(node("n1", "eth0", "veth")), &[]);
    assert_eq!(r.status, 201, "{}", r.text());
    let created: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(created["Origin"], "api.test-analyzer");
    assert_eq!(created["Revision"], 1);
    assert!(created["CreatedAt"].as_i64().unwrap() > 0);
    // Same ID again.
    let r = a.send("POST", "/api/node", Some(node("n1", "x", "veth")), &[]);
    assert_eq!(
        (r.status, r.text()),
        (400, "Node ID conflict\n".to_string())
    );
    // Schema: Type is required.
    let r = a.send(
        "POST",
        "/api/node",
        Some(json!({"ID": "n2", "Metadata": {"Name": "x"}})),
        &[],
    );
    assert_eq!(r.status, 400);
    assert!(
        r.text().contains("Metadata: Type is required"),
        "{}",
        r.text()
    );
    // No ID.
    let r = a.send(
        "POST",
        "/api/node",
        Some(json!({"Metadata": {"Name": "x", "Type": "t"}})),
        &[],
    );
    assert_eq!(r.status, 400);
    // Not JSON.
    let r = a
        .client
        .send(
            "POST",
            "/api/node",
            Some(("application/json", b"{".to_vec())),
            &[],
        )
        .unwrap();
    assert_eq!(r.status, 400);

    assert_eq!(a.get("/api/node/n1")["Metadata"]["Name"], "eth0");
    let all = a.get("/api/node");
    assert!(
        all.as_object().unwrap().contains_key("n1"),
        "a map by ID: {all}"
    );
    let r = a.send("GET", "/api/node/nope", None, &[]);
    assert_eq!(
        (r.status, r.text()),
        (404, "Node 'nope' not found\n".to_string())
    );

    assert_eq!(a.send("DELETE", "/api/node/n1", None, &[]).status, 200);
    let r = a.send("DELETE", "/api/node/n1", None, &[]);
    assert_eq!(
        (r.status, r.text()),
        (404, "Node 'n1' not found\n".to_string())
    );
    assert_eq!(a.count("G.V()"), 0);
}

#[test]
fn node_patch_keeps_identity_and_answers_304_when_unchanged() {
    let a = TestAnalyzer::start();
    a.send("POST", "/api/node", Some(node("n1", "eth0", "veth")), &[]);
    let add = json!([{"op": "add", "path": "/Metadata/Foo", "value": "bar"}]);
    let r = a.send("PATCH", "/api/node/n1", Some(add.clone()), &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    let n: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(n["Metadata"]["Foo"], "bar");
    assert_eq!(n["Revision"], 2);
    // The same patch again changes nothing.
    let r = a.send("PATCH", "/api/node/n1", Some(add), &[]);
    assert_eq!((r.status, r.body.len()), (304, 0));
    // Name, Type and TID are restored: renaming is a no-op.
    let r = a.send(
        "PATCH",
        "/api/node/n1",
        Some(json!([{"op": "replace", "path": "/Metadata/Name", "value": "x"}])),
        &[],
    );
    assert_eq!(r.status, 304);
    // Changes outside Metadata are ignored.
    let r = a.send(
        "PATCH",
        "/api/node/n1",
        Some(json!([{"op": "replace", "path": "/Host", "value": "other"}])),
        &[],
    );
    assert_eq!(r.status, 304);
    // Removing Name fails schema validation with Skydive's exact message.
    let r = a.send(
        "PATCH",
        "/api/node/n1",
        Some(json!([{"op": "remove", "path": "/Metadata/Name"}])),
        &[],
    );
    assert_eq!(r.status, 400);
    assert_eq!(
        r.text(),
        "validating patched resource: invalid schema: (root): Must validate all the schemas (allOf)\nMetadata: Must validate all the schemas (allOf)\nMetadata: Name is required\n(root): Must validate at least one schema (anyOf)\n\n"
    );
    // Malformed patches.
    let r = a.send("PATCH", "/api/node/n1", Some(json!({"op": "add"})), &[]);
    assert_eq!(r.status, 400);
    assert!(
        r.text().starts_with("incorrect JSON patch: "),
        "{}",
        r.text()
    );
    let r = a.send(
        "PATCH",
        "/api/node/n1",
        Some(json!([{"op": "remove", "path": "/Metadata/Nope"}])),
        &[],
    );
    assert_eq!(r.status, 400);
    assert!(
        r.text().starts_with("applying JSON patch to resource: "),
        "{}",
        r.text()
    );
    // Unknown node: a 404 that says what was not found (Skydive's body was empty).
    let r = a.send("PATCH", "/api/node/nope", Some(json!([])), &[]);
    assert_eq!(
        (r.status, r.text()),
        (404, "Node 'nope' not found\n".to_string())
    );
    let r = a.send("PATCH", "/api/noderule/nope", Some(json!([])), &[]);
    assert_eq!(
        (r.status, r.text()),
        (404, "NodeRule 'nope' not found\n".to_string())
    );
    // A path no endpoint answers.
    let r = a.send("DELETE", "/api/capture/host1[Type=host]/br1", None, &[]);
    assert_eq!(
        (r.status, r.text()),
        (
            404,
            "no such endpoint: DELETE /api/capture/host1[Type=host]/br1\n".to_string()
        )
    );
    assert_eq!(a.get("/api/node/n1")["Revision"], 2);
}

#[test]
fn edge_api_checks_its_nodes_and_patches_metadata() {
    let a = TestAnalyzer::start();
    a.send("POST", "/api/node", Some(node("p", "br0", "bridge")), &[]);
    a.send("POST", "/api/node", Some(node("c", "eth0", "veth")), &[]);
    let edge = |id: &str, p: &str, c: &str| json!({"ID": id, "Parent": p, "Child": c, "Host": "h", "Metadata": {"RelationType": "layer2"}});
    let r = a.send("POST", "/api/edge", Some(edge("e1", "nope", "c")), &[]);
    assert_eq!(
        (r.status, r.text()),
        (400, "Parent node not found\n".to_string())
    );
    let r = a.send("POST", "/api/edge", Some(edge("e1", "p", "nope")), &[]);
    assert_eq!(
        (r.status, r.text()),
        (400, "Child node not found\n".to_string())
    );
    let r = a.send(
        "POST",
        "/api/edge",
        Some(json!({"ID": "e1", "Parent": "p", "Child": "c", "Metadata": {}})),
        &[],
    );
    assert_eq!(r.status, 400);
    assert!(
        r.text().contains("RelationType is required"),
        "{}",
        r.text()
    );
    assert_eq!(
        a.send("POST", "/api/edge", Some(edge("e1", "p", "c")), &[])
            .status,
        201
    );
    assert_eq!(a.query("G.V('p').Out().Values('Name')"), json!(["eth0"]));
    let r = a.send(
        "PATCH",
        "/api/edge/e1",
        Some(json!([{"op": "add", "path": "/Metadata/Speed", "value": 10}])),
        &[],
    );
    assert_eq!(r.status, 200);
    assert_eq!(a.query("G.E().Has('Speed', 10).Count()"), json!(1));
    // Deleting a node takes its edges, and they leave the store too.
    assert_eq!(a.send("DELETE", "/api/node/c", None, &[]).status, 200);
    assert_eq!(a.count("G.E()"), 0);
    eventually(Duration::from_secs(2), "the edge leaves the store", || {
        a.send("GET", "/api/edge/e1", None, &[]).status == 404
    });
}

#[test]
fn resource_ttl_expires_nodes_and_rules() {
    let a = TestAnalyzer::start();
    let r = a.send(
        "POST",
        "/api/node",
        Some(node("n1", "tmp", "device")),
        &[("X-Resource-TTL", "1s".into())],
    );
    assert_eq!(r.status, 201);
    let r = a.send(
        "POST",
        "/api/noderule",
        Some(json!({"Action": "create", "Metadata": {"Name": "ephemeral", "Type": "fabric"}})),
        &[("X-Resource-TTL", "1500ms".into())],
    );
    assert_eq!(r.status, 201);
    let r = a.send(
        "POST",
        "/api/node",
        Some(node("n2", "x", "device")),
        &[("X-Resource-TTL", "soon".into())],
    );
    assert_eq!(r.status, 400);
    assert!(r.text().contains("invalid X-Resource-TTL"), "{}", r.text());
    eventually(Duration::from_secs(2), "the rule's node exists", || {
        a.count("G.V().Has('Name', 'ephemeral')") == 1
    });
    eventually(Duration::from_secs(5), "the node expires", || {
        a.count("G.V().Has('Name', 'tmp')") == 0
    });
    eventually(
        Duration::from_secs(5),
        "the rule expires and its node goes",
        || a.count("G.V().Has('Name', 'ephemeral')") == 0,
    );
    assert_eq!(a.get("/api/noderule"), json!({}));
}

#[test]
fn generic_resource_handler_follows_skydive() {
    let a = TestAnalyzer::start();
    let rule = json!({"Name": "r", "Action": "create", "Metadata": {"Name": "tor", "Type": "fabric"}, "Unknown": 1});
    let r = a.send("POST", "/api/noderule", Some(rule), &[]);
    assert_eq!(r.status, 201, "{}", r.text());
    let created: Value = serde_json::from_slice(&r.body).unwrap();
    let id = created["UUID"].as_str().unwrap().to_string();
    assert_eq!(id.len(), 36);
    assert!(
        created.get("Unknown").is_none(),
        "unknown fields are dropped: {created}"
    );
    let list = a.get("/api/noderule");
    assert_eq!(list[&id]["Name"], "r", "GET lists a map by UUID");
    assert_eq!(a.get(&format!("/api/noderule/{id}"))["Action"], "create");
    let r = a.send("GET", "/api/noderule/nope", None, &[]);
    assert_eq!(
        (r.status, r.text()),
        (404, "NodeRule 'nope' not found\n".to_string())
    );
    // Rules are not updatable.
    let r = a.send(
        "PATCH",
        &format!("/api/noderule/{id}"),
        Some(json!([{"op": "replace", "path": "/Name", "value": "s"}])),
        &[],
    );
    assert_eq!(
        (r.status, r.text()),
        (
            400,
            "updating resource with patched version: resource not updatable\n".to_string()
        )
    );
    // Validation errors.
    let r = a.send(
        "POST",
        "/api/noderule",
        Some(json!({"Action": "update", "Query": "G.V().Foo()"})),
        &[],
    );
    assert_eq!(r.status, 400);
    assert!(
        r.text().contains("Expected step function, got: Foo"),
        "{}",
        r.text()
    );
    let r = a.send(
        "POST",
        "/api/edgerule",
        Some(json!({"Src": "G.V()", "Dst": "G.V()", "Metadata": {}})),
        &[],
    );
    assert_eq!(r.status, 400);
    // YAML bodies.
    let yaml = "Action: create\nMetadata:\n  Name: yaml-node\n  Type: fabric\n";
    let r = a
        .client
        .send(
            "POST",
            "/api/noderule",
            Some(("application/yaml", yaml.as_bytes().to_vec())),
            &[],
        )
        .unwrap();
    assert_eq!(r.status, 201, "{}", r.text());
    // Delete: 200 with an empty body, then 404.
    let r = a.send("DELETE", &format!("/api/noderule/{id}"), None, &[]);
    assert_eq!((r.status, r.body.len()), (200, 0));
    let r = a.send("DELETE", &format!("/api/noderule/{id}"), None, &[]);
    assert_eq!(
        (r.status, r.text()),
        (404, format!("NodeRule '{id}' not found\n"))
    );
}

#[test]
fn node_and_edge_rules_shape_the_live_graph_and_are_undone() {
    let a = TestAnalyzer::start();
    for name in ["node1", "node2"] {
        let r = a.send(
            "POST",
            "/api/noderule",
            Some(json!({"Action": "create", "Metadata": {"Name": name, "Type": "fabric"}})),
            &[],
        );
        assert_eq!(r.status, 201);
    }
    let r = a.send(
        "POST",
        "/api/edgerule",
        Some(
            json!({"Src": "G.V().Has('Name', 'node1')", "Dst": "G.V().Has('Name', 'node2')",
                    "Metadata": {"RelationType": "layer2", "EdgeName": "my_edge"}}),
        ),
        &[],
    );
    assert_eq!(r.status, 201);
    let edge_rule = serde_json::from_slice::<Value>(&r.body).unwrap()["UUID"]
        .as_str()
        .unwrap()
        .to_string();
    eventually(Duration::from_secs(3), "the rules' nodes and edge", || {
        a.count("G.E().Has('RelationType', 'layer2', 'EdgeName', 'my_edge')") == 1
    });
    let n1 = a.query("G.V().Has('Name', 'node1')");
    // A node rule's node: ID = UUIDv5(OID, "Type/Name"), TID = ID.
    assert_eq!(
        n1[0]["ID"],
        skydive_graph::gen_id_from(&["fabric", "node1"]).as_str()
    );
    assert_eq!(n1[0]["Metadata"]["TID"], n1[0]["ID"]);

    // An update rule applies to the nodes already there and to the ones that come later.
    a.send(
        "POST",
        "/api/node",
        Some(json!({"ID": "d1", "Metadata": {"Name": "d1", "Type": "device", "Color": "red"}})),
        &[],
    );
    let r = a.send(
        "POST",
        "/api/noderule",
        Some(json!({"Action": "update", "Query": "G.V().Has('Type', 'device')", "Metadata": {"Color": "blue", "Rack.Row": 3}})),
        &[],
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let update_rule = serde_json::from_slice::<Value>(&r.body).unwrap()["UUID"]
        .as_str()
        .unwrap()
        .to_string();
    eventually(Duration::from_secs(3), "the update rule reaches d1", || {
        a.query("G.V('d1').Values('Color')") == json!(["blue"])
    });
    assert_eq!(a.query("G.V('d1').Values('Rack.Row')"), json!([3]));
    a.send(
        "POST",
        "/api/node",
        Some(json!({"ID": "d2", "Metadata": {"Name": "d2", "Type": "device"}})),
        &[],
    );
    eventually(
        Duration::from_secs(3),
        "the update rule reaches a new node",
        || a.query("G.V('d2').Values('Color')") == json!(["blue"]),
    );

    // Deleting the rules undoes them.
    assert_eq!(
        a.send("DELETE", &format!("/api/noderule/{update_rule}"), None, &[])
            .status,
        200
    );
    eventually(
        Duration::from_secs(3),
        "d1 gets its color back, d2 loses it",
        || {
            a.query("G.V('d1').Values('Color')") == json!(["red"])
                && a.count("G.V('d2').HasKey('Color')") == 0
        },
    );
    assert_eq!(a.count("G.V('d1').HasKey('Rack.Row')"), 0);
    assert_eq!(
        a.send("DELETE", &format!("/api/edgerule/{edge_rule}"), None, &[])
            .status,
        200
    );
    eventually(Duration::from_secs(3), "the rule's edge goes", || {
        a.count("G.E()") == 0
    });
    for id in a.get("/api/noderule").as_object().unwrap().keys() {
        a.send("DELETE", &format!("/api/noderule/{id}"), None, &[]);
    }
    eventually(Duration::from_secs(3), "the rules' nodes go", || {
        a.count("G.V().Has('Type', 'fabric')") == 0
    });
}

#[test]
fn resources_and_api_elements_survive_a_restart() {
    let mut a = TestAnalyzer::start();
    a.send("POST", "/api/node", Some(node("n1", "a", "device")), &[]);
    a.send("POST", "/api/node", Some(node("n2", "b", "device")), &[]);
    a.send(
        "POST",
        "/api/edge",
        Some(json!({"ID": "e", "Parent": "n1", "Child": "n2", "Metadata": {"RelationType": "layer2"}})),
        &[],
    );
    a.send(
        "PATCH",
        "/api/node/n1",
        Some(json!([{"op": "add", "path": "/Metadata/Foo", "value": 1}])),
        &[],
    );
    a.send(
        "POST",
        "/api/noderule",
        Some(json!({"Action": "create", "Metadata": {"Name": "tor", "Type": "fabric"}})),
        &[],
    );
    eventually(Duration::from_secs(3), "the rule's node", || {
        a.count("G.V().Has('Name', 'tor')") == 1
    });
    a.restart();
    eventually(Duration::from_secs(5), "everything is back", || {
        a.count("G.V()") == 3 && a.count("G.E()") == 1
    });
    assert_eq!(a.query("G.V('n1').Values('Foo')"), json!([1]));
    assert_eq!(a.get("/api/node/n1")["Revision"], 2);
    assert_eq!(a.get("/api/noderule").as_object().unwrap().len(), 1);
}

#[test]
fn cors_and_gzip_wrap_every_answer() {
    let a = TestAnalyzer::start();
    let r = a
        .client
        .send(
            "OPTIONS",
            "/api/topology",
            None,
            &[
                ("Origin", "http://ui.example".into()),
                ("Access-Control-Request-Method", "POST".into()),
            ],
        )
        .unwrap();
    assert_eq!(r.status, 200);
    let r = a
        .client
        .send(
            "GET",
            "/api",
            None,
            &[("Origin", "http://ui.example".into())],
        )
        .unwrap();
    assert_eq!(r.status, 200);
    for i in 0..20 {
        a.send(
            "POST",
            "/api/node",
            Some(node(&format!("n{i}"), "padding", "device")),
            &[],
        );
    }
    // A raw request to see the headers the client library hides.
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(a.addr()).unwrap();
    write!(
        s,
        "GET /api/topology HTTP/1.1\r\nHost: x\r\nOrigin: http://ui.example\r\nAccept-Encoding: gzip\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    let head =
        String::from_utf8_lossy(&buf[..buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap()])
            .to_lowercase();
    assert!(head.contains("access-control-allow-origin: *"), "{head}");
    assert!(head.contains("content-encoding: gzip"), "{head}");
}

#[test]
fn status_lists_connections_by_kind() {
    let a = TestAnalyzer::start();
    let _sub = a.ws(
        "/ws/subscriber",
        &[("X-Client-Type", "webui"), ("X-Host-ID", "ui1")],
    );
    let _agent = a.ws(
        "/ws/agent/topology",
        &[
            ("X-Client-Type", "agent"),
            ("X-Host-ID", "h1"),
            ("X-Persistence-Policy", "DeleteOnDisconnect"),
        ],
    );
    let s = a.get("/api/status");
    assert_eq!(s["Subscribers"]["ui1"]["RemoteServiceType"], "webui");
    assert_eq!(s["Agents"]["h1"]["IsConnected"], true);
    assert_eq!(s["Agents"]["h1"]["ClientProtocol"], "json");
    assert_eq!(s["Peers"], json!({"Incomers": {}, "Outgoers": {}}));
    assert_eq!(s["Captures"]["IsMaster"], true);
}

#[test]
fn an_unusable_store_is_reported_at_start() {
    let mut s = settings(
        std::path::Path::new("/proc/skydive-no-such-dir"),
        "127.0.0.1:0",
    );
    s.host_id = "x".into();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let e = rt
        .block_on(skydive_analyzer::Analyzer::start(&s))
        .unwrap_err();
    let msg = format!("{e:#}");
    assert!(
        msg.contains("storage.embedded") && msg.contains("/proc/skydive-no-such-dir"),
        "{msg}"
    );
}

#[test]
fn the_fabric_is_drawn_and_linked_to_every_agent_eth0() {
    let a = TestAnalyzer::start_with(|s| {
        s.analyzer.topology.fabric = vec![
            "TOR1[Name=tor1, Vendor=acme] -> TOR1_PORT1[Name=port1]".into(),
            "TOR1 -> TOR1_PORT2[Name=port2]".into(),
            "TOR1_PORT1 -->[Speed=10G] TOR2".into(),
            "TOR1_PORT2 --> *[Type=host]/eth0".into(),
        ];
    });
    eventually(Duration::from_secs(3), "the fabric nodes", || {
        a.count("G.V().Has('Probe', 'fabric')") == 4
    });
    let tor1 = a.query("G.V().Has('Name', 'tor1')");
    assert_eq!(tor1[0]["Metadata"]["Type"], "device");
    assert_eq!(tor1[0]["Metadata"]["Vendor"], "acme");
    assert_eq!(tor1[0]["Origin"], "analyzer.test-analyzer");
    assert_eq!(tor1[0]["Metadata"]["TID"], tor1[0]["ID"]);
    assert_eq!(
        a.count("G.V().Has('Name', 'tor1').OutE('RelationType', 'ownership')"),
        2
    );
    assert_eq!(
        a.count("G.V().Has('Name', 'tor1').OutE('RelationType', 'layer2')"),
        2
    );
    // `-->`: layer2 only, with the link's metadata.
    assert_eq!(
        a.count("G.V().Has('Name', 'TOR2').InE('RelationType', 'ownership')"),
        0
    );
    assert_eq!(
        a.query("G.V().Has('Name', 'port1').OutE('RelationType', 'layer2').Values('Speed')"),
        json!(["10G"])
    );

    // An agent's host with an eth0 and a namespace with its own eth0: only the host's is
    // linked.
    let msg = |kind: &str, obj: Value| json!({"Namespace": "Graph", "Type": kind, "Obj": obj});
    let mut agent = a.ws(
        "/ws/agent/topology",
        &[
            ("X-Client-Type", "agent"),
            ("X-Host-ID", "h1"),
            ("X-Persistence-Policy", "DeleteOnDisconnect"),
        ],
    );
    for (id, name, ty) in [
        ("h1", "h1", "host"),
        ("h1-eth0", "eth0", "device"),
        ("h1-ns", "ns1", "netns"),
        ("h1-ns-eth0", "eth0", "veth"),
    ] {
        ws_send(
            &mut agent,
            msg(
                "NodeAdded",
                json!({"ID": id, "Host": "h1", "Metadata": {"Name": name, "Type": ty}}),
            ),
        );
    }
    for (p, c) in [("h1", "h1-eth0"), ("h1", "h1-ns"), ("h1-ns", "h1-ns-eth0")] {
        ws_send(
            &mut agent,
            msg(
                "EdgeAdded",
                json!({"ID": format!("{p}/{c}"), "Host": "h1", "Parent": p, "Child": c,
                       "Metadata": {"RelationType": "ownership"}}),
            ),
        );
    }
    eventually(
        Duration::from_secs(3),
        "port2 linked to the host's eth0",
        || {
            a.query(
                "G.V().Has('Name', 'port2').OutE('RelationType', 'layer2').OutV().Values('Type')",
            ) == json!(["device"])
        },
    );
    let e = a.query("G.V().Has('Name', 'port2').OutE('RelationType', 'layer2')");
    assert_eq!(e[0]["Metadata"]["Type"], "fabric");
    assert_eq!(e[0]["Origin"], "analyzer.test-analyzer");

    // The agent goes and comes back: the link goes with its eth0 and comes back with it.
    drop(agent);
    eventually(Duration::from_secs(5), "the agent's nodes gone", || {
        a.count("G.V().Has('Name', 'eth0')") == 0
    });
    assert_eq!(
        a.count("G.V().Has('Name', 'port2').OutE('RelationType', 'layer2')"),
        0
    );
    let mut agent = a.ws(
        "/ws/agent/topology",
        &[
            ("X-Client-Type", "agent"),
            ("X-Host-ID", "h1"),
            ("X-Persistence-Policy", "DeleteOnDisconnect"),
        ],
    );
    for (id, name, ty) in [("h1", "h1", "host"), ("h1-eth0", "eth0", "device")] {
        ws_send(
            &mut agent,
            msg(
                "NodeAdded",
                json!({"ID": id, "Host": "h1", "Metadata": {"Name": name, "Type": ty}}),
            ),
        );
    }
    ws_send(
        &mut agent,
        msg(
            "EdgeAdded",
            json!({"ID": "h1/h1-eth0", "Host": "h1", "Parent": "h1", "Child": "h1-eth0",
                   "Metadata": {"RelationType": "ownership"}}),
        ),
    );
    eventually(Duration::from_secs(3), "linked again", || {
        a.count("G.V().Has('Name', 'port2').OutE('RelationType', 'layer2')") == 1
    });
}

#[test]
fn config_keys_are_served_secrets_masked_and_unknown_ones_as_null() {
    let a = TestAnalyzer::start_with(|s| {
        s.analyzer.auth.cluster.password = "cluster-secret".into();
        s.analyzer.topology.agent_grace_period = 7;
    });
    assert_eq!(
        a.get("/api/config/analyzer.topology.agent_grace_period"),
        json!(7)
    );
    assert_eq!(
        a.get("/api/config/flow.default_layer_key_mode"),
        json!("L2")
    );
    assert_eq!(
        a.get("/api/config/analyzer.auth.cluster.password"),
        json!("********")
    );
    assert_eq!(a.get("/api/config/analyzer.auth.api.password"), json!(""));
    let whole = a.get("/api/config/analyzer");
    assert!(!whole.to_string().contains("cluster-secret"), "{whole}");
    assert_eq!(a.get("/api/config/no.such.key"), Value::Null);
}

/// A 20-node mesh made through the API, where `Both()` six times would produce 940 million
/// nodes: the query is refused at its element budget (422) or at its deadline (503), each
/// naming the limit, and the analyzer answers everyone else meanwhile.
#[test]
fn a_query_that_explodes_stops_at_its_limits() {
    for (max, timeout, status, names) in [
        (10_000_000u64, 60u64, 422, "gremlin.max_elements: 10000000"),
        (1_000_000_000, 1, 503, "gremlin.timeout: 1 s"),
    ] {
        let a = TestAnalyzer::start_with(|s| {
            s.gremlin.max_elements = max;
            s.gremlin.timeout = timeout;
        });
        for i in 0..20 {
            a.send(
                "POST",
                "/api/node",
                Some(node(&format!("m{i}"), &format!("m{i}"), "device")),
                &[],
            );
        }
        for i in 0..20 {
            for j in i + 1..20 {
                a.send(
                    "POST",
                    "/api/edge",
                    Some(json!({"ID": format!("m{i}-{j}"), "Parent": format!("m{i}"), "Child": format!("m{j}"), "Metadata": {"RelationType": "layer2"}})),
                    &[],
                );
            }
        }
        assert_eq!(a.count("G.E()"), 190);
        let started = std::time::Instant::now();
        let r = a.send(
            "POST",
            "/api/topology",
            Some(json!({"GremlinQuery": "G.V().Both().Both().Both().Both().Both().Both()"})),
            &[],
        );
        assert_eq!(r.status, status, "{}", r.text());
        assert!(r.text().contains(names), "{}", r.text());
        assert!(started.elapsed() < Duration::from_secs(20));
        assert_eq!(a.get("/api")["Service"], "analyzer");
    }
}
