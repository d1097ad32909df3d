//! Skydive's topology probes: netlink (interfaces, addresses, routes, neighbours, counters),
//! netns (the host's network namespaces), ethtool (driver, features, speed), ovsdb (Open
//! vSwitch), docker (a Docker daemon's containers) and runc (containers from runc's state).
//! Each implements the [`Probe`] contract and runs under one [`Supervisor`] that
//! restarts a failed probe with a backoff; each has a pure part (the netlink reducer, the
//! namespace diff, the OVS reducer, the topology that turns them into nodes and edges) and an
//! adapter that talks to the kernel or the daemon. The one `unsafe` call (the ethtool ioctl)
//! is in `sys.rs`. Must not depend on the API server or storage: probes hold a hub handle.

#![deny(unsafe_code)]

pub mod containers;
pub mod docker;
pub mod ethtool;
pub mod host;
pub mod netlink;
pub mod netns;
pub mod oflow;
pub mod ovs;
pub mod ovsdb;
pub mod probe;
pub mod runc;
pub mod status;
#[allow(unsafe_code)]
mod sys;
pub mod topology;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use skydive_graph::Id;
use skydive_hub::HubHandle;

pub use probe::{Backoff, Probe, ProbeError, Supervisor};

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
    /// `ovs.*`, for the `ovsdb` probe.
    pub ovs: ovs::OvsConfig,
    /// `agent.topology.docker.*`, for the `docker` probe.
    pub docker: docker::DockerConfig,
    /// `agent.topology.runc.run_path`, for the `runc` probe.
    pub runc_run_paths: Vec<PathBuf>,
}

/// The probes that always run.
pub const ALWAYS_ON: [&str; 3] = ["netlink", "netns", "ethtool"];
/// The probes `agent.topology.probes` may add.
pub const OPTIONAL: [&str; 3] = ["ovsdb", "docker", "runc"];
/// Probes of Skydive that this build does not have yet, with the issue that brings them.
const LATER: [(&str, &str); 9] = [
    ("neutron", "the OpenStack connector"),
    ("socketinfo", "the troubleshooting toolkit"),
    ("lldp", "a later release"),
    ("lxd", "a later release"),
    ("libvirt", "a later release"),
    ("blockdev", "a later release"),
    ("opencontrail", "a later release"),
    ("vpp", "a later release"),
    ("bess", "a later release"),
];

/// A name of `agent.topology.probes` this build cannot run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnknownProbe {
    #[error(
        "probe {0:?} is not available in this build yet (it comes with {1}); remove it from agent.topology.probes"
    )]
    Later(String, &'static str),
    #[error(
        "unknown probe {0:?}: this build has ovsdb, docker and runc (netlink, netns and ethtool always run)"
    )]
    Unknown(String),
}

/// Checks the names of `agent.topology.probes`: every one must be a probe of this build.
pub fn check_names(names: &[String]) -> Result<(), UnknownProbe> {
    for name in names {
        if ALWAYS_ON.contains(&name.as_str()) || OPTIONAL.contains(&name.as_str()) {
            continue;
        }
        return Err(match LATER.iter().find(|(n, _)| n == name) {
            Some((_, with)) => UnknownProbe::Later(name.clone(), with),
            None => UnknownProbe::Unknown(name.clone()),
        });
    }
    Ok(())
}

/// The running topology probes.
#[derive(Debug)]
pub struct TopologyProbes {
    supervisor: Supervisor,
    host: Arc<host::HostTopology>,
}

impl TopologyProbes {
    /// `TopologyProbes` of `/api/status`.
    pub fn status(&self) -> serde_json::Value {
        self.supervisor.status()
    }

    /// The names of the probes running.
    pub fn names(&self) -> Vec<&'static str> {
        self.supervisor.names()
    }

    /// Stops every probe (their sockets close); the graph keeps what they reported.
    pub async fn stop(&self) {
        self.supervisor.stop().await;
        self.host.stop().await;
    }
}

/// Starts the probes that always run and those `extra` names (`agent.topology.probes`) over
/// the agent's graph `hub`.
pub fn start(
    cfg: ProbesConfig,
    extra: &[String],
    hub: HubHandle,
) -> std::io::Result<TopologyProbes> {
    check_names(extra).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let has = |name: &str| extra.iter().any(|p| p == name);
    let mut netns_run_paths = vec![cfg.netns_run_path.clone()];
    if has("docker") {
        netns_run_paths.push(cfg.docker.netns_run_path.clone());
    }
    let host = host::HostTopology::start(&cfg, netns_run_paths, hub.clone())?;
    let mut probes = host.probes();
    if has("docker") {
        probes.push(Arc::new(docker::DockerProbe::new(
            cfg.docker.clone(),
            host.containers(),
            cfg.proc_path.clone(),
        )));
    }
    if has("runc") {
        probes.push(Arc::new(runc::RuncProbe::new(
            cfg.runc_run_paths.clone(),
            host.containers(),
            cfg.proc_path.clone(),
        )));
    }
    if extra.iter().any(|p| p == "ovsdb") {
        probes.push(Arc::new(ovs::OvsdbProbe::new(
            cfg.ovs.clone(),
            hub,
            cfg.host_node.clone(),
            cfg.host_id,
        )));
    }
    Ok(TopologyProbes {
        supervisor: Supervisor::start(probes, Backoff::default()),
        host,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_names_are_checked_and_the_refusal_says_what_to_do() {
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(check_names(&names(&["ovsdb", "netlink", "netns"])), Ok(()));
        assert_eq!(check_names(&names(&["ovsdb", "docker", "runc"])), Ok(()));
        let e = check_names(&names(&["ovsdb", "neutron"])).unwrap_err();
        assert_eq!(
            e,
            UnknownProbe::Later("neutron".into(), "the OpenStack connector")
        );
        assert!(
            e.to_string()
                .contains("remove it from agent.topology.probes"),
            "{e}"
        );
        let e = check_names(&names(&["ovsbd"])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown probe \"ovsbd\": this build has ovsdb, docker and runc (netlink, netns and ethtool always run)"
        );
    }
}
