//! Capture sources for the agent (compat spec §6.5): BPF filters compiled by libpcap, and
//! the probes that turn a node's traffic into packets for the flow table.

#![deny(unsafe_code)]

#[allow(unsafe_code)]
pub mod afpacket;
pub mod bpf;
pub mod pcapfile;

pub use bpf::{Bpf, BpfError};
