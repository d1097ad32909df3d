//! The live in-memory graph.
//!
//! Every structure is persistent (structurally shared), so cloning a [`Graph`] is O(1): the
//! owner task applies changes to its copy and hands clones to readers, which then query a
//! consistent snapshot while updates continue.
//!
//! Nodes live in slots of a persistent vector (a relaxed radix balanced tree), found by ID
//! through a persistent hash map with a fixed hasher; edges live in a persistent hash map.
//! A slot holds its node and its adjacency: its edges, each with the slot of the node at its
//! other end (a single edge on a side held in the slot, more in a small shared slice), so a
//! traversal hop goes from slot to slot without hashing an ID, and a node remembers its slot
//! (checked before use). Adjacency is copied on change; most nodes have a handful of edges.
//! Freed slots are reused. Node iteration is in
//! slot order, the same from run to run. The metadata indexes are persistent ordered sets of
//! `(value, node ID)` pairs, so that an equality lookup is a range scan returning IDs in
//! order.

use std::collections::HashSet;
use std::sync::Arc;

use compact_str::CompactString;
use imbl::OrdSet;

use crate::element::{Edge, Node, Time};
use crate::event::{GraphEvent, PartialOp, diff_metadata};
use crate::id::Id;
use crate::value::{Map, Value};

/// Metadata keys with an index: the ones queries filter on most.
pub const INDEXED_KEYS: [&str; 5] = [TYPE_KEY, "Name", "TID", "MAC", "IPV4"];

const TYPE_KEY: &str = "Type";

/// Why a change was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GraphError {
    #[error("Node ID conflict")]
    NodeExists(Id),
    #[error("Edge ID conflict")]
    EdgeExists(Id),
    #[error("Node '{0}' does not exist")]
    NodeNotFound(Id),
    #[error("Edge '{0}' does not exist")]
    EdgeNotFound(Id),
    #[error("Parent node not found")]
    ParentNotFound(Id),
    #[error("Child node not found")]
    ChildNotFound(Id),
}

/// An edge seen from one of its ends: the edge, and the slot of the node at its other end.
#[derive(Clone)]
struct Hop {
    edge: Arc<Edge>,
    other: u32,
}

/// A node's edges on one side. A single edge is held in the slot itself (most nodes have one
/// edge or none on a side, and a traversal then reads it without another memory access);
/// more are a shared slice.
#[derive(Clone, Default)]
enum Hops {
    #[default]
    Empty,
    One(Hop),
    Many(Arc<[Hop]>),
}

impl std::ops::Deref for Hops {
    type Target = [Hop];
    fn deref(&self) -> &[Hop] {
        match self {
            Hops::Empty => &[],
            Hops::One(h) => std::slice::from_ref(h),
            Hops::Many(hs) => hs,
        }
    }
}

impl FromIterator<Hop> for Hops {
    fn from_iter<I: IntoIterator<Item = Hop>>(iter: I) -> Hops {
        let mut hops: Vec<Hop> = iter.into_iter().collect();
        match hops.len() {
            0 => Hops::Empty,
            1 => Hops::One(hops.remove(0)),
            _ => Hops::Many(hops.into()),
        }
    }
}

/// A node and its edges: where it is the parent, and where it is the child. An empty slot
/// (no node, no edges) waits in the free list.
#[derive(Clone, Default)]
struct Slot {
    node: Option<Arc<Node>>,
    out: Hops,
    inn: Hops,
}

/// A persistent hash map with a fixed hasher (deterministic iteration order).
type PMap<K, V> =
    imbl::GenericHashMap<K, V, foldhash::fast::FixedState, imbl::shared_ptr::DefaultSharedPtr>;

/// The live graph. Cheap to clone; clones are independent snapshots.
#[derive(Clone, Default)]
pub struct Graph {
    /// The slot of every node.
    ids: PMap<Id, u32>,
    slots: imbl::Vector<Slot>,
    /// Empty slots, reused before the vector grows.
    free: imbl::Vector<u32>,
    edges: PMap<Id, Arc<Edge>>,
    indexes: [OrdSet<(CompactString, Id)>; INDEXED_KEYS.len()],
    /// How many nodes there are of each `Type`: `Count` without a walk of the index. (The
    /// other indexed keys have small groups: their index range is counted.)
    type_counts: PMap<CompactString, usize>,
    /// Elements by origin (`(origin, EDGE or NODE, ID)`), so that an owner's subgraph is
    /// found without a scan: a `Sync` or the removal of an agent costs what the agent owns.
    origins: OrdSet<(CompactString, u8, Id)>,
}

const NODE: u8 = 0;
const EDGE: u8 = 1;

impl std::fmt::Debug for Graph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Graph")
            .field("nodes", &self.ids.len())
            .field("edges", &self.edges.len())
            .finish()
    }
}

fn index_values(m: &Map, key: &str) -> Vec<CompactString> {
    match m.get(key) {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|v| v.as_str().map(CompactString::from))
            .collect(),
        _ => Vec::new(),
    }
}

#[derive(Clone, Copy)]
pub(crate) enum Side {
    Out,
    In,
}

impl Slot {
    fn hops(&self, side: Side) -> &Hops {
        match side {
            Side::Out => &self.out,
            Side::In => &self.inn,
        }
    }

    fn hops_mut(&mut self, side: Side) -> &mut Hops {
        match side {
            Side::Out => &mut self.out,
            Side::In => &mut self.inn,
        }
    }
}

impl Graph {
    pub fn new() -> Self {
        Graph::default()
    }

    pub fn node_count(&self) -> usize {
        self.ids.len()
    }

    pub fn edge_count(&self) -> usize {
        self.edges.len()
    }

    pub fn node(&self, id: &str) -> Option<&Arc<Node>> {
        self.slot(*self.ids.get(id)?).node.as_ref()
    }

    fn slot(&self, slot: u32) -> &Slot {
        &self.slots[slot as usize]
    }

    /// The slot of `node` in this graph: from its hint when the hint is right, else by ID.
    fn slot_of(&self, node: &Node) -> Option<&Slot> {
        match self.hinted_slot(node) {
            Some(s) => Some(s),
            None => Some(self.slot(*self.ids.get(&node.id)?)),
        }
    }

    /// The slot `node`'s hint points at, when it holds this very copy of the node.
    fn hinted_slot(&self, node: &Node) -> Option<&Slot> {
        let s = self.slots.get(node.slot as usize)?;
        s.node
            .as_ref()
            .is_some_and(|n| std::ptr::eq(Arc::as_ptr(n), node))
            .then_some(s)
    }

    fn slot_mut(&mut self, slot: u32) -> &mut Slot {
        &mut self.slots[slot as usize]
    }

    /// Adds `edge` to the adjacency of the node in `slot`, `other` being the other end.
    fn hop_push(&mut self, slot: u32, side: Side, edge: &Arc<Edge>, other: u32) {
        let list = self.slot_mut(slot).hops_mut(side);
        let hop = Hop {
            edge: edge.clone(),
            other,
        };
        *list = list.iter().cloned().chain(std::iter::once(hop)).collect();
    }

    fn hop_remove(&mut self, slot: u32, side: Side, edge: &Id) {
        let list = self.slot_mut(slot).hops_mut(side);
        *list = list
            .iter()
            .filter(|h| h.edge.id != *edge)
            .cloned()
            .collect();
    }

    fn hop_replace(&mut self, slot: u32, side: Side, edge: &Arc<Edge>) {
        let list = self.slot_mut(slot).hops_mut(side);
        *list = list
            .iter()
            .map(|h| Hop {
                edge: if h.edge.id == edge.id {
                    edge.clone()
                } else {
                    h.edge.clone()
                },
                other: h.other,
            })
            .collect();
    }

    pub fn edge(&self, id: &str) -> Option<&Arc<Edge>> {
        self.edges.get(id)
    }

    /// All nodes (in slot order: fixed, but not meaningful).
    pub fn nodes(&self) -> impl Iterator<Item = &Arc<Node>> {
        self.slots.iter().filter_map(|s| s.node.as_ref())
    }

    /// All edges (in a fixed but arbitrary order).
    pub fn edges(&self) -> impl Iterator<Item = &Arc<Edge>> {
        self.edges.values()
    }

    fn hops<'a>(&'a self, node: &str, side: Side) -> &'a [Hop] {
        match self.ids.get(node) {
            Some(s) => self.slot(*s).hops(side),
            None => &[],
        }
    }

    /// Edges whose parent is `node`.
    pub fn out_edges<'a>(&'a self, node: &str) -> impl Iterator<Item = &'a Arc<Edge>> + use<'a> {
        self.hops(node, Side::Out).iter().map(|h| &h.edge)
    }

    /// Edges whose child is `node`.
    pub fn in_edges<'a>(&'a self, node: &str) -> impl Iterator<Item = &'a Arc<Edge>> + use<'a> {
        self.hops(node, Side::In).iter().map(|h| &h.edge)
    }

    /// Calls `f` with each edge on `side` of `node` and the node at its other end: slot to
    /// slot, no ID looked up when `node` comes from this graph.
    pub(crate) fn each_neighbour<'a>(
        &'a self,
        node: &Node,
        side: Side,
        f: &mut dyn FnMut(&'a Arc<Edge>, &'a Arc<Node>),
    ) {
        let Some(s) = self.slot_of(node) else {
            return;
        };
        for h in s.hops(side).iter() {
            if let Some(n) = &self.slot(h.other).node {
                f(&h.edge, n);
            }
        }
    }

    #[cfg(test)]
    fn slot_bound_for_tests(&self) -> usize {
        self.slots.len()
    }

    /// The slot of `node`, when it is this graph's copy (see [`Node`]'s slot hint).
    pub(crate) fn own_slot(&self, node: &Node) -> Option<u32> {
        self.hinted_slot(node).map(|_| node.slot)
    }

    pub(crate) fn node_in_slot(&self, slot: u32) -> Option<&Arc<Node>> {
        self.slots.get(slot as usize)?.node.as_ref()
    }

    pub(crate) fn each_slot_hop<'a>(
        &'a self,
        slot: u32,
        out: bool,
        inn: bool,
        f: &mut dyn FnMut(&'a Arc<Edge>, u32),
    ) {
        if let Some(s) = self.slots.get(slot as usize) {
            let out = if out { &s.out[..] } else { &[] };
            let inn = if inn { &s.inn[..] } else { &[] };
            out.iter().chain(inn).for_each(|h| f(&h.edge, h.other));
        }
    }

    fn index_slot(key: &str) -> Option<usize> {
        INDEXED_KEYS.iter().position(|k| *k == key)
    }

    /// Whether `key` has an index.
    pub fn is_indexed(key: &str) -> bool {
        Self::index_slot(key).is_some()
    }

    /// IDs of the nodes whose indexed `key` holds `value`, or `None` when `key` has no index.
    pub fn index_ids<'a>(
        &'a self,
        key: &str,
        value: &str,
    ) -> Option<impl Iterator<Item = &'a Id> + use<'a>> {
        let slot = Self::index_slot(key)?;
        let value = CompactString::from(value);
        let start = (value.clone(), Id::default());
        Some(
            self.indexes[slot]
                .range(start..)
                .take_while(move |(v, _)| *v == value)
                .map(|(_, id)| id),
        )
    }

    /// Nodes whose indexed `key` holds `value`, or `None` when `key` has no index.
    pub fn index_lookup<'a>(
        &'a self,
        key: &str,
        value: &str,
    ) -> Option<impl Iterator<Item = &'a Arc<Node>> + use<'a>> {
        Some(self.index_ids(key, value)?.filter_map(|id| self.node(id)))
    }

    /// Number of nodes whose indexed `key` holds `value`, or `None` when `key` has no index.
    pub fn index_count(&self, key: &str, value: &str) -> Option<usize> {
        if key == TYPE_KEY {
            return Some(self.type_counts.get(value).copied().unwrap_or(0));
        }
        Some(self.index_ids(key, value)?.count())
    }

    fn index_add(&mut self, slot: usize, value: CompactString, id: &Id) {
        let counted = INDEXED_KEYS[slot] == TYPE_KEY;
        if self.indexes[slot]
            .insert((value.clone(), id.clone()))
            .is_none()
            && counted
        {
            *self.type_counts.entry(value).or_default() += 1;
        }
    }

    fn index_del(&mut self, slot: usize, value: CompactString, id: &Id) {
        let counted = INDEXED_KEYS[slot] == TYPE_KEY;
        if self.indexes[slot]
            .remove(&(value.clone(), id.clone()))
            .is_some()
            && counted
            && let Some(n) = self.type_counts.get_mut(&value)
        {
            *n -= 1;
            if *n == 0 {
                self.type_counts.remove(&value);
            }
        }
    }

    fn index_insert(&mut self, node: &Node) {
        for (slot, key) in INDEXED_KEYS.iter().enumerate() {
            for v in index_values(&node.metadata, key) {
                self.index_add(slot, v, &node.id);
            }
        }
    }

    fn index_remove(&mut self, node: &Node) {
        for (slot, key) in INDEXED_KEYS.iter().enumerate() {
            for v in index_values(&node.metadata, key) {
                self.index_del(slot, v, &node.id);
            }
        }
    }

    fn index_update(&mut self, old: &Node, new: &Node) {
        for (slot, key) in INDEXED_KEYS.iter().enumerate() {
            let before = index_values(&old.metadata, key);
            let after = index_values(&new.metadata, key);
            if before == after {
                continue;
            }
            for v in before {
                self.index_del(slot, v, &old.id);
            }
            for v in after {
                self.index_add(slot, v, &new.id);
            }
        }
    }

    /// Adds a node. Fails if the ID is taken.
    pub fn add_node(&mut self, node: Node) -> Result<GraphEvent, GraphError> {
        if self.ids.contains_key(&node.id) {
            return Err(GraphError::NodeExists(node.id.clone()));
        }
        let slot = match self.free.pop_back() {
            Some(s) => s,
            None => {
                self.slots.push_back(Slot::default());
                (self.slots.len() - 1) as u32
            }
        };
        let mut node = node;
        node.metadata.shrink_to_fit();
        node.slot = slot;
        let node = Arc::new(node);
        self.index_insert(&node);
        self.origins
            .insert((node.origin.as_str().into(), NODE, node.id.clone()));
        self.ids.insert(node.id.clone(), slot);
        self.slot_mut(slot).node = Some(node.clone());
        Ok(GraphEvent::NodeAdded(node))
    }

    /// Adds an edge. Fails if the ID is taken or an endpoint is missing.
    pub fn add_edge(&mut self, edge: Edge) -> Result<GraphEvent, GraphError> {
        if self.edges.contains_key(&edge.id) {
            return Err(GraphError::EdgeExists(edge.id.clone()));
        }
        let Some(&parent) = self.ids.get(&edge.parent) else {
            return Err(GraphError::ParentNotFound(edge.parent));
        };
        let Some(&child) = self.ids.get(&edge.child) else {
            return Err(GraphError::ChildNotFound(edge.child));
        };
        let mut edge = edge;
        edge.metadata.shrink_to_fit();
        let edge = Arc::new(edge);
        self.hop_push(parent, Side::Out, &edge, child);
        self.hop_push(child, Side::In, &edge, parent);
        self.origins
            .insert((edge.origin.as_str().into(), EDGE, edge.id.clone()));
        self.edges.insert(edge.id.clone(), edge.clone());
        Ok(GraphEvent::EdgeAdded(edge))
    }

    fn store_node_update(&mut self, old: &Arc<Node>, new: Node, ops: Vec<PartialOp>) -> GraphEvent {
        let slot = self.own_slot(old).unwrap_or_else(|| self.ids[&old.id]);
        let mut new = new;
        new.slot = slot;
        let new = Arc::new(new);
        self.index_update(old, &new);
        if old.origin != new.origin {
            self.origins
                .remove(&(old.origin.as_str().into(), NODE, old.id.clone()));
            self.origins
                .insert((new.origin.as_str().into(), NODE, new.id.clone()));
        }
        self.slot_mut(slot).node = Some(new.clone());
        GraphEvent::NodeUpdated {
            node: new,
            ops: ops.into(),
        }
    }

    fn store_edge_update(&mut self, new: Edge, ops: Vec<PartialOp>) -> GraphEvent {
        let new = Arc::new(new);
        if let Some(old) = self.edges.get(&new.id)
            && old.origin != new.origin
        {
            let key = (old.origin.as_str().into(), EDGE, old.id.clone());
            self.origins.remove(&key);
            self.origins
                .insert((new.origin.as_str().into(), EDGE, new.id.clone()));
        }
        if let (Some(&parent), Some(&child)) = (self.ids.get(&new.parent), self.ids.get(&new.child))
        {
            self.hop_replace(parent, Side::Out, &new);
            self.hop_replace(child, Side::In, &new);
        }
        self.edges.insert(new.id.clone(), new.clone());
        GraphEvent::EdgeUpdated {
            edge: new,
            ops: ops.into(),
        }
    }

    /// Changes a node's metadata through `f` as a local update: the revision is incremented
    /// and `UpdatedAt` set to `time`. Returns `None` when nothing changed.
    pub fn update_node_metadata(
        &mut self,
        id: &str,
        time: Time,
        f: impl FnOnce(&mut Map),
    ) -> Result<Option<GraphEvent>, GraphError> {
        let old = self
            .node(id)
            .cloned()
            .ok_or_else(|| GraphError::NodeNotFound(Id::new(id)))?;
        let mut new = (*old).clone();
        f(&mut new.metadata);
        let ops = diff_metadata(&old.metadata, &new.metadata);
        if ops.is_empty() {
            return Ok(None);
        }
        new.metadata.shrink_to_fit();
        new.revision = old.revision + 1;
        new.updated_at = time;
        Ok(Some(self.store_node_update(&old, new, ops)))
    }

    /// Replaces a node's metadata (local update).
    pub fn set_node_metadata(
        &mut self,
        id: &str,
        metadata: Map,
        time: Time,
    ) -> Result<Option<GraphEvent>, GraphError> {
        self.update_node_metadata(id, time, |m| *m = metadata)
    }

    /// Changes an edge's metadata through `f` (local update).
    pub fn update_edge_metadata(
        &mut self,
        id: &str,
        time: Time,
        f: impl FnOnce(&mut Map),
    ) -> Result<Option<GraphEvent>, GraphError> {
        let old = self
            .edges
            .get(id)
            .cloned()
            .ok_or_else(|| GraphError::EdgeNotFound(Id::new(id)))?;
        let mut new = (*old).clone();
        f(&mut new.metadata);
        let ops = diff_metadata(&old.metadata, &new.metadata);
        if ops.is_empty() {
            return Ok(None);
        }
        new.revision = old.revision + 1;
        new.updated_at = time;
        Ok(Some(self.store_edge_update(new, ops)))
    }

    /// Applies a partial update received from the element's owner: only when `revision` is
    /// newer than the stored one. The stored revision becomes `revision`.
    pub fn apply_node_partial(
        &mut self,
        id: &str,
        ops: &[PartialOp],
        revision: i64,
        updated_at: Time,
    ) -> Result<Option<GraphEvent>, GraphError> {
        let old = self
            .node(id)
            .cloned()
            .ok_or_else(|| GraphError::NodeNotFound(Id::new(id)))?;
        if revision <= old.revision {
            return Ok(None);
        }
        let mut new = (*old).clone();
        let applied: Vec<PartialOp> = ops
            .iter()
            .filter(|op| op.apply(&mut new.metadata))
            .cloned()
            .collect();
        new.revision = revision;
        new.updated_at = updated_at.max(old.updated_at);
        Ok(Some(self.store_node_update(&old, new, applied)))
    }

    /// Applies a partial edge update from the owner (see [`Graph::apply_node_partial`]).
    pub fn apply_edge_partial(
        &mut self,
        id: &str,
        ops: &[PartialOp],
        revision: i64,
        updated_at: Time,
    ) -> Result<Option<GraphEvent>, GraphError> {
        let old = self
            .edges
            .get(id)
            .cloned()
            .ok_or_else(|| GraphError::EdgeNotFound(Id::new(id)))?;
        if revision <= old.revision {
            return Ok(None);
        }
        let mut new = (*old).clone();
        let applied: Vec<PartialOp> = ops
            .iter()
            .filter(|op| op.apply(&mut new.metadata))
            .cloned()
            .collect();
        new.revision = revision;
        new.updated_at = updated_at.max(old.updated_at);
        Ok(Some(self.store_edge_update(new, applied)))
    }

    /// Replaces a node with a newer copy from its owner (a full `NodeUpdated`), when it
    /// differs. Adds it if absent.
    pub fn replace_node(&mut self, node: Node) -> Result<Vec<GraphEvent>, GraphError> {
        let Some(old) = self.node(&node.id).cloned() else {
            return Ok(vec![self.add_node(node)?]);
        };
        if node.revision <= old.revision && node.metadata == old.metadata {
            return Ok(Vec::new());
        }
        let ops = diff_metadata(&old.metadata, &node.metadata);
        let mut new = node;
        new.revision = new.revision.max(old.revision + 1);
        new.metadata.shrink_to_fit();
        Ok(vec![self.store_node_update(&old, new, ops)])
    }

    /// Replaces an edge with a newer copy (see [`Graph::replace_node`]). Endpoints must exist.
    pub fn replace_edge(&mut self, edge: Edge) -> Result<Vec<GraphEvent>, GraphError> {
        let Some(old) = self.edges.get(&edge.id).cloned() else {
            return Ok(vec![self.add_edge(edge)?]);
        };
        if old.parent != edge.parent || old.child != edge.child {
            // The endpoints changed: a different edge under the same ID.
            let deleted = self.delete_edge(&edge.id, edge.updated_at)?;
            let added = self.add_edge(edge)?;
            return Ok(vec![deleted, added]);
        }
        if edge.revision <= old.revision && edge.metadata == old.metadata {
            return Ok(Vec::new());
        }
        let ops = diff_metadata(&old.metadata, &edge.metadata);
        let mut new = edge;
        new.revision = new.revision.max(old.revision + 1);
        Ok(vec![self.store_edge_update(new, ops)])
    }

    /// Deletes an edge.
    pub fn delete_edge(&mut self, id: &str, time: Time) -> Result<GraphEvent, GraphError> {
        let edge = self
            .edges
            .remove(id)
            .ok_or_else(|| GraphError::EdgeNotFound(Id::new(id)))?;
        if let Some(&parent) = self.ids.get(&edge.parent) {
            self.hop_remove(parent, Side::Out, &edge.id);
        }
        if let Some(&child) = self.ids.get(&edge.child) {
            self.hop_remove(child, Side::In, &edge.id);
        }
        self.origins
            .remove(&(edge.origin.as_str().into(), EDGE, edge.id.clone()));
        let mut gone = (*edge).clone();
        gone.deleted_at = time;
        Ok(GraphEvent::EdgeDeleted(Arc::new(gone)))
    }

    /// Deletes a node and its edges (edge events first).
    pub fn delete_node(&mut self, id: &str, time: Time) -> Result<Vec<GraphEvent>, GraphError> {
        if !self.ids.contains_key(id) {
            return Err(GraphError::NodeNotFound(Id::new(id)));
        }
        let mut events = Vec::new();
        let edge_ids: Vec<Id> = self
            .out_edges(id)
            .chain(self.in_edges(id))
            .map(|e| e.id.clone())
            .collect();
        let mut seen = HashSet::new();
        for eid in edge_ids {
            if seen.insert(eid.clone()) {
                events.push(self.delete_edge(&eid, time)?);
            }
        }
        let slot = self
            .ids
            .remove(id)
            .ok_or_else(|| GraphError::NodeNotFound(Id::new(id)))?;
        let node = std::mem::take(self.slot_mut(slot))
            .node
            .ok_or_else(|| GraphError::NodeNotFound(Id::new(id)))?;
        self.free.push_back(slot);
        self.index_remove(&node);
        self.origins
            .remove(&(node.origin.as_str().into(), NODE, node.id.clone()));
        let mut gone = (*node).clone();
        gone.deleted_at = time;
        events.push(GraphEvent::NodeDeleted(Arc::new(gone)));
        Ok(events)
    }

    /// IDs of the nodes (`NODE`) or edges (`EDGE`) of `origin`.
    fn origin_ids<'a>(&'a self, origin: &str, kind: u8) -> impl Iterator<Item = &'a Id> + use<'a> {
        let origin = CompactString::from(origin);
        let start = (origin.clone(), kind, Id::default());
        self.origins
            .range(start..)
            .take_while(move |(o, k, _)| *o == origin && *k == kind)
            .map(|(_, _, id)| id)
    }

    /// How many nodes and edges `origin` owns.
    pub fn origin_size(&self, origin: &str) -> (usize, usize) {
        (
            self.origin_ids(origin, NODE).count(),
            self.origin_ids(origin, EDGE).count(),
        )
    }

    /// Deletes every element of `origin`.
    pub fn delete_origin(&mut self, origin: &str, time: Time) -> Vec<GraphEvent> {
        self.sync_origin(origin, Vec::new(), Vec::new(), time)
    }

    /// Makes the subgraph owned by `origin` equal to `nodes` and `edges` (a `Sync` from its
    /// owner): elements no longer present are deleted, changed ones updated, new ones added.
    /// Unchanged elements produce no event, so a reconnecting agent causes no churn. Edges
    /// whose endpoints are missing are skipped.
    pub fn sync_origin(
        &mut self,
        origin: &str,
        nodes: Vec<Node>,
        edges: Vec<Edge>,
        time: Time,
    ) -> Vec<GraphEvent> {
        let mut events = Vec::new();
        let keep_nodes: HashSet<&str> = nodes.iter().map(|n| n.id.as_str()).collect();
        let keep_edges: HashSet<&str> = edges.iter().map(|e| e.id.as_str()).collect();
        let stale_edges: Vec<Id> = self
            .origin_ids(origin, EDGE)
            .filter(|id| !keep_edges.contains(id.as_str()))
            .cloned()
            .collect();
        let stale_nodes: Vec<Id> = self
            .origin_ids(origin, NODE)
            .filter(|id| !keep_nodes.contains(id.as_str()))
            .cloned()
            .collect();
        for id in stale_edges {
            if let Ok(ev) = self.delete_edge(&id, time) {
                events.push(ev);
            }
        }
        for id in stale_nodes {
            if let Ok(evs) = self.delete_node(&id, time) {
                events.extend(evs);
            }
        }
        for node in nodes {
            if let Ok(evs) = self.replace_node(node) {
                events.extend(evs);
            }
        }
        for edge in edges {
            if let Ok(evs) = self.replace_edge(edge) {
                events.extend(evs);
            }
        }
        events
    }

    /// Applies an event produced by another graph (replication, replay).
    pub fn apply_event(&mut self, ev: &GraphEvent) -> Result<Vec<GraphEvent>, GraphError> {
        match ev {
            GraphEvent::NodeAdded(n) => self.replace_node((**n).clone()),
            GraphEvent::NodeUpdated { node, .. } => self.replace_node((**node).clone()),
            GraphEvent::NodeDeleted(n) if self.ids.contains_key(&n.id) => {
                self.delete_node(&n.id, n.deleted_at)
            }
            GraphEvent::EdgeAdded(e) => self.replace_edge((**e).clone()),
            GraphEvent::EdgeUpdated { edge, .. } => self.replace_edge((**edge).clone()),
            GraphEvent::EdgeDeleted(e) if self.edges.contains_key(&e.id) => {
                Ok(vec![self.delete_edge(&e.id, e.deleted_at)?])
            }
            GraphEvent::NodeDeleted(_) | GraphEvent::EdgeDeleted(_) => Ok(Vec::new()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata;
    use crate::view::GraphView;

    fn node(id: &str, name: &str, ty: &str) -> Node {
        Node::new(
            id,
            metadata! {"Name" => name, "Type" => ty},
            "h",
            "agent.h",
            1,
        )
    }

    fn edge(id: &str, p: &str, c: &str) -> Edge {
        Edge::new(
            id,
            p,
            c,
            metadata! {"RelationType" => "ownership"},
            "h",
            "agent.h",
            1,
        )
    }

    #[test]
    fn snapshot_is_unaffected_by_later_changes() {
        let mut g = Graph::new();
        g.add_node(node("a", "eth0", "veth")).unwrap();
        let snap = g.clone();
        g.add_node(node("b", "eth1", "veth")).unwrap();
        g.update_node_metadata("a", 5, |m| {
            m.insert("MTU", 9000);
        })
        .unwrap();
        assert_eq!(snap.node_count(), 1);
        assert_eq!(snap.node("a").unwrap().metadata.get("MTU"), None);
        assert_eq!(g.node("a").unwrap().revision, 2);
        assert_eq!(g.node("a").unwrap().updated_at, 5);
    }

    fn out_names(g: &Graph, n: &Node) -> Vec<String> {
        let mut names = Vec::new();
        GraphView::each_out_neighbour(g, n, &mut |_, m| names.push(m.name().to_string()));
        names
    }

    #[test]
    fn traversals_step_by_slot_and_fall_back_to_ids() {
        let mut g = Graph::new();
        for (id, name) in [("a", "A"), ("b", "B"), ("c", "C")] {
            g.add_node(node(id, name, "veth")).unwrap();
        }
        g.add_edge(edge("ab", "a", "b")).unwrap();
        g.add_edge(edge("ac", "a", "c")).unwrap();
        g.delete_node("b", 2).unwrap();
        // d takes b's freed slot.
        g.add_node(node("d", "D", "veth")).unwrap();
        assert_eq!(g.slot_bound_for_tests(), 3, "the freed slot is reused");
        g.add_edge(edge("ad", "a", "d")).unwrap();
        let a = g.node("a").unwrap().clone();
        assert!(g.node_slot(&a).is_some());
        assert_eq!(out_names(&g, &a), ["C", "D"]);
        let d = g.node("d").unwrap().clone();
        assert_eq!(
            g.node_in_slot(g.node_slot(&d).unwrap())
                .unwrap()
                .id
                .as_str(),
            "d"
        );

        // A copy made by another graph (its slot hint means nothing here) is found by ID.
        let mut other = Graph::new();
        other.add_node(node("x", "X", "veth")).unwrap();
        other.add_node(node("a", "A", "veth")).unwrap();
        let foreign = other.node("a").unwrap().clone();
        assert_eq!(g.node_slot(&foreign), None);
        assert_eq!(out_names(&g, &foreign), ["C", "D"]);

        // An older copy of a node still reaches the node's current edges.
        g.update_node_metadata("a", 3, |m| {
            m.insert("MTU", 9000);
        })
        .unwrap();
        assert_eq!(g.node_slot(&a), None, "a stale copy is not the graph's");
        assert_eq!(out_names(&g, &a), ["C", "D"]);
        let mut hops = Vec::new();
        let slot = g.node_slot(g.node("a").unwrap()).unwrap();
        GraphView::each_slot_hop(&g, slot, true, true, &mut |e, s| {
            hops.push((e.id.to_string(), g.node_in_slot(s).unwrap().id.to_string()));
        });
        assert_eq!(hops, [("ac".into(), "c".into()), ("ad".into(), "d".into())]);
    }

    #[test]
    fn index_follows_updates_and_deletes() {
        let mut g = Graph::new();
        g.add_node(node("a", "eth0", "veth")).unwrap();
        g.add_node(node("b", "eth1", "veth")).unwrap();
        g.add_node(node("c", "br0", "bridge")).unwrap();
        let ids = |g: &Graph, v: &str| -> Vec<String> {
            g.index_ids("Type", v)
                .unwrap()
                .map(|i| i.to_string())
                .collect()
        };
        let count = |g: &Graph, v: &str| g.index_count("Type", v).unwrap();
        assert_eq!(ids(&g, "veth"), vec!["a", "b"]);
        assert_eq!(count(&g, "veth"), 2);
        g.update_node_metadata("b", 2, |m| {
            m.insert("Type", "tun");
        })
        .unwrap();
        assert_eq!(ids(&g, "veth"), vec!["a"]);
        assert_eq!(ids(&g, "tun"), vec!["b"]);
        assert_eq!((count(&g, "veth"), count(&g, "tun")), (1, 1));
        g.delete_node("a", 3).unwrap();
        assert!(ids(&g, "veth").is_empty());
        assert_eq!(count(&g, "veth"), 0);
        assert!(g.index_ids("MTU", "1").is_none());
        assert!(g.index_count("MTU", "1").is_none());
        // A value listed twice by one node counts that node once.
        g.update_node_metadata("c", 4, |m| {
            m.insert("IPV4", Value::from(vec!["10.0.0.1/24", "10.0.0.1/24"]));
            m.insert("Type", Value::from(vec!["bridge", "bridge"]));
        })
        .unwrap();
        assert_eq!(g.index_count("IPV4", "10.0.0.1/24"), Some(1));
        assert_eq!(count(&g, "bridge"), 1);
        g.update_node_metadata("c", 5, |m| {
            m.remove("IPV4");
            m.remove("Type");
        })
        .unwrap();
        assert_eq!(g.index_count("IPV4", "10.0.0.1/24"), Some(0));
        assert_eq!(count(&g, "bridge"), 0);
    }

    #[test]
    fn edges_need_endpoints_and_go_with_their_nodes() {
        let mut g = Graph::new();
        g.add_node(node("a", "a", "host")).unwrap();
        assert_eq!(
            g.add_edge(edge("e", "a", "b")).unwrap_err(),
            GraphError::ChildNotFound(Id::new("b"))
        );
        g.add_node(node("b", "b", "veth")).unwrap();
        g.add_edge(edge("e", "a", "b")).unwrap();
        assert_eq!(g.out_edges("a").count(), 1);
        assert_eq!(g.in_edges("b").count(), 1);
        let events = g.delete_node("b", 9).unwrap();
        assert_eq!(events.len(), 2);
        assert!(matches!(&events[0], GraphEvent::EdgeDeleted(e) if e.deleted_at == 9));
        assert!(matches!(&events[1], GraphEvent::NodeDeleted(n) if n.id.as_str() == "b"));
        assert_eq!(g.out_edges("a").count(), 0);
        assert_eq!(g.edge_count(), 0);
    }

    #[test]
    fn edge_updates_are_seen_through_adjacency() {
        let mut g = Graph::new();
        g.add_node(node("a", "a", "host")).unwrap();
        g.add_node(node("b", "b", "veth")).unwrap();
        g.add_edge(edge("e", "a", "b")).unwrap();
        g.update_edge_metadata("e", 2, |m| {
            m.insert("Weight", 7);
        })
        .unwrap();
        let out = g.out_edges("a").next().unwrap();
        let inn = g.in_edges("b").next().unwrap();
        assert_eq!(out.metadata.get("Weight"), Some(&Value::Int(7)));
        assert_eq!(inn.revision, 2);
    }

    #[test]
    fn unchanged_update_produces_no_event_and_keeps_revision() {
        let mut g = Graph::new();
        g.add_node(node("a", "eth0", "veth")).unwrap();
        let ev = g.update_node_metadata("a", 2, |m| {
            m.insert("Name", "eth0");
        });
        assert!(ev.unwrap().is_none());
        assert_eq!(g.node("a").unwrap().revision, 1);
    }

    #[test]
    fn partial_update_applies_only_when_newer() {
        let mut g = Graph::new();
        g.add_node(node("a", "eth0", "veth")).unwrap();
        let ops = [PartialOp::Set {
            key: "MTU".into(),
            value: Value::Int(1400),
        }];
        assert!(g.apply_node_partial("a", &ops, 1, 5).unwrap().is_none());
        let ev = g.apply_node_partial("a", &ops, 3, 5).unwrap().unwrap();
        assert!(matches!(ev, GraphEvent::NodeUpdated { ref node, .. } if node.revision == 3));
        assert_eq!(
            g.node("a").unwrap().metadata.get("MTU"),
            Some(&Value::Int(1400))
        );
    }

    #[test]
    fn sync_origin_only_emits_differences() {
        let mut g = Graph::new();
        g.add_node(node("a", "eth0", "veth")).unwrap();
        g.add_node(node("b", "eth1", "veth")).unwrap();
        g.add_edge(edge("e", "a", "b")).unwrap();
        let mut other = node("x", "other", "host");
        other.origin = "agent.other".into();
        g.add_node(other).unwrap();

        let mut a2 = node("a", "eth0", "veth");
        a2.metadata.insert("MTU", 1500);
        a2.revision = 2;
        let events = g.sync_origin("agent.h", vec![a2, node("c", "eth2", "veth")], vec![], 10);
        let kinds: Vec<&str> = events.iter().map(|e| e.type_name()).collect();
        assert_eq!(
            kinds,
            vec!["EdgeDeleted", "NodeDeleted", "NodeUpdated", "NodeAdded"]
        );
        assert!(g.node("x").is_some(), "other origins are untouched");
        let again = g.sync_origin(
            "agent.h",
            vec![
                g.node("a").unwrap().as_ref().clone(),
                g.node("c").unwrap().as_ref().clone(),
            ],
            vec![],
            11,
        );
        assert!(again.is_empty(), "{again:?}");
        assert_eq!(g.delete_origin("agent.h", 12).len(), 2);
        assert_eq!(g.node_count(), 1);
    }

    #[test]
    fn origin_index_follows_adds_deletes_and_origin_changes() {
        let mut g = Graph::new();
        g.add_node(node("a", "eth0", "veth")).unwrap();
        g.add_node(node("b", "eth1", "veth")).unwrap();
        g.add_edge(edge("e", "a", "b")).unwrap();
        assert_eq!(g.origin_size("agent.h"), (2, 1));
        assert_eq!(g.origin_size("agent.hh"), (0, 0), "no prefix match");
        // Another owner takes a node over.
        let mut b2 = node("b", "eth1", "veth");
        b2.origin = "api.x".into();
        b2.revision = 5;
        g.replace_node(b2).unwrap();
        assert_eq!(g.origin_size("agent.h"), (1, 1));
        assert_eq!(g.origin_size("api.x"), (1, 0));
        // Deleting a node deletes its edges from the index too.
        g.delete_node("a", 2).unwrap();
        assert_eq!(g.origin_size("agent.h"), (0, 0));
        assert_eq!(g.delete_origin("api.x", 3).len(), 1);
        assert_eq!(g.node_count(), 0);
    }
}
