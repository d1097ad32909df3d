//! Metadata values: a JSON-like tree with Skydive's semantics.
//!
//! * whole JSON numbers decode to [`Value::Int`], other numbers to [`Value::Float`];
//! * a dotted key (`ExtID.vm-uuid`) is a path through nested maps; setting one creates the maps;
//! * a path that crosses an array of maps collects the values of every element
//!   (`Captures.ID` over the `Captures` list).
//!
//! Maps are small sorted vectors: most metadata maps hold a handful of keys, and a sorted
//! vector costs far less memory than a tree or hash map while serialising in the same
//! (alphabetical) key order as Skydive's Go encoder.

use std::fmt;
use std::sync::Arc;

use compact_str::CompactString;
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};

/// A metadata key. Keys of up to 24 bytes are stored inline.
pub type Key = CompactString;

/// A metadata value.
#[derive(Clone, Debug, PartialEq, Default)]
pub enum Value {
    #[default]
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    String(CompactString),
    Array(Vec<Value>),
    Map(Map),
}

/// A map of metadata, sorted by key.
///
/// Shared on clone, copied on write: the copies of a node's metadata (a probe's state, the
/// graph, its snapshots and events) share their entries, and nested maps (`Features`,
/// `RoutingTables`, ...) stay shared when a top-level key changes.
#[derive(Clone, Debug, Default)]
pub struct Map {
    entries: Arc<Vec<(Key, Value)>>,
}

impl PartialEq for Map {
    fn eq(&self, other: &Map) -> bool {
        // Shared copies are equal without looking at their entries.
        self.ptr_eq(other) || self.entries == other.entries
    }
}

impl Value {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_map(&self) -> Option<&Map> {
        match self {
            Value::Map(m) => Some(m),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// The value as an integer, exactly (no cast).
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// The value as a number (integers widened).
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Int(i) => Some(*i as f64),
            Value::Float(f) => Some(*f),
            _ => None,
        }
    }

    /// Skydive's `cast.ToInt64`: integers as they are, floats truncated, booleans as 0/1,
    /// strings parsed as integers (a trailing `.0…` is accepted).
    pub fn cast_i64(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            Value::Float(f) if f.is_finite() => Some(*f as i64),
            Value::Bool(b) => Some(*b as i64),
            Value::String(s) => cast_str_i64(s),
            _ => None,
        }
    }

    /// True for an empty array or an empty map (what `Values()` skips).
    pub fn is_empty_container(&self) -> bool {
        match self {
            Value::Array(a) => a.is_empty(),
            Value::Map(m) => m.is_empty(),
            _ => false,
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// Name of the JSON type, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int64",
            Value::Float(_) => "float64",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::Map(_) => "map",
        }
    }

    /// Converts from a `serde_json::Value`.
    pub fn from_json(v: &serde_json::Value) -> Value {
        match v {
            serde_json::Value::Null => Value::Null,
            serde_json::Value::Bool(b) => Value::Bool(*b),
            serde_json::Value::Number(n) => number_value(n),
            serde_json::Value::String(s) => Value::String(s.into()),
            serde_json::Value::Array(a) => Value::Array(a.iter().map(Value::from_json).collect()),
            serde_json::Value::Object(o) => Value::Map(
                o.iter()
                    .map(|(k, v)| (Key::from(k.as_str()), Value::from_json(v)))
                    .collect(),
            ),
        }
    }

    /// Converts into a `serde_json::Value`.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Null => serde_json::Value::Null,
            Value::Bool(b) => serde_json::Value::Bool(*b),
            Value::Int(i) => serde_json::Value::from(*i),
            Value::Float(f) => serde_json::Number::from_f64(*f)
                .map(serde_json::Value::Number)
                .unwrap_or(serde_json::Value::Null),
            Value::String(s) => serde_json::Value::String(s.to_string()),
            Value::Array(a) => serde_json::Value::Array(a.iter().map(Value::to_json).collect()),
            Value::Map(m) => serde_json::Value::Object(
                m.iter()
                    .map(|(k, v)| (k.to_string(), v.to_json()))
                    .collect(),
            ),
        }
    }

    /// A total order used by `Sort` and `Dedup`: numbers numerically, then strings, then
    /// the rest by their JSON text.
    pub fn sort_cmp(&self, other: &Value) -> std::cmp::Ordering {
        use std::cmp::Ordering;
        match (self.as_f64(), other.as_f64()) {
            (Some(a), Some(b)) => return a.partial_cmp(&b).unwrap_or(Ordering::Equal),
            (Some(_), None) => return Ordering::Less,
            (None, Some(_)) => return Ordering::Greater,
            _ => {}
        }
        match (self, other) {
            (Value::String(a), Value::String(b)) => a.cmp(b),
            (Value::String(_), _) => Ordering::Less,
            (_, Value::String(_)) => Ordering::Greater,
            _ => self.to_json().to_string().cmp(&other.to_json().to_string()),
        }
    }
}

fn number_value(n: &serde_json::Number) -> Value {
    if let Some(i) = n.as_i64() {
        Value::Int(i)
    } else {
        Value::Float(n.as_f64().unwrap_or(0.0))
    }
}

/// `cast.ToInt64` on strings: base prefixes (`0x`, `0o`, `0b`) and a zero decimal part accepted.
pub fn cast_str_i64(s: &str) -> Option<i64> {
    let s = s.trim();
    let s = match s.find('.') {
        Some(dot) if s[dot + 1..].bytes().all(|b| b == b'0') => &s[..dot],
        _ => s,
    };
    let (neg, digits) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let lower = digits.to_ascii_lowercase();
    let parsed = if let Some(h) = lower.strip_prefix("0x") {
        i64::from_str_radix(h, 16).ok()
    } else if let Some(o) = lower.strip_prefix("0o") {
        i64::from_str_radix(o, 8).ok()
    } else if let Some(b) = lower.strip_prefix("0b") {
        i64::from_str_radix(b, 2).ok()
    } else {
        digits.parse::<i64>().ok()
    }?;
    Some(if neg { -parsed } else { parsed })
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::String(s.into())
    }
}
impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::String(s.into())
    }
}
impl From<CompactString> for Value {
    fn from(s: CompactString) -> Self {
        Value::String(s)
    }
}
impl From<i64> for Value {
    fn from(i: i64) -> Self {
        Value::Int(i)
    }
}
impl From<i32> for Value {
    fn from(i: i32) -> Self {
        Value::Int(i as i64)
    }
}
impl From<u32> for Value {
    fn from(i: u32) -> Self {
        Value::Int(i as i64)
    }
}
impl From<u64> for Value {
    fn from(i: u64) -> Self {
        i64::try_from(i)
            .map(Value::Int)
            .unwrap_or(Value::Float(i as f64))
    }
}
impl From<f64> for Value {
    fn from(f: f64) -> Self {
        Value::Float(f)
    }
}
impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}
impl From<Map> for Value {
    fn from(m: Map) -> Self {
        Value::Map(m)
    }
}
impl<T: Into<Value>> From<Vec<T>> for Value {
    fn from(v: Vec<T>) -> Self {
        Value::Array(v.into_iter().map(Into::into).collect())
    }
}

impl Map {
    pub fn new() -> Self {
        Map::default()
    }

    pub fn with_capacity(n: usize) -> Self {
        Map {
            entries: Arc::new(Vec::with_capacity(n)),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether both maps are the same shared copy.
    pub fn ptr_eq(&self, other: &Map) -> bool {
        Arc::ptr_eq(&self.entries, &other.entries)
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn position(&self, key: &str) -> Result<usize, usize> {
        self.entries.binary_search_by(|(k, _)| k.as_str().cmp(key))
    }

    /// The value of a top-level key (no path interpretation).
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.position(key).ok().map(|i| &self.entries[i].1)
    }

    pub fn get_mut(&mut self, key: &str) -> Option<&mut Value> {
        match self.position(key) {
            Ok(i) => Some(&mut Arc::make_mut(&mut self.entries)[i].1),
            Err(_) => None,
        }
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.position(key).is_ok()
    }

    /// Sets a top-level key, returning the previous value.
    pub fn insert(&mut self, key: impl Into<Key>, value: impl Into<Value>) -> Option<Value> {
        let key = key.into();
        let value = value.into();
        match self.position(&key) {
            Ok(i) => Some(std::mem::replace(
                &mut Arc::make_mut(&mut self.entries)[i].1,
                value,
            )),
            Err(i) => {
                Arc::make_mut(&mut self.entries).insert(i, (key, value));
                None
            }
        }
    }

    /// Removes a top-level key.
    pub fn remove(&mut self, key: &str) -> Option<Value> {
        match self.position(key) {
            Ok(i) => Some(Arc::make_mut(&mut self.entries).remove(i).1),
            Err(_) => None,
        }
    }

    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&Key, &Value)> {
        self.entries.iter().map(|(k, v)| (k, v))
    }

    pub fn keys(&self) -> impl Iterator<Item = &Key> {
        self.entries.iter().map(|(k, _)| k)
    }

    pub fn shrink_to_fit(&mut self) {
        // Shared entries are left as they are (shrinking would copy them).
        if let Some(entries) = Arc::get_mut(&mut self.entries) {
            entries.shrink_to_fit();
            for (_, v) in entries {
                shrink_value(v);
            }
        }
    }

    /// The value at a dotted path, through nested maps only.
    pub fn get_path(&self, path: &str) -> Option<&Value> {
        if let Some(v) = self.get(path) {
            return Some(v);
        }
        let (head, rest) = path.split_once('.')?;
        match self.get(head)? {
            Value::Map(m) => m.get_path(rest),
            _ => None,
        }
    }

    /// Calls `f` on every value a dotted path reaches. A path crossing an array of maps
    /// continues into each element. Returns true as soon as `f` returns true.
    pub fn visit_path(&self, path: &str, f: &mut dyn FnMut(&Value) -> bool) -> bool {
        if let Some(v) = self.get(path) {
            return f(v);
        }
        let Some((head, rest)) = path.split_once('.') else {
            return false;
        };
        match self.get(head) {
            Some(v) => visit_value_path(v, rest, f),
            None => false,
        }
    }

    /// Sets the value at a dotted path, creating (or replacing non-map values with) the
    /// intermediate maps. Returns the previous value.
    pub fn set_path(&mut self, path: &str, value: Value) -> Option<Value> {
        match path.split_once('.') {
            None => self.insert(path, value),
            Some((head, rest)) => {
                let pos = self.position(head);
                let entries = Arc::make_mut(&mut self.entries);
                let child = match pos {
                    Ok(i) => &mut entries[i].1,
                    Err(i) => {
                        entries.insert(i, (head.into(), Value::Map(Map::new())));
                        &mut entries[i].1
                    }
                };
                if !matches!(child, Value::Map(_)) {
                    *child = Value::Map(Map::new());
                }
                match child {
                    Value::Map(m) => m.set_path(rest, value),
                    _ => unreachable!("child was just made a map"),
                }
            }
        }
    }

    /// Deletes the value at a dotted path. Maps left empty by the deletion are removed too.
    pub fn delete_path(&mut self, path: &str) -> Option<Value> {
        if self.contains_key(path) {
            return self.remove(path);
        }
        let (head, rest) = path.split_once('.')?;
        let i = self.position(head).ok()?;
        // Nothing to delete: the shared entries are not copied.
        self.entries[i].1.as_map()?.get_path(rest)?;
        let entries = Arc::make_mut(&mut self.entries);
        let Value::Map(child) = &mut entries[i].1 else {
            return None;
        };
        let removed = child.delete_path(rest);
        if removed.is_some() && child.is_empty() {
            entries.remove(i);
        }
        removed
    }

    /// Every key, with nested maps flattened into dotted paths (arrays are leaves).
    pub fn flattened_keys(&self, out: &mut Vec<String>) {
        fn walk(m: &Map, prefix: &str, out: &mut Vec<String>) {
            for (k, v) in m.iter() {
                let key = if prefix.is_empty() {
                    k.to_string()
                } else {
                    format!("{prefix}.{k}")
                };
                match v {
                    Value::Map(child) if !child.is_empty() => walk(child, &key, out),
                    _ => out.push(key),
                }
            }
        }
        walk(self, "", out);
    }
}

fn visit_value_path(v: &Value, path: &str, f: &mut dyn FnMut(&Value) -> bool) -> bool {
    match v {
        Value::Map(m) => m.visit_path(path, f),
        Value::Array(items) => items.iter().any(|item| visit_value_path(item, path, f)),
        _ => false,
    }
}

fn shrink_value(v: &mut Value) {
    match v {
        Value::Map(m) => m.shrink_to_fit(),
        Value::Array(a) => {
            a.shrink_to_fit();
            a.iter_mut().for_each(shrink_value);
        }
        Value::String(s) => s.shrink_to_fit(),
        _ => {}
    }
}

impl FromIterator<(Key, Value)> for Map {
    fn from_iter<I: IntoIterator<Item = (Key, Value)>>(iter: I) -> Self {
        let mut entries: Vec<(Key, Value)> = iter.into_iter().collect();
        // Stable sort, then keep the last of equal keys (JSON "last wins").
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        let mut out: Vec<(Key, Value)> = Vec::with_capacity(entries.len());
        for (k, v) in entries {
            match out.last_mut() {
                Some(last) if last.0 == k => last.1 = v,
                _ => out.push((k, v)),
            }
        }
        Map {
            entries: Arc::new(out),
        }
    }
}

impl<'a> IntoIterator for &'a Map {
    type Item = (&'a Key, &'a Value);
    type IntoIter = std::iter::Map<
        std::slice::Iter<'a, (Key, Value)>,
        fn(&'a (Key, Value)) -> (&'a Key, &'a Value),
    >;
    fn into_iter(self) -> Self::IntoIter {
        self.entries.iter().map(|(k, v)| (k, v))
    }
}

/// Builds a [`Map`] from `key => value` pairs.
#[macro_export]
macro_rules! metadata {
    () => { $crate::Map::new() };
    ($($k:expr => $v:expr),+ $(,)?) => {{
        let mut m = $crate::Map::new();
        $( m.set_path($k, $crate::Value::from($v)); )+
        m
    }};
}

/// Writes a float the way Go's `encoding/json` does for the common cases: whole values
/// without a fraction (`3`, not `3.0`).
pub(crate) fn serialize_f64<S: Serializer>(f: f64, s: S) -> Result<S::Ok, S::Error> {
    if f.is_finite() && f.fract() == 0.0 && f.abs() < 1e15 {
        s.serialize_i64(f as i64)
    } else if f.is_finite() {
        s.serialize_f64(f)
    } else {
        s.serialize_unit()
    }
}

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Null => s.serialize_unit(),
            Value::Bool(b) => s.serialize_bool(*b),
            Value::Int(i) => s.serialize_i64(*i),
            Value::Float(f) => serialize_f64(*f, s),
            Value::String(v) => s.serialize_str(v),
            Value::Array(a) => {
                let mut seq = s.serialize_seq(Some(a.len()))?;
                for v in a {
                    seq.serialize_element(v)?;
                }
                seq.end()
            }
            Value::Map(m) => m.serialize(s),
        }
    }
}

impl Serialize for Map {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.entries.len()))?;
        for (k, v) in self.entries.iter() {
            map.serialize_entry(k.as_str(), v)?;
        }
        map.end()
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Int(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Float(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.into()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v.into()))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Deserialize::deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        while let Some(v) = seq.next_element()? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Value, A::Error> {
        MapVisitor.visit_map(map).map(Value::Map)
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
}

struct MapVisitor;

impl<'de> Visitor<'de> for MapVisitor {
    type Value = Map;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_unit<E>(self) -> Result<Map, E> {
        Ok(Map::new())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Map, A::Error> {
        let mut entries: Vec<(Key, Value)> =
            Vec::with_capacity(map.size_hint().unwrap_or(0).min(1024));
        while let Some(k) = map.next_key::<CompactString>()? {
            let v: Value = map.next_value()?;
            entries.push((k, v));
        }
        Ok(entries.into_iter().collect())
    }
}

impl<'de> Deserialize<'de> for Map {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(MapVisitor)
    }
}

/// Error type used by serde when a map was expected.
pub fn expected_map<E: de::Error>(what: &str) -> E {
    E::custom(format!("{what} must be a JSON object"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Map {
        serde_json::from_str(s).unwrap()
    }

    #[test]
    fn whole_numbers_decode_as_int_and_others_as_float() {
        let m = parse(r#"{"a":3,"b":3.5,"c":1.0,"d":18446744073709551615}"#);
        assert_eq!(m.get("a"), Some(&Value::Int(3)));
        assert_eq!(m.get("b"), Some(&Value::Float(3.5)));
        assert_eq!(m.get("c"), Some(&Value::Float(1.0)));
        assert!(matches!(m.get("d"), Some(Value::Float(_))));
    }

    #[test]
    fn map_serialises_sorted_and_last_key_wins() {
        let m = parse(r#"{"b":1,"a":{"z":true,"y":null},"b":2}"#);
        assert_eq!(
            serde_json::to_string(&m).unwrap(),
            r#"{"a":{"y":null,"z":true},"b":2}"#
        );
    }

    #[test]
    fn whole_floats_serialise_without_fraction() {
        let v = Value::Float(42.0);
        assert_eq!(serde_json::to_string(&v).unwrap(), "42");
        assert_eq!(serde_json::to_string(&Value::Float(0.25)).unwrap(), "0.25");
    }

    #[test]
    fn set_path_creates_nested_maps_and_get_path_reads_them() {
        let mut m = Map::new();
        m.set_path("Container.Labels.a.b.c", Value::Int(123));
        assert_eq!(
            serde_json::to_string(&m).unwrap(),
            r#"{"Container":{"Labels":{"a":{"b":{"c":123}}}}}"#
        );
        assert_eq!(m.get_path("Container.Labels.a.b.c"), Some(&Value::Int(123)));
        assert_eq!(m.get_path("Container.Labels.a.x"), None);
    }

    #[test]
    fn set_path_replaces_a_scalar_on_the_way() {
        let mut m = metadata! {"A" => 1};
        m.set_path("A.B", Value::Int(2));
        assert_eq!(m.get_path("A.B"), Some(&Value::Int(2)));
    }

    #[test]
    fn literal_dotted_key_is_found_before_path_walk() {
        let m = parse(r#"{"a.b":1,"a":{"b":2}}"#);
        assert_eq!(m.get_path("a.b"), Some(&Value::Int(1)));
    }

    #[test]
    fn delete_path_removes_empty_parents() {
        let mut m = parse(r#"{"ExtID":{"vm":"x"},"Name":"n"}"#);
        assert_eq!(m.delete_path("ExtID.vm"), Some(Value::from("x")));
        assert_eq!(serde_json::to_string(&m).unwrap(), r#"{"Name":"n"}"#);
        assert_eq!(m.delete_path("Nope.x"), None);
    }

    #[test]
    fn visit_path_crosses_arrays_of_maps() {
        let m = parse(r#"{"Captures":[{"ID":"a"},{"ID":"b"},{"Other":1}]}"#);
        let mut seen = Vec::new();
        m.visit_path("Captures.ID", &mut |v| {
            seen.push(v.as_str().unwrap().to_string());
            false
        });
        assert_eq!(seen, vec!["a", "b"]);
    }

    #[test]
    fn cast_i64_follows_skydive_rules() {
        assert_eq!(Value::from("1500").cast_i64(), Some(1500));
        assert_eq!(Value::from("1500.00").cast_i64(), Some(1500));
        assert_eq!(Value::from("1500.5").cast_i64(), None);
        assert_eq!(Value::from("0x10").cast_i64(), Some(16));
        assert_eq!(Value::Float(9.9).cast_i64(), Some(9));
        assert_eq!(Value::Bool(true).cast_i64(), Some(1));
        assert_eq!(Value::from("eth0").cast_i64(), None);
    }

    #[test]
    fn flattened_keys_are_dotted_paths() {
        let m = parse(r#"{"a":{"b":1,"c":{"d":[1]}},"e":{}}"#);
        let mut keys = Vec::new();
        m.flattened_keys(&mut keys);
        assert_eq!(keys, vec!["a.b", "a.c.d", "e"]);
    }

    #[test]
    fn json_round_trip_is_lossless() {
        let text = r#"{"A":[1,"x",true,null,{"b":2.5}],"B":{"C":-7}}"#;
        let m = parse(text);
        assert_eq!(serde_json::to_string(&m).unwrap(), text);
        let back = Value::from_json(&Value::Map(m.clone()).to_json());
        assert_eq!(back, Value::Map(m));
    }
}
