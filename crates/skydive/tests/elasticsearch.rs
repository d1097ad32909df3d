//! `skydive allinone` with its topology backend in an OpenSearch-compatible server (the one
//! the test script starts, at `SKYDIVE_TEST_OPENSEARCH`): resources and history written in
//! Skydive's index layout, answered from the cluster, kept across a restart. Without the
//! server the test says so and passes, except under `CI=true` where it fails.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use skydive_api::client::Client;

fn server(test: &str) -> Option<String> {
    let url = std::env::var("SKYDIVE_TEST_OPENSEARCH").ok();
    require(
        test,
        url.is_some(),
        "an OpenSearch-compatible server at SKYDIVE_TEST_OPENSEARCH (the test script starts one)",
    )
    .then(|| url.unwrap())
}

/// A document count of `index` on the server.
fn docs(url: &str, index: &str) -> i64 {
    let c = Client::new(url, None);
    c.get::<Value>(&format!("/{index}/_count"))
        .ok()
        .and_then(|v| v["count"].as_i64())
        .unwrap_or(-1)
}

#[test]
fn an_analyzer_on_elasticsearch_keeps_its_resources_and_history_in_the_cluster() {
    let test = "an_analyzer_on_elasticsearch_keeps_its_resources_and_history_in_the_cluster";
    let Some(url) = server(test) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let prefix = format!("e2e{}_", std::process::id());
    let addr = format!("127.0.0.1:{}", free_port());
    let conf = write_config(
        dir.path(),
        "allinone.yml",
        &format!(
            "host_id: es-host\nanalyzer:\n  listen: {addr}\n  topology:\n    backend: elasticsearch\nagent:\n  listen: 127.0.0.1:{}\n  topology:\n    probes: []\nstorage:\n  elasticsearch:\n    driver: elasticsearch\n    hosts: [\"{url}\"]\n    index_prefix: {prefix}\n",
            free_port()
        ),
    );
    let start = || {
        let p = Proc::spawn(
            &["-c", conf.to_str().unwrap(), "allinone"],
            &dir.path().join("allinone.log"),
        );
        wait_api(&addr);
        p
    };
    let mut p = start();
    let c = Client::new(&addr, None);
    let status: Value = c.get("/api/status").unwrap();
    let store = &status["Storage"]["Stores"]["elasticsearch"];
    assert_eq!(store["Driver"], "elasticsearch", "{status}");
    assert_eq!(
        store["Indices"]["Live"],
        json!(format!("{prefix}topology_live"))
    );
    // A resource, and a node it makes.
    let rule: Value = c
        .json(
            "POST",
            "/api/noderule",
            &json!({"Action": "create", "Metadata": {"Name": "tor1", "Type": "fabric"}}),
            &[],
        )
        .unwrap();
    let rule_id = rule["UUID"].as_str().unwrap().to_string();
    eventually(Duration::from_secs(10), "tor1 in the graph", || {
        count(&c, "G.V().Has('Name', 'tor1')") == 1
    });
    // The host's loopback reaches the live index, the rule the resources index.
    eventually(Duration::from_secs(10), "the live index written", || {
        docs(&url, &format!("{prefix}topology_live")) > 2
    });
    assert_eq!(docs(&url, &format!("{prefix}resources_v13")), 1);
    let before_restart = skydive_graph::now_ms();
    // History answered from the cluster.
    assert_eq!(
        count(
            &c,
            &format!("G.At({before_restart}).V().Has('Name', 'tor1')")
        ),
        1
    );
    let lo_id = query(&c, "G.V().Has('Type', 'host').Out().Has('Name', 'lo')").unwrap()[0]["ID"]
        .as_str()
        .unwrap()
        .to_string();
    // The node rule deleted: tor1 goes, and is still there in the past.
    c.delete(&format!("/api/noderule/{rule_id}")).unwrap();
    eventually(Duration::from_secs(10), "tor1 gone", || {
        count(&c, "G.V().Has('Name', 'tor1')") == 0
    });
    let after_delete = skydive_graph::now_ms() + 1;
    assert_eq!(
        count(
            &c,
            &format!("G.At({before_restart}).V().Has('Name', 'tor1')")
        ),
        1
    );
    assert_eq!(
        count(&c, &format!("G.At({after_delete}).V().Has('Name', 'tor1')")),
        0
    );
    assert!(docs(&url, &format!("{prefix}topology_archive_v13*")) >= 1);
    // A second resource, then a restart: resources and history are still there.
    let rule2: Value = c
        .json(
            "POST",
            "/api/noderule",
            &json!({"Action": "create", "Metadata": {"Name": "tor2", "Type": "fabric"}}),
            &[],
        )
        .unwrap();
    let rule2_id = rule2["UUID"].as_str().unwrap().to_string();
    p.stop();
    let _p = start();
    let rules: Value = c.get("/api/noderule").unwrap();
    assert_eq!(
        rules.as_object().unwrap().keys().collect::<Vec<_>>(),
        vec![&rule2_id],
        "{rules}"
    );
    eventually(Duration::from_secs(10), "tor2 made again", || {
        count(&c, "G.V().Has('Name', 'tor2')") == 1
    });
    assert_eq!(
        count(
            &c,
            &format!("G.At({before_restart}).V().Has('Name', 'tor1')")
        ),
        1,
        "the history from before the restart"
    );
    eventually(Duration::from_secs(10), "lo back with the same ID", || {
        count(&c, &format!("G.V('{lo_id}')")) == 1
    });
}
