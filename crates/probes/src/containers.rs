//! Containers as the container probes (`docker`, `runc`) report them, and the `Container`
//! metadata Skydive gives their nodes: `{ID, Image, ImageID, Runtime, Status, InitProcessPID,
//! Hosts: {IP, Hostname, ByIP}, Labels}`, labels normalised into nested maps.
//!
//! Pure: what the probes read (an inspection, a `state.json`, a hosts file) in, metadata out.
//! The topology turns a [`Container`] into a `container` node owned by its namespace's node.

use std::net::IpAddr;

use skydive_graph::{Map, Value};

use crate::netns::NsKey;

/// What manages a container. When two probes report the same container (Docker runs its
/// containers with runc), the first in this order is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Manager {
    Docker,
    Runc,
}

impl Manager {
    /// As `Manager` says it on the nodes.
    pub fn as_str(self) -> &'static str {
        match self {
            Manager::Docker => "docker",
            Manager::Runc => "runc",
        }
    }
}

/// A running container.
#[derive(Clone, Debug, PartialEq)]
pub struct Container {
    pub manager: Manager,
    pub id: String,
    /// Its name (Docker's without the leading `/`; runc's is its ID).
    pub name: String,
    /// The namespace its init process runs in: the host's own for `--net=host`.
    pub netns: NsKey,
    /// Whether it joined another container's namespace (`--net=container:X`): the
    /// namespace node is named after a container that did not.
    pub joined: bool,
    /// The `Container` object.
    pub metadata: Map,
}

/// The `Container` object of a node: empty strings, an empty `Hosts` and empty `Labels` are
/// left out, as Skydive's `omitempty` does.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ContainerMetadata {
    pub id: String,
    pub image: String,
    pub image_id: String,
    pub runtime: String,
    pub status: String,
    pub init_process_pid: i64,
    pub hosts: Option<Map>,
    pub labels: Map,
}

impl ContainerMetadata {
    pub fn to_map(&self) -> Map {
        let mut m = Map::new();
        m.insert("ID", self.id.as_str());
        if !self.image.is_empty() {
            m.insert("Image", self.image.as_str());
        }
        if !self.image_id.is_empty() {
            m.insert("ImageID", self.image_id.as_str());
        }
        m.insert("Runtime", self.runtime.as_str());
        m.insert("Status", self.status.as_str());
        m.insert("InitProcessPID", self.init_process_pid);
        if let Some(h) = &self.hosts {
            m.insert("Hosts", h.clone());
        }
        if !self.labels.is_empty() {
            m.insert("Labels", self.labels.clone());
        }
        m
    }
}

/// Labels normalised into nested maps, as Skydive does: a dotted key is a path
/// (`a.b.c=123` → `{a: {b: {c: "123"}}}`); nothing but the dot is special (`~`, `/`, `@` stay
/// in the key). Labels are taken in key order, so that a conflict always ends the same way: a
/// label whose path runs through another label's value (`a.b` after `a`) is dropped and said
/// at debug level.
pub fn normalize_labels<K: AsRef<str>>(labels: impl IntoIterator<Item = (K, Value)>) -> Map {
    let mut sorted: Vec<(K, Value)> = labels.into_iter().collect();
    sorted.sort_by(|a, b| a.0.as_ref().cmp(b.0.as_ref()));
    let mut out = Map::new();
    for (k, v) in sorted {
        if !set_field(&mut out, k.as_ref(), v) {
            tracing::debug!(
                label = k.as_ref(),
                "label dropped: its path runs through another label's value"
            );
        }
    }
    out
}

/// Skydive's `SetMapField`: sets `path` in nested maps, creating them; false (nothing set)
/// when the path runs through a value that is not a map.
fn set_field(m: &mut Map, path: &str, v: Value) -> bool {
    match path.split_once('.') {
        None => {
            m.insert(path, v);
            true
        }
        Some((head, rest)) => match m.get_mut(head) {
            Some(Value::Map(child)) => set_field(child, rest, v),
            Some(_) => false,
            None => {
                let mut child = Map::new();
                let ok = set_field(&mut child, rest, v);
                m.insert(head, child);
                ok
            }
        },
    }
}

/// A JSON value as metadata, maps normalised like labels (Skydive's `NormalizeValue`: dotted
/// keys become paths, `null` becomes an empty string).
pub fn normalize_json(v: &serde_json::Value) -> Value {
    match v {
        serde_json::Value::Null => Value::from(""),
        serde_json::Value::Object(o) => Value::Map(normalize_labels(
            o.iter().map(|(k, v)| (k.as_str(), normalize_json(v))),
        )),
        serde_json::Value::Array(a) => Value::Array(a.iter().map(normalize_json).collect()),
        other => Value::from_json(other),
    }
}

/// Runc labels (`key=value` strings) as keys and values: a value that parses as JSON is taken
/// as that JSON (`a=123` is the number 123), as Skydive's runc probe does; a label without
/// `=` is left out; the first of a key wins.
pub fn runc_label_pairs(raw: &[String]) -> Vec<(String, Value)> {
    let mut out: Vec<(String, Value)> = Vec::with_capacity(raw.len());
    for l in raw {
        let Some((k, v)) = l.split_once('=') else {
            continue;
        };
        if out.iter().any(|(o, _)| o == k) {
            continue;
        }
        let value = match serde_json::from_str::<serde_json::Value>(v) {
            Ok(j) => normalize_json(&j),
            Err(_) => Value::from(v),
        };
        out.push((k.to_string(), value));
    }
    out
}

/// Runc labels, normalised into nested maps (see [`runc_label_pairs`]).
pub fn runc_labels(raw: &[String]) -> Map {
    normalize_labels(runc_label_pairs(raw))
}

/// `Hosts` of a container from its hosts file: `ByIP` maps each address to its names
/// (lower-cased), `IP` and `Hostname` are those of the last entry. Loopback and multicast
/// addresses and `fe00::` (the standard `ip6-localnet` line) are not the container's and are
/// left out. `None` when no entry is left.
pub fn parse_hosts(text: &str) -> Option<Map> {
    let mut by_ip = Map::new();
    let mut last: Option<(String, String)> = None;
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("");
        let mut fields = line.split_whitespace();
        let (Some(addr), names) = (fields.next(), fields) else {
            continue;
        };
        let names: Vec<String> = names.map(str::to_lowercase).collect();
        let Ok(ip) = addr.parse::<IpAddr>() else {
            continue;
        };
        let local_net =
            matches!(ip, IpAddr::V6(v6) if v6.segments() == [0xfe00, 0, 0, 0, 0, 0, 0, 0]);
        if names.is_empty() || ip.is_loopback() || ip.is_multicast() || local_net {
            continue;
        }
        let ip = ip.to_string();
        last = Some((ip.clone(), names.last().cloned().unwrap_or_default()));
        by_ip.insert(ip.as_str(), names);
    }
    let (ip, hostname) = last?;
    let mut m = Map::new();
    m.insert("IP", ip);
    m.insert("Hostname", hostname);
    m.insert("ByIP", by_ip);
    Some(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(m: &Map) -> serde_json::Value {
        serde_json::to_value(m).unwrap()
    }

    #[test]
    fn dotted_labels_become_nested_maps_and_other_characters_stay() {
        let m = normalize_labels([
            ("a.b.c", Value::from("123")),
            ("a.b.d", Value::from("x")),
            ("x~y/z@w", Value::from("1")),
            ("com.example.vendor", Value::from("ACME")),
            ("plain", Value::from("")),
        ]);
        assert_eq!(
            json(&m),
            serde_json::json!({
                "a": {"b": {"c": "123", "d": "x"}},
                "x~y/z@w": "1",
                "com": {"example": {"vendor": "ACME"}},
                "plain": ""
            })
        );
        assert_eq!(
            m.get_path("a.b.c").and_then(Value::as_str),
            Some("123"),
            "Gremlin's dotted keys reach them"
        );
    }

    #[test]
    fn a_label_through_another_labels_value_is_dropped_whatever_the_order() {
        for order in [["a", "a.b"], ["a.b", "a"]] {
            let m = normalize_labels(order.map(|k| (k, Value::from(k))));
            assert_eq!(json(&m), serde_json::json!({"a": "a"}), "{order:?}");
        }
    }

    #[test]
    fn runc_labels_take_json_values_as_skydive_does() {
        let m = runc_labels(
            &[
                "bundle=/run/bundle",
                "n=123",
                "obj={\"k.l\": true, \"z\": null}",
                "broken",
                "s=not json",
            ]
            .map(String::from),
        );
        assert_eq!(
            json(&m),
            serde_json::json!({
                "bundle": "/run/bundle",
                "n": 123,
                "obj": {"k": {"l": true}, "z": ""},
                "s": "not json"
            })
        );
    }

    #[test]
    fn hosts_keep_the_containers_own_entries() {
        let text = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
                    fe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\n\
                    # a comment\n10.0.0.1 gw\n172.17.0.2\tWeb web.local # trailing\nnot-an-ip x\n";
        let h = parse_hosts(text).unwrap();
        assert_eq!(
            json(&h),
            serde_json::json!({
                "IP": "172.17.0.2",
                "Hostname": "web.local",
                "ByIP": {"10.0.0.1": ["gw"], "172.17.0.2": ["web", "web.local"]}
            })
        );
        assert_eq!(
            parse_hosts("127.0.0.1 localhost\nff02::2 ip6-allrouters\n"),
            None
        );
    }

    #[test]
    fn empty_fields_are_left_out_of_the_container_object() {
        let m = ContainerMetadata {
            id: "abc".into(),
            runtime: "runc".into(),
            status: "running".into(),
            init_process_pid: 42,
            ..Default::default()
        }
        .to_map();
        assert_eq!(
            json(&m),
            serde_json::json!({"ID": "abc", "Runtime": "runc", "Status": "running", "InitProcessPID": 42})
        );
    }
}
