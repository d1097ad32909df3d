//! An sFlow collector: datagrams read many per system call, their flow samples' sampled
//! Ethernet headers taken as frames, their counter samples kept for the node's `SFlow`.

use std::time::Duration;

use skydive_flow::decode::LinkType;
use skydive_flow::sflow::IfCounters;

use super::{FrameSource, READ_WAIT, SourceError, now_ms};
use crate::bpf::Bpf;
use crate::datagrams::{Datagram, DatagramReader};

/// The receive buffer of sFlow collectors: 16 MiB, a few seconds of a busy switch.
const RCVBUF: usize = 16 << 20;
/// Datagrams read per system call, and calls per read before the flow table's turn.
const BATCH: usize = 32;
const BATCHES: usize = 8;
/// The longest datagram taken (agents send datagrams of a network MTU; longer ones are
/// counted as dropped).
const DATAGRAM_MAX: usize = 16 << 10;
/// How long a collector woken by a datagram lets more gather before reading on: a busy
/// switch's stream is then read in full batches, at most this late.
const GATHER: Duration = Duration::from_millis(1);

/// A collector on a UDP socket.
pub struct SflowSource {
    sock: std::net::UdpSocket,
    bpf: Option<Bpf>,
    reader: DatagramReader,
    /// Samples taken.
    received: u64,
    /// Samples refused (not Ethernet) and datagrams refused (malformed or too long).
    dropped: u64,
    /// The interface counters of the latest counter sample, with when it came (ms).
    counters: Option<(IfCounters, i64)>,
}

impl SflowSource {
    /// A collector on `sock`, keeping the samples `bpf` accepts: a large receive buffer,
    /// reads that wait at most [`READ_WAIT`].
    pub fn new(sock: std::net::UdpSocket, bpf: Option<Bpf>) -> SflowSource {
        crate::large_receive_buffer(&sock, RCVBUF);
        let _ = sock.set_read_timeout(Some(READ_WAIT));
        SflowSource {
            sock,
            bpf,
            reader: DatagramReader::new(BATCH, DATAGRAM_MAX).with_gather(GATHER),
            received: 0,
            dropped: 0,
            counters: None,
        }
    }
}

impl FrameSource for SflowSource {
    fn link(&self) -> LinkType {
        LinkType::Ethernet
    }

    /// Waits for a datagram (up to [`READ_WAIT`]), then takes those already queued, a batch
    /// per system call.
    fn read(&mut self, push: &mut dyn FnMut(&[u8], u32, i64)) -> Result<(), SourceError> {
        let SflowSource {
            sock,
            bpf,
            reader,
            received,
            dropped,
            counters,
        } = self;
        let mut take = |d: Datagram<'_>| {
            let Datagram::Whole(datagram) = d else {
                *dropped += 1;
                tracing::debug!("sFlow datagram longer than {DATAGRAM_MAX} bytes dropped");
                return;
            };
            let now = now_ms();
            let now_ns = now * 1_000_000;
            match skydive_flow::sflow::decode(datagram) {
                Ok(d) => {
                    if let Some(c) = d.counters.last() {
                        *counters = Some((*c, now));
                    }
                    for p in &d.packets {
                        if p.protocol != 1 {
                            *dropped += 1;
                            continue;
                        }
                        if bpf.as_ref().is_some_and(|b| !b.matches(p.header)) {
                            continue;
                        }
                        *received += 1;
                        push(p.header, p.frame_length, now_ns);
                    }
                }
                Err(e) => {
                    *dropped += 1;
                    tracing::debug!("sFlow datagram dropped: {e}");
                }
            }
        };
        reader
            .read(sock, BATCHES, &mut take)
            .map(|_| ())
            .map_err(|e| SourceError::Read(e.to_string()))
    }

    fn counts(&mut self) -> (u64, u64) {
        (self.received, self.dropped)
    }

    fn sflow_counters(&self) -> Option<(IfCounters, i64)> {
        self.counters
    }
}
