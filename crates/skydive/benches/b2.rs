//! Benchmark B2 (capture): kernel drops of the `afpacket` capture under a traffic generator's
//! load, against `tcpdump -i IF -w /dev/null` at the same rates, in the same run. Prints the
//! table of `../shared/design/performance.md` and writes `target/bench/b2.json`.
//!
//! `cargo bench -p skydive --bench b2`, as root (sizes: `B2_SECONDS`, `B2_RATES` as a
//! comma-separated list of packets per second, 0 meaning the generator's maximum).
//! `B2_PIN_CPU=N` runs the generator and the capture (ours: every thread of the allinone;
//! tcpdump) on CPU N only, so that they compete for one core: on a machine with few cores,
//! where one core cannot send faster than the other captures, this is what makes a capture's
//! cost per packet show as drops.
//!
//! Two namespaces joined by a veth pair; netsniff-ng's `trafgen` (or `iperf3` when trafgen is
//! not installed) sends 64-byte UDP frames from one to the other. Ours: a real `skydive allinone` (release build) with a capture on the sending
//! veth; its counters are read from the node's `Captures` metadata. The peer: `tcpdump` on
//! the same veth, writing to `/dev/null`, its drops read from its own report.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use skydive_api::client::Client;
use skydive_testkit::{free_port, sh};

const NS_A: &str = "b2-gen";
const NS_B: &str = "b2-sink";
const VETH: &str = "b2v";

/// `B2_PIN_CPU`: the CPU the generator and the capture share, if any.
fn pinned_cpu() -> Option<String> {
    std::env::var("B2_PIN_CPU").ok().filter(|c| !c.is_empty())
}

/// `cmd args…`, under `taskset -c CPU` when `B2_PIN_CPU` is set.
fn pinned(cmd: &str) -> Command {
    match pinned_cpu() {
        Some(cpu) => {
            let mut c = Command::new("taskset");
            c.args(["-c", &cpu, cmd]);
            c
        }
        None => Command::new(cmd),
    }
}

struct Lab;

impl Lab {
    fn create() -> Lab {
        Lab::remove();
        sh(&format!("ip netns add {NS_A} && ip netns add {NS_B}"));
        sh(&format!(
            "ip link add {VETH} netns {NS_A} type veth peer name {VETH}p netns {NS_B}"
        ));
        sh(&format!(
            "nsenter --net=/run/netns/{NS_A} sh -c 'ip addr add 10.79.0.1/24 dev {VETH} && ip link set {VETH} up && ip link set lo up'"
        ));
        sh(&format!(
            "nsenter --net=/run/netns/{NS_B} sh -c 'ip addr add 10.79.0.2/24 dev {VETH}p && ip link set {VETH}p up && ip link set lo up'"
        ));
        Lab
    }

    fn remove() {
        for ns in [NS_A, NS_B] {
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stderr(Stdio::null())
                .status();
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        Lab::remove();
    }
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs the generator for `seconds` at `pps` (0: as fast as it can, with two streams);
/// returns the datagrams it sent.
fn generate(pps: u64, seconds: u64) -> u64 {
    if which("trafgen") {
        return trafgen(pps, seconds);
    }
    let server = Killed(
        Command::new("nsenter")
            .args([&format!("--net=/run/netns/{NS_B}"), "iperf3", "-s", "-1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    std::thread::sleep(Duration::from_millis(300));
    let bitrate = if pps == 0 {
        "0".to_string()
    } else {
        format!("{}", pps * 64 * 8)
    };
    let streams = if pps == 0 { "2" } else { "1" }.to_string();
    let out = Command::new("nsenter")
        .args([
            &format!("--net=/run/netns/{NS_A}"),
            "iperf3",
            "-c",
            "10.79.0.2",
            "-u",
            "-l",
            "64",
            "-b",
            &bitrate,
            "-t",
            &seconds.to_string(),
            "-P",
            &streams,
            "-J",
        ])
        .output()
        .unwrap();
    drop(server);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    v["end"]["sum"]["packets"]
        .as_u64()
        .or_else(|| v["end"]["sum_sent"]["packets"].as_u64())
        .unwrap_or(0)
}

fn which(tool: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// netsniff-ng's trafgen (packet mmap TX ring, one CPU, through the qdisc): 64-byte UDP
/// frames to the sink at
/// `pps` (0: as fast as it can) for `seconds`; returns the frames sent.
fn trafgen(pps: u64, seconds: u64) -> u64 {
    let out = Command::new("nsenter")
        .args([
            &format!("--net=/run/netns/{NS_B}"),
            "ip",
            "-br",
            "link",
            "show",
            &format!("{VETH}p"),
        ])
        .output()
        .unwrap();
    let mac = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .nth(2)
        .unwrap_or("ff:ff:ff:ff:ff:ff")
        .to_string();
    let cfg = std::env::temp_dir().join("skydive-b2-trafgen.cfg");
    std::fs::write(
        &cfg,
        format!("{{ eth(da={mac}), ipv4(saddr=10.79.0.1, daddr=10.79.0.2), udp(sp=1000, dp=2000), fill(0x41, 18) }}\n"),
    )
    .unwrap();
    let mut args = vec![
        format!("--net=/run/netns/{NS_A}"),
        "trafgen".into(),
        "-o".into(),
        VETH.into(),
        "-i".into(),
        cfg.display().to_string(),
        "-P".into(),
        "1".into(),
        // Through the qdisc, as a socket's traffic goes, so that capture taps see it.
        "-q".into(),
    ];
    if pps > 0 {
        args.extend([
            "-n".into(),
            (pps * seconds).to_string(),
            "-b".into(),
            format!("{pps}pps"),
        ]);
    }
    let child = pinned("timeout")
        .arg("-s")
        .arg("INT")
        .arg(format!("{seconds}"))
        .arg("nsenter")
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.contains("packets outgoing"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// tcpdump's (captured, dropped by kernel) while the generator runs.
fn tcpdump(pps: u64, seconds: u64) -> (u64, u64, u64) {
    let dump = pinned("nsenter")
        .args([
            &format!("--net=/run/netns/{NS_A}"),
            "tcpdump",
            "-i",
            VETH,
            "-w",
            "/dev/null",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(800));
    let sent = generate(pps, seconds);
    std::thread::sleep(Duration::from_millis(300));
    let _ = Command::new("kill")
        .args(["-INT", &dump.id().to_string()])
        .status();
    let out = dump.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    let number = |what: &str| -> u64 {
        text.lines()
            .find(|l| l.contains(what))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    (
        sent,
        number("packets captured"),
        number("packets dropped by kernel"),
    )
}

fn capture_counters(c: &Client) -> (u64, u64) {
    let v: Value = c
        .query(
            &format!("G.V().Has('Name', '{VETH}').Values('Captures')"),
            "application/json",
        )
        .ok()
        .and_then(|r| serde_json::from_slice(&r.body).ok())
        .unwrap_or(Value::Null);
    let entry = &v[0][0];
    (
        entry["PacketsReceived"].as_u64().unwrap_or(0),
        entry["PacketsDropped"].as_u64().unwrap_or(0),
    )
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let is_root = std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"));
    if !is_root {
        eprintln!("B2 needs root (network namespaces); skipped");
        return;
    }
    let seconds: u64 = std::env::var("B2_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let rates: Vec<u64> = std::env::var("B2_RATES")
        .unwrap_or_else(|_| "100000,200000,0".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let _lab = Lab::create();

    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let conf = dir.path().join("skydive.yml");
    std::fs::write(
        &conf,
        format!(
            "host_id: b2-host\nanalyzer:\n  listen: {addr}\nagent:\n  listen: 127.0.0.1:{}\nlogging:\n  level: WARNING\nflow:\n  update: 5\nstorage:\n  embedded:\n    path: {}\n",
            free_port(),
            dir.path().display()
        ),
    )
    .unwrap();
    // Pinned from the start: the threads it makes later (the capture's) inherit it.
    let _skydive = Killed(
        pinned(env!("CARGO_BIN_EXE_skydive"))
            .args(["-c", conf.to_str().unwrap(), "allinone"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let c = Client::new(&addr, None);
    let t = Instant::now();
    while c.send("GET", "/api", None, &[]).is_err() {
        assert!(t.elapsed() < Duration::from_secs(20));
        std::thread::sleep(Duration::from_millis(20));
    }

    let mut rows = Vec::new();
    for &pps in &rates {
        // Ours: a fresh capture for each rate.
        let cap: Value = c
            .json(
                "POST",
                "/api/capture",
                &json!({"GremlinQuery": format!("G.V().Has('Name', '{VETH}')")}),
                &[],
            )
            .unwrap();
        let id = cap["UUID"].as_str().unwrap().to_string();
        let t = Instant::now();
        while capture_counters(&c) == (0, 0)
            && c.query(
                &format!("G.V().Has('Name', '{VETH}', 'Captures.ID', '{id}').Count()"),
                "application/json",
            )
            .map(|r| r.text().trim() != "1")
            .unwrap_or(true)
        {
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "the capture does not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let before = capture_counters(&c);
        let sent = generate(pps, seconds);
        std::thread::sleep(Duration::from_millis(2500));
        let after = capture_counters(&c);
        c.delete(&format!("/api/capture/{id}")).unwrap();
        std::thread::sleep(Duration::from_millis(500));
        let (ours_rx, ours_drop) = (after.0 - before.0, after.1 - before.1);

        let (peer_sent, peer_rx, peer_drop) = tcpdump(pps, seconds);
        let label = if pps == 0 {
            "generator's maximum".to_string()
        } else {
            format!("{pps} pps")
        };
        eprintln!(
            "{label}: ours {ours_rx} received, {ours_drop} dropped ({sent} sent); tcpdump {peer_rx} captured, {peer_drop} dropped ({peer_sent} sent)"
        );
        rows.push(json!({
            "rate": label, "seconds": seconds,
            "ours": {"sent": sent, "received": ours_rx, "dropped": ours_drop},
            "tcpdump": {"sent": peer_sent, "captured": peer_rx, "dropped": peer_drop},
        }));
    }

    if let Some(cpu) = pinned_cpu() {
        println!("generator and capture pinned to CPU {cpu}");
    }
    println!(
        "{:<22} {:>12} {:>14} {:>12} {:>12} {:>14} {:>12}",
        "rate", "sent", "ours recv", "ours drop", "sent", "tcpdump recv", "tcpdump drop"
    );
    let n = |v: &Value| v.as_u64().unwrap_or(0);
    for r in &rows {
        println!(
            "{:<22} {:>12} {:>14} {:>12} {:>12} {:>14} {:>12}",
            r["rate"].as_str().unwrap_or(""),
            n(&r["ours"]["sent"]),
            n(&r["ours"]["received"]),
            n(&r["ours"]["dropped"]),
            n(&r["tcpdump"]["sent"]),
            n(&r["tcpdump"]["captured"]),
            n(&r["tcpdump"]["dropped"])
        );
    }
    let ours_drops: u64 = rows
        .iter()
        .map(|r| r["ours"]["dropped"].as_u64().unwrap_or(0))
        .sum();
    let peer_drops: u64 = rows
        .iter()
        .map(|r| r["tcpdump"]["dropped"].as_u64().unwrap_or(0))
        .sum();
    println!(
        "headline: afpacket capture dropped {ours_drops} packets in all, tcpdump {peer_drops}"
    );
    let target = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/bench");
    std::fs::create_dir_all(&target).unwrap();
    std::fs::write(
        target.join("b2.json"),
        serde_json::to_vec_pretty(&json!({ "rows": rows })).unwrap(),
    )
    .unwrap();
}
