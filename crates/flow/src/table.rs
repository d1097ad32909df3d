//! The flow table of one capture on one interface (compat spec §5.4, §5.5): packets in,
//! flows out at each update tick, expiry, hold of finished flows, application timeouts, a
//! bounded size with counted evictions, raw packets kept per flow.
//!
//! Time comes from the packets (or from the caller's clock through [`FlowTable::advance`]),
//! so the same capture replayed gives the same flows. The per-packet path allocates nothing
//! once a flow exists: the frame is decoded in place, the key hashed, the entry updated; the
//! `Flow` objects are built only when flows are sent.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::{Ipv4Addr, Ipv6Addr};

use crate::decode::{Decoded, LayerKind, LinkType, Segment, decode, segments};
use crate::extra;
use crate::model::{
    FinishType, Flow, FlowLayer, FlowMetric, FlowProtocol, IcmpLayer, IcmpType, IpMetric,
    RawPacket, TcpMetric, TransportLayer,
};
use crate::packet::{
    Keys, SegmentInfo, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN, flow_uuid_hash, keys, layers_path,
    segment_info, skydive_keys,
};

/// Keys are hashes already: the map uses them as they are.
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

type KeyMap<V> = HashMap<u64, V, BuildHasherDefault<KeyHasher>>;

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

#[derive(Clone, Debug)]
struct Entry {
    key: u64,
    l2: u64,
    l3: u64,
    uuid: String,
    /// The UUID's hash, the parent part of the keys of the flows encapsulated in this one.
    uuid_hash: u64,
    parent_uuid: String,
    layers_path: String,
    application: String,
    link: Option<([u8; 6], [u8; 6])>,
    vlan: i64,
    ip_version: u8,
    a_ip: [u8; 16],
    b_ip: [u8; 16],
    tunnel_id: i64,
    transport: Option<(FlowProtocol, u16, u16)>,
    icmp: Option<(IcmpType, u8, u16, u8)>,
    metric: FlowMetric,
    last_ns: i64,
    rtt_start_ns: i64,
    prev: Option<FlowMetric>,
    last_update: Option<FlowMetric>,
    touched: bool,
    finish: FinishType,
    tcp: Option<TcpMetric>,
    ip_metric: Option<IpMetric>,
    raw: Vec<RawPacket>,
    raw_captured: i64,
    packets: i64,
    dns: Option<skydive_graph::Value>,
    dhcpv4: Option<skydive_graph::Value>,
    vrrp: Option<skydive_graph::Value>,
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

fn mac_str(m: &[u8; 6]) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    )
}

fn ip_str(v: u8, b: &[u8; 16]) -> String {
    if v == 4 {
        Ipv4Addr::new(b[0], b[1], b[2], b[3]).to_string()
    } else {
        Ipv6Addr::from(*b).to_string()
    }
}

impl Entry {
    fn to_flow(&self, cfg: &TableConfig) -> Flow {
        Flow {
            uuid: self.uuid.clone(),
            layers_path: self.layers_path.clone(),
            application: self.application.clone(),
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
            dhcpv4: self.dhcpv4.clone(),
            dns: self.dns.clone(),
            vrrpv2: self.vrrp.clone(),
            last_update_metric: self.last_update,
            metric: Some(self.metric),
            tcp_metric: self.tcp,
            ip_metric: self.ip_metric,
            start: self.metric.start,
            last: self.metric.last,
            tracking_id: format!("{:x}", self.l2),
            l3_tracking_id: format!("{:x}", self.l3),
            parent_uuid: self.parent_uuid.clone(),
            node_tid: cfg.node_tid.clone(),
            capture_id: cfg.capture_id.clone(),
            last_raw_packets: self.raw.clone(),
            raw_packets_captured: self.raw_captured,
            finish_type: self.finish,
        }
    }
}

/// A slot of the table, with its "recently used" bit for the clock eviction.
struct Slot {
    entry: Option<Entry>,
    referenced: bool,
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

/// The flow table.
pub struct FlowTable {
    cfg: TableConfig,
    map: KeyMap<u32>,
    slots: Vec<Slot>,
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
            .field("flows", &self.map.len())
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
            map: KeyMap::default(),
            slots: Vec::new(),
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
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Processes one frame: `wire_len` is its length on the wire (the capture may have kept
    /// less), `ts_ns` its time.
    pub fn process(&mut self, frame: &[u8], wire_len: u32, ts_ns: i64, link: LinkType) {
        self.stats.packets += 1;
        if self.last_update_ms.is_none() {
            self.last_update_ms = Some(ms(ts_ns));
            self.last_expire_ms = Some(ms(ts_ns));
        }
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
                if let Some(e) = self.slots[slot as usize].entry.as_ref() {
                    sc.parent.push_str(&e.uuid);
                    sc.parent_hash = e.uuid_hash;
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
        let slot = match self.map.get(&k.key) {
            Some(s) => *s,
            None => {
                let e = self.new_entry(k, info, seg, decoded, parent, ts_ns);
                self.insert(e)
            }
        };
        let cfg = &self.cfg;
        let s = &mut self.slots[slot as usize];
        s.referenced = true;
        let Some(e) = s.entry.as_mut() else {
            return slot;
        };
        let ab = direction_ab(e, info, cfg.l2_mode);
        e.packets += 1;
        if ab {
            e.metric.ab_packets += 1;
            e.metric.ab_bytes += length;
        } else {
            e.metric.ba_packets += 1;
            e.metric.ba_bytes += length;
        }
        if ts_ns > e.last_ns {
            e.last_ns = ts_ns;
            e.metric.last = ms(ts_ns);
        }
        e.touched = true;
        if let Some(n) = fragments {
            let m = e.ip_metric.get_or_insert_with(IpMetric::default);
            m.fragments += n;
        }
        // Round-trip times.
        if let Some(icmp) = info.icmp {
            if icmp.is_echo_request() && e.rtt_start_ns == 0 {
                e.rtt_start_ns = ts_ns;
            } else if icmp.is_echo_reply() && e.rtt_start_ns != 0 && e.metric.rtt == 0 {
                e.metric.rtt = (ts_ns - e.rtt_start_ns).max(1);
            }
        }
        if matches!(info.transport, Some((FlowProtocol::Tcp, _, _))) {
            let f = info.tcp_flags;
            if f & TCP_SYN != 0 && f & TCP_ACK == 0 && e.rtt_start_ns == 0 {
                e.rtt_start_ns = ts_ns;
            } else if (f & (TCP_SYN | TCP_ACK) == TCP_SYN | TCP_ACK || f & TCP_RST != 0)
                && e.rtt_start_ns != 0
                && e.metric.rtt == 0
            {
                e.metric.rtt = (ts_ns - e.rtt_start_ns).max(1);
            }
            // Any FIN or RST ends the flow (Skydive looked only at the flow's first packet).
            if f & TCP_RST != 0 {
                e.finish = FinishType::TcpRst;
            } else if f & TCP_FIN != 0 && e.finish == FinishType::NotFinished {
                e.finish = FinishType::TcpFin;
            }
            if cfg.extra_tcp_metric {
                let t = e.tcp.get_or_insert_with(TcpMetric::default);
                let now = ms(ts_ns);
                if f & TCP_SYN != 0 {
                    if ab && t.ab_syn_start == 0 {
                        t.ab_syn_start = now;
                        t.ab_syn_ttl = info.ttl as u32;
                    } else if !ab && t.ba_syn_start == 0 {
                        t.ba_syn_start = now;
                        t.ba_syn_ttl = info.ttl as u32;
                    }
                }
                if f & TCP_FIN != 0 {
                    if ab && t.ab_fin_start == 0 {
                        t.ab_fin_start = now;
                    } else if !ab && t.ba_fin_start == 0 {
                        t.ba_fin_start = now;
                    }
                }
                if f & TCP_RST != 0 {
                    if ab && t.ab_rst_start == 0 {
                        t.ab_rst_start = now;
                    } else if !ab && t.ba_rst_start == 0 {
                        t.ba_rst_start = now;
                    }
                }
            }
        }
        if cfg.raw_packet_limit > 0 && (e.raw_captured as usize) < cfg.raw_packet_limit {
            e.raw.push(RawPacket {
                timestamp: ms(ts_ns),
                index: e.packets,
                data: frame.to_vec(),
                link_type: link.pcap(),
            });
            e.raw_captured += 1;
        }
        if cfg.extra_layers != 0 {
            let layers = &decoded.layers()[seg.first..=seg.last];
            for l in layers {
                let body = &frame[l.start as usize..];
                match l.kind {
                    LayerKind::Dns if cfg.extra_layers & EXTRA_DNS != 0 => {
                        e.dns = extra::dns(body, ms(ts_ns));
                    }
                    LayerKind::Dhcpv4 if cfg.extra_layers & EXTRA_DHCPV4 != 0 => {
                        e.dhcpv4 = extra::dhcpv4(body);
                    }
                    LayerKind::Vrrp if cfg.extra_layers & EXTRA_VRRP != 0 => {
                        e.vrrp = extra::vrrp(body);
                    }
                    _ => {}
                }
            }
        }
        slot
    }

    fn new_entry(
        &self,
        k: &Keys,
        info: &SegmentInfo<'_>,
        seg: Segment,
        decoded: &Decoded,
        parent: &str,
        ts_ns: i64,
    ) -> Entry {
        let start = ms(ts_ns);
        let mut application = match info.last {
            Some(k) => k.name().to_string(),
            None => String::new(),
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
                application = name.to_ascii_uppercase();
            }
        }
        let (skydive_key, l2, l3) = skydive_keys(info, self.cfg.l2_mode, parent);
        let uuid_hash = flow_uuid_hash(skydive_key, start, &self.cfg.node_tid);
        Entry {
            key: k.key,
            l2,
            l3,
            uuid: format!("{uuid_hash:x}"),
            uuid_hash,
            parent_uuid: parent.to_string(),
            layers_path: layers_path(decoded, seg),
            application,
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
            metric: FlowMetric {
                start,
                last: start,
                ..Default::default()
            },
            last_ns: ts_ns,
            rtt_start_ns: 0,
            prev: None,
            last_update: None,
            touched: false,
            finish: FinishType::NotFinished,
            tcp: None,
            ip_metric: None,
            raw: Vec::new(),
            raw_captured: 0,
            packets: 0,
            dns: None,
            dhcpv4: None,
            vrrp: None,
        }
    }

    /// Stores a new flow, evicting one if the table is full.
    fn insert(&mut self, e: Entry) -> u32 {
        let key = e.key;
        let slot = if let Some(s) = self.free.pop() {
            s
        } else if self.slots.len() < self.cfg.max_entries.max(1) {
            self.slots.push(Slot {
                entry: None,
                referenced: false,
            });
            (self.slots.len() - 1) as u32
        } else {
            self.evict()
        };
        self.slots[slot as usize] = Slot {
            entry: Some(e),
            referenced: true,
        };
        self.map.insert(key, slot);
        slot
    }

    /// The clock algorithm: the first flow not used since the hand last passed it goes.
    fn evict(&mut self) -> u32 {
        loop {
            let i = self.hand % self.slots.len();
            self.hand = i + 1;
            let s = &mut self.slots[i];
            if s.referenced {
                s.referenced = false;
                continue;
            }
            if let Some(e) = s.entry.take() {
                self.map.remove(&e.key);
                self.stats.evicted += 1;
            }
            return i as u32;
        }
    }

    fn remove_slot(&mut self, slot: usize) -> Option<Entry> {
        let e = self.slots[slot].entry.take()?;
        self.map.remove(&e.key);
        self.free.push(slot as u32);
        Some(e)
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

    /// The update tick (compat spec §5.5): the flows touched since the previous tick, with
    /// their `LastUpdateMetric`; flows of timed-out applications; the hold of finished flows.
    pub fn update(&mut self, now_ms: i64) -> Vec<Flow> {
        let prev_tick = self.last_update_ms.unwrap_or(now_ms);
        self.last_update_ms = Some(now_ms);
        let mut out = Vec::new();
        let mut gone = Vec::new();
        for (i, s) in self.slots.iter_mut().enumerate() {
            let Some(e) = s.entry.as_mut() else { continue };
            if e.touched {
                let start = if e.prev.is_none() {
                    e.metric.start
                } else {
                    prev_tick
                };
                let prev = e.prev.unwrap_or_default();
                e.last_update = Some(e.metric.delta(&prev, start, now_ms));
                e.prev = Some(e.metric);
                e.touched = false;
                out.push(e.to_flow(&self.cfg));
                e.raw.clear();
                continue;
            }
            let timeout = self
                .cfg
                .app_timeouts
                .get(&e.application.to_ascii_lowercase())
                .copied();
            if let Some(t) = timeout
                && now_ms - e.metric.last > t
                && !e.finish.is_finished()
            {
                e.finish = FinishType::Timeout;
                let prev = e.prev.unwrap_or_default();
                e.last_update = Some(e.metric.delta(&prev, prev_tick, now_ms));
                out.push(e.to_flow(&self.cfg));
                gone.push(i);
                continue;
            }
            e.last_update = Some(FlowMetric {
                start: prev_tick,
                last: now_ms,
                ..Default::default()
            });
            if e.finish.is_finished() && now_ms - e.metric.last >= HOLD_MS {
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
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.entry.as_ref().is_some_and(|e| e.metric.last < before))
            .map(|(i, _)| i)
            .collect();
        let mut out = Vec::new();
        for i in idle {
            if let Some(mut e) = self.remove_slot(i) {
                out.push(self.finish(&mut e, prev_tick, now_ms));
            }
        }
        self.expire_reassembly(now_ms);
        out
    }

    fn finish(&self, e: &mut Entry, prev_tick: i64, now_ms: i64) -> Flow {
        let prev = e.prev.unwrap_or_default();
        let start = if e.prev.is_none() {
            e.metric.start
        } else {
            prev_tick
        };
        e.last_update = Some(e.metric.delta(&prev, start, now_ms));
        if !e.finish.is_finished() {
            e.finish = FinishType::Timeout;
        }
        e.to_flow(&self.cfg)
    }

    /// Ends every flow now (the capture stops): all are sent.
    pub fn flush(&mut self, now_ms: i64) -> Vec<Flow> {
        let prev_tick = self.last_update_ms.unwrap_or(now_ms);
        let mut out = Vec::new();
        for i in 0..self.slots.len() {
            if let Some(mut e) = self.remove_slot(i) {
                out.push(self.finish(&mut e, prev_tick, now_ms));
            }
        }
        self.reassembly.clear();
        out
    }

    /// The flows in the table now (for live queries).
    pub fn flows(&self) -> Vec<Flow> {
        self.slots
            .iter()
            .filter_map(|s| s.entry.as_ref())
            .map(|e| e.to_flow(&self.cfg))
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

/// Whether a packet goes from the flow's A side to its B side.
fn direction_ab(e: &Entry, info: &SegmentInfo<'_>, l2_mode: bool) -> bool {
    if l2_mode
        && let (Some((a, _)), Some(src), Some(dst)) = (e.link, info.src_mac, info.dst_mac)
        && src != dst
    {
        return src == a;
    }
    if info.ip_version != 0 && info.src_ip != info.dst_ip {
        let n = if info.ip_version == 4 { 4 } else { 16 };
        return info.src_ip == &e.a_ip[..n];
    }
    if let (Some((_, sp, dp)), Some((_, a, _))) = (info.transport, e.transport)
        && sp != dp
    {
        return sp == a;
    }
    if let (Some(icmp), Some((_, _, _, first_type))) = (info.icmp, e.icmp) {
        return icmp.wire_type == first_type;
    }
    if let (Some((a, _)), Some(src)) = (e.link, info.src_mac) {
        return src == a;
    }
    true
}
