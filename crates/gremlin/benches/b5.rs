//! Benchmark B5 (graph and Gremlin): prints the table of `../shared/design/performance.md`
//! and writes `target/bench/b5.json`.
//!
//! `cargo bench -p skydive-gremlin --bench b5`
//!
//! The peer is the machine itself: the JSON dump is compared with a plain memory copy of
//! the same number of bytes, measured in the same run.

mod synthetic;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use skydive_graph::{Graph, GraphJson, NoHistory};
use skydive_gremlin::{Env, query};

struct Counting;
static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator, only counting bytes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size(), Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new, Ordering::Relaxed);
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Median wall time of `runs` runs of `f`.
fn median<T>(runs: usize, mut f: impl FnMut() -> T) -> Duration {
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(f());
            t.elapsed()
        })
        .collect();
    times.sort();
    times[runs / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    let before = LIVE.load(Ordering::Relaxed);
    let t = Instant::now();
    let g = synthetic::build();
    let build = t.elapsed();
    let bytes = LIVE.load(Ordering::Relaxed) - before;
    let elements = g.node_count() + g.edge_count();
    let per_element = bytes as f64 / elements as f64;

    let env = Env {
        graph: &g,
        history: &NoHistory,
        flows: None,
        bpf: None,
        now: 0,
    };
    let count_q = "G.V().Has('Type','veth').Count()";
    assert_eq!(query(count_q, &env).unwrap().to_json(), b"98000");
    let count = median(51, || query(count_q, &env).unwrap());
    // The same question on a key without an index: every node is looked at.
    let scan_q = "G.V().Has('MTU', 1500).Count()";
    let scan_matches = query(scan_q, &env).unwrap().to_json();
    let scan = median(21, || query(scan_q, &env).unwrap());
    let hop_q = "G.V().Has('Type','netns').Out().Out().Out().Count()";
    let hops = query(hop_q, &env).unwrap().to_json();
    let three_hop = median(21, || query(hop_q, &env).unwrap());
    // The same nodes, kept (as a query returning them does before encoding them).
    let kept_q = "G.V().Has('Type','netns').Out().Out().Out()";
    let three_hop_kept = median(21, || query(kept_q, &env).unwrap());
    let light_q = "G.V().Has('Type','veth','IfIndex',2).Limit(1000).Out().Out().Out().Count()";
    let light_hops = query(light_q, &env).unwrap().to_json();
    let light = median(51, || query(light_q, &env).unwrap());
    let visits_q = "G.V().Has('Type','netns').Out().Out().Count()";
    let visits: usize = String::from_utf8_lossy(&query(visits_q, &env).unwrap().to_json())
        .parse::<usize>()
        .unwrap()
        * 2
        + 1000;
    let (from, to) = synthetic::far_pair();
    let sp_q = format!("G.V('{from}').ShortestPathTo(Metadata('@ID', '{to}'))");
    let path_len = match query(&sp_q, &env).unwrap() {
        skydive_gremlin::Output::Paths(p) => p.first().map(Vec::len).unwrap_or(0),
        _ => 0,
    };
    let shortest = median(11, || query(&sp_q, &env).unwrap());
    let mut json_len = 0;
    let dump = median(7, || {
        let mut out = Vec::with_capacity(64 << 20);
        GraphJson::from_view(&g).write_to(&mut out).unwrap();
        json_len = out.len();
    });
    let src = vec![7u8; json_len];
    let mut dst = vec![0u8; json_len];
    let copy = median(7, || dst.copy_from_slice(&src));
    let bandwidth = json_len as f64 / copy.as_secs_f64();

    // Queries while updates stream in: a writer changes node metadata and publishes a
    // snapshot after every change; readers clone the latest snapshot and query it.
    let shared = Arc::new(Mutex::new(g.clone()));
    let stop = Arc::new(AtomicBool::new(false));
    let updates = Arc::new(AtomicU64::new(0));
    let writer = {
        let (shared, stop, updates) = (shared.clone(), stop.clone(), updates.clone());
        let mut g: Graph = g.clone();
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let id = format!("h{:03}-ns{}-v{}", i % 100, (i / 100) % 10, (i / 1000) % 49);
                g.update_node_metadata(&id, i as i64, |m| {
                    m.insert("RxBytes", i as i64);
                })
                .unwrap();
                *shared.lock().unwrap() = g.clone();
                updates.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
        })
    };
    let t = Instant::now();
    let mut worst = Duration::ZERO;
    let mut lat = Vec::new();
    while t.elapsed() < Duration::from_secs(2) {
        let snap = shared.lock().unwrap().clone();
        let env = Env {
            graph: &snap,
            history: &NoHistory,
            flows: None,
            bpf: None,
            now: 0,
        };
        let q = Instant::now();
        let out = query(scan_q, &env).unwrap();
        assert_eq!(out.to_json(), scan_matches);
        let d = q.elapsed();
        worst = worst.max(d);
        lat.push(d);
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    let update_rate = updates.load(Ordering::Relaxed) as f64 / t.elapsed().as_secs_f64();
    lat.sort();
    let p99 = lat[lat.len() * 99 / 100];

    println!(
        "B5 graph and Gremlin: {} nodes, {} edges (built in {:.0} ms)",
        g.node_count(),
        g.edge_count(),
        ms(build)
    );
    println!("{:<52} {:>12} {:>12}", "measure", "value", "target");
    println!(
        "{:<52} {:>9.3} ms {:>12}",
        "G.V().Has('Type','veth').Count()",
        ms(count),
        "< 2 ms"
    );
    println!(
        "{:<52} {:>9.3} ms {:>12}",
        format!(
            "G.V().Has('MTU',1500).Count() (no index: {} of {})",
            String::from_utf8_lossy(&scan_matches),
            g.node_count()
        ),
        ms(scan),
        ""
    );
    println!(
        "{:<52} {:>9.2} ms {:>12}",
        format!(
            "3-hop Out from 1,000 veths ({} reached)",
            String::from_utf8_lossy(&light_hops)
        ),
        ms(light),
        "< 20 ms"
    );
    println!(
        "{:<52} {:>9.2} ms {:>12}",
        format!("3-hop Out from 1,000 netns (~{visits} visits)"),
        ms(three_hop),
        "< 20 ms"
    );
    println!(
        "{:<52} {:>9.2} ms {:>12}",
        "  the same, the nodes reached kept (no Count)",
        ms(three_hop_kept),
        ""
    );
    println!(
        "{:<52} {:>9.2} ms {:>12}",
        format!("ShortestPathTo across {} hops", path_len.saturating_sub(1)),
        ms(shortest),
        "< 50 ms"
    );
    println!(
        "{:<52} {:>9.1} ms {:>12}",
        format!("whole graph to JSON ({:.1} MB)", json_len as f64 / 1e6),
        ms(dump),
        "< 300 ms"
    );
    println!(
        "{:<52} {:>9.0} B  {:>12}",
        "memory per element", per_element, "< 1024 B"
    );
    println!(
        "{:<52} {:>9.3} ms {:>12}",
        format!(
            "scan Count p99 while {:.0} updates/s stream in",
            update_rate
        ),
        ms(p99),
        ""
    );
    println!(
        "{:<52} {:>9.1} GB/s",
        "memory copy bandwidth (peer)",
        bandwidth / 1e9
    );
    let ratio = (json_len as f64 / dump.as_secs_f64()) / bandwidth;
    println!(
        "headline: JSON dump runs at {:.1}% of memcpy bandwidth; Count is {:.0}x under target",
        ratio * 100.0,
        2.0 / ms(count)
    );

    let report = serde_json::json!({
        "nodes": g.node_count(), "edges": g.edge_count(),
        "count_veth_ms": ms(count), "count_scan_ms": ms(scan), "three_hop_ms": ms(three_hop), "three_hop_kept_ms": ms(three_hop_kept), "three_hop_visits": visits, "three_hop_light_ms": ms(light), "three_hop_result": String::from_utf8_lossy(&hops),
        "shortest_path_ms": ms(shortest), "shortest_path_hops": path_len.saturating_sub(1),
        "dump_ms": ms(dump), "dump_bytes": json_len, "bytes_per_element": per_element,
        "memcpy_bytes_per_s": bandwidth, "count_p99_under_updates_ms": ms(p99), "count_worst_under_updates_ms": ms(worst),
        "updates_per_s": update_rate,
    });
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/bench");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("b5.json"),
        serde_json::to_vec_pretty(&report).unwrap(),
    )
    .unwrap();
}
