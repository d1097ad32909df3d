//! The flow storage battery, run against every backend, and the embedded store's
//! retention.

use skydive_flow::{Flow, FlowLayer, FlowMetric, FlowProtocol, RawPacket, TransportLayer};
use skydive_graph::Filter;
mod common;

use skydive_storage::{Embedded, FlowStore, Retention, flow_key};

const T0: i64 = 1_764_000_000_000;

/// Flow `i` of node `tid`, between 10.0.<i/250>.<i%250> and 10.1.0.1, updated at `t`.
fn flow(i: u32, tid: &str, t: i64, packets: i64) -> Flow {
    Flow {
        uuid: format!("{:016x}", 0xf000_0000_0000u64 + u64::from(i)).into(),
        layers_path: "Ethernet/IPv4/TCP".into(),
        application: if i % 3 == 0 { "DNS" } else { "TCP" }.into(),
        link: Some(FlowLayer {
            protocol: FlowProtocol::Ethernet,
            a: "02:00:00:00:00:01".into(),
            b: "02:00:00:00:00:02".into(),
            id: 0,
        }),
        network: Some(FlowLayer {
            protocol: FlowProtocol::Ipv4,
            a: format!("10.0.{}.{}", i / 250, i % 250).into(),
            b: "10.1.0.1".into(),
            id: 0,
        }),
        transport: Some(TransportLayer {
            protocol: FlowProtocol::Tcp,
            a: 40000 + i64::from(i),
            b: 80,
            id: 0,
        }),
        metric: Some(FlowMetric {
            ab_packets: packets,
            ab_bytes: packets * 100,
            start: T0,
            last: t,
            ..Default::default()
        }),
        last_update_metric: Some(FlowMetric {
            ab_packets: 1,
            ab_bytes: 100,
            start: t - 1000,
            last: t,
            ..Default::default()
        }),
        last_raw_packets: vec![RawPacket {
            timestamp: t,
            index: packets,
            data: vec![0xde, 0xad, i as u8],
            link_type: 1,
        }],
        start: T0,
        last: t,
        tracking_id: format!("track{i}").into(),
        l3_tracking_id: format!("l3track{i}").into(),
        node_tid: tid.into(),
        ..Default::default()
    }
}

/// 60 flows on two nodes, each updated 5 times a second apart; flows 40.. end early.
fn load(store: &dyn FlowStore) {
    for step in 1..=5i64 {
        let batch: Vec<Flow> = (0..60u32)
            .filter(|i| *i < 40 || step <= 2)
            .map(|i| {
                flow(
                    i,
                    if i % 2 == 0 { "tid-a" } else { "tid-b" },
                    T0 + step * 1000,
                    step,
                )
            })
            .collect();
        store.store_flows(&batch).unwrap();
    }
}

fn uuids(fs: &[Flow]) -> Vec<u32> {
    let mut v: Vec<u32> = fs
        .iter()
        .map(|f| (u64::from_str_radix(&f.uuid, 16).unwrap() - 0xf000_0000_0000) as u32)
        .collect();
    v.sort();
    v
}

fn battery(store: &dyn FlowStore) {
    load(store);
    let all = store.flows(&Filter::True, T0, T0 + 10_000).unwrap();
    assert_eq!(all.len(), 60);
    // The latest state of each flow is kept.
    let f7 = all.iter().find(|f| f.tracking_id == "track7").unwrap();
    assert_eq!(f7.metric.unwrap().ab_packets, 5);
    assert_eq!(f7.last, T0 + 5000);
    assert_eq!(f7, &{
        let mut f = flow(7, "tid-b", T0 + 5000, 5);
        f.last_raw_packets.clear();
        f
    });

    // Indexed fields, alone, OR-ed, AND-ed with unindexed ones.
    let by_tid = store
        .flows(&Filter::term_str("NodeTID", "tid-a"), 0, i64::MAX)
        .unwrap();
    assert_eq!(uuids(&by_tid), (0..60).step_by(2).collect::<Vec<_>>());
    let by_tracking = store
        .flows(
            &Filter::or(vec![
                Filter::term_str("TrackingID", "track3"),
                Filter::term_str("TrackingID", "track4"),
            ]),
            0,
            i64::MAX,
        )
        .unwrap();
    assert_eq!(uuids(&by_tracking), vec![3, 4]);
    let net = Filter::or(vec![
        Filter::term_str("Network.A", "10.1.0.1"),
        Filter::term_str("Network.B", "10.1.0.1"),
    ]);
    assert_eq!(store.flows(&net, 0, i64::MAX).unwrap().len(), 60);
    let dns_on_a = Filter::and(vec![
        Filter::term_str("Application", "DNS"),
        Filter::term_str("NodeTID", "tid-a"),
        Filter::Lt {
            key: "Transport.A".into(),
            value: 40020,
        },
    ]);
    assert_eq!(
        uuids(&store.flows(&dns_on_a, 0, i64::MAX).unwrap()),
        vec![0, 6, 12, 18]
    );
    let by_uuid = store
        .flows(
            &Filter::term_str("UUID", &flow(9, "", 0, 0).uuid),
            0,
            i64::MAX,
        )
        .unwrap();
    assert_eq!(uuids(&by_uuid), vec![9]);
    // Unindexed only: a scan.
    let port = Filter::term_int("Transport.A", 40011);
    assert_eq!(uuids(&store.flows(&port, 0, i64::MAX).unwrap()), vec![11]);

    // Time: flows 40.. ended at T0+2s.
    let late = store.flows(&Filter::True, T0 + 3000, T0 + 4000).unwrap();
    assert_eq!(late.len(), 40);
    assert!(store.flows(&Filter::True, 0, T0 - 1).unwrap().is_empty());

    // Metric updates over a slice, in order.
    let m = store
        .metrics(
            &Filter::term_str("TrackingID", "track1"),
            T0 + 2500,
            T0 + 3900,
        )
        .unwrap();
    let ms = &m[flow(1, "", 0, 0).uuid.as_str()];
    // The updates over [T0+2s, T0+3s] and [T0+3s, T0+4s] overlap the slice.
    assert_eq!(
        ms.iter().map(|m| m.last).collect::<Vec<_>>(),
        vec![T0 + 3000, T0 + 4000]
    );
    let all_metrics = store.metrics(&Filter::True, 0, i64::MAX).unwrap();
    assert_eq!(
        all_metrics.values().map(Vec::len).sum::<usize>(),
        40 * 5 + 20 * 2
    );

    // Raw packets.
    let p = store
        .raw_packets(&Filter::term_str("TrackingID", "track2"), 0, i64::MAX)
        .unwrap();
    let ps = &p[flow(2, "", 0, 0).uuid.as_str()];
    assert_eq!(ps.len(), 5);
    assert_eq!(ps[4].data, vec![0xde, 0xad, 2]);
    assert_eq!(
        ps.iter().map(|p| p.index).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5]
    );
}

#[test]
fn every_backend_keeping_flows_passes_the_flow_battery() {
    let dir = tempfile::tempdir().unwrap();
    let mut ran = Vec::new();
    for b in common::backends(dir.path()) {
        let Some(flows) = &b.flows else { continue };
        battery(flows.as_ref());
        ran.push(b.driver);
    }
    assert_eq!(ran, ["embedded", "reference"]);
}

#[test]
fn embedded_flows_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    load(&Embedded::open(dir.path()).unwrap());
    let store = Embedded::open(dir.path()).unwrap();
    assert_eq!(store.flows(&Filter::True, 0, i64::MAX).unwrap().len(), 60);
    assert_eq!(flow_key(&flow(1, "", 0, 0).uuid), 0xf000_0000_0001);
}

#[test]
fn retention_by_age_removes_old_flows_metrics_and_revisions_only() {
    use skydive_graph::{Graph, History, Node, metadata};
    let dir = tempfile::tempdir().unwrap();
    let store = Embedded::open(dir.path()).unwrap();
    load(&store);
    let mut g = Graph::new();
    let ev = g
        .add_node(Node::new(
            "n",
            metadata! {"MTU" => 1500},
            "h",
            "agent.h",
            T0,
        ))
        .unwrap();
    store.record(&[ev]).unwrap();
    for i in 1..=4i64 {
        let ev = g
            .update_node_metadata("n", T0 + i * 1000, |m| {
                m.insert("MTU", 1500 + i);
            })
            .unwrap()
            .unwrap();
        store.record(&[ev]).unwrap();
    }

    // Keep 2.5 s at T0+5s: revisions archived before T0+2.5s go (those of T0 and T0+1s,
    // archived at T0+1s and T0+2s), the 20 flows that ended at T0+2s go with their metrics
    // and packets, and the metric updates before T0+2.5s of the others.
    let removed = store
        .enforce_retention(
            Retention {
                max_age: 2500,
                max_size: 0,
            },
            T0 + 5000,
        )
        .unwrap();
    assert_eq!(removed.revisions, 2);
    assert_eq!(removed.flows, 20);
    assert_eq!(removed.metrics, 20 * 2 + 40 * 2);
    assert_eq!(removed.packets, 20 * 2 + 40 * 2);
    assert_eq!(store.flows(&Filter::True, 0, i64::MAX).unwrap().len(), 40);
    let m = store.metrics(&Filter::True, 0, i64::MAX).unwrap();
    assert!(m.values().all(|ms| ms.len() == 3), "{m:?}");
    assert_eq!(store.revision_count().unwrap(), 3);
    // The current revision stays whatever its age.
    let now = store.at(T0 + 100_000).unwrap();
    assert_eq!(now.nodes()[0].revision, 5);
    assert!(store.at(T0 + 500).unwrap().nodes().is_empty());
}

#[test]
fn retention_by_size_removes_the_oldest_first() {
    let dir = tempfile::tempdir().unwrap();
    let store = Embedded::open(dir.path()).unwrap();
    // 40 batches of 500 flows, each batch a minute later than the previous one.
    for b in 0..40i64 {
        let batch: Vec<Flow> = (0..500u32)
            .map(|i| {
                let mut f = flow(b as u32 * 500 + i, "tid", T0 + b * 60_000, 1);
                f.start = T0 + b * 60_000 - 1000;
                f
            })
            .collect();
        store.store_flows(&batch).unwrap();
    }
    let before = store.used_bytes().unwrap();
    let limit = before / 2;
    let removed = store
        .enforce_retention(
            Retention {
                max_age: 0,
                max_size: limit,
            },
            T0 + 40 * 60_000,
        )
        .unwrap();
    assert!(store.used_bytes().unwrap() <= limit);
    assert!(removed.flows > 0 && removed.flows < 20_000, "{removed:?}");
    // What is left is the newest: no flow older than any removed one.
    let left = store.flows(&Filter::True, 0, i64::MAX).unwrap();
    let oldest_left = left.iter().map(|f| f.last).min().unwrap();
    assert_eq!(left.len() as u64, 20_000 - removed.flows);
    assert!(
        left.iter().all(|f| f.last >= oldest_left) && oldest_left > T0,
        "oldest left {oldest_left}"
    );
    assert_eq!(
        left.iter().filter(|f| f.last == oldest_left).count() % 500,
        0,
        "whole minutes removed"
    );
}
