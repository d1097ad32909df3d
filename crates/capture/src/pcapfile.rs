//! pcap and pcapng streams into flows: a file uploaded with `POST /api/pcap`, or a stream
//! written to a `pcapsocket` capture. Bytes arrive in any chunks; complete packets go to a flow table
//! whose clock is the packets' timestamps, so a file gives the same flows every time.

use pcap_file::DataLink;
use pcap_file::pcap::PcapParser;
use skydive_flow::decode::LinkType;
use skydive_flow::{Flow, FlowTable, Packet, TableConfig};

use crate::pcapng::{self, Block, Section};

/// Why a stream was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PcapError {
    #[error("not a pcap file: {0}")]
    Header(String),
    #[error("unsupported link type {0:?}: Ethernet, raw IP and Linux cooked captures are read")]
    LinkType(DataLink),
    #[error("corrupt packet record after {packets} packets: {message}")]
    Record { packets: u64, message: String },
}

pub(crate) fn link_type(d: DataLink) -> Option<LinkType> {
    match d {
        DataLink::ETHERNET => Some(LinkType::Ethernet),
        DataLink::RAW | DataLink::IPV4 | DataLink::IPV6 => Some(LinkType::RawIp),
        DataLink::LINUX_SLL => Some(LinkType::LinuxSll),
        DataLink::LINUX_SLL2 => Some(LinkType::LinuxSll2),
        _ => None,
    }
}

/// The largest packet record accepted (libpcap's largest snap length).
const MAX_RECORD: u32 = 262_144;

/// Frames handed to the table at once (at most).
const BATCH: usize = 64;

/// How far ahead of the record being read the stream is fetched.
const READ_AHEAD: usize = 64 * 1024;

/// What the file header says of the records.
#[derive(Clone, Copy, Debug)]
struct Format {
    link: LinkType,
    big_endian: bool,
    /// Timestamps in ns (else µs).
    nanos: bool,
}

/// How a stream's records are read, from its first bytes.
enum Stream {
    Pcap(Format),
    Ng(Section),
}

/// A stream's records, one after another.
pub(crate) trait Records {
    /// The next record of `bytes` and what follows it; `None` when the record is not complete
    /// yet; the reason when it is corrupt.
    fn next<'a>(&mut self, bytes: &'a [u8]) -> Result<Option<(Block<'a>, &'a [u8])>, String>;
}

impl Records for Format {
    #[inline]
    fn next<'a>(&mut self, bytes: &'a [u8]) -> Result<Option<(Block<'a>, &'a [u8])>, String> {
        Ok(self
            .record(bytes)?
            .map(|(p, rest)| (Block::Packet(p, self.link), rest)))
    }
}

impl Format {
    /// The next packet record of `bytes` and what follows it; `None` when the record is not
    /// complete yet; the reason when it is corrupt. (The 16-byte record header is read here:
    /// `pcap-file`'s record parser refuses a packet longer on the wire than the file's snap
    /// length, which is every packet a capture cut short; and it alone cost about as many
    /// instructions per record as this whole reader does.)
    #[inline]
    fn record<'a>(&self, bytes: &'a [u8]) -> Result<Option<(Packet<'a>, &'a [u8])>, String> {
        let Some(h) = bytes.first_chunk::<16>() else {
            return Ok(None);
        };
        let word = |at: usize| pcapng::word(h, at, self.big_endian);
        let (secs, frac, incl, orig) = (word(0), word(4), word(8), word(12));
        // A record longer than any snap length is corruption, not a reason to wait.
        if incl > MAX_RECORD {
            return Err(format!("a record of {incl} bytes"));
        }
        let nanos = if self.nanos {
            frac as i64
        } else {
            frac as i64 * 1_000
        };
        if nanos >= 1_000_000_000 {
            return Err(format!("a timestamp fraction of {frac}"));
        }
        let Some((data, rest)) = bytes[16..].split_at_checked(incl as usize) else {
            return Ok(None);
        };
        let packet = Packet {
            data,
            // (A record longer than its packet on the wire is read as libpcap reads it; the
            // packet is at least what the record holds.)
            wire_len: orig.max(incl),
            ts_ns: secs as i64 * 1_000_000_000 + nanos,
        };
        Ok(Some((packet, rest)))
    }
}

/// A pcap stream being turned into flows.
pub struct PcapFeeder {
    table: FlowTable,
    buf: Vec<u8>,
    /// Known once the file header (pcap) or first section header (pcapng) is read.
    stream: Option<Stream>,
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
            stream: None,
            packets: 0,
            last_ms: 0,
        }
    }

    /// Flows in the table and flows evicted from it because it was full.
    pub fn table_stats(&self) -> (u64, u64) {
        (self.table.len() as u64, self.table.stats().evicted)
    }

    /// Packets read so far.
    pub fn packets(&self) -> u64 {
        self.packets
    }

    /// Whether the file's header has been read.
    pub fn started(&self) -> bool {
        self.stream.is_some()
    }

    /// Whether what was fed ends at a record's end (no partial record kept).
    pub fn complete(&self) -> bool {
        self.buf.is_empty()
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
    /// bytes were used.
    fn read(&mut self, bytes: &[u8], out: &mut Vec<Flow>) -> Result<usize, PcapError> {
        let mut rest = bytes;
        if self.stream.is_none() {
            if rest.len() < 4 {
                return Ok(0);
            }
            if rest[..4] == pcapng::MAGIC {
                match Section::first(rest) {
                    Ok(Some((section, r))) => {
                        rest = r;
                        self.stream = Some(Stream::Ng(section));
                    }
                    Ok(None) => return Ok(0),
                    Err(e) => return Err(PcapError::Header(e)),
                }
            } else {
                match PcapParser::new(rest) {
                    Ok((r, parser)) => {
                        let header = parser.header();
                        let dl = header.datalink;
                        rest = r;
                        self.stream = Some(Stream::Pcap(Format {
                            link: link_type(dl).ok_or(PcapError::LinkType(dl))?,
                            big_endian: header.endianness == pcap_file::Endianness::Big,
                            nanos: header.ts_resolution == pcap_file::TsResolution::NanoSecond,
                        }));
                    }
                    Err(pcap_file::PcapError::IncompleteBuffer) => return Ok(0),
                    Err(e) => return Err(PcapError::Header(e.to_string())),
                }
            }
        }
        let start = bytes.len() - rest.len();
        match self.stream.take() {
            Some(Stream::Pcap(mut format)) => {
                let used = self.read_records(bytes, start, &mut format, out);
                self.stream = Some(Stream::Pcap(format));
                used
            }
            Some(Stream::Ng(mut section)) => {
                let used = self.read_records(bytes, start, &mut section, out);
                self.stream = Some(Stream::Ng(section));
                used
            }
            None => Ok(start),
        }
    }

    /// Reads the complete records of `bytes` from `start`; returns how many bytes were used.
    /// Frames go to the table in batches (as a capture ring gives them): a batch ends at the
    /// frame whose time reaches the table's next tick, so the ticks see exactly the frames
    /// before them, as if the frames came one by one; and before a frame of another link type
    /// (a pcapng file may hold several interfaces).
    fn read_records<R: Records>(
        &mut self,
        bytes: &[u8],
        start: usize,
        records: &mut R,
        out: &mut Vec<Flow>,
    ) -> Result<usize, PcapError> {
        let mut rest = &bytes[start..];
        let mut link = LinkType::Ethernet;
        let mut batch: Vec<Packet<'_>> = Vec::with_capacity(BATCH);
        // How far the stream has been read ahead (see below).
        let mut fetched = 0;
        loop {
            // The next READ_AHEAD bytes are kept fetched, one load per cache line not fetched
            // yet, all independent of each other: walking the records one header after
            // another, each at an address the previous one gives, would wait for memory at
            // every frame (a stream with a header every few hundred bytes escapes the
            // hardware prefetcher). Not a plain reduction: vectorized, the loop loads a block's
            // lines out of order, and the stream reads a third slower (four lines a step, in
            // order, was slower too).
            let at = bytes.len() - rest.len();
            let to = (at + READ_AHEAD).min(bytes.len());
            let mut ahead = 0u8;
            for line in (fetched.max(at)..to).step_by(64) {
                ahead = ahead.rotate_left(1) ^ bytes[line];
            }
            std::hint::black_box(ahead);
            fetched = to;
            let due = self.table.next_tick_ms();
            let mut end = None;
            while batch.len() < BATCH {
                match records.next(rest) {
                    Ok(Some((Block::Other, r))) => rest = r,
                    Ok(Some((Block::Packet(p, l), r))) => {
                        if l != link {
                            if !batch.is_empty() {
                                // (Read again once the batch is in the table.)
                                break;
                            }
                            link = l;
                        }
                        self.packets += 1;
                        self.last_ms = self.last_ms.max(p.ts_ns / 1_000_000);
                        batch.push(p);
                        rest = r;
                        if due.is_none_or(|t| self.last_ms >= t) {
                            break;
                        }
                    }
                    Ok(None) => {
                        end = Some(Ok(bytes.len() - rest.len()));
                        break;
                    }
                    Err(message) => {
                        end = Some(Err(PcapError::Record {
                            packets: self.packets,
                            message,
                        }));
                        break;
                    }
                }
            }
            if !batch.is_empty() {
                self.table.process_batch(&batch, link);
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
        if f.stream.is_none() {
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
    /// A DNS query and its answer.
    fn dns_frames() -> [Vec<u8>; 2] {
        let query = [
            0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 3, b'f', b'o', b'o', 0, 0, 1, 0, 1,
        ];
        [
            udp([10, 0, 0, 1], [10, 0, 0, 53], 5353, 53, &query),
            udp([10, 0, 0, 53], [10, 0, 0, 1], 53, 5353, &query),
        ]
    }

    fn dns_pcap() -> Vec<u8> {
        let [q, a] = dns_frames();
        pcap(&[(1_000, q), (1_020, a)])
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

    /// A capture cut at a snap length (`tcpdump -s 64`): records shorter than the packets
    /// they hold, whose length on the wire is beyond the file's snap length. Read, and the
    /// bytes counted are the packets' lengths on the wire.
    #[test]
    fn a_capture_cut_at_a_snap_length_is_read() {
        use pcap_file::{Endianness, TsResolution};
        let big = udp([10, 0, 0, 1], [10, 0, 0, 2], 4000, 5000, &[7; 1000]);
        let small = udp([10, 0, 0, 2], [10, 0, 0, 1], 5000, 4000, &[7; 10]);
        // Either byte order, µs or ns timestamps (one ms apart).
        for endianness in [Endianness::Big, Endianness::Little] {
            for (ts_resolution, ms) in [
                (TsResolution::MicroSecond, 1_000),
                (TsResolution::NanoSecond, 1_000_000),
            ] {
                let header = PcapHeader {
                    snaplen: 64,
                    endianness,
                    ts_resolution,
                    ..PcapHeader::default()
                };
                let mut w = PcapWriter::with_header(Vec::new(), header).unwrap();
                for (i, f) in [&big, &small, &big].into_iter().enumerate() {
                    let kept = &f[..f.len().min(64)];
                    w.write_raw_packet(&pcap_file::pcap::RawPcapPacket {
                        ts_sec: 1_700_000_000,
                        ts_frac: ms * (i as u32 + 1),
                        incl_len: kept.len() as u32,
                        orig_len: f.len() as u32,
                        data: kept.into(),
                    })
                    .unwrap();
                }
                let bytes = w.into_writer();
                let (flows, packets) =
                    PcapFeeder::flows_of(&bytes, TableConfig::default()).unwrap();
                assert_eq!(packets, 3);
                assert_eq!(flows.len(), 1);
                let m = flows[0].metric.unwrap();
                assert_eq!(
                    (m.ab_packets, m.ab_bytes, m.ba_packets, m.ba_bytes),
                    (2, 2 * big.len() as i64, 1, small.len() as i64)
                );
                assert_eq!(
                    (flows[0].start, flows[0].last),
                    (1_700_000_000_001, 1_700_000_000_003),
                    "{endianness:?} {ts_resolution:?}"
                );
            }
        }
    }

    /// `editcap -F pcapng` of a pcap file (Wireshark's own conversion), or `None` when
    /// editcap is not installed (outside CI, which installs it).
    fn editcap_pcapng(pcap: &[u8]) -> Option<Vec<u8>> {
        let dir = tempfile::tempdir().unwrap();
        let (from, to) = (dir.path().join("in.pcap"), dir.path().join("out.pcapng"));
        std::fs::write(&from, pcap).unwrap();
        match std::process::Command::new("editcap")
            .args(["-F", "pcapng"])
            .arg(&from)
            .arg(&to)
            .status()
        {
            Ok(s) => {
                assert!(s.success(), "editcap failed");
                Some(std::fs::read(&to).unwrap())
            }
            Err(e) => {
                assert_ne!(
                    std::env::var("CI").as_deref(),
                    Ok("true"),
                    "editcap is needed under CI=true: {e}"
                );
                eprintln!("SKIPPED pcapng from editcap: {e}");
                None
            }
        }
    }

    /// The golden files of the flow engine (Ethernet and raw IP, µs, big-endian) and a
    /// capture with ns timestamps, converted to pcapng by Wireshark's editcap: the same
    /// packets and flows as the pcap files, whatever the chunks the stream comes in.
    #[test]
    fn a_pcapng_file_gives_the_flows_of_the_same_pcap_file() {
        let golden = concat!(env!("CARGO_MANIFEST_DIR"), "/../flow/tests/golden");
        let mut files: Vec<Vec<u8>> = std::fs::read_dir(golden)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "pcap"))
            .map(|p| std::fs::read(p).unwrap())
            .collect();
        assert!(files.len() >= 15, "{}", files.len());
        let header = PcapHeader {
            ts_resolution: pcap_file::TsResolution::NanoSecond,
            ..PcapHeader::default()
        };
        let mut w = PcapWriter::with_header(Vec::new(), header).unwrap();
        for (i, f) in dns_frames().iter().enumerate() {
            w.write_packet(&PcapPacket::new(
                Duration::new(1_700_000_001, 123_456_789 + i as u32 * 1_000_001),
                f.len() as u32,
                f,
            ))
            .unwrap();
        }
        files.push(w.into_writer());
        let cfg = TableConfig {
            raw_packet_limit: 2,
            ..TableConfig::default()
        };
        let mut links = std::collections::BTreeSet::new();
        for pcap in &files {
            let Some(ng) = editcap_pcapng(pcap) else {
                return;
            };
            assert_eq!(ng[..4], pcapng::MAGIC);
            links.insert(u32::from(
                PcapParser::new(pcap).unwrap().1.header().datalink,
            ));
            let want = PcapFeeder::flows_of(pcap, cfg.clone()).unwrap();
            assert!(want.1 > 0);
            assert_eq!(PcapFeeder::flows_of(&ng, cfg.clone()).unwrap(), want);
            for chunk in [1, 7, 100] {
                let mut feeder = PcapFeeder::new(cfg.clone());
                let mut flows = Vec::new();
                for c in ng.chunks(chunk) {
                    flows.extend(feeder.feed(c).unwrap());
                }
                assert_eq!(feeder.packets(), want.1);
                flows.extend(feeder.finish());
                assert_eq!(flows, want.0, "chunks of {chunk} bytes");
            }
        }
        // Ethernet and raw IP captures among them.
        assert!(links.is_superset(&[1, 101].into()), "{links:?}");
    }

    /// A big-endian section with two interfaces of different link types and time
    /// resolutions (ms; 1/1024 s), packets of both interleaved, a simple and an obsolete
    /// packet block, and a second section in the other byte order: every packet read with its own link type and
    /// time.
    #[test]
    fn pcapng_sections_interfaces_and_time_resolutions() {
        use pcap_file::Endianness;
        use pcap_file::pcapng::PcapNgWriter;
        use pcap_file::pcapng::blocks::Block as NgBlock;
        use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketBlock;
        use pcap_file::pcapng::blocks::interface_description::{
            InterfaceDescriptionBlock, InterfaceDescriptionOption,
        };
        use pcap_file::pcapng::blocks::packet::PacketBlock;
        use pcap_file::pcapng::blocks::simple_packet::SimplePacketBlock;
        let eth = udp([10, 0, 0, 1], [10, 0, 0, 2], 4000, 5000, &[1; 20]);
        let raw = udp([10, 0, 0, 3], [10, 0, 0, 4], 4001, 5001, &[2; 30])[14..].to_vec();
        let interface = |linktype, tsresol| {
            NgBlock::InterfaceDescription(InterfaceDescriptionBlock {
                linktype,
                snaplen: 0,
                options: vec![InterfaceDescriptionOption::IfTsResol(tsresol)],
            })
        };
        // (The writer puts a timestamp's nanoseconds in the block as they are: they are
        // read in the interface's units.)
        let packet = |interface_id, units: u64, data: &[u8]| {
            NgBlock::EnhancedPacket(EnhancedPacketBlock {
                interface_id,
                timestamp: Duration::from_nanos(units),
                original_len: data.len() as u32,
                data: data.to_vec().into(),
                options: vec![],
            })
        };
        let mut bytes = Vec::new();
        for endianness in [Endianness::Big, Endianness::Little] {
            let mut w = PcapNgWriter::with_endianness(Vec::new(), endianness).unwrap();
            w.write_block(&interface(DataLink::ETHERNET, 3)).unwrap();
            w.write_block(&interface(DataLink::RAW, 0x80 | 10)).unwrap();
            for i in 0..3u64 {
                // 1,700,000,001,000 ms + i; 1,700,000,002 s + i/1024 s.
                w.write_block(&packet(0, 1_700_000_001_000 + i, &eth))
                    .unwrap();
                w.write_block(&packet(1, (1_700_000_002 << 10) + i, &raw))
                    .unwrap();
            }
            if endianness == Endianness::Big {
                // An obsolete packet block (its writer puts the timestamp's two halves in
                // the right order in big-endian sections only).
                w.write_block(&NgBlock::Packet(PacketBlock {
                    interface_id: 1,
                    drop_count: 0,
                    timestamp: (1_700_000_002 << 10) + 2,
                    captured_len: raw.len() as u32,
                    original_len: raw.len() as u32,
                    data: raw.clone().into(),
                    options: vec![],
                }))
                .unwrap();
            }
            // Interface 0, at the latest packet's time.
            w.write_block(&NgBlock::SimplePacket(SimplePacketBlock {
                original_len: eth.len() as u32,
                data: eth.clone().into(),
            }))
            .unwrap();
            bytes.extend(w.into_inner());
        }
        let (flows, packets) = PcapFeeder::flows_of(&bytes, TableConfig::default()).unwrap();
        assert_eq!(packets, 15);
        let by_port = |p: i64| {
            flows
                .iter()
                .find(|f| f.transport.as_ref().is_some_and(|t| t.a == p))
                .unwrap_or_else(|| panic!("{flows:?}"))
        };
        let (e, r) = (by_port(4000), by_port(4001));
        assert_eq!(flows.len(), 2, "{flows:?}");
        assert_eq!(e.layers_path, "Ethernet/IPv4/UDP");
        assert_eq!(r.layers_path, "IPv4/UDP");
        assert_eq!(e.metric.unwrap().ab_packets, 8);
        assert_eq!(r.metric.unwrap().ab_packets, 7);
        assert_eq!(e.start, 1_700_000_001_000);
        // The simple packet blocks come at the raw interface's latest time (2/1024 s).
        assert_eq!(e.last, 1_700_000_002_001);
        assert_eq!((r.start, r.last), (1_700_000_002_000, 1_700_000_002_001));
    }

    /// Corrupt pcapng streams: the reason, and the packets read before it.
    #[test]
    fn bad_pcapng_streams_are_refused_with_the_reason() {
        use pcap_file::pcapng::PcapNgWriter;
        use pcap_file::pcapng::blocks::Block as NgBlock;
        use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketBlock;
        use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionBlock;
        let eth = udp([10, 0, 0, 1], [10, 0, 0, 2], 4000, 5000, &[1; 20]);
        // Where the last block of a little-endian stream starts (its trailer gives its length).
        let last_block =
            |b: &[u8]| b.len() - u32::from_le_bytes(b[b.len() - 4..].try_into().unwrap()) as usize;
        // Two packets of interface 0, the second one's interface then changed.
        let stream = |linktype, interface_id: u32| {
            let mut w = PcapNgWriter::new(Vec::new()).unwrap();
            w.write_block(&NgBlock::InterfaceDescription(InterfaceDescriptionBlock {
                linktype,
                snaplen: 0,
                options: vec![],
            }))
            .unwrap();
            for _ in 0..2 {
                w.write_block(&NgBlock::EnhancedPacket(EnhancedPacketBlock {
                    interface_id: 0,
                    timestamp: Duration::from_nanos(1_700_000_001_000_000),
                    original_len: eth.len() as u32,
                    data: eth.clone().into(),
                    options: vec![],
                }))
                .unwrap();
            }
            let mut b = w.into_inner();
            let last = last_block(&b);
            b[last + 8..last + 12].copy_from_slice(&interface_id.to_le_bytes());
            b
        };
        let read = |b: &[u8]| PcapFeeder::flows_of(b, TableConfig::default());
        let good = stream(DataLink::ETHERNET, 0);
        assert_eq!(read(&good).unwrap().1, 2);
        let message = |r: Result<(Vec<Flow>, u64), PcapError>| match r {
            Err(PcapError::Record { packets, message }) => (packets, message),
            r => panic!("{r:?}"),
        };
        // A packet of an interface the section does not declare.
        let (n, m) = message(read(&stream(DataLink::ETHERNET, 3)));
        assert_eq!(n, 1);
        assert!(m.contains("interface 3"), "{m}");
        // An interface of a link type not read.
        let (n, m) = message(read(&stream(DataLink::USB_LINUX, 0)));
        assert_eq!(n, 0);
        assert!(m.contains("USB_LINUX"), "{m}");
        // The last block's length: not a multiple of 4; its trailer differing; past 16 MiB.
        let last = last_block(&good);
        for (len, trailer, says) in [
            (70, None, "a block of 70 bytes"),
            (good.len() - last, Some(4), "trailer says 4"),
            (32 << 20, None, "a block of 33554432 bytes"),
        ] {
            let mut bad = good.clone();
            bad[last + 4..last + 8].copy_from_slice(&(len as u32).to_le_bytes());
            if let Some(t) = trailer {
                let end = bad.len();
                bad[end - 4..].copy_from_slice(&(t as u32).to_le_bytes());
            }
            let (n, m) = message(read(&bad));
            assert_eq!(n, 1);
            assert!(m.contains(says), "{m}");
        }
        // Cut inside the last block.
        let r = read(&good[..good.len() - 3]);
        assert_eq!(
            r.unwrap_err(),
            PcapError::Record {
                packets: 1,
                message: "the file ends inside a packet record".into()
            }
        );
        // A section header whose byte-order magic is neither.
        let mut bad = good;
        bad[8] ^= 0xff;
        assert!(matches!(read(&bad), Err(PcapError::Header(m)) if m.contains("byte-order")));
    }

    #[test]
    fn bad_streams_are_refused_with_the_reason() {
        assert!(matches!(
            PcapFeeder::flows_of(b"hello world, not a pcap", TableConfig::default()),
            Err(PcapError::Header(_))
        ));
        // The start of a pcapng section header, and no more.
        assert_eq!(
            PcapFeeder::flows_of(
                &[0x0a, 0x0d, 0x0d, 0x0a, 0, 0, 0, 0],
                TableConfig::default()
            )
            .unwrap_err(),
            PcapError::Header("the file ends inside its header".into())
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
