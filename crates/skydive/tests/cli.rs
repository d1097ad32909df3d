//! `skydive` on the command line: the client commands against a running analyzer, exit
//! codes, configuration errors, completion.

mod common;

use std::process::{Command, Output};
use std::time::Duration;

use common::*;
use serde_json::Value;

fn run(args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .env_remove("SKYDIVE_ANALYZER")
        .env_remove("SKYDIVE_USERNAME")
        .env_remove("SKYDIVE_PASSWORD")
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `skydive client --analyzer ADDR …`.
fn client_of(addr: &str) -> impl Fn(&[&str]) -> Output + '_ {
    move |args: &[&str]| {
        let mut all = vec!["client", "--analyzer", addr];
        all.extend_from_slice(args);
        run(&all)
    }
}

fn start_analyzer(dir: &std::path::Path) -> (Proc, String) {
    let port = free_port();
    let conf = write_config(
        dir,
        "a.yml",
        &format!(
            "host_id: cli-test\nanalyzer:\n  listen: 127.0.0.1:{port}\nstorage:\n  embedded:\n    path: {}\n",
            dir.join("data").display()
        ),
    );
    let p = Proc::spawn(
        &["-c", conf.to_str().unwrap(), "analyzer"],
        &dir.join("a.log"),
    );
    let addr = format!("127.0.0.1:{port}");
    wait_api(&addr);
    (p, addr)
}

#[test]
fn client_manages_nodes_edges_and_queries() {
    let dir = tempfile::tempdir().unwrap();
    let (_a, addr) = start_analyzer(dir.path());
    let client = client_of(&addr);

    let o = client(&[
        "node",
        "create",
        "--node-name",
        "tor1",
        "--node-type",
        "fabric",
        "-m",
        "Rack=r1, Slots=4",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let created: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert!(
        stdout(&o).contains("\n  \"ID\""),
        "pretty JSON with 2 spaces: {}",
        stdout(&o)
    );
    let tor = created["ID"].as_str().unwrap().to_string();
    assert_eq!(created["Metadata"]["Slots"], 4);
    let o = client(&[
        "node",
        "create",
        "--node-name",
        "port1",
        "--node-type",
        "fabric",
    ]);
    let port: Value = serde_json::from_str(&stdout(&o)).unwrap();
    let port = port["ID"].as_str().unwrap().to_string();
    let o = client(&[
        "edge",
        "create",
        "--edge-type",
        "layer2",
        "--parent",
        &tor,
        "--child",
        &port,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));

    let o = client(&["query", "G.V().Has('Name', 'tor1').Out().Values('Name')"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        serde_json::from_str::<Value>(&stdout(&o)).unwrap(),
        serde_json::json!(["port1"])
    );
    assert!(
        stdout(&o).contains("[\n\t\"port1\""),
        "tab-indented: {}",
        stdout(&o)
    );
    let o = client(&["topology", "query", "--gremlin", "G", "--format", "dot"]);
    assert!(stdout(&o).starts_with("digraph g {"), "{}", stdout(&o));

    let o = client(&["node", "update", &tor, "-a", "Rack=r2", "-r", "Slots"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = client(&["node", "get", &tor]);
    let n: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(n["Metadata"]["Rack"], "r2");
    assert!(n["Metadata"].get("Slots").is_none());

    let o = client(&["node", "list"]);
    assert_eq!(
        serde_json::from_str::<Value>(&stdout(&o))
            .unwrap()
            .as_object()
            .unwrap()
            .len(),
        2
    );
    let o = client(&["node", "delete", "--gremlin", "G.V().Has('Type', 'fabric')"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = client(&["query", "G.V().Count()"]);
    assert_eq!(stdout(&o).trim(), "0");

    // Rules.
    let o = client(&[
        "node-rule",
        "create",
        "--node-name",
        "n1",
        "--node-type",
        "fabric",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let rule: Value = serde_json::from_str(&stdout(&o)).unwrap();
    let o = client(&["node-rule", "list"]);
    assert!(stdout(&o).contains(rule["UUID"].as_str().unwrap()));
    eventually(Duration::from_secs(3), "the rule's node", || {
        stdout(&client(&["query", "G.V().Has('Name', 'n1').Count()"])).trim() == "1"
    });
    let o = client(&["node-rule", "delete", rule["UUID"].as_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));

    // Errors: the server's message on stderr, exit code 1.
    let o = client(&["query", "G.V().Foo()"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("Expected step function, got: Foo"),
        "{}",
        stderr(&o)
    );
    let o = client(&["node", "get", "nope"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("Node 'nope' not found"),
        "{}",
        stderr(&o)
    );
    let o = client(&["status"]);
    assert!(o.status.success());
    assert!(stdout(&o).contains("\"Agents\""));
}

#[test]
fn unreachable_analyzer_is_a_clear_error() {
    let port = free_port();
    let o = run(&[
        "client",
        "--analyzer",
        &format!("127.0.0.1:{port}"),
        "query",
        "G",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains(&format!("cannot reach http://127.0.0.1:{port}")),
        "{}",
        stderr(&o)
    );
}

#[test]
fn invalid_configuration_exits_64_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let conf = write_config(dir.path(), "bad.yml", "analyzer:\n  listen: nowhere\n");
    let o = run(&["-c", conf.to_str().unwrap(), "analyzer"]);
    assert_eq!(o.status.code(), Some(64));
    assert!(stderr(&o).contains("analyzer.listen"), "{}", stderr(&o));
    let o = Command::new(bin())
        .args(["analyzer"])
        .env("SKYDIVE_LOGGING_LEVEL", "LOUD")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(64));
    assert!(stderr(&o).contains("logging.level"), "{}", stderr(&o));
    let o = run(&["-c", "/nonexistent/skydive.yml", "agent"]);
    assert_eq!(o.status.code(), Some(64));
    assert!(
        stderr(&o).contains("/nonexistent/skydive.yml"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn authentication_sections_that_cannot_be_enforced_are_refused_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        // A basic backend without users.
        (
            "analyzer:\n  auth:\n    api:\n      backend: basic\n",
            "analyzer.auth.api.backend: auth.basic: a basic backend needs `file` (htpasswd) or `users`",
        ),
        // Keystone cannot be enforced by this build.
        (
            "agent:\n  auth:\n    api:\n      backend: keystone\n",
            "agent.auth.api.backend: the `keystone` backend is of type keystone",
        ),
        // An htpasswd file that does not exist.
        (
            "auth:\n  basic:\n    file: /nonexistent/htpasswd\nanalyzer:\n  auth:\n    cluster:\n      backend: basic\n",
            "analyzer.auth.cluster.backend: auth.basic.file: /nonexistent/htpasswd:",
        ),
    ];
    for (i, (yaml, want)) in cases.iter().enumerate() {
        let conf = write_config(
            dir.path(),
            &format!("a{i}.yml"),
            &format!(
                "analyzer:\n  listen: 127.0.0.1:{}\nagent:\n  listen: 127.0.0.1:{}\nstorage:\n  embedded:\n    path: {}\n",
                free_port(),
                free_port(),
                dir.path().display()
            ),
        );
        let extra = write_config(dir.path(), &format!("b{i}.yml"), yaml);
        let o = run(&[
            "-c",
            conf.to_str().unwrap(),
            "-c",
            extra.to_str().unwrap(),
            "allinone",
        ]);
        assert_eq!(o.status.code(), Some(64), "{}", stderr(&o));
        assert!(stderr(&o).contains(want), "{want:?} not in {}", stderr(&o));
    }
}

#[test]
fn probes_this_build_cannot_run_are_refused_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    for (probes, key, want) in [
        (
            "[ovsdb, ovsbd]",
            "agent.topology.probes",
            "unknown probe \"ovsbd\"",
        ),
        (
            "[neutron]",
            "agent.topology.probes",
            "probe \"neutron\" is not available in this build yet",
        ),
        (
            "[docker]\n    docker:\n      url: ftp://127.0.0.1/docker",
            "agent.topology.docker.url",
            "\"ftp://127.0.0.1/docker\": a unix:///path or tcp://host:port address is needed",
        ),
    ] {
        let conf = write_config(
            dir.path(),
            "probes.yml",
            &format!(
                "agent:\n  listen: 127.0.0.1:{}\n  topology:\n    probes: {probes}\n",
                free_port()
            ),
        );
        let o = run(&["-c", conf.to_str().unwrap(), "agent"]);
        assert_eq!(o.status.code(), Some(64), "{}", stderr(&o));
        let err = stderr(&o);
        assert!(err.contains(key) && err.contains(want), "{err}");
    }
}

#[test]
fn settings_this_build_cannot_honour_stop_the_start_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    for (yaml, key, want) in [
        (
            "tls:\n  server_cert: /etc/skydive/server.crt\n  server_key: /etc/skydive/server.key\n",
            "tls.server_cert",
            "/etc/skydive/server.crt: No such file or directory",
        ),
        (
            "etcd:\n  servers: [http://127.0.0.1:2379]\n",
            "etcd.servers",
            "etcd",
        ),
        (
            "analyzer:\n  topology:\n    fabric: [\"TOR1 -> *[Type=host]\"]\n",
            "analyzer.topology.fabric",
            "invalid wildcard",
        ),
    ] {
        let conf = write_config(dir.path(), "refused.yml", yaml);
        let services: &[&str] = if key == "analyzer.topology.fabric" {
            &["analyzer"]
        } else {
            &["analyzer", "agent"]
        };
        for service in services {
            let o = run(&["-c", conf.to_str().unwrap(), service]);
            assert_eq!(
                o.status.code(),
                Some(64),
                "{service} {yaml}: {}",
                stderr(&o)
            );
            let err = stderr(&o);
            assert!(err.contains(key) && err.contains(want), "{service}: {err}");
        }
    }
}

#[test]
fn logs_go_to_a_file_as_json_and_keys_without_effect_are_said() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let log_file = dir.path().join("skydive.log");
    let conf = write_config(
        dir.path(),
        "log.yml",
        &format!(
            "host_id: log-test\nanalyzer:\n  listen: 127.0.0.1:{port}\nstorage:\n  embedded:\n    path: {}\nflow:\n  protocol: udp\nhttp:\n  rest:\n    debug: true\nlogging:\n  backends: [file]\n  encoder: json\n  file:\n    path: {}\n",
            dir.path().join("data").display(),
            log_file.display()
        ),
    );
    let p = Proc::spawn(
        &["-c", conf.to_str().unwrap(), "analyzer"],
        &dir.path().join("stderr.log"),
    );
    let addr = format!("127.0.0.1:{port}");
    wait_api(&addr);
    let c = skydive_api::client::Client::new(&addr, None);
    let _ = c.send("GET", "/api/nosuchthing", None, &[]);
    eventually(Duration::from_secs(5), "the request in the log", || {
        std::fs::read_to_string(&log_file).is_ok_and(|t| t.contains("/api/nosuchthing"))
    });
    let text = std::fs::read_to_string(&log_file).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect();
    let said = |needle: &str| {
        lines
            .iter()
            .find(|l| l.to_string().contains(needle))
            .cloned()
            .unwrap_or_else(|| panic!("{needle:?} not in {text}"))
    };
    let warning = said("flow.protocol");
    assert_eq!(warning["level"], "WARN", "{warning}");
    assert!(warning.to_string().contains("has no effect"), "{warning}");
    let request = said("/api/nosuchthing");
    assert!(request.to_string().contains("404"), "{request}");
    // Nothing went to stderr: the file is the only backend.
    drop(p);
    let stderr_text = std::fs::read_to_string(dir.path().join("stderr.log")).unwrap();
    assert!(!stderr_text.contains("analyzer started"), "{stderr_text}");
}

#[test]
fn a_busy_port_is_reported() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let conf = write_config(
        dir.path(),
        "a.yml",
        &format!(
            "analyzer:\n  listen: {addr}\nstorage:\n  embedded:\n    path: {}\n",
            dir.path().display()
        ),
    );
    let o = run(&["-c", conf.to_str().unwrap(), "analyzer"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains(&format!("analyzer.listen: cannot listen on {addr}")),
        "{}",
        stderr(&o)
    );
}

#[test]
fn completion_and_version() {
    let o = run(&["completion", "bash"]);
    assert!(o.status.success());
    assert!(
        stdout(&o).contains("_skydive()"),
        "{}",
        &stdout(&o)[..200.min(stdout(&o).len())]
    );
    let o = run(&["completion", "zsh"]);
    assert!(stdout(&o).contains("#compdef skydive"));
    let o = run(&["version"]);
    assert!(stdout(&o).starts_with("skydive 0.28.0"), "{}", stdout(&o));
}

#[test]
fn client_manages_captures_with_gremlin_and_probe_paths() {
    let dir = tempfile::tempdir().unwrap();
    let (_a, addr) = start_analyzer(dir.path());
    let client = client_of(&addr);
    let c = skydive_api::client::Client::new(&addr, None);
    // host1 -ownership-> br1, and br1 -layer2-> port1 (not an ownership child).
    for (id, name, t) in [
        ("h1", "host1", "host"),
        ("b1", "br1", "bridge"),
        ("p1", "port1", "veth"),
    ] {
        let body = serde_json::json!({"ID": id, "Metadata": {"Name": name, "Type": t}});
        c.json::<Value, _>("POST", "/api/node", &body, &[]).unwrap();
    }
    for (id, p, ch, rel) in [
        ("e1", "h1", "b1", "ownership"),
        ("e2", "b1", "p1", "layer2"),
    ] {
        let body = serde_json::json!({"ID": id, "Parent": p, "Child": ch, "Metadata": {"RelationType": rel}});
        c.json::<Value, _>("POST", "/api/edge", &body, &[]).unwrap();
    }

    let o = client(&[
        "capture",
        "create",
        "-p",
        "host1[Type=host]/br1[Type=bridge]",
        "--bpf",
        "icmp",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let cap: Value = serde_json::from_str(&stdout(&o)).unwrap();
    let q = cap["GremlinQuery"].as_str().unwrap().to_string();
    assert_eq!(cap["BPFFilter"], "icmp");
    let found = query(&c, &q).unwrap();
    assert_eq!(found.as_array().unwrap().len(), 1, "{q}: {found}");
    assert_eq!(found[0]["ID"], "b1");
    // The wildcard host, and a path that is not ownership.
    let wild = client(&[
        "capture",
        "create",
        "-p",
        "*/br1[Type=bridge]",
        "--type",
        "pcap",
    ]);
    assert!(wild.status.success(), "{}", stderr(&wild));
    let wq: Value = serde_json::from_str(&stdout(&wild)).unwrap();
    assert_eq!(
        query(&c, wq["GremlinQuery"].as_str().unwrap()).unwrap()[0]["ID"],
        "b1"
    );
    let not_owned = cli_probe_path_nodes(
        &client,
        &c,
        "host1[Type=host]/br1[Type=bridge]/port1[Type=veth]",
    );
    assert_eq!(
        not_owned, 0,
        "port1 is a layer2 child of br1, not an ownership one"
    );

    let o = client(&[
        "capture",
        "create",
        "--gremlin",
        "G.V().Has('Name', 'port1')",
        "--extra-layer",
        "DNS",
        "--type",
        "afpacket",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let third: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(third["ExtraLayers"], 2);
    // Refused with the server's reason, exit code 1.
    let bad = client(&[
        "capture",
        "create",
        "--gremlin",
        "G.V()",
        "--bpf",
        "port eighty",
    ]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        stderr(&bad).contains("invalid BPF filter"),
        "{}",
        stderr(&bad)
    );

    let o = client(&["capture", "list"]);
    let list: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(list.as_object().unwrap().len(), 4);
    let id = cap["UUID"].as_str().unwrap();
    let o = client(&["capture", "get", id]);
    assert_eq!(
        serde_json::from_str::<Value>(&stdout(&o)).unwrap()["UUID"],
        id
    );
    // Deleting by the probe path the seed documents removes what that path created.
    let path = "host1[Type=host]/br1[Type=bridge]";
    let o = client(&["capture", "delete", path]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = client(&["capture", "list"]);
    let after: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(after.as_object().unwrap().len(), 3);
    assert!(
        after.get(id).is_none(),
        "the path's capture is gone: {after}"
    );
    let again = client(&["capture", "delete", path]);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        stderr(&again).contains(
            "no capture was created for the probe path host1[Type=host]/br1[Type=bridge]"
        ),
        "{}",
        stderr(&again)
    );
    // Every 404 says what was not found.
    let missing = client(&["capture", "get", "nope"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        stderr(&missing).contains("Capture 'nope' not found"),
        "{}",
        stderr(&missing)
    );
    let ids: Vec<String> = after.as_object().unwrap().keys().cloned().collect();
    let mut args = vec!["capture", "delete"];
    args.extend(ids.iter().map(String::as_str));
    assert!(client(&args).status.success());
    let o = client(&["capture", "list"]);
    assert_eq!(stdout(&o).trim(), "{}");
}

/// Creates a capture on a probe path and returns how many nodes its query selects.
fn cli_probe_path_nodes(
    client: &dyn Fn(&[&str]) -> Output,
    c: &skydive_api::client::Client,
    path: &str,
) -> usize {
    let o = client(&["capture", "create", "-p", path]);
    assert!(o.status.success(), "{}", stderr(&o));
    let cap: Value = serde_json::from_str(&stdout(&o)).unwrap();
    query(c, cap["GremlinQuery"].as_str().unwrap())
        .and_then(|v| v.as_array().map(Vec::len))
        .unwrap_or(0)
}

#[test]
fn client_manages_alerts() {
    let dir = tempfile::tempdir().unwrap();
    let (_a, addr) = start_analyzer(dir.path());
    let client = client_of(&addr);
    let o = client(&[
        "alert",
        "create",
        "--name",
        "ns",
        "--expression",
        "G.V().Has('Type', 'netns')",
        "--trigger",
        "duration:5s",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let a: Value = serde_json::from_str(&stdout(&o)).unwrap();
    let id = a["UUID"].as_str().unwrap();
    assert_eq!(a["Trigger"], "duration:5s");
    let o = client(&[
        "alert",
        "update",
        id,
        "--name",
        "ns2",
        "--action",
        "file:///bin/true",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let u: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(
        (u["Name"].as_str(), u["Action"].as_str()),
        (Some("ns2"), Some("file:///bin/true"))
    );
    let o = client(&["alert", "get", id]);
    assert_eq!(
        serde_json::from_str::<Value>(&stdout(&o)).unwrap()["Name"],
        "ns2"
    );
    let bad = client(&["alert", "create", "--expression", "G.V("]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        stderr(&bad).contains("invalid Expression"),
        "{}",
        stderr(&bad)
    );
    assert!(client(&["alert", "delete", id]).status.success());
    assert_eq!(stdout(&client(&["alert", "list"])).trim(), "{}");
}

#[test]
fn a_graph_exported_from_one_analyzer_is_imported_into_another() {
    let dir = tempfile::tempdir().unwrap();
    let (_a, from) = start_analyzer(dir.path());
    let c = skydive_api::client::Client::new(&from, None);
    for (id, name, t) in [("h1", "host1", "host"), ("i1", "eth0", "device")] {
        let body =
            serde_json::json!({"ID": id, "Metadata": {"Name": name, "Type": t, "MTU": 1500}});
        c.json::<Value, _>("POST", "/api/node", &body, &[]).unwrap();
    }
    let body = serde_json::json!({"ID": "e1", "Parent": "h1", "Child": "i1", "Metadata": {"RelationType": "ownership"}});
    c.json::<Value, _>("POST", "/api/edge", &body, &[]).unwrap();
    let export = client_of(&from)(&["topology", "export"]);
    assert!(export.status.success(), "{}", stderr(&export));
    let file = dir.path().join("graph.json");
    std::fs::write(&file, export.stdout).unwrap();

    let other = tempfile::tempdir().unwrap();
    let (_b, to) = start_analyzer(other.path());
    let o = client_of(&to)(&["topology", "import", "--file", file.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("2 nodes and 1 edges imported"),
        "{}",
        stderr(&o)
    );
    let d = skydive_api::client::Client::new(&to, None);
    let eth0 = query(&d, "G.V('h1').OutE('RelationType', 'ownership').OutV()");
    assert_eq!(eth0.unwrap()[0]["Metadata"]["MTU"], 1500);
    // Kept after the client left (persistent).
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(count(&d, "G.V()"), 2);

    // A node the analyzer refuses (no Type) is named, and the command fails.
    let bad = dir.path().join("bad.json");
    std::fs::write(
        &bad,
        r#"[{"Nodes": [{"ID": "ok1", "Metadata": {"Name": "a", "Type": "device"}}, {"ID": "bad1", "Metadata": {"Name": "b"}}], "Edges": null}]"#,
    )
    .unwrap();
    let o = client_of(&to)(&["topology", "import", "--file", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("refused 1 of 2 nodes (bad1)"),
        "{}",
        stderr(&o)
    );
    // Not a graph: said before anything is sent.
    std::fs::write(&bad, "[1, 2]").unwrap();
    let o = client_of(&to)(&["topology", "import", "--file", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("invalid graph format"),
        "{}",
        stderr(&o)
    );
}
