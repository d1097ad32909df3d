//! The flow table of one capture on one interface (Skydive's metrics accounting; Skydive's flow
//! table lifecycle): packets in, flows out at each update tick, expiry, hold of finished flows,
//! application timeouts, a bounded size with counted evictions, raw packets kept per flow.
//!
//! Time comes from the packets (or from the caller's clock through [`FlowTable::advance`]),
//! so the same capture replayed gives the same flows. The per-packet path allocates nothing
//! once a flow exists: the frame is decoded in place, the key hashed, the entry updated; the
//! `Flow` objects are built only when flows are sent.

use std::collections::HashMap;
use std::net::Ipv6Addr;

use compact_str::ToCompactString as _;

use crate::decode::{Decoded, Layer, LayerKind, LinkType, Segment, decode, segments};
use crate::extra;
use crate::hot::{
    A_SWAP, Hot, HotTable, LIVE, REFERENCED, RTT_DONE, RTT_STARTED, TOUCHED, UNDECIDED,
};
use crate::model::{
    FinishType, Flow, FlowLayer, FlowMetric, FlowProtocol, IcmpLayer, IcmpType, IpMetric,
    RawPacket, Str, TcpMetric, TransportLayer,
};
use crate::packet::{
    Keys, SegmentInfo, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN, fast_info, fast_layers_path, fast_vxlan,
    flow_uuid_hash, keys, layers_path, segment_info, skydive_keys,
};

/// Bits of `ExtraLayers`.
pub const EXTRA_VRRP: u32 = 1;
pub const EXTRA_DNS: u32 = 2;
pub const EXTRA_DHCPV4: u32 = 4;

/// How finished flows are held before they go (Skydive's 15 s).
pub const HOLD_MS: i64 = 15_000;

/// The settings of a table: the capture's and the agent's `flow.*`.
#[derive(Clone, Debug)]
pub struct TableConfig {
    pub node_tid: String,
    pub capture_id: String,
    /// `LayerKeyMode` L2 (true) or L3.
    pub l2_mode: bool,
    pub raw_packet_limit: usize,
    pub extra_tcp_metric: bool,
    pub ip_defrag: bool,
    pub extra_layers: u32,
    /// `flow.application_ports`: (IP protocol 6 or 17, port) → application name.
    pub app_ports: HashMap<(u8, u16), String>,
    /// `flow.application_timeout`: lower-case application → ms.
    pub app_timeouts: HashMap<String, i64>,
    pub max_entries: usize,
    pub update_ms: i64,
    pub expire_ms: i64,
}

impl Default for TableConfig {
    fn default() -> Self {
        TableConfig {
            node_tid: String::new(),
            capture_id: String::new(),
            l2_mode: true,
            raw_packet_limit: 0,
            extra_tcp_metric: false,
            ip_defrag: false,
            extra_layers: 0,
            app_ports: HashMap::new(),
            app_timeouts: [("arp".to_string(), 10_000), ("dns".to_string(), 10_000)]
                .into_iter()
                .collect(),
            max_entries: 500_000,
            update_ms: 60_000,
            expire_ms: 600_000,
        }
    }
}

/// Counters of a table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TableStats {
    pub packets: u64,
    /// Frames whose headers did not all fit (snap length, corruption): still counted.
    pub truncated: u64,
    /// Frames with nothing a flow can be made of.
    pub skipped: u64,
    /// Flows evicted because the table was full (`Stats.FlowDropped`).
    pub evicted: u64,
    pub fragments: u64,
    pub fragment_errors: u64,
}

impl Hot {
    fn metric(&self, e: &Entry) -> FlowMetric {
        FlowMetric {
            ab_packets: self.ab_packets,
            ab_bytes: self.ab_bytes,
            ba_packets: self.ba_packets,
            ba_bytes: self.ba_bytes,
            start: e.start_ms,
            last: ms(self.last_ns),
            rtt: e.rtt,
        }
    }
}

/// The rest of a flow.
#[derive(Clone, Debug)]
struct Entry {
    l2: u64,
    l3: u64,
    uuid: Str,
    parent_uuid: Str,
    layers_path: Str,
    application: Str,
    /// `flow.application_timeout` of the application, in ms.
    app_timeout: Option<i64>,
    /// The source side of the flow's first packet, for flows whose endpoints the canonical
    /// order does not tell apart.
    a_side: [u8; 16],
    link: Option<([u8; 6], [u8; 6])>,
    vlan: i64,
    ip_version: u8,
    a_ip: [u8; 16],
    b_ip: [u8; 16],
    tunnel_id: i64,
    transport: Option<(FlowProtocol, u16, u16)>,
    icmp: Option<(IcmpType, u8, u16, u8)>,
    start_ms: i64,
    rtt_start_ns: i64,
    rtt: i64,
    prev: Option<FlowMetric>,
    last_update: Option<FlowMetric>,
    tcp: Option<Box<TcpMetric>>,
    ip_metric: Option<IpMetric>,
    raw: Vec<RawPacket>,
    dns: Option<Box<skydive_graph::Value>>,
    dhcpv4: Option<Box<skydive_graph::Value>>,
    vrrp: Option<Box<skydive_graph::Value>>,
}

fn mac6(b: &[u8]) -> [u8; 6] {
    let mut m = [0u8; 6];
    m.copy_from_slice(&b[..6]);
    m
}

fn ip16(b: &[u8]) -> [u8; 16] {
    let mut m = [0u8; 16];
    m[..b.len().min(16)].copy_from_slice(&b[..b.len().min(16)]);
    m
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// A string of ASCII bytes made on the stack: made a string once, inline up to 24 bytes
/// (pushing characters one by one costs several times more, and a flow makes several).
fn ascii(b: &[u8]) -> Str {
    Str::from_utf8(b).unwrap_or_default()
}

/// `aa:bb:cc:dd:ee:ff` (flows are sent often: no formatting machinery).
fn mac_str(m: &[u8; 6]) -> Str {
    let mut s = [b':'; 17];
    for (i, b) in m.iter().enumerate() {
        s[i * 3] = HEX[(b >> 4) as usize];
        s[i * 3 + 1] = HEX[(b & 15) as usize];
    }
    ascii(&s)
}

/// The decimal digits of every byte value, and how many there are.
const DECIMAL: [([u8; 3], usize); 256] = {
    let mut t = [([0u8; 3], 0usize); 256];
    let mut i = 0;
    while i < 256 {
        let v = i as u8;
        t[i] = if v >= 100 {
            ([b'0' + v / 100, b'0' + v / 10 % 10, b'0' + v % 10], 3)
        } else if v >= 10 {
            ([b'0' + v / 10, b'0' + v % 10, 0], 2)
        } else {
            ([b'0' + v, 0, 0], 1)
        };
        i += 1;
    }
    t
};

fn ip_str(v: u8, b: &[u8; 16]) -> Str {
    if v != 4 {
        return Ipv6Addr::from(*b).to_compact_string();
    }
    // Each octet's digits from a table, written 4 bytes at a time (the dot after it included).
    let mut s = [b'.'; 16];
    let mut n = 0;
    for &o in &b[..4] {
        let (digits, len) = DECIMAL[o as usize];
        s[n..n + 3].copy_from_slice(&digits);
        s[n + len] = b'.';
        n += len + 1;
    }
    ascii(&s[..n - 1])
}

impl Entry {
    fn to_flow(&self, h: &Hot, cfg: &TableConfig) -> Flow {
        self.clone().into_flow(h, cfg)
    }

    fn into_flow(self, h: &Hot, cfg: &TableConfig) -> Flow {
        let metric = h.metric(&self);
        Flow {
            uuid: self.uuid,
            layers_path: self.layers_path,
            application: self.application,
            link: self.link.map(|(a, b)| FlowLayer {
                protocol: FlowProtocol::Ethernet,
                a: mac_str(&a),
                b: mac_str(&b),
                id: self.vlan,
            }),
            network: (self.ip_version != 0).then(|| FlowLayer {
                protocol: if self.ip_version == 4 {
                    FlowProtocol::Ipv4
                } else {
                    FlowProtocol::Ipv6
                },
                a: ip_str(self.ip_version, &self.a_ip),
                b: ip_str(self.ip_version, &self.b_ip),
                id: self.tunnel_id,
            }),
            transport: self.transport.map(|(p, a, b)| TransportLayer {
                protocol: p,
                a: a as i64,
                b: b as i64,
                id: 0,
            }),
            icmp: self.icmp.map(|(kind, code, id, _)| IcmpLayer {
                kind,
                code: code as u32,
                id: id as u32,
            }),
            dhcpv4: self.dhcpv4,
            dns: self.dns,
            vrrpv2: self.vrrp,
            last_update_metric: self.last_update,
            metric: Some(metric),
            tcp_metric: self.tcp,
            ip_metric: self.ip_metric,
            start: metric.start,
            last: metric.last,
            tracking_id: hex(self.l2),
            l3_tracking_id: hex(self.l3),
            parent_uuid: self.parent_uuid,
            node_tid: Str::from(cfg.node_tid.as_str()),
            capture_id: Str::from(cfg.capture_id.as_str()),
            last_raw_packets: self.raw,
            raw_packets_captured: h.raw_captured as i64,
            finish_type: h.finish,
        }
    }
}

/// An IPv4 datagram being reassembled.
struct Reassembly {
    first_ns: i64,
    /// (offset, data) of each fragment received.
    pieces: Vec<(usize, Vec<u8>)>,
    total: Option<usize>,
    header: Vec<u8>,
    link: Vec<u8>,
    count: i64,
}

#[derive(Default)]
struct Scratch {
    decoded: Decoded,
    segs: Vec<Segment>,
    parent: String,
    parent_hash: u64,
}

/// What a packet needs of the rest of its flow, decided on the common path.
#[derive(Clone, Copy, Default)]
struct Rare {
    /// The packet goes from the flow's A side to its B side.
    ab: bool,
    rtt_start: bool,
    rtt_end: bool,
    /// The flags `ExtraTCPMetric` records.
    tcp_flags: u8,
    raw: bool,
    app: bool,
}

impl Rare {
    fn needed(&self) -> bool {
        self.rtt_start || self.rtt_end || self.tcp_flags != 0 || self.raw || self.app
    }
}

/// What accounting a packet reads of its fields (besides its flow's keys): small, so that the
/// common-case path keeps it for a group of frames in place of the frames' whole
/// [`SegmentInfo`], and reads the frame again only for what few packets need.
#[derive(Clone, Copy, Default)]
struct Seen {
    tcp: bool,
    tcp_flags: u8,
    echo_request: bool,
    echo_reply: bool,
}

impl Seen {
    #[inline(always)]
    fn of(info: &SegmentInfo<'_>) -> Seen {
        Seen {
            tcp: matches!(info.transport, Some((FlowProtocol::Tcp, _, _))),
            tcp_flags: info.tcp_flags,
            echo_request: info.icmp.is_some_and(|i| i.is_echo_request()),
            echo_reply: info.icmp.is_some_and(|i| i.is_echo_reply()),
        }
    }
}

/// A captured frame.
#[derive(Clone, Copy, Debug)]
pub struct Packet<'a> {
    pub data: &'a [u8],
    /// Its length on the wire (the capture may have kept less).
    pub wire_len: u32,
    pub ts_ns: i64,
}

/// Frames looked up together by [`FlowTable::process_batch`].
const BATCH: usize = 32;

/// The flow table.
pub struct FlowTable {
    cfg: TableConfig,
    /// The flows' hot parts, by key; a flow's position there is its slot.
    hot: HotTable,
    /// The rest of the flows, at their hot part's `cold` (`None` when free; boxed: the
    /// vector grows by moving pointers, not entries).
    cold: Vec<Option<Box<Entry>>>,
    free: Vec<u32>,
    hand: usize,
    /// Per-packet working space, kept between packets (boxed: taken and put back by pointer).
    scratch: Option<Box<Scratch>>,
    stats: TableStats,
    last_update_ms: Option<i64>,
    last_expire_ms: Option<i64>,
    reassembly: HashMap<(u32, u32, u16, u8), Reassembly>,
}

impl std::fmt::Debug for FlowTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlowTable")
            .field("flows", &self.hot.len())
            .finish()
    }
}

fn ms(ns: i64) -> i64 {
    ns.div_euclid(1_000_000)
}

impl FlowTable {
    pub fn new(cfg: TableConfig) -> FlowTable {
        FlowTable {
            cfg,
            hot: HotTable::default(),
            cold: Vec::new(),
            free: Vec::new(),
            hand: 0,
            scratch: Some(Box::default()),
            stats: TableStats::default(),
            last_update_ms: None,
            last_expire_ms: None,
            reassembly: HashMap::new(),
        }
    }

    pub fn config(&self) -> &TableConfig {
        &self.cfg
    }

    pub fn stats(&self) -> TableStats {
        self.stats
    }

    /// Flows in the table.
    pub fn len(&self) -> usize {
        self.hot.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hot.len() == 0
    }

    /// Processes one frame: `wire_len` is its length on the wire (the capture may have kept
    /// less), `ts_ns` its time. [`FlowTable::process_batch`] is faster for many frames.
    pub fn process(&mut self, frame: &[u8], wire_len: u32, ts_ns: i64, link: LinkType) {
        self.process_batch(
            &[Packet {
                data: frame,
                wire_len,
                ts_ns,
            }],
            link,
        );
    }

    /// Processes frames in order. Frames are taken by groups: the flows of a group are
    /// looked up together, so that their memory fetches overlap instead of following one
    /// another (a table of many flows does not fit in the caches).
    pub fn process_batch(&mut self, packets: &[Packet<'_>], link: LinkType) {
        let mut chunks = packets.chunks(BATCH).peekable();
        if let Some(first) = chunks.peek() {
            touch_headers(first);
        }
        while let Some(chunk) = chunks.next() {
            // The next group's headers are fetched while this group is processed.
            if let Some(next) = chunks.peek() {
                touch_headers(next);
            }
            self.process_chunk(chunk, link);
        }
    }

    fn process_chunk(&mut self, chunk: &[Packet<'_>], link: LinkType) {
        // The keys of the frames that take the common case, and what accounting reads of them.
        let mut fast: [Option<(Keys, Seen)>; BATCH] = [None; BATCH];
        if link == LinkType::Ethernet {
            // Straight off the frames.
            for (f, p) in fast.iter_mut().zip(chunk) {
                if let Some((info, cut)) = fast_info(p.data) {
                    *f = Some((keys(&info, self.cfg.l2_mode, 0), Seen::of(&info)));
                    self.stats.truncated += cut as u64;
                }
            }
            // Their flows' home buckets, loads independent of each other, before the lookups.
            let mut touch = 0u8;
            for (k, _) in fast.iter().flatten() {
                touch ^= self.hot.touch(k.key);
            }
            std::hint::black_box(touch);
        }
        let l2_mode = self.cfg.l2_mode;
        for (p, f) in chunk.iter().zip(&fast) {
            if let Some((k, seen)) = f {
                self.begin(p.ts_ns);
                // The frame's fields are read again only for what few packets need: a new
                // flow (made from them, without the decoder), the side of a flow whose
                // endpoints the order cannot tell apart, the rare part of the accounting.
                let full = || fast_info(p.data).unwrap_or_default().0;
                let slot = self.flow_slot(k, p.ts_ns, |t| {
                    let info = full();
                    t.new_entry(&info, fast_layers_path(p.data, &info), "", p.ts_ns)
                });
                let length = p.wire_len as i64;
                let side = || side(&full(), l2_mode);
                if let Some(rare) = self.account(slot, k, *seen, side, &[], p.ts_ns, length, false)
                {
                    self.account_rare(slot, rare, &full(), &[], p.data, p.ts_ns, link, None);
                }
                continue;
            }
            if link == LinkType::Ethernet
                && let Some((outer, inner, cut)) = fast_vxlan(p.data)
            {
                self.stats.truncated += cut as u64;
                self.process_vxlan(p, &outer, &inner, link);
                continue;
            }
            self.process_one(p, link);
        }
    }

    /// Counts a frame; the first one starts the table's clock.
    #[inline]
    fn begin(&mut self, ts_ns: i64) {
        self.stats.packets += 1;
        if self.last_update_ms.is_none() {
            self.last_update_ms = Some(ms(ts_ns));
            self.last_expire_ms = Some(ms(ts_ns));
        }
    }

    /// A VXLAN frame of the common case ([`fast_vxlan`]): the tunnel's flow, then the inner
    /// flow with the tunnel's as its parent, as the general path makes them.
    fn process_vxlan(
        &mut self,
        p: &Packet<'_>,
        outer: &SegmentInfo<'_>,
        inner: &SegmentInfo<'_>,
        link: LinkType,
    ) {
        self.begin(p.ts_ns);
        let ko = keys(outer, self.cfg.l2_mode, 0);
        let so = self.flow_slot(&ko, p.ts_ns, |t| {
            t.new_entry(outer, fast_layers_path(p.data, outer), "", p.ts_ns)
        });
        let length = p.wire_len as i64;
        self.account_full(so, &ko, outer, &[], p.data, p.ts_ns, length, link, None);
        // (From the tunnel's bucket, in cache: the rest of its flow is not read.)
        let Some(parent_hash) = self.hot.buckets().get(so as usize).map(|h| h.uuid_hash) else {
            return;
        };
        let ki = keys(inner, self.cfg.l2_mode, parent_hash);
        let si = self.flow_slot(&ki, p.ts_ns, |t| {
            let parent = t.entry(so).map_or("", |e| &e.uuid);
            let path = fast_layers_path(&p.data[inner.offset as usize..], inner);
            t.new_entry(inner, path, parent, p.ts_ns)
        });
        let length = (p.wire_len as i64 - inner.offset as i64).max(0);
        self.account_full(si, &ki, inner, &[], p.data, p.ts_ns, length, link, None);
    }

    /// The general path: the frame decoded layer by layer, each segment its flow.
    fn process_one(&mut self, p: &Packet<'_>, link: LinkType) {
        let (frame, wire_len, ts_ns) = (p.data, p.wire_len, p.ts_ns);
        self.begin(ts_ns);
        let mut sc = self.scratch.take().unwrap_or_default();
        decode(frame, link, &mut sc.decoded);
        if sc.decoded.truncated {
            self.stats.truncated += 1;
        }
        if self.cfg.ip_defrag
            && let Some(whole) = self.defragment(frame, &sc.decoded, ts_ns)
        {
            if let Some((data, count)) = whole {
                decode(&data, link, &mut sc.decoded);
                self.process_decoded(&mut sc, &data, data.len() as u32, ts_ns, link, Some(count));
            }
        } else {
            self.process_decoded(&mut sc, frame, wire_len, ts_ns, link, None);
        }
        self.scratch = Some(sc);
    }

    fn process_decoded(
        &mut self,
        sc: &mut Scratch,
        frame: &[u8],
        wire_len: u32,
        ts_ns: i64,
        link: LinkType,
        fragments: Option<i64>,
    ) {
        segments(&sc.decoded, &mut sc.segs);
        sc.parent.clear();
        sc.parent_hash = 0;
        let mut made = false;
        for i in 0..sc.segs.len() {
            let seg = sc.segs[i];
            let info = segment_info(frame, &sc.decoded, seg);
            if info.src_mac.is_none() && info.ip_version == 0 {
                continue;
            }
            let length = if info.src_mac.is_none() && info.ip_version != 0 {
                info.ip_len as i64
            } else if i == 0 {
                wire_len as i64
            } else {
                (wire_len as i64 - info.offset as i64).max(0)
            };
            let k = keys(&info, self.cfg.l2_mode, sc.parent_hash);
            let slot = self.upsert(
                &k,
                &info,
                seg,
                &sc.decoded,
                &sc.parent,
                frame,
                ts_ns,
                length,
                link,
                fragments,
            );
            // Only tunnels have a next segment: the UUID is copied only then.
            if i + 1 < sc.segs.len() {
                sc.parent.clear();
                if let Some(e) = self.entry(slot) {
                    sc.parent.push_str(&e.uuid);
                    sc.parent_hash = self.hot.buckets()[slot as usize].uuid_hash;
                }
            }
            made = true;
        }
        if !made {
            self.stats.skipped += 1;
        }
    }

    /// Finds or creates the flow of a segment and accounts the packet.
    #[allow(clippy::too_many_arguments)]
    fn upsert(
        &mut self,
        k: &Keys,
        info: &SegmentInfo<'_>,
        seg: Segment,
        decoded: &Decoded,
        parent: &str,
        frame: &[u8],
        ts_ns: i64,
        length: i64,
        link: LinkType,
        fragments: Option<i64>,
    ) -> u32 {
        let slot = self.flow_slot(k, ts_ns, |t| {
            t.new_entry(info, layers_path(decoded, seg), parent, ts_ns)
        });
        let layers = &decoded.layers()[seg.first..=seg.last];
        self.account_full(slot, k, info, layers, frame, ts_ns, length, link, fragments);
        slot
    }

    /// Accounts a packet in the flow of `slot`, with all its fields at hand. `layers` are its
    /// segment's (only application layers are looked for in them).
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn account_full(
        &mut self,
        slot: u32,
        k: &Keys,
        info: &SegmentInfo<'_>,
        layers: &[Layer],
        frame: &[u8],
        ts_ns: i64,
        length: i64,
        link: LinkType,
        fragments: Option<i64>,
    ) {
        let l2_mode = self.cfg.l2_mode;
        let seen = Seen::of(info);
        let side = || side(info, l2_mode);
        let fragmented = fragments.is_some();
        if let Some(rare) = self.account(slot, k, seen, side, layers, ts_ns, length, fragmented) {
            self.account_rare(slot, rare, info, layers, frame, ts_ns, link, fragments);
        }
    }

    /// Accounts a packet in the flow of `slot`: the counters and state in its bucket. `side`
    /// gives the packet's side, needed only by flows whose endpoints the canonical order does
    /// not tell apart. Returns what the rest of the packet's accounting needs, when it needs
    /// anything ([`FlowTable::account_rare`]).
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn account(
        &mut self,
        slot: u32,
        k: &Keys,
        seen: Seen,
        side: impl FnOnce() -> [u8; 16],
        layers: &[Layer],
        ts_ns: i64,
        length: i64,
        fragmented: bool,
    ) -> Option<Rare> {
        let cfg = &self.cfg;
        let h = self.hot.get_mut(slot as usize);
        h.flags |= TOUCHED | REFERENCED;
        let ab = if h.flags & UNDECIDED == 0 {
            k.swap == (h.flags & A_SWAP != 0)
        } else {
            self.cold[h.cold as usize]
                .as_ref()
                .is_none_or(|e| side() == e.a_side)
        };
        if ab {
            h.ab_packets += 1;
            h.ab_bytes += length;
        } else {
            h.ba_packets += 1;
            h.ba_bytes += length;
        }
        if ts_ns > h.last_ns {
            h.last_ns = ts_ns;
        }
        // What needs the rest of the flow: decided from the packet and the hot part only.
        let mut rare = Rare {
            ab,
            ..Rare::default()
        };
        rare.rtt_start = seen.echo_request && h.flags & RTT_STARTED == 0;
        rare.rtt_end = seen.echo_reply && h.flags & (RTT_STARTED | RTT_DONE) == RTT_STARTED;
        if seen.tcp {
            let f = seen.tcp_flags;
            rare.rtt_start = f & TCP_SYN != 0 && f & TCP_ACK == 0 && h.flags & RTT_STARTED == 0;
            rare.rtt_end = (f & (TCP_SYN | TCP_ACK) == TCP_SYN | TCP_ACK || f & TCP_RST != 0)
                && h.flags & (RTT_STARTED | RTT_DONE) == RTT_STARTED;
            // Any FIN or RST ends the flow (Skydive looked only at the flow's first packet).
            if f & TCP_RST != 0 {
                h.finish = FinishType::TcpRst;
            } else if f & TCP_FIN != 0 && h.finish == FinishType::NotFinished {
                h.finish = FinishType::TcpFin;
            }
            if cfg.extra_tcp_metric {
                rare.tcp_flags = f & (TCP_SYN | TCP_FIN | TCP_RST);
            }
        }
        rare.raw =
            cfg.raw_packet_limit > 0 && (h.raw_captured as usize) < cfg.raw_packet_limit.min(255);
        rare.app = cfg.extra_layers != 0
            && layers
                .iter()
                .any(|l| matches!(l.kind, LayerKind::Dns | LayerKind::Dhcpv4 | LayerKind::Vrrp));
        (rare.needed() || fragmented).then_some(rare)
    }

    /// The part of [`FlowTable::account`] few packets take (out of line: the common path
    /// stays small).
    #[allow(clippy::too_many_arguments)]
    #[inline(never)]
    fn account_rare(
        &mut self,
        slot: u32,
        rare: Rare,
        info: &SegmentInfo<'_>,
        layers: &[Layer],
        frame: &[u8],
        ts_ns: i64,
        link: LinkType,
        fragments: Option<i64>,
    ) {
        let cfg = &self.cfg;
        let h = self.hot.get_mut(slot as usize);
        if rare.rtt_start {
            h.flags |= RTT_STARTED;
        }
        if rare.rtt_end {
            h.flags |= RTT_DONE;
        }
        if rare.raw {
            h.raw_captured += 1;
        }
        let packets = h.ab_packets + h.ba_packets;
        let Some(e) = self.cold[h.cold as usize].as_mut() else {
            return;
        };
        if rare.rtt_start {
            e.rtt_start_ns = ts_ns;
        }
        if rare.rtt_end {
            e.rtt = (ts_ns - e.rtt_start_ns).max(1);
        }
        if let Some(n) = fragments {
            let m = e.ip_metric.get_or_insert_with(IpMetric::default);
            m.fragments += n;
        }
        if rare.tcp_flags != 0 {
            let t = e.tcp.get_or_insert_with(Box::default);
            let now = ms(ts_ns);
            if rare.tcp_flags & TCP_SYN != 0 {
                if rare.ab && t.ab_syn_start == 0 {
                    t.ab_syn_start = now;
                    t.ab_syn_ttl = info.ttl as u32;
                } else if !rare.ab && t.ba_syn_start == 0 {
                    t.ba_syn_start = now;
                    t.ba_syn_ttl = info.ttl as u32;
                }
            }
            if rare.tcp_flags & TCP_FIN != 0 {
                if rare.ab && t.ab_fin_start == 0 {
                    t.ab_fin_start = now;
                } else if !rare.ab && t.ba_fin_start == 0 {
                    t.ba_fin_start = now;
                }
            }
            if rare.tcp_flags & TCP_RST != 0 {
                if rare.ab && t.ab_rst_start == 0 {
                    t.ab_rst_start = now;
                } else if !rare.ab && t.ba_rst_start == 0 {
                    t.ba_rst_start = now;
                }
            }
        }
        if rare.raw {
            e.raw.push(RawPacket {
                timestamp: ms(ts_ns),
                index: packets,
                data: frame.to_vec(),
                link_type: link.pcap(),
            });
        }
        if rare.app {
            for l in layers {
                let body = &frame[l.start as usize..];
                match l.kind {
                    LayerKind::Dns if cfg.extra_layers & EXTRA_DNS != 0 => {
                        e.dns = extra::dns(body, ms(ts_ns)).map(Box::new);
                    }
                    LayerKind::Dhcpv4 if cfg.extra_layers & EXTRA_DHCPV4 != 0 => {
                        e.dhcpv4 = extra::dhcpv4(body).map(Box::new);
                    }
                    LayerKind::Vrrp if cfg.extra_layers & EXTRA_VRRP != 0 => {
                        e.vrrp = extra::vrrp(body).map(Box::new);
                    }
                    _ => {}
                }
            }
        }
    }

    /// A new flow of the segment `info`: the rest of it, and its UUID hash (kept in its
    /// bucket).
    fn new_entry(
        &self,
        info: &SegmentInfo<'_>,
        layers_path: Str,
        parent: &str,
        ts_ns: i64,
    ) -> (Box<Entry>, u64) {
        let start = ms(ts_ns);
        let mut application = match info.last {
            Some(k) => Str::const_new(k.name()),
            None => Str::default(),
        };
        if let Some((proto, sp, dp)) = info.transport {
            let p = match proto {
                FlowProtocol::Tcp => 6,
                FlowProtocol::Udp => 17,
                _ => 132,
            };
            // The source port first, then the destination port, as Skydive looked them up.
            if let Some(name) = self
                .cfg
                .app_ports
                .get(&(p, sp))
                .or_else(|| self.cfg.app_ports.get(&(p, dp)))
            {
                application = Str::from_str_to_uppercase(name);
            }
        }
        // (A handful of applications: compared in place rather than lowered and hashed.)
        let app_timeout = self
            .cfg
            .app_timeouts
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(&application))
            .map(|(_, t)| *t);
        let (skydive_key, l2, l3) = skydive_keys(info, self.cfg.l2_mode, parent);
        let uuid_hash = flow_uuid_hash(skydive_key, start, &self.cfg.node_tid);
        // Made in its box (moved there from the stack, the entry would be copied once more).
        let entry = Box::new(Entry {
            l2,
            l3,
            uuid: hex(uuid_hash),
            parent_uuid: Str::from(parent),
            layers_path,
            application,
            app_timeout,
            a_side: side(info, self.cfg.l2_mode),
            link: info
                .src_mac
                .zip(info.dst_mac)
                .map(|(s, d)| (mac6(s), mac6(d))),
            vlan: info.vlan,
            ip_version: info.ip_version,
            a_ip: ip16(info.src_ip),
            b_ip: ip16(info.dst_ip),
            tunnel_id: info.tunnel_id,
            transport: info.transport,
            icmp: info.icmp.map(|i| (i.kind, i.code, i.id, i.wire_type)),
            start_ms: start,
            rtt_start_ns: 0,
            rtt: 0,
            prev: None,
            last_update: None,
            tcp: None,
            ip_metric: None,
            raw: Vec::new(),
            dns: None,
            dhcpv4: None,
            vrrp: None,
        });
        (entry, uuid_hash)
    }

    /// The slot of the flow of `k`, made by `make` (and stored) when there is none.
    #[inline]
    fn flow_slot(
        &mut self,
        k: &Keys,
        ts_ns: i64,
        make: impl FnOnce(&Self) -> (Box<Entry>, u64),
    ) -> u32 {
        match self.hot.find(k.key) {
            Some(s) => s as u32,
            None => self.make_flow(k, ts_ns, make),
        }
    }

    /// [`FlowTable::flow_slot`]'s rare branch, out of line: the per-packet loop stays small.
    #[cold]
    #[inline(never)]
    fn make_flow(
        &mut self,
        k: &Keys,
        ts_ns: i64,
        make: impl FnOnce(&Self) -> (Box<Entry>, u64),
    ) -> u32 {
        let (e, uuid_hash) = make(self);
        self.insert(e, uuid_hash, k, ts_ns)
    }

    /// The rest of the flow at `slot`.
    fn entry(&self, slot: u32) -> Option<&Entry> {
        let h = self.hot.buckets().get(slot as usize)?;
        self.cold.get(h.cold as usize)?.as_deref()
    }

    /// Stores a new flow, evicting one if the table is full.
    fn insert(&mut self, e: Box<Entry>, uuid_hash: u64, k: &Keys, ts_ns: i64) -> u32 {
        if self.hot.len() >= self.cfg.max_entries.max(1) {
            self.evict();
        }
        let cold = match self.free.pop() {
            Some(c) => c,
            None => {
                self.cold.push(None);
                (self.cold.len() - 1) as u32
            }
        };
        self.cold[cold as usize] = Some(e);
        let mut flags = LIVE | REFERENCED;
        if k.swap {
            flags |= A_SWAP;
        }
        if !k.decided {
            flags |= UNDECIDED;
        }
        let slot = self.hot.insert(Hot {
            key: k.key,
            last_ns: ts_ns,
            cold,
            flags,
            uuid_hash,
            ..Hot::default()
        });
        slot as u32
    }

    /// The clock algorithm: the first flow not used since the hand last passed it goes.
    fn evict(&mut self) {
        loop {
            let i = self.hand % self.hot.buckets().len();
            self.hand = i + 1;
            let h = self.hot.get_mut(i);
            if h.flags & LIVE == 0 {
                continue;
            }
            if h.flags & REFERENCED != 0 {
                h.flags &= !REFERENCED;
                continue;
            }
            self.remove_slot(i);
            self.stats.evicted += 1;
            return;
        }
    }

    fn remove_slot(&mut self, slot: usize) -> Option<(Hot, Box<Entry>)> {
        let h = self.hot.remove(slot);
        let e = self.cold.get_mut(h.cold as usize)?.take()?;
        self.free.push(h.cold);
        Some((h, e))
    }

    /// The time from which [`FlowTable::advance`] has a tick to run (`None` before the first
    /// packet): a reader of timestamped packets can hand the table every packet before that
    /// time in one batch, then advance it.
    pub fn next_tick_ms(&self) -> Option<i64> {
        let update = self.last_update_ms?.saturating_add(self.cfg.update_ms);
        let expire = self.last_expire_ms?.saturating_add(self.cfg.expire_ms);
        Some(update.min(expire))
    }

    /// Runs the update and expire ticks that are due at `now_ms`; returns the flows to send.
    pub fn advance(&mut self, now_ms: i64) -> Vec<Flow> {
        let mut out = Vec::new();
        let last_update = *self.last_update_ms.get_or_insert(now_ms);
        if now_ms - last_update >= self.cfg.update_ms {
            out.extend(self.update(now_ms));
        }
        let last_expire = *self.last_expire_ms.get_or_insert(now_ms);
        if now_ms - last_expire >= self.cfg.expire_ms {
            out.extend(self.expire(now_ms));
        }
        out
    }

    /// The update tick (Skydive's flow table lifecycle): the flows touched since the previous
    /// tick, with their `LastUpdateMetric`; flows of timed-out applications; the hold of
    /// finished flows.
    pub fn update(&mut self, now_ms: i64) -> Vec<Flow> {
        let prev_tick = self.last_update_ms.unwrap_or(now_ms);
        self.last_update_ms = Some(now_ms);
        let mut out = Vec::new();
        let mut gone = Vec::new();
        for i in 0..self.hot.buckets().len() {
            let h = self.hot.get_mut(i);
            if h.flags & LIVE == 0 {
                continue;
            }
            let Some(e) = self.cold[h.cold as usize].as_mut() else {
                continue;
            };
            let metric = h.metric(e);
            if h.flags & TOUCHED != 0 {
                let start = if e.prev.is_none() {
                    e.start_ms
                } else {
                    prev_tick
                };
                let prev = e.prev.unwrap_or_default();
                e.last_update = Some(metric.delta(&prev, start, now_ms));
                e.prev = Some(metric);
                h.flags &= !TOUCHED;
                out.push(e.to_flow(h, &self.cfg));
                e.raw.clear();
                continue;
            }
            if let Some(t) = e.app_timeout
                && now_ms - metric.last > t
                && !h.finish.is_finished()
            {
                h.finish = FinishType::Timeout;
                let prev = e.prev.unwrap_or_default();
                e.last_update = Some(metric.delta(&prev, prev_tick, now_ms));
                out.push(e.to_flow(h, &self.cfg));
                gone.push(i);
                continue;
            }
            e.last_update = Some(FlowMetric {
                start: prev_tick,
                last: now_ms,
                ..Default::default()
            });
            if h.finish.is_finished() && now_ms - metric.last >= HOLD_MS {
                gone.push(i);
            }
        }
        for i in gone {
            self.remove_slot(i);
        }
        out
    }

    /// The expire tick: flows idle since before the previous expire tick go, with a final
    /// update; unfinished ones end by timeout.
    pub fn expire(&mut self, now_ms: i64) -> Vec<Flow> {
        let before = self.last_expire_ms.unwrap_or(now_ms);
        self.last_expire_ms = Some(now_ms);
        let prev_tick = self.last_update_ms.unwrap_or(now_ms);
        let idle: Vec<usize> = self
            .hot
            .buckets()
            .iter()
            .enumerate()
            .filter(|(_, h)| h.flags & LIVE != 0 && ms(h.last_ns) < before)
            .map(|(i, _)| i)
            .collect();
        let mut out = Vec::new();
        for i in idle {
            if let Some((h, e)) = self.remove_slot(i) {
                out.push(self.finish(h, e, prev_tick, now_ms));
            }
        }
        self.expire_reassembly(now_ms);
        out
    }

    /// A flow's last message: its final `LastUpdateMetric`, ended by timeout unless it
    /// ended otherwise.
    fn finish(&self, mut h: Hot, mut e: Box<Entry>, prev_tick: i64, now_ms: i64) -> Flow {
        let prev = e.prev.unwrap_or_default();
        let start = if e.prev.is_none() {
            e.start_ms
        } else {
            prev_tick
        };
        e.last_update = Some(h.metric(&e).delta(&prev, start, now_ms));
        if !h.finish.is_finished() {
            h.finish = FinishType::Timeout;
        }
        (*e).into_flow(&h, &self.cfg)
    }

    /// Ends every flow now (the capture stops): all are sent.
    pub fn flush(&mut self, now_ms: i64) -> Vec<Flow> {
        let prev_tick = self.last_update_ms.unwrap_or(now_ms);
        let hot = self.hot.take();
        let cold = std::mem::take(&mut self.cold);
        self.free.clear();
        self.hand = 0;
        self.reassembly.clear();
        // In the order of the entries (the order the flows were made, free entries being
        // reused), so that they are read one after another: each flow's hot part is found
        // by its entry's index (a sort by that index costs several times more).
        let mut hot_of = vec![u32::MAX; cold.len()];
        for (i, h) in hot.iter().enumerate() {
            if let Some(at) = hot_of.get_mut(h.cold as usize) {
                *at = i as u32;
            }
        }
        let mut out = Vec::with_capacity(hot.len());
        for (e, i) in cold.into_iter().zip(hot_of) {
            if let (Some(e), Some(h)) = (e, hot.get(i as usize)) {
                out.push(self.finish(*h, e, prev_tick, now_ms));
            }
        }
        out
    }

    /// The flows in the table now (for live queries).
    pub fn flows(&self) -> Vec<Flow> {
        self.hot
            .buckets()
            .iter()
            .filter(|h| h.flags & LIVE != 0)
            .filter_map(|h| {
                let e = self.cold.get(h.cold as usize)?.as_ref()?;
                Some(e.to_flow(h, &self.cfg))
            })
            .collect()
    }

    /// IPv4 defragmentation (`IPDefrag`): `None` when the frame is not a fragment, `Some(None)`
    /// while a datagram is incomplete, `Some(Some(frame, fragments))` once it is whole.
    #[allow(clippy::type_complexity)]
    fn defragment(
        &mut self,
        frame: &[u8],
        d: &Decoded,
        ts_ns: i64,
    ) -> Option<Option<(Vec<u8>, i64)>> {
        let layers = d.layers();
        let ip = layers.iter().position(|l| l.kind == LayerKind::Ipv4)?;
        if layers.get(ip + 1).map(|l| l.kind) != Some(LayerKind::Fragment) {
            return None;
        }
        let h = &frame[layers[ip].start as usize..layers[ip].end as usize];
        let frag = u16::from_be_bytes([h[6], h[7]]);
        let more = frag & 0x2000 != 0;
        let offset = (frag & 0x1fff) as usize * 8;
        let key = (
            u32::from_be_bytes([h[12], h[13], h[14], h[15]]),
            u32::from_be_bytes([h[16], h[17], h[18], h[19]]),
            u16::from_be_bytes([h[4], h[5]]),
            h[9],
        );
        let payload = &frame[layers[ip + 1].start as usize..layers[ip + 1].end as usize];
        self.stats.fragments += 1;
        let r = self.reassembly.entry(key).or_insert_with(|| Reassembly {
            first_ns: ts_ns,
            pieces: Vec::new(),
            total: None,
            header: Vec::new(),
            link: Vec::new(),
            count: 0,
        });
        r.count += 1;
        if offset == 0 {
            r.header = h.to_vec();
            r.link = frame[..layers[ip].start as usize].to_vec();
        }
        if !more {
            r.total = Some(offset + payload.len());
        }
        if r.pieces
            .iter()
            .any(|(o, p)| offset < o + p.len() && *o < offset + payload.len())
        {
            // Overlapping fragments: an error, the datagram is dropped.
            self.stats.fragment_errors += 1;
            self.reassembly.remove(&key);
            return Some(None);
        }
        r.pieces.push((offset, payload.to_vec()));
        let Some(total) = r.total else {
            return Some(None);
        };
        if r.header.is_empty() {
            return Some(None);
        }
        let mut have = 0;
        r.pieces.sort_by_key(|(o, _)| *o);
        for (o, p) in &r.pieces {
            if *o != have {
                return Some(None);
            }
            have += p.len();
        }
        if have != total {
            return Some(None);
        }
        let Some(r) = self.reassembly.remove(&key) else {
            return Some(None);
        };
        let mut whole = r.link;
        let mut header = r.header;
        let total_len = header.len() + total;
        if total_len > u16::MAX as usize {
            self.stats.fragment_errors += 1;
            return Some(None);
        }
        header[2..4].copy_from_slice(&(total_len as u16).to_be_bytes());
        header[6] = 0;
        header[7] = 0;
        whole.extend_from_slice(&header);
        for (_, p) in r.pieces {
            whole.extend_from_slice(&p);
        }
        Some(Some((whole, r.count)))
    }

    /// Drops datagrams still incomplete after 30 s.
    fn expire_reassembly(&mut self, now_ms: i64) {
        let before = self.reassembly.len();
        self.reassembly
            .retain(|_, r| now_ms - ms(r.first_ns) < 30_000);
        self.stats.fragment_errors += (before - self.reassembly.len()) as u64;
    }
}

/// Reads a byte of each frame, so that their headers are fetched from memory together (the
/// loads do not depend on each other) before they are needed.
#[inline]
fn touch_headers(packets: &[Packet<'_>]) {
    let mut touch = 0u8;
    for p in packets {
        touch ^= p.data.first().copied().unwrap_or(0);
    }
    std::hint::black_box(touch);
}

/// The source side of a packet, in the terms that orient its flow: the flow's A side is its
/// first packet's, and a packet goes from A to B when its side is A's. By order of
/// preference: the MAC address (L2 mode, when the two differ), the IP address (when they
/// differ), the port (when they differ), the ICMP type, the MAC address.
fn side(info: &SegmentInfo<'_>, l2_mode: bool) -> [u8; 16] {
    let mut s = [0u8; 16];
    if l2_mode
        && let (Some(src), Some(dst)) = (info.src_mac, info.dst_mac)
        && src != dst
    {
        s[..6].copy_from_slice(&src[..6]);
        return s;
    }
    if info.ip_version != 0 && info.src_ip != info.dst_ip {
        let n = info.src_ip.len().min(16);
        s[..n].copy_from_slice(&info.src_ip[..n]);
        return s;
    }
    if let Some((_, sp, dp)) = info.transport
        && sp != dp
    {
        s[..2].copy_from_slice(&sp.to_be_bytes());
        return s;
    }
    if let Some(icmp) = info.icmp {
        s[0] = icmp.wire_type;
        return s;
    }
    if let Some(src) = info.src_mac {
        s[..6].copy_from_slice(&src[..6]);
    }
    s
}

/// Lower-case hexadecimal, without leading zeros (Go's `%x`).
fn hex(v: u64) -> Str {
    // All 16 digits at once, then the leading zeros dropped (at least one digit kept).
    let mut buf = [0u8; 16];
    for (i, d) in buf.iter_mut().enumerate() {
        *d = HEX[((v >> (60 - 4 * i)) & 15) as usize];
    }
    let skip = ((v | 1).leading_zeros() / 4) as usize;
    ascii(&buf[skip..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_of_a_flow() {
        for (v, want) in [
            (0u64, "0"),
            (0xf, "f"),
            (0x10, "10"),
            (0x0123_4567_89ab_cdef, "123456789abcdef"),
            (u64::MAX, "ffffffffffffffff"),
        ] {
            assert_eq!(hex(v), want);
            assert_eq!(hex(v), format!("{v:x}"));
        }
        let mut ip = [0u8; 16];
        for (octets, want) in [
            ([0, 0, 0, 0], "0.0.0.0"),
            ([10, 0, 0, 1], "10.0.0.1"),
            ([192, 168, 99, 255], "192.168.99.255"),
            ([255, 255, 255, 255], "255.255.255.255"),
            ([1, 22, 103, 9], "1.22.103.9"),
        ] {
            ip[..4].copy_from_slice(&octets);
            assert_eq!(ip_str(4, &ip), want);
        }
        for o in 0..=255u8 {
            ip[..4].copy_from_slice(&[o, 255 - o, o / 3, 7]);
            assert_eq!(
                ip_str(4, &ip),
                std::net::Ipv4Addr::from([o, 255 - o, o / 3, 7]).to_string()
            );
        }
        assert_eq!(
            mac_str(&[0, 0x1b, 0x21, 0xaa, 0xfe, 9]),
            "00:1b:21:aa:fe:09"
        );
    }
}
