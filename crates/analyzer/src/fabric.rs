//! The fabric probe (`analyzer.topology.fabric`, Skydive's definition language): switches,
//! routers and their ports that no agent runs on, drawn into the graph from the
//! configuration, and linked to the agents' interfaces as they appear.
//!
//! One definition per list entry:
//! * `A -> B`: fabric nodes `A` and `B`, an ownership edge and a layer2 edge from `A` to `B`;
//! * `A --> B`: a layer2 edge only;
//! * `A ->[k=v, …] B`: the layer2 edge gets the metadata (besides `Type: fabric`);
//! * `NAME[k=v, …]`: the node's metadata (`Name` is `NAME` unless given, `Type` is `device`
//!   unless given, `Probe: fabric` always);
//! * `A -> *[k=v, …]/NAME[k=v, …]`: a layer2 edge from `A` to every node matching the part
//!   after the `/` (`NAME` is its `Name`) that has an edge from a node matching the part
//!   before it, such as `*[Type=host]/eth0`: the `eth0` of every host, as agents connect.
//!
//! A definition that cannot be read stops the start, naming it. Fabric nodes have stable IDs
//! (`UUIDv5(OID, "fabric" + NAME)`) and `TID` = ID; their origin is the analyzer's.

use std::collections::BTreeMap;
use std::sync::Arc;

use skydive_graph::id::{link_id, uuid5_concat};
use skydive_graph::{Edge, Graph, GraphEvent, Id, Map, Node, Value, now_ms};
use skydive_hub::{ConnId, HubHandle};
use tokio::sync::broadcast;

/// A definition that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("analyzer.topology.fabric: {definition:?}: {reason}")]
pub struct FabricError {
    pub definition: String,
    pub reason: String,
}

/// A node the configuration declares.
#[derive(Debug, Clone, PartialEq)]
pub struct FabricNode {
    pub id: Id,
    pub metadata: Map,
}

/// An edge between two declared nodes.
#[derive(Debug, Clone, PartialEq)]
pub struct FabricLink {
    pub parent: Id,
    pub child: Id,
    /// `->` (ownership and layer2) rather than `-->` (layer2 only).
    pub ownership: bool,
    /// The layer2 edge's metadata, `Type: fabric` and the definition's.
    pub metadata: Map,
}

/// A layer2 edge from a declared node to nodes found in the graph.
#[derive(Debug, Clone, PartialEq)]
pub struct WildcardLink {
    pub parent: Id,
    /// What the found node's edge parent must carry (the part before `/`).
    pub via: Vec<(String, String)>,
    /// What the found node must carry (the part after `/`).
    pub target: Vec<(String, String)>,
    pub metadata: Map,
}

/// The fabric a configuration declares.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Fabric {
    pub nodes: Vec<FabricNode>,
    pub links: Vec<FabricLink>,
    pub wildcards: Vec<WildcardLink>,
}

/// `k=v, k2="v 2"` → pairs; quotes around keys and values are dropped.
fn attributes(def: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for pair in def.split(',') {
        let pair = pair.trim();
        let Some((k, v)) = pair.split_once('=') else {
            return Err(format!("attributes must be defined by pair k=v: {def}"));
        };
        if v.contains('=') {
            return Err(format!("attributes must be defined by pair k=v: {def}"));
        }
        let k = k.trim().trim_matches('"');
        if k.is_empty() {
            return Err(format!("attribute without a name: {def}"));
        }
        out.push((k.to_string(), v.trim().trim_matches('"').to_string()));
    }
    Ok(out)
}

/// `NAME[k=v, …]` → the name and the attributes (`Name: NAME` first unless the name is `*`).
fn node_def(def: &str) -> Result<(String, Vec<(String, String)>), String> {
    let def = def.trim();
    let (name, attrs) = match def.split_once('[') {
        None => (def, None),
        Some((name, rest)) => {
            let Some(inner) = rest.strip_suffix(']') else {
                return Err(format!("unable to parse node definition: {def}"));
            };
            if inner.contains('[') || inner.contains(']') {
                return Err(format!("unable to parse node definition: {def}"));
            }
            (name.trim(), Some(inner))
        }
    };
    if name.is_empty() || name.contains(']') {
        return Err(format!("unable to parse node definition: {def}"));
    }
    let mut pairs = Vec::new();
    if name != "*" {
        pairs.push(("Name".to_string(), name.to_string()));
    }
    if let Some(a) = attrs.filter(|a| !a.trim().is_empty()) {
        for (k, v) in attributes(a)? {
            pairs.retain(|(pk, _)| *pk != k);
            pairs.push((k, v));
        }
    }
    Ok((name.to_string(), pairs))
}

fn to_metadata(base: Map, pairs: &[(String, String)]) -> Map {
    let mut m = base;
    for (k, v) in pairs {
        m.insert(k.as_str(), Value::from(v.as_str()));
    }
    m
}

/// The ID of the fabric node named `name` in the definitions.
pub fn node_id(name: &str) -> Id {
    Id::from(uuid5_concat(&["fabric", name]))
}

impl Fabric {
    /// Reads the definitions of `analyzer.topology.fabric`.
    pub fn parse(defs: &[String]) -> Result<Fabric, FabricError> {
        let mut fabric = Fabric::default();
        for def in defs {
            fabric.add(def).map_err(|reason| FabricError {
                definition: def.clone(),
                reason,
            })?;
        }
        Ok(fabric)
    }

    /// Declares the node of `def` (the first declaration of a name wins), returning its ID.
    fn node(&mut self, def: &str) -> Result<Id, String> {
        let (name, pairs) = node_def(def)?;
        let id = node_id(&name);
        if !self.nodes.iter().any(|n| n.id == id) {
            let mut m = Map::new();
            m.insert("Type", Value::from("device"));
            let mut m = to_metadata(m, &pairs);
            m.insert("Probe", Value::from("fabric"));
            m.insert("TID", Value::from(id.as_str()));
            self.nodes.push(FabricNode {
                id: id.clone(),
                metadata: m,
            });
        }
        Ok(id)
    }

    fn add(&mut self, def: &str) -> Result<(), String> {
        let (parts, ownership): (Vec<&str>, bool) = match def.split("-->").collect::<Vec<_>>() {
            p if p.len() == 2 => (p, false),
            _ => (def.split("->").collect(), true),
        };
        let [parent, child] = parts[..] else {
            return Err("a link definition has two endpoints, `A -> B` or `A --> B`".into());
        };
        let (parent, mut child) = (parent.trim(), child.trim());
        if parent.is_empty() || child.is_empty() {
            return Err("a link definition has two endpoints, `A -> B` or `A --> B`".into());
        }
        let mut link_md = Map::new();
        link_md.insert("Type", Value::from("fabric"));
        if let Some(rest) = child.strip_prefix('[') {
            let Some((attrs, after)) = rest.split_once(']') else {
                return Err("unclosed `[` in the link's metadata".into());
            };
            link_md = to_metadata(link_md, &attributes(attrs)?);
            child = after.trim();
            if child.is_empty() {
                return Err("a link definition has two endpoints, `A -> B` or `A --> B`".into());
            }
        }
        link_md.insert("RelationType", Value::from("layer2"));
        if parent.starts_with('*') {
            return Err("a wildcard node cannot be a parent".into());
        }
        let parent = self.node(parent)?;
        if child.starts_with('*') {
            let Some((via, target)) = child.split_once('/') else {
                return Err(format!(
                    "invalid wildcard pattern {child:?}: expected `*[k=v]/NAME`"
                ));
            };
            let (_, via) = node_def(via)?;
            let (_, target) = node_def(target)?;
            if target.is_empty() {
                return Err(format!(
                    "invalid wildcard pattern {child:?}: nothing to match after `/`"
                ));
            }
            self.wildcards.push(WildcardLink {
                parent,
                via,
                target,
                metadata: link_md,
            });
        } else {
            let child = self.node(child)?;
            if parent == child {
                return Err("a node cannot be linked to itself".into());
            }
            self.links.push(FabricLink {
                parent,
                child,
                ownership,
                metadata: link_md,
            });
        }
        Ok(())
    }

    /// The nodes and edges the declarations make, missing from `g`.
    fn declared(&self, g: &Graph, host: &str, origin: &str) -> Vec<GraphChange> {
        let now = now_ms();
        let mut out = Vec::new();
        for n in &self.nodes {
            if g.node(&n.id).is_none() {
                out.push(GraphChange::Node(Node::new(
                    n.id.clone(),
                    n.metadata.clone(),
                    host,
                    origin,
                    now,
                )));
            }
        }
        for l in &self.links {
            if l.ownership {
                let id = link_id(&l.parent, &l.child, "ownership");
                if g.edge(&id).is_none() {
                    let mut m = Map::new();
                    m.insert("RelationType", Value::from("ownership"));
                    out.push(GraphChange::Edge(Edge::new(
                        id,
                        l.parent.clone(),
                        l.child.clone(),
                        m,
                        host,
                        origin,
                        now,
                    )));
                }
            }
            let id = link_id(&l.parent, &l.child, "layer2");
            if g.edge(&id).is_none() {
                out.push(GraphChange::Edge(Edge::new(
                    id,
                    l.parent.clone(),
                    l.child.clone(),
                    l.metadata.clone(),
                    host,
                    origin,
                    now,
                )));
            }
        }
        out
    }

    /// The layer2 edges the wildcard links want to the nodes of `candidates`, missing from
    /// `g`.
    fn wildcard_edges<'a>(
        &self,
        g: &Graph,
        candidates: impl Iterator<Item = &'a str>,
        host: &str,
        origin: &str,
    ) -> Vec<GraphChange> {
        let now = now_ms();
        let mut out = BTreeMap::new();
        for c in candidates {
            let Some(node) = g.node(c) else { continue };
            for w in &self.wildcards {
                if w.parent == node.id || !matches(&node.metadata, &w.target) {
                    continue;
                }
                let via = g.in_edges(c).any(|e| {
                    g.node(&e.parent)
                        .is_some_and(|p| p.id != w.parent && matches(&p.metadata, &w.via))
                });
                if !via || layer2_between(g, &w.parent, c) {
                    continue;
                }
                let id = link_id(&w.parent, c, "layer2");
                out.entry(id.clone()).or_insert_with(|| {
                    GraphChange::Edge(Edge::new(
                        id,
                        w.parent.clone(),
                        node.id.clone(),
                        w.metadata.clone(),
                        host,
                        origin,
                        now,
                    ))
                });
            }
        }
        out.into_values().collect()
    }
}

/// Whether `m` carries every pair (string values, compared as Skydive's metadata match does).
fn matches(m: &Map, pairs: &[(String, String)]) -> bool {
    pairs
        .iter()
        .all(|(k, v)| m.get_path(k).and_then(Value::as_str) == Some(v.as_str()))
}

fn layer2_between(g: &Graph, a: &str, b: &str) -> bool {
    let l2 =
        |e: &Arc<Edge>| e.metadata.get("RelationType").and_then(Value::as_str) == Some("layer2");
    g.out_edges(a).any(|e| e.child.as_str() == b && l2(e))
        || g.out_edges(b).any(|e| e.child.as_str() == a && l2(e))
}

enum GraphChange {
    Node(Node),
    Edge(Edge),
}

fn apply(g: &mut Graph, changes: Vec<GraphChange>) -> Vec<GraphEvent> {
    let mut events = Vec::new();
    for c in changes {
        let r = match c {
            GraphChange::Node(n) => g.add_node(n),
            GraphChange::Edge(e) => g.add_edge(e),
        };
        match r {
            Ok(e) => events.push(e),
            // The graph moved on (an agent's node went away): the next event catches up.
            Err(e) => tracing::debug!("fabric change not applied: {e}"),
        }
    }
    events
}

/// The task that keeps the fabric in the graph.
pub struct FabricProbe {
    fabric: Fabric,
    hub: HubHandle,
    host: String,
    origin: String,
    conn: ConnId,
}

impl FabricProbe {
    pub fn new(fabric: Fabric, hub: HubHandle, host_id: &str) -> FabricProbe {
        FabricProbe {
            fabric,
            hub,
            host: host_id.to_string(),
            origin: format!("analyzer.{host_id}"),
            conn: skydive_hub::next_conn_id(),
        }
    }

    async fn commit(&self, changes: Vec<GraphChange>) {
        if changes.is_empty() {
            return;
        }
        let _ = self
            .hub
            .apply(Some(self.conn), move |g| Ok(apply(g, changes)))
            .await;
    }

    /// Draws the declared nodes and edges, then links the wildcards' nodes as they appear
    /// or change, until the hub closes. A declared node or edge that goes away (a publisher
    /// deleting it) is drawn again.
    pub async fn run(self) {
        if self.fabric.nodes.is_empty() {
            return;
        }
        let mut events = self.hub.subscribe();
        let snap = self.hub.snapshot();
        let mut changes = self.fabric.declared(&snap.graph, &self.host, &self.origin);
        if !self.fabric.wildcards.is_empty() {
            let ids: Vec<&str> = snap.graph.nodes().map(|n| n.id.as_str()).collect();
            changes.extend(self.fabric.wildcard_edges(
                &snap.graph,
                ids.into_iter(),
                &self.host,
                &self.origin,
            ));
        }
        drop(snap);
        self.commit(changes).await;
        loop {
            let batch = match events.recv().await {
                Ok(b) => b,
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    // Missed events: look at every node again.
                    let snap = self.hub.snapshot();
                    let ids: Vec<&str> = snap.graph.nodes().map(|n| n.id.as_str()).collect();
                    let mut c = self.fabric.declared(&snap.graph, &self.host, &self.origin);
                    c.extend(self.fabric.wildcard_edges(
                        &snap.graph,
                        ids.into_iter(),
                        &self.host,
                        &self.origin,
                    ));
                    drop(snap);
                    self.commit(c).await;
                    continue;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            };
            if batch.sources.iter().all(|(s, _)| *s == Some(self.conn)) {
                continue;
            }
            let mut candidates = Vec::new();
            let mut lost = false;
            for e in &batch.events {
                match e {
                    GraphEvent::EdgeAdded(e) => candidates.push(e.child.clone()),
                    GraphEvent::NodeUpdated { node, .. } => candidates.push(node.id.clone()),
                    GraphEvent::NodeDeleted(n) => lost |= n.origin == self.origin,
                    GraphEvent::EdgeDeleted(e) => lost |= e.origin == self.origin,
                    _ => {}
                }
            }
            if candidates.is_empty() && !lost {
                continue;
            }
            let snap = self.hub.snapshot();
            let mut c = if lost {
                self.fabric.declared(&snap.graph, &self.host, &self.origin)
            } else {
                Vec::new()
            };
            if !self.fabric.wildcards.is_empty() {
                c.extend(self.fabric.wildcard_edges(
                    &snap.graph,
                    candidates.iter().map(Id::as_str),
                    &self.host,
                    &self.origin,
                ));
            }
            drop(snap);
            self.commit(c).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defs(d: &[&str]) -> Vec<String> {
        d.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn links_declare_nodes_with_skydive_ids_and_metadata() {
        let f = Fabric::parse(&defs(&[
            "TOR1[Name=tor1] -> TOR1_PORT1[Name=port1, MTU=1500]",
            "TOR1_PORT1 -->[Speed=\"10G\"] TOR2",
        ]))
        .unwrap();
        assert_eq!(f.nodes.len(), 3);
        let tor1 = &f.nodes[0];
        // Skydive: uuid.NewV5(uuid.NamespaceOID, "fabric"+"TOR1").
        assert_eq!(
            tor1.id.as_str(),
            uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, b"fabricTOR1").to_string()
        );
        assert_eq!(tor1.metadata.get("Name").unwrap().as_str(), Some("tor1"));
        assert_eq!(tor1.metadata.get("Type").unwrap().as_str(), Some("device"));
        assert_eq!(tor1.metadata.get("Probe").unwrap().as_str(), Some("fabric"));
        assert_eq!(
            tor1.metadata.get("TID").unwrap().as_str(),
            Some(tor1.id.as_str())
        );
        assert_eq!(
            f.nodes[1].metadata.get("MTU").unwrap().as_str(),
            Some("1500")
        );
        assert_eq!(
            f.nodes[2].metadata.get("Name").unwrap().as_str(),
            Some("TOR2")
        );
        assert!(f.links[0].ownership);
        assert!(!f.links[1].ownership);
        assert_eq!(
            f.links[1].metadata.get("Speed").unwrap().as_str(),
            Some("10G")
        );
        assert_eq!(
            f.links[1].metadata.get("Type").unwrap().as_str(),
            Some("fabric")
        );
    }

    #[test]
    fn wildcards_match_an_edge_parent_and_a_child() {
        let f = Fabric::parse(&defs(&["TOR1_PORT2 --> *[Type=host]/eth0"])).unwrap();
        assert_eq!(f.wildcards.len(), 1);
        let w = &f.wildcards[0];
        assert_eq!(w.via, vec![("Type".to_string(), "host".to_string())]);
        assert_eq!(w.target, vec![("Name".to_string(), "eth0".to_string())]);
    }

    #[test]
    fn bad_definitions_are_refused_naming_them() {
        for (def, why) in [
            ("TOR1", "two endpoints"),
            ("A -> B -> C", "two endpoints"),
            (" -> B", "two endpoints"),
            ("*[Type=host]/eth0 -> A", "cannot be a parent"),
            ("A -> *[Type=host]", "invalid wildcard"),
            ("A[Name] -> B", "k=v"),
            ("A[x=1=2] -> B", "k=v"),
            ("A[x=1 -> B", "unable to parse"),
            ("A -> A", "itself"),
            ("A ->[Speed=1 B", "unclosed"),
        ] {
            let e = Fabric::parse(&defs(&[def])).unwrap_err();
            assert_eq!(e.definition, def);
            assert!(e.reason.contains(why), "{def}: {}", e.reason);
            assert!(e.to_string().starts_with("analyzer.topology.fabric: "));
        }
    }

    fn node(id: &str, md: &[(&str, &str)]) -> Node {
        let mut m = Map::new();
        for (k, v) in md {
            m.insert(*k, Value::from(*v));
        }
        Node::new(id, m, "h", "agent.h", 1)
    }

    fn edge(p: &str, c: &str, rel: &str) -> Edge {
        let mut m = Map::new();
        m.insert("RelationType", Value::from(rel));
        Edge::new(format!("{p}-{c}"), p, c, m, "h", "agent.h", 1)
    }

    #[test]
    fn wildcard_edges_go_to_the_matching_nodes_once() {
        let f = Fabric::parse(&defs(&["SW -> P1", "P1 --> *[Type=host]/eth0"])).unwrap();
        let mut g = Graph::new();
        for c in f.declared(&g, "a", "analyzer.a") {
            match c {
                GraphChange::Node(n) => g.add_node(n).map(|_| ()).unwrap(),
                GraphChange::Edge(e) => g.add_edge(e).map(|_| ()).unwrap(),
            }
        }
        assert_eq!((g.node_count(), g.edge_count()), (2, 2));
        assert!(f.declared(&g, "a", "analyzer.a").is_empty());
        g.add_node(node("h1", &[("Type", "host"), ("Name", "h1")]))
            .unwrap();
        g.add_node(node("e1", &[("Type", "device"), ("Name", "eth0")]))
            .unwrap();
        g.add_node(node("ns", &[("Type", "netns"), ("Name", "ns")]))
            .unwrap();
        g.add_node(node("e2", &[("Type", "veth"), ("Name", "eth0")]))
            .unwrap();
        g.add_edge(edge("h1", "e1", "ownership")).unwrap();
        g.add_edge(edge("ns", "e2", "ownership")).unwrap();
        let ids = ["h1", "e1", "ns", "e2"];
        let c = f.wildcard_edges(&g, ids.into_iter(), "a", "analyzer.a");
        assert_eq!(c.len(), 1);
        let GraphChange::Edge(e) = &c[0] else {
            panic!("an edge")
        };
        assert_eq!(e.parent, node_id("P1"));
        assert_eq!(e.child.as_str(), "e1");
        assert_eq!(e.id, link_id(&node_id("P1"), "e1", "layer2"));
        assert_eq!(e.metadata.get("Type").unwrap().as_str(), Some("fabric"));
        assert_eq!(e.origin, "analyzer.a");
        g.add_edge(e.clone()).unwrap();
        assert!(
            f.wildcard_edges(&g, ids.into_iter(), "a", "analyzer.a")
                .is_empty()
        );
    }
}
