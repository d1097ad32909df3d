//! Query evaluation over a graph view, a history and a flow source (Skydive's Gremlin steps).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use skydive_flow::capture::is_capturable;
use skydive_flow::{Flow, FlowMetric, RawPacket};
use skydive_graph::{
    Edge, Element, Filter, Getter, GraphView, History, Node, RevisionGraph, Time, Value,
};

use crate::error::{Error, Result};
use crate::metrics;
use crate::output::{GraphRef, Output};
use crate::parser::{Param, Query, Step, StepKind};
use crate::predicate::{KeyMode, has_either_filter, has_filter, metadata_filter, optional_filter};
use crate::time::{TimeSlice, context_slice};

/// A query for flows, handed to the [`FlowSource`].
#[derive(Clone, Debug)]
pub struct FlowQuery {
    /// What the flows must match (user filters, and `NodeTID` when nodes were given).
    pub filter: Filter,
    /// `None` for live flows (the agents' tables), else the stored flows of this slice.
    pub time: Option<TimeSlice>,
    /// The capture nodes the query is about, as `(host, TID)`; `None` means every node.
    pub nodes: Option<Vec<(String, String)>>,
}

/// Where flows come from: the agents' live tables and the flow storage.
pub trait FlowSource: Send + Sync {
    fn flows(&self, q: &FlowQuery) -> std::result::Result<Vec<Flow>, FlowSourceError>;
    /// Stored metric updates of the matching flows, by flow UUID (time context only).
    fn metrics(
        &self,
        q: &FlowQuery,
    ) -> std::result::Result<BTreeMap<String, Vec<FlowMetric>>, FlowSourceError>;
    /// Stored raw packets of the matching flows, by flow UUID (time context only).
    fn raw_packets(
        &self,
        q: &FlowQuery,
    ) -> std::result::Result<BTreeMap<String, Vec<RawPacket>>, FlowSourceError>;
}

/// Why flows could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FlowSourceError {
    /// A time context with no flow store configured (Skydive's message).
    #[error("No storage backend has been configured")]
    NoStore,
    /// The store failed.
    #[error(transparent)]
    Store(Box<dyn std::error::Error + Send + Sync>),
}

/// A compiled packet filter for `RawPackets().BPF(...)`.
pub type PacketMatcher = Box<dyn Fn(&RawPacket) -> bool + Send + Sync>;

/// Compiles BPF filters (libpcap lives outside this crate).
pub trait BpfCompiler: Send + Sync {
    fn compile(
        &self,
        filter: &str,
    ) -> std::result::Result<PacketMatcher, Box<dyn std::error::Error + Send + Sync>>;
}

/// What a query runs against.
pub struct Env<'a> {
    /// The live graph (a snapshot).
    pub graph: &'a dyn GraphView,
    /// The graph's past, for `Context`/`At`.
    pub history: &'a dyn History,
    pub flows: Option<&'a dyn FlowSource>,
    pub bpf: Option<&'a dyn BpfCompiler>,
    /// "Now", in milliseconds.
    pub now: Time,
}

/// What one evaluation may take: the elements a step may produce (the memory a query holds
/// is about proportional to them: `G.V().Both()` six times over a 20-node mesh would produce
/// 940 million), when it must be done, and a flag that says its client went away.
#[derive(Clone, Debug)]
pub struct Limits {
    pub max_elements: usize,
    pub deadline: Option<std::time::Instant>,
    pub cancel: Option<Arc<std::sync::atomic::AtomicBool>>,
}

impl Limits {
    /// The elements a step may produce when nothing else is said: far above what Skydive's
    /// own tests and web UI ask of a graph of 100,000 elements.
    pub const DEFAULT_MAX_ELEMENTS: usize = 10_000_000;
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_elements: Self::DEFAULT_MAX_ELEMENTS,
            deadline: None,
            cancel: None,
        }
    }
}

impl Limits {
    /// Whether the evaluation must stop now: past its deadline, or cancelled.
    fn check_time(&self) -> Result<()> {
        if self
            .cancel
            .as_ref()
            .is_some_and(|c| c.load(std::sync::atomic::Ordering::Relaxed))
        {
            return Err(Error::limit(
                crate::LimitHit::Cancelled,
                "the query was cancelled: its client went away",
            ));
        }
        if self
            .deadline
            .is_some_and(|d| std::time::Instant::now() >= d)
        {
            return Err(Error::limit(
                crate::LimitHit::Time,
                "the query ran out of time",
            ));
        }
        Ok(())
    }

    fn too_many(&self, what: &str) -> Error {
        Error::limit(
            crate::LimitHit::Elements,
            format!(
                "the query produces more than {} {what} in one step",
                self.max_elements
            ),
        )
    }

    /// Fails when a step produced more than [`Limits::max_elements`].
    fn check_size(&self, n: usize, what: &str) -> Result<()> {
        if n > self.max_elements {
            return Err(self.too_many(what));
        }
        Ok(())
    }
}

/// Runs a parsed query.
pub fn execute<'a>(query: &Query, env: &Env<'a>) -> Result<Output<'a>> {
    execute_limited(query, env, &Limits::default())
}

/// Runs a parsed query within `limits`.
pub fn execute_limited<'a>(query: &Query, env: &Env<'a>, limits: &Limits) -> Result<Output<'a>> {
    let mut ev = Evaluator {
        env,
        graph: GraphRef::Borrowed(env.graph),
        time: None,
        labels: HashMap::new(),
        limits,
    };
    ev.run(&query.steps)
}

/// Parses and runs a query.
pub fn query<'a>(text: &str, env: &Env<'a>) -> Result<Output<'a>> {
    execute(&crate::parser::parse(text)?, env)
}

/// Parses and runs a query within `limits`.
pub fn query_limited<'a>(text: &str, env: &Env<'a>, limits: &Limits) -> Result<Output<'a>> {
    execute_limited(&crate::parser::parse(text)?, env, limits)
}

struct Evaluator<'e, 'a> {
    env: &'e Env<'a>,
    /// The graph the current elements come from.
    graph: GraphRef<'a>,
    time: Option<TimeSlice>,
    labels: HashMap<String, Vec<Arc<Node>>>,
    limits: &'e Limits,
}

fn invalid(step: &Step, input: &Output<'_>) -> Error {
    Error::at(
        step.pos,
        format!(
            "Invalid step '{}' on '{}'",
            step.kind.name(),
            input.type_name()
        ),
    )
}

fn is_has(kind: StepKind) -> bool {
    matches!(
        kind,
        StepKind::Has | StepKind::HasKey | StepKind::HasNot | StepKind::HasEither
    )
}

/// The filter of a `Has`-family step on graph elements.
fn element_filter(step: &Step) -> Result<Filter> {
    let p = &step.params;
    match step.kind {
        StepKind::Has => has_filter(p, KeyMode::Element),
        StepKind::HasEither => has_either_filter(p, KeyMode::Element),
        StepKind::HasKey => Ok(Filter::exists(p[0].as_str().unwrap_or_default())),
        StepKind::HasNot => Ok(Filter::Null {
            key: p[0].as_str().unwrap_or_default().to_string(),
        }),
        _ => Ok(Filter::True),
    }
    .map_err(|e| with_pos(e, step))
}

fn with_pos(mut e: Error, step: &Step) -> Error {
    if e.position.is_none() {
        e.position = Some(step.pos);
    }
    e
}

type FastMap<K, V> = HashMap<K, V, foldhash::fast::FixedState>;
type FastSet<K> = HashSet<K, foldhash::fast::FixedState>;

/// Keys tried for index lookups, most selective first.
const INDEX_PREFERENCE: [&str; 5] = ["TID", "MAC", "Name", "IPV4", "Type"];

fn dedup_by_id<T: std::ops::Deref<Target = Element>>(items: Vec<Arc<T>>) -> Vec<Arc<T>> {
    let mut seen = HashSet::with_capacity(items.len());
    items
        .into_iter()
        .filter(|i| seen.insert(i.id.clone()))
        .collect()
}

/// The tuple of values of `keys` on an element, or `None` when it has none of them.
fn key_tuple<G: Getter + ?Sized>(g: &G, keys: &[&str]) -> Option<String> {
    let values: Vec<Option<Value>> = keys.iter().map(|k| g.field_value(k)).collect();
    if values.iter().all(Option::is_none) {
        return None;
    }
    Some(
        values
            .iter()
            .map(|v| {
                v.as_ref()
                    .map(|v| v.to_json().to_string())
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("\u{1f}"),
    )
}

fn dedup_by_keys<T: Getter>(items: Vec<T>, keys: &[&str]) -> Vec<T> {
    let mut seen = HashSet::new();
    items
        .into_iter()
        .filter(|i| match key_tuple(i, keys) {
            None => true,
            Some(t) => seen.insert(t),
        })
        .collect()
}

fn string_params(params: &[Param]) -> Vec<&str> {
    params.iter().filter_map(Param::as_str).collect()
}

fn range_bounds(step: &Step) -> (usize, usize) {
    let clamp = |v: i64| usize::try_from(v.max(0)).unwrap_or(usize::MAX);
    match step.kind {
        StepKind::Limit => (0, clamp(step.params[0].as_int().unwrap_or(0))),
        _ => (
            clamp(step.params[0].as_int().unwrap_or(0)),
            clamp(step.params[1].as_int().unwrap_or(0)),
        ),
    }
}

fn apply_range<T>(items: Vec<T>, (from, to): (usize, usize)) -> Vec<T> {
    items
        .into_iter()
        .skip(from)
        .take(to.saturating_sub(from))
        .collect()
}

/// Sort order and key of a `Sort` step.
fn sort_spec<'p>(params: &'p [Param], default_key: &'p str) -> (bool, &'p str) {
    match params {
        [] => (false, default_key),
        [Param::Str(k)] => (false, k),
        [Param::Asc] => (false, default_key),
        [Param::Desc] => (true, default_key),
        [Param::Asc, Param::Str(k)] => (false, k),
        [Param::Desc, Param::Str(k)] => (true, k),
        _ => (false, default_key),
    }
}

/// Stable sort by the value of `key`; elements without it come first in ascending order.
fn sort_by_key<T: Getter>(items: Vec<T>, key: &str, desc: bool) -> Vec<T> {
    let mut keyed: Vec<(Option<Value>, T)> =
        items.into_iter().map(|x| (x.field_value(key), x)).collect();
    keyed.sort_by(|(a, _), (b, _)| {
        let ord = match (a, b) {
            (Some(a), Some(b)) => a.sort_cmp(b),
            (None, Some(_)) => std::cmp::Ordering::Less,
            (Some(_), None) => std::cmp::Ordering::Greater,
            (None, None) => std::cmp::Ordering::Equal,
        };
        if desc { ord.reverse() } else { ord }
    });
    keyed.into_iter().map(|(_, x)| x).collect()
}

/// `Values(key)`: the value of each element that has it; empty arrays and maps skipped.
fn values_of<G: Getter>(items: &[G], key: &str) -> Vec<Value> {
    let mut out = Vec::new();
    for item in items {
        let mut found: Vec<Value> = Vec::new();
        item.visit_field(key, &mut |f| {
            found.push(f.to_value());
            false
        });
        let v = match found.len() {
            0 => continue,
            1 => found.pop().unwrap_or_default(),
            _ => Value::Array(found),
        };
        if !v.is_empty_container() {
            out.push(v);
        }
    }
    out
}

fn element_keys(e: &Element, out: &mut Vec<String>) {
    for k in [
        "@ID",
        "@Host",
        "@Origin",
        "@CreatedAt",
        "@UpdatedAt",
        "@DeletedAt",
        "@Revision",
    ] {
        out.push(k.to_string());
    }
    e.metadata.flattened_keys(out);
}

fn sorted_unique(mut keys: Vec<String>) -> Vec<Value> {
    keys.sort();
    keys.dedup();
    keys.into_iter().map(Value::from).collect()
}

/// A whole-value getter for metadata values (values-level `Has`).
struct ValueGetter<'v>(&'v Value);

impl Getter for ValueGetter<'_> {
    fn visit_field(&self, key: &str, f: &mut dyn FnMut(skydive_graph::Field<'_>) -> bool) -> bool {
        match self.0 {
            Value::Map(m) => m.visit_path(key, &mut |v| f(skydive_graph::Field::Value(v))),
            _ => false,
        }
    }
}

impl<'e, 'a> Evaluator<'e, 'a> {
    fn view(&self) -> &dyn GraphView {
        self.graph.view()
    }

    fn run(&mut self, steps: &[Step]) -> Result<Output<'a>> {
        let mut out = Output::Graph(self.graph.clone());
        let mut i = 0;
        while i < steps.len() {
            let step = &steps[i];
            if step.kind == StepKind::Context && i != 0 {
                return Err(Error::at(
                    step.pos,
                    "Context must come directly after G".into(),
                ));
            }
            self.limits.check_time()?;
            let (next, consumed) = self.step(step, &steps[i + 1..], out)?;
            self.limits.check_size(next.element_count(), "elements")?;
            out = next;
            i += 1 + consumed;
        }
        Ok(out)
    }

    /// Applies one step; returns the result and how many following steps it consumed.
    fn step(
        &mut self,
        step: &Step,
        rest: &[Step],
        input: Output<'a>,
    ) -> Result<(Output<'a>, usize)> {
        use StepKind::*;
        match step.kind {
            Context | V | E => self.start(step, rest, input),
            k if is_has(k) => Ok((self.filter(step, input)?, 0)),
            In | Out | Both | Nodes | Hops | CaptureNode if matches!(input, Output::Flows(_)) => {
                Ok((self.flow_step(step, input)?, 0))
            }
            Out | In | Both | OutE | InE | BothE | OutV | InV | BothV | ShortestPathTo
            | SubGraph | Descendants | Ascendants | Neighbors | NextHop => {
                self.traverse(step, rest, input)
            }
            Flows | RawPackets | Bpf | Group | MoreThan => Ok((self.flow_step(step, input)?, 0)),
            Metrics | Aggregates | Sockets => Ok((self.measure(step, input)?, 0)),
            Dedup => Ok((self.dedup(step, input)?, 0)),
            Values | ValueMap | Keys => Ok((self.project(step, input)?, 0)),
            Sum => Ok((self.sum(step, input)?, 0)),
            Workflow => Err(Error::at(
                step.pos,
                "Workflow steps are not supported: workflows run JavaScript, which this server \
                 does not embed"
                    .into(),
            )),
            _ => Ok((self.reshape(step, input)?, 0)),
        }
    }

    /// `Context`, `V`, `E`: where a traversal starts.
    fn start(
        &mut self,
        step: &Step,
        rest: &[Step],
        input: Output<'a>,
    ) -> Result<(Output<'a>, usize)> {
        use StepKind::*;
        let p = &step.params;
        let out = match (step.kind, input) {
            (Context, Output::Graph(_)) => {
                let slice = context_slice(p, self.env.now).map_err(|e| with_pos(e, step))?;
                let g = if slice.is_point() {
                    self.env.history.at(slice.last)
                } else {
                    self.env.history.slice(slice.start, slice.last)
                }
                .map_err(|e| Error::msg(e.to_string()))?;
                self.time = Some(slice);
                self.graph = GraphRef::Owned(Arc::new(g));
                Output::Graph(self.graph.clone())
            }
            (V, Output::Graph(g)) => {
                self.graph = g;
                return self.vertices(step, rest);
            }
            (E, Output::Graph(g)) => {
                self.graph = g;
                if let [Param::Str(id)] = p.as_slice() {
                    let edges: Vec<_> = self.view().edges_with_id(id).cloned().collect();
                    if edges.is_empty() {
                        return Err(Error::msg(format!("Edge '{id}' does not exist")));
                    }
                    Output::Edges(edges)
                } else {
                    let f = if p.is_empty() {
                        Filter::True
                    } else {
                        has_filter(p, KeyMode::Element).map_err(|e| with_pos(e, step))?
                    };
                    Output::Edges(
                        self.view()
                            .all_edges()
                            .filter(|e| f.eval(e.as_ref()))
                            .cloned()
                            .collect(),
                    )
                }
            }
            (_, input) => return Err(invalid(step, &input)),
        };
        Ok((out, 0))
    }

    /// The `Has` steps, on any kind of result.
    fn filter(&self, step: &Step, input: Output<'a>) -> Result<Output<'a>> {
        let out = match (step.kind, input) {
            (k, Output::Nodes(ns)) if is_has(k) => {
                let f = element_filter(step)?;
                Output::Nodes(ns.into_iter().filter(|n| f.eval(n.as_ref())).collect())
            }
            (k, Output::Edges(es)) if is_has(k) => {
                let f = element_filter(step)?;
                Output::Edges(es.into_iter().filter(|e| f.eval(e.as_ref())).collect())
            }
            (k, Output::Flows(fs)) if is_has(k) => {
                let f = self.flow_filter(step)?;
                Output::Flows(fs.into_iter().filter(|x| f.eval(x)).collect())
            }
            (k, Output::Values(vs)) if is_has(k) => {
                let f = element_filter(step)?;
                Output::Values(vs.into_iter().filter(|v| f.eval(&ValueGetter(v))).collect())
            }
            (_, input) => return Err(invalid(step, &input)),
        };
        Ok(out)
    }

    /// Steps that walk the graph from nodes or edges.
    fn traverse(
        &mut self,
        step: &Step,
        rest: &[Step],
        input: Output<'a>,
    ) -> Result<(Output<'a>, usize)> {
        use StepKind::*;
        let p = &step.params;
        let out = match (step.kind, input) {
            (Out | In | Both, Output::Nodes(ns)) => return self.hops(step, rest, &ns),
            (OutE | InE | BothE, Output::Nodes(ns)) => {
                let f = optional_filter(p).map_err(|e| with_pos(e, step))?;
                let g = self.view();
                let mut out = Vec::new();
                for n in &ns {
                    if matches!(step.kind, OutE | BothE) {
                        out.extend(
                            g.out_edges_of(&n.id)
                                .filter(|e| f.eval(e.as_ref()))
                                .cloned(),
                        );
                    }
                    if matches!(step.kind, InE | BothE) {
                        out.extend(g.in_edges_of(&n.id).filter(|e| f.eval(e.as_ref())).cloned());
                    }
                }
                Output::Edges(out)
            }
            (OutV | InV | BothV, Output::Edges(es)) => {
                let f = optional_filter(p).map_err(|e| with_pos(e, step))?;
                let g = self.view();
                let mut out = Vec::new();
                for e in &es {
                    // Skydive's naming: OutV is the child, InV the parent.
                    if matches!(step.kind, InV | BothV) {
                        out.extend(
                            g.nodes_with_id(&e.parent)
                                .filter(|n| f.eval(n.as_ref()))
                                .cloned(),
                        );
                    }
                    if matches!(step.kind, OutV | BothV) {
                        out.extend(
                            g.nodes_with_id(&e.child)
                                .filter(|n| f.eval(n.as_ref()))
                                .cloned(),
                        );
                    }
                }
                Output::Nodes(out)
            }
            (ShortestPathTo, Output::Nodes(ns)) => {
                let target = metadata_filter(&p[0]).map_err(|e| with_pos(e, step))?;
                let edge_filter = match p.get(1) {
                    Some(ef) => metadata_filter(ef).map_err(|e| with_pos(e, step))?,
                    None => Filter::True,
                };
                Output::Paths(self.shortest_paths(&ns, &target, &edge_filter))
            }
            (SubGraph, input) => {
                let f = optional_filter(p).map_err(|e| with_pos(e, step))?;
                let g = self.subgraph(input, &f, step)?;
                self.graph = GraphRef::Owned(Arc::new(g));
                Output::Graph(self.graph.clone())
            }
            (Descendants | Ascendants | Neighbors, Output::Nodes(ns)) => {
                Output::Nodes(self.walk(step, &ns)?)
            }
            (NextHop, Output::Nodes(ns)) => {
                let ip = p[0].as_str().unwrap_or_default();
                let ip: std::net::IpAddr = ip
                    .parse()
                    .map_err(|_| Error::at(step.pos, format!("Invalid IP address {ip:?}")))?;
                let mut out = BTreeMap::new();
                for n in &ns {
                    if let Some(nh) = crate::nexthop::next_hop(n, ip) {
                        out.insert(n.id.to_string(), nh);
                    }
                }
                Output::NextHops(out)
            }
            (_, input) => return Err(invalid(step, &input)),
        };
        Ok((out, 0))
    }

    /// Steps that reshape a result: count, range, sort, labels.
    fn reshape(&mut self, step: &Step, input: Output<'a>) -> Result<Output<'a>> {
        use StepKind::*;
        let p = &step.params;
        let out = match (step.kind, input) {
            (Count, input) => Output::Int(count(&input).ok_or_else(|| invalid(step, &input))?),
            (Range | Limit, input) => {
                let b = range_bounds(step);
                match input {
                    Output::Nodes(v) => Output::Nodes(apply_range(v, b)),
                    Output::Edges(v) => Output::Edges(apply_range(v, b)),
                    Output::Flows(v) => Output::Flows(apply_range(v, b)),
                    Output::Values(v) => Output::Values(apply_range(v, b)),
                    Output::Paths(v) => Output::Paths(apply_range(v, b)),
                    other => return Err(invalid(step, &other)),
                }
            }
            (Sort, Output::Nodes(ns)) => {
                let (desc, key) = sort_spec(p, "@CreatedAt");
                let items: Vec<NodeItem> = ns.into_iter().map(NodeItem).collect();
                Output::Nodes(
                    sort_by_key(items, key, desc)
                        .into_iter()
                        .map(|n| n.0)
                        .collect(),
                )
            }
            (Sort, Output::Flows(fs)) => {
                let (desc, key) = sort_spec(p, "Last");
                Output::Flows(sort_by_key(fs, key, desc))
            }
            (As, Output::Nodes(ns)) => {
                self.labels
                    .insert(p[0].as_str().unwrap_or_default().to_string(), ns.clone());
                Output::Nodes(ns)
            }
            (Select, _) => {
                let mut out = Vec::new();
                for name in string_params(p) {
                    match self.labels.get(name) {
                        Some(ns) => out.extend(ns.iter().cloned()),
                        None => {
                            return Err(Error::at(
                                step.pos,
                                format!("Label '{name}' is not defined"),
                            ));
                        }
                    }
                }
                Output::Nodes(dedup_by_id(out))
            }
            (_, input) => return Err(invalid(step, &input)),
        };
        Ok(out)
    }

    /// `Dedup`: by ID, by keys, flows by `TrackingID`, values by their JSON.
    fn dedup(&self, step: &Step, input: Output<'a>) -> Result<Output<'a>> {
        use StepKind::*;
        let p = &step.params;
        let out = match (step.kind, input) {
            (Dedup, Output::Nodes(ns)) if p.is_empty() => Output::Nodes(dedup_by_id(ns)),
            (Dedup, Output::Nodes(ns)) => {
                let keys = string_params(p);
                let items: Vec<NodeItem> = ns.into_iter().map(NodeItem).collect();
                Output::Nodes(
                    dedup_by_keys(items, &keys)
                        .into_iter()
                        .map(|n| n.0)
                        .collect(),
                )
            }
            (Dedup, Output::Edges(es)) if p.is_empty() => Output::Edges(dedup_by_id(es)),
            (Dedup, Output::Edges(es)) => {
                let keys = string_params(p);
                let items: Vec<EdgeItem> = es.into_iter().map(EdgeItem).collect();
                Output::Edges(
                    dedup_by_keys(items, &keys)
                        .into_iter()
                        .map(|n| n.0)
                        .collect(),
                )
            }
            (Dedup, Output::Flows(fs)) => {
                let keys = if p.is_empty() {
                    vec!["TrackingID"]
                } else {
                    string_params(p)
                };
                Output::Flows(dedup_by_keys(fs, &keys))
            }
            (Dedup, Output::Values(vs)) => {
                let mut seen = HashSet::new();
                Output::Values(
                    vs.into_iter()
                        .filter(|v| seen.insert(v.to_json().to_string()))
                        .collect(),
                )
            }
            (_, input) => return Err(invalid(step, &input)),
        };
        Ok(out)
    }

    /// `Values`, `ValueMap`, `Keys`: what elements, flows and metrics hold.
    fn project(&self, step: &Step, input: Output<'a>) -> Result<Output<'a>> {
        use StepKind::*;
        let p = &step.params;
        let out = match (step.kind, input) {
            (Values, Output::Nodes(ns)) => {
                let items: Vec<NodeItem> = ns.into_iter().map(NodeItem).collect();
                Output::Values(values_of(&items, p[0].as_str().unwrap_or_default()))
            }
            (Values, Output::Edges(es)) => {
                let items: Vec<EdgeItem> = es.into_iter().map(EdgeItem).collect();
                Output::Values(values_of(&items, p[0].as_str().unwrap_or_default()))
            }
            (Values, Output::Flows(fs)) => {
                let key = p[0].as_str().unwrap_or_default();
                let items: Vec<FlowValue> = fs.iter().map(|f| FlowValue(f.to_value())).collect();
                Output::Values(values_of(&items, key))
            }
            (ValueMap, Output::Nodes(ns)) => {
                let keys = string_params(p);
                Output::Values(
                    ns.iter()
                        .map(|n| value_map(&NodeItem(n.clone()), &keys))
                        .collect(),
                )
            }
            (ValueMap, Output::Edges(es)) => {
                let keys = string_params(p);
                Output::Values(
                    es.iter()
                        .map(|e| value_map(&EdgeItem(e.clone()), &keys))
                        .collect(),
                )
            }
            (Keys, Output::Nodes(ns)) => {
                let mut keys = Vec::new();
                ns.iter().for_each(|n| element_keys(n, &mut keys));
                Output::Values(sorted_unique(keys))
            }
            (Keys, Output::Edges(es)) => {
                let mut keys = Vec::new();
                for e in &es {
                    element_keys(e, &mut keys);
                    keys.push("Parent".into());
                    keys.push("Child".into());
                }
                Output::Values(sorted_unique(keys))
            }
            (Keys, Output::Flows(fs)) => {
                let mut keys = Vec::new();
                for f in &fs {
                    if let Value::Map(m) = f.to_value() {
                        m.flattened_keys(&mut keys);
                    }
                }
                Output::Values(sorted_unique(keys))
            }
            (Keys, Output::Metrics(m)) => Output::Values(metrics::field_names(&m)),

            (_, input) => return Err(invalid(step, &input)),
        };
        Ok(out)
    }

    /// `Sum` of a key over nodes or flows, or of metrics.
    fn sum(&self, step: &Step, input: Output<'a>) -> Result<Output<'a>> {
        use StepKind::*;
        let p = &step.params;
        let out = match (step.kind, input) {
            (Sum, Output::Nodes(ns)) => {
                let key = p.first().and_then(Param::as_str).ok_or_else(|| {
                    Error::at(step.pos, "Sum requires a key parameter on nodes".into())
                })?;
                let mut total: i64 = 0;
                for n in &ns {
                    n.visit_field(key, &mut |f| {
                        if let Some(i) = f.to_value().cast_i64() {
                            total = total.wrapping_add(i);
                        }
                        false
                    });
                }
                Output::Int(total)
            }
            (Sum, Output::Flows(fs)) => {
                let key = p.first().and_then(Param::as_str).unwrap_or_default();
                if !(key.starts_with("Metric.") || key.starts_with("LastUpdateMetric.")) {
                    return Err(Error::at(
                        step.pos,
                        format!(
                            "Sum on flows only accepts Metric.* and LastUpdateMetric.* keys, got: {key:?}"
                        ),
                    ));
                }
                let total: f64 = fs
                    .iter()
                    .filter_map(|f| f.field_value(key).and_then(|v| v.as_f64()))
                    .sum();
                Output::Float(total)
            }
            (Sum, Output::Metrics(m)) => match p.first().and_then(Param::as_str) {
                None => Output::Metric(metrics::merge_all(&m)),
                Some(key) => Output::Int(metrics::sum_field(&m, key)),
            },
            (_, input) => return Err(invalid(step, &input)),
        };
        Ok(out)
    }

    /// Metrics of nodes and flows, their aggregates, and sockets.
    fn measure(&self, step: &Step, input: Output<'a>) -> Result<Output<'a>> {
        use StepKind::*;
        let p = &step.params;
        let out = match (step.kind, input) {
            (Metrics, Output::Nodes(ns)) => {
                let kind = metrics::node_metric_key(p.first().and_then(Param::as_str))
                    .map_err(|e| with_pos(e, step))?;
                Output::Metrics(metrics::node_metrics(&ns, kind, self.time))
            }
            (Metrics, Output::Flows(fs)) => Output::Metrics(self.flow_metrics(&fs)?),
            (Aggregates, Output::Metrics(m)) => {
                let secs = p.first().and_then(Param::as_int).unwrap_or(30);
                Output::Aggregated(
                    metrics::aggregates(&m, secs, self.time).map_err(|e| with_pos(e, step))?,
                )
            }
            (Sockets, Output::Nodes(ns)) => {
                let f = optional_filter(p).map_err(|e| with_pos(e, step))?;
                let mut out = BTreeMap::new();
                for n in &ns {
                    let socks: Vec<Value> = match n.metadata.get("Sockets") {
                        Some(Value::Array(items)) => items
                            .iter()
                            .filter(|s| f.eval(&ValueGetter(s)))
                            .cloned()
                            .collect(),
                        _ => continue,
                    };
                    if !socks.is_empty() {
                        out.insert(n.id.to_string(), socks);
                    }
                }
                Output::Sockets(out)
            }
            (Sockets, Output::Flows(fs)) => {
                let f = optional_filter(p).map_err(|e| with_pos(e, step))?;
                Output::Sockets(self.flow_sockets(&fs, &f))
            }
            (_, input) => return Err(invalid(step, &input)),
        };
        Ok(out)
    }

    /// Flows of nodes, and the steps on flows: their nodes, raw packets, groups.
    fn flow_step(&self, step: &Step, input: Output<'a>) -> Result<Output<'a>> {
        use StepKind::*;
        let p = &step.params;
        let out = match (step.kind, input) {
            (Flows, input @ (Output::Graph(_) | Output::Nodes(_) | Output::Paths(_))) => {
                Output::Flows(self.flows(step, input)?)
            }
            (In | Out | Both | Nodes | Hops | CaptureNode, Output::Flows(fs)) => {
                let f = optional_filter(p).map_err(|e| with_pos(e, step))?;
                Output::Nodes(self.flow_nodes(step.kind, &fs, &f))
            }
            (RawPackets, Output::Flows(fs)) => Output::RawPackets(self.raw_packets(&fs)?),
            (Bpf, Output::RawPackets(m)) => {
                let filter = p[0].as_str().unwrap_or_default();
                let compiler = self.env.bpf.ok_or_else(|| {
                    Error::at(step.pos, "BPF filtering is not available here".into())
                })?;
                let matcher = compiler.compile(filter).map_err(|e| {
                    Error::at(step.pos, format!("Invalid BPF filter {filter:?}: {e}"))
                })?;
                Output::RawPackets(
                    m.into_iter()
                        .map(|(k, pkts)| {
                            (
                                k,
                                pkts.into_iter()
                                    .filter(|pk| matcher(pk))
                                    .collect::<Vec<_>>(),
                            )
                        })
                        .filter(|(_, pkts)| !pkts.is_empty())
                        .collect(),
                )
            }
            (Group, Output::Flows(fs)) => {
                let key = p.first().and_then(Param::as_str).unwrap_or("TrackingID");
                let mut groups: BTreeMap<String, Vec<Flow>> = BTreeMap::new();
                for f in fs {
                    let k = match f.field_value(key) {
                        Some(Value::String(s)) => s.to_string(),
                        Some(v) => v.to_json().to_string(),
                        None => continue,
                    };
                    groups.entry(k).or_default().push(f);
                }
                Output::Groups(groups)
            }
            (MoreThan, Output::Groups(g)) => {
                let n = p[0].as_int().unwrap_or(1).max(0) as usize;
                Output::Groups(g.into_iter().filter(|(_, v)| v.len() > n).collect())
            }
            (_, input) => return Err(invalid(step, &input)),
        };
        Ok(out)
    }

    /// `V(...)`, folding the `Has` steps that follow and answering `V(...).Count()` from an
    /// index when it can.
    fn vertices(&self, step: &Step, rest: &[Step]) -> Result<(Output<'a>, usize)> {
        let p = &step.params;
        if let [Param::Str(id)] = p.as_slice() {
            let nodes: Vec<_> = self.view().nodes_with_id(id).cloned().collect();
            if nodes.is_empty() {
                return Err(Error::msg(format!("Node '{id}' does not exist")));
            }
            return Ok((Output::Nodes(nodes), 0));
        }
        let mut filters = Vec::new();
        if !p.is_empty() {
            filters.push(has_filter(p, KeyMode::Element).map_err(|e| with_pos(e, step))?);
        }
        let mut consumed = 0;
        while let Some(next) = rest.get(consumed).filter(|s| is_has(s.kind)) {
            filters.push(element_filter(next)?);
            consumed += 1;
        }
        let filter = Filter::and(filters);
        if rest
            .get(consumed)
            .is_some_and(|s| s.kind == StepKind::Count)
            && let Some(n) = self.count_from_index(&filter)
        {
            return Ok((Output::Int(n as i64), consumed + 1));
        }
        // A Range or Limit right after the selection stops the scan once it has enough.
        if let Some(next) = rest
            .get(consumed)
            .filter(|s| matches!(s.kind, StepKind::Range | StepKind::Limit))
        {
            let (from, to) = range_bounds(next);
            let nodes = self.select_nodes_upto(&filter, to);
            return Ok((Output::Nodes(apply_range(nodes, (from, to))), consumed + 1));
        }
        Ok((Output::Nodes(self.select_nodes(&filter)), consumed))
    }

    fn count_from_index(&self, filter: &Filter) -> Option<usize> {
        if let Filter::TermString { key, value } = filter {
            return self.view().count_indexed(key, value);
        }
        None
    }

    /// Nodes matching `filter`, from an index when the filter pins an indexed key.
    fn select_nodes(&self, filter: &Filter) -> Vec<Arc<Node>> {
        self.select_nodes_upto(filter, usize::MAX)
    }

    /// The first `max` nodes [`Evaluator::select_nodes`] would return.
    fn select_nodes_upto(&self, filter: &Filter, max: usize) -> Vec<Arc<Node>> {
        let g = self.view();
        let matching = |n: &&Arc<Node>| filter.eval(n.as_ref());
        if let Some(ids) = filter.required_strings("@ID") {
            let mut out: Vec<Arc<Node>> = Vec::new();
            for id in ids {
                out.extend(g.nodes_with_id(id).filter(matching).cloned());
            }
            let mut out = dedup_revisions(out);
            out.truncate(max);
            return out;
        }
        for key in INDEX_PREFERENCE {
            let Some(values) = filter.required_strings(key) else {
                continue;
            };
            if let [value] = values.as_slice() {
                match g.nodes_indexed(key, value) {
                    Some(it) => return it.filter(matching).take(max).cloned().collect(),
                    None => break,
                }
            }
            let mut candidates: Vec<Arc<Node>> = Vec::new();
            for v in &values {
                match g.nodes_indexed(key, v) {
                    Some(it) => candidates.extend(it.filter(matching).cloned()),
                    None => return self.scan(filter, max),
                }
            }
            let mut candidates = dedup_by_id(candidates);
            candidates.sort_by(|a, b| a.id.cmp(&b.id));
            candidates.truncate(max);
            return candidates;
        }
        self.scan(filter, max)
    }

    fn scan(&self, filter: &Filter, max: usize) -> Vec<Arc<Node>> {
        self.view()
            .all_nodes()
            .filter(|n| filter.eval(n.as_ref()))
            .take(max)
            .cloned()
            .collect()
    }

    /// `Out`, `In` or `Both`, and the traversal steps right after it: hop by hop over the
    /// view's nodes without taking a reference to each node reached (only the last hop's nodes
    /// are kept, or counted when `Count` follows). Returns how many following steps it took.
    fn hops(&self, step: &Step, rest: &[Step], nodes: &[Arc<Node>]) -> Result<(Output<'a>, usize)> {
        let traversal = |s: &Step| matches!(s.kind, StepKind::Out | StepKind::In | StepKind::Both);
        let run: Vec<&Step> = std::iter::once(step)
            .chain(rest.iter().take_while(|s| traversal(s)))
            .collect();
        let filters = run
            .iter()
            .map(|s| optional_filter(&s.params).map_err(|e| with_pos(e, s)))
            .collect::<Result<Vec<Filter>>>()?;
        let g = self.view();
        // In the live graph, from slot to slot: a node reached is read only to filter it.
        let frontier: Vec<&Arc<Node>> = match nodes.first().and_then(|n| g.node_slot(n)) {
            Some(_) => slot_hops(g, nodes, &run, &filters, self.limits)?,
            None => {
                let mut frontier: Vec<&Arc<Node>> = nodes.iter().collect();
                for (s, f) in run.iter().zip(&filters) {
                    frontier = neighbours(g, &frontier, s.kind, f, self.limits)?;
                }
                frontier
            }
        };
        let consumed = run.len() - 1;
        if rest
            .get(consumed)
            .is_some_and(|s| s.kind == StepKind::Count)
        {
            return Ok((Output::Int(frontier.len() as i64), consumed + 1));
        }
        Ok((
            Output::Nodes(frontier.into_iter().cloned().collect()),
            consumed,
        ))
    }

    fn flow_filter(&self, step: &Step) -> Result<Filter> {
        let p = &step.params;
        match step.kind {
            StepKind::Has | StepKind::HasEither if p.len() < 2 => Err(Error::at(
                step.pos,
                "At least two parameters must be provided".into(),
            )),
            StepKind::Has => has_filter(p, KeyMode::Flow).map_err(|e| with_pos(e, step)),
            StepKind::HasEither => {
                has_either_filter(p, KeyMode::Flow).map_err(|e| with_pos(e, step))
            }
            _ => element_filter(step),
        }
    }

    /// Breadth-first search from the first node matching `target`, over edges in both
    /// directions that match `edge_filter`; one path per input node that reaches it. Nodes
    /// are told apart by their slot where the view has slots (the live graph), else by ID.
    fn shortest_paths(
        &self,
        nodes: &[Arc<Node>],
        target: &Filter,
        edge_filter: &Filter,
    ) -> Vec<Vec<Arc<Node>>> {
        let g = self.view();
        let Some(target) = self.select_nodes(target).into_iter().next() else {
            return Vec::new();
        };
        let Some(target) = g.nodes_with_id(&target.id).next() else {
            return Vec::new();
        };
        if g.node_slot(target).is_some() {
            breadth_first(&SlotWalk(g), target, nodes, edge_filter)
        } else {
            breadth_first(&IdWalk(g), target, nodes, edge_filter)
        }
    }

    fn subgraph(
        &self,
        input: Output<'a>,
        edge_filter: &Filter,
        step: &Step,
    ) -> Result<RevisionGraph> {
        let g = self.view();
        let (nodes, edges) = match input {
            Output::Nodes(ns) => {
                let nodes = dedup_revisions(ns);
                let edges = self.edges_among(&nodes, edge_filter);
                (nodes, edges)
            }
            Output::Paths(paths) => {
                let nodes = dedup_revisions(paths.into_iter().flatten().collect());
                let edges = self.edges_among(&nodes, edge_filter);
                (nodes, edges)
            }
            Output::Edges(es) => {
                let edges = dedup_revisions(
                    es.into_iter()
                        .filter(|e| edge_filter.eval(e.as_ref()))
                        .collect(),
                );
                let mut nodes = Vec::new();
                for e in &edges {
                    nodes.extend(g.nodes_with_id(&e.parent).cloned());
                    nodes.extend(g.nodes_with_id(&e.child).cloned());
                }
                (dedup_revisions(nodes), edges)
            }
            other => return Err(invalid(step, &other)),
        };
        Ok(RevisionGraph::new(nodes, edges))
    }

    fn edges_among(&self, nodes: &[Arc<Node>], f: &Filter) -> Vec<Arc<Edge>> {
        let g = self.view();
        let ids: HashSet<&str> = nodes.iter().map(|n| n.id.as_str()).collect();
        let mut edges = Vec::new();
        let mut done = HashSet::new();
        for n in nodes {
            if !done.insert(n.id.as_str()) {
                continue;
            }
            edges.extend(
                g.out_edges_of(&n.id)
                    .filter(|e| ids.contains(e.child.as_str()) && f.eval(e.as_ref()))
                    .cloned(),
            );
        }
        dedup_revisions(edges)
    }

    /// `Descendants`, `Ascendants`, `Neighbors`: breadth-first up to a depth, over edges
    /// matching any of the given pairs (default `RelationType: ownership`), inputs included.
    fn walk(&self, step: &Step, nodes: &[Arc<Node>]) -> Result<Vec<Arc<Node>>> {
        let mut params = step.params.as_slice();
        let mut depth = 1;
        if params.len() % 2 == 1 {
            let last = &params[params.len() - 1];
            depth = last.as_int().ok_or_else(|| {
                Error::at(
                    step.pos,
                    format!("{} depth must be an integer", step.kind.name()),
                )
            })?;
            params = &params[..params.len() - 1];
        }
        let f = if params.is_empty() {
            Filter::term_str("RelationType", "ownership")
        } else {
            has_either_filter(params, KeyMode::Element).map_err(|e| with_pos(e, step))?
        };
        let g = self.view();
        let mut out: Vec<Arc<Node>> = Vec::new();
        let mut seen: HashSet<skydive_graph::Id> = HashSet::new();
        let mut frontier: Vec<Arc<Node>> = Vec::new();
        for n in nodes {
            if seen.insert(n.id.clone()) {
                out.push(n.clone());
                frontier.push(n.clone());
            }
        }
        for _ in 0..depth.max(0) {
            let mut next = Vec::new();
            for n in &frontier {
                let mut ids = Vec::new();
                if matches!(step.kind, StepKind::Descendants | StepKind::Neighbors) {
                    ids.extend(
                        g.out_edges_of(&n.id)
                            .filter(|e| f.eval(e.as_ref()))
                            .map(|e| e.child.clone()),
                    );
                }
                if matches!(step.kind, StepKind::Ascendants | StepKind::Neighbors) {
                    ids.extend(
                        g.in_edges_of(&n.id)
                            .filter(|e| f.eval(e.as_ref()))
                            .map(|e| e.parent.clone()),
                    );
                }
                for id in ids {
                    if seen.insert(id.clone())
                        && let Some(node) = g.nodes_with_id(&id).next()
                    {
                        out.push(node.clone());
                        next.push(node.clone());
                    }
                }
            }
            if next.is_empty() {
                break;
            }
            frontier = next;
        }
        Ok(out)
    }

    fn flow_source(&self) -> Result<Option<&'a dyn FlowSource>> {
        match (self.env.flows, self.time) {
            (Some(s), _) => Ok(Some(s)),
            (None, Some(_)) => Err(Error::msg("No storage backend has been configured")),
            (None, None) => Ok(None),
        }
    }

    fn flows(&self, step: &Step, input: Output<'a>) -> Result<Vec<Flow>> {
        let p = &step.params;
        if !p.is_empty() && p.len() < 2 {
            return Err(Error::at(
                step.pos,
                "At least two parameters must be provided".into(),
            ));
        }
        let mut filters = Vec::new();
        if !p.is_empty() {
            filters.push(has_filter(p, KeyMode::Flow).map_err(|e| with_pos(e, step))?);
        }
        let nodes = match input {
            Output::Graph(_) => None,
            Output::Nodes(ns) => Some(ns),
            Output::Paths(paths) => Some(paths.into_iter().flatten().collect()),
            _ => None,
        };
        let scope = match nodes {
            None => None,
            Some(ns) => {
                let mut scope: Vec<(String, String)> = ns
                    .iter()
                    .filter(|n| is_capturable(n.type_str()))
                    .filter_map(|n| Some((n.host.to_string(), n.str_at("TID")?.to_string())))
                    .collect();
                scope.sort();
                scope.dedup();
                if scope.is_empty() {
                    return Ok(Vec::new());
                }
                filters.push(Filter::or(
                    scope
                        .iter()
                        .map(|(_, tid)| Filter::term_str("NodeTID", tid))
                        .collect(),
                ));
                Some(scope)
            }
        };
        let Some(source) = self.flow_source()? else {
            return Ok(Vec::new());
        };
        let q = FlowQuery {
            filter: Filter::and(filters),
            time: self.time,
            nodes: scope,
        };
        source.flows(&q).map_err(|e| Error::msg(e.to_string()))
    }

    fn uuid_query(&self, fs: &[Flow]) -> FlowQuery {
        FlowQuery {
            filter: Filter::or(
                fs.iter()
                    .map(|f| Filter::term_str("UUID", &f.uuid))
                    .collect(),
            ),
            time: self.time,
            nodes: None,
        }
    }

    fn flow_metrics(&self, fs: &[Flow]) -> Result<BTreeMap<String, Vec<Value>>> {
        let to_value = |m: &FlowMetric| {
            serde_json::to_value(m)
                .map(|j| Value::from_json(&j))
                .unwrap_or_default()
        };
        if self.time.is_some() && !fs.is_empty() {
            let source = self
                .flow_source()?
                .ok_or_else(|| Error::msg("No storage backend has been configured"))?;
            let stored = source
                .metrics(&self.uuid_query(fs))
                .map_err(|e| Error::msg(e.to_string()))?;
            return Ok(stored
                .into_iter()
                .filter(|(_, v)| !v.is_empty())
                .map(|(k, v)| (k, v.iter().map(to_value).collect()))
                .collect());
        }
        Ok(fs
            .iter()
            .filter_map(|f| {
                Some((
                    f.uuid.to_string(),
                    vec![to_value(f.last_update_metric.as_ref()?)],
                ))
            })
            .collect())
    }

    fn raw_packets(&self, fs: &[Flow]) -> Result<BTreeMap<String, Vec<RawPacket>>> {
        if self.time.is_some() && !fs.is_empty() {
            let source = self
                .flow_source()?
                .ok_or_else(|| Error::msg("No storage backend has been configured"))?;
            return source
                .raw_packets(&self.uuid_query(fs))
                .map_err(|e| Error::msg(e.to_string()));
        }
        Ok(fs
            .iter()
            .filter(|f| !f.last_raw_packets.is_empty())
            .map(|f| (f.uuid.to_string(), f.last_raw_packets.clone()))
            .collect())
    }

    fn nodes_by(&self, key: &str, value: &str) -> Vec<Arc<Node>> {
        if value.is_empty() {
            return Vec::new();
        }
        let g = self.view();
        match g.nodes_indexed(key, value) {
            Some(it) => it.cloned().collect(),
            None => g
                .all_nodes()
                .filter(|n| Filter::term_str(key, value).eval(n.as_ref()))
                .cloned()
                .collect(),
        }
    }

    fn nodes_by_mac(&self, mac: &str) -> Vec<Arc<Node>> {
        let mut out = self.nodes_by("MAC", mac);
        out.extend(self.nodes_by("PeerIntfMAC", mac));
        dedup_by_id(out)
    }

    fn flow_nodes(&self, kind: StepKind, fs: &[Flow], f: &Filter) -> Vec<Arc<Node>> {
        let mut out = Vec::new();
        for flow in fs {
            let link_a = flow.link.as_ref().map(|l| l.a.as_str()).unwrap_or("");
            let link_b = flow.link.as_ref().map(|l| l.b.as_str()).unwrap_or("");
            match kind {
                StepKind::In => out.extend(self.nodes_by_mac(link_a)),
                StepKind::Out => out.extend(self.nodes_by_mac(link_b)),
                StepKind::Both => {
                    out.extend(self.nodes_by_mac(link_a));
                    out.extend(self.nodes_by_mac(link_b));
                }
                StepKind::Nodes => {
                    out.extend(self.nodes_by("TID", &flow.node_tid));
                    out.extend(self.nodes_by("MAC", link_a));
                    out.extend(self.nodes_by("MAC", link_b));
                }
                _ => out.extend(self.nodes_by("TID", &flow.node_tid)),
            }
        }
        dedup_by_id(out)
            .into_iter()
            .filter(|n| f.eval(n.as_ref()))
            .collect()
    }

    /// Sockets (from `Sockets` metadata anywhere in the graph) whose 5-tuple is the flow's.
    fn flow_sockets(&self, fs: &[Flow], f: &Filter) -> BTreeMap<String, Vec<Value>> {
        let mut sockets: Vec<Value> = Vec::new();
        for n in self.view().all_nodes() {
            if let Some(Value::Array(items)) = n.metadata.get("Sockets") {
                sockets.extend(items.iter().cloned());
            }
        }
        let mut out = BTreeMap::new();
        for flow in fs {
            let (Some(net), Some(tr)) = (&flow.network, &flow.transport) else {
                continue;
            };
            let matching: Vec<Value> = sockets
                .iter()
                .filter(|s| socket_matches(s, &net.a, tr.a, &net.b, tr.b, tr.protocol.name()))
                .filter(|s| f.eval(&ValueGetter(s)))
                .cloned()
                .collect();
            if !matching.is_empty() {
                out.insert(flow.uuid.to_string(), matching);
            }
        }
        out
    }
}

fn socket_matches(
    s: &Value,
    a_ip: &str,
    a_port: i64,
    b_ip: &str,
    b_port: i64,
    proto: &str,
) -> bool {
    let Value::Map(m) = s else { return false };
    let get_s = |k: &str| m.get(k).and_then(Value::as_str).unwrap_or("");
    let get_i = |k: &str| m.get(k).and_then(Value::cast_i64).unwrap_or(-1);
    if get_s("Protocol") != proto {
        return false;
    }
    let (la, lp, ra, rp) = (
        get_s("LocalAddress"),
        get_i("LocalPort"),
        get_s("RemoteAddress"),
        get_i("RemotePort"),
    );
    (la == a_ip && lp == a_port && ra == b_ip && rp == b_port)
        || (la == b_ip && lp == b_port && ra == a_ip && rp == a_port)
}

/// Removes duplicate revisions (same ID and revision), keeping the first.
fn dedup_revisions<T: std::ops::Deref<Target = Element>>(items: Vec<Arc<T>>) -> Vec<Arc<T>> {
    let mut seen = HashSet::with_capacity(items.len());
    items
        .into_iter()
        .filter(|i| seen.insert((i.id.clone(), i.revision)))
        .collect()
}

fn count(o: &Output<'_>) -> Option<i64> {
    Some(match o {
        Output::Graph(g) => (g.view().node_count() + g.view().edge_count()) as i64,
        Output::Nodes(v) => v.len() as i64,
        Output::Edges(v) => v.len() as i64,
        Output::Paths(v) => v.len() as i64,
        Output::Values(v) => v.len() as i64,
        Output::Flows(v) => v.len() as i64,
        Output::Metrics(m) => m.len() as i64,
        Output::Aggregated(v) => v.len() as i64,
        Output::RawPackets(m) => m.values().map(Vec::len).sum::<usize>() as i64,
        Output::Sockets(m) => m.len() as i64,
        Output::Groups(m) => m.len() as i64,
        Output::NextHops(m) => m.len() as i64,
        Output::Int(_) | Output::Float(_) | Output::Metric(_) => return None,
    })
}

fn value_map<G: Getter>(g: &G, keys: &[&str]) -> Value {
    let mut m = skydive_graph::Map::new();
    for k in keys {
        if let Some(v) = g.field_value(k) {
            m.insert(*k, v);
        }
    }
    Value::Map(m)
}

struct NodeItem(Arc<Node>);
impl Getter for NodeItem {
    fn visit_field(&self, key: &str, f: &mut dyn FnMut(skydive_graph::Field<'_>) -> bool) -> bool {
        self.0.visit_field(key, f)
    }
}

struct EdgeItem(Arc<Edge>);
impl Getter for EdgeItem {
    fn visit_field(&self, key: &str, f: &mut dyn FnMut(skydive_graph::Field<'_>) -> bool) -> bool {
        self.0.visit_field(key, f)
    }
}

/// A flow seen as its JSON document, so that `Values` can return whole sub-objects.
struct FlowValue(Value);
impl Getter for FlowValue {
    fn visit_field(&self, key: &str, f: &mut dyn FnMut(skydive_graph::Field<'_>) -> bool) -> bool {
        ValueGetter(&self.0).visit_field(key, f)
    }
}

/// How a breadth-first search tells the nodes of a view apart and steps between them.
trait Walk<'a> {
    type Key: Copy + Eq + std::hash::Hash;
    /// The key of the view's node with this ID.
    fn find(&self, id: &str) -> Option<Self::Key>;
    fn key(&self, n: &'a Arc<Node>) -> Option<Self::Key>;
    fn node(&self, k: Self::Key) -> Option<&'a Arc<Node>>;
    /// Calls `f` with the edges where `k` is the parent, then those where it is the child,
    /// each with the key of its other end.
    fn hops(&self, k: Self::Key, f: &mut dyn FnMut(&'a Arc<Edge>, Self::Key));
    fn size(&self) -> usize;
}

/// Nodes by slot: the live graph, stepping from slot to slot.
struct SlotWalk<'a>(&'a dyn GraphView);

impl<'a> Walk<'a> for SlotWalk<'a> {
    type Key = u32;
    fn find(&self, id: &str) -> Option<u32> {
        self.0
            .nodes_with_id(id)
            .next()
            .and_then(|n| self.0.node_slot(n))
    }
    fn key(&self, n: &'a Arc<Node>) -> Option<u32> {
        self.0.node_slot(n)
    }
    fn node(&self, k: u32) -> Option<&'a Arc<Node>> {
        self.0.node_in_slot(k)
    }
    fn hops(&self, k: u32, f: &mut dyn FnMut(&'a Arc<Edge>, u32)) {
        self.0.each_slot_hop(k, true, true, f);
    }
    fn size(&self) -> usize {
        self.0.node_count()
    }
}

/// Nodes by ID: any view.
struct IdWalk<'a>(&'a dyn GraphView);

impl<'a> Walk<'a> for IdWalk<'a> {
    type Key = &'a str;
    fn find(&self, id: &str) -> Option<&'a str> {
        self.0.nodes_with_id(id).next().map(|n| n.id.as_str())
    }
    fn key(&self, n: &'a Arc<Node>) -> Option<&'a str> {
        Some(n.id.as_str())
    }
    fn node(&self, k: &'a str) -> Option<&'a Arc<Node>> {
        self.0.nodes_with_id(k).next()
    }
    fn hops(&self, k: &'a str, f: &mut dyn FnMut(&'a Arc<Edge>, &'a str)) {
        self.0.each_out_edge(k, &mut |e| f(e, e.child.as_str()));
        self.0.each_in_edge(k, &mut |e| f(e, e.parent.as_str()));
    }
    fn size(&self) -> usize {
        self.0.node_count()
    }
}

/// The paths from each of `nodes` to `target` found by a breadth-first search from `target`
/// over the edges matching `edge_filter`, in both directions.
fn breadth_first<'a, W: Walk<'a>>(
    w: &W,
    target: &'a Arc<Node>,
    nodes: &[Arc<Node>],
    edge_filter: &Filter,
) -> Vec<Vec<Arc<Node>>> {
    let Some(target_key) = w.key(target) else {
        return Vec::new();
    };
    // Every node reached, with the node it was reached from (the target maps to itself).
    let mut prev: FastMap<W::Key, W::Key> =
        FastMap::with_capacity_and_hasher(w.size(), Default::default());
    prev.insert(target_key, target_key);
    let mut queue = VecDeque::from([target_key]);
    let wanted: FastSet<W::Key> = nodes.iter().filter_map(|n| w.find(&n.id)).collect();
    let mut remaining = wanted.len();
    let mut reached: Vec<W::Key> = Vec::new();
    while let Some(cur) = queue.pop_front() {
        if wanted.contains(&cur) {
            remaining = remaining.saturating_sub(1);
            if remaining == 0 {
                break;
            }
        }
        reached.clear();
        w.hops(cur, &mut |e, k| {
            if edge_filter.eval(e.as_ref()) {
                reached.push(k);
            }
        });
        for &k in &reached {
            if let std::collections::hash_map::Entry::Vacant(v) = prev.entry(k) {
                v.insert(cur);
                queue.push_back(k);
            }
        }
    }
    let mut paths = Vec::new();
    for n in nodes {
        let Some(mut cur) = w.find(&n.id) else {
            continue;
        };
        if !prev.contains_key(&cur) {
            continue;
        }
        let mut path = vec![n.clone()];
        while let Some(&p) = prev.get(&cur).filter(|p| **p != cur) {
            match w.node(p) {
                Some(node) => path.push(node.clone()),
                None => break,
            }
            cur = p;
        }
        paths.push(path);
    }
    paths
}

/// The nodes reached from `nodes` over their out edges (`Out`), in edges (`In`) or both, that
/// match `f`, in order.
/// How many nodes of a frontier are walked between two looks at the clock.
const CHECK_EVERY: usize = 1024;

fn neighbours<'v>(
    g: &'v dyn GraphView,
    nodes: &[&'v Arc<Node>],
    kind: StepKind,
    f: &Filter,
    limits: &Limits,
) -> Result<Vec<&'v Arc<Node>>> {
    let mut out = Vec::with_capacity(nodes.len());
    let max = limits.max_elements;
    for (i, n) in nodes.iter().enumerate() {
        if i % CHECK_EVERY == 0 {
            limits.check_time()?;
        }
        let mut keep = |m: &'v Arc<Node>| {
            if out.len() <= max && f.eval(m.as_ref()) {
                out.push(m);
            }
        };
        if matches!(kind, StepKind::Out | StepKind::Both) {
            g.each_out_neighbour(n, &mut |_, m| keep(m));
        }
        if matches!(kind, StepKind::In | StepKind::Both) {
            g.each_in_neighbour(n, &mut |_, m| keep(m));
        }
        if out.len() > max {
            return Err(limits.too_many("nodes"));
        }
    }
    Ok(out)
}

/// [`neighbours`] for a run of steps over a view with slots (the live graph).
fn slot_hops<'v>(
    g: &'v dyn GraphView,
    nodes: &[Arc<Node>],
    run: &[&Step],
    filters: &[Filter],
    limits: &Limits,
) -> Result<Vec<&'v Arc<Node>>> {
    let max = limits.max_elements;
    let mut frontier: Vec<u32> = nodes
        .iter()
        .filter_map(|n| {
            g.node_slot(n)
                .or_else(|| g.nodes_with_id(&n.id).next().and_then(|m| g.node_slot(m)))
        })
        .collect();
    for (s, f) in run.iter().zip(filters) {
        let (out, inn) = (
            matches!(s.kind, StepKind::Out | StepKind::Both),
            matches!(s.kind, StepKind::In | StepKind::Both),
        );
        let mut next = Vec::with_capacity(frontier.len());
        for (i, &slot) in frontier.iter().enumerate() {
            if i % CHECK_EVERY == 0 {
                limits.check_time()?;
            }
            g.each_slot_hop(slot, out, inn, &mut |_, other| {
                if next.len() <= max
                    && (matches!(f, Filter::True)
                        || g.node_in_slot(other).is_some_and(|n| f.eval(n.as_ref())))
                {
                    next.push(other);
                }
            });
            if next.len() > max {
                return Err(limits.too_many("nodes"));
            }
        }
        frontier = next;
    }
    Ok(frontier
        .into_iter()
        .filter_map(|slot| g.node_in_slot(slot))
        .collect())
}
