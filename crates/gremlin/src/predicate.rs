//! From step parameters to filters (Skydive's predicates, Skydive's `KeyValueToFilter`).

use skydive_graph::{Filter, Ipv4Net, Pattern};

use crate::error::{Error, Result};
use crate::parser::{Param, PredicateKind};

/// How the keys `Network`, `Link` and `Transport` are treated: on flows they mean
/// "either endpoint" (`Network.A` or `Network.B`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyMode {
    Element,
    Flow,
}

fn term(key: &str, p: &Param) -> Result<Filter> {
    Ok(match p {
        Param::Str(s) => Filter::term_str(key, s),
        Param::Int(i) => Filter::term_int(key, *i),
        Param::Float(f) => Filter::term_int(key, *f as i64),
        Param::Bool(b) => Filter::TermBool {
            key: key.into(),
            value: *b,
        },
        other => {
            return Err(Error::msg(format!(
                "Unexpected value {} for key '{key}'",
                other.describe()
            )));
        }
    })
}

fn int_arg(kind: PredicateKind, p: &Param) -> Result<i64> {
    let v = match p {
        Param::Int(i) => Some(*i),
        Param::Float(f) => Some(*f as i64),
        Param::Str(s) => skydive_graph::value::cast_str_i64(s),
        _ => None,
    };
    v.ok_or_else(|| {
        Error::msg(format!(
            "{} values should be of int64 type",
            kind.name().to_ascii_uppercase()
        ))
    })
}

fn two_ints(kind: PredicateKind, args: &[Param]) -> Result<(i64, i64)> {
    match args {
        [a, b] => Ok((int_arg(kind, a)?, int_arg(kind, b)?)),
        _ => Err(Error::msg(format!("{} requires 2 parameters", kind.name()))),
    }
}

fn one_arg(kind: PredicateKind, args: &[Param]) -> Result<&Param> {
    match args {
        [a] => Ok(a),
        _ => Err(Error::msg(format!("{} requires 1 parameter", kind.name()))),
    }
}

/// The filter for `key` compared with `value` (a literal or a predicate).
pub fn key_value_filter(key: &str, value: &Param) -> Result<Filter> {
    let Param::Predicate(kind, args) = value else {
        return term(key, value);
    };
    let kind = *kind;
    let k = || key.to_string();
    Ok(match kind {
        PredicateKind::Ne => {
            let v = one_arg(kind, args)?;
            Filter::and(vec![Filter::exists(key), Filter::negate(term(key, v)?)])
        }
        PredicateKind::Nee => Filter::negate(term(key, one_arg(kind, args)?)?),
        PredicateKind::Lt => Filter::Lt {
            key: k(),
            value: int_arg(kind, one_arg(kind, args)?)?,
        },
        PredicateKind::Gt => Filter::Gt {
            key: k(),
            value: int_arg(kind, one_arg(kind, args)?)?,
        },
        PredicateKind::Lte => Filter::Lte {
            key: k(),
            value: int_arg(kind, one_arg(kind, args)?)?,
        },
        PredicateKind::Gte => Filter::Gte {
            key: k(),
            value: int_arg(kind, one_arg(kind, args)?)?,
        },
        PredicateKind::Inside => {
            let (a, b) = two_ints(kind, args)?;
            Filter::and(vec![
                Filter::Gt { key: k(), value: a },
                Filter::Lt { key: k(), value: b },
            ])
        }
        PredicateKind::Between => {
            let (a, b) = two_ints(kind, args)?;
            Filter::and(vec![
                Filter::Gte { key: k(), value: a },
                Filter::Lt { key: k(), value: b },
            ])
        }
        PredicateKind::Outside => {
            // Skydive's intended meaning, which its scanner never reached: x < a or x > b.
            let (a, b) = two_ints(kind, args)?;
            Filter::or(vec![
                Filter::Lt { key: k(), value: a },
                Filter::Gt { key: k(), value: b },
            ])
        }
        PredicateKind::Within => {
            let terms = args
                .iter()
                .map(|a| term(key, a))
                .collect::<Result<Vec<_>>>()?;
            Filter::or(terms)
        }
        PredicateKind::Without => {
            let terms = args
                .iter()
                .map(|a| term(key, a).map(Filter::negate))
                .collect::<Result<Vec<_>>>()?;
            Filter::and(terms)
        }
        PredicateKind::Regex => {
            let Param::Str(pattern) = one_arg(kind, args)? else {
                return Err(Error::msg("Regex requires a string parameter"));
            };
            if pattern.starts_with('^') || pattern.ends_with('$') {
                return Err(Error::msg(
                    "Regex are anchored by default, ^ and $ don't have to be provided",
                ));
            }
            let anchored = format!("^(?:{pattern})$");
            Filter::Regex {
                key: k(),
                pattern: Pattern::new(&anchored)
                    .map_err(|e| Error::msg(format!("Invalid regex {pattern:?}: {e}")))?,
            }
        }
        PredicateKind::Ipv4Range => {
            let Param::Str(cidr) = one_arg(kind, args)? else {
                return Err(Error::msg("Ipv4Range requires a string parameter"));
            };
            Filter::Ipv4Range {
                key: k(),
                net: Ipv4Net::parse(cidr)
                    .ok_or_else(|| Error::msg(format!("Invalid IPv4 range {cidr:?}")))?,
            }
        }
    })
}

fn expand(key: &str, mode: KeyMode, value: &Param) -> Result<Filter> {
    if mode == KeyMode::Flow && matches!(key, "Network" | "Link" | "Transport") {
        let a = key_value_filter(&format!("{key}.A"), value)?;
        let b = key_value_filter(&format!("{key}.B"), value)?;
        return Ok(Filter::or(vec![a, b]));
    }
    key_value_filter(key, value)
}

fn pairs(params: &[Param]) -> Result<Vec<(&str, &Param)>> {
    if params.len() % 2 != 0 {
        return Err(Error::msg("slice must be defined by pair k,v"));
    }
    params
        .chunks(2)
        .map(|c| match &c[0] {
            Param::Str(k) => Ok((k.as_str(), &c[1])),
            other => Err(Error::msg(format!(
                "keys should be of string type, got: {}",
                other.describe()
            ))),
        })
        .collect()
}

/// `Has(k)` / `Has(k1, v1, k2, v2, …)`: AND of the pairs; a single key means "present".
pub fn has_filter(params: &[Param], mode: KeyMode) -> Result<Filter> {
    if let [Param::Str(k)] = params {
        return Ok(Filter::exists(k));
    }
    let filters = pairs(params)?
        .into_iter()
        .map(|(k, v)| expand(k, mode, v))
        .collect::<Result<Vec<_>>>()?;
    Ok(Filter::and(filters))
}

/// `HasEither(k1, v1, …)`: OR of the pairs.
pub fn has_either_filter(params: &[Param], mode: KeyMode) -> Result<Filter> {
    let filters = pairs(params)?
        .into_iter()
        .map(|(k, v)| expand(k, mode, v))
        .collect::<Result<Vec<_>>>()?;
    Ok(Filter::or(filters))
}

/// The optional `k, v, …` filter of `Out`, `In`, `OutE`, … (empty means everything).
pub fn optional_filter(params: &[Param]) -> Result<Filter> {
    if params.is_empty() {
        return Ok(Filter::True);
    }
    has_filter(params, KeyMode::Element)
}

/// The filter of a `Metadata(k1, v1, …)` parameter.
pub fn metadata_filter(p: &Param) -> Result<Filter> {
    match p {
        Param::Metadata(params) => has_filter(params, KeyMode::Element),
        other => Err(Error::msg(format!(
            "expected Metadata(...) parameter, got: {}",
            other.describe()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use skydive_graph::{Getter, Map};

    struct M(Map);
    impl Getter for M {
        fn visit_field(
            &self,
            key: &str,
            f: &mut dyn FnMut(skydive_graph::Field<'_>) -> bool,
        ) -> bool {
            self.0
                .visit_path(key, &mut |v| f(skydive_graph::Field::Value(v)))
        }
    }

    fn eval(params: Vec<Param>, json: &str) -> bool {
        has_filter(&params, KeyMode::Element)
            .unwrap()
            .eval(&M(serde_json::from_str(json).unwrap()))
    }

    fn pred(kind: PredicateKind, args: Vec<Param>) -> Param {
        Param::Predicate(kind, args)
    }

    fn s(v: &str) -> Param {
        Param::Str(v.into())
    }

    #[test]
    fn ne_needs_the_key_and_nee_does_not() {
        let ne = || vec![s("A"), pred(PredicateKind::Ne, vec![s("x")])];
        let nee = || vec![s("A"), pred(PredicateKind::Nee, vec![s("x")])];
        assert!(eval(ne(), r#"{"A":"y"}"#));
        assert!(!eval(ne(), r#"{"A":"x"}"#));
        assert!(!eval(ne(), r#"{}"#));
        assert!(eval(nee(), r#"{}"#));
        assert!(!eval(nee(), r#"{"A":"x"}"#));
    }

    #[test]
    fn range_predicates_have_documented_bounds() {
        let inside = || {
            vec![
                s("X"),
                pred(PredicateKind::Inside, vec![Param::Int(1), Param::Int(3)]),
            ]
        };
        let between = || {
            vec![
                s("X"),
                pred(PredicateKind::Between, vec![Param::Int(1), Param::Int(3)]),
            ]
        };
        let outside = || {
            vec![
                s("X"),
                pred(PredicateKind::Outside, vec![Param::Int(1), Param::Int(3)]),
            ]
        };
        let results = |p: fn() -> Vec<Param>| -> Vec<bool> {
            (0..5)
                .map(|x| eval(p(), &format!(r#"{{"X":{x}}}"#)))
                .collect()
        };
        assert_eq!(results(inside), vec![false, false, true, false, false]);
        assert_eq!(results(between), vec![false, true, true, false, false]);
        assert_eq!(results(outside), vec![true, false, false, false, true]);
    }

    #[test]
    fn within_compares_strings_as_strings_and_numbers_as_ints() {
        let p = || {
            vec![
                s("A"),
                pred(PredicateKind::Within, vec![s("10"), Param::Int(20)]),
            ]
        };
        assert!(eval(p(), r#"{"A":"10"}"#));
        assert!(eval(p(), r#"{"A":20}"#));
        assert!(eval(p(), r#"{"A":"20"}"#));
        assert!(!eval(p(), r#"{"A":10}"#));
    }

    #[test]
    fn regex_is_anchored_and_refuses_anchors() {
        let p = || vec![s("Name"), pred(PredicateKind::Regex, vec![s("eth.")])];
        assert!(eval(p(), r#"{"Name":"eth0"}"#));
        assert!(!eval(p(), r#"{"Name":"veth0"}"#));
        let err = has_filter(
            &[s("Name"), pred(PredicateKind::Regex, vec![s("^eth")])],
            KeyMode::Element,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "Regex are anchored by default, ^ and $ don't have to be provided"
        );
    }

    #[test]
    fn comparisons_need_integers() {
        let err = has_filter(
            &[s("A"), pred(PredicateKind::Lt, vec![s("ten")])],
            KeyMode::Element,
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "LT values should be of int64 type");
        assert!(eval(
            vec![s("A"), pred(PredicateKind::Lt, vec![s("10")])],
            r#"{"A":9}"#
        ));
    }

    #[test]
    fn odd_pairs_are_refused() {
        let err = has_filter(&[s("A"), s("b"), s("C")], KeyMode::Element).unwrap_err();
        assert_eq!(err.to_string(), "slice must be defined by pair k,v");
    }

    #[test]
    fn flow_keys_expand_to_either_endpoint() {
        let f = has_filter(&[s("Network"), s("10.0.0.1")], KeyMode::Flow).unwrap();
        assert!(f.eval(&M(
            serde_json::from_str(r#"{"Network":{"B":"10.0.0.1"}}"#).unwrap()
        )));
    }
}
