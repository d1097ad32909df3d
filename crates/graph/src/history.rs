//! Revision history: "the graph as it was at time t" and "every revision between t1 and t2"
//! (Skydive's time context; Skydive's Elasticsearch documents).
//!
//! Every element revision is kept with the time it stopped being current (`archived_at`):
//! an update archives the previous revision at the new `UpdatedAt`; a delete archives the
//! last revision with `DeletedAt = ArchivedAt`. A revision belongs to the slice `[S, L]`
//! when
//!
//! ```text
//! CreatedAt <= L && (DeletedAt unset || DeletedAt >= S)
//!   && UpdatedAt <= L && (ArchivedAt unset || ArchivedAt >= S)
//! ```
//!
//! and a time point `t` is the slice `[t, t]` keeping only the highest revision of each ID.
//! Storage backends implement [`History`]; [`MemoryHistory`] is the reference implementation.

use std::collections::HashMap;
use std::sync::Arc;

use crate::element::{Edge, Element, Node, Time};
use crate::event::GraphEvent;
use crate::id::Id;
use crate::view::RevisionGraph;

/// Why a history query failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HistoryError {
    #[error("Backend does not support history")]
    Unsupported,
    #[error("history backend error: {0}")]
    Backend(String),
}

/// The graph's past, as answered by a storage backend.
pub trait History: Send + Sync {
    /// The graph at `t`: the latest revision of each element alive at `t`.
    fn at(&self, t: Time) -> Result<RevisionGraph, HistoryError>;
    /// Every revision of every element alive during `[start, last]`, ordered by `UpdatedAt`.
    fn slice(&self, start: Time, last: Time) -> Result<RevisionGraph, HistoryError>;
}

/// Whether a revision archived at `archived_at` (0 = still current) is part of `[start, last]`.
pub fn revision_in_slice(e: &Element, archived_at: Time, start: Time, last: Time) -> bool {
    e.created_at <= last
        && (e.deleted_at == 0 || e.deleted_at >= start)
        && e.updated_at <= last
        && (archived_at == 0 || archived_at >= start)
}

/// A stored revision.
#[derive(Clone, Debug)]
pub struct StoredRevision<T> {
    pub elem: Arc<T>,
    /// When this revision stopped being current; 0 while it is current.
    pub archived_at: Time,
}

/// Keeps, for each ID, only the highest revision.
pub fn latest_revisions<T: std::ops::Deref<Target = Element>>(items: Vec<Arc<T>>) -> Vec<Arc<T>> {
    let mut best: HashMap<Id, Arc<T>> = HashMap::with_capacity(items.len());
    let mut order: Vec<Id> = Vec::new();
    for item in items {
        match best.get(&item.id) {
            Some(cur) if cur.revision >= item.revision => {}
            Some(_) => {
                best.insert(item.id.clone(), item);
            }
            None => {
                order.push(item.id.clone());
                best.insert(item.id.clone(), item);
            }
        }
    }
    order
        .into_iter()
        .filter_map(|id| best.remove(&id))
        .collect()
}

/// An in-memory history of every revision.
#[derive(Default)]
pub struct MemoryHistory {
    nodes: HashMap<Id, Vec<StoredRevision<Node>>>,
    edges: HashMap<Id, Vec<StoredRevision<Edge>>>,
}

impl std::fmt::Debug for MemoryHistory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryHistory")
            .field("node_ids", &self.nodes.len())
            .field("edge_ids", &self.edges.len())
            .finish()
    }
}

fn record_added<T>(revs: &mut Vec<StoredRevision<T>>, elem: Arc<T>, at: Time) {
    if let Some(last) = revs.last_mut().filter(|r| r.archived_at == 0) {
        last.archived_at = at;
    }
    revs.push(StoredRevision {
        elem,
        archived_at: 0,
    });
}

fn record_deleted<T>(revs: &mut Vec<StoredRevision<T>>, elem: Arc<T>, at: Time) {
    match revs.last_mut().filter(|r| r.archived_at == 0) {
        Some(last) => {
            last.elem = elem;
            last.archived_at = at;
        }
        None => revs.push(StoredRevision {
            elem,
            archived_at: at,
        }),
    }
}

impl MemoryHistory {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a graph event.
    pub fn record(&mut self, ev: &GraphEvent) {
        match ev {
            GraphEvent::NodeAdded(n) => record_added(
                self.nodes.entry(n.id.clone()).or_default(),
                n.clone(),
                n.created_at,
            ),
            GraphEvent::NodeUpdated { node, .. } => record_added(
                self.nodes.entry(node.id.clone()).or_default(),
                node.clone(),
                node.updated_at,
            ),
            GraphEvent::NodeDeleted(n) => record_deleted(
                self.nodes.entry(n.id.clone()).or_default(),
                n.clone(),
                n.deleted_at,
            ),
            GraphEvent::EdgeAdded(e) => record_added(
                self.edges.entry(e.id.clone()).or_default(),
                e.clone(),
                e.created_at,
            ),
            GraphEvent::EdgeUpdated { edge, .. } => record_added(
                self.edges.entry(edge.id.clone()).or_default(),
                edge.clone(),
                edge.updated_at,
            ),
            GraphEvent::EdgeDeleted(e) => record_deleted(
                self.edges.entry(e.id.clone()).or_default(),
                e.clone(),
                e.deleted_at,
            ),
        }
    }

    /// Number of stored revisions (nodes + edges).
    pub fn revision_count(&self) -> usize {
        self.nodes.values().map(Vec::len).sum::<usize>()
            + self.edges.values().map(Vec::len).sum::<usize>()
    }

    fn collect<T: std::ops::Deref<Target = Element>>(
        map: &HashMap<Id, Vec<StoredRevision<T>>>,
        start: Time,
        last: Time,
    ) -> Vec<Arc<T>> {
        let mut out: Vec<Arc<T>> = map
            .values()
            .flat_map(|revs| revs.iter())
            .filter(|r| revision_in_slice(&r.elem, r.archived_at, start, last))
            .map(|r| r.elem.clone())
            .collect();
        out.sort_by(|a, b| {
            a.updated_at
                .cmp(&b.updated_at)
                .then_with(|| a.id.cmp(&b.id))
                .then_with(|| a.revision.cmp(&b.revision))
        });
        out
    }
}

impl History for MemoryHistory {
    fn at(&self, t: Time) -> Result<RevisionGraph, HistoryError> {
        Ok(RevisionGraph::latest(
            Self::collect(&self.nodes, t, t),
            Self::collect(&self.edges, t, t),
        ))
    }

    fn slice(&self, start: Time, last: Time) -> Result<RevisionGraph, HistoryError> {
        Ok(RevisionGraph::new(
            Self::collect(&self.nodes, start, last),
            Self::collect(&self.edges, start, last),
        ))
    }
}

/// A history that has nothing: the memory backend, which keeps no history.
#[derive(Debug, Default)]
pub struct NoHistory;

impl History for NoHistory {
    fn at(&self, _t: Time) -> Result<RevisionGraph, HistoryError> {
        Err(HistoryError::Unsupported)
    }
    fn slice(&self, _start: Time, _last: Time) -> Result<RevisionGraph, HistoryError> {
        Err(HistoryError::Unsupported)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::Graph;
    use crate::metadata;
    use crate::view::GraphView;

    fn states(g: &RevisionGraph, id: &str) -> Vec<String> {
        g.nodes_with_id(id)
            .map(|n| n.str_at("State").unwrap_or("-").to_string())
            .collect()
    }

    #[test]
    fn time_point_and_slice_follow_revisions() {
        let mut g = Graph::new();
        let mut h = MemoryHistory::new();
        let rec =
            |evs: Vec<GraphEvent>, h: &mut MemoryHistory| evs.iter().for_each(|e| h.record(e));
        rec(
            vec![
                g.add_node(Node::new("lo", metadata! {"State" => "UP"}, "h", "o", 100))
                    .unwrap(),
            ],
            &mut h,
        );
        rec(
            g.update_node_metadata("lo", 200, |m| {
                m.insert("State", "DOWN");
            })
            .unwrap()
            .into_iter()
            .collect(),
            &mut h,
        );
        rec(g.delete_node("lo", 300).unwrap(), &mut h);

        assert_eq!(states(&h.at(50).unwrap(), "lo"), Vec::<String>::new());
        assert_eq!(states(&h.at(150).unwrap(), "lo"), vec!["UP"]);
        assert_eq!(states(&h.at(200).unwrap(), "lo"), vec!["DOWN"]);
        assert_eq!(states(&h.at(250).unwrap(), "lo"), vec!["DOWN"]);
        assert_eq!(states(&h.at(301).unwrap(), "lo"), Vec::<String>::new());
        assert_eq!(
            states(&h.slice(100, 250).unwrap(), "lo"),
            vec!["UP", "DOWN"]
        );
        assert_eq!(states(&h.slice(210, 250).unwrap(), "lo"), vec!["DOWN"]);
        assert_eq!(h.revision_count(), 2);
    }

    #[test]
    fn no_history_says_so() {
        assert_eq!(
            NoHistory.at(1).unwrap_err().to_string(),
            "Backend does not support history"
        );
    }
}
