//! The embedded store: one SQLite database in the data directory, in WAL mode with full
//! synchronisation, so that what was acknowledged survives a crash of the process or the
//! machine.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value;

use crate::resources::ResourceStore;
use crate::{Result, StorageError};

/// Schema migrations, applied in order; the database records how many it has.
const MIGRATIONS: &[&str] = &["CREATE TABLE resources (
        kind TEXT NOT NULL,
        id TEXT NOT NULL,
        value TEXT NOT NULL,
        expires_at INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (kind, id)
    ) WITHOUT ROWID;
    CREATE INDEX resources_expiry ON resources (expires_at) WHERE expires_at > 0;"];

/// The embedded store.
pub struct Embedded {
    path: PathBuf,
    conn: Mutex<Connection>,
}

impl std::fmt::Debug for Embedded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedded")
            .field("path", &self.path)
            .finish()
    }
}

impl Embedded {
    /// Opens (creating if needed) the store in directory `dir`.
    pub fn open(dir: &Path) -> Result<Embedded> {
        let open_err = |message: String| StorageError::Open {
            path: dir.display().to_string(),
            message,
        };
        std::fs::create_dir_all(dir).map_err(|e| open_err(e.to_string()))?;
        let path = dir.join("skydive.db");
        let conn = Connection::open(&path).map_err(|e| open_err(e.to_string()))?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(|e| open_err(e.to_string()))?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        for (i, m) in MIGRATIONS.iter().enumerate().skip(version.max(0) as usize) {
            conn.execute_batch(m)?;
            conn.pragma_update(None, "user_version", (i + 1) as i64)?;
        }
        Ok(Embedded {
            path,
            conn: Mutex::new(conn),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // SQLite keeps the database consistent even if a holder panicked mid-statement.
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
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
    fn embedded_store_passes_the_battery() {
        let dir = tempfile::tempdir().unwrap();
        crate::resources::battery::run(&Embedded::open(dir.path()).unwrap());
    }

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
