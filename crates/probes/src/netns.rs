//! The netns probe: the network namespaces of the host (Skydive's netns nodes), and
//! the sockets each namespace's netlink probe uses.
//!
//! Two sources: the named namespaces of `agent.topology.netns.run_path` (`/var/run/netns`,
//! watched with inotify, as `ip netns add` makes them), and the namespaces processes run in
//! (`/proc/<pid>/ns/net`, scanned periodically), so that containers are found without a
//! container probe. A namespace is identified by its inode; a named one wins over the same
//! namespace seen through a process.

use std::collections::BTreeMap;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use nix::sys::socket::{AddressFamily, SockFlag, SockType, socket};
use tokio::io::unix::AsyncFd;
use tokio::sync::{Notify, mpsc};

use crate::netlink::socket::{event_socket, request_socket};
use crate::sys::InotifyFd;

/// A network namespace, by inode.
pub type NsKey = u64;

/// What the agent knows of a namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NsInfo {
    pub key: NsKey,
    /// The file name under the run path, or `<command>-<pid>` for a process's namespace.
    pub name: String,
    pub path: PathBuf,
    pub inode: u64,
    pub device: u64,
    /// Named (under the run path) rather than found through a process.
    pub named: bool,
}

/// The sockets of a namespace, opened inside it.
pub struct NsSockets {
    pub events: netlink_sys::Socket,
    pub requests: netlink_sys::Socket,
    /// For ethtool ioctls, which apply to the namespace of the socket.
    pub ioctl: OwnedFd,
}

impl std::fmt::Debug for NsSockets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NsSockets")
    }
}

/// Opens the sockets in the calling thread's namespace.
pub fn open_sockets() -> io::Result<NsSockets> {
    let ioctl = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    Ok(NsSockets {
        events: event_socket()?,
        requests: request_socket()?,
        ioctl,
    })
}

/// Opens the sockets inside namespace `key`, reached through `path`: a thread enters it,
/// creates them and ends; the sockets stay bound to the namespace.
///
/// The namespace behind a process's path can change between the scan that found it and the
/// opening (`ip netns add` runs in the new namespace, then goes back to its own): the file
/// opened is checked to be namespace `key`, and the error is `NotFound` otherwise.
pub fn open_sockets_in(path: &Path, key: NsKey) -> io::Result<NsSockets> {
    skydive_netns::run_in(path, Some(key), open_sockets)?
}

/// The namespace of the agent itself (the host's).
pub fn own_namespace() -> io::Result<NsInfo> {
    let path = PathBuf::from("/proc/self/ns/net");
    let md = std::fs::metadata(&path)?;
    Ok(NsInfo {
        key: md.ino(),
        name: "host".into(),
        path,
        inode: md.ino(),
        device: md.dev(),
        named: false,
    })
}

/// The named namespaces under `run_path`. Files not yet bound to a namespace (`ip netns
/// add` creates the file, then mounts the namespace on it) are left out: their device is
/// not the namespace file system's, `nsfs_dev`.
pub fn named_namespaces(run_path: &Path, nsfs_dev: u64) -> Vec<NsInfo> {
    let Ok(dir) = std::fs::read_dir(run_path) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in dir.flatten() {
        let path = entry.path();
        let Ok(md) = std::fs::metadata(&path) else {
            continue;
        };
        if md.dev() != nsfs_dev {
            continue;
        }
        out.push(NsInfo {
            key: md.ino(),
            name: entry.file_name().to_string_lossy().into_owned(),
            path,
            inode: md.ino(),
            device: md.dev(),
            named: true,
        });
    }
    out
}

/// The namespaces processes run in (under `proc`, `/proc` on a real host), one entry per
/// namespace, named after its lowest process.
pub fn process_namespaces(proc: &Path) -> Vec<NsInfo> {
    let Ok(dir) = std::fs::read_dir(proc) else {
        return Vec::new();
    };
    let mut by_inode: BTreeMap<u64, (u32, NsInfo)> = BTreeMap::new();
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let path = entry.path().join("ns/net");
        let Ok(md) = std::fs::metadata(&path) else {
            continue;
        };
        if by_inode.get(&md.ino()).is_some_and(|(p, _)| *p < pid) {
            continue;
        }
        let comm = std::fs::read_to_string(entry.path().join("comm"))
            .map(|c| c.trim().to_string())
            .unwrap_or_else(|_| "process".into());
        by_inode.insert(
            md.ino(),
            (
                pid,
                NsInfo {
                    key: md.ino(),
                    name: format!("{comm}-{pid}"),
                    path,
                    inode: md.ino(),
                    device: md.dev(),
                    named: false,
                },
            ),
        );
    }
    by_inode.into_values().map(|(_, i)| i).collect()
}

/// A change of the set of namespaces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NsEvent {
    Added(NsInfo),
    /// The path or name changed (a named namespace replaced a process's view of it).
    Changed(NsInfo),
    Removed(NsKey),
}

/// The set of namespaces other than the agent's: named ones (the first run path that has a
/// namespace names it), then processes' ones.
pub fn scan(run_paths: &[PathBuf], proc: &Path, own: &NsInfo) -> BTreeMap<NsKey, NsInfo> {
    let mut all: BTreeMap<NsKey, NsInfo> = BTreeMap::new();
    for n in process_namespaces(proc) {
        all.insert(n.key, n);
    }
    for run_path in run_paths.iter().rev() {
        for n in named_namespaces(run_path, own.device) {
            all.insert(n.key, n);
        }
    }
    all.remove(&own.key);
    all
}

/// The events that turn `old` into `new`.
pub fn diff(old: &BTreeMap<NsKey, NsInfo>, new: &BTreeMap<NsKey, NsInfo>) -> Vec<NsEvent> {
    let mut out = Vec::new();
    for (k, n) in new {
        match old.get(k) {
            None => out.push(NsEvent::Added(n.clone())),
            Some(o) if o != n => out.push(NsEvent::Changed(n.clone())),
            Some(_) => {}
        }
    }
    for k in old.keys() {
        if !new.contains_key(k) {
            out.push(NsEvent::Removed(*k));
        }
    }
    out
}

/// Watches the run paths: the first (`agent.topology.netns.run_path`) is created when
/// missing, the others (a container runtime's) are watched when they exist, and scanned
/// periodically anyway.
fn watch_run_paths(run_paths: &[PathBuf]) -> Option<AsyncFd<InotifyFd>> {
    if let Some(first) = run_paths.first()
        && let Err(e) = std::fs::create_dir_all(first)
    {
        tracing::warn!(path = %first.display(), "cannot create the namespaces directory: {e}");
    }
    let ino = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).ok()?;
    let flags = AddWatchFlags::IN_CREATE
        | AddWatchFlags::IN_DELETE
        | AddWatchFlags::IN_MOVED_FROM
        | AddWatchFlags::IN_MOVED_TO
        | AddWatchFlags::IN_ATTRIB
        | AddWatchFlags::IN_CLOSE_WRITE;
    for (i, run_path) in run_paths.iter().enumerate() {
        if let Err(e) = ino.add_watch(run_path.as_path(), flags)
            && (i == 0 || run_path.exists())
        {
            tracing::warn!(path = %run_path.display(), "cannot watch the namespaces directory, relying on periodic scans: {e}");
        }
    }
    crate::sys::register_inotify(InotifyFd(ino)).ok()
}

/// Watches the namespaces and reports their changes on `tx` (the first report lists every
/// namespace) until `tx` closes. `scan_every` paces the scan of processes; `rescan` asks
/// for one at once (a container probe that saw a container start).
pub async fn watch(
    run_paths: Vec<PathBuf>,
    proc: PathBuf,
    own: NsInfo,
    scan_every: Duration,
    rescan: Arc<Notify>,
    tx: mpsc::Sender<NsEvent>,
) {
    let inotify = watch_run_paths(&run_paths);
    let mut known: BTreeMap<NsKey, NsInfo> = BTreeMap::new();
    let mut tick = tokio::time::interval(scan_every);
    // After a file event, scan again a little later: `ip netns add` mounts the namespace on
    // the file after creating it, and a mount is not a file event.
    let mut rescans: Vec<tokio::time::Instant> = Vec::new();
    loop {
        let (rp, pp, o) = (run_paths.clone(), proc.clone(), own.clone());
        let now = tokio::task::spawn_blocking(move || scan(&rp, &pp, &o))
            .await
            .unwrap_or_default();
        for ev in diff(&known, &now) {
            if tx.send(ev).await.is_err() {
                return;
            }
        }
        known = now;
        let next_rescan = rescans.iter().min().copied();
        tokio::select! {
            _ = tick.tick() => {}
            _ = async {
                match next_rescan {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            } => {
                let now = tokio::time::Instant::now();
                rescans.retain(|t| *t > now);
            }
            r = async {
                match &inotify {
                    Some(fd) => fd.readable().await.map(|mut g| {
                        let _ = g.get_inner().0.read_events();
                        g.clear_ready();
                    }),
                    None => std::future::pending().await,
                }
            } => {
                if r.is_ok() {
                    let now = tokio::time::Instant::now();
                    rescans = [20u64, 100, 500]
                        .iter()
                        .map(|ms| now + Duration::from_millis(*ms))
                        .collect();
                }
            }
            _ = rescan.notified() => {}
            _ = tx.closed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(key: u64, name: &str) -> NsInfo {
        NsInfo {
            key,
            name: name.into(),
            path: PathBuf::from(format!("/var/run/netns/{name}")),
            inode: key,
            device: 4,
            named: true,
        }
    }

    #[test]
    fn diff_reports_added_changed_and_removed_namespaces() {
        let old: BTreeMap<NsKey, NsInfo> =
            [(1, info(1, "a")), (2, info(2, "b"))].into_iter().collect();
        let mut new = old.clone();
        new.remove(&1);
        new.insert(2, info(2, "b2"));
        new.insert(3, info(3, "c"));
        assert_eq!(
            diff(&old, &new),
            vec![
                NsEvent::Changed(info(2, "b2")),
                NsEvent::Added(info(3, "c")),
                NsEvent::Removed(1)
            ]
        );
        assert!(diff(&new, &new).is_empty());
    }

    #[test]
    fn plain_files_in_the_run_path_are_not_namespaces() {
        // What `ip netns add` leaves for an instant: an empty file, not yet a mount point.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pending"), b"").unwrap();
        let nsfs_dev = std::fs::metadata("/proc/self/ns/net").unwrap().dev();
        assert!(named_namespaces(dir.path(), nsfs_dev).is_empty());
        assert!(named_namespaces(Path::new("/nonexistent-skydive-dir"), nsfs_dev).is_empty());
    }

    #[test]
    fn process_namespaces_are_found_and_named_after_a_process() {
        let own = own_namespace().unwrap();
        let all = process_namespaces(Path::new("/proc"));
        let mine = all
            .iter()
            .find(|n| n.key == own.key)
            .expect("the agent's own namespace");
        assert!(mine.name.contains('-'), "{}", mine.name);
        assert!(mine.path.ends_with("ns/net"));
        assert!(
            !scan(&[PathBuf::from("/nonexistent")], Path::new("/proc"), &own)
                .contains_key(&own.key)
        );
    }
}
