//! The Elasticsearch / OpenSearch backend, first part: the topology history in Skydive's
//! index layout, through the documented REST API (Elasticsearch ≥ 7.8, OpenSearch ≥ 1).
//!
//! Indices (`index_prefix`, `skydive_` by default; schema version 13, as Skydive 0.28):
//! `skydive_topology_live_v13` behind the alias `skydive_topology_live` holds the current
//! revision of every element (document ID = element ID); `skydive_topology_archive_v13-00000N`
//! behind the write alias `skydive_topology_archive` holds the revisions that stopped being
//! current, with `ArchivedAt`. Documents are Skydive's: `{_Type, ID, Host, Origin, CreatedAt,
//! UpdatedAt, DeletedAt, ArchivedAt, Revision, Metadata, Parent, Child}`.
//!
//! Same semantics as [`skydive_graph::MemoryHistory`], the reference: an update archives the
//! previous revision at the new `UpdatedAt`; a delete archives the element with `DeletedAt`
//! and `ArchivedAt = DeletedAt` and removes its live document. The current revisions are kept
//! in memory (shared with the events that brought them), so that an update archives the
//! previous revision without reading it back; they are loaded from the live index at start.
//! A batch of events is one `_bulk` request, refreshed before it returns, so that what
//! `record` acknowledged is durable and searchable. Reads scroll over the live alias and the
//! archive indices with Skydive's time filters.
//!
//! The API's resources (captures, alerts, rules, …) are kept in `skydive_resources_v13`, one
//! document per resource (`{Kind, ID, ExpiresAt, Value}`, the value not indexed), written
//! with a refresh so that an acknowledged change is durable and visible.
//!
//! Not yet here (see the issue): flows, metrics and raw packets; rolling and retention; TLS
//! and sniffing. While the cluster is away the analyzer's recorder keeps the changes and
//! tries again (see the analyzer's storage).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value as Json, json};
use skydive_graph::{
    Edge, Element, GraphEvent, History, HistoryError, Id, Map, Node, RevisionGraph, Time,
};

use crate::backend::{TopologyStore, Upkeep};
use crate::resources::ResourceStore;
use crate::{Removed, Result, StorageError};

/// Skydive's index schema version.
const SCHEMA: &str = "13";
/// Documents per scroll page.
const PAGE: usize = 5000;
/// A bulk request is cut at about this many bytes.
const BULK_BYTES: usize = 8 << 20;

/// `storage.<name>` for the `elasticsearch` driver (the keys this part uses).
#[derive(Clone, Debug, PartialEq)]
pub struct EsConfig {
    /// `hosts`: URLs of the cluster's nodes, tried in turn.
    pub hosts: Vec<String>,
    /// `auth.username` / `auth.password`: basic authentication, when set.
    pub username: String,
    pub password: String,
    /// `index_prefix`.
    pub index_prefix: String,
    /// `total_fields_limit` (0: the cluster's default).
    pub total_fields_limit: u64,
    /// `use_flattened`, `flattened_ignore_above`, `exclude_from_mapping`.
    pub use_flattened: bool,
    pub flattened_ignore_above: u64,
    pub exclude_from_mapping: Vec<String>,
}

impl Default for EsConfig {
    fn default() -> Self {
        EsConfig {
            hosts: vec!["http://127.0.0.1:9200".into()],
            username: String::new(),
            password: String::new(),
            index_prefix: "skydive_".into(),
            total_fields_limit: 1000,
            use_flattened: true,
            flattened_ignore_above: 32768,
            exclude_from_mapping: [
                "Metadata.*.Extra",
                "Metadata.Container.Labels",
                "Metadata.Container.Hosts.ByIP",
                "Metadata.K8s.Labels",
                "Metadata.Actions",
                "Metadata.Filters",
                "Metadata.LXD.Config",
                "Metadata.LXD.Devices",
                "Metadata.OVN.ExtID",
                "Metadata.OVN.Options",
                "Metadata.OVN.IPv6RAConfigs",
            ]
            .map(String::from)
            .to_vec(),
        }
    }
}

fn remote(url: &str, message: impl std::fmt::Display) -> StorageError {
    StorageError::Remote {
        url: url.to_string(),
        message: message.to_string(),
    }
}

/// A client of the cluster: JSON over HTTP, each request tried on every host in turn
/// (starting with the last that answered) until one answers.
struct EsClient {
    agent: ureq::Agent,
    hosts: Vec<String>,
    auth: Option<String>,
    last_good: AtomicUsize,
}

impl EsClient {
    fn new(cfg: &EsConfig) -> EsClient {
        use base64::Engine as _;
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        EsClient {
            agent,
            hosts: cfg
                .hosts
                .iter()
                .map(|h| h.trim_end_matches('/').to_string())
                .collect(),
            auth: (!cfg.username.is_empty()).then(|| {
                let token = base64::engine::general_purpose::STANDARD
                    .encode(format!("{}:{}", cfg.username, cfg.password));
                format!("Basic {token}")
            }),
            last_good: AtomicUsize::new(0),
        }
    }

    fn hosts(&self) -> String {
        self.hosts.join(", ")
    }

    /// `method path` with `body` (JSON, or NDJSON when `ndjson`); the status and the JSON
    /// answer (`null` when there is none).
    fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
        ndjson: bool,
    ) -> Result<(u16, Json)> {
        let (status, text) = self.call_text(method, path, body, ndjson)?;
        let json = if text.trim().is_empty() {
            Json::Null
        } else {
            serde_json::from_str(&text).map_err(|e| {
                remote(
                    &format!("{} {path}", self.hosts()),
                    format!("answer is not JSON ({e}): {text:.200}"),
                )
            })?
        };
        Ok((status, json))
    }

    /// As [`EsClient::call`], the answer as text.
    fn call_text(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
        ndjson: bool,
    ) -> Result<(u16, String)> {
        let n = self.hosts.len().max(1);
        let first = self.last_good.load(Ordering::Relaxed);
        let mut errors = Vec::new();
        for k in 0..n {
            let i = (first + k) % n;
            let Some(host) = self.hosts.get(i) else {
                break;
            };
            let url = format!("{host}{path}");
            let mut req = ureq::http::Request::builder().method(method).uri(&url);
            if let Some(a) = &self.auth {
                req = req.header("Authorization", a);
            }
            let ctype = if ndjson {
                "application/x-ndjson"
            } else {
                "application/json"
            };
            req = req.header("Content-Type", ctype);
            let req = req
                .body(body.map(<[u8]>::to_vec).unwrap_or_default())
                .map_err(|e| remote(&url, e))?;
            match self.agent.run(req) {
                Ok(resp) => {
                    self.last_good.store(i, Ordering::Relaxed);
                    let status = resp.status().as_u16();
                    let text = resp
                        .into_body()
                        .with_config()
                        .limit(1 << 30)
                        .read_to_string()
                        .map_err(|e| remote(&url, e))?;
                    return Ok((status, text));
                }
                Err(e) => errors.push(format!("{url}: {e}")),
            }
        }
        Err(remote(&self.hosts(), errors.join("; ")))
    }

    /// As [`EsClient::call`], an answer other than 2xx being an error naming the reason.
    fn ok(&self, method: &str, path: &str, body: Option<&Json>) -> Result<Json> {
        let bytes = body.map(|b| b.to_string().into_bytes());
        let (status, json) = self.call(method, path, bytes.as_deref(), false)?;
        if !(200..300).contains(&status) {
            return Err(remote(
                &format!("{} {path}", self.hosts()),
                format!("{status}: {}", reason(&json)),
            ));
        }
        Ok(json)
    }
}

/// The reason of an error answer.
fn reason(j: &Json) -> String {
    j.pointer("/error/reason")
        .or_else(|| j.pointer("/error/type"))
        .or_else(|| j.get("error"))
        .map(|v| {
            v.as_str()
                .map(String::from)
                .unwrap_or_else(|| v.to_string())
        })
        .unwrap_or_else(|| j.to_string())
}

/// The current revision of an element.
#[derive(Clone)]
enum Current {
    Node(Arc<Node>),
    Edge(Arc<Edge>),
}

impl Current {
    fn elem(&self) -> &Element {
        match self {
            Current::Node(n) => n,
            Current::Edge(e) => e,
        }
    }
}

type Key = (bool, Id);

/// Revisions read back: nodes, edges.
type Revisions = (Vec<Arc<Node>>, Vec<Arc<Edge>>);

#[derive(Default)]
struct State {
    current: HashMap<Key, Current>,
    /// Elements current at start that no event has touched since; `None` once closed.
    orphans: Option<HashSet<Key>>,
}

/// The topology history in Elasticsearch or OpenSearch.
pub struct Elasticsearch {
    client: EsClient,
    /// Documents the cluster refused for good (not stored).
    refused: std::sync::atomic::AtomicU64,
    resources: String,
    live_alias: String,
    archive_alias: String,
    archive_pattern: String,
    state: Mutex<State>,
}

impl std::fmt::Debug for Elasticsearch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Elasticsearch")
            .field("hosts", &self.client.hosts)
            .field("live", &self.live_alias)
            .finish()
    }
}

/// A page of search hits.
#[derive(Deserialize)]
#[serde(bound = "T: serde::de::DeserializeOwned")]
struct Page<T> {
    #[serde(rename = "_scroll_id", default)]
    scroll_id: Option<String>,
    #[serde(default)]
    hits: Option<Hits<T>>,
}

#[derive(Deserialize)]
#[serde(bound = "T: serde::de::DeserializeOwned")]
struct Hits<T> {
    #[serde(default)]
    hits: Vec<Hit<T>>,
}

#[derive(Deserialize)]
#[serde(bound = "T: serde::de::DeserializeOwned")]
struct Hit<T> {
    #[serde(rename = "_source", default)]
    source: Option<T>,
}

/// A resource document.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ResourceDoc {
    #[serde(default)]
    kind: String,
    #[serde(rename = "ID", default)]
    id: String,
    #[serde(default)]
    expires_at: i64,
    #[serde(default)]
    value: Json,
}

impl ResourceDoc {
    fn live(&self, now: i64) -> bool {
        self.expires_at == 0 || self.expires_at > now
    }
}

/// A stored document.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Doc {
    #[serde(rename = "_Type", default)]
    ty: String,
    #[serde(rename = "ID")]
    id: String,
    #[serde(default)]
    host: String,
    #[serde(default)]
    origin: String,
    #[serde(default)]
    created_at: Option<i64>,
    #[serde(default)]
    updated_at: Option<i64>,
    #[serde(default)]
    deleted_at: Option<i64>,
    #[serde(default)]
    revision: i64,
    #[serde(default)]
    metadata: Map,
    #[serde(default)]
    parent: Option<String>,
    #[serde(default)]
    child: Option<String>,
}

impl Doc {
    fn into_current(self) -> Current {
        let elem = Element {
            id: Id::from(self.id),
            metadata: self.metadata,
            host: self.host.into(),
            origin: self.origin.into(),
            created_at: self.created_at.unwrap_or(0),
            updated_at: self.updated_at.unwrap_or(0),
            deleted_at: self.deleted_at.unwrap_or(0),
            revision: self.revision,
        };
        if self.ty == "edge" {
            Current::Edge(Arc::new(Edge {
                elem,
                parent: Id::from(self.parent.unwrap_or_default()),
                child: Id::from(self.child.unwrap_or_default()),
            }))
        } else {
            Current::Node(Arc::new(Node::from(elem)))
        }
    }
}

/// The document of a revision, archived at `archived_at` (0: current).
fn document(c: &Current, archived_at: Time) -> Json {
    let (doc, ty) = match c {
        Current::Node(n) => (serde_json::to_value(&**n), "node"),
        Current::Edge(e) => (serde_json::to_value(&**e), "edge"),
    };
    let mut doc = doc.unwrap_or(Json::Null);
    if let Some(o) = doc.as_object_mut() {
        o.insert("_Type".into(), ty.into());
        if archived_at != 0 {
            o.insert("ArchivedAt".into(), archived_at.into());
        }
        if o.get("DeletedAt").is_some_and(Json::is_null) {
            o.remove("DeletedAt");
        }
    }
    doc
}

/// The ID of an archived revision: the same revision archived twice is one document.
fn archive_id(e: &Element) -> String {
    format!("{}.{}.{}", e.id, e.revision, e.updated_at)
}

/// `null` or absent, or at least `t`.
fn absent_or_gte(field: &str, t: Time) -> Json {
    json!({"bool": {"should": [
        {"bool": {"must_not": {"exists": {"field": field}}}},
        {"range": {field: {"gte": t}}}
    ], "minimum_should_match": 1}})
}

impl Elasticsearch {
    /// Connects, creates what is missing (the index template, the live index and its alias,
    /// the first archive index and its write alias) and loads the current revisions.
    pub fn open(cfg: &EsConfig) -> Result<Elasticsearch> {
        let client = EsClient::new(cfg);
        let info = client.ok("GET", "/", None)?;
        let version = info
            .pointer("/version/number")
            .and_then(Json::as_str)
            .unwrap_or("");
        let opensearch =
            info.pointer("/version/distribution").and_then(Json::as_str) == Some("opensearch");
        let major: u64 = version
            .split('.')
            .next()
            .and_then(|m| m.parse().ok())
            .unwrap_or(0);
        if !opensearch && major < 7 {
            return Err(remote(
                &client.hosts(),
                format!("Elasticsearch {version:?} is too old: 7.8 or later is needed"),
            ));
        }
        let minor: u64 = version
            .split('.')
            .nth(1)
            .and_then(|m| m.parse().ok())
            .unwrap_or(0);
        // OpenSearch's counterpart of `flattened` came with 2.7.
        let flat_object = opensearch && (major, minor) >= (2, 7);
        let p = &cfg.index_prefix;
        let es = Elasticsearch {
            refused: Default::default(),
            resources: format!("{p}resources_v{SCHEMA}"),
            live_alias: format!("{p}topology_live"),
            archive_alias: format!("{p}topology_archive"),
            archive_pattern: format!("{p}topology_archive_v{SCHEMA}*"),
            client,
            state: Mutex::default(),
        };
        es.client.ok(
            "PUT",
            &format!("/_index_template/{p}topology"),
            Some(&template(cfg, opensearch, flat_object)),
        )?;
        let live = format!("{p}topology_live_v{SCHEMA}");
        es.create_if_missing(&live, &json!({"aliases": {&es.live_alias: {}}}))?;
        let (status, _) =
            es.client
                .call("GET", &format!("/_alias/{}", es.archive_alias), None, false)?;
        if status == 404 {
            es.create_if_missing(
                &format!("{p}topology_archive_v{SCHEMA}-000001"),
                &json!({"aliases": {&es.archive_alias: {"is_write_index": true}}}),
            )?;
        }
        es.create_if_missing(
            &es.resources,
            &json!({"mappings": {"properties": {
                "Kind": {"type": "keyword"},
                "ID": {"type": "keyword"},
                "ExpiresAt": {"type": "long"},
                "Value": {"type": "object", "enabled": false},
            }}}),
        )?;
        let mut current = HashMap::new();
        es.scroll(&es.live_alias, &json!({"match_all": {}}), |doc: Doc| {
            let c = doc.into_current();
            let edge = matches!(c, Current::Edge(_));
            current.insert((edge, c.elem().id.clone()), c);
        })?;
        let orphans = current.keys().cloned().collect();
        *es.lock() = State {
            current,
            orphans: Some(orphans),
        };
        Ok(es)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn create_if_missing(&self, index: &str, body: &Json) -> Result<()> {
        let (status, _) = self
            .client
            .call("HEAD", &format!("/{index}"), None, false)?;
        if status == 200 {
            return Ok(());
        }
        let bytes = body.to_string().into_bytes();
        let (status, answer) =
            self.client
                .call("PUT", &format!("/{index}"), Some(&bytes), false)?;
        // Another analyzer may have created it meanwhile.
        if (200..300).contains(&status)
            || answer.pointer("/error/type").and_then(Json::as_str)
                == Some("resource_already_exists_exception")
        {
            return Ok(());
        }
        Err(remote(
            &self.client.hosts(),
            format!("creating {index}: {status}: {}", reason(&answer)),
        ))
    }

    /// Every document of `indices` matching `query`, page by page.
    fn scroll<T: serde::de::DeserializeOwned>(
        &self,
        indices: &str,
        query: &Json,
        mut f: impl FnMut(T),
    ) -> Result<()> {
        let body = json!({"size": PAGE, "sort": ["_doc"], "query": query});
        let mut page = self.page(
            &format!("/{indices}/_search?scroll=1m&ignore_unavailable=true"),
            &body,
        )?;
        loop {
            let hits = page.hits.map(|h| h.hits).unwrap_or_default();
            let n = hits.len();
            for h in hits {
                if let Some(doc) = h.source {
                    f(doc);
                }
            }
            let Some(id) = page.scroll_id else {
                return Ok(());
            };
            if n < PAGE {
                let _ = self.client.call(
                    "DELETE",
                    "/_search/scroll",
                    Some(json!({"scroll_id": id}).to_string().as_bytes()),
                    false,
                );
                return Ok(());
            }
            page = self.page("/_search/scroll", &json!({"scroll": "1m", "scroll_id": id}))?;
        }
    }

    /// One page of a search, its documents decoded as they are read.
    fn page<T: serde::de::DeserializeOwned>(&self, path: &str, body: &Json) -> Result<Page<T>> {
        let bytes = body.to_string().into_bytes();
        let (status, text) = self.client.call_text("POST", path, Some(&bytes), false)?;
        if !(200..300).contains(&status) {
            let j: Json = serde_json::from_str(&text).unwrap_or(Json::Null);
            return Err(remote(
                &format!("{} {path}", self.client.hosts()),
                format!("{status}: {}", reason(&j)),
            ));
        }
        serde_json::from_str(&text).map_err(|e| StorageError::Decode {
            kind: "search answer".into(),
            id: path.into(),
            message: e.to_string(),
        })
    }

    /// Sends bulk actions (each its action line and, but for a delete, its document),
    /// refreshed before the answer, cut only between actions. An item the cluster may take
    /// later (429, 5xx) fails the whole request, which is written again (every action is
    /// idempotent); an item it refuses for good (a mapping conflict, a field limit) is
    /// logged and counted, so that it cannot hold back every later change.
    fn bulk(&self, lines: &[String]) -> Result<()> {
        let mut body = String::new();
        let flush = |body: &mut String| -> Result<()> {
            if body.is_empty() {
                return Ok(());
            }
            let (status, answer) =
                self.client
                    .call("POST", "/_bulk?refresh=true", Some(body.as_bytes()), true)?;
            body.clear();
            if !(200..300).contains(&status) {
                return Err(remote(
                    &self.client.hosts(),
                    format!("bulk: {status}: {}", reason(&answer)),
                ));
            }
            if answer.get("errors").and_then(Json::as_bool) == Some(true) {
                let items: Vec<&Json> = answer
                    .get("items")
                    .and_then(Json::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|it| it.as_object()?.values().next())
                    .filter(|r| r.get("error").is_some())
                    .collect();
                let retryable = |r: &Json| {
                    r.get("status")
                        .and_then(Json::as_u64)
                        .is_none_or(|s| s == 429 || s >= 500)
                };
                for r in items.iter().filter(|r| !retryable(r)) {
                    self.refused.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        id = r.get("_id").and_then(Json::as_str).unwrap_or(""),
                        "a document was refused by the cluster and is not stored: {}",
                        reason(r)
                    );
                }
                let failed: Vec<String> = items
                    .iter()
                    .filter(|r| retryable(r))
                    .map(|r| {
                        format!(
                            "{}: {}",
                            r.get("_id").and_then(Json::as_str).unwrap_or(""),
                            reason(r)
                        )
                    })
                    .collect();
                if !failed.is_empty() {
                    return Err(remote(
                        &self.client.hosts(),
                        format!(
                            "{} bulk item(s) failed: {}",
                            failed.len(),
                            failed
                                .iter()
                                .take(5)
                                .cloned()
                                .collect::<Vec<_>>()
                                .join("; ")
                        ),
                    ));
                }
            }
            Ok(())
        };
        for action in lines {
            if !body.is_empty() && body.len() + action.len() >= BULK_BYTES {
                flush(&mut body)?;
            }
            body.push_str(action);
            body.push('\n');
        }
        flush(&mut body)
    }

    fn index_live(&self, lines: &mut Vec<String>, c: &Current) {
        lines.push(format!(
            "{}\n{}",
            json!({"index": {"_index": self.live_alias, "_id": c.elem().id.as_str()}}),
            document(c, 0)
        ));
    }

    fn archive(&self, lines: &mut Vec<String>, c: &Current, at: Time) {
        lines.push(format!(
            "{}\n{}",
            json!({"index": {"_index": self.archive_alias, "_id": archive_id(c.elem())}}),
            document(c, at)
        ));
    }

    fn delete_live(&self, lines: &mut Vec<String>, id: &str) {
        lines.push(json!({"delete": {"_index": self.live_alias, "_id": id}}).to_string());
    }

    /// Records graph events; durable and searchable when this returns. The memory of the
    /// current revisions changes only once the cluster has taken the batch.
    pub fn record(&self, events: &[GraphEvent]) -> Result<()> {
        let mut st = self.lock();
        let mut lines = Vec::with_capacity(events.len() * 4);
        // The changes to the current revisions, applied after the bulk succeeded.
        let mut changes: Vec<(Key, Option<Current>)> = Vec::with_capacity(events.len());
        let mut overlay: HashMap<Key, Option<Current>> = HashMap::new();
        for ev in events {
            let (new, at, deleted) = match ev {
                GraphEvent::NodeAdded(n) => (Current::Node(n.clone()), n.created_at, false),
                GraphEvent::NodeUpdated { node, .. } => {
                    (Current::Node(node.clone()), node.updated_at, false)
                }
                GraphEvent::NodeDeleted(n) => (Current::Node(n.clone()), n.deleted_at, true),
                GraphEvent::EdgeAdded(e) => (Current::Edge(e.clone()), e.created_at, false),
                GraphEvent::EdgeUpdated { edge, .. } => {
                    (Current::Edge(edge.clone()), edge.updated_at, false)
                }
                GraphEvent::EdgeDeleted(e) => (Current::Edge(e.clone()), e.deleted_at, true),
            };
            let key = (matches!(new, Current::Edge(_)), new.elem().id.clone());
            let cur = match overlay.get(&key) {
                Some(c) => c.clone(),
                None => st.current.get(&key).cloned(),
            };
            if let Some(o) = st.orphans.as_mut() {
                o.remove(&key);
            }
            if deleted {
                self.archive(&mut lines, &new, at);
                self.delete_live(&mut lines, &key.1);
                overlay.insert(key.clone(), None);
                changes.push((key, None));
                continue;
            }
            if let (GraphEvent::NodeAdded(_) | GraphEvent::EdgeAdded(_), Some(c)) = (ev, &cur) {
                // Sent again after a restart, unchanged: the stored revision continues.
                let (a, b) = (c.elem(), new.elem());
                if a.revision == b.revision
                    && a.updated_at == b.updated_at
                    && a.metadata == b.metadata
                {
                    continue;
                }
            }
            if let Some(c) = &cur {
                // An element that comes back changed after a restart: its stored revision
                // ends when the new one starts, never before its own update (as the embedded
                // store does).
                let at = if matches!(ev, GraphEvent::NodeAdded(_) | GraphEvent::EdgeAdded(_)) {
                    at.max(new.elem().updated_at).max(c.elem().updated_at)
                } else {
                    at
                };
                self.archive(&mut lines, c, at);
            }
            self.index_live(&mut lines, &new);
            overlay.insert(key.clone(), Some(new.clone()));
            changes.push((key, Some(new)));
        }
        self.bulk(&lines)?;
        for (key, c) in changes {
            match c {
                Some(c) => st.current.insert(key, c),
                None => st.current.remove(&key),
            };
        }
        Ok(())
    }

    /// Closes, as deleted at `at`, the elements current at start that no event touched.
    pub fn close_orphans(&self, at: Time) -> Result<usize> {
        let mut st = self.lock();
        let Some(orphans) = st.orphans.take() else {
            return Ok(0);
        };
        let mut lines = Vec::new();
        let mut closed = Vec::new();
        for key in orphans {
            let Some(c) = st.current.get(&key) else {
                continue;
            };
            let gone = match c {
                Current::Node(n) => {
                    let mut n = (**n).clone();
                    n.deleted_at = at;
                    Current::Node(Arc::new(n))
                }
                Current::Edge(e) => {
                    let mut e = (**e).clone();
                    e.deleted_at = at;
                    Current::Edge(Arc::new(e))
                }
            };
            self.archive(&mut lines, &gone, at);
            self.delete_live(&mut lines, &key.1);
            closed.push(key);
        }
        if let Err(e) = self.bulk(&lines) {
            // Tried again at the next call.
            st.orphans = Some(closed.into_iter().collect());
            return Err(e);
        }
        for k in &closed {
            st.current.remove(k);
        }
        Ok(closed.len())
    }

    /// Revisions stored (live and archived).
    pub fn revision_count(&self) -> Result<i64> {
        let j = self.client.ok(
            "GET",
            &format!(
                "/{},{}/_count?ignore_unavailable=true",
                self.live_alias, self.archive_pattern
            ),
            None,
        )?;
        Ok(j.get("count").and_then(Json::as_i64).unwrap_or(0))
    }

    /// Every revision alive during `[start, last]`, ordered as the reference orders them.
    fn revisions(&self, start: Time, last: Time) -> Result<Revisions> {
        let query = json!({"bool": {"filter": [
            {"range": {"CreatedAt": {"lte": last}}},
            {"range": {"UpdatedAt": {"lte": last}}},
            absent_or_gte("DeletedAt", start),
            absent_or_gte("ArchivedAt", start),
        ]}});
        let (mut nodes, mut edges) = (Vec::new(), Vec::new());
        self.scroll(
            &format!("{},{}", self.live_alias, self.archive_pattern),
            &query,
            |doc: Doc| match doc.into_current() {
                Current::Node(n) => nodes.push(n),
                Current::Edge(e) => edges.push(e),
            },
        )?;
        fn order<T: std::ops::Deref<Target = Element>>(v: &mut [Arc<T>]) {
            v.sort_by(|a, b| {
                a.updated_at
                    .cmp(&b.updated_at)
                    .then_with(|| a.id.cmp(&b.id))
                    .then_with(|| a.revision.cmp(&b.revision))
            });
        }
        order(&mut nodes);
        order(&mut edges);
        Ok((nodes, edges))
    }
}

/// The index template of the topology indices: strings as keywords, times as dates, the
/// paths of `exclude_from_mapping` kept out of the mapping (flattened, or not indexed).
fn template(cfg: &EsConfig, opensearch: bool, flat_object: bool) -> Json {
    let mut dynamic = Vec::new();
    for (i, path) in cfg.exclude_from_mapping.iter().enumerate() {
        let mapping = match (cfg.use_flattened, opensearch, flat_object) {
            // OpenSearch's counterpart of Elasticsearch's `flattened`.
            (true, true, true) => json!({"type": "flat_object"}),
            (true, false, _) => {
                json!({"type": "flattened", "ignore_above": cfg.flattened_ignore_above})
            }
            // An OpenSearch before 2.7 has neither: the path is kept out of the mapping.
            _ => json!({"type": "object", "enabled": false}),
        };
        dynamic.push(json!({format!("exclude_{i}"): {"path_match": path, "mapping": mapping}}));
    }
    for field in ["CreatedAt", "UpdatedAt", "DeletedAt", "ArchivedAt"] {
        dynamic.push(
            json!({field: {"match": field, "mapping": {"type": "date", "format": "epoch_millis"}}}),
        );
    }
    // A keyword longer than Lucene's term limit (32,766 bytes) would refuse its document.
    dynamic.push(json!({"strings": {"match_mapping_type": "string",
        "mapping": {"type": "keyword", "ignore_above": 8191}}}));
    let mut settings = serde_json::Map::new();
    if cfg.total_fields_limit > 0 {
        settings.insert(
            "index.mapping.total_fields.limit".into(),
            cfg.total_fields_limit.into(),
        );
    }
    json!({
        "index_patterns": [format!("{}topology_*", cfg.index_prefix)],
        "template": {
            "settings": settings,
            "mappings": {
                "dynamic_templates": dynamic,
                "properties": {
                    "Revision": {"type": "long"},
                    "CreatedAt": {"type": "date", "format": "epoch_millis"},
                    "UpdatedAt": {"type": "date", "format": "epoch_millis"},
                    "DeletedAt": {"type": "date", "format": "epoch_millis"},
                    "ArchivedAt": {"type": "date", "format": "epoch_millis"},
                },
            },
        },
    })
}

impl History for Elasticsearch {
    fn at(&self, t: Time) -> std::result::Result<RevisionGraph, HistoryError> {
        let (n, e) = self
            .revisions(t, t)
            .map_err(|e| HistoryError::Backend(e.to_string()))?;
        Ok(RevisionGraph::latest(n, e))
    }
    fn slice(&self, start: Time, last: Time) -> std::result::Result<RevisionGraph, HistoryError> {
        let (n, e) = self
            .revisions(start, last)
            .map_err(|e| HistoryError::Backend(e.to_string()))?;
        Ok(RevisionGraph::new(n, e))
    }
}

impl TopologyStore for Elasticsearch {
    fn record(&self, events: &[GraphEvent]) -> Result<()> {
        Elasticsearch::record(self, events)
    }
    fn close_orphans(&self, at: Time) -> Result<usize> {
        Elasticsearch::close_orphans(self, at)
    }
    fn revision_count(&self) -> Result<i64> {
        Elasticsearch::revision_count(self)
    }
    fn location(&self) -> String {
        self.client.hosts()
    }
}

/// The document ID of a resource.
fn resource_id(kind: &str, id: &str) -> String {
    format!("{kind}/{id}")
}

impl Elasticsearch {
    /// Every resource document matching `query`.
    fn resource_docs(&self, query: &Json) -> Result<Vec<ResourceDoc>> {
        let mut out = Vec::new();
        self.scroll(&self.resources, query, |d: ResourceDoc| out.push(d))?;
        Ok(out)
    }
}

impl ResourceStore for Elasticsearch {
    fn put(&self, kind: &str, id: &str, value: &Json, expires_at: i64) -> Result<()> {
        let doc = json!({"Kind": kind, "ID": id, "ExpiresAt": expires_at, "Value": value});
        self.client.ok(
            "PUT",
            &format!(
                "/{}/_doc/{}?refresh=true",
                self.resources,
                percent_encode(&resource_id(kind, id))
            ),
            Some(&doc),
        )?;
        Ok(())
    }

    fn get(&self, kind: &str, id: &str, now: i64) -> Result<Option<Json>> {
        let (status, j) = self.client.call(
            "GET",
            &format!(
                "/{}/_doc/{}",
                self.resources,
                percent_encode(&resource_id(kind, id))
            ),
            None,
            false,
        )?;
        if status == 404 {
            return Ok(None);
        }
        if !(200..300).contains(&status) {
            return Err(remote(
                &self.client.hosts(),
                format!("{status}: {}", reason(&j)),
            ));
        }
        Ok(j.get("_source")
            .and_then(|d| serde_json::from_value::<ResourceDoc>(d.clone()).ok())
            .filter(|d| d.live(now))
            .map(|d| d.value))
    }

    fn list(&self, kind: &str, now: i64) -> Result<std::collections::BTreeMap<String, Json>> {
        Ok(self
            .resource_docs(&json!({"term": {"Kind": kind}}))?
            .into_iter()
            .filter(|d| d.live(now))
            .map(|d| (d.id, d.value))
            .collect())
    }

    fn delete(&self, kind: &str, id: &str, now: i64) -> Result<bool> {
        let existed = self.get(kind, id, now)?.is_some();
        let (status, j) = self.client.call(
            "DELETE",
            &format!(
                "/{}/_doc/{}?refresh=true",
                self.resources,
                percent_encode(&resource_id(kind, id))
            ),
            None,
            false,
        )?;
        if status != 404 && !(200..300).contains(&status) {
            return Err(remote(
                &self.client.hosts(),
                format!("{status}: {}", reason(&j)),
            ));
        }
        Ok(existed)
    }

    fn take_expired(&self, now: i64) -> Result<Vec<(String, String, Json)>> {
        let expired =
            self.resource_docs(&json!({"range": {"ExpiresAt": {"gt": 0, "lte": now}}}))?;
        let mut out = Vec::new();
        for ResourceDoc {
            kind, id, value, ..
        } in expired
        {
            // What was removed is returned even when a later removal fails.
            let Ok((status, _)) = self.client.call(
                "DELETE",
                &format!(
                    "/{}/_doc/{}?refresh=true",
                    self.resources,
                    percent_encode(&resource_id(&kind, &id))
                ),
                None,
                false,
            ) else {
                break;
            };
            if (200..300).contains(&status) {
                out.push((kind, id, value));
            }
        }
        Ok(out)
    }
}

/// A document ID in a URL path.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Upkeep for Elasticsearch {
    fn enforce_retention(&self, _now: Time) -> Result<Removed> {
        // Rolling and retention by index come with the next part.
        Ok(Removed::default())
    }
    fn describe(&self) -> Json {
        json!({
            "Driver": "elasticsearch",
            "Hosts": self.client.hosts,
            "Indices": {"Live": self.live_alias, "Archive": self.archive_alias, "Resources": self.resources},
            "RefusedDocuments": self.refused.load(Ordering::Relaxed),
        })
    }
}

impl crate::Backend {
    /// The Elasticsearch or OpenSearch cluster `cfg` names: resources and topology history
    /// (flows come with the next part).
    pub fn elasticsearch(cfg: &EsConfig) -> Result<crate::Backend> {
        let es = Arc::new(Elasticsearch::open(cfg)?);
        Ok(crate::Backend {
            driver: "elasticsearch",
            resources: es.clone(),
            topology: Some(es.clone()),
            flows: None,
            upkeep: Some(es),
        })
    }
}
