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
