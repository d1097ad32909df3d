//! `agent.metadata_config`: files whose content the host node carries, each under
//! `Config.<name>`: read at start and again whenever the file changes (checked every few
//! seconds), so that a site can publish facts about the host (its rack, its role, a
//! generated inventory) without restarting the agent.
//!
//! ```yaml
//! agent:
//!   metadata_config:
//!     files:
//!       - path: /etc/skydive/rack.yml
//!         type: yaml            # json, yaml (yml), ini, properties; by the extension if absent
//!         name: Rack            # the host node gets Config.Rack
//!         selector: site.row    # optional: the part of the document to take
//! ```

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde_json::Value;
use skydive_graph::{Value as MValue, now_ms};
use skydive_hub::HubHandle;

/// How often the files are checked for changes.
pub const CHECK_EVERY: Duration = Duration::from_secs(5);

/// A file's format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Json,
    Yaml,
    /// `key = value` lines under `[section]` headers.
    Ini,
    /// `key=value` (or `key: value`) lines.
    Properties,
}

/// One file of `agent.metadata_config.files`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetadataFile {
    pub path: PathBuf,
    pub format: Format,
    /// The host node gets `Config.<name>`.
    pub name: String,
    /// A dotted path into the document; empty for all of it.
    pub selector: String,
}

/// The files of an `agent.metadata_config` section; a message naming the problem otherwise.
pub fn files(section: &Value) -> Result<Vec<MetadataFile>, String> {
    if let Some(other) = section
        .as_object()
        .and_then(|m| m.keys().find(|k| *k != "files"))
    {
        return Err(format!("unknown key `{other}` (only `files` is read)"));
    }
    let list = match section.get("files") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(l)) => l,
        Some(_) => return Err("files: expected a list of {path, type, name, selector}".into()),
    };
    list.iter()
        .enumerate()
        .map(|(i, f)| {
            let field = |k: &str| f.get(k).and_then(Value::as_str).unwrap_or("").to_string();
            let path = PathBuf::from(field("path"));
            if path.as_os_str().is_empty() {
                return Err(format!("files[{i}]: `path` is required"));
            }
            let name = field("name");
            if name.is_empty() || name.contains('.') {
                return Err(format!(
                    "files[{i}]: `name` is required and has no dot (it becomes Config.<name>)"
                ));
            }
            let kind = match field("type") {
                t if !t.is_empty() => t,
                _ => path
                    .extension()
                    .and_then(|e| e.to_str())
                    .unwrap_or("")
                    .to_string(),
            };
            let format = match kind.as_str() {
                "json" => Format::Json,
                "yaml" | "yml" => Format::Yaml,
                "ini" => Format::Ini,
                "properties" | "props" | "env" => Format::Properties,
                other => {
                    return Err(format!(
                        "files[{i}]: type {other:?} is not read by this build (json, yaml, \
                         yml, ini, properties)"
                    ));
                }
            };
            Ok(MetadataFile {
                path,
                format,
                name,
                selector: field("selector"),
            })
        })
        .collect()
}

/// Parses a file's text.
pub fn parse(text: &str, format: Format, origin: &str) -> Result<Value, String> {
    match format {
        Format::Json => serde_json::from_str(text).map_err(|e| format!("{origin}: {e}")),
        Format::Yaml => skydive_config::parse_text(text, origin).map_err(|e| e.to_string()),
        Format::Ini => Ok(ini(text)),
        Format::Properties => Ok(properties(text)),
    }
}

fn key_value(line: &str) -> Option<(String, String)> {
    let (k, v) = line.split_once('=').or_else(|| line.split_once(':'))?;
    Some((k.trim().to_string(), v.trim().trim_matches('"').to_string()))
}

fn is_comment(line: &str) -> bool {
    line.is_empty() || line.starts_with('#') || line.starts_with(';')
}

fn ini(text: &str) -> Value {
    let mut root = serde_json::Map::new();
    let mut section: Option<String> = None;
    for line in text.lines().map(str::trim).filter(|l| !is_comment(l)) {
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = Some(name.trim().to_string());
            root.entry(name.trim())
                .or_insert_with(|| Value::Object(Default::default()));
            continue;
        }
        let Some((k, v)) = key_value(line) else {
            continue;
        };
        let target = match &section {
            Some(s) => root
                .get_mut(s)
                .and_then(Value::as_object_mut)
                .expect("the section was inserted when its header was read"),
            None => &mut root,
        };
        target.insert(k, Value::String(v));
    }
    Value::Object(root)
}

fn properties(text: &str) -> Value {
    Value::Object(
        text.lines()
            .map(str::trim)
            .filter(|l| !is_comment(l) && !l.starts_with('!'))
            .filter_map(key_value)
            .map(|(k, v)| (k, Value::String(v)))
            .collect(),
    )
}

/// The part of `doc` the selector names (a dotted path); `None` when it names nothing.
pub fn select<'a>(doc: &'a Value, selector: &str) -> Option<&'a Value> {
    let selector = selector.trim().trim_start_matches('.');
    if selector.is_empty() {
        return Some(doc);
    }
    selector.split('.').try_fold(doc, |v, k| match v {
        Value::Object(m) => m.get(k),
        Value::Array(a) => a.get(k.parse::<usize>().ok()?),
        _ => None,
    })
}

/// What a file gives the host node now.
pub fn read(f: &MetadataFile) -> Result<Value, String> {
    let text =
        std::fs::read_to_string(&f.path).map_err(|e| format!("{}: {e}", f.path.display()))?;
    let doc = parse(&text, f.format, &f.path.display().to_string())?;
    select(&doc, &f.selector)
        .cloned()
        .ok_or_else(|| format!("{}: nothing at selector {:?}", f.path.display(), f.selector))
}

fn modified(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

/// Keeps `Config.<name>` of the host node in step with the files until the hub goes away:
/// a file that cannot be read or parsed leaves its key out and says why once.
pub async fn follow(
    files: Vec<MetadataFile>,
    hub: HubHandle,
    host: skydive_graph::Id,
    every: Duration,
) {
    if files.is_empty() {
        return;
    }
    let mut seen: Vec<Option<Option<SystemTime>>> = vec![None; files.len()];
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        for (f, last) in files.iter().zip(seen.iter_mut()) {
            let stamp = modified(&f.path);
            if *last == Some(stamp) {
                continue;
            }
            *last = Some(stamp);
            let value = match read(f) {
                Ok(v) => Some(v),
                Err(e) => {
                    tracing::warn!("agent.metadata_config: {e}");
                    None
                }
            };
            let (node, key) = (host.clone(), format!("Config.{}", f.name));
            let applied = hub
                .apply(None, move |g| {
                    if g.node(&node).is_none() {
                        return Ok(Vec::new());
                    }
                    Ok(g.update_node_metadata(&node, now_ms(), |m| match value {
                        Some(v) => {
                            m.set_path(&key, MValue::from_json(&v));
                        }
                        None => {
                            m.delete_path(&key);
                        }
                    })?
                    .into_iter()
                    .collect())
                })
                .await;
            if applied.is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_section_is_read_and_bad_entries_are_named() {
        let f = files(&json!({"files": [
            {"path": "/etc/rack.yml", "name": "Rack", "selector": "site"},
            {"path": "/etc/x.conf", "type": "ini", "name": "X"}
        ]}))
        .unwrap();
        assert_eq!(f[0].format, Format::Yaml);
        assert_eq!(f[1].format, Format::Ini);
        assert_eq!(files(&json!({})).unwrap(), Vec::new());
        let e = files(&json!({"files": [{"path": "/a.toml", "name": "A"}]})).unwrap_err();
        assert!(e.starts_with("files[0]: type \"toml\" is not read"), "{e}");
        assert!(files(&json!({"files": [{"path": "/a.json"}]})).is_err());
        assert!(files(&json!({"file": []})).is_err());
    }

    #[tokio::test]
    async fn the_host_node_carries_each_file_and_follows_its_changes() {
        use skydive_graph::{Graph, Node, metadata};
        let dir = tempfile::tempdir().unwrap();
        let rack = dir.path().join("rack.yml");
        std::fs::write(&rack, "site:\n  row: 4\n  room: B\n").unwrap();
        let mut g = Graph::new();
        g.add_node(Node::new(
            "host",
            metadata! {"Name" => "h", "Type" => "host"},
            "h",
            "agent.h",
            1,
        ))
        .unwrap();
        let hub = skydive_hub::Hub::new(g).spawn();
        let f = files(&json!({"files": [
            {"path": rack.to_str().unwrap(), "name": "Rack", "selector": "site"},
            {"path": dir.path().join("missing.json").to_str().unwrap(), "name": "Gone"}
        ]}))
        .unwrap();
        tokio::spawn(follow(
            f,
            hub.clone(),
            "host".into(),
            Duration::from_millis(20),
        ));
        let config = |hub: &HubHandle| {
            hub.snapshot()
                .graph
                .node("host")
                .and_then(|n| n.metadata.get("Config").cloned())
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while config(&hub).is_none() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let want = MValue::from_json(&json!({"Rack": {"row": 4, "room": "B"}}));
        assert_eq!(config(&hub), Some(want), "the missing file adds nothing");
        // A later modification time: read again.
        std::fs::write(&rack, "site:\n  row: 5\n").unwrap();
        let later = SystemTime::now() + Duration::from_secs(2);
        std::fs::File::options()
            .write(true)
            .open(&rack)
            .unwrap()
            .set_modified(later)
            .unwrap();
        let want = MValue::from_json(&json!({"Rack": {"row": 5}}));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while config(&hub) != Some(want.clone()) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(config(&hub), Some(want));
    }

    #[test]
    fn formats_and_selectors() {
        let doc = parse(
            "# inventory\n[site]\nrow = 4\nroom: \"B\"\n[power]\nfeed=A\n",
            Format::Ini,
            "t",
        )
        .unwrap();
        assert_eq!(
            doc,
            json!({"site": {"row": "4", "room": "B"}, "power": {"feed": "A"}})
        );
        assert_eq!(select(&doc, "site.row"), Some(&json!("4")));
        assert_eq!(select(&doc, ".power"), Some(&json!({"feed": "A"})));
        assert_eq!(select(&doc, "site.nope"), None);
        let p = parse("a=1\n! comment\nb: two\n", Format::Properties, "t").unwrap();
        assert_eq!(p, json!({"a": "1", "b": "two"}));
        let y = parse("racks:\n  - r1\n  - r2\n", Format::Yaml, "t").unwrap();
        assert_eq!(select(&y, "racks.1"), Some(&json!("r2")));
        assert!(parse("{", Format::Json, "t").is_err());
    }
}
