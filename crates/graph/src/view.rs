//! Read access to a graph, whatever it is: the live graph, the graph at a past time (one
//! revision per element), a time slice (every revision, so an ID may appear several times),
//! or a query's subgraph.

use std::collections::HashMap;
use std::io;
use std::sync::Arc;

use serde::Serialize;

use crate::element::{Edge, Node};
use crate::graph::Graph;
use crate::id::Id;

/// A boxed iterator over borrowed elements.
pub type Iter<'a, T> = Box<dyn Iterator<Item = &'a Arc<T>> + 'a>;

/// Read access to a graph.
pub trait GraphView: Send + Sync {
    fn all_nodes(&self) -> Iter<'_, Node>;
    fn all_edges(&self) -> Iter<'_, Edge>;
    /// Every revision of the node with this ID (at most one outside time slices).
    fn nodes_with_id<'a>(&'a self, id: &str) -> Iter<'a, Node>;
    fn edges_with_id<'a>(&'a self, id: &str) -> Iter<'a, Edge>;
    /// Edges (every revision) whose parent is `node`.
    fn out_edges_of<'a>(&'a self, node: &str) -> Iter<'a, Edge>;
    /// Edges (every revision) whose child is `node`.
    fn in_edges_of<'a>(&'a self, node: &str) -> Iter<'a, Edge>;
    /// Nodes whose `key` holds `value`, answered from an index; `None` when not indexed.
    fn nodes_indexed<'a>(&'a self, _key: &str, _value: &str) -> Option<Iter<'a, Node>> {
        None
    }
    /// Number of nodes whose `key` holds `value`, from an index; `None` when not indexed.
    fn count_indexed(&self, _key: &str, _value: &str) -> Option<usize> {
        None
    }
    fn node_count(&self) -> usize;
    fn edge_count(&self) -> usize;

    /// Calls `f` on every revision of the node `id` (no allocation; for traversals).
    fn each_node_with_id<'a>(&'a self, id: &str, f: &mut dyn FnMut(&'a Arc<Node>)) {
        self.nodes_with_id(id).for_each(f);
    }
    /// Calls `f` on every edge whose parent is `node`.
    fn each_out_edge<'a>(&'a self, node: &str, f: &mut dyn FnMut(&'a Arc<Edge>)) {
        self.out_edges_of(node).for_each(f);
    }
    /// Calls `f` on every edge whose child is `node`.
    fn each_in_edge<'a>(&'a self, node: &str, f: &mut dyn FnMut(&'a Arc<Edge>)) {
        self.in_edges_of(node).for_each(f);
    }
    /// Calls `f` with each edge whose parent is `node` and the child it leads to (every
    /// revision of each).
    fn each_out_neighbour<'a>(
        &'a self,
        node: &Node,
        f: &mut dyn FnMut(&'a Arc<Edge>, &'a Arc<Node>),
    ) {
        self.each_out_edge(&node.id, &mut |e| {
            self.each_node_with_id(&e.child, &mut |n| f(e, n));
        });
    }
    /// Calls `f` with each edge whose child is `node` and the parent it comes from.
    fn each_in_neighbour<'a>(
        &'a self,
        node: &Node,
        f: &mut dyn FnMut(&'a Arc<Edge>, &'a Arc<Node>),
    ) {
        self.each_in_edge(&node.id, &mut |e| {
            self.each_node_with_id(&e.parent, &mut |n| f(e, n));
        });
    }
    /// A small number standing for `node` in this view, when the view has one for it (the
    /// live graph's slots): traversals step by it instead of looking IDs up. Two nodes never
    /// share one.
    fn node_slot(&self, _node: &Node) -> Option<u32> {
        None
    }
    /// The node in `slot` (see [`GraphView::node_slot`]).
    fn node_in_slot(&self, _slot: u32) -> Option<&Arc<Node>> {
        None
    }
    /// Calls `f` with each edge whose parent is the node in `slot` and the slot of its child
    /// (when `out`), then with each edge whose child it is and the slot of its parent (when
    /// `inn`).
    fn each_slot_hop<'a>(
        &'a self,
        _slot: u32,
        _out: bool,
        _inn: bool,
        _f: &mut dyn FnMut(&'a Arc<Edge>, u32),
    ) {
    }
}

impl GraphView for Graph {
    fn each_node_with_id<'a>(&'a self, id: &str, f: &mut dyn FnMut(&'a Arc<Node>)) {
        if let Some(n) = self.node(id) {
            f(n);
        }
    }
    fn each_out_edge<'a>(&'a self, node: &str, f: &mut dyn FnMut(&'a Arc<Edge>)) {
        self.out_edges(node).for_each(f);
    }
    fn each_in_edge<'a>(&'a self, node: &str, f: &mut dyn FnMut(&'a Arc<Edge>)) {
        self.in_edges(node).for_each(f);
    }
    fn each_out_neighbour<'a>(
        &'a self,
        node: &Node,
        f: &mut dyn FnMut(&'a Arc<Edge>, &'a Arc<Node>),
    ) {
        self.each_neighbour(node, crate::graph::Side::Out, f);
    }
    fn each_in_neighbour<'a>(
        &'a self,
        node: &Node,
        f: &mut dyn FnMut(&'a Arc<Edge>, &'a Arc<Node>),
    ) {
        self.each_neighbour(node, crate::graph::Side::In, f);
    }
    fn node_slot(&self, node: &Node) -> Option<u32> {
        self.own_slot(node)
    }
    fn node_in_slot(&self, slot: u32) -> Option<&Arc<Node>> {
        Graph::node_in_slot(self, slot)
    }
    fn each_slot_hop<'a>(
        &'a self,
        slot: u32,
        out: bool,
        inn: bool,
        f: &mut dyn FnMut(&'a Arc<Edge>, u32),
    ) {
        Graph::each_slot_hop(self, slot, out, inn, f);
    }
    fn all_nodes(&self) -> Iter<'_, Node> {
        Box::new(self.nodes())
    }
    fn all_edges(&self) -> Iter<'_, Edge> {
        Box::new(self.edges())
    }
    fn nodes_with_id<'a>(&'a self, id: &str) -> Iter<'a, Node> {
        Box::new(self.node(id).into_iter())
    }
    fn edges_with_id<'a>(&'a self, id: &str) -> Iter<'a, Edge> {
        Box::new(self.edge(id).into_iter())
    }
    fn out_edges_of<'a>(&'a self, node: &str) -> Iter<'a, Edge> {
        Box::new(self.out_edges(node))
    }
    fn in_edges_of<'a>(&'a self, node: &str) -> Iter<'a, Edge> {
        Box::new(self.in_edges(node))
    }
    fn nodes_indexed<'a>(&'a self, key: &str, value: &str) -> Option<Iter<'a, Node>> {
        Some(Box::new(self.index_lookup(key, value)?))
    }
    fn count_indexed(&self, key: &str, value: &str) -> Option<usize> {
        self.index_count(key, value)
    }
    fn node_count(&self) -> usize {
        Graph::node_count(self)
    }
    fn edge_count(&self) -> usize {
        Graph::edge_count(self)
    }
}

/// A graph held as plain lists of element revisions: the result of a history query or of
/// `SubGraph`. The same ID may appear more than once (a time slice holds every revision).
#[derive(Default, Clone)]
pub struct RevisionGraph {
    nodes: Vec<Arc<Node>>,
    edges: Vec<Arc<Edge>>,
    node_ids: HashMap<Id, Slots>,
    edge_ids: HashMap<Id, Slots>,
    out_adj: HashMap<Id, Slots>,
    in_adj: HashMap<Id, Slots>,
}

/// Positions in a list: usually one, so without an allocation.
#[derive(Clone, Debug)]
enum Slots {
    One(u32),
    Many(Vec<u32>),
}

impl Slots {
    fn push(slot: Option<&mut Slots>, i: u32) -> Option<Slots> {
        match slot {
            None => Some(Slots::One(i)),
            Some(s) => {
                match s {
                    Slots::One(first) => *s = Slots::Many(vec![*first, i]),
                    Slots::Many(v) => v.push(i),
                }
                None
            }
        }
    }

    fn as_slice(&self) -> &[u32] {
        match self {
            Slots::One(i) => std::slice::from_ref(i),
            Slots::Many(v) => v,
        }
    }
}

fn add_slot(map: &mut HashMap<Id, Slots>, id: &Id, i: usize) {
    if let Some(new) = Slots::push(map.get_mut(id), i as u32) {
        map.insert(id.clone(), new);
    }
}

impl std::fmt::Debug for RevisionGraph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RevisionGraph")
            .field("nodes", &self.nodes.len())
            .field("edges", &self.edges.len())
            .finish()
    }
}

impl RevisionGraph {
    pub fn new(nodes: Vec<Arc<Node>>, edges: Vec<Arc<Edge>>) -> Self {
        let mut g = RevisionGraph {
            nodes,
            edges,
            ..Default::default()
        };
        g.node_ids.reserve(g.nodes.len());
        for (i, n) in g.nodes.iter().enumerate() {
            add_slot(&mut g.node_ids, &n.id, i);
        }
        g.index_edges();
        g
    }

    /// The graph of the latest revision of each element among `nodes` and `edges` (a time
    /// point), in the order of their first revision.
    pub fn latest(nodes: Vec<Arc<Node>>, edges: Vec<Arc<Edge>>) -> Self {
        fn keep_latest<T: std::ops::Deref<Target = crate::Element>>(
            items: Vec<Arc<T>>,
            ids: &mut HashMap<Id, Slots>,
        ) -> Vec<Arc<T>> {
            let mut out: Vec<Arc<T>> = Vec::with_capacity(items.len());
            ids.reserve(items.len());
            for item in items {
                match ids.get(&item.id) {
                    Some(Slots::One(i)) => {
                        let cur = &mut out[*i as usize];
                        if cur.revision < item.revision {
                            *cur = item;
                        }
                    }
                    _ => {
                        ids.insert(item.id.clone(), Slots::One(out.len() as u32));
                        out.push(item);
                    }
                }
            }
            out
        }
        let mut g = RevisionGraph::default();
        g.nodes = keep_latest(nodes, &mut g.node_ids);
        g.edges = keep_latest(edges, &mut g.edge_ids);
        g.out_adj.reserve(g.edges.len());
        g.in_adj.reserve(g.edges.len());
        for (i, e) in g.edges.iter().enumerate() {
            add_slot(&mut g.out_adj, &e.parent, i);
            add_slot(&mut g.in_adj, &e.child, i);
        }
        g
    }

    fn index_edges(&mut self) {
        let g = self;
        for (i, e) in g.edges.iter().enumerate() {
            add_slot(&mut g.edge_ids, &e.id, i);
            add_slot(&mut g.out_adj, &e.parent, i);
            add_slot(&mut g.in_adj, &e.child, i);
        }
    }

    pub fn nodes(&self) -> &[Arc<Node>] {
        &self.nodes
    }

    pub fn edges(&self) -> &[Arc<Edge>] {
        &self.edges
    }

    fn pick<'a, T>(list: &'a [Arc<T>], idx: Option<&'a Slots>) -> Iter<'a, T> {
        Box::new(
            idx.into_iter()
                .flat_map(|v| v.as_slice().iter())
                .map(move |i| &list[*i as usize]),
        )
    }
}

impl GraphView for RevisionGraph {
    fn all_nodes(&self) -> Iter<'_, Node> {
        Box::new(self.nodes.iter())
    }
    fn all_edges(&self) -> Iter<'_, Edge> {
        Box::new(self.edges.iter())
    }
    fn nodes_with_id<'a>(&'a self, id: &str) -> Iter<'a, Node> {
        Self::pick(&self.nodes, self.node_ids.get(id))
    }
    fn edges_with_id<'a>(&'a self, id: &str) -> Iter<'a, Edge> {
        Self::pick(&self.edges, self.edge_ids.get(id))
    }
    fn out_edges_of<'a>(&'a self, node: &str) -> Iter<'a, Edge> {
        Self::pick(&self.edges, self.out_adj.get(node))
    }
    fn in_edges_of<'a>(&'a self, node: &str) -> Iter<'a, Edge> {
        Self::pick(&self.edges, self.in_adj.get(node))
    }
    fn node_count(&self) -> usize {
        self.nodes.len()
    }
    fn edge_count(&self) -> usize {
        self.edges.len()
    }
}

/// Elements sorted as Skydive sorts whole-graph outputs: by `CreatedAt`, then ID.
pub fn sorted_by_creation<'a, T: std::ops::Deref<Target = crate::Element> + 'a>(
    items: impl Iterator<Item = &'a Arc<T>>,
) -> Vec<Arc<T>> {
    // The times are copied out first: comparing them then reads no element (a sort of a
    // large graph would otherwise spend its time on cache misses).
    let mut keyed: Vec<(crate::Time, &Arc<T>)> = items.map(|e| (e.created_at, e)).collect();
    keyed.sort_by(|(ta, a), (tb, b)| {
        ta.cmp(tb)
            .then_with(|| a.id.cmp(&b.id))
            .then_with(|| a.revision.cmp(&b.revision))
    });
    keyed.into_iter().map(|(_, e)| e.clone()).collect()
}

/// The whole-graph JSON object `{"Nodes":[…],"Edges":[…]}`, sorted by `CreatedAt`.
#[derive(Serialize)]
pub struct GraphJson {
    #[serde(rename = "Nodes")]
    pub nodes: Vec<Arc<Node>>,
    #[serde(rename = "Edges")]
    pub edges: Vec<Arc<Edge>>,
}

impl GraphJson {
    pub fn from_view(g: &dyn GraphView) -> Self {
        GraphJson {
            nodes: sorted_by_creation(g.all_nodes()),
            edges: sorted_by_creation(g.all_edges()),
        }
    }

    /// Writes the JSON to `w`.
    pub fn write_to<W: io::Write>(&self, w: W) -> serde_json::Result<()> {
        serde_json::to_writer(w, self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata;

    #[test]
    fn revision_graph_answers_every_revision_of_an_id() {
        let mut a1 = Node::new("a", metadata! {"State" => "UP"}, "h", "o", 1);
        let n1 = Arc::new(a1.clone());
        a1.revision = 2;
        a1.metadata.insert("State", "DOWN");
        let n2 = Arc::new(a1);
        let b = Arc::new(Node::new("b", metadata! {}, "h", "o", 1));
        let e = Arc::new(Edge::new("e", "a", "b", metadata! {}, "h", "o", 1));
        let g = RevisionGraph::new(vec![n1, n2, b], vec![e]);
        assert_eq!(g.nodes_with_id("a").count(), 2);
        assert_eq!(g.out_edges_of("a").count(), 1);
        assert_eq!(g.in_edges_of("b").count(), 1);
        assert_eq!(g.in_edges_of("a").count(), 0);
    }

    #[test]
    fn graph_json_sorts_by_creation_time() {
        let mut g = Graph::new();
        g.add_node(Node::new("z", metadata! {}, "h", "o", 1))
            .unwrap();
        g.add_node(Node::new("a", metadata! {}, "h", "o", 2))
            .unwrap();
        let json = serde_json::to_string(&GraphJson::from_view(&g)).unwrap();
        assert!(json.find(r#""ID":"z""#).unwrap() < json.find(r#""ID":"a""#).unwrap());
        assert!(json.ends_with(r#""Edges":[]}"#));
    }
}
