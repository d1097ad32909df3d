//! Golden tests of the flow engine: one small pcap file per scenario, generated here from the
//! frame builders of `frames/`, checked in under `golden/` with the flows it must give
//! (`golden/<scenario>.json`). The test regenerates each pcap and checks it is the file in
//! the repository, then replays the file through a flow table and compares the flows.
//!
//! After a deliberate change: `SKYDIVE_REGEN_GOLDEN=1 cargo test -p skydive-flow --test
//! golden`, then review the diff of `golden/`.

mod frames;

use std::path::PathBuf;
use std::time::Duration;

use frames::*;
use pcap_file::DataLink;
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapReader, PcapWriter};
use skydive_flow::decode::LinkType;
use skydive_flow::{Flow, FlowTable, Packet, TableConfig};

/// A captured packet: time (ns from the scenario's start), bytes kept, length on the wire.
struct Pkt {
    t_ns: i64,
    data: Vec<u8>,
    wire: u32,
}

fn at(ms: i64, data: Vec<u8>) -> Pkt {
    let wire = data.len() as u32;
    Pkt {
        t_ns: ms * 1_000_000,
        data,
        wire,
    }
}

const T0_NS: i64 = 1_700_000_000_000_000_000;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn regen() -> bool {
    std::env::var("SKYDIVE_REGEN_GOLDEN").is_ok()
}

fn write_pcap(link: LinkType, pkts: &[Pkt]) -> Vec<u8> {
    let header = PcapHeader {
        datalink: DataLink::from(link.pcap()),
        snaplen: 65535,
        ts_resolution: pcap_file::TsResolution::NanoSecond,
        ..Default::default()
    };
    let mut w = PcapWriter::with_header(Vec::new(), header).unwrap();
    for p in pkts {
        let ts = Duration::from_nanos((T0_NS + p.t_ns) as u64);
        w.write_packet(&PcapPacket::new(ts, p.wire, &p.data))
            .unwrap();
    }
    w.into_writer()
}

/// Replays a pcap file through a table as a capture would: ticks driven by packet time, a
/// flush at the end. Returns every flow message in the order they would be sent.
fn replay(file: &[u8], cfg: TableConfig) -> Vec<Flow> {
    let mut r = PcapReader::new(file).unwrap();
    let link = LinkType::from_pcap(u32::from(r.header().datalink)).unwrap();
    let mut t = FlowTable::new(cfg);
    let mut out = Vec::new();
    let mut last_ms = 0;
    while let Some(p) = r.next_packet() {
        let p = p.unwrap();
        let ns = p.timestamp.as_nanos() as i64;
        last_ms = ns / 1_000_000;
        out.extend(t.advance(last_ms));
        t.process(&p.data, p.orig_len, ns, link);
    }
    out.extend(t.flush(last_ms));
    out
}

/// The file through a table without ticks, frames one by one or all in one batch.
fn replay_untimed(file: &[u8], cfg: TableConfig, batched: bool) -> Vec<Flow> {
    let mut r = PcapReader::new(file).unwrap();
    let link = LinkType::from_pcap(u32::from(r.header().datalink)).unwrap();
    let mut frames = Vec::new();
    while let Some(p) = r.next_packet() {
        let p = p.unwrap();
        frames.push((
            p.data.into_owned(),
            p.orig_len,
            p.timestamp.as_nanos() as i64,
        ));
    }
    let mut t = FlowTable::new(cfg);
    if batched {
        let batch: Vec<Packet<'_>> = frames
            .iter()
            .map(|(data, wire_len, ts_ns)| Packet {
                data,
                wire_len: *wire_len,
                ts_ns: *ts_ns,
            })
            .collect();
        t.process_batch(&batch, link);
    } else {
        for (data, wire_len, ts_ns) in &frames {
            t.process(data, *wire_len, *ts_ns, link);
        }
    }
    let last = frames.last().map(|f| f.2 / 1_000_000).unwrap_or(0);
    t.flush(last)
}

fn config() -> TableConfig {
    TableConfig {
        node_tid: "golden-node-tid".into(),
        capture_id: "golden-capture".into(),
        update_ms: 10_000,
        ..Default::default()
    }
}

fn check(name: &str, link: LinkType, pkts: Vec<Pkt>, cfg: TableConfig) -> Vec<Flow> {
    let pcap = write_pcap(link, &pkts);
    let pcap_path = dir().join(format!("{name}.pcap"));
    let json_path = dir().join(format!("{name}.json"));
    if regen() {
        std::fs::create_dir_all(dir()).unwrap();
        std::fs::write(&pcap_path, &pcap).unwrap();
    }
    let stored = std::fs::read(&pcap_path)
        .unwrap_or_else(|e| panic!("{}: {e} (regenerate the golden files)", pcap_path.display()));
    assert!(
        stored == pcap,
        "{name}.pcap differs from what its generator makes now"
    );
    assert_eq!(
        replay_untimed(&stored, cfg.clone(), true),
        replay_untimed(&stored, cfg.clone(), false),
        "{name}: frames taken by groups give other flows than frames one by one"
    );
    let flows = replay(&stored, cfg);
    let json = serde_json::to_string_pretty(&flows).unwrap() + "\n";
    if regen() {
        std::fs::write(&json_path, &json).unwrap();
    }
    let expected = std::fs::read_to_string(&json_path).unwrap();
    assert!(
        expected == json,
        "{name}: the flows differ from {}:\n{json}",
        json_path.display()
    );
    flows
}

const A: [u8; 4] = [169, 254, 1, 1];
const B: [u8; 4] = [169, 254, 1, 2];

fn tcp_conversation() -> Vec<Pkt> {
    let (ma, mb) = (mac(1), mac(2));
    let p = |src: bool, flags: u8, seq: u32, ack: u32, data: &[u8]| {
        let (sm, dm, s, d, sp, dp) = if src {
            (ma, mb, A, B, 40000, 80)
        } else {
            (mb, ma, B, A, 80, 40000)
        };
        eth(
            sm,
            dm,
            0x0800,
            &ipv4(s, d, 6, &tcp(sp, dp, seq, ack, flags, data)),
        )
    };
    vec![
        at(0, p(true, SYN, 100, 0, b"")),
        at(2, p(false, SYN | ACK, 500, 101, b"")),
        at(3, p(true, ACK, 101, 501, b"")),
        at(4, p(true, PSH | ACK, 101, 501, b"GET / HTTP/1.0\r\n\r\n")),
        at(6, p(false, PSH | ACK, 501, 119, &[b'x'; 300])),
        at(7, p(true, FIN | ACK, 119, 801, b"")),
        at(8, p(false, FIN | ACK, 801, 120, b"")),
        at(9, p(true, ACK, 120, 802, b"")),
    ]
}

#[test]
fn tcp_handshake_and_teardown() {
    let mut cfg = config();
    cfg.extra_tcp_metric = true;
    let flows = check(
        "tcp_handshake_teardown",
        LinkType::Ethernet,
        tcp_conversation(),
        cfg,
    );
    let f = flows.last().unwrap();
    assert_eq!(f.layers_path, "Ethernet/IPv4/TCP");
    let m = f.metric.unwrap();
    assert_eq!((m.ab_packets, m.ba_packets), (5, 3));
    assert_eq!(m.rtt, 2_000_000, "SYN → SYN-ACK in ns");
    assert_eq!(
        f.finish_type,
        skydive_flow::FinishType::TcpFin,
        "the FIN ends the flow"
    );
    assert_eq!(
        f.transport.as_ref().unwrap().a,
        40000,
        "A is the first packet's source"
    );
    assert_eq!(f.tcp_metric.as_ref().unwrap().ab_syn_ttl, 64);
}

#[test]
fn tcp_out_of_order_segments_count_once_each() {
    let mut pkts = tcp_conversation();
    pkts.swap(3, 4);
    pkts[3].t_ns = 4_000_000;
    pkts[4].t_ns = 6_000_000;
    let flows = check("tcp_out_of_order", LinkType::Ethernet, pkts, config());
    let m = flows.last().unwrap().metric.unwrap();
    assert_eq!(m.ab_packets + m.ba_packets, 8);
}

#[test]
fn icmp_echo_with_rtt() {
    let (ma, mb) = (mac(1), mac(2));
    let mut pkts = Vec::new();
    for i in 0..3u16 {
        let base = i as i64 * 1000;
        pkts.push(at(
            base,
            eth(
                ma,
                mb,
                0x0800,
                &ipv4(A, B, 1, &icmp_echo(true, 0x42, i, &[0; 56])),
            ),
        ));
        pkts.push(at(
            base + 1,
            eth(
                mb,
                ma,
                0x0800,
                &ipv4(B, A, 1, &icmp_echo(false, 0x42, i, &[0; 56])),
            ),
        ));
    }
    let flows = check("icmp_echo", LinkType::Ethernet, pkts, config());
    assert_eq!(flows.len(), 1, "request and reply are one flow");
    let f = &flows[0];
    assert_eq!(f.application, "ICMPv4");
    let m = f.metric.unwrap();
    assert_eq!((m.ab_packets, m.ab_bytes, m.ba_packets), (3, 3 * 98, 3));
    assert_eq!(m.rtt, 1_000_000);
    assert_eq!(f.icmp.as_ref().unwrap().id, 0x42);
}

/// Three pings on a loopback interface, replies 2 ms after requests: both MACs zero, both
/// addresses the loopback's. The canonical order cannot tell the endpoints apart, so
/// directions come from the packet's side (here the ICMP type): requests A to B, replies B
/// to A. `l3` makes a request (`true`) or a reply of sequence number `seq`.
fn pings_on_loopback(name: &str, ethertype: u16, l3: impl Fn(bool, u16) -> Vec<u8>) -> Flow {
    let zero = [0u8; 6];
    let mut pkts = Vec::new();
    for i in 0..3u16 {
        let base = i as i64 * 1000;
        pkts.push(at(base, eth(zero, zero, ethertype, &l3(true, i))));
        pkts.push(at(base + 2, eth(zero, zero, ethertype, &l3(false, i))));
    }
    let mut flows = check(name, LinkType::Ethernet, pkts, config());
    assert_eq!(flows.len(), 1, "request and reply are one flow");
    let m = flows[0].metric.unwrap();
    assert_eq!((m.ab_packets, m.ba_packets), (3, 3), "{m:?}");
    assert_eq!(m.rtt, 2_000_000);
    flows.remove(0)
}

/// `ping 127.0.0.1` (ICMPv4 takes the common-case path).
#[test]
fn icmp_echo_on_loopback() {
    let lo = [127, 0, 0, 1];
    pings_on_loopback("icmp_echo_loopback", 0x0800, |request, seq| {
        ipv4(lo, lo, 1, &icmp_echo(request, 7, seq, &[0; 56]))
    });
}

/// `ping -6 ::1` (ICMPv6 takes the general decoder's path, which tells the directions apart
/// the same way).
#[test]
fn icmpv6_echo_on_loopback() {
    let lo = std::net::Ipv6Addr::LOCALHOST.octets();
    let f = pings_on_loopback("icmpv6_echo_loopback", 0x86dd, |request, seq| {
        ipv6(lo, lo, 58, &[], &icmpv6_echo(request, 7, seq))
    });
    assert_eq!(f.application, "ICMPv6Echo");
}

#[test]
fn dns_request_and_response() {
    let (ma, mb) = (mac(1), mac(2));
    let mut cfg = config();
    cfg.extra_layers = skydive_flow::table::EXTRA_DNS;
    let pkts = vec![
        at(
            0,
            eth(
                ma,
                mb,
                0x0800,
                &ipv4(A, B, 17, &udp(53000, 53, &dns(7, "example.com", None))),
            ),
        ),
        at(
            3,
            eth(
                mb,
                ma,
                0x0800,
                &ipv4(
                    B,
                    A,
                    17,
                    &udp(53, 53000, &dns(7, "example.com", Some([192, 0, 2, 1]))),
                ),
            ),
        ),
    ];
    let flows = check("dns", LinkType::Ethernet, pkts, cfg);
    let f = &flows[0];
    assert_eq!(
        (f.layers_path.as_str(), f.application.as_str()),
        ("Ethernet/IPv4/UDP/DNS", "DNS")
    );
    let dns = f.dns.as_ref().unwrap().to_json();
    assert_eq!(dns["answers"][0]["IP"], "192.0.2.1");
}

fn fragments() -> Vec<Pkt> {
    let (ma, mb) = (mac(1), mac(2));
    let payload = udp(5000, 6000, &[7u8; 1000]);
    let (p1, p2) = payload.split_at(504);
    vec![
        at(
            0,
            eth(ma, mb, 0x0800, &ipv4_frag(A, B, 17, 99, 0x2000, 64, p1)),
        ),
        at(
            1,
            eth(
                ma,
                mb,
                0x0800,
                &ipv4_frag(A, B, 17, 99, (504 / 8) as u16, 64, p2),
            ),
        ),
    ]
}

#[test]
fn ipv4_fragments_reassembled() {
    let mut cfg = config();
    cfg.ip_defrag = true;
    let flows = check(
        "ipv4_fragments_defrag",
        LinkType::Ethernet,
        fragments(),
        cfg,
    );
    assert_eq!(flows.len(), 1);
    let f = &flows[0];
    assert_eq!(
        f.transport.as_ref().unwrap().b,
        6000,
        "the transport of the whole datagram"
    );
    assert_eq!(f.ip_metric.unwrap().fragments, 2);
}

#[test]
fn ipv4_fragments_without_reassembly() {
    let flows = check("ipv4_fragments", LinkType::Ethernet, fragments(), config());
    assert_eq!(flows.len(), 1);
    assert_eq!(flows[0].layers_path, "Ethernet/IPv4/Fragment");
    assert!(flows[0].transport.is_none());
    assert_eq!(flows[0].metric.unwrap().ab_packets, 2);
}

#[test]
fn ipv6_with_an_extension_header() {
    let (ma, mb) = (mac(1), mac(2));
    let hbh = vec![0u8, 0, 1, 4, 0, 0, 0, 0];
    let pkts = vec![
        at(
            0,
            eth(
                ma,
                mb,
                0x86dd,
                &ipv6(v6(1), v6(2), 58, &[(0, hbh)], &icmpv6_echo(true, 9, 1)),
            ),
        ),
        at(
            1,
            eth(
                mb,
                ma,
                0x86dd,
                &ipv6(v6(2), v6(1), 58, &[], &icmpv6_echo(false, 9, 1)),
            ),
        ),
        at(
            2,
            eth(
                ma,
                mb,
                0x86dd,
                &ipv6(v6(1), v6(2), 6, &[], &tcp(1234, 22, 1, 0, SYN, b"")),
            ),
        ),
    ];
    let flows = check("ipv6", LinkType::Ethernet, pkts, config());
    let icmp = flows.iter().find(|f| f.icmp.is_some()).unwrap();
    assert_eq!(icmp.network.as_ref().unwrap().a, "2001:db8::1");
    assert_eq!(
        icmp.metric.unwrap().ba_packets,
        1,
        "the reply without the extension is the same flow"
    );
    assert!(
        icmp.layers_path
            .starts_with("Ethernet/IPv6/IPv6HopByHop/ICMPv6"),
        "{}",
        icmp.layers_path
    );
}

#[test]
fn qinq_stacks_vlan_ids() {
    let (ma, mb) = (mac(1), mac(2));
    let inner = ipv4(A, B, 1, &icmp_echo(true, 1, 1, b""));
    let pkts = vec![
        at(
            0,
            vlan_tagged(ma, mb, &[(0x88a8, 100), (0x8100, 200)], 0x0800, &inner),
        ),
        // The same IP packet on another segment (other MACs), with one tag.
        at(
            1,
            vlan_tagged(mac(3), mac(4), &[(0x8100, 8)], 0x0800, &inner),
        ),
    ];
    let flows = check("qinq", LinkType::Ethernet, pkts, config());
    let ids: Vec<i64> = flows.iter().map(|f| f.link.as_ref().unwrap().id).collect();
    assert!(ids.contains(&8));
    assert!(ids.contains(&((200 << 12) + 100)), "{ids:?}");
    assert_eq!(
        flows[0].l3_tracking_id, flows[1].l3_tracking_id,
        "VLANs are not in the L3 key"
    );
}

fn tunnel_inner() -> Vec<u8> {
    eth(
        mac(0x11),
        mac(0x12),
        0x0800,
        &ipv4([10, 0, 0, 1], [10, 0, 0, 2], 1, &icmp_echo(true, 5, 1, b"")),
    )
}

fn check_tunnel(name: &str, outer: Vec<u8>, outer_path: &str, inner_path: &str, id: i64) {
    let flows = check(name, LinkType::Ethernet, vec![at(0, outer)], config());
    assert_eq!(flows.len(), 2, "the outer flow and the inner one");
    let outer = flows.iter().find(|f| f.parent_uuid.is_empty()).unwrap();
    let inner = flows.iter().find(|f| !f.parent_uuid.is_empty()).unwrap();
    assert_eq!(inner.parent_uuid, outer.uuid);
    assert_eq!(outer.layers_path, outer_path);
    assert_eq!(inner.layers_path, inner_path);
    assert_eq!(outer.network.as_ref().unwrap().id, id);
    assert!(outer.metric.unwrap().ab_bytes > inner.metric.unwrap().ab_bytes);
}

#[test]
fn vxlan_gives_an_outer_and_an_inner_flow() {
    let outer = eth(
        mac(1),
        mac(2),
        0x0800,
        &ipv4(A, B, 17, &udp(33333, 4789, &vxlan(42, &tunnel_inner()))),
    );
    check_tunnel(
        "vxlan",
        outer,
        "Ethernet/IPv4/UDP/VXLAN",
        "Ethernet/IPv4/ICMPv4",
        42,
    );
}

#[test]
fn geneve_gives_an_outer_and_an_inner_flow() {
    let outer = eth(
        mac(1),
        mac(2),
        0x0800,
        &ipv4(A, B, 17, &udp(33333, 6081, &geneve(77, &tunnel_inner()))),
    );
    check_tunnel(
        "geneve",
        outer,
        "Ethernet/IPv4/UDP/Geneve",
        "Ethernet/IPv4/ICMPv4",
        77,
    );
}

#[test]
fn gre_with_a_key() {
    let inner = ipv4([10, 0, 0, 1], [10, 0, 0, 2], 1, &icmp_echo(true, 5, 1, b""));
    let outer = eth(
        mac(1),
        mac(2),
        0x0800,
        &ipv4(A, B, 47, &gre(0x0800, Some(1234), None, &inner)),
    );
    check_tunnel("gre_key", outer, "Ethernet/IPv4/GRE", "IPv4/ICMPv4", 1234);
}

#[test]
fn mpls_label_stack() {
    let inner = ipv4([10, 0, 0, 1], [10, 0, 0, 2], 17, &udp(1000, 2000, b"hello"));
    let outer = eth(mac(1), mac(2), 0x8847, &mpls(&[100, 200], &inner));
    let flows = check("mpls", LinkType::Ethernet, vec![at(0, outer)], config());
    assert_eq!(flows.len(), 2);
    let inner = flows.iter().find(|f| !f.parent_uuid.is_empty()).unwrap();
    assert_eq!(inner.layers_path, "IPv4/UDP");
    assert_eq!(
        inner.metric.unwrap().ab_bytes,
        33,
        "an IP-only segment counts its IP length"
    );
}

#[test]
fn erspan_mirrored_frames() {
    let mirrored = eth(
        mac(0x21),
        mac(0x22),
        0x0800,
        &ipv4([10, 1, 0, 1], [10, 1, 0, 2], 6, &tcp(1, 2, 0, 0, SYN, b"")),
    );
    let outer = eth(
        mac(1),
        mac(2),
        0x0800,
        &ipv4(
            A,
            B,
            47,
            &gre(0x88be, None, Some(1), &erspan2(3, &mirrored)),
        ),
    );
    check_tunnel(
        "erspan",
        outer,
        "Ethernet/IPv4/GRE",
        "ERSPAN II/Ethernet/IPv4/TCP",
        0,
    );
}

#[test]
fn truncated_snaplen_counts_wire_lengths() {
    let (ma, mb) = (mac(1), mac(2));
    let full = eth(
        ma,
        mb,
        0x0800,
        &ipv4(A, B, 17, &udp(1000, 2000, &[0u8; 1400])),
    );
    let pkts = vec![Pkt {
        t_ns: 0,
        wire: full.len() as u32,
        data: full[..64].to_vec(),
    }];
    let flows = check("truncated_snaplen", LinkType::Ethernet, pkts, config());
    assert_eq!(flows[0].metric.unwrap().ab_bytes, 1442);
    assert_eq!(
        flows[0].transport.as_ref().unwrap().b,
        2000,
        "the headers that fit are read"
    );
}

#[test]
fn raw_ip_captures() {
    let pkts = vec![
        at(0, ipv4(A, B, 1, &icmp_echo(true, 3, 1, b""))),
        at(1, ipv4(B, A, 1, &icmp_echo(false, 3, 1, b""))),
    ];
    let flows = check("raw_ip", LinkType::RawIp, pkts, config());
    assert_eq!(flows.len(), 1);
    assert!(flows[0].link.is_none());
    assert_eq!(flows[0].metric.unwrap().ba_packets, 1);
}

#[test]
fn arp_is_a_link_only_flow_with_an_application_timeout() {
    let (ma, mb) = (mac(1), mac(2));
    let pkts = vec![
        at(0, eth(ma, [0xff; 6], 0x0806, &arp(true, ma, A, [0; 6], B))),
        at(1, eth(mb, ma, 0x0806, &arp(false, mb, B, ma, A))),
        // Traffic 30 s later drives the ticks: the ARP flow times out on its own.
        at(
            30_000,
            eth(ma, mb, 0x0800, &ipv4(A, B, 1, &icmp_echo(true, 1, 1, b""))),
        ),
    ];
    let flows = check("arp", LinkType::Ethernet, pkts, config());
    let arp: Vec<&Flow> = flows.iter().filter(|f| f.application == "ARP").collect();
    assert!(
        arp.iter()
            .any(|f| f.finish_type == skydive_flow::FinishType::Timeout)
    );
    assert!(arp[0].network.is_none());
}

#[test]
fn sctp_flows() {
    let pkts = vec![at(
        0,
        eth(
            mac(1),
            mac(2),
            0x0800,
            &ipv4(A, B, 132, &sctp(3868, 3868, b"diameter")),
        ),
    )];
    let flows = check("sctp", LinkType::Ethernet, pkts, config());
    assert_eq!(flows[0].layers_path, "Ethernet/IPv4/SCTP/SCTPData");
}

#[test]
fn application_ports_name_the_application() {
    let mut cfg = config();
    cfg.app_ports.insert((6, 80), "http".into());
    let pkts: Vec<Pkt> = tcp_conversation().into_iter().take(3).collect();
    let pcap = write_pcap(LinkType::Ethernet, &pkts);
    let flows = replay(&pcap, cfg);
    assert_eq!(flows[0].application, "HTTP");
}
