//! What this build does with every key of the configuration. A key is honoured, or it is not
//! (the feature is not built yet, or means nothing here) and then a configuration that sets it
//! to anything but its default is refused at start, or told loudly at start, naming the key:
//! a setting read and ignored would make users believe they have what they do not.
//!
//! Every key of `etc/skydive.yml.default` has its entry (a test walks the file), and every
//! honoured key is proved to reach what it configures (a test in the `skydive` package
//! changes each one and compares the services' effective configuration).

/// What the build does with a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Support {
    /// The key changes what the services do.
    Honoured,
    /// Not in this build: a value other than the default stops the start (exit code 64), the
    /// message saying what will bring it.
    Refused(&'static str),
    /// Accepted without effect: a value other than the default is said loudly at start, with
    /// why it has none or what will bring it.
    NoEffect(&'static str),
}

use Support::{Honoured, NoEffect, Refused};

const ETCD: &str =
    "resources live in the embedded store; etcd comes with several analyzers with etcd";
const PEERS: &str = "analyzers do not peer yet (it comes with several analyzers with etcd)";
const OPENSTACK: &str = "the OpenStack connector is not in this build yet";
const TOOLKIT: &str = "it comes with the troubleshooting toolkit";
const LATER: &str = "this probe is not in this build";
const ES: &str =
    "flows in Elasticsearch come with the next part of the Elasticsearch/OpenSearch backend";
const SERVER_CREDENTIALS: &str =
    "a server does not log in to its own API; clients take credentials on their command line";

/// Every key, or free-form section, of the configuration.
pub const KEYS: &[(&str, Support)] = &[
    ("host_id", Honoured),
    ("analyzers", Honoured),
    ("analyzer.listen", Honoured),
    ("analyzer.auth.api.backend", Honoured),
    ("analyzer.auth.api.username", NoEffect(SERVER_CREDENTIALS)),
    ("analyzer.auth.api.password", NoEffect(SERVER_CREDENTIALS)),
    ("analyzer.auth.cluster.backend", Honoured),
    ("analyzer.auth.cluster.username", NoEffect(PEERS)),
    ("analyzer.auth.cluster.password", NoEffect(PEERS)),
    ("analyzer.flow.backend", Honoured),
    ("analyzer.flow.max_buffer_size", Honoured),
    ("analyzer.flow.pcap_max_size", Honoured),
    ("analyzer.topology.backend", Honoured),
    (
        "analyzer.topology.probes",
        Refused("no analyzer-side probe (k8s, istio, ovn, …) is in this build yet"),
    ),
    ("analyzer.topology.fabric", Honoured),
    ("analyzer.topology.agent_grace_period", Honoured),
    (
        "analyzer.topology.k8s",
        NoEffect("the Kubernetes probe is not in this build"),
    ),
    (
        "analyzer.topology.istio",
        NoEffect("the Istio probe is not in this build"),
    ),
    ("analyzer.topology.ovn", NoEffect(OPENSTACK)),
    ("analyzer.startup.capture_gremlin", Honoured),
    ("analyzer.startup.capture_bpf", Honoured),
    ("analyzer.startup.capture_type", Honoured),
    (
        "analyzer.ssh_enabled",
        Refused("the agents' SSH terminal is not in this build"),
    ),
    ("agent.listen", Honoured),
    ("agent.auth.api.backend", Honoured),
    ("agent.auth.api.username", NoEffect(SERVER_CREDENTIALS)),
    ("agent.auth.api.password", NoEffect(SERVER_CREDENTIALS)),
    (
        "agent.auth.cluster.backend",
        NoEffect(
            "an agent serves no cluster endpoint; it logs in to its analyzers with \
             agent.auth.cluster.username and password",
        ),
    ),
    ("agent.auth.cluster.username", Honoured),
    ("agent.auth.cluster.password", Honoured),
    ("agent.topology.probes", Honoured),
    ("agent.topology.netlink.metrics_update", Honoured),
    ("agent.topology.netns.run_path", Honoured),
    ("agent.topology.docker.url", Honoured),
    ("agent.topology.docker.netns.run_path", Honoured),
    ("agent.topology.socketinfo.host_update", NoEffect(TOOLKIT)),
    ("agent.topology.runc.run_path", Honoured),
    ("agent.topology.lldp", NoEffect(LATER)),
    ("agent.topology.libvirt", NoEffect(LATER)),
    ("agent.topology.neutron", NoEffect(OPENSTACK)),
    ("agent.topology.blockdev", NoEffect(LATER)),
    ("agent.topology.vpp", NoEffect(LATER)),
    ("agent.topology.bess", NoEffect(LATER)),
    (
        "agent.flow.probes",
        NoEffect("every capture type of this build is ready at start, whatever this lists"),
    ),
    ("agent.flow.sflow.bind_address", Honoured),
    ("agent.flow.sflow.port_min", Honoured),
    ("agent.flow.sflow.port_max", Honoured),
    ("agent.flow.pcapsocket.bind_address", Honoured),
    ("agent.flow.pcapsocket.min_port", Honoured),
    ("agent.flow.pcapsocket.max_port", Honoured),
    ("agent.flow.netflow.bind_address", NoEffect(TOOLKIT)),
    ("agent.flow.netflow.port_min", NoEffect(TOOLKIT)),
    ("agent.flow.netflow.port_max", NoEffect(TOOLKIT)),
    (
        "agent.flow.ebpf",
        NoEffect("eBPF captures are not in this build"),
    ),
    ("agent.capture.stats_update", Honoured),
    ("agent.metadata", Honoured),
    ("agent.metadata_config", Honoured),
    ("flow.expire", Honoured),
    ("flow.update", Honoured),
    (
        "flow.protocol",
        NoEffect("flows always travel over the agent's WebSocket to its analyzers"),
    ),
    ("flow.max_entries", Honoured),
    ("flow.default_layer_key_mode", Honoured),
    ("flow.application_ports", Honoured),
    ("flow.application_timeout", Honoured),
    ("http.ws.ping_delay", Honoured),
    ("http.ws.pong_timeout", Honoured),
    ("http.ws.queue_size", Honoured),
    ("http.ws.queue_bytes", Honoured),
    (
        "http.ws.enable_write_compression",
        NoEffect(
            "WebSocket messages are sent uncompressed: the WebSocket library of this build \
             has no permessage-deflate",
        ),
    ),
    (
        "http.ws.bulk_maxmsgs",
        NoEffect("the events of one graph batch travel together whatever this says"),
    ),
    (
        "http.ws.bulk_maxdelay",
        NoEffect("the events of one graph batch travel together whatever this says"),
    ),
    ("http.ws.sync_chunk_size", Honoured),
    ("http.cookie", Honoured),
    ("http.rest.debug", Honoured),
    ("tls.client_cert", Honoured),
    ("tls.client_key", Honoured),
    ("tls.server_cert", Honoured),
    ("tls.server_key", Honoured),
    ("tls.ca_cert", Honoured),
    ("tls.require_client_cert", Honoured),
    ("etcd.embedded", NoEffect(ETCD)),
    ("etcd.listen", NoEffect(ETCD)),
    ("etcd.data_dir", NoEffect(ETCD)),
    ("etcd.max_wal_files", NoEffect(ETCD)),
    ("etcd.max_snap_files", NoEffect(ETCD)),
    ("etcd.name", NoEffect(ETCD)),
    ("etcd.servers", Refused(ETCD)),
    ("etcd.peers", NoEffect(ETCD)),
    ("etcd.client_timeout", NoEffect(ETCD)),
    ("storage", Honoured),
    ("auth", Honoured),
    (
        "rbac.model",
        NoEffect("the role model is Skydive's built-in one; add rules with rbac.policy"),
    ),
    ("rbac.policy", Honoured),
    ("logging.level", Honoured),
    ("logging.backends", Honoured),
    ("logging.file.path", Honoured),
    ("logging.syslog.address", Honoured),
    ("logging.syslog.protocol", Honoured),
    ("logging.syslog.tag", Honoured),
    ("logging.encoder", Honoured),
    ("logging.color", Honoured),
    ("ovs.ovsdb", Honoured),
    ("ovs.enable_stats", Honoured),
    ("ovs.oflow.enable", Honoured),
    (
        "ovs.oflow.native",
        NoEffect(
            "OpenFlow rules are read with ovs-ofctl; a native OpenFlow client is not in this build",
        ),
    ),
    (
        "ui",
        NoEffect(
            "the web UI of this build reads none of it (it is served, as every key, at \
             GET /api/config/ui)",
        ),
    ),
    ("gremlin.max_elements", Honoured),
    ("gremlin.timeout", Honoured),
    (
        "cache.expire",
        NoEffect("this build keeps no cache of flow enhancers"),
    ),
    (
        "cache.cleanup",
        NoEffect("this build keeps no cache of flow enhancers"),
    ),
];

/// A driver of `storage.<name>` that cannot keep flows in this build yet (`analyzer.flow.backend`), and why.
pub const LATER_FLOW_DRIVERS: &[(&str, &str)] = &[("elasticsearch", ES)];

/// What the build does with `key` (a key of the table, or one below a free-form section of
/// it).
pub fn support(key: &str) -> Option<Support> {
    KEYS.iter()
        .filter(|(k, _)| key == *k || key.starts_with(&format!("{k}.")))
        .max_by_key(|(k, _)| k.len())
        .map(|(_, s)| *s)
}
