//! Capture sources started as the agent starts them (`source::start`: a thread that enters a
//! namespace, opens the source there and runs it into a sink), on a real veth pair between
//! two network namespaces. Needs root.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use skydive_capture::source::{self, Report, Sink, SourceError, SourceSpec};
use skydive_flow::decode::LinkType;
use skydive_flow::{Flow, TableConfig};
use skydive_testkit::{Cleanup, eventually, require_root, sh};

/// A sink that keeps what it is given.
#[derive(Default)]
struct Kept {
    stop: AtomicBool,
    flows: Mutex<Vec<Flow>>,
    reports: Mutex<Vec<Report>>,
    ended: Mutex<Option<Option<String>>>,
}

impl Sink for Kept {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }
    fn stats_every(&self) -> Duration {
        Duration::from_millis(100)
    }
    fn flows(&self, flows: Vec<Flow>) {
        self.flows.lock().unwrap().extend(flows);
    }
    fn report(&self, report: &Report, _table: Option<Vec<Flow>>) {
        self.reports.lock().unwrap().push(report.clone());
    }
    fn ended(&self, error: Option<&SourceError>) {
        *self.ended.lock().unwrap() = Some(error.map(|e| e.to_string()));
    }
}

fn table() -> TableConfig {
    TableConfig {
        node_tid: "tid".into(),
        capture_id: "c".into(),
        ..TableConfig::default()
    }
}

#[test]
fn sources_opened_in_a_namespace_give_their_flows_and_counters_to_the_sink() {
    if !require_root("sources_opened_in_a_namespace_give_their_flows_and_counters_to_the_sink") {
        return;
    }
    let mut lab = Cleanup::default();
    lab.veth_pair(("srcs-a", "vsrc-a"), ("srcs-b", "vsrc-b"), "10.77.9");
    for (kind, spec) in [
        (
            "afpacket",
            SourceSpec::Afpacket {
                ifname: "vsrc-a".into(),
                snaplen: 256,
                filter: "icmp".into(),
                link: LinkType::Ethernet,
            },
        ),
        (
            "pcap",
            SourceSpec::Pcap {
                ifname: "vsrc-a".into(),
                snaplen: 256,
                filter: "icmp".into(),
                link: LinkType::Ethernet,
            },
        ),
    ] {
        let sink = Arc::new(Kept::default());
        let thread = source::start(
            "test-capture",
            Some("/run/netns/srcs-a".into()),
            spec,
            table(),
            sink.clone(),
        )
        .unwrap_or_else(|e| panic!("{kind}: {e}"));
        sh("ip netns exec srcs-a ping -q -c 3 -i 0.1 -W 1 10.77.9.2");
        eventually(Duration::from_secs(5), "6 packets counted", || {
            sink.reports
                .lock()
                .unwrap()
                .last()
                .is_some_and(|r| r.received >= 6)
        });
        sink.stop.store(true, Ordering::SeqCst);
        thread.join().unwrap();
        assert_eq!(
            *sink.ended.lock().unwrap(),
            Some(None),
            "{kind}: ended without error"
        );
        let flows = sink.flows.lock().unwrap();
        let icmp: Vec<&Flow> = flows.iter().filter(|f| f.application == "ICMPv4").collect();
        assert!(!icmp.is_empty(), "{kind}: {flows:?}");
        let last = icmp.last().unwrap();
        let m = last.metric.as_ref().unwrap();
        assert_eq!((m.ab_packets, m.ba_packets), (3, 3), "{kind}: {last:?}");
        assert!(
            flows.iter().all(|f| f.application != "ARP"),
            "{kind}: the filter keeps ARP out"
        );
    }
}

#[test]
fn a_source_that_cannot_open_says_why_and_starts_no_thread() {
    if !require_root("a_source_that_cannot_open_says_why_and_starts_no_thread") {
        return;
    }
    let sink = Arc::new(Kept::default());
    let e = source::start(
        "test-capture",
        None,
        SourceSpec::Afpacket {
            ifname: "no-such-if0".into(),
            snaplen: 256,
            filter: String::new(),
            link: LinkType::Ethernet,
        },
        table(),
        sink.clone(),
    )
    .unwrap_err();
    assert!(e.to_string().starts_with("no interface no-such-if0"), "{e}");
    assert_eq!(*sink.ended.lock().unwrap(), None, "never ran");
    let e = source::start(
        "test-capture",
        Some("/run/netns/no-such-namespace".into()),
        SourceSpec::Sflow {
            address: "127.0.0.1:0".into(),
            filter: String::new(),
        },
        table(),
        sink,
    )
    .unwrap_err();
    assert!(
        e.to_string().contains("/run/netns/no-such-namespace"),
        "{e}"
    );
}
