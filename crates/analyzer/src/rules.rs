//! Node rules and edge rules (`/api/noderule`, `/api/edgerule`, Skydive's resource shapes):
//! resources that shape the live graph. A `create` node rule adds a node; an `update` node rule
//! sets metadata on every node its query returns, including nodes that appear later; an edge
//! rule links every node of its `Src` query to every node of its `Dst` query. Deleting a rule
//! undoes what it did: created nodes and edges go away, and metadata it set returns to the
//! value it had before.
//!
//! One task owns the rules and reconciles the graph with them whenever a rule or the graph
//! changes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value as Json;
use skydive_graph::id::{link_id, uuid5_concat};
use skydive_graph::{
    Edge, Graph, GraphEvent, GraphView, Id, Map, NoHistory, Node, Value, gen_id_from, now_ms,
};
use skydive_gremlin::{Env, Output};
use skydive_hub::{ConnId, EventBatch, HubHandle};
use tokio::sync::broadcast;

use crate::resources::{Change, Invalid, Resource, Resources};

fn null_as_empty<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<serde_json::Map<String, Json>, D::Error> {
    Ok(Option::<serde_json::Map<String, Json>>::deserialize(d)?.unwrap_or_default())
}

/// A node rule.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct NodeRule {
    #[serde(rename = "UUID")]
    pub uuid: String,
    #[serde(rename = "Name", skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(rename = "Description", skip_serializing_if = "String::is_empty")]
    pub description: String,
    #[serde(rename = "Metadata", deserialize_with = "null_as_empty")]
    pub metadata: serde_json::Map<String, Json>,
    /// `create` or `update`.
    #[serde(rename = "Action")]
    pub action: String,
    /// The nodes an `update` rule applies to.
    #[serde(rename = "Query", skip_serializing_if = "String::is_empty")]
    pub query: String,
}

/// An edge rule.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EdgeRule {
    #[serde(rename = "UUID")]
    pub uuid: String,
    #[serde(rename = "Name", skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(rename = "Description", skip_serializing_if = "String::is_empty")]
    pub description: String,
    #[serde(rename = "Src")]
    pub src: String,
    #[serde(rename = "Dst")]
    pub dst: String,
    #[serde(rename = "Metadata", deserialize_with = "null_as_empty")]
    pub metadata: serde_json::Map<String, Json>,
}

fn check_query(field: &str, q: &str) -> Result<(), String> {
    if q.trim().is_empty() {
        return Err(format!("{field} is required"));
    }
    skydive_gremlin::parse(q)
        .map(|_| ())
        .map_err(|e| format!("invalid {field} {q:?}: {e}"))
}

impl Resource for NodeRule {
    const NAME: &'static str = "noderule";
    const TITLE: &'static str = "NodeRule";

    fn id(&self) -> &str {
        &self.uuid
    }
    fn set_id(&mut self, id: String) {
        self.uuid = id;
    }
    fn validate(&self) -> Result<(), Invalid> {
        match self.action.as_str() {
            "create" => {
                let node = serde_json::json!({"ID": "rule", "Metadata": self.metadata});
                Ok(skydive_api::schema::validate_node(&node)?)
            }
            "update" => {
                check_query("Query", &self.query)?;
                if self.metadata.contains_key("Name") || self.metadata.contains_key("Type") {
                    return Err("Name and Type fields can not be changed".into());
                }
                Ok(())
            }
            other => Err(format!("Unsupported action {other:?}: expected create or update").into()),
        }
    }
}

impl Resource for EdgeRule {
    const NAME: &'static str = "edgerule";
    const TITLE: &'static str = "EdgeRule";

    fn id(&self) -> &str {
        &self.uuid
    }
    fn set_id(&mut self, id: String) {
        self.uuid = id;
    }
    fn validate(&self) -> Result<(), Invalid> {
        check_query("Src", &self.src)?;
        check_query("Dst", &self.dst)?;
        let edge = serde_json::json!({"ID": "rule", "Parent": "src", "Child": "dst", "Metadata": self.metadata});
        Ok(skydive_api::schema::validate_edge(&edge)?)
    }
}

fn to_map(m: &serde_json::Map<String, Json>) -> Map {
    let mut out = Map::new();
    for (k, v) in m {
        out.set_path(k, Value::from_json(v));
    }
    out
}

/// Why a rule's query gives no nodes.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error(transparent)]
    Gremlin(#[from] skydive_gremlin::Error),
    #[error("the query returns {0}, not nodes")]
    NotNodes(&'static str),
}

/// The nodes a query returns (any result made of nodes: nodes or a graph).
pub fn query_nodes(g: &dyn GraphView, query: &str) -> Result<Vec<Arc<Node>>, QueryError> {
    let env = Env {
        graph: g,
        history: &NoHistory,
        flows: None,
        bpf: None,
        now: now_ms(),
    };
    match skydive_gremlin::query(query, &env)? {
        Output::Nodes(n) => Ok(n),
        Output::Graph(g) => Ok(g.view().all_nodes().cloned().collect()),
        other => Err(QueryError::NotNodes(other.type_name())),
    }
}

/// What the rules did, so that it can be undone.
#[derive(Default)]
struct Applied {
    /// Node rule → the node it created.
    created_nodes: BTreeMap<String, Id>,
    /// Update rule → node → key → the value the key had before (None: absent).
    set_keys: BTreeMap<String, BTreeMap<Id, BTreeMap<String, Option<Value>>>>,
    /// Edge rule → the edges it created.
    created_edges: BTreeMap<String, BTreeSet<Id>>,
}

/// A change the reconciliation makes.
enum Op {
    AddNode(Node),
    SetNode(Id, Map),
    DeleteNode(Id),
    SetKeys(Id, Vec<(String, Option<Value>)>),
    AddEdge(Edge),
    SetEdge(Id, Map),
    DeleteEdge(Id),
}

fn apply_ops(g: &mut Graph, ops: Vec<Op>) -> Vec<GraphEvent> {
    let now = now_ms();
    let mut events = Vec::new();
    for op in ops {
        let r = match op {
            Op::AddNode(n) => g.add_node(n).map(|e| vec![e]),
            Op::SetNode(id, m) => g
                .set_node_metadata(&id, m, now)
                .map(|e| e.into_iter().collect()),
            Op::DeleteNode(id) => g.delete_node(&id, now),
            Op::SetKeys(id, keys) => g
                .update_node_metadata(&id, now, |m| {
                    for (k, v) in keys {
                        match v {
                            Some(v) => {
                                m.set_path(&k, v);
                            }
                            None => {
                                m.delete_path(&k);
                            }
                        }
                    }
                })
                .map(|e| e.into_iter().collect()),
            Op::AddEdge(e) => g.add_edge(e).map(|e| vec![e]),
            Op::SetEdge(id, m) => g
                .update_edge_metadata(&id, now, |old| *old = m)
                .map(|e| e.into_iter().collect()),
            Op::DeleteEdge(id) => g.delete_edge(&id, now).map(|e| vec![e]),
        };
        match r {
            Ok(evs) => events.extend(evs),
            // The graph moved on since the snapshot the ops were computed from; the next
            // reconciliation catches up.
            Err(e) => tracing::debug!("rule change not applied: {e}"),
        }
    }
    events
}

/// The task that applies the rules.
pub struct RulesEngine {
    hub: HubHandle,
    resources: Arc<Resources>,
    host: String,
    origin: String,
    conn: ConnId,
    node_rules: BTreeMap<String, NodeRule>,
    edge_rules: BTreeMap<String, EdgeRule>,
    applied: Applied,
}

impl RulesEngine {
    pub fn new(hub: HubHandle, resources: Arc<Resources>, host_id: &str) -> RulesEngine {
        RulesEngine {
            hub,
            resources,
            host: host_id.to_string(),
            origin: format!("analyzer.{host_id}"),
            conn: skydive_hub::next_conn_id(),
            node_rules: BTreeMap::new(),
            edge_rules: BTreeMap::new(),
            applied: Applied::default(),
        }
    }

    async fn load(&mut self) {
        self.node_rules = load_kind::<NodeRule>(&self.resources).await;
        self.edge_rules = load_kind::<EdgeRule>(&self.resources).await;
    }

    fn on_change(&mut self, kind: &str, id: &str, change: &Change) {
        match (kind, change) {
            (NodeRule::NAME, Change::Created(v) | Change::Updated(v)) => {
                if let Ok(r) = serde_json::from_value(v.clone()) {
                    self.node_rules.insert(id.to_string(), r);
                }
            }
            (NodeRule::NAME, Change::Deleted(_)) => {
                self.node_rules.remove(id);
            }
            (EdgeRule::NAME, Change::Created(v) | Change::Updated(v)) => {
                if let Ok(r) = serde_json::from_value(v.clone()) {
                    self.edge_rules.insert(id.to_string(), r);
                }
            }
            (EdgeRule::NAME, Change::Deleted(_)) => {
                self.edge_rules.remove(id);
            }
            _ => {}
        }
    }

    fn has_work(&self) -> bool {
        !self.node_rules.is_empty()
            || !self.edge_rules.is_empty()
            || !self.applied.created_nodes.is_empty()
            || !self.applied.set_keys.is_empty()
            || !self.applied.created_edges.is_empty()
    }

    /// Whether a batch holds changes made by someone else than this engine.
    fn foreign(&self, batch: &EventBatch) -> bool {
        batch.sources.iter().any(|(src, _)| *src != Some(self.conn))
    }

    /// Runs until the hub closes.
    pub async fn run(mut self) {
        let mut changes = self.resources.subscribe();
        let mut events = self.hub.subscribe();
        self.load().await;
        let mut dirty = true;
        loop {
            if dirty && self.has_work() {
                // Let a burst of changes settle before evaluating the queries.
                tokio::time::sleep(Duration::from_millis(50)).await;
                while let Ok(c) = changes.try_recv() {
                    self.on_change(&c.kind, &c.id, &c.change);
                }
                // What one pass creates can be what another rule's query looks for (an
                // edge rule between the nodes of two node rules): go on until nothing
                // changes, a few passes at most.
                for _ in 0..4 {
                    let ops = self.reconcile(&self.hub.snapshot().graph);
                    if ops.is_empty() {
                        break;
                    }
                    let _ = self
                        .hub
                        .apply(Some(self.conn), move |g| Ok(apply_ops(g, ops)))
                        .await;
                }
            }
            dirty = tokio::select! {
                c = changes.recv() => match c {
                    Ok(c) => {
                        self.on_change(&c.kind, &c.id, &c.change);
                        true
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        self.load().await;
                        true
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                b = events.recv() => match b {
                    Ok(b) => self.foreign(&b),
                    Err(broadcast::error::RecvError::Lagged(_)) => true,
                    Err(broadcast::error::RecvError::Closed) => return,
                },
            };
        }
    }

    /// The changes that make the graph follow the rules; records what it does.
    fn reconcile(&mut self, g: &Graph) -> Vec<Op> {
        let mut ops = Vec::new();
        self.reconcile_created_nodes(g, &mut ops);
        self.reconcile_updates(g, &mut ops);
        self.reconcile_edges(g, &mut ops);
        ops
    }

    fn reconcile_created_nodes(&mut self, g: &Graph, ops: &mut Vec<Op>) {
        let mut wanted = BTreeMap::new();
        for (rid, r) in self.node_rules.iter().filter(|(_, r)| r.action == "create") {
            let mut md = to_map(&r.metadata);
            let ty = md
                .get("Type")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let name = md
                .get("Name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let id = gen_id_from(&[&ty, &name]);
            md.insert("TID", Value::from(id.as_str()));
            wanted.insert(rid.clone(), (id, md));
        }
        for (rid, id) in std::mem::take(&mut self.applied.created_nodes) {
            if !wanted.contains_key(&rid) && g.node(&id).is_some() {
                ops.push(Op::DeleteNode(id));
            }
        }
        for (rid, (id, md)) in wanted {
            match g.node(&id) {
                None => ops.push(Op::AddNode(Node::new(
                    id.clone(),
                    md,
                    &self.host,
                    &self.origin,
                    now_ms(),
                ))),
                Some(n) if n.metadata != md => ops.push(Op::SetNode(id.clone(), md)),
                Some(_) => {}
            }
            self.applied.created_nodes.insert(rid, id);
        }
    }

    fn reconcile_updates(&mut self, g: &Graph, ops: &mut Vec<Op>) {
        let mut set_keys = std::mem::take(&mut self.applied.set_keys);
        // Undo first: for every rule, the nodes it no longer applies to.
        let mut matched: BTreeMap<String, Vec<Arc<Node>>> = BTreeMap::new();
        for (rid, r) in self.node_rules.iter().filter(|(_, r)| r.action == "update") {
            match query_nodes(g, &r.query) {
                Ok(nodes) => {
                    matched.insert(rid.clone(), nodes);
                }
                Err(e) => tracing::warn!(rule = %rid, "node rule query failed: {e}"),
            }
        }
        let mut undo: BTreeMap<Id, Vec<(String, Option<Value>)>> = BTreeMap::new();
        for (rid, per_node) in &mut set_keys {
            let still: BTreeSet<&str> = matched
                .get(rid)
                .map(|ns| ns.iter().map(|n| n.id.as_str()).collect())
                .unwrap_or_default();
            // A rule whose query failed this time keeps what it did.
            if self.node_rules.contains_key(rid) && !matched.contains_key(rid) {
                continue;
            }
            per_node.retain(|nid, keys| {
                if still.contains(nid.as_str()) {
                    return true;
                }
                if g.node(nid).is_some() {
                    undo.entry(nid.clone())
                        .or_default()
                        .extend(keys.iter().map(|(k, v)| (k.clone(), v.clone())));
                }
                false
            });
        }
        set_keys.retain(|rid, _| self.node_rules.contains_key(rid));
        for (nid, keys) in undo {
            ops.push(Op::SetKeys(nid, keys));
        }
        for (rid, nodes) in matched {
            let r = &self.node_rules[&rid];
            let per_node = set_keys.entry(rid.clone()).or_default();
            for n in nodes {
                let mut changes = Vec::new();
                let record = per_node.entry(n.id.clone()).or_default();
                for (k, v) in &r.metadata {
                    let want = Value::from_json(v);
                    let have = n.metadata.get_path(k);
                    record.entry(k.clone()).or_insert_with(|| have.cloned());
                    if have != Some(&want) {
                        changes.push((k.clone(), Some(want)));
                    }
                }
                if !changes.is_empty() {
                    ops.push(Op::SetKeys(n.id.clone(), changes));
                }
            }
        }
        self.applied.set_keys = set_keys;
    }

    fn reconcile_edges(&mut self, g: &Graph, ops: &mut Vec<Op>) {
        let mut wanted: BTreeMap<Id, (String, Id, Id, Map)> = BTreeMap::new();
        let mut failed = BTreeSet::new();
        for (rid, r) in &self.edge_rules {
            let (src, dst) = match (query_nodes(g, &r.src), query_nodes(g, &r.dst)) {
                (Ok(s), Ok(d)) => (s, d),
                (Err(e), _) | (_, Err(e)) => {
                    tracing::warn!(rule = %rid, "edge rule query failed: {e}");
                    failed.insert(rid.clone());
                    continue;
                }
            };
            let md = to_map(&r.metadata);
            let rel = md
                .get("RelationType")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            for s in &src {
                for d in &dst {
                    if s.id == d.id {
                        continue;
                    }
                    let id = if rel == "layer2" || rel == "ownership" {
                        link_id(&s.id, &d.id, &rel)
                    } else {
                        Id::from(uuid5_concat(&[&format!("{}{}{}", s.id, d.id, rel)]))
                    };
                    wanted.insert(id, (rid.clone(), s.id.clone(), d.id.clone(), md.clone()));
                }
            }
        }
        let mut created = std::mem::take(&mut self.applied.created_edges);
        for (rid, ids) in &mut created {
            if failed.contains(rid) {
                continue;
            }
            ids.retain(|id| {
                if wanted.contains_key(id) {
                    return true;
                }
                if g.edge(id).is_some() {
                    ops.push(Op::DeleteEdge(id.clone()));
                }
                false
            });
        }
        created.retain(|_, ids| !ids.is_empty());
        for (id, (rid, parent, child, md)) in wanted {
            match g.edge(&id) {
                None => ops.push(Op::AddEdge(Edge::new(
                    id.clone(),
                    parent,
                    child,
                    md,
                    &self.host,
                    &self.origin,
                    now_ms(),
                ))),
                Some(e) if e.metadata != md => ops.push(Op::SetEdge(id.clone(), md)),
                Some(_) => {}
            }
            created.entry(rid).or_default().insert(id);
        }
        self.applied.created_edges = created;
    }
}

async fn load_kind<T: Resource>(res: &Resources) -> BTreeMap<String, T> {
    match res.list(T::NAME).await {
        Ok(all) => all
            .into_iter()
            .filter_map(|(id, v)| serde_json::from_value(v).ok().map(|r| (id, r)))
            .collect(),
        Err(e) => {
            tracing::error!("cannot read the {} resources: {e}", T::NAME);
            BTreeMap::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_rules_are_validated_as_skydive_does() {
        let create: NodeRule =
            serde_json::from_value(serde_json::json!({"Action": "create", "Metadata": {"Name": "n", "Type": "fabric"}, "Query": ""}))
                .unwrap();
        assert_eq!(create.validate(), Ok(()));
        let no_type: NodeRule = serde_json::from_value(
            serde_json::json!({"Action": "create", "Metadata": {"Name": "n"}}),
        )
        .unwrap();
        assert!(no_type.validate().unwrap_err().contains("Type is required"));
        let rename: NodeRule = serde_json::from_value(
            serde_json::json!({"Action": "update", "Query": "G.V()", "Metadata": {"Name": "x"}}),
        )
        .unwrap();
        assert_eq!(
            rename.validate(),
            Err(Invalid(
                "Name and Type fields can not be changed".to_string()
            ))
        );
        let bad_query: NodeRule = serde_json::from_value(
            serde_json::json!({"Action": "update", "Query": "G.Foo()", "Metadata": null}),
        )
        .unwrap();
        assert!(
            bad_query
                .validate()
                .unwrap_err()
                .contains("Expected step function"),
            "{:?}",
            bad_query.validate()
        );
        let bad_action: NodeRule =
            serde_json::from_value(serde_json::json!({"Action": "merge"})).unwrap();
        assert!(bad_action.validate().is_err());
    }

    #[test]
    fn edge_rules_need_queries_and_a_relation_type() {
        let ok: EdgeRule = serde_json::from_value(serde_json::json!({
            "Src": "G.V().Has('Name','a')", "Dst": "G.V().Has('Name','b')", "Metadata": {"RelationType": "layer2"}
        }))
        .unwrap();
        assert_eq!(ok.validate(), Ok(()));
        let no_rel = EdgeRule {
            metadata: Default::default(),
            ..ok.clone()
        };
        assert!(
            no_rel
                .validate()
                .unwrap_err()
                .contains("RelationType is required")
        );
        let no_src = EdgeRule {
            src: String::new(),
            ..ok
        };
        assert_eq!(
            no_src.validate(),
            Err(Invalid("Src is required".to_string()))
        );
    }
}
