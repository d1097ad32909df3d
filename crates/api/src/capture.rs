//! Captures between the analyzer and its agents, in one place: the capture resource both
//! hold ([`CaptureSpec`], what `/api/capture` stores and what `Start` carries), the typed
//! requests the analyzer sends over an agent's link (`OnDemandCapture/Start`,
//! `OnDemandCapture/Stop`, `Flow/TableQuery`) and the agent's replies.
//!
//! On the wire a request is a message of the link (`docs/agent-protocol.md`): its `Obj` is
//! the request, its reply a message of type `StartReply`, `StopReply` or `TableResult`
//! with a status and, on failure, the reason as a JSON string.

use serde::{Deserialize, Serialize};
use skydive_flow::capture::{CaptureKind, optional_kind};
use skydive_graph::Filter;

use crate::message::Incoming;

/// The namespace of capture requests.
pub const NAMESPACE: &str = "OnDemandCapture";
/// The namespace of flow messages: the agents' `FlowUpdates` and the analyzer's `TableQuery`.
pub const FLOW_NAMESPACE: &str = "Flow";
/// The type of a batch of flows sent by an agent.
pub const FLOW_UPDATES: &str = "FlowUpdates";

fn is_zero(i: &i64) -> bool {
    *i == 0
}

/// A capture, with the fields and JSON names of Skydive's.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CaptureSpec {
    #[serde(rename = "UUID")]
    pub uuid: String,
    #[serde(rename = "GremlinQuery", skip_serializing_if = "String::is_empty")]
    pub gremlin_query: String,
    #[serde(rename = "BPFFilter", skip_serializing_if = "String::is_empty")]
    pub bpf_filter: String,
    #[serde(rename = "Name", skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(rename = "Description", skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// The probe; none means the node type's default.
    #[serde(
        rename = "Type",
        with = "optional_kind",
        skip_serializing_if = "Option::is_none"
    )]
    pub kind: Option<CaptureKind>,
    /// Computed on read: nodes of the query running this capture.
    #[serde(rename = "Count")]
    pub count: i64,
    /// The UDP port of an `sflow` capture (6343 when 0).
    #[serde(rename = "Port", skip_serializing_if = "is_zero")]
    pub port: i64,
    /// sFlow sampling 1:N (`ovssflow`).
    #[serde(rename = "SamplingRate")]
    pub sampling_rate: i64,
    /// sFlow counter polling, seconds (`ovssflow`).
    #[serde(rename = "PollingInterval")]
    pub polling_interval: i64,
    #[serde(rename = "RawPacketLimit", skip_serializing_if = "is_zero")]
    pub raw_packet_limit: i64,
    #[serde(rename = "HeaderSize", skip_serializing_if = "is_zero")]
    pub header_size: i64,
    #[serde(rename = "ExtraTCPMetric")]
    pub extra_tcp_metric: bool,
    #[serde(rename = "IPDefrag")]
    pub ip_defrag: bool,
    #[serde(rename = "ReassembleTCP")]
    pub reassemble_tcp: bool,
    #[serde(rename = "LayerKeyMode", skip_serializing_if = "String::is_empty")]
    pub layer_key_mode: String,
    /// Bitmask: VRRP 1, DNS 2, DHCPv4 4.
    #[serde(rename = "ExtraLayers", skip_serializing_if = "is_zero")]
    pub extra_layers: i64,
    #[serde(rename = "Target", skip_serializing_if = "String::is_empty")]
    pub target: String,
    #[serde(rename = "TargetType", skip_serializing_if = "String::is_empty")]
    pub target_type: String,
}

impl CaptureSpec {
    /// The probe a node of `node_type` runs for this capture: the one asked for, or the
    /// node type's default; `None` when the node type cannot be captured.
    pub fn kind_for(&self, node_type: &str) -> Option<CaptureKind> {
        match &self.kind {
            Some(k) => Some(k.clone()),
            None => skydive_flow::capture::allowed_capture_types(node_type)
                .first()
                .cloned(),
        }
    }
}

/// `OnDemandCapture/Start`: run `resource` on node `node_id`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StartRequest {
    #[serde(rename = "NodeID")]
    pub node_id: String,
    #[serde(rename = "Resource")]
    pub resource: CaptureSpec,
}

/// `OnDemandCapture/Stop`: stop capture `capture_id` on node `node_id`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StopRequest {
    #[serde(rename = "NodeID")]
    pub node_id: String,
    #[serde(rename = "CaptureID")]
    pub capture_id: String,
}

impl<'de> Deserialize<'de> for StopRequest {
    /// Skydive's agents also name the capture by its resource (`Resource.UUID`).
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct ResourceId {
            #[serde(rename = "UUID", default)]
            uuid: String,
        }
        #[derive(Deserialize)]
        struct Wire {
            #[serde(rename = "NodeID", default)]
            node_id: String,
            #[serde(rename = "CaptureID", default)]
            capture_id: String,
            #[serde(rename = "Resource")]
            resource: Option<ResourceId>,
        }
        let w = Wire::deserialize(d)?;
        let capture_id = match (w.capture_id.is_empty(), w.resource) {
            (true, Some(r)) => r.uuid,
            _ => w.capture_id,
        };
        Ok(StopRequest {
            node_id: w.node_id,
            capture_id,
        })
    }
}

/// `Flow/TableQuery`: the live flows of the agent's tables that match `filter`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TableQuery {
    #[serde(rename = "Filter", default = "match_all")]
    pub filter: Filter,
}

fn match_all() -> Filter {
    Filter::True
}

/// A request of the analyzer to an agent.
#[derive(Clone, Debug, PartialEq)]
pub enum Request {
    Start(Box<StartRequest>),
    Stop(StopRequest),
    TableQuery(TableQuery),
}

impl Request {
    /// The message's namespace and type.
    pub fn message_type(&self) -> (&'static str, &'static str) {
        match self {
            Request::Start(_) => (NAMESPACE, "Start"),
            Request::Stop(_) => (NAMESPACE, "Stop"),
            Request::TableQuery(_) => (FLOW_NAMESPACE, "TableQuery"),
        }
    }

    /// The type of the reply.
    pub fn reply_type(&self) -> &'static str {
        match self {
            Request::Start(_) => "StartReply",
            Request::Stop(_) => "StopReply",
            Request::TableQuery(_) => "TableResult",
        }
    }

    /// The message's payload.
    pub fn obj(&self) -> serde_json::Value {
        let v = match self {
            Request::Start(r) => serde_json::to_value(r),
            Request::Stop(r) => serde_json::to_value(r),
            Request::TableQuery(r) => serde_json::to_value(r),
        };
        // Plain structs of strings, numbers and a filter: always encodable.
        v.unwrap_or(serde_json::Value::Null)
    }

    /// Sends the request over an agent's link and waits up to `timeout` for the reply: its
    /// payload when the agent did it, its refusal otherwise.
    pub async fn send(
        &self,
        conn: &crate::server::conn::Conn,
        timeout: std::time::Duration,
    ) -> Result<Incoming, CaptureError> {
        let (namespace, kind) = self.message_type();
        let reply = conn
            .request(namespace, kind, &self.obj(), timeout)
            .await
            .map_err(|e| CaptureError::Unreachable(e.to_string()))?;
        read_reply(&reply)?;
        Ok(reply)
    }

    /// The capture request a message carries: `None` when the message is of another kind,
    /// an error naming what is wrong when its payload is not a valid request.
    pub fn decode(msg: &Incoming) -> Option<Result<Request, CaptureError>> {
        let bad = |e: serde_json::Error| CaptureError::BadRequest(e.to_string());
        let req = match (msg.namespace.as_str(), msg.kind.as_str()) {
            (NAMESPACE, "Start") => msg.obj().map(|r| Request::Start(Box::new(r))).map_err(bad),
            (NAMESPACE, "Stop") => msg.obj().map(Request::Stop).map_err(bad),
            (FLOW_NAMESPACE, "TableQuery") => msg.obj().map(Request::TableQuery).map_err(bad),
            _ => return None,
        };
        Some(req)
    }
}

/// Why an agent did not do what the analyzer asked.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CaptureError {
    #[error("invalid request: {0}")]
    BadRequest(String),
    #[error("node {0} not found")]
    NodeNotFound(String),
    #[error("no capture {capture} on node {node}")]
    NotRunning { capture: String, node: String },
    #[error("Capture type {kind} not allowed on this node type: {node_type}")]
    NotAllowed {
        kind: CaptureKind,
        node_type: String,
    },
    #[error("capture type {0} is not available on this agent yet")]
    Unsupported(CaptureKind),
    /// The node lacks what the probe needs (its name, TID, address, OVS UUID).
    #[error("the node {node} has no {what}")]
    NodeLacks { node: String, what: &'static str },
    #[error("Can't start capture on node down {0}")]
    NodeDown(String),
    #[error("no free port for {what} on {address}, {min}-{max}")]
    NoFreePort {
        what: &'static str,
        address: String,
        min: u16,
        max: u16,
    },
    /// The probe could not be opened (the interface, the socket, OVS's configuration).
    #[error("{0}")]
    Source(String),
    #[error("the probe did not start within {0} s")]
    Timeout(u64),
    /// A refusal as an agent answered it, read by the analyzer.
    #[error("{message} (status {status})")]
    Agent { status: i64, message: String },
    /// The agent could not be asked (its link went away, or it did not answer in time).
    #[error("{0}")]
    Unreachable(String),
}

impl CaptureError {
    /// The status of the reply carrying the error.
    pub fn status(&self) -> i64 {
        match self {
            CaptureError::BadRequest(_) => 400,
            CaptureError::NodeNotFound(_) | CaptureError::NotRunning { .. } => 404,
            CaptureError::Agent { status, .. } => *status,
            _ => 500,
        }
    }
}

/// An agent's reply as the link carries it: type, status and payload.
pub type WireReply = (String, i64, serde_json::Value);

/// The reply to `request`: `result`'s payload with 200, or the error's status and message.
pub fn reply(request: &Request, result: Result<serde_json::Value, CaptureError>) -> WireReply {
    match result {
        Ok(obj) => (request.reply_type().to_string(), 200, obj),
        Err(e) => (
            request.reply_type().to_string(),
            e.status(),
            serde_json::Value::String(e.to_string()),
        ),
    }
}

/// Reads an agent's reply: `Ok` with its payload for a 200, its refusal otherwise.
pub fn read_reply(msg: &Incoming) -> Result<&str, CaptureError> {
    if msg.status == 200 {
        return Ok(msg.obj_text());
    }
    let message = msg
        .obj::<String>()
        .unwrap_or_else(|_| msg.obj_text().to_string());
    Err(CaptureError::Agent {
        status: msg.status,
        message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn incoming(namespace: &str, kind: &str, obj: &str) -> Incoming {
        serde_json::from_str(&format!(
            r#"{{"Namespace":"{namespace}","Type":"{kind}","UUID":"u","Status":200,"Obj":{obj}}}"#
        ))
        .unwrap()
    }

    #[test]
    fn a_start_request_round_trips_with_skydives_field_names() {
        let req = Request::Start(Box::new(StartRequest {
            node_id: "n1".into(),
            resource: CaptureSpec {
                uuid: "c1".into(),
                gremlin_query: "G.V()".into(),
                kind: Some(CaptureKind::PcapSocket),
                header_size: 128,
                layer_key_mode: "L2".into(),
                ..Default::default()
            },
        }));
        let obj = req.obj();
        assert_eq!(obj["NodeID"], "n1");
        assert_eq!(obj["Resource"]["Type"], "pcapsocket");
        assert_eq!(obj["Resource"]["HeaderSize"], 128);
        assert!(
            obj["Resource"].get("Port").is_none(),
            "zero fields are left out"
        );
        let back = Request::decode(&incoming(NAMESPACE, "Start", &obj.to_string()));
        assert_eq!(back, Some(Ok(req)));
    }

    #[test]
    fn an_empty_or_unknown_type_is_kept_apart_from_the_known_ones() {
        let c: CaptureSpec = serde_json::from_str(r#"{"UUID":"a","Type":""}"#).unwrap();
        assert_eq!(c.kind, None);
        assert_eq!(c.kind_for("veth"), Some(CaptureKind::Afpacket));
        assert_eq!(c.kind_for("ovsbridge"), Some(CaptureKind::OvsSflow));
        assert_eq!(c.kind_for("host"), None);
        let c: CaptureSpec = serde_json::from_str(r#"{"Type":"afpackt"}"#).unwrap();
        assert_eq!(c.kind, Some(CaptureKind::Other("afpackt".into())));
        assert_eq!(serde_json::to_value(&c).unwrap()["Type"], "afpackt");
        let none = serde_json::to_value(CaptureSpec::default()).unwrap();
        assert!(none.get("Type").is_none());
    }

    #[test]
    fn a_stop_names_its_capture_either_way() {
        let by_id = incoming(NAMESPACE, "Stop", r#"{"NodeID":"n","CaptureID":"c"}"#);
        let by_resource = incoming(
            NAMESPACE,
            "Stop",
            r#"{"NodeID":"n","Resource":{"UUID":"c"}}"#,
        );
        let want = Request::Stop(StopRequest {
            node_id: "n".into(),
            capture_id: "c".into(),
        });
        assert_eq!(Request::decode(&by_id), Some(Ok(want.clone())));
        assert_eq!(Request::decode(&by_resource), Some(Ok(want)));
    }

    #[test]
    fn malformed_requests_are_refused_and_other_messages_left_alone() {
        let bad = incoming(NAMESPACE, "Start", r#"{"NodeID":5}"#);
        let Some(Err(e)) = Request::decode(&bad) else {
            panic!("a malformed Start is an error");
        };
        assert_eq!(e.status(), 400);
        assert!(e.to_string().starts_with("invalid request: "), "{e}");
        assert_eq!(Request::decode(&incoming("Graph", "Sync", "{}")), None);
        let q = Request::decode(&incoming(FLOW_NAMESPACE, "TableQuery", "{}"));
        assert_eq!(
            q,
            Some(Ok(Request::TableQuery(TableQuery {
                filter: Filter::True
            })))
        );
    }

    #[test]
    fn errors_travel_with_their_status_and_come_back_readable() {
        let req = Request::Stop(StopRequest {
            node_id: "n".into(),
            capture_id: "c".into(),
        });
        let err = CaptureError::NotRunning {
            capture: "c".into(),
            node: "n".into(),
        };
        let (kind, status, obj) = reply(&req, Err(err));
        assert_eq!((kind.as_str(), status), ("StopReply", 404));
        let msg = incoming(NAMESPACE, &kind, &obj.to_string());
        let msg = Incoming { status, ..msg };
        assert_eq!(
            read_reply(&msg),
            Err(CaptureError::Agent {
                status: 404,
                message: "no capture c on node n".into()
            })
        );
    }
}
