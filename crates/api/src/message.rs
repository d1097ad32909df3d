//! The WebSocket message envelope (Skydive's message envelope): JSON text frames, or protobuf
//! `StructMessage` binary frames whose `Obj` is JSON (what Skydive agents send).

use bytes::Bytes;
use prost::Message as _;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// The graph namespace and its message types.
pub mod graph_types {
    pub const NAMESPACE: &str = "Graph";
    pub const SYNC_REQUEST: &str = "SyncRequest";
    pub const SYNC_REPLY: &str = "SyncReply";
    pub const SYNC: &str = "Sync";
    pub const NODE_ADDED: &str = "NodeAdded";
    pub const NODE_UPDATED: &str = "NodeUpdated";
    pub const NODE_DELETED: &str = "NodeDeleted";
    pub const NODE_PARTIALLY_UPDATED: &str = "NodePartiallyUpdated";
    pub const EDGE_ADDED: &str = "EdgeAdded";
    pub const EDGE_UPDATED: &str = "EdgeUpdated";
    pub const EDGE_DELETED: &str = "EdgeDeleted";
    pub const EDGE_PARTIALLY_UPDATED: &str = "EdgePartiallyUpdated";
}

/// Framing of a WebSocket connection (`X-Client-Protocol`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// Text frames holding the JSON envelope.
    Json,
    /// Binary frames holding a protobuf `StructMessage` with a JSON `Obj`.
    Protobuf,
}

impl Protocol {
    pub fn parse(s: &str) -> Option<Protocol> {
        match s {
            "" | "json" => Some(Protocol::Json),
            "protobuf" => Some(Protocol::Protobuf),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Protocol::Json => "json",
            Protocol::Protobuf => "protobuf",
        }
    }
}

/// A message as received: the envelope decoded, the payload kept as raw JSON.
#[derive(Debug, Deserialize)]
pub struct Incoming {
    #[serde(rename = "Namespace", default)]
    pub namespace: String,
    #[serde(rename = "Type", default)]
    pub kind: String,
    #[serde(rename = "UUID", default)]
    pub uuid: String,
    #[serde(rename = "Status", default)]
    pub status: i64,
    #[serde(rename = "Obj", default)]
    pub obj: Option<Box<RawValue>>,
}

impl Incoming {
    /// The payload, decoded as `T`.
    pub fn obj<T: for<'de> Deserialize<'de>>(&self) -> Result<T, serde_json::Error> {
        let raw = self.obj.as_deref().map(RawValue::get).unwrap_or("null");
        serde_json::from_str(raw)
    }

    /// The payload's JSON text.
    pub fn obj_text(&self) -> &str {
        self.obj.as_deref().map(RawValue::get).unwrap_or("null")
    }
}

#[derive(Serialize)]
struct OutgoingJson<'a> {
    #[serde(rename = "Namespace")]
    namespace: &'a str,
    #[serde(rename = "Type")]
    kind: &'a str,
    #[serde(rename = "UUID")]
    uuid: &'a str,
    #[serde(rename = "Status")]
    status: i64,
    #[serde(rename = "Obj")]
    obj: &'a RawValue,
}

/// Protobuf `StructMessage` (`graffiti/websocket/structmessage.proto`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct PbStructMessage {
    #[prost(string, tag = "1")]
    pub namespace: String,
    #[prost(string, tag = "2")]
    pub kind: String,
    #[prost(string, tag = "3")]
    pub uuid: String,
    #[prost(int64, tag = "4")]
    pub status: i64,
    /// 0 = JSON, 1 = protobuf.
    #[prost(int32, tag = "5")]
    pub format: i32,
    #[prost(bytes = "vec", tag = "6")]
    pub obj: Vec<u8>,
}

/// Why a frame could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("malformed JSON message: {0}")]
    Json(#[from] serde_json::Error),
    #[error("malformed protobuf message: {0}")]
    Protobuf(#[from] prost::DecodeError),
    #[error("protobuf payloads are only accepted for flow table queries")]
    ProtobufObj,
}

/// Decodes a text frame (a JSON envelope).
pub fn decode_text(text: &str) -> Result<Incoming, DecodeError> {
    Ok(serde_json::from_str(text)?)
}

/// Decodes a text frame that is either one envelope or an array of them (a batch).
pub fn decode_text_batch(text: &str) -> Result<Vec<Incoming>, DecodeError> {
    if text.trim_start().starts_with('[') {
        Ok(serde_json::from_str(text)?)
    } else {
        Ok(vec![serde_json::from_str(text)?])
    }
}

/// Decodes a binary frame (a protobuf `StructMessage` with a JSON `Obj`).
pub fn decode_binary(data: &[u8]) -> Result<Incoming, DecodeError> {
    let pb = PbStructMessage::decode(data)?;
    if pb.format != 0 {
        return Err(DecodeError::ProtobufObj);
    }
    let obj = if pb.obj.is_empty() {
        None
    } else {
        let text = String::from_utf8(pb.obj).map_err(|e| {
            DecodeError::Json(serde::de::Error::custom(format!("Obj is not UTF-8: {e}")))
        })?;
        Some(RawValue::from_string(text)?)
    };
    Ok(Incoming {
        namespace: pb.namespace,
        kind: pb.kind,
        uuid: pb.uuid,
        status: pb.status,
        obj,
    })
}

/// A fresh message UUID.
pub fn new_uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// An encoded frame, ready to send on a connection of the given protocol.
#[derive(Clone, Debug)]
pub enum Frame {
    /// Shared, so that one encoding serves every subscriber.
    Text(std::sync::Arc<str>),
    Binary(Bytes),
}

impl Frame {
    /// The frame's payload size in bytes.
    pub fn len(&self) -> usize {
        match self {
            Frame::Text(t) => t.len(),
            Frame::Binary(b) => b.len(),
        }
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Encodes a message whose payload is already JSON text.
pub fn encode_raw(
    protocol: Protocol,
    namespace: &str,
    kind: &str,
    uuid: &str,
    status: i64,
    obj: &RawValue,
) -> Frame {
    match protocol {
        Protocol::Json => Frame::Text(
            serde_json::to_string(&OutgoingJson {
                namespace,
                kind,
                uuid,
                status,
                obj,
            })
            .unwrap_or_default()
            .into(),
        ),
        Protocol::Protobuf => Frame::Binary(Bytes::from(
            PbStructMessage {
                namespace: namespace.to_string(),
                kind: kind.to_string(),
                uuid: uuid.to_string(),
                status,
                format: 0,
                obj: obj.get().as_bytes().to_vec(),
            }
            .encode_to_vec(),
        )),
    }
}

/// Encodes a message with a serialisable payload.
pub fn encode<T: Serialize + ?Sized>(
    protocol: Protocol,
    namespace: &str,
    kind: &str,
    uuid: &str,
    status: i64,
    obj: &T,
) -> Frame {
    let raw = serde_json::value::to_raw_value(obj)
        .unwrap_or_else(|_| RawValue::from_string("null".to_string()).expect("null is JSON"));
    encode_raw(protocol, namespace, kind, uuid, status, &raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_envelope_round_trip() {
        let f = encode(
            Protocol::Json,
            "Graph",
            "NodeAdded",
            "u1",
            200,
            &serde_json::json!({"ID": "n"}),
        );
        let Frame::Text(t) = f else {
            panic!("text expected")
        };
        assert_eq!(
            &*t,
            r#"{"Namespace":"Graph","Type":"NodeAdded","UUID":"u1","Status":200,"Obj":{"ID":"n"}}"#
        );
        let m = decode_text(&t).unwrap();
        assert_eq!(
            (m.namespace.as_str(), m.kind.as_str(), m.status),
            ("Graph", "NodeAdded", 200)
        );
        assert_eq!(m.obj_text(), r#"{"ID":"n"}"#);
    }

    #[test]
    fn protobuf_envelope_round_trip() {
        let f = encode(
            Protocol::Protobuf,
            "Graph",
            "SyncReply",
            "u2",
            200,
            &serde_json::json!({"Nodes": []}),
        );
        let Frame::Binary(b) = f else {
            panic!("binary expected")
        };
        let m = decode_binary(&b).unwrap();
        assert_eq!((m.kind.as_str(), m.uuid.as_str()), ("SyncReply", "u2"));
        assert_eq!(m.obj_text(), r#"{"Nodes":[]}"#);
    }

    #[test]
    fn python_client_message_is_accepted() {
        // What skydive-client 0.10 sends: a uuid4().hex and no Status-less fields missing.
        let m = decode_text(r#"{"UUID": "9f0c2d0a1b2c4d5e6f708192a3b4c5d6", "Namespace": "Graph", "Type": "SyncRequest", "Obj": {"GremlinFilter": ""}, "Status": 200}"#).unwrap();
        assert_eq!(m.kind, "SyncRequest");
    }

    #[test]
    fn batches_and_garbage() {
        let b = decode_text_batch(r#"[{"Namespace":"Graph","Type":"NodeAdded","Obj":{}},{"Namespace":"Graph","Type":"EdgeAdded"}]"#).unwrap();
        assert_eq!(b.len(), 2);
        assert!(decode_text("{not json").is_err());
        assert!(decode_binary(&[0xff, 0xff, 0xff]).is_err());
        let pb = PbStructMessage {
            format: 1,
            ..Default::default()
        }
        .encode_to_vec();
        assert!(matches!(decode_binary(&pb), Err(DecodeError::ProtobufObj)));
    }
}

/// A graph event encoded once for every subscriber: the full message, and for updates the
/// partial one (`NodePartiallyUpdated` with only the changed keys).
#[derive(Debug)]
pub struct EncodedEvent {
    pub kind: &'static str,
    pub obj: Box<RawValue>,
    pub partial: Option<(&'static str, Box<RawValue>)>,
}

fn raw<T: Serialize + ?Sized>(v: &T) -> Box<RawValue> {
    serde_json::value::to_raw_value(v)
        .unwrap_or_else(|_| RawValue::from_string("null".to_string()).expect("null is JSON"))
}

/// Encodes a graph event.
pub fn encode_event(ev: &skydive_graph::GraphEvent) -> EncodedEvent {
    use graph_types::*;
    use skydive_graph::{GraphEvent, PartialUpdate};
    let partial = |id: &str, updated_at: i64, revision: i64, ops: &[skydive_graph::PartialOp]| {
        raw(&PartialUpdate {
            id: id.to_string(),
            updated_at,
            revision,
            ops: ops.to_vec(),
        })
    };
    match ev {
        GraphEvent::NodeAdded(n) => EncodedEvent {
            kind: NODE_ADDED,
            obj: raw(n.as_ref()),
            partial: None,
        },
        GraphEvent::NodeDeleted(n) => EncodedEvent {
            kind: NODE_DELETED,
            obj: raw(n.as_ref()),
            partial: None,
        },
        GraphEvent::EdgeAdded(e) => EncodedEvent {
            kind: EDGE_ADDED,
            obj: raw(e.as_ref()),
            partial: None,
        },
        GraphEvent::EdgeDeleted(e) => EncodedEvent {
            kind: EDGE_DELETED,
            obj: raw(e.as_ref()),
            partial: None,
        },
        GraphEvent::NodeUpdated { node, ops } => EncodedEvent {
            kind: NODE_UPDATED,
            obj: raw(node.as_ref()),
            partial: Some((
                NODE_PARTIALLY_UPDATED,
                partial(&node.id, node.updated_at, node.revision, ops),
            )),
        },
        GraphEvent::EdgeUpdated { edge, ops } => EncodedEvent {
            kind: EDGE_UPDATED,
            obj: raw(edge.as_ref()),
            partial: Some((
                EDGE_PARTIALLY_UPDATED,
                partial(&edge.id, edge.updated_at, edge.revision, ops),
            )),
        },
    }
}

/// The wire encodings of an event batch, made once and shared by every subscriber and link:
/// each event encoded for the wire, and whole messages by framing and update policy (JSON
/// full, JSON partial, protobuf full, protobuf partial).
#[derive(Default)]
struct BatchEncoding {
    encoded: std::sync::OnceLock<Vec<EncodedEvent>>,
    frames: [std::sync::OnceLock<Vec<Frame>>; 4],
}

/// An event batch as the wire carries it.
pub trait EncodedBatch {
    /// The events encoded for the wire (done once, shared by every subscriber).
    fn encoded(&self) -> &[EncodedEvent];
    /// The events as `Graph` messages for subscribers of a framing and update policy
    /// (updates as `*PartiallyUpdated` when `partial`), encoded once for all of them.
    fn frames(&self, protocol: Protocol, partial: bool) -> &[Frame];
}

impl EncodedBatch for skydive_hub::EventBatch {
    fn encoded(&self) -> &[EncodedEvent] {
        self.memo(|_| BatchEncoding::default())
            .encoded
            .get_or_init(|| self.events.iter().map(encode_event).collect())
    }

    fn frames(&self, protocol: Protocol, partial: bool) -> &[Frame] {
        let slot = match (protocol, partial) {
            (Protocol::Json, false) => 0,
            (Protocol::Json, true) => 1,
            (Protocol::Protobuf, false) => 2,
            (Protocol::Protobuf, true) => 3,
        };
        self.memo(|_| BatchEncoding::default()).frames[slot].get_or_init(|| {
            self.encoded()
                .iter()
                .map(|ev| {
                    let (kind, obj) = match (&ev.partial, partial) {
                        (Some((k, o)), true) => (*k, o.as_ref()),
                        _ => (ev.kind, ev.obj.as_ref()),
                    };
                    encode_raw(
                        protocol,
                        graph_types::NAMESPACE,
                        kind,
                        &new_uuid(),
                        200,
                        obj,
                    )
                })
                .collect()
        })
    }
}
