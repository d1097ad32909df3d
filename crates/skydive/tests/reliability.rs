//! Real `skydive analyzer` and `skydive agent` processes killed with SIGKILL: the graph
//! comes back, without duplicates, and a dead agent's graph goes after its grace period.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use skydive_api::client::Client;

struct Cluster {
    dir: tempfile::TempDir,
    analyzer: Proc,
    agents: Vec<Proc>,
    addr: String,
}

fn analyzer_config(dir: &std::path::Path, port: u16) -> std::path::PathBuf {
    write_config(
        dir,
        "analyzer.yml",
        &format!(
            "host_id: analyzer1\nanalyzer:\n  listen: 127.0.0.1:{port}\n  topology:\n    agent_grace_period: 2\nstorage:\n  embedded:\n    path: {}\n",
            dir.join("data").display()
        ),
    )
}

fn agent_config(dir: &std::path::Path, name: &str, analyzer: &str) -> std::path::PathBuf {
    write_config(
        dir,
        &format!("{name}.yml"),
        &format!(
            "host_id: {name}\nanalyzers: [{analyzer}]\nagent:\n  listen: 127.0.0.1:{}\n  metadata:\n    rack: r1\n",
            free_port()
        ),
    )
}

fn cluster(agents: &[&str]) -> Cluster {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let conf = analyzer_config(dir.path(), port);
    let analyzer = Proc::spawn(
        &["-c", conf.to_str().unwrap(), "analyzer"],
        &dir.path().join("analyzer.log"),
    );
    wait_api(&addr);
    let agents = agents
        .iter()
        .map(|name| {
            let conf = agent_config(dir.path(), name, &addr);
            Proc::spawn(
                &["-c", conf.to_str().unwrap(), "agent"],
                &dir.path().join(format!("{name}.log")),
            )
        })
        .collect();
    Cluster {
        dir,
        analyzer,
        agents,
        addr,
    }
}

fn ids(c: &Client, q: &str) -> Vec<String> {
    let mut v: Vec<String> = query(c, q)
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|n| n["ID"].as_str().map(str::to_string))
        .collect();
    v.sort();
    v
}

#[test]
fn killed_analyzer_gets_the_whole_graph_back_within_five_seconds() {
    let mut cl = cluster(&["agent1", "agent2"]);
    let c = Client::new(&cl.addr, None);
    eventually(Duration::from_secs(10), "both agents' hosts", || {
        count(&c, "G.V().Has('Type', 'host')") == 2
    });
    let r = c
        .send(
            "POST",
            "/api/node",
            Some((
                "application/json",
                serde_json::to_vec(
                    &json!({"ID": "tor", "Metadata": {"Name": "tor", "Type": "fabric"}}),
                )
                .unwrap(),
            )),
            &[],
        )
        .unwrap();
    assert_eq!(r.status, 201);
    // Both agents' probes have reported the host's interfaces, and nothing moves any more.
    eventually(
        Duration::from_secs(10),
        "each host with its loopback",
        || count(&c, "G.V().Has('Type', 'host').Out().Has('Name', 'lo')") == 2,
    );
    let mut before = ids(&c, "G.V()");
    eventually(Duration::from_secs(10), "a settled graph", || {
        std::thread::sleep(Duration::from_millis(500));
        let now = ids(&c, "G.V()");
        std::mem::replace(&mut before, now) == before
    });
    assert!(
        before.len() >= 5,
        "2 hosts, their interfaces, the API node: {before:?}"
    );
    let host1 = query(&c, "G.V().Has('Name', 'agent1')").unwrap();
    assert_eq!(
        host1[0]["Metadata"]["rack"], "r1",
        "agent.metadata reaches the analyzer"
    );

    cl.analyzer.kill9();
    assert_eq!(count(&c, "G.V()"), -1, "the analyzer is down");
    cl.analyzer.start();
    let took = eventually(Duration::from_secs(15), "the whole graph is back", || {
        ids(&c, "G.V()") == before
    });
    assert!(
        took < Duration::from_secs(5),
        "the graph took {took:?} to come back after the restart\n{}",
        cl.analyzer.log_text()
    );
    // No duplicates: every host once, every node with its own ID, as before.
    assert_eq!(count(&c, "G.V().Has('Type', 'host')"), 2);
    let status: Value = c.get("/api/status").unwrap();
    assert_eq!(status["Agents"].as_object().unwrap().len(), 2);
    drop(cl.dir);
}

#[test]
fn killed_agent_leaves_after_its_grace_period_and_keeps_its_ids_when_it_returns() {
    let mut cl = cluster(&["agent1", "agent2"]);
    let c = Client::new(&cl.addr, None);
    eventually(Duration::from_secs(10), "both agents' hosts", || {
        count(&c, "G.V().Has('Type', 'host')") == 2
    });
    let before = ids(&c, "G.V().Has('Name', 'agent1')");

    // Back before the grace period ends: same IDs, nothing duplicated.
    cl.agents[0].kill9();
    cl.agents[0].start();
    std::thread::sleep(Duration::from_millis(2500));
    eventually(Duration::from_secs(5), "agent1 reconnected", || {
        c.get::<Value>("/api/status")
            .map(|s| s["Agents"].get("agent1").is_some())
            .unwrap_or(false)
    });
    assert_eq!(ids(&c, "G.V().Has('Name', 'agent1')"), before);
    assert_eq!(count(&c, "G.V().Has('Type', 'host')"), 2);

    // Gone for good: its graph leaves after the grace period (2 s), not before.
    cl.agents[0].kill9();
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(
        count(&c, "G.V().Has('Name', 'agent1')"),
        1,
        "kept during the grace period"
    );
    eventually(Duration::from_secs(5), "agent1's graph is removed", || {
        count(&c, "G.V().Has('Name', 'agent1')") == 0
    });
    assert_eq!(
        count(&c, "G.V().Has('Name', 'agent2')"),
        1,
        "the other agent is untouched"
    );
}
