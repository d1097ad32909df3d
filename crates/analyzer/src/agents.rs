//! `/ws/agent/topology`: the agents publishing their graphs (Skydive's WebSocket endpoints; how
//! Skydive's agents publish their graph; `docs/agent-protocol.md`).
//!
//! Each agent owns the subgraph of its origin (`agent.<host_id>`). A `Sync` replaces that
//! subgraph by difference, so a reconnecting agent causes no churn. When an agent that asked
//! for `DeleteOnDisconnect` goes away, its subgraph stays for the grace period
//! (`analyzer.topology.agent_grace_period`) and is removed only if the agent has not come
//! back by then.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use skydive_api::ApiResult;
use skydive_api::capture;
use skydive_api::message::{Incoming, graph_types};
use skydive_api::server::conn::{Conn, ConnStatus, MessageHandler};
use skydive_api::server::{AGENT_PUBLISHER, PublisherHandler, Shared, WsRequest, ws_endpoint};
use std::collections::BTreeMap;

/// The endpoint agents connect to.
pub const ENDPOINT: &str = "/ws/agent/topology";

/// The agents of an analyzer.
pub struct Agents {
    ctx: Shared,
    grace: Duration,
    pub ingest: Arc<crate::flows::FlowIngest>,
    /// Origins whose removal is scheduled.
    pending: Mutex<HashMap<String, tokio::task::AbortHandle>>,
}

impl std::fmt::Debug for Agents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agents")
            .field("grace", &self.grace)
            .finish()
    }
}

impl Agents {
    pub fn new(ctx: Shared, grace: Duration, ingest: Arc<crate::flows::FlowIngest>) -> Arc<Agents> {
        Arc::new(Agents {
            ctx,
            grace,
            ingest,
            pending: Mutex::new(HashMap::new()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, tokio::task::AbortHandle>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The connected agents, as `/api/status` shows them.
    pub fn statuses(&self) -> BTreeMap<String, ConnStatus> {
        self.ctx.registry.statuses(ENDPOINT, "agent")
    }

    /// The connection of the agent of `host_id`.
    pub fn find(&self, host_id: &str) -> Option<Arc<Conn>> {
        self.ctx.registry.find(ENDPOINT, host_id)
    }

    fn connected(&self, conn: &Conn) {
        if let Some(h) = self.lock().remove(&conn.handshake.origin()) {
            h.abort();
            tracing::info!(agent = %conn.handshake.host_id, "agent is back within its grace period");
        } else {
            tracing::info!(agent = %conn.handshake.host_id, addr = %conn.remote, "agent connected");
        }
    }

    fn disconnected(self: &Arc<Self>, conn: &Arc<Conn>) {
        let origin = conn.handshake.origin();
        let host = conn.handshake.host_id.clone();
        if !conn.handshake.delete_on_disconnect {
            tracing::info!(agent = %host, "agent disconnected; its graph is persistent");
            return;
        }
        tracing::info!(agent = %host, grace = ?self.grace, "agent disconnected; its graph goes if it is not back in time");
        let me = self.clone();
        let key = origin.clone();
        let task = tokio::spawn(async move {
            tokio::time::sleep(me.grace).await;
            me.lock().remove(&origin);
            if me.ctx.registry.is_connected(ENDPOINT, &host) {
                return;
            }
            let o = origin.clone();
            let removed = me
                .ctx
                .hub
                .apply(None, move |g| {
                    Ok(g.delete_origin(&o, skydive_graph::now_ms()))
                })
                .await
                .map(|evs| evs.len())
                .unwrap_or(0);
            tracing::info!(agent = %host, events = removed, "agent gone for its grace period: its graph is removed");
        });
        if let Some(old) = self.lock().insert(key, task.abort_handle()) {
            old.abort();
        }
    }
}

struct AgentHandler {
    agents: Arc<Agents>,
    publisher: PublisherHandler,
}

impl MessageHandler for AgentHandler {
    async fn on_message(&self, conn: &Arc<Conn>, msg: Incoming) {
        if msg.namespace == graph_types::NAMESPACE {
            self.publisher.on_graph_message(conn, msg).await;
        } else if msg.namespace == capture::FLOW_NAMESPACE && msg.kind == capture::FLOW_UPDATES {
            match crate::flows::decode_flows(msg.obj_text()) {
                Ok(flows) => self.agents.ingest.push(flows),
                Err(e) => {
                    tracing::warn!(agent = %conn.handshake.host_id, "dropping flows: {e}");
                    conn.send_msg(&msg.namespace, &msg.kind, &msg.uuid, 400, &e.to_string());
                }
            }
        } else {
            tracing::debug!(agent = %conn.handshake.host_id, namespace = %msg.namespace, kind = %msg.kind, "unexpected message from an agent");
        }
    }

    async fn on_close(&self, conn: &Arc<Conn>) {
        self.agents.disconnected(conn);
    }
}

/// The handler of `GET /ws/agent/topology`.
pub async fn ws_agent(State(agents): State<Arc<Agents>>, req: WsRequest) -> ApiResult {
    let ctx = agents.ctx.clone();
    ws_endpoint(ctx.clone(), ENDPOINT, req, false, move |conn, _| {
        agents.connected(&conn);
        AgentHandler {
            agents,
            publisher: PublisherHandler::new(ctx, AGENT_PUBLISHER),
        }
    })
    .await
}
