//! The analyzer's storage: the stores named by `analyzer.topology.backend` (resources and
//! topology history) and `analyzer.flow.backend` (flows), the recorder that writes every graph
//! change into the history, and the retention task (Skydive's storage backends and time
//! context).
//!
//! The recorder is a thread of its own fed by a hub sink: it writes whatever has queued
//! while the previous write was being made durable, in one transaction (group commit). When
//! a write fails (disk full, read-only directory) it says so in the log and in
//! `/api/status`, keeps the changes (up to `MAX_PENDING` events, then the oldest are
//! counted as lost) and tries again every second, so ingestion resumes on its own once the
//! store can be written again; the live graph never waits for it.

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::config::BackendSpec;
use anyhow::Context as _;
use serde_json::{Value, json};
use skydive_flow::{Flow, FlowMetric, RawPacket};
use skydive_graph::{GraphEvent, History, NoHistory, Time, now_ms};
use skydive_gremlin::{FlowQuery, FlowSource, FlowSourceError};
use skydive_hub::EventBatch;
use skydive_storage::{Backend, FlowStore, ResourceStore, TopologyStore, Upkeep};
use tokio::sync::mpsc;

/// Events kept in memory while the store cannot be written.
const MAX_PENDING: usize = 1_000_000;

/// The stores the analyzer uses, whatever their backends.
pub struct Stores {
    pub resources: Arc<dyn ResourceStore>,
    pub history: Arc<dyn History>,
    pub flows: Option<Arc<dyn FlowStore>>,
    /// Where the history recorder writes, when the topology backend keeps history.
    pub recorder: Option<Arc<dyn TopologyStore>>,
    /// Every backend open that needs upkeep, by section name.
    pub upkeep: BTreeMap<String, Arc<dyn Upkeep>>,
    pub status: Arc<StorageStatus>,
}

impl std::fmt::Debug for Stores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stores")
            .field("backends", &self.upkeep.keys())
            .finish()
    }
}

/// What `/api/status` says about storage.
#[derive(Debug, Default)]
pub struct StorageStatus {
    /// The last write error, cleared by the next successful write.
    error: std::sync::Mutex<Option<String>>,
    /// The first damage met while reading or writing: the store stays degraded until it is
    /// recovered (`--recover`).
    damage: std::sync::Mutex<Option<String>>,
    /// What the recovery at start kept, when there was one.
    pub recovery: std::sync::Mutex<Option<String>>,
    pub events_written: AtomicU64,
    pub pending: AtomicU64,
    pub lost: AtomicU64,
    pub retention_removed: AtomicU64,
    pub orphans_closed: AtomicU64,
}

impl StorageStatus {
    fn set_error(&self, e: Option<String>) {
        *self.error.lock().unwrap_or_else(|e| e.into_inner()) = e;
    }

    pub fn error(&self) -> Option<String> {
        self.error.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn damage(&self) -> Option<String> {
        self.damage
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Records damage met by an operation (the first one is kept and logged).
    fn damaged(&self, what: &str, e: &dyn std::fmt::Display) {
        let mut d = self.damage.lock().unwrap_or_else(|e| e.into_inner());
        if d.is_none() {
            let msg = format!(
                "{what}: {e}; the store is damaged, restart the analyzer with --recover to keep \
                 what can be read"
            );
            tracing::error!("{msg}");
            *d = Some(msg);
        }
    }
}

/// A store whose errors are watched for damage, which puts the status in `degraded`.
struct Watched<T: ?Sized> {
    inner: Arc<T>,
    status: Arc<StorageStatus>,
}

impl<T: ?Sized> Watched<T> {
    fn check<R>(&self, what: &str, r: skydive_storage::Result<R>) -> skydive_storage::Result<R> {
        if let Err(e) = &r
            && e.is_damage()
        {
            self.status.damaged(what, e);
        }
        r
    }
}

impl<T: ResourceStore + ?Sized> ResourceStore for Watched<T> {
    fn put(
        &self,
        kind: &str,
        id: &str,
        value: &Value,
        expires_at: i64,
    ) -> skydive_storage::Result<()> {
        self.check(
            "writing a resource",
            self.inner.put(kind, id, value, expires_at),
        )
    }
    fn get(&self, kind: &str, id: &str, now: i64) -> skydive_storage::Result<Option<Value>> {
        self.check("reading a resource", self.inner.get(kind, id, now))
    }
    fn list(&self, kind: &str, now: i64) -> skydive_storage::Result<BTreeMap<String, Value>> {
        self.check("reading the resources", self.inner.list(kind, now))
    }
    fn delete(&self, kind: &str, id: &str, now: i64) -> skydive_storage::Result<bool> {
        self.check("deleting a resource", self.inner.delete(kind, id, now))
    }
    fn take_expired(&self, now: i64) -> skydive_storage::Result<Vec<(String, String, Value)>> {
        self.check("expiring resources", self.inner.take_expired(now))
    }
}

/// SQLite's words for a damaged file, in the history's errors (which carry text).
fn says_damage(message: &str) -> bool {
    message.contains("malformed") || message.contains("not a database")
}

impl<T: History + ?Sized> History for Watched<T> {
    fn at(&self, t: Time) -> Result<skydive_graph::RevisionGraph, skydive_graph::HistoryError> {
        let r = self.inner.at(t);
        if let Err(e) = &r
            && says_damage(&e.to_string())
        {
            self.status.damaged("reading the topology history", e);
        }
        r
    }
    fn slice(
        &self,
        start: Time,
        last: Time,
    ) -> Result<skydive_graph::RevisionGraph, skydive_graph::HistoryError> {
        let r = self.inner.slice(start, last);
        if let Err(e) = &r
            && says_damage(&e.to_string())
        {
            self.status.damaged("reading the topology history", e);
        }
        r
    }
}

impl<T: FlowStore + ?Sized> FlowStore for Watched<T> {
    fn store_flows(&self, flows: &[Flow]) -> skydive_storage::Result<()> {
        self.check("writing flows", self.inner.store_flows(flows))
    }
    fn flows(
        &self,
        filter: &skydive_graph::Filter,
        start: Time,
        last: Time,
    ) -> skydive_storage::Result<Vec<Flow>> {
        self.check("reading flows", self.inner.flows(filter, start, last))
    }
    fn metrics(
        &self,
        filter: &skydive_graph::Filter,
        start: Time,
        last: Time,
    ) -> skydive_storage::Result<BTreeMap<String, Vec<FlowMetric>>> {
        self.check(
            "reading flow metrics",
            self.inner.metrics(filter, start, last),
        )
    }
    fn raw_packets(
        &self,
        filter: &skydive_graph::Filter,
        start: Time,
        last: Time,
    ) -> skydive_storage::Result<BTreeMap<String, Vec<RawPacket>>> {
        self.check(
            "reading raw packets",
            self.inner.raw_packets(filter, start, last),
        )
    }
}

impl Stores {
    /// Opens the stores of the configuration: `analyzer.topology.backend` keeps the
    /// resources and the history, `analyzer.flow.backend` the flows; one section used by
    /// both is opened once.
    pub fn open(
        topology: &BackendSpec,
        flow: &BackendSpec,
        recover: bool,
    ) -> anyhow::Result<Stores> {
        let status = Arc::new(StorageStatus::default());
        let topo = open_backend(topology, recover, &status)?;
        // As Skydive: a flow backend without flow storage (memory) refuses time contexts.
        let flows = if flow == topology {
            topo.flows.clone()
        } else {
            open_backend(flow, recover, &status)?.flows
        };
        let watch = |status: &Arc<StorageStatus>| status.clone();
        let flows = flows.map(|f| {
            Arc::new(Watched {
                inner: f,
                status: watch(&status),
            }) as Arc<dyn FlowStore>
        });
        let mut upkeep = BTreeMap::new();
        if let Some(u) = &topo.upkeep {
            upkeep.insert(topology.name().to_string(), u.clone());
        }
        Ok(Stores {
            resources: Arc::new(Watched {
                inner: topo.resources,
                status: status.clone(),
            }),
            history: match &topo.topology {
                Some(t) => Arc::new(Watched {
                    inner: t.clone(),
                    status: status.clone(),
                }),
                None => Arc::new(NoHistory),
            },
            flows,
            recorder: topo.topology,
            upkeep,
            status,
        })
    }

    /// The storage part of `/api/status`.
    pub fn status_document(&self) -> Value {
        let s = &self.status;
        let stores: serde_json::Map<String, Value> = self
            .upkeep
            .iter()
            .map(|(name, u)| (name.clone(), u.describe()))
            .collect();
        let state = if s.damage().is_some() {
            "degraded"
        } else if s.error().is_some() {
            "error"
        } else {
            "ok"
        };
        json!({
            "State": state,
            "Error": s.damage().or_else(|| s.error()).unwrap_or_default(),
            "Recovery": s.recovery.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            "Stores": stores,
            "History": {
                "Recording": self.recorder.is_some(),
                "EventsWritten": s.events_written.load(Ordering::Relaxed),
                "Pending": s.pending.load(Ordering::Relaxed),
                "Lost": s.lost.load(Ordering::Relaxed),
                "OrphansClosed": s.orphans_closed.load(Ordering::Relaxed),
            },
            "RetentionRemoved": s.retention_removed.load(Ordering::Relaxed),
        })
    }
}

/// The backend of a storage section; with `recover`, a damaged embedded store is moved
/// aside and what can be read of it kept (said in the log and in the status).
fn open_backend(
    spec: &BackendSpec,
    recover: bool,
    status: &StorageStatus,
) -> anyhow::Result<Backend> {
    match spec {
        BackendSpec::Embedded {
            name,
            path,
            retention,
        } => {
            let context = || format!("storage.{name}: the embedded store cannot be used");
            let b = if recover {
                let (b, report) = Backend::embedded_recovering(Path::new(path), *retention)
                    .with_context(context)?;
                if let Some(r) = report {
                    tracing::warn!("storage.{name}: recovered: {r}");
                    *status.recovery.lock().unwrap_or_else(|e| e.into_inner()) =
                        Some(r.to_string());
                }
                b
            } else {
                Backend::embedded(Path::new(path), *retention).with_context(context)?
            };
            tracing::info!(%path, "embedded store open");
            Ok(b)
        }
        BackendSpec::Memory { .. } => Ok(Backend::memory()),
        BackendSpec::Elasticsearch { name, options } => {
            let defaults = skydive_storage::elasticsearch::EsConfig::default();
            let cfg = skydive_storage::elasticsearch::EsConfig {
                hosts: options.hosts.clone(),
                username: options.username.clone(),
                password: options.password.clone(),
                index_prefix: options.index_prefix.clone(),
                total_fields_limit: options.total_fields_limit,
                use_flattened: options.use_flattened,
                flattened_ignore_above: options.flattened_ignore_above,
                exclude_from_mapping: options
                    .exclude_from_mapping
                    .clone()
                    .unwrap_or(defaults.exclude_from_mapping),
            };
            let b = Backend::elasticsearch(&cfg).with_context(|| {
                format!(
                    "storage.{name}: the cluster at {} cannot be used",
                    cfg.hosts.join(", ")
                )
            })?;
            tracing::info!(hosts = %cfg.hosts.join(", "), prefix = %cfg.index_prefix, "Elasticsearch store open");
            Ok(b)
        }
    }
}

/// Writes the hub's event batches into the history until the hub goes away.
pub fn spawn_recorder(
    store: Arc<dyn TopologyStore>,
    mut batches: mpsc::Receiver<Arc<EventBatch>>,
    status: Arc<StorageStatus>,
) -> std::thread::JoinHandle<()> {
    std::thread::Builder::new()
        .name("history-recorder".into())
        .spawn(move || {
            let location = store.location();
            let mut pending: VecDeque<GraphEvent> = VecDeque::new();
            let mut open = true;
            while open || !pending.is_empty() {
                if pending.is_empty() {
                    match batches.blocking_recv() {
                        Some(b) => pending.extend(b.events.iter().cloned()),
                        None => break,
                    }
                }
                open &= drain(&mut batches, &mut pending);
                if pending.len() > MAX_PENDING {
                    let excess = pending.len() - MAX_PENDING;
                    pending.drain(..excess);
                    status.lost.fetch_add(excess as u64, Ordering::Relaxed);
                }
                status.pending.store(pending.len() as u64, Ordering::Relaxed);
                let events = pending.make_contiguous();
                match store.record(events) {
                    Ok(()) => {
                        status
                            .events_written
                            .fetch_add(events.len() as u64, Ordering::Relaxed);
                        if status.error().is_some() {
                            tracing::info!("the history store can be written again");
                        }
                        status.set_error(None);
                        pending.clear();
                        status.pending.store(0, Ordering::Relaxed);
                    }
                    Err(e) => {
                        let msg = format!(
                            "cannot write the topology history to {}: {e}; {} changes kept, retrying every second",
                            location,
                            pending.len()
                        );
                        if status.error().as_deref() != Some(msg.as_str()) {
                            tracing::error!("{msg}");
                        }
                        status.set_error(Some(msg));
                        if !open {
                            tracing::error!(
                                "shutting down with {} history changes not written",
                                pending.len()
                            );
                            status
                                .lost
                                .fetch_add(pending.len() as u64, Ordering::Relaxed);
                            break;
                        }
                        // Keep taking the hub's batches meanwhile: the hub never waits.
                        for _ in 0..20 {
                            std::thread::sleep(Duration::from_millis(50));
                            open &= drain(&mut batches, &mut pending);
                        }
                    }
                }
            }
        })
        .expect("the recorder thread starts")
}

/// Moves every queued batch's events to `pending`; false once the hub is gone.
fn drain(
    batches: &mut mpsc::Receiver<Arc<EventBatch>>,
    pending: &mut VecDeque<GraphEvent>,
) -> bool {
    loop {
        match batches.try_recv() {
            Ok(b) => pending.extend(b.events.iter().cloned()),
            Err(mpsc::error::TryRecvError::Empty) => return true,
            Err(mpsc::error::TryRecvError::Disconnected) => return false,
        }
    }
}

/// After the agents' grace period, closes the history of elements that did not come back
/// after a restart.
pub async fn close_orphans_later(
    store: Arc<dyn TopologyStore>,
    grace: Duration,
    status: Arc<StorageStatus>,
) {
    tokio::time::sleep(grace).await;
    let closed = tokio::task::spawn_blocking(move || store.close_orphans(now_ms())).await;
    match closed {
        Ok(Ok(n)) => {
            status.orphans_closed.store(n as u64, Ordering::Relaxed);
            if n > 0 {
                tracing::info!(
                    closed = n,
                    "history: elements current before the restart that did not come back are closed"
                );
            }
        }
        Ok(Err(e)) => {
            tracing::error!("history: cannot close the elements gone during the restart: {e}");
        }
        Err(e) => tracing::error!("history: the closing task failed: {e}"),
    }
}

/// Enforces each backend's retention every `every`.
pub async fn retention_loop(
    stores: Vec<Arc<dyn Upkeep>>,
    every: Duration,
    status: Arc<StorageStatus>,
) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        for store in &stores {
            let store = store.clone();
            match tokio::task::spawn_blocking(move || store.enforce_retention(now_ms())).await {
                Ok(Ok(removed)) => {
                    status
                        .retention_removed
                        .fetch_add(removed.total(), Ordering::Relaxed);
                    if removed.total() > 0 {
                        tracing::debug!(?removed, "retention");
                    }
                }
                Ok(Err(e)) => tracing::warn!("retention: {e}"),
                Err(e) => tracing::warn!("retention task failed: {e}"),
            }
        }
    }
}

/// Flows for Gremlin: the agents' live tables without a time context, the flow store in
/// one (Skydive's extension steps).
pub struct AnalyzerFlows {
    pub store: Option<Arc<dyn FlowStore>>,
    /// `flow.expire`, in milliseconds: a flow last seen that long before a slice may still
    /// have been alive in it.
    pub expire: Time,
    /// Set once the agents' registry exists.
    pub agents: std::sync::OnceLock<Arc<crate::agents::Agents>>,
}

impl AnalyzerFlows {
    fn store(&self) -> Result<&Arc<dyn FlowStore>, FlowSourceError> {
        self.store.as_ref().ok_or(FlowSourceError::NoStore)
    }
}

impl FlowSource for AnalyzerFlows {
    fn flows(&self, q: &FlowQuery) -> Result<Vec<Flow>, FlowSourceError> {
        match q.time {
            None => Ok(self
                .agents
                .get()
                .map(|a| crate::flows::live_flows(a, q))
                .unwrap_or_default()),
            Some(t) => self
                .store()?
                .flows(&q.filter, t.start.saturating_sub(self.expire), t.last)
                .map_err(|e| FlowSourceError::Store(Box::new(e))),
        }
    }

    fn metrics(&self, q: &FlowQuery) -> Result<BTreeMap<String, Vec<FlowMetric>>, FlowSourceError> {
        match q.time {
            None => Ok(BTreeMap::new()),
            Some(t) => self
                .store()?
                .metrics(&q.filter, t.start, t.last)
                .map_err(|e| FlowSourceError::Store(Box::new(e))),
        }
    }

    fn raw_packets(
        &self,
        q: &FlowQuery,
    ) -> Result<BTreeMap<String, Vec<RawPacket>>, FlowSourceError> {
        match q.time {
            None => Ok(BTreeMap::new()),
            Some(t) => self
                .store()?
                .raw_packets(&q.filter, t.start, t.last)
                .map_err(|e| FlowSourceError::Store(Box::new(e))),
        }
    }
}
