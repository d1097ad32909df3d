//! What an agent is built from: everything it takes from the configuration, in one place.
//! `Agent::start_config` reads nothing else, so that what each key changes can be seen (and is
//! tested: every honoured key of the configuration changes this or the analyzer's).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use skydive_api::auth::AuthConfig;
use skydive_config::{ConfigError, Settings, WsSettings};

use crate::captures::CaptureSettings;

/// A password, kept out of logs: its `Debug` shows a digest, enough to tell two apart.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use std::hash::{Hash, Hasher};
        let mut h = std::hash::DefaultHasher::new();
        self.0.hash(&mut h);
        write!(f, "Secret({:08x})", h.finish() as u32)
    }
}

/// How the agent reaches its analyzers.
#[derive(Clone, Debug, PartialEq)]
pub struct LinkSettings {
    /// `analyzers`: `host:port` of each.
    pub analyzers: Vec<String>,
    /// `http.ws.ping_delay` + `pong_timeout`: silence after which a link is dead.
    pub read_deadline: Duration,
    /// `agent.auth.cluster.username` and `password`.
    pub credentials: Option<(String, Secret)>,
    /// `http.cookie`: cookies sent when dialling.
    pub cookies: BTreeMap<String, String>,
}

/// What the topology probes are told.
#[derive(Clone, Debug, PartialEq)]
pub struct ProbeSettings {
    /// `agent.topology.probes`.
    pub names: Vec<String>,
    /// `agent.topology.netns.run_path`.
    pub netns_run_path: PathBuf,
    /// `agent.topology.netlink.metrics_update`.
    pub metrics_every: Duration,
    /// `ovs.*`.
    pub ovs: skydive_probes::ovs::OvsConfig,
    /// `agent.topology.docker.*`.
    pub docker: skydive_probes::docker::DockerConfig,
    /// `agent.topology.runc.run_path`.
    pub runc_run_paths: Vec<PathBuf>,
}

/// An agent's configuration.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    pub host_id: String,
    /// `agent.listen`.
    pub listen: String,
    /// `agent.metadata`: keys added to the host node.
    pub metadata: serde_json::Value,
    /// `agent.metadata_config.files`: files whose content the host node carries.
    pub metadata_files: Vec<crate::metadata::MetadataFile>,
    /// `agent.auth.api`.
    pub auth: AuthConfig,
    pub probes: ProbeSettings,
    pub captures: CaptureSettings,
    pub links: LinkSettings,
    /// `http.ws`, for the agent's own WebSocket endpoints.
    pub ws: WsSettings,
    /// `http.rest.debug`: every request logged.
    pub rest_debug: bool,
    /// `tls.*`: HTTPS and WSS when a server certificate is set; `wss://` to the analyzers
    /// when TLS is configured, with the client certificate when set.
    pub tls: skydive_tls::TlsFiles,
    /// `gremlin.*`: what one query of the agent's API may take.
    pub gremlin: skydive_api::server::GremlinLimits,
}

impl AgentConfig {
    /// The agent's part of a configuration; what it cannot run is refused naming the key.
    pub fn from_settings(s: &Settings) -> Result<AgentConfig, ConfigError> {
        skydive_probes::check_names(&s.agent.topology.probes)
            .map_err(|e| ConfigError::invalid("agent.topology.probes", e.to_string()))?;
        let docker_url = &s.agent.topology.docker.url;
        if !["unix:///", "tcp://", "http://"]
            .iter()
            .any(|p| docker_url.starts_with(p))
        {
            return Err(ConfigError::invalid(
                "agent.topology.docker.url",
                format!("{docker_url:?}: a unix:///path or tcp://host:port address is needed"),
            ));
        }
        let cluster = &s.agent.auth.cluster;
        Ok(AgentConfig {
            host_id: s.host_id.clone(),
            listen: s.agent.listen.clone(),
            metadata: s.agent.metadata.clone(),
            metadata_files: crate::metadata::files(&s.agent.metadata_config)
                .map_err(|e| ConfigError::invalid("agent.metadata_config", e))?,
            auth: AuthConfig::agent(s),
            probes: ProbeSettings {
                names: s.agent.topology.probes.clone(),
                netns_run_path: s.agent.topology.netns.run_path.clone().into(),
                metrics_every: Duration::from_secs(s.agent.topology.netlink.metrics_update.max(1)),
                ovs: skydive_probes::ovs::OvsConfig {
                    address: s.ovs.ovsdb.clone(),
                    stats: s.ovs.enable_stats,
                    oflow: s.ovs.oflow_enabled(),
                },
                docker: skydive_probes::docker::DockerConfig {
                    url: s.agent.topology.docker.url.clone(),
                    netns_run_path: s.agent.topology.docker.netns.run_path.clone().into(),
                },
                runc_run_paths: s
                    .agent
                    .topology
                    .runc
                    .run_path
                    .iter()
                    .map(PathBuf::from)
                    .collect(),
            },
            captures: CaptureSettings::from_settings(s),
            links: LinkSettings {
                analyzers: s.analyzers.clone(),
                read_deadline: Duration::from_secs(
                    s.http.ws.ping_delay + s.http.ws.pong_timeout.max(1),
                ),
                credentials: (!cluster.username.is_empty())
                    .then(|| (cluster.username.clone(), Secret(cluster.password.clone()))),
                cookies: s.http.cookies(),
            },
            ws: s.http.ws.clone(),
            rest_debug: s.http.rest_debug(),
            tls: skydive_tls::TlsFiles::from_settings(s),
            gremlin: skydive_api::server::GremlinLimits::of(&s.gremlin),
        })
    }
}
