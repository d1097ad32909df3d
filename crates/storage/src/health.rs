//! The embedded store's health: what is checked before it is used, and the recovery of a
//! damaged one.
//!
//! At open: the write-ahead log must hold whole frames (a log cut in the middle of a frame
//! lost committed transactions), SQLite's `quick_check` must pass, and the database must be
//! the one the directory had (its identity is kept in the database and in `skydive.db.id`
//! beside it, so that a database emptied, deleted or replaced is not taken for a new one).
//! Damage stops the open with a [`StorageError::Damaged`] naming what was found, since
//! starting on it would lose or hide data without a word.
//!
//! [`recover`] keeps what can be read: the damaged files are moved aside (renamed
//! `skydive.db.damaged-<time>`, with their log), a new database is made, and every table is
//! copied row by row, skipping the ranges of rows on damaged pages; it says what it kept
//! and what it skipped.
//!
//! A cut that falls exactly between two frames cannot be told from a shorter log, and is
//! not detected.

use std::path::{Path, PathBuf};

use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params_from_iter};

use crate::{Result, StorageError};

/// The database's file name in the data directory.
pub const DB_FILE: &str = "skydive.db";
/// The file beside the database that remembers its identity.
pub const ID_FILE: &str = "skydive.db.id";

fn wal_path(db: &Path) -> PathBuf {
    let mut p = db.as_os_str().to_owned();
    p.push("-wal");
    PathBuf::from(p)
}

fn shm_path(db: &Path) -> PathBuf {
    let mut p = db.as_os_str().to_owned();
    p.push("-shm");
    PathBuf::from(p)
}

/// What is wrong with the write-ahead log of `db`, if anything.
pub fn check_wal(db: &Path) -> Option<String> {
    let wal = wal_path(db);
    let data = std::fs::read(&wal).ok()?;
    if data.is_empty() {
        return None;
    }
    if data.len() < 32 {
        return Some(format!(
            "{}: {} bytes, shorter than a log header (32): the log was cut",
            wal.display(),
            data.len()
        ));
    }
    let magic = u32::from_be_bytes([data[0], data[1], data[2], data[3]]);
    if magic & !1 != 0x377f_0682 {
        return Some(format!("{}: not a SQLite write-ahead log", wal.display()));
    }
    let page = u32::from_be_bytes([data[8], data[9], data[10], data[11]]) as usize;
    if !(512..=65536).contains(&page) || !page.is_power_of_two() {
        return Some(format!(
            "{}: invalid page size {page} in the log header",
            wal.display()
        ));
    }
    let frame = 24 + page;
    let rest = (data.len() - 32) % frame;
    (rest != 0).then(|| {
        format!(
            "{}: ends {rest} bytes into a frame: the log was cut, and transactions it held \
             may be lost",
            wal.display()
        )
    })
}

/// The identity remembered beside the database, when there is one.
pub fn remembered_id(dir: &Path) -> Option<String> {
    std::fs::read_to_string(dir.join(ID_FILE))
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// The identity recorded in the database (none in a new or replaced database).
pub fn recorded_id(conn: &Connection) -> Option<String> {
    let has_meta: bool = conn
        .query_row(
            "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'meta'",
            [],
            |r| r.get(0),
        )
        .ok()?;
    if !has_meta {
        return None;
    }
    conn.query_row("SELECT value FROM meta WHERE key = 'store_id'", [], |r| {
        r.get(0)
    })
    .optional()
    .ok()
    .flatten()
}

/// `PRAGMA quick_check`: the problems found, none when the database is sound.
pub fn quick_check(conn: &Connection) -> std::result::Result<Vec<String>, rusqlite::Error> {
    let mut stmt = conn.prepare("PRAGMA quick_check(20)")?;
    let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
    let mut out = Vec::new();
    for r in rows {
        let r = r?;
        if r != "ok" {
            out.push(r);
        }
    }
    Ok(out)
}

/// Whether an SQLite error says the file is damaged.
pub fn is_damage(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase)
    )
}

/// Builds the error that stops an open on damage.
pub(crate) fn damaged(dir: &Path, findings: Vec<String>) -> StorageError {
    StorageError::Damaged {
        path: dir.join(DB_FILE).display().to_string(),
        findings,
    }
}

/// What [`recover`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Where the damaged database went.
    pub moved_to: String,
    /// Per table: rows copied, ranges of rows skipped (on damaged pages), and the first
    /// error met.
    pub tables: Vec<TableRecovery>,
}

/// What was kept of one table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableRecovery {
    pub table: String,
    pub kept: u64,
    pub skipped_ranges: u64,
    pub error: Option<String>,
}

impl std::fmt::Display for Recovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "damaged database moved to {}; kept", self.moved_to)?;
        for (i, t) in self.tables.iter().enumerate() {
            let sep = if i == 0 { " " } else { ", " };
            write!(f, "{sep}{} rows of {}", t.kept, t.table)?;
            if t.skipped_ranges > 0 || t.error.is_some() {
                write!(
                    f,
                    " ({} damaged ranges skipped, rows in them lost: {})",
                    t.skipped_ranges,
                    t.error.as_deref().unwrap_or("unreadable")
                )?;
            }
        }
        Ok(())
    }
}

/// The tables copied by a recovery, in order, and whether each has a rowid.
const TABLES: &[(&str, bool)] = &[
    ("resources", false),
    ("topology", true),
    ("flow_docs", true),
    ("flows", true),
    ("flow_metrics", true),
    ("flow_packets", true),
];

/// Moves the damaged database of `dir` aside and makes a new one from what can be read.
pub fn recover(dir: &Path) -> Result<(crate::Embedded, Recovery)> {
    let db = dir.join(DB_FILE);
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let aside = dir.join(format!("{DB_FILE}.damaged-{stamp}"));
    let io = |e: std::io::Error| StorageError::Open {
        path: dir.display().to_string(),
        message: format!("cannot move the damaged database aside: {e}"),
    };
    if db.exists() {
        std::fs::rename(&db, &aside).map_err(io)?;
    }
    for (from, to) in [
        (wal_path(&db), wal_path(&aside)),
        (shm_path(&db), shm_path(&aside)),
    ] {
        if from.exists() {
            std::fs::rename(&from, &to).map_err(io)?;
        }
    }
    let _ = std::fs::remove_file(dir.join(ID_FILE));
    let store = crate::Embedded::open(dir)?;
    let mut report = Recovery {
        moved_to: aside.display().to_string(),
        tables: Vec::new(),
    };
    let old = Connection::open_with_flags(&aside, OpenFlags::SQLITE_OPEN_READ_ONLY);
    for (table, rowid) in TABLES {
        let mut t = TableRecovery {
            table: table.to_string(),
            ..Default::default()
        };
        match &old {
            Ok(old) => {
                let conn = store.conn();
                if *rowid {
                    salvage_rowid(old, &conn, table, &mut t)?;
                } else {
                    salvage_resources(old, &conn, &mut t)?;
                }
            }
            Err(e) => t.error = Some(e.to_string()),
        }
        report.tables.push(t);
    }
    crate::history::rebuild_spans(&store.conn())?;
    store.reload_recorder()?;
    Ok((store, report))
}

/// The columns of `table` in the new database, without the rowid's alias.
fn columns(new: &Connection, table: &str) -> Result<Vec<String>> {
    let mut stmt = new.prepare(&format!("PRAGMA table_info({table})"))?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, i64>(5)?,
        ))
    })?;
    let mut out = Vec::new();
    for r in rows {
        let (name, ty, pk) = r?;
        if !(pk == 1 && ty.eq_ignore_ascii_case("INTEGER")) {
            out.push(name);
        }
    }
    Ok(out)
}

fn note(t: &mut TableRecovery, e: &rusqlite::Error) {
    t.skipped_ranges += 1;
    t.error.get_or_insert_with(|| e.to_string());
}

/// Copies the readable rows of a rowid table, in rowid order; on a damaged page, looks for
/// the first rowid that can be read again beyond it.
fn salvage_rowid(
    old: &Connection,
    new: &Connection,
    table: &str,
    t: &mut TableRecovery,
) -> Result<()> {
    let cols = columns(new, table)?;
    let list = cols.join(", ");
    let marks = vec!["?"; cols.len() + 1].join(", ");
    let insert = format!("INSERT INTO {table} (rowid, {list}) VALUES ({marks})");
    let select = format!("SELECT rowid, {list} FROM {table} WHERE rowid >= ?1 ORDER BY rowid");
    let tx = new.unchecked_transaction()?;
    let mut from = i64::MIN;
    loop {
        let mut last = None;
        let failed = match old.prepare(&select) {
            Err(e) => Some(e),
            Ok(mut stmt) => match stmt.query([from]) {
                Err(e) => Some(e),
                Ok(mut rows) => loop {
                    match rows.next() {
                        Ok(Some(r)) => {
                            let values: Vec<SqlValue> = (0..=cols.len())
                                .map(|i| r.get::<_, SqlValue>(i))
                                .collect::<std::result::Result<_, _>>()?;
                            last = match values[0] {
                                SqlValue::Integer(i) => Some(i),
                                _ => last,
                            };
                            tx.execute(&insert, params_from_iter(values))?;
                            t.kept += 1;
                        }
                        Ok(None) => break None,
                        Err(e) => break Some(e),
                    }
                },
            },
        };
        let Some(e) = failed else { break };
        note(t, &e);
        // Past the last row read, or past where this pass began when it read none.
        let after = last.unwrap_or(from);
        match next_readable_rowid(old, table, after) {
            Some(next) => from = next,
            None => break,
        }
    }
    tx.commit()?;
    Ok(())
}

/// The smallest rowid beyond `after` from which `table` reads again, if any row does.
fn next_readable_rowid(old: &Connection, table: &str, after: i64) -> Option<i64> {
    let q = format!("SELECT rowid FROM {table} WHERE rowid >= ?1 ORDER BY rowid LIMIT 1");
    // Ok(Some(rowid)): reads from there; Ok(None): nothing beyond; Err: still damaged.
    let probe = |p: i64| -> std::result::Result<Option<i64>, ()> {
        old.query_row(&q, [p], |r| r.get::<_, i64>(0))
            .optional()
            .map_err(|_| ())
    };
    let mut bad = after;
    let mut step: i64 = 1;
    let good = loop {
        let p = after.saturating_add(step);
        if probe(p).is_ok() {
            break p;
        }
        bad = p;
        if p == i64::MAX {
            return None;
        }
        step = step.saturating_mul(2);
    };
    // The boundary between `bad` (damaged) and `good` (readable).
    let (mut lo, mut hi) = (bad, good);
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        match probe(mid) {
            Ok(_) => hi = mid,
            Err(()) => lo = mid,
        }
    }
    probe(hi).ok().flatten()
}

/// Keys above `s`, in increasing order: `s` extended, then every larger character at each
/// position from the last to the first (printable ASCII), so that the first one that reads
/// is close to the first readable key past a damaged page.
fn successors(s: &str) -> Vec<String> {
    let chars: Vec<char> = s.chars().collect();
    let mut out = vec![format!("{s}\u{1}")];
    for k in (0..chars.len()).rev() {
        let prefix: String = chars[..k].iter().collect();
        let from = (chars[k] as u32 + 1).max(0x20);
        for c in (from..=0x7e).filter_map(char::from_u32) {
            out.push(format!("{prefix}{c}"));
        }
        if chars[k] as u32 >= 0x7e
            && let Some(c) = char::from_u32(chars[k] as u32 + 1)
        {
            out.push(format!("{prefix}{c}"));
        }
    }
    out
}

/// Copies the readable resources, in key order; on a damaged page, looks for the next key
/// (within the kind, then the next kinds) that can be read again.
fn salvage_resources(old: &Connection, new: &Connection, t: &mut TableRecovery) -> Result<()> {
    let select = "SELECT kind, id, value, expires_at FROM resources
                  WHERE (kind, id) >= (?1, ?2) ORDER BY kind, id";
    let insert =
        "INSERT OR REPLACE INTO resources (kind, id, value, expires_at) VALUES (?1, ?2, ?3, ?4)";
    let tx = new.unchecked_transaction()?;
    let mut from = (String::new(), String::new());
    loop {
        let mut last: Option<(String, String)> = None;
        let failed = match old.prepare(select) {
            Err(e) => Some(e),
            Ok(mut stmt) => match stmt.query([&from.0, &from.1]) {
                Err(e) => Some(e),
                Ok(mut rows) => loop {
                    match rows.next() {
                        Ok(Some(r)) => {
                            let values: Vec<SqlValue> = (0..4)
                                .map(|i| r.get::<_, SqlValue>(i))
                                .collect::<std::result::Result<_, _>>()?;
                            let key = (r.get::<_, String>(0)?, r.get::<_, String>(1)?);
                            tx.execute(insert, params_from_iter(values))?;
                            t.kept += 1;
                            last = Some(key);
                        }
                        Ok(None) => break None,
                        Err(e) => break Some(e),
                    }
                },
            },
        };
        let Some(e) = failed else { break };
        note(t, &e);
        let (kind, id) = last.unwrap_or_else(|| from.clone());
        let probe = |k: &str, i: &str| {
            old.query_row(
                "SELECT kind, id FROM resources WHERE (kind, id) >= (?1, ?2) ORDER BY kind, id LIMIT 1",
                [k, i],
                |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)),
            )
            .optional()
        };
        let candidates = successors(&id)
            .into_iter()
            .map(|i| (kind.clone(), i))
            .chain(successors(&kind).into_iter().map(|k| (k, String::new())));
        // The first candidate that reads (a key beyond the damage, or the end), and the one
        // before it, which does not.
        let mut failed: Option<(String, String)> = None;
        let mut found = None;
        for (k, i) in candidates {
            match probe(&k, &i) {
                Ok(r) => {
                    found = Some((k, r));
                    break;
                }
                Err(_) => failed = Some((k, i)),
            }
        }
        let Some((found_kind, mut next)) = found else {
            break;
        };
        // Narrow down between the two, one character at a time: seeking a key just below
        // the first record past the damage still lands on the damaged page, and what lies
        // between the two candidates is readable.
        if let Some((k, mut prefix)) = failed.filter(|(k, _)| *k == found_kind) {
            for _depth in 0..64 {
                let mut last_failed = None;
                let mut better = None;
                for c in (0x20u8..=0x7e).map(char::from) {
                    let candidate = format!("{prefix}{c}");
                    match probe(&k, &candidate) {
                        Ok(r) => {
                            better = Some(r);
                            break;
                        }
                        Err(_) => last_failed = Some(candidate),
                    }
                }
                match (better, last_failed) {
                    (Some(r), Some(f)) => {
                        next = r;
                        prefix = f;
                    }
                    (Some(r), None) => {
                        next = r;
                        break;
                    }
                    (None, _) => break,
                }
            }
        }
        match next {
            Some(key) => from = key,
            None => break,
        }
    }
    tx.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Embedded, ResourceStore};

    const PAGE: u64 = 4096;

    /// Overwrites page `n` (1-based) of the database file with garbage.
    fn smash_page(db: &Path, n: u64) {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::OpenOptions::new().write(true).open(db).unwrap();
        f.seek(SeekFrom::Start((n - 1) * PAGE)).unwrap();
        f.write_all(&[0xA5; PAGE as usize]).unwrap();
        f.sync_all().unwrap();
    }

    fn pages(db: &Path) -> u64 {
        std::fs::metadata(db).unwrap().len() / PAGE
    }

    /// A store of `n` resources, closed (its log folded into the database).
    fn store_with_resources(dir: &Path, n: usize) {
        let s = Embedded::open(dir).unwrap();
        for i in 0..n {
            let v = serde_json::json!({"UUID": format!("r{i:05}"), "Pad": "x".repeat(150)});
            s.put("noderule", &format!("r{i:05}"), &v, 0).unwrap();
        }
    }

    #[test]
    fn a_damaged_page_stops_the_open_and_recovery_keeps_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        store_with_resources(dir.path(), 3000);
        let db = dir.path().join(DB_FILE);
        let n = pages(&db);
        assert!(n > 100, "{n} pages");
        smash_page(&db, n - 20);
        let e = Embedded::open(dir.path()).unwrap_err();
        assert!(matches!(e, StorageError::Damaged { .. }), "{e}");
        assert!(e.to_string().contains("--recover"), "{e}");
        // Refused again: nothing was changed by the refusal.
        assert!(Embedded::open(dir.path()).is_err());

        let (store, report) = recover(dir.path()).unwrap();
        let resources = &report.tables[0];
        assert_eq!(resources.table, "resources");
        assert!(resources.skipped_ranges >= 1, "{report}");
        // One page of ~20 rows lost, the rows after it kept.
        assert!((2900..3000).contains(&resources.kept), "{report}");
        let kept = store.list("noderule", 0).unwrap();
        assert_eq!(kept.len() as u64, resources.kept);
        assert!(
            kept.contains_key("r02999"),
            "rows after the damaged page are kept"
        );
        assert!(Path::new(&report.moved_to).exists());
        assert!(report.to_string().contains("rows of resources"), "{report}");
        drop(store);
        // The recovered store opens cleanly.
        assert_eq!(
            Embedded::open(dir.path())
                .unwrap()
                .list("noderule", 0)
                .unwrap()
                .len() as u64,
            resources.kept
        );
    }

    /// A leaf of a table's B-tree: from its root, the child of the middle cell of each
    /// interior page down to a leaf.
    fn leaf_of(db: &Path, table: &str) -> u64 {
        let root: i64 = Connection::open(db)
            .unwrap()
            .query_row(
                "SELECT rootpage FROM sqlite_master WHERE name = ?1",
                [table],
                |r| r.get(0),
            )
            .unwrap();
        let file = std::fs::read(db).unwrap();
        let mut n = root as usize;
        loop {
            let page = &file[(n - 1) * PAGE as usize..n * PAGE as usize];
            // 0x02 and 0x05: interior pages (index, as WITHOUT ROWID tables are, and table).
            if !matches!(page[0], 0x02 | 0x05) {
                return n as u64;
            }
            let cells = u16::from_be_bytes([page[3], page[4]]) as usize;
            let at = 12 + 2 * (cells / 2);
            let cell = u16::from_be_bytes([page[at], page[at + 1]]) as usize;
            n = u32::from_be_bytes([page[cell], page[cell + 1], page[cell + 2], page[cell + 3]])
                as usize;
        }
    }

    /// Records of about the size of a rule.
    const PADDING: usize = 400;

    #[test]
    fn a_damaged_leaf_of_random_keys_loses_only_its_rows() {
        let dir = tempfile::tempdir().unwrap();
        let mut ids = Vec::new();
        {
            let s = Embedded::open(dir.path()).unwrap();
            for _ in 0..600 {
                let id = uuid::Uuid::new_v4().to_string();
                s.put(
                    "noderule",
                    &id,
                    &serde_json::json!({"UUID": id, "Pad": "x".repeat(PADDING)}),
                    0,
                )
                .unwrap();
                ids.push(id);
            }
        }
        let db = dir.path().join(DB_FILE);
        smash_page(&db, leaf_of(&db, "resources"));
        let (store, report) = recover(dir.path()).unwrap();
        let kept = store.list("noderule", 0).unwrap();
        // The rows lost are consecutive keys: those of one page.
        ids.sort();
        let lost: Vec<usize> = (0..ids.len())
            .filter(|i| !kept.contains_key(&ids[*i]))
            .collect();
        let shown: Vec<&str> = lost.iter().map(|i| &ids[*i][..6]).collect();
        let before: Vec<&str> = (lost[0].saturating_sub(2)..lost[0])
            .map(|i| &ids[i][..6])
            .collect();
        assert!(
            (580..600).contains(&kept.len()),
            "{report}: lost {shown:?} after {before:?}"
        );
        assert!(lost.windows(2).all(|w| w[1] == w[0] + 1), "{lost:?}");
    }

    #[test]
    fn rowid_tables_are_salvaged_past_a_damaged_page() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Embedded::open(dir.path()).unwrap();
            let c = s.conn();
            let tx = c.unchecked_transaction().unwrap();
            for i in 0..5000i64 {
                tx.execute(
                    "INSERT INTO flow_packets (flow, timestamp, idx, link_type, data) VALUES (?1, ?2, 0, 1, ?3)",
                    rusqlite::params![i, i, vec![7u8; 100]],
                )
                .unwrap();
            }
            tx.commit().unwrap();
        }
        let db = dir.path().join(DB_FILE);
        smash_page(&db, pages(&db) - 40);
        assert!(Embedded::open(dir.path()).is_err());
        let (store, report) = recover(dir.path()).unwrap();
        let t = report
            .tables
            .iter()
            .find(|t| t.table == "flow_packets")
            .unwrap();
        assert!(t.skipped_ranges >= 1, "{report}");
        assert!((4800..5000).contains(&t.kept), "{report}");
        let last: i64 = store
            .conn()
            .query_row("SELECT max(flow) FROM flow_packets", [], |r| r.get(0))
            .unwrap();
        assert_eq!(last, 4999, "rows after the damaged page are kept");
    }

    #[test]
    fn an_emptied_or_deleted_database_is_not_taken_for_a_new_one() {
        let dir = tempfile::tempdir().unwrap();
        store_with_resources(dir.path(), 10);
        let db = dir.path().join(DB_FILE);
        std::fs::write(&db, b"").unwrap();
        let e = Embedded::open(dir.path()).unwrap_err();
        assert!(e.to_string().contains("missing or empty"), "{e}");
        std::fs::remove_file(&db).unwrap();
        assert!(Embedded::open(dir.path()).is_err());
        // Another store's database put in its place.
        let other = tempfile::tempdir().unwrap();
        store_with_resources(other.path(), 1);
        std::fs::copy(other.path().join(DB_FILE), &db).unwrap();
        let e = Embedded::open(dir.path()).unwrap_err();
        assert!(e.to_string().contains("emptied or replaced"), "{e}");
        // Recovery starts from what the file has.
        let (store, report) = recover(dir.path()).unwrap();
        assert_eq!(report.tables[0].kept, 1);
        assert_eq!(store.list("noderule", 0).unwrap().len(), 1);
    }

    #[test]
    fn a_cut_log_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let copy = tempfile::tempdir().unwrap();
        {
            let s = Embedded::open(dir.path()).unwrap();
            for i in 0..50 {
                s.put("capture", &format!("c{i}"), &serde_json::json!({"i": i}), 0)
                    .unwrap();
            }
            // The store as a crash would leave it: the log not folded in.
            for f in [DB_FILE, "skydive.db-wal", ID_FILE] {
                std::fs::copy(dir.path().join(f), copy.path().join(f)).unwrap();
            }
        }
        let wal = copy.path().join("skydive.db-wal");
        let len = std::fs::metadata(&wal).unwrap().len();
        assert!(len > 32, "the log holds the writes");
        // Whole, it opens with everything.
        {
            let tmp = tempfile::tempdir().unwrap();
            for f in [DB_FILE, "skydive.db-wal", ID_FILE] {
                std::fs::copy(copy.path().join(f), tmp.path().join(f)).unwrap();
            }
            assert_eq!(
                Embedded::open(tmp.path())
                    .unwrap()
                    .list("capture", 0)
                    .unwrap()
                    .len(),
                50
            );
        }
        std::fs::OpenOptions::new()
            .write(true)
            .open(&wal)
            .unwrap()
            .set_len(len - 1000)
            .unwrap();
        let e = Embedded::open(copy.path()).unwrap_err();
        assert!(e.to_string().contains("the log was cut"), "{e}");
    }

    #[test]
    fn successors_are_in_increasing_order() {
        let s = successors("ab");
        assert_eq!(&s[..3], ["ab\u{1}", "ac", "ad"]);
        assert!(s.contains(&"b".to_string()) && s.contains(&"~".to_string()));
        assert!(s.windows(2).all(|w| w[0] < w[1]), "{s:?}");
        assert!(s.iter().all(|k| k.as_str() > "ab"));
        assert_eq!(successors(""), vec!["\u{1}"]);
    }

    #[test]
    fn a_log_cut_inside_a_frame_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join(DB_FILE);
        assert_eq!(check_wal(&db), None, "no log");
        let mut wal = vec![0u8; 32 + 2 * (24 + 4096)];
        wal[..4].copy_from_slice(&0x377f_0682u32.to_be_bytes());
        wal[8..12].copy_from_slice(&4096u32.to_be_bytes());
        std::fs::write(wal_path(&db), &wal).unwrap();
        assert_eq!(check_wal(&db), None, "whole frames");
        std::fs::write(wal_path(&db), &wal[..wal.len() - 100]).unwrap();
        assert!(check_wal(&db).unwrap().contains("was cut"));
        std::fs::write(wal_path(&db), &wal[..20]).unwrap();
        assert!(
            check_wal(&db)
                .unwrap()
                .contains("shorter than a log header")
        );
        std::fs::write(wal_path(&db), vec![7u8; 64]).unwrap();
        assert!(
            check_wal(&db)
                .unwrap()
                .contains("not a SQLite write-ahead log")
        );
    }
}
