//! The AF_PACKET ring on a real veth pair between two network namespaces: frames, kernel
//! BPF filter, snap length, statistics, and the flows they make. Needs root.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use skydive_capture::afpacket::{Ring, RingConfig, ifindex};
use skydive_capture::bpf::{Bpf, LINKTYPE_ETHERNET};
use skydive_flow::decode::LinkType;
use skydive_flow::{FlowTable, Packet, TableConfig};
use skydive_testkit::{Cleanup, require_root, sh};

/// Two namespaces joined by a veth pair, 10.77.<n>.1 and .2; removed when dropped.
struct Pair {
    a: String,
    _cleanup: Cleanup,
}

impl Pair {
    fn new(tag: &str, n: u8) -> Pair {
        let mut cleanup = Cleanup::default();
        let (a, b) = (format!("cap-{tag}-a"), format!("cap-{tag}-b"));
        cleanup.veth_pair(
            (&a, &format!("vcap-{tag}")),
            (&b, &format!("vcap-{tag}p")),
            &format!("10.77.{n}"),
        );
        sh(&format!("ip -n {a} link set lo up"));
        sh(&format!("ip -n {b} link set lo up"));
        Pair {
            a,
            _cleanup: cleanup,
        }
    }
}

/// Frames captured on `ifname` of namespace `ns` while `traffic` runs.
fn capture(
    ns: &str,
    ifname: &str,
    filter: Option<&str>,
    snaplen: u32,
    traffic: impl FnOnce(),
) -> (Vec<(Vec<u8>, u32, i64)>, u64) {
    let frames = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let ready = Arc::new(AtomicBool::new(false));
    let (ns, ifname, filter) = (
        ns.to_string(),
        ifname.to_string(),
        filter.map(str::to_string),
    );
    let (f2, s2, r2) = (frames.clone(), stop.clone(), ready.clone());
    let t = std::thread::spawn(move || {
        let file = std::fs::File::open(format!("/run/netns/{ns}")).unwrap();
        nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let bpf = filter.map(|f| Bpf::compile(&f, LINKTYPE_ETHERNET).unwrap());
        let cfg = RingConfig {
            ifindex: ifindex(&ifname).unwrap(),
            snaplen,
            block_size: 1 << 16,
            blocks: 4,
            ..Default::default()
        };
        let mut ring = Ring::open(&cfg, bpf.as_ref().map(|b| b.instructions())).unwrap();
        r2.store(true, Ordering::SeqCst);
        while !s2.load(Ordering::SeqCst) {
            ring.next_block(Duration::from_millis(20), |f| {
                f2.lock()
                    .unwrap()
                    .push((f.data.to_vec(), f.wire_len, f.ts_ns));
            })
            .unwrap();
        }
        // What is left in the ring.
        while ring
            .next_block(Duration::from_millis(30), |f| {
                f2.lock()
                    .unwrap()
                    .push((f.data.to_vec(), f.wire_len, f.ts_ns));
            })
            .unwrap()
            > 0
        {}
        ring.stats().unwrap().received
    });
    while !ready.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(5));
    }
    traffic();
    std::thread::sleep(Duration::from_millis(100));
    stop.store(true, Ordering::SeqCst);
    let received = t.join().unwrap();
    let frames = std::mem::take(&mut *frames.lock().unwrap());
    (frames, received)
}

fn ethertype(f: &[u8]) -> u16 {
    u16::from_be_bytes([f[12], f[13]])
}

#[test]
fn ring_captures_filtered_truncated_frames_that_make_flows() {
    if !require_root("ring_captures_filtered_truncated_frames_that_make_flows") {
        return;
    }
    let pair = Pair::new("r1", 1);
    // Without a filter: the ARP exchange and the pings.
    let ping = |count: u32, size: u32| {
        sh(&format!(
            "nsenter --net=/run/netns/{} ping -q -c {count} -i 0.05 -s {size} -W 1 10.77.1.2 >/dev/null",
            pair.a
        ));
    };
    let (all, received) = capture(&pair.a, "vcap-r1", None, 256, || ping(2, 1000));
    assert!(
        all.iter().any(|(f, _, _)| ethertype(f) == 0x0806),
        "ARP is seen without a filter"
    );
    let icmp: Vec<_> = all
        .iter()
        .filter(|(f, _, _)| ethertype(f) == 0x0800)
        .collect();
    assert_eq!(icmp.len(), 4, "2 requests, 2 replies");
    // Truncated to the snap length, with the wire length kept.
    assert!(
        icmp.iter()
            .all(|(f, wire, _)| f.len() == 256 && *wire == 14 + 20 + 8 + 1000)
    );
    assert_eq!(received, all.len() as u64);
    let now_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64;
    assert!(
        icmp.iter()
            .all(|(_, _, ts)| (now_ns - ts).abs() < 30_000_000_000)
    );

    // The kernel filter keeps ARP out (flush the neighbour so that ARP happens again).
    sh(&format!(
        "nsenter --net=/run/netns/{} ip neigh flush all",
        pair.a
    ));
    let (only_icmp, _) = capture(&pair.a, "vcap-r1", Some("icmp"), 128, || ping(3, 1024));
    assert_eq!(only_icmp.len(), 6, "3 requests and 3 replies, nothing else");
    assert!(
        only_icmp
            .iter()
            .all(|(f, _, _)| ethertype(f) == 0x0800 && f.len() == 128)
    );

    // Into a flow table: one ICMP flow, 3 packets each way, with its RTT.
    let mut table = FlowTable::new(TableConfig::default());
    let packets: Vec<Packet<'_>> = only_icmp
        .iter()
        .map(|(f, wire, ts)| Packet {
            data: f,
            wire_len: *wire,
            ts_ns: *ts,
        })
        .collect();
    table.process_batch(&packets, LinkType::Ethernet);
    let flows = table.flush(i64::MAX / 2);
    assert_eq!(flows.len(), 1, "{flows:?}");
    let m = flows[0].metric.unwrap();
    assert_eq!((m.ab_packets, m.ba_packets), (3, 3));
    assert_eq!(m.ab_bytes, 3 * (14 + 20 + 8 + 1024));
    assert_eq!(flows[0].network.as_ref().unwrap().a, "10.77.1.1");
    assert!(m.rtt > 0);
}
