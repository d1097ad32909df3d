//! The embedded store: one SQLite database in the data directory, in WAL mode with full
//! synchronisation, so that what was acknowledged survives a crash of the process or the
//! machine.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value;

use crate::health;
use crate::resources::ResourceStore;
use crate::{Result, StorageError};

/// Writes `text` to `path` and makes it durable (file and directory).
fn write_durably(path: &Path, text: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        std::io::Write::write_all(&mut f, text.as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Schema migrations, applied in order; the database records how many it has.
pub const MIGRATIONS: &[&str] = &[
    "CREATE TABLE resources (
        kind TEXT NOT NULL,
        id TEXT NOT NULL,
        value TEXT NOT NULL,
        expires_at INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (kind, id)
    ) WITHOUT ROWID;
    CREATE INDEX resources_expiry ON resources (expires_at) WHERE expires_at > 0;",
    // Topology history: one row per element revision. `archived_at` 0 marks the current
    // revision of a live element. `topology_span` indexes each revision's lifetime
    // [updated_at, archived_at or deleted_at or forever], in whole seconds since
    // `SPAN_EPOCH_MS` and rounded outwards, so that a time point or slice query reads only the
    // revisions alive then; the exact test is done on the row.
    "CREATE TABLE topology (
        seq INTEGER PRIMARY KEY,
        edge INTEGER NOT NULL,
        id TEXT NOT NULL,
        host TEXT NOT NULL,
        origin TEXT NOT NULL,
        parent TEXT NOT NULL,
        child TEXT NOT NULL,
        revision INTEGER NOT NULL,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        deleted_at INTEGER NOT NULL,
        archived_at INTEGER NOT NULL,
        metadata BLOB NOT NULL
    );
    CREATE UNIQUE INDEX topology_live ON topology (edge, id) WHERE archived_at = 0;
    CREATE INDEX topology_archived ON topology (archived_at) WHERE archived_at > 0;
    CREATE VIRTUAL TABLE topology_span USING rtree_i32 (seq, lo, hi);",
    // Flows. `flow_docs`: each flow as first stored (its identity: endpoints, layers, IDs,
    // node), written once, with the indexed fields. `flows`: what changes at each update
    // (times, counters, finish), small rows rewritten in place. `flow_metrics` and
    // `flow_packets`: appended, one row per metric update and per raw packet, in arrival
    // order, indexed by time.
    "CREATE TABLE flow_docs (
        key INTEGER PRIMARY KEY,
        uuid TEXT NOT NULL,
        node_tid TEXT NOT NULL,
        tracking_id TEXT NOT NULL,
        l3_tracking_id TEXT NOT NULL,
        application TEXT NOT NULL,
        network_a TEXT NOT NULL,
        network_b TEXT NOT NULL,
        doc BLOB NOT NULL
    );
    CREATE INDEX flow_docs_node_tid ON flow_docs (node_tid);
    CREATE INDEX flow_docs_tracking_id ON flow_docs (tracking_id);
    CREATE INDEX flow_docs_l3_tracking_id ON flow_docs (l3_tracking_id);
    CREATE INDEX flow_docs_application ON flow_docs (application);
    CREATE INDEX flow_docs_network_a ON flow_docs (network_a);
    CREATE INDEX flow_docs_network_b ON flow_docs (network_b);
    CREATE TABLE flows (
        key INTEGER PRIMARY KEY,
        start INTEGER NOT NULL,
        last INTEGER NOT NULL,
        state BLOB NOT NULL
    );
    CREATE INDEX flows_last ON flows (last);
    CREATE TABLE flow_metrics (
        flow INTEGER NOT NULL,
        start INTEGER NOT NULL,
        last INTEGER NOT NULL,
        ab_packets INTEGER NOT NULL,
        ab_bytes INTEGER NOT NULL,
        ba_packets INTEGER NOT NULL,
        ba_bytes INTEGER NOT NULL,
        rtt INTEGER NOT NULL
    );
    CREATE INDEX flow_metrics_last ON flow_metrics (last);
    CREATE TABLE flow_packets (
        flow INTEGER NOT NULL,
        timestamp INTEGER NOT NULL,
        idx INTEGER NOT NULL,
        link_type INTEGER NOT NULL,
        data BLOB NOT NULL
    );
    CREATE INDEX flow_packets_timestamp ON flow_packets (timestamp);",
    // The store's identity (`store_id`), also kept beside the database (see `health`).
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;",
];

/// The embedded store.
pub struct Embedded {
    path: PathBuf,
    /// The one writing connection (SQLite has one writer at a time).
    conn: Mutex<Connection>,
    /// Idle reading connections: in WAL mode readers see the last commit and never wait
    /// for the writer.
    readers: Mutex<Vec<Connection>>,
    /// History recorder state (current revisions seen since the store was opened).
    pub(crate) recorder: Mutex<crate::history::RecorderState>,
    /// What the store keeps (none by default).
    retention: crate::Retention,
}

impl std::fmt::Debug for Embedded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedded")
            .field("path", &self.path)
            .finish()
    }
}

impl Embedded {
    /// Opens (creating if needed) the store in directory `dir`, after checking it (see
    /// [`crate::health`]): a damaged store is refused with [`StorageError::Damaged`].
    pub fn open(dir: &Path) -> Result<Embedded> {
        let open_err = |message: String| StorageError::Open {
            path: dir.display().to_string(),
            message,
        };
        std::fs::create_dir_all(dir).map_err(|e| open_err(e.to_string()))?;
        let path = dir.join(health::DB_FILE);
        let remembered = health::remembered_id(dir);
        let existed = std::fs::metadata(&path).is_ok_and(|m| m.len() > 0);
        let mut findings: Vec<String> = health::check_wal(&path).into_iter().collect();
        if remembered.is_some() && !existed {
            findings.push(format!(
                "{} is missing or empty, but {} says a store was here",
                path.display(),
                health::ID_FILE
            ));
        }
        if !findings.is_empty() {
            return Err(health::damaged(dir, findings));
        }
        let conn = Connection::open(&path).map_err(|e| open_err(e.to_string()))?;
        let damage = |e: rusqlite::Error| {
            if health::is_damage(&e) {
                health::damaged(dir, vec![e.to_string()])
            } else {
                open_err(e.to_string())
            }
        };
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(damage)?;
        if existed {
            let started = std::time::Instant::now();
            let problems = health::quick_check(&conn).map_err(damage)?;
            if !problems.is_empty() {
                return Err(health::damaged(dir, problems));
            }
            if let Some(id) = &remembered
                && health::recorded_id(&conn).as_ref() != Some(id)
            {
                return Err(health::damaged(
                    dir,
                    vec![format!(
                        "{} is not the database {} names (emptied or replaced)",
                        path.display(),
                        health::ID_FILE
                    )],
                ));
            }
            tracing::debug!(path = %path.display(), took = ?started.elapsed(), "store checked");
        }
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        // 64 MiB of page cache for the writer: indexes of the flow tables stay in memory.
        conn.pragma_update(None, "cache_size", -65536)?;
        // Checkpoint the WAL every 64 MiB rather than every 4 MiB: pages rewritten by many
        // commits (the flows' rows) reach the database file once per checkpoint.
        conn.pragma_update(None, "wal_autocheckpoint", 16384)?;
        conn.pragma_update(None, "journal_size_limit", 64i64 << 20)?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version > MIGRATIONS.len() as i64 {
            return Err(open_err(format!(
                "the database has schema version {version}, newer than this build knows ({})",
                MIGRATIONS.len()
            )));
        }
        for (i, m) in MIGRATIONS.iter().enumerate().skip(version.max(0) as usize) {
            let tx = conn.unchecked_transaction()?;
            tx.execute_batch(m)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)?;
            tx.commit()?;
        }
        let id = match health::recorded_id(&conn) {
            Some(id) => id,
            None => {
                let id = uuid::Uuid::new_v4().to_string();
                conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('store_id', ?1)",
                    params![id],
                )?;
                id
            }
        };
        if remembered.as_ref() != Some(&id) {
            write_durably(&dir.join(health::ID_FILE), &id).map_err(|e| open_err(e.to_string()))?;
        }
        let recorder = crate::history::RecorderState::load(&conn)?;
        Ok(Embedded {
            path,
            conn: Mutex::new(conn),
            readers: Mutex::new(Vec::new()),
            recorder: Mutex::new(recorder),
            retention: crate::Retention::default(),
        })
    }

    /// A reading connection from the pool (opened when none is idle).
    pub(crate) fn reader(&self) -> Result<Reader<'_>> {
        let idle = self.readers.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let conn = match idle {
            Some(c) => c,
            None => {
                let c = Connection::open_with_flags(
                    &self.path,
                    rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY
                        | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )?;
                c.busy_timeout(std::time::Duration::from_secs(5))?;
                c.pragma_update(None, "cache_size", -32768)?;
                c
            }
        };
        Ok(Reader {
            pool: &self.readers,
            conn: Some(conn),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The store, keeping history and flows as `retention` says.
    pub fn with_retention(mut self, retention: crate::Retention) -> Embedded {
        self.retention = retention;
        self
    }

    /// What the store keeps.
    pub fn retention(&self) -> crate::Retention {
        self.retention
    }

    /// Reads the live revisions again (after a recovery filled the store).
    pub(crate) fn reload_recorder(&self) -> Result<()> {
        let state = crate::history::RecorderState::load(&self.conn())?;
        *self.recorder.lock().unwrap_or_else(|e| e.into_inner()) = state;
        Ok(())
    }

    pub(crate) fn conn(&self) -> MutexGuard<'_, Connection> {
        // SQLite keeps the database consistent even if a holder panicked mid-statement.
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A pooled reading connection; goes back to the pool when dropped.
pub(crate) struct Reader<'a> {
    pool: &'a Mutex<Vec<Connection>>,
    conn: Option<Connection>,
}

impl std::ops::Deref for Reader<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        self.conn
            .as_ref()
            .expect("a reader holds its connection until dropped")
    }
}

impl Drop for Reader<'_> {
    fn drop(&mut self) {
        if let Some(c) = self.conn.take() {
            let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
            if pool.len() < 4 {
                pool.push(c);
            }
        }
    }
}

fn decode(kind: &str, id: &str, text: &str) -> Result<Value> {
    serde_json::from_str(text).map_err(|e| StorageError::Decode {
        kind: kind.to_string(),
        id: id.to_string(),
        message: e.to_string(),
    })
}

impl ResourceStore for Embedded {
    fn put(&self, kind: &str, id: &str, value: &Value, expires_at: i64) -> Result<()> {
        self.conn().execute(
            "INSERT INTO resources (kind, id, value, expires_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (kind, id) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at",
            params![kind, id, value.to_string(), expires_at],
        )?;
        Ok(())
    }

    fn get(&self, kind: &str, id: &str, now: i64) -> Result<Option<Value>> {
        let text: Option<String> = self
            .conn()
            .query_row(
                "SELECT value FROM resources WHERE kind = ?1 AND id = ?2 AND (expires_at = 0 OR expires_at > ?3)",
                params![kind, id, now],
                |r| r.get(0),
            )
            .optional()?;
        text.map(|t| decode(kind, id, &t)).transpose()
    }

    fn list(&self, kind: &str, now: i64) -> Result<BTreeMap<String, Value>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT id, value FROM resources WHERE kind = ?1 AND (expires_at = 0 OR expires_at > ?2)",
        )?;
        let rows = stmt.query_map(params![kind, now], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })?;
        let mut out = BTreeMap::new();
        for row in rows {
            let (id, text) = row?;
            let v = decode(kind, &id, &text)?;
            out.insert(id, v);
        }
        Ok(out)
    }

    fn delete(&self, kind: &str, id: &str, now: i64) -> Result<bool> {
        let n = self.conn().execute(
            "DELETE FROM resources WHERE kind = ?1 AND id = ?2 AND (expires_at = 0 OR expires_at > ?3)",
            params![kind, id, now],
        )?;
        Ok(n > 0)
    }

    fn take_expired(&self, now: i64) -> Result<Vec<(String, String, Value)>> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let mut out = Vec::new();
        {
            let mut stmt = tx.prepare(
                "SELECT kind, id, value FROM resources WHERE expires_at > 0 AND expires_at <= ?1",
            )?;
            let rows = stmt.query_map(params![now], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })?;
            for row in rows {
                let (kind, id, text) = row?;
                let v = decode(&kind, &id, &text)?;
                out.push((kind, id, v));
            }
        }
        tx.execute(
            "DELETE FROM resources WHERE expires_at > 0 AND expires_at <= ?1",
            params![now],
        )?;
        tx.commit()?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Embedded::open(dir.path()).unwrap();
            s.put("noderule", "r1", &serde_json::json!({"UUID": "r1"}), 0)
                .unwrap();
        }
        let s = Embedded::open(dir.path()).unwrap();
        assert_eq!(s.list("noderule", 0).unwrap().len(), 1);
    }

    #[test]
    fn unwritable_directory_is_reported() {
        let err = Embedded::open(Path::new("/proc/skydive-cannot-exist")).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("cannot open the store in /proc/skydive-cannot-exist"),
            "{err}"
        );
    }
}
