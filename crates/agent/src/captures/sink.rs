//! Where a running capture's flows and counters go: the flows to every analyzer link, the
//! counters into the node's `Captures` entry (and `SFlow`), the table's flows to the live
//! queries; an OVS bridge's sFlow export is removed when its capture ends.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use skydive_api::capture::CaptureSpec;
use skydive_capture::{Report, Sink, SourceError};
use skydive_flow::Flow;
use skydive_flow::capture::CaptureKind;
use skydive_flow::sflow::IfCounters;
use skydive_hub::HubHandle;
use tokio::sync::broadcast;

use super::CaptureCounters;
use super::node::{State, entry, set_entry, sflow_metadata, update_node};

/// Where every capture of the agent reports.
#[derive(Clone)]
pub struct Outlets {
    pub hub: HubHandle,
    pub rt: tokio::runtime::Handle,
    /// Flow batches, for the analyzer links.
    pub flows: broadcast::Sender<Arc<Vec<Flow>>>,
    pub counters: Arc<CaptureCounters>,
    /// `agent.capture.stats_update`.
    pub stats_every: Duration,
}

/// The sink of one capture on one node.
pub struct NodeSink {
    out: Outlets,
    pub node_id: String,
    pub spec: CaptureSpec,
    pub kind: CaptureKind,
    /// `host:port` of the capture's socket (pcapsocket, sflow, ovssflow).
    pub socket: String,
    /// `(ovsdb address, bridge UUID)` of an OVS sFlow export to remove at the end.
    pub ovs_export: Option<(String, String)>,
    pub stop: AtomicBool,
    /// The table's flows at the last report (for live queries).
    pub snapshot: Mutex<Vec<Flow>>,
    /// The counters last reported.
    last: Mutex<Report>,
    /// The sFlow counters last written on the node, with when they came.
    sflow_prev: Mutex<Option<(IfCounters, i64)>>,
}

impl NodeSink {
    pub fn new(
        out: Outlets,
        node_id: String,
        spec: CaptureSpec,
        kind: CaptureKind,
        socket: String,
        ovs_export: Option<(String, String)>,
    ) -> NodeSink {
        NodeSink {
            out,
            node_id,
            spec,
            kind,
            socket,
            ovs_export,
            stop: AtomicBool::new(false),
            snapshot: Mutex::default(),
            last: Mutex::default(),
            sflow_prev: Mutex::default(),
        }
    }

    /// The node's entry for this capture.
    pub fn entry(&self, state: State, error: &str) -> skydive_graph::Value {
        let last = self.last.lock().unwrap_or_else(|e| e.into_inner()).clone();
        entry(&self.spec, &self.kind, &self.socket, state, error, &last)
    }

    fn write_entry(&self, state: State, error: &str) {
        let e = self.entry(state, error);
        self.out.rt.block_on(set_entry(
            &self.out.hub,
            self.node_id.clone(),
            self.spec.uuid.clone(),
            Some(e),
        ));
    }

    /// Writes the node's `SFlow` counters when a new counter sample came.
    fn write_sflow(&self, counters: Option<(IfCounters, i64)>) {
        let Some((cur, at)) = counters else { return };
        let mut prev = self.sflow_prev.lock().unwrap_or_else(|e| e.into_inner());
        if prev.is_some_and(|(_, prev_at)| prev_at == at) {
            return;
        }
        let start = prev.map_or(at, |(_, p)| p);
        let v = sflow_metadata(&cur, prev.as_ref().map(|(c, _)| c), start, at);
        *prev = Some((cur, at));
        drop(prev);
        self.out
            .rt
            .block_on(update_node(&self.out.hub, self.node_id.clone(), move |m| {
                m.insert("SFlow", v);
            }));
    }
}

impl Sink for NodeSink {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    fn stats_every(&self) -> Duration {
        self.out.stats_every
    }

    fn flows(&self, flows: Vec<Flow>) {
        if flows.is_empty() {
            return;
        }
        let n = flows.len() as u64;
        match self.out.flows.send(Arc::new(flows)) {
            Ok(_) => self.out.counters.flows_sent.fetch_add(n, Ordering::Relaxed),
            // No analyzer link listening.
            Err(_) => self
                .out
                .counters
                .flows_dropped
                .fetch_add(n, Ordering::Relaxed),
        };
    }

    fn report(&self, report: &Report, table: Option<Vec<Flow>>) {
        self.write_sflow(report.sflow_counters);
        if let Some(flows) = table {
            *self.snapshot.lock().unwrap_or_else(|e| e.into_inner()) = flows;
        }
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = report.clone();
        self.write_entry(State::Active, "");
    }

    fn ended(&self, error: Option<&SourceError>) {
        if let Some(e) = error {
            tracing::warn!(capture = %self.spec.uuid, node = %self.node_id, "capture failed: {e}");
            self.write_entry(State::Error, &e.to_string());
        }
        // The capture ends: OVS stops sending (the sFlow row goes with the reference).
        if let Some((ovsdb, bridge)) = &self.ovs_export
            && let Err(e) = self
                .out
                .rt
                .block_on(skydive_probes::ovsdb::detach_sflow(ovsdb, bridge))
        {
            tracing::warn!(%bridge, "cannot remove the sFlow configuration: {e}");
        }
    }
}
