//! Syntax tree and parser (Skydive's Gremlin syntax).
//!
//! ```text
//! query     := "G" ( "." step )*
//! step      := KEYWORD "(" [ param ( "," param )* ] ")"
//! param     := NUMBER | STRING | TRUE | FALSE | ASC | DESC | NOW | FOREVER
//!            | predicate "(" params ")" | METADATA "(" params ")"
//! ```
//!
//! As in Skydive, commas between parameters are optional.

use crate::error::{Error, Result};
use crate::lexer::{Token, TokenKind, tokenize};

/// A step of a query.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StepKind {
    V,
    E,
    Has,
    HasKey,
    HasNot,
    HasEither,
    Out,
    In,
    Both,
    OutV,
    InV,
    BothV,
    OutE,
    InE,
    BothE,
    Dedup,
    Count,
    Range,
    Limit,
    Sort,
    Values,
    ValueMap,
    Keys,
    Sum,
    ShortestPathTo,
    SubGraph,
    Context,
    As,
    Select,
    Flows,
    Hops,
    Nodes,
    CaptureNode,
    Aggregates,
    RawPackets,
    Bpf,
    Metrics,
    Sockets,
    Descendants,
    Ascendants,
    Neighbors,
    NextHop,
    Group,
    MoreThan,
    Workflow,
}

impl StepKind {
    /// Looks a step up by its upper-cased keyword.
    pub fn from_keyword(kw: &str) -> Option<StepKind> {
        use StepKind::*;
        Some(match kw {
            "V" => V,
            "E" => E,
            "HAS" => Has,
            "HASKEY" => HasKey,
            "HASNOT" => HasNot,
            "HASEITHER" => HasEither,
            "OUT" => Out,
            "IN" => In,
            "BOTH" => Both,
            "OUTV" => OutV,
            "INV" => InV,
            "BOTHV" => BothV,
            "OUTE" => OutE,
            "INE" => InE,
            "BOTHE" => BothE,
            "DEDUP" => Dedup,
            "COUNT" => Count,
            "RANGE" => Range,
            "LIMIT" => Limit,
            "SORT" => Sort,
            "VALUES" => Values,
            "VALUEMAP" => ValueMap,
            "KEYS" => Keys,
            "SUM" => Sum,
            "SHORTESTPATHTO" => ShortestPathTo,
            "SUBGRAPH" => SubGraph,
            "CONTEXT" | "AT" => Context,
            "AS" => As,
            "SELECT" => Select,
            "FLOWS" => Flows,
            "HOPS" => Hops,
            "NODES" => Nodes,
            "CAPTURENODE" | "NODE" => CaptureNode,
            "AGGREGATES" => Aggregates,
            "RAWPACKETS" => RawPackets,
            "BPF" => Bpf,
            "METRICS" => Metrics,
            "SOCKETS" => Sockets,
            "DESCENDANTS" => Descendants,
            "ASCENDANTS" => Ascendants,
            "NEIGHBORS" => Neighbors,
            "NEXTHOP" => NextHop,
            "GROUP" => Group,
            "MORETHAN" => MoreThan,
            "WORKFLOW" => Workflow,
            _ => return None,
        })
    }

    /// The step's name as users write it.
    pub fn name(self) -> &'static str {
        use StepKind::*;
        match self {
            V => "V",
            E => "E",
            Has => "Has",
            HasKey => "HasKey",
            HasNot => "HasNot",
            HasEither => "HasEither",
            Out => "Out",
            In => "In",
            Both => "Both",
            OutV => "OutV",
            InV => "InV",
            BothV => "BothV",
            OutE => "OutE",
            InE => "InE",
            BothE => "BothE",
            Dedup => "Dedup",
            Count => "Count",
            Range => "Range",
            Limit => "Limit",
            Sort => "Sort",
            Values => "Values",
            ValueMap => "ValueMap",
            Keys => "Keys",
            Sum => "Sum",
            ShortestPathTo => "ShortestPathTo",
            SubGraph => "SubGraph",
            Context => "Context",
            As => "As",
            Select => "Select",
            Flows => "Flows",
            Hops => "Hops",
            Nodes => "Nodes",
            CaptureNode => "CaptureNode",
            Aggregates => "Aggregates",
            RawPackets => "RawPackets",
            Bpf => "BPF",
            Metrics => "Metrics",
            Sockets => "Sockets",
            Descendants => "Descendants",
            Ascendants => "Ascendants",
            Neighbors => "Neighbors",
            NextHop => "NextHop",
            Group => "Group",
            MoreThan => "MoreThan",
            Workflow => "Workflow",
        }
    }
}

/// A predicate usable as a value in `Has`-style steps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PredicateKind {
    Within,
    Without,
    Ne,
    Nee,
    Lt,
    Gt,
    Lte,
    Gte,
    Inside,
    Outside,
    Between,
    Regex,
    Ipv4Range,
}

impl PredicateKind {
    fn from_keyword(kw: &str) -> Option<Self> {
        use PredicateKind::*;
        Some(match kw {
            "WITHIN" => Within,
            "WITHOUT" => Without,
            "NE" => Ne,
            "NEE" => Nee,
            "LT" => Lt,
            "GT" => Gt,
            "LTE" => Lte,
            "GTE" => Gte,
            "INSIDE" => Inside,
            "OUTSIDE" => Outside,
            "BETWEEN" => Between,
            "REGEX" => Regex,
            "IPV4RANGE" => Ipv4Range,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        use PredicateKind::*;
        match self {
            Within => "Within",
            Without => "Without",
            Ne => "Ne",
            Nee => "Nee",
            Lt => "Lt",
            Gt => "Gt",
            Lte => "Lte",
            Gte => "Gte",
            Inside => "Inside",
            Outside => "Outside",
            Between => "Between",
            Regex => "Regex",
            Ipv4Range => "Ipv4Range",
        }
    }
}

/// A step parameter.
#[derive(Clone, Debug, PartialEq)]
pub enum Param {
    Int(i64),
    Float(f64),
    Str(String),
    Bool(bool),
    Asc,
    Desc,
    Now,
    Forever,
    Predicate(PredicateKind, Vec<Param>),
    Metadata(Vec<Param>),
}

impl Param {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Param::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The parameter as an integer (floats truncated).
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Param::Int(i) => Some(*i),
            Param::Float(f) => Some(*f as i64),
            _ => None,
        }
    }

    /// A description for error messages.
    pub fn describe(&self) -> String {
        match self {
            Param::Int(i) => i.to_string(),
            Param::Float(f) => f.to_string(),
            Param::Str(s) => format!("{s:?}"),
            Param::Bool(b) => b.to_string(),
            Param::Asc => "ASC".into(),
            Param::Desc => "DESC".into(),
            Param::Now => "NOW".into(),
            Param::Forever => "FOREVER".into(),
            Param::Predicate(k, _) => format!("{}(...)", k.name()),
            Param::Metadata(_) => "Metadata(...)".into(),
        }
    }
}

/// One step with its parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    pub kind: StepKind,
    pub params: Vec<Param>,
    /// Byte offset of the step name in the query.
    pub pos: usize,
}

/// A parsed query: the steps after `G`.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Query {
    pub steps: Vec<Step>,
}

/// How deeply predicates and `Metadata(...)` may nest inside parameters.
const MAX_NESTING: usize = 16;

struct Parser {
    tokens: Vec<Token>,
    i: usize,
    depth: usize,
}

impl Parser {
    fn peek(&self) -> &Token {
        &self.tokens[self.i.min(self.tokens.len() - 1)]
    }

    fn next(&mut self) -> Token {
        let t = self.peek().clone();
        if self.i < self.tokens.len() - 1 {
            self.i += 1;
        }
        t
    }

    fn query(&mut self) -> Result<Query> {
        let first = self.next();
        if first.kind != TokenKind::Ident("G".into()) {
            return Err(Error::at(
                first.pos,
                format!("found {:?}, expected `G`", first.describe()),
            ));
        }
        let mut steps = Vec::new();
        loop {
            let t = self.next();
            match t.kind {
                TokenKind::Eof => break,
                TokenKind::Dot => {}
                _ => {
                    return Err(Error::at(
                        t.pos,
                        format!("found {:?}, expected `.`", t.describe()),
                    ));
                }
            }
            steps.push(self.step()?);
        }
        Ok(Query { steps })
    }

    fn step(&mut self) -> Result<Step> {
        let t = self.next();
        let kind = match &t.kind {
            TokenKind::Ident(kw) => StepKind::from_keyword(kw),
            _ => None,
        }
        .ok_or_else(|| {
            Error::at(
                t.pos,
                format!("Expected step function, got: {}", t.describe()),
            )
        })?;
        let lp = self.next();
        if lp.kind != TokenKind::LParen {
            return Err(Error::at(
                lp.pos,
                format!("Expected left parenthesis, got: {}", lp.describe()),
            ));
        }
        let params = self.params()?;
        let step = Step {
            kind,
            params,
            pos: t.pos,
        };
        check_arity(&step)?;
        Ok(step)
    }

    /// Parameters up to and including the closing parenthesis.
    fn params(&mut self) -> Result<Vec<Param>> {
        if self.depth >= MAX_NESTING {
            let pos = self.peek().pos;
            return Err(Error::at(
                pos,
                format!("Parameters nested more than {MAX_NESTING} deep"),
            ));
        }
        self.depth += 1;
        let out = self.params_inner();
        self.depth -= 1;
        out
    }

    fn params_inner(&mut self) -> Result<Vec<Param>> {
        let mut params = Vec::new();
        loop {
            let t = self.next();
            match &t.kind {
                TokenKind::RParen => return Ok(params),
                TokenKind::Comma => continue,
                TokenKind::Eof => {
                    return Err(Error::at(t.pos, "Expected right parenthesis".to_string()));
                }
                TokenKind::Number(n) => params.push(parse_number(n, t.pos)?),
                TokenKind::Str(s) => params.push(Param::Str(s.clone())),
                TokenKind::Ident(kw) => {
                    let p = match kw.as_str() {
                        "TRUE" => Param::Bool(true),
                        "FALSE" => Param::Bool(false),
                        "ASC" => Param::Asc,
                        "DESC" => Param::Desc,
                        "NOW" => Param::Now,
                        "FOREVER" => Param::Forever,
                        "METADATA" => {
                            self.expect_lparen()?;
                            Param::Metadata(self.params()?)
                        }
                        other => match PredicateKind::from_keyword(other) {
                            Some(kind) => {
                                self.expect_lparen()?;
                                Param::Predicate(kind, self.params()?)
                            }
                            None => {
                                return Err(Error::at(
                                    t.pos,
                                    format!(
                                        "Unexpected token while parsing parameters, got: {}",
                                        t.lit
                                    ),
                                ));
                            }
                        },
                    };
                    params.push(p);
                }
                _ => {
                    return Err(Error::at(
                        t.pos,
                        format!(
                            "Unexpected token while parsing parameters, got: {}",
                            t.describe()
                        ),
                    ));
                }
            }
        }
    }

    fn expect_lparen(&mut self) -> Result<()> {
        let t = self.next();
        if t.kind == TokenKind::LParen {
            Ok(())
        } else {
            Err(Error::at(
                t.pos,
                format!("Expected left parenthesis, got: {}", t.describe()),
            ))
        }
    }
}

fn parse_number(text: &str, pos: usize) -> Result<Param> {
    if let Ok(i) = text.parse::<i64>() {
        return Ok(Param::Int(i));
    }
    text.parse::<f64>()
        .ok()
        .filter(|f| f.is_finite())
        .map(Param::Float)
        .ok_or_else(|| Error::at(pos, format!("Expected number token, got: {text}")))
}

fn describe_params(params: &[Param]) -> String {
    let items: Vec<String> = params.iter().map(Param::describe).collect();
    format!("[{}]", items.join(" "))
}

/// The parse-time checks of Skydive's parser, with its messages.
fn check_arity(step: &Step) -> Result<()> {
    use StepKind::*;
    let p = &step.params;
    let n = p.len();
    let all_strings = p.iter().all(|x| matches!(x, Param::Str(_)));
    let err = |what: &str| {
        Err(Error::at(
            step.pos,
            format!("{} {} : {}", step.kind.name(), what, describe_params(p)),
        ))
    };
    match step.kind {
        V | E if n == 1 && !all_strings => err("requires a string identifier"),
        HasKey | HasNot if n != 1 || !all_strings => err("requires 1 string parameter"),
        Dedup if !all_strings => err("accepts only string parameters"),
        ShortestPathTo if !(1..=2).contains(&n) => err("requires 1 or 2 parameters"),
        Count if n != 0 => err("does not accept parameters"),
        Sort => match p.as_slice() {
            [] | [Param::Str(_)] | [Param::Asc | Param::Desc] => Ok(()),
            [Param::Asc | Param::Desc, Param::Str(_)] => Ok(()),
            _ => err("accepts at most an order (ASC or DESC) and a string key"),
        },
        Range if n != 2 => err("requires 2 parameters"),
        Range if p.iter().any(|x| x.as_int().is_none()) => err("requires integer parameters"),
        Range if p.iter().any(|x| x.as_int().is_some_and(|v| v < 0)) => {
            err("requires non-negative parameters")
        }
        Range if p[0].as_int() > p[1].as_int() => {
            err("requires its first parameter not above its second")
        }
        Limit if n != 1 => err("requires 1 parameter"),
        Limit if p[0].as_int().is_none() => err("requires an integer parameter"),
        Limit if p[0].as_int().is_some_and(|v| v < 0) => err("requires a non-negative parameter"),
        Values if n != 1 || !all_strings => err("requires 1 string parameter"),
        ValueMap if n == 0 || !all_strings => err("requires at least 1 string parameter"),
        As if n != 1 || !all_strings => err("requires 1 string parameter"),
        Select if n == 0 || !all_strings => err("requires at least 1 string parameter"),
        Context if n == 0 => Err(Error::at(
            step.pos,
            "At least one parameter must be provided to 'Context'".to_string(),
        )),
        Context if n > 2 => Err(Error::at(
            step.pos,
            "At most two parameters must be provided to 'Context'".to_string(),
        )),
        NextHop if n != 1 || !all_strings => err("requires 1 string parameter (an IP address)"),
        Bpf if n != 1 || !all_strings => err("requires 1 string parameter (a BPF filter)"),
        MoreThan if n != 1 || p[0].as_int().is_none() => err("requires 1 integer parameter"),
        Aggregates if n > 1 || p.first().is_some_and(|x| x.as_int().is_none()) => {
            err("accepts at most 1 integer parameter (the slice length in seconds)")
        }
        Group if n > 1 || !all_strings => err("accepts at most 1 string parameter"),
        Metrics if n > 1 || !all_strings => err("accepts at most 1 string parameter"),
        _ => Ok(()),
    }
}

/// Parses a query.
pub fn parse(input: &str) -> Result<Query> {
    let tokens = tokenize(input)?;
    Parser {
        tokens,
        i: 0,
        depth: 0,
    }
    .query()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_steps_and_params() {
        let q = parse("G.V().Has('Name', 'eth0', 'MTU', Gt(1000)).Out().Limit(2)").unwrap();
        let kinds: Vec<StepKind> = q.steps.iter().map(|s| s.kind).collect();
        assert_eq!(
            kinds,
            vec![StepKind::V, StepKind::Has, StepKind::Out, StepKind::Limit]
        );
        assert_eq!(
            q.steps[1].params,
            vec![
                Param::Str("Name".into()),
                Param::Str("eth0".into()),
                Param::Str("MTU".into()),
                Param::Predicate(PredicateKind::Gt, vec![Param::Int(1000)])
            ]
        );
    }

    #[test]
    fn commas_are_optional_as_in_skydive() {
        assert_eq!(
            parse("G.V().Has('a' 'b')").unwrap(),
            parse("G.V().Has('a','b')").unwrap()
        );
    }

    #[test]
    fn at_is_an_alias_of_context_and_node_of_capturenode() {
        let q = parse("G.At('-1s').Flows().Node()").unwrap();
        assert_eq!(q.steps[0].kind, StepKind::Context);
        assert_eq!(q.steps[2].kind, StepKind::CaptureNode);
    }

    #[test]
    fn outside_is_parsed() {
        let q = parse("G.V().Has('MTU', Outside(1000, 2000))").unwrap();
        assert!(matches!(
            q.steps[1].params[1],
            Param::Predicate(PredicateKind::Outside, _)
        ));
    }

    #[test]
    fn errors_name_position_and_expectation() {
        let cases = [
            ("V()", "found \"V\", expected `G` at column 1"),
            ("G V()", "found \"V\", expected `.` at column 3"),
            ("G.Foo()", "Expected step function, got: Foo at column 3"),
            (
                "G.V",
                "Expected left parenthesis, got: end of query at column 4",
            ),
            ("G.V(", "Expected right parenthesis at column 5"),
            (
                "G.V().Has(Foo)",
                "Unexpected token while parsing parameters, got: Foo at column 11",
            ),
            (
                "G.V().Range(1)",
                "Range requires 2 parameters : [1] at column 7",
            ),
            (
                "G.V().Count(1)",
                "Count does not accept parameters : [1] at column 7",
            ),
            (
                "G.Context()",
                "At least one parameter must be provided to 'Context' at column 3",
            ),
            (
                "G.V().HasKey(1)",
                "HasKey requires 1 string parameter : [1] at column 7",
            ),
            (
                "G.V().Has('a', 1.2.3)",
                "Expected number token, got: 1.2.3 at column 16",
            ),
        ];
        for (q, want) in cases {
            assert_eq!(parse(q).unwrap_err().to_string(), want, "query {q}");
        }
    }

    #[test]
    fn numbers_are_int_then_float() {
        let q = parse("G.V().Has('a', 3, 'b', 2.5, 'c', 99999999999)").unwrap();
        assert_eq!(q.steps[1].params[1], Param::Int(3));
        assert_eq!(q.steps[1].params[3], Param::Float(2.5));
        assert_eq!(q.steps[1].params[5], Param::Int(99999999999));
    }
}
