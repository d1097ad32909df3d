//! The `runc` probe: containers that no Docker daemon shows (containerd, CRI-O, podman, `runc`
//! by hand), from the state runc keeps for each under its root folders
//! (`agent.topology.runc.run_path`).
//!
//! Each container has a folder holding `state.json` (its ID, init process and its start time,
//! labels, mounts, namespaces), directly under a run path or one level down (containerd's
//! `<run path>/<namespace>/<id>`). The folders are watched with inotify and scanned again
//! after every change and every two seconds (a run path that does not exist yet, a process
//! that ended): a container is shown while its init process is the one runc started.
//!
//! What it shows (`Manager: runc`): the container's ID as its name, its labels (runc's
//! `key=value` labels, values that are JSON taken as JSON, as Skydive does; plus the OCI
//! annotations of its bundle's `config.json` and CRI-O's labels), `Image`/`ImageID` from
//! CRI-O's `artifacts/create-config` or else the OCI annotations, and `Hosts` from the file
//! mounted on `/etc/hosts`. A container Docker also reports is shown once, as Docker's.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::containers::{
    Container, ContainerMetadata, Manager, normalize_json, normalize_labels, parse_hosts,
    runc_label_pairs,
};
use crate::host::ContainerSink;
use crate::probe::{Probe, ProbeError, ProbeRun};
use crate::sys::InotifyFd;
use crate::topology::Input;

/// `agent.topology.runc.run_path`'s default.
pub fn default_run_paths() -> Vec<PathBuf> {
    ["/run/containerd/runc", "/run/runc", "/run/runc-ctrs"]
        .iter()
        .map(PathBuf::from)
        .collect()
}

/// What the probe reads of a `state.json`.
#[derive(Debug, Deserialize)]
struct State {
    id: String,
    #[serde(default)]
    init_process_pid: i64,
    /// A number, or a string holding one, depending on runc's version.
    #[serde(default)]
    init_process_start: Value,
    #[serde(default)]
    config: StateConfig,
}

#[derive(Debug, Default, Deserialize)]
struct StateConfig {
    #[serde(default)]
    labels: Vec<String>,
    #[serde(default)]
    mounts: Vec<Mount>,
    #[serde(default)]
    namespaces: Vec<Namespace>,
}

#[derive(Debug, Deserialize)]
struct Mount {
    #[serde(default)]
    source: String,
    #[serde(default)]
    destination: String,
}

#[derive(Debug, Deserialize)]
struct Namespace {
    #[serde(rename = "type", default)]
    ty: String,
    #[serde(default)]
    path: String,
}

/// CRI-O's `artifacts/create-config`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CreateConfig {
    #[serde(default)]
    image: String,
    #[serde(rename = "ImageID", default)]
    image_id: String,
    #[serde(default)]
    labels: serde_json::Map<String, Value>,
}

/// The start time of process `pid` in clock ticks since boot (field 22 of its `stat`).
fn process_start(proc: &Path, pid: i64) -> Option<u64> {
    let stat = std::fs::read_to_string(proc.join(pid.to_string()).join("stat")).ok()?;
    // The command (field 2) is in parentheses and may hold spaces: count after its end.
    let rest = &stat[stat.rfind(')')? + 1..];
    let state = rest.split_whitespace().next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    rest.split_whitespace().nth(19)?.parse().ok()
}

fn as_u64(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// The container a `state.json` describes, when its init process is alive.
fn read_container(state_path: &Path, proc: &Path) -> Option<Container> {
    let text = std::fs::read(state_path).ok()?;
    let state: State = serde_json::from_slice(&text).ok()?;
    let pid = state.init_process_pid;
    if pid <= 0 || process_start(proc, pid)? != as_u64(&state.init_process_start)? {
        return None;
    }
    let netns = ContainerSink::namespace_of(proc, pid).ok()?;
    let dir = state_path.parent()?;
    let status = if dir.join("exec.fifo").exists() {
        "created"
    } else {
        "running"
    };
    // Labels from runc's state, then the bundle's OCI annotations and CRI-O's create-config
    // labels where runc's say nothing: all normalised together into nested maps.
    let mut raw: Vec<(String, skydive_graph::Value)> = runc_label_pairs(&state.config.labels);
    let mut image = String::new();
    let mut image_id = String::new();
    let bundle = raw
        .iter()
        .find(|(k, _)| k == "bundle")
        .and_then(|(_, v)| v.as_str())
        .map(PathBuf::from);
    if let Some(bundle) = bundle {
        let mut extra: Vec<(String, skydive_graph::Value)> = Vec::new();
        if let Ok(b) = std::fs::read(bundle.join("config.json"))
            && let Ok(cfg) = serde_json::from_slice::<Value>(&b)
            && let Some(Value::Object(ann)) = cfg.get("annotations")
        {
            extra.extend(ann.iter().map(|(k, v)| (k.clone(), normalize_json(v))));
        }
        if let Ok(b) = std::fs::read(bundle.join("artifacts/create-config"))
            && let Ok(cc) = serde_json::from_slice::<CreateConfig>(&b)
        {
            image = cc.image;
            image_id = cc.image_id;
            extra.extend(
                cc.labels
                    .iter()
                    .map(|(k, v)| (k.clone(), normalize_json(v))),
            );
        }
        for (k, v) in extra {
            if !raw.iter().any(|(r, _)| *r == k) {
                raw.push((k, v));
            }
        }
    }
    let labels = normalize_labels(raw);
    if image.is_empty() {
        // What containerd, CRI-O and OCI tools say of the image, among the annotations.
        const IMAGE_KEYS: [&str; 3] = [
            "io.kubernetes.cri.image-name",
            "io.kubernetes.cri-o.ImageName",
            "org.opencontainers.image.ref.name",
        ];
        image = IMAGE_KEYS
            .iter()
            .find_map(|k| {
                state
                    .config
                    .labels
                    .iter()
                    .find_map(|l| l.strip_prefix(k)?.strip_prefix('='))
            })
            .unwrap_or_default()
            .to_string();
    }
    let hosts = state
        .config
        .mounts
        .iter()
        .find(|m| m.destination == "/etc/hosts")
        .and_then(|m| std::fs::read_to_string(&m.source).ok())
        .and_then(|t| parse_hosts(&t));
    let joined = state
        .config
        .namespaces
        .iter()
        .any(|n| n.ty == "NEWNET" && !n.path.is_empty());
    let metadata = ContainerMetadata {
        id: state.id.clone(),
        image,
        image_id,
        runtime: "runc".into(),
        status: status.into(),
        init_process_pid: pid,
        hosts,
        labels,
    };
    Some(Container {
        manager: Manager::Runc,
        name: state.id.clone(),
        id: state.id,
        netns,
        joined,
        metadata: metadata.to_map(),
    })
}

/// The `state.json` files under `run_path` (at depth 1 or 2), and the folders to watch.
fn state_files(run_path: &Path, files: &mut Vec<PathBuf>, dirs: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(run_path) else {
        return;
    };
    dirs.push(run_path.to_path_buf());
    for e in entries.flatten() {
        let p = e.path();
        if !e.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        dirs.push(p.clone());
        let state = p.join("state.json");
        if state.exists() {
            files.push(state);
            continue;
        }
        // containerd: <run path>/<namespace>/<id>/state.json
        if let Ok(inner) = std::fs::read_dir(&p) {
            for e in inner.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    dirs.push(e.path());
                    let state = e.path().join("state.json");
                    if state.exists() {
                        files.push(state);
                    }
                }
            }
        }
    }
}

/// What one scan found: the containers by ID, and the folders to watch.
fn scan(run_paths: &[PathBuf], proc: &Path) -> (BTreeMap<String, Container>, Vec<PathBuf>) {
    let (mut files, mut dirs) = (Vec::new(), Vec::new());
    for p in run_paths {
        state_files(p, &mut files, &mut dirs);
    }
    let containers = files
        .iter()
        .filter_map(|f| read_container(f, proc))
        .map(|c| (c.id.clone(), c))
        .collect();
    (containers, dirs)
}

/// The runc probe.
pub struct RuncProbe {
    run_paths: Vec<PathBuf>,
    sink: ContainerSink,
    proc: PathBuf,
    shown: Mutex<BTreeMap<String, Container>>,
    scans: AtomicU64,
}

impl std::fmt::Debug for RuncProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuncProbe")
            .field("run_paths", &self.run_paths)
            .finish()
    }
}

impl RuncProbe {
    pub fn new(run_paths: Vec<PathBuf>, sink: ContainerSink, proc: PathBuf) -> RuncProbe {
        RuncProbe {
            run_paths,
            sink,
            proc,
            shown: Mutex::default(),
            scans: AtomicU64::new(0),
        }
    }

    /// Scans, reports what changed, and returns the folders to watch.
    async fn scan_and_report(&self) -> Result<Vec<PathBuf>, ProbeError> {
        let (paths, proc) = (self.run_paths.clone(), self.proc.clone());
        let (now, dirs) = tokio::task::spawn_blocking(move || scan(&paths, &proc))
            .await
            .map_err(|e| ProbeError::Unavailable(format!("runc scan: {e}")))?;
        self.scans.fetch_add(1, Ordering::Relaxed);
        let mut inputs = Vec::new();
        let mut started = false;
        {
            let mut shown = self.shown.lock().unwrap_or_else(|e| e.into_inner());
            for (id, c) in &now {
                if shown.get(id) != Some(c) {
                    started |= !shown.contains_key(id);
                    inputs.push(Input::Container(c.clone()));
                }
            }
            for id in shown.keys() {
                if !now.contains_key(id) {
                    inputs.push(Input::ContainerGone {
                        manager: Manager::Runc,
                        id: id.clone(),
                    });
                }
            }
            *shown = now;
        }
        for input in inputs {
            if !self.sink.send(input).await {
                return Err(ProbeError::TopologyGone);
            }
        }
        if started {
            self.sink.rescan();
        }
        Ok(dirs)
    }
}

const WATCH: AddWatchFlags = AddWatchFlags::IN_CREATE
    .union(AddWatchFlags::IN_DELETE)
    .union(AddWatchFlags::IN_MOVED_TO)
    .union(AddWatchFlags::IN_MOVED_FROM)
    .union(AddWatchFlags::IN_CLOSE_WRITE)
    .union(AddWatchFlags::IN_DELETE_SELF);

impl Probe for RuncProbe {
    fn name(&self) -> &'static str {
        "runc"
    }

    fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) -> ProbeRun {
        Box::pin(async move {
            let ino = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)
                .map_err(|e| ProbeError::Setup(format!("inotify: {e}")))?;
            let fd = crate::sys::register_inotify(InotifyFd(ino))
                .map_err(|e| ProbeError::Setup(format!("inotify: {e}")))?;
            let mut watched: BTreeSet<PathBuf> = BTreeSet::new();
            let mut tick = tokio::time::interval(Duration::from_secs(2));
            let mut soon: Option<tokio::time::Instant> = None;
            let mut rewatch = false;
            loop {
                let dirs = self.scan_and_report().await?;
                // Watching a folder again is harmless (the same watch); a folder removed and
                // made again at the same path (a container restarted with the same ID) needs
                // it. Only the folders not watched yet are added on the periodic pass.
                for d in dirs {
                    if (rewatch || !watched.contains(&d))
                        && fd.get_ref().0.add_watch(&d, WATCH).is_ok()
                    {
                        watched.insert(d);
                    }
                }
                rewatch = false;
                tokio::select! {
                    _ = stop.changed() => return Ok(()),
                    _ = tick.tick() => {}
                    _ = async {
                        match soon {
                            Some(t) => tokio::time::sleep_until(t).await,
                            None => std::future::pending().await,
                        }
                    } => soon = None,
                    r = fd.readable() => {
                        if let Ok(mut g) = r {
                            // Until the queue is empty (a burst can fill several reads).
                            while g.get_inner().0.read_events().is_ok_and(|e| !e.is_empty()) {}
                            g.clear_ready();
                        }
                        rewatch = true;
                        // runc writes state.json and then starts the process: look again
                        // a little later too.
                        soon = Some(tokio::time::Instant::now() + Duration::from_millis(50));
                    }
                }
            }
        })
    }

    fn status(&self) -> Value {
        let shown = self.shown.lock().unwrap_or_else(|e| e.into_inner());
        json!({
            "RunPaths": self.run_paths,
            "Containers": shown.len(),
            "Scans": self.scans.load(Ordering::Relaxed),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_whose_process_is_not_the_one_runc_started_is_no_container() {
        let dir = tempfile::tempdir().unwrap();
        let me = std::process::id() as i64;
        let start = process_start(Path::new("/proc"), me).unwrap();
        let state = |s: Value| {
            let d = dir.path().join("c1");
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(
                d.join("state.json"),
                json!({
                    "id": "c1",
                    "init_process_pid": me,
                    "init_process_start": s,
                    "config": {"labels": ["bundle=/nonexistent", "a.b=1"],
                               "namespaces": [{"type": "NEWNET", "path": ""}]}
                })
                .to_string(),
            )
            .unwrap();
            scan(&[dir.path().to_path_buf()], Path::new("/proc")).0
        };
        let found = state(json!(start));
        let c = &found["c1"];
        assert_eq!(c.manager, Manager::Runc);
        assert!(!c.joined);
        assert_eq!(
            serde_json::to_value(&c.metadata).unwrap(),
            json!({"ID": "c1", "Runtime": "runc", "Status": "running", "InitProcessPID": me,
                   "Labels": {"a": {"b": 1}, "bundle": "/nonexistent"}})
        );
        // The start time as a string, as older runc versions write it.
        assert_eq!(state(json!(start.to_string())).len(), 1);
        // Another process got the PID: not this container.
        assert!(state(json!(start + 1)).is_empty());
    }
}
