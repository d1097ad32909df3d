//! Retention of the embedded store: history and flows older than `retention.max_age`, then
//! the oldest of them while the database holds more than `retention.max_size`.
//!
//! Work is done in small transactions (a few thousand rows each), so that ingestion, which
//! shares the one writing connection, waits at most for one of them. Current revisions of
//! live elements are never removed: they are the graph as it is now.

use rusqlite::{OptionalExtension, params};
use skydive_graph::Time;

use crate::Result;
use crate::embedded::Embedded;

/// Rows removed per transaction.
const CHUNK: i64 = 2000;

/// Retention limits; 0 disables a limit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Retention {
    /// Milliseconds.
    pub max_age: i64,
    /// Bytes.
    pub max_size: u64,
}

/// What one retention pass removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Removed {
    pub revisions: u64,
    pub flows: u64,
    pub metrics: u64,
    pub packets: u64,
}

impl Removed {
    fn add(&mut self, o: Removed) {
        self.revisions += o.revisions;
        self.flows += o.flows;
        self.metrics += o.metrics;
        self.packets += o.packets;
    }

    pub fn total(&self) -> u64 {
        self.revisions + self.flows + self.metrics + self.packets
    }
}

impl Embedded {
    /// Bytes of the database in use (pages holding data; free pages are reused).
    pub fn used_bytes(&self) -> Result<u64> {
        let conn = self.reader()?;
        let pages: i64 = conn.query_row(
            "SELECT (SELECT page_count FROM pragma_page_count()) -
                    (SELECT freelist_count FROM pragma_freelist_count())",
            [],
            |r| r.get(0),
        )?;
        let size: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
        Ok(pages.max(0) as u64 * size.max(0) as u64)
    }

    /// Removes archived revisions, flows (with their metrics and packets) and metric
    /// updates older than `cutoff`, a chunk at a time.
    pub fn remove_older_than(&self, cutoff: Time) -> Result<Removed> {
        let mut removed = Removed::default();
        loop {
            let mut conn = self.conn();
            let tx = conn.transaction()?;
            let seqs: Vec<i64> = tx
                .prepare_cached(
                    "DELETE FROM topology WHERE seq IN (
                         SELECT seq FROM topology
                         WHERE archived_at > 0 AND archived_at < ?1 LIMIT ?2)
                     RETURNING seq",
                )?
                .query_map(params![cutoff, CHUNK], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            {
                let mut span = tx.prepare_cached("DELETE FROM topology_span WHERE seq = ?1")?;
                for s in &seqs {
                    span.execute([s])?;
                }
            }
            tx.commit()?;
            removed.revisions += seqs.len() as u64;
            if (seqs.len() as i64) < CHUNK {
                break;
            }
        }
        loop {
            let mut conn = self.conn();
            let tx = conn.transaction()?;
            let keys: Vec<i64> = tx
                .prepare_cached(
                    "DELETE FROM flows WHERE key IN (
                         SELECT key FROM flows WHERE last < ?1 LIMIT ?2)
                     RETURNING key",
                )?
                .query_map(params![cutoff, CHUNK], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            {
                let mut docs = tx.prepare_cached("DELETE FROM flow_docs WHERE key = ?1")?;
                for k in &keys {
                    docs.execute([k])?;
                }
            }
            tx.commit()?;
            removed.flows += keys.len() as u64;
            if (keys.len() as i64) < CHUNK {
                break;
            }
        }
        // A flow's metric updates and packets are no later than its last update: those of
        // the flows just removed go here too.
        for (table, time) in [("flow_metrics", "last"), ("flow_packets", "timestamp")] {
            loop {
                let mut conn = self.conn();
                let tx = conn.transaction()?;
                let n = tx.execute(
                    &format!(
                        "DELETE FROM {table} WHERE rowid IN (
                             SELECT rowid FROM {table} WHERE {time} < ?1 LIMIT ?2)"
                    ),
                    params![cutoff, CHUNK],
                )?;
                tx.commit()?;
                if table == "flow_metrics" {
                    removed.metrics += n as u64;
                } else {
                    removed.packets += n as u64;
                }
                if (n as i64) < CHUNK {
                    break;
                }
            }
        }
        Ok(removed)
    }

    /// The oldest time that retention could remove data up to.
    fn oldest(&self) -> Result<Option<Time>> {
        let conn = self.reader()?;
        let t: Option<Time> = conn
            .query_row(
                "SELECT MIN(t) FROM (
                     SELECT MIN(archived_at) AS t FROM topology WHERE archived_at > 0
                     UNION ALL SELECT MIN(last) FROM flows
                     UNION ALL SELECT MIN(last) FROM flow_metrics
                     UNION ALL SELECT MIN(timestamp) FROM flow_packets)",
                [],
                |r| r.get(0),
            )
            .optional()?
            .flatten();
        Ok(t)
    }

    /// One retention pass at `now`.
    pub fn enforce_retention(&self, r: Retention, now: Time) -> Result<Removed> {
        let mut removed = Removed::default();
        if r.max_age > 0 {
            removed.add(self.remove_older_than(now - r.max_age)?);
        }
        if r.max_size > 0 {
            while self.used_bytes()? > r.max_size {
                let Some(oldest) = self.oldest()? else { break };
                // A tenth of what is kept at a time, at least a minute.
                let step = ((now - oldest) / 10).max(60_000);
                let pass = self.remove_older_than(oldest + step)?;
                removed.add(pass);
                if pass.total() == 0 && oldest + step >= now {
                    break;
                }
            }
        }
        Ok(removed)
    }
}
