//! What a capture writes on its node: its entry in `Captures` (state, counters, socket) and,
//! for sFlow, the interface counters in `SFlow`.

use skydive_api::capture::CaptureSpec;
use skydive_capture::Report;
use skydive_flow::capture::CaptureKind;
use skydive_flow::sflow::IfCounters;
use skydive_graph::{Graph, Map, Node, Value, now_ms};
use skydive_hub::HubHandle;

/// A capture's state on its node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Active,
    Error,
}

/// The entry of `spec` in its node's `Captures`.
pub fn entry(
    spec: &CaptureSpec,
    kind: &CaptureKind,
    socket: &str,
    state: State,
    error: &str,
    counts: &Report,
) -> Value {
    let mut m = Map::new();
    m.insert("ID", spec.uuid.as_str());
    m.insert(
        "State",
        match state {
            State::Active => "active",
            State::Error => "error",
        },
    );
    m.insert("Type", kind.as_str());
    if !spec.name.is_empty() {
        m.insert("Name", spec.name.as_str());
    }
    if !spec.description.is_empty() {
        m.insert("Description", spec.description.as_str());
    }
    if !spec.bpf_filter.is_empty() {
        m.insert("BPFFilter", spec.bpf_filter.as_str());
    }
    if !error.is_empty() {
        m.insert("Error", error);
    }
    if !socket.is_empty() {
        let key = if *kind == CaptureKind::Sflow {
            "SFlowSocket"
        } else {
            "PCAPSocket"
        };
        m.insert(key, socket);
    }
    m.insert("PacketsReceived", Value::Int(counts.received as i64));
    m.insert("PacketsDropped", Value::Int(counts.dropped as i64));
    // The flow table: flows in it, flows evicted because it was full (the `stats` messages of
    // `/ws/subscriber/flow` carry them as FlowCount and FlowDropped).
    m.insert("FlowCount", Value::Int(counts.flows as i64));
    m.insert("FlowDropped", Value::Int(counts.evicted as i64));
    Value::Map(m)
}

/// Replaces (or with `None` removes) the entry of capture `id` in the node's `Captures`.
pub async fn set_entry(hub: &HubHandle, node: String, id: String, entry: Option<Value>) {
    update_node(hub, node, move |m| {
        let mut list = match m.get("Captures") {
            Some(Value::Array(l)) => l.clone(),
            _ => Vec::new(),
        };
        list.retain(|c| {
            c.as_map().and_then(|c| c.get("ID")).and_then(Value::as_str) != Some(id.as_str())
        });
        if let Some(e) = entry {
            list.push(e);
        }
        if list.is_empty() {
            m.remove("Captures");
        } else {
            m.insert("Captures", Value::Array(list));
        }
    })
    .await;
}

/// Changes a node's metadata, if the node is still there.
pub async fn update_node(hub: &HubHandle, node: String, f: impl FnOnce(&mut Map) + Send + 'static) {
    let _ = hub
        .apply(None, move |g| {
            if g.node(&node).is_none() {
                return Ok(Vec::new());
            }
            Ok(g.update_node_metadata(&node, now_ms(), f)?
                .into_iter()
                .collect())
        })
        .await;
}

/// The `SFlow` metadata of a node (Skydive's SFMetric fields): the counters, and what they
/// grew by since `prev`.
pub fn sflow_metadata(cur: &IfCounters, prev: Option<&IfCounters>, start: i64, last: i64) -> Value {
    let fields = |c: &IfCounters| -> [(&'static str, i64); 13] {
        [
            ("IfInOctets", c.if_in_octets as i64),
            ("IfInUcastPkts", c.if_in_ucast_pkts.into()),
            ("IfInMulticastPkts", c.if_in_multicast_pkts.into()),
            ("IfInBroadcastPkts", c.if_in_broadcast_pkts.into()),
            ("IfInDiscards", c.if_in_discards.into()),
            ("IfInErrors", c.if_in_errors.into()),
            ("IfInUnknownProtos", c.if_in_unknown_protos.into()),
            ("IfOutOctets", c.if_out_octets as i64),
            ("IfOutUcastPkts", c.if_out_ucast_pkts.into()),
            ("IfOutMulticastPkts", c.if_out_multicast_pkts.into()),
            ("IfOutBroadcastPkts", c.if_out_broadcast_pkts.into()),
            ("IfOutDiscards", c.if_out_discards.into()),
            ("IfOutErrors", c.if_out_errors.into()),
        ]
    };
    let mut metric = Map::new();
    let mut delta = Map::new();
    let before = prev.map(fields);
    for (i, (k, v)) in fields(cur).into_iter().enumerate() {
        metric.insert(k, Value::Int(v));
        let was = before.as_ref().map_or(0, |b| b[i].1);
        delta.insert(k, Value::Int(v.saturating_sub(was).max(0)));
    }
    metric.insert("Start", Value::Int(start));
    metric.insert("Last", Value::Int(last));
    delta.insert("Start", Value::Int(start));
    delta.insert("Last", Value::Int(last));
    let mut m = Map::new();
    m.insert("Metric", Value::Map(metric));
    m.insert("LastUpdateMetric", Value::Map(delta));
    Value::Map(m)
}

/// The network namespace file of a node: that of the `netns` node owning it, or none for the
/// host's own namespace.
pub fn namespace_of(g: &Graph, node: &Node) -> Option<String> {
    g.in_edges(&node.id)
        .filter(|e| e.relation_type() == "ownership")
        .filter_map(|e| g.node(&e.parent))
        .find(|p| p.type_str() == "netns")
        .and_then(|p| p.str_at("Path").map(str::to_string))
}

/// Whether an interface is up.
pub fn is_up(node: &Node) -> bool {
    match node.metadata.get("LinkFlags") {
        Some(Value::Array(flags)) => flags.iter().any(|f| f.as_str() == Some("UP")),
        _ => node.str_at("State") == Some("UP"),
    }
}

/// The node's IPv4 addresses, without their prefix lengths.
pub fn ipv4_addresses(node: &Node) -> Vec<String> {
    match node.metadata.get("IPV4") {
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|v| v.as_str())
            .filter_map(|c| c.split('/').next().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    }
}
