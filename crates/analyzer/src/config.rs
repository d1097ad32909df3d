//! What an analyzer is built from: everything it takes from the configuration, in one place.
//! `Analyzer::start_config` reads nothing else, so that what each key changes can be seen (and
//! is tested: every honoured key of the configuration changes this or the agent's).

use std::collections::BTreeMap;
use std::time::Duration;

use skydive_api::auth::AuthConfig;
use skydive_config::{ConfigError, Settings, WsSettings};
use skydive_storage::Retention;

use crate::fabric::Fabric;
use crate::resources::ResourceDefaults;

/// Where one storage section keeps things.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BackendSpec {
    /// `storage.<name>` of driver `embedded`: its directory and retention.
    Embedded {
        name: String,
        path: String,
        retention: Retention,
    },
    /// `storage.<name>` of driver `memory`.
    Memory { name: String },
    /// `storage.<name>` of driver `elasticsearch`: the cluster and the index layout.
    Elasticsearch {
        name: String,
        options: skydive_config::ElasticsearchStorage,
    },
}

impl BackendSpec {
    /// The section's name.
    pub fn name(&self) -> &str {
        match self {
            BackendSpec::Embedded { name, .. }
            | BackendSpec::Memory { name }
            | BackendSpec::Elasticsearch { name, .. } => name,
        }
    }

    fn of(s: &Settings, key: &str, name: &str) -> Result<BackendSpec, ConfigError> {
        match s.storage_driver(name) {
            Some("embedded") => {
                let opts = s.embedded_storage(name).ok_or_else(|| {
                    ConfigError::invalid(key, format!("storage.{name}: invalid embedded options"))
                })?;
                Ok(BackendSpec::Embedded {
                    name: name.to_string(),
                    path: opts.path,
                    retention: Retention {
                        max_age: opts.max_age.saturating_mul(1000) as i64,
                        max_size: opts.max_size.saturating_mul(1 << 20),
                    },
                })
            }
            Some("memory") => Ok(BackendSpec::Memory {
                name: name.to_string(),
            }),
            Some("elasticsearch") => Ok(BackendSpec::Elasticsearch {
                name: name.to_string(),
                options: s.elasticsearch_storage(name)?,
            }),
            other => Err(ConfigError::invalid(
                key,
                format!("storage.{name}: no usable driver ({other:?})"),
            )),
        }
    }
}

/// What flow tables made at the analyzer (uploaded pcap files) are given.
#[derive(Clone, Debug, PartialEq)]
pub struct FlowTableSettings {
    /// `flow.application_ports`.
    pub app_ports: BTreeMap<(u8, u16), String>,
    /// `flow.application_timeout`, ms.
    pub app_timeouts: BTreeMap<String, i64>,
    /// `flow.max_entries`.
    pub max_entries: usize,
    /// `flow.update`, ms.
    pub update_ms: i64,
    /// `flow.expire`, ms.
    pub expire_ms: i64,
}

impl FlowTableSettings {
    pub fn table(&self) -> skydive_flow::TableConfig {
        skydive_flow::TableConfig {
            app_ports: self.app_ports.clone().into_iter().collect(),
            app_timeouts: self.app_timeouts.clone().into_iter().collect(),
            max_entries: self.max_entries.max(1),
            update_ms: self.update_ms,
            expire_ms: self.expire_ms,
            ..Default::default()
        }
    }
}

/// `analyzer.startup`: a capture created at the first start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StartupCapture {
    pub gremlin: String,
    pub bpf: String,
    pub kind: String,
}

/// An analyzer's configuration.
#[derive(Clone, Debug)]
pub struct AnalyzerConfig {
    pub host_id: String,
    /// `analyzer.listen`.
    pub listen: String,
    /// `analyzer.auth.*`, `rbac.policy`.
    pub auth: AuthConfig,
    /// `analyzer.topology.backend`: resources and the topology history.
    pub topology_backend: BackendSpec,
    /// `analyzer.flow.backend`.
    pub flow_backend: BackendSpec,
    /// `analyzer.flow.max_buffer_size`: flows queued before storage.
    pub flow_buffer: usize,
    /// `analyzer.flow.pcap_max_size`: the largest file `POST /api/pcap` takes, in bytes.
    pub pcap_max_size: u64,
    /// Flow tables of uploads.
    pub tables: FlowTableSettings,
    /// `analyzer.topology.agent_grace_period`.
    pub grace_period: Duration,
    pub startup_capture: Option<StartupCapture>,
    /// What resources get for fields left empty (`flow.default_layer_key_mode`).
    pub resource_defaults: ResourceDefaults,
    /// `http.ws`.
    pub ws: WsSettings,
    /// `http.rest.debug`: every request logged.
    pub rest_debug: bool,
    /// `tls.*`: HTTPS and WSS when a server certificate is set; the webhooks' trust.
    pub tls: skydive_tls::TlsFiles,
    /// `gremlin.*`: what one query may take.
    pub gremlin: skydive_api::server::GremlinLimits,
    /// `analyzer.topology.fabric`.
    pub fabric: Fabric,
    /// `--recover`: a damaged embedded store is moved aside and what can be read of it kept,
    /// instead of stopping the start.
    pub recover: bool,
    /// The whole configuration, for `GET /api/config/{key}`.
    pub served: Served,
}

/// The configuration as `GET /api/config/{key}` serves it. It echoes every key and changes
/// nothing, so it is left out of the analyzer's `Debug`, which says what the analyzer does.
#[derive(Clone, Default)]
pub struct Served(pub serde_json::Value);

impl Served {
    /// The configuration `settings` holds, secrets masked: every `password` key and the
    /// users of `auth.<name>.users` are served as `********`.
    pub fn of(settings: &Settings) -> Served {
        let mut v = serde_json::to_value(settings).unwrap_or_default();
        mask(&mut v, "");
        Served(v)
    }

    /// `GET /api/config/{key}`: the value of a dotted key, as JSON; `null` for a key the
    /// configuration does not have, as Skydive answers.
    pub async fn get(
        axum::extract::State(served): axum::extract::State<Served>,
        axum::extract::Path(key): axum::extract::Path<String>,
    ) -> skydive_api::ApiResult {
        let value = key
            .split('.')
            .try_fold(&served.0, |v, k| v.get(k))
            .unwrap_or(&serde_json::Value::Null);
        skydive_api::error::json(axum::http::StatusCode::OK, value)
    }
}

const MASK: &str = "********";

/// An empty secret stays empty: the mask says that one is set, not what it is.
fn mask_value(v: &mut serde_json::Value) {
    if !matches!(v, serde_json::Value::Null) && v.as_str() != Some("") {
        *v = MASK.into();
    }
}

fn mask(v: &mut serde_json::Value, path: &str) {
    let serde_json::Value::Object(m) = v else {
        return;
    };
    for (k, v) in m.iter_mut() {
        let here = if path.is_empty() {
            k.clone()
        } else {
            format!("{path}.{k}")
        };
        let secret = k.eq_ignore_ascii_case("password")
            || (here.starts_with("auth.") && k == "users" && v.is_object());
        if secret {
            match v {
                serde_json::Value::Object(users) => users.values_mut().for_each(mask_value),
                other => mask_value(other),
            }
        } else {
            mask(v, &here);
        }
    }
}

impl std::fmt::Debug for Served {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Served")
    }
}

impl AnalyzerConfig {
    /// The analyzer's part of a configuration.
    pub fn from_settings(s: &Settings) -> Result<AnalyzerConfig, ConfigError> {
        let startup = &s.analyzer.startup;
        Ok(AnalyzerConfig {
            host_id: s.host_id.clone(),
            listen: s.analyzer.listen.clone(),
            auth: AuthConfig::analyzer(s),
            topology_backend: BackendSpec::of(
                s,
                "analyzer.topology.backend",
                &s.analyzer.topology.backend,
            )?,
            flow_backend: BackendSpec::of(s, "analyzer.flow.backend", &s.analyzer.flow.backend)?,
            flow_buffer: s.analyzer.flow.max_buffer_size as usize,
            pcap_max_size: s.analyzer.flow.pcap_max_size,
            tables: FlowTableSettings {
                app_ports: s.application_ports(),
                app_timeouts: s.application_timeouts_ms(),
                max_entries: s.flow.max_entries as usize,
                update_ms: s.flow.update.saturating_mul(1000) as i64,
                expire_ms: s.flow.expire.saturating_mul(1000) as i64,
            },
            grace_period: Duration::from_secs(s.analyzer.topology.agent_grace_period),
            startup_capture: (!startup.capture_gremlin.trim().is_empty()).then(|| StartupCapture {
                gremlin: startup.capture_gremlin.clone(),
                bpf: startup.capture_bpf.clone(),
                kind: startup.capture_type.clone(),
            }),
            resource_defaults: ResourceDefaults {
                layer_key_mode: s.flow.default_layer_key_mode.clone(),
            },
            ws: s.http.ws.clone(),
            rest_debug: s.http.rest_debug(),
            tls: skydive_tls::TlsFiles::from_settings(s),
            gremlin: skydive_api::server::GremlinLimits::of(&s.gremlin),
            fabric: Fabric::parse(&s.analyzer.topology.fabric).map_err(|e| {
                ConfigError::invalid(
                    "analyzer.topology.fabric",
                    format!("{:?}: {}", e.definition, e.reason),
                )
            })?,
            recover: false,
            served: Served::of(s),
        })
    }
}
