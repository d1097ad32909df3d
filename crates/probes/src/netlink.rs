//! The netlink probe (the netlink interface nodes of Skydive): the interfaces of a
//! namespace with their addresses, routes, neighbours and counters.

pub mod adapter;
pub mod reducer;
pub mod socket;

#[cfg(test)]
mod tests;
