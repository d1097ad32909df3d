//! A libpcap source with no traffic waits for its descriptor instead of spinning: it is
//! non-blocking (libpcap in immediate mode may otherwise wait forever), and a read that
//! found nothing used to come back at once, a core at 100%. Alone in its test binary, so
//! that the process's CPU time is the source's. Needs root.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use skydive_capture::source::{self, Report, Sink, SourceError, SourceSpec};
use skydive_flow::decode::LinkType;
use skydive_flow::{Flow, TableConfig};
use skydive_testkit::{Cleanup, require_root};

struct Idle(AtomicBool);

impl Sink for Idle {
    fn stopped(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
    fn stats_every(&self) -> Duration {
        Duration::from_secs(1)
    }
    fn flows(&self, _: Vec<Flow>) {}
    fn report(&self, _: &Report, _: Option<Vec<Flow>>) {}
    fn ended(&self, _: Option<&SourceError>) {}
}

/// User and system CPU time of the process.
fn cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<u64> = after
        .split(' ')
        .skip(11)
        .take(2)
        .map(|v| v.parse().unwrap())
        .collect();
    // Clock ticks are 1/100 s on Linux.
    Duration::from_millis((f[0] + f[1]) * 10)
}

#[test]
fn an_idle_libpcap_source_waits_instead_of_spinning() {
    if !require_root("an_idle_libpcap_source_waits_instead_of_spinning") {
        return;
    }
    let mut lab = Cleanup::default();
    lab.veth_pair(("idle-a", "vidle-a"), ("idle-b", "vidle-b"), "10.77.10");
    let sink = Arc::new(Idle(AtomicBool::new(false)));
    let thread = source::start(
        "test-idle",
        Some("/run/netns/idle-a".into()),
        SourceSpec::Pcap {
            ifname: "vidle-a".into(),
            snaplen: 256,
            filter: "icmp".into(),
            link: LinkType::Ethernet,
        },
        TableConfig::default(),
        sink.clone(),
    )
    .unwrap();
    let before = cpu();
    std::thread::sleep(Duration::from_secs(2));
    let used = cpu() - before;
    sink.0.store(true, Ordering::SeqCst);
    thread.join().unwrap();
    assert!(
        used < Duration::from_millis(400),
        "2 s of an idle capture took {used:?} of CPU"
    );
}
