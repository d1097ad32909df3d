//! The topology history in the embedded store: every revision of every node and edge, so that
//! `G.At(t)` and `G.Context(t, d)` work after restarts (Skydive's time context; Skydive's
//! Elasticsearch documents).
//!
//! Same semantics as [`skydive_graph::MemoryHistory`], the reference: an update archives the
//! previous revision at the new `UpdatedAt`; a delete archives the last revision with
//! `DeletedAt = ArchivedAt`. Rows whose `archived_at` is 0 are the current revisions.
//!
//! After a restart the live graph starts empty and agents send their subgraphs again: a
//! re-added element whose revision is already the stored current one continues it (no new
//! row); one that comes back changed archives it. Elements current at the restart that
//! nobody sends again are closed by [`Embedded::close_orphans`], called once the agents
//! have had their grace period to come back.

use std::collections::HashSet;
use std::sync::Arc;

use rusqlite::{Connection, OptionalExtension, Transaction, params};
use skydive_graph::{
    Edge, Element, GraphEvent, History, HistoryError, Id, Map, Node, RevisionGraph, Time,
};

use crate::embedded::Embedded;
use crate::{Result, StorageError};

/// The origin of the span index: 2020-01-01T00:00:00Z. Spans are whole seconds from it, in
/// 32 bits: until 2088.
const SPAN_EPOCH_MS: i64 = 1_577_836_800_000;
/// The span end of a revision that is still current.
const SPAN_FOREVER: i32 = i32::MAX;

fn span_floor(t: Time) -> i32 {
    (t.saturating_sub(SPAN_EPOCH_MS).div_euclid(1000)).clamp(i32::MIN as i64, i32::MAX as i64 - 1)
        as i32
}

fn span_ceil(t: Time) -> i32 {
    let d = t.saturating_sub(SPAN_EPOCH_MS);
    let s = d.div_euclid(1000) + i64::from(d.rem_euclid(1000) != 0);
    s.clamp(i32::MIN as i64, i32::MAX as i64 - 1) as i32
}

/// The end of a revision's span: when it was archived or deleted, or forever.
fn span_end(archived_at: Time, deleted_at: Time) -> i32 {
    match (archived_at, deleted_at) {
        (0, 0) => SPAN_FOREVER,
        (0, d) => span_ceil(d),
        (a, 0) => span_ceil(a),
        (a, d) => span_ceil(a.min(d)),
    }
}

/// What the recorder remembers between batches.
#[derive(Debug, Default)]
pub struct RecorderState {
    /// Elements current when the store was opened that no event has touched since:
    /// candidates for [`Embedded::close_orphans`]. `None` once that has run.
    orphans: Option<HashSet<(bool, Id)>>,
}

impl RecorderState {
    pub(crate) fn load(conn: &Connection) -> Result<RecorderState> {
        let mut stmt = conn.prepare("SELECT edge, id FROM topology WHERE archived_at = 0")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, bool>(0)?, r.get::<_, String>(1)?)))?;
        let mut orphans = HashSet::new();
        for row in rows {
            let (edge, id) = row?;
            orphans.insert((edge, Id::from(id)));
        }
        Ok(RecorderState {
            orphans: Some(orphans),
        })
    }
}

/// Indexes the lifetime of every revision again (after a recovery copied the rows).
pub(crate) fn rebuild_spans(conn: &Connection) -> Result<()> {
    let tx = conn.unchecked_transaction()?;
    tx.execute("DELETE FROM topology_span", [])?;
    {
        let mut read =
            tx.prepare("SELECT seq, updated_at, archived_at, deleted_at FROM topology")?;
        let mut write =
            tx.prepare("INSERT INTO topology_span (seq, lo, hi) VALUES (?1, ?2, ?3)")?;
        let rows = read.query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, i64>(3)?,
            ))
        })?;
        for row in rows {
            let (seq, updated, archived, deleted) = row?;
            write.execute(rusqlite::params![
                seq,
                span_floor(updated),
                span_end(archived, deleted)
            ])?;
        }
    }
    tx.commit()?;
    Ok(())
}

/// The parts of a node or edge that a row stores.
struct Revision<'a> {
    edge: bool,
    elem: &'a Element,
    parent: &'a str,
    child: &'a str,
}

impl<'a> Revision<'a> {
    fn node(n: &'a Node) -> Self {
        Revision {
            edge: false,
            elem: n,
            parent: "",
            child: "",
        }
    }
    fn edge(e: &'a Edge) -> Self {
        Revision {
            edge: true,
            elem: e,
            parent: &e.parent,
            child: &e.child,
        }
    }
}

fn encode_metadata(m: &Map) -> Result<Vec<u8>> {
    serde_json::to_vec(m).map_err(|e| StorageError::Decode {
        kind: "metadata".into(),
        id: String::new(),
        message: e.to_string(),
    })
}

/// The current row of an element: `(seq, revision, updated_at)`.
fn current(tx: &Transaction<'_>, edge: bool, id: &str) -> Result<Option<(i64, i64, Time)>> {
    Ok(tx
        .prepare_cached(
            "SELECT seq, revision, updated_at FROM topology
             WHERE edge = ?1 AND id = ?2 AND archived_at = 0",
        )?
        .query_row(params![edge, id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?)
}

fn set_span_end(tx: &Transaction<'_>, seq: i64, end: i32) -> Result<()> {
    tx.prepare_cached("UPDATE topology_span SET hi = ?2 WHERE seq = ?1")?
        .execute(params![seq, end])?;
    Ok(())
}

fn insert(tx: &Transaction<'_>, r: &Revision<'_>, archived_at: Time) -> Result<()> {
    let e = r.elem;
    tx.prepare_cached(
        "INSERT INTO topology (edge, id, host, origin, parent, child, revision, created_at,
             updated_at, deleted_at, archived_at, metadata)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    )?
    .execute(params![
        r.edge,
        e.id.as_str(),
        e.host.as_str(),
        e.origin.as_str(),
        r.parent,
        r.child,
        e.revision,
        e.created_at,
        e.updated_at,
        e.deleted_at,
        archived_at,
        encode_metadata(&e.metadata)?,
    ])?;
    let seq = tx.last_insert_rowid();
    tx.prepare_cached("INSERT INTO topology_span (seq, lo, hi) VALUES (?1, ?2, ?3)")?
        .execute(params![
            seq,
            span_floor(e.updated_at),
            span_end(archived_at, e.deleted_at)
        ])?;
    Ok(())
}

/// A new current revision (add or update): archives the previous one.
fn record_current(tx: &Transaction<'_>, r: &Revision<'_>) -> Result<()> {
    let e = r.elem;
    if let Some((seq, revision, updated_at)) = current(tx, r.edge, &e.id)? {
        if revision == e.revision && updated_at == e.updated_at {
            // The same revision sent again (an agent resynchronising): nothing changed.
            return Ok(());
        }
        let at = e.updated_at.max(updated_at);
        tx.prepare_cached("UPDATE topology SET archived_at = ?2 WHERE seq = ?1")?
            .execute(params![seq, at])?;
        set_span_end(tx, seq, span_ceil(at))?;
    }
    insert(tx, r, 0)
}

/// A deletion: the current revision becomes the deleted element, archived at its deletion.
fn record_deleted(tx: &Transaction<'_>, r: &Revision<'_>) -> Result<()> {
    let e = r.elem;
    let at = e.deleted_at;
    match current(tx, r.edge, &e.id)? {
        Some((seq, _, _)) => {
            tx.prepare_cached(
                "UPDATE topology SET host = ?2, origin = ?3, revision = ?4, created_at = ?5,
                     updated_at = ?6, deleted_at = ?7, archived_at = ?7, metadata = ?8
                 WHERE seq = ?1",
            )?
            .execute(params![
                seq,
                e.host.as_str(),
                e.origin.as_str(),
                e.revision,
                e.created_at,
                e.updated_at,
                at,
                encode_metadata(&e.metadata)?,
            ])?;
            set_span_end(tx, seq, span_end(at, at))
        }
        None => insert(tx, r, at),
    }
}

impl Embedded {
    /// Records a batch of graph events in one transaction; durable when this returns.
    pub fn record(&self, events: &[GraphEvent]) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        for ev in events {
            match ev {
                GraphEvent::NodeAdded(n) | GraphEvent::NodeUpdated { node: n, .. } => {
                    record_current(&tx, &Revision::node(n))?;
                }
                GraphEvent::EdgeAdded(e) | GraphEvent::EdgeUpdated { edge: e, .. } => {
                    record_current(&tx, &Revision::edge(e))?;
                }
                GraphEvent::NodeDeleted(n) => record_deleted(&tx, &Revision::node(n))?,
                GraphEvent::EdgeDeleted(e) => record_deleted(&tx, &Revision::edge(e))?,
            }
        }
        tx.commit()?;
        // Still holding the writer: `close_orphans` cannot run between the commit and this.
        let mut state = self.recorder.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(orphans) = state.orphans.as_mut().filter(|o| !o.is_empty()) {
            for ev in events {
                let key = match ev {
                    GraphEvent::NodeAdded(n)
                    | GraphEvent::NodeUpdated { node: n, .. }
                    | GraphEvent::NodeDeleted(n) => (false, n.id.clone()),
                    GraphEvent::EdgeAdded(e)
                    | GraphEvent::EdgeUpdated { edge: e, .. }
                    | GraphEvent::EdgeDeleted(e) => (true, e.id.clone()),
                };
                orphans.remove(&key);
            }
        }
        drop(state);
        drop(conn);
        Ok(())
    }

    /// Closes (as deleted at `at`) the elements that were current when the store was opened
    /// and that no event has mentioned since: they did not come back after a restart.
    /// Runs once; returns how many were closed.
    pub fn close_orphans(&self, at: Time) -> Result<usize> {
        let mut conn = self.conn();
        let orphans = {
            let mut state = self.recorder.lock().unwrap_or_else(|e| e.into_inner());
            state.orphans.take().unwrap_or_default()
        };
        if orphans.is_empty() {
            return Ok(0);
        }
        let tx = conn.transaction()?;
        let mut closed = 0;
        for (edge, id) in &orphans {
            let row: Option<(i64, Time)> = tx
                .prepare_cached(
                    "UPDATE topology SET deleted_at = MAX(updated_at, ?3),
                         archived_at = MAX(updated_at, ?3)
                     WHERE edge = ?1 AND id = ?2 AND archived_at = 0
                     RETURNING seq, archived_at",
                )?
                .query_row(params![edge, id.as_str(), at], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .optional()?;
            if let Some((seq, archived_at)) = row {
                set_span_end(&tx, seq, span_ceil(archived_at))?;
                closed += 1;
            }
        }
        tx.commit()?;
        Ok(closed)
    }

    /// Number of stored revisions (nodes and edges).
    pub fn revision_count(&self) -> Result<i64> {
        Ok(self
            .reader()?
            .query_row("SELECT COUNT(*) FROM topology", [], |r| r.get(0))?)
    }

    /// Every revision alive during `[start, last]`, nodes and edges, ordered as
    /// [`skydive_graph::MemoryHistory`] orders them.
    fn revisions(&self, start: Time, last: Time) -> Result<Revisions> {
        let conn = self.reader()?;
        let mut stmt = conn.prepare_cached(
            "SELECT t.edge, t.id, t.host, t.origin, t.parent, t.child, t.revision,
                    t.created_at, t.updated_at, t.deleted_at, t.metadata
             FROM topology_span s JOIN topology t ON t.seq = s.seq
             WHERE s.lo <= ?1 AND s.hi >= ?2
               AND t.created_at <= ?4 AND t.updated_at <= ?4
               AND (t.deleted_at = 0 OR t.deleted_at >= ?3)
               AND (t.archived_at = 0 OR t.archived_at >= ?3)",
        )?;
        let mut rows = stmt.query(params![span_floor(last), span_floor(start), start, last])?;
        let mut raw: Vec<(Element, bool, Id, Id, Vec<u8>)> = Vec::new();
        while let Some(r) = rows.next()? {
            let elem = Element {
                id: Id::from(r.get_ref(1)?.as_str()?),
                metadata: Map::new(),
                host: r.get_ref(2)?.as_str()?.into(),
                origin: r.get_ref(3)?.as_str()?.into(),
                created_at: r.get(7)?,
                updated_at: r.get(8)?,
                deleted_at: r.get(9)?,
                revision: r.get(6)?,
            };
            let edge: bool = r.get(0)?;
            let (parent, child) = if edge {
                (
                    Id::from(r.get_ref(4)?.as_str()?),
                    Id::from(r.get_ref(5)?.as_str()?),
                )
            } else {
                (Id::default(), Id::default())
            };
            raw.push((
                elem,
                edge,
                parent,
                child,
                r.get_ref(10)?.as_blob()?.to_vec(),
            ));
        }
        drop(rows);
        // Decoding the metadata is most of the work: spread it over the cores.
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(8);
        let per = raw.len().div_ceil(threads).max(1024);
        let decoded: Vec<Result<Vec<Map>>> = std::thread::scope(|s| {
            let handles: Vec<_> = raw
                .chunks(per)
                .map(|chunk| {
                    s.spawn(move || {
                        chunk
                            .iter()
                            .map(|(e, _, _, _, m)| {
                                serde_json::from_slice::<Map>(m).map_err(|err| {
                                    StorageError::Decode {
                                        kind: "revision".into(),
                                        id: e.id.to_string(),
                                        message: err.to_string(),
                                    }
                                })
                            })
                            .collect::<Result<Vec<Map>>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                .collect()
        });
        let mut nodes = Vec::new();
        let mut edges = Vec::new();
        let mut maps = Vec::with_capacity(raw.len());
        for d in decoded {
            maps.extend(d?);
        }
        for ((mut elem, edge, parent, child, _), metadata) in raw.into_iter().zip(maps) {
            elem.metadata = metadata;
            if edge {
                edges.push(Arc::new(Edge {
                    elem,
                    parent,
                    child,
                }));
            } else {
                nodes.push(Arc::new(Node::from(elem)));
            }
        }
        sort_revisions(&mut nodes);
        sort_revisions(&mut edges);
        Ok((nodes, edges))
    }
}

/// Node and edge revisions.
type Revisions = (Vec<Arc<Node>>, Vec<Arc<Edge>>);

fn sort_revisions<T: std::ops::Deref<Target = Element>>(items: &mut [Arc<T>]) {
    items.sort_by(|a, b| {
        a.updated_at
            .cmp(&b.updated_at)
            .then_with(|| a.id.cmp(&b.id))
            .then_with(|| a.revision.cmp(&b.revision))
    });
}

fn backend_error(e: StorageError) -> HistoryError {
    HistoryError::Backend(e.to_string())
}

impl History for Embedded {
    fn at(&self, t: Time) -> std::result::Result<RevisionGraph, HistoryError> {
        let (nodes, edges) = self.revisions(t, t).map_err(backend_error)?;
        Ok(RevisionGraph::latest(nodes, edges))
    }

    fn slice(&self, start: Time, last: Time) -> std::result::Result<RevisionGraph, HistoryError> {
        let (nodes, edges) = self.revisions(start, last).map_err(backend_error)?;
        Ok(RevisionGraph::new(nodes, edges))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_round_outwards() {
        let t = SPAN_EPOCH_MS + 5_500;
        assert_eq!(span_floor(t), 5);
        assert_eq!(span_ceil(t), 6);
        assert_eq!(span_ceil(SPAN_EPOCH_MS + 5_000), 5);
        assert_eq!(span_floor(SPAN_EPOCH_MS - 1), -1);
        assert_eq!(span_end(0, 0), SPAN_FOREVER);
        assert_eq!(span_end(SPAN_EPOCH_MS + 9_000, SPAN_EPOCH_MS + 2_000), 2);
        assert!(span_floor(i64::MAX) < SPAN_FOREVER);
    }
}
