//! The hub: the one task that owns a graph.
//!
//! Below the API server and the probes: both hold a [`HubHandle`], neither depends on the
//! other. Must not depend on any I/O but tokio's channels.
//!
//! Changes arrive as commands (closures over the graph); the hub applies whatever is queued,
//! up to a batch limit, then publishes one snapshot and one event batch. Readers take the
//! latest snapshot (a cheap clone of the persistent graph) and never wait for writers.
//! Subscribers get event batches on a broadcast channel (a subscriber that falls too far
//! behind is told so and must resynchronise); sinks (history storage, rules) get every batch
//! through bounded channels that slow the hub down rather than lose anything.

#![forbid(unsafe_code)]

use std::any::Any;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwap;
use skydive_graph::{Graph, GraphError, GraphEvent};
use tokio::sync::{broadcast, mpsc, oneshot};

/// Identifies a connection, so that its own changes are not echoed back to it.
pub type ConnId = u64;

static NEXT_CONN: AtomicU64 = AtomicU64::new(1);

/// A fresh connection ID.
pub fn next_conn_id() -> ConnId {
    NEXT_CONN.fetch_add(1, Ordering::Relaxed)
}

/// The graph after a batch, with the number of that batch.
pub struct Snapshot {
    pub seq: u64,
    pub graph: Graph,
}

/// The events of one batch of changes.
pub struct EventBatch {
    pub seq: u64,
    pub events: Vec<GraphEvent>,
    /// The connections whose commands produced events of this batch, with how many events
    /// each: events are in command order, so a subscriber can skip its own.
    pub sources: Vec<(Option<ConnId>, usize)>,
    /// What the consumers of the batch compute once and share (the API's wire encodings of
    /// the events, made once for every subscriber).
    memo: OnceLock<Box<dyn Any + Send + Sync>>,
}

impl std::fmt::Debug for EventBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventBatch")
            .field("seq", &self.seq)
            .field("events", &self.events)
            .field("sources", &self.sources)
            .finish_non_exhaustive()
    }
}

impl EventBatch {
    /// A batch (the hub makes them; tests and replays may too).
    pub fn new(seq: u64, events: Vec<GraphEvent>, sources: Vec<(Option<ConnId>, usize)>) -> Self {
        EventBatch {
            seq,
            events,
            sources,
            memo: OnceLock::new(),
        }
    }

    /// The value computed once per batch by `init` and shared by every reader. A batch holds
    /// one memo: the program uses one type for it (the API's encodings), and asking for
    /// another type is a bug.
    pub fn memo<T: Any + Send + Sync>(&self, init: impl FnOnce(&EventBatch) -> T) -> &T {
        self.memo
            .get_or_init(|| Box::new(init(self)))
            .downcast_ref()
            .expect("an event batch memoises values of one type only")
    }

    /// The events, each with the connection that caused it.
    pub fn events_with_source(&self) -> impl Iterator<Item = (Option<ConnId>, &GraphEvent)> {
        self.sources
            .iter()
            .flat_map(|(src, n)| std::iter::repeat_n(*src, *n))
            .zip(self.events.iter())
    }
}

type Op = Box<dyn FnOnce(&mut Graph) -> Result<Vec<GraphEvent>, GraphError> + Send>;

struct Command {
    source: Option<ConnId>,
    op: Op,
    reply: Option<oneshot::Sender<Result<Vec<GraphEvent>, GraphError>>>,
}

/// A cheap handle to the hub.
#[derive(Clone)]
pub struct HubHandle {
    snapshot: Arc<ArcSwap<Snapshot>>,
    events: broadcast::Sender<Arc<EventBatch>>,
    commands: mpsc::Sender<Command>,
}

impl std::fmt::Debug for HubHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HubHandle")
    }
}

/// Why a command was not applied.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HubError {
    #[error(transparent)]
    Graph(#[from] GraphError),
    #[error("the graph is shutting down")]
    Closed,
}

impl HubHandle {
    /// The latest snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Event batches from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<EventBatch>> {
        self.events.subscribe()
    }

    /// Applies a change and waits until it is visible in the snapshot.
    pub async fn apply<F>(&self, source: Option<ConnId>, op: F) -> Result<Vec<GraphEvent>, HubError>
    where
        F: FnOnce(&mut Graph) -> Result<Vec<GraphEvent>, GraphError> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command {
                source,
                op: Box::new(op),
                reply: Some(tx),
            })
            .await
            .map_err(|_| HubError::Closed)?;
        Ok(rx.await.map_err(|_| HubError::Closed)??)
    }

    /// Queues a change without waiting for it (waits only while the queue is full).
    pub async fn submit<F>(&self, source: Option<ConnId>, op: F) -> Result<(), HubError>
    where
        F: FnOnce(&mut Graph) -> Result<Vec<GraphEvent>, GraphError> + Send + 'static,
    {
        self.commands
            .send(Command {
                source,
                op: Box::new(op),
                reply: None,
            })
            .await
            .map_err(|_| HubError::Closed)
    }
}

/// The hub before it runs: sinks can be attached.
pub struct Hub {
    handle: HubHandle,
    commands: mpsc::Receiver<Command>,
    sinks: Vec<mpsc::Sender<Arc<EventBatch>>>,
    graph: Graph,
}

/// Commands applied per batch at most.
const MAX_BATCH: usize = 1024;

impl Hub {
    /// A hub over `graph` (usually empty; a restarted analyzer passes what it reloaded).
    pub fn new(graph: Graph) -> Hub {
        let (commands_tx, commands) = mpsc::channel(4096);
        let (events, _) = broadcast::channel(4096);
        let snapshot = Arc::new(ArcSwap::from_pointee(Snapshot {
            seq: 0,
            graph: graph.clone(),
        }));
        Hub {
            handle: HubHandle {
                snapshot,
                events,
                commands: commands_tx,
            },
            commands,
            sinks: Vec::new(),
            graph,
        }
    }

    pub fn handle(&self) -> HubHandle {
        self.handle.clone()
    }

    /// A consumer that must see every batch, in order. Its channel's capacity bounds how far
    /// it may fall behind before the hub waits for it.
    pub fn add_sink(&mut self, capacity: usize) -> mpsc::Receiver<Arc<EventBatch>> {
        let (tx, rx) = mpsc::channel(capacity);
        self.sinks.push(tx);
        rx
    }

    /// Runs until every handle is dropped.
    pub async fn run(mut self) {
        let mut seq = 0u64;
        let mut buf: Vec<Command> = Vec::with_capacity(MAX_BATCH);
        loop {
            if self.commands.recv_many(&mut buf, MAX_BATCH).await == 0 {
                return;
            }
            let mut events = Vec::new();
            let mut sources: Vec<(Option<ConnId>, usize)> = Vec::new();
            let mut replies = Vec::new();
            for cmd in buf.drain(..) {
                let result = (cmd.op)(&mut self.graph);
                if let Ok(evs) = &result
                    && !evs.is_empty()
                {
                    match sources.last_mut() {
                        Some((src, n)) if *src == cmd.source => *n += evs.len(),
                        _ => sources.push((cmd.source, evs.len())),
                    }
                    events.extend(evs.iter().cloned());
                }
                if let Some(reply) = cmd.reply {
                    replies.push((reply, result));
                }
            }
            if !events.is_empty() {
                seq += 1;
                self.handle.snapshot.store(Arc::new(Snapshot {
                    seq,
                    graph: self.graph.clone(),
                }));
                let batch = Arc::new(EventBatch::new(seq, events, sources));
                let _ = self.handle.events.send(batch.clone());
                self.sinks.retain(|s| !s.is_closed());
                for sink in &self.sinks {
                    // A sink that went away is dropped; otherwise wait for room.
                    let _ = sink.send(batch.clone()).await;
                }
            }
            for (reply, result) in replies {
                let _ = reply.send(result);
            }
        }
    }

    /// Starts the hub on the current runtime and returns its handle.
    pub fn spawn(self) -> HubHandle {
        let h = self.handle();
        tokio::spawn(self.run());
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use skydive_graph::{Node, metadata};

    fn node(id: &str) -> Node {
        Node::new(
            id,
            metadata! {"Name" => id, "Type" => "device"},
            "h",
            "agent.h",
            1,
        )
    }

    #[tokio::test]
    async fn applied_changes_are_in_the_snapshot_and_broadcast() {
        let mut hub = Hub::new(Graph::new());
        let mut sink = hub.add_sink(16);
        let h = hub.spawn();
        let mut sub = h.subscribe();
        let evs = h
            .apply(Some(7), |g| Ok(vec![g.add_node(node("a"))?]))
            .await
            .unwrap();
        assert_eq!(evs.len(), 1);
        assert!(h.snapshot().graph.node("a").is_some());
        let batch = sub.recv().await.unwrap();
        assert_eq!(batch.events.len(), 1);
        assert_eq!(batch.events_with_source().next().unwrap().0, Some(7));
        assert_eq!(sink.recv().await.unwrap().seq, batch.seq);
        assert_eq!(
            h.apply(None, |g| Ok(vec![g.add_node(node("a"))?]))
                .await
                .unwrap_err(),
            HubError::Graph(GraphError::NodeExists("a".into()))
        );
    }

    #[tokio::test]
    async fn queued_commands_are_batched_in_order() {
        let hub = Hub::new(Graph::new());
        let h = hub.handle();
        let mut sub = h.subscribe();
        for i in 0..100 {
            h.submit(Some(i % 3), move |g| {
                Ok(vec![g.add_node(node(&format!("n{i}")))?])
            })
            .await
            .unwrap();
        }
        tokio::spawn(hub.run());
        let mut seen = Vec::new();
        while seen.len() < 100 {
            let b = sub.recv().await.unwrap();
            for (src, ev) in b.events_with_source() {
                seen.push((src, ev.id().to_string()));
            }
        }
        let expected: Vec<(Option<u64>, String)> =
            (0..100).map(|i| (Some(i % 3), format!("n{i}"))).collect();
        assert_eq!(seen, expected);
        assert_eq!(h.snapshot().graph.node_count(), 100);
    }

    #[test]
    fn a_batch_memo_is_computed_once_and_shared() {
        let batch = EventBatch::new(1, Vec::new(), Vec::new());
        let mut calls = 0;
        let first: *const Vec<u64> = batch.memo(|b| {
            calls += 1;
            vec![b.seq]
        });
        let second: *const Vec<u64> = batch.memo(|_| {
            calls += 1;
            vec![99]
        });
        assert_eq!(calls, 1);
        assert_eq!(first, second);
        assert_eq!(batch.memo(|_| Vec::<u64>::new()), &vec![1]);
    }
}
