//! The topology history of a real `skydive analyzer` with its embedded store: `At` and
//! `Context` through the API, across a restart, and a `kill -9` during heavy ingestion that
//! loses nothing the history had acknowledged.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use skydive_api::client::Client;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn analyzer(dir: &std::path::Path) -> (Proc, String) {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let conf = write_config(
        dir,
        "analyzer.yml",
        &format!(
            "host_id: analyzer1\nanalyzer:\n  listen: {addr}\n  topology:\n    agent_grace_period: 1\nstorage:\n  embedded:\n    path: {}\n",
            dir.join("data").display()
        ),
    );
    let p = Proc::spawn(
        &["-c", conf.to_str().unwrap(), "analyzer"],
        &dir.join("analyzer.log"),
    );
    wait_api(&addr);
    (p, addr)
}

fn post_node(c: &Client, id: &str, mtu: i64) -> bool {
    let body = serde_json::to_vec(
        &json!({"ID": id, "Metadata": {"Name": id, "Type": "device", "MTU": mtu}}),
    )
    .unwrap();
    c.send("POST", "/api/node", Some(("application/json", body)), &[])
        .map(|r| r.status == 201)
        .unwrap_or(false)
}

fn values(c: &Client, q: &str) -> Vec<Value> {
    match c.query(q, "application/json") {
        Ok(r) => match serde_json::from_slice::<Value>(&r.body) {
            Ok(Value::Array(v)) => v,
            // An empty `Values` is `null`, as Skydive answers.
            Ok(Value::Null) => Vec::new(),
            _ => panic!("{q}: {}", r.text()),
        },
        Err(e) => panic!("{q}: {e}"),
    }
}

fn ids(c: &Client, q: &str) -> BTreeSet<String> {
    values(c, q)
        .iter()
        .filter_map(|n| n["ID"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn at_and_context_answer_from_the_embedded_history_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (mut p, addr) = analyzer(dir.path());
    let c = Client::new(&addr, None);

    let t0 = now_ms();
    std::thread::sleep(Duration::from_millis(20));
    assert!(post_node(&c, "eth-h", 1500));
    std::thread::sleep(Duration::from_millis(20));
    let t1 = now_ms();
    std::thread::sleep(Duration::from_millis(20));
    let patch =
        serde_json::to_vec(&json!([{"op": "replace", "path": "/Metadata/MTU", "value": 9000}]))
            .unwrap();
    let r = c
        .send(
            "PATCH",
            "/api/node/eth-h",
            Some(("application/json-patch+json", patch)),
            &[],
        )
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    std::thread::sleep(Duration::from_millis(20));
    let t2 = now_ms();
    std::thread::sleep(Duration::from_millis(20));
    c.delete("/api/node/eth-h").unwrap();
    std::thread::sleep(Duration::from_millis(20));
    let t3 = now_ms();

    let check = |c: &Client| {
        let mtu = |t: i64| {
            values(
                c,
                &format!("G.At({t}).V().Has('Name', 'eth-h').Values('MTU')"),
            )
        };
        assert_eq!(mtu(t0), Vec::<Value>::new(), "before it was created");
        assert_eq!(mtu(t1), vec![json!(1500)]);
        assert_eq!(mtu(t2), vec![json!(9000)]);
        assert_eq!(mtu(t3), Vec::<Value>::new(), "after it was deleted");
        // A slice holds every revision of the element, in order.
        let slice = values(
            c,
            &format!(
                "G.Context({t3}, {}).V().Has('Name', 'eth-h').Values('MTU')",
                (t3 - t0) / 1000 + 1
            ),
        );
        assert_eq!(slice, vec![json!(1500), json!(9000)]);
        // The live graph no longer has it.
        assert_eq!(count(c, "G.V().Has('Name', 'eth-h')"), 0);
    };
    eventually(
        Duration::from_secs(5),
        "the history has the deletion",
        || {
            values(&c, &format!("G.At({t3}).V().Has('Name', 'eth-h')")).is_empty()
                && !values(&c, &format!("G.At({t2}).V().Has('Name', 'eth-h')")).is_empty()
        },
    );
    check(&c);
    p.kill9();
    p.start();
    wait_api(&addr);
    check(&c);
    let status: Value = c.get("/api/status").unwrap();
    assert_eq!(status["Storage"]["State"], "ok", "{status}");
    assert!(
        status["Storage"]["Stores"]["embedded"]["UsedBytes"]
            .as_u64()
            .unwrap()
            > 0
    );
}

#[test]
fn kill_9_during_heavy_ingestion_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let (mut p, addr) = analyzer(dir.path());
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    // Four writers create nodes as fast as the API takes them and delete every third one.
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (stop, acked, addr) = (stop.clone(), acked.clone(), addr.clone());
            std::thread::spawn(move || {
                let c = Client::new(&addr, None);
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let id = format!("w{w}-{i}");
                    if post_node(&c, &id, i as i64) {
                        acked.fetch_add(1, Ordering::Relaxed);
                        if i % 3 == 2 {
                            let _ = c.delete(&format!("/api/node/w{w}-{}", i - 1));
                        }
                    }
                    i += 1;
                }
            })
        })
        .collect();
    let c = Client::new(&addr, None);
    std::thread::sleep(Duration::from_secs(2));

    // What the history acknowledges at t1: a query answers only from committed writes.
    let t1 = now_ms();
    std::thread::sleep(Duration::from_millis(500));
    let at_t1 = ids(&c, &format!("G.At({t1}).V().Has('Type', 'device')"));
    let revisions_t1 = count(
        &c,
        &format!("G.Context({t1}, FOREVER).V().Has('Type', 'device')"),
    );
    assert!(
        at_t1.len() > 20,
        "ingestion is running: {} nodes at t1",
        at_t1.len()
    );
    assert!(
        revisions_t1 > at_t1.len() as i64,
        "deleted nodes are in the slice too"
    );

    std::thread::sleep(Duration::from_millis(700));
    p.kill9();
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().unwrap();
    }
    let before_kill = acked.load(Ordering::Relaxed);

    p.start();
    wait_api(&addr);
    assert_eq!(
        ids(&c, &format!("G.At({t1}).V().Has('Type', 'device')")),
        at_t1,
        "the graph at t1 is the same after the crash"
    );
    assert_eq!(
        count(
            &c,
            &format!("G.Context({t1}, FOREVER).V().Has('Type', 'device')")
        ),
        revisions_t1
    );
    // History continues: once the API's nodes are back in the live graph, the history's
    // present is the live graph.
    eventually(Duration::from_secs(10), "history now = live graph", || {
        let live = ids(&c, "G.V().Has('Type', 'device')");
        !live.is_empty()
            && ids(&c, &format!("G.At({}).V().Has('Type', 'device')", now_ms())) == live
    });
    // Ingestion resumes.
    assert!(post_node(&c, "after-restart", 1));
    let t2 = now_ms();
    eventually(
        Duration::from_secs(5),
        "the new node in the history",
        || !ids(&c, &format!("G.At({t2}).V().Has('Name', 'after-restart')")).is_empty(),
    );
    p.kill9();
    let db = rusqlite::Connection::open(dir.path().join("data/skydive.db")).unwrap();
    let check: String = db
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    eprintln!(
        "{before_kill} nodes acknowledged before the kill; {} at t1",
        at_t1.len()
    );
}
