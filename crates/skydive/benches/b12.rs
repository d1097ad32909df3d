//! Benchmark B12: the API under a password-guessing flood.
//!
//! A real `skydive analyzer` process (release build) with a basic backend: an htpasswd file of
//! `B12_USERS` users (200) whose entries are bcrypt hashes of cost `B12_COST` (10). `B12_INFLIGHT`
//! clients (200) send wrong passwords without pause, each request on a connection of its own,
//! while a legitimate client, logged in through `POST /login`, runs `G.V().Count()` every 50 ms
//! and measures how long each takes. Two floods, `B12_SECONDS` (10) each:
//!
//! * `naive`: every guess from 127.0.0.1, for one user (a new connection each: the listen
//!   queue overflows, which the legitimate client, already connected, does not see);
//! * `spread`: guesses from 200 addresses (127.0.1.x) for 200 users, so that the per-address and
//!   per-user slowing lets many of them be hashed: the worst case for the CPU.
//!
//! Guesses are answered 401 (checked), 429 (slowed: not checked) or 503 (too many checks
//! waiting: not checked). Before the floods the same queries run on the idle analyzer. Target: the legitimate query
//! answers within 100 ms under either flood.
//!
//! `cargo bench -p skydive --bench b12`; writes `target/bench/b12.json`. `B12_BIN` runs another
//! `skydive` binary (an earlier build, for a comparison).

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use skydive_testkit::free_port;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The analyzer process, killed when the benchmark ends (or panics).
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One blocking HTTP/1.1 request on a connection of its own: status and body.
fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

fn b64(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// One guesser: wrong passwords, one connection per request, from `source`.
async fn guess(
    addr: SocketAddr,
    source: IpAddr,
    user: String,
    stop: Arc<AtomicBool>,
    counts: Arc<[AtomicU64; 4]>,
) {
    let auth = format!("Authorization: Basic {}\r\n", b64(&format!("{user}:wrong")));
    let req =
        format!("GET /api/status HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n");
    while !stop.load(Ordering::Relaxed) {
        let Ok(sock) = tokio::net::TcpSocket::new_v4() else {
            continue;
        };
        if sock.bind(SocketAddr::new(source, 0)).is_err() {
            continue;
        }
        let Ok(mut s) = sock.connect(addr).await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        if s.write_all(req.as_bytes()).await.is_err() {
            continue;
        }
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out).await;
        let i = match out.get(9..12) {
            Some(b"401") => 0,
            Some(b"429") => 1,
            Some(b"503") => 2,
            _ => 3,
        };
        counts[i].fetch_add(1, Ordering::Relaxed);
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Runs `G.V().Count()` every 50 ms for `seconds` on one kept-alive connection, as a client
/// that is already connected does; the latencies in ms, sorted.
fn probe(addr: &str, token: &str, seconds: u64) -> Vec<f64> {
    let body = json!({"GremlinQuery": "G.V().Count()"}).to_string();
    let req = format!(
        "POST /api/topology HTTP/1.1\r\nHost: {addr}\r\nX-Auth-Token: {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut lat = Vec::new();
    let end = Instant::now() + Duration::from_secs(seconds);
    while Instant::now() < end {
        let t = Instant::now();
        conn.write_all(req.as_bytes()).unwrap();
        let (status, text) = read_response(&mut conn);
        lat.push(t.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(status, 200, "the legitimate query: {text}");
        std::thread::sleep(Duration::from_millis(50));
    }
    lat.sort_by(f64::total_cmp);
    lat
}

/// Reads one HTTP/1.1 response with a `Content-Length`.
fn read_response(conn: &mut std::net::TcpStream) -> (u16, String) {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        assert_eq!(conn.read(&mut byte).unwrap(), 1, "the connection closed");
        buf.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    conn.read_exact(&mut body).unwrap();
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn summary(lat: &[f64]) -> Value {
    json!({
        "queries": lat.len(),
        "p50_ms": percentile(lat, 0.5),
        "p99_ms": percentile(lat, 0.99),
        "max_ms": lat.last().copied().unwrap_or(f64::NAN),
    })
}

fn main() {
    let users = env_or("B12_USERS", 200) as usize;
    let cost = env_or("B12_COST", 10) as u32;
    let inflight = env_or("B12_INFLIGHT", 200) as usize;
    let seconds = env_or("B12_SECONDS", 10);
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    // One hash for every user (the same password): hashing 200 at cost 10 would take a while.
    let hash = bcrypt::hash("right-password", cost).unwrap();
    let htpasswd = dir.path().join("htpasswd");
    let lines: String = (0..users).map(|i| format!("user{i}:{hash}\n")).collect();
    std::fs::write(&htpasswd, lines).unwrap();
    let conf = dir.path().join("analyzer.yml");
    std::fs::write(
        &conf,
        format!(
            "host_id: bench-analyzer\nanalyzer:\n  listen: {addr}\n  auth:\n    api:\n      backend: basic\nauth:\n  basic:\n    type: basic\n    file: {}\nlogging:\n  level: WARNING\nstorage:\n  embedded:\n    path: {}\n",
            htpasswd.display(),
            dir.path().display()
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.path().join("analyzer.log")).unwrap();
    let _analyzer = Killed(
        Command::new(
            std::env::var("B12_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_skydive").into()),
        )
        .args(["-c", conf.to_str().unwrap(), "analyzer"])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap(),
    );
    let t = Instant::now();
    while std::net::TcpStream::connect(&addr).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the analyzer does not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (status, body) = http(
        &addr,
        "POST",
        "/login",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        "username=user0&password=right-password",
    );
    assert_eq!(status, 200, "login: {body}");
    let token = serde_json::from_str::<Value>(&body).unwrap()["Token"]
        .as_str()
        .unwrap()
        .to_string();
    eprintln!(
        "B12: bcrypt cost {cost}, {inflight} wrong-password requests in flight, {seconds} s per flood"
    );
    let idle = probe(&addr, &token, 3);
    let mut report =
        json!({"cost": cost, "inflight": inflight, "seconds": seconds, "idle": summary(&idle)});
    eprintln!("idle: {}", report["idle"]);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let target: SocketAddr = addr.parse().unwrap();
    for flood in ["naive", "spread"] {
        let stop = Arc::new(AtomicBool::new(false));
        let counts: Arc<[AtomicU64; 4]> = Arc::new(Default::default());
        for i in 0..inflight {
            let (source, user) = match flood {
                "naive" => (IpAddr::from([127, 0, 0, 1]), "user1".to_string()),
                // Neither user0 (the legitimate one) nor user1 (slowed by the naive flood).
                _ => (
                    IpAddr::from([127, 0, 1, (i % 250) as u8 + 1]),
                    format!("user{}", 2 + i % (users - 2).max(1)),
                ),
            };
            rt.spawn(guess(target, source, user, stop.clone(), counts.clone()));
        }
        std::thread::sleep(Duration::from_millis(500));
        let lat = probe(&addr, &token, seconds);
        stop.store(true, Ordering::Relaxed);
        let [refused, slowed, busy, other] = &*counts;
        let mut s = summary(&lat);
        s["guesses_checked_401"] = refused.load(Ordering::Relaxed).into();
        s["guesses_slowed_429"] = slowed.load(Ordering::Relaxed).into();
        s["guesses_busy_503"] = busy.load(Ordering::Relaxed).into();
        s["other_answers"] = other.load(Ordering::Relaxed).into();
        eprintln!("{flood}: {s}");
        report[flood] = s;
        // Let the guesses in flight finish before the next flood.
        std::thread::sleep(Duration::from_secs(2));
    }
    rt.shutdown_timeout(Duration::from_secs(5));
    println!("| flood | queries | p50 | p99 | max | guesses answered 401 / 429 / 503 |");
    println!("|---|---|---|---|---|---|");
    for k in ["idle", "naive", "spread"] {
        let r = &report[k];
        println!(
            "| {k} | {} | {:.1} ms | {:.1} ms | {:.1} ms | {} / {} / {} |",
            r["queries"],
            r["p50_ms"].as_f64().unwrap_or(f64::NAN),
            r["p99_ms"].as_f64().unwrap_or(f64::NAN),
            r["max_ms"].as_f64().unwrap_or(f64::NAN),
            r.get("guesses_checked_401").unwrap_or(&json!("-")),
            r.get("guesses_slowed_429").unwrap_or(&json!("-")),
            r.get("guesses_busy_503").unwrap_or(&json!("-")),
        );
    }
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/bench");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(
        out.join("b12.json"),
        serde_json::to_vec_pretty(&report).unwrap(),
    )
    .unwrap();
}
