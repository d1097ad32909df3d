//! The link from the agent to one analyzer (`docs/agent-protocol.md`).
//!
//! The agent dials `ws://<analyzer>/ws/agent/topology` and keeps dialling every second while
//! the analyzer is away. On every connection it first sends a `Sync` holding its whole
//! graph (the analyzer replaces the agent's subgraph by difference, so nothing churns), then
//! every change: additions and deletions as full elements, updates as
//! `NodePartiallyUpdated`/`EdgePartiallyUpdated` carrying only the keys that changed. The
//! changes of one hub batch travel together, as JSON arrays of messages, up to
//! [`MAX_MESSAGES_PER_FRAME`] per frame. An agent that falls behind its own graph's event
//! stream sends a fresh `Sync` instead of the events it missed.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use serde_json::value::RawValue;
use skydive_api::capture::{FLOW_NAMESPACE, FLOW_UPDATES};
use skydive_api::message::{self, EncodedBatch as _, Incoming, graph_types};
use skydive_graph::GraphJson;
use skydive_hub::{EventBatch, HubHandle};
use tokio::sync::{broadcast, watch};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

/// The most messages sent in one frame.
pub const MAX_MESSAGES_PER_FRAME: usize = 512;

/// Answers the requests an analyzer sends over the link (captures and flow queries).
pub trait RequestHandler: Send + Sync + 'static {
    /// The reply: its type (`StartReply`, `TableResult`, …), status and payload.
    fn handle(&self, msg: &Incoming) -> (String, i64, serde_json::Value);
}

/// The default: this agent does not serve requests of that kind.
#[derive(Debug, Default)]
pub struct NoRequests;

impl RequestHandler for NoRequests {
    fn handle(&self, msg: &Incoming) -> (String, i64, serde_json::Value) {
        (
            format!("{}Reply", msg.kind),
            501,
            serde_json::Value::String(format!(
                "{} {} is not supported by this agent",
                msg.namespace, msg.kind
            )),
        )
    }
}

/// The state of a link, for `/api/status`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct LinkState {
    /// The address dialled.
    #[serde(rename = "Address")]
    pub address: String,
    #[serde(rename = "IsConnected")]
    pub connected: bool,
    /// The analyzer's host ID (its `X-Host-ID` reply header).
    #[serde(rename = "RemoteHost")]
    pub remote_host: String,
    #[serde(rename = "ConnectTime", skip_serializing_if = "String::is_empty")]
    pub connect_time: String,
    #[serde(rename = "LastError", skip_serializing_if = "String::is_empty")]
    pub last_error: String,
    /// How many times the whole graph was sent.
    #[serde(rename = "Syncs")]
    pub syncs: u64,
    /// Messages sent since the start.
    #[serde(rename = "MessagesSent")]
    pub messages_sent: u64,
    /// Frames sent since the start (several messages travel in one frame under load).
    #[serde(rename = "FramesSent")]
    pub frames_sent: u64,
    /// Flows sent since the start.
    #[serde(rename = "FlowsSent")]
    pub flows_sent: u64,
    /// Flow batches dropped because the link could not keep up.
    #[serde(rename = "FlowBatchesDropped")]
    pub flow_batches_dropped: u64,
}

/// A handle to a running link.
#[derive(Clone)]
pub struct LinkHandle {
    state: Arc<Mutex<LinkState>>,
}

impl std::fmt::Debug for LinkHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkHandle")
            .field("state", &self.state())
            .finish()
    }
}

impl LinkHandle {
    pub fn state(&self) -> LinkState {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// What a link needs to know.
#[derive(Clone)]
pub struct LinkConfig {
    /// `host:port` of the analyzer.
    pub analyzer: String,
    pub host_id: String,
    /// Without any frame from the analyzer for this long, the link is considered dead.
    pub read_deadline: Duration,
    /// Delay between two connection attempts.
    pub retry: Duration,
    /// The captures' flow batches, sent to the analyzer as they come.
    pub flows: Option<broadcast::Sender<Arc<Vec<skydive_flow::Flow>>>>,
    /// `agent.auth.cluster.username` and `password`, sent as basic authentication.
    pub credentials: Option<(String, String)>,
    /// `http.cookie`: sent as a `Cookie` header.
    pub cookies: std::collections::BTreeMap<String, String>,
    /// `wss://` with this configuration (the analyzer's certificate verified, the agent's
    /// presented when configured), or `ws://` without.
    pub tls: Option<Arc<skydive_tls::ClientConfig>>,
}

/// Flows per frame.
pub const MAX_FLOWS_PER_FRAME: usize = 500;

/// The next flow batch; never resolves without a flow source.
async fn next_flows(
    rx: &mut Option<broadcast::Receiver<Arc<Vec<skydive_flow::Flow>>>>,
) -> Result<Arc<Vec<skydive_flow::Flow>>, broadcast::error::RecvError> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// The frames carrying a batch of flows: `Flow/FlowUpdates` messages whose `Obj` is an
/// array of flows with their raw packets.
fn flow_frames(flows: &[skydive_flow::Flow]) -> Vec<String> {
    flows
        .chunks(MAX_FLOWS_PER_FRAME)
        .filter_map(|chunk| {
            let wire: Vec<skydive_flow::WireFlow> = chunk
                .iter()
                .cloned()
                .map(skydive_flow::WireFlow::from)
                .collect();
            match message::encode(
                message::Protocol::Json,
                FLOW_NAMESPACE,
                FLOW_UPDATES,
                &message::new_uuid(),
                200,
                &wire,
            ) {
                message::Frame::Text(t) => Some(t.to_string()),
                message::Frame::Binary(_) => None,
            }
        })
        .collect()
}

/// Starts a link; it runs until `stop` turns true.
pub fn spawn(
    cfg: LinkConfig,
    hub: HubHandle,
    requests: Arc<dyn RequestHandler>,
    stop: watch::Receiver<bool>,
) -> (LinkHandle, tokio::task::JoinHandle<()>) {
    let state = Arc::new(Mutex::new(LinkState {
        address: cfg.analyzer.clone(),
        ..Default::default()
    }));
    let handle = LinkHandle {
        state: state.clone(),
    };
    let task = tokio::spawn(run(cfg, hub, requests, state, stop));
    (handle, task)
}

fn set(state: &Mutex<LinkState>, f: impl FnOnce(&mut LinkState)) {
    f(&mut state.lock().unwrap_or_else(|e| e.into_inner()));
}

async fn run(
    cfg: LinkConfig,
    hub: HubHandle,
    requests: Arc<dyn RequestHandler>,
    state: Arc<Mutex<LinkState>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut logged_failure = false;
    loop {
        if *stop.borrow() {
            return;
        }
        match connect(&cfg).await {
            Ok((ws, remote)) => {
                logged_failure = false;
                tracing::info!(analyzer = %cfg.analyzer, remote = %remote, "connected to the analyzer");
                set(&state, |s| {
                    s.connected = true;
                    s.remote_host = remote;
                    s.connect_time = chrono::Utc::now().to_rfc3339();
                    s.last_error.clear();
                });
                let result = session(ws, &cfg, &hub, requests.as_ref(), &state, &mut stop).await;
                set(&state, |s| {
                    s.connected = false;
                    if let Err(e) = &result {
                        s.last_error = e.clone();
                    }
                });
                match result {
                    Ok(()) => return,
                    Err(e) => {
                        tracing::warn!(analyzer = %cfg.analyzer, "link to the analyzer lost: {e}");
                    }
                }
            }
            Err(e) => {
                if !logged_failure {
                    tracing::warn!(analyzer = %cfg.analyzer, "cannot reach the analyzer (retrying every {:?}): {e}", cfg.retry);
                    logged_failure = true;
                }
                set(&state, |s| s.last_error = e);
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(cfg.retry) => {}
            _ = stopped(&mut stop) => return,
        }
    }
}

/// Resolves once `stop` turns true (the guard `wait_for` returns is not `Send`).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(cfg: &LinkConfig) -> Result<(Ws, String), String> {
    let scheme = if cfg.tls.is_some() { "wss" } else { "ws" };
    let url = format!("{scheme}://{}/ws/agent/topology", cfg.analyzer);
    let mut req = url
        .as_str()
        .into_client_request()
        .map_err(|e| e.to_string())?;
    let h = req.headers_mut();
    let hv = |v: &str| HeaderValue::from_str(v).map_err(|e| e.to_string());
    h.insert("X-Host-ID", hv(&cfg.host_id)?);
    h.insert("X-Client-Type", HeaderValue::from_static("agent"));
    h.insert("X-Client-Protocol", HeaderValue::from_static("json"));
    h.insert(
        "X-Persistence-Policy",
        HeaderValue::from_static("DeleteOnDisconnect"),
    );
    h.insert("X-Websocket-Namespace", HeaderValue::from_static("*"));
    if let Some((user, password)) = &cfg.credentials {
        use base64::Engine as _;
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        h.insert("Authorization", hv(&format!("Basic {token}"))?);
    }
    if !cfg.cookies.is_empty() {
        h.insert(
            "Cookie",
            hv(&skydive_api::client::cookie_header(&cfg.cookies))?,
        );
    }
    let connecting = tokio_tungstenite::connect_async_tls_with_config(
        req,
        None,
        false,
        cfg.tls.clone().map(tokio_tungstenite::Connector::Rustls),
    );
    let (ws, resp) = tokio::time::timeout(Duration::from_secs(10), connecting)
        .await
        .map_err(|_| "connection timed out".to_string())?
        .map_err(|e| e.to_string())?;
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    // Skydive's clients refuse a server that does not say who it is.
    let remote = header("X-Host-ID").ok_or("the server did not send X-Host-ID")?;
    header("X-Service-Type").ok_or("the server did not send X-Service-Type")?;
    Ok((ws, remote))
}

/// One message of a frame.
#[derive(Serialize)]
struct Out<'a> {
    #[serde(rename = "Namespace")]
    namespace: &'a str,
    #[serde(rename = "Type")]
    kind: &'a str,
    #[serde(rename = "UUID")]
    uuid: String,
    #[serde(rename = "Status")]
    status: i64,
    #[serde(rename = "Obj")]
    obj: &'a RawValue,
}

/// The frames carrying the events of a batch: updates as partial updates.
fn batch_frames(batch: &EventBatch) -> Vec<String> {
    let encoded = batch.encoded();
    encoded
        .chunks(MAX_MESSAGES_PER_FRAME)
        .map(|chunk| {
            let msgs: Vec<Out<'_>> = chunk
                .iter()
                .map(|ev| {
                    let (kind, obj) = match &ev.partial {
                        Some((k, o)) => (*k, o.as_ref()),
                        None => (ev.kind, ev.obj.as_ref()),
                    };
                    Out {
                        namespace: graph_types::NAMESPACE,
                        kind,
                        uuid: message::new_uuid(),
                        status: 200,
                        obj,
                    }
                })
                .collect();
            if msgs.len() == 1 {
                serde_json::to_string(&msgs[0])
            } else {
                serde_json::to_string(&msgs)
            }
            .unwrap_or_default()
        })
        .collect()
}

/// The `Sync` of the whole graph, and the hub batch it reflects.
fn sync_frame(hub: &HubHandle) -> (String, u64) {
    let snap = hub.snapshot();
    let j = GraphJson::from_view(&snap.graph);
    let frame = match message::encode(
        message::Protocol::Json,
        graph_types::NAMESPACE,
        graph_types::SYNC,
        &message::new_uuid(),
        200,
        &j,
    ) {
        message::Frame::Text(t) => t.to_string(),
        message::Frame::Binary(_) => String::new(),
    };
    (frame, snap.seq)
}

async fn session(
    mut ws: Ws,
    cfg: &LinkConfig,
    hub: &HubHandle,
    requests: &dyn RequestHandler,
    state: &Mutex<LinkState>,
    stop: &mut watch::Receiver<bool>,
) -> Result<(), String> {
    let err = |e: tokio_tungstenite::tungstenite::Error| e.to_string();
    // Subscribe before the snapshot: nothing falls between the two.
    let mut events = hub.subscribe();
    let mut flows = cfg.flows.as_ref().map(|f| f.subscribe());
    let (frame, mut synced) = sync_frame(hub);
    ws.send(Message::text(frame)).await.map_err(err)?;
    set(state, |s| {
        s.syncs += 1;
        s.messages_sent += 1;
        s.frames_sent += 1;
    });
    loop {
        tokio::select! {
            f = next_flows(&mut flows) => match f {
                Ok(batch) => {
                    let frames = flow_frames(&batch);
                    let nf = frames.len() as u64;
                    for f in frames {
                        ws.feed(Message::text(f)).await.map_err(err)?;
                    }
                    ws.flush().await.map_err(err)?;
                    set(state, |s| {
                        s.flows_sent += batch.len() as u64;
                        s.frames_sent += nf;
                    });
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(analyzer = %cfg.analyzer, "the link fell behind the captures: {n} flow batches dropped");
                    set(state, |s| s.flow_batches_dropped += n);
                }
                Err(broadcast::error::RecvError::Closed) => flows = None,
            },
            b = events.recv() => match b {
                Ok(batch) => {
                    if batch.seq <= synced {
                        continue;
                    }
                    let frames = batch_frames(&batch);
                    let (n, nf) = (batch.events.len() as u64, frames.len() as u64);
                    for f in frames {
                        ws.feed(Message::text(f)).await.map_err(err)?;
                    }
                    ws.flush().await.map_err(err)?;
                    synced = batch.seq;
                    set(state, |s| {
                        s.messages_sent += n;
                        s.frames_sent += nf;
                    });
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(analyzer = %cfg.analyzer, "fell {n} batches behind the graph; sending the whole graph again");
                    events = events.resubscribe();
                    let (frame, seq) = sync_frame(hub);
                    ws.send(Message::text(frame)).await.map_err(err)?;
                    synced = seq;
                    set(state, |s| {
                        s.syncs += 1;
                        s.frames_sent += 1;
                    });
                }
                Err(broadcast::error::RecvError::Closed) => return Ok(()),
            },
            m = tokio::time::timeout(cfg.read_deadline, ws.next()) => {
                let m = match m {
                    Err(_) => return Err(format!("nothing from the analyzer for {:?}", cfg.read_deadline)),
                    Ok(None) => return Err("the analyzer closed the connection".into()),
                    Ok(Some(Err(e))) => return Err(e.to_string()),
                    Ok(Some(Ok(m))) => m,
                };
                let msgs = match m {
                    Message::Text(t) => message::decode_text_batch(t.as_str()).map_err(|e| e.to_string()),
                    Message::Binary(b) => message::decode_binary(&b).map(|m| vec![m]).map_err(|e| e.to_string()),
                    Message::Close(_) => return Err("the analyzer closed the connection".into()),
                    // Pongs are answered by the WebSocket layer on the next read or write.
                    _ => continue,
                };
                match msgs {
                    Ok(msgs) => {
                        for msg in msgs {
                            if let Some(reply) = answer(requests, &msg) {
                                ws.feed(Message::text(reply)).await.map_err(err)?;
                            }
                        }
                        ws.flush().await.map_err(err)?;
                    }
                    Err(e) => tracing::warn!(analyzer = %cfg.analyzer, "dropping a message from the analyzer: {e}"),
                }
            },
            _ = stopped(stop) => {
                let _ = ws.close(None).await;
                return Ok(());
            }
        }
    }
}

/// The reply to a message from the analyzer, if it needs one.
fn answer(requests: &dyn RequestHandler, msg: &Incoming) -> Option<String> {
    // Replies to what the agent sent (errors about its own messages) need no answer.
    if msg.status != 200 && msg.status != 0 {
        tracing::warn!(namespace = %msg.namespace, kind = %msg.kind, status = msg.status, "the analyzer refused a message: {}", msg.obj_text());
        return None;
    }
    if msg.namespace == graph_types::NAMESPACE || msg.namespace.is_empty() {
        return None;
    }
    let (kind, status, obj) = requests.handle(msg);
    match message::encode(
        message::Protocol::Json,
        &msg.namespace,
        &kind,
        &msg.uuid,
        status,
        &obj,
    ) {
        message::Frame::Text(t) => Some(t.to_string()),
        message::Frame::Binary(_) => None,
    }
}
