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

/// Decodes `data` (framed as `link`) into `out`.
pub fn decode(data: &[u8], link: LinkType, out: &mut Decoded) {
    out.len = 0;
    out.nsegs = 0;
    out.pending_split = false;
    out.truncated = false;
    let mut end = data.len();
    let mut at = 0usize;
    let mut next = match link {
        LinkType::Ethernet => Next::Ethernet,
        LinkType::RawIp => Next::IpByVersion,
        // Linux cooked headers: version 1 is 16 bytes, the protocol last; version 2 is 20
        // bytes, the protocol first.
        LinkType::LinuxSll | LinkType::LinuxSll2 => {
            let (kind, len, protocol_at) = if link == LinkType::LinuxSll {
                (LayerKind::LinuxSll, 16, 14)
            } else {
                (LayerKind::LinuxSll2, 20, 0)
            };
            if data.len() < len {
                out.fail(0);
                return;
            }
            out.push(data, kind, 0, len);
            at = len;
            ether_next(be16(data, protocol_at))
        }
    };
    loop {
        let d = &data[..end];
        next = match next {
            Next::Payload => {
                if at < end {
                    out.push(d, LayerKind::Payload, at, end);
                }
                return;
            }
            Next::Ethernet => {
                if d.len() < at + 14 {
                    out.fail(at);
                    return;
                }
                out.push(d, LayerKind::Ethernet, at, at + 14);
                let t = be16(d, at + 12);
                at += 14;
                if t < 0x0600 {
                    // An 802.3 length: LLC follows, which flows do not look into.
                    Next::Payload
                } else {
                    ether_next(t)
                }
            }
            Next::EtherType(t) => match t {
                0x0800 => Next::Ipv4,
                0x86dd => Next::Ipv6,
                0x0806 => {
                    if d.len() < at + 8 {
                        out.fail(at);
                        return;
                    }
                    let len = 8 + 2 * (d[at + 4] as usize + d[at + 5] as usize);
                    if d.len() < at + len {
                        out.fail(at);
                        return;
                    }
                    out.push(d, LayerKind::Arp, at, at + len);
                    at += len;
                    Next::Payload
                }
                0x8100 | 0x88a8 | 0x9100 => {
                    if d.len() < at + 4 {
                        out.fail(at);
                        return;
                    }
                    out.push(d, LayerKind::Dot1Q, at, at + 4);
                    let inner = be16(d, at + 2);
                    at += 4;
                    ether_next(inner)
                }
                0x8847 | 0x8848 => {
                    // The whole label stack, down to the bottom of stack bit.
                    let start = at;
                    loop {
                        if d.len() < at + 4 {
                            out.fail(start);
                            return;
                        }
                        let bos = d[at + 2] & 1 == 1;
                        at += 4;
                        if bos {
                            break;
                        }
                    }
                    if !out.push(d, LayerKind::Mpls, start, at) {
                        return;
                    }
                    Next::IpByVersion
                }
                0x6558 => Next::Ethernet,
                _ => Next::Payload,
            },
            Next::IpByVersion => match d.get(at).map(|b| b >> 4) {
                Some(4) => Next::Ipv4,
                Some(6) => Next::Ipv6,
                Some(_) => Next::Payload,
                None => return,
            },
            Next::Ipv4 => {
                if d.len() < at + 20 || d[at] >> 4 != 4 {
                    out.fail(at);
                    return;
                }
                let ihl = (d[at] & 0x0f) as usize * 4;
                let total = be16(d, at + 2) as usize;
                if ihl < 20 || d.len() < at + ihl || total < ihl {
                    out.fail(at);
                    return;
                }
                if at + total < end {
                    // Padding after the datagram (short frames) is not its payload.
                    end = at + total;
                } else if at + total > end {
                    out.truncated = true;
                }
                out.push(d, LayerKind::Ipv4, at, at + ihl);
                let frag = be16(d, at + 6);
                let proto = d[at + 9];
                at += ihl;
                if frag & 0x3fff != 0 {
                    // More fragments, or not the first: gopacket's Fragment layer.
                    if at < end {
                        out.push(d, LayerKind::Fragment, at, end);
                    }
                    return;
                }
                Next::IpProto(proto)
            }
            Next::Ipv6 => {
                if d.len() < at + 40 || d[at] >> 4 != 6 {
                    out.fail(at);
                    return;
                }
                let plen = be16(d, at + 4) as usize;
                if at + 40 + plen < end {
                    end = at + 40 + plen;
                } else if at + 40 + plen > end {
                    out.truncated = true;
                }
                out.push(d, LayerKind::Ipv6, at, at + 40);
                let mut nh = d[at + 6];
                at += 40;
                // Extension headers.
                loop {
                    let kind = match nh {
                        0 => LayerKind::Ipv6HopByHop,
                        43 => LayerKind::Ipv6Routing,
                        44 => LayerKind::Ipv6Fragment,
                        60 => LayerKind::Ipv6Destination,
                        _ => break,
                    };
                    if end < at + 8 {
                        out.fail(at);
                        return;
                    }
                    let len = if nh == 44 {
                        8
                    } else {
                        (d[at + 1] as usize + 1) * 8
                    };
                    if end < at + len {
                        out.fail(at);
                        return;
                    }
                    if !out.push(d, kind, at, at + len) {
                        return;
                    }
                    if nh == 44 && be16(d, at + 2) & 0xfff9 != 0 {
                        // A fragment that is not the whole datagram: not decoded further.
                        let payload = at + len;
                        if payload < end {
                            out.push(d, LayerKind::Fragment, payload, end);
                        }
                        return;
                    }
                    nh = d[at];
                    at += len;
                }
                Next::IpProto(nh)
            }
            Next::IpProto(p) => match p {
                1 => {
                    if end < at + 8 {
                        out.fail(at);
                        return;
                    }
                    out.push(d, LayerKind::Icmpv4, at, at + 8);
                    at += 8;
                    Next::Payload
                }
                58 => {
                    if end < at + 4 {
                        out.fail(at);
                        return;
                    }
                    out.push(d, LayerKind::Icmpv6, at, at + 4);
                    let t = d[at];
                    at += 4;
                    Next::Icmpv6Body(t)
                }
                2 => {
                    if end < at + 8 {
                        out.fail(at);
                        return;
                    }
                    out.push(d, LayerKind::Igmp, at, end);
                    return;
                }
                6 => {
                    if end < at + 20 {
                        out.fail(at);
                        return;
                    }
                    let off = (d[at + 12] >> 4) as usize * 4;
                    if off < 20 || end < at + off {
                        out.fail(at);
                        return;
                    }
                    out.push(d, LayerKind::Tcp, at, at + off);
                    at += off;
                    // gopacket decodes no TCP payload flows care about.
                    Next::Payload
                }
                17 => {
                    if end < at + 8 {
                        out.fail(at);
                        return;
                    }
                    let (sp, dp) = (be16(d, at), be16(d, at + 2));
                    out.push(d, LayerKind::Udp, at, at + 8);
                    at += 8;
                    Next::Udp(sp, dp)
                }
                132 => {
                    if end < at + 12 {
                        out.fail(at);
                        return;
                    }
                    out.push(d, LayerKind::Sctp, at, at + 12);
                    at += 12;
                    if end >= at + 4 {
                        let clen = (be16(d, at + 2) as usize).max(4);
                        let cend = (at + clen).min(end);
                        out.push(d, LayerKind::SctpChunk(d[at]), at, cend);
                    }
                    return;
                }
                47 => {
                    if end < at + 4 {
                        out.fail(at);
                        return;
                    }
                    let flags = d[at];
                    let proto = be16(d, at + 2);
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
                    if end < at + len {
                        out.fail(at);
                        return;
                    }
                    if !out.push(d, LayerKind::Gre, at, at + len) {
                        return;
                    }
                    at += len;
                    match proto {
                        0x88be => {
                            // ERSPAN type II: an 8-byte header, then the mirrored frame.
                            if end < at + 8 {
                                out.fail(at);
                                return;
                            }
                            out.push(d, LayerKind::Erspan, at, at + 8);
                            at += 8;
                            Next::Ethernet
                        }
                        t => ether_next(t),
                    }
                }
                4 => Next::Ipv4,
                41 => Next::Ipv6,
                112 => {
                    if end < at + 8 {
                        out.fail(at);
                        return;
                    }
                    out.push(d, LayerKind::Vrrp, at, end);
                    return;
                }
                _ => Next::Payload,
            },
            Next::Icmpv6Body(t) => {
                let (kind, len) = match t {
                    128 | 129 => (LayerKind::Icmpv6Echo, 4),
                    133 => (LayerKind::Icmpv6RouterSolicitation, 4),
                    134 => (LayerKind::Icmpv6RouterAdvertisement, 12),
                    135 => (LayerKind::Icmpv6NeighborSolicitation, 20),
                    136 => (LayerKind::Icmpv6NeighborAdvertisement, 20),
                    137 => (LayerKind::Icmpv6Redirect, 36),
                    _ => {
                        // gopacket keeps the rest of other ICMPv6 messages in the ICMPv6 layer.
                        return;
                    }
                };
                if end < at + len {
                    out.fail(at);
                    return;
                }
                out.push(d, kind, at, end);
                return;
            }
            Next::Udp(sp, dp) => {
                // gopacket looks at the destination port first, then the source port.
                let kind = udp_port_layer(dp).or_else(|| udp_port_layer(sp));
                match kind {
                    Some(LayerKind::Vxlan) => {
                        if end < at + 8 {
                            out.fail(at);
                            return;
                        }
                        if !out.push(d, LayerKind::Vxlan, at, at + 8) {
                            return;
                        }
                        at += 8;
                        Next::Ethernet
                    }
                    Some(LayerKind::Geneve) => {
                        if end < at + 8 {
                            out.fail(at);
                            return;
                        }
                        let len = 8 + (d[at] & 0x3f) as usize * 4;
                        if end < at + len {
                            out.fail(at);
                            return;
                        }
                        let proto = be16(d, at + 2);
                        if !out.push(d, LayerKind::Geneve, at, at + len) {
                            return;
                        }
                        at += len;
                        ether_next(proto)
                    }
                    Some(LayerKind::Dns) => {
                        if end < at + 12 {
                            out.fail(at);
                            return;
                        }
                        out.push(d, LayerKind::Dns, at, end);
                        return;
                    }
                    Some(LayerKind::Dhcpv4) => {
                        if end < at + 240 {
                            out.fail(at);
                            return;
                        }
                        out.push(d, LayerKind::Dhcpv4, at, end);
                        return;
                    }
                    _ => Next::Payload,
                }
            }
        };
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
