//! Subscribers (`/ws/subscriber`, `/ws/pubsub`): the initial synchronisation, then every
//! graph event, optionally through a Gremlin filter (Skydive's WebSocket endpoints).
//!
//! A large graph is not sent as one giant `SyncReply` (which broke Skydive's UI on big
//! topologies): the reply holds at most `http.ws.sync_chunk_size` elements and the rest
//! follows as `NodeAdded` and `EdgeAdded` messages, which every subscriber already applies.

use std::collections::HashMap;
use std::sync::Arc;

use serde::Deserialize;
use skydive_graph::{Edge, GraphJson, GraphView, Id, Node, diff_metadata};
use skydive_gremlin::{Env, Output};
use tokio::sync::{Mutex, broadcast};

use super::Context;
use super::conn::Conn;
use skydive_hub::EventBatch;

use crate::message::{self, EncodedBatch as _, Frame, Incoming, graph_types::*};

/// The body of a `SyncRequest`.
#[derive(Deserialize, Default)]
struct SyncRequest {
    #[serde(rename = "Time", default)]
    time: i64,
    /// Absent or null: keep the current filter; "": no filter; otherwise a new filter.
    #[serde(rename = "GremlinFilter", default)]
    gremlin_filter: Option<String>,
}

#[derive(Default)]
struct Visible {
    nodes: HashMap<Id, Arc<Node>>,
    edges: HashMap<Id, Arc<Edge>>,
}

#[derive(Default)]
struct State {
    filter: Option<String>,
    /// Batches up to this one are reflected in what the client was sent.
    synced_seq: u64,
    /// With a filter: what the client currently sees.
    visible: Option<Visible>,
}

/// One subscriber's state.
pub struct Subscription {
    conn: Arc<Conn>,
    state: Mutex<State>,
}

/// Why a subscriber's `X-Gremlin-Filter` selects nothing it can follow.
#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    #[error(transparent)]
    Gremlin(#[from] skydive_gremlin::Error),
    /// The graph of the time asked for could not be read.
    #[error(transparent)]
    History(#[from] skydive_graph::HistoryError),
    #[error("the filter must return a graph, not {0}")]
    NotAGraph(&'static str),
}

impl Subscription {
    /// Sets up a subscription; an invalid `X-Gremlin-Filter` is an error.
    pub async fn new(ctx: &Context, conn: Arc<Conn>) -> Result<Arc<Subscription>, FilterError> {
        let sub = Arc::new(Subscription {
            conn,
            state: Mutex::new(State::default()),
        });
        if let Some(f) = sub.conn.handshake.gremlin_filter.clone() {
            let mut st = sub.state.lock().await;
            let snap = ctx.hub.snapshot();
            let (nodes, edges) = filtered(ctx, &snap.graph, &f)?;
            st.visible = Some(Visible {
                nodes: nodes.into_iter().map(|n| (n.id.clone(), n)).collect(),
                edges: edges.into_iter().map(|e| (e.id.clone(), e)).collect(),
            });
            st.filter = Some(f);
            st.synced_seq = snap.seq;
        }
        Ok(sub)
    }

    /// Forwards hub events to the client until the connection closes. A subscriber that fell
    /// behind the hub is disconnected (it reconnects and synchronises again).
    pub async fn forward(
        self: Arc<Self>,
        ctx: Arc<Context>,
        mut events: broadcast::Receiver<Arc<EventBatch>>,
    ) {
        loop {
            let batch = tokio::select! {
                b = events.recv() => b,
                _ = self.conn.closed() => return,
            };
            match batch {
                Ok(mut batch) => {
                    // A filter is evaluated on the latest graph: the batches that came while
                    // the previous evaluation ran are covered by one evaluation.
                    if self.state.lock().await.filter.is_some() {
                        loop {
                            match events.try_recv() {
                                Ok(b) => batch = b,
                                Err(broadcast::error::TryRecvError::Lagged(_)) => continue,
                                Err(_) => break,
                            }
                        }
                    }
                    self.on_batch(&ctx, &batch).await;
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(host = %self.conn.handshake.host_id, "subscriber missed {n} event batches, disconnecting it");
                    self.conn.close();
                    return;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }

    async fn on_batch(self: &Arc<Self>, ctx: &Arc<Context>, batch: &EventBatch) {
        if !self.conn.handshake.wants(NAMESPACE) {
            return;
        }
        let mut st = self.state.lock().await;
        if batch.seq <= st.synced_seq {
            return;
        }
        if let Some(filter) = st.filter.clone() {
            // Evaluated and diffed off the async workers, a few subscribers at a time, so
            // that expensive filters cannot stall the server's other requests.
            let _slot = filter_slots().acquire().await;
            let snap = ctx.hub.snapshot();
            let seq = snap.seq;
            let old = st.visible.take().unwrap_or_default();
            let (me, ctx) = (self.clone(), ctx.clone());
            let done = tokio::task::spawn_blocking(move || {
                match filtered(&ctx, &snap.graph, &filter) {
                    Ok((nodes, edges)) => {
                        let new = Visible {
                            nodes: nodes.into_iter().map(|n| (n.id.clone(), n)).collect(),
                            edges: edges.into_iter().map(|e| (e.id.clone(), e)).collect(),
                        };
                        me.send_diff(&old, &new);
                        new
                    }
                    Err(e) => {
                        tracing::warn!(host = %me.conn.handshake.host_id, "subscriber filter failed: {e}");
                        old
                    }
                }
            })
            .await;
            match done {
                Ok(visible) => st.visible = Some(visible),
                Err(e) => tracing::error!("a subscriber filter's evaluation failed: {e}"),
            }
            st.synced_seq = seq;
            return;
        }
        let frames = batch.frames(
            self.conn.handshake.protocol,
            self.conn.handshake.partial_updates,
        );
        for ((src, _), frame) in batch.events_with_source().zip(frames) {
            if src == Some(self.conn.id) {
                continue;
            }
            if !self.conn.send(frame.clone()) {
                return;
            }
        }
        st.synced_seq = batch.seq;
    }

    /// Sends what turns `old` into `new`: additions (nodes first), updates, deletions (edges
    /// first).
    fn send_diff(&self, old: &Visible, new: &Visible) {
        let proto = self.conn.handshake.protocol;
        let send = |kind: &str, obj: &dyn erased::Obj| {
            let uuid = message::new_uuid();
            self.conn.send(message::encode_raw(
                proto,
                NAMESPACE,
                kind,
                &uuid,
                200,
                &obj.raw(),
            ));
        };
        for (id, n) in &new.nodes {
            match old.nodes.get(id) {
                None => send(NODE_ADDED, n.as_ref()),
                Some(o) if o.revision != n.revision || o.metadata != n.metadata => {
                    if self.conn.handshake.partial_updates {
                        let ops = diff_metadata(&o.metadata, &n.metadata);
                        send(
                            NODE_PARTIALLY_UPDATED,
                            &skydive_graph::PartialUpdate {
                                id: id.to_string(),
                                updated_at: n.updated_at,
                                revision: n.revision,
                                ops,
                            },
                        );
                    } else {
                        send(NODE_UPDATED, n.as_ref());
                    }
                }
                Some(_) => {}
            }
        }
        for (id, e) in &new.edges {
            match old.edges.get(id) {
                None => send(EDGE_ADDED, e.as_ref()),
                Some(o) if o.revision != e.revision || o.metadata != e.metadata => {
                    send(EDGE_UPDATED, e.as_ref());
                }
                Some(_) => {}
            }
        }
        for (id, e) in &old.edges {
            if !new.edges.contains_key(id) {
                send(EDGE_DELETED, e.as_ref());
            }
        }
        for (id, n) in &old.nodes {
            if !new.nodes.contains_key(id) {
                send(NODE_DELETED, n.as_ref());
            }
        }
    }

    /// Answers a `SyncRequest`.
    pub async fn sync(&self, ctx: &Context, msg: &Incoming) {
        let req: SyncRequest = match msg.obj() {
            Ok(Some(r)) => r,
            Ok(None) => SyncRequest::default(),
            Err(e) => {
                self.reply_error(msg, &format!("invalid SyncRequest: {e}"))
                    .await;
                return;
            }
        };
        let mut st = self.state.lock().await;
        let filter = match &req.gremlin_filter {
            None => st.filter.clone(),
            Some(f) if f.is_empty() => None,
            Some(f) => Some(f.clone()),
        };
        if req.time != 0 {
            // The graph at a past time: a one-off answer, the live subscription is unchanged.
            let result = ctx
                .history
                .at(req.time)
                .map_err(FilterError::from)
                .and_then(|g| match &filter {
                    Some(f) => filtered(ctx, &g, f),
                    None => Ok((g.nodes().to_vec(), g.edges().to_vec())),
                });
            match result {
                Ok((nodes, edges)) => self.send_sync(ctx, &msg.uuid, nodes, edges).await,
                Err(e) => self.reply_error(msg, &e.to_string()).await,
            }
            return;
        }
        let snap = ctx.hub.snapshot();
        let (nodes, edges) = match &filter {
            Some(f) => match filtered(ctx, &snap.graph, f) {
                Ok(r) => r,
                Err(e) => {
                    self.reply_error(msg, &e.to_string()).await;
                    return;
                }
            },
            None => {
                let j = GraphJson::from_view(&snap.graph);
                (j.nodes, j.edges)
            }
        };
        st.visible = filter.as_ref().map(|_| Visible {
            nodes: nodes.iter().map(|n| (n.id.clone(), n.clone())).collect(),
            edges: edges.iter().map(|e| (e.id.clone(), e.clone())).collect(),
        });
        st.filter = filter;
        st.synced_seq = snap.seq;
        self.send_sync(ctx, &msg.uuid, nodes, edges).await;
    }

    async fn reply_error(&self, msg: &Incoming, error: &str) {
        let frame = message::encode(
            self.conn.handshake.protocol,
            NAMESPACE,
            SYNC_REPLY,
            &msg.uuid,
            400,
            error,
        );
        self.conn.send_wait(frame).await;
    }

    async fn send_sync(
        &self,
        ctx: &Context,
        uuid: &str,
        nodes: Vec<Arc<Node>>,
        edges: Vec<Arc<Edge>>,
    ) {
        let proto = self.conn.handshake.protocol;
        for frame in sync_frames(proto, uuid, nodes, edges, ctx.ws.sync_chunk_size as usize) {
            if !self.conn.send_wait(frame).await {
                return;
            }
        }
    }
}

/// The messages of a synchronisation: one `SyncReply` with at most `chunk` elements (all of
/// them when `chunk` is 0), then `NodeAdded` for the other nodes and `EdgeAdded` for the
/// other edges. Nodes and edges are expected sorted by creation time.
pub fn sync_frames(
    proto: message::Protocol,
    uuid: &str,
    nodes: Vec<Arc<Node>>,
    edges: Vec<Arc<Edge>>,
    chunk: usize,
) -> Vec<Frame> {
    let total = nodes.len() + edges.len();
    if chunk == 0 || total <= chunk {
        return vec![message::encode(
            proto,
            NAMESPACE,
            SYNC_REPLY,
            uuid,
            200,
            &GraphJson { nodes, edges },
        )];
    }
    let mut first_nodes = nodes;
    let rest_nodes = first_nodes.split_off(chunk.min(first_nodes.len()));
    let sent: std::collections::HashSet<&str> = first_nodes.iter().map(|n| n.id.as_str()).collect();
    let budget = chunk - first_nodes.len();
    let (mut first_edges, mut rest_edges) = (Vec::new(), Vec::new());
    for e in edges {
        if first_edges.len() < budget
            && sent.contains(e.parent.as_str())
            && sent.contains(e.child.as_str())
        {
            first_edges.push(e);
        } else {
            rest_edges.push(e);
        }
    }
    drop(sent);
    let mut frames = vec![message::encode(
        proto,
        NAMESPACE,
        SYNC_REPLY,
        uuid,
        200,
        &GraphJson {
            nodes: first_nodes,
            edges: first_edges,
        },
    )];
    for n in rest_nodes {
        frames.push(message::encode(
            proto,
            NAMESPACE,
            NODE_ADDED,
            &message::new_uuid(),
            200,
            n.as_ref(),
        ));
    }
    for e in rest_edges {
        frames.push(message::encode(
            proto,
            NAMESPACE,
            EDGE_ADDED,
            &message::new_uuid(),
            200,
            e.as_ref(),
        ));
    }
    frames
}

/// Subscriber filters evaluated at once, server-wide: one core fewer than the machine has, so
/// that one is left for everything else.
fn filter_slots() -> &'static tokio::sync::Semaphore {
    static SLOTS: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();
    SLOTS.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        tokio::sync::Semaphore::new(cores.saturating_sub(1).max(1))
    })
}

/// Nodes and edges.
type Elements = (Vec<Arc<Node>>, Vec<Arc<Edge>>);

/// The elements a subscriber filter selects: the filter must evaluate to a graph.
fn filtered(ctx: &Context, g: &dyn GraphView, filter: &str) -> Result<Elements, FilterError> {
    let env = Env {
        graph: g,
        history: ctx.history.as_ref(),
        flows: None,
        bpf: None,
        now: skydive_graph::now_ms(),
    };
    // The same budgets as the API's queries.
    match skydive_gremlin::query_limited(filter, &env, &ctx.gremlin.start(None))? {
        Output::Graph(g) => {
            let j = GraphJson::from_view(g.view());
            Ok((j.nodes, j.edges))
        }
        // Nodes stand for the subgraph they make: them and the edges between them (Skydive
        // wanted `.SubGraph()` written out).
        Output::Nodes(nodes) => {
            let ids: std::collections::HashSet<&str> =
                nodes.iter().map(|n| n.id.as_str()).collect();
            let mut edges = Vec::new();
            for n in &nodes {
                g.each_out_edge(&n.id, &mut |e| {
                    if ids.contains(e.child.as_str()) {
                        edges.push(e.clone());
                    }
                });
            }
            drop(ids);
            let j = GraphJson::from_view(&skydive_graph::RevisionGraph::new(nodes, edges));
            Ok((j.nodes, j.edges))
        }
        other => Err(FilterError::NotAGraph(other.type_name())),
    }
}

/// Serialisation of the different objects `send_diff` sends.
mod erased {
    use serde_json::value::RawValue;

    pub trait Obj {
        fn raw(&self) -> Box<RawValue>;
    }

    impl<T: serde::Serialize> Obj for T {
        fn raw(&self) -> Box<RawValue> {
            serde_json::value::to_raw_value(self).unwrap_or_else(|_| {
                RawValue::from_string("null".to_string()).expect("null is JSON")
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use skydive_graph::metadata;

    #[test]
    fn big_syncs_are_chunked_with_nodes_before_edges() {
        let nodes: Vec<Arc<Node>> = (0..10)
            .map(|i| {
                Arc::new(Node::new(
                    format!("n{i}"),
                    metadata! {"Name" => "x", "Type" => "t"},
                    "h",
                    "o",
                    i,
                ))
            })
            .collect();
        let edges: Vec<Arc<Edge>> = (0..9)
            .map(|i| {
                Arc::new(Edge::new(
                    format!("e{i}"),
                    format!("n{i}"),
                    format!("n{}", i + 1),
                    metadata! {"RelationType" => "layer2"},
                    "h",
                    "o",
                    100,
                ))
            })
            .collect();
        let frames = sync_frames(
            message::Protocol::Json,
            "u",
            nodes.clone(),
            edges.clone(),
            0,
        );
        assert_eq!(frames.len(), 1);
        let frames = sync_frames(
            message::Protocol::Json,
            "u",
            nodes.clone(),
            edges.clone(),
            12,
        );
        let Frame::Text(t) = &frames[0] else {
            unreachable!()
        };
        let reply: serde_json::Value = serde_json::from_str(t).unwrap();
        assert_eq!(reply["Obj"]["Nodes"].as_array().unwrap().len(), 10);
        assert_eq!(
            reply["Obj"]["Edges"].as_array().unwrap().len(),
            2,
            "edges among sent nodes fill the rest"
        );
        let frames = sync_frames(message::Protocol::Json, "u", nodes, edges, 6);
        let kinds: Vec<String> = frames
            .iter()
            .map(|f| match f {
                Frame::Text(t) => message::decode_text(t).unwrap().kind,
                Frame::Binary(_) => panic!("json expected"),
            })
            .collect();
        // The first 6 nodes fill the reply, then the 4 other nodes, then the 9 edges.
        assert_eq!(kinds[0], "SyncReply");
        assert_eq!(kinds.iter().filter(|k| *k == "NodeAdded").count(), 4);
        assert_eq!(kinds.iter().filter(|k| *k == "EdgeAdded").count(), 9);
        let first_edge = kinds.iter().position(|k| k == "EdgeAdded").unwrap();
        let last_node = kinds.iter().rposition(|k| k == "NodeAdded").unwrap();
        assert!(last_node < first_edge);
        let Frame::Text(t) = &frames[0] else {
            unreachable!()
        };
        let reply: serde_json::Value = serde_json::from_str(t).unwrap();
        assert_eq!(reply["Obj"]["Nodes"].as_array().unwrap().len(), 6);
        assert_eq!(reply["Obj"]["Edges"].as_array().unwrap().len(), 0);
    }
}
