//! Running `skydive` processes for tests: each with its own configuration file, free ports
//! of 127.0.0.1 and a temporary data directory; killed when dropped.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use skydive_api::client::Client;

/// A free TCP port of 127.0.0.1 (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_skydive")
}

/// A `skydive` process.
pub struct Proc {
    pub child: Option<Child>,
    pub args: Vec<String>,
    pub log: PathBuf,
}

impl Proc {
    pub fn spawn(args: &[&str], log: &Path) -> Proc {
        let mut p = Proc {
            child: None,
            args: args.iter().map(|s| s.to_string()).collect(),
            log: log.to_path_buf(),
        };
        p.start();
        p
    }

    pub fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(bin())
            .args(&self.args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    /// SIGKILL, and wait for the process to be gone.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Writes a configuration file.
pub fn write_config(dir: &Path, name: &str, yaml: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, yaml).unwrap();
    p
}

/// Polls `cond` until it holds or `timeout` passes.
pub fn eventually(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if cond() {
            return start.elapsed();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("timed out after {timeout:?} waiting for: {what}");
}

/// A Gremlin query's JSON result, or None when the server cannot be reached.
pub fn query(c: &Client, q: &str) -> Option<Value> {
    let r = c.query(q, "application/json").ok()?;
    serde_json::from_slice(&r.body).ok()
}

/// `q.Count()`, or -1 when the server cannot be reached.
pub fn count(c: &Client, q: &str) -> i64 {
    query(c, &format!("{q}.Count()"))
        .and_then(|v| v.as_i64())
        .unwrap_or(-1)
}

/// Waits for the API at `addr` to answer.
pub fn wait_api(addr: &str) {
    let c = Client::new(addr, None);
    eventually(
        Duration::from_secs(20),
        &format!("the API at {addr}"),
        || {
            c.send("GET", "/api", None, &[])
                .map(|r| r.status == 200)
                .unwrap_or(false)
        },
    );
}

// Network namespaces and links for the tests that need root.

/// Whether the test may run; prints why not.
pub fn root(test: &str) -> bool {
    if nix_is_root() {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test} needs root, and under CI=true it must run");
    }
    eprintln!("SKIPPED {test}: needs root (network namespaces)");
    false
}

pub fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// Runs a command line; panics with its output when it fails. `ip -n NS` and
/// `ip netns exec NS` also remount `/` as a slave, which fails where `/` is not a mount point
/// (a chroot); entering only the network namespace with `nsenter` works everywhere.
pub fn sh(cmd: &str) {
    let cmd = &in_netns(cmd);
    let o = Command::new("sh").arg("-c").arg(cmd).output().unwrap();
    assert!(
        o.status.success(),
        "`{cmd}` failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Removes what a test created when it ends, however it ends.
pub struct Cleanup(pub Vec<String>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for c in self.0.iter().rev() {
            let _ = Command::new("sh")
                .arg("-c")
                .arg(format!("{} 2>/dev/null", in_netns(c)))
                .status();
        }
    }
}

impl Cleanup {
    pub fn netns(&mut self, name: &str) {
        sh(&format!("ip netns add {name}"));
        self.0.push(format!("ip netns del {name}"));
    }
    pub fn link(&mut self, name: &str, cmd: &str) {
        sh(cmd);
        self.0.push(format!("ip link del {name}"));
    }

    /// Two new namespaces joined by a veth pair `a`/`b`, addressed `<net>.1/24` and
    /// `<net>.2/24`, both up.
    pub fn veth_pair(&mut self, (ns_a, a): (&str, &str), (ns_b, b): (&str, &str), net: &str) {
        self.netns(ns_a);
        self.netns(ns_b);
        sh(&format!(
            "ip link add {a} netns {ns_a} type veth peer name {b} netns {ns_b}"
        ));
        sh(&format!("ip -n {ns_a} addr add {net}.1/24 dev {a}"));
        sh(&format!("ip -n {ns_b} addr add {net}.2/24 dev {b}"));
        sh(&format!("ip -n {ns_a} link set {a} up"));
        sh(&format!("ip -n {ns_b} link set {b} up"));
    }

    /// A new namespace whose `eth0`, addressed `ip/24`, is the peer of `end` in the host's
    /// namespace; both up.
    pub fn host_veth(&mut self, ns: &str, end: &str, ip: &str) {
        self.netns(ns);
        self.link(
            end,
            &format!("ip link add {end} type veth peer name eth0 netns {ns}"),
        );
        sh(&format!("ip link set {end} up"));
        sh(&format!("ip -n {ns} addr add {ip}/24 dev eth0"));
        sh(&format!("ip -n {ns} link set eth0 up"));
    }
}

/// A `skydive allinone` of host `host_id` with its store in `dir` and the extra top-level
/// configuration `extra` (YAML); returns it with the analyzer's address once it answers.
pub fn allinone(dir: &Path, host_id: &str, extra: &str) -> (Proc, String) {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let conf = write_config(
        dir,
        "allinone.yml",
        &format!(
            "host_id: {host_id}\nanalyzer:\n  listen: {addr}\nagent:\n  listen: 127.0.0.1:{}\nstorage:\n  embedded:\n    path: {}\n{extra}",
            free_port(),
            dir.join("data").display()
        ),
    );
    let p = Proc::spawn(
        &["-c", conf.to_str().unwrap(), "allinone"],
        &dir.join("allinone.log"),
    );
    wait_api(&addr);
    (p, addr)
}

/// Whether a socket of namespace `ns` listens on `port` (`proto` "t" for TCP, "u" for UDP).
pub fn listening(ns: &str, proto: &str, port: u16) -> bool {
    Command::new("nsenter")
        .arg(format!("--net=/run/netns/{ns}"))
        .args([
            "ss",
            &format!("-Hln{proto}"),
            "sport",
            "=",
            &format!(":{port}"),
        ])
        .output()
        .map(|o| !o.stdout.is_empty())
        .unwrap_or(false)
}

/// Rewrites `ip -n NS …` and `ip netns exec NS …` into `nsenter --net=/run/netns/NS …`.
pub fn in_netns(cmd: &str) -> String {
    let words: Vec<&str> = cmd.split(' ').collect();
    let (ns, rest) = match words.as_slice() {
        ["ip", "-n", ns, rest @ ..] => (*ns, format!("ip {}", rest.join(" "))),
        ["ip", "netns", "exec", ns, rest @ ..] => (*ns, rest.join(" ")),
        _ => return cmd.to_string(),
    };
    format!("nsenter --net=/run/netns/{ns} {rest}")
}
