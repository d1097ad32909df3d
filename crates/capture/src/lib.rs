//! Capture sources for the agent: BPF filters compiled by libpcap, and the sources that turn
//! a node's traffic into flows (an AF_PACKET ring, libpcap, an sFlow collector, a pcapsocket)
//! behind one [`Source`] trait, each run on a thread of its own inside the node's network
//! namespace; pcap and pcapng streams for uploads. Must not depend on the API server,
//! storage or the graph: a source reports to a [`Sink`] the agent provides.

#![deny(unsafe_code)]

#[allow(unsafe_code)]
pub mod afpacket;
pub mod bpf;
pub mod datagrams;
pub mod pcapfile;
mod pcapng;
pub mod source;

pub use bpf::{Bpf, BpfError};
pub use datagrams::{Datagram, DatagramReader};
pub use source::{Report, Sink, Source, SourceError, SourceSpec};

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
