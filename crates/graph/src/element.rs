//! Nodes and edges, with Skydive's JSON encoding (Skydive's node and edge JSON).

use std::ops::{Deref, DerefMut};

use compact_str::CompactString;
use serde::ser::SerializeStruct;
use serde::{Deserialize, Serialize, Serializer};

use crate::filter::{Field, Getter};
use crate::id::Id;
use crate::value::{Map, Value};

/// Milliseconds since the Unix epoch. Zero means "unset" and serialises as `null`.
pub type Time = i64;

/// Current wall-clock time in milliseconds.
pub fn now_ms() -> Time {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as Time)
        .unwrap_or(0)
}

/// What nodes and edges have in common.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Element {
    pub id: Id,
    pub metadata: Map,
    /// Host ID of the agent or analyzer that created the element.
    pub host: CompactString,
    /// `<serviceType>.<hostID>`, e.g. `agent.host1`.
    pub origin: CompactString,
    pub created_at: Time,
    pub updated_at: Time,
    pub deleted_at: Time,
    /// Starts at 1; incremented on every metadata change.
    pub revision: i64,
}

/// A graph node.
///
/// `repr(C)` with the slot first: a traversal reads the slot right after taking a reference
/// to the node, and this keeps it in the cache line of the reference count.
#[derive(Clone, Default)]
#[repr(C)]
pub struct Node {
    /// Where the live graph that made this copy keeps it: a hint that lets a traversal step
    /// from a node to its edges without looking its ID up. Not part of the node's value
    /// (ignored by comparison, never serialised); checked before use, since a node may be
    /// handed to a graph that did not make it.
    pub(crate) slot: u32,
    pub elem: Element,
}

impl PartialEq for Node {
    fn eq(&self, other: &Node) -> bool {
        self.elem == other.elem
    }
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node").field("elem", &self.elem).finish()
    }
}

impl From<Element> for Node {
    fn from(elem: Element) -> Node {
        Node { elem, slot: 0 }
    }
}

/// A graph edge from `parent` to `child`.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Edge {
    pub elem: Element,
    pub parent: Id,
    pub child: Id,
}

impl Deref for Node {
    type Target = Element;
    fn deref(&self) -> &Element {
        &self.elem
    }
}
impl DerefMut for Node {
    fn deref_mut(&mut self) -> &mut Element {
        &mut self.elem
    }
}
impl Deref for Edge {
    type Target = Element;
    fn deref(&self) -> &Element {
        &self.elem
    }
}
impl DerefMut for Edge {
    fn deref_mut(&mut self) -> &mut Element {
        &mut self.elem
    }
}

impl Element {
    pub fn new(id: Id, metadata: Map, host: &str, origin: &str, time: Time) -> Self {
        Element {
            id,
            metadata,
            host: host.into(),
            origin: origin.into(),
            created_at: time,
            updated_at: time,
            deleted_at: 0,
            revision: 1,
        }
    }

    /// The `Type` metadata, or "".
    pub fn type_str(&self) -> &str {
        self.metadata
            .get("Type")
            .and_then(Value::as_str)
            .unwrap_or("")
    }

    /// The `Name` metadata, or "".
    pub fn name(&self) -> &str {
        self.metadata
            .get("Name")
            .and_then(Value::as_str)
            .unwrap_or("")
    }

    /// A string metadata value at a dotted path.
    pub fn str_at(&self, path: &str) -> Option<&str> {
        self.metadata.get_path(path).and_then(Value::as_str)
    }

    /// Value of an internal `@` field (`@ID`, `@Host`, …) as a metadata value.
    pub fn internal_field(&self, name: &str) -> Option<Value> {
        Some(match name {
            "ID" => Value::from(self.id.as_str()),
            "Host" => Value::from(self.host.clone()),
            "Origin" => Value::from(self.origin.clone()),
            "CreatedAt" => Value::Int(self.created_at),
            "UpdatedAt" => Value::Int(self.updated_at),
            "DeletedAt" => Value::Int(self.deleted_at),
            "Revision" => Value::Int(self.revision),
            _ => return None,
        })
    }

    fn visit(&self, key: &str, f: &mut dyn FnMut(Field<'_>) -> bool) -> bool {
        if let Some(internal) = key.strip_prefix('@') {
            return match internal {
                "ID" => f(Field::Str(self.id.as_str())),
                "Host" => f(Field::Str(&self.host)),
                "Origin" => f(Field::Str(&self.origin)),
                "CreatedAt" => f(Field::Int(self.created_at)),
                "UpdatedAt" => f(Field::Int(self.updated_at)),
                "DeletedAt" => self.deleted_at != 0 && f(Field::Int(self.deleted_at)),
                "Revision" => f(Field::Int(self.revision)),
                _ => false,
            };
        }
        let key = key.strip_prefix("Metadata.").unwrap_or(key);
        self.metadata.visit_path(key, &mut |v| f(Field::Value(v)))
    }

    fn serialize_fields<S: SerializeStruct>(&self, st: &mut S) -> Result<(), S::Error> {
        st.serialize_field("ID", &self.id)?;
        st.serialize_field("Metadata", &self.metadata)?;
        st.serialize_field("Host", self.host.as_str())?;
        st.serialize_field("Origin", self.origin.as_str())?;
        st.serialize_field("CreatedAt", &OptTime(self.created_at))?;
        st.serialize_field("UpdatedAt", &OptTime(self.updated_at))?;
        st.serialize_field("DeletedAt", &OptTime(self.deleted_at))?;
        st.serialize_field("Revision", &self.revision)
    }
}

struct OptTime(Time);

impl Serialize for OptTime {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0 == 0 {
            s.serialize_unit()
        } else {
            s.serialize_i64(self.0)
        }
    }
}

impl Node {
    pub fn new(id: impl Into<Id>, metadata: Map, host: &str, origin: &str, time: Time) -> Self {
        Node::from(Element::new(id.into(), metadata, host, origin, time))
    }
}

impl Edge {
    pub fn new(
        id: impl Into<Id>,
        parent: impl Into<Id>,
        child: impl Into<Id>,
        metadata: Map,
        host: &str,
        origin: &str,
        time: Time,
    ) -> Self {
        Edge {
            elem: Element::new(id.into(), metadata, host, origin, time),
            parent: parent.into(),
            child: child.into(),
        }
    }

    /// The `RelationType` metadata, or "".
    pub fn relation_type(&self) -> &str {
        self.metadata
            .get("RelationType")
            .and_then(Value::as_str)
            .unwrap_or("")
    }
}

impl Getter for Node {
    fn visit_field(&self, key: &str, f: &mut dyn FnMut(Field<'_>) -> bool) -> bool {
        self.elem.visit(key, f)
    }
}

impl Getter for Edge {
    fn visit_field(&self, key: &str, f: &mut dyn FnMut(Field<'_>) -> bool) -> bool {
        match key {
            "Parent" if !self.metadata.contains_key("Parent") => {
                f(Field::Str(self.parent.as_str()))
            }
            "Child" if !self.metadata.contains_key("Child") => f(Field::Str(self.child.as_str())),
            _ => self.elem.visit(key, f),
        }
    }
}

impl Serialize for Node {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("Node", 8)?;
        self.elem.serialize_fields(&mut st)?;
        st.end()
    }
}

impl Serialize for Edge {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("Edge", 10)?;
        self.elem.serialize_fields(&mut st)?;
        st.serialize_field("Parent", &self.parent)?;
        st.serialize_field("Child", &self.child)?;
        st.end()
    }
}

/// The JSON of a node or edge as received, before validation.
#[derive(Deserialize, Default)]
#[serde(default)]
struct RawElement {
    #[serde(rename = "ID")]
    id: Option<String>,
    #[serde(rename = "Metadata")]
    metadata: Option<Map>,
    #[serde(rename = "Host")]
    host: Option<CompactString>,
    #[serde(rename = "Origin")]
    origin: Option<CompactString>,
    #[serde(rename = "CreatedAt")]
    created_at: Option<Time>,
    #[serde(rename = "UpdatedAt")]
    updated_at: Option<Time>,
    #[serde(rename = "DeletedAt")]
    deleted_at: Option<Time>,
    #[serde(rename = "Revision")]
    revision: Option<i64>,
    #[serde(rename = "Parent")]
    parent: Option<String>,
    #[serde(rename = "Child")]
    child: Option<String>,
}

/// Why a node or edge could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("No ID found for graph element")]
    NoId,
    #[error("parent ID wrong format")]
    NoParent,
    #[error("child ID wrong format")]
    NoChild,
    #[error("{0}")]
    Json(String),
}

impl RawElement {
    /// Missing `CreatedAt`/`UpdatedAt` default to `now`; a missing `Revision` to 1.
    fn into_element(
        self,
        now: Time,
    ) -> Result<(Element, Option<String>, Option<String>), DecodeError> {
        let id = match self.id {
            Some(id) if !id.is_empty() => Id::from(id),
            _ => return Err(DecodeError::NoId),
        };
        let created_at = self.created_at.filter(|t| *t != 0).unwrap_or(now);
        let updated_at = self.updated_at.filter(|t| *t != 0).unwrap_or(created_at);
        Ok((
            Element {
                id,
                metadata: self.metadata.unwrap_or_default(),
                host: self.host.unwrap_or_default(),
                origin: self.origin.unwrap_or_default(),
                created_at,
                updated_at,
                deleted_at: self.deleted_at.unwrap_or(0),
                revision: self.revision.filter(|r| *r > 0).unwrap_or(1),
            },
            self.parent,
            self.child,
        ))
    }
}

impl Node {
    /// Decodes a node from JSON, defaulting missing times to `now`.
    pub fn from_json(v: &serde_json::Value, now: Time) -> Result<Node, DecodeError> {
        let raw: RawElement =
            serde_json::from_value(v.clone()).map_err(|e| DecodeError::Json(e.to_string()))?;
        let (elem, _, _) = raw.into_element(now)?;
        Ok(Node::from(elem))
    }

    pub fn from_slice(b: &[u8], now: Time) -> Result<Node, DecodeError> {
        let raw: RawElement =
            serde_json::from_slice(b).map_err(|e| DecodeError::Json(e.to_string()))?;
        let (elem, _, _) = raw.into_element(now)?;
        Ok(Node::from(elem))
    }
}

impl Edge {
    /// Decodes an edge from JSON, defaulting missing times to `now`.
    pub fn from_json(v: &serde_json::Value, now: Time) -> Result<Edge, DecodeError> {
        let raw: RawElement =
            serde_json::from_value(v.clone()).map_err(|e| DecodeError::Json(e.to_string()))?;
        Self::from_raw(raw, now)
    }

    pub fn from_slice(b: &[u8], now: Time) -> Result<Edge, DecodeError> {
        let raw: RawElement =
            serde_json::from_slice(b).map_err(|e| DecodeError::Json(e.to_string()))?;
        Self::from_raw(raw, now)
    }

    fn from_raw(raw: RawElement, now: Time) -> Result<Edge, DecodeError> {
        let (elem, parent, child) = raw.into_element(now)?;
        let parent = parent
            .filter(|p| !p.is_empty())
            .ok_or(DecodeError::NoParent)?;
        let child = child
            .filter(|c| !c.is_empty())
            .ok_or(DecodeError::NoChild)?;
        Ok(Edge {
            elem,
            parent: Id::from(parent),
            child: Id::from(child),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata;

    #[test]
    fn node_json_has_skydive_field_order_and_null_times() {
        let n = Node::new(
            "n1",
            metadata! {"Name" => "eth0", "Type" => "veth"},
            "h1",
            "agent.h1",
            1000,
        );
        assert_eq!(
            serde_json::to_string(&n).unwrap(),
            r#"{"ID":"n1","Metadata":{"Name":"eth0","Type":"veth"},"Host":"h1","Origin":"agent.h1","CreatedAt":1000,"UpdatedAt":1000,"DeletedAt":null,"Revision":1}"#
        );
    }

    #[test]
    fn edge_json_puts_parent_and_child_last() {
        let e = Edge::new(
            "e1",
            "a",
            "b",
            metadata! {"RelationType" => "ownership"},
            "h1",
            "agent.h1",
            5,
        );
        let s = serde_json::to_string(&e).unwrap();
        assert!(
            s.ends_with(r#""Revision":1,"Parent":"a","Child":"b"}"#),
            "{s}"
        );
    }

    #[test]
    fn decoding_requires_id_and_edge_endpoints() {
        let v = serde_json::json!({"Metadata": {}});
        assert_eq!(Node::from_json(&v, 1), Err(DecodeError::NoId));
        let v = serde_json::json!({"ID": "e", "Parent": "", "Child": "b"});
        assert_eq!(Edge::from_json(&v, 1), Err(DecodeError::NoParent));
        let v = serde_json::json!({"ID": "e", "Parent": "a"});
        assert_eq!(Edge::from_json(&v, 1), Err(DecodeError::NoChild));
    }

    #[test]
    fn decoding_defaults_times_and_revision() {
        let v = serde_json::json!({"ID": "x", "Host": "h", "Metadata": {"Name": "n"}});
        let n = Node::from_json(&v, 42).unwrap();
        assert_eq!((n.created_at, n.updated_at, n.revision), (42, 42, 1));
        assert_eq!(n.name(), "n");
    }

    #[test]
    fn getter_reaches_internal_fields_and_strips_metadata_prefix() {
        let n = Node::new(
            "n1",
            metadata! {"Name" => "eth0", "MTU" => 1500},
            "h1",
            "agent.h1",
            7,
        );
        let mut got = Vec::new();
        n.visit_field("@ID", &mut |f| {
            got.push(format!("{f:?}"));
            false
        });
        n.visit_field("Metadata.MTU", &mut |f| {
            got.push(format!("{f:?}"));
            false
        });
        assert_eq!(got, vec![r#"Str("n1")"#, "Value(Int(1500))"]);
    }
}
