//! Entering network namespaces, for the topology probes and the capture sources.
//!
//! A network namespace is a property of a thread: a thread that enters one stays in it, and
//! the sockets it opens there stay bound to it wherever they are used afterwards. So
//! namespace-bound work either runs on a thread of its own that entered the namespace (a
//! capture's loop), or on a short-lived thread that opens what is needed and ends (a probe's
//! netlink sockets), never on a thread of the async runtime.
//!
//! Must not depend on anything of ours.

#![forbid(unsafe_code)]

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::sched::{CloneFlags, setns};

/// Why a namespace could not be entered.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("cannot open the namespace {}: {source}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file no longer is the namespace expected (a process's namespace file after the
    /// process moved, or a name reused).
    #[error("{} is no longer namespace {expected}", path.display())]
    Changed { path: PathBuf, expected: u64 },
    #[error("cannot enter the namespace {}: {source}", path.display())]
    Enter {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("the thread entering the namespace {} could not run: {source}", path.display())]
    Thread {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the thread entering the namespace {} panicked", path.display())]
    Panicked { path: PathBuf },
}

impl NetnsError {
    /// Whether the namespace is gone or was replaced (not an error worth reporting when a
    /// process exits between a scan and the opening of its namespace).
    pub fn is_gone(&self) -> bool {
        match self {
            NetnsError::Changed { .. } => true,
            NetnsError::Open { source, .. } => source.kind() == std::io::ErrorKind::NotFound,
            _ => false,
        }
    }
}

impl From<NetnsError> for std::io::Error {
    fn from(e: NetnsError) -> Self {
        let kind = if e.is_gone() {
            std::io::ErrorKind::NotFound
        } else {
            std::io::ErrorKind::Other
        };
        std::io::Error::new(kind, e)
    }
}

/// Moves the calling thread into the namespace of `path` (`/var/run/netns/NAME`,
/// `/proc/PID/ns/net`); with `expected`, only if the file is that namespace (by inode).
pub fn enter(path: &Path, expected: Option<u64>) -> Result<(), NetnsError> {
    let f = File::open(path).map_err(|source| NetnsError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    if let Some(expected) = expected {
        let inode = f
            .metadata()
            .map_err(|source| NetnsError::Open {
                path: path.to_path_buf(),
                source,
            })?
            .ino();
        if inode != expected {
            return Err(NetnsError::Changed {
                path: path.to_path_buf(),
                expected,
            });
        }
    }
    setns(f, CloneFlags::CLONE_NEWNET).map_err(|source| NetnsError::Enter {
        path: path.to_path_buf(),
        source,
    })
}

/// Runs `work` on a short-lived thread inside the namespace of `path` (checked to be
/// `expected` when given) and returns what it returns; the caller's thread stays where it is.
pub fn run_in<T, E>(
    path: &Path,
    expected: Option<u64>,
    work: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<Result<T, E>, NetnsError>
where
    T: Send + 'static,
    E: Send + 'static,
{
    let owned = path.to_path_buf();
    std::thread::Builder::new()
        .name("netns-enter".into())
        .spawn(move || -> Result<Result<T, E>, NetnsError> {
            enter(&owned, expected)?;
            Ok(work())
        })
        .map_err(|source| NetnsError::Thread {
            path: path.to_path_buf(),
            source,
        })?
        .join()
        .map_err(|_| NetnsError::Panicked {
            path: path.to_path_buf(),
        })?
}

/// The inode of a namespace file: the namespace's identity.
pub fn inode(path: &Path) -> std::io::Result<u64> {
    Ok(std::fs::metadata(path)?.ino())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_namespace_is_gone_and_names_its_path() {
        let e = enter(Path::new("/nonexistent/netns/x"), None).unwrap_err();
        assert!(e.is_gone());
        assert!(e.to_string().contains("/nonexistent/netns/x"), "{e}");
        assert_eq!(std::io::Error::from(e).kind(), std::io::ErrorKind::NotFound);
    }

    #[test]
    fn a_namespace_that_changed_is_refused_before_entering() {
        let own = Path::new("/proc/self/ns/net");
        let ino = inode(own).unwrap();
        let e = run_in(own, Some(ino + 1), || Ok::<_, ()>(())).unwrap_err();
        assert!(matches!(e, NetnsError::Changed { expected, .. } if expected == ino + 1));
        assert!(e.is_gone());
    }

    #[test]
    fn work_runs_inside_the_namespace_on_another_thread() {
        if !skydive_testkit::require_root("work_runs_inside_the_namespace_on_another_thread") {
            return;
        }
        let mut ns = skydive_testkit::Cleanup::default();
        let name = ns.unique_netns("nstest");
        let path = PathBuf::from(format!("/run/netns/{name}"));
        let want = inode(&path).unwrap();
        let seen = run_in(&path, Some(want), || {
            inode(Path::new("/proc/thread-self/ns/net"))
        })
        .unwrap()
        .unwrap();
        assert_eq!(seen, want);
        // The caller stayed in its own namespace.
        assert_ne!(inode(Path::new("/proc/thread-self/ns/net")).unwrap(), want);
    }
}
