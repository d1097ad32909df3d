//! Micro-benchmarks of the flow engine's hot path: decoding, keys, and the table with one
//! flow (all in cache) and with 100,000 flows (memory-bound). `cargo bench -p skydive-flow
//! --bench engine`.

#[path = "../tests/frames/mod.rs"]
mod frames;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use frames::*;
use skydive_flow::decode::{Decoded, LinkType, decode, segments};
use skydive_flow::packet::{keys, segment_info};
use skydive_flow::{FlowTable, TableConfig};

fn tcp_frame(i: u32) -> Vec<u8> {
    let a = [10, (i >> 16) as u8, (i >> 8) as u8, i as u8];
    eth(
        mac(1),
        mac(2),
        0x0800,
        &ipv4(
            a,
            [10, 9, 9, 9],
            6,
            &tcp(1024 + (i % 50000) as u16, 443, 1, 1, ACK, &[0; 10]),
        ),
    )
}

fn bench(c: &mut Criterion) {
    let f = tcp_frame(1);
    let mut g = c.benchmark_group("flow");
    g.throughput(Throughput::Elements(1));
    let mut d = Decoded::default();
    g.bench_function("decode", |b| {
        b.iter(|| decode(std::hint::black_box(&f), LinkType::Ethernet, &mut d));
    });
    decode(&f, LinkType::Ethernet, &mut d);
    let mut segs = Vec::new();
    segments(&d, &mut segs);
    g.bench_function("segment_info", |b| {
        b.iter(|| segment_info(std::hint::black_box(&f), &d, segs[0]).ip_len);
    });
    let info = segment_info(&f, &d, segs[0]);
    g.bench_function("keys_only", |b| {
        b.iter(|| keys(std::hint::black_box(&info), true, 0));
    });
    g.bench_function("keys", |b| {
        b.iter(|| {
            let info = segment_info(std::hint::black_box(&f), &d, segs[0]);
            keys(&info, true, 0)
        });
    });
    let mut t = FlowTable::new(TableConfig::default());
    let mut ns = 0i64;
    g.bench_function("table_one_flow", |b| {
        b.iter(|| {
            ns += 1000;
            t.process(std::hint::black_box(&f), 64, ns, LinkType::Ethernet);
        });
    });
    let frames: Vec<Vec<u8>> = (0..100_000).map(tcp_frame).collect();
    let mut t = FlowTable::new(TableConfig::default());
    let mut i = 0usize;
    g.bench_function("table_100k_flows", |b| {
        b.iter(|| {
            // A stride that visits every flow in a scattered order.
            i = (i + 7919) % frames.len();
            ns += 1000;
            t.process(&frames[i], 64, ns, LinkType::Ethernet);
        });
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
