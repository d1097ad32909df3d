//! Runs the per-packet path on one frame many times, for instruction counts under callgrind:
//! `valgrind --tool=callgrind target/release/examples/hotpath`.

use skydive_flow::decode::{Decoded, LinkType, decode, segments};
use skydive_flow::packet::{keys, segment_info};
use skydive_flow::{FlowTable, Packet, TableConfig};

fn main() {
    let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00];
    f.extend_from_slice(&[
        0x45, 0, 0, 40, 0, 1, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
    ]);
    f.extend_from_slice(&[
        0x04, 0x00, 0x01, 0xbb, 0, 0, 0, 1, 0, 0, 0, 1, 0x50, 0x10, 0xff, 0xff, 0, 0, 0, 0,
    ]);
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let mut d = Decoded::default();
    let mut segs = Vec::new();
    let mut acc = 0u64;
    for _ in 0..n {
        decode(std::hint::black_box(&f), LinkType::Ethernet, &mut d);
        segments(&d, &mut segs);
        let info = segment_info(&f, &d, segs[0]);
        acc ^= keys(&info, true, 0).key;
    }
    // The table's path, in groups of 64 frames as a capture ring gives them.
    let mut t = FlowTable::new(TableConfig::default());
    let mut group: Vec<Packet<'_>> = Vec::with_capacity(64);
    for i in 0..n as i64 {
        group.push(Packet {
            data: &f,
            wire_len: 54,
            ts_ns: i * 1000,
        });
        if group.len() == 64 {
            t.process_batch(std::hint::black_box(&group), LinkType::Ethernet);
            group.clear();
        }
    }
    t.process_batch(&group, LinkType::Ethernet);
    println!("{acc} {}", t.len());
}
