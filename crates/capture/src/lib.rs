//! Capture sources for the agent (compat spec §6.5): BPF filters compiled by libpcap, and
//! the probes that turn a node's traffic into packets for the flow table.

#![deny(unsafe_code)]

#[allow(unsafe_code)]
pub mod afpacket;
pub mod bpf;
pub mod datagrams;
pub mod pcapfile;
mod pcapng;

pub use bpf::{Bpf, BpfError};
pub use datagrams::{Datagram, DatagramReader};

/// Gives a UDP socket a receive buffer of `bytes` (beyond `net.core.rmem_max` when the agent
/// runs as root), so that bursts of sFlow datagrams wait in the kernel instead of being lost.
/// Returns the size the kernel granted.
pub fn large_receive_buffer(sock: &std::net::UdpSocket, bytes: usize) -> usize {
    use nix::sys::socket::{setsockopt, sockopt};
    if setsockopt(sock, sockopt::RcvBufForce, &bytes).is_err() {
        let _ = setsockopt(sock, sockopt::RcvBuf, &bytes);
    }
    nix::sys::socket::getsockopt(sock, sockopt::RcvBuf).unwrap_or(0)
}
