//! What a flow needs from one packet segment: endpoints, tunnel IDs, the ICMP message, TCP
//! flags; and the flow keys computed from them with Skydive's exact xxHash64 byte layouts
//! (Skydive's flow key and hashes), so that flows keep the TrackingIDs Skydive gave them.

use std::hash::Hasher as _;

use twox_hash::XxHash64;

use crate::decode::{Decoded, LayerKind, Segment, udp_port_layer};
use crate::model::{FlowProtocol, IcmpType, Str};

/// gopacket endpoint types, written after each endpoint pair.
const EP_IPV4: u64 = 1;
const EP_IPV6: u64 = 2;
const EP_MAC: u64 = 3;
const EP_TCP: u64 = 4;
const EP_UDP: u64 = 5;
const EP_SCTP: u64 = 6;

/// An ICMP message of a segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Icmp {
    pub v6: bool,
    pub wire_type: u8,
    pub code: u8,
    /// The echo identifier (bytes 4-5 of the ICMPv4 header, of the ICMPv6 echo body).
    pub id: u16,
    pub kind: IcmpType,
}

impl Icmp {
    /// An echo request (as opposed to a reply).
    pub fn is_echo_request(&self) -> bool {
        (!self.v6 && self.wire_type == 8) || (self.v6 && self.wire_type == 128)
    }
    pub fn is_echo_reply(&self) -> bool {
        (!self.v6 && self.wire_type == 0) || (self.v6 && self.wire_type == 129)
    }
}

/// The flow-relevant contents of a segment, borrowed from the frame.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SegmentInfo<'a> {
    pub src_mac: Option<&'a [u8]>,
    pub dst_mac: Option<&'a [u8]>,
    /// Stacked 802.1Q IDs: innermost in the high bits, outermost in the low 12 bits.
    pub vlan: i64,
    pub ip_version: u8,
    pub src_ip: &'a [u8],
    pub dst_ip: &'a [u8],
    /// The IP datagram's length (header included), for segments without Ethernet.
    pub ip_len: u32,
    pub ttl: u8,
    /// IPv4 fragmentation field (flags and offset), and identification.
    pub ip_frag: u16,
    pub ip_id: u16,
    pub transport: Option<(FlowProtocol, u16, u16)>,
    pub icmp: Option<Icmp>,
    pub tcp_flags: u8,
    /// VNI or GRE key of the tunnel header that ends this segment.
    pub tunnel_id: i64,
    /// VXLAN/Geneve segments: (VNI, UDP destination port), the synthetic transport of the key.
    pub vni_port: Option<(u32, u16)>,
    /// The last layer before `Payload`/`DecodeFailure`.
    pub last: Option<LayerKind>,
    /// Offset of the segment's first byte in the frame.
    pub offset: u32,
}

/// TCP flag bits.
pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

fn be16(d: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([d[at], d[at + 1]])
}

/// The flow-relevant contents of a segment, from what the decoder noted: no second walk of
/// the layers. The decoder checked every header it recorded, so the reads are in bounds.
pub fn segment_info<'a>(data: &'a [u8], d: &Decoded, seg: Segment) -> SegmentInfo<'a> {
    let Some(raw) = d.segs[..d.nsegs]
        .iter()
        .find(|s| s.first as usize == seg.first)
    else {
        return SegmentInfo::default();
    };
    let layers = d.layers();
    let mut info = SegmentInfo {
        offset: layers.get(seg.first).map(|l| l.start).unwrap_or(0),
        vlan: raw.vlan,
        tunnel_id: raw.tunnel_id,
        last: raw.last_kind,
        ..Default::default()
    };
    if raw.eth != 0 {
        let e = raw.eth as usize - 1;
        info.dst_mac = Some(&data[e..e + 6]);
        info.src_mac = Some(&data[e + 6..e + 12]);
    }
    if raw.ip != 0 {
        let h = raw.ip as usize - 1;
        info.ip_version = raw.ip_version;
        if raw.ip_version == 4 {
            info.src_ip = &data[h + 12..h + 16];
            info.dst_ip = &data[h + 16..h + 20];
            info.ip_len = be16(data, h + 2) as u32;
            info.ttl = data[h + 8];
            info.ip_id = be16(data, h + 4);
            info.ip_frag = be16(data, h + 6);
        } else {
            info.src_ip = &data[h + 8..h + 24];
            info.dst_ip = &data[h + 24..h + 40];
            info.ip_len = 40 + be16(data, h + 4) as u32;
            info.ttl = data[h + 7];
        }
    }
    if raw.l4 != 0 {
        let h = raw.l4_at as usize - 1;
        let proto = match raw.l4 {
            6 => FlowProtocol::Tcp,
            17 => FlowProtocol::Udp,
            _ => FlowProtocol::Sctp,
        };
        info.transport = Some((proto, be16(data, h), be16(data, h + 2)));
        if raw.l4 == 6 {
            info.tcp_flags = data[h + 13];
        }
    }
    if raw.icmp != 0 {
        let h = raw.icmp as usize - 1;
        let (t, code) = (data[h], data[h + 1]);
        info.icmp = Some(if raw.icmp_v6 {
            Icmp {
                v6: true,
                wire_type: t,
                code,
                id: if raw.echo6 != 0 {
                    be16(data, raw.echo6 as usize - 1)
                } else {
                    0
                },
                kind: IcmpType::from_icmpv6(t),
            }
        } else {
            Icmp {
                v6: false,
                wire_type: t,
                code,
                id: be16(data, h + 4),
                kind: IcmpType::from_icmpv4(t),
            }
        });
    }
    // The synthetic transport of the key, only when the segment ends with its tunnel.
    if let (Some(vni), Some(LayerKind::Vxlan | LayerKind::Geneve)) = (raw.vni, raw.last_kind) {
        info.vni_port = Some((vni, raw.udp_dport));
    }
    info
}

/// The common case, read straight off the frame: an Ethernet frame (at most one 802.1Q tag)
/// carrying an unfragmented IPv4 or IPv6 datagram (no extension headers) with TCP, ICMPv4, or
/// UDP on a port no application layer or tunnel is decoded on, whole or cut after its
/// transport header (a capture's snap length: 256 bytes by default). For such a frame it
/// gives exactly what [`decode`](crate::decode::decode) then [`segment_info`] give for its
/// only segment, and whether the datagram was cut (what the decoder flags as truncated); for
/// any other frame, `None`, and the caller takes the general path.
#[inline(always)]
pub fn fast_info(data: &[u8]) -> Option<(SegmentInfo<'_>, bool)> {
    let (mut info, proto, l4, end, cut) = fast_l3(data)?;
    match proto {
        6 => {
            if end < l4 + 20 {
                return None;
            }
            let off = (data[l4 + 12] >> 4) as usize * 4;
            if off < 20 || end < l4 + off {
                return None;
            }
            info.transport = Some((FlowProtocol::Tcp, be16(data, l4), be16(data, l4 + 2)));
            info.tcp_flags = data[l4 + 13];
            info.last = Some(LayerKind::Tcp);
        }
        17 => {
            if end < l4 + 8 {
                return None;
            }
            let (sp, dp) = (be16(data, l4), be16(data, l4 + 2));
            if udp_port_layer(sp).is_some() || udp_port_layer(dp).is_some() {
                return None;
            }
            info.transport = Some((FlowProtocol::Udp, sp, dp));
            info.last = Some(LayerKind::Udp);
        }
        1 => {
            if end < l4 + 8 {
                return None;
            }
            let t = data[l4];
            info.icmp = Some(Icmp {
                v6: false,
                wire_type: t,
                code: data[l4 + 1],
                id: be16(data, l4 + 4),
                kind: IcmpType::from_icmpv4(t),
            });
            info.last = Some(LayerKind::Icmpv4);
        }
        _ => return None,
    }
    Some((info, cut))
}

/// A VXLAN frame of the common case: the tunnel's frame (Ethernet, at most one 802.1Q tag, an
/// IPv4 or IPv6 datagram, UDP to or from port 4789, the VXLAN header) carrying a frame
/// [`fast_info`] takes. For such a frame it gives exactly what the decoder then
/// [`segment_info`] give for its two segments, the tunnel's and the inner one; for any other
/// frame, `None`. Like [`fast_info`], it takes frames cut after the inner transport header,
/// and tells whether the frame was cut.
#[inline]
pub fn fast_vxlan(data: &[u8]) -> Option<(SegmentInfo<'_>, SegmentInfo<'_>, bool)> {
    let (mut outer, proto, l4, end, outer_cut) = fast_l3(data)?;
    // The UDP header and the VXLAN header after it.
    if proto != 17 || end < l4 + 16 {
        return None;
    }
    let (sp, dp) = (be16(data, l4), be16(data, l4 + 2));
    // The destination port first, then the source port, as the decoder looks.
    if udp_port_layer(dp).or_else(|| udp_port_layer(sp)) != Some(LayerKind::Vxlan) {
        return None;
    }
    let vni = u32::from_be_bytes([0, data[l4 + 12], data[l4 + 13], data[l4 + 14]]);
    outer.transport = Some((FlowProtocol::Udp, sp, dp));
    outer.tunnel_id = vni as i64;
    outer.vni_port = Some((vni, dp));
    outer.last = Some(LayerKind::Vxlan);
    // The inner frame ends where the tunnel's datagram does.
    let inner_at = l4 + 16;
    let (mut inner, inner_cut) = fast_info(&data[inner_at..end])?;
    inner.offset = inner_at as u32;
    Some((outer, inner, outer_cut || inner_cut))
}

/// The link and network layers of the common case: the segment's fields so far, the IP
/// protocol, where the transport header starts, where the datagram ends (the frame's end
/// when it was cut short) and whether it was.
#[inline(always)]
fn fast_l3(data: &[u8]) -> Option<(SegmentInfo<'_>, u8, usize, usize, bool)> {
    if data.len() < 14 {
        return None;
    }
    let mut t = be16(data, 12);
    let mut at = 14;
    let mut vlan = 0;
    if matches!(t, 0x8100 | 0x88a8 | 0x9100) {
        if data.len() < 18 {
            return None;
        }
        vlan = (be16(data, 14) & 0x0fff) as i64;
        t = be16(data, 16);
        at = 18;
    }
    let mut info = SegmentInfo {
        dst_mac: Some(&data[0..6]),
        src_mac: Some(&data[6..12]),
        vlan,
        ..Default::default()
    };
    let (proto, l4, end) = match t {
        0x0800 => {
            if data.len() < at + 20 || data[at] >> 4 != 4 {
                return None;
            }
            let ihl = (data[at] & 0x0f) as usize * 4;
            let total = be16(data, at + 2) as usize;
            let frag = be16(data, at + 6);
            if ihl < 20 || total < ihl || at + ihl > data.len() || frag & 0x3fff != 0 {
                return None;
            }
            info.ip_version = 4;
            info.src_ip = &data[at + 12..at + 16];
            info.dst_ip = &data[at + 16..at + 20];
            info.ip_len = total as u32;
            info.ttl = data[at + 8];
            info.ip_id = be16(data, at + 4);
            info.ip_frag = frag;
            (data[at + 9], at + ihl, at + total)
        }
        0x86dd => {
            if data.len() < at + 40 || data[at] >> 4 != 6 {
                return None;
            }
            let plen = be16(data, at + 4) as usize;
            info.ip_version = 6;
            info.src_ip = &data[at + 8..at + 24];
            info.dst_ip = &data[at + 24..at + 40];
            info.ip_len = 40 + plen as u32;
            info.ttl = data[at + 7];
            (data[at + 6], at + 40, at + 40 + plen)
        }
        _ => return None,
    };
    // Padding after the datagram is not its payload; a datagram longer than the frame was
    // cut by the capture.
    let cut = end > data.len();
    Some((info, proto, l4, end.min(data.len()), cut))
}

/// The keys of a flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Keys {
    /// The flow-table key (includes the parent flow).
    pub key: u64,
    /// Whether the packet goes from the "greater" endpoint to the smaller one.
    pub swap: bool,
    /// Whether the canonical order tells the packet's two endpoints apart (else `swap` is
    /// false both ways, and the packet's direction is found otherwise).
    pub decided: bool,
}

/// The bytes the keys hash, gathered on the stack: hashing prefixes of one buffer in one
/// pass each is several times faster than feeding a streaming hasher small pieces (the
/// digests are the same: xxHash64 of a concatenation).
struct KeyBytes {
    buf: [u8; 192],
    len: usize,
}

impl KeyBytes {
    /// Appends a fixed-size piece (a constant-size copy: no call to `memcpy`).
    #[inline(always)]
    fn put_n<const N: usize>(&mut self, b: &[u8; N]) {
        if self.len + N <= self.buf.len() {
            self.buf[self.len..self.len + N].copy_from_slice(b);
            self.len += N;
        }
    }

    /// Appends an address or a MAC: 4, 6 or 16 bytes.
    #[inline(always)]
    fn put_addr(&mut self, b: &[u8]) {
        match b.len() {
            4 => self.put_n::<4>(&[b[0], b[1], b[2], b[3]]),
            6 => self.put_n::<6>(&[b[0], b[1], b[2], b[3], b[4], b[5]]),
            16 => {
                let mut a = [0u8; 16];
                a.copy_from_slice(b);
                self.put_n::<16>(&a);
            }
            _ => self.put(b),
        }
    }

    fn put(&mut self, b: &[u8]) {
        let n = b.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&b[..n]);
        self.len += n;
    }

    #[inline(always)]
    fn pair_addr(&mut self, a: &[u8], b: &[u8], ty: u64, swap: bool) {
        let (x, y) = if swap { (b, a) } else { (a, b) };
        self.put_addr(x);
        self.put_addr(y);
        self.put_n(&ty.to_be_bytes());
    }

    #[inline(always)]
    fn pair_ports(&mut self, a: [u8; 2], b: [u8; 2], ty: u64, swap: bool) {
        let (x, y) = if swap { (b, a) } else { (a, b) };
        self.put_n(&x);
        self.put_n(&y);
        self.put_n(&ty.to_be_bytes());
    }

    fn sum(&self) -> u64 {
        XxHash64::oneshot(0, &self.buf[..self.len])
    }
}

/// Which way a packet goes relative to its flow's canonical order (as Skydive orders a flow's
/// endpoints: MACs in L2 mode, else IPs, else ports), compared as big-endian integers; and
/// whether the order told the two endpoints apart (not when they are the same: ICMP to
/// oneself, say).
#[inline(always)]
fn swap_of(info: &SegmentInfo<'_>, l2_mode: bool) -> (bool, bool) {
    let has_ip = info.ip_version != 0;
    if let (Some(s), Some(d)) = (info.src_mac, info.dst_mac)
        && (l2_mode || !has_ip)
    {
        let (s, d) = (mac_u64(s), mac_u64(d));
        if s != d {
            return (s > d, true);
        }
        if !has_ip {
            return (false, false);
        }
    }
    if info.ip_version == 4 {
        let (s, d) = (ipv4_u32(info.src_ip), ipv4_u32(info.dst_ip));
        if s != d {
            return (s > d, true);
        }
    } else {
        let (s, d) = (addr_u128(info.src_ip), addr_u128(info.dst_ip));
        if s != d {
            return (s > d, true);
        }
    }
    match info.transport {
        Some((_, sp, dp)) if sp != dp => (sp > dp, true),
        _ => (false, false),
    }
}

#[inline(always)]
fn ipv4_u32(a: &[u8]) -> u32 {
    match a {
        [a, b, c, d] => u32::from_be_bytes([*a, *b, *c, *d]),
        _ => 0,
    }
}

#[inline(always)]
fn mac_u64(m: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    if m.len() == 6 {
        b[2..].copy_from_slice(m);
    }
    u64::from_be_bytes(b)
}

#[inline]
fn addr_u128(a: &[u8]) -> u128 {
    match a.len() {
        4 => u32::from_be_bytes([a[0], a[1], a[2], a[3]]) as u128,
        16 => {
            let mut b = [0u8; 16];
            b.copy_from_slice(a);
            u128::from_be_bytes(b)
        }
        _ => 0,
    }
}

/// The ICMP endpoint Skydive hashes: type, code and echo identifier.
#[inline]
fn icmp_endpoint(icmp: &Icmp) -> u32 {
    let kind = icmp.kind.number();
    if !icmp.v6 {
        (kind << 24) | ((icmp.code as u32) << 16) | icmp.id as u32
    } else if icmp.kind == IcmpType::Echo {
        (kind << 24) | icmp.id as u32
    } else {
        (kind << 24) | ((icmp.code as u32) << 16)
    }
}

const MIX: u64 = 0x9e37_79b9_7f4a_7c15;

#[inline(always)]
fn mix(h: u64, w: u64) -> u64 {
    (h ^ w).wrapping_mul(MIX).rotate_left(29)
}

/// The flow-table key of a segment: the fields Skydive's flow key is made of, in their
/// canonical order, mixed into 64 bits with a few multiplications. Two packets share a key
/// exactly when they share Skydive's key; Skydive's own hashes (TrackingID, L3TrackingID,
/// UUID) are computed once per flow by [`skydive_keys`]. `parent` is the UUID hash of the
/// flow this segment is encapsulated in (0 for none).
#[inline(always)]
pub fn keys(info: &SegmentInfo<'_>, l2_mode: bool, parent: u64) -> Keys {
    let (swap, decided) = swap_of(info, l2_mode);
    let order = |a: u128, b: u128| if swap { (b, a) } else { (a, b) };
    let mut h = mix(0x5ca1_ab1e, info.ip_version as u64);
    if info.ip_version == 4 {
        let (a, b) = (ipv4_u32(info.src_ip), ipv4_u32(info.dst_ip));
        let (a, b) = if swap { (b, a) } else { (a, b) };
        h = mix(h, (a as u64) << 32 | b as u64);
    } else if info.ip_version != 0 {
        let (a, b) = order(addr_u128(info.src_ip), addr_u128(info.dst_ip));
        h = mix(h, a as u64);
        h = mix(h, (a >> 64) as u64);
        h = mix(h, b as u64);
        h = mix(h, (b >> 64) as u64);
    }
    if let Some((vni, port)) = info.vni_port {
        h = mix(h, 1 << 48 | (vni as u64) << 16 | port as u64);
    } else if let Some((proto, sp, dp)) = info.transport {
        let (a, b) = order(sp as u128, dp as u128);
        h = mix(
            h,
            2 << 48 | (proto.number() as u64) << 32 | (a as u64) << 16 | b as u64,
        );
    }
    if let Some(icmp) = &info.icmp {
        h = mix(h, 3 << 48 | icmp_endpoint(icmp) as u64);
    }
    if let (Some(s), Some(d)) = (info.src_mac, info.dst_mac)
        && (l2_mode || info.ip_version == 0)
    {
        let (a, b) = order(mac_u64(s) as u128, mac_u64(d) as u128);
        h = mix(h, 4 << 48 | a as u64);
        h = mix(h, b as u64);
    }
    h = mix(h, parent);
    // Final avalanche.
    h ^= h >> 31;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    Keys {
        key: h,
        swap,
        decided,
    }
}

/// Skydive's hashes of a segment: the key (the seed of the UUID), the `TrackingID`
/// hash (L2) and the `L3TrackingID` hash.
pub fn skydive_keys(info: &SegmentInfo<'_>, l2_mode: bool, parent_uuid: &str) -> (u64, u64, u64) {
    let (swap, _) = swap_of(info, l2_mode);
    let mut h = KeyBytes {
        buf: [0; 192],
        len: 0,
    };
    if info.ip_version != 0 {
        let ty = if info.ip_version == 4 {
            EP_IPV4
        } else {
            EP_IPV6
        };
        h.pair_addr(info.src_ip, info.dst_ip, ty, swap);
    }
    if let Some((vni, port)) = info.vni_port {
        // One flow per tunnel and VNI, whichever way it goes: the VNI and the destination
        // port, not oriented.
        h.put_n(&vni.to_be_bytes());
        h.put_n(&port.to_be_bytes());
        h.put_n(&0u64.to_be_bytes());
    } else if let Some((proto, sp, dp)) = info.transport {
        let ty = match proto {
            FlowProtocol::Tcp => EP_TCP,
            FlowProtocol::Udp => EP_UDP,
            _ => EP_SCTP,
        };
        h.pair_ports(sp.to_be_bytes(), dp.to_be_bytes(), ty, swap);
    }
    if let Some(icmp) = &info.icmp {
        h.put_n(&icmp_endpoint(icmp).to_be_bytes());
        h.put_n(&0u64.to_be_bytes());
    }
    let l3 = h.sum();
    let l2 = match (info.src_mac, info.dst_mac) {
        (Some(s), Some(d)) if l2_mode || info.ip_version == 0 => {
            h.pair_addr(s, d, EP_MAC, swap);
            h.sum()
        }
        _ => l3,
    };
    // Without a parent the key hashes the same bytes as the last hash taken.
    let key = if parent_uuid.is_empty() {
        l2
    } else if h.len + parent_uuid.len() <= h.buf.len() {
        h.put(parent_uuid.as_bytes());
        h.sum()
    } else {
        let mut s = XxHash64::with_seed(0);
        s.write(&h.buf[..h.len]);
        s.write(parent_uuid.as_bytes());
        s.finish()
    };
    (key, l2, l3)
}

/// A flow's UUID hash: xxHash64 seeded with Skydive's key, over the flow's start (ms,
/// big-endian) and the TID of the interface it was captured on. The UUID is its hex form.
pub fn flow_uuid_hash(skydive_key: u64, start_ms: i64, node_tid: &str) -> u64 {
    let mut h = XxHash64::with_seed(skydive_key);
    h.write(&start_ms.to_be_bytes());
    h.write(node_tid.as_bytes());
    h.finish()
}

/// A flow's UUID (Skydive's flow key and hashes step 9): hex, not zero-padded.
pub fn flow_uuid(skydive_key: u64, start_ms: i64, node_tid: &str) -> String {
    format!("{:x}", flow_uuid_hash(skydive_key, start_ms, node_tid))
}

/// The `LayersPath` of a segment [`fast_info`] or [`fast_vxlan`] read (`data` from the
/// segment's first byte): what [`layers_path`] gives for it, without the decoder (Ethernet, its
/// 802.1Q tag if any, IPv4 or IPv6, the last layer, UDP before VXLAN).
pub fn fast_layers_path(data: &[u8], info: &SegmentInfo<'_>) -> Str {
    // The names written on the stack, then made a string once (pushed one by one into the
    // string, they cost 1.6 times as much; a flow is made for every new conversation). At
    // most five names of at most 8 bytes here; longer ones are cut rather than overflow.
    let mut buf = [0u8; 5 * 16];
    let mut len = 0;
    let mut add = |k: LayerKind| {
        if len > 0 && len < buf.len() {
            buf[len] = b'/';
            len += 1;
        }
        let name = k.name().as_bytes();
        let end = (len + name.len()).min(buf.len());
        buf[len..end].copy_from_slice(&name[..end - len]);
        len = end;
    };
    add(LayerKind::Ethernet);
    if data.len() >= 14 && matches!(be16(data, 12), 0x8100 | 0x88a8 | 0x9100) {
        add(LayerKind::Dot1Q);
    }
    add(if info.ip_version == 4 {
        LayerKind::Ipv4
    } else {
        LayerKind::Ipv6
    });
    if let Some(last) = info.last {
        if last == LayerKind::Vxlan {
            add(LayerKind::Udp);
        }
        add(last);
    }
    Str::from_utf8(&buf[..len]).unwrap_or_default()
}

/// The `LayersPath` of a segment: gopacket's names joined with `/`, without `Linux SLL` (1 or 2),
/// stopping at `Payload` or `DecodeFailure`.
pub fn layers_path(d: &Decoded, seg: Segment) -> Str {
    let mut s = Str::default();
    for l in &d.layers()[seg.first..=seg.last] {
        match l.kind {
            LayerKind::Payload | LayerKind::DecodeFailure => break,
            LayerKind::LinuxSll | LayerKind::LinuxSll2 => continue,
            k => {
                if !s.is_empty() {
                    s.push('/');
                }
                s.push_str(k.name());
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::{LinkType, decode, segments};

    fn frame(
        src_mac: u8,
        dst_mac: u8,
        src: [u8; 4],
        dst: [u8; 4],
        sport: u16,
        dport: u16,
    ) -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, dst_mac, 2, 0, 0, 0, 0, src_mac, 0x08, 0x00];
        f.extend_from_slice(&[0x45, 0, 0, 28, 0, 1, 0, 0, 64, 17, 0, 0]);
        f.extend_from_slice(&src);
        f.extend_from_slice(&dst);
        f.extend_from_slice(&sport.to_be_bytes());
        f.extend_from_slice(&dport.to_be_bytes());
        f.extend_from_slice(&[0, 8, 0, 0]);
        f
    }

    struct All {
        key: u64,
        skydive: u64,
        l2: u64,
        l3: u64,
        swap: bool,
    }

    fn keys_of(f: &[u8], l2: bool) -> All {
        let mut d = Decoded::default();
        decode(f, LinkType::Ethernet, &mut d);
        let mut segs = Vec::new();
        segments(&d, &mut segs);
        let info = segment_info(f, &d, segs[0]);
        let k = keys(&info, l2, 0);
        let (sk, l2h, l3h) = skydive_keys(&info, l2, "");
        All {
            key: k.key,
            skydive: sk,
            l2: l2h,
            l3: l3h,
            swap: k.swap,
        }
    }

    #[test]
    fn both_directions_share_their_keys() {
        let ab = frame(1, 2, [10, 0, 0, 1], [10, 0, 0, 2], 1000, 53);
        let ba = frame(2, 1, [10, 0, 0, 2], [10, 0, 0, 1], 53, 1000);
        for l2 in [true, false] {
            let (k1, k2) = (keys_of(&ab, l2), keys_of(&ba, l2));
            assert_eq!(
                (k1.key, k1.skydive, k1.l2, k1.l3),
                (k2.key, k2.skydive, k2.l2, k2.l3)
            );
            assert_ne!(k1.swap, k2.swap);
        }
        // Swapped ports are another connection.
        let other = frame(1, 2, [10, 0, 0, 1], [10, 0, 0, 2], 53, 1000);
        assert_ne!(keys_of(&ab, true).key, keys_of(&other, true).key);
        assert_ne!(keys_of(&ab, true).skydive, keys_of(&other, true).skydive);
    }

    #[test]
    fn l3_tracking_ignores_the_link() {
        let a = frame(1, 2, [10, 0, 0, 1], [10, 0, 0, 2], 1000, 53);
        let b = frame(7, 8, [10, 0, 0, 1], [10, 0, 0, 2], 1000, 53);
        assert_eq!(keys_of(&a, true).l3, keys_of(&b, true).l3);
        assert_ne!(keys_of(&a, true).l2, keys_of(&b, true).l2);
        assert_eq!(
            keys_of(&a, false).key,
            keys_of(&b, false).key,
            "L3 mode ignores MACs"
        );
        assert_eq!(keys_of(&a, false).skydive, keys_of(&b, false).skydive);
        assert_ne!(keys_of(&a, true).key, keys_of(&b, true).key);
    }

    #[test]
    fn the_uuid_depends_on_start_and_interface() {
        let k = keys_of(&frame(1, 2, [10, 0, 0, 1], [10, 0, 0, 2], 1, 2), true).skydive;
        assert_ne!(flow_uuid(k, 1, "tid-a"), flow_uuid(k, 1, "tid-b"));
        assert_ne!(flow_uuid(k, 1, "tid-a"), flow_uuid(k, 2, "tid-a"));
        assert_eq!(flow_uuid(k, 1, "tid-a"), flow_uuid(k, 1, "tid-a"));
    }
}
