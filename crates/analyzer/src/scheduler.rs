//! Capture scheduling (how Skydive starts a capture): each capture's query is evaluated against
//! the live graph when captures change and when nodes appear or change (after a short settling
//! delay); every capturable node of an agent that does not run the capture yet gets an
//! `OnDemandCapture/Start` sent to its agent. Deleting a capture sends `Stop` to every node
//! running it. Nodes that stop matching keep their capture; nodes that appear later get it.
//!
//! Which nodes run a capture is read from their `Captures` metadata, which the agents
//! maintain; the scheduler itself only remembers the requests in flight, so a restarted
//! analyzer or agent needs no state to be rebuilt.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use skydive_api::capture::{Request, StartRequest, StopRequest};
use skydive_graph::{Graph, GraphEvent, Node, Value};
use skydive_hub::HubHandle;
use tokio::sync::broadcast;

use crate::agents::Agents;
use crate::captures::Capture;
use crate::resources::{Change, Resource, Resources};

/// How long changes settle before the queries run.
const SETTLE: Duration = Duration::from_millis(200);
/// Every so often, whatever happened.
const SWEEP: Duration = Duration::from_secs(10);
/// How long an agent has to answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// The scheduler.
pub struct Scheduler {
    ctx: skydive_api::server::Shared,
    hub: HubHandle,
    resources: Arc<Resources>,
    agents: Arc<Agents>,
    in_flight: Arc<Mutex<HashSet<(String, String)>>>,
    /// (capture, node) pairs seen active, for the `NodeUpdated` notifications.
    active: Mutex<HashSet<(String, String)>>,
}

/// The namespace of capture notifications to `/ws/subscriber` clients.
pub const NOTIFICATION: &str = "OnDemandCaptureNotification";

/// The IDs of the captures a node's `Captures` metadata lists.
pub fn node_captures(n: &Node) -> Vec<&str> {
    match n.metadata.get("Captures") {
        Some(Value::Array(list)) => list
            .iter()
            .filter_map(|c| c.as_map()?.get("ID")?.as_str())
            .collect(),
        _ => Vec::new(),
    }
}

/// The nodes of `capture` that should run it and do not yet.
pub fn nodes_to_start(g: &Graph, capture: &Capture) -> Vec<Arc<Node>> {
    let env = skydive_gremlin::Env {
        graph: g,
        history: &skydive_graph::NoHistory,
        flows: None,
        bpf: None,
        now: skydive_graph::now_ms(),
    };
    let nodes = match skydive_gremlin::query(&capture.gremlin_query, &env) {
        Ok(skydive_gremlin::Output::Nodes(ns)) => ns,
        Ok(skydive_gremlin::Output::Paths(ps)) => ps.into_iter().flatten().collect(),
        Ok(_) => Vec::new(),
        Err(e) => {
            tracing::warn!(capture = %capture.uuid, "capture query failed: {e}");
            Vec::new()
        }
    };
    let mut seen = HashSet::new();
    nodes
        .into_iter()
        .filter(|n| seen.insert(n.id.clone()))
        .filter(|n| !n.host.is_empty() && n.origin.starts_with("agent."))
        .filter(|n| skydive_flow::capture::is_capturable(n.type_str()))
        .filter(|n| !node_captures(n).contains(&capture.uuid.as_str()))
        .collect()
}

impl Scheduler {
    pub fn new(
        ctx: skydive_api::server::Shared,
        resources: Arc<Resources>,
        agents: Arc<Agents>,
    ) -> Scheduler {
        Scheduler {
            hub: ctx.hub.clone(),
            ctx,
            resources,
            agents,
            in_flight: Arc::default(),
            active: Mutex::default(),
        }
    }

    /// Tells `/ws/subscriber` clients about a capture (`Added`, `Deleted`, `NodeUpdated`).
    fn notify(&self, kind: &str, capture: &serde_json::Value) {
        for conn in self.ctx.registry.on("/ws/subscriber") {
            if conn.handshake.wants(NOTIFICATION) {
                conn.send_msg(NOTIFICATION, kind, "", 200, capture);
            }
        }
    }

    /// `NodeUpdated` notifications for the captures that just became active on a node.
    async fn notify_activations(&self, events: &[GraphEvent]) {
        let mut newly = Vec::new();
        for e in events {
            let n = match e {
                GraphEvent::NodeUpdated { node, .. } | GraphEvent::NodeAdded(node) => node,
                GraphEvent::NodeDeleted(node) => {
                    // Forget the node: if it comes back running a capture, that is news.
                    self.active
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .retain(|(_, n)| n != node.id.as_str());
                    continue;
                }
                _ => continue,
            };
            let Some(Value::Array(list)) = n.metadata.get("Captures") else {
                continue;
            };
            for c in list {
                let Some(m) = c.as_map() else { continue };
                if m.get("State").and_then(Value::as_str) != Some("active") {
                    continue;
                }
                if let Some(id) = m.get("ID").and_then(Value::as_str) {
                    let key = (id.to_string(), n.id.to_string());
                    if self
                        .active
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(key)
                    {
                        newly.push(id.to_string());
                    }
                }
            }
        }
        for id in newly {
            if let Ok(Some(v)) = self.resources.get(Capture::NAME, &id).await {
                self.notify("NodeUpdated", &v);
            }
        }
    }

    async fn captures(&self) -> BTreeMap<String, Capture> {
        match self.resources.list(Capture::NAME).await {
            Ok(all) => all
                .into_iter()
                .filter_map(|(id, v)| Some((id, serde_json::from_value(v).ok()?)))
                .collect(),
            Err(e) => {
                tracing::warn!("captures cannot be read: {e}");
                BTreeMap::new()
            }
        }
    }

    /// Starts each capture where it should run.
    async fn reconcile(&self) {
        let captures = self.captures().await;
        if captures.is_empty() {
            return;
        }
        let snap = self.hub.snapshot();
        for capture in captures.values() {
            for node in nodes_to_start(&snap.graph, capture) {
                let key = (capture.uuid.clone(), node.id.to_string());
                if !self.lock().insert(key.clone()) {
                    continue;
                }
                let Some(conn) = self.agents.find(&node.host) else {
                    self.lock().remove(&key);
                    continue;
                };
                let req = Request::Start(Box::new(StartRequest {
                    node_id: node.id.to_string(),
                    resource: capture.clone(),
                }));
                let in_flight = self.in_flight.clone();
                let (cid, name) = (capture.uuid.clone(), node.name().to_string());
                tokio::spawn(async move {
                    match req.send(&conn, REQUEST_TIMEOUT).await {
                        Ok(_) => {
                            tracing::info!(capture = %cid, node = %name, agent = %conn.handshake.host_id, "capture started");
                        }
                        Err(e) => {
                            tracing::warn!(capture = %cid, node = %name, "the agent could not start the capture: {e}");
                        }
                    }
                    // Either it runs (the node says so) or it failed and is tried again on
                    // the next change.
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    in_flight
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&key);
                });
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<(String, String)>> {
        self.in_flight.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stops a deleted capture on every node running it.
    fn stop_everywhere(&self, id: &str) {
        let snap = self.hub.snapshot();
        for node in snap.graph.nodes() {
            if !node_captures(node).contains(&id) {
                continue;
            }
            let Some(conn) = self.agents.find(&node.host) else {
                continue;
            };
            let req = Request::Stop(StopRequest {
                node_id: node.id.to_string(),
                capture_id: id.to_string(),
            });
            let (cid, name) = (id.to_string(), node.name().to_string());
            tokio::spawn(async move {
                match req.send(&conn, REQUEST_TIMEOUT).await {
                    Ok(_) => tracing::info!(capture = %cid, node = %name, "capture stopped"),
                    Err(e) => tracing::warn!(capture = %cid, node = %name, "capture stop: {e}"),
                }
            });
        }
    }

    /// Whether graph events can make a capture start somewhere.
    fn relevant(events: &[GraphEvent]) -> bool {
        events.iter().any(|e| {
            matches!(
                e,
                GraphEvent::NodeAdded(_)
                    | GraphEvent::NodeUpdated { .. }
                    | GraphEvent::EdgeAdded(_)
            )
        })
    }

    pub async fn run(self) {
        let mut changes = self.resources.subscribe();
        let mut events = self.hub.subscribe();
        let mut sweep = tokio::time::interval(SWEEP);
        loop {
            let dirty = tokio::select! {
                c = changes.recv() => match c {
                    Ok(c) if c.kind == Capture::NAME => {
                        match &c.change {
                            Change::Deleted(v) => {
                                self.notify("Deleted", v);
                                self.active
                                    .lock()
                                    .unwrap_or_else(|e| e.into_inner())
                                    .retain(|(id, _)| id != &c.id);
                                self.stop_everywhere(&c.id);
                                false
                            }
                            Change::Created(v) | Change::Updated(v) => {
                                self.notify("Added", v);
                                true
                            }
                        }
                    }
                    Ok(_) => false,
                    Err(broadcast::error::RecvError::Lagged(_)) => true,
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                b = events.recv() => match b {
                    Ok(b) => {
                        self.notify_activations(&b.events).await;
                        Self::relevant(&b.events)
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => true,
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = sweep.tick() => true,
            };
            if dirty {
                tokio::time::sleep(SETTLE).await;
                // What came meanwhile is covered by this pass.
                while let Ok(c) = changes.try_recv() {
                    if c.kind != Capture::NAME {
                        continue;
                    }
                    match &c.change {
                        Change::Deleted(v) => {
                            self.notify("Deleted", v);
                            self.stop_everywhere(&c.id);
                        }
                        Change::Created(v) | Change::Updated(v) => self.notify("Added", v),
                    }
                }
                while let Ok(b) = events.try_recv() {
                    self.notify_activations(&b.events).await;
                }
                self.reconcile().await;
            }
        }
    }
}
