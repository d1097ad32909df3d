//! The HTTP and WebSocket server shared by the agent and the analyzer: `/api`, `/api/topology`,
//! `/ws/subscriber`, `/ws/publisher`, `/ws/pubsub` (Skydive's REST API; Skydive's WebSocket
//! protocol). Each service adds its own routes (`/api/status`, resources, `/ws/agent/topology`,
//! …).

pub mod conn;
pub mod listener;
pub mod publisher;
pub mod subscriber;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Query, State, WebSocketUpgrade};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use serde::Deserialize;
use skydive_config::WsSettings;
use skydive_graph::{GraphJson, GraphView, History};
use skydive_gremlin::{BpfCompiler, Env, FlowSource, Output};

use self::conn::{Conn, Handshake, Keepalive, MessageHandler, Registry};
use self::publisher::PublishPolicy;
use self::subscriber::Subscription;
use crate::error::{ApiError, ApiResult};
use crate::message::{Incoming, graph_types};
use skydive_hub::HubHandle;

/// The version reported by `GET /api`.
pub const VERSION: &str = concat!("0.28.0-rs.", env!("CARGO_PKG_VERSION"));

/// Which service a server is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Service {
    Analyzer,
    Agent,
}

impl Service {
    pub fn name(self) -> &'static str {
        match self {
            Service::Analyzer => "analyzer",
            Service::Agent => "agent",
        }
    }
}

/// What the handlers share.
pub struct Context {
    pub service: Service,
    pub host_id: String,
    pub hub: HubHandle,
    pub history: Arc<dyn History>,
    pub flows: Option<Arc<dyn FlowSource>>,
    pub bpf: Option<Arc<dyn BpfCompiler>>,
    pub ws: WsSettings,
    pub registry: Arc<Registry>,
    /// `gremlin.*`: what one query may take.
    pub gremlin: GremlinLimits,
}

/// `gremlin.max_elements` and `gremlin.timeout`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GremlinLimits {
    pub max_elements: usize,
    pub timeout: std::time::Duration,
}

impl Default for GremlinLimits {
    fn default() -> Self {
        GremlinLimits::of(&skydive_config::GremlinSettings::default())
    }
}

impl GremlinLimits {
    pub fn of(s: &skydive_config::GremlinSettings) -> GremlinLimits {
        GremlinLimits {
            max_elements: usize::try_from(s.max_elements).unwrap_or(usize::MAX),
            timeout: std::time::Duration::from_secs(s.timeout),
        }
    }

    /// The limits of one evaluation starting now, stopped early when `cancel` is set.
    pub fn start(
        &self,
        cancel: Option<Arc<std::sync::atomic::AtomicBool>>,
    ) -> skydive_gremlin::Limits {
        skydive_gremlin::Limits {
            max_elements: self.max_elements,
            deadline: Some(std::time::Instant::now() + self.timeout),
            cancel,
        }
    }

    /// The answer to a query that stopped: what the client can act on, naming the limit.
    pub fn error(&self, e: skydive_gremlin::Error) -> ApiError {
        use skydive_gremlin::LimitHit;
        match e.limit {
            None => ApiError::bad_request(e.to_string()),
            Some(LimitHit::Elements) => ApiError::Client(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("{e} (gremlin.max_elements: {})", self.max_elements),
            ),
            Some(LimitHit::Time) => ApiError::Unavailable(format!(
                "{e} (gremlin.timeout: {} s)",
                self.timeout.as_secs()
            )),
            Some(LimitHit::Cancelled) => ApiError::Unavailable(e.to_string()),
        }
    }
}

/// Sets its flag when dropped: the evaluation it was given to stops when its request is
/// dropped (the client went away).
struct CancelOnDrop(Arc<std::sync::atomic::AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("service", &self.service)
            .field("host_id", &self.host_id)
            .finish()
    }
}

impl Context {
    pub fn keepalive(&self, activity: listener::Activity) -> Keepalive {
        Keepalive {
            activity,
            ping_every: std::time::Duration::from_secs(self.ws.ping_delay.max(1)),
            read_deadline: std::time::Duration::from_secs(
                self.ws.ping_delay + self.ws.pong_timeout.max(1),
            ),
        }
    }
}

pub type Shared = Arc<Context>;

/// A plain-text error response, as Skydive's handlers write them.
pub fn text_error(status: StatusCode, message: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{message}\n"),
    )
        .into_response()
}

/// A JSON response with Skydive's content type.
pub fn json_response(status: StatusCode, body: Vec<u8>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json; charset=UTF-8")],
        body,
    )
        .into_response()
}

/// The routes every server has (the web UI among them).
pub fn common_routes() -> Router<Shared> {
    Router::new()
        .route("/api", get(api_info))
        .route("/api/", get(api_info))
        .route("/api/topology", get(topology_dump).post(topology_query))
        .route("/ws/subscriber", any(ws_subscriber))
        .route("/ws/publisher", any(ws_publisher))
        .route("/ws/pubsub", any(ws_pubsub))
        .merge(crate::ui::routes())
}

/// `/login`, authentication and authorisation, CORS and compression, as Skydive's router wraps
/// every handler.
/// With `debug` (`http.rest.debug`), every request is logged with its answer's status and
/// time.
/// A request no route answers: a 404 that says so, instead of an empty body.
async fn no_such_endpoint(method: Method, uri: axum::http::Uri) -> Response {
    ApiError::NotFound(format!("no such endpoint: {method} {}", uri.path())).into_response()
}

pub fn with_layers(router: Router, auth: crate::auth::Auth, debug: bool) -> Router {
    use tower_http::compression::CompressionLayer;
    use tower_http::cors::{Any, CorsLayer};
    let cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([
            Method::GET,
            Method::HEAD,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers([
            header::HeaderName::from_static("x-requested-with"),
            header::CONTENT_TYPE,
            header::AUTHORIZATION,
            header::HeaderName::from_static("x-auth-token"),
        ]);
    let router = router
        .merge(crate::auth::routes(auth.clone()))
        .fallback(no_such_endpoint)
        .layer(axum::middleware::from_fn_with_state(
            auth,
            crate::auth::middleware,
        ))
        .layer(CompressionLayer::new().gzip(true))
        .layer(cors);
    if debug {
        router.layer(axum::middleware::from_fn(log_request))
    } else {
        router
    }
}

/// `http.rest.debug`: a request and its answer, in the log.
async fn log_request(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let (method, uri) = (req.method().clone(), req.uri().clone());
    let start = std::time::Instant::now();
    let resp = next.run(req).await;
    tracing::info!(
        target: "skydive::rest",
        %method,
        %uri,
        status = resp.status().as_u16(),
        ms = start.elapsed().as_secs_f64() * 1000.0,
        "REST request"
    );
    resp
}

/// Binds a listen address of the configuration (`host:port`, `:port`, `port`; an empty
/// host is 127.0.0.1).
pub async fn bind(listen: &str) -> std::io::Result<tokio::net::TcpListener> {
    let (host, port) = skydive_config::parse_listen(listen)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    tokio::net::TcpListener::bind((host.as_str(), port)).await
}

/// Serves `app` on `listener` until `shutdown` resolves; with `tls`, HTTPS and WSS only,
/// every answer saying so (`Strict-Transport-Security`, as Skydive's).
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    tls: Option<skydive_tls::TlsAcceptor>,
) -> std::io::Result<()> {
    let app = if tls.is_some() {
        app.layer(axum::middleware::map_response(
            |mut r: Response| async move {
                r.headers_mut().insert(
                    header::STRICT_TRANSPORT_SECURITY,
                    HeaderValue::from_static("max-age=63072000; includeSubDomains"),
                );
                r
            },
        ))
    } else {
        app
    };
    axum::serve(
        listener::ActivityListener::new(listener, tls),
        app.into_make_service_with_connect_info::<listener::ClientInfo>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

async fn api_info(State(ctx): State<Shared>) -> ApiResult {
    let body =
        serde_json::json!({"Host": ctx.host_id, "Version": VERSION, "Service": ctx.service.name()});
    crate::error::json(StatusCode::OK, &body)
}

async fn topology_dump(State(ctx): State<Shared>) -> ApiResult {
    let snap = ctx.hub.snapshot();
    let body = tokio::task::spawn_blocking(move || {
        let mut out = Vec::with_capacity(snap.graph.node_count() * 512);
        GraphJson::from_view(&snap.graph)
            .write_to(&mut out)
            .map(|()| out)
    })
    .await?
    .map_err(|e| ApiError::internal("encoding the topology", e))?;
    Ok(json_response(StatusCode::OK, body))
}

#[derive(Deserialize)]
struct TopologyRequest {
    #[serde(rename = "GremlinQuery", default)]
    gremlin_query: String,
}

/// The result of a query in the format the `Accept` header asks for.
fn render(out: &Output<'_>, accept: &str) -> ApiResult<(String, Vec<u8>)> {
    let mime = accept
        .split(',')
        .next()
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim();
    match mime {
        "text/vnd.graphviz" => match out {
            Output::Graph(g) => Ok((
                "text/vnd.graphviz; charset=UTF-8".into(),
                dot(g.view()).into_bytes(),
            )),
            _ => Err(ApiError::Client(
                StatusCode::NOT_ACCEPTABLE,
                "Only graph can be outputted as dot".into(),
            )),
        },
        "application/vnd.tcpdump.pcap" => match out {
            Output::RawPackets(m) => Ok(("application/vnd.tcpdump.pcap".into(), pcap(m))),
            _ => Err(ApiError::Client(
                StatusCode::NOT_ACCEPTABLE,
                "Only RawPackets step result can be outputted as pcap".into(),
            )),
        },
        _ => Ok(("application/json; charset=UTF-8".into(), out.to_json())),
    }
}

/// A DOT digraph of a graph result.
pub fn dot(g: &dyn GraphView) -> String {
    let j = GraphJson::from_view(g);
    let mut s = String::from("digraph g {\n");
    let q = |v: &str| v.replace('\\', "\\\\").replace('"', "\\\"");
    for n in &j.nodes {
        let label = format!("{} ({})", n.name(), n.type_str());
        s.push_str(&format!("  \"{}\" [label=\"{}\"];\n", q(&n.id), q(&label)));
    }
    for e in &j.edges {
        s.push_str(&format!(
            "  \"{}\" -> \"{}\" [label=\"{}\"];\n",
            q(&e.parent),
            q(&e.child),
            q(e.relation_type())
        ));
    }
    s.push_str("}\n");
    s
}

/// A pcap file of raw packets, in time order.
pub fn pcap(m: &std::collections::BTreeMap<String, Vec<skydive_flow::RawPacket>>) -> Vec<u8> {
    use pcap_file::DataLink;
    use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
    let mut packets: Vec<&skydive_flow::RawPacket> = m.values().flatten().collect();
    packets.sort_by_key(|p| (p.timestamp, p.index));
    let link = packets.first().map(|p| p.link_type).unwrap_or(1);
    // Little-endian, as Skydive's writer (gopacket's pcapgo) made it.
    let header = PcapHeader {
        datalink: DataLink::from(link),
        snaplen: 65535,
        endianness: pcap_file::Endianness::Little,
        ..Default::default()
    };
    let Ok(mut w) = PcapWriter::with_header(Vec::new(), header) else {
        return Vec::new();
    };
    for p in packets {
        let ts = std::time::Duration::from_millis(p.timestamp.max(0) as u64);
        let _ = w.write_packet(&PcapPacket::new(ts, p.data.len() as u32, &p.data));
    }
    w.into_writer()
}

async fn topology_query(State(ctx): State<Shared>, headers: HeaderMap, body: Bytes) -> ApiResult {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let req: TopologyRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("invalid request body: {e}")))?;
    if req.gremlin_query.trim().is_empty() {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let snap = ctx.hub.snapshot();
    let cancel = CancelOnDrop(Arc::default());
    let limits = ctx.gremlin.start(Some(cancel.0.clone()));
    let (ctype, body) = tokio::task::spawn_blocking(move || {
        let env = Env {
            graph: &snap.graph,
            history: ctx.history.as_ref(),
            flows: ctx.flows.as_deref(),
            bpf: ctx.bpf.as_deref(),
            now: skydive_graph::now_ms(),
        };
        let out = skydive_gremlin::query_limited(&req.gremlin_query, &env, &limits)
            .map_err(|e| ctx.gremlin.error(e))?;
        render(&out, &accept)
    })
    .await??;
    drop(cancel);
    Ok((StatusCode::OK, [(header::CONTENT_TYPE, ctype)], body).into_response())
}

/// What a WebSocket endpoint reads from the upgrade request.
pub struct WsRequest {
    pub ws: WebSocketUpgrade,
    pub headers: HeaderMap,
    pub query: Vec<(String, String)>,
    pub remote: SocketAddr,
    /// When the connection last received bytes.
    pub activity: listener::Activity,
    /// What the user may publish.
    pub rights: PublishRights,
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for WsRequest {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        let ws = WebSocketUpgrade::from_request_parts(parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let Query(query) = Query::<Vec<(String, String)>>::from_request_parts(parts, state)
            .await
            .unwrap_or(Query(Vec::new()));
        let info = parts
            .extensions
            .get::<ConnectInfo<listener::ClientInfo>>()
            .map(|c| c.0.clone());
        let remote = info
            .as_ref()
            .map(|i| i.addr)
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
        let activity = info.map(|i| i.activity).unwrap_or_default();
        let rights = parts
            .extensions
            .get::<PublishRights>()
            .copied()
            .unwrap_or_default();
        Ok(WsRequest {
            rights,
            ws,
            headers: parts.headers.clone(),
            query,
            remote,
            activity,
        })
    }
}

/// Handshake, registration and upgrade of a WebSocket endpoint; `make` builds the handler
/// once the connection is registered.
pub async fn ws_endpoint<H, F>(
    ctx: Shared,
    endpoint: &'static str,
    req: WsRequest,
    subscribe: bool,
    make: F,
) -> ApiResult
where
    H: MessageHandler,
    F: FnOnce(Arc<Conn>, Option<Arc<Subscription>>) -> H + Send + 'static,
{
    let WsRequest {
        ws,
        headers,
        query,
        remote,
        activity,
        rights: _,
    } = req;
    let handshake = Handshake::parse(&headers, &query, remote).map_err(
        |conn::HandshakeError::BadProtocol(p)| {
            ApiError::bad_request(format!("unsupported client protocol {p:?}"))
        },
    )?;
    let ws = ws.max_message_size(64 << 20);
    if handshake.client_type.is_empty() {
        // Skydive upgrades, then closes at once.
        let resp = ws.on_upgrade(|mut socket| async move {
            use axum::extract::ws::{CloseFrame, Message};
            let _ = socket
                .send(Message::Close(Some(CloseFrame {
                    code: 1000,
                    reason: "X-Client-Type header not provided".into(),
                })))
                .await;
        });
        return Ok(with_server_headers(&ctx, resp));
    }
    let (conn, rx) = ctx
        .registry
        .register(
            endpoint,
            handshake,
            remote,
            ctx.ws.queue_size as usize,
            ctx.ws.queue_bytes as usize,
        )
        .map_err(|conn::Conflict| ApiError::Conflict("Duplicate host ID".into()))?;
    let sub = if subscribe {
        match Subscription::new(&ctx, conn.clone()).await {
            Ok(s) => Some(s),
            Err(e) => {
                ctx.registry.remove(conn.id);
                return Err(ApiError::bad_request(format!(
                    "invalid X-Gremlin-Filter: {e}"
                )));
            }
        }
    } else {
        None
    };
    let events = subscribe.then(|| ctx.hub.subscribe());
    let registry = ctx.registry.clone();
    let keepalive = ctx.keepalive(activity);
    let handler = Arc::new(make(conn.clone(), sub.clone()));
    let fctx = ctx.clone();
    let (failed_registry, failed_conn, failed_handler) =
        (registry.clone(), conn.clone(), handler.clone());
    let ws = ws.on_failed_upgrade(move |e| {
        tracing::info!(host = %failed_conn.handshake.host_id, "WebSocket upgrade failed: {e}");
        failed_registry.remove(failed_conn.id);
        failed_conn.close();
        tokio::spawn(async move { failed_handler.on_close(&failed_conn).await });
    });
    let resp = ws.on_upgrade(move |socket| async move {
        if let (Some(sub), Some(events)) = (sub, events) {
            tokio::spawn(sub.forward(fctx, events));
        }
        conn::run(socket, conn, rx, keepalive, registry, handler).await;
    });
    Ok(with_server_headers(&ctx, resp))
}

/// The headers Skydive's clients require in a handshake reply.
fn with_server_headers(ctx: &Context, mut resp: Response) -> Response {
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&ctx.host_id) {
        h.insert("X-Host-ID", v);
    }
    h.insert(
        "X-Service-Type",
        HeaderValue::from_static(ctx.service.name()),
    );
    resp
}

/// Subscribers: answer `SyncRequest`; with `publish`, also apply graph messages (pubsub).
pub struct SubscriberHandler {
    ctx: Shared,
    sub: Option<Arc<Subscription>>,
    publish: Option<PublishPolicy>,
}

impl MessageHandler for SubscriberHandler {
    async fn on_message(&self, conn: &Arc<Conn>, msg: Incoming) {
        if msg.namespace != graph_types::NAMESPACE {
            return;
        }
        if msg.kind == graph_types::SYNC_REQUEST {
            if let Some(sub) = &self.sub {
                sub.sync(&self.ctx, &msg).await;
            }
            return;
        }
        if let Some(policy) = self.publish {
            publisher::publish(&self.ctx, conn, &msg, policy).await;
        }
    }

    async fn on_close(&self, conn: &Arc<Conn>) {
        if self.publish.is_some() && conn.handshake.delete_on_disconnect {
            delete_origin(&self.ctx, conn).await;
        }
    }
}

/// Publishers: apply graph messages, answer `SyncRequest` with the whole graph.
pub struct PublisherHandler {
    ctx: Shared,
    policy: PublishPolicy,
}

impl PublisherHandler {
    pub fn new(ctx: Shared, policy: PublishPolicy) -> Self {
        PublisherHandler { ctx, policy }
    }

    /// Applies a graph message, or answers a `SyncRequest` with the whole graph.
    pub async fn on_graph_message(&self, conn: &Arc<Conn>, msg: Incoming) {
        if msg.kind == graph_types::SYNC_REQUEST {
            let snap = self.ctx.hub.snapshot();
            let j = GraphJson::from_view(&snap.graph);
            conn.send_wait(crate::message::encode(
                conn.handshake.protocol,
                graph_types::NAMESPACE,
                graph_types::SYNC_REPLY,
                &msg.uuid,
                200,
                &j,
            ))
            .await;
            return;
        }
        publisher::publish(&self.ctx, conn, &msg, self.policy).await;
    }
}

impl MessageHandler for PublisherHandler {
    async fn on_message(&self, conn: &Arc<Conn>, msg: Incoming) {
        if msg.namespace == graph_types::NAMESPACE {
            self.on_graph_message(conn, msg).await;
        }
    }

    async fn on_close(&self, conn: &Arc<Conn>) {
        if conn.handshake.delete_on_disconnect {
            delete_origin(&self.ctx, conn).await;
        }
    }
}

/// Removes everything a connection published.
pub async fn delete_origin(ctx: &Context, conn: &Conn) {
    let origin = conn.handshake.origin();
    let _ = ctx
        .hub
        .apply(Some(conn.id), move |g| {
            Ok(g.delete_origin(&origin, skydive_graph::now_ms()))
        })
        .await;
}

/// Agents: elements are taken as they come (the agent owns them and sets their origin).
pub const AGENT_PUBLISHER: PublishPolicy = PublishPolicy {
    validate: false,
    override_origin: false,
    own_elements_only: false,
};

/// External publishers: elements are validated and take the publisher's origin; a publisher
/// changes only its own elements, unless its role may `publish-any` on `topology`.
pub const EXTERNAL_PUBLISHER: PublishPolicy = PublishPolicy {
    validate: true,
    override_origin: true,
    own_elements_only: true,
};

/// The policy of an external publisher with these rights.
fn external_publisher(rights: PublishRights) -> PublishPolicy {
    PublishPolicy {
        own_elements_only: !rights.any_origin,
        ..EXTERNAL_PUBLISHER
    }
}

/// What the authenticated user may publish (set by the authentication middleware; without
/// RBAC, nobody may change elements of other origins).
#[derive(Clone, Copy, Debug, Default)]
pub struct PublishRights {
    pub any_origin: bool,
}

async fn ws_subscriber(State(ctx): State<Shared>, req: WsRequest) -> ApiResult {
    let c = ctx.clone();
    ws_endpoint(ctx, "/ws/subscriber", req, true, move |_, sub| {
        SubscriberHandler {
            ctx: c,
            sub,
            publish: None,
        }
    })
    .await
}

async fn ws_pubsub(State(ctx): State<Shared>, req: WsRequest) -> ApiResult {
    let c = ctx.clone();
    let policy = external_publisher(req.rights);
    ws_endpoint(ctx, "/ws/pubsub", req, true, move |_, sub| {
        SubscriberHandler {
            ctx: c,
            sub,
            publish: Some(policy),
        }
    })
    .await
}

async fn ws_publisher(State(ctx): State<Shared>, req: WsRequest) -> ApiResult {
    let c = ctx.clone();
    let policy = external_publisher(req.rights);
    ws_endpoint(ctx, "/ws/publisher", req, false, move |_, _| {
        PublisherHandler { ctx: c, policy }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The messages of the events logged while it is installed.
    #[derive(Clone, Default)]
    struct Logged(Arc<std::sync::Mutex<Vec<String>>>);

    impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Logged {
        fn on_event(
            &self,
            event: &tracing::Event<'_>,
            _: tracing_subscriber::layer::Context<'_, S>,
        ) {
            struct Fields(String);
            impl tracing::field::Visit for Fields {
                fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn std::fmt::Debug) {
                    self.0.push_str(&format!("{}={v:?} ", f.name()));
                }
            }
            let mut fields = Fields(String::new());
            event.record(&mut fields);
            self.0.lock().unwrap().push(fields.0);
        }
    }

    async fn answer(debug: bool) -> (StatusCode, Vec<String>) {
        use tower::ServiceExt as _;
        use tracing_subscriber::layer::SubscriberExt as _;
        let logged = Logged::default();
        let _guard =
            tracing::subscriber::set_default(tracing_subscriber::registry().with(logged.clone()));
        let app = with_layers(
            Router::new().route("/api/x", get(|| async { "ok" })),
            crate::auth::Auth::none(),
            debug,
        );
        let req = axum::http::Request::get("/api/x")
            .body(axum::body::Body::empty())
            .unwrap();
        let status = app.oneshot(req).await.unwrap().status();
        let lines = logged.0.lock().unwrap().clone();
        (status, lines)
    }

    #[tokio::test(flavor = "current_thread")]
    async fn rest_debug_logs_every_request_with_its_status() {
        let (status, lines) = answer(true).await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            lines
                .iter()
                .any(|l| l.contains("uri=/api/x") && l.contains("status=200")),
            "{lines:?}"
        );
        let (_, lines) = answer(false).await;
        assert!(lines.iter().all(|l| !l.contains("uri=/api/x")), "{lines:?}");
    }
}
