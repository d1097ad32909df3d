//! The Open vSwitch probe: bridges, ports and interfaces from the OVSDB `Bridge`, `Port` and
//! `Interface` tables, kept live through a monitor.
//!
//! * `ovsbridge` nodes, owned by the host; `ovsport` nodes, linked from their bridge by an
//!   ownership and a layer2 edge (as Skydive draws them);
//! * an interface whose device the netlink probe already shows in the host's namespace (same
//!   name) is **that** node: the probe adds its OVS keys (`UUID`, `OfPort`, `ExtID`, `Ovs`) to
//!   it; otherwise (patch ports, tunnels of the userspace datapath) the probe creates the node,
//!   owned by the bridge;
//! * `port → interface` layer2 edges, and a layer2 edge with `Type: patch` between patch peers;
//! * the switch itself (`ovs-system`) with its version, and with `ovs.oflow.enable` the
//!   bridges' OpenFlow rules and groups.
//!
//! `reducer.rs` is the pure part (tables and graph in, the probe's elements out), tested on
//! replies recorded from a real ovsdb-server (`fixtures/`); `adapter.rs` talks to OVSDB and
//! `ovs-ofctl` and keeps the graph in step.

mod adapter;
mod reducer;
#[cfg(test)]
mod tests;

pub use adapter::{OvsConfig, OvsdbProbe};
pub use reducer::{Inputs, MONITORED, OfTables, OvsState, desired, monitored, ops};
