//! Skydive's configuration: YAML files with Skydive 0.28's keys and defaults, merged in order,
//! overridden by `SKYDIVE_*` environment variables, checked, and turned into typed
//! [`Settings`]. Unknown keys are reported as warnings; invalid values are errors naming the
//! key. Must not depend on anything of ours, nor do I/O beyond reading its files.

#![forbid(unsafe_code)]

pub mod settings;
pub mod support;

use std::path::PathBuf;

use serde_json::{Map, Value};
pub use settings::*;
pub use support::{KEYS, Support, support};

/// Where configuration comes from.
#[derive(Clone, Debug)]
pub enum Source {
    File(PathBuf),
    /// `-`: read standard input.
    Stdin,
    /// Text given directly (tests, `SKYDIVE_CONFIG`-style callers).
    Text(String),
}

/// Why the configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot parse configuration {origin}: {message}")]
    Parse { origin: String, message: String },
    #[error("invalid configuration value for key `{key}`: {message}")]
    Invalid { key: String, message: String },
}

impl ConfigError {
    pub fn invalid(key: &str, message: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key: key.to_string(),
            message: message.into(),
        }
    }
}

/// A loaded configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub settings: Settings,
    /// Unknown keys and deprecated ones, to be logged.
    pub warnings: Vec<String>,
    tree: Value,
}

/// Sections whose content is free-form: any key below them is accepted.
const FREE_FORM: &[&str] = &[
    "agent.metadata",
    "agent.metadata_config",
    "agent.flow.ebpf",
    "agent.topology.lldp",
    "agent.topology.libvirt",
    "agent.topology.neutron",
    "agent.topology.blockdev",
    "agent.topology.vpp",
    "agent.topology.bess",
    "analyzer.topology.k8s",
    "analyzer.topology.istio",
    "analyzer.topology.ovn",
    "storage",
    "auth",
    "flow.application_ports",
    "flow.application_timeout",
    "http.cookie",
    "etcd.peers",
    "rbac.model",
    "ui",
];

/// Deprecated keys Skydive still honours, and where they moved.
const RELOCATED: &[(&str, &[&str])] = &[
    (
        "auth.type",
        &[
            "analyzer.auth.api.backend",
            "analyzer.auth.cluster.backend",
            "agent.auth.api.backend",
        ],
    ),
    (
        "auth.analyzer_username",
        &[
            "analyzer.auth.cluster.username",
            "agent.auth.cluster.username",
        ],
    ),
    (
        "auth.analyzer_password",
        &[
            "analyzer.auth.cluster.password",
            "agent.auth.cluster.password",
        ],
    ),
    ("agent.flow.stats_update", &["agent.capture.stats_update"]),
    ("sflow.bind_address", &["agent.flow.sflow.bind_address"]),
    ("sflow.port_min", &["agent.flow.sflow.port_min"]),
    ("sflow.port_max", &["agent.flow.sflow.port_max"]),
    ("docker.url", &["agent.topology.docker.url"]),
    (
        "docker.netns.run_path",
        &["agent.topology.docker.netns.run_path"],
    ),
    ("netns.run_path", &["agent.topology.netns.run_path"]),
    ("analyzer.storage.backend", &["analyzer.flow.backend"]),
    (
        "analyzer.storage.max_flow_buffer_size",
        &["analyzer.flow.max_buffer_size"],
    ),
    ("graph.backend", &["analyzer.topology.backend"]),
    ("k8s.config_file", &["analyzer.topology.k8s.config_file"]),
    ("k8s.probes", &["analyzer.topology.k8s.probes"]),
];

fn yaml_to_json(y: &yaml_rust2::Yaml, path: &str) -> Result<Value, String> {
    use yaml_rust2::Yaml;
    Ok(match y {
        Yaml::Null => Value::Null,
        Yaml::Boolean(b) => Value::Bool(*b),
        Yaml::Integer(i) => Value::from(*i),
        Yaml::Real(r) => r
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number)
            .ok_or_else(|| format!("invalid number {r} at `{path}`"))?,
        Yaml::String(s) => Value::String(s.clone()),
        Yaml::Array(a) => Value::Array(
            a.iter()
                .enumerate()
                .map(|(i, v)| yaml_to_json(v, &format!("{path}[{i}]")))
                .collect::<Result<_, _>>()?,
        ),
        Yaml::Hash(h) => {
            let mut m = Map::new();
            for (k, v) in h {
                let key = match k {
                    Yaml::String(s) => s.clone(),
                    Yaml::Integer(i) => i.to_string(),
                    Yaml::Boolean(b) => b.to_string(),
                    Yaml::Real(r) => r.clone(),
                    _ => return Err(format!("unsupported key {k:?} at `{path}`")),
                };
                let child = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                m.insert(key, yaml_to_json(v, &child)?);
            }
            Value::Object(m)
        }
        Yaml::Alias(_) | Yaml::BadValue => {
            return Err(format!("unsupported YAML value at `{path}`"));
        }
    })
}

/// Parses YAML (or JSON, which is YAML) text into a tree.
pub fn parse_text(text: &str, origin: &str) -> Result<Value, ConfigError> {
    let docs = yaml_rust2::YamlLoader::load_from_str(text).map_err(|e| ConfigError::Parse {
        origin: origin.to_string(),
        message: e.to_string(),
    })?;
    let Some(doc) = docs.first() else {
        return Ok(Value::Object(Map::new()));
    };
    let v = yaml_to_json(doc, "").map_err(|message| ConfigError::Parse {
        origin: origin.to_string(),
        message,
    })?;
    match v {
        Value::Object(_) => Ok(v),
        Value::Null => Ok(Value::Object(Map::new())),
        _ => Err(ConfigError::Parse {
            origin: origin.to_string(),
            message: "the top level must be a map of keys".into(),
        }),
    }
}

fn get_path<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(v, |cur, k| cur.get(k))
}

/// Removes the value at `path`, and the maps the removal leaves empty.
fn take_path(v: &mut Value, path: &str) -> Option<Value> {
    let obj = v.as_object_mut()?;
    match path.split_once('.') {
        None => obj.remove(path),
        Some((head, rest)) => {
            let child = obj.get_mut(head)?;
            let taken = take_path(child, rest);
            if taken.is_some() && child.as_object().is_some_and(Map::is_empty) {
                obj.remove(head);
            }
            taken
        }
    }
}

fn set_path(v: &mut Value, path: &str, value: Value) {
    let mut cur = v;
    let parts: Vec<&str> = path.split('.').collect();
    for (i, k) in parts.iter().enumerate() {
        if !cur.is_object() {
            *cur = Value::Object(Map::new());
        }
        let obj = cur.as_object_mut().expect("just made an object");
        if i == parts.len() - 1 {
            obj.insert(k.to_string(), value);
            return;
        }
        cur = obj
            .entry(k.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
    }
}

fn merge(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(existing) if existing.is_object() && v.is_object() => merge(existing, v),
                    _ => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) => *b = o,
    }
}

fn is_free_form(path: &str) -> bool {
    FREE_FORM
        .iter()
        .any(|f| path == *f || path.starts_with(&format!("{f}.")))
}

/// Removes keys unknown to `defaults` from `v`, returning their paths.
fn strip_unknown(v: &mut Value, defaults: &Value, prefix: &str, unknown: &mut Vec<String>) {
    let Value::Object(m) = v else { return };
    let keys: Vec<String> = m.keys().cloned().collect();
    for k in keys {
        let path = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        if is_free_form(&path) {
            continue;
        }
        match defaults.get(&k) {
            None => {
                unknown.push(path);
                m.remove(&k);
            }
            Some(d) if d.is_object() => {
                if let Some(child) = m.get_mut(&k) {
                    strip_unknown(child, d, &path, unknown);
                }
            }
            Some(_) => {}
        }
    }
}

/// Every leaf key of the defaults, with its default value (free-form sections excluded).
fn leaf_keys(v: &Value, prefix: &str, out: &mut Vec<(String, Value)>) {
    match v {
        Value::Object(m) if !is_free_form(prefix) || prefix.is_empty() => {
            for (k, child) in m {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                if is_free_form(&path) {
                    out.push((path, child.clone()));
                } else {
                    leaf_keys(child, &path, out);
                }
            }
        }
        _ => out.push((prefix.to_string(), v.clone())),
    }
}

/// The environment variable that overrides `key`: `SKYDIVE_` + the key upper-cased, with
/// `.` and `-` replaced by `_`.
pub fn env_name(key: &str) -> String {
    format!(
        "SKYDIVE_{}",
        key.replace(['.', '-'], "_").to_ascii_uppercase()
    )
}

/// Converts an environment value to the type of the key's default.
fn env_value(key: &str, raw: &str, default: &Value) -> Result<Value, ConfigError> {
    Ok(match default {
        Value::Bool(_) => Value::Bool(match raw.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => true,
            "false" | "0" | "no" | "off" | "" => false,
            _ => {
                return Err(ConfigError::invalid(
                    key,
                    format!("{raw:?} is not a boolean"),
                ));
            }
        }),
        Value::Number(n) if n.is_u64() || n.is_i64() => Value::from(
            raw.trim()
                .parse::<i64>()
                .map_err(|_| ConfigError::invalid(key, format!("{raw:?} is not an integer")))?,
        ),
        Value::Number(_) => Value::from(
            raw.trim()
                .parse::<f64>()
                .map_err(|_| ConfigError::invalid(key, format!("{raw:?} is not a number")))?,
        ),
        Value::Array(_) => Value::Array(
            raw.split([' ', ','])
                .filter(|s| !s.is_empty())
                .map(|s| Value::String(s.to_string()))
                .collect(),
        ),
        Value::Object(_) => parse_text(raw, key)?,
        _ => Value::String(raw.to_string()),
    })
}

/// A listen address that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidListen(String);

/// Parses a listen address: `host:port`, `:port` or `port`; an empty host means 127.0.0.1.
/// IPv6 is written `[::1]:8082`.
pub fn parse_listen(s: &str) -> Result<(String, u16), InvalidListen> {
    parse_listen_text(s).map_err(InvalidListen)
}

fn parse_listen_text(s: &str) -> Result<(String, u16), String> {
    let s = s.trim();
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, p) = rest
            .split_once("]:")
            .ok_or_else(|| format!("{s:?} is not [ipv6]:port"))?;
        (h.to_string(), p)
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), p),
            None => (String::new(), s),
        }
    };
    let port: u16 = port
        .parse()
        .map_err(|_| format!("{s:?} is not a listen address (host:port, :port or port)"))?;
    let host = if host.is_empty() {
        "127.0.0.1".to_string()
    } else {
        host
    };
    Ok((host, port))
}

fn check_one_of(key: &str, value: &str, allowed: &[&str]) -> Result<(), ConfigError> {
    if allowed.contains(&value) {
        Ok(())
    } else {
        Err(ConfigError::invalid(
            key,
            format!("{value:?} is not one of {}", allowed.join(", ")),
        ))
    }
}

impl Settings {
    /// The `driver` of the storage section `name`.
    pub fn storage_driver(&self, name: &str) -> Option<&str> {
        self.storage.get(name)?.get("driver")?.as_str()
    }

    /// `flow.application_ports` as (IP protocol, port) → application name.
    pub fn application_ports(&self) -> std::collections::BTreeMap<(u8, u16), String> {
        let mut out = std::collections::BTreeMap::new();
        for (proto, n) in [("tcp", 6u8), ("udp", 17u8)] {
            if let Some(m) = self
                .flow
                .application_ports
                .get(proto)
                .and_then(Value::as_object)
            {
                for (port, app) in m {
                    if let (Ok(p), Some(a)) = (port.parse::<u16>(), app.as_str()) {
                        out.insert((n, p), a.to_string());
                    }
                }
            }
        }
        out
    }

    /// `flow.application_timeout`: how long an idle flow of an application lives, in ms, by
    /// lower-case application name.
    pub fn application_timeouts_ms(&self) -> std::collections::BTreeMap<String, i64> {
        self.flow
            .application_timeout
            .iter()
            .map(|(app, secs)| (app.to_ascii_lowercase(), secs.saturating_mul(1000) as i64))
            .collect()
    }

    /// The options of the embedded storage section `name` (validated at load).
    pub fn embedded_storage(&self, name: &str) -> Option<EmbeddedStorage> {
        embedded_options(name, self.storage.get(name)?).ok()
    }

    /// The options of the elasticsearch storage section `name` (validated at load when a
    /// backend uses it).
    pub fn elasticsearch_storage(&self, name: &str) -> Result<ElasticsearchStorage, ConfigError> {
        let section = self.storage.get(name).ok_or_else(|| {
            ConfigError::invalid(&format!("storage.{name}"), "no such storage section")
        })?;
        elasticsearch_options(name, section)
    }

    /// The `type` of the authentication section `name`.
    pub fn auth_type(&self, name: &str) -> Option<&str> {
        self.auth.get(name)?.get("type")?.as_str()
    }

    fn validate(&self) -> Result<(), ConfigError> {
        for (key, v) in [
            ("analyzer.listen", &self.analyzer.listen),
            ("agent.listen", &self.agent.listen),
        ] {
            parse_listen(v).map_err(|m| ConfigError::invalid(key, m.to_string()))?;
        }
        for (i, a) in self.analyzers.iter().enumerate() {
            parse_listen(a)
                .map_err(|m| ConfigError::invalid(&format!("analyzers[{i}]"), m.to_string()))?;
        }
        check_one_of(
            "logging.level",
            &self.logging.level.to_ascii_uppercase(),
            &[
                "CRITICAL", "ERROR", "WARNING", "WARN", "NOTICE", "INFO", "DEBUG", "TRACE",
            ],
        )?;
        check_one_of("flow.protocol", &self.flow.protocol, &["udp", "websocket"])?;
        check_one_of(
            "flow.default_layer_key_mode",
            &self.flow.default_layer_key_mode,
            &["L2", "L3"],
        )?;
        for (key, backend) in [
            ("analyzer.topology.backend", &self.analyzer.topology.backend),
            ("analyzer.flow.backend", &self.analyzer.flow.backend),
        ] {
            let driver = self.storage_driver(backend).ok_or_else(|| {
                ConfigError::invalid(
                    key,
                    format!("no storage section `storage.{backend}` with a driver"),
                )
            })?;
            check_one_of(
                &format!("storage.{backend}.driver"),
                driver,
                &["embedded", "memory", "elasticsearch"],
            )?;
            if key == "analyzer.flow.backend"
                && let Some((_, why)) = support::LATER_FLOW_DRIVERS
                    .iter()
                    .find(|(d, _)| *d == driver)
            {
                return Err(ConfigError::invalid(
                    key,
                    format!("storage.{backend}: {why}, which is not in this build yet"),
                ));
            }
            if driver == "elasticsearch" {
                elasticsearch_options(backend, &self.storage[backend.as_str()])?;
            }
        }
        for (name, section) in &self.storage {
            if self.storage_driver(name) == Some("embedded") {
                embedded_options(name, section)?;
            }
        }
        for (key, backend) in [
            ("analyzer.auth.api.backend", &self.analyzer.auth.api.backend),
            (
                "analyzer.auth.cluster.backend",
                &self.analyzer.auth.cluster.backend,
            ),
            ("agent.auth.api.backend", &self.agent.auth.api.backend),
        ] {
            let t = self.auth_type(backend).ok_or_else(|| {
                ConfigError::invalid(
                    key,
                    format!("no authentication section `auth.{backend}` with a type"),
                )
            })?;
            check_one_of(
                &format!("auth.{backend}.type"),
                t,
                &["noauth", "basic", "keystone"],
            )?;
        }
        if self.gremlin.max_elements == 0 {
            return Err(ConfigError::invalid(
                "gremlin.max_elements",
                "must be at least 1",
            ));
        }
        if self.gremlin.timeout == 0 {
            return Err(ConfigError::invalid(
                "gremlin.timeout",
                "must be at least 1 second",
            ));
        }
        if self.flow.update == 0 {
            return Err(ConfigError::invalid(
                "flow.update",
                "must be at least 1 second",
            ));
        }
        if self.flow.expire == 0 {
            return Err(ConfigError::invalid(
                "flow.expire",
                "must be at least 1 second",
            ));
        }
        if self.http.ws.ping_delay == 0 {
            return Err(ConfigError::invalid(
                "http.ws.ping_delay",
                "must be at least 1 second",
            ));
        }
        if self.http.ws.queue_size == 0 {
            return Err(ConfigError::invalid(
                "http.ws.queue_size",
                "must be at least 1",
            ));
        }
        if self.http.ws.queue_bytes < 1 << 20 {
            return Err(ConfigError::invalid(
                "http.ws.queue_bytes",
                "must be at least 1048576 (1 MiB)",
            ));
        }
        if !self.agent.metadata.is_object() {
            return Err(ConfigError::invalid("agent.metadata", "must be a map"));
        }
        for (key, section, field) in [
            ("ovs.oflow.enable", &self.ovs.oflow, "enable"),
            ("ovs.oflow.native", &self.ovs.oflow, "native"),
            ("http.rest.debug", &self.http.rest, "debug"),
        ] {
            if section.get(field).is_some_and(|v| !v.is_boolean()) {
                return Err(ConfigError::invalid(key, "must be true or false"));
            }
        }
        Ok(())
    }
}

/// The keys set to something else than their default that this build does not honour: an
/// error for the first refused one, a warning for each without effect.
fn unsupported_settings(tree: &Value, defaults: &Value) -> Result<Vec<String>, ConfigError> {
    let mut warnings = Vec::new();
    for (key, support) in KEYS {
        if get_path(tree, key) == get_path(defaults, key) {
            continue;
        }
        match support {
            Support::Honoured => {}
            Support::Refused(why) => {
                return Err(ConfigError::invalid(
                    key,
                    format!("{why}; remove it from the configuration"),
                ));
            }
            Support::NoEffect(why) => {
                warnings.push(format!("configuration key `{key}` has no effect: {why}"));
            }
        }
    }
    Ok(warnings)
}

impl Config {
    /// The built-in defaults as a tree.
    pub fn defaults_tree() -> Value {
        serde_json::to_value(Settings::default()).unwrap_or(Value::Null)
    }

    /// Loads the configuration from `sources` (merged in order) and `env`
    /// (`SKYDIVE_*` variables; others are ignored).
    pub fn load<I, K, V>(sources: &[Source], env: I) -> Result<Config, ConfigError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let defaults = Self::defaults_tree();
        let mut tree = defaults.clone();
        let mut warnings = Vec::new();
        for src in sources {
            let (text, origin) = match src {
                Source::File(p) => (
                    std::fs::read_to_string(p).map_err(|e| ConfigError::Read {
                        path: p.display().to_string(),
                        source: e,
                    })?,
                    p.display().to_string(),
                ),
                Source::Stdin => {
                    let mut s = String::new();
                    std::io::Read::read_to_string(&mut std::io::stdin(), &mut s).map_err(|e| {
                        ConfigError::Read {
                            path: "-".into(),
                            source: e,
                        }
                    })?;
                    (s, "standard input".to_string())
                }
                Source::Text(t) => (t.clone(), "text".to_string()),
            };
            let mut v = parse_text(&text, &origin)?;
            for (old, new) in RELOCATED {
                if let Some(val) = take_path(&mut v, old) {
                    warnings.push(format!(
                        "configuration key `{old}` is deprecated, use `{}`",
                        new.join("`, `")
                    ));
                    for n in *new {
                        if get_path(&v, n).is_none() {
                            set_path(&mut v, n, val.clone());
                        }
                    }
                }
            }
            let mut unknown = Vec::new();
            strip_unknown(&mut v, &defaults, "", &mut unknown);
            warnings.extend(
                unknown
                    .into_iter()
                    .map(|k| format!("unknown configuration key `{k}` in {origin}")),
            );
            merge(&mut tree, v);
        }
        let mut leaves = Vec::new();
        leaf_keys(&defaults, "", &mut leaves);
        let env: Vec<(String, String)> = env
            .into_iter()
            .map(|(k, v)| (k.as_ref().to_string(), v.as_ref().to_string()))
            .filter(|(k, _)| k.starts_with("SKYDIVE_"))
            .collect();
        for (key, default) in &leaves {
            let name = env_name(key);
            if let Some((_, raw)) = env.iter().find(|(k, _)| *k == name) {
                set_path(&mut tree, key, env_value(key, raw, default)?);
            }
        }
        let mut settings: Settings =
            serde_path_to_error::deserialize(tree.clone()).map_err(|e| {
                let key = e.path().to_string();
                ConfigError::invalid(&key, e.into_inner().to_string())
            })?;
        if settings.host_id.is_empty() {
            settings.host_id = gethostname::gethostname().to_string_lossy().into_owned();
            set_path(
                &mut tree,
                "host_id",
                Value::String(settings.host_id.clone()),
            );
        }
        settings.validate()?;
        warnings.extend(unsupported_settings(&tree, &defaults)?);
        Ok(Config {
            settings,
            warnings,
            tree,
        })
    }

    /// The value of a dotted key (`GET /api/config/{key}`).
    pub fn get(&self, key: &str) -> Option<&Value> {
        get_path(&self.tree, key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(yaml: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::load(&[Source::Text(yaml.to_string())], env.iter().copied())
    }

    #[test]
    fn no_file_gives_skydive_defaults() {
        let c = Config::load(&[], std::iter::empty::<(&str, &str)>()).unwrap();
        assert_eq!(c.settings.analyzer.listen, "127.0.0.1:8082");
        assert_eq!(c.settings.agent.listen, "127.0.0.1:8081");
        assert_eq!(c.settings.flow.expire, 600);
        assert_eq!(c.settings.flow.update, 60);
        assert_eq!(c.settings.agent.topology.netlink.metrics_update, 30);
        assert!(!c.settings.host_id.is_empty());
        assert_eq!(c.get("http.ws.ping_delay"), Some(&Value::from(2)));
        assert!(c.warnings.is_empty());
    }

    #[test]
    fn file_values_and_nested_metadata_are_read() {
        let c = load(
            "host_id: h1\nanalyzers: [10.0.0.1:8082]\nagent:\n  metadata:\n    mydict:\n      value: 123\n    myarrays:\n      integers: [1, 2, 3]\nflow:\n  application_ports:\n    tcp:\n      80: HTTP\n",
            &[],
        )
        .unwrap();
        assert_eq!(c.settings.host_id, "h1");
        assert_eq!(c.settings.analyzers, vec!["10.0.0.1:8082"]);
        assert_eq!(c.settings.agent.metadata["mydict"]["value"], 123);
        assert_eq!(c.settings.flow.application_ports["tcp"]["80"], "HTTP");
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    }

    #[test]
    fn environment_overrides_by_type() {
        let c = load(
            "flow:\n  expire: 5\n",
            &[
                ("SKYDIVE_FLOW_EXPIRE", "42"),
                ("SKYDIVE_ANALYZERS", "a:1 b:2"),
                ("SKYDIVE_AGENT_TOPOLOGY_PROBES", "ovsdb docker"),
                ("SKYDIVE_HTTP_WS_ENABLE_WRITE_COMPRESSION", "false"),
                ("SKYDIVE_ANALYZER_LISTEN", "0.0.0.0:9000"),
                ("SKYDIVE_USERNAME", "ignored"),
            ],
        )
        .unwrap();
        assert_eq!(c.settings.flow.expire, 42);
        assert_eq!(c.settings.analyzers, vec!["a:1", "b:2"]);
        assert_eq!(c.settings.agent.topology.probes, vec!["ovsdb", "docker"]);
        assert!(!c.settings.http.ws.enable_write_compression);
        assert_eq!(c.settings.analyzer.listen, "0.0.0.0:9000");
    }

    #[test]
    fn unknown_keys_are_warned_about_and_ignored() {
        let c = load(
            "analyzer:\n  listne: 1.2.3.4:1\nbogus: 1\nui:\n  anything: goes\n",
            &[],
        )
        .unwrap();
        assert_eq!(
            c.warnings,
            vec![
                "unknown configuration key `analyzer.listne` in text",
                "unknown configuration key `bogus` in text",
                "configuration key `ui` has no effect: the web UI of this build reads none of it (it is served, as every key, at GET /api/config/ui)",
            ]
        );
        assert_eq!(c.settings.analyzer.listen, "127.0.0.1:8082");
        let c = load(
            "logging:\n  file:\n    pth: /tmp/x\nhttp:\n  rest:\n    debgu: true\novs:\n  oflow:\n    enabel: true\n",
            &[],
        )
        .unwrap();
        assert_eq!(
            c.warnings,
            vec![
                "unknown configuration key `http.rest.debgu` in text",
                "unknown configuration key `logging.file.pth` in text",
                "unknown configuration key `ovs.oflow.enabel` in text",
            ]
        );
    }

    #[test]
    fn invalid_values_name_their_key() {
        let cases = [
            ("flow:\n  expire: soon\n", "flow.expire"),
            ("analyzer:\n  listen: nowhere:port\n", "analyzer.listen"),
            ("logging:\n  level: LOUD\n", "logging.level"),
            (
                "analyzer:\n  topology:\n    backend: nope\n",
                "analyzer.topology.backend",
            ),
            ("analyzers: [\"x:99999\"]\n", "analyzers[0]"),
            (
                "flow:\n  default_layer_key_mode: L4\n",
                "flow.default_layer_key_mode",
            ),
        ];
        for (yaml, key) in cases {
            match load(yaml, &[]) {
                Err(ConfigError::Invalid { key: k, .. }) => assert_eq!(k, key, "{yaml}"),
                other => panic!("{yaml}: {other:?}"),
            }
        }
        match load("", &[("SKYDIVE_FLOW_UPDATE", "x")]) {
            Err(ConfigError::Invalid { key, .. }) => assert_eq!(key, "flow.update"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn elasticsearch_sections_are_read_or_refused_naming_the_key() {
        let es = |extra: &str| {
            format!(
                "analyzer:\n  topology:\n    backend: elasticsearch\nstorage:\n  elasticsearch:\n    driver: elasticsearch\n{extra}"
            )
        };
        let c = load(
            &es("    hosts: [\"http://10.0.0.1:9200\", \"10.0.0.2:9200\"]\n    index_prefix: site1_\n    auth:\n      username: u\n      password: p\n    bulk_maxdelay: 1\n"),
            &[],
        )
        .unwrap();
        let o = c.settings.elasticsearch_storage("elasticsearch").unwrap();
        assert_eq!(o.hosts, ["http://10.0.0.1:9200", "http://10.0.0.2:9200"]);
        assert_eq!(
            (o.index_prefix.as_str(), o.username.as_str()),
            ("site1_", "u")
        );
        assert_eq!(o.total_fields_limit, 1000);
        for (extra, key, why) in [
            (
                "    index_entries_limit: 10\n",
                "storage.elasticsearch.index_entries_limit",
                "rolling",
            ),
            (
                "    ssl_insecure: true\n",
                "storage.elasticsearch.ssl_insecure",
                "TLS",
            ),
            (
                "    hosts: [\"https://es:9200\"]\n",
                "storage.elasticsearch.hosts",
                "TLS",
            ),
            (
                "    index_prefix: Site_\n",
                "storage.elasticsearch.index_prefix",
                "lower case",
            ),
            (
                "    shards: 3\n",
                "storage.elasticsearch.shards",
                "unknown key",
            ),
        ] {
            match load(&es(extra), &[]) {
                Err(ConfigError::Invalid { key: k, message }) => {
                    assert_eq!(k, key, "{extra}");
                    assert!(message.contains(why), "{extra}: {message}");
                }
                other => panic!("{extra}: {other:?}"),
            }
        }
        // Flows cannot go there yet.
        match load("analyzer:\n  flow:\n    backend: elasticsearch\n", &[]) {
            Err(ConfigError::Invalid { key, message }) => {
                assert_eq!(key, "analyzer.flow.backend");
                assert!(message.contains("flows in Elasticsearch"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn deprecated_keys_are_relocated() {
        let c = load("netns:\n  run_path: /tmp/ns\n", &[]).unwrap();
        assert_eq!(c.settings.agent.topology.netns.run_path, "/tmp/ns");
        assert_eq!(c.warnings.len(), 1);
    }

    #[test]
    fn files_merge_in_order() {
        let c = Config::load(
            &[
                Source::Text("host_id: a\nflow:\n  expire: 1\n  update: 2\n".into()),
                Source::Text("flow:\n  expire: 3\n".into()),
            ],
            std::iter::empty::<(&str, &str)>(),
        )
        .unwrap();
        assert_eq!((c.settings.flow.expire, c.settings.flow.update), (3, 2));
        assert_eq!(c.settings.host_id, "a");
    }

    #[test]
    fn yaml_syntax_errors_are_reported() {
        assert!(matches!(
            load("a: [1, 2\n", &[]),
            Err(ConfigError::Parse { .. })
        ));
        assert!(matches!(
            load("- 1\n- 2\n", &[]),
            Err(ConfigError::Parse { .. })
        ));
    }

    #[test]
    fn listen_addresses() {
        assert_eq!(parse_listen(":8082").unwrap(), ("127.0.0.1".into(), 8082));
        assert_eq!(parse_listen("8082").unwrap(), ("127.0.0.1".into(), 8082));
        assert_eq!(parse_listen("0.0.0.0:1").unwrap(), ("0.0.0.0".into(), 1));
        assert_eq!(parse_listen("[::1]:8082").unwrap(), ("::1".into(), 8082));
        assert!(parse_listen("x:y").is_err());
    }

    /// The shipped template documents every default: parsing it must give exactly the
    /// built-in defaults.
    #[test]
    fn every_key_of_the_template_says_what_this_build_does_with_it() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../etc/skydive.yml.default");
        let template = parse_text(&std::fs::read_to_string(path).unwrap(), "template").unwrap();
        let mut keys = Vec::new();
        leaf_keys(&template, "", &mut keys);
        let keys: Vec<String> = keys.into_iter().map(|(k, _)| k).collect();
        // A free-form section is covered by an entry for it or for keys below it.
        let missing: Vec<&String> = keys
            .iter()
            .filter(|k| {
                support(k).is_none() && !KEYS.iter().any(|(e, _)| e.starts_with(&format!("{k}.")))
            })
            .collect();
        assert!(
            missing.is_empty(),
            "keys of the template with no entry: {missing:?}"
        );
        let stale: Vec<&str> = KEYS
            .iter()
            .map(|(k, _)| *k)
            .filter(|k| get_path(&template, k).is_none())
            .collect();
        assert!(
            stale.is_empty(),
            "entries for no key of the template: {stale:?}"
        );
    }

    #[test]
    fn keys_this_build_does_not_honour_are_refused_or_said_when_set() {
        let load = |yaml: &str| {
            Config::load(
                &[Source::Text(yaml.to_string())],
                std::iter::empty::<(&str, &str)>(),
            )
        };
        let e = load("etcd:\n  servers: [http://127.0.0.1:2379]\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid configuration value for key `etcd.servers`: resources live in the embedded \
             store; etcd comes with several analyzers with etcd; remove it from the configuration"
        );
        assert!(load("analyzer:\n  topology:\n    probes: [k8s]\n").is_err());
        let c = load("flow:\n  protocol: udp\nhttp:\n  ws:\n    enable_write_compression: true\n")
            .unwrap();
        assert_eq!(c.warnings.len(), 2, "{:?}", c.warnings);
        assert!(c.warnings[0].starts_with("configuration key `flow.protocol` has no effect: "));
        assert!(
            c.warnings[1]
                .starts_with("configuration key `http.ws.enable_write_compression` has no effect")
        );
        // The default value, written out, says nothing; neither does a free-form section left
        // as it is.
        let c =
            load("flow:\n  protocol: websocket\nagent:\n  topology:\n    neutron: {}\n").unwrap();
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        let c =
            load("agent:\n  topology:\n    neutron:\n      auth_url: http://k:5000/v3\n").unwrap();
        assert_eq!(
            c.warnings,
            [
                "configuration key `agent.topology.neutron` has no effect: the OpenStack connector is \
              not in this build yet"
            ]
        );
    }

    #[test]
    fn shipped_default_file_matches_built_in_defaults() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../etc/skydive.yml.default");
        let text = std::fs::read_to_string(path).unwrap();
        let c = Config::load(
            &[Source::Text(text.clone())],
            std::iter::empty::<(&str, &str)>(),
        )
        .unwrap();
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        let mut built_in = Config::defaults_tree();
        let mut from_file = parse_text(&text, "template").unwrap();
        // host_id defaults to the hostname; the template leaves it empty.
        for t in [&mut built_in, &mut from_file] {
            t.as_object_mut().unwrap().remove("host_id");
        }
        let mut merged = Config::defaults_tree();
        merged.as_object_mut().unwrap().remove("host_id");
        merge(&mut merged, from_file.clone());
        assert_eq!(
            merged, built_in,
            "the template sets a value different from the built-in default"
        );
        let mut leaves = Vec::new();
        leaf_keys(&built_in, "", &mut leaves);
        for (key, _) in leaves {
            assert!(
                get_path(&from_file, &key).is_some(),
                "the template does not document `{key}`"
            );
        }
    }
}

/// The options of an `elasticsearch` storage section (Skydive's keys; those this build does not
/// honour yet are refused when set to anything but their default).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ElasticsearchStorage {
    /// `hosts`: the cluster's URLs, tried in turn.
    pub hosts: Vec<String>,
    /// `auth.username`, `auth.password`.
    pub username: String,
    pub password: String,
    pub index_prefix: String,
    pub total_fields_limit: u64,
    pub use_flattened: bool,
    pub flattened_ignore_above: u64,
    /// `exclude_from_mapping`; `None`: Skydive's list.
    pub exclude_from_mapping: Option<Vec<String>>,
}

/// What an `elasticsearch` section may say, besides `driver`: the keys honoured, those read
/// without effect (why), and those refused unless at their default (why).
const ES_LATER: &str =
    "is not in this build yet (it comes with the next part of the Elasticsearch backend)";

fn elasticsearch_options(name: &str, section: &Value) -> Result<ElasticsearchStorage, ConfigError> {
    let key = |k: &str| format!("storage.{name}.{k}");
    let Some(obj) = section.as_object() else {
        return Err(ConfigError::invalid(
            &format!("storage.{name}"),
            "must be a map",
        ));
    };
    for (k, v) in obj {
        match k.as_str() {
            "driver"
            | "hosts"
            | "auth"
            | "index_prefix"
            | "total_fields_limit"
            | "use_flattened"
            | "flattened_ignore_above"
            | "exclude_from_mapping" => {}
            // Each batch of changes is written at once, refreshed: no delay to configure.
            "bulk_maxdelay" | "disable_sniffing" | "disable_healthcheck" | "debug" => {}
            "index_entries_limit" | "index_age_limit" | "indices_to_keep" => {
                if v.as_u64() != Some(0) {
                    return Err(ConfigError::invalid(
                        &key(k),
                        format!("rolling and retention {ES_LATER}"),
                    ));
                }
            }
            "ssl_insecure" => {
                if v.as_bool() != Some(false) {
                    return Err(ConfigError::invalid(
                        &key(k),
                        format!("TLS to the cluster {ES_LATER}"),
                    ));
                }
            }
            other => {
                return Err(ConfigError::invalid(
                    &key(other),
                    "unknown key of an elasticsearch section",
                ));
            }
        }
    }
    let hosts: Vec<String> = match section.get("hosts") {
        None => vec!["http://127.0.0.1:9200".into()],
        Some(Value::String(h)) => vec![h.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .map(|h| h.as_str().map(String::from))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| ConfigError::invalid(&key("hosts"), "must be a list of URLs"))?,
        Some(_) => {
            return Err(ConfigError::invalid(
                &key("hosts"),
                "must be a list of URLs",
            ));
        }
    };
    if hosts.is_empty() {
        return Err(ConfigError::invalid(&key("hosts"), "names no URL"));
    }
    // Skydive's own configurations name hosts without a scheme (`127.0.0.1:9200`).
    let hosts: Vec<String> = hosts
        .into_iter()
        .map(|h| {
            if h.contains("://") {
                h
            } else {
                format!("http://{h}")
            }
        })
        .collect();
    for h in &hosts {
        if h.starts_with("https://") {
            return Err(ConfigError::invalid(
                &key("hosts"),
                format!("{h}: TLS to the cluster {ES_LATER}"),
            ));
        }
        if !h.starts_with("http://") {
            return Err(ConfigError::invalid(
                &key("hosts"),
                format!("{h}: an http:// URL is needed"),
            ));
        }
    }
    let string = |k: &str, default: &str| -> Result<String, ConfigError> {
        match section.pointer(k) {
            None => Ok(default.to_string()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(ConfigError::invalid(
                &key(&k[1..].replace('/', ".")),
                "must be a string",
            )),
        }
    };
    let number = |k: &str, default: u64| -> Result<u64, ConfigError> {
        match section.get(k) {
            None => Ok(default),
            Some(v) => v
                .as_u64()
                .ok_or_else(|| ConfigError::invalid(&key(k), "must be a whole number, 0 or more")),
        }
    };
    let index_prefix = string("/index_prefix", "skydive_")?;
    if index_prefix
        .chars()
        .any(|c| c.is_ascii_uppercase() || "\\/*?\"<>| ,#:".contains(c))
        || index_prefix.starts_with(['_', '-', '+'])
    {
        return Err(ConfigError::invalid(
            &key("index_prefix"),
            format!(
                "{index_prefix:?}: index names are lower case, without \\ / * ? \" < > | , # : or spaces, and do not start with _ - +"
            ),
        ));
    }
    let use_flattened = match section.get("use_flattened") {
        None => true,
        Some(v) => v
            .as_bool()
            .ok_or_else(|| ConfigError::invalid(&key("use_flattened"), "must be true or false"))?,
    };
    let exclude_from_mapping = match section.get("exclude_from_mapping") {
        None => None,
        Some(Value::Array(a)) => Some(
            a.iter()
                .map(|h| h.as_str().map(String::from))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| {
                    ConfigError::invalid(&key("exclude_from_mapping"), "must be a list of paths")
                })?,
        ),
        Some(_) => {
            return Err(ConfigError::invalid(
                &key("exclude_from_mapping"),
                "must be a list of paths",
            ));
        }
    };
    Ok(ElasticsearchStorage {
        hosts,
        username: string("/auth/username", "")?,
        password: string("/auth/password", "")?,
        index_prefix,
        total_fields_limit: number("total_fields_limit", 1000)?,
        use_flattened,
        flattened_ignore_above: number("flattened_ignore_above", 32768)?,
        exclude_from_mapping,
    })
}

/// The options of an `embedded` storage section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EmbeddedStorage {
    /// The data directory.
    pub path: String,
    /// `retention.max_age`: seconds of history and flows kept; 0 keeps everything.
    pub max_age: u64,
    /// `retention.max_size`: MiB the database may hold; 0 means no limit.
    pub max_size: u64,
}

fn embedded_options(name: &str, section: &Value) -> Result<EmbeddedStorage, ConfigError> {
    let path = match section.get("path") {
        None => "/var/lib/skydive".to_string(),
        Some(Value::String(p)) if !p.is_empty() => p.clone(),
        Some(_) => {
            return Err(ConfigError::invalid(
                &format!("storage.{name}.path"),
                "must be a directory path",
            ));
        }
    };
    let retention = section.get("retention");
    let number = |key: &str, default: u64| -> Result<u64, ConfigError> {
        match retention.and_then(|r| r.get(key)) {
            None => Ok(default),
            Some(v) => v.as_u64().ok_or_else(|| {
                ConfigError::invalid(
                    &format!("storage.{name}.retention.{key}"),
                    "must be a whole number, 0 or more",
                )
            }),
        }
    };
    Ok(EmbeddedStorage {
        path,
        max_age: number("max_age", 604_800)?,
        max_size: number("max_size", 1024)?,
    })
}
