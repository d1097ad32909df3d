//! Skydive's configuration keys and their defaults, as typed settings.
//!
//! Every struct derives `Default` with Skydive's default values, and `#[serde(default)]` so
//! that a file may set any subset of keys. Free-form sections (`agent.metadata`,
//! `storage.<name>`, `auth.<name>`, `flow.application_ports`, `ui`) are JSON values.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The whole configuration.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Identity of this agent or analyzer; the host node's `Name`. Defaults to the hostname.
    pub host_id: String,
    /// Analyzers an agent publishes to (and analyzers replicate with), `addr:port`.
    pub analyzers: Vec<String>,
    pub analyzer: AnalyzerSettings,
    pub agent: AgentSettings,
    pub flow: FlowSettings,
    pub http: HttpSettings,
    pub tls: TlsSettings,
    pub etcd: EtcdSettings,
    /// Storage backends by name; each has a `driver` (`embedded`, `memory`, `elasticsearch`).
    pub storage: BTreeMap<String, Value>,
    /// Authentication backends by name; each has a `type` (`noauth`, `basic`, `keystone`).
    pub auth: BTreeMap<String, Value>,
    pub rbac: RbacSettings,
    pub logging: LoggingSettings,
    pub ovs: OvsSettings,
    pub ui: Value,
    pub cache: CacheSettings,
    pub gremlin: GremlinSettings,
}

impl Default for Settings {
    fn default() -> Self {
        let mut storage = BTreeMap::new();
        storage.insert(
            "embedded".to_string(),
            serde_json::json!({
                "driver": "embedded",
                "path": "/var/lib/skydive",
                "retention": {"max_age": 604800, "max_size": 1024},
            }),
        );
        storage.insert(
            "memory".to_string(),
            serde_json::json!({"driver": "memory"}),
        );
        storage.insert(
            "elasticsearch".to_string(),
            serde_json::json!({
                "driver": "elasticsearch",
                "hosts": ["http://127.0.0.1:9200"],
                "bulk_maxdelay": 5,
                "total_fields_limit": 1000,
                "index_entries_limit": 0,
                "index_age_limit": 0,
                "indices_to_keep": 0,
                "index_prefix": "skydive_",
                "use_flattened": true,
                "flattened_ignore_above": 32768,
            }),
        );
        let mut auth = BTreeMap::new();
        auth.insert("noauth".to_string(), serde_json::json!({"type": "noauth"}));
        auth.insert("basic".to_string(), serde_json::json!({"type": "basic"}));
        auth.insert("keystone".to_string(), serde_json::json!({"type": "keystone", "tenant_name": "admin", "domain_name": "Default"}));
        Settings {
            host_id: String::new(),
            analyzers: Vec::new(),
            analyzer: AnalyzerSettings::default(),
            agent: AgentSettings::default(),
            flow: FlowSettings::default(),
            http: HttpSettings::default(),
            tls: TlsSettings::default(),
            etcd: EtcdSettings::default(),
            storage,
            auth,
            rbac: RbacSettings::default(),
            logging: LoggingSettings::default(),
            ovs: OvsSettings::default(),
            ui: Value::Object(Default::default()),
            cache: CacheSettings::default(),
            gremlin: GremlinSettings::default(),
        }
    }
}

/// `analyzer.auth.*`, `agent.auth.*`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AuthUse {
    /// Name of an `auth.<name>` section.
    pub backend: String,
    pub username: String,
    pub password: String,
}

impl Default for AuthUse {
    fn default() -> Self {
        AuthUse {
            backend: "noauth".into(),
            username: String::new(),
            password: String::new(),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Default)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    pub api: AuthUse,
    pub cluster: AuthUse,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AnalyzerSettings {
    pub listen: String,
    pub auth: AuthSettings,
    pub flow: AnalyzerFlowSettings,
    pub topology: AnalyzerTopologySettings,
    pub startup: StartupSettings,
    pub ssh_enabled: bool,
}

impl Default for AnalyzerSettings {
    fn default() -> Self {
        AnalyzerSettings {
            listen: "127.0.0.1:8082".into(),
            auth: AuthSettings::default(),
            flow: AnalyzerFlowSettings::default(),
            topology: AnalyzerTopologySettings::default(),
            startup: StartupSettings::default(),
            ssh_enabled: false,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AnalyzerFlowSettings {
    /// Name of a `storage.<name>` section for flows.
    pub backend: String,
    pub max_buffer_size: u64,
    /// The largest file `POST /api/pcap` takes, in bytes.
    pub pcap_max_size: u64,
}

impl Default for AnalyzerFlowSettings {
    fn default() -> Self {
        AnalyzerFlowSettings {
            backend: "embedded".into(),
            max_buffer_size: 100_000,
            pcap_max_size: 1 << 30,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AnalyzerTopologySettings {
    /// Name of a `storage.<name>` section for the topology history.
    pub backend: String,
    pub probes: Vec<String>,
    /// Fabric definitions (`TOR1[Name=tor1] -> PORT1[Name=port1]`).
    pub fabric: Vec<String>,
    /// Seconds an agent may stay disconnected before its nodes are removed.
    pub agent_grace_period: u64,
    pub k8s: Value,
    pub istio: Value,
    pub ovn: Value,
}

impl Default for AnalyzerTopologySettings {
    fn default() -> Self {
        AnalyzerTopologySettings {
            backend: "embedded".into(),
            probes: Vec::new(),
            fabric: Vec::new(),
            agent_grace_period: 30,
            k8s: Value::Object(Default::default()),
            istio: Value::Object(Default::default()),
            ovn: Value::Object(Default::default()),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Default)]
#[serde(default, deny_unknown_fields)]
pub struct StartupSettings {
    pub capture_gremlin: String,
    pub capture_bpf: String,
    pub capture_type: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AgentSettings {
    pub listen: String,
    pub auth: AuthSettings,
    pub topology: AgentTopologySettings,
    pub flow: AgentFlowSettings,
    pub capture: CaptureSettings,
    /// Free map merged into the host node's metadata.
    pub metadata: Value,
    pub metadata_config: Value,
}

impl Default for AgentSettings {
    fn default() -> Self {
        AgentSettings {
            listen: "127.0.0.1:8081".into(),
            auth: AuthSettings::default(),
            topology: AgentTopologySettings::default(),
            flow: AgentFlowSettings::default(),
            capture: CaptureSettings::default(),
            metadata: Value::Object(Default::default()),
            metadata_config: Value::Object(Default::default()),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AgentTopologySettings {
    /// Extra probes; `netlink`, `netns` and the host node are always on.
    pub probes: Vec<String>,
    pub netlink: NetlinkSettings,
    pub netns: RunPath,
    pub docker: DockerSettings,
    pub socketinfo: SocketInfoSettings,
    pub runc: RuncSettings,
    pub lldp: Value,
    pub libvirt: Value,
    pub neutron: Value,
    pub blockdev: Value,
    pub vpp: Value,
    pub bess: Value,
}

impl Default for AgentTopologySettings {
    fn default() -> Self {
        AgentTopologySettings {
            probes: vec!["ovsdb".into()],
            netlink: NetlinkSettings::default(),
            netns: RunPath::default(),
            docker: DockerSettings::default(),
            socketinfo: SocketInfoSettings::default(),
            runc: RuncSettings::default(),
            lldp: Value::Object(Default::default()),
            libvirt: Value::Object(Default::default()),
            neutron: Value::Object(Default::default()),
            blockdev: Value::Object(Default::default()),
            vpp: Value::Object(Default::default()),
            bess: Value::Object(Default::default()),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct NetlinkSettings {
    /// Seconds between interface counter refreshes.
    pub metrics_update: u64,
}

impl Default for NetlinkSettings {
    fn default() -> Self {
        NetlinkSettings { metrics_update: 30 }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RunPath {
    pub run_path: String,
}

impl Default for RunPath {
    fn default() -> Self {
        RunPath {
            run_path: "/var/run/netns".into(),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DockerSettings {
    pub url: String,
    pub netns: RunPath,
}

impl Default for DockerSettings {
    fn default() -> Self {
        DockerSettings {
            url: "unix:///var/run/docker.sock".into(),
            netns: RunPath {
                run_path: "/var/run/docker/netns".into(),
            },
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RuncSettings {
    /// The root folders of runc's state.
    pub run_path: Vec<String>,
}

impl Default for RuncSettings {
    fn default() -> Self {
        RuncSettings {
            run_path: ["/run/containerd/runc", "/run/runc", "/run/runc-ctrs"]
                .map(String::from)
                .to_vec(),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SocketInfoSettings {
    pub host_update: u64,
}

impl Default for SocketInfoSettings {
    fn default() -> Self {
        SocketInfoSettings { host_update: 10 }
    }
}

/// A UDP or TCP port range bound to an address. (No serde default: files are merged onto
/// the full defaults before decoding, and each range has its own defaults.)
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PortRange {
    pub bind_address: String,
    pub port_min: u16,
    pub port_max: u16,
}

/// `agent.flow.pcapsocket`, whose range keys Skydive's code names `min_port`/`max_port`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PcapSocketRange {
    pub bind_address: String,
    #[serde(alias = "port_min")]
    pub min_port: u16,
    #[serde(alias = "port_max")]
    pub max_port: u16,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AgentFlowSettings {
    pub probes: Vec<String>,
    pub sflow: PortRange,
    pub pcapsocket: PcapSocketRange,
    pub netflow: PortRange,
    pub ebpf: Value,
}

impl Default for AgentFlowSettings {
    fn default() -> Self {
        AgentFlowSettings {
            probes: vec!["gopacket".into(), "pcapsocket".into()],
            sflow: PortRange {
                bind_address: "127.0.0.1".into(),
                port_min: 6345,
                port_max: 6355,
            },
            pcapsocket: PcapSocketRange {
                bind_address: "127.0.0.1".into(),
                min_port: 8100,
                max_port: 8132,
            },
            netflow: PortRange {
                bind_address: "127.0.0.1".into(),
                port_min: 6365,
                port_max: 6375,
            },
            ebpf: serde_json::json!({"polling_rate": 16000}),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct CaptureSettings {
    pub stats_update: u64,
}

impl Default for CaptureSettings {
    fn default() -> Self {
        CaptureSettings { stats_update: 1 }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct FlowSettings {
    /// Seconds an idle flow lives before it is expired.
    pub expire: u64,
    /// Seconds between flow updates sent to the analyzer.
    pub update: u64,
    /// Kept for compatibility; flows always travel over the agent's WebSocket.
    pub protocol: String,
    pub max_entries: u64,
    pub default_layer_key_mode: String,
    /// `{tcp: {80: HTTP}, udp: {...}}`.
    pub application_ports: Value,
    /// Seconds, by application (`arp`, `dns`).
    pub application_timeout: BTreeMap<String, u64>,
}

impl Default for FlowSettings {
    fn default() -> Self {
        FlowSettings {
            expire: 600,
            update: 60,
            protocol: "websocket".into(),
            max_entries: 500_000,
            default_layer_key_mode: "L2".into(),
            application_ports: Value::Object(Default::default()),
            application_timeout: BTreeMap::from([("arp".to_string(), 10), ("dns".to_string(), 10)]),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct WsSettings {
    pub ping_delay: u64,
    pub pong_timeout: u64,
    pub queue_size: u64,
    /// Most bytes queued per connection; a client that falls further behind is disconnected.
    pub queue_bytes: u64,
    pub enable_write_compression: bool,
    pub bulk_maxmsgs: u64,
    pub bulk_maxdelay: u64,
    /// Most elements sent in one `SyncReply`; the rest follow as `NodeAdded`/`EdgeAdded`.
    /// 0 sends the whole graph in one message.
    pub sync_chunk_size: u64,
}

impl Default for WsSettings {
    fn default() -> Self {
        WsSettings {
            ping_delay: 2,
            pong_timeout: 5,
            queue_size: 10_000,
            queue_bytes: 128 << 20,
            enable_write_compression: false,
            bulk_maxmsgs: 100,
            bulk_maxdelay: 2,
            sync_chunk_size: 5_000,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct HttpSettings {
    pub ws: WsSettings,
    pub cookie: BTreeMap<String, String>,
    pub rest: Value,
}

impl HttpSettings {
    /// `http.cookie`: cookies the agent and the client send with their requests.
    pub fn cookies(&self) -> BTreeMap<String, String> {
        self.cookie.clone()
    }

    /// `http.rest.debug`: every API request logged with its answer.
    pub fn rest_debug(&self) -> bool {
        self.rest
            .get("debug")
            .and_then(Value::as_bool)
            .unwrap_or(false)
    }
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            ws: WsSettings::default(),
            cookie: BTreeMap::new(),
            rest: serde_json::json!({"debug": false}),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Default)]
#[serde(default, deny_unknown_fields)]
pub struct TlsSettings {
    pub client_cert: String,
    pub client_key: String,
    pub server_cert: String,
    pub server_key: String,
    pub ca_cert: String,
    pub require_client_cert: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct EtcdSettings {
    /// Kept for compatibility: resources live in the embedded store unless `servers` names
    /// an external etcd.
    pub embedded: bool,
    pub listen: String,
    pub data_dir: String,
    pub max_wal_files: u64,
    pub max_snap_files: u64,
    pub name: String,
    pub servers: Vec<String>,
    pub peers: BTreeMap<String, String>,
    pub client_timeout: u64,
}

impl Default for EtcdSettings {
    fn default() -> Self {
        EtcdSettings {
            embedded: true,
            listen: "127.0.0.1:12379".into(),
            data_dir: "/var/lib/skydive/etcd".into(),
            max_wal_files: 5,
            max_snap_files: 5,
            name: String::new(),
            servers: Vec::new(),
            peers: BTreeMap::new(),
            client_timeout: 5,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RbacSettings {
    pub model: Value,
    pub policy: Vec<String>,
}

impl Default for RbacSettings {
    fn default() -> Self {
        RbacSettings {
            model: Value::Object(Default::default()),
            policy: Vec::new(),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LoggingSettings {
    pub level: String,
    pub backends: Vec<String>,
    pub file: Value,
    pub syslog: Value,
    pub encoder: String,
    pub color: bool,
}

impl Default for LoggingSettings {
    fn default() -> Self {
        LoggingSettings {
            level: "INFO".into(),
            backends: vec!["stderr".into()],
            file: serde_json::json!({"path": "/var/log/skydive.log"}),
            syslog: serde_json::json!({"address": "/dev/log", "protocol": "unixgram", "tag": "skydive"}),
            encoder: String::new(),
            color: true,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct OvsSettings {
    pub ovsdb: String,
    pub enable_stats: bool,
    pub oflow: Value,
}

impl OvsSettings {
    /// `ovs.oflow.enable`: the bridges' OpenFlow rules and groups become nodes.
    pub fn oflow_enabled(&self) -> bool {
        self.oflow
            .get("enable")
            .and_then(Value::as_bool)
            .unwrap_or(false)
    }
}

impl Default for OvsSettings {
    fn default() -> Self {
        OvsSettings {
            ovsdb: "unix:///var/run/openvswitch/db.sock".into(),
            enable_stats: false,
            oflow: serde_json::json!({"enable": false, "native": false}),
        }
    }
}

/// What one Gremlin evaluation may take, through the API and in subscriber filters.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct GremlinSettings {
    /// Elements one step may produce (about proportional to the memory the query holds).
    pub max_elements: u64,
    /// Seconds a query of the API may run.
    pub timeout: u64,
}

impl Default for GremlinSettings {
    fn default() -> Self {
        GremlinSettings {
            max_elements: 10_000_000,
            timeout: 60,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct CacheSettings {
    pub expire: u64,
    pub cleanup: u64,
}

impl Default for CacheSettings {
    fn default() -> Self {
        CacheSettings {
            expire: 300,
            cleanup: 30,
        }
    }
}
