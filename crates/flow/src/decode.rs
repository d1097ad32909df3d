//! Zero-copy packet decoding: the layers of a frame, as offsets into it, named and chosen as
//! gopacket (which Skydive used) decodes them, so that `LayersPath` and `Application` match.
//!
//! No allocation, no copy: a frame is walked once and its layers recorded in a fixed array.
//! Every length read from the wire is checked before use; a header that does not fit ends the
//! walk with a `DecodeFailure` layer (the frame is still counted, as gopacket did).

/// How a capture frames its packets (pcap link types).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkType {
    /// LINKTYPE_ETHERNET (1).
    Ethernet,
    /// LINKTYPE_RAW (101), LINKTYPE_IPV4 (228), LINKTYPE_IPV6 (229): IP with no link layer.
    RawIp,
    /// LINKTYPE_LINUX_SLL (113).
    LinuxSll,
    /// LINKTYPE_LINUX_SLL2 (276): what `tcpdump -i any` writes since libpcap 1.10.
    LinuxSll2,
}

impl LinkType {
    /// From a pcap link-type number.
    pub fn from_pcap(n: u32) -> Option<LinkType> {
        match n {
            1 => Some(LinkType::Ethernet),
            12 | 14 | 101 | 228 | 229 => Some(LinkType::RawIp),
            113 => Some(LinkType::LinuxSll),
            276 => Some(LinkType::LinuxSll2),
            _ => None,
        }
    }

    /// The pcap link-type number.
    pub fn pcap(self) -> u32 {
        match self {
            LinkType::Ethernet => 1,
            LinkType::RawIp => 101,
            LinkType::LinuxSll => 113,
            LinkType::LinuxSll2 => 276,
        }
    }
}

/// A decoded layer, named as gopacket names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LayerKind {
    Ethernet,
    LinuxSll,
    LinuxSll2,
    Dot1Q,
    Arp,
    Ipv4,
    Ipv6,
    Ipv6HopByHop,
    Ipv6Routing,
    Ipv6Fragment,
    Ipv6Destination,
    /// An IPv4 fragment's payload (not decoded further).
    Fragment,
    Icmpv4,
    Icmpv6,
    Icmpv6Echo,
    Icmpv6RouterSolicitation,
    Icmpv6RouterAdvertisement,
    Icmpv6NeighborSolicitation,
    Icmpv6NeighborAdvertisement,
    Icmpv6Redirect,
    Igmp,
    Tcp,
    Udp,
    Sctp,
    SctpChunk(u8),
    Dns,
    Dhcpv4,
    Vrrp,
    Gre,
    Vxlan,
    Geneve,
    Mpls,
    Erspan,
    Payload,
    DecodeFailure,
}

impl LayerKind {
    /// gopacket's name of the layer type.
    pub fn name(self) -> &'static str {
        match self {
            LayerKind::Ethernet => "Ethernet",
            LayerKind::LinuxSll => "Linux SLL",
            LayerKind::LinuxSll2 => "Linux SLL2",
            LayerKind::Dot1Q => "Dot1Q",
            LayerKind::Arp => "ARP",
            LayerKind::Ipv4 => "IPv4",
            LayerKind::Ipv6 => "IPv6",
            LayerKind::Ipv6HopByHop => "IPv6HopByHop",
            LayerKind::Ipv6Routing => "IPv6Routing",
            LayerKind::Ipv6Fragment => "IPv6Fragment",
            LayerKind::Ipv6Destination => "IPv6Destination",
            LayerKind::Fragment => "Fragment",
            LayerKind::Icmpv4 => "ICMPv4",
            LayerKind::Icmpv6 => "ICMPv6",
            LayerKind::Icmpv6Echo => "ICMPv6Echo",
            LayerKind::Icmpv6RouterSolicitation => "ICMPv6RouterSolicitation",
            LayerKind::Icmpv6RouterAdvertisement => "ICMPv6RouterAdvertisement",
            LayerKind::Icmpv6NeighborSolicitation => "ICMPv6NeighborSolicitation",
            LayerKind::Icmpv6NeighborAdvertisement => "ICMPv6NeighborAdvertisement",
            LayerKind::Icmpv6Redirect => "ICMPv6Redirect",
            LayerKind::Igmp => "IGMP",
            LayerKind::Tcp => "TCP",
            LayerKind::Udp => "UDP",
            LayerKind::Sctp => "SCTP",
            LayerKind::SctpChunk(t) => match t {
                0 => "SCTPData",
                1 => "SCTPInit",
                2 => "SCTPInitAck",
                3 => "SCTPSack",
                4 => "SCTPHeartbeat",
                5 => "SCTPHeartbeatAck",
                6 => "SCTPAbort",
                7 => "SCTPShutdown",
                8 => "SCTPShutdownAck",
                9 => "SCTPError",
                10 => "SCTPCookieEcho",
                11 => "SCTPCookieAck",
                14 => "SCTPShutdownComplete",
                _ => "SCTPUnknownChunkType",
            },
            LayerKind::Dns => "DNS",
            LayerKind::Dhcpv4 => "DHCPv4",
            LayerKind::Vrrp => "VRRP",
            LayerKind::Gre => "GRE",
            LayerKind::Vxlan => "VXLAN",
            LayerKind::Geneve => "Geneve",
            LayerKind::Mpls => "MPLS",
            LayerKind::Erspan => "ERSPAN II",
            LayerKind::Payload => "Payload",
            LayerKind::DecodeFailure => "DecodeFailure",
        }
    }

    /// A layer after which an encapsulated packet starts (a new flow, child of this one).
    pub fn is_tunnel(self) -> bool {
        matches!(
            self,
            LayerKind::Gre | LayerKind::Vxlan | LayerKind::Geneve | LayerKind::Mpls
        )
    }
}

/// A layer: its kind and where its header lies in the frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layer {
    pub kind: LayerKind,
    /// Offset of the header in the frame.
    pub start: u32,
    /// Offset just past the header.
    pub end: u32,
}

/// Most layers a frame is decoded into; deeper stacks end with `DecodeFailure`.
pub const MAX_LAYERS: usize = 32;

/// Most segments (encapsulation levels) of a frame.
pub const MAX_SEGMENTS: usize = 8;

/// What flows need from a segment, gathered while decoding (offsets are +1, 0 for none), so
/// that no second pass over the layers is needed.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct SegRaw {
    pub first: u8,
    pub last: u8,
    pub eth: u32,
    pub vlan: i64,
    pub tags: u8,
    pub ip: u32,
    pub ip_version: u8,
    /// 0 none, 6 TCP, 17 UDP, 132 SCTP.
    pub l4: u8,
    pub l4_at: u32,
    pub icmp: u32,
    pub icmp_v6: bool,
    pub echo6: u32,
    pub tunnel_id: i64,
    pub vni: Option<u32>,
    pub udp_dport: u16,
    pub last_kind: Option<LayerKind>,
}

/// The layers of a frame.
#[derive(Clone, Debug)]
pub struct Decoded {
    layers: [Layer; MAX_LAYERS],
    len: usize,
    pub(crate) segs: [SegRaw; MAX_SEGMENTS],
    pub(crate) nsegs: usize,
    pending_split: bool,
    /// Where the network layer's payload ends (its total length), per layer index of an IP
    /// layer; a frame padded beyond it (Ethernet minimum size) is not payload.
    pub truncated: bool,
}

impl Default for Decoded {
    fn default() -> Self {
        Decoded {
            layers: [Layer {
                kind: LayerKind::Payload,
                start: 0,
                end: 0,
            }; MAX_LAYERS],
            len: 0,
            segs: [SegRaw::default(); MAX_SEGMENTS],
            nsegs: 0,
            pending_split: false,
            truncated: false,
        }
    }
}

impl Decoded {
    pub fn layers(&self) -> &[Layer] {
        &self.layers[..self.len]
    }

    fn push(&mut self, d: &[u8], kind: LayerKind, start: usize, end: usize) -> bool {
        if self.len >= MAX_LAYERS - 1 {
            // Full: the last slot says so, later layers are dropped.
            if self.len < MAX_LAYERS {
                self.layers[self.len] = Layer {
                    kind: LayerKind::DecodeFailure,
                    start: start as u32,
                    end: start as u32,
                };
                self.len += 1;
            }
            self.truncated = true;
            return false;
        }
        self.layers[self.len] = Layer {
            kind,
            start: start as u32,
            end: end as u32,
        };
        self.len += 1;
        self.note(d, kind, start);
        true
    }

    /// Records what flows need from a layer just pushed (its header is in `d[start..]`, as
    /// checked by the decoder), and starts a new segment after a tunnel header.
    #[inline]
    fn note(&mut self, d: &[u8], kind: LayerKind, start: usize) {
        let idx = self.len - 1;
        let real = !matches!(kind, LayerKind::Payload | LayerKind::DecodeFailure);
        if self.nsegs == 0 {
            self.nsegs = 1;
            self.segs[0] = SegRaw::default();
        } else if real && self.pending_split {
            self.pending_split = false;
            let after_gre = idx > 0 && self.layers[idx - 1].kind == LayerKind::Gre;
            // GRE carrying MPLS splits at the MPLS layer, not at GRE.
            if !(after_gre && kind == LayerKind::Mpls) && self.nsegs < MAX_SEGMENTS {
                self.segs[self.nsegs] = SegRaw {
                    first: idx as u8,
                    ..SegRaw::default()
                };
                self.nsegs += 1;
            }
        }
        let s = &mut self.segs[self.nsegs - 1];
        s.last = idx as u8;
        let at = start as u32 + 1;
        match kind {
            LayerKind::Ethernet if s.eth == 0 => s.eth = at,
            LayerKind::Dot1Q => {
                if s.tags < 5 {
                    let vid = u16::from_be_bytes([d[start], d[start + 1]]) & 0x0fff;
                    s.vlan += (vid as i64) << (12 * s.tags as u32);
                }
                s.tags = s.tags.saturating_add(1);
            }
            LayerKind::Ipv4 if s.ip == 0 => {
                s.ip = at;
                s.ip_version = 4;
            }
            LayerKind::Ipv6 if s.ip == 0 => {
                s.ip = at;
                s.ip_version = 6;
            }
            LayerKind::Tcp if s.l4 == 0 => {
                s.l4 = 6;
                s.l4_at = at;
            }
            LayerKind::Udp if s.l4 == 0 => {
                s.l4 = 17;
                s.l4_at = at;
                s.udp_dport = u16::from_be_bytes([d[start + 2], d[start + 3]]);
            }
            LayerKind::Sctp if s.l4 == 0 => {
                s.l4 = 132;
                s.l4_at = at;
            }
            LayerKind::Icmpv4 if s.icmp == 0 => s.icmp = at,
            LayerKind::Icmpv6 if s.icmp == 0 => {
                s.icmp = at;
                s.icmp_v6 = true;
            }
            LayerKind::Icmpv6Echo if s.echo6 == 0 => s.echo6 = at,
            LayerKind::Vxlan | LayerKind::Geneve => {
                let vni = u32::from_be_bytes([0, d[start + 4], d[start + 5], d[start + 6]]);
                s.tunnel_id = vni as i64;
                s.vni = Some(vni);
            }
            LayerKind::Gre => {
                // The key follows the checksum when both are present.
                let flags = d[start];
                if flags & 0x20 != 0 {
                    let k = start + if flags & 0x80 != 0 { 8 } else { 4 };
                    s.tunnel_id = u32::from_be_bytes([d[k], d[k + 1], d[k + 2], d[k + 3]]) as i64;
                }
            }
            _ => {}
        }
        if real {
            s.last_kind = Some(kind);
        }
        if kind.is_tunnel() {
            self.pending_split = true;
        }
    }

    fn fail(&mut self, at: usize) {
        self.truncated = true;
        if self.len < MAX_LAYERS {
            self.layers[self.len] = Layer {
                kind: LayerKind::DecodeFailure,
                start: at as u32,
                end: at as u32,
            };
            self.len += 1;
            if self.nsegs == 0 {
                self.nsegs = 1;
                self.segs[0] = SegRaw::default();
            }
            self.segs[self.nsegs - 1].last = (self.len - 1) as u8;
        }
    }
}

/// What comes next, while walking a frame.
#[derive(Clone, Copy, Debug)]
enum Next {
    Ethernet,
    EtherType(u16),
    Ipv4,
    Ipv6,
    IpByVersion,
    IpProto(u8),
    Icmpv6Body(u8),
    Udp(u16, u16),
    Payload,
}

fn be16(d: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([d[at], d[at + 1]])
}

fn ether_next(t: u16) -> Next {
    Next::EtherType(t)
}

/// Where the decoder is in a frame: the offset of the next layer, and where the datagram
/// ends (before the padding of short frames).
struct Walk {
    at: usize,
    end: usize,
}

impl Walk {
    /// Whether `n` bytes from the offset are in `d`; records the failure when not.
    #[inline(always)]
    fn has(&self, d: &[u8], n: usize, out: &mut Decoded) -> bool {
        let ok = d.len() >= self.at + n;
        if !ok {
            out.fail(self.at);
        }
        ok
    }

    /// Whether `n` bytes from the offset are before the datagram's end; records the failure
    /// when not.
    #[inline(always)]
    fn fits(&self, n: usize, out: &mut Decoded) -> bool {
        let ok = self.end >= self.at + n;
        if !ok {
            out.fail(self.at);
        }
        ok
    }
}

/// Decodes `data` (framed as `link`) into `out`: each layer's function reads its header and
/// says what comes next, until a layer ends the walk.
pub fn decode(data: &[u8], link: LinkType, out: &mut Decoded) {
    out.len = 0;
    out.nsegs = 0;
    out.pending_split = false;
    out.truncated = false;
    let mut w = Walk {
        at: 0,
        end: data.len(),
    };
    let Some(mut next) = link_layer(data, link, &mut w, out) else {
        return;
    };
    loop {
        let d = &data[..w.end];
        let step = match next {
            Next::Payload => {
                if w.at < w.end {
                    out.push(d, LayerKind::Payload, w.at, w.end);
                }
                None
            }
            Next::Ethernet => ethernet(d, &mut w, out),
            Next::EtherType(t) => ether_type(d, t, &mut w, out),
            Next::IpByVersion => match d.get(w.at).map(|b| b >> 4) {
                Some(4) => Some(Next::Ipv4),
                Some(6) => Some(Next::Ipv6),
                Some(_) => Some(Next::Payload),
                None => None,
            },
            Next::Ipv4 => ipv4(d, &mut w, out),
            Next::Ipv6 => ipv6(d, &mut w, out),
            Next::IpProto(p) => ip_proto(d, p, &mut w, out),
            Next::Icmpv6Body(t) => {
                icmpv6_body(d, t, &w, out);
                None
            }
            Next::Udp(sp, dp) => udp_payload(d, sp, dp, &mut w, out),
        };
        match step {
            Some(n) => next = n,
            None => return,
        }
    }
}

/// The frame's first layer: Ethernet, raw IP, or a Linux cooked header (version 1 is 16
/// bytes, the protocol last; version 2 is 20 bytes, the protocol first).
#[inline(always)]
fn link_layer(data: &[u8], link: LinkType, w: &mut Walk, out: &mut Decoded) -> Option<Next> {
    match link {
        LinkType::Ethernet => Some(Next::Ethernet),
        LinkType::RawIp => Some(Next::IpByVersion),
        LinkType::LinuxSll | LinkType::LinuxSll2 => {
            let (kind, len, protocol_at) = if link == LinkType::LinuxSll {
                (LayerKind::LinuxSll, 16, 14)
            } else {
                (LayerKind::LinuxSll2, 20, 0)
            };
            if !w.has(data, len, out) {
                return None;
            }
            out.push(data, kind, 0, len);
            w.at = len;
            Some(ether_next(be16(data, protocol_at)))
        }
    }
}

#[inline(always)]
fn ethernet(d: &[u8], w: &mut Walk, out: &mut Decoded) -> Option<Next> {
    if !w.has(d, 14, out) {
        return None;
    }
    out.push(d, LayerKind::Ethernet, w.at, w.at + 14);
    let t = be16(d, w.at + 12);
    w.at += 14;
    Some(if t < 0x0600 {
        // An 802.3 length: LLC follows, which flows do not look into.
        Next::Payload
    } else {
        ether_next(t)
    })
}

/// What an EtherType carries: IP, ARP, VLAN tags, an MPLS label stack, or an Ethernet frame
/// (transparent Ethernet bridging).
#[inline(always)]
fn ether_type(d: &[u8], t: u16, w: &mut Walk, out: &mut Decoded) -> Option<Next> {
    match t {
        0x0800 => Some(Next::Ipv4),
        0x86dd => Some(Next::Ipv6),
        0x0806 => {
            if !w.has(d, 8, out) {
                return None;
            }
            let len = 8 + 2 * (d[w.at + 4] as usize + d[w.at + 5] as usize);
            if !w.has(d, len, out) {
                return None;
            }
            out.push(d, LayerKind::Arp, w.at, w.at + len);
            w.at += len;
            Some(Next::Payload)
        }
        0x8100 | 0x88a8 | 0x9100 => {
            if !w.has(d, 4, out) {
                return None;
            }
            out.push(d, LayerKind::Dot1Q, w.at, w.at + 4);
            let inner = be16(d, w.at + 2);
            w.at += 4;
            Some(ether_next(inner))
        }
        0x8847 | 0x8848 => {
            // The whole label stack, down to the bottom of stack bit.
            let start = w.at;
            loop {
                if d.len() < w.at + 4 {
                    out.fail(start);
                    return None;
                }
                let bos = d[w.at + 2] & 1 == 1;
                w.at += 4;
                if bos {
                    break;
                }
            }
            out.push(d, LayerKind::Mpls, start, w.at)
                .then_some(Next::IpByVersion)
        }
        0x6558 => Some(Next::Ethernet),
        _ => Some(Next::Payload),
    }
}

#[inline(always)]
fn ipv4(d: &[u8], w: &mut Walk, out: &mut Decoded) -> Option<Next> {
    let at = w.at;
    if d.len() < at + 20 || d[at] >> 4 != 4 {
        out.fail(at);
        return None;
    }
    let ihl = (d[at] & 0x0f) as usize * 4;
    let total = be16(d, at + 2) as usize;
    if ihl < 20 || d.len() < at + ihl || total < ihl {
        out.fail(at);
        return None;
    }
    if at + total < w.end {
        // Padding after the datagram (short frames) is not its payload.
        w.end = at + total;
    } else if at + total > w.end {
        out.truncated = true;
    }
    out.push(d, LayerKind::Ipv4, at, at + ihl);
    let frag = be16(d, at + 6);
    let proto = d[at + 9];
    w.at += ihl;
    if frag & 0x3fff != 0 {
        // More fragments, or not the first: gopacket's Fragment layer.
        if w.at < w.end {
            out.push(d, LayerKind::Fragment, w.at, w.end);
        }
        return None;
    }
    Some(Next::IpProto(proto))
}

#[inline(always)]
fn ipv6(d: &[u8], w: &mut Walk, out: &mut Decoded) -> Option<Next> {
    let at = w.at;
    if d.len() < at + 40 || d[at] >> 4 != 6 {
        out.fail(at);
        return None;
    }
    let plen = be16(d, at + 4) as usize;
    if at + 40 + plen < w.end {
        w.end = at + 40 + plen;
    } else if at + 40 + plen > w.end {
        out.truncated = true;
    }
    out.push(d, LayerKind::Ipv6, at, at + 40);
    w.at += 40;
    ipv6_extensions(d, d[at + 6], w, out)
}

/// IPv6 extension headers, from next header `nh`; a fragment that is not the whole
/// datagram is not decoded further.
#[inline(always)]
fn ipv6_extensions(d: &[u8], mut nh: u8, w: &mut Walk, out: &mut Decoded) -> Option<Next> {
    loop {
        let kind = match nh {
            0 => LayerKind::Ipv6HopByHop,
            43 => LayerKind::Ipv6Routing,
            44 => LayerKind::Ipv6Fragment,
            60 => LayerKind::Ipv6Destination,
            _ => return Some(Next::IpProto(nh)),
        };
        if !w.fits(8, out) {
            return None;
        }
        let len = if nh == 44 {
            8
        } else {
            (d[w.at + 1] as usize + 1) * 8
        };
        if !w.fits(len, out) || !out.push(d, kind, w.at, w.at + len) {
            return None;
        }
        if nh == 44 && be16(d, w.at + 2) & 0xfff9 != 0 {
            let payload = w.at + len;
            if payload < w.end {
                out.push(d, LayerKind::Fragment, payload, w.end);
            }
            return None;
        }
        nh = d[w.at];
        w.at += len;
    }
}

/// What an IP protocol number carries.
#[inline(always)]
fn ip_proto(d: &[u8], p: u8, w: &mut Walk, out: &mut Decoded) -> Option<Next> {
    match p {
        1 => {
            if !w.fits(8, out) {
                return None;
            }
            out.push(d, LayerKind::Icmpv4, w.at, w.at + 8);
            w.at += 8;
            Some(Next::Payload)
        }
        58 => {
            if !w.fits(4, out) {
                return None;
            }
            out.push(d, LayerKind::Icmpv6, w.at, w.at + 4);
            let t = d[w.at];
            w.at += 4;
            Some(Next::Icmpv6Body(t))
        }
        2 => {
            if w.fits(8, out) {
                out.push(d, LayerKind::Igmp, w.at, w.end);
            }
            None
        }
        6 => tcp(d, w, out),
        17 => {
            if !w.fits(8, out) {
                return None;
            }
            let (sp, dp) = (be16(d, w.at), be16(d, w.at + 2));
            out.push(d, LayerKind::Udp, w.at, w.at + 8);
            w.at += 8;
            Some(Next::Udp(sp, dp))
        }
        132 => {
            sctp(d, w, out);
            None
        }
        47 => gre(d, w, out),
        4 => Some(Next::Ipv4),
        41 => Some(Next::Ipv6),
        112 => {
            if w.fits(8, out) {
                out.push(d, LayerKind::Vrrp, w.at, w.end);
            }
            None
        }
        _ => Some(Next::Payload),
    }
}

#[inline(always)]
fn tcp(d: &[u8], w: &mut Walk, out: &mut Decoded) -> Option<Next> {
    if !w.fits(20, out) {
        return None;
    }
    let off = (d[w.at + 12] >> 4) as usize * 4;
    if off < 20 || w.end < w.at + off {
        out.fail(w.at);
        return None;
    }
    out.push(d, LayerKind::Tcp, w.at, w.at + off);
    w.at += off;
    // gopacket decodes no TCP payload flows care about.
    Some(Next::Payload)
}

/// SCTP's common header and its first chunk; nothing after.
#[inline(always)]
fn sctp(d: &[u8], w: &mut Walk, out: &mut Decoded) {
    if !w.fits(12, out) {
        return;
    }
    out.push(d, LayerKind::Sctp, w.at, w.at + 12);
    w.at += 12;
    if w.end >= w.at + 4 {
        let clen = (be16(d, w.at + 2) as usize).max(4);
        let cend = (w.at + clen).min(w.end);
        out.push(d, LayerKind::SctpChunk(d[w.at]), w.at, cend);
    }
}

/// GRE: its optional checksum, key and sequence, then what it carries (ERSPAN type II: an
/// 8-byte header, then the mirrored frame).
#[inline(always)]
fn gre(d: &[u8], w: &mut Walk, out: &mut Decoded) -> Option<Next> {
    if !w.fits(4, out) {
        return None;
    }
    let flags = d[w.at];
    let proto = be16(d, w.at + 2);
    let mut len = 4;
    if flags & 0x80 != 0 {
        len += 4; // checksum + reserved
    }
    if flags & 0x20 != 0 {
        len += 4; // key
    }
    if flags & 0x10 != 0 {
        len += 4; // sequence
    }
    if !w.fits(len, out) || !out.push(d, LayerKind::Gre, w.at, w.at + len) {
        return None;
    }
    w.at += len;
    if proto != 0x88be {
        return Some(ether_next(proto));
    }
    if !w.fits(8, out) {
        return None;
    }
    out.push(d, LayerKind::Erspan, w.at, w.at + 8);
    w.at += 8;
    Some(Next::Ethernet)
}

/// The ICMPv6 messages gopacket decodes further; it keeps the rest of the others in the
/// ICMPv6 layer.
#[inline(always)]
fn icmpv6_body(d: &[u8], t: u8, w: &Walk, out: &mut Decoded) {
    let (kind, len) = match t {
        128 | 129 => (LayerKind::Icmpv6Echo, 4),
        133 => (LayerKind::Icmpv6RouterSolicitation, 4),
        134 => (LayerKind::Icmpv6RouterAdvertisement, 12),
        135 => (LayerKind::Icmpv6NeighborSolicitation, 20),
        136 => (LayerKind::Icmpv6NeighborAdvertisement, 20),
        137 => (LayerKind::Icmpv6Redirect, 36),
        _ => return,
    };
    if w.fits(len, out) {
        out.push(d, kind, w.at, w.end);
    }
}

/// What a UDP datagram carries, by port (gopacket looks at the destination port first, then
/// the source port): a VXLAN or Geneve tunnel, DNS, DHCPv4.
#[inline(always)]
fn udp_payload(d: &[u8], sp: u16, dp: u16, w: &mut Walk, out: &mut Decoded) -> Option<Next> {
    match udp_port_layer(dp).or_else(|| udp_port_layer(sp)) {
        Some(LayerKind::Vxlan) => {
            if !w.fits(8, out) || !out.push(d, LayerKind::Vxlan, w.at, w.at + 8) {
                return None;
            }
            w.at += 8;
            Some(Next::Ethernet)
        }
        Some(LayerKind::Geneve) => {
            if !w.fits(8, out) {
                return None;
            }
            let len = 8 + (d[w.at] & 0x3f) as usize * 4;
            if !w.fits(len, out) {
                return None;
            }
            let proto = be16(d, w.at + 2);
            if !out.push(d, LayerKind::Geneve, w.at, w.at + len) {
                return None;
            }
            w.at += len;
            Some(ether_next(proto))
        }
        Some(kind @ (LayerKind::Dns | LayerKind::Dhcpv4)) => {
            let header = if kind == LayerKind::Dns { 12 } else { 240 };
            if w.fits(header, out) {
                out.push(d, kind, w.at, w.end);
            }
            None
        }
        _ => Some(Next::Payload),
    }
}

/// The layer gopacket decodes a UDP port as (the ones flows care about).
#[inline]
pub(crate) fn udp_port_layer(port: u16) -> Option<LayerKind> {
    match port {
        53 | 5353 => Some(LayerKind::Dns),
        67 | 68 => Some(LayerKind::Dhcpv4),
        4789 => Some(LayerKind::Vxlan),
        6081 => Some(LayerKind::Geneve),
        _ => None,
    }
}

/// A packet segment: the layers of one flow of a frame (an encapsulated packet starts a new
/// segment after its tunnel header).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Index range in [`Decoded::layers`].
    pub first: usize,
    pub last: usize,
}

/// The segments of a decoded frame: split at VXLAN, Geneve, MPLS and GRE layers (a GRE layer
/// followed by MPLS splits at the MPLS layer only), as Skydive did; 802.1Q tags do not
/// split. The decoder found them.
pub fn segments(d: &Decoded, out: &mut Vec<Segment>) {
    out.clear();
    for s in &d.segs[..d.nsegs] {
        out.push(Segment {
            first: s.first as usize,
            last: s.last as usize,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(d: &Decoded) -> Vec<&'static str> {
        d.layers().iter().map(|l| l.kind.name()).collect()
    }

    /// Ethernet + IPv4 + ICMP echo request, built from the RFC layouts.
    fn icmp_frame() -> Vec<u8> {
        let mut f = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1, 0x08, 0x00];
        f.extend_from_slice(&[
            0x45, 0, 0, 28, 0, 1, 0, 0, 64, 1, 0, 0, 169, 254, 1, 1, 169, 254, 1, 2,
        ]);
        f.extend_from_slice(&[8, 0, 0, 0, 0x12, 0x34, 0, 1]);
        f
    }

    #[test]
    fn ethernet_ipv4_icmp() {
        let mut d = Decoded::default();
        decode(&icmp_frame(), LinkType::Ethernet, &mut d);
        assert_eq!(kinds(&d), vec!["Ethernet", "IPv4", "ICMPv4"]);
        assert!(!d.truncated);
    }

    #[test]
    fn padding_is_not_payload_and_truncation_is_flagged() {
        let mut f = icmp_frame();
        f.extend_from_slice(&[0u8; 18]); // Ethernet padding to 60 bytes
        let mut d = Decoded::default();
        decode(&f, LinkType::Ethernet, &mut d);
        assert_eq!(kinds(&d), vec!["Ethernet", "IPv4", "ICMPv4"]);
        let short = &icmp_frame()[..30];
        decode(short, LinkType::Ethernet, &mut d);
        assert_eq!(kinds(&d), vec!["Ethernet", "DecodeFailure"]);
        assert!(d.truncated);
    }

    /// Linux cooked captures (`tcpdump -i any`), versions 1 and 2: the protocol read where
    /// each version has it.
    #[test]
    fn linux_cooked_captures() {
        let ip = &icmp_frame()[14..];
        let mut v1 = vec![0, 0, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0, 0x08, 0x00];
        v1.extend_from_slice(ip);
        let mut v2 = vec![
            0x08, 0x00, 0, 0, 0, 0, 0, 3, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0,
        ];
        v2.extend_from_slice(ip);
        let mut d = Decoded::default();
        decode(&v1, LinkType::LinuxSll, &mut d);
        assert_eq!(kinds(&d), vec!["Linux SLL", "IPv4", "ICMPv4"]);
        decode(&v2, LinkType::LinuxSll2, &mut d);
        assert_eq!(kinds(&d), vec!["Linux SLL2", "IPv4", "ICMPv4"]);
        assert_eq!(LinkType::from_pcap(276), Some(LinkType::LinuxSll2));
        // Cut inside the header.
        decode(&v2[..19], LinkType::LinuxSll2, &mut d);
        assert_eq!(kinds(&d), vec!["DecodeFailure"]);
    }

    #[test]
    fn every_prefix_of_a_frame_decodes_without_panicking() {
        let f = icmp_frame();
        let mut d = Decoded::default();
        for n in 0..=f.len() {
            decode(&f[..n], LinkType::Ethernet, &mut d);
            decode(&f[..n], LinkType::RawIp, &mut d);
            decode(&f[..n], LinkType::LinuxSll, &mut d);
            decode(&f[..n], LinkType::LinuxSll2, &mut d);
        }
    }
}
