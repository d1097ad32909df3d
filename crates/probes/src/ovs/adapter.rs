//! The OVS probe's I/O: a monitor of OVSDB's tables (through the project's OVSDB client),
//! `ovs-ofctl` for the OpenFlow rules, and the agent's graph kept in step with what the
//! reducer makes of them. OVSDB going away is a failure of the probe: its elements leave the
//! graph and the supervisor runs it again after a backoff.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use skydive_graph::Id;
use skydive_hub::HubHandle;
use tokio::sync::watch;

use super::reducer::{Inputs, OfTables, OvsState, desired, monitored, ops};
use crate::ovsdb::{Notification, OvsdbClient, Tables, string};
use crate::probe::{Probe, ProbeError, ProbeRun};

/// How often the bridges' OpenFlow rules are read (`ovs.oflow.enable`).
const OFLOW_EVERY: Duration = Duration::from_secs(2);
/// How long graph changes settle before the merge with netlink nodes is worked out again.
const GRAPH_SETTLE: Duration = Duration::from_millis(50);

/// What the probe is told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OvsConfig {
    /// `ovs.ovsdb`: `unix:///path`, `unix:/path`, `tcp:host:port` or `host:port`.
    pub address: String,
    /// `ovs.enable_stats`: the interfaces' statistics become metrics.
    pub stats: bool,
    /// `ovs.oflow.enable`: the bridges' OpenFlow rules and groups become nodes.
    pub oflow: bool,
}

/// The `ovsdb` probe.
pub struct OvsdbProbe {
    cfg: OvsConfig,
    hub: HubHandle,
    host: Id,
    host_id: String,
    /// What the probe put in the graph, kept across restarts.
    state: tokio::sync::Mutex<OvsState>,
    /// Connected, and the last error.
    connection: Mutex<(bool, String)>,
    /// The last failure to read OpenFlow rules (`ovs-ofctl`), logged once.
    oflow_error: Mutex<String>,
}

impl std::fmt::Debug for OvsdbProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OvsdbProbe")
            .field("address", &self.cfg.address)
            .finish()
    }
}

impl OvsdbProbe {
    pub fn new(cfg: OvsConfig, hub: HubHandle, host: Id, host_id: String) -> OvsdbProbe {
        OvsdbProbe {
            cfg,
            hub,
            host,
            host_id,
            state: tokio::sync::Mutex::default(),
            connection: Mutex::default(),
            oflow_error: Mutex::default(),
        }
    }

    fn set_connection(&self, connected: bool, error: String) {
        *self.connection.lock().unwrap_or_else(|e| e.into_inner()) = (connected, error);
    }

    fn set_oflow_error(&self, error: String) {
        let mut last = self.oflow_error.lock().unwrap_or_else(|e| e.into_inner());
        if *last != error {
            tracing::warn!("OpenFlow rules: {error}");
            *last = error;
        }
    }

    /// Connects, monitors the tables and follows them until `stop` or until OVSDB goes away.
    async fn follow(&self, mut stop: watch::Receiver<bool>) -> Result<(), ProbeError> {
        let columns = monitored(self.cfg.stats);
        let columns: Vec<(&str, &[&str])> =
            columns.iter().map(|(t, c)| (*t, c.as_slice())).collect();
        let (client, mut notes) = OvsdbClient::connect(&self.cfg.address)
            .await
            .map_err(|e| ProbeError::Unavailable(e.to_string()))?;
        let initial = client
            .monitor("Open_vSwitch", serde_json::json!("skydive"), &columns)
            .await
            .map_err(|e| ProbeError::Unavailable(e.to_string()))?;
        tracing::info!(address = %self.cfg.address, "OVSDB monitor started");
        self.set_connection(true, String::new());
        let mut tables = Tables::default();
        tables.apply(&initial);
        let mut events = self.hub.subscribe();
        let mut of = OfTables::default();
        let mut of_tick = tokio::time::interval(OFLOW_EVERY);
        of_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            self.sync(&tables, &of).await;
            tokio::select! {
                _ = of_tick.tick(), if self.cfg.oflow => {
                    of = self.dump_oflow(&tables).await;
                }
                n = notes.recv() => match n {
                    Some(Notification::Update(_, u)) => tables.apply(&u),
                    Some(Notification::Closed(_)) | None => {
                        return Err(ProbeError::Unavailable("OVSDB connection lost".into()));
                    }
                },
                e = events.recv() => {
                    // Netlink nodes come and go: the merge may change.
                    if e.is_err() {
                        events = events.resubscribe();
                    }
                    tokio::time::sleep(GRAPH_SETTLE).await;
                    while events.try_recv().is_ok() {}
                }
                _ = stop.changed() => return Ok(()),
            }
        }
    }

    /// The OpenFlow rules and groups of every bridge; a bridge that cannot be read has none,
    /// and the reason is in the probe's status.
    async fn dump_oflow(&self, tables: &Tables) -> OfTables {
        let mut out = OfTables::default();
        for (uuid, row) in tables.rows("Bridge") {
            let Some(name) = string(row, "name") else {
                continue;
            };
            match crate::oflow::dump(&name).await {
                Ok(v) => {
                    out.insert(uuid.clone(), v);
                }
                Err(e) => self.set_oflow_error(e.to_string()),
            }
        }
        out
    }

    /// Puts the graph in step with `tables`.
    async fn sync(&self, tables: &Tables, oflow: &OfTables) {
        let mut state = self.state.lock().await;
        let snap = self.hub.snapshot();
        let next = desired(&Inputs {
            tables,
            graph: &snap.graph,
            host: &self.host,
            host_id: &self.host_id,
            prev: &state,
            now: skydive_graph::now_ms(),
            oflow,
        });
        if next == *state {
            return;
        }
        let (h, o) = (self.host_id.clone(), format!("agent.{}", self.host_id));
        let (p, n) = (std::mem::take(&mut *state), next.clone());
        let _ = self
            .hub
            .apply(None, move |g| {
                let changes = ops(&p, &n, g);
                Ok(crate::topology::apply_ops(
                    g,
                    changes,
                    &h,
                    &o,
                    skydive_graph::now_ms(),
                ))
            })
            .await;
        *state = next;
    }
}

impl Probe for OvsdbProbe {
    fn name(&self) -> &'static str {
        "ovsdb"
    }

    /// Follows OVSDB; when it goes away, the probe's elements leave the graph until it is
    /// back.
    fn run(self: Arc<Self>, stop: watch::Receiver<bool>) -> ProbeRun {
        Box::pin(async move {
            let result = self.follow(stop).await;
            if let Err(e) = &result {
                self.set_connection(false, e.to_string());
                self.sync(&Tables::default(), &OfTables::default()).await;
            }
            result
        })
    }

    fn status(&self) -> Value {
        let (connected, error) = self
            .connection
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let oflow = self
            .oflow_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        serde_json::json!({"Connected": connected, "LastError": error, "OpenFlowError": oflow})
    }
}
