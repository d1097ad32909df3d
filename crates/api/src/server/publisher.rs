//! Applying graph messages from publishers (`/ws/publisher`, `/ws/pubsub`, agents on
//! `/ws/agent/topology`) to the hub (Skydive's WebSocket endpoints).

use std::sync::Arc;

use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;
use skydive_graph::{Edge, Graph, GraphError, GraphEvent, Node, PartialUpdate, now_ms};

use super::Context;
use super::conn::Conn;
use crate::message::{Incoming, graph_types::*};
use crate::schema;

/// How a publisher's elements are treated.
#[derive(Clone, Copy, Debug)]
pub struct PublishPolicy {
    /// Check elements against the node and edge schemas; drop invalid ones.
    pub validate: bool,
    /// Replace the elements' `Origin` with the publisher's (`<clientType>.<hostID>`).
    pub override_origin: bool,
    /// Change and delete only elements of the publisher's own origin (a role with the
    /// `topology` `publish-any` permission may change any).
    pub own_elements_only: bool,
}

#[derive(Deserialize)]
struct SyncObj {
    #[serde(rename = "Nodes", default)]
    nodes: Option<Vec<Box<RawValue>>>,
    #[serde(rename = "Edges", default)]
    edges: Option<Vec<Box<RawValue>>>,
}

#[derive(Deserialize)]
struct IdOnly {
    #[serde(rename = "ID")]
    id: String,
}

fn stamp(elem: &mut skydive_graph::Element, conn: &Conn, policy: PublishPolicy) {
    if policy.override_origin || elem.origin.is_empty() {
        elem.origin = conn.handshake.origin().into();
    }
    if elem.host.is_empty() {
        elem.host = conn.handshake.host_id.as_str().into();
    }
}

/// Why an element of a graph message is refused.
#[derive(Debug, thiserror::Error)]
pub enum ElementError {
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    #[error(transparent)]
    Schema(#[from] schema::SchemaError),
    #[error(transparent)]
    Decode(#[from] skydive_graph::DecodeError),
}

/// Why a graph message is refused.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("malformed {0}: no Obj")]
    NoObj(String),
    #[error("malformed {kind}: {source}")]
    Malformed {
        kind: String,
        #[source]
        source: ElementError,
    },
}

/// Decodes an element straight from its JSON text; the schema check (publishers only) needs
/// the generic tree, agents' elements skip it.
fn decode_node(raw: &str, conn: &Conn, policy: PublishPolicy) -> Result<Node, ElementError> {
    if policy.validate {
        let v: Value = serde_json::from_str(raw)?;
        schema::validate_node(&v)?;
    }
    let mut n = Node::from_slice(raw.as_bytes(), now_ms())?;
    stamp(&mut n, conn, policy);
    Ok(n)
}

fn decode_edge(raw: &str, conn: &Conn, policy: PublishPolicy) -> Result<Edge, ElementError> {
    if policy.validate {
        let v: Value = serde_json::from_str(raw)?;
        schema::validate_edge(&v)?;
    }
    let mut e = Edge::from_slice(raw.as_bytes(), now_ms())?;
    stamp(&mut e, conn, policy);
    Ok(e)
}

/// Why a graph message was not applied.
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    #[error(transparent)]
    Graph(#[from] GraphError),
    /// The element belongs to another origin than the publisher's.
    #[error(
        "{kind} {id} belongs to {owner}: a publisher changes only the elements of its own origin ({mine})"
    )]
    NotOwner {
        kind: &'static str,
        id: String,
        owner: String,
        mine: String,
    },
}

type Op = Box<dyn FnOnce(&mut Graph) -> Result<Vec<GraphEvent>, OpError> + Send>;

/// Who may change what: `None`, anyone anything; `Some(origin)`, only that origin's elements.
#[derive(Clone)]
struct Owner(Option<String>);

impl Owner {
    fn check(&self, g: &Graph, node: bool, id: &str) -> Result<(), OpError> {
        let Some(mine) = &self.0 else { return Ok(()) };
        let owner = if node {
            g.node(id).map(|n| n.origin.clone())
        } else {
            g.edge(id).map(|e| e.origin.clone())
        };
        match owner {
            Some(o) if o.as_str() != mine.as_str() => Err(OpError::NotOwner {
                kind: if node { "node" } else { "edge" },
                id: id.to_string(),
                owner: o.to_string(),
                mine: mine.clone(),
            }),
            _ => Ok(()),
        }
    }
}

/// Turns a graph message into a change of the graph. `Ok(None)`: nothing to do.
pub fn graph_op(
    msg: &Incoming,
    conn: &Arc<Conn>,
    policy: PublishPolicy,
) -> Result<Option<Op>, PublishError> {
    let obj = || -> Result<&str, PublishError> {
        match msg.obj.as_deref() {
            Some(raw) => Ok(raw.get()),
            None => Err(PublishError::NoObj(msg.kind.clone())),
        }
    };
    let malformed = |e: ElementError| PublishError::Malformed {
        kind: msg.kind.clone(),
        source: e,
    };
    let json = |e: serde_json::Error| malformed(ElementError::Json(e));
    let owner = Owner(policy.own_elements_only.then(|| conn.handshake.origin()));
    let op: Op = match msg.kind.as_str() {
        NODE_ADDED | NODE_UPDATED => {
            let n = decode_node(obj()?, conn, policy).map_err(malformed)?;
            Box::new(move |g: &mut Graph| {
                owner.check(g, true, &n.id)?;
                Ok(g.replace_node(n)?)
            })
        }
        EDGE_ADDED | EDGE_UPDATED => {
            let e = decode_edge(obj()?, conn, policy).map_err(malformed)?;
            Box::new(move |g: &mut Graph| {
                owner.check(g, false, &e.id)?;
                Ok(g.replace_edge(e)?)
            })
        }
        NODE_PARTIALLY_UPDATED => {
            let p: PartialUpdate = msg.obj().map_err(json)?;
            Box::new(move |g: &mut Graph| {
                owner.check(g, true, &p.id)?;
                Ok(
                    g.apply_node_partial(&p.id, &p.ops, p.revision, p.updated_at)?
                        .into_iter()
                        .collect(),
                )
            })
        }
        EDGE_PARTIALLY_UPDATED => {
            let p: PartialUpdate = msg.obj().map_err(json)?;
            Box::new(move |g: &mut Graph| {
                owner.check(g, false, &p.id)?;
                Ok(
                    g.apply_edge_partial(&p.id, &p.ops, p.revision, p.updated_at)?
                        .into_iter()
                        .collect(),
                )
            })
        }
        NODE_DELETED => {
            let id: IdOnly = msg.obj().map_err(json)?;
            Box::new(move |g: &mut Graph| match g.node(&id.id) {
                Some(_) => {
                    owner.check(g, true, &id.id)?;
                    Ok(g.delete_node(&id.id, now_ms())?)
                }
                None => Ok(Vec::new()),
            })
        }
        EDGE_DELETED => {
            let id: IdOnly = msg.obj().map_err(json)?;
            Box::new(move |g: &mut Graph| match g.edge(&id.id) {
                Some(_) => {
                    owner.check(g, false, &id.id)?;
                    Ok(vec![g.delete_edge(&id.id, now_ms())?])
                }
                None => Ok(Vec::new()),
            })
        }
        SYNC | SYNC_REPLY => {
            let s: SyncObj = msg.obj().map_err(json)?;
            let mut nodes = Vec::new();
            for v in s.nodes.unwrap_or_default() {
                match decode_node(v.get(), conn, policy) {
                    Ok(n) => nodes.push(n),
                    Err(e) => {
                        tracing::warn!(host = %conn.handshake.host_id, "dropping an invalid node: {e}");
                    }
                }
            }
            let mut edges = Vec::new();
            for v in s.edges.unwrap_or_default() {
                match decode_edge(v.get(), conn, policy) {
                    Ok(e) => edges.push(e),
                    Err(e) => {
                        tracing::warn!(host = %conn.handshake.host_id, "dropping an invalid edge: {e}");
                    }
                }
            }
            let origin = conn.handshake.origin();
            let replies = conn.clone();
            let (namespace, kind, uuid) =
                (msg.namespace.clone(), msg.kind.clone(), msg.uuid.clone());
            Box::new(move |g: &mut Graph| {
                // Elements of other origins are left out, and the first of them named.
                let mut refused = None;
                let mut keep = |g: &Graph, node: bool, id: &str| match owner.check(g, node, id) {
                    Ok(()) => true,
                    Err(e) => {
                        refused.get_or_insert(e);
                        false
                    }
                };
                nodes.retain(|n| keep(g, true, &n.id));
                edges.retain(|e| keep(g, false, &e.id));
                let events = g.sync_origin(&origin, nodes, edges, now_ms());
                // The rest is applied; the publisher is told what was left out.
                if let Some(e) = refused {
                    tracing::info!(host = %replies.handshake.host_id, "{kind} partly refused: {e}");
                    replies.send_msg(&namespace, &kind, &uuid, 403, &e.to_string());
                }
                Ok(events)
            })
        }
        _ => return Ok(None),
    };
    Ok(Some(op))
}

/// Applies a graph message from `conn`; invalid ones are logged and dropped.
pub async fn publish(ctx: &Context, conn: &Arc<Conn>, msg: &Incoming, policy: PublishPolicy) {
    match graph_op(msg, conn, policy) {
        Ok(Some(op)) => {
            let host = conn.handshake.host_id.clone();
            let (namespace, kind, uuid) =
                (msg.namespace.clone(), msg.kind.clone(), msg.uuid.clone());
            let replies = conn.clone();
            let logged = move |g: &mut Graph| {
                op(g).or_else(|e| {
                    match &e {
                        // Said to the publisher: it tried to change what is not its own.
                        OpError::NotOwner { .. } => {
                            tracing::info!(%host, "{kind} refused: {e}");
                            replies.send_msg(&namespace, &kind, &uuid, 403, &e.to_string());
                        }
                        OpError::Graph(_) => tracing::debug!(%host, "{kind} not applied: {e}"),
                    }
                    Ok(Vec::new())
                })
            };
            let _ = ctx.hub.submit(Some(conn.id), logged).await;
        }
        Ok(None) => {
            let e = format!(
                "unknown message type {:?} in namespace {:?}",
                msg.kind, msg.namespace
            );
            tracing::debug!(host = %conn.handshake.host_id, "{e}");
            conn.send_msg(&msg.namespace, &msg.kind, &msg.uuid, 400, &e);
        }
        Err(e) => {
            tracing::warn!(host = %conn.handshake.host_id, "dropping a {} message: {e}", msg.kind);
            conn.send_msg(&msg.namespace, &msg.kind, &msg.uuid, 400, &e.to_string());
        }
    }
}
