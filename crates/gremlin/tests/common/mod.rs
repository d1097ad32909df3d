//! The fixture the query tests run against: two hosts, namespaces, veth pairs, a Linux
//! bridge, two OVS bridges joined by patch ports, a container, interface metrics, and a
//! history of revisions (an MTU change, a link going down and up, a namespace deleted, an
//! interface added). Times are `T0 + offset` in milliseconds.

#![allow(dead_code)]

use std::collections::BTreeMap;

use skydive_flow::{
    Flow, FlowLayer, FlowMetric, FlowProtocol, IcmpLayer, IcmpType, RawPacket, TransportLayer,
};
use skydive_graph::{Edge, Graph, GraphEvent, Map, MemoryHistory, Node, Time};
use skydive_gremlin::{Env, FlowQuery, FlowSource, FlowSourceError};

/// 2020-09-13T12:26:40Z, a Sunday.
pub const T0: Time = 1_600_000_000_000;
/// "Now" for every query.
pub const NOW: Time = T0 + 10_000;

pub struct Fixture {
    pub graph: Graph,
    pub history: MemoryHistory,
    pub flows: MemFlows,
}

impl Fixture {
    /// Where queries run: the fixture's graph, history and flows, at [`NOW`].
    pub fn env(&self) -> Env<'_> {
        Env {
            graph: &self.graph,
            history: &self.history,
            flows: Some(&self.flows),
            bpf: None,
            now: NOW,
        }
    }
}

fn meta(json: &str) -> Map {
    serde_json::from_str(json).unwrap_or_else(|e| panic!("bad fixture metadata {json}: {e}"))
}

struct Builder {
    graph: Graph,
    history: MemoryHistory,
}

impl Builder {
    fn record(&mut self, events: impl IntoIterator<Item = GraphEvent>) {
        for ev in events {
            self.history.record(&ev);
        }
    }

    fn node(&mut self, id: &str, host: &str, at: Time, json: &str) {
        let n = Node::new(id, meta(json), host, &format!("agent.{host}"), at);
        let ev = self.graph.add_node(n).expect("fixture node");
        self.record([ev]);
    }

    fn edge(&mut self, id: &str, parent: &str, child: &str, at: Time, json: &str) {
        let host = self
            .graph
            .node(parent)
            .expect("fixture parent")
            .host
            .to_string();
        let e = Edge::new(
            id,
            parent,
            child,
            meta(json),
            &host,
            &format!("agent.{host}"),
            at,
        );
        let ev = self.graph.add_edge(e).expect("fixture edge");
        self.record([ev]);
    }

    fn own(&mut self, parent: &str, child: &str, at: Time) {
        let id = format!("e-{parent}-{child}");
        self.edge(&id, parent, child, at, r#"{"RelationType":"ownership"}"#);
    }

    fn l2(&mut self, id: &str, parent: &str, child: &str, at: Time) {
        self.edge(id, parent, child, at, r#"{"RelationType":"layer2"}"#);
    }

    fn set(&mut self, id: &str, at: Time, key: &str, json: &str) {
        let v: skydive_graph::Value = serde_json::from_str(json).expect("fixture value");
        let ev = self
            .graph
            .update_node_metadata(id, at, |m| {
                m.set_path(key, v);
            })
            .expect("fixture update");
        self.record(ev);
    }
}

fn metric(start: Time, last: Time, rx: i64, rxp: i64, tx: i64, txp: i64) -> String {
    format!(
        r#"{{"Start":{start},"Last":{last},"RxBytes":{rx},"RxPackets":{rxp},"TxBytes":{tx},"TxPackets":{txp}}}"#
    )
}

pub fn fixture() -> Fixture {
    let mut b = Builder {
        graph: Graph::new(),
        history: MemoryHistory::new(),
    };
    let t = |i: i64| T0 + i * 10;
    b.node(
        "host1",
        "host1",
        t(0),
        r#"{"Name":"host1","Type":"host","Hostname":"host1","TID":"tid-host1","OS":"linux",
            "mydict":{"value":123},"myarrays":{"integers":[1,2,3],"strings":["a","b"]},
            "Sockets":[{"Process":"/usr/sbin/nginx","Pid":42,"Name":"nginx","LocalAddress":"10.0.0.2","LocalPort":80,
                        "RemoteAddress":"10.0.0.1","RemotePort":40000,"Protocol":"TCP","State":"ESTABLISHED"}]}"#,
    );
    b.node(
        "host2",
        "host2",
        t(1),
        r#"{"Name":"host2","Type":"host","Hostname":"host2","TID":"tid-host2","OS":"freebsd"}"#,
    );
    b.node("nsA", "host1", t(2), r#"{"Name":"ns-a","Type":"netns","Path":"/var/run/netns/ns-a","Inode":4026532001,"TID":"tid-nsA"}"#);
    b.node("nsB", "host1", t(3), r#"{"Name":"ns-b","Type":"netns","Path":"/var/run/netns/ns-b","Inode":4026532002,"TID":"tid-nsB"}"#);
    b.node(
        "nsC",
        "host2",
        t(4),
        r#"{"Name":"ns-c","Type":"netns","Path":"/var/run/netns/ns-c","Inode":4026532003,"TID":"tid-nsC","Manager":"docker"}"#,
    );
    b.node(
        "vethA",
        "host1",
        t(5),
        r#"{"Name":"eth0","Type":"veth","MAC":"02:00:00:00:00:0a","MTU":1500,"IfIndex":2,"State":"UP",
            "IPV4":["10.0.0.1/24"],"LinkFlags":["UP","BROADCAST","MULTICAST"],"Driver":"veth","TID":"tid-vethA","EncapType":"ether"}"#,
    );
    b.node(
        "loA",
        "host1",
        t(6),
        r#"{"Name":"lo","Type":"device","MTU":65536,"IfIndex":1,"State":"UNKNOWN","IPV4":["127.0.0.1/8"],
            "LinkFlags":["UP","LOOPBACK"],"TID":"tid-loA","EncapType":"loopback"}"#,
    );
    b.node(
        "vethB",
        "host1",
        t(7),
        r#"{"Name":"eth0","Type":"veth","MAC":"02:00:00:00:00:0b","MTU":1500,"IfIndex":2,"State":"UP","IPV4":["10.0.0.2/24"],"TID":"tid-vethB"}"#,
    );
    b.node(
        "peerA",
        "host1",
        t(8),
        r#"{"Name":"veth-a","Type":"veth","MAC":"02:00:00:00:01:0a","MTU":1500,"IfIndex":10,"State":"UP","MasterIndex":12,"TID":"tid-peerA","Driver":"veth"}"#,
    );
    b.node(
        "peerB",
        "host1",
        t(9),
        r#"{"Name":"veth-b","Type":"veth","MAC":"02:00:00:00:01:0b","MTU":1500,"IfIndex":11,"State":"UP","MasterIndex":12,"TID":"tid-peerB","Driver":"veth"}"#,
    );
    b.node(
        "br0",
        "host1",
        t(10),
        r#"{"Name":"br0","Type":"bridge","MAC":"02:00:00:00:02:00","MTU":1500,"IfIndex":12,"State":"UP","IPV4":["10.0.0.254/24"],"TID":"tid-br0","Driver":"bridge"}"#,
    );
    b.node(
        "eth0h1",
        "host1",
        t(11),
        r#"{"Name":"eth0","Type":"device","MAC":"52:54:00:00:00:01","MTU":9000,"IfIndex":3,"State":"UP","Speed":1000,
            "IPV4":["192.168.1.10/24"],"IPV6":["fe80::1/64"],"Driver":"virtio_net","TID":"tid-eth0h1",
            "Features":{"highdma":true,"rx-checksum":true,"tso":false},
            "RoutingTables":[{"ID":254,"Routes":[
                {"Protocol":3,"Prefix":"0.0.0.0/0","NextHops":[{"IP":"192.168.1.1","Priority":0,"IfIndex":3}]},
                {"Protocol":2,"Prefix":"192.168.1.0/24","NextHops":[{"Priority":0,"IfIndex":3}]}]}],
            "Neighbors":[{"IP":"192.168.1.1","MAC":"52:54:00:00:00:fe","IfIndex":3,"State":["NUD_REACHABLE"]},
                         {"IP":"192.168.1.11","MAC":"52:54:00:00:00:02","IfIndex":3}]}"#,
    );
    b.node(
        "brint",
        "host1",
        t(12),
        r#"{"Name":"br-int","Type":"ovsbridge","UUID":"11111111-1111-1111-1111-111111111111","TID":"tid-brint",
            "Ovs":{"OtherConfig":{},"Protocols":["OpenFlow10","OpenFlow13"]}}"#,
    );
    b.node("portP1", "host1", t(13), r#"{"Name":"p1","Type":"ovsport","UUID":"22222222-2222-2222-2222-222222222222","TID":"tid-portP1"}"#);
    b.node(
        "intfP1",
        "host1",
        t(14),
        r#"{"Name":"p1","Type":"internal","MAC":"02:00:00:00:03:01","MTU":1500,"IfIndex":20,"Driver":"openvswitch","TID":"tid-intfP1","State":"UP"}"#,
    );
    b.node(
        "portPatchInt",
        "host1",
        t(15),
        r#"{"Name":"patch-int","Type":"ovsport","TID":"tid-portPatchInt"}"#,
    );
    b.node(
        "patchInt",
        "host1",
        t(16),
        r#"{"Name":"patch-int","Type":"patch","Driver":"openvswitch","TID":"tid-patchInt"}"#,
    );
    b.node(
        "brex",
        "host1",
        t(17),
        r#"{"Name":"br-ex","Type":"ovsbridge","TID":"tid-brex"}"#,
    );
    b.node(
        "portPatchEx",
        "host1",
        t(18),
        r#"{"Name":"patch-ex","Type":"ovsport","TID":"tid-portPatchEx"}"#,
    );
    b.node(
        "patchEx",
        "host1",
        t(19),
        r#"{"Name":"patch-ex","Type":"patch","Driver":"openvswitch","TID":"tid-patchEx"}"#,
    );
    b.node(
        "eth0h2",
        "host2",
        t(20),
        r#"{"Name":"eth0","Type":"device","MAC":"52:54:00:00:00:02","MTU":1500,"IfIndex":2,"State":"UP","IPV4":["192.168.1.11/24"],"Speed":10000,"TID":"tid-eth0h2"}"#,
    );
    b.node(
        "vethC",
        "host2",
        t(21),
        r#"{"Name":"eth0","Type":"veth","MAC":"02:00:00:00:00:0c","MTU":1450,"IfIndex":5,"State":"DOWN","IPV4":["172.16.0.5/16"],"TID":"tid-vethC",
            "Captures":[{"ID":"cap1","State":"active","Type":"afpacket","PacketsReceived":10},
                        {"ID":"cap2","State":"error","Type":"pcap","Error":"boom"}]}"#,
    );
    b.node(
        "web",
        "host2",
        t(22),
        r#"{"Name":"web","Type":"container","Manager":"docker","Container":{"ID":"abc123","Image":"nginx","Labels":{"app":{"tier":"front"}}}}"#,
    );

    let te = T0 + 300;
    for (p, c) in [
        ("host1", "nsA"),
        ("host1", "nsB"),
        ("host2", "nsC"),
        ("nsA", "vethA"),
        ("nsA", "loA"),
        ("nsB", "vethB"),
        ("nsC", "vethC"),
        ("nsC", "web"),
        ("host1", "peerA"),
        ("host1", "peerB"),
        ("host1", "br0"),
        ("host1", "eth0h1"),
        ("host1", "brint"),
        ("host1", "brex"),
        ("host2", "eth0h2"),
        ("brint", "portP1"),
        ("brint", "portPatchInt"),
        ("brex", "portPatchEx"),
        ("brint", "intfP1"),
        ("brint", "patchInt"),
        ("brex", "patchEx"),
    ] {
        b.own(p, c, te);
    }
    b.l2("e-brint-portP1-l2", "brint", "portP1", te);
    b.l2("e-brint-portPatchInt-l2", "brint", "portPatchInt", te);
    b.l2("e-brex-portPatchEx-l2", "brex", "portPatchEx", te);
    b.l2("e-portP1-intfP1", "portP1", "intfP1", te);
    b.l2("e-portPatchInt-patchInt", "portPatchInt", "patchInt", te);
    b.l2("e-portPatchEx-patchEx", "portPatchEx", "patchEx", te);
    b.edge(
        "e-patch",
        "patchInt",
        "patchEx",
        te,
        r#"{"RelationType":"layer2","Type":"patch"}"#,
    );
    b.l2("e-vethA-peerA", "vethA", "peerA", te);
    b.l2("e-vethB-peerB", "vethB", "peerB", te);
    b.l2("e-br0-peerA", "br0", "peerA", te);
    b.l2("e-br0-peerB", "br0", "peerB", te);

    // History.
    b.set("vethA", T0 + 1000, "MTU", "9000");
    b.set(
        "eth0h1",
        T0 + 1000,
        "LastUpdateMetric",
        &metric(T0, T0 + 1000, 100, 2, 50, 1),
    );
    b.set("loA", T0 + 2000, "State", r#""DOWN""#);
    b.set(
        "eth0h1",
        T0 + 2000,
        "LastUpdateMetric",
        &metric(T0 + 1000, T0 + 2000, 300, 4, 100, 2),
    );
    b.set("loA", T0 + 3000, "State", r#""UP""#);
    let ev = b
        .graph
        .delete_node("vethB", T0 + 4000)
        .expect("delete vethB");
    b.record(ev);
    let ev = b.graph.delete_node("nsB", T0 + 4000).expect("delete nsB");
    b.record(ev);
    b.node(
        "vethD",
        "host1",
        T0 + 5000,
        r#"{"Name":"eth1","Type":"veth","MAC":"02:00:00:00:00:0d","MTU":1500,"IfIndex":3,"State":"UP","TID":"tid-vethD"}"#,
    );
    b.own("nsA", "vethD", T0 + 5000);
    b.set(
        "eth0h1",
        T0 + 6000,
        "LastUpdateMetric",
        &metric(T0 + 5000, T0 + 6000, 600, 6, 200, 3),
    );

    Fixture {
        graph: b.graph,
        history: b.history,
        flows: MemFlows::fixture(),
    }
}

fn flow_metric(
    abp: i64,
    abb: i64,
    bap: i64,
    bab: i64,
    start: Time,
    last: Time,
    rtt: i64,
) -> FlowMetric {
    FlowMetric {
        ab_packets: abp,
        ab_bytes: abb,
        ba_packets: bap,
        ba_bytes: bab,
        start,
        last,
        rtt,
    }
}

fn layer(p: FlowProtocol, a: &str, b: &str) -> Option<FlowLayer> {
    Some(FlowLayer {
        protocol: p,
        a: a.into(),
        b: b.into(),
        id: 0,
    })
}

/// Flows answered from memory: the fixture's flow set, filtered by the query as a flow
/// table or a store would. The real sources (agents' tables, storage) implement the same
/// trait elsewhere and are tested there.
pub struct MemFlows {
    pub flows: Vec<Flow>,
    pub stored_metrics: BTreeMap<String, Vec<FlowMetric>>,
}

impl MemFlows {
    fn fixture() -> Self {
        let icmp = |uuid: &str, tid: &str, start: Time| {
            let m = flow_metric(1, 1066, 1, 1066, start, start + 100, 500_000);
            Flow {
                uuid: uuid.into(),
                layers_path: "Ethernet/IPv4/ICMPv4".into(),
                application: "ICMPv4".into(),
                link: layer(
                    FlowProtocol::Ethernet,
                    "02:00:00:00:00:0a",
                    "02:00:00:00:00:0b",
                ),
                network: layer(FlowProtocol::Ipv4, "10.0.0.1", "10.0.0.2"),
                icmp: Some(IcmpLayer {
                    kind: IcmpType::Echo,
                    code: 0,
                    id: 1,
                }),
                metric: Some(m),
                last_update_metric: Some(m),
                start,
                last: start + 100,
                tracking_id: "t1".into(),
                l3_tracking_id: "l1".into(),
                node_tid: tid.into(),
                capture_id: "cap1".into(),
                ..Default::default()
            }
        };
        let mut f1 = icmp("f1", "tid-vethA", T0 + 100);
        f1.last_raw_packets = vec![
            RawPacket {
                timestamp: T0 + 100,
                index: 1,
                data: vec![0xde, 0xad],
                link_type: 1,
            },
            RawPacket {
                timestamp: T0 + 200,
                index: 2,
                data: vec![0xbe, 0xef],
                link_type: 1,
            },
        ];
        f1.raw_packets_captured = 2;
        let f2 = icmp("f2", "tid-peerA", T0 + 101);
        let m3 = flow_metric(10, 5000, 8, 12000, T0 + 300, T0 + 900, 0);
        let f3 = Flow {
            uuid: "f3".into(),
            layers_path: "Ethernet/IPv4/TCP".into(),
            application: "TCP".into(),
            link: layer(
                FlowProtocol::Ethernet,
                "02:00:00:00:00:0a",
                "02:00:00:00:00:0b",
            ),
            network: layer(FlowProtocol::Ipv4, "10.0.0.1", "10.0.0.2"),
            transport: Some(TransportLayer {
                protocol: FlowProtocol::Tcp,
                a: 40000,
                b: 80,
                id: 0,
            }),
            metric: Some(m3),
            last_update_metric: Some(m3),
            start: T0 + 300,
            last: T0 + 900,
            tracking_id: "t3".into(),
            l3_tracking_id: "l3".into(),
            node_tid: "tid-vethA".into(),
            ..Default::default()
        };
        let m4 = flow_metric(1, 60, 1, 120, T0 + 7000, T0 + 7001, 0);
        let f4 = Flow {
            uuid: "f4".into(),
            layers_path: "Ethernet/IPv4/UDP/DNS".into(),
            application: "DNS".into(),
            link: layer(
                FlowProtocol::Ethernet,
                "02:00:00:00:00:0c",
                "02:00:00:00:00:ff",
            ),
            network: layer(FlowProtocol::Ipv4, "172.16.0.5", "8.8.8.8"),
            transport: Some(TransportLayer {
                protocol: FlowProtocol::Udp,
                a: 5353,
                b: 53,
                id: 0,
            }),
            metric: Some(m4),
            last_update_metric: Some(m4),
            start: T0 + 7000,
            last: T0 + 7001,
            tracking_id: "t4".into(),
            l3_tracking_id: "l4".into(),
            node_tid: "tid-vethC".into(),
            ..Default::default()
        };
        let stored_metrics = BTreeMap::from([(
            "f1".to_string(),
            vec![
                flow_metric(1, 1066, 0, 0, T0 + 100, T0 + 150, 0),
                flow_metric(0, 0, 1, 1066, T0 + 150, T0 + 200, 0),
            ],
        )]);
        MemFlows {
            flows: vec![f1, f2, f3, f4],
            stored_metrics,
        }
    }

    fn matching<'a>(&'a self, q: &'a FlowQuery) -> impl Iterator<Item = &'a Flow> + 'a {
        self.flows.iter().filter(move |f| {
            q.filter.eval(*f)
                && q.time
                    .is_none_or(|t| f.start <= t.last && f.last >= t.start)
        })
    }
}

impl FlowSource for MemFlows {
    fn flows(&self, q: &FlowQuery) -> Result<Vec<Flow>, FlowSourceError> {
        Ok(self.matching(q).cloned().collect())
    }

    fn metrics(&self, q: &FlowQuery) -> Result<BTreeMap<String, Vec<FlowMetric>>, FlowSourceError> {
        Ok(self
            .matching(q)
            .filter_map(|f| {
                let m = self.stored_metrics.get(f.uuid.as_str())?.clone();
                Some((f.uuid.to_string(), m))
            })
            .collect())
    }

    fn raw_packets(
        &self,
        q: &FlowQuery,
    ) -> Result<BTreeMap<String, Vec<RawPacket>>, FlowSourceError> {
        Ok(self
            .matching(q)
            .filter(|f| !f.last_raw_packets.is_empty())
            .map(|f| (f.uuid.to_string(), f.last_raw_packets.clone()))
            .collect())
    }
}
