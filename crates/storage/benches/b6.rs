//! Benchmark B6 (storage): prints the table of `../shared/design/performance.md` and writes
//! `target/bench/b6.json`.
//!
//! `cargo bench -p skydive-storage --bench b6` (sizes: `B6_FLOWS`, `B6_UPDATES`,
//! `B6_NODES`, `B6_REVISIONS`).
//!
//! 1. Flow updates: `B6_FLOWS` flows updated `B6_UPDATES` times each (the latest state of
//!    the flow and one metric row per update), written by the embedded store in batches of
//!    1,000 (one durable transaction each, as the analyzer's ingestion groups them), then
//!    in one transaction. The peer, in the same run: the `sqlite3` command-line tool
//!    executing the same statements with the same rows on the same schema, in one
//!    transaction.
//! 2. `G.At(t)`: a history of `B6_NODES` nodes (the metadata a netlink probe writes) and
//!    `B6_REVISIONS` revisions in all (counter updates spread over a day); the time to answer
//!    the graph at a quarter, half and the end of that day.

use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use skydive_flow::{Flow, FlowLayer, FlowMetric, FlowProtocol, TransportLayer};
use skydive_graph::{GraphEvent, GraphView, History, Node, Value, metadata};
use skydive_storage::embedded::MIGRATIONS;
use skydive_storage::flows::encode_state;
use skydive_storage::{Embedded, FlowStore, flow_key};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

const T0: i64 = 1_764_000_000_000;

fn flow(i: usize, update: usize) -> Flow {
    let t = T0 + (update as i64 + 1) * 1000;
    Flow {
        uuid: format!("{:016x}", 0x5eed_0000_0000u64 + i as u64).into(),
        layers_path: "Ethernet/IPv4/TCP".into(),
        application: "TCP".into(),
        link: Some(FlowLayer {
            protocol: FlowProtocol::Ethernet,
            a: "02:42:ac:11:00:02".into(),
            b: "02:42:ac:11:00:03".into(),
            id: 0,
        }),
        network: Some(FlowLayer {
            protocol: FlowProtocol::Ipv4,
            a: format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255).into(),
            b: "192.168.0.1".into(),
            id: 0,
        }),
        transport: Some(TransportLayer {
            protocol: FlowProtocol::Tcp,
            a: 1024 + (i % 60000) as i64,
            b: 443,
            id: 0,
        }),
        metric: Some(FlowMetric {
            ab_packets: 10 * (update as i64 + 1),
            ab_bytes: 6000 * (update as i64 + 1),
            ba_packets: 8 * (update as i64 + 1),
            ba_bytes: 90000 * (update as i64 + 1),
            start: T0,
            last: t,
            rtt: 120_000,
        }),
        last_update_metric: Some(FlowMetric {
            ab_packets: 10,
            ab_bytes: 6000,
            ba_packets: 8,
            ba_bytes: 90000,
            start: t - 1000,
            last: t,
            rtt: 120_000,
        }),
        start: T0,
        last: t,
        tracking_id: format!("{:016x}", 0x7ac0_0000_0000u64 + i as u64).into(),
        l3_tracking_id: format!("{:016x}", 0x13ac_0000_0000u64 + i as u64).into(),
        node_tid: format!("tid-{}", i % 50).into(),
        ..Default::default()
    }
}

/// The updates in arrival order: every flow once per update tick.
fn updates(flows: usize, per_flow: usize) -> impl Iterator<Item = Flow> {
    (0..per_flow).flat_map(move |u| (0..flows).map(move |i| flow(i, u)))
}

fn sql_text(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The same statements and rows as `Embedded::store_flows`, as SQL text for `sqlite3`.
fn write_sql(path: &std::path::Path, flows: usize, per_flow: usize) {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    writeln!(out, "PRAGMA journal_mode=WAL;\nPRAGMA synchronous=FULL;").unwrap();
    writeln!(out, "{}", MIGRATIONS[2]).unwrap();
    writeln!(out, "BEGIN;").unwrap();
    let mut line = String::new();
    let mut state = Vec::new();
    for (n_update, f) in updates(flows, per_flow).enumerate() {
        let key = flow_key(&f.uuid);
        encode_state(&f, &mut state).unwrap();
        let state: String = state.iter().map(|b| format!("{b:02x}")).collect();
        let m = f.last_update_metric.unwrap();
        line.clear();
        if n_update < flows {
            let doc = serde_json::to_string(&f).unwrap();
            let n = f.network.as_ref().unwrap();
            writeln!(
                line,
                "INSERT INTO flow_docs (key, uuid, node_tid, tracking_id, l3_tracking_id, application, network_a, network_b, doc) VALUES ({key}, {}, {}, {}, {}, {}, {}, {}, CAST({} AS BLOB));",
                sql_text(&f.uuid),
                sql_text(&f.node_tid),
                sql_text(&f.tracking_id),
                sql_text(&f.l3_tracking_id),
                sql_text(&f.application),
                sql_text(&n.a),
                sql_text(&n.b),
                sql_text(&doc),
            )
            .unwrap();
        }
        write!(
            line,
            "INSERT INTO flows (key, start, last, state) VALUES ({key}, {}, {}, X'{state}') ON CONFLICT (key) DO UPDATE SET last = excluded.last, state = excluded.state;\nINSERT INTO flow_metrics (flow, start, last, ab_packets, ab_bytes, ba_packets, ba_bytes, rtt) VALUES ({key}, {}, {}, {}, {}, {}, {}, {});",
            f.start,
            f.last,
            m.start,
            m.last,
            m.ab_packets,
            m.ab_bytes,
            m.ba_packets,
            m.ba_bytes,
            m.rtt
        )
        .unwrap();
        writeln!(out, "{line}").unwrap();
    }
    writeln!(out, "COMMIT;").unwrap();
}

fn store_all(store: &Embedded, flows: usize, per_flow: usize, batch: usize) -> Duration {
    let all: Vec<Flow> = updates(flows, per_flow).collect();
    let t = Instant::now();
    for chunk in all.chunks(batch) {
        store.store_flows(chunk).unwrap();
    }
    t.elapsed()
}

/// Builds the history: `nodes` nodes, then counter updates of random nodes over a day
/// until there are `revisions` revisions. Returns the time of the last revision.
fn build_history(store: &Embedded, nodes: usize, revisions: usize) -> i64 {
    let mut events = Vec::with_capacity(10_000);
    let mut current: Vec<Arc<Node>> = Vec::with_capacity(nodes);
    for i in 0..nodes {
        let m = metadata! {
            "Name" => format!("veth{i}"),
            "Type" => "veth",
            "TID" => format!("{:032x}", i * 7919),
            "MAC" => format!("02:00:{:02x}:{:02x}:{:02x}:01", i >> 16, (i >> 8) & 255, i & 255),
            "MTU" => 1500,
            "IfIndex" => (i % 5000) as i64 + 2,
            "State" => "UP",
            "Driver" => "veth",
            "EncapType" => "ether",
            "LinkFlags" => Value::Array(vec![Value::from("UP"), Value::from("BROADCAST"), Value::from("MULTICAST")]),
            "IPV4" => Value::Array(vec![Value::from(format!("10.{}.{}.1/24", i >> 8 & 255, i & 255))]),
            "Metric.RxPackets" => 0,
            "Metric.TxPackets" => 0,
        };
        let n = Arc::new(Node::new(
            format!("node-{i}").as_str(),
            m,
            "host1",
            "agent.host1",
            T0,
        ));
        events.push(GraphEvent::NodeAdded(n.clone()));
        current.push(n);
        if events.len() == 10_000 {
            store.record(&events).unwrap();
            events.clear();
        }
    }
    let updates = revisions.saturating_sub(nodes);
    let day = 86_400_000i64;
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut last = T0;
    for u in 0..updates {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let i = (seed % nodes as u64) as usize;
        last = T0 + 1 + (u as i64 * day) / updates as i64;
        let mut n = (*current[i]).clone();
        n.metadata
            .set_path("Metric.RxPackets", Value::Int(u as i64));
        n.metadata
            .set_path("Metric.TxPackets", Value::Int(2 * u as i64));
        n.revision += 1;
        n.updated_at = last;
        let n = Arc::new(n);
        current[i] = n.clone();
        events.push(GraphEvent::NodeUpdated {
            node: n,
            ops: Arc::new([]),
        });
        if events.len() == 10_000 {
            store.record(&events).unwrap();
            events.clear();
        }
    }
    store.record(&events).unwrap();
    last
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    // `B6_PART=flows` or `B6_PART=history` runs one half at full size, the other tiny.
    let part = std::env::var("B6_PART").unwrap_or_default();
    let (flows_scale, history_scale) = match part.as_str() {
        "flows" => (1, 1000),
        "history" => (100, 1),
        _ => (1, 1),
    };
    let n_flows = env("B6_FLOWS", 10_000) / flows_scale;
    let per_flow = env("B6_UPDATES", 30);
    let n_nodes = env("B6_NODES", 100_000) / history_scale;
    let n_revisions = env("B6_REVISIONS", 1_000_000) / history_scale;
    let total = n_flows * per_flow;
    let dir = tempfile::tempdir_in(std::env::temp_dir()).unwrap();
    println!(
        "B6 storage: {total} flow updates ({n_flows} flows x {per_flow}); history of {n_nodes} nodes, {n_revisions} revisions"
    );

    // 1. Flow updates.
    let ours_batched = {
        let d = dir.path().join("batched");
        let store = Embedded::open(&d).unwrap();
        store_all(&store, n_flows, per_flow, 1000)
    };
    let ours_10k = {
        let d = dir.path().join("batched10k");
        let store = Embedded::open(&d).unwrap();
        store_all(&store, n_flows, per_flow, 10_000)
    };
    let ours_one = {
        let d = dir.path().join("one");
        let store = Embedded::open(&d).unwrap();
        store_all(&store, n_flows, per_flow, usize::MAX)
    };
    let sql = dir.path().join("floor.sql");
    write_sql(&sql, n_flows, per_flow);
    let floor = {
        let db = dir.path().join("floor.db");
        let t = Instant::now();
        let status = std::process::Command::new("sqlite3")
            .arg(&db)
            .stdin(std::fs::File::open(&sql).unwrap())
            .stdout(std::process::Stdio::null())
            .status();
        match status {
            Ok(s) if s.success() => Some(t.elapsed()),
            Ok(s) => panic!("sqlite3 failed: {s}"),
            Err(e) => {
                println!("peer: sqlite3 not found ({e}); install Debian's sqlite3 to compare");
                None
            }
        }
    };
    let rate = |d: Duration| total as f64 / d.as_secs_f64();

    // 2. History.
    let hist_dir = dir.path().join("history");
    let store = Embedded::open(&hist_dir).unwrap();
    let t = Instant::now();
    let end = build_history(&store, n_nodes, n_revisions);
    let built = t.elapsed();
    assert_eq!(
        store.revision_count().unwrap() as usize,
        n_revisions.max(n_nodes)
    );
    let mut at_times = Vec::new();
    for (label, when) in [
        ("a quarter into the day", T0 + (end - T0) / 4),
        ("half-way", T0 + (end - T0) / 2),
        ("the end", end),
    ] {
        // The first query warms the page cache; the median of three is reported.
        let mut times = Vec::new();
        let mut nodes = 0;
        for _ in 0..4 {
            let t = Instant::now();
            let g = store.at(when).unwrap();
            times.push(t.elapsed());
            nodes = g.node_count();
        }
        times.remove(0);
        times.sort();
        assert_eq!(nodes, n_nodes, "every node is alive at {label}");
        at_times.push((label, times[1]));
    }
    let slice_t = Instant::now();
    let slice = store.slice(end - 60_000, end).unwrap();
    let slice_took = slice_t.elapsed();

    println!("{:<58} {:>14} {:>12}", "measure", "value", "target");
    println!(
        "{:<58} {:>10.0} /s {:>12}",
        "flow updates, embedded store, batches of 1,000",
        rate(ours_batched),
        ">= 300k/s"
    );
    println!(
        "{:<58} {:>10.0} /s",
        "flow updates, embedded store, batches of 10,000",
        rate(ours_10k)
    );
    println!(
        "{:<58} {:>10.0} /s",
        "flow updates, embedded store, one transaction",
        rate(ours_one)
    );
    if let Some(f) = floor {
        println!(
            "{:<58} {:>10.0} /s",
            "peer: sqlite3 CLI, same rows, one transaction",
            rate(f)
        );
    }
    println!(
        "{:<58} {:>11.1} s",
        format!("history built ({n_revisions} revisions)"),
        built.as_secs_f64()
    );
    for (label, d) in &at_times {
        println!(
            "{:<58} {:>11.1} ms {:>12}",
            format!("G.At(t), t {label} ({n_nodes} nodes)"),
            d.as_secs_f64() * 1e3,
            "< 500 ms"
        );
    }
    println!(
        "{:<58} {:>11.1} ms",
        format!("Context(end, 1m): {} revisions", slice.node_count()),
        slice_took.as_secs_f64() * 1e3
    );
    if let Some(f) = floor {
        println!(
            "headline: {:.0} flow updates/s, {:.2}x the sqlite3 CLI; G.At over {n_revisions} revisions in {:.0} ms",
            rate(ours_batched),
            rate(ours_batched) / rate(f),
            at_times
                .iter()
                .map(|(_, d)| d.as_secs_f64() * 1e3)
                .fold(0.0, f64::max)
        );
    }
    let out = serde_json::json!({
        "flow_updates": total,
        "ours_batched_per_s": rate(ours_batched),
        "ours_batches_10k_per_s": rate(ours_10k),
        "ours_one_transaction_per_s": rate(ours_one),
        "sqlite3_cli_per_s": floor.map(rate),
        "history_nodes": n_nodes,
        "history_revisions": n_revisions,
        "history_build_s": built.as_secs_f64(),
        "at_ms": at_times.iter().map(|(l, d)| (l.to_string(), d.as_secs_f64() * 1e3)).collect::<std::collections::BTreeMap<_, _>>(),
        "slice_1m_ms": slice_took.as_secs_f64() * 1e3,
    });
    let target = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/bench");
    std::fs::create_dir_all(&target).unwrap();
    std::fs::write(
        target.join("b6.json"),
        serde_json::to_vec_pretty(&out).unwrap(),
    )
    .unwrap();
}
