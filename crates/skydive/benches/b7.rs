//! Benchmark B7: the analyzer under load.
//!
//! A real `skydive analyzer` process; simulated agents on `/ws/agent/topology` (each a
//! `Sync` of its graph, then a steady stream of partial updates, batched every 100 ms as our
//! agent batches them); WebSocket subscribers on `/ws/subscriber` receiving every event.
//! Measured: events lost (every subscriber must receive every update), delivery latency
//! (from the agent's send to the subscriber's receive, one clock), the analyzer's CPU (from
//! /proc), and how long one subscriber's `SyncRequest` of the whole graph takes.
//!
//! `cargo bench -p skydive --bench b7`; sizes by environment: `B7_AGENTS` (200),
//! `B7_NODES` (1000 per agent), `B7_SUBSCRIBERS` (100), `B7_RATE` (updates per second in
//! all, 5000), `B7_SECONDS` (20). Writes `target/bench/b7.json`.
//!
//! With `B7_TLS=1` (benchmark B13, the cost of TLS), the analyzer serves HTTPS and WSS with a
//! certificate made here, and every agent and subscriber connects over `wss://`; writes
//! `target/bench/b7-tls.json`.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use skydive_testkit::free_port;
use tokio::sync::Mutex;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros() as u64
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let ticks = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .trim()
                .parse::<f64>()
                .ok()
        })
        .unwrap_or(100.0);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    let stime: f64 = f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    (utime + stime) / ticks
}

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The clients' TLS configuration, with `B7_TLS=1`.
static TLS: std::sync::OnceLock<Option<Arc<skydive_tls::ClientConfig>>> =
    std::sync::OnceLock::new();

/// A CA and a certificate for 127.0.0.1 it signed, in `dir`: the CA's, the certificate's and
/// the key's files.
fn make_certificates(dir: &std::path::Path) -> [std::path::PathBuf; 3] {
    use rcgen::{CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType};
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let mut srv = CertificateParams::new(Vec::<String>::new()).unwrap();
    srv.subject_alt_names = vec![SanType::IpAddress("127.0.0.1".parse().unwrap())];
    let key = KeyPair::generate().unwrap();
    let cert = srv.signed_by(&key, &issuer).unwrap();
    let files = [
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    ];
    std::fs::write(&files[0], ca_cert.pem()).unwrap();
    std::fs::write(&files[1], cert.pem()).unwrap();
    std::fs::write(&files[2], key.serialize_pem()).unwrap();
    files
}

async fn connect(addr: &str, endpoint: &str, headers: &[(&str, String)]) -> Ws {
    let tls = TLS.get().cloned().flatten();
    let scheme = if tls.is_some() { "wss" } else { "ws" };
    let mut req = format!("{scheme}://{addr}{endpoint}")
        .into_client_request()
        .unwrap();
    for (k, v) in headers {
        let name =
            tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(k.as_bytes()).unwrap();
        req.headers_mut()
            .insert(name, HeaderValue::from_str(v).unwrap());
    }
    let (ws, _) = tokio_tungstenite::connect_async_tls_with_config(
        req,
        None,
        false,
        tls.map(tokio_tungstenite::Connector::Rustls),
    )
    .await
    .unwrap();
    ws
}

fn node(agent: usize, i: usize) -> Value {
    let host = format!("bench-agent-{agent}");
    let (ty, name) = if i == 0 {
        ("host", host.clone())
    } else {
        ("veth", format!("veth{i}"))
    };
    json!({
        "ID": format!("{host}-n{i}"), "Host": host, "Origin": format!("agent.{host}"),
        "CreatedAt": 1, "UpdatedAt": 1, "Revision": 1,
        "Metadata": {
            "Name": name, "Type": ty, "TID": format!("tid-{agent}-{i}"),
            "MAC": format!("02:00:{:02x}:{:02x}:{:02x}:{:02x}", agent >> 8, agent & 255, i >> 8, i & 255),
            "MTU": 1500, "IfIndex": i, "State": "UP", "Driver": "veth", "EncapType": "ether",
            "LinkFlags": ["UP", "BROADCAST", "MULTICAST"],
            "IPV4": [format!("10.{}.{}.{}/16", agent % 256, i / 256, i % 256)],
            "Metric": {"RxBytes": 0, "TxBytes": 0, "RxPackets": 0, "TxPackets": 0},
        }
    })
}

fn edge(agent: usize, i: usize) -> Value {
    let host = format!("bench-agent-{agent}");
    json!({
        "ID": format!("{host}-e{i}"), "Host": host, "Origin": format!("agent.{host}"),
        "Parent": format!("{host}-n0"), "Child": format!("{host}-n{i}"),
        "CreatedAt": 1, "UpdatedAt": 1, "Revision": 1,
        "Metadata": {"RelationType": "ownership"}
    })
}

struct Shared {
    sent: AtomicU64,
    sending: AtomicBool,
}

async fn run_agent(
    addr: String,
    agent: usize,
    nodes: usize,
    per_tick: f64,
    shared: Arc<Shared>,
    ready: Arc<AtomicU64>,
) {
    let host = format!("bench-agent-{agent}");
    // The whole message first: the connection must not sit idle while it is built.
    let sync = json!({"Namespace": "Graph", "Type": "Sync", "UUID": "s", "Status": 200, "Obj": {
        "Nodes": (0..nodes).map(|i| node(agent, i)).collect::<Vec<_>>(),
        "Edges": (1..nodes).map(|i| edge(agent, i)).collect::<Vec<_>>(),
    }});
    let mut ws = connect(
        &addr,
        "/ws/agent/topology",
        &[
            ("X-Host-ID", host.clone()),
            ("X-Client-Type", "agent".into()),
            ("X-Persistence-Policy", "DeleteOnDisconnect".into()),
        ],
    )
    .await;
    ws.send(Message::text(sync.to_string())).await.unwrap();
    ready.fetch_add(1, Ordering::Relaxed);
    let mut revisions = vec![1i64; nodes];
    let mut next = 0usize;
    let mut credit = 0f64;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let (mut sink, mut stream) = ws.split();
    // Keep reading, so that pings are answered.
    tokio::spawn(async move {
        while let Some(m) = stream.next().await {
            if let Err(e) = m {
                eprintln!("  agent {agent}: {e}");
                return;
            }
        }
        eprintln!("  agent {agent}: the analyzer closed the connection");
    });
    loop {
        tick.tick().await;
        if !shared.sending.load(Ordering::Relaxed) {
            if shared.sent.load(Ordering::Relaxed) > 0 {
                // Stopped: keep the connection open until the process ends.
                continue;
            }
            continue;
        }
        credit += per_tick;
        let n = credit as usize;
        credit -= n as f64;
        if n == 0 {
            continue;
        }
        let sent_at = now_us();
        let mut msgs = Vec::with_capacity(n);
        for _ in 0..n {
            let i = next % nodes;
            next += 1;
            revisions[i] += 1;
            msgs.push(json!({"Namespace": "Graph", "Type": "NodePartiallyUpdated", "UUID": "u", "Status": 200, "Obj": {
                "ID": format!("{host}-n{i}"), "UpdatedAt": sent_at / 1000, "Revision": revisions[i],
                "Ops": [
                    {"Type": 1, "Key": "Metric.RxBytes", "Value": revisions[i] * 1500},
                    {"Type": 1, "Key": "Metric.RxPackets", "Value": revisions[i]},
                    {"Type": 1, "Key": "BenchSentAt", "Value": sent_at},
                ]
            }}));
        }
        if sink
            .send(Message::text(Value::Array(msgs).to_string()))
            .await
            .is_err()
        {
            return;
        }
        shared.sent.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// Extracts `"BenchSentAt":<n>` without parsing the whole message.
fn sent_at(text: &str) -> Option<u64> {
    let i = text.find("\"BenchSentAt\":")? + "\"BenchSentAt\":".len();
    let digits: String = text[i..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().ok()
}

async fn run_subscriber(
    addr: String,
    id: usize,
    received: Arc<AtomicU64>,
    latencies: Arc<Mutex<Vec<u32>>>,
) {
    let ws = connect(
        &addr,
        "/ws/subscriber",
        &[
            ("X-Host-ID", format!("bench-sub-{id}")),
            ("X-Client-Type", "bench".into()),
        ],
    )
    .await;
    let (_sink, mut stream) = ws.split();
    while let Some(m) = stream.next().await {
        match m {
            Ok(Message::Text(t)) => {
                if let Some(at) = sent_at(t.as_str()) {
                    let lat = now_us().saturating_sub(at).min(u32::MAX as u64) as u32;
                    latencies.lock().await.push(lat);
                    received.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok(_) => {}
            Err(e) => {
                eprintln!("  subscriber {id}: {e}");
                return;
            }
        }
    }
    eprintln!("  subscriber {id}: the analyzer closed the connection");
}

/// The analyzer process, killed when the benchmark ends (or panics).
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

fn main() {
    let agents = env_or("B7_AGENTS", 200) as usize;
    let nodes = env_or("B7_NODES", 1000) as usize;
    let subscribers = env_or("B7_SUBSCRIBERS", 100) as usize;
    let rate = env_or("B7_RATE", 5000) as f64;
    let seconds = env_or("B7_SECONDS", 20);
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let conf = dir.path().join("analyzer.yml");
    let tls = env_or("B7_TLS", 0) == 1;
    let (tls_section, client_tls) = if tls {
        let [ca, cert, key] = make_certificates(dir.path());
        let files = skydive_tls::TlsFiles {
            ca_cert: Some(ca.clone()),
            ..Default::default()
        };
        let config = skydive_tls::ClientTls::load(&files, &Default::default())
            .unwrap()
            .config;
        (
            format!(
                "tls:\n  server_cert: {}\n  server_key: {}\n",
                cert.display(),
                key.display()
            ),
            Some((config, ca)),
        )
    } else {
        (String::new(), None)
    };
    let _ = TLS.set(client_tls.as_ref().map(|(c, _)| c.clone()));
    std::fs::write(
        &conf,
        format!(
            "host_id: bench-analyzer\nanalyzer:\n  listen: {addr}\nlogging:\n  level: INFO\nstorage:\n  embedded:\n    path: {}\n{tls_section}",
            dir.path().display()
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.path().join("analyzer.log")).unwrap();
    let analyzer = Killed(
        Command::new(env!("CARGO_BIN_EXE_skydive"))
            .args(["-c", conf.to_str().unwrap(), "analyzer"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let pid = analyzer.0.id();
    let client = skydive_api::client::Client::new(&addr, None)
        .with_tls(&skydive_api::client::ClientTlsFiles {
            ca_cert: client_tls.map(|(_, ca)| ca),
            ..Default::default()
        })
        .unwrap();
    let t = Instant::now();
    while client.send("GET", "/api", None, &[]).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the analyzer does not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let count = |q: &str| -> i64 {
        client
            .query(&format!("{q}.Count()"), "application/json")
            .ok()
            .and_then(|r| serde_json::from_slice::<Value>(&r.body).ok())
            .and_then(|v| v.as_i64())
            .unwrap_or(-1)
    };

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let shared = Arc::new(Shared {
        sent: AtomicU64::new(0),
        sending: AtomicBool::new(false),
    });
    eprintln!(
        "B7: {agents} agents x {nodes} nodes, {subscribers} subscribers, {rate} updates/s for {seconds} s"
    );
    let ready = Arc::new(AtomicU64::new(0));
    let sync_cpu0 = cpu_seconds(pid);
    let sync_start = Instant::now();
    for a in 0..agents {
        rt.spawn(run_agent(
            addr.clone(),
            a,
            nodes,
            rate / agents as f64 / 10.0,
            shared.clone(),
            ready.clone(),
        ));
    }
    let want = (agents * nodes) as i64;
    loop {
        let n = count("G.V()");
        if n == want {
            break;
        }
        if sync_start.elapsed() > Duration::from_secs(300) {
            let _ = std::fs::copy(dir.path().join("analyzer.log"), "/tmp/b7-analyzer.log");
            let log = std::fs::read_to_string(dir.path().join("analyzer.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            panic!(
                "the agents' graphs never arrive: {n} of {want} nodes\n{}",
                tail.join("\n")
            );
        }
        if sync_start.elapsed().as_millis() % 5000 < 500 {
            eprintln!("  ... {n} of {want} nodes after {:?}", sync_start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let sync_in = sync_start.elapsed();
    let sync_cpu = cpu_seconds(pid) - sync_cpu0;
    let sync_rss = rss_mib(pid);
    let log = std::fs::read_to_string(dir.path().join("analyzer.log")).unwrap_or_default();
    for l in log
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("closing"))
        .take(10)
    {
        eprintln!("  analyzer: {l}");
    }
    eprintln!("  {want} nodes from {agents} agents in {sync_in:?}");

    // One subscriber's initial synchronisation of the whole graph.
    let sync_took = rt.block_on(async {
        let mut ws = connect(
            &addr,
            "/ws/subscriber",
            &[
                ("X-Host-ID", "bench-sync".into()),
                ("X-Client-Type", "bench".into()),
            ],
        )
        .await;
        let t = Instant::now();
        ws.send(Message::text(
            r#"{"Namespace":"Graph","Type":"SyncRequest","UUID":"s","Obj":{}}"#,
        ))
        .await
        .unwrap();
        let mut got = 0usize;
        while got < want as usize {
            match ws.next().await {
                Some(Ok(Message::Text(t))) => {
                    let v: Value = serde_json::from_str(t.as_str()).unwrap_or(Value::Null);
                    got += match v["Type"].as_str() {
                        Some("SyncReply") => {
                            v["Obj"]["Nodes"].as_array().map(|a| a.len()).unwrap_or(0)
                        }
                        Some("NodeAdded") => 1,
                        _ => 0,
                    };
                }
                Some(Ok(_)) => {}
                _ => break,
            }
        }
        let _ = ws.close(None).await;
        t.elapsed()
    });
    eprintln!("  a subscriber's SyncRequest of {want} nodes: {sync_took:?}");

    let received: Vec<Arc<AtomicU64>> = (0..subscribers)
        .map(|_| Arc::new(AtomicU64::new(0)))
        .collect();
    let latencies: Vec<Arc<Mutex<Vec<u32>>>> = (0..subscribers)
        .map(|_| Arc::new(Mutex::new(Vec::new())))
        .collect();
    for (i, r) in received.iter().enumerate() {
        rt.spawn(run_subscriber(
            addr.clone(),
            i,
            r.clone(),
            latencies[i].clone(),
        ));
    }
    std::thread::sleep(Duration::from_secs(1));
    let status: Value = client.get("/api/status").unwrap();
    assert_eq!(
        status["Subscribers"].as_object().map(|o| o.len()),
        Some(subscribers),
        "every subscriber connected"
    );

    let cpu0 = cpu_seconds(pid);
    let t0 = Instant::now();
    shared.sending.store(true, Ordering::Relaxed);
    std::thread::sleep(Duration::from_secs(seconds));
    shared.sending.store(false, Ordering::Relaxed);
    let wall = t0.elapsed().as_secs_f64();
    let cpu = (cpu_seconds(pid) - cpu0) / wall;
    let rss = rss_mib(pid);
    let sent = shared.sent.load(Ordering::Relaxed);
    // Let the last events drain.
    let drain = Instant::now();
    while drain.elapsed() < Duration::from_secs(10) {
        if received.iter().all(|r| r.load(Ordering::Relaxed) >= sent) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let got: Vec<u64> = received.iter().map(|r| r.load(Ordering::Relaxed)).collect();
    let lost: u64 = got.iter().map(|g| sent.saturating_sub(*g)).sum();
    let mut lat: Vec<u32> = rt.block_on(async {
        let mut all = Vec::new();
        for l in &latencies {
            all.extend(l.lock().await.iter().copied());
        }
        all
    });
    lat.sort_unstable();
    let (p50, p99, max) = (
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        percentile(&lat, 1.0),
    );
    let delivered: u64 = got.iter().sum();

    println!();
    println!("| measure | value | target |");
    println!("|---|---|---|");
    println!(
        "| graph | {want} nodes, {} edges, from {agents} agents | |",
        want - agents as i64
    );
    println!(
        "| agents' initial Syncs | {:.1} s, {sync_cpu:.1} s of analyzer CPU ({:.1} µs per element), RSS after: {sync_rss:.0} MiB | |",
        sync_in.as_secs_f64(),
        sync_cpu * 1e6 / (2 * want - agents as i64) as f64
    );
    println!(
        "| updates sent by the agents | {sent} ({:.0}/s) | |",
        sent as f64 / wall
    );
    println!(
        "| events delivered to {subscribers} subscribers | {delivered} ({:.0}/s) | |",
        delivered as f64 / wall
    );
    println!("| events lost | {lost} | 0 |");
    println!(
        "| delivery latency p50 / p99 / max | {p50:.1} / {p99:.1} / {max:.1} ms | p99 < 100 ms |"
    );
    println!("| analyzer CPU while loaded | {cpu:.2} cores | < 1 core |");
    println!("| analyzer RSS | {rss:.0} MiB | |");
    println!(
        "| one subscriber's SyncRequest of the whole graph | {:.2} s | |",
        sync_took.as_secs_f64()
    );
    println!();
    println!(
        "headline: {} events/s delivered with p99 {p99:.1} ms, {lost} lost, analyzer at {cpu:.2} cores",
        (delivered as f64 / wall) as u64
    );
    let out = json!({
        "tls": tls, "agents": agents, "nodes_per_agent": nodes, "subscribers": subscribers, "rate": rate, "seconds": wall,
        "sent": sent, "delivered": delivered, "lost": lost,
        "latency_ms": {"p50": p50, "p99": p99, "max": max},
        "analyzer_cpu_cores": cpu, "analyzer_rss_mib": rss,
        "initial_sync_s": sync_in.as_secs_f64(), "initial_sync_analyzer_cpu_s": sync_cpu, "rss_after_sync_mib": sync_rss, "subscriber_sync_s": sync_took.as_secs_f64(),
    });
    let target = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/bench");
    let _ = std::fs::create_dir_all(&target);
    let _ = std::fs::write(
        target.join(if tls { "b7-tls.json" } else { "b7.json" }),
        serde_json::to_string_pretty(&out).unwrap(),
    );
    drop(analyzer);
    rt.shutdown_timeout(Duration::from_secs(1));
}
