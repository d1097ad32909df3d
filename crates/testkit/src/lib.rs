//! What the project's tests share (a dev-dependency only, never part of the product):
//!
//! * [`eventually`]: wait for a condition by polling it, never by a fixed sleep;
//! * [`require_root`]: tests that need root (namespaces, AF_PACKET, OVS) skip with one
//!   visible line when not root, and fail under `CI=true`, where they must run;
//! * [`Cleanup`]: namespaces, links and anything else a test creates, removed when the test
//!   ends, however it ends;
//! * [`sh`] and [`in_netns`]: shell commands, inside a namespace when asked;
//! * [`ManualClock`]: a clock the test moves, for logic that reads a [`Clock`].

#![forbid(unsafe_code)]

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub mod docker;

pub use skydive_graph::Clock;

/// Polls `cond` every 20 ms until it holds, and returns how long that took; panics naming
/// `what` after `timeout`.
pub fn eventually(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    loop {
        if cond() {
            return start.elapsed();
        }
        if start.elapsed() >= timeout {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether the process runs as root (effective user 0).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

/// Whether `test`, which needs root, may run: when not root it prints one line saying it
/// is skipped and why, and under `CI=true` it fails instead, since CI must run it.
pub fn require_root(test: &str) -> bool {
    require(
        test,
        is_root(),
        "root (network namespaces, raw sockets or Open vSwitch)",
    )
}

/// Whether `test` may run, given whether what it `needs` is `available`: when it is not,
/// prints one line saying the test is skipped and why, or fails under `CI=true`, where the
/// test script provides everything the tests need.
pub fn require(test: &str, available: bool, needs: &str) -> bool {
    if available {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test} needs {needs}, and under CI=true it must run");
    }
    eprintln!("SKIPPED {test}: needs {needs}");
    false
}

/// Whether `program` can be run (it is on the PATH).
pub fn has_program(program: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {program}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Rewrites `ip -n NS …` and `ip netns exec NS …` into `nsenter --net=/run/netns/NS …`:
/// `ip` remounts `/` as a slave for those, which fails where `/` is not a mount point (a
/// chroot); entering only the network namespace works everywhere.
pub fn in_netns(cmd: &str) -> String {
    let words: Vec<&str> = cmd.split(' ').collect();
    let (ns, rest) = match words.as_slice() {
        ["ip", "-n", ns, rest @ ..] => (*ns, format!("ip {}", rest.join(" "))),
        ["ip", "netns", "exec", ns, rest @ ..] => (*ns, rest.join(" ")),
        _ => return cmd.to_string(),
    };
    format!("nsenter --net=/run/netns/{ns} {rest}")
}

/// Runs a shell command line (see [`in_netns`]) and returns what it printed; panics with
/// its output when it fails.
pub fn sh(cmd: &str) -> String {
    let cmd = &in_netns(cmd);
    let o = Command::new("sh").arg("-c").arg(cmd).output().unwrap();
    assert!(
        o.status.success(),
        "`{cmd}` failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Runs a shell command line (see [`in_netns`]), its output and failure ignored.
pub fn sh_quiet(cmd: &str) {
    let _ = Command::new("sh")
        .arg("-c")
        .arg(format!("{} >/dev/null 2>&1", in_netns(cmd)))
        .status();
}

/// A name no other test of this run uses: `prefix`, the process ID and a counter, cut to
/// the 15 bytes an interface name may have.
pub fn unique_name(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let tail = format!("{:x}{n:x}", std::process::id() % 0xfff);
    let keep = 15usize.saturating_sub(tail.len()).min(prefix.len());
    format!("{}{tail}", &prefix[..keep])
}

/// What a test created, undone in reverse order when dropped, however the test ends.
#[derive(Debug, Default)]
pub struct Cleanup(pub Vec<String>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for c in self.0.iter().rev() {
            sh_quiet(c);
        }
    }
}

impl Cleanup {
    /// Runs `undo` (a shell command line) when the guard is dropped.
    pub fn on_drop(&mut self, undo: impl Into<String>) {
        self.0.push(undo.into());
    }

    /// A new named namespace (one left over from an earlier run is removed first).
    pub fn netns(&mut self, name: &str) {
        sh_quiet(&format!("ip netns del {name}"));
        sh(&format!("ip netns add {name}"));
        self.on_drop(format!("ip netns del {name}"));
    }

    /// A new namespace with a name of its own ([`unique_name`]); returns the name.
    pub fn unique_netns(&mut self, prefix: &str) -> String {
        let name = unique_name(prefix);
        self.netns(&name);
        name
    }

    /// Runs `cmd`, which creates the link `name` in the host's namespace, and deletes the
    /// link when dropped.
    pub fn link(&mut self, name: &str, cmd: &str) {
        sh(cmd);
        self.on_drop(format!("ip link del {name}"));
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

/// A free TCP port of 127.0.0.1 (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port of 127.0.0.1")
}

/// A clock that moves only when the test says so; clones share the time.
#[derive(Clone, Debug)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    /// A clock at `ms` milliseconds since the epoch.
    pub fn at(ms: i64) -> ManualClock {
        ManualClock(Arc::new(AtomicI64::new(ms)))
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        self.0.fetch_add(by.as_millis() as i64, Ordering::SeqCst);
    }

    /// Sets the time.
    pub fn set(&self, ms: i64) {
        self.0.store(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_names_fit_an_interface_name_and_differ() {
        let a = unique_name("a-rather-long-prefix");
        let b = unique_name("a-rather-long-prefix");
        assert!(a.len() <= 15 && b.len() <= 15, "{a} {b}");
        assert_ne!(a, b);
        assert!(a.starts_with("a-rather"));
    }

    #[test]
    fn namespace_commands_enter_only_the_network_namespace() {
        assert_eq!(
            in_netns("ip -n ns1 link set eth0 up"),
            "nsenter --net=/run/netns/ns1 ip link set eth0 up"
        );
        assert_eq!(
            in_netns("ip netns exec ns1 ping -c 1 10.0.0.1"),
            "nsenter --net=/run/netns/ns1 ping -c 1 10.0.0.1"
        );
        assert_eq!(in_netns("ip link show"), "ip link show");
    }

    #[test]
    fn a_manual_clock_moves_when_told_and_clones_share_it() {
        let c = ManualClock::at(1_000);
        let d = c.clone();
        c.advance(Duration::from_millis(250));
        assert_eq!(d.now_ms(), 1_250);
        d.set(5);
        assert_eq!(c.now_ms(), 5);
    }

    #[test]
    #[should_panic(expected = "timed out after 50ms waiting for: never")]
    fn eventually_names_what_never_came() {
        eventually(Duration::from_millis(50), "never", || false);
    }
}
