//! WebSocket connections: the handshake parameters, the registry of live connections, and the
//! loop that reads, writes and keeps a connection alive (Skydive's WebSocket handshake;
//! Skydive's WebSocket keepalive).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use axum::http::HeaderMap;
use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};

use crate::message::{self, Frame, Incoming, Protocol};
use skydive_hub::{ConnId, next_conn_id};

/// A shared text frame seen as bytes, so that it is sent without a copy.
struct SharedText(Arc<str>);

impl AsRef<[u8]> for SharedText {
    fn as_ref(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

/// Frames written with one flush at most.
const WRITE_BATCH: usize = 256;

/// How long a frame may take to be written (Skydive's write deadline).
pub const WRITE_DEADLINE: Duration = Duration::from_secs(10);

/// How long a write in progress may still take once its connection is closed.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// What a client said about itself when connecting.
#[derive(Clone, Debug)]
pub struct Handshake {
    pub host_id: String,
    pub client_type: String,
    pub protocol: Protocol,
    /// Namespaces the client wants; empty means all.
    pub namespaces: HashSet<String>,
    pub gremlin_filter: Option<String>,
    /// `X-Update-Policy: partial`.
    pub partial_updates: bool,
    /// `X-Persistence-Policy: DeleteOnDisconnect`.
    pub delete_on_disconnect: bool,
}

/// Why a handshake is refused.
#[derive(Debug)]
pub enum HandshakeError {
    BadProtocol(String),
}

fn param(headers: &HeaderMap, query: &[(String, String)], name: &str) -> Vec<String> {
    let from_headers: Vec<String> = headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::to_string)
        .collect();
    if !from_headers.is_empty() {
        return from_headers;
    }
    let lower = name.to_ascii_lowercase();
    query
        .iter()
        .filter(|(k, _)| k.to_ascii_lowercase() == lower)
        .map(|(_, v)| v.clone())
        .collect()
}

impl Handshake {
    /// Reads the handshake from the request headers, or from the lower-cased query parameters
    /// browsers use instead.
    pub fn parse(
        headers: &HeaderMap,
        query: &[(String, String)],
        remote: SocketAddr,
    ) -> Result<Handshake, HandshakeError> {
        let one = |name: &str| {
            param(headers, query, name)
                .into_iter()
                .next()
                .unwrap_or_default()
        };
        let protocol_name = one("X-Client-Protocol");
        let protocol =
            Protocol::parse(&protocol_name).ok_or(HandshakeError::BadProtocol(protocol_name))?;
        let namespaces: HashSet<String> = param(headers, query, "X-Websocket-Namespace")
            .iter()
            .flat_map(|v| {
                v.split(',')
                    .map(|s| s.trim().to_string())
                    .collect::<Vec<_>>()
            })
            .filter(|s| !s.is_empty() && s != "*")
            .collect();
        let host_id = match one("X-Host-ID") {
            h if h.is_empty() => remote.to_string(),
            h => h,
        };
        let filter = param(headers, query, "X-Gremlin-Filter").into_iter().next();
        Ok(Handshake {
            host_id,
            client_type: one("X-Client-Type"),
            protocol,
            namespaces,
            gremlin_filter: filter.filter(|f| !f.is_empty()),
            partial_updates: one("X-Update-Policy").eq_ignore_ascii_case("partial"),
            delete_on_disconnect: one("X-Persistence-Policy") == "DeleteOnDisconnect",
        })
    }

    /// `<clientType>.<hostID>`: the origin of what the client publishes.
    pub fn origin(&self) -> String {
        format!("{}.{}", self.client_type, self.host_id)
    }

    /// Whether the client wants messages of `namespace`.
    pub fn wants(&self, namespace: &str) -> bool {
        self.namespaces.is_empty() || self.namespaces.contains(namespace)
    }
}

/// `ConnStatus` of `/api/status`.
#[derive(Serialize, Clone, Debug)]
pub struct ConnStatus {
    #[serde(rename = "ServiceType")]
    pub service_type: String,
    #[serde(rename = "ClientProtocol")]
    pub client_protocol: String,
    #[serde(rename = "Addr")]
    pub addr: String,
    #[serde(rename = "Port")]
    pub port: u16,
    #[serde(rename = "IsConnected")]
    pub is_connected: bool,
    #[serde(rename = "ConnectTime")]
    pub connect_time: String,
    #[serde(rename = "RemoteHost")]
    pub remote_host: String,
    #[serde(rename = "RemoteServiceType")]
    pub remote_service_type: String,
}

/// A live connection.
pub struct Conn {
    pub id: ConnId,
    pub endpoint: &'static str,
    pub handshake: Handshake,
    pub remote: SocketAddr,
    pub connected_at: chrono::DateTime<chrono::Utc>,
    outgoing: mpsc::Sender<Frame>,
    pending: Mutex<HashMap<String, oneshot::Sender<Incoming>>>,
    kill: watch::Sender<bool>,
    /// The close frame's code and reason, when the server closes for a reason of its own.
    close_reason: Mutex<Option<(u16, String)>>,
    /// Bytes of the frames queued and not yet written, and the most allowed
    /// (`http.ws.queue_bytes`).
    queued_bytes: AtomicUsize,
    max_queued_bytes: usize,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("id", &self.id)
            .field("endpoint", &self.endpoint)
            .field("host", &self.handshake.host_id)
            .finish()
    }
}

/// Why a request over a connection got no reply.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("the connection to {0} is gone")]
    Gone(String),
    #[error("{0} did not answer within {1:?}")]
    Timeout(String, Duration),
}

impl Conn {
    /// Queues a frame. A client whose queue is full, in messages or in bytes, is too slow: it is
    /// disconnected. A frame larger than the byte bound alone still goes when nothing is queued.
    pub fn send(&self, frame: Frame) -> bool {
        let len = frame.len();
        let before = self.queued_bytes.fetch_add(len, Ordering::Relaxed);
        if before > 0 && before + len > self.max_queued_bytes {
            self.queued_bytes.fetch_sub(len, Ordering::Relaxed);
            tracing::warn!(host = %self.handshake.host_id, endpoint = self.endpoint, queued_bytes = before, "client does not read fast enough ({before} bytes queued, http.ws.queue_bytes is {}), disconnecting", self.max_queued_bytes);
            self.close_with(1008, "client too slow: http.ws.queue_bytes reached");
            return false;
        }
        match self.outgoing.try_send(frame) {
            Ok(()) => true,
            Err(e) => {
                self.queued_bytes.fetch_sub(len, Ordering::Relaxed);
                if let mpsc::error::TrySendError::Full(_) = e {
                    tracing::warn!(host = %self.handshake.host_id, endpoint = self.endpoint, "client does not read fast enough (http.ws.queue_size messages queued), disconnecting");
                    self.close_with(1008, "client too slow: http.ws.queue_size reached");
                }
                false
            }
        }
    }

    /// Queues a frame, waiting for room (for replies that must not be dropped; they count
    /// against the byte bound without being refused by it).
    pub async fn send_wait(&self, frame: Frame) -> bool {
        let len = frame.len();
        self.queued_bytes.fetch_add(len, Ordering::Relaxed);
        let sent = self.outgoing.send(frame).await.is_ok();
        if !sent {
            self.queued_bytes.fetch_sub(len, Ordering::Relaxed);
        }
        sent
    }

    /// Bytes queued for this client and not yet written.
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes.load(Ordering::Relaxed)
    }

    /// Encodes and queues a message.
    pub fn send_msg<T: Serialize + ?Sized>(
        &self,
        namespace: &str,
        kind: &str,
        uuid: &str,
        status: i64,
        obj: &T,
    ) -> bool {
        self.send(message::encode(
            self.handshake.protocol,
            namespace,
            kind,
            uuid,
            status,
            obj,
        ))
    }

    /// Sends a request and waits for the message that answers it (same UUID).
    pub async fn request<T: Serialize + ?Sized>(
        &self,
        namespace: &str,
        kind: &str,
        obj: &T,
        timeout: Duration,
    ) -> Result<Incoming, RequestError> {
        let uuid = message::new_uuid();
        let (tx, rx) = oneshot::channel();
        self.lock_pending().insert(uuid.clone(), tx);
        let frame = message::encode(self.handshake.protocol, namespace, kind, &uuid, 200, obj);
        if !self.send_wait(frame).await {
            self.lock_pending().remove(&uuid);
            return Err(RequestError::Gone(self.handshake.host_id.clone()));
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(_)) => Err(RequestError::Gone(self.handshake.host_id.clone())),
            Err(_) => {
                self.lock_pending().remove(&uuid);
                Err(RequestError::Timeout(
                    self.handshake.host_id.clone(),
                    timeout,
                ))
            }
        }
    }

    fn lock_pending(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, oneshot::Sender<Incoming>>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Routes a reply to the request waiting for it; gives the message back otherwise.
    fn route_reply(&self, msg: Incoming) -> Option<Incoming> {
        if msg.uuid.is_empty() {
            return Some(msg);
        }
        let waiter = self.lock_pending().remove(&msg.uuid);
        match waiter {
            Some(tx) => {
                let _ = tx.send(msg);
                None
            }
            None => Some(msg),
        }
    }

    /// Answers a frame that could not be decoded: an `Error` message with status 400 and
    /// the reason; the connection stays open.
    fn reject(&self, e: &message::DecodeError) {
        tracing::warn!(host = %self.handshake.host_id, endpoint = self.endpoint, "dropping a message: {e}");
        self.send_msg("", "Error", "", 400, &e.to_string());
    }

    /// Asks the connection to close.
    pub fn close(&self) {
        self.kill.send_replace(true);
    }

    /// Asks the connection to close with a close frame of this code and reason (RFC 6455:
    /// 1009 for a message too big, 1008 for a policy).
    pub fn close_with(&self, code: u16, reason: &str) {
        // A close frame's reason holds 123 bytes at most.
        let mut end = reason.len().min(123);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        let mut r = self.close_reason.lock().unwrap_or_else(|e| e.into_inner());
        r.get_or_insert_with(|| (code, reason[..end].to_string()));
        drop(r);
        self.close();
    }

    /// Whether the connection was asked to close.
    pub fn is_closed(&self) -> bool {
        *self.kill.borrow()
    }

    /// Resolves once the connection is asked to close.
    pub async fn closed(&self) {
        let mut rx = self.kill.subscribe();
        let _ = rx.wait_for(|k| *k).await;
    }

    pub fn status(&self, service_type: &str) -> ConnStatus {
        ConnStatus {
            service_type: service_type.to_string(),
            client_protocol: self.handshake.protocol.name().to_string(),
            addr: self.remote.ip().to_string(),
            port: self.remote.port(),
            is_connected: true,
            connect_time: self.connected_at.to_rfc3339(),
            remote_host: self.handshake.host_id.clone(),
            remote_service_type: self.handshake.client_type.clone(),
        }
    }
}

/// The live connections of a server.
#[derive(Default)]
pub struct Registry {
    conns: Mutex<BTreeMap<ConnId, Arc<Conn>>>,
}

/// A client with this host ID is already connected to this endpoint.
#[derive(Debug)]
pub struct Conflict;

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<ConnId, Arc<Conn>>> {
        self.conns.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `host_id` is connected on `endpoint`.
    pub fn is_connected(&self, endpoint: &str, host_id: &str) -> bool {
        self.lock()
            .values()
            .any(|c| c.endpoint == endpoint && c.handshake.host_id == host_id)
    }

    /// Registers a connection; refused when the host is already connected on the endpoint.
    pub fn register(
        &self,
        endpoint: &'static str,
        handshake: Handshake,
        remote: SocketAddr,
        queue_size: usize,
        queue_bytes: usize,
    ) -> Result<(Arc<Conn>, mpsc::Receiver<Frame>), Conflict> {
        let mut conns = self.lock();
        if conns
            .values()
            .any(|c| c.endpoint == endpoint && c.handshake.host_id == handshake.host_id)
        {
            return Err(Conflict);
        }
        let (tx, rx) = mpsc::channel(queue_size.max(1));
        let conn = Arc::new(Conn {
            id: next_conn_id(),
            endpoint,
            handshake,
            remote,
            connected_at: chrono::Utc::now(),
            outgoing: tx,
            pending: Mutex::new(HashMap::new()),
            kill: watch::channel(false).0,
            close_reason: Mutex::new(None),
            queued_bytes: AtomicUsize::new(0),
            max_queued_bytes: queue_bytes.max(1),
        });
        conns.insert(conn.id, conn.clone());
        Ok((conn, rx))
    }

    pub fn remove(&self, id: ConnId) {
        self.lock().remove(&id);
    }

    /// Every connection.
    pub fn all(&self) -> Vec<Arc<Conn>> {
        self.lock().values().cloned().collect()
    }

    /// The connections on an endpoint.
    pub fn on(&self, endpoint: &str) -> Vec<Arc<Conn>> {
        self.lock()
            .values()
            .filter(|c| c.endpoint == endpoint)
            .cloned()
            .collect()
    }

    /// The connection of `host_id` on `endpoint`.
    pub fn find(&self, endpoint: &str, host_id: &str) -> Option<Arc<Conn>> {
        self.lock()
            .values()
            .find(|c| c.endpoint == endpoint && c.handshake.host_id == host_id)
            .cloned()
    }

    /// `{host: ConnStatus}` of the connections on an endpoint.
    pub fn statuses(&self, endpoint: &str, service_type: &str) -> BTreeMap<String, ConnStatus> {
        self.on(endpoint)
            .into_iter()
            .map(|c| (c.handshake.host_id.clone(), c.status(service_type)))
            .collect()
    }
}

/// What an endpoint does with the messages it receives.
pub trait MessageHandler: Send + Sync + 'static {
    /// Handles one message. Replies are sent through `conn`.
    fn on_message(&self, conn: &Arc<Conn>, msg: Incoming) -> impl Future<Output = ()> + Send;
    /// Called once the connection is gone.
    fn on_close(&self, conn: &Arc<Conn>) -> impl Future<Output = ()> + Send;
}

/// Keepalive and limits of a connection.
#[derive(Clone, Debug)]
pub struct Keepalive {
    /// When the connection last received bytes.
    pub activity: super::listener::Activity,
    pub ping_every: Duration,
    /// How long without any byte from the client before it is considered gone.
    pub read_deadline: Duration,
}

/// Runs a connection until it closes: writes queued frames and pings, reads messages and hands
/// them to `handler` (or to the request waiting for them).
pub async fn run<H: MessageHandler>(
    socket: WebSocket,
    conn: Arc<Conn>,
    mut outgoing: mpsc::Receiver<Frame>,
    keepalive: Keepalive,
    registry: Arc<Registry>,
    handler: Arc<H>,
) {
    let (mut sink, mut stream) = socket.split();
    let writer_conn = conn.clone();
    let writer = tokio::spawn(async move {
        let mut ping = tokio::time::interval(keepalive.ping_every);
        // A write that cannot complete within this delay means the client stopped reading.
        let deadline = WRITE_DEADLINE;
        let mut batch: Vec<Frame> = Vec::with_capacity(WRITE_BATCH);
        loop {
            let mut ping_now = false;
            tokio::select! {
                n = outgoing.recv_many(&mut batch, WRITE_BATCH) => if n == 0 { break },
                _ = ping.tick() => ping_now = true,
                _ = writer_conn.closed() => {
                    let (code, reason) = writer_conn
                        .close_reason
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .clone()
                        .unwrap_or((1008, "closed by server".to_string()));
                    let close = Message::Close(Some(CloseFrame {
                        code,
                        reason: Utf8Bytes::from(reason),
                    }));
                    let _ = tokio::time::timeout(deadline, sink.send(close)).await;
                    break;
                }
            }
            // Every queued frame goes out before one flush: one write for many messages.
            let batch_bytes: usize = batch.iter().map(Frame::len).sum();
            let write = async {
                if ping_now {
                    sink.feed(Message::Ping(Default::default())).await?;
                }
                for frame in batch.drain(..) {
                    let msg = match frame {
                        Frame::Text(t) => {
                            match Utf8Bytes::try_from(Bytes::from_owner(SharedText(t))) {
                                Ok(t) => Message::Text(t),
                                Err(_) => continue,
                            }
                        }
                        Frame::Binary(b) => Message::Binary(b),
                    };
                    sink.feed(msg).await?;
                }
                sink.flush().await
            };
            tokio::pin!(write);
            let written = tokio::select! {
                r = tokio::time::timeout(deadline, &mut write) => r,
                _ = writer_conn.closed() => {
                    // Closed while writing: a client that reads gets the rest (and then the
                    // close frame) within the grace; one that does not read is left at once,
                    // and its queue freed.
                    match tokio::time::timeout(CLOSE_GRACE, &mut write).await {
                        Ok(r) => Ok(r),
                        Err(_) => return,
                    }
                }
            };
            writer_conn
                .queued_bytes
                .fetch_sub(batch_bytes, Ordering::Relaxed);
            match written {
                Ok(Ok(())) => {}
                Ok(Err(_)) => break,
                Err(_) => {
                    tracing::warn!(host = %writer_conn.handshake.host_id, endpoint = writer_conn.endpoint, "write deadline passed, closing");
                    writer_conn.close();
                    break;
                }
            }
        }
        let _ = tokio::time::timeout(deadline, sink.close()).await;
    });

    // The deadline counts bytes, not messages: a large message arriving slowly is activity.
    let mut deadline_check = tokio::time::interval(keepalive.read_deadline / 4);
    loop {
        let next = tokio::select! {
            n = stream.next() => n,
            _ = deadline_check.tick() => {
                if keepalive.activity.idle() > keepalive.read_deadline {
                    tracing::info!(host = %conn.handshake.host_id, endpoint = conn.endpoint, "nothing received (not even a pong) before the deadline, closing");
                    break;
                }
                continue;
            }
            _ = conn.closed() => break,
        };
        let msg = match next {
            None => break,
            Some(Err(e)) => {
                let e = e.to_string();
                tracing::info!(host = %conn.handshake.host_id, endpoint = conn.endpoint, "connection error, closing: {e}");
                // A message over the size limit: said with its close code, not a reset.
                if e.contains("Message too long") || e.contains("Space limit exceeded") {
                    conn.close_with(1009, &format!("message too big: {e}"));
                }
                break;
            }
            Some(Ok(m)) => m,
        };
        let decoded: Vec<Incoming> = match msg {
            Message::Text(t) => match message::decode_text_batch(t.as_str()) {
                Ok(v) => v,
                Err(e) => {
                    conn.reject(&e);
                    continue;
                }
            },
            Message::Binary(b) => match message::decode_binary(&b) {
                Ok(m) => vec![m],
                Err(e) => {
                    conn.reject(&e);
                    continue;
                }
            },
            Message::Close(_) => break,
            Message::Ping(_) | Message::Pong(_) => continue,
        };
        for m in decoded {
            if let Some(m) = conn.route_reply(m) {
                handler.on_message(&conn, m).await;
            }
        }
    }
    registry.remove(conn.id);
    conn.close();
    handler.on_close(&conn).await;
    // The writer ends within its deadline; a client that stopped reading cannot hold it.
    let _ = writer.await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr() -> SocketAddr {
        "10.0.0.1:5000".parse().unwrap()
    }

    #[test]
    fn handshake_reads_headers_then_query() {
        let mut h = HeaderMap::new();
        h.insert("X-Host-ID", "agent1".parse().unwrap());
        h.insert("X-Client-Type", "agent".parse().unwrap());
        h.insert("X-Client-Protocol", "protobuf".parse().unwrap());
        h.append("X-Websocket-Namespace", "Graph".parse().unwrap());
        h.append("X-Websocket-Namespace", "Alert".parse().unwrap());
        h.insert(
            "X-Persistence-Policy",
            "DeleteOnDisconnect".parse().unwrap(),
        );
        let hs = Handshake::parse(&h, &[], addr()).unwrap();
        assert_eq!(hs.origin(), "agent.agent1");
        assert_eq!(hs.protocol, Protocol::Protobuf);
        assert!(hs.wants("Alert") && !hs.wants("Flow"));
        assert!(hs.delete_on_disconnect);

        let q = vec![
            ("x-client-type".to_string(), "webui".to_string()),
            ("x-gremlin-filter".to_string(), "G.V()".to_string()),
            ("x-update-policy".to_string(), "partial".to_string()),
        ];
        let hs = Handshake::parse(&HeaderMap::new(), &q, addr()).unwrap();
        assert_eq!(hs.host_id, "10.0.0.1:5000");
        assert_eq!(hs.gremlin_filter.as_deref(), Some("G.V()"));
        assert!(hs.partial_updates && hs.wants("anything"));
        let bad = vec![("x-client-protocol".to_string(), "xml".to_string())];
        assert!(Handshake::parse(&HeaderMap::new(), &bad, addr()).is_err());
    }

    #[test]
    fn registry_refuses_a_second_connection_of_the_same_host() {
        let r = Registry::default();
        let hs = Handshake::parse(
            &HeaderMap::new(),
            &[("x-host-id".into(), "h".into())],
            addr(),
        )
        .unwrap();
        let (c, _rx) = r
            .register("/ws/subscriber", hs.clone(), addr(), 4, 1 << 20)
            .unwrap();
        assert!(
            r.register("/ws/subscriber", hs.clone(), addr(), 4, 1 << 20)
                .is_err()
        );
        assert!(
            r.register("/ws/publisher", hs.clone(), addr(), 4, 1 << 20)
                .is_ok()
        );
        r.remove(c.id);
        assert!(r.register("/ws/subscriber", hs, addr(), 4, 1 << 20).is_ok());
    }

    #[test]
    fn a_full_queue_disconnects_the_client() {
        let r = Registry::default();
        let hs = Handshake::parse(&HeaderMap::new(), &[], addr()).unwrap();
        let (c, _rx) = r
            .register("/ws/subscriber", hs, addr(), 2, 1 << 20)
            .unwrap();
        assert!(c.send(Frame::Text("a".into())));
        assert!(c.send(Frame::Text("b".into())));
        assert!(!c.send(Frame::Text("c".into())));
        assert!(c.is_closed());
    }
}
