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

type Op = Box<dyn FnOnce(&mut Graph) -> Result<Vec<GraphEvent>, GraphError> + Send>;

/// Turns a graph message into a change of the graph. `Ok(None)`: nothing to do.
pub fn graph_op(
    msg: &Incoming,
    conn: &Conn,
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
    let op: Op = match msg.kind.as_str() {
        NODE_ADDED | NODE_UPDATED => {
            let n = decode_node(obj()?, conn, policy).map_err(malformed)?;
            Box::new(move |g: &mut Graph| g.replace_node(n))
        }
        EDGE_ADDED | EDGE_UPDATED => {
            let e = decode_edge(obj()?, conn, policy).map_err(malformed)?;
            Box::new(move |g: &mut Graph| g.replace_edge(e))
        }
        NODE_PARTIALLY_UPDATED => {
            let p: PartialUpdate = msg.obj().map_err(json)?;
            Box::new(move |g: &mut Graph| {
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
                Some(_) => g.delete_node(&id.id, now_ms()),
                None => Ok(Vec::new()),
            })
        }
        EDGE_DELETED => {
            let id: IdOnly = msg.obj().map_err(json)?;
            Box::new(move |g: &mut Graph| match g.edge(&id.id) {
                Some(_) => Ok(vec![g.delete_edge(&id.id, now_ms())?]),
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
            Box::new(move |g: &mut Graph| Ok(g.sync_origin(&origin, nodes, edges, now_ms())))
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
            let kind = msg.kind.clone();
            let logged = move |g: &mut Graph| {
                op(g).or_else(|e| {
                    tracing::debug!(%host, "{kind} not applied: {e}");
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
