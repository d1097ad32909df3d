//! Skydive's Gremlin dialect: the lexer, the parser, and an evaluator that runs queries
//! against a graph view, the graph's history and a flow source, producing results whose
//! JSON matches Skydive's.
//!
//! This crate is pure: it reads snapshots and asks traits for flows; it does no I/O. Must not
//! depend on anything of ours but the graph and the flow model.

#![forbid(unsafe_code)]

pub mod error;
pub mod eval;
pub mod lexer;
pub mod metrics;
pub mod nexthop;
pub mod output;
pub mod parser;
pub mod predicate;
pub mod time;

pub use error::{Error, LimitHit, Result};
pub use eval::{
    BpfCompiler, Env, FlowQuery, FlowSource, FlowSourceError, Limits, PacketMatcher, execute,
    execute_limited, query, query_limited,
};
pub use output::{GraphRef, Output};
pub use parser::{Param, PredicateKind, Query, Step, StepKind, parse};
pub use time::TimeSlice;
