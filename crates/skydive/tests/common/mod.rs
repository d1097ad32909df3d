//! Running `skydive` processes for tests: each with its own configuration file, free ports
//! of 127.0.0.1 and a temporary data directory; killed when dropped.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use skydive_api::client::Client;
#[allow(unused_imports)]
pub use skydive_testkit::{Cleanup, eventually, free_port, in_netns, require, sh};

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

    /// SIGTERM (a clean stop), and wait for the process to be gone.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let _ = c.wait();
        }
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

/// Whether the test, which needs root, may run (see [`skydive_testkit::require_root`]).
pub fn root(test: &str) -> bool {
    skydive_testkit::require_root(test)
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
