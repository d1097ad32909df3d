//! The storage-backend contract: what a `storage.<name>` section opens, as parts the analyzer
//! uses without knowing the driver. A backend keeps resources, may keep the topology history
//! ([`TopologyStore`]: what the recorder writes, what `G.At`/`G.Context` read) and flows
//! ([`crate::FlowStore`]), and may need upkeep ([`Upkeep`]: retention, status). A second
//! backend (Elasticsearch, OpenSearch) is one more constructor here and passes the same
//! battery of tests (`tests/`).

use std::sync::{Arc, Mutex};

use skydive_graph::{GraphEvent, History, HistoryError, MemoryHistory, RevisionGraph, Time};

use crate::{Embedded, FlowStore, MemoryResources, Removed, ResourceStore, Result, Retention};

/// Where the topology history is kept.
pub trait TopologyStore: History {
    /// Records graph events in the order they happened; durable when this returns.
    fn record(&self, events: &[GraphEvent]) -> Result<()>;
    /// Closes, as deleted at `at`, the history of elements that were current before the
    /// analyzer restarted and that nobody sent again; how many. Runs once after a start.
    fn close_orphans(&self, at: Time) -> Result<usize>;
    /// Revisions stored (every version of every element).
    fn revision_count(&self) -> Result<i64>;
    /// Where it is, for messages (a path, a URL).
    fn location(&self) -> String;
}

/// What a backend needs done now and then, and what it says of itself.
pub trait Upkeep: Send + Sync {
    /// Removes what its retention no longer keeps at `now`.
    fn enforce_retention(&self, now: Time) -> Result<Removed>;
    /// Its entry in `/api/status` (`Storage.Stores`).
    fn describe(&self) -> serde_json::Value;
    /// Leaves the files whole and compact at a clean stop (the embedded store folds its log
    /// into the database).
    fn close(&self) -> Result<()> {
        Ok(())
    }
}

/// A backend's parts.
#[derive(Clone)]
pub struct Backend {
    /// The driver (`embedded`, `memory`).
    pub driver: &'static str,
    pub resources: Arc<dyn ResourceStore>,
    /// The topology history; none where the driver keeps none.
    pub topology: Option<Arc<dyn TopologyStore>>,
    /// The flows; none where the driver keeps none.
    pub flows: Option<Arc<dyn FlowStore>>,
    pub upkeep: Option<Arc<dyn Upkeep>>,
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backend")
            .field("driver", &self.driver)
            .field("topology", &self.topology.is_some())
            .field("flows", &self.flows.is_some())
            .finish()
    }
}

impl Backend {
    /// The embedded store in directory `dir`, with its retention.
    pub fn embedded(dir: &std::path::Path, retention: Retention) -> Result<Backend> {
        Ok(Self::of_embedded(Embedded::open(dir)?, retention))
    }

    /// As [`Backend::embedded`]; a damaged store is recovered (see
    /// [`crate::health::recover`]) and what was kept is returned with it.
    pub fn embedded_recovering(
        dir: &std::path::Path,
        retention: Retention,
    ) -> Result<(Backend, Option<crate::health::Recovery>)> {
        match Embedded::open(dir) {
            Ok(e) => Ok((Self::of_embedded(e, retention), None)),
            Err(crate::StorageError::Damaged { .. }) => {
                let (e, report) = crate::health::recover(dir)?;
                Ok((Self::of_embedded(e, retention), Some(report)))
            }
            Err(e) => Err(e),
        }
    }

    fn of_embedded(e: Embedded, retention: Retention) -> Backend {
        let store = Arc::new(e.with_retention(retention));
        Backend {
            driver: "embedded",
            resources: store.clone(),
            topology: Some(store.clone()),
            flows: Some(store.clone()),
            upkeep: Some(store),
        }
    }

    /// Memory: resources while the process runs; no history and no flows, as Skydive's
    /// memory backend (a time context is then refused).
    pub fn memory() -> Backend {
        Backend {
            driver: "memory",
            resources: Arc::new(MemoryResources::new()),
            topology: None,
            flows: None,
            upkeep: None,
        }
    }

    /// Everything in memory, history and flows included: the reference the battery of
    /// tests holds every backend to, and a store for tests.
    pub fn reference() -> Backend {
        Backend {
            driver: "reference",
            resources: Arc::new(MemoryResources::new()),
            topology: Some(Arc::new(MemoryTopology::default())),
            flows: Some(Arc::new(crate::MemoryFlows::new())),
            upkeep: None,
        }
    }
}

impl TopologyStore for Embedded {
    fn record(&self, events: &[GraphEvent]) -> Result<()> {
        Embedded::record(self, events)
    }
    fn close_orphans(&self, at: Time) -> Result<usize> {
        Embedded::close_orphans(self, at)
    }
    fn revision_count(&self) -> Result<i64> {
        Embedded::revision_count(self)
    }
    fn location(&self) -> String {
        self.path().display().to_string()
    }
}

impl Upkeep for Embedded {
    fn enforce_retention(&self, now: Time) -> Result<Removed> {
        Embedded::enforce_retention(self, self.retention(), now)
    }
    fn describe(&self) -> serde_json::Value {
        let r = self.retention();
        serde_json::json!({
            "Driver": "embedded",
            "Path": self.path().display().to_string(),
            "UsedBytes": self.used_bytes().unwrap_or(0),
            "Retention": {"MaxAge": r.max_age / 1000, "MaxSize": r.max_size >> 20},
        })
    }
    fn close(&self) -> Result<()> {
        self.conn()
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        Ok(())
    }
}

/// The topology history in memory: every revision, as the graph crate's reference keeps it.
/// Nothing survives the process, so nothing is ever left over from before a restart.
#[derive(Default)]
pub struct MemoryTopology(Mutex<MemoryHistory>);

impl MemoryTopology {
    fn lock(&self) -> std::sync::MutexGuard<'_, MemoryHistory> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl History for MemoryTopology {
    fn at(&self, t: Time) -> std::result::Result<RevisionGraph, HistoryError> {
        self.lock().at(t)
    }
    fn slice(&self, start: Time, last: Time) -> std::result::Result<RevisionGraph, HistoryError> {
        self.lock().slice(start, last)
    }
}

impl TopologyStore for MemoryTopology {
    fn record(&self, events: &[GraphEvent]) -> Result<()> {
        let mut h = self.lock();
        events.iter().for_each(|e| h.record(e));
        Ok(())
    }
    fn close_orphans(&self, _at: Time) -> Result<usize> {
        Ok(0)
    }
    fn revision_count(&self) -> Result<i64> {
        Ok(self.lock().revision_count() as i64)
    }
    fn location(&self) -> String {
        "memory".into()
    }
}
