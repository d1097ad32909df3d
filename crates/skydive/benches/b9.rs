//! Benchmark B9: a burst of containers (needs root, dockerd, runc and busybox).
//!
//! A real `dockerd` (started in a folder of its own, no bridge, no iptables) and an agent with
//! the `docker` probe reporting to an analyzer; then `B9_CONTAINERS` (200) busybox `sleep`
//! containers started in a burst, `B9_PARALLEL` (8) `docker run` at a time, each with a
//! namespace of its own. Measured from the moment the last `docker run` returns: the floor,
//! `docker ps` listing all of them; and the time until the analyzer shows every container
//! node in its namespace named after it. Also the agent's CPU time and peak RSS while the
//! burst lands.
//!
//! `cargo bench -p skydive --bench b9`. Writes `target/bench/b9.json`. Removes everything it
//! creates (the containers, the daemon, its folder).

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use skydive_api::client::Client;
use skydive_testkit::docker::{self, Dockerd, IMAGE};
use skydive_testkit::free_port;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `VmRSS` and `VmHWM` of a process, in MiB.
fn memory_mib(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// User + system CPU time of a process, in seconds.
fn cpu_s(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let Some(end) = stat.rfind(')') else {
        return 0.0;
    };
    let f: Vec<&str> = stat[end + 1..].split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>().unwrap_or(0.0) + f[12].parse::<f64>().unwrap_or(0.0);
    ticks / 100.0
}

fn main() {
    let is_root = std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"));
    if !is_root || !docker::available() {
        eprintln!(
            "B9 needs root, dockerd, runc and busybox (docker.io, runc, busybox-static); skipped"
        );
        return;
    }
    let n = env_or("B9_CONTAINERS", 200) as usize;
    let parallel = env_or("B9_PARALLEL", 8) as usize;
    eprintln!("B9: {n} containers started in a burst, {parallel} docker run at a time");
    let dir = tempfile::tempdir().unwrap();
    let d = Dockerd::start(dir.path());

    let (aport, gport) = (free_port(), free_port());
    let addr = format!("127.0.0.1:{aport}");
    let conf = dir.path().join("skydive.yml");
    std::fs::write(
        &conf,
        format!(
            "host_id: b9-host\nanalyzers: [{addr}]\nanalyzer:\n  listen: {addr}\nagent:\n  listen: 127.0.0.1:{gport}\n  topology:\n    probes: [docker]\n    docker:\n      url: {}\n      netns:\n        run_path: {}\nlogging:\n  level: WARNING\nstorage:\n  embedded:\n    path: {}\n",
            d.url,
            d.netns_run_path().display(),
            dir.path().join("store").display()
        ),
    )
    .unwrap();
    let bin = env!("CARGO_BIN_EXE_skydive");
    let spawn = |role: &str| {
        Killed(
            Command::new(bin)
                .args(["-c", conf.to_str().unwrap(), role])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        )
    };
    let _analyzer = spawn("analyzer");
    let client = Client::new(&addr, None);
    let count = |q: &str| -> i64 {
        client
            .query(&format!("{q}.Count()"), "application/json")
            .ok()
            .and_then(|r| serde_json::from_slice::<Value>(&r.body).ok())
            .and_then(|v| v.as_i64())
            .unwrap_or(-1)
    };
    let t = Instant::now();
    while count("G.V()") < 0 {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the analyzer answers"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let agent = spawn("agent");
    let pid = agent.0.id();
    while count("G.V().Has('Type', 'host', 'Name', 'b9-host')") != 1 {
        assert!(t.elapsed() < Duration::from_secs(30), "the agent reports");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_secs(1));
    let cpu_before = cpu_s(pid);
    let (rss_before, _) = memory_mib(pid);

    // The burst.
    let started = Instant::now();
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..parallel {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        return;
                    }
                    d.docker(&format!(
                        "run -d --network none --name b9c{i} --label bench.index={i} {IMAGE} sleep 100000"
                    ));
                }
            });
        }
    });
    let last_run = Instant::now();
    let burst = last_run - started;
    eprintln!("  {n} docker run returned in {burst:?}");

    // The floor: docker ps listing them all.
    let floor = loop {
        let listed = d.docker("ps -q --filter name=b9c").lines().count();
        if listed == n {
            break last_run.elapsed();
        }
        assert!(last_run.elapsed() < Duration::from_secs(60));
    };
    // The analyzer: every container node, in a namespace named after it.
    let mut peak_rss = 0.0f64;
    let converged = loop {
        let (rss, _) = memory_mib(pid);
        peak_rss = peak_rss.max(rss);
        let containers = count("G.V().Has('Type', 'container', 'Manager', 'docker')");
        let in_ns = count(
            "G.V().Has('Type', 'netns', 'Manager', 'docker', 'Name', Regex('b9c[0-9]+')).Out('Type', 'container')",
        );
        if containers == n as i64 && in_ns == n as i64 {
            break last_run.elapsed();
        }
        assert!(
            last_run.elapsed() < Duration::from_secs(120),
            "no convergence: {containers} containers, {in_ns} in their namespace"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    let cpu = cpu_s(pid) - cpu_before;
    let (rss_after, hwm) = memory_mib(pid);
    peak_rss = peak_rss.max(rss_after);
    eprintln!(
        "  floor (docker ps lists them): {floor:?}; analyzer shows them: {converged:?} (+{:?})",
        converged.saturating_sub(floor)
    );
    eprintln!(
        "  agent: {cpu:.2} s CPU from the burst's start to convergence; RSS {rss_before:.1} MiB before, peak {peak_rss:.1} MiB (VmHWM {hwm:.1} MiB)"
    );
    let out = json!({
        "containers": n,
        "parallel_runs": parallel,
        "burst_s": burst.as_secs_f64(),
        "floor_docker_ps_s": floor.as_secs_f64(),
        "converged_s": converged.as_secs_f64(),
        "converged_after_floor_s": converged.saturating_sub(floor).as_secs_f64(),
        "agent_cpu_s": cpu,
        "agent_rss_before_mib": rss_before,
        "agent_rss_peak_mib": peak_rss,
        "agent_vmhwm_mib": hwm,
    });
    println!("{}", serde_json::to_string_pretty(&out).unwrap());
    let target = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/bench");
    let _ = std::fs::create_dir_all(&target);
    let _ = std::fs::write(
        target.join("b9.json"),
        serde_json::to_string_pretty(&out).unwrap(),
    );
    drop(agent);
    drop(d);
}
