//! Flows at the analyzer (Skydive's flow transport; Skydive's live flow queries): the agents'
//! flow updates, queued with a bound and written to the flow store in groups; and the live
//! flows of the agents' tables for Gremlin queries without a time context.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use skydive_api::capture::{Request, TableQuery};
use skydive_flow::{Flow, WireFlow};
use skydive_gremlin::FlowQuery;
use skydive_storage::FlowStore;
use tokio::sync::mpsc;

use crate::agents::Agents;

/// What `/api/status` says about flow ingestion.
#[derive(Debug, Default)]
pub struct IngestCounters {
    pub received: AtomicU64,
    pub stored: AtomicU64,
    pub dropped: AtomicU64,
    pub store_errors: AtomicU64,
    queued: AtomicUsize,
}

impl IngestCounters {
    pub fn document(&self) -> serde_json::Value {
        serde_json::json!({
            "Received": self.received.load(Ordering::Relaxed),
            "Stored": self.stored.load(Ordering::Relaxed),
            "Dropped": self.dropped.load(Ordering::Relaxed),
            "StoreErrors": self.store_errors.load(Ordering::Relaxed),
            "Queued": self.queued.load(Ordering::Relaxed),
        })
    }
}

/// A group of flows on its way to the store, and who waits for it to be stored.
type Queued = (Vec<Flow>, Option<tokio::sync::oneshot::Sender<()>>);

/// The flow writer is gone (the analyzer is stopping, or it failed).
#[derive(Debug, thiserror::Error)]
#[error("the flow writer stopped before the flows were stored")]
pub struct WriterGone;

/// The analyzer's flow intake.
pub struct FlowIngest {
    tx: mpsc::UnboundedSender<Queued>,
    /// Every group of flows once stored, for `/ws/subscriber/flow`.
    stored: tokio::sync::broadcast::Sender<Arc<Vec<Flow>>>,
    /// `analyzer.flow.max_buffer_size`: flows queued before new ones are dropped.
    max_queued: usize,
    pub counters: Arc<IngestCounters>,
    /// Capture statistics (`Stats` JSON), for `/ws/subscriber/flow`.
    stats: tokio::sync::broadcast::Sender<Arc<serde_json::Value>>,
}

impl std::fmt::Debug for FlowIngest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlowIngest")
            .field("max_queued", &self.max_queued)
            .finish()
    }
}

impl FlowIngest {
    /// Starts the writer; flows are dropped (and counted) when there is no flow store.
    pub fn start(
        store: Option<Arc<dyn FlowStore>>,
        max_queued: usize,
    ) -> (Arc<FlowIngest>, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let counters = Arc::new(IngestCounters::default());
        let stored = tokio::sync::broadcast::channel(256).0;
        let task = tokio::spawn(writer(store, rx, counters.clone(), stored.clone()));
        (
            Arc::new(FlowIngest {
                tx,
                stored,
                max_queued: max_queued.max(200),
                counters,
                stats: tokio::sync::broadcast::channel(1024).0,
            }),
            task,
        )
    }

    /// Groups of flows as they are stored.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Arc<Vec<Flow>>> {
        self.stored.subscribe()
    }

    /// Capture statistics as they change.
    pub fn subscribe_stats(&self) -> tokio::sync::broadcast::Receiver<Arc<serde_json::Value>> {
        self.stats.subscribe()
    }

    /// Watches the graph for the `Captures` entries the agents update (every
    /// `agent.flow.stats_update` seconds) and publishes each change as a `Stats` message.
    pub async fn run_stats(self: Arc<Self>, hub: skydive_hub::HubHandle) {
        use skydive_graph::GraphEvent;
        let mut events = hub.subscribe();
        // (node, capture) -> the stats last published
        let mut last: std::collections::HashMap<(String, String), Arc<serde_json::Value>> =
            Default::default();
        loop {
            let batch = match events.recv().await {
                Ok(b) => b,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(_) => return,
            };
            for ev in &batch.events {
                let node = match ev {
                    GraphEvent::NodeAdded(n) | GraphEvent::NodeUpdated { node: n, .. } => n,
                    GraphEvent::NodeDeleted(n) => {
                        last.retain(|(id, _), _| id != n.id.as_str());
                        continue;
                    }
                    _ => continue,
                };
                for stats in capture_stats(node) {
                    let cid = stats["CaptureID"].as_str().unwrap_or_default().to_string();
                    let key = (node.id.to_string(), cid);
                    if last.get(&key).is_some_and(|s| **s == stats) {
                        continue;
                    }
                    let stats = Arc::new(stats);
                    last.insert(key, stats.clone());
                    let _ = self.stats.send(stats);
                }
            }
        }
    }

    /// Takes the flows of one agent message.
    pub fn push(&self, flows: Vec<Flow>) {
        let n = flows.len();
        let c = &self.counters;
        c.received.fetch_add(n as u64, Ordering::Relaxed);
        if c.queued.load(Ordering::Relaxed) + n > self.max_queued {
            let before = c.dropped.fetch_add(n as u64, Ordering::Relaxed);
            // One line per 10,000 drops at most.
            if before / 10_000 != (before + n as u64) / 10_000 || before == 0 {
                tracing::warn!(
                    dropped = before + n as u64,
                    "flow queue full ({} flows): flows are dropped",
                    self.max_queued
                );
            }
            return;
        }
        c.queued.fetch_add(n, Ordering::Relaxed);
        if self.tx.send((flows, None)).is_err() {
            c.queued.fetch_sub(n, Ordering::Relaxed);
            c.dropped.fetch_add(n as u64, Ordering::Relaxed);
        }
    }

    /// Takes flows, waiting for room in the queue instead of dropping them (back-pressure for
    /// a producer that can wait, such as an upload).
    pub async fn push_waiting(&self, flows: Vec<Flow>) -> Result<(), WriterGone> {
        let n = flows.len();
        let c = &self.counters;
        loop {
            let q = c.queued.load(Ordering::Relaxed);
            if q == 0 || q + n <= self.max_queued {
                break;
            }
            if self.tx.is_closed() {
                return Err(WriterGone);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        c.received.fetch_add(n as u64, Ordering::Relaxed);
        c.queued.fetch_add(n, Ordering::Relaxed);
        self.tx.send((flows, None)).map_err(|_| {
            c.queued.fetch_sub(n, Ordering::Relaxed);
            WriterGone
        })
    }

    /// Waits until every flow queued before is stored.
    pub async fn flushed(&self) -> Result<(), WriterGone> {
        let (ack, stored) = tokio::sync::oneshot::channel();
        self.tx
            .send((Vec::new(), Some(ack)))
            .map_err(|_| WriterGone)?;
        stored.await.map_err(|_| WriterGone)
    }
}

/// Writes what has queued while the previous write was made durable, in one transaction.
async fn writer(
    store: Option<Arc<dyn FlowStore>>,
    mut rx: mpsc::UnboundedReceiver<Queued>,
    c: Arc<IngestCounters>,
    stored: tokio::sync::broadcast::Sender<Arc<Vec<Flow>>>,
) {
    while let Some((first, ack)) = rx.recv().await {
        let mut batch = first;
        // Told once the batch holding their flows (and those before) is stored.
        let mut acks: Vec<_> = ack.into_iter().collect();
        while batch.len() < 50_000 {
            match rx.try_recv() {
                Ok((more, ack)) => {
                    batch.extend(more);
                    acks.extend(ack);
                }
                Err(_) => break,
            }
        }
        let n = batch.len();
        let Some(store) = store.clone() else {
            c.queued.fetch_sub(n, Ordering::Relaxed);
            let _ = stored.send(Arc::new(batch));
            ack_all(acks);
            continue;
        };
        if n == 0 {
            ack_all(acks);
            continue;
        }
        let batch = Arc::new(batch);
        loop {
            let (s, b) = (store.clone(), batch.clone());
            match tokio::task::spawn_blocking(move || s.store_flows(&b)).await {
                Ok(Ok(())) => {
                    c.stored.fetch_add(n as u64, Ordering::Relaxed);
                    ack_all(std::mem::take(&mut acks));
                    break;
                }
                Ok(Err(e)) => {
                    c.store_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::error!("cannot store {n} flows: {e}; retrying in a second");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(e) => {
                    // (The waiting uploads are told, by their acknowledgements dropped.)
                    tracing::error!("the flow writer failed: {e}");
                    break;
                }
            }
        }
        c.queued.fetch_sub(n, Ordering::Relaxed);
        let _ = stored.send(batch);
    }
}

/// Tells the waiting that their flows are stored.
fn ack_all(acks: Vec<tokio::sync::oneshot::Sender<()>>) {
    for a in acks {
        let _ = a.send(());
    }
}

/// Flows that cannot be read from a message.
#[derive(Debug, thiserror::Error)]
#[error("invalid flows: {0}")]
pub struct InvalidFlows(#[from] serde_json::Error);

/// Decodes the `Obj` of a `Flow/FlowUpdates` or `Flow/TableResult` message.
pub fn decode_flows(obj: &str) -> Result<Vec<Flow>, InvalidFlows> {
    Ok(serde_json::from_str::<Vec<WireFlow>>(obj)?
        .into_iter()
        .map(Flow::from)
        .collect())
}

/// The live flows of the agents: a `Flow/TableQuery` to each agent concerned (those owning
/// the query's nodes, or all), each answering from its tables within 10 s (a failing agent
/// contributes nothing).
pub fn live_flows(agents: &Agents, q: &FlowQuery) -> Vec<Flow> {
    let hosts: Vec<String> = match &q.nodes {
        Some(nodes) => {
            let mut h: Vec<String> = nodes.iter().map(|(host, _)| host.clone()).collect();
            h.sort();
            h.dedup();
            h
        }
        None => agents.statuses().keys().cloned().collect(),
    };
    let filter = q.filter.clone();
    let conns: Vec<_> = hosts.iter().filter_map(|h| agents.find(h)).collect();
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return Vec::new();
    };
    rt.block_on(async move {
        let mut asks = tokio::task::JoinSet::new();
        for conn in conns {
            let filter = filter.clone();
            asks.spawn(async move {
                let req = Request::TableQuery(TableQuery { filter });
                match req.send(&conn, Duration::from_secs(10)).await {
                    Ok(reply) => decode_flows(reply.obj_text()).unwrap_or_else(|e| {
                        tracing::warn!(agent = %conn.handshake.host_id, "{e}");
                        Vec::new()
                    }),
                    Err(e) => {
                        tracing::warn!(agent = %conn.handshake.host_id, "flow query: {e}");
                        Vec::new()
                    }
                }
            });
        }
        let mut all: Vec<Flow> = Vec::new();
        while let Some(r) = asks.join_next().await {
            all.extend(r.unwrap_or_default().into_iter().filter(|f| filter.eval(f)));
        }
        all.sort_by(|a, b| a.uuid.cmp(&b.uuid));
        all
    })
}

/// `POST /api/pcap`: the flows of an uploaded pcap or pcapng file, with the file's times, go
/// to the flow store as if an agent had sent them. The body is read as it arrives: its first
/// bytes must be a capture's magic (400 at once otherwise), it may hold at most
/// `analyzer.flow.pcap_max_size` bytes (413), and its flows are queued for storage with
/// back-pressure, so that none is dropped. 202 once every flow is stored; 400 with the reason
/// when the file cannot be read (saying how many flows of the packets before were stored).
pub async fn pcap_upload(
    axum::extract::State(up): axum::extract::State<PcapUpload>,
    headers: axum::http::HeaderMap,
    body: axum::body::Body,
) -> skydive_api::ApiResult {
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    use futures_util::StreamExt as _;
    use skydive_api::ApiError;
    let too_big = |what: String| {
        ApiError::Client(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the file is larger than analyzer.flow.pcap_max_size ({} bytes){what}",
                up.max_size
            ),
        )
    };
    // A length announced over the limit: refused before anything is read.
    if let Some(len) = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && len > up.max_size
    {
        return Err(too_big(String::new()));
    }
    // The parser runs on a thread of its own, fed through a short queue: the body is read
    // no faster than it is parsed, and the flows are stored no faster than the store takes them.
    let (chunk_tx, mut chunk_rx) = mpsc::channel::<bytes::Bytes>(8);
    let (flow_tx, mut flow_rx) = mpsc::channel::<Vec<Flow>>(4);
    let cfg = up.table.clone();
    let parser = tokio::task::spawn_blocking(move || {
        use skydive_capture::pcapfile::{PcapError, PcapFeeder};
        let mut f = PcapFeeder::new(cfg);
        let mut started = false;
        while let Some(chunk) = chunk_rx.blocking_recv() {
            let flows = f.feed(&chunk)?;
            started = true;
            if !flows.is_empty() && flow_tx.blocking_send(flows).is_err() {
                break;
            }
        }
        let packets = f.packets();
        if !started || !f.started() {
            return Err(PcapError::Header("the file ends inside its header".into()));
        }
        if !f.complete() {
            return Err(PcapError::Record {
                packets,
                message: "the file ends inside a packet record".into(),
            });
        }
        let last = f.finish();
        let _ = flow_tx.blocking_send(last);
        Ok(packets)
    });
    let ingest = up.ingest.clone();
    let storing = tokio::spawn(async move {
        let mut n = 0usize;
        while let Some(flows) = flow_rx.recv().await {
            n += flows.len();
            ingest.push_waiting(flows).await?;
        }
        ingest.flushed().await.map(|()| n)
    });
    let mut stream = body.into_data_stream();
    let mut size = 0u64;
    let mut over = false;
    loop {
        let next = tokio::select! {
            n = stream.next() => n,
            // The parser stopped (a file that is not a capture): no need for the rest.
            () = chunk_tx.closed() => break,
        };
        let Some(chunk) = next else { break };
        let chunk = chunk.map_err(|e| ApiError::bad_request(format!("reading the upload: {e}")))?;
        size += chunk.len() as u64;
        if size > up.max_size {
            over = true;
            break;
        }
        if chunk_tx.send(chunk).await.is_err() {
            // The parser stopped: its error says why.
            break;
        }
    }
    drop(chunk_tx);
    let parsed = parser.await?;
    let stored = storing.await?;
    if over {
        return Err(too_big(format!(
            "; the flows of its first {size} bytes were stored"
        )));
    }
    let flows = stored.map_err(|e| ApiError::internal("storing the uploaded flows", e))?;
    match parsed {
        Ok(packets) => {
            tracing::info!(packets, flows, bytes = size, "pcap file stored");
            Ok(StatusCode::ACCEPTED.into_response())
        }
        Err(e) if flows == 0 => Err(ApiError::bad_request(e.to_string())),
        Err(e) => Err(ApiError::bad_request(format!(
            "{e}; the {flows} flows of the packets before were stored"
        ))),
    }
}

/// What `POST /api/pcap` needs.
#[derive(Clone)]
pub struct PcapUpload {
    pub ingest: Arc<FlowIngest>,
    pub table: skydive_flow::TableConfig,
    /// `analyzer.flow.pcap_max_size`.
    pub max_size: u64,
}

/// The endpoint of flow subscribers.
pub const SUBSCRIBER_ENDPOINT: &str = "/ws/subscriber/flow";

struct FlowSubscriber;

impl skydive_api::server::conn::MessageHandler for FlowSubscriber {
    async fn on_message(
        &self,
        _conn: &Arc<skydive_api::server::conn::Conn>,
        _msg: skydive_api::message::Incoming,
    ) {
    }

    async fn on_close(&self, _conn: &Arc<skydive_api::server::conn::Conn>) {}
}

/// The `Stats` of each capture entry of a node's `Captures` metadata (Skydive's WebSocket
/// namespaces and message types).
pub fn capture_stats(node: &skydive_graph::Node) -> Vec<serde_json::Value> {
    use skydive_graph::Value;
    let Some(Value::Array(list)) = node.metadata.get("Captures") else {
        return Vec::new();
    };
    list.iter()
        .filter_map(Value::as_map)
        .filter_map(|c| {
            let id = c.get("ID").and_then(Value::as_str)?;
            let int = |k: &str| c.get(k).and_then(Value::as_i64).unwrap_or(0);
            Some(serde_json::json!({
                "CaptureID": id,
                "FlowCount": int("FlowCount"),
                "FlowDropped": int("FlowDropped"),
                "KernelFlowDropped": 0,
                "PacketsDropped": int("PacketsDropped"),
                "PacketsReceived": int("PacketsReceived"),
            }))
        })
        .collect()
}

/// `GET /ws/subscriber/flow`: every group of stored flows as
/// `{"Namespace":"flow","Type":"store","Obj":[…]}`, and per capture in the namespace
/// `flow/<CaptureID>` for the clients that ask for it; capture statistics as
/// `{"Namespace":"stats","Type":"stats","Obj":{…}}` (Skydive's WebSocket endpoints).
pub async fn ws_flow_subscriber(
    axum::extract::State((ctx, ingest)): axum::extract::State<(
        skydive_api::server::Shared,
        Arc<FlowIngest>,
    )>,
    req: skydive_api::server::WsRequest,
) -> skydive_api::ApiResult {
    let mut rx = ingest.subscribe();
    let mut stats = ingest.subscribe_stats();
    skydive_api::server::ws_endpoint(ctx, SUBSCRIBER_ENDPOINT, req, false, move |conn, _| {
        tokio::spawn(async move {
            loop {
                let batch = tokio::select! {
                    s = stats.recv() => {
                        match s {
                            Ok(s) if conn.handshake.wants("stats") => {
                                conn.send_msg("stats", "stats", "", 200, s.as_ref());
                            }
                            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                            _ => {}
                        }
                        continue;
                    }
                    b = rx.recv() => match b {
                        Ok(b) => b,
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                            tracing::warn!(host = %conn.handshake.host_id, "a flow subscriber missed {n} groups of flows");
                            continue;
                        }
                        Err(_) => return,
                    },
                    _ = conn.closed() => return,
                };
                let all: Vec<WireFlow> = batch.iter().cloned().map(WireFlow::from).collect();
                if conn.handshake.wants("flow") {
                    conn.send_msg("flow", "store", "", 200, &all);
                }
                let mut by_capture: std::collections::BTreeMap<&str, Vec<&WireFlow>> =
                    Default::default();
                for f in &all {
                    by_capture.entry(f.flow.capture_id.as_str()).or_default().push(f);
                }
                for (cid, flows) in by_capture {
                    let ns = format!("flow/{cid}");
                    if !cid.is_empty() && conn.handshake.namespaces.contains(&ns) {
                        conn.send_msg(&ns, "store", "", 200, &flows);
                    }
                }
            }
        });
        FlowSubscriber
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flows(n: usize) -> Vec<Flow> {
        (0..n)
            .map(|i| Flow {
                uuid: format!("{i:016x}").into(),
                start: 1,
                last: 2,
                ..Default::default()
            })
            .collect()
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_full_queue_drops_and_counts_instead_of_growing() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn FlowStore> =
            Arc::new(skydive_storage::Embedded::open(dir.path()).unwrap());
        let (ingest, _task) = FlowIngest::start(Some(store.clone()), 500);
        // The writer has not run yet (one thread): the queue fills up.
        ingest.push(flows(300));
        ingest.push(flows(150));
        ingest.push(flows(100));
        let c = &ingest.counters;
        assert_eq!(c.received.load(Ordering::Relaxed), 550);
        assert_eq!(c.dropped.load(Ordering::Relaxed), 100);
        let mut stored = ingest.subscribe();
        // Now the writer stores what was queued.
        let mut n = 0;
        while n < 450 {
            n += stored.recv().await.unwrap().len();
        }
        assert_eq!(c.stored.load(Ordering::Relaxed), 450);
        assert_eq!(c.document()["Queued"], 0);
        let all = store
            .flows(&skydive_graph::Filter::True, 0, i64::MAX)
            .unwrap();
        assert_eq!(all.len(), 300, "450 updates of 300 distinct flows");
    }
}
