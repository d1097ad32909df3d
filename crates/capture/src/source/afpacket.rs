//! An AF_PACKET TPACKET_V3 ring on an interface, its BPF program in the kernel.

use skydive_flow::decode::LinkType;

use super::{FrameSource, READ_WAIT, SourceError};
use crate::afpacket::{Ring, RingConfig, ifindex};
use crate::bpf::Bpf;

/// A ring as a frame source.
pub struct RingSource {
    ring: Ring,
    link: LinkType,
}

impl RingSource {
    /// A ring on `ifname` keeping `snaplen` bytes of each frame that `bpf` accepts.
    pub fn open(
        ifname: &str,
        snaplen: u32,
        bpf: Option<Bpf>,
        link: LinkType,
    ) -> Result<RingSource, SourceError> {
        let cfg = RingConfig {
            ifindex: ifindex(ifname).map_err(|source| SourceError::NoInterface {
                ifname: ifname.to_string(),
                source,
            })?,
            snaplen,
            ..Default::default()
        };
        let ring = Ring::open(&cfg, bpf.as_ref().map(Bpf::instructions)).map_err(|e| {
            SourceError::Open {
                ifname: ifname.to_string(),
                message: e.to_string(),
            }
        })?;
        Ok(RingSource { ring, link })
    }
}

impl FrameSource for RingSource {
    fn link(&self) -> LinkType {
        self.link
    }

    fn read(&mut self, push: &mut dyn FnMut(&[u8], u32, i64)) -> Result<(), SourceError> {
        self.ring
            .next_block(READ_WAIT, |f| push(f.data, f.wire_len, f.ts_ns))
            .map(|_| ())
            .map_err(|e| SourceError::Read(e.to_string()))
    }

    fn counts(&mut self) -> (u64, u64) {
        self.ring
            .stats()
            .map_or((0, 0), |s| (s.received, s.dropped))
    }
}
