//! `GET /api/status` of the analyzer (Skydive's /api/status).

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use serde_json::json;
use skydive_api::error::{ApiResult, json};
use skydive_api::server::Shared;

use crate::agents::Agents;

/// What the status is made of.
#[derive(Clone)]
pub struct AnalyzerStatus {
    pub ctx: Shared,
    pub agents: Arc<Agents>,
    pub stores: Arc<crate::storage::Stores>,
    pub alerts: Arc<crate::alerts::AlertCounters>,
}

impl AnalyzerStatus {
    /// The status document.
    pub fn document(&self) -> serde_json::Value {
        let reg = &self.ctx.registry;
        let mut publishers = reg.statuses("/ws/publisher", "analyzer");
        publishers.extend(reg.statuses("/ws/pubsub", "analyzer"));
        let snap = self.ctx.hub.snapshot();
        json!({
            "Agents": self.agents.statuses(),
            "Peers": {"Incomers": {}, "Outgoers": {}},
            "Publishers": publishers,
            "Subscribers": reg.statuses("/ws/subscriber", "analyzer"),
            "Alerts": self.alerts.document(),
            "Captures": {"IsMaster": true},
            "Probes": {},
            "Graph": {"Nodes": snap.graph.node_count(), "Edges": snap.graph.edge_count()},
            "Storage": self.stores.status_document(),
            "Flows": self.agents.ingest.counters.document(),
        })
    }
}

async fn status(State(s): State<AnalyzerStatus>) -> ApiResult {
    json(StatusCode::OK, &s.document())
}

/// The route of `/api/status`.
pub fn routes(s: AnalyzerStatus) -> Router {
    Router::new()
        .route("/api/status", get(status))
        .with_state(s)
}
