//! Hostile input never panics the flow engine: arbitrary bytes, and real frames cut,
//! corrupted and stacked, through every link type and option.

mod frames;

use frames::*;
use proptest::prelude::*;
use skydive_flow::decode::LinkType;
use skydive_flow::decode::{Decoded, Segment, decode, segments};
use skydive_flow::fuzzing::{batch_matches_one_by_one, common_case_agrees};
use skydive_flow::packet::{fast_info, fast_vxlan};
use skydive_flow::{FlowTable, Packet, TableConfig};

fn table() -> FlowTable {
    FlowTable::new(TableConfig {
        node_tid: "t".into(),
        raw_packet_limit: 3,
        extra_tcp_metric: true,
        ip_defrag: true,
        extra_layers: 7,
        max_entries: 64,
        update_ms: 5,
        expire_ms: 20,
        ..Default::default()
    })
}

fn samples() -> Vec<Vec<u8>> {
    let a = [10, 0, 0, 1];
    let b = [10, 0, 0, 2];
    let inner = eth(
        mac(3),
        mac(4),
        0x0800,
        &ipv4(a, b, 17, &udp(53, 53, &dns(1, "a.b", Some([1, 2, 3, 4])))),
    );
    vec![
        eth(
            mac(1),
            mac(2),
            0x0800,
            &ipv4(a, b, 6, &tcp(1, 2, 3, 4, SYN, b"x")),
        ),
        eth(
            mac(1),
            mac(2),
            0x0800,
            &ipv4(a, b, 17, &udp(1, 4789, &vxlan(1, &inner))),
        ),
        eth(
            mac(1),
            mac(2),
            0x0800,
            &ipv4(a, b, 17, &udp(1, 6081, &geneve(1, &inner))),
        ),
        eth(
            mac(1),
            mac(2),
            0x0800,
            &ipv4(
                a,
                b,
                47,
                &gre(0x88be, Some(1), Some(2), &erspan2(1, &inner)),
            ),
        ),
        eth(
            mac(1),
            mac(2),
            0x8847,
            &mpls(&[1, 2, 3], &ipv4(a, b, 1, &icmp_echo(true, 1, 1, b""))),
        ),
        eth(
            mac(1),
            mac(2),
            0x86dd,
            &ipv6(
                v6(1),
                v6(2),
                58,
                &[(0, vec![0; 8]), (60, vec![0; 8])],
                &icmpv6_echo(true, 1, 1),
            ),
        ),
        vlan_tagged(
            mac(1),
            mac(2),
            &[(0x88a8, 1), (0x8100, 2), (0x8100, 3)],
            0x0806,
            &arp(true, mac(1), a, mac(2), b),
        ),
        eth(
            mac(1),
            mac(2),
            0x0800,
            &ipv4_frag(a, b, 17, 7, 0x2000, 64, &udp(1, 67, &[0; 300])),
        ),
        eth(
            mac(1),
            mac(2),
            0x0800,
            &ipv4(a, b, 132, &sctp(1, 2, b"data")),
        ),
        eth(
            mac(1),
            mac(2),
            0x0800,
            &ipv4(a, b, 112, &[0x21, 1, 100, 1, 0, 1, 0, 0, 1, 2, 3, 4]),
        ),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..300), ts in 0i64..1_000_000_000) {
        let mut t = table();
        for link in [
            LinkType::Ethernet,
            LinkType::RawIp,
            LinkType::LinuxSll,
            LinkType::LinuxSll2,
        ] {
            t.process(&data, data.len() as u32, ts, link);
        }
        let _ = t.advance(ts / 1_000_000 + 100);
        let _ = t.flows();
        let _ = t.flush(ts / 1_000_000 + 200);
    }

    #[test]
    fn corrupted_real_frames_never_panic(
        which in 0usize..10,
        cut in 0usize..400,
        flips in proptest::collection::vec((0usize..400, any::<u8>()), 0..8),
        wire in any::<u32>(),
    ) {
        let mut f = samples()[which].clone();
        for (at, v) in flips {
            if !f.is_empty() {
                let i = at % f.len();
                f[i] ^= v;
            }
        }
        f.truncate(cut.min(f.len()));
        let mut t = table();
        for i in 0..3 {
            t.process(&f, wire, i * 1_000_000, LinkType::Ethernet);
        }
        let flows = t.flush(10);
        for fl in flows {
            serde_json::to_string(&fl).unwrap();
        }
    }
}

#[test]
fn a_full_table_evicts_and_counts() {
    let mut t = table();
    for i in 0..200u16 {
        let f = eth(
            mac(1),
            mac(2),
            0x0800,
            &ipv4([10, 0, 0, 1], [10, 0, 0, 2], 17, &udp(i, 9, b"")),
        );
        t.process(&f, f.len() as u32, i as i64, LinkType::Ethernet);
    }
    assert_eq!(t.len(), 64);
    assert_eq!(t.stats().evicted, 200 - 64);
}

/// Inputs the fuzzer once crashed the engine with, replayed as the fuzz target does.
#[test]
fn fuzz_findings_stay_fixed() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz-regressions");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let data = std::fs::read(e.unwrap().path()).unwrap();
        skydive_flow::fuzzing::frame(&data);
        n += 1;
    }
    assert!(n > 0, "no inputs in {}", dir.display());
}

/// Frames the common-case path is made for, and near misses: IPv4 and IPv6, TCP and UDP,
/// with and without a VLAN tag, on ordinary and on decoded ports.
fn common_frames() -> Vec<Vec<u8>> {
    let (a, b) = ([10, 0, 0, 1], [10, 0, 0, 2]);
    let mut out = Vec::new();
    for (sp, dp) in [
        (40000, 443),
        (443, 40000),
        (53, 40000),
        (40000, 4789),
        (7, 7),
    ] {
        let v4t = ipv4(a, b, 6, &tcp(sp, dp, 1, 2, SYN | ACK, b"payload"));
        let v4u = ipv4(a, b, 17, &udp(sp, dp, b"payload"));
        let v6t = ipv6(v6(1), v6(2), 6, &[], &tcp(sp, dp, 1, 2, FIN, b""));
        let v6u = ipv6(v6(1), v6(2), 17, &[], &udp(sp, dp, b"x"));
        for (t, l3) in [(0x0800, v4t), (0x0800, v4u), (0x86dd, v6t), (0x86dd, v6u)] {
            out.push(eth(mac(1), mac(2), t, &l3));
            out.push(vlan_tagged(mac(2), mac(1), &[(0x8100, 7)], t, &l3));
        }
    }
    // ICMPv4: echo request and reply, an error, and ICMPv4 carried by IPv6.
    let v4e = ipv4(a, b, 1, &icmp_echo(true, 9, 1, b"ping"));
    let v4r = ipv4(b, a, 1, &icmp_echo(false, 9, 1, b"ping"));
    let v4u = ipv4(a, b, 1, &[3, 3, 0, 0, 0, 0, 0, 0, 0x45, 0]);
    let v6e = ipv6(v6(1), v6(2), 1, &[], &icmp_echo(true, 9, 1, b""));
    for (t, l3) in [(0x0800, v4e), (0x0800, v4r), (0x0800, v4u), (0x86dd, v6e)] {
        out.push(eth(mac(1), mac(2), t, &l3));
        out.push(vlan_tagged(mac(2), mac(1), &[(0x8100, 7)], t, &l3));
    }
    out
}

/// A frame with bytes flipped (`(offset, xor)`, offsets wrapping) and cut to `cut` bytes
/// (at least the Ethernet header).
fn altered(frame: &[u8], cut: usize, flips: &[(usize, u8)]) -> Vec<u8> {
    let mut f = frame.to_vec();
    for &(at, v) in flips {
        let i = at % f.len();
        f[i] ^= v;
    }
    f.truncate(cut.max(14).min(f.len()));
    f
}

/// One of `frames`, a few of its bytes flipped (at offsets below `flip_below`) and cut (to
/// fewer than `cut_below` bytes): frames near the common case, on either side of it.
fn altered_frames(
    frames: Vec<Vec<u8>>,
    cut_below: usize,
    flip_below: usize,
) -> impl Strategy<Value = Vec<u8>> {
    let flips = proptest::collection::vec((0..flip_below, any::<u8>()), 0..3);
    (0..frames.len(), 0..cut_below, flips)
        .prop_map(move |(which, cut, flips)| altered(&frames[which], cut, &flips))
}

/// Whole frames as captured packets, `step_ns` apart.
fn as_packets(frames: &[Vec<u8>], step_ns: i64) -> Vec<Packet<'_>> {
    frames
        .iter()
        .enumerate()
        .map(|(i, f)| Packet {
            data: f,
            wire_len: f.len() as u32,
            ts_ns: i as i64 * step_ns,
        })
        .collect()
}

/// A frame through the general decoder: what it decoded, and its segments.
fn decoded(f: &[u8]) -> (Decoded, Vec<Segment>) {
    let mut d = Decoded::default();
    decode(f, LinkType::Ethernet, &mut d);
    let mut segs = Vec::new();
    segments(&d, &mut segs);
    (d, segs)
}

/// VXLAN frames the tunnel's common-case path is made for, and near misses: IPv4 and IPv6
/// tunnels, tagged or not, to and from port 4789 (and from 4789 to DNS's port), carrying
/// TCP, UDP (on an ordinary port and on DNS's), ICMPv4 and IPv6 frames, tagged or not.
fn vxlan_frames() -> Vec<Vec<u8>> {
    let (a, b) = ([10, 0, 0, 1], [10, 0, 0, 2]);
    let inner_l3 = [
        (
            0x0800,
            ipv4(a, b, 6, &tcp(40000, 443, 1, 2, ACK, b"payload")),
        ),
        (0x0800, ipv4(a, b, 17, &udp(40000, 5000, b"x"))),
        (0x0800, ipv4(a, b, 17, &udp(40000, 53, b"x"))),
        (0x0800, ipv4(a, b, 1, &icmp_echo(true, 9, 1, b"ping"))),
        (
            0x86dd,
            ipv6(v6(1), v6(2), 6, &[], &tcp(1, 2, 1, 2, SYN, b"")),
        ),
    ];
    let mut out = Vec::new();
    for (t, l3) in &inner_l3 {
        for inner in [
            eth(mac(3), mac(4), *t, l3),
            vlan_tagged(mac(4), mac(3), &[(0x8100, 9)], *t, l3),
        ] {
            for (sp, dp) in [(40000, 4789), (4789, 40000), (4789, 53)] {
                let tunnel = udp(sp, dp, &vxlan(77, &inner));
                let v4 = ipv4([192, 0, 2, 1], [192, 0, 2, 2], 17, &tunnel);
                let v6 = ipv6(v6(7), v6(8), 17, &[], &tunnel);
                out.push(eth(mac(9), mac(10), 0x0800, &v4));
                out.push(vlan_tagged(mac(10), mac(9), &[(0x8100, 5)], 0x86dd, &v6));
            }
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    /// Where the common-case path takes a frame, it reads exactly what the decoder does
    /// (the check the flow fuzz target also runs).
    #[test]
    fn the_common_case_path_agrees_with_the_decoder(
        f in altered_frames(common_frames(), 200, 120),
    ) {
        common_case_agrees(&f);
    }

    /// A run of frames near the common case (tunnels included), some altered, handed to a
    /// small table in one batch gives exactly the flows and counters of the same frames
    /// handed one by one: flows made, found again and evicted inside a group.
    #[test]
    fn a_batch_gives_the_flows_of_its_frames_one_by_one(
        frames in proptest::collection::vec(
            altered_frames([common_frames(), vxlan_frames(), samples()].concat(), 400, 160),
            1..80,
        ),
    ) {
        let small = || {
            FlowTable::new(TableConfig {
                max_entries: 8,
                ..table().config().clone()
            })
        };
        batch_matches_one_by_one(&as_packets(&frames, 1_000_000), LinkType::Ethernet, small, 1_000);
    }

    /// Where the tunnel's common-case path takes a frame, it reads exactly what the decoder
    /// does for the frame's two segments.
    #[test]
    fn the_vxlan_path_agrees_with_the_decoder(f in altered_frames(vxlan_frames(), 260, 160)) {
        common_case_agrees(&f);
    }
}

#[test]
fn the_vxlan_path_takes_the_common_case() {
    let frames = vxlan_frames();
    assert_eq!(frames.len(), 60);
    let taken: Vec<bool> = frames.iter().map(|f| fast_vxlan(f).is_some()).collect();
    for (i, t) in taken.iter().enumerate() {
        let (inner, ports) = (i / 12, i / 2 % 3);
        // Inner DNS is decoded further; to port 53, the decoder takes the tunnel for DNS (the
        // destination port comes first).
        let want = inner != 2 && ports != 2;
        assert_eq!(*t, want, "frame {i}: {taken:?}");
    }
}

/// Frames cut at every length (as a capture's snap length cuts them): the table counts as
/// truncated exactly those the decoder flags, the common case's frames cut after their
/// transport header included.
#[test]
fn cut_frames_are_counted_as_the_decoder_flags_them() {
    let mut t = table();
    let mut want = 0;
    for f in [common_frames(), vxlan_frames()].concat() {
        for n in 0..=f.len() {
            want += decoded(&f[..n]).0.truncated as u64;
            t.process(&f[..n], f.len() as u32, 1_000_000, LinkType::Ethernet);
        }
    }
    assert!(want > 1000, "{want}");
    assert_eq!(t.stats().truncated, want);
}

#[test]
fn the_common_case_path_takes_the_common_case() {
    let frames = common_frames();
    let taken: Vec<bool> = frames.iter().map(|f| fast_info(f).is_some()).collect();
    // Ordinary ports: taken, IPv4 and IPv6, tagged or not; DNS and VXLAN ports: not.
    assert!(taken[..8].iter().all(|t| *t), "{taken:?}");
    assert!(taken[8..16].iter().all(|t| *t), "{taken:?}");
    let dns_udp = [&taken[18..20], &taken[22..24]];
    assert!(dns_udp.iter().all(|t| t.iter().all(|t| !t)), "{taken:?}");
    let dns_tcp = [&taken[16..18], &taken[20..22]];
    assert!(dns_tcp.iter().all(|t| t.iter().all(|t| *t)), "{taken:?}");
    assert!(
        [26, 27, 30, 31].iter().all(|i| !taken[*i]),
        "VXLAN: {taken:?}"
    );
    assert!(taken[32..].iter().all(|t| *t), "{taken:?}");
}

/// A full table evicting flows in the middle of a group of frames: the group gives what the
/// same frames give one by one (a flow found before the eviction is looked up again).
#[test]
fn evictions_inside_a_group_match_frames_one_by_one() {
    let frames: Vec<Vec<u8>> = (0..96u16)
        .map(|i| {
            let f = (i * 7) % 10;
            eth(
                mac(1),
                mac(2),
                0x0800,
                &ipv4(
                    [10, 0, 0, 1],
                    [10, 0, 1, f as u8],
                    17,
                    &udp(1000 + f, 2000, b"x"),
                ),
            )
        })
        .collect();
    let cfg = TableConfig {
        max_entries: 4,
        ..Default::default()
    };
    let batch = as_packets(&frames, 1000);
    let mut one = FlowTable::new(cfg.clone());
    for p in &batch {
        one.process(p.data, p.wire_len, p.ts_ns, LinkType::Ethernet);
    }
    let mut grouped = FlowTable::new(cfg);
    grouped.process_batch(&batch, LinkType::Ethernet);
    assert!(one.stats().evicted > 50, "{:?}", one.stats());
    assert_eq!(one.stats(), grouped.stats());
    let sum = |t: &mut FlowTable| {
        let mut v: Vec<(skydive_flow::Str, i64)> = t
            .flush(1)
            .into_iter()
            .map(|f| (f.uuid, f.metric.unwrap().ab_packets))
            .collect();
        v.sort();
        v
    };
    assert_eq!(sum(&mut one), sum(&mut grouped));
}
