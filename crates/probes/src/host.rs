//! The probes of the host's network, over one topology: `netlink` (the host namespace's
//! interfaces, addresses, routes, neighbours and counters), `netns` (the other namespaces,
//! named or found through processes, each with a netlink probe of its own) and `ethtool`
//! (what the netlink probes ask the drivers on their metrics tick).
//!
//! The topology task turns what they report into nodes and edges; it runs as long as the
//! probes do, and a probe restarted by the supervisor reports into the same topology (its
//! full dump replaces what it reported before).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use skydive_graph::now_ms;
use skydive_hub::HubHandle;
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;

use crate::ethtool::EthtoolCounters;
use crate::netlink::adapter::{NsProbe, NsProbeConfig, NsRegistry};
use crate::netns::{self, NsEvent, NsInfo, NsKey};
use crate::probe::{Probe, ProbeError, ProbeRun};
use crate::status::ProbeStatus;
use crate::topology::{Input, Topology, apply_ops};

/// What the host probes share: the topology they report to and its task.
pub struct HostTopology {
    own: NsInfo,
    topology: Arc<Mutex<Topology>>,
    tx: mpsc::Sender<Input>,
    registry: Arc<NsRegistry>,
    netlink: Arc<ProbeStatus>,
    netns: Arc<ProbeStatus>,
    probe_cfg: NsProbeConfig,
    /// `agent.topology.netns.run_path`, then the container runtimes' namespace folders.
    netns_run_paths: Vec<PathBuf>,
    /// Asks the netns probe for a scan at once.
    rescan: Arc<Notify>,
    proc_path: PathBuf,
    process_scan_every: Duration,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for HostTopology {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostTopology")
            .field("own", &self.own)
            .finish()
    }
}

impl HostTopology {
    /// The host's topology over the agent's graph `hub`, its task started; namespaces are
    /// looked for under `netns_run_paths` and in processes.
    pub fn start(
        cfg: &crate::ProbesConfig,
        netns_run_paths: Vec<PathBuf>,
        hub: HubHandle,
    ) -> std::io::Result<Arc<HostTopology>> {
        let own = netns::own_namespace()?;
        let topology = Arc::new(Mutex::new(Topology::new(
            cfg.host_node.clone(),
            &cfg.host_tid,
            own.clone(),
        )));
        let (tx, rx) = mpsc::channel::<Input>(4096);
        let task = tokio::spawn(run_topology(
            rx,
            topology.clone(),
            hub,
            cfg.host_id.clone(),
            format!("agent.{}", cfg.host_id),
        ));
        Ok(Arc::new(HostTopology {
            registry: NsRegistry::new(own.key, PathBuf::from("/proc/self/ns/net")),
            own,
            topology,
            tx,
            netlink: Arc::default(),
            netns: Arc::default(),
            probe_cfg: NsProbeConfig {
                metrics_every: cfg.metrics_every,
                ethtool: Arc::default(),
            },
            netns_run_paths,
            rescan: Arc::default(),
            proc_path: cfg.proc_path.clone(),
            process_scan_every: cfg.process_scan_every,
            task: Mutex::new(Some(task)),
        }))
    }

    /// Namespaces and interfaces in the topology.
    fn size(&self) -> (usize, usize) {
        self.topology
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .size()
    }

    /// Stops the topology task (the graph keeps what it holds).
    pub async fn stop(&self) {
        let task = self.task.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(t) = task {
            t.abort();
            let _ = t.await;
        }
    }

    /// What a container probe reports to.
    pub fn containers(&self) -> ContainerSink {
        ContainerSink {
            tx: self.tx.clone(),
            own: self.own.key,
            rescan: self.rescan.clone(),
        }
    }

    /// The three probes over this topology.
    pub fn probes(self: &Arc<Self>) -> Vec<Arc<dyn Probe>> {
        vec![
            Arc::new(NetlinkProbe(self.clone())),
            Arc::new(NetnsProbe(self.clone())),
            Arc::new(EthtoolProbe(self.probe_cfg.ethtool.clone())),
        ]
    }
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

/// Where a container probe reports: the topology's input, the host's namespace (that of
/// `--net=host` containers), and the netns probe's scan.
#[derive(Clone, Debug)]
pub struct ContainerSink {
    tx: mpsc::Sender<Input>,
    own: NsKey,
    rescan: Arc<Notify>,
}

impl ContainerSink {
    /// Reports a container; false once the topology is gone.
    pub async fn send(&self, input: Input) -> bool {
        self.tx.send(input).await.is_ok()
    }

    /// The namespace a process runs in, by the inode of `/proc/<pid>/ns/net` under `proc`.
    pub fn namespace_of(proc: &std::path::Path, pid: i64) -> std::io::Result<NsKey> {
        use std::os::unix::fs::MetadataExt;
        Ok(std::fs::metadata(proc.join(pid.to_string()).join("ns/net"))?.ino())
    }

    /// The host's own namespace.
    pub fn host_namespace(&self) -> NsKey {
        self.own
    }

    /// Asks the netns probe to look for namespaces now (a container just started in one).
    pub fn rescan(&self) {
        self.rescan.notify_one();
    }
}

/// The host namespace's netlink probe.
pub struct NetlinkProbe(Arc<HostTopology>);

impl Probe for NetlinkProbe {
    fn name(&self) -> &'static str {
        "netlink"
    }

    fn run(self: Arc<Self>, stop: watch::Receiver<bool>) -> ProbeRun {
        Box::pin(async move {
            let h = &self.0;
            let sockets =
                netns::open_sockets().map_err(|e| ProbeError::Setup(format!("netlink: {e}")))?;
            let probe = NsProbe::new(
                h.own.key,
                sockets,
                h.tx.clone(),
                h.registry.clone(),
                h.netlink.clone(),
                h.probe_cfg.clone(),
            )
            .map_err(|e| ProbeError::Setup(format!("netlink: {e}")))?;
            probe.run(stop).await;
            if h.tx.is_closed() {
                return Err(ProbeError::TopologyGone);
            }
            Ok(())
        })
    }

    fn status(&self) -> Value {
        let mut doc = self.0.netlink.document();
        doc["Interfaces"] = self.0.size().1.into();
        doc
    }
}

/// The namespaces of the host: each gets a netlink probe of its own while it exists.
pub struct NetnsProbe(Arc<HostTopology>);

impl Probe for NetnsProbe {
    fn name(&self) -> &'static str {
        "netns"
    }

    fn run(self: Arc<Self>, stop: watch::Receiver<bool>) -> ProbeRun {
        Box::pin(async move {
            let h = &self.0;
            let (ns_tx, ns_rx) = mpsc::channel::<NsEvent>(1024);
            let watcher = tokio::spawn(netns::watch(
                h.netns_run_paths.clone(),
                h.proc_path.clone(),
                h.own.clone(),
                h.process_scan_every,
                h.rescan.clone(),
                ns_tx,
            ));
            supervise_namespaces(ns_rx, h, stop).await;
            watcher.abort();
            if h.tx.is_closed() {
                return Err(ProbeError::TopologyGone);
            }
            Ok(())
        })
    }

    fn status(&self) -> Value {
        let mut doc = self.0.netns.document();
        doc["Namespaces"] = self.0.size().0.saturating_sub(1).into();
        doc
    }
}

/// What the drivers say of each interface (driver, speed, features, statistics), read by
/// the netlink probes on their metrics tick with an ioctl socket of each namespace: this
/// probe has no task of its own and reports what they asked.
pub struct EthtoolProbe(Arc<EthtoolCounters>);

impl Probe for EthtoolProbe {
    fn name(&self) -> &'static str {
        "ethtool"
    }

    fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) -> ProbeRun {
        Box::pin(async move {
            let _ = stop.wait_for(|s| *s).await;
            Ok(())
        })
    }

    fn status(&self) -> Value {
        self.0.document()
    }
}

/// Starts and stops a netlink probe per namespace as namespaces come and go, until `stop`
/// or the end of the events.
async fn supervise_namespaces(
    mut events: mpsc::Receiver<NsEvent>,
    h: &HostTopology,
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
                h.registry.insert(info.key, info.path.clone());
                if h.tx.send(Input::Namespace(info.clone())).await.is_err() {
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
                h.registry.remove(key);
                h.netlink.forget_namespace(key);
                if h.tx.send(Input::NamespaceGone(key)).await.is_err() {
                    return;
                }
            }
            None => to_start.extend(failed.drain().map(|(_, i)| i)),
        }
        for info in to_start {
            let (probe_stop, probe_stop_rx) = watch::channel(false);
            match start_namespace_probe(&info, h, probe_stop_rx).await {
                Ok(()) => {
                    running.insert(info.key, probe_stop);
                }
                Err(e) => {
                    tracing::debug!(ns = %info.name, path = %info.path.display(), "cannot probe the namespace yet: {e}");
                    // A process that exited between the scan and the opening is no error.
                    if e.kind() != std::io::ErrorKind::NotFound {
                        h.netns.error(format!(
                            "namespace {} ({}): {e}",
                            info.name,
                            info.path.display()
                        ));
                    }
                    failed.insert(info.key, info);
                }
            }
        }
        h.netns.set_namespaces(running.len() as u64);
    }
}

async fn start_namespace_probe(
    info: &NsInfo,
    h: &HostTopology,
    stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let (path, key) = (info.path.clone(), info.key);
    let sockets = tokio::task::spawn_blocking(move || netns::open_sockets_in(&path, key))
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))??;
    let probe = NsProbe::new(
        info.key,
        sockets,
        h.tx.clone(),
        h.registry.clone(),
        h.netlink.clone(),
        h.probe_cfg.clone(),
    )?;
    tokio::spawn(probe.run(stop));
    Ok(())
}
