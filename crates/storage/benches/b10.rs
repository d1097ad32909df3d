//! Benchmark B10, topology part: the Elasticsearch backend against an OpenSearch-compatible
//! server (`B10_URL`, else `SKYDIVE_TEST_OPENSEARCH`, else `http://127.0.0.1:9201`).
//!
//! `B10_NODES` (100,000) interface-like nodes recorded through the backend, in batches of
//! `B10_BATCH` (1,000) events as the analyzer's recorder sends them (one refreshed `_bulk`
//! each), then every node updated once (its previous revision archived); against the floor,
//! the same live documents posted with `curl --data-binary` as one prepared `_bulk` body. Then
//! `G.At` before and after the updates (every node, read back by scrolling).
//!
//! `cargo bench -p skydive-storage --bench b10`. Writes `target/bench/b10.json`. The indices it
//! makes have a prefix of their own (`b10_<pid>_`) and are deleted at the end.

use std::io::Write;
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use serde_json::{Value, json};
use skydive_graph::{GraphEvent, GraphView, History, Node, PartialOp, metadata};
use skydive_storage::elasticsearch::{Elasticsearch, EsConfig};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn node(i: u64, t: i64, revision: i64, state: &str) -> Arc<Node> {
    let mut n = Node::new(
        format!("b10-node-{i:06}"),
        metadata! {
            "Name" => format!("veth{i}"),
            "Type" => "veth",
            "MTU" => 1500i64,
            "MAC" => format!("02:00:00:{:02x}:{:02x}:{:02x}", (i >> 16) & 0xff, (i >> 8) & 0xff, i & 0xff),
            "State" => state,
            "IfIndex" => (i % 60000) as i64 + 2,
            "TID" => format!("tid-{i}"),
        },
        "b10-host",
        "agent.b10-host",
        t,
    );
    n.revision = revision;
    n.updated_at = t;
    Arc::new(n)
}

fn curl(args: &[&str]) -> String {
    let o = Command::new("curl").args(args).output().expect("curl runs");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn main() {
    let url = std::env::var("B10_URL")
        .or_else(|_| std::env::var("SKYDIVE_TEST_OPENSEARCH"))
        .unwrap_or_else(|_| "http://127.0.0.1:9201".into());
    if curl(&["-sf", "-m", "2", &format!("{url}/")]).is_empty() {
        eprintln!("B10 needs an OpenSearch-compatible server at {url} (B10_URL); skipped");
        return;
    }
    let n = env_or("B10_NODES", 100_000);
    let batch = env_or("B10_BATCH", 1000) as usize;
    let prefix = format!("b10_{}_", std::process::id());
    eprintln!("B10 (topology): {n} nodes, batches of {batch}, against {url}");
    let cfg = EsConfig {
        hosts: vec![url.clone()],
        index_prefix: prefix.clone(),
        ..Default::default()
    };
    let store = Elasticsearch::open(&cfg).unwrap();
    let t0: i64 = 1_800_000_000_000;

    // Ours: the nodes added, batch by batch.
    let added: Vec<GraphEvent> = (0..n)
        .map(|i| GraphEvent::NodeAdded(node(i, t0 + i as i64, 1, "UP")))
        .collect();
    let start = Instant::now();
    for chunk in added.chunks(batch) {
        store.record(chunk).unwrap();
    }
    let ours_add = start.elapsed();

    // The floor: the same live documents as one prepared _bulk body, posted with curl.
    let dir = tempfile::tempdir().unwrap();
    let body = dir.path().join("bulk.ndjson");
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&body).unwrap());
        for ev in &added {
            let GraphEvent::NodeAdded(nd) = ev else {
                continue;
            };
            let mut doc = serde_json::to_value(&**nd).unwrap();
            doc["_Type"] = json!("node");
            if doc["DeletedAt"].is_null() {
                doc.as_object_mut().unwrap().remove("DeletedAt");
            }
            writeln!(
                f,
                "{}",
                json!({"index": {"_index": format!("{prefix}floor"), "_id": nd.id.as_str()}})
            )
            .unwrap();
            writeln!(f, "{doc}").unwrap();
        }
    }
    let start = Instant::now();
    let answer = curl(&[
        "-s",
        "-XPOST",
        &format!("{url}/_bulk?refresh=true"),
        "-H",
        "Content-Type: application/x-ndjson",
        "--data-binary",
        &format!("@{}", body.display()),
    ]);
    let floor = start.elapsed();
    let errors = serde_json::from_str::<Value>(&answer)
        .map(|v| v["errors"].as_bool())
        .unwrap_or(None);
    assert_eq!(errors, Some(false), "the floor's bulk: {answer:.300}");

    // G.At over every node.
    let start = Instant::now();
    let g = store.at(t0 + n as i64).unwrap();
    let at_all = start.elapsed();
    assert_eq!(g.all_nodes().count() as u64, n);

    // Every node updated once: the previous revision archived, the live one replaced.
    let t1 = t0 + 10 * n as i64;
    let updated: Vec<GraphEvent> = (0..n)
        .map(|i| GraphEvent::NodeUpdated {
            node: node(i, t1 + i as i64, 2, "DOWN"),
            ops: Arc::from(Vec::<PartialOp>::new()),
        })
        .collect();
    let start = Instant::now();
    for chunk in updated.chunks(batch) {
        store.record(chunk).unwrap();
    }
    let ours_update = start.elapsed();
    let start = Instant::now();
    let before = store.at(t1 - 1).unwrap();
    let at_past = start.elapsed();
    assert_eq!(before.all_nodes().count() as u64, n);
    assert!(
        before
            .all_nodes()
            .all(|nd| nd.str_at("State") == Some("UP"))
    );
    assert_eq!(store.revision_count().unwrap() as u64, 2 * n);

    let rate = |d: std::time::Duration| n as f64 / d.as_secs_f64();
    let out = json!({
        "nodes": n,
        "batch": batch,
        "ours_add_s": ours_add.as_secs_f64(),
        "ours_add_docs_per_s": rate(ours_add),
        "floor_curl_bulk_s": floor.as_secs_f64(),
        "floor_docs_per_s": rate(floor),
        "ours_vs_floor": rate(ours_add) / rate(floor),
        "ours_update_s": ours_update.as_secs_f64(),
        "ours_update_docs_per_s": 2.0 * rate(ours_update),
        "at_all_nodes_s": at_all.as_secs_f64(),
        "at_before_updates_s": at_past.as_secs_f64(),
    });
    println!("{}", serde_json::to_string_pretty(&out).unwrap());
    let target = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/bench");
    let _ = std::fs::create_dir_all(&target);
    let _ = std::fs::write(
        target.join("b10.json"),
        serde_json::to_string_pretty(&out).unwrap(),
    );
    curl(&["-s", "-XDELETE", &format!("{url}/{prefix}*")]);
    curl(&[
        "-s",
        "-XDELETE",
        &format!("{url}/_index_template/{prefix}topology"),
    ]);
}
