//! Random sequences of changes against a plain model of the graph: whatever the order of
//! additions, deletions (which free slots for reuse), updates and snapshots, the live graph
//! answers by ID and by slot exactly as the model says, and a snapshot keeps its answers.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use skydive_graph::{Edge, Graph, GraphView, Node, metadata};

#[derive(Debug, Clone)]
enum Change {
    AddNode(u8),
    DeleteNode(u8),
    AddEdge(u8, u8),
    DeleteEdge(u8, u8),
    Update(u8),
    Snapshot,
}

fn change() -> impl Strategy<Value = Change> {
    prop_oneof![
        3 => (0u8..24).prop_map(Change::AddNode),
        1 => (0u8..24).prop_map(Change::DeleteNode),
        3 => (0u8..24, 0u8..24).prop_map(|(a, b)| Change::AddEdge(a, b)),
        1 => (0u8..24, 0u8..24).prop_map(|(a, b)| Change::DeleteEdge(a, b)),
        1 => (0u8..24).prop_map(Change::Update),
        1 => Just(Change::Snapshot),
    ]
}

/// Nodes, and edges as (parent, child) by edge ID.
#[derive(Default, Clone)]
struct Model {
    nodes: BTreeSet<u8>,
    edges: BTreeMap<String, (u8, u8)>,
}

fn nid(n: u8) -> String {
    format!("n{n}")
}

fn eid(a: u8, b: u8) -> String {
    format!("e{a}-{b}")
}

/// Each node's out and in neighbours, as `edge>node` and `edge<node`, sorted.
type Adjacency = BTreeMap<String, (Vec<String>, Vec<String>)>;

/// What the graph says, in a form comparable with the model: every node's out and in
/// neighbours (by slot, from the node the graph holds, and by ID through the edges).
fn answers(g: &Graph) -> Adjacency {
    let mut out = BTreeMap::new();
    for n in g.nodes() {
        let mut by_slot = (Vec::new(), Vec::new());
        g.each_out_neighbour(n, &mut |e, m| by_slot.0.push(format!("{}>{}", e.id, m.id)));
        g.each_in_neighbour(n, &mut |e, m| by_slot.1.push(format!("{}<{}", e.id, m.id)));
        let by_id = (
            g.out_edges(&n.id)
                .map(|e| format!("{}>{}", e.id, g.node(&e.child).unwrap().id))
                .collect::<Vec<_>>(),
            g.in_edges(&n.id)
                .map(|e| format!("{}<{}", e.id, g.node(&e.parent).unwrap().id))
                .collect::<Vec<_>>(),
        );
        assert_eq!(by_slot, by_id, "slot and ID adjacency of {}", n.id);
        let slot = g.node_slot(n).expect("a node of the graph has its slot");
        assert!(std::sync::Arc::ptr_eq(g.node_in_slot(slot).unwrap(), n));
        let mut sorted = by_slot;
        sorted.0.sort();
        sorted.1.sort();
        out.insert(n.id.to_string(), sorted);
    }
    out
}

fn expected(m: &Model) -> Adjacency {
    let mut out: Adjacency = m
        .nodes
        .iter()
        .map(|n| (nid(*n), Default::default()))
        .collect();
    for (id, (a, b)) in &m.edges {
        out.get_mut(&nid(*a))
            .unwrap()
            .0
            .push(format!("{id}>{}", nid(*b)));
        out.get_mut(&nid(*b))
            .unwrap()
            .1
            .push(format!("{id}<{}", nid(*a)));
    }
    for v in out.values_mut() {
        v.0.sort();
        v.1.sort();
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn slots_answer_as_the_model_says(changes in proptest::collection::vec(change(), 1..120)) {
        let mut g = Graph::new();
        let mut m = Model::default();
        let mut snapshots: Vec<(Graph, Adjacency)> = Vec::new();
        for (t, c) in changes.into_iter().enumerate() {
            let t = t as i64 + 1;
            match c {
                Change::AddNode(n) => {
                    let r = g.add_node(Node::new(nid(n), metadata! {"Name" => nid(n), "Type" => "veth"}, "h", "agent.h", t));
                    prop_assert_eq!(r.is_ok(), m.nodes.insert(n));
                }
                Change::DeleteNode(n) => {
                    let r = g.delete_node(&nid(n), t);
                    prop_assert_eq!(r.is_ok(), m.nodes.remove(&n));
                    m.edges.retain(|_, (a, b)| *a != n && *b != n);
                }
                Change::AddEdge(a, b) => {
                    let r = g.add_edge(Edge::new(eid(a, b), nid(a), nid(b), metadata! {"RelationType" => "layer2"}, "h", "agent.h", t));
                    let ok = m.nodes.contains(&a) && m.nodes.contains(&b) && !m.edges.contains_key(&eid(a, b));
                    prop_assert_eq!(r.is_ok(), ok);
                    if ok {
                        m.edges.insert(eid(a, b), (a, b));
                    }
                }
                Change::DeleteEdge(a, b) => {
                    let r = g.delete_edge(&eid(a, b), t);
                    prop_assert_eq!(r.is_ok(), m.edges.remove(&eid(a, b)).is_some());
                }
                Change::Update(n) => {
                    let r = g.update_node_metadata(&nid(n), t, |md| {
                        md.insert("MTU", t);
                    });
                    prop_assert_eq!(r.is_ok(), m.nodes.contains(&n));
                }
                Change::Snapshot => snapshots.push((g.clone(), expected(&m))),
            }
            prop_assert_eq!(g.node_count(), m.nodes.len());
            prop_assert_eq!(answers(&g), expected(&m));
        }
        for (snap, want) in &snapshots {
            prop_assert_eq!(&answers(snap), want);
        }
    }
}
