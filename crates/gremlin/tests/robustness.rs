//! No input makes the parser or the evaluator panic: random text, and random sequences of
//! the dialect's own tokens (which reach much deeper into the evaluator), run against the
//! fixture with history and flows.

mod common;

use common::fixture;
use proptest::prelude::*;
use skydive_gremlin::{parse, query};

const TOKENS: &[&str] = &[
    "G",
    "V",
    "E",
    "Has",
    "HasKey",
    "HasNot",
    "HasEither",
    "Out",
    "In",
    "Both",
    "OutV",
    "InV",
    "BothV",
    "OutE",
    "InE",
    "BothE",
    "Dedup",
    "Count",
    "Range",
    "Limit",
    "Sort",
    "Values",
    "ValueMap",
    "Keys",
    "Sum",
    "ShortestPathTo",
    "SubGraph",
    "Context",
    "At",
    "As",
    "Select",
    "Flows",
    "Hops",
    "Nodes",
    "CaptureNode",
    "Aggregates",
    "RawPackets",
    "BPF",
    "Metrics",
    "Sockets",
    "Descendants",
    "Ascendants",
    "Neighbors",
    "NextHop",
    "Group",
    "MoreThan",
    "Within",
    "Without",
    "Ne",
    "Nee",
    "Lt",
    "Gt",
    "Lte",
    "Gte",
    "Inside",
    "Outside",
    "Between",
    "Regex",
    "Ipv4Range",
    "Metadata",
    "ASC",
    "DESC",
    "NOW",
    "FOREVER",
    "TRUE",
    "FALSE",
    "(",
    ")",
    ",",
    ".",
    ".",
    "(",
    ")",
    "'Name'",
    "'Type'",
    "'veth'",
    "'eth0'",
    "'MTU'",
    "'RelationType'",
    "'ownership'",
    "'-1s'",
    "'1m'",
    "'vethA'",
    "'host1'",
    "'*'",
    "'('",
    "'Metric.ABBytes'",
    "'Network'",
    "'10.0.0.0/24'",
    "'.*'",
    "0",
    "1",
    "2",
    "-1",
    "1500",
    "9223372036854775807",
    "-9223372036854775808",
    "1.5",
    "1600000003500",
    "'UUID'",
    "'f1'",
];

fn soup() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(TOKENS), 0..40).prop_map(|t| t.join(""))
}

fn chain() -> impl Strategy<Value = String> {
    // "G" followed by well-formed-looking steps with random parameters.
    let step = (
        prop::sample::select(&TOKENS[1..46]),
        prop::collection::vec(prop::sample::select(&TOKENS[70..]), 0..5),
    )
        .prop_map(|(s, params)| format!(".{s}({})", params.join(",")));
    prop::collection::vec(step, 0..8).prop_map(|steps| format!("G{}", steps.concat()))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn random_text_never_panics(q in ".{0,120}") {
        let fx = fixture();
        let env = fx.env();
        let _ = query(&q, &env);
    }

    #[test]
    fn token_soup_never_panics(q in soup()) {
        let fx = fixture();
        let env = fx.env();
        let _ = query(&q, &env);
    }

    #[test]
    fn step_chains_never_panic_and_errors_are_explained(q in chain()) {
        let fx = fixture();
        let env = fx.env();
        if let Err(e) = query(&q, &env) {
            prop_assert!(!e.to_string().is_empty());
        }
    }
}

#[test]
fn deep_nesting_is_an_error_not_a_stack_overflow() {
    let q = format!(
        "G.V().Has('a', {}1{})",
        "Within(".repeat(100_000),
        ")".repeat(100_000)
    );
    let e = parse(&q).unwrap_err();
    assert_eq!(
        e.to_string(),
        "Parameters nested more than 16 deep at column 128"
    );
}

#[test]
fn huge_numbers_are_handled() {
    let fx = fixture();
    let env = fx.env();
    for q in [
        "G.At(-9223372036854775808, -9223372036854775808).V().Count()",
        "G.V().Range(9223372036854775807, -9223372036854775808)",
        "G.V('host1').Descendants(9223372036854775807).Count()",
        "G.V('eth0h1').Metrics().Aggregates(9223372036854775807)",
        "G.At(9223372036854775807, '2562047h').V('eth0h1').Metrics().Aggregates(1)",
    ] {
        let _ = query(q, &env);
    }
    assert_eq!(
        query(
            "G.V('host1').Descendants(9223372036854775807).Count()",
            &env
        )
        .unwrap()
        .to_json(),
        b"17"
    );
}
