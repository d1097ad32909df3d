//! pcap streams into flows: a file uploaded with `POST /api/pcap`, or a stream written to a
//! `pcapsocket` capture. Bytes arrive in any chunks; complete packets go to a flow table
//! whose clock is the packets' timestamps, so a file gives the same flows every time.

use pcap_file::DataLink;
use pcap_file::pcap::PcapParser;
use skydive_flow::decode::LinkType;
use skydive_flow::{Flow, FlowTable, TableConfig};

/// Why a stream was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PcapError {
    #[error("not a pcap file: {0}")]
    Header(String),
    #[error("pcapng files are not read; convert it with `editcap -F pcap`")]
    PcapNg,
    #[error("unsupported link type {0:?}: Ethernet, raw IP and Linux cooked captures are read")]
    LinkType(DataLink),
    #[error("corrupt packet record after {packets} packets: {message}")]
    Record { packets: u64, message: String },
}

fn link_type(d: DataLink) -> Option<LinkType> {
    match d {
        DataLink::ETHERNET => Some(LinkType::Ethernet),
        DataLink::RAW | DataLink::IPV4 | DataLink::IPV6 => Some(LinkType::RawIp),
        DataLink::LINUX_SLL => Some(LinkType::LinuxSll),
        _ => None,
    }
}

/// The largest packet record accepted (libpcap's largest snap length).
const MAX_RECORD: u32 = 262_144;

/// A pcap stream being turned into flows.
pub struct PcapFeeder {
    table: FlowTable,
    buf: Vec<u8>,
    parser: Option<(PcapParser, LinkType)>,
    packets: u64,
    last_ms: i64,
}

impl std::fmt::Debug for PcapFeeder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PcapFeeder")
            .field("packets", &self.packets)
            .finish()
    }
}

impl PcapFeeder {
    pub fn new(cfg: TableConfig) -> PcapFeeder {
        PcapFeeder {
            table: FlowTable::new(cfg),
            buf: Vec::new(),
            parser: None,
            packets: 0,
            last_ms: 0,
        }
    }

    /// Packets read so far.
    /// Flows in the table and flows evicted from it because it was full.
    pub fn table_stats(&self) -> (u64, u64) {
        (self.table.len() as u64, self.table.stats().evicted)
    }

    pub fn packets(&self) -> u64 {
        self.packets
    }

    /// Takes the next bytes of the stream; returns the flows the table's ticks emitted (at
    /// the packets' times).
    pub fn feed(&mut self, data: &[u8]) -> Result<Vec<Flow>, PcapError> {
        self.buf.extend_from_slice(data);
        let mut out = Vec::new();
        let mut consumed = 0;
        if self.parser.is_none() {
            if self.buf.len() >= 4 && self.buf[..4] == [0x0a, 0x0d, 0x0d, 0x0a] {
                return Err(PcapError::PcapNg);
            }
            match PcapParser::new(&self.buf) {
                Ok((rest, parser)) => {
                    let dl = parser.header().datalink;
                    let lt = link_type(dl).ok_or(PcapError::LinkType(dl))?;
                    consumed = self.buf.len() - rest.len();
                    self.parser = Some((parser, lt));
                }
                Err(pcap_file::PcapError::IncompleteBuffer) => return Ok(out),
                Err(e) => return Err(PcapError::Header(e.to_string())),
            }
        }
        let Some((parser, lt)) = &self.parser else {
            return Ok(out);
        };
        let mut rest = &self.buf[consumed..];
        let big_endian = parser.header().endianness == pcap_file::Endianness::Big;
        loop {
            // A record longer than any snap length is corruption, not a reason to wait.
            if rest.len() >= 16 {
                let b = [rest[8], rest[9], rest[10], rest[11]];
                let incl = if big_endian {
                    u32::from_be_bytes(b)
                } else {
                    u32::from_le_bytes(b)
                };
                if incl > MAX_RECORD {
                    return Err(PcapError::Record {
                        packets: self.packets,
                        message: format!("a record of {incl} bytes"),
                    });
                }
            }
            match parser.next_packet(rest) {
                Ok((r, p)) => {
                    let ts_ns = p.timestamp.as_nanos() as i64;
                    self.table.process(&p.data, p.orig_len, ts_ns, *lt);
                    self.packets += 1;
                    self.last_ms = self.last_ms.max(ts_ns / 1_000_000);
                    out.extend(self.table.advance(self.last_ms));
                    rest = r;
                }
                Err(pcap_file::PcapError::IncompleteBuffer) => break,
                Err(e) => {
                    return Err(PcapError::Record {
                        packets: self.packets,
                        message: e.to_string(),
                    });
                }
            }
        }
        let used = self.buf.len() - rest.len();
        self.buf.drain(..used);
        Ok(out)
    }

    /// The end of the stream: every flow, finished at the last packet's time.
    pub fn finish(mut self) -> Vec<Flow> {
        self.table.flush(self.last_ms)
    }

    /// A whole file.
    pub fn flows_of(bytes: &[u8], cfg: TableConfig) -> Result<(Vec<Flow>, u64), PcapError> {
        let mut f = PcapFeeder::new(cfg);
        let mut flows = f.feed(bytes)?;
        if f.parser.is_none() {
            return Err(PcapError::Header("the file ends inside its header".into()));
        }
        if !f.buf.is_empty() {
            return Err(PcapError::Record {
                packets: f.packets,
                message: "the file ends inside a packet record".into(),
            });
        }
        let packets = f.packets;
        flows.extend(f.finish());
        Ok((flows, packets))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
    use std::time::Duration;

    /// A DNS query and its answer, 10.0.0.1:5353 → 10.0.0.53:53, as an Ethernet pcap.
    fn dns_pcap() -> Vec<u8> {
        let udp = |src: [u8; 4], dst: [u8; 4], sp: u16, dp: u16, payload: &[u8]| {
            let mut f = vec![
                0x02, 0, 0, 0, 0, dst[3], 0x02, 0, 0, 0, 0, src[3], 0x08, 0x00,
            ];
            let total = (20 + 8 + payload.len()) as u16;
            f.extend_from_slice(&[
                0x45,
                0,
                (total >> 8) as u8,
                total as u8,
                0,
                1,
                0,
                0,
                64,
                17,
                0,
                0,
            ]);
            f.extend_from_slice(&src);
            f.extend_from_slice(&dst);
            let ul = (8 + payload.len()) as u16;
            f.extend_from_slice(&sp.to_be_bytes());
            f.extend_from_slice(&dp.to_be_bytes());
            f.extend_from_slice(&ul.to_be_bytes());
            f.extend_from_slice(&[0, 0]);
            f.extend_from_slice(payload);
            f
        };
        let query = [
            0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 3, b'f', b'o', b'o', 0, 0, 1, 0, 1,
        ];
        let mut w = PcapWriter::with_header(Vec::new(), PcapHeader::default()).unwrap();
        let frames = [
            (1_000, udp([10, 0, 0, 1], [10, 0, 0, 53], 5353, 53, &query)),
            (1_020, udp([10, 0, 0, 53], [10, 0, 0, 1], 53, 5353, &query)),
        ];
        for (ms, f) in &frames {
            w.write_packet(&PcapPacket::new(
                Duration::from_millis(1_700_000_000_000 + ms),
                f.len() as u32,
                f,
            ))
            .unwrap();
        }
        w.into_writer()
    }

    #[test]
    fn a_file_gives_its_flows_with_its_times_whatever_the_chunks() {
        let bytes = dns_pcap();
        let (whole, packets) = PcapFeeder::flows_of(&bytes, TableConfig::default()).unwrap();
        assert_eq!(packets, 2);
        assert_eq!(whole.len(), 1);
        let f = &whole[0];
        assert_eq!(f.application, "DNS");
        assert_eq!(f.start, 1_700_000_001_000);
        assert_eq!(f.last, 1_700_000_001_020);
        let m = f.metric.unwrap();
        assert_eq!((m.ab_packets, m.ba_packets), (1, 1));
        // Byte by byte, as a socket may deliver it: the same flows.
        let mut feeder = PcapFeeder::new(TableConfig::default());
        for b in &bytes {
            assert!(feeder.feed(std::slice::from_ref(b)).unwrap().is_empty());
        }
        assert_eq!(feeder.finish(), whole);
    }

    #[test]
    fn bad_streams_are_refused_with_the_reason() {
        assert!(matches!(
            PcapFeeder::flows_of(b"hello world, not a pcap", TableConfig::default()),
            Err(PcapError::Header(_))
        ));
        assert_eq!(
            PcapFeeder::flows_of(
                &[0x0a, 0x0d, 0x0d, 0x0a, 0, 0, 0, 0],
                TableConfig::default()
            )
            .unwrap_err(),
            PcapError::PcapNg
        );
        let mut bytes = dns_pcap();
        // A record claiming 3 GB.
        let rec = 24 + 8;
        bytes[rec..rec + 4].copy_from_slice(&0xc000_0000u32.to_le_bytes());
        bytes[rec + 4..rec + 8].copy_from_slice(&0xc000_0000u32.to_le_bytes());
        let r = PcapFeeder::flows_of(&bytes, TableConfig::default());
        assert!(
            matches!(r, Err(PcapError::Record { packets: 0, .. })),
            "{r:?}"
        );
        // Cut inside the second record.
        let bytes = dns_pcap();
        let r = PcapFeeder::flows_of(&bytes[..bytes.len() - 5], TableConfig::default());
        assert!(
            matches!(r, Err(PcapError::Record { packets: 1, .. })),
            "{r:?}"
        );
    }
}
