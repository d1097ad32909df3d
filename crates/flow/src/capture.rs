//! Which nodes can be captured, and with which probe types (the capture types Skydive allows
//! per node type; Skydive's probe capabilities).

/// Interface types captured with the packet probes (`afpacket` by default).
pub const INTERFACE_TYPES: &[&str] = &[
    "internal",
    "veth",
    "tun",
    "bridge",
    "dummy",
    "gre",
    "bond",
    "can",
    "hsr",
    "ifb",
    "macvlan",
    "macvtap",
    "vlan",
    "vxlan",
    "gretap",
    "ip6gretap",
    "geneve",
    "ipoib",
    "vcan",
    "ipip",
    "ipvlan",
    "lowpan",
    "ip6tnl",
    "ip6gre",
    "sit",
    "device",
];

/// A capture's type (a capture resource's `Type`): the probe that takes a node's packets.
/// Kinds this build does not know are kept as they were written, to be refused by name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum CaptureKind {
    /// An AF_PACKET TPACKET_V3 ring on the interface (the default for interfaces).
    Afpacket,
    /// libpcap on the interface.
    Pcap,
    /// A TCP port of the agent where pcap streams are written.
    PcapSocket,
    /// sFlow datagrams received on the node's address.
    Sflow,
    /// An OVS bridge's sFlow export, pointed at a collector of the agent.
    OvsSflow,
    Ebpf,
    OvsMirror,
    Dpdk,
    OvsNetflow,
    Other(String),
}

impl CaptureKind {
    /// Every kind a capture resource may name, in Skydive's order.
    pub const ALL: [CaptureKind; 9] = [
        CaptureKind::OvsSflow,
        CaptureKind::PcapSocket,
        CaptureKind::OvsMirror,
        CaptureKind::Dpdk,
        CaptureKind::Afpacket,
        CaptureKind::Pcap,
        CaptureKind::Ebpf,
        CaptureKind::Sflow,
        CaptureKind::OvsNetflow,
    ];

    /// The kind Skydive calls `name`.
    pub fn parse(name: &str) -> CaptureKind {
        match name {
            "afpacket" => CaptureKind::Afpacket,
            "pcap" => CaptureKind::Pcap,
            "pcapsocket" => CaptureKind::PcapSocket,
            "sflow" => CaptureKind::Sflow,
            "ovssflow" => CaptureKind::OvsSflow,
            "ebpf" => CaptureKind::Ebpf,
            "ovsmirror" => CaptureKind::OvsMirror,
            "dpdk" => CaptureKind::Dpdk,
            "ovsnetflow" => CaptureKind::OvsNetflow,
            other => CaptureKind::Other(other.to_string()),
        }
    }

    /// Skydive's name of the kind.
    pub fn as_str(&self) -> &str {
        match self {
            CaptureKind::Afpacket => "afpacket",
            CaptureKind::Pcap => "pcap",
            CaptureKind::PcapSocket => "pcapsocket",
            CaptureKind::Sflow => "sflow",
            CaptureKind::OvsSflow => "ovssflow",
            CaptureKind::Ebpf => "ebpf",
            CaptureKind::OvsMirror => "ovsmirror",
            CaptureKind::Dpdk => "dpdk",
            CaptureKind::OvsNetflow => "ovsnetflow",
            CaptureKind::Other(s) => s,
        }
    }

    /// Whether Skydive knows the kind.
    pub fn is_known(&self) -> bool {
        !matches!(self, CaptureKind::Other(_))
    }
}

impl std::fmt::Display for CaptureKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for CaptureKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for CaptureKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Ok(CaptureKind::parse(&s))
    }
}

/// A capture's `Type` as the resource holds it: empty means the node type's default.
pub mod optional_kind {
    use super::CaptureKind;

    pub fn serialize<S: serde::Serializer>(
        k: &Option<CaptureKind>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_str(k.as_ref().map_or("", CaptureKind::as_str))
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Option<CaptureKind>, D::Error> {
        let s = <Option<std::borrow::Cow<'de, str>> as serde::Deserialize>::deserialize(d)?;
        Ok(s.filter(|s| !s.is_empty()).map(|s| CaptureKind::parse(&s)))
    }
}

const INTERFACE_CAPTURES: &[CaptureKind] = &[
    CaptureKind::Afpacket,
    CaptureKind::Pcap,
    CaptureKind::PcapSocket,
    CaptureKind::Sflow,
    CaptureKind::Ebpf,
];

/// Capture kinds allowed on a node type, the default first; empty when the node type cannot
/// be captured (`host`, `netns`, `container`, …).
pub fn allowed_capture_types(node_type: &str) -> &'static [CaptureKind] {
    match node_type {
        "ovsbridge" => &[
            CaptureKind::OvsSflow,
            CaptureKind::PcapSocket,
            CaptureKind::OvsNetflow,
        ],
        "ovsport" => &[CaptureKind::OvsMirror],
        "dpdkport" => &[CaptureKind::Dpdk],
        t if INTERFACE_TYPES.contains(&t) => INTERFACE_CAPTURES,
        _ => &[],
    }
}

/// Whether nodes of this type can be captured at all.
pub fn is_capturable(node_type: &str) -> bool {
    !allowed_capture_types(node_type).is_empty()
}

/// Every node type that can be captured.
pub fn capturable_types() -> Vec<&'static str> {
    let mut v = vec!["ovsbridge", "ovsport", "dpdkport"];
    v.extend_from_slice(INTERFACE_TYPES);
    v
}

/// What a probe type supports (Skydive's probe capabilities).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbeCapabilities {
    pub bpf: bool,
    pub raw_packets: bool,
    pub extra_tcp_metric: bool,
    /// Several captures of this type may run on one node.
    pub multiple: bool,
}

pub fn probe_capabilities(kind: Option<&CaptureKind>) -> ProbeCapabilities {
    match kind {
        None | Some(CaptureKind::Afpacket | CaptureKind::Pcap) => ProbeCapabilities {
            bpf: true,
            raw_packets: true,
            extra_tcp_metric: true,
            multiple: true,
        },
        Some(CaptureKind::Ebpf) => ProbeCapabilities {
            bpf: false,
            raw_packets: false,
            extra_tcp_metric: true,
            multiple: false,
        },
        _ => ProbeCapabilities {
            bpf: true,
            raw_packets: true,
            extra_tcp_metric: true,
            multiple: false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_types_map_to_their_capture_types() {
        assert_eq!(allowed_capture_types("ovsbridge")[0], CaptureKind::OvsSflow);
        assert_eq!(allowed_capture_types("veth")[0], CaptureKind::Afpacket);
        assert!(allowed_capture_types("host").is_empty());
        assert!(!is_capturable("netns"));
        assert!(capturable_types().contains(&"device"));
    }

    #[test]
    fn kinds_read_and_write_skydives_names_and_keep_unknown_ones() {
        for k in CaptureKind::ALL {
            assert_eq!(CaptureKind::parse(k.as_str()), k);
            assert!(k.is_known());
        }
        let odd = CaptureKind::parse("afpackt");
        assert_eq!(odd, CaptureKind::Other("afpackt".into()));
        assert!(!odd.is_known());
        assert_eq!(
            serde_json::to_string(&CaptureKind::OvsSflow).unwrap(),
            r#""ovssflow""#
        );
        let k: CaptureKind = serde_json::from_str(r#""pcapsocket""#).unwrap();
        assert_eq!(k, CaptureKind::PcapSocket);
        assert_eq!(
            probe_capabilities(None),
            probe_capabilities(Some(&CaptureKind::Pcap))
        );
        assert!(!probe_capabilities(Some(&CaptureKind::Ebpf)).bpf);
    }
}
