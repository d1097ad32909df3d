//! pcap streams into flows: a file uploaded with `POST /api/pcap`, or a stream written to a
//! `pcapsocket` capture. Bytes arrive in any chunks; complete packets go to a flow table
//! whose clock is the packets' timestamps, so a file gives the same flows every time.

use pcap_file::DataLink;
use pcap_file::pcap::PcapParser;
use skydive_flow::decode::LinkType;
use skydive_flow::{Flow, FlowTable, Packet, TableConfig};

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

/// Frames handed to the table at once (at most).
const BATCH: usize = 64;

/// How far ahead of the record being read the stream is fetched.
const READ_AHEAD: usize = 64 * 1024;

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
        let mut out = Vec::new();
        if self.buf.is_empty() {
            // Read in place; only an incomplete record at the end is kept.
            let used = self.read(data, &mut out)?;
            self.buf.extend_from_slice(&data[used..]);
        } else {
            let mut buf = std::mem::take(&mut self.buf);
            buf.extend_from_slice(data);
            let used = self.read(&buf, &mut out)?;
            buf.drain(..used);
            self.buf = buf;
        }
        Ok(out)
    }

    /// Reads the file header (first) and the complete records of `bytes`; returns how many
    /// bytes were used. Frames go to the table in batches (as a capture ring gives them): a
    /// batch ends at the frame whose time reaches the table's next tick, so the ticks see
    /// exactly the frames before them, as if the frames came one by one.
    fn read(&mut self, bytes: &[u8], out: &mut Vec<Flow>) -> Result<usize, PcapError> {
        let mut rest = bytes;
        if self.parser.is_none() {
            if rest.len() >= 4 && rest[..4] == [0x0a, 0x0d, 0x0d, 0x0a] {
                return Err(PcapError::PcapNg);
            }
            match PcapParser::new(rest) {
                Ok((r, parser)) => {
                    let dl = parser.header().datalink;
                    let lt = link_type(dl).ok_or(PcapError::LinkType(dl))?;
                    rest = r;
                    self.parser = Some((parser, lt));
                }
                Err(pcap_file::PcapError::IncompleteBuffer) => return Ok(0),
                Err(e) => return Err(PcapError::Header(e.to_string())),
            }
        }
        let Some((parser, lt)) = &self.parser else {
            return Ok(0);
        };
        let big_endian = parser.header().endianness == pcap_file::Endianness::Big;
        let mut batch: Vec<Packet<'_>> = Vec::with_capacity(BATCH);
        // How far the stream has been read ahead (see below).
        let mut fetched = 0;
        loop {
            // The next READ_AHEAD bytes are kept fetched, one load per cache line not fetched
            // yet, all independent of each other: walking the records one header after
            // another, each at an address the previous one gives, would wait for memory at
            // every frame (a stream with a header every few hundred bytes escapes the
            // hardware prefetcher).
            let at = bytes.len() - rest.len();
            let to = (at + READ_AHEAD).min(bytes.len());
            // (Not a plain reduction: one load per line, lines in order. Vectorized, the loop
            // loads a block's lines out of order, and the stream reads a third slower.)
            let mut ahead = 0u8;
            for line in (fetched.max(at)..to).step_by(64) {
                ahead = ahead.rotate_left(1) ^ bytes[line];
            }
            std::hint::black_box(ahead);
            fetched = to;
            let due = self.table.next_tick_ms();
            let mut end = None;
            while batch.len() < BATCH {
                // A record longer than any snap length is corruption, not a reason to wait.
                if rest.len() >= 16 {
                    let b = [rest[8], rest[9], rest[10], rest[11]];
                    let incl = if big_endian {
                        u32::from_be_bytes(b)
                    } else {
                        u32::from_le_bytes(b)
                    };
                    if incl > MAX_RECORD {
                        end = Some(Err(PcapError::Record {
                            packets: self.packets,
                            message: format!("a record of {incl} bytes"),
                        }));
                        break;
                    }
                }
                match parser.next_packet(rest) {
                    Ok((r, p)) => {
                        let ts_ns = p.timestamp.as_nanos() as i64;
                        // The record's bytes, after its 16-byte header, borrowed from the
                        // stream (what the parser returned a view of).
                        let data = &rest[16..16 + p.data.len()];
                        batch.push(Packet {
                            data,
                            wire_len: p.orig_len,
                            ts_ns,
                        });
                        self.packets += 1;
                        self.last_ms = self.last_ms.max(ts_ns / 1_000_000);
                        rest = r;
                        if due.is_none_or(|t| self.last_ms >= t) {
                            break;
                        }
                    }
                    Err(pcap_file::PcapError::IncompleteBuffer) => {
                        end = Some(Ok(bytes.len() - rest.len()));
                        break;
                    }
                    Err(e) => {
                        end = Some(Err(PcapError::Record {
                            packets: self.packets,
                            message: e.to_string(),
                        }));
                        break;
                    }
                }
            }
            if !batch.is_empty() {
                self.table.process_batch(&batch, *lt);
                out.extend(self.table.advance(self.last_ms));
                batch.clear();
            }
            // The stream's end, or a corrupt record: the frames before it are counted in
            // the table all the same.
            if let Some(end) = end {
                return end;
            }
        }
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
        let last = f.finish();
        if flows.is_empty() {
            // (The common case for a short file: no copy of the last flows.)
            flows = last;
        } else {
            flows.extend(last);
        }
        Ok((flows, packets))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
    use std::time::Duration;

    /// An Ethernet frame of a UDP datagram.
    fn udp(src: [u8; 4], dst: [u8; 4], sp: u16, dp: u16, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![
            0x02, 0, 0, 0, 0, dst[3], 0x02, 0, 0, 0, 0, src[3], 0x08, 0x00,
        ];
        let total = (20 + 8 + payload.len()) as u16;
        f.extend_from_slice(&[0x45, 0]);
        f.extend_from_slice(&total.to_be_bytes());
        f.extend_from_slice(&[0, 1, 0, 0, 64, 17, 0, 0]);
        f.extend_from_slice(&src);
        f.extend_from_slice(&dst);
        let ul = (8 + payload.len()) as u16;
        f.extend_from_slice(&sp.to_be_bytes());
        f.extend_from_slice(&dp.to_be_bytes());
        f.extend_from_slice(&ul.to_be_bytes());
        f.extend_from_slice(&[0, 0]);
        f.extend_from_slice(payload);
        f
    }

    /// A pcap file of frames at times in ms (from 1,700,000,000,000).
    fn pcap(frames: &[(u64, Vec<u8>)]) -> Vec<u8> {
        let mut w = PcapWriter::with_header(Vec::new(), PcapHeader::default()).unwrap();
        for (ms, f) in frames {
            w.write_packet(&PcapPacket::new(
                Duration::from_millis(1_700_000_000_000 + ms),
                f.len() as u32,
                f,
            ))
            .unwrap();
        }
        w.into_writer()
    }

    /// A DNS query and its answer, 10.0.0.1:5353 → 10.0.0.53:53, as an Ethernet pcap.
    fn dns_pcap() -> Vec<u8> {
        let query = [
            0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 3, b'f', b'o', b'o', 0, 0, 1, 0, 1,
        ];
        pcap(&[
            (1_000, udp([10, 0, 0, 1], [10, 0, 0, 53], 5353, 53, &query)),
            (1_020, udp([10, 0, 0, 53], [10, 0, 0, 1], 53, 5353, &query)),
        ])
    }

    /// Frames are read in batches, yet the table's ticks see exactly the frames before them:
    /// the flows are those of the frames handed one by one, each followed by a tick check at
    /// its time, whatever the chunks the stream comes in.
    #[test]
    fn ticks_in_a_file_fall_between_the_same_frames_as_one_by_one() {
        let cfg = TableConfig {
            update_ms: 1_000,
            expire_ms: 3_000,
            ..TableConfig::default()
        };
        // 3,000 frames over 9 s, 3 ms apart, among 40 flows; half of them stop after 3 s
        // (they expire mid-file).
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let frames: Vec<(u64, Vec<u8>)> = (0..3000u64)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let ms = i * 3;
                let flow = if ms < 3_000 { x % 40 } else { x % 20 } as u8;
                let (a, b) = ([10, 0, 1, flow], [10, 0, 2, 1]);
                let f = if x >> 63 == 0 {
                    udp(a, b, 1000 + flow as u16, 7000, &[0; 10])
                } else {
                    udp(b, a, 7000, 1000 + flow as u16, &[0; 30])
                };
                (ms, f)
            })
            .collect();
        let bytes = pcap(&frames);

        let mut one_by_one = Vec::new();
        let mut table = FlowTable::new(cfg.clone());
        let mut last_ms = 0;
        for (ms, f) in &frames {
            let ts_ms = 1_700_000_000_000 + *ms as i64;
            table.process(f, f.len() as u32, ts_ms * 1_000_000, LinkType::Ethernet);
            last_ms = ts_ms;
            one_by_one.extend(table.advance(last_ms));
        }
        one_by_one.extend(table.flush(last_ms));
        // The file spans several update and expire ticks, with flows ending by timeout.
        let ticks: std::collections::BTreeSet<i64> = one_by_one
            .iter()
            .filter_map(|f| f.last_update_metric.map(|m| m.last))
            .collect();
        assert!(ticks.len() >= 8, "{ticks:?}");
        let expired = one_by_one
            .iter()
            .filter(|f| {
                f.finish_type == skydive_flow::FinishType::Timeout && f.last < 1_700_000_004_000
            })
            .count();
        assert!(expired >= 10, "{expired} flows expired mid-file");

        let (whole, packets) = PcapFeeder::flows_of(&bytes, cfg.clone()).unwrap();
        assert_eq!(packets, 3000);
        assert_eq!(whole, one_by_one);
        for chunk in [1000, 4096, 65536] {
            let mut feeder = PcapFeeder::new(cfg.clone());
            let mut flows = Vec::new();
            for c in bytes.chunks(chunk) {
                flows.extend(feeder.feed(c).unwrap());
            }
            flows.extend(feeder.finish());
            assert_eq!(flows, one_by_one, "chunks of {chunk} bytes");
        }
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
        // A corrupt third record: the stream is refused, and the frames before it are in the
        // table all the same (a `pcapsocket` capture still sends their flow).
        let mut bytes = dns_pcap();
        let good = bytes.len();
        bytes.extend_from_within(good - 79..);
        // (The default header writes big-endian records.)
        bytes[good + 8..good + 12].copy_from_slice(&0xc000_0000u32.to_be_bytes());
        let mut feeder = PcapFeeder::new(TableConfig::default());
        let r = feeder.feed(&bytes);
        assert!(
            matches!(r, Err(PcapError::Record { packets: 2, .. })),
            "{r:?}"
        );
        let flows = feeder.finish();
        assert_eq!(flows.len(), 1);
        let m = flows[0].metric.unwrap();
        assert_eq!((m.ab_packets, m.ba_packets), (1, 1));
    }
}
