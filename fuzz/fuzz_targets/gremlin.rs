//! Any byte string, as a Gremlin query, against a small graph with history: the parser and
//! the evaluator must return a result or an error, never panic.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use skydive_graph::{Edge, Graph, MemoryHistory, Node, metadata};
use skydive_gremlin::{Env, query};

struct World {
    graph: Graph,
    history: MemoryHistory,
}

fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| {
        let mut graph = Graph::new();
        let mut history = MemoryHistory::new();
        let rec = |evs: Vec<skydive_graph::GraphEvent>, h: &mut MemoryHistory| evs.iter().for_each(|e| h.record(e));
        let t0 = 1_600_000_000_000;
        let nodes = [
            ("h", r#"{"Name":"host1","Type":"host","TID":"t-h","Sockets":[{"LocalAddress":"10.0.0.1","LocalPort":80,"Protocol":"TCP"}]}"#),
            ("ns", r#"{"Name":"ns","Type":"netns","Path":"/var/run/netns/ns"}"#),
            ("a", r#"{"Name":"eth0","Type":"veth","MTU":1500,"MAC":"02:00:00:00:00:01","IPV4":["10.0.0.1/24"],"TID":"t-a","LastUpdateMetric":{"Start":1,"Last":2,"RxBytes":3}}"#),
            ("b", r#"{"Name":"br0","Type":"bridge","MTU":"1500","Captures":[{"ID":"c","State":"active"}],
                      "RoutingTables":[{"Routes":[{"Prefix":"0.0.0.0/0","NextHops":[{"IP":"10.0.0.254"}]}]}]}"#),
        ];
        for (i, (id, m)) in nodes.iter().enumerate() {
            let n = Node::new(*id, serde_json::from_str(m).unwrap(), "host1", "agent.host1", t0 + i as i64);
            rec(vec![graph.add_node(n).unwrap()], &mut history);
        }
        for (id, p, c, r) in [("e1", "h", "ns", "ownership"), ("e2", "ns", "a", "ownership"), ("e3", "b", "a", "layer2")] {
            let e = Edge::new(id, p, c, metadata! {"RelationType" => r}, "host1", "agent.host1", t0 + 10);
            rec(vec![graph.add_edge(e).unwrap()], &mut history);
        }
        let ev = graph.update_node_metadata("a", t0 + 20, |m| { m.insert("MTU", 9000); }).unwrap();
        rec(ev.into_iter().collect(), &mut history);
        rec(graph.delete_node("b", t0 + 30).unwrap(), &mut history);
        World { graph, history }
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(q) = std::str::from_utf8(data) else { return };
    let w = world();
    let env = Env { graph: &w.graph, history: &w.history, flows: None, bpf: None, now: 1_600_000_000_100 };
    if let Ok(out) = query(q, &env) {
        let _ = out.to_json();
    }
});
