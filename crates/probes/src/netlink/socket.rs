//! rtnetlink sockets driven from async code: dumps, single requests, and the event stream.
//! A socket belongs to the network namespace of the thread that created it, for its whole
//! life, whichever thread then uses it (netns.rs opens them inside each namespace).

use std::io;

use netlink_packet_core::{
    NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};
use tokio::io::unix::AsyncFd;

/// Multicast groups of the event socket (linux/rtnetlink.h `RTMGRP_*`): links, neighbours,
/// IPv4 and IPv6 addresses and routes.
const GROUPS: u32 = 0x1 | 0x4 | 0x10 | 0x40 | 0x100 | 0x400;
/// Receive buffer of the event socket: room for the bursts of a busy host.
const EVENT_RCVBUF: usize = 8 << 20;
const RECV_BUF: usize = 256 << 10;

thread_local! {
    static RECV: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(Vec::with_capacity(RECV_BUF));
}

/// Why a netlink operation failed.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("netlink socket error: {0}")]
    Io(#[from] io::Error),
    /// The kernel dropped events (`ENOBUFS`): the state must be read again.
    #[error("netlink events were lost (receive buffer overrun)")]
    Overrun,
    /// The state changed during a dump; dump again.
    #[error("netlink dump interrupted by a change")]
    Interrupted,
    #[error("the kernel refused a netlink request: {0}")]
    Refused(io::Error),
    #[error("malformed netlink message: {0}")]
    Decode(String),
}

/// Creates the socket that receives the namespace's events (in the calling thread's
/// namespace).
pub fn event_socket() -> io::Result<Socket> {
    let mut s = Socket::new(NETLINK_ROUTE)?;
    s.bind(&SocketAddr::new(0, GROUPS))?;
    // A larger buffer makes overruns rare; they are handled anyway.
    let _ = s.set_rx_buf_sz(EVENT_RCVBUF);
    s.set_non_blocking(true)?;
    Ok(s)
}

/// Creates a socket for requests (dumps) in the calling thread's namespace.
pub fn request_socket() -> io::Result<Socket> {
    let mut s = Socket::new(NETLINK_ROUTE)?;
    s.bind_auto()?;
    let _ = s.set_netlink_get_strict_chk(true);
    s.set_non_blocking(true)?;
    Ok(s)
}

/// A netlink socket in async code.
pub struct NlSocket {
    fd: AsyncFd<Socket>,
    seq: u32,
}

impl std::fmt::Debug for NlSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NlSocket")
    }
}

/// Splits a datagram into messages. A message that does not parse is skipped (and
/// counted by the caller); the rest of the datagram is still read.
pub fn parse_datagram(buf: &[u8]) -> (Vec<NetlinkMessage<RouteNetlinkMessage>>, usize) {
    let mut out = Vec::new();
    let mut bad = 0;
    let mut off = 0;
    while off + 16 <= buf.len() {
        let len = u32::from_ne_bytes([buf[off], buf[off + 1], buf[off + 2], buf[off + 3]]) as usize;
        if len < 16 || off + len > buf.len() {
            bad += 1;
            break;
        }
        match NetlinkMessage::<RouteNetlinkMessage>::deserialize(&buf[off..off + len]) {
            Ok(m) => out.push(m),
            Err(_) => bad += 1,
        }
        off += (len + 3) & !3;
    }
    (out, bad)
}

impl NlSocket {
    pub fn new(s: Socket) -> io::Result<NlSocket> {
        s.set_non_blocking(true)?;
        Ok(NlSocket {
            fd: crate::sys::register_netlink(s)?,
            seq: 0,
        })
    }

    async fn send(&mut self, msg: RouteNetlinkMessage, flags: u16) -> Result<u32, NetlinkError> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = flags;
        header.sequence_number = self.seq;
        let mut m = NetlinkMessage::new(header, NetlinkPayload::from(msg));
        m.finalize();
        let mut out = vec![0u8; m.buffer_len()];
        m.serialize(&mut out);
        loop {
            let mut guard = self.fd.writable().await?;
            match guard.try_io(|s| s.get_ref().send(&out, 0)) {
                Ok(r) => {
                    r?;
                    return Ok(self.seq);
                }
                Err(_would_block) => continue,
            }
        }
    }

    /// Receives one datagram's messages. `ENOBUFS` is reported as [`NetlinkError::Overrun`].
    pub async fn recv(
        &mut self,
    ) -> Result<(Vec<NetlinkMessage<RouteNetlinkMessage>>, usize), NetlinkError> {
        loop {
            let mut guard = self.fd.readable().await?;
            // One buffer per thread, not per socket (an agent has two sockets per namespace):
            // a datagram is received and parsed without yielding in between.
            let got = RECV.with_borrow_mut(|buf| {
                buf.clear();
                guard
                    .try_io(|s| s.get_ref().recv(buf, 0))
                    .map(|r| r.map(|_| parse_datagram(buf)))
            });
            match got {
                Ok(Ok(parsed)) => return Ok(parsed),
                Ok(Err(e)) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    return Err(NetlinkError::Overrun);
                }
                Ok(Err(e)) => return Err(e.into()),
                Err(_would_block) => continue,
            }
        }
    }

    /// Dumps a kind of object (links, addresses, routes, neighbours).
    pub async fn dump(
        &mut self,
        msg: RouteNetlinkMessage,
    ) -> Result<Vec<RouteNetlinkMessage>, NetlinkError> {
        let seq = self.send(msg, NLM_F_REQUEST | NLM_F_DUMP).await?;
        let mut out = Vec::new();
        loop {
            let (msgs, _) = self.recv().await?;
            for m in msgs {
                if m.header.sequence_number != seq {
                    continue;
                }
                if m.header.flags & NLM_F_DUMP_INTR != 0 {
                    return Err(NetlinkError::Interrupted);
                }
                match m.payload {
                    NetlinkPayload::InnerMessage(i) => out.push(i),
                    NetlinkPayload::Done(_) => return Ok(out),
                    NetlinkPayload::Error(e) => match e.code {
                        Some(code) => {
                            return Err(NetlinkError::Refused(io::Error::from_raw_os_error(
                                -code.get(),
                            )));
                        }
                        None => return Ok(out),
                    },
                    _ => {}
                }
            }
        }
    }

    /// Sends a request that has one answer.
    pub async fn request(
        &mut self,
        msg: RouteNetlinkMessage,
    ) -> Result<RouteNetlinkMessage, NetlinkError> {
        let seq = self.send(msg, NLM_F_REQUEST).await?;
        loop {
            let (msgs, _) = self.recv().await?;
            for m in msgs {
                if m.header.sequence_number != seq {
                    continue;
                }
                match m.payload {
                    NetlinkPayload::InnerMessage(i) => return Ok(i),
                    NetlinkPayload::Error(e) => {
                        let code = e.code.map(|c| -c.get()).unwrap_or(libc::ENODATA);
                        return Err(NetlinkError::Refused(io::Error::from_raw_os_error(code)));
                    }
                    _ => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datagrams_are_split_and_garbage_is_counted_not_fatal() {
        // Two messages: an NLMSG_DONE (type 3) and a truncated header claiming 64 bytes.
        let mut d = Vec::new();
        d.extend_from_slice(&20u32.to_ne_bytes());
        d.extend_from_slice(&3u16.to_ne_bytes());
        d.extend_from_slice(&2u16.to_ne_bytes());
        d.extend_from_slice(&7u32.to_ne_bytes());
        d.extend_from_slice(&0u32.to_ne_bytes());
        d.extend_from_slice(&0i32.to_ne_bytes());
        d.extend_from_slice(&64u32.to_ne_bytes());
        d.extend_from_slice(&[0u8; 12]);
        let (msgs, bad) = parse_datagram(&d);
        assert_eq!(msgs.len(), 1);
        assert_eq!(msgs[0].header.sequence_number, 7);
        assert_eq!(bad, 1);
        assert_eq!(parse_datagram(&[0xff; 7]).0.len(), 0);
        let (none, bad) = parse_datagram(&[0u8; 40]);
        assert!(none.is_empty());
        assert_eq!(bad, 1, "a zero length stops the walk");
    }
}
