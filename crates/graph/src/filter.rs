//! Filters over anything with fields: nodes, edges, flows (Skydive's `graffiti/filters`).
//!
//! Gremlin predicates compile to a [`Filter`]; storage backends translate the same tree to
//! their query language, and agents evaluate it against their flow tables.
//!
//! Matching rules (Skydive's predicates): an array field matches when any element matches;
//! integer comparisons cast the field (`"1500"` matches `1500`, floats are truncated);
//! string comparisons need a string; a missing key never matches, so a `Not` over a missing
//! term is true.

use std::fmt;
use std::net::Ipv4Addr;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::value::Value;

/// A field value handed to a filter.
#[derive(Debug, Clone, Copy)]
pub enum Field<'a> {
    Value(&'a Value),
    Str(&'a str),
    Int(i64),
    Float(f64),
    Bool(bool),
}

impl Field<'_> {
    fn as_str(&self) -> Option<&str> {
        match self {
            Field::Value(Value::String(s)) => Some(s),
            Field::Str(s) => Some(s),
            _ => None,
        }
    }

    fn cast_i64(&self) -> Option<i64> {
        match self {
            Field::Value(v) => v.cast_i64(),
            Field::Str(s) => crate::value::cast_str_i64(s),
            Field::Int(i) => Some(*i),
            Field::Float(f) if f.is_finite() => Some(*f as i64),
            Field::Float(_) => None,
            Field::Bool(b) => Some(*b as i64),
        }
    }

    fn as_bool(&self) -> Option<bool> {
        match self {
            Field::Value(Value::Bool(b)) | Field::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// Converts to an owned metadata value.
    pub fn to_value(&self) -> Value {
        match self {
            Field::Value(v) => (*v).clone(),
            Field::Str(s) => Value::from(*s),
            Field::Int(i) => Value::Int(*i),
            Field::Float(f) => Value::Float(*f),
            Field::Bool(b) => Value::Bool(*b),
        }
    }
}

/// Something whose fields a filter can read by dotted key.
pub trait Getter {
    /// Calls `f` on the value(s) at `key` until it returns true; returns whether it did.
    /// A key that crosses an array of maps yields one value per element.
    fn visit_field(&self, key: &str, f: &mut dyn FnMut(Field<'_>) -> bool) -> bool;

    /// Whether the key is present.
    fn has_field(&self, key: &str) -> bool {
        self.visit_field(key, &mut |_| true)
    }

    /// The first value at `key`, owned.
    fn field_value(&self, key: &str) -> Option<Value> {
        let mut out = None;
        self.visit_field(key, &mut |f| {
            out = Some(f.to_value());
            true
        });
        out
    }
}

/// Calls `pred` on a field, or on every element when it is an array, until it returns true.
fn any_leaf(field: Field<'_>, pred: &mut dyn FnMut(Field<'_>) -> bool) -> bool {
    match field {
        Field::Value(Value::Array(items)) => items.iter().any(|i| any_leaf(Field::Value(i), pred)),
        other => pred(other),
    }
}

/// A compiled regular expression that serialises as its pattern.
#[derive(Clone)]
pub struct Pattern {
    pub source: String,
    regex: Arc<regex::Regex>,
}

impl Pattern {
    /// Compiles `source` as given (no anchoring added).
    pub fn new(source: &str) -> Result<Self, regex::Error> {
        Ok(Pattern {
            source: source.to_string(),
            regex: Arc::new(regex::Regex::new(source)?),
        })
    }

    pub fn is_match(&self, s: &str) -> bool {
        self.regex.is_match(s)
    }
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "/{}/", self.source)
    }
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Serialize for Pattern {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.source)
    }
}

impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Pattern::new(&s).map_err(serde::de::Error::custom)
    }
}

/// An IPv4 network, `a.b.c.d/len`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv4Net {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

impl Ipv4Net {
    pub fn parse(s: &str) -> Option<Ipv4Net> {
        let (a, p) = s.split_once('/').unwrap_or((s, "32"));
        let addr: Ipv4Addr = a.trim().parse().ok()?;
        let prefix: u8 = p.trim().parse().ok()?;
        (prefix <= 32).then_some(Ipv4Net { addr, prefix })
    }

    fn mask(&self) -> u32 {
        if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - self.prefix)
        }
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let m = self.mask();
        (u32::from(ip) & m) == (u32::from(self.addr) & m)
    }
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl Serialize for Ipv4Net {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Ipv4Net {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ipv4Net::parse(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("invalid IPv4 range {s}")))
    }
}

/// A filter tree.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Filter {
    /// Matches everything.
    True,
    /// Matches nothing.
    False,
    /// The key holds this string (or an array holding it).
    TermString {
        key: String,
        value: String,
    },
    /// The key casts to this integer.
    TermInt {
        key: String,
        value: i64,
    },
    TermBool {
        key: String,
        value: bool,
    },
    Gt {
        key: String,
        value: i64,
    },
    Gte {
        key: String,
        value: i64,
    },
    Lt {
        key: String,
        value: i64,
    },
    Lte {
        key: String,
        value: i64,
    },
    /// The key holds a string the pattern matches.
    Regex {
        key: String,
        pattern: Pattern,
    },
    /// The key holds an IPv4 address (optionally with a prefix length) inside the network.
    Ipv4Range {
        key: String,
        net: Ipv4Net,
    },
    /// The key is absent.
    Null {
        key: String,
    },
    And(Vec<Filter>),
    Or(Vec<Filter>),
    Not(Box<Filter>),
}

impl Filter {
    pub fn term_str(key: &str, value: &str) -> Filter {
        Filter::TermString {
            key: key.into(),
            value: value.into(),
        }
    }

    pub fn term_int(key: &str, value: i64) -> Filter {
        Filter::TermInt {
            key: key.into(),
            value,
        }
    }

    /// The key is present.
    pub fn exists(key: &str) -> Filter {
        Filter::Not(Box::new(Filter::Null { key: key.into() }))
    }

    pub fn negate(f: Filter) -> Filter {
        match f {
            Filter::True => Filter::False,
            Filter::False => Filter::True,
            Filter::Not(inner) => *inner,
            other => Filter::Not(Box::new(other)),
        }
    }

    /// AND of the filters, flattening nested ANDs and dropping `True`.
    pub fn and(filters: Vec<Filter>) -> Filter {
        let mut out = Vec::with_capacity(filters.len());
        for f in filters {
            match f {
                Filter::True => {}
                Filter::False => return Filter::False,
                Filter::And(inner) => out.extend(inner),
                other => out.push(other),
            }
        }
        match out.len() {
            0 => Filter::True,
            1 => out.pop().unwrap_or(Filter::True),
            _ => Filter::And(out),
        }
    }

    /// OR of the filters, flattening nested ORs and dropping `False`.
    pub fn or(filters: Vec<Filter>) -> Filter {
        let mut out = Vec::with_capacity(filters.len());
        for f in filters {
            match f {
                Filter::False => {}
                Filter::True => return Filter::True,
                Filter::Or(inner) => out.extend(inner),
                other => out.push(other),
            }
        }
        match out.len() {
            0 => Filter::False,
            1 => out.pop().unwrap_or(Filter::False),
            _ => Filter::Or(out),
        }
    }

    /// Evaluates the filter against `g`.
    pub fn eval<G: Getter + ?Sized>(&self, g: &G) -> bool {
        match self {
            Filter::True => true,
            Filter::False => false,
            Filter::TermString { key, value } => g.visit_field(key, &mut |f| {
                any_leaf(f, &mut |l| l.as_str() == Some(value.as_str()))
            }),
            Filter::TermInt { key, value } => g.visit_field(key, &mut |f| {
                any_leaf(f, &mut |l| l.cast_i64() == Some(*value))
            }),
            Filter::TermBool { key, value } => g.visit_field(key, &mut |f| {
                any_leaf(f, &mut |l| l.as_bool() == Some(*value))
            }),
            Filter::Gt { key, value } => int_cmp(g, key, |x| x > *value),
            Filter::Gte { key, value } => int_cmp(g, key, |x| x >= *value),
            Filter::Lt { key, value } => int_cmp(g, key, |x| x < *value),
            Filter::Lte { key, value } => int_cmp(g, key, |x| x <= *value),
            Filter::Regex { key, pattern } => g.visit_field(key, &mut |f| {
                any_leaf(f, &mut |l| l.as_str().is_some_and(|s| pattern.is_match(s)))
            }),
            Filter::Ipv4Range { key, net } => g.visit_field(key, &mut |f| {
                any_leaf(f, &mut |l| {
                    l.as_str()
                        .and_then(|s| s.split('/').next())
                        .and_then(|s| s.parse::<Ipv4Addr>().ok())
                        .is_some_and(|ip| net.contains(ip))
                })
            }),
            Filter::Null { key } => !g.has_field(key),
            Filter::And(fs) => fs.iter().all(|f| f.eval(g)),
            Filter::Or(fs) => fs.iter().any(|f| f.eval(g)),
            Filter::Not(f) => !f.eval(g),
        }
    }

    /// If the filter requires `key` to equal one of a set of strings (a term or an OR of
    /// terms on that key, possibly inside an AND), returns those strings. Used to answer
    /// queries from an index.
    pub fn required_strings(&self, key: &str) -> Option<Vec<&str>> {
        match self {
            Filter::TermString { key: k, value } if k == key => Some(vec![value.as_str()]),
            Filter::Or(fs) => {
                let mut out = Vec::new();
                for f in fs {
                    out.extend(f.required_strings(key)?);
                }
                Some(out)
            }
            Filter::And(fs) => fs.iter().find_map(|f| f.required_strings(key)),
            _ => None,
        }
    }

    /// Whether the filter is exactly a string equality on `key` (nothing else to check).
    pub fn is_single_term_on(&self, key: &str) -> bool {
        matches!(self, Filter::TermString { key: k, .. } if k == key)
    }
}

fn int_cmp<G: Getter + ?Sized>(g: &G, key: &str, pred: impl Fn(i64) -> bool) -> bool {
    g.visit_field(key, &mut |f| {
        any_leaf(f, &mut |l| l.cast_i64().is_some_and(&pred))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::Map;

    struct M(Map);
    impl Getter for M {
        fn visit_field(&self, key: &str, f: &mut dyn FnMut(Field<'_>) -> bool) -> bool {
            self.0.visit_path(key, &mut |v| f(Field::Value(v)))
        }
    }

    fn m(json: &str) -> M {
        M(serde_json::from_str(json).unwrap())
    }

    #[test]
    fn term_matches_any_array_element() {
        let g = m(r#"{"IPV4":["10.0.0.1/24","10.0.1.1/24"]}"#);
        assert!(Filter::term_str("IPV4", "10.0.1.1/24").eval(&g));
        assert!(!Filter::term_str("IPV4", "10.0.2.1/24").eval(&g));
    }

    #[test]
    fn int_term_casts_strings_and_truncates_floats() {
        let g = m(r#"{"MTU":"1500","Speed":99.9}"#);
        assert!(Filter::term_int("MTU", 1500).eval(&g));
        assert!(Filter::term_int("Speed", 99).eval(&g));
        assert!(!Filter::term_str("MTU", "1500x").eval(&g));
    }

    #[test]
    fn missing_key_never_matches_but_not_of_it_does() {
        let g = m(r#"{"A":1}"#);
        let t = Filter::term_str("B", "x");
        assert!(!t.eval(&g));
        assert!(Filter::negate(t).eval(&g));
        assert!(Filter::Null { key: "B".into() }.eval(&g));
        assert!(Filter::exists("A").eval(&g));
    }

    #[test]
    fn comparisons_are_integer_and_strict_where_named() {
        let g = m(r#"{"X":10}"#);
        let key = || "X".to_string();
        assert!(
            Filter::Gt {
                key: key(),
                value: 9
            }
            .eval(&g)
        );
        assert!(
            !Filter::Gt {
                key: key(),
                value: 10
            }
            .eval(&g)
        );
        assert!(
            Filter::Gte {
                key: key(),
                value: 10
            }
            .eval(&g)
        );
        assert!(
            Filter::Lte {
                key: key(),
                value: 10
            }
            .eval(&g)
        );
        assert!(
            !Filter::Lt {
                key: key(),
                value: 10
            }
            .eval(&g)
        );
    }

    #[test]
    fn ipv4_range_accepts_cidr_field_values() {
        let g = m(r#"{"IPV4":["192.168.0.7/24"]}"#);
        let f = Filter::Ipv4Range {
            key: "IPV4".into(),
            net: Ipv4Net::parse("192.168.0.0/16").unwrap(),
        };
        assert!(f.eval(&g));
        let f = Filter::Ipv4Range {
            key: "IPV4".into(),
            net: Ipv4Net::parse("10.0.0.0/8").unwrap(),
        };
        assert!(!f.eval(&g));
    }

    #[test]
    fn and_or_simplify() {
        assert_eq!(Filter::and(vec![Filter::True, Filter::True]), Filter::True);
        assert_eq!(Filter::or(vec![]), Filter::False);
        let t = Filter::term_str("a", "b");
        assert_eq!(Filter::and(vec![Filter::True, t.clone()]), t);
        assert_eq!(Filter::negate(Filter::negate(t.clone())), t);
    }

    #[test]
    fn required_strings_finds_index_terms() {
        let f = Filter::and(vec![
            Filter::or(vec![
                Filter::term_str("Type", "veth"),
                Filter::term_str("Type", "tun"),
            ]),
            Filter::term_int("MTU", 1500),
        ]);
        assert_eq!(f.required_strings("Type"), Some(vec!["veth", "tun"]));
        assert_eq!(f.required_strings("Name"), None);
    }

    #[test]
    fn filter_round_trips_through_json() {
        let f = Filter::and(vec![
            Filter::Regex {
                key: "Name".into(),
                pattern: Pattern::new("^eth.*$").unwrap(),
            },
            Filter::negate(Filter::term_int("MTU", 9000)),
        ]);
        let text = serde_json::to_string(&f).unwrap();
        let back: Filter = serde_json::from_str(&text).unwrap();
        assert_eq!(back, f);
    }
}
