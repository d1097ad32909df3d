//! Query results and their JSON encoding (Skydive's result encoding).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;
use serde::ser::{SerializeMap, SerializeSeq, Serializer};
use skydive_flow::{Flow, RawPacket};
use skydive_graph::{Edge, GraphJson, GraphView, Node, RevisionGraph, Value};

/// A graph a query works on: the live snapshot it was given, or one it built (a past time,
/// a time slice, a subgraph).
#[derive(Clone)]
pub enum GraphRef<'a> {
    Borrowed(&'a dyn GraphView),
    Owned(Arc<RevisionGraph>),
}

impl GraphRef<'_> {
    pub fn view(&self) -> &dyn GraphView {
        match self {
            GraphRef::Borrowed(g) => *g,
            GraphRef::Owned(g) => g.as_ref(),
        }
    }
}

/// The result of a query (or of a step within one).
#[derive(Clone)]
pub enum Output<'a> {
    Graph(GraphRef<'a>),
    Nodes(Vec<Arc<Node>>),
    Edges(Vec<Arc<Edge>>),
    Paths(Vec<Vec<Arc<Node>>>),
    Values(Vec<Value>),
    /// `Count()`, `Sum(key)` on nodes and metrics: a bare integer.
    Int(i64),
    /// `Sum(key)` on flows: a bare float.
    Float(f64),
    Flows(Vec<Flow>),
    /// `Metrics()`: element ID (or flow UUID) → samples.
    Metrics(BTreeMap<String, Vec<Value>>),
    /// `Metrics().Aggregates()`.
    Aggregated(Vec<Value>),
    /// `Metrics().Sum()`: one merged metric.
    Metric(Value),
    RawPackets(BTreeMap<String, Vec<RawPacket>>),
    Sockets(BTreeMap<String, Vec<Value>>),
    Groups(BTreeMap<String, Vec<Flow>>),
    NextHops(BTreeMap<String, Value>),
}

impl Output<'_> {
    /// How many elements the result holds, for the evaluation's budget (a graph is the
    /// graph's own, not the query's: 0).
    pub fn element_count(&self) -> usize {
        match self {
            Output::Graph(_) | Output::Int(_) | Output::Float(_) | Output::Metric(_) => 0,
            Output::Nodes(v) => v.len(),
            Output::Edges(v) => v.len(),
            Output::Paths(v) => v.iter().map(Vec::len).sum(),
            Output::Values(v) | Output::Aggregated(v) => v.len(),
            Output::Flows(v) => v.len(),
            Output::Metrics(m) | Output::Sockets(m) => m.values().map(Vec::len).sum(),
            Output::RawPackets(m) => m.values().map(Vec::len).sum(),
            Output::Groups(m) => m.values().map(Vec::len).sum(),
            Output::NextHops(m) => m.len(),
        }
    }

    /// The kind of result, for "Invalid step" messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Output::Graph(_) => "graph",
            Output::Nodes(_) => "nodes",
            Output::Edges(_) => "edges",
            Output::Paths(_) => "paths",
            Output::Values(_) => "values",
            Output::Int(_) | Output::Float(_) => "number",
            Output::Flows(_) => "flows",
            Output::Metrics(_) => "metrics",
            Output::Aggregated(_) => "aggregated metrics",
            Output::Metric(_) => "metric",
            Output::RawPackets(_) => "raw packets",
            Output::Sockets(_) => "sockets",
            Output::Groups(_) => "flow groups",
            Output::NextHops(_) => "next hops",
        }
    }

    /// The JSON body of `POST /api/topology`.
    pub fn to_json(&self) -> Vec<u8> {
        // Serialising into memory cannot fail for these types.
        serde_json::to_vec(self).unwrap_or_else(|_| b"null".to_vec())
    }

    /// The result as a JSON value (alerts compare results and send them as `ReasonData`).
    pub fn to_json_value(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }

    /// Whether the result has no element (alerts fire on non-empty results).
    pub fn is_empty(&self) -> bool {
        match self {
            Output::Graph(g) => g.view().node_count() == 0 && g.view().edge_count() == 0,
            Output::Nodes(v) => v.is_empty(),
            Output::Edges(v) => v.is_empty(),
            Output::Paths(v) => v.is_empty(),
            Output::Values(v) => v.is_empty(),
            Output::Int(_) | Output::Float(_) | Output::Metric(_) => false,
            Output::Flows(v) => v.is_empty(),
            Output::Metrics(m) => m.is_empty(),
            Output::Aggregated(v) => v.is_empty(),
            Output::RawPackets(m) => m.is_empty(),
            Output::Sockets(m) => m.is_empty(),
            Output::Groups(m) => m.is_empty(),
            Output::NextHops(m) => m.is_empty(),
        }
    }
}

struct One<T>(T);

impl<T: Serialize> Serialize for One<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(1))?;
        seq.serialize_element(&self.0)?;
        seq.end()
    }
}

struct Aggregated<'a>(&'a [Value]);

impl Serialize for Aggregated<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(1))?;
        m.serialize_entry("Aggregated", self.0)?;
        m.end()
    }
}

fn map_or_empty<S: Serializer, V: Serialize>(
    m: &BTreeMap<String, V>,
    s: S,
) -> Result<S::Ok, S::Error> {
    if m.is_empty() {
        s.serialize_seq(Some(0))?.end()
    } else {
        One(m).serialize(s)
    }
}

impl Serialize for Output<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Output::Graph(g) => One(GraphJson::from_view(g.view())).serialize(s),
            Output::Nodes(v) => v.serialize(s),
            Output::Edges(v) => v.serialize(s),
            Output::Paths(v) => v.serialize(s),
            Output::Values(v) if v.is_empty() => s.serialize_unit(),
            Output::Values(v) => v.serialize(s),
            Output::Int(i) => s.serialize_i64(*i),
            Output::Float(f) => Value::Float(*f).serialize(s),
            Output::Flows(v) => v.serialize(s),
            Output::Metrics(m) => map_or_empty(m, s),
            Output::Aggregated(v) => One(Aggregated(v)).serialize(s),
            Output::Metric(v) => v.serialize(s),
            Output::RawPackets(m) => map_or_empty(m, s),
            Output::Sockets(m) => map_or_empty(m, s),
            Output::Groups(m) => map_or_empty(m, s),
            Output::NextHops(m) => map_or_empty(m, s),
        }
    }
}
