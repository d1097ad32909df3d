//! Skydive's flows: packet decoding (zero-copy), flow keys with Skydive's hashes, the flow
//! table, the Flow model and its JSON encoding.
//!
//! This crate is pure (no I/O): capture probes feed it packets, the agent ships the flows it
//! produces, and the analyzer stores and queries them. Must not depend on anything of ours
//! but the graph.

#![forbid(unsafe_code)]

pub mod capture;
pub mod decode;
pub mod extra;
#[doc(hidden)]
pub mod fuzzing;
mod hot;
pub mod model;
pub mod packet;
pub mod sflow;
pub mod table;

pub use model::{
    FinishType, Flow, FlowLayer, FlowMetric, FlowProtocol, IcmpLayer, IcmpType, IpMetric,
    RawPacket, Str, TcpMetric, TransportLayer, WireFlow,
};
pub use table::{FlowTable, Packet, TableConfig, TableStats};
