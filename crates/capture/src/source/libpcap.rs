//! libpcap on an interface, in immediate mode, its filter applied by libpcap.

use std::os::fd::AsFd;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use skydive_flow::decode::LinkType;

use super::{FrameSource, READ_WAIT, SourceError};

/// Frames read per call at most, before the flow table's turn.
const BATCH: usize = 256;

/// A libpcap capture as a frame source. Non-blocking: libpcap in immediate mode may otherwise
/// wait forever for a packet.
pub struct PcapSource {
    capture: pcap::Capture<pcap::Active>,
    link: LinkType,
}

impl PcapSource {
    /// A capture of `snaplen` bytes per frame on `ifname`, filtered by `filter`. The frames
    /// begin as libpcap says, or as `link` when it names no type this build reads.
    pub fn open(
        ifname: &str,
        snaplen: u32,
        filter: &str,
        link: LinkType,
    ) -> Result<PcapSource, SourceError> {
        let open_error = |e: pcap::Error| SourceError::Open {
            ifname: ifname.to_string(),
            message: e.to_string(),
        };
        let mut c = pcap::Capture::from_device(ifname)
            .map_err(open_error)?
            .snaplen(snaplen as i32)
            .immediate_mode(true)
            .open()
            .map_err(open_error)?;
        if !filter.is_empty() {
            c.filter(filter, true).map_err(open_error)?;
        }
        let link = LinkType::from_pcap(c.get_datalink().0 as u32).unwrap_or(link);
        let capture = c.setnonblock().map_err(open_error)?;
        Ok(PcapSource { capture, link })
    }
}

impl FrameSource for PcapSource {
    fn link(&self) -> LinkType {
        self.link
    }

    fn read(&mut self, push: &mut dyn FnMut(&[u8], u32, i64)) -> Result<(), SourceError> {
        let mut waited = false;
        let mut taken = 0;
        while taken < BATCH {
            match self.capture.next_packet() {
                Ok(p) => {
                    let ts = p.header.ts.tv_sec * 1_000_000_000 + p.header.ts.tv_usec * 1000;
                    push(p.data, p.header.len, ts);
                    taken += 1;
                }
                // Nothing queued: wait for the descriptor once (a non-blocking capture
                // would otherwise spin), then take what came.
                Err(pcap::Error::TimeoutExpired) if taken == 0 && !waited => {
                    waited = true;
                    let mut fds = [PollFd::new(self.capture.as_fd(), PollFlags::POLLIN)];
                    match poll(
                        &mut fds,
                        PollTimeout::try_from(READ_WAIT).unwrap_or(PollTimeout::MAX),
                    ) {
                        Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                        Err(e) => return Err(SourceError::Read(e.to_string())),
                    }
                }
                Err(pcap::Error::TimeoutExpired) => break,
                Err(e) => return Err(SourceError::Read(e.to_string())),
            }
        }
        Ok(())
    }

    fn counts(&mut self) -> (u64, u64) {
        self.capture
            .stats()
            .map_or((0, 0), |s| (u64::from(s.received), u64::from(s.dropped)))
    }
}
