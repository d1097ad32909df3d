//! Which nodes can be captured, and with which probe types (compat spec §6.2, §6.3).

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

const INTERFACE_CAPTURES: &[&str] = &["afpacket", "pcap", "pcapsocket", "sflow", "ebpf"];

/// Every capture type a capture resource may name.
pub const CAPTURE_TYPES: &[&str] = &[
    "ovssflow",
    "pcapsocket",
    "ovsmirror",
    "dpdk",
    "afpacket",
    "pcap",
    "ebpf",
    "sflow",
    "ovsnetflow",
];

/// Capture types allowed on a node type, the default first; empty when the node type cannot
/// be captured (`host`, `netns`, `container`, …).
pub fn allowed_capture_types(node_type: &str) -> &'static [&'static str] {
    match node_type {
        "ovsbridge" => &["ovssflow", "pcapsocket", "ovsnetflow"],
        "ovsport" => &["ovsmirror"],
        "dpdkport" => &["dpdk"],
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

/// What a probe type supports (§6.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbeCapabilities {
    pub bpf: bool,
    pub raw_packets: bool,
    pub extra_tcp_metric: bool,
    /// Several captures of this type may run on one node.
    pub multiple: bool,
}

pub fn probe_capabilities(capture_type: &str) -> ProbeCapabilities {
    match capture_type {
        "afpacket" | "pcap" | "" => ProbeCapabilities {
            bpf: true,
            raw_packets: true,
            extra_tcp_metric: true,
            multiple: true,
        },
        "ebpf" => ProbeCapabilities {
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
        assert_eq!(allowed_capture_types("ovsbridge")[0], "ovssflow");
        assert_eq!(allowed_capture_types("veth")[0], "afpacket");
        assert!(allowed_capture_types("host").is_empty());
        assert!(!is_capturable("netns"));
        assert!(capturable_types().contains(&"device"));
    }
}
