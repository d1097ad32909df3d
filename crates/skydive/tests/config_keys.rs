//! Every key of `etc/skydive.yml.default` that this build honours reaches what it configures:
//! set to another value, it changes what a service is built from (`skydive::effective`: the
//! agent's, the analyzer's, the logging's and the client's configuration, which is all
//! `start` reads). The keys it does not honour are refused or said at start; the
//! configuration crate's tests check that every key of the file is one or the other.

use serde_json::{Value, json};
use skydive_config::{Config, KEYS, Source, Support};

/// Values that turn on what other keys configure: a basic authentication backend, the
/// startup capture, the cluster credentials, every logging backend.
fn base() -> Value {
    json!({
        "host_id": "h1",
        "analyzer": {
            "auth": {"api": {"backend": "basic"}, "cluster": {"backend": "basic"}},
            "startup": {"capture_gremlin": "G.V().Has('Name', 'eth0')"}
        },
        "agent": {
            "auth": {"api": {"backend": "basic"}, "cluster": {"username": "agent", "password": "pw"}}
        },
        "auth": {"basic": {"type": "basic", "users": {"admin": "pw"}}},
        "logging": {"backends": ["stderr", "file", "syslog"]}
    })
}

/// Another valid value for each honoured key.
const SAMPLES: &[(&str, &str)] = &[
    ("host_id", r#""h2""#),
    ("analyzers", r#"["127.0.0.1:9999"]"#),
    ("analyzer.listen", r#""127.0.0.1:9082""#),
    ("analyzer.auth.api.backend", r#""noauth""#),
    ("analyzer.auth.cluster.backend", r#""noauth""#),
    ("analyzer.flow.backend", r#""memory""#),
    ("analyzer.flow.max_buffer_size", "5"),
    ("analyzer.flow.pcap_max_size", "1048576"),
    ("analyzer.topology.backend", r#""memory""#),
    ("analyzer.topology.agent_grace_period", "5"),
    (
        "analyzer.topology.fabric",
        r#"["TOR1[Name=tor1] -> TOR1_PORT1[Name=port1]"]"#,
    ),
    (
        "analyzer.startup.capture_gremlin",
        r#""G.V().Has('Name', 'eth1')""#,
    ),
    ("analyzer.startup.capture_bpf", r#""icmp""#),
    ("analyzer.startup.capture_type", r#""pcap""#),
    ("agent.listen", r#""127.0.0.1:9081""#),
    ("agent.auth.api.backend", r#""noauth""#),
    ("agent.auth.cluster.username", r#""other""#),
    ("agent.auth.cluster.password", r#""secret""#),
    ("agent.topology.probes", "[]"),
    ("agent.topology.netlink.metrics_update", "5"),
    ("agent.topology.netns.run_path", r#""/tmp/netns""#),
    ("agent.topology.docker.url", r#""tcp://127.0.0.1:2375""#),
    (
        "agent.topology.docker.netns.run_path",
        r#""/tmp/docker-netns""#,
    ),
    ("agent.topology.runc.run_path", r#"["/tmp/runc"]"#),
    ("agent.flow.sflow.bind_address", r#""127.0.0.2""#),
    ("agent.flow.sflow.port_min", "6340"),
    ("agent.flow.sflow.port_max", "6360"),
    ("agent.flow.pcapsocket.bind_address", r#""127.0.0.2""#),
    ("agent.flow.pcapsocket.min_port", "8101"),
    ("agent.flow.pcapsocket.max_port", "8140"),
    ("agent.capture.stats_update", "3"),
    ("agent.metadata", r#"{"Rack": "r1"}"#),
    (
        "agent.metadata_config",
        r#"{"files": [{"path": "/etc/skydive/rack.yml", "name": "Rack"}]}"#,
    ),
    ("flow.expire", "100"),
    ("flow.update", "10"),
    ("flow.max_entries", "1000"),
    ("flow.default_layer_key_mode", r#""L3""#),
    ("flow.application_ports", r#"{"tcp": {"8080": "HTTP"}}"#),
    ("flow.application_timeout", r#"{"arp": 20, "dns": 10}"#),
    ("http.ws.ping_delay", "3"),
    ("http.ws.pong_timeout", "9"),
    ("http.ws.queue_size", "50"),
    ("http.ws.queue_bytes", "2097152"),
    ("http.ws.sync_chunk_size", "100"),
    ("http.cookie", r#"{"session": "abc"}"#),
    ("http.rest.debug", "true"),
    ("gremlin.max_elements", "1000"),
    ("gremlin.timeout", "5"),
    ("tls.client_cert", r#""/etc/skydive/client.pem""#),
    ("tls.client_key", r#""/etc/skydive/client.key""#),
    ("tls.server_cert", r#""/etc/skydive/server.pem""#),
    ("tls.server_key", r#""/etc/skydive/server.key""#),
    ("tls.ca_cert", r#""/etc/skydive/ca.pem""#),
    ("tls.require_client_cert", "true"),
    (
        "storage",
        r#"{"embedded": {"driver": "embedded", "path": "/tmp/skydive-other"}, "memory": {"driver": "memory"}}"#,
    ),
    (
        "auth",
        r#"{"noauth": {"type": "noauth"}, "basic": {"type": "basic", "users": {"ops": "pw2"}}}"#,
    ),
    ("rbac.policy", r#"["p, ops, capture, read"]"#),
    ("logging.level", r#""DEBUG""#),
    ("logging.backends", r#"["stdout"]"#),
    ("logging.file.path", r#""/tmp/skydive-test.log""#),
    ("logging.syslog.address", r#""127.0.0.1:514""#),
    ("logging.syslog.protocol", r#""udp""#),
    ("logging.syslog.tag", r#""sky""#),
    ("logging.encoder", r#""json""#),
    ("logging.color", "false"),
    ("ovs.ovsdb", r#""tcp:127.0.0.1:6640""#),
    ("ovs.enable_stats", "true"),
    ("ovs.oflow.enable", "true"),
];

fn set_path(tree: &mut Value, key: &str, value: Value) {
    let mut at = tree;
    let parts: Vec<&str> = key.split('.').collect();
    for p in &parts[..parts.len() - 1] {
        at = at
            .as_object_mut()
            .unwrap()
            .entry(*p)
            .or_insert_with(|| json!({}));
    }
    at.as_object_mut()
        .unwrap()
        .insert(parts[parts.len() - 1].to_string(), value);
}

fn effective(tree: &Value) -> String {
    let c = Config::load(
        &[Source::Text(tree.to_string())],
        std::iter::empty::<(&str, &str)>(),
    )
    .unwrap_or_else(|e| panic!("{e}: {tree}"));
    skydive::effective(&c.settings).unwrap_or_else(|e| panic!("{e:#}: {tree}"))
}

#[test]
fn every_honoured_key_changes_what_the_services_are_built_from() {
    let base = base();
    let before = effective(&base);
    let honoured: Vec<&str> = KEYS
        .iter()
        .filter(|(_, s)| *s == Support::Honoured)
        .map(|(k, _)| *k)
        .collect();
    for key in &honoured {
        let (_, sample) = SAMPLES
            .iter()
            .find(|(k, _)| k == key)
            .unwrap_or_else(|| panic!("no sample value for the honoured key {key}"));
        let mut tree = base.clone();
        set_path(&mut tree, key, serde_json::from_str(sample).unwrap());
        assert_ne!(
            effective(&tree),
            before,
            "{key} set to {sample} changes nothing a service is built from"
        );
    }
    let stale: Vec<&str> = SAMPLES
        .iter()
        .map(|(k, _)| *k)
        .filter(|k| !honoured.contains(k))
        .collect();
    assert!(stale.is_empty(), "samples for keys not honoured: {stale:?}");
}
