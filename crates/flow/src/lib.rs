//! Skydive's flows: the Flow model and its JSON encoding.
//!
//! This crate is pure (no I/O): capture probes feed it packets, the agent ships the flows it
//! produces, and the analyzer stores and queries them.

#![forbid(unsafe_code)]

pub mod capture;
pub mod model;

pub use model::{
    FinishType, Flow, FlowLayer, FlowMetric, FlowProtocol, IcmpLayer, IcmpType, IpMetric,
    RawPacket, TcpMetric, TransportLayer,
};
