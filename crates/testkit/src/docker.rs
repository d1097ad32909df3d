//! A real Docker daemon for a test: `dockerd` (Debian's `docker.io`) started in a folder of its
//! own (data, exec root, socket, its containerd), without iptables, forwarding or the default
//! bridge, and an image imported from a busybox root file system (`busybox-static`), so that
//! nothing is pulled. Everything is removed when the guard is dropped, however the test ends:
//! containers, the daemon and its containerd, their mounts, the folder.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{eventually, sh, sh_quiet};

/// The image every container of the tests runs: busybox, with `sleep` and `sh`.
pub const IMAGE: &str = "skydive-test-busybox:1";

/// Whether the daemon, runc and busybox are installed.
pub fn available() -> bool {
    crate::has_program("dockerd") && crate::has_program("runc") && Path::new(BUSYBOX).exists()
}

const BUSYBOX: &str = "/bin/busybox";

/// A busybox root file system under `dir` (`bin/busybox` and the applets the tests use).
pub fn rootfs(dir: &Path) -> PathBuf {
    let root = dir.join("rootfs");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    for d in ["etc", "proc", "sys", "dev", "tmp"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy(BUSYBOX, root.join("bin/busybox")).unwrap();
    for applet in ["sh", "sleep", "ip", "cat", "hostname", "ping"] {
        let _ = std::os::unix::fs::symlink("busybox", root.join("bin").join(applet));
    }
    root
}

/// A running daemon.
#[derive(Debug)]
pub struct Dockerd {
    pub dir: PathBuf,
    /// `unix://…/docker.sock`.
    pub url: String,
    child: Option<Child>,
}

impl Dockerd {
    /// Starts a daemon in `dir` (which must exist) and imports [`IMAGE`].
    pub fn start(dir: &Path) -> Dockerd {
        let mut d = Dockerd {
            dir: dir.to_path_buf(),
            url: format!("unix://{}", dir.join("docker.sock").display()),
            child: None,
        };
        d.restart();
        let root = rootfs(dir);
        sh(&format!(
            "tar -C {} -cf {dir}/rootfs.tar . && {} import {dir}/rootfs.tar {IMAGE}",
            root.display(),
            d.cli(),
            dir = dir.display()
        ));
        d
    }

    /// The netns run path of this daemon (`agent.topology.docker.netns.run_path`).
    pub fn netns_run_path(&self) -> PathBuf {
        self.dir.join("exec/netns")
    }

    /// The `docker` command line for this daemon.
    pub fn cli(&self) -> String {
        format!("docker -H {}", self.url)
    }

    /// Runs `docker <args>` against this daemon and returns what it printed (trimmed).
    pub fn docker(&self, args: &str) -> String {
        sh(&format!("{} {args}", self.cli())).trim().to_string()
    }

    /// Starts the daemon again after [`Dockerd::stop`] (the first start too).
    pub fn restart(&mut self) {
        let dir = &self.dir;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("dockerd.log"))
            .unwrap();
        let child = Command::new("dockerd")
            .args(["--iptables=false", "--ip-forward=false", "--bridge=none"])
            .arg(format!("--data-root={}", dir.join("data").display()))
            .arg(format!("--exec-root={}", dir.join("exec").display()))
            .arg(format!("--pidfile={}", dir.join("dockerd.pid").display()))
            .arg(format!("--host={}", self.url))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("dockerd starts");
        self.child = Some(child);
        let cli = self.cli();
        eventually(Duration::from_secs(30), "dockerd answers", || {
            Command::new("sh")
                .arg("-c")
                .arg(format!("{cli} version >/dev/null 2>&1"))
                .status()
                .is_ok_and(|s| s.success())
        });
    }

    /// Stops the daemon as a service manager would (SIGTERM; it stops its containers).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            sh_quiet(&format!("kill -TERM {}", c.id()));
            let waited = std::time::Instant::now();
            while waited.elapsed() < Duration::from_secs(20) {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        if self.child.is_some() {
            sh_quiet(&format!(
                "{cli} ps -aq | xargs -r {cli} rm -f",
                cli = self.cli()
            ));
        }
        self.stop();
        let dir = self.dir.display().to_string();
        // What a daemon killed mid-way leaves: its containerd and shims, their mounts.
        sh_quiet(&format!("pkill -KILL -f 'containerd.*{dir}'"));
        sh_quiet(&format!(
            "grep -o ' {dir}[^ ]*' /proc/self/mounts | sort -r | xargs -r -n1 umount -l"
        ));
    }
}
