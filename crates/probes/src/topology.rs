//! The agent's topology: namespaces and their interfaces, as the probes report them, turned
//! into nodes and edges (Skydive's graph model) with stable IDs and TIDs (Skydive's IDs and TIDs).
//!
//! Pure: inputs in, graph operations out. The operations only touch the metadata keys this
//! module owns on a node, so what other probes (OVS, captures) add to the same node stays.
//!
//! IDs: a netns node is `UUIDv5("netns/" + its TID)`, an interface `UUIDv5("interface/" +
//! owner TID + "/" + ifindex)`, edges `UUIDv5(parent + child + relation)`; all survive a
//! restart of the agent. TIDs follow Skydive: `UUIDv5(hostTID + Path + "netns")` for a
//! namespace, `UUIDv5(ownerTID + Name + Type)` for an interface.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use skydive_graph::id::{child_tid, link_id, netns_tid};
use skydive_graph::{Edge, Graph, GraphEvent, Id, Map, Node, Value, diff_metadata, gen_id_from};

use crate::containers::{Container, Manager};
use crate::netns::{NsInfo, NsKey};

/// An interface as a namespace's probe reports it.
#[derive(Clone, Debug, PartialEq)]
pub struct LinkState {
    pub index: u32,
    pub name: String,
    pub ty: String,
    /// The keys the probe owns (Name, MTU, IPV4, Metric, ...), without `TID`.
    pub metadata: Map,
    pub master: Option<u32>,
    /// The peer of a veth, or the lower device of a vlan, vxlan or macvlan: in the same
    /// namespace (`None`) or in another one.
    pub link: Option<(Option<NsKey>, u32)>,
}

/// What the probes report.
#[derive(Clone, Debug, PartialEq)]
pub enum Input {
    /// A namespace appeared or changed.
    Namespace(NsInfo),
    NamespaceGone(NsKey),
    /// Interfaces of a namespace: `full` replaces them all, otherwise `links` are added or
    /// updated and `removed` deleted.
    Links {
        ns: NsKey,
        full: bool,
        links: Vec<LinkState>,
        removed: Vec<u32>,
    },
    /// A container started or changed (the container probes).
    Container(Container),
    /// A container stopped or went: what `manager` reported of container `id`.
    ContainerGone {
        manager: Manager,
        id: String,
    },
}

/// A change to make to the graph.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// Set the owned keys of a node (creating it if needed): `prev` is what was set before,
    /// so that keys gone from `metadata` are removed.
    SetNode {
        id: Id,
        metadata: Map,
        prev: Option<Map>,
    },
    DeleteNode(Id),
    AddEdge {
        id: Id,
        parent: Id,
        child: Id,
        metadata: Map,
    },
    DeleteEdge(Id),
}

#[derive(Clone, Debug)]
struct NsEntry {
    info: NsInfo,
    links: BTreeMap<u32, LinkState>,
}

#[derive(Clone, Debug, PartialEq)]
struct EdgeDesc {
    parent: Id,
    child: Id,
    metadata: Map,
}

/// What one namespace puts in the graph: its node and its interfaces, their ownership edges,
/// and the layer2 edges its interfaces report (a veth pair's edge is reported by both ends).
#[derive(Clone, Debug, Default)]
struct Contribution {
    nodes: HashMap<Id, Map>,
    edges: HashMap<Id, EdgeDesc>,
    /// The other namespaces its interfaces point into (veth peers, lower devices).
    targets: BTreeSet<NsKey>,
}

/// The topology of one host.
///
/// Changes are worked out per namespace: a change in a namespace recomputes that namespace's
/// contribution and those of the namespaces whose interfaces point into it, so that the cost of
/// an event does not grow with the number of namespaces on the host.
#[derive(Debug)]
pub struct Topology {
    host_id: Id,
    host_tid: String,
    root: NsKey,
    namespaces: BTreeMap<NsKey, NsEntry>,
    /// What each namespace put in the graph at the last [`Topology::ops`].
    contributions: HashMap<NsKey, Contribution>,
    /// The edges in the graph, with the number of namespaces that report each.
    edges: HashMap<Id, (EdgeDesc, u32)>,
    /// Namespaces changed since the last [`Topology::ops`]; `true` when what other
    /// namespaces see of it changed (itself, or which interfaces it has), not only the
    /// interfaces' metadata.
    dirty: BTreeMap<NsKey, bool>,
    /// For a namespace, the namespaces whose interfaces point into it.
    referrers: HashMap<NsKey, BTreeSet<NsKey>>,
    /// Containers by ID, as each manager reports them; the first manager's is shown.
    containers: BTreeMap<String, BTreeMap<Manager, Container>>,
    /// For a namespace, the containers shown in it.
    in_ns: HashMap<NsKey, BTreeSet<String>>,
}

fn relation(kind: &str) -> Map {
    let mut m = Map::new();
    m.insert("RelationType", kind);
    m
}

impl Topology {
    /// The topology of the host whose node is `host_id` with TID `host_tid`; `root` is the
    /// host's own namespace.
    pub fn new(host_id: Id, host_tid: &str, root: NsInfo) -> Topology {
        let mut namespaces = BTreeMap::new();
        let key = root.key;
        namespaces.insert(
            key,
            NsEntry {
                info: root,
                links: BTreeMap::new(),
            },
        );
        Topology {
            host_id,
            host_tid: host_tid.to_string(),
            root: key,
            namespaces,
            contributions: HashMap::new(),
            edges: HashMap::new(),
            dirty: BTreeMap::from([(key, true)]),
            referrers: HashMap::new(),
            containers: BTreeMap::new(),
            in_ns: HashMap::new(),
        }
    }

    /// The number of namespaces (the host's included) and interfaces known.
    pub fn size(&self) -> (usize, usize) {
        (
            self.namespaces.len(),
            self.namespaces.values().map(|n| n.links.len()).sum(),
        )
    }

    pub fn apply(&mut self, input: Input) {
        // Whether what other namespaces see of this one changes (see `dirty`).
        let (key, seen) = match input {
            Input::Namespace(info) => {
                let key = info.key;
                if key != self.root {
                    self.namespaces
                        .entry(key)
                        .and_modify(|e| e.info = info.clone())
                        .or_insert(NsEntry {
                            info,
                            links: BTreeMap::new(),
                        });
                }
                (key, true)
            }
            Input::NamespaceGone(key) => {
                if key != self.root {
                    self.namespaces.remove(&key);
                    // Their processes are gone with it: what was reported of the containers
                    // in it is over (a report lost on the way must not come back on a new
                    // namespace that gets the same inode).
                    for id in self.in_ns.get(&key).cloned().unwrap_or_default() {
                        let before = self.shown_in(&id);
                        if let Some(m) = self.containers.get_mut(&id) {
                            m.retain(|_, c| c.netns != key);
                            if m.is_empty() {
                                self.containers.remove(&id);
                            }
                        }
                        self.container_moved(&id, before);
                    }
                }
                (key, true)
            }
            Input::Links {
                ns,
                full,
                links,
                removed,
            } => {
                let Some(e) = self.namespaces.get_mut(&ns) else {
                    return;
                };
                let before: Vec<u32> = e.links.keys().copied().collect();
                if full {
                    e.links.clear();
                }
                for i in removed {
                    e.links.remove(&i);
                }
                for l in links {
                    e.links.insert(l.index, l);
                }
                (ns, !e.links.keys().copied().eq(before))
            }
            Input::Container(c) => {
                let id = c.id.clone();
                let before = self.shown_in(&id);
                self.containers
                    .entry(id.clone())
                    .or_default()
                    .insert(c.manager, c);
                self.container_moved(&id, before);
                return;
            }
            Input::ContainerGone { manager, id } => {
                let before = self.shown_in(&id);
                if let Some(m) = self.containers.get_mut(&id) {
                    m.remove(&manager);
                    if m.is_empty() {
                        self.containers.remove(&id);
                    }
                }
                self.container_moved(&id, before);
                return;
            }
        };
        *self.dirty.entry(key).or_default() |= seen;
    }

    /// The container `id` as shown: the first manager's report.
    fn shown(&self, id: &str) -> Option<&Container> {
        self.containers.get(id)?.values().next()
    }

    /// The namespace container `id` is shown in.
    fn shown_in(&self, id: &str) -> Option<NsKey> {
        self.shown(id).map(|c| c.netns)
    }

    /// Container `id` changed, and was shown in namespace `before`: the index follows, and
    /// both namespaces are worked out again (the name of a namespace may come from its
    /// container, and other namespaces' interfaces say that name).
    fn container_moved(&mut self, id: &str, before: Option<NsKey>) {
        let after = self.shown_in(id);
        if let Some(b) = before
            && before != after
            && let Some(set) = self.in_ns.get_mut(&b)
        {
            set.remove(id);
            if set.is_empty() {
                self.in_ns.remove(&b);
            }
        }
        if let Some(a) = after {
            self.in_ns.entry(a).or_default().insert(id.to_string());
        }
        for k in [before, after].into_iter().flatten() {
            self.dirty.insert(k, true);
        }
    }

    /// The containers shown in namespace `key`, the one that names it first: a container
    /// that did not join another's namespace, then by name.
    fn containers_in(&self, key: NsKey) -> Vec<&Container> {
        let mut v: Vec<&Container> = self
            .in_ns
            .get(&key)
            .into_iter()
            .flatten()
            .filter_map(|id| self.shown(id))
            .collect();
        v.sort_by(|a, b| (a.joined, &a.name, &a.id).cmp(&(b.joined, &b.name, &b.id)));
        v
    }

    /// The name of namespace `key`'s node: its container's when it has one (Skydive's
    /// Docker and runc probes name it so), else the file's or the process's.
    fn ns_name(&self, key: NsKey) -> Option<(&str, Option<Manager>)> {
        let e = self.namespaces.get(&key)?;
        Some(match self.containers_in(key).first() {
            Some(c) => (c.name.as_str(), Some(c.manager)),
            None => (e.info.name.as_str(), None),
        })
    }

    /// The number of containers shown.
    pub fn containers(&self) -> usize {
        self.containers.len()
    }

    /// The TID of a namespace's owner node: the host for the host's namespace.
    fn owner(&self, key: NsKey) -> Option<(Id, String)> {
        if key == self.root {
            return Some((self.host_id.clone(), self.host_tid.clone()));
        }
        let e = self.namespaces.get(&key)?;
        let tid = netns_tid(&self.host_tid, &e.info.path.to_string_lossy());
        Some((gen_id_from(&["netns", &tid]), tid))
    }

    fn interface_id(owner_tid: &str, index: u32) -> Id {
        gen_id_from(&["interface", owner_tid, &index.to_string()])
    }

    /// The node ID of interface `index` of namespace `key`, if known.
    pub fn interface(&self, key: NsKey, index: u32) -> Option<Id> {
        let e = self.namespaces.get(&key)?;
        e.links.get(&index)?;
        let (_, tid) = self.owner(key)?;
        Some(Self::interface_id(&tid, index))
    }

    /// What namespace `key` puts in the graph now.
    fn contribution(&self, key: NsKey) -> Contribution {
        let mut c = Contribution::default();
        let Some(e) = self.namespaces.get(&key) else {
            return c;
        };
        let Some((owner_id, owner_tid)) = self.owner(key) else {
            return c;
        };
        let mut add_edge = |parent: &Id, child: &Id, md: Map| {
            let rel = md
                .get("RelationType")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let id = link_id(parent, child, &rel);
            c.edges.insert(
                id,
                EdgeDesc {
                    parent: parent.clone(),
                    child: child.clone(),
                    metadata: md,
                },
            );
        };
        if key != self.root {
            let mut m = Map::new();
            let (name, manager) = self.ns_name(key).unwrap_or_default();
            m.insert("Name", name);
            if let Some(manager) = manager {
                m.insert("Manager", manager.as_str());
                if manager == Manager::Runc {
                    m.insert("Runtime", "runc");
                }
            }
            m.insert("Type", "netns");
            m.insert("Path", e.info.path.to_string_lossy().as_ref());
            m.insert("Inode", e.info.inode as i64);
            m.insert("Device", e.info.device as i64);
            m.insert("TID", owner_tid.as_str());
            c.nodes.insert(owner_id.clone(), m);
            add_edge(&self.host_id, &owner_id, relation("ownership"));
        }
        for l in e.links.values() {
            let id = Self::interface_id(&owner_tid, l.index);
            let mut m = l.metadata.clone();
            m.insert("TID", child_tid(&owner_tid, &l.name, &l.ty).as_str());
            add_edge(&owner_id, &id, relation("ownership"));
            if let Some(master) = l.master
                && e.links.contains_key(&master)
            {
                add_edge(
                    &Self::interface_id(&owner_tid, master),
                    &id,
                    relation("layer2"),
                );
            }
            if let Some((other_ns, other)) = l.link {
                let other_key = other_ns.unwrap_or(key);
                if other_key != key {
                    c.targets.insert(other_key);
                }
                if other_key != key
                    && other_key != self.root
                    && let Some((name, _)) = self.ns_name(other_key)
                {
                    m.insert("LinkNetNsName", name);
                }
                if let Some(other_id) = self.interface(other_key, other) {
                    if l.ty == "veth" {
                        // One layer2 edge per pair, whichever end reports it.
                        let (p, c) = if id < other_id {
                            (&id, &other_id)
                        } else {
                            (&other_id, &id)
                        };
                        add_edge(p, c, relation("layer2"));
                    } else {
                        let mut md = relation("layer2");
                        if l.ty == "vlan" {
                            md.insert("Type", "vlan");
                        }
                        add_edge(&other_id, &id, md);
                    }
                }
            }
            c.nodes.insert(id, m);
        }
        for ct in self.containers_in(key) {
            let tid = child_tid(&self.host_tid, &ct.id, "container");
            let id = gen_id_from(&["container", &tid]);
            let mut m = Map::new();
            m.insert("Type", "container");
            m.insert("Name", ct.name.as_str());
            m.insert("Manager", ct.manager.as_str());
            m.insert("Container", ct.metadata.clone());
            m.insert("TID", tid.as_str());
            add_edge(&owner_id, &id, relation("ownership"));
            c.nodes.insert(id, m);
        }
        c
    }

    /// The operations that bring the graph to the current state, since the last call.
    pub fn ops(&mut self) -> Vec<Op> {
        let changed = std::mem::take(&mut self.dirty);
        // A namespace's contribution also depends on the namespaces it points into: on
        // their names and paths, and on which interfaces they have.
        let mut dirty: BTreeSet<NsKey> = changed.keys().copied().collect();
        let referrers: Vec<NsKey> = changed
            .iter()
            .filter(|(_, seen)| **seen)
            .filter_map(|(k, _)| self.referrers.get(k))
            .flatten()
            .copied()
            .collect();
        dirty.extend(referrers);
        let mut edges_out = Vec::new();
        let mut set = Vec::new();
        let mut edges_in = Vec::new();
        let mut nodes_out = Vec::new();
        for key in dirty {
            let mut new = self.contribution(key);
            let old = self.contributions.remove(&key).unwrap_or_default();
            // Unchanged metadata keeps the copy the graph already shares.
            for (id, m) in &mut new.nodes {
                if let Some(o) = old.nodes.get(id)
                    && o == m
                {
                    *m = o.clone();
                }
            }
            for t in &old.targets {
                if let Some(r) = self.referrers.get_mut(t) {
                    r.remove(&key);
                    if r.is_empty() {
                        self.referrers.remove(t);
                    }
                }
            }
            for t in &new.targets {
                self.referrers.entry(*t).or_default().insert(key);
            }
            for (id, m) in &new.nodes {
                if !old.nodes.get(id).is_some_and(|o| o.ptr_eq(m)) {
                    set.push((id.clone(), m.clone(), old.nodes.get(id).cloned()));
                }
            }
            nodes_out.extend(
                old.nodes
                    .iter()
                    .filter(|(id, _)| !new.nodes.contains_key(*id))
                    .map(|(id, m)| (id.clone(), m.clone())),
            );
            for (id, e) in &old.edges {
                if new.edges.get(id) == Some(e) {
                    continue;
                }
                if let Some((_, n)) = self.edges.get_mut(id) {
                    *n -= 1;
                    if *n == 0 {
                        self.edges.remove(id);
                        edges_out.push(id.clone());
                    }
                }
            }
            for (id, e) in &new.edges {
                if old.edges.get(id) == Some(e) {
                    continue;
                }
                let entry = self.edges.entry(id.clone()).or_insert((e.clone(), 0));
                entry.1 += 1;
                if entry.1 == 1 {
                    entry.0 = e.clone();
                    edges_in.push((id.clone(), e.clone()));
                }
            }
            if self.namespaces.contains_key(&key) {
                self.contributions.insert(key, new);
            }
        }
        // A node that moved from one namespace to another (a container) is set, not deleted;
        // what its old namespace set of it is what its new one changes.
        let set_ids: HashMap<Id, usize> = set
            .iter()
            .enumerate()
            .map(|(i, (id, _, _))| (id.clone(), i))
            .collect();
        nodes_out.retain(|(id, old)| match set_ids.get(id) {
            Some(&i) => {
                if set[i].2.is_none() {
                    set[i].2 = Some(old.clone());
                }
                false
            }
            None => true,
        });
        let mut nodes_out: Vec<Id> = nodes_out.into_iter().map(|(id, _)| id).collect();
        // Edges first out, nodes first in; namespaces before their interfaces, so that
        // ownership edges find their parents.
        edges_out.sort();
        edges_out.dedup();
        set.sort_by(|a, b| a.0.cmp(&b.0));
        set.sort_by_key(|(_, m, _)| m.get("Type").and_then(Value::as_str) != Some("netns"));
        edges_in.sort_by(|a, b| a.0.cmp(&b.0));
        nodes_out.sort();
        let mut ops: Vec<Op> = edges_out.into_iter().map(Op::DeleteEdge).collect();
        ops.extend(
            set.into_iter()
                .map(|(id, metadata, prev)| Op::SetNode { id, metadata, prev }),
        );
        // (An edge whose description changed is in both lists: deleted, then added back.)
        for (id, e) in edges_in {
            ops.push(Op::AddEdge {
                id,
                parent: e.parent,
                child: e.child,
                metadata: e.metadata,
            });
        }
        ops.extend(nodes_out.into_iter().map(Op::DeleteNode));
        ops
    }
}

/// The OVS type of an interface OVSDB knows, when it has one other than `system`.
fn ovs_type(m: &Map) -> Option<&str> {
    m.get_path("Ovs.Type")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty() && *t != "system")
}

/// The TID of the ownership parent of `id`.
fn owner_tid(g: &Graph, id: &str) -> Option<String> {
    g.in_edges(id)
        .find(|e| e.relation_type() == "ownership")
        .and_then(|e| g.node(&e.parent))
        .and_then(|p| p.str_at("TID").map(str::to_string))
}

/// Skydive's rule: when OVSDB knows an interface, its OVS type (`internal`, `patch`, …) wins
/// over the netlink one (`tap` for an internal port of the userspace datapath), and the TID
/// is made of it. Applied after every change to a node, whichever probe made it and in
/// whatever order they report, so that netlink's updates (counters, state) never bring the
/// netlink type back.
fn ovs_type_wins(m: &mut Map, owner_tid: Option<&str>) {
    let Some(ty) = ovs_type(m).map(str::to_string) else {
        return;
    };
    if m.get("Type").and_then(Value::as_str) != Some(ty.as_str()) {
        m.insert("Type", ty.as_str());
    }
    let tid = match (owner_tid, m.get("Name").and_then(Value::as_str)) {
        (Some(owner), Some(name)) => child_tid(owner, name, &ty),
        _ => return,
    };
    if m.get("TID").and_then(Value::as_str) != Some(tid.as_str()) {
        m.insert("TID", tid.as_str());
    }
}

/// Whether the rule would change the node `id`.
fn needs_ovs_type(g: &Graph, id: &str) -> bool {
    g.node(id).is_some_and(|n| {
        let mut m = n.metadata.clone();
        ovs_type_wins(&mut m, owner_tid(g, id).as_deref());
        m != n.metadata
    })
}

/// Applies operations to the agent's graph; elements created belong to `host`/`origin`.
pub fn apply_ops(
    g: &mut Graph,
    ops: Vec<Op>,
    host: &str,
    origin: &str,
    now: i64,
) -> Vec<GraphEvent> {
    let mut events = Vec::new();
    for op in ops {
        let r = match op {
            Op::SetNode {
                id,
                mut metadata,
                prev,
            } => {
                let owner = owner_tid(g, &id);
                if g.node(&id).is_none() {
                    ovs_type_wins(&mut metadata, owner.as_deref());
                    g.add_node(Node::new(id, metadata, host, origin, now))
                        .map(|e| vec![e])
                } else {
                    let changes = diff_metadata(&prev.unwrap_or_default(), &metadata);
                    g.update_node_metadata(&id, now, |m| {
                        for c in &changes {
                            c.apply(m);
                        }
                        ovs_type_wins(m, owner.as_deref());
                    })
                    .map(|e| e.into_iter().collect())
                }
            }
            Op::DeleteNode(id) => match g.node(&id) {
                Some(_) => g.delete_node(&id, now),
                None => Ok(Vec::new()),
            },
            Op::AddEdge {
                id,
                parent,
                child,
                metadata,
            } => {
                if g.edge(&id).is_some() {
                    Ok(Vec::new())
                } else {
                    let ownership =
                        metadata.get("RelationType").and_then(Value::as_str) == Some("ownership");
                    let child_id = child.clone();
                    g.add_edge(Edge::new(id, parent, child, metadata, host, origin, now))
                        .and_then(|e| {
                            let mut evs = vec![e];
                            // The child's TID is made of its new owner's.
                            if ownership && needs_ovs_type(g, &child_id) {
                                let owner = owner_tid(g, &child_id);
                                evs.extend(g.update_node_metadata(&child_id, now, |m| {
                                    ovs_type_wins(m, owner.as_deref());
                                })?);
                            }
                            Ok(evs)
                        })
                }
            }
            Op::DeleteEdge(id) => match g.edge(&id) {
                Some(_) => g.delete_edge(&id, now).map(|e| vec![e]),
                None => Ok(Vec::new()),
            },
        };
        match r {
            Ok(evs) => events.extend(evs),
            Err(e) => tracing::debug!("topology change not applied: {e}"),
        }
    }
    events
}

/// Shared so that tests and the status can look at it.
pub type SharedTopology = Arc<std::sync::Mutex<Topology>>;

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use skydive_graph::id::host_tid;
    use skydive_graph::metadata;

    use super::*;

    fn ns(key: NsKey, name: &str) -> NsInfo {
        NsInfo {
            key,
            name: name.into(),
            path: PathBuf::from(format!("/var/run/netns/{name}")),
            inode: key,
            device: 4,
            named: true,
        }
    }

    fn link(index: u32, name: &str, ty: &str) -> LinkState {
        LinkState {
            index,
            name: name.into(),
            ty: ty.into(),
            metadata: metadata! {"Name" => name, "Type" => ty, "IfIndex" => index as i64},
            master: None,
            link: None,
        }
    }

    fn topo() -> Topology {
        Topology::new(Id::from("host-node"), &host_tid("h1"), ns(1, "host"))
    }

    fn links(ns: NsKey, links: Vec<LinkState>) -> Input {
        Input::Links {
            ns,
            full: true,
            links,
            removed: vec![],
        }
    }

    fn graph_with_host() -> Graph {
        let mut g = Graph::new();
        g.add_node(Node::new(
            "host-node",
            metadata! {"Name" => "h1", "Type" => "host", "TID" => host_tid("h1")},
            "h1",
            "agent.h1",
            1,
        ))
        .unwrap();
        g
    }

    fn names(g: &Graph, from: &str, rel: &str) -> Vec<String> {
        let id = g.nodes().find(|n| n.name() == from).unwrap().id.clone();
        let mut v: Vec<String> = g
            .out_edges(&id)
            .filter(|e| e.relation_type() == rel)
            .map(|e| g.node(&e.child).unwrap().name().to_string())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn namespaces_and_interfaces_become_nodes_and_edges() {
        let mut t = topo();
        t.apply(Input::Namespace(ns(2, "red")));
        let mut veth_host = link(5, "veth-red", "veth");
        veth_host.link = Some((Some(2), 2));
        veth_host.master = Some(4);
        let mut veth_red = link(2, "eth0", "veth");
        veth_red.link = Some((Some(1), 5));
        let mut vlan = link(6, "eth0.100", "vlan");
        vlan.link = Some((None, 7));
        t.apply(links(
            1,
            vec![
                link(4, "br0", "bridge"),
                veth_host,
                vlan,
                link(7, "eth0", "device"),
            ],
        ));
        t.apply(links(2, vec![link(1, "lo", "device"), veth_red]));
        let mut g = graph_with_host();
        apply_ops(&mut g, t.ops(), "h1", "agent.h1", 2);
        assert_eq!(
            names(&g, "h1", "ownership"),
            vec!["br0", "eth0", "eth0.100", "red", "veth-red"]
        );
        assert_eq!(names(&g, "red", "ownership"), vec!["eth0", "lo"]);
        assert_eq!(names(&g, "br0", "layer2"), vec!["veth-red"]);
        // One layer2 edge for the veth pair, across namespaces.
        let pair: Vec<_> = g
            .edges()
            .filter(|e| {
                e.relation_type() == "layer2"
                    && [&e.parent, &e.child]
                        .iter()
                        .all(|id| g.node(id).unwrap().str_at("Type") == Some("veth"))
            })
            .collect();
        assert_eq!(pair.len(), 1);
        // vlan: parent → vlan, with Type: vlan on the edge.
        let vlan_edge = g
            .edges()
            .find(|e| {
                g.node(&e.child).unwrap().name() == "eth0.100" && e.relation_type() == "layer2"
            })
            .unwrap();
        assert_eq!(
            vlan_edge.metadata.get("Type").and_then(Value::as_str),
            Some("vlan")
        );
        assert_eq!(
            g.node(&vlan_edge.parent).unwrap().str_at("Type"),
            Some("device")
        );
        // The host side names the peer's namespace.
        let vh = g.nodes().find(|n| n.name() == "veth-red").unwrap();
        assert_eq!(vh.str_at("LinkNetNsName"), Some("red"));
        // TIDs as Skydive computes them.
        let red = g.nodes().find(|n| n.name() == "red").unwrap();
        let red_tid = netns_tid(&host_tid("h1"), "/var/run/netns/red");
        assert_eq!(red.str_at("TID"), Some(red_tid.as_str()));
        let lo = g.nodes().find(|n| n.name() == "lo").unwrap();
        assert_eq!(
            lo.str_at("TID"),
            Some(child_tid(&red_tid, "lo", "device").as_str())
        );
        assert_eq!(red.str_at("Path"), Some("/var/run/netns/red"));
        // Nothing more to do.
        assert!(t.ops().is_empty());
    }

    fn container(manager: Manager, id: &str, name: &str, netns: NsKey, joined: bool) -> Input {
        Input::Container(Container {
            manager,
            id: id.into(),
            name: name.into(),
            netns,
            joined,
            metadata: metadata! {"ID" => id, "Runtime" => manager.as_str()},
        })
    }

    #[test]
    fn containers_hang_under_their_namespace_which_takes_their_name() {
        let mut t = topo();
        let mut g = graph_with_host();
        t.apply(Input::Namespace(ns(2, "3f2a9c")));
        let mut host_end = link(5, "vethweb", "veth");
        host_end.link = Some((Some(2), 2));
        t.apply(links(1, vec![host_end]));
        let mut inner = link(2, "eth0", "veth");
        inner.link = Some((Some(1), 5));
        t.apply(links(2, vec![link(1, "lo", "device"), inner]));
        // A sidecar that joined web's namespace reports first: web still names it.
        t.apply(container(Manager::Docker, "c2", "side", 2, true));
        t.apply(container(Manager::Docker, "c1", "web", 2, false));
        t.apply(container(Manager::Docker, "c3", "hostnet", 1, false));
        apply_ops(&mut g, t.ops(), "h1", "agent.h1", 2);
        assert_eq!(
            names(&g, "h1", "ownership"),
            vec!["hostnet", "vethweb", "web"]
        );
        assert_eq!(
            names(&g, "web", "ownership"),
            vec!["eth0", "lo", "side", "web"]
        );
        let ns_node = g
            .nodes()
            .find(|n| n.str_at("Type") == Some("netns"))
            .unwrap();
        assert_eq!(ns_node.str_at("Manager"), Some("docker"));
        assert_eq!(
            ns_node.str_at("Path"),
            Some("/var/run/netns/3f2a9c"),
            "the TID is still made of the path"
        );
        let vh = g.nodes().find(|n| n.name() == "vethweb").unwrap();
        assert_eq!(vh.str_at("LinkNetNsName"), Some("web"));
        let web = g
            .nodes()
            .find(|n| n.name() == "web" && n.str_at("Type") == Some("container"))
            .unwrap();
        assert_eq!(web.str_at("Manager"), Some("docker"));
        assert_eq!(
            web.metadata
                .get_path("Container.ID")
                .and_then(Value::as_str),
            Some("c1")
        );
        let web_id = web.id.clone();
        // Runc reports the same container: Docker's report stays shown.
        t.apply(container(Manager::Runc, "c1", "c1", 2, false));
        apply_ops(&mut g, t.ops(), "h1", "agent.h1", 3);
        assert_eq!(g.node(&web_id).unwrap().str_at("Manager"), Some("docker"));
        // Renamed: the container and its namespace follow, and the peer says so.
        t.apply(container(Manager::Docker, "c1", "www", 2, false));
        apply_ops(&mut g, t.ops(), "h1", "agent.h1", 4);
        assert_eq!(g.node(&web_id).unwrap().name(), "www");
        assert_eq!(
            names(&g, "h1", "ownership"),
            vec!["hostnet", "vethweb", "www"]
        );
        let vh = g.nodes().find(|n| n.name() == "vethweb").unwrap();
        assert_eq!(vh.str_at("LinkNetNsName"), Some("www"));
        // Docker says it stopped: runc's report of it is shown until runc says so too.
        t.apply(Input::ContainerGone {
            manager: Manager::Docker,
            id: "c1".into(),
        });
        apply_ops(&mut g, t.ops(), "h1", "agent.h1", 5);
        assert_eq!(g.node(&web_id).unwrap().str_at("Manager"), Some("runc"));
        assert_eq!(g.node(&web_id).unwrap().name(), "c1");
        t.apply(Input::ContainerGone {
            manager: Manager::Runc,
            id: "c1".into(),
        });
        t.apply(Input::ContainerGone {
            manager: Manager::Docker,
            id: "c2".into(),
        });
        apply_ops(&mut g, t.ops(), "h1", "agent.h1", 6);
        assert!(g.node(&web_id).is_none());
        let ns_node = g
            .nodes()
            .find(|n| n.str_at("Type") == Some("netns"))
            .unwrap();
        assert_eq!(ns_node.name(), "3f2a9c", "the namespace's own name is back");
        assert_eq!(ns_node.str_at("Manager"), None);
        assert_eq!(
            names(&g, "h1", "ownership"),
            vec!["3f2a9c", "hostnet", "vethweb"]
        );
        // A container whose namespace goes takes its node with it.
        t.apply(Input::NamespaceGone(2));
        apply_ops(&mut g, t.ops(), "h1", "agent.h1", 7);
        assert_eq!(names(&g, "h1", "ownership"), vec!["hostnet", "vethweb"]);
        assert!(t.ops().is_empty());
    }

    #[test]
    fn a_container_that_moves_namespace_in_one_batch_keeps_its_node() {
        let mut t = topo();
        let mut g = graph_with_host();
        t.apply(Input::Namespace(ns(2, "a")));
        t.apply(Input::Namespace(ns(3, "b")));
        t.apply(container(Manager::Docker, "c1", "web", 2, false));
        apply_ops(&mut g, t.ops(), "h1", "agent.h1", 2);
        assert_eq!(names(&g, "web", "ownership"), vec!["web"]);
        // Restarted into another namespace, both reports in one batch.
        t.apply(Input::ContainerGone {
            manager: Manager::Docker,
            id: "c1".into(),
        });
        t.apply(container(Manager::Runc, "c1", "c1", 3, false));
        apply_ops(&mut g, t.ops(), "h1", "agent.h1", 3);
        let ct = g
            .nodes()
            .find(|n| n.str_at("Type") == Some("container"))
            .expect("the container's node is still there");
        assert_eq!(ct.name(), "c1");
        assert_eq!(ct.str_at("Manager"), Some("runc"));
        assert_eq!(
            names(&g, "c1", "ownership"),
            vec!["c1"],
            "owned by its new namespace"
        );
        assert_eq!(names(&g, "h1", "ownership"), vec!["a", "c1"]);
        assert!(t.ops().is_empty());
    }

    #[test]
    fn a_namespace_that_goes_ends_the_reports_of_its_containers() {
        let mut t = topo();
        let mut g = graph_with_host();
        t.apply(Input::Namespace(ns(2, "x1")));
        t.apply(container(Manager::Docker, "c1", "web", 2, false));
        apply_ops(&mut g, t.ops(), "h1", "agent.h1", 2);
        assert_eq!(t.containers(), 1);
        // The namespace goes before (or without) the probe saying the container stopped; a
        // new namespace then gets the same inode.
        t.apply(Input::NamespaceGone(2));
        t.apply(Input::Namespace(ns(2, "x2")));
        apply_ops(&mut g, t.ops(), "h1", "agent.h1", 3);
        assert_eq!(t.containers(), 0);
        assert_eq!(names(&g, "h1", "ownership"), vec!["x2"]);
        assert!(g.nodes().all(|n| n.str_at("Type") != Some("container")));
    }

    #[test]
    fn ids_are_the_same_after_a_restart() {
        let build = || {
            let mut t = topo();
            t.apply(Input::Namespace(ns(2, "red")));
            t.apply(links(2, vec![link(1, "lo", "device")]));
            let mut g = graph_with_host();
            apply_ops(&mut g, t.ops(), "h1", "agent.h1", 2);
            let mut ids: Vec<String> = g.nodes().map(|n| n.id.to_string()).collect();
            ids.extend(g.edges().map(|e| e.id.to_string()));
            ids.sort();
            ids
        };
        assert_eq!(build(), build());
    }

    #[test]
    fn unchanged_interfaces_keep_the_metadata_the_graph_shares() {
        let mut t = topo();
        t.apply(Input::Namespace(ns(2, "red")));
        t.apply(links(2, vec![link(1, "lo", "device")]));
        let mut g = graph_with_host();
        apply_ops(&mut g, t.ops(), "h1", "agent.h1", 2);
        let id = g.nodes().find(|n| n.name() == "lo").unwrap().id.clone();
        // The probe reports the same interface again, with a freshly built map.
        t.apply(links(2, vec![link(1, "lo", "device")]));
        assert!(t.ops().is_empty(), "nothing changed");
        let kept = &t.contributions[&2].nodes[&id];
        assert!(
            kept.ptr_eq(&g.node(&id).unwrap().metadata),
            "the namespace's contribution holds the graph's copy, not a second one"
        );
        let mut renamed = link(1, "lo", "device");
        renamed.metadata.insert("MTU", 1500);
        t.apply(links(2, vec![renamed]));
        assert_eq!(t.ops().len(), 1, "a real change still updates the node");
    }

    #[test]
    fn a_namespace_that_goes_takes_its_subgraph() {
        let mut t = topo();
        t.apply(Input::Namespace(ns(2, "red")));
        t.apply(links(
            2,
            vec![link(1, "lo", "device"), link(2, "eth0", "veth")],
        ));
        let mut g = graph_with_host();
        apply_ops(&mut g, t.ops(), "h1", "agent.h1", 2);
        assert_eq!(g.node_count(), 4);
        t.apply(Input::NamespaceGone(2));
        apply_ops(&mut g, t.ops(), "h1", "agent.h1", 3);
        assert_eq!(g.node_count(), 1, "only the host is left");
        assert_eq!(g.edge_count(), 0);
    }

    #[test]
    fn the_ovs_type_wins_over_netlink_in_either_order_and_across_updates() {
        let mut t = topo();
        t.apply(links(1, vec![link(4, "br0", "tap")]));
        let mut g = graph_with_host();
        apply_ops(&mut g, t.ops(), "h1", "agent.h1", 2);
        let id = t.interface(1, 4).unwrap();
        let host = host_tid("h1");
        let ty = |g: &Graph| g.node(&id).unwrap().str_at("Type").map(str::to_string);
        let tid = |g: &Graph| g.node(&id).unwrap().str_at("TID").map(str::to_string);
        assert_eq!(ty(&g).as_deref(), Some("tap"));
        assert_eq!(tid(&g), Some(child_tid(&host, "br0", "tap")));
        // OVSDB knows it: an internal port.
        let ovs = metadata! {"OfPort" => 65534i64, "Ovs" => metadata! {"Type" => "internal"}};
        apply_ops(
            &mut g,
            vec![Op::SetNode {
                id: id.clone(),
                metadata: ovs,
                prev: None,
            }],
            "h1",
            "agent.h1",
            3,
        );
        assert_eq!(ty(&g).as_deref(), Some("internal"));
        assert_eq!(tid(&g), Some(child_tid(&host, "br0", "internal")));
        // Netlink's later updates (counters, state, a rename) keep it.
        for (i, (name, mtu)) in [("br0", 1500i64), ("br0", 9000), ("br1", 9000)]
            .into_iter()
            .enumerate()
        {
            let mut l = link(4, name, "tap");
            l.metadata.insert("MTU", mtu);
            l.metadata
                .insert("Metric", metadata! {"RxBytes" => i as i64});
            t.apply(Input::Links {
                ns: 1,
                full: false,
                links: vec![l],
                removed: vec![],
            });
            apply_ops(&mut g, t.ops(), "h1", "agent.h1", 4 + i as i64);
            assert_eq!(ty(&g).as_deref(), Some("internal"), "update {i}");
            assert_eq!(tid(&g), Some(child_tid(&host, name, "internal")));
        }
        // A `system` interface keeps netlink's type.
        t.apply(links(
            1,
            vec![link(4, "br1", "tap"), link(5, "eth1", "device")],
        ));
        apply_ops(&mut g, t.ops(), "h1", "agent.h1", 10);
        let eth1 = t.interface(1, 5).unwrap();
        apply_ops(
            &mut g,
            vec![Op::SetNode {
                id: eth1.clone(),
                metadata: metadata! {"Ovs" => metadata! {"Type" => "system"}},
                prev: None,
            }],
            "h1",
            "agent.h1",
            11,
        );
        assert_eq!(g.node(&eth1).unwrap().str_at("Type"), Some("device"));
    }

    #[test]
    fn updates_touch_only_the_keys_the_probe_owns() {
        let mut t = topo();
        t.apply(links(1, vec![link(4, "eth0", "device")]));
        let mut g = graph_with_host();
        apply_ops(&mut g, t.ops(), "h1", "agent.h1", 2);
        let id = t.interface(1, 4).unwrap();
        // Another probe adds its own key.
        g.update_node_metadata(&id, 3, |m| {
            m.insert("Captures", "x");
        })
        .unwrap();
        let mut l = link(4, "eth0", "device");
        l.metadata.insert("MTU", 9000i64);
        t.apply(Input::Links {
            ns: 1,
            full: false,
            links: vec![l],
            removed: vec![],
        });
        let evs = apply_ops(&mut g, t.ops(), "h1", "agent.h1", 4);
        let GraphEvent::NodeUpdated { ops, node } = &evs[0] else {
            panic!("{evs:?}")
        };
        assert_eq!(ops.len(), 1, "a partial update of MTU only: {ops:?}");
        assert_eq!(
            node.metadata.get("Captures").and_then(Value::as_str),
            Some("x")
        );
        assert_eq!(node.metadata.get("MTU"), Some(&Value::Int(9000)));
    }

    /// A graph's nodes (ID, metadata) and edges (ID, parent, child, metadata), sorted.
    type Snapshot = (Vec<(Id, String)>, Vec<(Id, Id, Id, String)>);

    fn snapshot(g: &Graph) -> Snapshot {
        let mut nodes: Vec<_> = g
            .nodes()
            .map(|n| {
                let m = serde_json::to_string(&n.metadata).unwrap();
                (n.id.clone(), m)
            })
            .collect();
        nodes.sort();
        let mut edges: Vec<_> = g
            .edges()
            .map(|e| {
                let m = serde_json::to_string(&e.metadata).unwrap();
                (e.id.clone(), e.parent.clone(), e.child.clone(), m)
            })
            .collect();
        edges.sort();
        (nodes, edges)
    }

    #[test]
    fn changes_worked_out_per_namespace_give_the_whole_recomputation() {
        // Host: a bridge with one veth per namespace; each namespace: lo and the peer.
        let host_links = |present: &[NsKey]| {
            let mut v = vec![link(2, "br0", "bridge")];
            for k in present {
                let mut l = link(100 + *k as u32, &format!("veth{k}"), "veth");
                l.master = Some(2);
                l.link = Some((Some(*k), 2));
                v.push(l);
            }
            v
        };
        let ns_links = |k: NsKey, mtu: i64| {
            let mut peer = link(2, "eth0", "veth");
            peer.link = Some((Some(1), 100 + k as u32));
            peer.metadata.insert("MTU", mtu);
            vec![link(1, "lo", "device"), peer]
        };
        let all: Vec<NsKey> = (2..7).collect();
        let mut first: Vec<Input> = all
            .iter()
            .map(|k| Input::Namespace(ns(*k, &format!("n{k}"))))
            .collect();
        first.push(links(1, host_links(&all)));
        first.extend(all.iter().map(|k| links(*k, ns_links(*k, 1500))));
        let mut renamed = ns(3, "n3-renamed");
        renamed.path = PathBuf::from("/run/netns/n3-renamed");
        // A namespace renamed (new path: new IDs), one gone (the host's veth to it stays), a
        // host veth gone (its pair's edge with it), an interface changed, a namespace back.
        let steps = vec![
            first,
            vec![Input::Namespace(renamed)],
            vec![Input::NamespaceGone(4)],
            vec![links(1, host_links(&[2, 3, 4, 6]))],
            vec![links(6, ns_links(6, 9000))],
            vec![Input::Namespace(ns(4, "n4")), links(4, ns_links(4, 1500))],
        ];
        let mut t = topo();
        let mut g = graph_with_host();
        let mut so_far = Vec::new();
        for (n, inputs) in steps.into_iter().enumerate() {
            for i in &inputs {
                t.apply(i.clone());
            }
            so_far.extend(inputs);
            apply_ops(&mut g, t.ops(), "h1", "agent.h1", 2);
            // The same inputs, worked out at once by a new topology.
            let mut fresh = topo();
            for i in &so_far {
                fresh.apply(i.clone());
            }
            let mut expected = graph_with_host();
            apply_ops(&mut expected, fresh.ops(), "h1", "agent.h1", 2);
            assert_eq!(snapshot(&g), snapshot(&expected), "after step {n}");
            assert!(t.ops().is_empty(), "after step {n}: nothing left to do");
        }
        assert_eq!(g.nodes().count(), 1 + 5 + 5 + 10);
    }
}
