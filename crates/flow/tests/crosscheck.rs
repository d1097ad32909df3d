//! Cross-check against a peer: real traffic between two network namespaces (ping, an iperf3
//! TCP transfer, DNS queries and answers over UDP) recorded with tcpdump, then read by the
//! flow engine and by tshark. Per conversation, the packet and byte counts of both
//! directions must be equal to tshark's: frames from `tshark -q -z conv,tcp -z conv,udp`
//! (and its byte counts where it prints them exactly), exact bytes from tshark's per-frame
//! fields.
//!
//! Needs root, tcpdump, tshark, iperf3, ping and python3: without them the test says so and
//! passes, except under `CI=true` where it fails (`scripts/test.sh` installs them).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pcap_file::pcap::PcapReader;
use skydive_flow::decode::LinkType;
use skydive_flow::{Flow, FlowTable, TableConfig};
use skydive_testkit::{Cleanup, has_program, require, require_root, sh};

const TOOLS: [&str; 6] = ["tcpdump", "tshark", "iperf3", "ping", "python3", "nsenter"];

fn can_run() -> bool {
    if !require_root("per_conversation_counts_equal_tsharks") {
        return false;
    }
    let missing: Vec<&str> = TOOLS.into_iter().filter(|t| !has_program(t)).collect();
    require(
        "per_conversation_counts_equal_tsharks",
        missing.is_empty(),
        &format!("the programs {}", missing.join(", ")),
    )
}

/// The namespaces, the capture and the servers of the test, removed however the test ends.
struct Lab {
    a: String,
    b: String,
    children: Vec<Child>,
    dir: std::path::PathBuf,
    namespaces: Cleanup,
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn in_ns(ns: &str, cmd: &str) -> String {
    format!("nsenter --net=/run/netns/{ns} {cmd}")
}

/// A DNS server answering every A query with one address, as a few lines of Python.
const DNS_SERVER: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 53))
print("ready", flush=True)
while True:
    q, peer = s.recvfrom(512)
    r = bytearray(q)
    r[2] |= 0x80; r[3] = 0x80; r[7] = 1
    s.sendto(bytes(r) + bytes([0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 10, 78, 0, 2]), peer)
"#;

/// Three DNS queries from one socket, each waiting for its answer.
const DNS_CLIENT: &str = r#"
import socket, struct, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(2)
for i, name in enumerate([b"alpha", b"bravo", b"charlie-delta"]):
    q = struct.pack(">HHHHHH", 0x1000 + i, 0x0100, 1, 0, 0, 0)
    q += bytes([len(name)]) + name + bytes([4]) + b"test" + bytes([0]) + struct.pack(">HH", 1, 1)
    s.sendto(q, (sys.argv[1], 53))
    s.recvfrom(512)
"#;

#[test]
fn per_conversation_counts_equal_tsharks() {
    if !can_run() {
        return;
    }
    let id = std::process::id() % 100_000;
    let dir = std::env::temp_dir().join(format!("skydive-xc-{id}"));
    std::fs::create_dir_all(&dir).unwrap();
    let mut lab = Lab {
        a: format!("xc{id}a"),
        b: format!("xc{id}b"),
        children: Vec::new(),
        dir: dir.clone(),
        namespaces: Cleanup::default(),
    };
    let (a, b) = (lab.a.clone(), lab.b.clone());
    lab.namespaces.netns(&a);
    lab.namespaces.netns(&b);
    sh(&format!(
        "ip link add xc{id}x netns {a} type veth peer name xc{id}y netns {b}"
    ));
    sh(&in_ns(
        &a,
        &format!(
            "sh -c 'ip addr add 10.78.0.1/24 dev xc{id}x && ip link set xc{id}x up && ip link set lo up'"
        ),
    ));
    sh(&in_ns(
        &b,
        &format!(
            "sh -c 'ip addr add 10.78.0.2/24 dev xc{id}y && ip link set xc{id}y up && ip link set lo up'"
        ),
    ));

    // The capture, on A's side of the veth pair.
    let pcap = dir.join("mixed.pcap");
    let mut tcpdump = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{a}"))
        .args([
            "tcpdump",
            "-i",
            &format!("xc{id}x"),
            "-U",
            "-s",
            "0",
            "-B",
            "65536",
        ])
        .args(["--immediate-mode", "-w"])
        .arg(&pcap)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_line(tcpdump.stderr.take().unwrap(), "listening on");
    lab.children.push(tcpdump);

    // Servers in B.
    let mut dns = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{b}"))
        .args(["python3", "-c", DNS_SERVER, "10.78.0.2"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    wait_line(dns.stdout.take().unwrap(), "ready");
    lab.children.push(dns);
    let mut iperf = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{b}"))
        .args(["iperf3", "-s", "-1", "-B", "10.78.0.2", "--forceflush"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    wait_line(iperf.stdout.take().unwrap(), "Server listening");
    lab.children.push(iperf);

    // Traffic from A.
    sh(&in_ns(&a, "ping -c 4 -i 0.2 -s 1024 10.78.0.2"));
    sh(&in_ns(&a, &format!("python3 -c '{DNS_CLIENT}' 10.78.0.2")));
    sh(&in_ns(&a, "iperf3 -c 10.78.0.2 -n 4M -b 100M"));
    sh(&in_ns(&a, &format!("python3 -c '{DNS_CLIENT}' 10.78.0.2")));
    std::thread::sleep(Duration::from_millis(300));

    // Stop the capture cleanly so that the file is complete.
    let mut tcpdump = lab.children.remove(0);
    sh(&format!("kill -INT {}", tcpdump.id()));
    assert!(tcpdump.wait().unwrap().success(), "tcpdump failed");

    let ours = ours(&std::fs::read(&pcap).unwrap());
    let theirs = tshark_fields(&pcap.to_string_lossy());
    let conv = tshark_conv(&pcap.to_string_lossy());

    // The traffic is all there: ICMP (one conversation), DNS (two sockets), iperf3's control
    // and data connections.
    let count = |proto: &str| ours.keys().filter(|k| k.proto == proto).count();
    assert_eq!(count("ICMP"), 1, "ours: {ours:#?}");
    assert_eq!(count("UDP"), 2, "ours: {ours:#?}");
    assert_eq!(count("TCP"), 2, "ours: {ours:#?}");
    let data = ours
        .iter()
        .filter(|(k, _)| k.proto == "TCP")
        .map(|(_, c)| c.ab_bytes + c.ba_bytes)
        .max()
        .unwrap();
    // (tcpdump may drop a few packets of the transfer; both tools read the same file.)
    assert!(data > 1 << 20, "the iperf3 transfer: {data} bytes");

    // Per conversation, both directions, exactly tshark's counts.
    assert_eq!(
        ours.keys().collect::<Vec<_>>(),
        theirs.keys().collect::<Vec<_>>(),
        "conversations differ: ours {ours:#?} tshark {theirs:#?}"
    );
    for (k, c) in &ours {
        assert_eq!(c, &theirs[k], "{k:?}: ours then tshark's per-frame fields");
    }
    let tcp_udp: Vec<_> = ours.keys().filter(|k| k.proto != "ICMP").collect();
    assert_eq!(tcp_udp.len(), conv.len(), "tshark conv tables: {conv:#?}");
    for k in tcp_udp {
        let c = &ours[k];
        let t = conv
            .get(k)
            .unwrap_or_else(|| panic!("{k:?} not in tshark's conv tables {conv:#?}"));
        assert_eq!(
            (c.ab_packets, c.ba_packets),
            (t.ab_frames, t.ba_frames),
            "{k:?}"
        );
        for (bytes, shown) in [(c.ab_bytes, &t.ab_bytes), (c.ba_bytes, &t.ba_bytes)] {
            if let Some(n) = shown.strip_suffix(" bytes") {
                assert_eq!(bytes.to_string(), n, "{k:?}");
            }
        }
    }
}

/// Reads from a child's output until a line containing `what`; panics after 10 s.
fn wait_line(out: impl std::io::Read + Send + 'static, what: &'static str) {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut r = BufReader::new(out);
        let mut line = String::new();
        let mut told = false;
        while r.read_line(&mut line).unwrap_or(0) > 0 {
            if !told && line.contains(what) {
                let _ = tx.send(());
                told = true;
            }
            line.clear();
        }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    rx.recv_timeout(deadline - Instant::now())
        .unwrap_or_else(|_| panic!("no `{what}` within 10 s"));
}

/// A conversation, with endpoints in order (A < B).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Conv {
    proto: String,
    a: (String, i64),
    b: (String, i64),
}

/// Packets and bytes from A to B and from B to A.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Counts {
    ab_packets: i64,
    ab_bytes: i64,
    ba_packets: i64,
    ba_bytes: i64,
}

impl Counts {
    fn add(&mut self, forward: bool, packets: i64, bytes: i64) {
        if forward {
            self.ab_packets += packets;
            self.ab_bytes += bytes;
        } else {
            self.ba_packets += packets;
            self.ba_bytes += bytes;
        }
    }
}

/// Orders a conversation's endpoints; says whether `src` is its A.
fn conv(proto: &str, src: (String, i64), dst: (String, i64)) -> (Conv, bool) {
    let forward = src <= dst;
    let (a, b) = if forward { (src, dst) } else { (dst, src) };
    (
        Conv {
            proto: proto.to_string(),
            a,
            b,
        },
        forward,
    )
}

/// The flow engine's IPv4 TCP, UDP and ICMP counts (ICMP flows summed per address pair).
fn ours(file: &[u8]) -> BTreeMap<Conv, Counts> {
    let mut r = PcapReader::new(file).unwrap();
    let link = LinkType::from_pcap(u32::from(r.header().datalink)).unwrap();
    let mut t = FlowTable::new(TableConfig::default());
    let mut last_ms = 0;
    while let Some(p) = r.next_packet() {
        let p = p.unwrap();
        let ns = p.timestamp.as_nanos() as i64;
        last_ms = ns / 1_000_000;
        t.process(&p.data, p.orig_len, ns, link);
    }
    assert_eq!(t.stats().truncated, 0, "{:?}", t.stats());
    let flows: Vec<Flow> = t.flush(last_ms);
    let mut out: BTreeMap<Conv, Counts> = BTreeMap::new();
    for f in flows {
        let (Some(n), Some(m)) = (&f.network, &f.metric) else {
            continue;
        };
        if n.protocol.to_string() != "IPV4" {
            continue;
        }
        let (proto, pa, pb) = match (&f.transport, &f.icmp) {
            (Some(t), _) => (t.protocol.to_string(), t.a, t.b),
            (None, Some(_)) => ("ICMP".to_string(), 0, 0),
            _ => continue,
        };
        let (k, forward) = conv(&proto, (n.a.to_string(), pa), (n.b.to_string(), pb));
        let c = out.entry(k).or_default();
        c.add(forward, m.ab_packets, m.ab_bytes);
        c.add(!forward, m.ba_packets, m.ba_bytes);
    }
    out
}

/// tshark's per-frame fields summed per conversation.
fn tshark_fields(file: &str) -> BTreeMap<Conv, Counts> {
    let out = sh(&format!(
        "tshark -r {file} -Y ip -T fields -E separator=, -e ip.proto -e ip.src -e ip.dst \
         -e tcp.srcport -e tcp.dstport -e udp.srcport -e udp.dstport -e frame.len 2>/dev/null"
    ));
    let mut m: BTreeMap<Conv, Counts> = BTreeMap::new();
    for line in out.lines() {
        let f: Vec<&str> = line.split(',').collect();
        let port = |i: usize| f[i].parse::<i64>().ok();
        let (proto, sp, dp) = match f[0] {
            "6" => ("TCP", port(3).unwrap(), port(4).unwrap()),
            "17" => ("UDP", port(5).unwrap(), port(6).unwrap()),
            "1" => ("ICMP", 0, 0),
            _ => continue,
        };
        let (k, forward) = conv(proto, (f[1].to_string(), sp), (f[2].to_string(), dp));
        m.entry(k)
            .or_default()
            .add(forward, 1, f[7].parse().unwrap());
    }
    m
}

/// One line of tshark's conversation tables.
#[derive(Debug)]
struct ConvLine {
    ab_frames: i64,
    ab_bytes: String,
    ba_frames: i64,
    ba_bytes: String,
}

/// `tshark -q -z conv,tcp -z conv,udp`: per conversation, frames and bytes as printed (tshark
/// rounds large byte counts to kB or MB).
fn tshark_conv(file: &str) -> BTreeMap<Conv, ConvLine> {
    let out = sh(&format!(
        "tshark -r {file} -q -z conv,tcp -z conv,udp 2>/dev/null"
    ));
    let mut m = BTreeMap::new();
    let mut proto = "";
    for line in out.lines() {
        if line.starts_with("TCP Conversations") {
            proto = "TCP";
        } else if line.starts_with("UDP Conversations") {
            proto = "UDP";
        }
        let Some((left, rest)) = line.split_once("<->") else {
            continue;
        };
        let endpoint = |s: &str| {
            let (ip, port) = s.trim().rsplit_once(':').unwrap();
            (ip.to_string(), port.parse::<i64>().unwrap())
        };
        let w: Vec<&str> = rest.split_whitespace().collect();
        // B, then "<-" (frames, bytes, unit: frames to A), then "->" (frames from A).
        let (src, dst) = (endpoint(left), endpoint(w[0]));
        let (to_a, to_a_bytes) = (w[1].parse::<i64>().unwrap(), format!("{} {}", w[2], w[3]));
        let (from_a, from_a_bytes) = (w[4].parse::<i64>().unwrap(), format!("{} {}", w[5], w[6]));
        let (k, forward) = conv(proto, src, dst);
        let line = if forward {
            ConvLine {
                ab_frames: from_a,
                ab_bytes: from_a_bytes,
                ba_frames: to_a,
                ba_bytes: to_a_bytes,
            }
        } else {
            ConvLine {
                ab_frames: to_a,
                ab_bytes: to_a_bytes,
                ba_frames: from_a,
                ba_bytes: from_a_bytes,
            }
        };
        m.insert(k, line);
    }
    m
}
