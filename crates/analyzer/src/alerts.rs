//! Alerts (Skydive's alerts): a Gremlin expression watched on graph events (`graph`) or on a
//! ticker (`duration:<d>`); when its result becomes non-empty and differs from the last one
//! that fired, the alert fires: `{UUID, Timestamp, ReasonData}` is pushed to WebSocket
//! subscribers (`Alert` namespace), POSTed to an `http(s)://` action, or written to the stdin
//! of a `file://` program.
//!
//! Actions run on their own tasks, at most `MAX_RUNNING` at a time and `MAX_QUEUED` waiting;
//! each has a timeout; a failing webhook is tried `WEBHOOK_ATTEMPTS` times a second apart and
//! then abandoned. Nothing an action does delays the graph, the API or the other alerts;
//! what was dropped or failed is counted in `/api/status`.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value as Json, json};
use skydive_api::server::Shared;
use skydive_hub::HubHandle;
use tokio::sync::{Semaphore, broadcast};
use tokio::task::JoinHandle;

use crate::resources::{Change, Invalid, Resource, Resources};

/// Actions running at once.
const MAX_RUNNING: usize = 16;
/// Actions waiting for a slot before new ones are dropped.
const MAX_QUEUED: usize = 1000;
/// How long one action may take.
const ACTION_TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts of a webhook before it is abandoned.
const WEBHOOK_ATTEMPTS: u32 = 3;

/// An alert.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Alert {
    #[serde(rename = "UUID")]
    pub uuid: String,
    #[serde(rename = "Name", skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(rename = "Description", skip_serializing_if = "String::is_empty")]
    pub description: String,
    #[serde(rename = "Expression")]
    pub expression: String,
    #[serde(rename = "Action", skip_serializing_if = "String::is_empty")]
    pub action: String,
    #[serde(rename = "Trigger", skip_serializing_if = "String::is_empty")]
    pub trigger: String,
    #[serde(rename = "CreateTime", skip_serializing_if = "String::is_empty")]
    pub create_time: String,
}

/// When an alert is evaluated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    Graph,
    Every(Duration),
}

impl Alert {
    pub fn trigger(&self) -> Result<Trigger, Invalid> {
        match self.trigger.strip_prefix("duration:") {
            None => Ok(Trigger::Graph),
            Some(d) => {
                let d = skydive_graph::parse_go_period(d)
                    .ok()
                    .filter(|d| !d.is_zero())
                    .ok_or_else(|| {
                        format!(
                            "invalid Trigger {:?}: expected duration:<Go duration>, e.g. duration:10s",
                            self.trigger
                        )
                    })?;
                Ok(Trigger::Every(d))
            }
        }
    }
}

impl Resource for Alert {
    const NAME: &'static str = "alert";
    const TITLE: &'static str = "Alert";
    const UPDATABLE: bool = true;

    fn id(&self) -> &str {
        &self.uuid
    }
    fn set_id(&mut self, id: String) {
        self.uuid = id;
    }
    fn normalize(&mut self, _defaults: &crate::resources::ResourceDefaults) {
        if self.create_time.is_empty() {
            self.create_time = chrono::Utc::now().to_rfc3339();
        }
    }
    fn validate(&self) -> Result<(), Invalid> {
        if self.expression.trim().is_empty() {
            return Err("Expression is required".into());
        }
        if let Err(e) = skydive_gremlin::parse(&self.expression) {
            return Err(format!(
                "invalid Expression {:?}: {e} (expressions are Gremlin queries; JavaScript expressions are not supported)",
                self.expression
            ).into());
        }
        self.trigger()?;
        let a = &self.action;
        if !(a.is_empty()
            || a.starts_with("http://")
            || a.starts_with("https://")
            || a.starts_with("file://"))
        {
            return Err(format!(
                "invalid Action {a:?}: expected an http://, https:// or file:// URL, or nothing"
            )
            .into());
        }
        Ok(())
    }
}

/// What `/api/status` says about alerts.
#[derive(Debug, Default)]
pub struct AlertCounters {
    pub fired: AtomicU64,
    pub actions_ok: AtomicU64,
    pub actions_failed: AtomicU64,
    pub actions_dropped: AtomicU64,
    queued: AtomicU64,
}

impl AlertCounters {
    pub fn document(&self) -> Json {
        json!({
            "IsMaster": true,
            "Fired": self.fired.load(Ordering::Relaxed),
            "ActionsSucceeded": self.actions_ok.load(Ordering::Relaxed),
            "ActionsFailed": self.actions_failed.load(Ordering::Relaxed),
            "ActionsDropped": self.actions_dropped.load(Ordering::Relaxed),
            "ActionsQueued": self.queued.load(Ordering::Relaxed),
        })
    }
}

/// One watched alert.
struct Watched {
    alert: Alert,
    /// `alert.trigger()`, worked out once.
    trigger: Trigger,
    /// The result of the last firing, while the result stays non-empty.
    last: Option<Json>,
    ticker: Option<JoinHandle<()>>,
}

impl Drop for Watched {
    fn drop(&mut self) {
        if let Some(t) = self.ticker.take() {
            t.abort();
        }
    }
}

/// The alert engine.
pub struct AlertEngine {
    ctx: Shared,
    hub: HubHandle,
    resources: Arc<Resources>,
    pub counters: Arc<AlertCounters>,
    slots: Arc<Semaphore>,
    /// How `https://` webhooks are verified (`tls.ca_cert`, or the system's trust store).
    webhook_tls: ureq::tls::TlsConfig,
}

impl AlertEngine {
    pub fn new(
        ctx: Shared,
        resources: Arc<Resources>,
        webhook_tls: ureq::tls::TlsConfig,
    ) -> Arc<AlertEngine> {
        Arc::new(AlertEngine {
            hub: ctx.hub.clone(),
            ctx,
            resources,
            counters: Arc::default(),
            slots: Arc::new(Semaphore::new(MAX_RUNNING)),
            webhook_tls,
        })
    }

    /// Evaluates the expression; `None` when the result is empty (or the query fails).
    fn evaluate(&self, alert: &Alert) -> Option<Json> {
        let snap = self.hub.snapshot();
        let env = skydive_gremlin::Env {
            graph: &snap.graph,
            history: self.ctx.history.as_ref(),
            flows: None,
            bpf: None,
            now: skydive_graph::now_ms(),
        };
        match skydive_gremlin::query(&alert.expression, &env) {
            Ok(out) if !out.is_empty() => Some(out.to_json_value()),
            Ok(_) => None,
            Err(e) => {
                tracing::debug!(alert = %alert.uuid, "alert expression failed: {e}");
                None
            }
        }
    }

    /// Evaluates `w` and fires it when its result is new.
    fn check(self: &Arc<Self>, w: &mut Watched) {
        match self.evaluate(&w.alert) {
            None => w.last = None,
            Some(v) if w.last.as_ref() == Some(&v) => {}
            Some(v) => {
                w.last = Some(v.clone());
                self.fire(&w.alert, v);
            }
        }
    }

    fn fire(self: &Arc<Self>, alert: &Alert, reason: Json) {
        self.counters.fired.fetch_add(1, Ordering::Relaxed);
        let payload = json!({
            "UUID": alert.uuid,
            "Timestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
            "ReasonData": reason,
        });
        tracing::info!(alert = %alert.uuid, name = %alert.name, "alert fired");
        for conn in self.ctx.registry.on("/ws/subscriber") {
            if conn.handshake.wants("Alert") {
                conn.send_msg("Alert", "Alert", "", 200, &payload);
            }
        }
        if alert.action.is_empty() {
            return;
        }
        let c = &self.counters;
        if c.queued.load(Ordering::Relaxed) >= MAX_QUEUED as u64 {
            c.actions_dropped.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(alert = %alert.uuid, "alert action dropped: {MAX_QUEUED} actions are waiting");
            return;
        }
        c.queued.fetch_add(1, Ordering::Relaxed);
        let (me, action, uuid) = (self.clone(), alert.action.clone(), alert.uuid.clone());
        tokio::spawn(async move {
            let permit = me.slots.clone().acquire_owned().await;
            me.counters.queued.fetch_sub(1, Ordering::Relaxed);
            let body = serde_json::to_vec(&payload).unwrap_or_default();
            let result = run_action(&action, body, me.webhook_tls.clone()).await;
            drop(permit);
            match result {
                Ok(()) => me.counters.actions_ok.fetch_add(1, Ordering::Relaxed),
                Err(e) => {
                    tracing::warn!(alert = %uuid, action = %action, "alert action failed: {e}");
                    me.counters.actions_failed.fetch_add(1, Ordering::Relaxed)
                }
            };
        });
    }

    pub async fn run(self: Arc<Self>) {
        let mut changes = self.resources.subscribe();
        let mut events = self.hub.subscribe();
        let (tick_tx, mut ticks) = tokio::sync::mpsc::unbounded_channel::<String>();
        let mut watched: HashMap<String, Watched> = HashMap::new();
        let load = |watched: &mut HashMap<String, Watched>, all: Vec<Alert>| {
            watched.retain(|id, _| all.iter().any(|a| &a.uuid == id));
            for a in all {
                if !watched.get(&a.uuid).is_some_and(|w| w.alert == a) {
                    load_one(&self, watched, a, &tick_tx);
                }
            }
        };
        let all = self.alerts().await;
        load(&mut watched, all);
        loop {
            tokio::select! {
                c = changes.recv() => match c {
                    Ok(c) if c.kind == Alert::NAME => match c.change {
                        Change::Deleted(_) => {
                            watched.remove(&c.id);
                        }
                        Change::Created(v) | Change::Updated(v) => {
                            if let Ok(a) = serde_json::from_value::<Alert>(v) {
                                watched.remove(&a.uuid);
                                load_one(&self, &mut watched, a, &tick_tx);
                            }
                        }
                    },
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        let all = self.alerts().await;
                        load(&mut watched, all);
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                b = events.recv() => match b {
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {
                        for w in watched.values_mut() {
                            if w.trigger == Trigger::Graph {
                                self.check(w);
                            }
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                Some(id) = ticks.recv() => {
                    if let Some(w) = watched.get_mut(&id) {
                        self.check(w);
                    }
                }
            }
        }
    }

    async fn alerts(&self) -> Vec<Alert> {
        self.resources
            .list(Alert::NAME)
            .await
            .unwrap_or_default()
            .into_values()
            .filter_map(|v| serde_json::from_value(v).ok())
            .collect()
    }
}

fn load_one(
    engine: &Arc<AlertEngine>,
    watched: &mut HashMap<String, Watched>,
    a: Alert,
    tick_tx: &tokio::sync::mpsc::UnboundedSender<String>,
) {
    // Stored alerts were validated: their trigger parses.
    let trigger = a.trigger().unwrap_or(Trigger::Graph);
    let mut w = Watched {
        alert: a.clone(),
        trigger,
        last: None,
        ticker: None,
    };
    // Evaluated once when registered.
    engine.check(&mut w);
    if let Trigger::Every(d) = trigger {
        let (tx, id) = (tick_tx.clone(), a.uuid.clone());
        w.ticker = Some(tokio::spawn(async move {
            let mut t = tokio::time::interval(d);
            t.tick().await;
            loop {
                t.tick().await;
                if tx.send(id.clone()).is_err() {
                    return;
                }
            }
        }));
    }
    watched.insert(a.uuid, w);
}

/// Runs an alert's action with the JSON payload.
async fn run_action(action: &str, body: Vec<u8>, tls: ureq::tls::TlsConfig) -> Result<(), String> {
    if let Some(path) = action.strip_prefix("file://") {
        return run_script(path, body).await;
    }
    let url = action.to_string();
    let mut last = String::new();
    for attempt in 0..WEBHOOK_ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let (u, b, tls) = (url.clone(), body.clone(), tls.clone());
        let sent = tokio::task::spawn_blocking(move || {
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .timeout_global(Some(ACTION_TIMEOUT))
                .http_status_as_error(false)
                .tls_config(tls)
                .build()
                .into();
            // As Skydive: no Content-Type, the connection closed after the request.
            agent
                .post(&u)
                .header("Connection", "close")
                .send(&b[..])
                .map(|r| r.status().as_u16())
                .map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| e.to_string())?;
        match sent {
            Ok(s) if (200..300).contains(&s) => return Ok(()),
            Ok(s) => last = format!("the webhook answered {s}"),
            Err(e) => last = e,
        }
    }
    Err(format!(
        "{last} (abandoned after {WEBHOOK_ATTEMPTS} attempts)"
    ))
}

async fn run_script(path: &str, body: Vec<u8>) -> Result<(), String> {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new(path)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run {path}: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(&body).await;
    }
    match tokio::time::timeout(ACTION_TIMEOUT, child.wait()).await {
        Ok(Ok(s)) if s.success() => Ok(()),
        Ok(Ok(s)) => Err(format!("{path} exited with {s}")),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!(
            "{path} did not finish within {ACTION_TIMEOUT:?}; killed"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(expr: &str, trigger: &str, action: &str) -> Alert {
        Alert {
            expression: expr.into(),
            trigger: trigger.into(),
            action: action.into(),
            ..Default::default()
        }
    }

    #[test]
    fn validation_names_the_problem() {
        assert!(
            alert("G.V().Has('Type', 'netns')", "", "")
                .validate()
                .is_ok()
        );
        assert!(
            alert("G.V()", "duration:+1s", "file:///bin/true")
                .validate()
                .is_ok()
        );
        let e = alert("Gremlin(\"G.V()\").length > 0", "", "")
            .validate()
            .unwrap_err();
        assert!(
            e.contains("JavaScript expressions are not supported"),
            "{e}"
        );
        assert!(
            alert("G.V()", "duration:soon", "")
                .validate()
                .unwrap_err()
                .starts_with("invalid Trigger")
        );
        assert!(
            alert("G.V()", "", "ftp://x")
                .validate()
                .unwrap_err()
                .starts_with("invalid Action")
        );
        assert!(
            alert("G.V()", "", "https://hooks.example/x")
                .validate()
                .is_ok()
        );
        assert!(
            alert("G.V()", "", "http://127.0.0.1:1/x")
                .validate()
                .is_ok()
        );
        assert!(
            alert("", "", "")
                .validate()
                .unwrap_err()
                .starts_with("Expression is required")
        );
        assert_eq!(
            alert("G.V()", "duration:+1s", "").trigger(),
            Ok(Trigger::Every(Duration::from_secs(1)))
        );
        assert_eq!(alert("G.V()", "graph", "").trigger(), Ok(Trigger::Graph));
    }
}
