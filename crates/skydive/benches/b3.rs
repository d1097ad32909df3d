//! Benchmark B3 (sFlow): datagrams recorded from a real Open vSwitch's sFlow export, then
//! (1) decoded and aggregated into a flow table in one thread, and (2) replayed over loopback
//! UDP as fast as possible to our collector loop and to pmacct's `sfacctd`, in the same run,
//! each with a 16 MiB socket receive buffer (`sfacctd_pipe_size` for sfacctd).
//! Prints the table of `../shared/design/performance.md` and writes `target/bench/b3.json`.
//!
//! `cargo bench -p skydive --bench b3`, as root with Open vSwitch running (sizes:
//! `B3_DATAGRAMS` recorded, `B3_REPLAYS` times the recording is replayed).

use std::net::UdpSocket;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use skydive_capture::{Datagram, DatagramReader};
use skydive_flow::{FlowTable, TableConfig, sflow};
use skydive_testkit::{sh, sh_quiet as quiet};

struct Lab;

impl Drop for Lab {
    fn drop(&mut self) {
        quiet("ovs-vsctl --if-exists del-br b3br");
        quiet("ip netns del b3-a");
        quiet("ip netns del b3-b");
        quiet("ip link del b3va");
        quiet("ip link del b3vb");
    }
}

/// Records `n` sFlow datagrams from a bridge carrying ping floods between two namespaces.
fn record(n: usize) -> Vec<Vec<u8>> {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = sock.local_addr().unwrap().port();
    sh("ovs-vsctl --may-exist add-br b3br -- set bridge b3br datapath_type=netdev");
    for (ns, ip, end) in [("b3-a", "10.79.3.1", "b3va"), ("b3-b", "10.79.3.2", "b3vb")] {
        quiet(&format!("ip netns del {ns}"));
        sh(&format!("ip netns add {ns}"));
        sh(&format!(
            "ip link add {end} type veth peer name eth0 netns {ns}"
        ));
        sh(&format!("ip link set {end} up"));
        sh(&format!(
            "nsenter --net=/run/netns/{ns} sh -c 'ip addr add {ip}/24 dev eth0 && ip link set eth0 up'"
        ));
        sh(&format!("ovs-vsctl add-port b3br {end}"));
    }
    sh(&format!(
        "ovs-vsctl -- --id=@s create sflow agent=lo target='\"127.0.0.1:{port}\"' header=128 sampling=1 polling=1 -- set bridge b3br sflow=@s"
    ));
    let mut flood = Command::new("nsenter")
        .args([
            "--net=/run/netns/b3-a",
            "ping",
            "-f",
            "-s",
            "200",
            "10.79.3.2",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut out = Vec::with_capacity(n);
    let mut buf = vec![0u8; 65536];
    while out.len() < n {
        let len = sock.recv(&mut buf).expect("sFlow datagrams from OVS");
        out.push(buf[..len].to_vec());
    }
    let _ = flood.kill();
    let _ = flood.wait();
    out
}

fn samples(datagrams: &[Vec<u8>]) -> usize {
    datagrams
        .iter()
        .filter_map(|d| sflow::decode(d).ok())
        .map(|d| d.packets.len())
        .sum()
}

/// CPU seconds (user + system) of a `/proc/<…>/stat` file.
fn cpu_seconds(stat: &str) -> f64 {
    let text = std::fs::read_to_string(stat).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = text.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the ')'.
    (ticks(11) + ticks(12)) / 100.0
}

/// Our collector: receives for `window`, decoding and aggregating; returns the samples taken
/// and the CPU seconds it used.
fn our_collector(sock: UdpSocket, window: Duration) -> std::thread::JoinHandle<(usize, f64)> {
    std::thread::spawn(move || {
        let cpu0 = cpu_seconds("/proc/thread-self/stat");
        // As the agent's collectors do.
        skydive_capture::large_receive_buffer(&sock, 16 << 20);
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut table = FlowTable::new(TableConfig::default());
        // The agent's batch sizes (crates/agent/src/captures.rs).
        let mut reader = DatagramReader::new(32, 16 << 10).with_gather(Duration::from_millis(1));
        let mut taken = 0;
        let end = Instant::now() + window;
        while Instant::now() < end {
            let _ = reader.read(&sock, 8, &mut |d| {
                if let Datagram::Whole(b) = d
                    && let Ok(d) = sflow::decode(b)
                {
                    taken += sflow::feed(&mut table, &d, 1_000_000_000);
                }
            });
        }
        (taken, cpu_seconds("/proc/thread-self/stat") - cpu0)
    })
}

fn replay(datagrams: &[Vec<u8>], replays: usize, to: &str) -> Duration {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    let t = Instant::now();
    for _ in 0..replays {
        for d in datagrams {
            let _ = s.send_to(d, to);
        }
    }
    t.elapsed()
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let n: usize = std::env::var("B3_DATAGRAMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5000);
    let replays: usize = std::env::var("B3_REPLAYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40);
    if !std::path::Path::new("/var/run/openvswitch/db.sock").exists() {
        eprintln!("B3 needs root and a running Open vSwitch; skipped");
        return;
    }
    let _lab = Lab;
    let recorded = record(n);
    let per_pass = samples(&recorded);
    println!(
        "B3 sFlow: {n} datagrams recorded from Open vSwitch ({per_pass} flow samples), replayed {replays} times"
    );

    // (1) Decode and aggregate in one thread.
    let mut table = FlowTable::new(TableConfig::default());
    let t = Instant::now();
    let mut total = 0;
    for _ in 0..replays {
        for d in &recorded {
            if let Ok(d) = sflow::decode(d) {
                total += sflow::feed(&mut table, &d, 1_000_000_000);
            }
        }
    }
    let cpu = t.elapsed();
    let per_core = total as f64 / cpu.as_secs_f64();

    // (2) Over loopback UDP, ours then sfacctd, the same stream.
    let sent = per_pass * replays;
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let to = sock.local_addr().unwrap().to_string();
    let ours = our_collector(sock, Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(100));
    let ours_send = replay(&recorded, replays, &to);
    let (ours_taken, ours_cpu) = ours.join().unwrap();

    let dir = tempfile::tempdir().unwrap();
    let port = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = dir.path().join("sfacctd.out");
    let conf = dir.path().join("sfacctd.conf");
    std::fs::write(
        &conf,
        format!(
            "daemonize: false\nsfacctd_ip: 127.0.0.1\nsfacctd_port: {port}\nsfacctd_renormalize: false\nsfacctd_pipe_size: 16777216\nplugin_pipe_size: 16777216\nplugin_buffer_size: 65536\nplugins: print\naggregate: src_host, dst_host\nprint_output: csv\nprint_output_file: {}\nprint_refresh_time: 60\n",
            out.display()
        ),
    )
    .unwrap();
    let mut peer = Command::new("sfacctd")
        .args(["-f", conf.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(1));
    // Every process of sfacctd (core and plugin), before and after.
    let peer_cpu = |root: u32| -> f64 {
        let mut total = cpu_seconds(&format!("/proc/{root}/stat"));
        if let Ok(o) = Command::new("pgrep")
            .args(["-P", &root.to_string()])
            .output()
        {
            for pid in String::from_utf8_lossy(&o.stdout).split_whitespace() {
                total += cpu_seconds(&format!("/proc/{pid}/stat"));
            }
        }
        total
    };
    let peer_cpu0 = peer_cpu(peer.id());
    let peer_send = replay(&recorded, replays, &format!("127.0.0.1:{port}"));
    std::thread::sleep(Duration::from_secs(3));
    let peer_cpu_used = peer_cpu(peer.id()) - peer_cpu0;
    // SIGINT makes sfacctd write what it accounted.
    let _ = Command::new("kill")
        .args(["-INT", &peer.id().to_string()])
        .status();
    let _ = peer.wait();
    std::thread::sleep(Duration::from_millis(500));
    let csv = std::fs::read_to_string(&out).unwrap_or_default();
    let peer_taken: u64 = csv
        .lines()
        .skip(1)
        .filter_map(|l| l.split(',').nth(2)?.trim().parse::<u64>().ok())
        .sum();

    println!("{:<58} {:>14} {:>12}", "measure", "value", "target");
    println!(
        "{:<58} {:>10.0} /s {:>12}",
        "samples decoded and aggregated, one thread", per_core, ">= 1M/s"
    );
    println!(
        "{:<58} {:>14}",
        format!(
            "UDP replay: ours took (of {sent} sent in {:.2} s)",
            ours_send.as_secs_f64()
        ),
        ours_taken
    );
    println!(
        "{:<58} {:>14}",
        format!(
            "UDP replay: sfacctd accounted (of {sent} sent in {:.2} s)",
            peer_send.as_secs_f64()
        ),
        peer_taken
    );
    let ours_rate = ours_taken as f64 / ours_cpu.max(0.01);
    let peer_rate = peer_taken as f64 / peer_cpu_used.max(0.01);
    println!(
        "{:<58} {:>10.0} /s",
        format!("UDP replay: ours per CPU second ({ours_cpu:.2} s of CPU)"),
        ours_rate
    );
    println!(
        "{:<58} {:>10.0} /s {:>12}",
        format!("UDP replay: sfacctd per CPU second ({peer_cpu_used:.2} s of CPU)"),
        peer_rate,
        "ours >= 10x"
    );
    println!(
        "headline: {per_core:.0} samples/s per core decoded and aggregated; over loopback {:.1}x sfacctd's samples per CPU second",
        ours_rate / peer_rate.max(1.0)
    );
    let target = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/bench");
    std::fs::create_dir_all(&target).unwrap();
    std::fs::write(
        target.join("b3.json"),
        serde_json::to_vec_pretty(&serde_json::json!({
            "datagrams": n, "samples_per_pass": per_pass, "replays": replays,
            "decode_aggregate_per_s": per_core,
            "udp_sent": sent, "ours_taken": ours_taken, "sfacctd_accounted": peer_taken,
            "ours_send_s": ours_send.as_secs_f64(), "sfacctd_send_s": peer_send.as_secs_f64(),
            "ours_cpu_s": ours_cpu, "sfacctd_cpu_s": peer_cpu_used,
        }))
        .unwrap(),
    )
    .unwrap();
}
