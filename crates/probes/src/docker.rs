//! The `docker` probe: the containers of a Docker daemon (Skydive's Docker connector).
//!
//! Talks to the Docker Engine API on `agent.topology.docker.url` (a unix socket or TCP)
//! through `bollard`: at each connection it subscribes to the container events, then lists
//! the running containers and inspects each; afterwards every event of a container inspects it
//! again, so that what is shown is what the daemon says now (started, paused, renamed,
//! stopped, removed). A daemon that is not there yet or goes away fails the run, and the
//! supervisor connects again with its backoff and lists again: containers that stopped
//! meanwhile leave the graph then.
//!
//! A running container becomes a `container` node (`Manager: docker`) in the namespace its
//! init process runs in, found through `/proc/<pid>/ns/net` (the host's for `--net=host`);
//! the namespace node takes the container's name (see the topology).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bollard::Docker;
use bollard::models::ContainerInspectResponse;
use bollard::query_parameters::{EventsOptionsBuilder, ListContainersOptionsBuilder};
use futures_util::StreamExt;
use serde_json::{Value, json};
use skydive_graph::Value as MValue;
use tokio::sync::watch;

use crate::containers::{Container, ContainerMetadata, Manager, normalize_labels, parse_hosts};
use crate::host::ContainerSink;
use crate::netns::NsKey;
use crate::probe::{Probe, ProbeError, ProbeRun};
use crate::topology::Input;

/// `agent.topology.docker.*`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DockerConfig {
    /// `agent.topology.docker.url`: `unix:///var/run/docker.sock`, `tcp://host:2375`.
    pub url: String,
    /// `agent.topology.docker.netns.run_path`: where Docker binds its namespaces.
    pub netns_run_path: PathBuf,
}

impl Default for DockerConfig {
    fn default() -> Self {
        DockerConfig {
            url: "unix:///var/run/docker.sock".into(),
            netns_run_path: PathBuf::from("/var/run/docker/netns"),
        }
    }
}

/// The container events after which a container is inspected again.
const EVENTS: [&str; 10] = [
    "start", "restart", "die", "stop", "pause", "unpause", "rename", "update", "destroy", "kill",
];

/// How many containers are inspected at once.
const CONCURRENT_INSPECTIONS: usize = 8;

#[derive(Debug, Default)]
struct State {
    connected: bool,
    version: String,
    /// The containers shown, by ID, with the namespace each was last seen in.
    shown: BTreeMap<String, NsKey>,
    /// Running containers left out because their process's namespace could not be read.
    without_namespace: u64,
}

/// The Docker probe.
pub struct DockerProbe {
    cfg: DockerConfig,
    sink: ContainerSink,
    proc: PathBuf,
    state: Mutex<State>,
    events: AtomicU64,
}

impl std::fmt::Debug for DockerProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DockerProbe")
            .field("url", &self.cfg.url)
            .finish()
    }
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> ProbeError {
    ProbeError::Unavailable(format!("{what}: {e}"))
}

/// A client of the daemon at `url`.
fn connect(url: &str) -> Result<Docker, ProbeError> {
    const TIMEOUT_S: u64 = 10;
    let docker = if let Some(path) = url.strip_prefix("unix://") {
        Docker::connect_with_unix(path, TIMEOUT_S, bollard::API_DEFAULT_VERSION)
    } else if url.starts_with("tcp://") || url.starts_with("http://") {
        Docker::connect_with_http(url, TIMEOUT_S, bollard::API_DEFAULT_VERSION)
    } else {
        return Err(ProbeError::Setup(format!(
            "agent.topology.docker.url {url:?}: a unix:// or tcp:// address is needed"
        )));
    };
    docker.map_err(|e| unavailable(&format!("Docker at {url}"), e))
}

impl DockerProbe {
    pub fn new(cfg: DockerConfig, sink: ContainerSink, proc: PathBuf) -> DockerProbe {
        DockerProbe {
            cfg,
            sink,
            proc,
            state: Mutex::default(),
            events: AtomicU64::new(0),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What the daemon says of container `id` now, as the topology takes it: `None` when it
    /// is not running (or no longer exists).
    async fn inspect(&self, docker: &Docker, id: &str) -> Result<Option<Container>, ProbeError> {
        match docker.inspect_container(id, None).await {
            Ok(info) => Ok(self.container(info).await),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(None),
            Err(e) => Err(unavailable(&format!("inspecting container {id}"), e)),
        }
    }

    async fn container(&self, info: ContainerInspectResponse) -> Option<Container> {
        let state = info.state.as_ref()?;
        let pid = state.pid.unwrap_or(0);
        if pid <= 0 || state.running != Some(true) {
            return None;
        }
        let id = info.id.clone()?;
        // A process that ended between the inspection and now has no namespace: the
        // container is stopping, and its die event follows.
        let netns = match ContainerSink::namespace_of(&self.proc, pid) {
            Ok(ns) => ns,
            Err(e) => {
                tracing::debug!(container = ?info.name, pid, "no namespace for the container's process: {e}");
                self.state().without_namespace += 1;
                return None;
            }
        };
        let config = info.config.as_ref();
        let labels = config
            .and_then(|c| c.labels.as_ref())
            .map(|l| {
                normalize_labels(
                    l.iter()
                        .map(|(k, v)| (k.as_str(), MValue::from(v.as_str()))),
                )
            })
            .unwrap_or_default();
        let hosts = match &info.hosts_path {
            Some(p) if !p.is_empty() => tokio::fs::read_to_string(p)
                .await
                .ok()
                .and_then(|t| parse_hosts(&t)),
            _ => None,
        };
        let metadata = ContainerMetadata {
            id: id.clone(),
            image: config.and_then(|c| c.image.clone()).unwrap_or_default(),
            image_id: info.image.clone().unwrap_or_default(),
            runtime: "docker".into(),
            status: state.status.map(|s| s.to_string()).unwrap_or_default(),
            init_process_pid: pid,
            hosts,
            labels,
        };
        let joined = info
            .host_config
            .as_ref()
            .and_then(|h| h.network_mode.as_deref())
            .is_some_and(|m| m.starts_with("container:"));
        Some(Container {
            manager: Manager::Docker,
            name: info
                .name
                .as_deref()
                .unwrap_or(&id)
                .trim_start_matches('/')
                .to_string(),
            id,
            netns,
            joined,
            metadata: metadata.to_map(),
        })
    }

    /// Inspects `ids` (a few at a time) and reports what is shown of each.
    async fn reconcile(&self, docker: &Docker, ids: Vec<String>) -> Result<(), ProbeError> {
        let mut results = futures_util::stream::iter(ids.into_iter().map(|id| async move {
            let r = self.inspect(docker, &id).await;
            (id, r)
        }))
        .buffered(CONCURRENT_INSPECTIONS);
        let mut started = false;
        while let Some((id, r)) = results.next().await {
            let input = match r? {
                Some(c) => {
                    // New, or in a namespace of its own now (restarted): have the namespace
                    // found at once.
                    started |= self.state().shown.insert(id, c.netns) != Some(c.netns);
                    Input::Container(c)
                }
                None => {
                    if self.state().shown.remove(&id).is_none() {
                        continue;
                    }
                    Input::ContainerGone {
                        manager: Manager::Docker,
                        id,
                    }
                }
            };
            if !self.sink.send(input).await {
                return Err(ProbeError::TopologyGone);
            }
        }
        if started {
            // Its namespace is new: have it found now rather than at the next scan.
            self.sink.rescan();
        }
        Ok(())
    }

    async fn run_connected(
        &self,
        docker: Docker,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<(), ProbeError> {
        let version = docker
            .version()
            .await
            .map_err(|e| unavailable(&format!("Docker at {}", self.cfg.url), e))?;
        // The events from a moment before the list is read (by the daemon's clock), so that
        // nothing that happens while the list is read and inspected is missed: the event
        // stream is only requested when first read, after the inspections. An event seen
        // twice only inspects a container once more.
        let info = docker
            .info()
            .await
            .map_err(|e| unavailable(&format!("Docker at {}", self.cfg.url), e))?;
        let since = info
            .system_time
            .as_deref()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.timestamp() - 1)
            .unwrap_or_else(|| chrono::Utc::now().timestamp() - 1);
        let filters: HashMap<&str, Vec<&str>> = HashMap::from([("type", vec!["container"])]);
        let mut events = docker.events(Some(
            EventsOptionsBuilder::new()
                .since(&since.to_string())
                .filters(&filters)
                .build(),
        ));
        let running = docker
            .list_containers(Some(ListContainersOptionsBuilder::new().build()))
            .await
            .map_err(|e| unavailable("listing the containers", e))?;
        {
            let mut st = self.state();
            st.connected = true;
            st.version = version.version.unwrap_or_default();
        }
        tracing::info!(url = %self.cfg.url, version = %self.state().version, "connected to Docker");
        let listed: BTreeSet<String> = running.into_iter().filter_map(|c| c.id).collect();
        // Those shown before a reconnection that are no longer running are inspected too.
        let mut ids: BTreeSet<String> = self.state().shown.keys().cloned().collect();
        ids.extend(listed);
        self.reconcile(&docker, ids.into_iter().collect()).await?;
        loop {
            let first = tokio::select! {
                _ = stop.changed() => return Ok(()),
                ev = events.next() => ev,
            };
            // Every event already received, one inspection per container.
            let mut batch: Vec<String> = Vec::new();
            let mut next = first;
            loop {
                match next {
                    None => {
                        return Err(ProbeError::Unavailable(
                            "Docker's event stream ended".into(),
                        ));
                    }
                    Some(Err(e)) => return Err(unavailable("Docker's event stream", e)),
                    Some(Ok(ev)) => {
                        self.events.fetch_add(1, Ordering::Relaxed);
                        let action = ev.action.as_deref().unwrap_or("");
                        if EVENTS.contains(&action)
                            && let Some(id) = ev.actor.and_then(|a| a.id)
                            && !batch.contains(&id)
                        {
                            batch.push(id);
                        }
                    }
                }
                match futures_util::FutureExt::now_or_never(events.next()) {
                    Some(ev) => next = ev,
                    None => break,
                }
            }
            if !batch.is_empty() {
                self.reconcile(&docker, batch).await?;
            }
        }
    }
}

impl Probe for DockerProbe {
    fn name(&self) -> &'static str {
        "docker"
    }

    fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) -> ProbeRun {
        Box::pin(async move {
            let docker = connect(&self.cfg.url)?;
            let docker = docker
                .negotiate_version()
                .await
                .map_err(|e| unavailable(&format!("Docker at {}", self.cfg.url), e))?;
            let r = self.run_connected(docker, &mut stop).await;
            self.state().connected = false;
            r
        })
    }

    fn status(&self) -> Value {
        let st = self.state();
        json!({
            "URL": self.cfg.url,
            "Connected": st.connected,
            "Version": st.version,
            "Containers": st.shown.len(),
            "Events": self.events.load(Ordering::Relaxed),
            "WithoutNamespace": st.without_namespace,
        })
    }
}
