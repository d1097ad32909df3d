//! Criterion benchmarks of the graph and Gremlin hot paths on the synthetic B5 topology.
//! `cargo bench -p skydive-gremlin --bench gremlin`

mod synthetic;

use criterion::{Criterion, criterion_group, criterion_main};
use skydive_graph::{GraphJson, NoHistory};
use skydive_gremlin::{Env, parse, query};

fn bench(c: &mut Criterion) {
    let g = synthetic::build();
    let env = Env {
        graph: &g,
        history: &NoHistory,
        flows: None,
        bpf: None,
        now: 0,
    };
    let (from, to) = synthetic::far_pair();
    let sp = format!("G.V('{from}').ShortestPathTo(Metadata('@ID', '{to}'))");
    let mut group = c.benchmark_group("b5");
    group.sample_size(20);
    group.bench_function("parse", |b| {
        b.iter(|| parse("G.V().Has('Type', 'veth', 'MTU', Gt(1000)).Out('RelationType', 'layer2').Dedup().Count()"));
    });
    group.bench_function("count_veth", |b| {
        b.iter(|| query("G.V().Has('Type','veth').Count()", &env).unwrap());
    });
    group.bench_function("has_name_mtu", |b| {
        b.iter(|| query("G.V().Has('Name', 'eth0', 'MTU', 1500).Count()", &env).unwrap());
    });
    group.bench_function("three_hop_out_from_1000", |b| {
        b.iter(|| query("G.V().Has('Type','netns').Out().Out().Out().Count()", &env).unwrap());
    });
    group.bench_function("shortest_path_far", |b| {
        b.iter(|| query(&sp, &env).unwrap());
    });
    group.bench_function("dump_json", |b| {
        b.iter(|| {
            let mut out = Vec::with_capacity(64 << 20);
            GraphJson::from_view(&g).write_to(&mut out).unwrap();
            out.len()
        });
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
