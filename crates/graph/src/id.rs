//! Identifiers: element IDs, Skydive's UUIDv5 derivations and TIDs (Skydive's IDs and TIDs).

use std::borrow::Borrow;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

/// The ID of a node or edge. Cheap to clone.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Id(Arc<str>);

impl Id {
    pub fn new(s: impl AsRef<str>) -> Self {
        Id(Arc::from(s.as_ref()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Default for Id {
    fn default() -> Self {
        Id::new("")
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Borrow<str> for Id {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for Id {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Id {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl From<&str> for Id {
    fn from(s: &str) -> Self {
        Id::new(s)
    }
}

impl From<String> for Id {
    fn from(s: String) -> Self {
        Id(Arc::from(s))
    }
}

impl From<Uuid> for Id {
    fn from(u: Uuid) -> Self {
        Id::from(u.to_string())
    }
}

impl Serialize for Id {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Ok(Id::new(&*s))
    }
}

/// The namespace Skydive uses for its UUIDv5 identifiers (the RFC 4122 OID namespace).
pub const OID_NAMESPACE: Uuid = Uuid::NAMESPACE_OID;

/// A random identifier (UUIDv4), as `graph.GenID()` with no argument.
pub fn gen_id() -> Id {
    Id::from(Uuid::new_v4())
}

/// `graph.GenID(a, b, …)`: UUIDv5 in the OID namespace over the arguments joined with `/`.
pub fn gen_id_from(parts: &[&str]) -> Id {
    Id::from(Uuid::new_v5(&OID_NAMESPACE, parts.join("/").as_bytes()))
}

/// UUIDv5 in the OID namespace over the concatenation of `parts` (no separator), the
/// form TIDs and link IDs use.
pub fn uuid5_concat(parts: &[&str]) -> String {
    let mut buf = String::with_capacity(parts.iter().map(|p| p.len()).sum());
    for p in parts {
        buf.push_str(p);
    }
    Uuid::new_v5(&OID_NAMESPACE, buf.as_bytes()).to_string()
}

/// TID of a host node: `UUIDv5(OID, Name)`.
pub fn host_tid(host_name: &str) -> String {
    uuid5_concat(&[host_name])
}

/// TID of a netns node: `UUIDv5(OID, hostTID + Path + "netns")`.
pub fn netns_tid(host_tid: &str, path: &str) -> String {
    uuid5_concat(&[host_tid, path, "netns"])
}

/// TID of an `ovsbridge` or `ovsport` node: `UUIDv5(OID, hostTID + OVS UUID + Type)`.
pub fn ovs_tid(host_tid: &str, ovs_uuid: &str, node_type: &str) -> String {
    uuid5_concat(&[host_tid, ovs_uuid, node_type])
}

/// TID of a node owned by a parent with a TID: `UUIDv5(OID, parentTID + Name + Type)`.
pub fn child_tid(parent_tid: &str, name: &str, node_type: &str) -> String {
    uuid5_concat(&[parent_tid, name, node_type])
}

/// ID of a link created by `topology.AddLink`: `UUIDv5(OID, parentID + childID + relationType)`.
pub fn link_id(parent: &str, child: &str, relation_type: &str) -> Id {
    Id::from(uuid5_concat(&[parent, child, relation_type]))
}

/// ID of an edge created with an empty ID: `UUIDv5(OID, parentID + childID)`.
pub fn edge_id(parent: &str, child: &str) -> Id {
    Id::from(uuid5_concat(&[parent, child]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid5_uses_the_oid_namespace() {
        // Reference values from Python: uuid.uuid5(uuid.NAMESPACE_OID, ...).
        let h = host_tid("host1");
        assert_eq!(h, "1a21f896-ade2-5afd-9969-4d690a305de0");
        assert_eq!(
            netns_tid(&h, "/var/run/netns/a"),
            "b35c6713-904b-5873-8593-c987f8d2f479"
        );
        assert_eq!(
            gen_id_from(&["a", "b"]).as_str(),
            "e557c849-a9bd-5c1d-ad6c-db261d9c9e22"
        );
    }

    #[test]
    fn derived_ids_are_stable_and_distinct() {
        let h = host_tid("host1");
        assert_eq!(h, host_tid("host1"));
        assert_ne!(h, host_tid("host2"));
        let ns = netns_tid(&h, "/var/run/netns/a");
        assert_ne!(ns, netns_tid(&h, "/var/run/netns/b"));
        assert_eq!(
            child_tid(&ns, "eth0", "veth"),
            uuid5_concat(&[&ns, "eth0", "veth"])
        );
        assert_eq!(
            gen_id_from(&["fabric", "tor"]),
            Id::from(uuid5_concat(&["fabric/tor"]))
        );
    }
}
