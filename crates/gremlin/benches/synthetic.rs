//! A deterministic synthetic topology for the graph and Gremlin benchmarks (B5).
//!
//! 100 hosts, each with 10 namespaces holding 49 veths whose peers sit in the host and are
//! ports of one Linux bridge, 8 devices, and a chain of 20 layer2 links between peers;
//! hosts are chained through their `eth0`. 100,000 nodes and 200,100 edges, with the
//! metadata a netlink probe writes.

#![allow(dead_code)]

use skydive_graph::{Edge, Graph, Map, Node, Value, metadata};

pub const HOSTS: usize = 100;
const NS_PER_HOST: usize = 10;
const VETH_PER_NS: usize = 49;
const DEVICES: usize = 8;
const CHAIN: usize = 20;

fn intf(name: &str, ty: &str, mac: u64, ifindex: i64, ip: Option<String>) -> Map {
    let mut m = metadata! {
        "Name" => name,
        "Type" => ty,
        "TID" => format!("{:016x}-tid", mac.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
        "MAC" => format!(
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            2, (mac >> 32) & 0xff, (mac >> 24) & 0xff, (mac >> 16) & 0xff, (mac >> 8) & 0xff, mac & 0xff
        ),
        "MTU" => 1500,
        "IfIndex" => ifindex,
        "State" => "UP",
        "Driver" => if ty == "device" { "virtio_net" } else { ty },
        "EncapType" => "ether",
    };
    m.insert(
        "LinkFlags",
        Value::from(vec!["UP", "BROADCAST", "MULTICAST"]),
    );
    if let Some(ip) = ip {
        m.insert("IPV4", Value::from(vec![ip]));
    }
    m
}

fn ownership() -> Map {
    metadata! {"RelationType" => "ownership"}
}

fn layer2() -> Map {
    metadata! {"RelationType" => "layer2"}
}

/// Builds the synthetic graph.
pub fn build() -> Graph {
    let mut g = Graph::new();
    // Elements are created one millisecond apart, as an agent discovering them would.
    let clock = std::cell::Cell::new(1_600_000_000_000i64);
    let t = || {
        clock.set(clock.get() + 1);
        clock.get()
    };
    let mut mac = 0u64;
    let mut edge_no = 0u64;
    let mut add_edge = |g: &mut Graph, p: &str, c: &str, m: Map| {
        edge_no += 1;
        let host = g.node(p).map(|n| n.host.to_string()).unwrap_or_default();
        g.add_edge(Edge::new(
            format!("e{edge_no}"),
            p,
            c,
            m,
            &host,
            "agent.bench",
            t(),
        ))
        .expect("edge");
    };
    for h in 0..HOSTS {
        let host = format!("h{h:03}");
        let hm = metadata! {"Name" => host.as_str(), "Type" => "host", "TID" => format!("tid-{host}"), "OS" => "linux"};
        g.add_node(Node::new(
            host.as_str(),
            hm,
            &host,
            &format!("agent.{host}"),
            t(),
        ))
        .expect("host");
        let br = format!("{host}-br");
        mac += 1;
        g.add_node(Node::new(
            br.as_str(),
            intf("br0", "bridge", mac, 2, None),
            &host,
            "agent",
            t(),
        ))
        .expect("bridge");
        add_edge(&mut g, &host, &br, ownership());
        for d in 0..DEVICES {
            let id = format!("{host}-eth{d}");
            mac += 1;
            let ip = Some(format!("192.168.{}.{}/16", h, d + 1));
            g.add_node(Node::new(
                id.as_str(),
                intf(&format!("eth{d}"), "device", mac, 3 + d as i64, ip),
                &host,
                "agent",
                t(),
            ))
            .expect("device");
            add_edge(&mut g, &host, &id, ownership());
        }
        let mut peers = Vec::new();
        for n in 0..NS_PER_HOST {
            let ns = format!("{host}-ns{n}");
            let nm = metadata! {"Name" => format!("ns{n}"), "Type" => "netns", "Path" => format!("/var/run/netns/ns{n}"), "TID" => format!("tid-{ns}")};
            g.add_node(Node::new(ns.as_str(), nm, &host, "agent", t()))
                .expect("netns");
            add_edge(&mut g, &host, &ns, ownership());
            for i in 0..VETH_PER_NS {
                let v = format!("{ns}-v{i}");
                let p = format!("{ns}-p{i}");
                mac += 1;
                let ip = Some(format!("10.{}.{}.{}/24", h, n, i + 1));
                g.add_node(Node::new(
                    v.as_str(),
                    intf("eth0", "veth", mac, 2, ip),
                    &host,
                    "agent",
                    t(),
                ))
                .expect("veth");
                mac += 1;
                g.add_node(Node::new(
                    p.as_str(),
                    intf(&format!("veth{n}x{i}"), "veth", mac, 100 + i as i64, None),
                    &host,
                    "agent",
                    t(),
                ))
                .expect("peer");
                add_edge(&mut g, &ns, &v, ownership());
                add_edge(&mut g, &host, &p, ownership());
                add_edge(&mut g, &v, &p, layer2());
                add_edge(&mut g, &br, &p, layer2());
                peers.push(p);
            }
        }
        for w in peers.windows(2).take(CHAIN) {
            add_edge(&mut g, &w[0], &w[1], layer2());
        }
    }
    for h in 0..HOSTS - 1 {
        add_edge(
            &mut g,
            &format!("h{h:03}-eth0"),
            &format!("h{:03}-eth0", h + 1),
            layer2(),
        );
    }
    g
}

/// A node deep in the first host and one deep in the last: far apart.
pub fn far_pair() -> (String, String) {
    (
        "h000-ns3-v7".to_string(),
        format!("h{:03}-ns9-v48", HOSTS - 1),
    )
}
