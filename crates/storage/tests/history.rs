//! The topology history battery: the embedded store and the Elasticsearch backend answer `At`
//! and `Context` exactly as the in-memory reference does, for random sequences of real graph
//! changes, and keep doing so across reopening.

use std::sync::Arc;

use skydive_graph::{
    Edge, Graph, GraphEvent, GraphView, History, MemoryHistory, Node, RevisionGraph, Value,
    metadata,
};
mod common;

use skydive_storage::{Embedded, TopologyStore};

/// A small deterministic generator (xorshift), so that failures replay.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const T0: i64 = 1_764_000_000_000;

/// Applies `steps` random changes (adds, updates, deletes of nodes and edges) to `g`, one
/// per 300 ms on average, and returns the events in batches as a hub would publish them.
fn random_changes(g: &mut Graph, rng: &mut Rng, steps: usize, t: &mut i64) -> Vec<Vec<GraphEvent>> {
    let mut batches = Vec::new();
    for _ in 0..steps {
        *t += 1 + rng.below(600) as i64;
        let now = *t;
        let mut evs = Vec::new();
        let node = format!("n{}", rng.below(12));
        match rng.below(10) {
            0..=2 => {
                if g.node(&node).is_none() {
                    let m = metadata! {"Name" => node.as_str(), "Type" => "veth", "MTU" => 1500};
                    evs.push(
                        g.add_node(Node::new(node.as_str(), m, "h1", "agent.h1", now))
                            .unwrap(),
                    );
                }
            }
            3..=5 => {
                if g.node(&node).is_some() {
                    let v = rng.below(4) as i64;
                    if let Some(e) = g
                        .update_node_metadata(&node, now, |m| {
                            m.insert("MTU", 1400 + v);
                            m.insert("State", if v % 2 == 0 { "UP" } else { "DOWN" });
                        })
                        .unwrap()
                    {
                        evs.push(e);
                    }
                }
            }
            6 => {
                if g.node(&node).is_some() {
                    evs.extend(g.delete_node(&node, now).unwrap());
                }
            }
            7 | 8 => {
                let other = format!("n{}", rng.below(12));
                let id = format!("e-{node}-{other}");
                if node != other
                    && g.node(&node).is_some()
                    && g.node(&other).is_some()
                    && g.edge(&id).is_none()
                {
                    let m = metadata! {"RelationType" => "layer2"};
                    evs.push(
                        g.add_edge(Edge::new(
                            id.as_str(),
                            node.as_str(),
                            other.as_str(),
                            m,
                            "h1",
                            "agent.h1",
                            now,
                        ))
                        .unwrap(),
                    );
                }
            }
            _ => {
                let id = g.edges().next().map(|e| e.id.clone());
                if let Some(id) = id {
                    if rng.below(2) == 0 {
                        evs.push(g.delete_edge(&id, now).unwrap());
                    } else if let Some(e) = g
                        .update_edge_metadata(&id, now, |m| {
                            m.insert("Weight", Value::Int(now % 7));
                        })
                        .unwrap()
                    {
                        evs.push(e);
                    }
                }
            }
        }
        if !evs.is_empty() {
            batches.push(evs);
        }
    }
    batches
}

/// A comparable rendering of a history answer: every revision, in order, as JSON.
fn render(g: &RevisionGraph) -> (Vec<String>, Vec<String>) {
    let mut nodes: Vec<String> = g
        .all_nodes()
        .map(|n| serde_json::to_string(&**n).unwrap())
        .collect();
    let mut edges: Vec<String> = g
        .all_edges()
        .map(|e| serde_json::to_string(&**e).unwrap())
        .collect();
    // Revisions with equal (UpdatedAt, ID, Revision) may come in any order.
    nodes.sort();
    edges.sort();
    (nodes, edges)
}

fn assert_same(
    reference: &MemoryHistory,
    store: &dyn TopologyStore,
    from: i64,
    to: i64,
    rng: &mut Rng,
) {
    for _ in 0..60 {
        let t = from + rng.below((to - from) as u64 + 1) as i64;
        let d = rng.below(5_000) as i64;
        assert_eq!(
            render(&store.at(t).unwrap()),
            render(&reference.at(t).unwrap()),
            "At({t})"
        );
        assert_eq!(
            render(&store.slice(t - d, t).unwrap()),
            render(&reference.slice(t - d, t).unwrap()),
            "Context({t}, {d} ms)"
        );
    }
}

#[test]
fn every_backend_keeping_history_answers_as_the_reference_does() {
    let dir = tempfile::tempdir().unwrap();
    let mut ran = Vec::new();
    for seed in [1u64, 7, 42, 1234, 99991] {
        for b in common::backends(dir.path()) {
            let Some(store) = &b.topology else { continue };
            let mut reference = MemoryHistory::new();
            let mut g = Graph::new();
            let mut rng = Rng(seed);
            let mut t = T0;
            for batch in random_changes(&mut g, &mut rng, 400, &mut t) {
                batch.iter().for_each(|e| reference.record(e));
                store.record(&batch).unwrap();
            }
            assert_eq!(
                store.revision_count().unwrap() as usize,
                reference.revision_count(),
                "{} seed {seed}",
                b.driver
            );
            assert_same(&reference, store.as_ref(), T0 - 1000, t + 1000, &mut rng);
            ran.push(b.driver);
        }
    }
    let per_seed = if common::opensearch().is_some() { 3 } else { 2 };
    assert_eq!(
        ran.len(),
        5 * per_seed,
        "embedded, the reference (and Elasticsearch), five seeds: {ran:?}"
    );
}

/// Opens the same store again at each call.
type Opener<'a> = &'a dyn Fn() -> Arc<dyn TopologyStore>;

/// The stores that keep history across reopening: the embedded store in `dir` and, when the
/// test server is there, the Elasticsearch backend on indices of their own.
fn reopenable(dir: &std::path::Path, test: impl Fn(Opener<'_>)) {
    let path = dir.to_path_buf();
    test(&move || Arc::new(Embedded::open(&path).unwrap()) as Arc<dyn TopologyStore>);
    if let Some(url) = common::opensearch() {
        let cfg = skydive_storage::elasticsearch::EsConfig {
            hosts: vec![url],
            index_prefix: format!(
                "r{}_{}_",
                std::process::id(),
                dir.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .to_lowercase()
                    .replace('.', "")
            ),
            ..Default::default()
        };
        test(&move || {
            Arc::new(skydive_storage::elasticsearch::Elasticsearch::open(&cfg).unwrap())
                as Arc<dyn TopologyStore>
        });
    }
}

#[test]
fn history_survives_reopening_and_continues() {
    let dir = tempfile::tempdir().unwrap();
    reopenable(dir.path(), reopening_continues);
}

fn reopening_continues(open: Opener<'_>) {
    let mut reference = MemoryHistory::new();
    let mut g = Graph::new();
    let mut rng = Rng(5);
    let mut t = T0;
    {
        let store = open();
        for batch in random_changes(&mut g, &mut rng, 200, &mut t) {
            batch.iter().for_each(|e| reference.record(e));
            store.record(&batch).unwrap();
        }
    }
    let store = open();
    assert_same(&reference, store.as_ref(), T0, t, &mut rng);
    for batch in random_changes(&mut g, &mut rng, 200, &mut t) {
        batch.iter().for_each(|e| reference.record(e));
        store.record(&batch).unwrap();
    }
    assert_same(&reference, store.as_ref(), T0, t, &mut rng);
}

#[test]
fn elements_sent_again_after_a_restart_continue_and_the_others_are_closed() {
    let dir = tempfile::tempdir().unwrap();
    reopenable(dir.path(), sent_again_continue);
}

fn sent_again_continue(open: Opener<'_>) {
    let a = Arc::new(Node::new(
        "a",
        metadata! {"Name" => "a"},
        "h1",
        "agent.h1",
        T0,
    ));
    let b = Arc::new(Node::new(
        "b",
        metadata! {"Name" => "b"},
        "h1",
        "agent.h1",
        T0,
    ));
    {
        let store = open();
        store
            .record(&[GraphEvent::NodeAdded(a.clone()), GraphEvent::NodeAdded(b)])
            .unwrap();
    }
    // Restart: the agent sends `a` again, unchanged; `b` never comes back.
    let store = open();
    store.record(&[GraphEvent::NodeAdded(a)]).unwrap();
    assert_eq!(store.close_orphans(T0 + 60_000).unwrap(), 1);
    assert_eq!(store.close_orphans(T0 + 90_000).unwrap(), 0, "runs once");
    assert_eq!(
        store.revision_count().unwrap(),
        2,
        "a continues in one revision"
    );

    let names = |t: i64| -> Vec<String> {
        let mut v: Vec<String> = store
            .at(t)
            .unwrap()
            .all_nodes()
            .map(|n| n.id.to_string())
            .collect();
        v.sort();
        v
    };
    assert_eq!(names(T0 + 30_000), vec!["a", "b"]);
    assert_eq!(names(T0 + 60_001), vec!["a"]);
    let deleted = store.slice(T0 + 60_001, T0 + 70_000).unwrap();
    assert!(deleted.nodes_with_id("b").next().is_none());
    let closing = store.slice(T0, T0 + 60_000).unwrap();
    assert_eq!(
        closing.nodes_with_id("b").next().unwrap().deleted_at,
        T0 + 60_000
    );
}

#[test]
fn time_queries_read_only_the_revisions_alive_then() {
    // The span index: a query plan that scans the whole table would still pass the tests
    // above, so check the plan itself.
    let dir = tempfile::tempdir().unwrap();
    let store = Embedded::open(dir.path()).unwrap();
    let conn = rusqlite::Connection::open(store.path()).unwrap();
    let plan: Vec<String> = conn
        .prepare(
            "EXPLAIN QUERY PLAN SELECT t.metadata FROM topology_span s JOIN topology t ON t.seq = s.seq
             WHERE s.lo <= 10 AND s.hi >= 5 AND t.updated_at <= 10",
        )
        .unwrap()
        .query_map([], |r| r.get::<_, String>(3))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert!(plan[0].contains("VIRTUAL TABLE INDEX"), "{plan:?}");
    assert!(plan[1].contains("INTEGER PRIMARY KEY"), "{plan:?}");
}
