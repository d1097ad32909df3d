//! The netlink probe (compat spec §3.4, netlink interface node): the interfaces of a
//! namespace with their addresses, routes, neighbours and counters.

pub mod adapter;
pub mod reducer;
pub mod socket;

#[cfg(test)]
mod tests;
