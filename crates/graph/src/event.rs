//! Graph events and partial-update operations (Skydive's WebSocket namespaces and message types).

use std::sync::Arc;

use serde::de::Error as _;
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::element::{Edge, Node};
use crate::value::{Map, Value};

/// One change of a partial update: set a (possibly dotted) key, or delete it.
#[derive(Clone, Debug, PartialEq)]
pub enum PartialOp {
    Set { key: String, value: Value },
    Delete { key: String },
}

impl PartialOp {
    pub fn key(&self) -> &str {
        match self {
            PartialOp::Set { key, .. } | PartialOp::Delete { key } => key,
        }
    }

    /// Applies the operation to `m`; returns whether `m` changed.
    pub fn apply(&self, m: &mut Map) -> bool {
        match self {
            PartialOp::Set { key, value } => {
                if m.get_path(key) == Some(value) {
                    return false;
                }
                m.set_path(key, value.clone());
                true
            }
            PartialOp::Delete { key } => m.delete_path(key).is_some(),
        }
    }
}

/// Wire form: `{"Type":1,"Key":"IPV4","Value":[...]}` (set) or `{"Type":2,"Key":"Foo"}` (delete).
impl Serialize for PartialOp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            PartialOp::Set { key, value } => {
                let mut m = s.serialize_map(Some(3))?;
                m.serialize_entry("Type", &1)?;
                m.serialize_entry("Key", key)?;
                m.serialize_entry("Value", value)?;
                m.end()
            }
            PartialOp::Delete { key } => {
                let mut m = s.serialize_map(Some(2))?;
                m.serialize_entry("Type", &2)?;
                m.serialize_entry("Key", key)?;
                m.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for PartialOp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Raw {
            #[serde(rename = "Type")]
            kind: i64,
            #[serde(rename = "Key")]
            key: String,
            #[serde(rename = "Value", default)]
            value: Value,
        }
        let raw = Raw::deserialize(d)?;
        match raw.kind {
            1 => Ok(PartialOp::Set {
                key: raw.key,
                value: raw.value,
            }),
            2 => Ok(PartialOp::Delete { key: raw.key }),
            other => Err(D::Error::custom(format!(
                "unknown partial update op type {other}"
            ))),
        }
    }
}

/// The operations that turn `old` into `new`, on top-level keys.
pub fn diff_metadata(old: &Map, new: &Map) -> Vec<PartialOp> {
    let mut ops = Vec::new();
    let mut a = old.iter().peekable();
    let mut b = new.iter().peekable();
    loop {
        match (a.peek(), b.peek()) {
            (None, None) => break,
            (Some((ka, _)), None) => {
                ops.push(PartialOp::Delete {
                    key: ka.to_string(),
                });
                a.next();
            }
            (None, Some((kb, vb))) => {
                ops.push(PartialOp::Set {
                    key: kb.to_string(),
                    value: (*vb).clone(),
                });
                b.next();
            }
            (Some((ka, va)), Some((kb, vb))) => match ka.cmp(kb) {
                std::cmp::Ordering::Less => {
                    ops.push(PartialOp::Delete {
                        key: ka.to_string(),
                    });
                    a.next();
                }
                std::cmp::Ordering::Greater => {
                    ops.push(PartialOp::Set {
                        key: kb.to_string(),
                        value: (*vb).clone(),
                    });
                    b.next();
                }
                std::cmp::Ordering::Equal => {
                    if va != vb {
                        ops.push(PartialOp::Set {
                            key: kb.to_string(),
                            value: (*vb).clone(),
                        });
                    }
                    a.next();
                    b.next();
                }
            },
        }
    }
    ops
}

/// A change of the graph. Updates carry the new element and the operations that produced it,
/// so consumers can send either the whole element or only the changed keys.
#[derive(Clone, Debug)]
pub enum GraphEvent {
    NodeAdded(Arc<Node>),
    NodeUpdated {
        node: Arc<Node>,
        ops: Arc<[PartialOp]>,
    },
    NodeDeleted(Arc<Node>),
    EdgeAdded(Arc<Edge>),
    EdgeUpdated {
        edge: Arc<Edge>,
        ops: Arc<[PartialOp]>,
    },
    EdgeDeleted(Arc<Edge>),
}

impl GraphEvent {
    /// The message type name used on the wire (`NodeAdded`, …) for the full form.
    pub fn type_name(&self) -> &'static str {
        match self {
            GraphEvent::NodeAdded(_) => "NodeAdded",
            GraphEvent::NodeUpdated { .. } => "NodeUpdated",
            GraphEvent::NodeDeleted(_) => "NodeDeleted",
            GraphEvent::EdgeAdded(_) => "EdgeAdded",
            GraphEvent::EdgeUpdated { .. } => "EdgeUpdated",
            GraphEvent::EdgeDeleted(_) => "EdgeDeleted",
        }
    }

    /// The origin of the changed element.
    pub fn origin(&self) -> &str {
        match self {
            GraphEvent::NodeAdded(n) | GraphEvent::NodeDeleted(n) => &n.origin,
            GraphEvent::NodeUpdated { node, .. } => &node.origin,
            GraphEvent::EdgeAdded(e) | GraphEvent::EdgeDeleted(e) => &e.origin,
            GraphEvent::EdgeUpdated { edge, .. } => &edge.origin,
        }
    }

    /// The ID of the changed element.
    pub fn id(&self) -> &str {
        match self {
            GraphEvent::NodeAdded(n) | GraphEvent::NodeDeleted(n) => n.id.as_str(),
            GraphEvent::NodeUpdated { node, .. } => node.id.as_str(),
            GraphEvent::EdgeAdded(e) | GraphEvent::EdgeDeleted(e) => e.id.as_str(),
            GraphEvent::EdgeUpdated { edge, .. } => edge.id.as_str(),
        }
    }

    /// Time at which the change happened.
    pub fn time(&self) -> crate::Time {
        match self {
            GraphEvent::NodeAdded(n) => n.created_at,
            GraphEvent::NodeUpdated { node, .. } => node.updated_at,
            GraphEvent::NodeDeleted(n) => n.deleted_at,
            GraphEvent::EdgeAdded(e) => e.created_at,
            GraphEvent::EdgeUpdated { edge, .. } => edge.updated_at,
            GraphEvent::EdgeDeleted(e) => e.deleted_at,
        }
    }

    pub fn is_node(&self) -> bool {
        matches!(
            self,
            GraphEvent::NodeAdded(_) | GraphEvent::NodeUpdated { .. } | GraphEvent::NodeDeleted(_)
        )
    }
}

/// The body of a `NodePartiallyUpdated` / `EdgePartiallyUpdated` message.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PartialUpdate {
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(rename = "UpdatedAt", default)]
    pub updated_at: crate::Time,
    #[serde(rename = "Revision", default)]
    pub revision: i64,
    #[serde(rename = "Ops", default)]
    pub ops: Vec<PartialOp>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata;

    #[test]
    fn partial_op_wire_form() {
        let set = PartialOp::Set {
            key: "IPV4".into(),
            value: Value::from(vec!["10.0.0.1/24"]),
        };
        assert_eq!(
            serde_json::to_string(&set).unwrap(),
            r#"{"Type":1,"Key":"IPV4","Value":["10.0.0.1/24"]}"#
        );
        let del: PartialOp = serde_json::from_str(r#"{"Type":2,"Key":"Foo"}"#).unwrap();
        assert_eq!(del, PartialOp::Delete { key: "Foo".into() });
        assert!(serde_json::from_str::<PartialOp>(r#"{"Type":3,"Key":"x"}"#).is_err());
    }

    #[test]
    fn diff_then_apply_reproduces_new_metadata() {
        let old = metadata! {"A" => 1, "B" => "x", "C" => true};
        let new = metadata! {"A" => 1, "B" => "y", "D" => 4};
        let ops = diff_metadata(&old, &new);
        assert_eq!(ops.len(), 3);
        let mut m = old;
        for op in &ops {
            op.apply(&mut m);
        }
        assert_eq!(m, new);
        assert!(diff_metadata(&new, &new).is_empty());
    }
}
