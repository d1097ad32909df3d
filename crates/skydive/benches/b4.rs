//! Benchmark B4: topology convergence and event latency (needs root).
//!
//! 500 namespaces, each with a veth pair to one Linux bridge of the host (1,500+
//! interfaces). Measured: the time from the agent's start until the analyzer shows every
//! namespace and interface; then link down/up events, from the change to the WebSocket
//! subscriber; the agent's RSS. The floor: `ip -all netns exec ip -br link`, which only lists
//! the same interfaces.
//!
//! `cargo bench -p skydive --bench b4`; `B4_NAMESPACES` (500), `B4_EVENTS` (200). Writes
//! `target/bench/b4.json`. Removes everything it creates.

use std::collections::HashMap;
use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use skydive_api::client::Client;
use skydive_testkit::free_port;
use tokio_tungstenite::tungstenite::{self, Message, client::IntoClientRequest};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Runs `ip -batch` on the lines given; `force` goes on after errors (for cleaning up).
fn ip_batch(lines: &[String], force: bool) {
    let mut args = vec!["-batch", "-"];
    if force {
        args.insert(0, "-force");
    }
    let mut child = Command::new("ip")
        .args(&args)
        .stdin(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    {
        let stdin = child.stdin.as_mut().unwrap();
        for l in lines {
            writeln!(stdin, "{l}").unwrap();
        }
    }
    let st = child.wait().unwrap();
    assert!(force || st.success(), "ip -batch failed");
}

struct Lab {
    n: usize,
}

impl Lab {
    fn create(n: usize) -> Lab {
        let mut lines = vec![
            "link add b4br type bridge".to_string(),
            "link set b4br up".into(),
        ];
        for i in 0..n {
            lines.push(format!("netns add b4ns{i}"));
            lines.push(format!(
                "link add b4h{i} type veth peer name b4n{i} netns b4ns{i}"
            ));
            lines.push(format!("link set b4h{i} master b4br"));
            lines.push(format!("link set b4h{i} up"));
        }
        ip_batch(&lines, false);
        Lab { n }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let mut lines: Vec<String> = (0..self.n).map(|i| format!("netns del b4ns{i}")).collect();
        lines.push("link del b4br".into());
        ip_batch(&lines, true);
    }
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    let is_root = std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"));
    if !is_root {
        eprintln!("B4 needs root (network namespaces); skipped");
        return;
    }
    let n = env_or("B4_NAMESPACES", 500) as usize;
    let events = env_or("B4_EVENTS", 200) as usize;
    eprintln!("B4: {n} namespaces, each with a veth pair to one bridge; {events} link events");
    let t = Instant::now();
    let lab = Lab::create(n);
    eprintln!("  created in {:?}", t.elapsed());

    // The floor: listing the same interfaces with iproute2.
    let t = Instant::now();
    let o = Command::new("ip")
        .args(["-all", "netns", "exec", "ip", "-br", "link"])
        .output()
        .unwrap();
    let floor = t.elapsed();
    let listed = String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter(|l| l.starts_with("b4n"))
        .count();
    assert_eq!(listed, n, "ip lists every namespace's veth");

    let dir = tempfile::tempdir().unwrap();
    let (aport, gport) = (free_port(), free_port());
    let addr = format!("127.0.0.1:{aport}");
    let conf = dir.path().join("skydive.yml");
    std::fs::write(
        &conf,
        format!(
            "host_id: b4-host\nanalyzers: [{addr}]\nanalyzer:\n  listen: {addr}\nagent:\n  listen: 127.0.0.1:{gport}\nlogging:\n  level: WARNING\nstorage:\n  embedded:\n    path: {}\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let bin = env!("CARGO_BIN_EXE_skydive");
    let _analyzer = Killed(
        Command::new(bin)
            .args(["-c", conf.to_str().unwrap(), "analyzer"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let client = Client::new(&addr, None);
    let t = Instant::now();
    while client.send("GET", "/api", None, &[]).is_err() {
        assert!(t.elapsed() < Duration::from_secs(20));
        std::thread::sleep(Duration::from_millis(20));
    }
    let count = |q: &str| -> i64 {
        client
            .query(&format!("{q}.Count()"), "application/json")
            .ok()
            .and_then(|r| serde_json::from_slice::<Value>(&r.body).ok())
            .and_then(|v| v.as_i64())
            .unwrap_or(-1)
    };

    // Convergence: from the agent's start until every namespace and interface is there.
    let start = Instant::now();
    let agent = Killed(
        Command::new(bin)
            .args(["-c", conf.to_str().unwrap(), "agent"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let pid = agent.0.id();
    let want_ns = n as i64;
    let want_ifaces = 3 * n as i64; // b4h<i>, b4n<i> and the namespace's lo
    loop {
        let ns = count("G.V().Has('Type', 'netns', 'Name', Regex('b4ns[0-9]+'))");
        let ifaces = count("G.V().Has('Name', Regex('b4[hn][0-9]+'))")
            + count(
                "G.V().Has('Type', 'netns', 'Name', Regex('b4ns[0-9]+')).Out().Has('Name', 'lo')",
            );
        let edges = count("G.V().Has('Name', 'b4br').Out().Has('Type', 'veth')")
            + count("G.V().Has('Name', Regex('b4h[0-9]+')).Both().Has('Name', Regex('b4n[0-9]+'))");
        if ns == want_ns && ifaces == want_ifaces && edges == 2 * n as i64 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no convergence: {ns} namespaces, {ifaces} interfaces, {edges} edges"
        );
        std::thread::sleep(Duration::from_millis(25));
    }
    let converged = start.elapsed();
    std::thread::sleep(Duration::from_millis(500));
    let rss_converged = rss_mib(pid);
    eprintln!("  converged in {converged:?}");

    // Link events: down then up on host ends, each timed from just before the change to the
    // subscriber's message.
    let ids: HashMap<String, String> = client
        .query("G.V().Has('Name', Regex('b4h[0-9]+'))", "application/json")
        .ok()
        .and_then(|r| serde_json::from_slice::<Value>(&r.body).ok())
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
        .iter()
        .map(|n| {
            (
                n["ID"].as_str().unwrap().to_string(),
                n["Metadata"]["Name"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let mut req = format!("ws://{addr}/ws/subscriber")
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("X-Client-Type", "bench".parse().unwrap());
    req.headers_mut()
        .insert("X-Update-Policy", "partial".parse().unwrap());
    let (mut ws, _) = tungstenite::connect(req).unwrap();
    if let tungstenite::stream::MaybeTlsStream::Plain(s) = ws.get_ref() {
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    }
    let mut latencies = Vec::new();
    let mut missed = 0;
    for e in 0..events {
        let i = e % n;
        let name = format!("b4h{i}");
        let state = if e / n % 2 == 0 { "down" } else { "up" };
        let up = state == "up";
        let t = Instant::now();
        let ok = Command::new("ip")
            .args(["link", "set", &name, state])
            .status()
            .unwrap()
            .success();
        assert!(ok);
        let got = loop {
            if t.elapsed() > Duration::from_secs(2) {
                break None;
            }
            match ws.read() {
                Ok(Message::Text(txt)) => {
                    let m: Value = serde_json::from_str(txt.as_str()).unwrap_or(Value::Null);
                    let id = m["Obj"]["ID"].as_str().unwrap_or("");
                    if m["Type"] == "NodePartiallyUpdated"
                        && ids.get(id) == Some(&name)
                        && m["Obj"]["Ops"].as_array().is_some_and(|ops| {
                            ops.iter().any(|o| {
                                o["Key"] == "LinkFlags"
                                    && o["Value"]
                                        .as_array()
                                        .is_some_and(|f| f.contains(&json!("UP")) == up)
                            })
                        })
                    {
                        break Some(t.elapsed());
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    eprintln!("  subscriber: {e}");
                    break None;
                }
            }
        };
        match got {
            Some(d) => latencies.push(d.as_secs_f64() * 1000.0),
            None => missed += 1,
        }
    }
    latencies.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let (p50, p99, max) = (
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        percentile(&latencies, 1.0),
    );
    let rss = rss_mib(pid);
    drop(ws);
    drop(agent);

    println!();
    println!("| measure | value | target |");
    println!("|---|---|---|");
    println!(
        "| topology | {n} namespaces, {} interfaces (+ the host's), {} layer2 edges | |",
        want_ifaces + 1,
        2 * n
    );
    println!(
        "| floor: `ip -all netns exec ip -br link` | {:.2} s | |",
        floor.as_secs_f64()
    );
    println!(
        "| agent start → analyzer shows everything | {:.2} s | < 3 s |",
        converged.as_secs_f64()
    );
    println!(
        "| link down/up → subscriber, p50 / p99 / max ({} events, {missed} missed) | {p50:.1} / {p99:.1} / {max:.1} ms | p99 < 50 ms |",
        latencies.len()
    );
    println!(
        "| agent RSS after convergence / after the events | {rss_converged:.0} / {rss:.0} MiB | < 100 MB |"
    );
    println!();
    println!(
        "headline: converged in {:.2} s ({:.1}x the time ip takes only to list it), event p99 {p99:.1} ms, agent RSS {rss:.0} MiB",
        converged.as_secs_f64(),
        converged.as_secs_f64() / floor.as_secs_f64()
    );
    let out = json!({
        "namespaces": n, "events": events, "missed": missed,
        "floor_ip_list_s": floor.as_secs_f64(), "converged_s": converged.as_secs_f64(),
        "event_latency_ms": {"p50": p50, "p99": p99, "max": max},
        "agent_rss_mib": {"converged": rss_converged, "after_events": rss},
    });
    let target = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/bench");
    let _ = std::fs::create_dir_all(&target);
    let _ = std::fs::write(
        target.join("b4.json"),
        serde_json::to_string_pretty(&out).unwrap(),
    );
    drop(lab);
}
