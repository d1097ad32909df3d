//! The capture resource, `/api/capture` (Skydive's resource shapes; Skydive's capture resource).

use skydive_api::capture::CaptureSpec;
use skydive_flow::capture::{CaptureKind, probe_capabilities};
use skydive_graph::{Graph, Value};

use crate::resources::{Invalid, Resource, ResourceDefaults};

/// The capture resource: the spec the agents run.
pub type Capture = CaptureSpec;

/// Whether a node's `Captures` metadata lists `capture` as active.
fn active_on(capture: &Capture, captures: Option<&Value>) -> bool {
    let Some(Value::Array(list)) = captures else {
        return false;
    };
    list.iter().any(|c| {
        c.as_map().is_some_and(|m| {
            m.get("ID").and_then(Value::as_str) == Some(capture.uuid.as_str())
                && m.get("State").and_then(Value::as_str) == Some("active")
        })
    })
}

fn check_target(t: &str) -> Result<(), String> {
    if t.is_empty() {
        return Ok(());
    }
    let ok = t
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "Target {t:?} must be an address and a port, addr:port"
        ))
    }
}

impl Resource for Capture {
    const NAME: &'static str = "capture";
    const TITLE: &'static str = "Capture";

    fn id(&self) -> &str {
        &self.uuid
    }
    fn set_id(&mut self, id: String) {
        self.uuid = id;
    }
    fn normalize(&mut self, defaults: &ResourceDefaults) {
        if self.layer_key_mode.is_empty() {
            self.layer_key_mode = defaults.layer_key_mode.clone();
        }
    }
    fn validate(&self) -> Result<(), Invalid> {
        if self.gremlin_query.trim().is_empty() {
            return Err("GremlinQuery is required".into());
        }
        skydive_gremlin::parse(&self.gremlin_query)
            .map_err(|e| format!("invalid GremlinQuery {:?}: {e}", self.gremlin_query))?;
        skydive_capture::bpf::check(&self.bpf_filter).map_err(|e| e.to_string())?;
        if let Some(CaptureKind::Other(name)) = &self.kind {
            return Err(format!(
                "unknown capture type {name:?}: expected one of {}",
                CaptureKind::ALL.map(|k| k.as_str().to_string()).join(", ")
            )
            .into());
        }
        if self.header_size != 0 && !(14..=4096).contains(&self.header_size) {
            return Err(format!(
                "HeaderSize must be 0 or between 14 and 4096, got {}",
                self.header_size
            )
            .into());
        }
        if !(0..=10).contains(&self.raw_packet_limit) {
            return Err(format!(
                "RawPacketLimit must be between 0 and 10, got {}",
                self.raw_packet_limit
            )
            .into());
        }
        if !matches!(self.layer_key_mode.as_str(), "" | "L2" | "L3") {
            return Err(format!(
                "LayerKeyMode must be L2 or L3, got {:?}",
                self.layer_key_mode
            )
            .into());
        }
        if !(0..=7).contains(&self.extra_layers) {
            return Err(format!(
                "ExtraLayers is a mask of VRRP (1), DNS (2) and DHCPv4 (4), got {}",
                self.extra_layers
            )
            .into());
        }
        if !matches!(
            self.target_type.as_str(),
            "" | "local" | "netflowv5" | "erspanv1"
        ) {
            return Err(format!(
                "TargetType must be netflowv5, erspanv1 or local, got {:?}",
                self.target_type
            )
            .into());
        }
        check_target(&self.target)?;
        // Exports to a NetFlow collector or an ERSPAN receiver are not built yet: a capture
        // asking for one would otherwise run locally and export nothing.
        if !self.target.is_empty() || matches!(self.target_type.as_str(), "netflowv5" | "erspanv1")
        {
            return Err(format!(
                "Target {:?} (TargetType {:?}) is not available in this build yet: captures run \
                 on the agent and their flows go to the analyzer; leave Target and TargetType \
                 empty",
                self.target, self.target_type
            )
            .into());
        }
        if self.reassemble_tcp {
            return Err(
                "ReassembleTCP is not available in this build: flows carry no \
                        reassembled TCP payload; leave it false"
                    .into(),
            );
        }
        // What the probe supports: ebpf has neither BPF nor raw packets.
        let can = probe_capabilities(self.kind.as_ref());
        let kind = self.kind.as_ref().map_or("", CaptureKind::as_str);
        if !can.bpf && !self.bpf_filter.is_empty() {
            return Err(format!("Capture type {kind} doesn't support BPF filters").into());
        }
        if !can.raw_packets && self.raw_packet_limit != 0 {
            return Err(format!("Capture type {kind} doesn't support raw packets").into());
        }
        Ok(())
    }
    fn duplicates(&self, existing: &Self) -> bool {
        self.kind == existing.kind
            && self.gremlin_query == existing.gremlin_query
            && (!probe_capabilities(self.kind.as_ref()).multiple
                || self.bpf_filter == existing.bpf_filter)
    }
    fn on_read(&mut self, graph: &Graph) {
        let env = skydive_gremlin::Env {
            graph,
            history: &skydive_graph::NoHistory,
            flows: None,
            bpf: None,
            now: skydive_graph::now_ms(),
        };
        self.count = match skydive_gremlin::query(&self.gremlin_query, &env) {
            Ok(skydive_gremlin::Output::Nodes(ns)) => ns
                .iter()
                .filter(|n| active_on(self, n.metadata.get("Captures")))
                .count() as i64,
            _ => 0,
        };
    }
}

/// `RawPackets().BPF(...)`: filters compiled by libpcap for each packet's link type.
#[derive(Debug)]
pub struct LibpcapBpf;

impl skydive_gremlin::BpfCompiler for LibpcapBpf {
    fn compile(
        &self,
        filter: &str,
    ) -> Result<skydive_gremlin::PacketMatcher, Box<dyn std::error::Error + Send + Sync>> {
        use skydive_capture::bpf::{Bpf, LINKTYPE_ETHERNET, LINKTYPE_RAW};
        let ether = Bpf::compile(filter, LINKTYPE_ETHERNET)?;
        let raw = Bpf::compile(filter, LINKTYPE_RAW).ok();
        Ok(Box::new(move |p: &skydive_flow::RawPacket| {
            match p.link_type {
                LINKTYPE_RAW => raw.as_ref().is_some_and(|b| b.matches(&p.data)),
                _ => ether.matches(&p.data),
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn capture(q: &str) -> Capture {
        let mut c = Capture {
            gremlin_query: q.into(),
            ..Default::default()
        };
        c.normalize(&ResourceDefaults::default());
        c
    }

    #[test]
    fn validation_names_the_problem() {
        assert!(capture("G.V().Has('Name', 'eth0')").validate().is_ok());
        let e = capture("G.V(").validate().unwrap_err();
        assert!(e.starts_with("invalid GremlinQuery \"G.V(\": "), "{e}");
        let mut c = capture("G.V()");
        c.bpf_filter = "port eighty".into();
        assert!(c.validate().unwrap_err().starts_with("invalid BPF filter"));
        let mut c = capture("G.V()");
        c.kind = Some(CaptureKind::parse("afpackt"));
        assert!(
            c.validate()
                .unwrap_err()
                .starts_with("unknown capture type \"afpackt\"")
        );
        let mut c = capture("G.V()");
        c.header_size = 13;
        assert!(c.validate().is_err());
        c.header_size = 14;
        assert!(c.validate().is_ok());
        c.raw_packet_limit = 11;
        assert!(c.validate().is_err());
        let mut c = capture("G.V()");
        c.target = "10.0.0.1".into();
        assert!(c.validate().is_err());
        c.target = "10.0.0.1:2055".into();
        let e = c.validate().unwrap_err();
        assert!(
            e.starts_with("Target \"10.0.0.1:2055\" (TargetType \"\") is not available"),
            "{e}"
        );
        let mut c = capture("G.V()");
        c.target_type = "erspanv1".into();
        assert!(
            c.validate()
                .unwrap_err()
                .contains("is not available in this build")
        );
        c.target_type = "local".into();
        assert!(c.validate().is_ok(), "local is what every capture does");
        c.reassemble_tcp = true;
        assert!(
            c.validate()
                .unwrap_err()
                .starts_with("ReassembleTCP is not available")
        );
        assert_eq!(capture("G.V()").layer_key_mode, "L2");
    }

    #[test]
    fn duplicates_as_skydive_defines_them() {
        let a = capture("G.V().Has('Name', 'eth0')");
        let mut b = a.clone();
        assert!(b.duplicates(&a));
        b.bpf_filter = "icmp".into();
        assert!(!b.duplicates(&a), "afpacket runs several filters on a node");
        let mut s1 = a;
        s1.kind = Some(CaptureKind::Sflow);
        let mut s2 = s1.clone();
        s2.bpf_filter = "udp".into();
        assert!(s2.duplicates(&s1), "one sflow capture per node");
    }

    #[test]
    fn json_has_skydive_fields() {
        let v = serde_json::to_value(capture("G.V()")).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"UUID": "", "GremlinQuery": "G.V()", "Count": 0,
                "SamplingRate": 0, "PollingInterval": 0, "ExtraTCPMetric": false,
                "IPDefrag": false, "ReassembleTCP": false, "LayerKeyMode": "L2"})
        );
    }
}
