//! Skydive's topology probes: netlink (interfaces, addresses, routes, neighbours, counters),
//! netns (the host's network namespaces) and ethtool (driver, features, speed). Each has a
//! pure part (the netlink reducer, the namespace diff, the topology that turns them into
//! nodes and edges) and an adapter that talks to the kernel. The one `unsafe` call (the
//! ethtool ioctl) is in `sys.rs`. Must not depend on the API server or storage.

#![deny(unsafe_code)]

pub mod ethtool;
pub mod netlink;
pub mod netns;
pub mod oflow;
pub mod ovs;
pub mod ovsdb;
pub mod status;
#[allow(unsafe_code)]
mod sys;
pub mod topology;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use skydive_graph::{Id, now_ms};
use skydive_hub::HubHandle;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::netlink::adapter::{NsProbe, NsProbeConfig, NsRegistry};
use crate::netns::{NsEvent, NsInfo, NsKey};
use crate::status::ProbeStatus;
use crate::topology::{Input, Topology, apply_ops};

/// What the probes need to know.
#[derive(Clone, Debug)]
pub struct ProbesConfig {
    pub host_id: String,
    pub host_node: Id,
    pub host_tid: String,
    /// `agent.topology.netns.run_path`.
    pub netns_run_path: PathBuf,
    /// `/proc` on a real host.
    pub proc_path: PathBuf,
    /// `agent.topology.netlink.metrics_update`.
    pub metrics_every: Duration,
    /// How often processes' namespaces are looked for.
    pub process_scan_every: Duration,
}

/// The running probes.
pub struct Probes {
    pub netlink: Arc<ProbeStatus>,
    pub netns: Arc<ProbeStatus>,
    topology: Arc<Mutex<Topology>>,
    stop: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for Probes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Probes")
    }
}

impl Probes {
    /// `TopologyProbes` of `/api/status`.
    pub fn status(&self) -> serde_json::Value {
        let (ns, ifaces) = self
            .topology
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .size();
        let mut netlink = self.netlink.document();
        netlink["Interfaces"] = ifaces.into();
        let mut netns = self.netns.document();
        netns["Namespaces"] = ns.saturating_sub(1).into();
        serde_json::json!({"netlink": netlink, "netns": netns, "ethtool": {"Status": "running"}})
    }

    /// Stops every probe (their sockets close); the graph keeps what they reported.
    pub async fn stop(&self) {
        self.stop.send_replace(true);
        let tasks: Vec<JoinHandle<()>> =
            std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        for t in tasks {
            t.abort();
            let _ = t.await;
        }
    }
}

/// Starts the netlink, netns and ethtool probes over the agent's graph `hub`.
pub fn start(cfg: ProbesConfig, hub: HubHandle) -> std::io::Result<Probes> {
    let own = netns::own_namespace()?;
    let netlink_status = Arc::new(ProbeStatus::default());
    let netns_status = Arc::new(ProbeStatus::default());
    let topology = Arc::new(Mutex::new(Topology::new(
        cfg.host_node.clone(),
        &cfg.host_tid,
        own.clone(),
    )));
    let registry = NsRegistry::new(own.key, PathBuf::from("/proc/self/ns/net"));
    let (stop, stop_rx) = watch::channel(false);
    let (tx, rx) = mpsc::channel::<Input>(4096);
    let mut tasks = Vec::new();

    tasks.push(tokio::spawn(run_topology(
        rx,
        topology.clone(),
        hub,
        cfg.host_id.clone(),
        format!("agent.{}", cfg.host_id),
    )));

    let probe_cfg = NsProbeConfig {
        metrics_every: cfg.metrics_every,
    };
    // The host's namespace: the agent's own.
    let sockets = netns::open_sockets()?;
    let root = NsProbe::new(
        own.key,
        sockets,
        tx.clone(),
        registry.clone(),
        netlink_status.clone(),
        probe_cfg.clone(),
    )?;
    tasks.push(tokio::spawn(root.run(stop_rx.clone())));

    let (ns_tx, ns_rx) = mpsc::channel::<NsEvent>(1024);
    tasks.push(tokio::spawn(netns::watch(
        cfg.netns_run_path.clone(),
        cfg.proc_path.clone(),
        own,
        cfg.process_scan_every,
        ns_tx,
    )));
    tasks.push(tokio::spawn(supervise_namespaces(
        ns_rx,
        tx,
        registry,
        netlink_status.clone(),
        netns_status.clone(),
        probe_cfg,
        stop_rx,
    )));
    Ok(Probes {
        netlink: netlink_status,
        netns: netns_status,
        topology,
        stop,
        tasks: Mutex::new(tasks),
    })
}

/// Applies the probes' reports to the graph, a batch at a time.
async fn run_topology(
    mut rx: mpsc::Receiver<Input>,
    topology: Arc<Mutex<Topology>>,
    hub: HubHandle,
    host: String,
    origin: String,
) {
    let mut batch = Vec::with_capacity(256);
    loop {
        if rx.recv_many(&mut batch, 256).await == 0 {
            return;
        }
        let ops = {
            let mut t = topology.lock().unwrap_or_else(|e| e.into_inner());
            for input in batch.drain(..) {
                t.apply(input);
            }
            t.ops()
        };
        if ops.is_empty() {
            continue;
        }
        let (h, o) = (host.clone(), origin.clone());
        if hub
            .apply(None, move |g| Ok(apply_ops(g, ops, &h, &o, now_ms())))
            .await
            .is_err()
        {
            return;
        }
    }
}

/// Starts and stops a netlink probe per namespace as namespaces come and go.
async fn supervise_namespaces(
    mut events: mpsc::Receiver<NsEvent>,
    tx: mpsc::Sender<Input>,
    registry: Arc<NsRegistry>,
    netlink_status: Arc<ProbeStatus>,
    netns_status: Arc<ProbeStatus>,
    cfg: NsProbeConfig,
    mut stop: watch::Receiver<bool>,
) {
    let mut running: HashMap<NsKey, watch::Sender<bool>> = HashMap::new();
    // Namespaces whose probe could not start (a process that exited while its namespace
    // was opened, a permission): tried again every second while they exist.
    let mut failed: HashMap<NsKey, NsInfo> = HashMap::new();
    let mut retry = tokio::time::interval(Duration::from_secs(1));
    loop {
        let ev = tokio::select! {
            ev = events.recv() => match ev {
                Some(ev) => Some(ev),
                None => return,
            },
            _ = retry.tick() => None,
            _ = stop.changed() => return,
        };
        let mut to_start: Vec<NsInfo> = Vec::new();
        match ev {
            Some(NsEvent::Added(info)) | Some(NsEvent::Changed(info)) => {
                registry.insert(info.key, info.path.clone());
                if tx.send(Input::Namespace(info.clone())).await.is_err() {
                    return;
                }
                failed.remove(&info.key);
                if !running.contains_key(&info.key) {
                    to_start.push(info);
                }
            }
            Some(NsEvent::Removed(key)) => {
                // Closing the probe's sockets lets the kernel free the namespace.
                running.remove(&key);
                failed.remove(&key);
                registry.remove(key);
                netlink_status.forget_namespace(key);
                if tx.send(Input::NamespaceGone(key)).await.is_err() {
                    return;
                }
            }
            None => to_start.extend(failed.drain().map(|(_, i)| i)),
        }
        for info in to_start {
            let (probe_stop, probe_stop_rx) = watch::channel(false);
            match start_namespace_probe(&info, &tx, &registry, &netlink_status, &cfg, probe_stop_rx)
                .await
            {
                Ok(()) => {
                    running.insert(info.key, probe_stop);
                }
                Err(e) => {
                    tracing::debug!(ns = %info.name, path = %info.path.display(), "cannot probe the namespace yet: {e}");
                    // A process that exited between the scan and the opening is no error.
                    if e.kind() != std::io::ErrorKind::NotFound {
                        netns_status.error(format!(
                            "namespace {} ({}): {e}",
                            info.name,
                            info.path.display()
                        ));
                    }
                    failed.insert(info.key, info);
                }
            }
        }
        netns_status.set_namespaces(running.len() as u64);
    }
}

async fn start_namespace_probe(
    info: &NsInfo,
    tx: &mpsc::Sender<Input>,
    registry: &Arc<NsRegistry>,
    status: &Arc<ProbeStatus>,
    cfg: &NsProbeConfig,
    stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let (path, key) = (info.path.clone(), info.key);
    let sockets = tokio::task::spawn_blocking(move || netns::open_sockets_in(&path, key))
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))??;
    let probe = NsProbe::new(
        info.key,
        sockets,
        tx.clone(),
        registry.clone(),
        status.clone(),
        cfg.clone(),
    )?;
    tokio::spawn(probe.run(stop));
    Ok(())
}
