//! Direct graph access: `/api/node` and `/api/edge` (Skydive's generic CRUD handler; Skydive's
//! resource shapes). Elements created here belong to `api.<host_id>`, are kept in the resource
//! store so that they survive a restart of the analyzer, and expire with `X-Resource-TTL`.
//!
//! An edge may link nodes of agents: after a restart it waits until both of its nodes are
//! back. An element deleted from the graph (through this API, or because a node it hangs
//! on went away) is deleted from the store.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;
use serde_json::Value as Json;
use skydive_api::error::{ApiError, ApiResult, json};
use skydive_api::schema;
use skydive_graph::{Edge, Element, GraphError, GraphEvent, Id, Key, Map, Node, Value, now_ms};
use skydive_hub::{ConnId, HubError, HubHandle};
use tokio::sync::broadcast;

use crate::resources::{Change, Resources, resource_ttl};

/// Store kinds of the elements created through the API.
pub const NODE_KIND: &str = "node";
pub const EDGE_KIND: &str = "edge";

/// The node and edge API.
pub struct ElementApi {
    hub: HubHandle,
    resources: Arc<Resources>,
    host_id: String,
    /// Changes made by the API carry this source.
    conn: ConnId,
    /// Stored edges waiting for their nodes.
    pending: Mutex<BTreeMap<Id, Edge>>,
}

impl std::fmt::Debug for ElementApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ElementApi")
    }
}

fn graph_error(e: HubError) -> ApiError {
    match e {
        HubError::Graph(e @ (GraphError::NodeNotFound(_) | GraphError::EdgeNotFound(_))) => {
            ApiError::NotFound(e.to_string())
        }
        HubError::Graph(e) => ApiError::BadRequest(e.to_string()),
        HubError::Closed => ApiError::Unavailable(e.to_string()),
    }
}

fn empty_ok() -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "",
    )
        .into_response()
}

/// Which of the two element kinds a handler serves.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Node,
    Edge,
}

impl Kind {
    fn store(self) -> &'static str {
        match self {
            Kind::Node => NODE_KIND,
            Kind::Edge => EDGE_KIND,
        }
    }
    fn title(self) -> &'static str {
        match self {
            Kind::Node => "Node",
            Kind::Edge => "Edge",
        }
    }
}

impl ElementApi {
    pub fn new(hub: HubHandle, resources: Arc<Resources>, host_id: &str) -> Arc<ElementApi> {
        Arc::new(ElementApi {
            hub,
            resources,
            host_id: host_id.to_string(),
            conn: skydive_hub::next_conn_id(),
            pending: Mutex::new(BTreeMap::new()),
        })
    }

    fn origin(&self) -> String {
        format!("api.{}", self.host_id)
    }

    fn defaults(&self, e: &mut Element) {
        if e.origin.is_empty() {
            e.origin = self.origin().into();
        }
        if e.host.is_empty() {
            e.host = self.host_id.as_str().into();
        }
    }

    /// The routes of the node and edge API.
    pub fn routes(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/api/node", get(list_nodes).post(create_node))
            .route("/api/node/", get(list_nodes).post(create_node))
            .route(
                "/api/node/{id}",
                get(get_node).patch(patch_node).delete(delete_node),
            )
            .route("/api/edge", get(list_edges).post(create_edge))
            .route("/api/edge/", get(list_edges).post(create_edge))
            .route(
                "/api/edge/{id}",
                get(get_edge).patch(patch_edge).delete(delete_edge),
            )
            .with_state(self.clone())
    }

    /// Puts the stored elements back into the graph, then keeps the store in step with the
    /// graph. Runs until the hub closes.
    pub async fn run(self: Arc<Self>) {
        let mut events = self.hub.subscribe();
        let mut changes = self.resources.subscribe();
        self.reload().await;
        loop {
            tokio::select! {
                b = events.recv() => match b {
                    Ok(b) => self.on_graph_events(&b.events).await,
                    Err(broadcast::error::RecvError::Lagged(_)) => self.retry_pending().await,
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                c = changes.recv() => match c {
                    Ok(c) => self.on_resource_change(&c.kind, &c.id, &c.change).await,
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return,
                },
            }
        }
    }

    async fn reload(&self) {
        let load = |kind: &'static str| async move {
            self.resources.list(kind).await.unwrap_or_else(|e| {
                tracing::error!("cannot read the stored {kind}s: {e}");
                BTreeMap::new()
            })
        };
        let now = now_ms();
        let nodes: Vec<Node> = load(NODE_KIND)
            .await
            .values()
            .filter_map(|v| Node::from_json(v, now).ok())
            .collect();
        let n = nodes.len();
        let _ = self
            .hub
            .apply(Some(self.conn), move |g| {
                let mut evs = Vec::new();
                for node in nodes {
                    evs.extend(g.replace_node(node).unwrap_or_default());
                }
                Ok(evs)
            })
            .await;
        let edges: Vec<Edge> = load(EDGE_KIND)
            .await
            .values()
            .filter_map(|v| Edge::from_json(v, now).ok())
            .collect();
        tracing::info!(
            nodes = n,
            edges = edges.len(),
            "restored the elements created through the API"
        );
        self.lock_pending()
            .extend(edges.into_iter().map(|e| (e.id.clone(), e)));
        self.retry_pending().await;
    }

    fn lock_pending(&self) -> std::sync::MutexGuard<'_, BTreeMap<Id, Edge>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds the waiting edges whose nodes are now present.
    async fn retry_pending(&self) {
        let snap = self.hub.snapshot();
        let ready: Vec<Edge> = {
            let mut pending = self.lock_pending();
            let ids: Vec<Id> = pending
                .values()
                .filter(|e| {
                    snap.graph.node(&e.parent).is_some() && snap.graph.node(&e.child).is_some()
                })
                .map(|e| e.id.clone())
                .collect();
            ids.iter().filter_map(|id| pending.remove(id)).collect()
        };
        if ready.is_empty() {
            return;
        }
        let _ = self
            .hub
            .apply(Some(self.conn), move |g| {
                let mut evs = Vec::new();
                for e in ready {
                    evs.extend(g.replace_edge(e).unwrap_or_default());
                }
                Ok(evs)
            })
            .await;
    }

    async fn on_graph_events(&self, events: &[GraphEvent]) {
        let mut node_added = false;
        for ev in events {
            match ev {
                GraphEvent::NodeAdded(_) => node_added = true,
                GraphEvent::NodeDeleted(n) if n.origin == self.origin() => {
                    let _ = self.resources.delete(NODE_KIND, &n.id).await;
                }
                GraphEvent::EdgeDeleted(e) if e.origin == self.origin() => {
                    let _ = self.resources.delete(EDGE_KIND, &e.id).await;
                }
                _ => {}
            }
        }
        if node_added && !self.lock_pending().is_empty() {
            self.retry_pending().await;
        }
    }

    /// A stored element that expired leaves the graph.
    async fn on_resource_change(&self, kind: &str, id: &str, change: &Change) {
        if !matches!(change, Change::Deleted(_)) {
            return;
        }
        let id = id.to_string();
        match kind {
            NODE_KIND => {
                let _ = self
                    .hub
                    .apply(Some(self.conn), move |g| match g.node(&id) {
                        Some(_) => g.delete_node(&id, now_ms()),
                        None => Ok(Vec::new()),
                    })
                    .await;
            }
            EDGE_KIND => {
                self.lock_pending().remove(id.as_str());
                let _ = self
                    .hub
                    .apply(Some(self.conn), move |g| match g.edge(&id) {
                        Some(_) => Ok(vec![g.delete_edge(&id, now_ms())?]),
                        None => Ok(Vec::new()),
                    })
                    .await;
            }
            _ => {}
        }
    }

    async fn create(&self, kind: Kind, headers: &HeaderMap, body: &[u8]) -> ApiResult {
        let v: Json =
            serde_json::from_slice(body).map_err(|e| ApiError::bad_request(e.to_string()))?;
        let ttl = resource_ttl(headers)?;
        match kind {
            Kind::Node => schema::validate_node(&v),
            Kind::Edge => schema::validate_edge(&v),
        }
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
        let now = now_ms();
        let (id, stored, result) = match kind {
            Kind::Node => {
                let mut n =
                    Node::from_json(&v, now).map_err(|e| ApiError::bad_request(e.to_string()))?;
                self.defaults(&mut n);
                let stored = to_json(&n)?;
                let id = n.id.clone();
                let r = self
                    .hub
                    .apply(Some(self.conn), move |g| Ok(vec![g.add_node(n)?]))
                    .await;
                (id, stored, r)
            }
            Kind::Edge => {
                let mut e =
                    Edge::from_json(&v, now).map_err(|e| ApiError::bad_request(e.to_string()))?;
                self.defaults(&mut e);
                let stored = to_json(&e)?;
                let id = e.id.clone();
                let r = self
                    .hub
                    .apply(Some(self.conn), move |g| Ok(vec![g.add_edge(e)?]))
                    .await;
                (id, stored, r)
            }
        };
        result.map_err(graph_error)?;
        if let Err(e) = self
            .resources
            .put(kind.store(), &id, stored.clone(), ttl)
            .await
        {
            // Not durable: take it back out of the graph and say so.
            let rid = id.clone();
            let _ = self
                .hub
                .apply(Some(self.conn), move |g| match kind {
                    Kind::Node => g.delete_node(&rid, now_ms()),
                    Kind::Edge => Ok(vec![g.delete_edge(&rid, now_ms())?]),
                })
                .await;
            return Err(ApiError::internal("storing the element", e));
        }
        json(StatusCode::CREATED, &stored)
    }

    /// The element as the API shows it; a 404 naming it when there is none.
    fn current(&self, kind: Kind, id: &str) -> ApiResult<Json> {
        let snap = self.hub.snapshot();
        let found = match kind {
            Kind::Node => snap.graph.node(id).map(|n| to_json(n.as_ref())),
            Kind::Edge => snap.graph.edge(id).map(|e| to_json(e.as_ref())),
        };
        found.unwrap_or_else(|| {
            Err(ApiError::NotFound(format!(
                "{} '{id}' not found",
                kind.title()
            )))
        })
    }

    async fn patch(&self, kind: Kind, id: String, body: &[u8]) -> ApiResult {
        // (Skydive answered a patch of an unknown element with a bare 404; this one says
        // what was not found.)
        let mut doc = self.current(kind, &id)?;
        let old_md = doc.get("Metadata").cloned().unwrap_or(Json::Null);
        let patch: json_patch::Patch = serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("incorrect JSON patch: {e}")))?;
        json_patch::patch(&mut doc, &patch)
            .map_err(|e| ApiError::bad_request(format!("applying JSON patch to resource: {e}")))?;
        match kind {
            Kind::Node => schema::validate_node(&doc),
            Kind::Edge => schema::validate_edge(&doc),
        }
        .map_err(|e| ApiError::bad_request(format!("validating patched resource: {e}")))?;
        let mut new_md = match doc.get("Metadata") {
            Some(Json::Object(m)) => m.clone(),
            _ => serde_json::Map::new(),
        };
        if kind == Kind::Node {
            // Only metadata changes are kept, and a node keeps its identity.
            for key in ["TID", "Name", "Type"] {
                match old_md.get(key) {
                    Some(v) => {
                        new_md.insert(key.to_string(), v.clone());
                    }
                    None => {
                        new_md.remove(key);
                    }
                }
            }
        }
        if Json::Object(new_md.clone()) == old_md {
            return Ok(StatusCode::NOT_MODIFIED.into_response());
        }
        let md: Map = new_md
            .iter()
            .map(|(k, v)| (Key::from(k.as_str()), Value::from_json(v)))
            .collect();
        let pid = id.clone();
        let result = self
            .hub
            .apply(Some(self.conn), move |g| {
                let ev = match kind {
                    Kind::Node => g.set_node_metadata(&pid, md, now_ms())?,
                    Kind::Edge => g.update_edge_metadata(&pid, now_ms(), |m| *m = md)?,
                };
                Ok(ev.into_iter().collect())
            })
            .await;
        let events = result.map_err(graph_error)?;
        if events.is_empty() {
            return Ok(StatusCode::NOT_MODIFIED.into_response());
        }
        let updated = self.current(kind, &id)?;
        if updated.get("Origin").and_then(Json::as_str) == Some(self.origin().as_str())
            && let Err(e) = self
                .resources
                .put(kind.store(), &id, updated.clone(), 0)
                .await
        {
            return Err(ApiError::internal("storing the element", e));
        }
        json(StatusCode::OK, &updated)
    }

    async fn delete(&self, kind: Kind, id: String) -> ApiResult {
        let did = id.clone();
        let result = self
            .hub
            .apply(Some(self.conn), move |g| match kind {
                Kind::Node => g.delete_node(&did, now_ms()),
                Kind::Edge => Ok(vec![g.delete_edge(&did, now_ms())?]),
            })
            .await;
        match result {
            Ok(_) => {
                self.resources
                    .delete(kind.store(), &id)
                    .await
                    .map_err(|e| ApiError::internal("deleting the stored element", e))?;
                Ok(empty_ok())
            }
            Err(HubError::Graph(GraphError::NodeNotFound(_) | GraphError::EdgeNotFound(_))) => {
                if kind == Kind::Edge && self.lock_pending().contains_key(id.as_str()) {
                    self.lock_pending().remove(id.as_str());
                    let _ = self.resources.delete(EDGE_KIND, &id).await;
                    return Ok(empty_ok());
                }
                Err(ApiError::NotFound(format!(
                    "{} '{id}' not found",
                    kind.title()
                )))
            }
            Err(e) => Err(graph_error(e)),
        }
    }

    fn get(&self, kind: Kind, id: &str) -> ApiResult {
        json(StatusCode::OK, &self.current(kind, id)?)
    }

    fn list(&self, kind: Kind) -> ApiResult {
        let snap = self.hub.snapshot();
        let mut out = serde_json::Map::new();
        match kind {
            Kind::Node => {
                for n in snap.graph.nodes() {
                    out.insert(n.id.to_string(), to_json(n.as_ref())?);
                }
            }
            Kind::Edge => {
                for e in snap.graph.edges() {
                    out.insert(e.id.to_string(), to_json(e.as_ref())?);
                }
            }
        }
        json(StatusCode::OK, &out)
    }
}

/// An element as JSON; one that cannot be encoded is an internal failure.
fn to_json<T: Serialize + ?Sized>(v: &T) -> ApiResult<Json> {
    serde_json::to_value(v).map_err(|e| ApiError::internal("encoding an element", e))
}

type Api = State<Arc<ElementApi>>;

async fn list_nodes(State(a): Api) -> ApiResult {
    a.list(Kind::Node)
}
async fn list_edges(State(a): Api) -> ApiResult {
    a.list(Kind::Edge)
}
async fn get_node(State(a): Api, Path(id): Path<String>) -> ApiResult {
    a.get(Kind::Node, &id)
}
async fn get_edge(State(a): Api, Path(id): Path<String>) -> ApiResult {
    a.get(Kind::Edge, &id)
}
async fn create_node(State(a): Api, headers: HeaderMap, body: Bytes) -> ApiResult {
    a.create(Kind::Node, &headers, &body).await
}
async fn create_edge(State(a): Api, headers: HeaderMap, body: Bytes) -> ApiResult {
    a.create(Kind::Edge, &headers, &body).await
}
async fn patch_node(State(a): Api, Path(id): Path<String>, body: Bytes) -> ApiResult {
    a.patch(Kind::Node, id, &body).await
}
async fn patch_edge(State(a): Api, Path(id): Path<String>, body: Bytes) -> ApiResult {
    a.patch(Kind::Edge, id, &body).await
}
async fn delete_node(State(a): Api, Path(id): Path<String>) -> ApiResult {
    a.delete(Kind::Node, id).await
}
async fn delete_edge(State(a): Api, Path(id): Path<String>) -> ApiResult {
    a.delete(Kind::Edge, id).await
}
