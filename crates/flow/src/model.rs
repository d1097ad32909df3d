//! The Flow object and its JSON encoding (Skydive's flow enums; Skydive's flow JSON).

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use skydive_graph::{Field, Getter, Value};

/// A flow's strings: up to 24 bytes are kept inline (UUIDs and tracking IDs, MAC and IPv4
/// addresses, most layers paths), so that most flows are made and sent without allocating
/// for them.
pub type Str = compact_str::CompactString;

/// Protocol of a flow layer. Serialised as its name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub enum FlowProtocol {
    #[default]
    Ethernet,
    Ipv4,
    Tcp,
    Udp,
    Sctp,
    Ipv6,
    Icmpv4,
    Icmpv6,
}

impl FlowProtocol {
    pub const ALL: [FlowProtocol; 8] = [
        FlowProtocol::Ethernet,
        FlowProtocol::Ipv4,
        FlowProtocol::Tcp,
        FlowProtocol::Udp,
        FlowProtocol::Sctp,
        FlowProtocol::Ipv6,
        FlowProtocol::Icmpv4,
        FlowProtocol::Icmpv6,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FlowProtocol::Ethernet => "ETHERNET",
            FlowProtocol::Ipv4 => "IPV4",
            FlowProtocol::Tcp => "TCP",
            FlowProtocol::Udp => "UDP",
            FlowProtocol::Sctp => "SCTP",
            FlowProtocol::Ipv6 => "IPV6",
            FlowProtocol::Icmpv4 => "ICMPV4",
            FlowProtocol::Icmpv6 => "ICMPV6",
        }
    }

    /// The protobuf enum number.
    pub fn number(self) -> i32 {
        self as i32
    }

    pub fn from_number(n: i32) -> Option<Self> {
        Self::ALL.get(usize::try_from(n).ok()?).copied()
    }

    pub fn from_name(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name() == s)
    }
}

impl fmt::Display for FlowProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for FlowProtocol {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for FlowProtocol {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        FlowProtocol::from_name(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown flow protocol {s}")))
    }
}

/// ICMP message kind, as Skydive groups them. Serialised as its name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum IcmpType {
    #[default]
    Unknown,
    DestinationUnreachable,
    Echo,
    Neighbor,
    AddressMask,
    Info,
    ParameterProblem,
    Redirect,
    Router,
    SourceQuench,
    TimeExceeded,
    Timestamp,
    PacketTooBig,
}

impl IcmpType {
    pub const ALL: [IcmpType; 13] = [
        IcmpType::Unknown,
        IcmpType::DestinationUnreachable,
        IcmpType::Echo,
        IcmpType::Neighbor,
        IcmpType::AddressMask,
        IcmpType::Info,
        IcmpType::ParameterProblem,
        IcmpType::Redirect,
        IcmpType::Router,
        IcmpType::SourceQuench,
        IcmpType::TimeExceeded,
        IcmpType::Timestamp,
        IcmpType::PacketTooBig,
    ];

    pub fn name(self) -> &'static str {
        match self {
            IcmpType::Unknown => "UNKNOWN",
            IcmpType::DestinationUnreachable => "DESTINATION_UNREACHABLE",
            IcmpType::Echo => "ECHO",
            IcmpType::Neighbor => "NEIGHBOR",
            IcmpType::AddressMask => "ADDRESS_MASK",
            IcmpType::Info => "INFO",
            IcmpType::ParameterProblem => "PARAMETER_PROBLEM",
            IcmpType::Redirect => "REDIRECT",
            IcmpType::Router => "ROUTER",
            IcmpType::SourceQuench => "SOURCE_QUENCH",
            IcmpType::TimeExceeded => "TIME_EXCEEDED",
            IcmpType::Timestamp => "TIMESTAMP",
            IcmpType::PacketTooBig => "PACKET_TOO_BIG",
        }
    }

    pub fn number(self) -> u32 {
        self as u32
    }

    pub fn from_number(n: u32) -> Self {
        Self::ALL
            .get(n as usize)
            .copied()
            .unwrap_or(IcmpType::Unknown)
    }

    pub fn from_name(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name() == s)
    }

    /// Skydive's grouping of ICMPv4 wire types.
    pub fn from_icmpv4(t: u8) -> Self {
        match t {
            0 | 8 => IcmpType::Echo,
            3 => IcmpType::DestinationUnreachable,
            4 => IcmpType::SourceQuench,
            5 => IcmpType::Redirect,
            9 | 10 => IcmpType::Router,
            11 => IcmpType::TimeExceeded,
            12 => IcmpType::ParameterProblem,
            13 | 14 => IcmpType::Timestamp,
            15 | 16 => IcmpType::Info,
            17 | 18 => IcmpType::AddressMask,
            _ => IcmpType::Unknown,
        }
    }

    /// Skydive's grouping of ICMPv6 wire types.
    pub fn from_icmpv6(t: u8) -> Self {
        match t {
            1 => IcmpType::DestinationUnreachable,
            2 => IcmpType::PacketTooBig,
            3 => IcmpType::TimeExceeded,
            4 => IcmpType::ParameterProblem,
            128 | 129 => IcmpType::Echo,
            133 | 134 => IcmpType::Router,
            135 | 136 => IcmpType::Neighbor,
            137 => IcmpType::Redirect,
            _ => IcmpType::Unknown,
        }
    }
}

impl Serialize for IcmpType {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for IcmpType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        IcmpType::from_name(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown ICMP type {s}")))
    }
}

/// Why a flow ended. Serialised as an integer; absent while the flow is live.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum FinishType {
    #[default]
    NotFinished,
    Timeout,
    TcpFin,
    TcpRst,
}

impl FinishType {
    pub fn number(self) -> i64 {
        self as i64
    }

    pub fn from_number(n: i64) -> Self {
        match n {
            1 => FinishType::Timeout,
            2 => FinishType::TcpFin,
            3 => FinishType::TcpRst,
            _ => FinishType::NotFinished,
        }
    }

    pub fn is_finished(self) -> bool {
        self != FinishType::NotFinished
    }
}

impl Serialize for FinishType {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i64(self.number())
    }
}

impl<'de> Deserialize<'de> for FinishType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(FinishType::from_number(i64::deserialize(d)?))
    }
}

fn is_zero_i64(v: &i64) -> bool {
    *v == 0
}

fn is_zero_u32(v: &u32) -> bool {
    *v == 0
}

fn is_not_finished(v: &FinishType) -> bool {
    !v.is_finished()
}

/// A link or network layer: two endpoints and an ID (VLAN stack, VNI, GRE key).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct FlowLayer {
    #[serde(rename = "Protocol")]
    pub protocol: FlowProtocol,
    #[serde(rename = "A", default, skip_serializing_if = "Str::is_empty")]
    pub a: Str,
    #[serde(rename = "B", default, skip_serializing_if = "Str::is_empty")]
    pub b: Str,
    #[serde(rename = "ID", default)]
    pub id: i64,
}

/// A transport layer: ports.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct TransportLayer {
    #[serde(rename = "Protocol")]
    pub protocol: FlowProtocol,
    #[serde(rename = "A", default)]
    pub a: i64,
    #[serde(rename = "B", default)]
    pub b: i64,
    #[serde(rename = "ID", default)]
    pub id: i64,
}

/// The ICMP part of a flow.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct IcmpLayer {
    #[serde(rename = "Type")]
    pub kind: IcmpType,
    #[serde(rename = "Code", default, skip_serializing_if = "is_zero_u32")]
    pub code: u32,
    #[serde(rename = "ID", default, skip_serializing_if = "is_zero_u32")]
    pub id: u32,
}

/// Packet and byte counters in both directions over `[Start, Last]` (ms).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct FlowMetric {
    #[serde(rename = "ABPackets", default)]
    pub ab_packets: i64,
    #[serde(rename = "ABBytes", default)]
    pub ab_bytes: i64,
    #[serde(rename = "BAPackets", default)]
    pub ba_packets: i64,
    #[serde(rename = "BABytes", default)]
    pub ba_bytes: i64,
    #[serde(rename = "Start", default)]
    pub start: i64,
    #[serde(rename = "Last", default)]
    pub last: i64,
    /// Round-trip time in nanoseconds.
    #[serde(rename = "RTT", default, skip_serializing_if = "is_zero_i64")]
    pub rtt: i64,
}

impl FlowMetric {
    /// The counters of `self` minus those of `prev`, over `[start, last]`.
    pub fn delta(&self, prev: &FlowMetric, start: i64, last: i64) -> FlowMetric {
        FlowMetric {
            ab_packets: self.ab_packets - prev.ab_packets,
            ab_bytes: self.ab_bytes - prev.ab_bytes,
            ba_packets: self.ba_packets - prev.ba_packets,
            ba_bytes: self.ba_bytes - prev.ba_bytes,
            start,
            last,
            rtt: self.rtt,
        }
    }

    pub fn field(&self, name: &str) -> Option<i64> {
        Some(match name {
            "ABPackets" => self.ab_packets,
            "ABBytes" => self.ab_bytes,
            "BAPackets" => self.ba_packets,
            "BABytes" => self.ba_bytes,
            "Start" => self.start,
            "Last" => self.last,
            "RTT" => self.rtt,
            _ => return None,
        })
    }
}

/// TCP details, with `ExtraTCPMetric`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct TcpMetric {
    #[serde(rename = "ABSynStart")]
    pub ab_syn_start: i64,
    #[serde(rename = "BASynStart")]
    pub ba_syn_start: i64,
    #[serde(rename = "ABSynTTL", skip_serializing_if = "is_zero_u32")]
    pub ab_syn_ttl: u32,
    #[serde(rename = "BASynTTL", skip_serializing_if = "is_zero_u32")]
    pub ba_syn_ttl: u32,
    #[serde(rename = "ABFinStart")]
    pub ab_fin_start: i64,
    #[serde(rename = "BAFinStart")]
    pub ba_fin_start: i64,
    #[serde(rename = "ABRstStart")]
    pub ab_rst_start: i64,
    #[serde(rename = "BARstStart")]
    pub ba_rst_start: i64,
    #[serde(rename = "ABSegmentOutOfOrder")]
    pub ab_segment_out_of_order: i64,
    #[serde(rename = "ABSegmentSkipped")]
    pub ab_segment_skipped: i64,
    #[serde(rename = "ABSegmentSkippedBytes")]
    pub ab_segment_skipped_bytes: i64,
    #[serde(rename = "ABPackets")]
    pub ab_packets: i64,
    #[serde(rename = "ABBytes")]
    pub ab_bytes: i64,
    #[serde(rename = "ABSawStart")]
    pub ab_saw_start: i64,
    #[serde(rename = "ABSawEnd")]
    pub ab_saw_end: i64,
    #[serde(rename = "BASegmentOutOfOrder")]
    pub ba_segment_out_of_order: i64,
    #[serde(rename = "BASegmentSkipped")]
    pub ba_segment_skipped: i64,
    #[serde(rename = "BASegmentSkippedBytes")]
    pub ba_segment_skipped_bytes: i64,
    #[serde(rename = "BAPackets")]
    pub ba_packets: i64,
    #[serde(rename = "BABytes")]
    pub ba_bytes: i64,
    #[serde(rename = "BASawStart")]
    pub ba_saw_start: i64,
    #[serde(rename = "BASawEnd")]
    pub ba_saw_end: i64,
}

/// IPv4 fragment statistics, with `IPDefrag`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct IpMetric {
    #[serde(rename = "Fragments", default)]
    pub fragments: i64,
    #[serde(rename = "FragmentErrors", default)]
    pub fragment_errors: i64,
}

/// A raw packet kept with a flow.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RawPacket {
    #[serde(rename = "Timestamp")]
    pub timestamp: i64,
    #[serde(rename = "Index")]
    pub index: i64,
    #[serde(rename = "Data", with = "base64_bytes")]
    pub data: Vec<u8>,
    #[serde(rename = "LinkType")]
    pub link_type: u32,
}

mod base64_bytes {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(data: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(data))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        STANDARD
            .decode(s.as_bytes())
            .map_err(serde::de::Error::custom)
    }
}

/// A flow (Skydive's flow JSON).
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
pub struct Flow {
    #[serde(rename = "UUID", default, skip_serializing_if = "Str::is_empty")]
    pub uuid: Str,
    #[serde(rename = "LayersPath", default, skip_serializing_if = "Str::is_empty")]
    pub layers_path: Str,
    #[serde(rename = "Application", default, skip_serializing_if = "Str::is_empty")]
    pub application: Str,
    #[serde(rename = "Link", default, skip_serializing_if = "Option::is_none")]
    pub link: Option<FlowLayer>,
    #[serde(rename = "Network", default, skip_serializing_if = "Option::is_none")]
    pub network: Option<FlowLayer>,
    #[serde(rename = "Transport", default, skip_serializing_if = "Option::is_none")]
    pub transport: Option<TransportLayer>,
    #[serde(rename = "ICMP", default, skip_serializing_if = "Option::is_none")]
    pub icmp: Option<IcmpLayer>,
    /// Decoded DHCPv4 layer (capture `ExtraLayers & 4`).
    #[serde(rename = "DHCPv4", default, skip_serializing_if = "Option::is_none")]
    pub dhcpv4: Option<Box<Value>>,
    /// Decoded DNS layer (capture `ExtraLayers & 2`).
    #[serde(rename = "DNS", default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<Box<Value>>,
    /// Decoded VRRPv2 layer (capture `ExtraLayers & 1`).
    #[serde(rename = "VRRPv2", default, skip_serializing_if = "Option::is_none")]
    pub vrrpv2: Option<Box<Value>>,
    #[serde(
        rename = "LastUpdateMetric",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub last_update_metric: Option<FlowMetric>,
    #[serde(rename = "Metric", default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<FlowMetric>,
    #[serde(rename = "TCPMetric", default, skip_serializing_if = "Option::is_none")]
    pub tcp_metric: Option<Box<TcpMetric>>,
    #[serde(rename = "IPMetric", default, skip_serializing_if = "Option::is_none")]
    pub ip_metric: Option<IpMetric>,
    #[serde(rename = "Start", default)]
    pub start: i64,
    #[serde(rename = "Last", default)]
    pub last: i64,
    #[serde(rename = "TrackingID", default, skip_serializing_if = "Str::is_empty")]
    pub tracking_id: Str,
    #[serde(
        rename = "L3TrackingID",
        default,
        skip_serializing_if = "Str::is_empty"
    )]
    pub l3_tracking_id: Str,
    #[serde(rename = "ParentUUID", default)]
    pub parent_uuid: Str,
    #[serde(rename = "NodeTID", default, skip_serializing_if = "Str::is_empty")]
    pub node_tid: Str,
    #[serde(rename = "CaptureID", default, skip_serializing_if = "Str::is_empty")]
    pub capture_id: Str,
    /// Raw packets of the last update period. Never in JSON (Skydive's `json:"-"`).
    #[serde(skip)]
    pub last_raw_packets: Vec<RawPacket>,
    #[serde(rename = "RawPacketsCaptured", default)]
    pub raw_packets_captured: i64,
    #[serde(
        rename = "FinishType",
        default,
        skip_serializing_if = "is_not_finished"
    )]
    pub finish_type: FinishType,
}

// A flow's rarely present parts (TCP metric, application layers) are boxed: every flow of a
// tick is a message, and the inline 240 bytes they took made the flush write 40% more.
#[cfg(target_pointer_width = "64")]
const _: () = assert!(size_of::<Flow>() <= 600, "a Flow stays small");

fn visit_layer(l: &Option<FlowLayer>, field: &str, f: &mut dyn FnMut(Field<'_>) -> bool) -> bool {
    let Some(l) = l else { return false };
    match field {
        "Protocol" => f(Field::Str(l.protocol.name())),
        "A" => f(Field::Str(&l.a)),
        "B" => f(Field::Str(&l.b)),
        "ID" => f(Field::Int(l.id)),
        _ => false,
    }
}

fn visit_metric(m: &Option<FlowMetric>, field: &str, f: &mut dyn FnMut(Field<'_>) -> bool) -> bool {
    match m.as_ref().and_then(|m| m.field(field)) {
        Some(v) => f(Field::Int(v)),
        None => false,
    }
}

fn visit_serialized<T: Serialize>(
    v: &Option<T>,
    field: &str,
    f: &mut dyn FnMut(Field<'_>) -> bool,
) -> bool {
    let Some(v) = v else { return false };
    let Ok(json) = serde_json::to_value(v) else {
        return false;
    };
    match Value::from_json(&json) {
        Value::Map(m) => m.visit_path(field, &mut |v| f(Field::Value(v))),
        _ => false,
    }
}

fn visit_value(v: &Option<Box<Value>>, field: &str, f: &mut dyn FnMut(Field<'_>) -> bool) -> bool {
    match v.as_deref() {
        Some(Value::Map(m)) => m.visit_path(field, &mut |v| f(Field::Value(v))),
        _ => false,
    }
}

impl Getter for Flow {
    fn visit_field(&self, key: &str, f: &mut dyn FnMut(Field<'_>) -> bool) -> bool {
        let (head, rest) = key.split_once('.').unwrap_or((key, ""));
        match (head, rest) {
            ("UUID", "") => !self.uuid.is_empty() && f(Field::Str(&self.uuid)),
            ("LayersPath", "") => f(Field::Str(&self.layers_path)),
            ("Application", "") => f(Field::Str(&self.application)),
            ("TrackingID", "") => f(Field::Str(&self.tracking_id)),
            ("L3TrackingID", "") => f(Field::Str(&self.l3_tracking_id)),
            ("ParentUUID", "") => f(Field::Str(&self.parent_uuid)),
            ("NodeTID", "") => f(Field::Str(&self.node_tid)),
            ("CaptureID", "") => f(Field::Str(&self.capture_id)),
            ("Start", "") => f(Field::Int(self.start)),
            ("Last", "") => f(Field::Int(self.last)),
            ("RawPacketsCaptured", "") => f(Field::Int(self.raw_packets_captured)),
            ("FinishType", "") => f(Field::Int(self.finish_type.number())),
            ("Link", field) => visit_layer(&self.link, field, f),
            ("Network", field) => visit_layer(&self.network, field, f),
            ("Transport", field) => match &self.transport {
                Some(t) => match field {
                    "Protocol" => f(Field::Str(t.protocol.name())),
                    "A" => f(Field::Int(t.a)),
                    "B" => f(Field::Int(t.b)),
                    "ID" => f(Field::Int(t.id)),
                    _ => false,
                },
                None => false,
            },
            ("ICMP", field) => match &self.icmp {
                Some(i) => match field {
                    "Type" => f(Field::Str(i.kind.name())),
                    "Code" => f(Field::Int(i.code.into())),
                    "ID" => f(Field::Int(i.id.into())),
                    _ => false,
                },
                None => false,
            },
            ("Metric", field) => visit_metric(&self.metric, field, f),
            ("LastUpdateMetric", field) => visit_metric(&self.last_update_metric, field, f),
            ("TCPMetric", field) => visit_serialized(&self.tcp_metric, field, f),
            ("IPMetric", field) => visit_serialized(&self.ip_metric, field, f),
            ("DNS", field) => visit_value(&self.dns, field, f),
            ("DHCPv4", field) => visit_value(&self.dhcpv4, field, f),
            ("VRRPv2", field) => visit_value(&self.vrrpv2, field, f),
            _ => false,
        }
    }
}

/// A flow as agents send it to the analyzer: the flow's JSON plus the raw packets of the
/// last update period (which the flow's own JSON leaves out, as Skydive's did).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WireFlow {
    #[serde(flatten)]
    pub flow: Flow,
    #[serde(
        rename = "LastRawPackets",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub raw_packets: Vec<RawPacket>,
}

impl From<Flow> for WireFlow {
    fn from(mut flow: Flow) -> Self {
        let raw_packets = std::mem::take(&mut flow.last_raw_packets);
        WireFlow { flow, raw_packets }
    }
}

impl From<WireFlow> for Flow {
    fn from(w: WireFlow) -> Self {
        let mut f = w.flow;
        f.last_raw_packets = w.raw_packets;
        f
    }
}

impl Flow {
    /// The flow as a metadata value (for `Values`, `Keys` and generic handling).
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self)
            .map(|j| Value::from_json(&j))
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn icmp_flow() -> Flow {
        Flow {
            uuid: "3e5a".into(),
            layers_path: "Ethernet/IPv4/ICMPv4".into(),
            application: "ICMPv4".into(),
            link: Some(FlowLayer {
                protocol: FlowProtocol::Ethernet,
                a: "72:1c:00:00:00:01".into(),
                b: "de:ad:00:00:00:02".into(),
                id: 0,
            }),
            network: Some(FlowLayer {
                protocol: FlowProtocol::Ipv4,
                a: "169.254.33.33".into(),
                b: "169.254.33.34".into(),
                id: 0,
            }),
            icmp: Some(IcmpLayer {
                kind: IcmpType::Echo,
                code: 0,
                id: 1234,
            }),
            metric: Some(FlowMetric {
                ab_packets: 3,
                ab_bytes: 294,
                ba_packets: 3,
                ba_bytes: 294,
                start: 1,
                last: 2,
                rtt: 52000,
            }),
            start: 1626700000123,
            last: 1626700002130,
            tracking_id: "8f2c".into(),
            l3_tracking_id: "1a9e".into(),
            node_tid: "0e4f".into(),
            ..Default::default()
        }
    }

    #[test]
    fn flow_json_matches_skydive_shape() {
        let json = serde_json::to_string(&icmp_flow()).unwrap();
        assert_eq!(
            json,
            r#"{"UUID":"3e5a","LayersPath":"Ethernet/IPv4/ICMPv4","Application":"ICMPv4","Link":{"Protocol":"ETHERNET","A":"72:1c:00:00:00:01","B":"de:ad:00:00:00:02","ID":0},"Network":{"Protocol":"IPV4","A":"169.254.33.33","B":"169.254.33.34","ID":0},"ICMP":{"Type":"ECHO","ID":1234},"Metric":{"ABPackets":3,"ABBytes":294,"BAPackets":3,"BABytes":294,"Start":1,"Last":2,"RTT":52000},"Start":1626700000123,"Last":1626700002130,"TrackingID":"8f2c","L3TrackingID":"1a9e","ParentUUID":"","NodeTID":"0e4f","RawPacketsCaptured":0}"#
        );
        let back: Flow = serde_json::from_str(&json).unwrap();
        assert_eq!(back, icmp_flow());
    }

    #[test]
    fn wire_flows_carry_the_raw_packets() {
        let mut f = icmp_flow();
        f.last_raw_packets = vec![RawPacket {
            timestamp: 5,
            index: 1,
            data: vec![1, 2, 3],
            link_type: 1,
        }];
        let json = serde_json::to_string(&WireFlow::from(f.clone())).unwrap();
        assert!(json.contains(
            r#""LastRawPackets":[{"Timestamp":5,"Index":1,"Data":"AQID","LinkType":1}]"#
        ));
        let back: WireFlow = serde_json::from_str(&json).unwrap();
        assert_eq!(Flow::from(back), f);
    }

    #[test]
    fn finish_type_is_an_omitted_or_integer_field() {
        let mut f = icmp_flow();
        f.finish_type = FinishType::TcpRst;
        let v: serde_json::Value = serde_json::to_value(&f).unwrap();
        assert_eq!(v["FinishType"], 3);
        assert!(
            serde_json::to_value(icmp_flow())
                .unwrap()
                .get("FinishType")
                .is_none()
        );
    }

    #[test]
    fn getter_reads_nested_flow_fields() {
        let f = icmp_flow();
        assert_eq!(
            f.field_value("Network.A"),
            Some(Value::from("169.254.33.33"))
        );
        assert_eq!(f.field_value("Metric.ABBytes"), Some(Value::Int(294)));
        assert_eq!(f.field_value("ICMP.Type"), Some(Value::from("ECHO")));
        assert_eq!(f.field_value("Transport.A"), None);
        assert_eq!(f.field_value("Metric.Nope"), None);
    }

    #[test]
    fn icmp_types_group_requests_and_replies() {
        assert_eq!(IcmpType::from_icmpv4(0), IcmpType::Echo);
        assert_eq!(IcmpType::from_icmpv4(8), IcmpType::Echo);
        assert_eq!(IcmpType::from_icmpv6(129), IcmpType::Echo);
        assert_eq!(IcmpType::from_icmpv6(135), IcmpType::Neighbor);
        assert_eq!(IcmpType::from_icmpv4(200), IcmpType::Unknown);
    }
}
