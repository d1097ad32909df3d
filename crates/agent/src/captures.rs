//! The agent's captures: the analyzer asks for a capture on a node (`OnDemandCapture/Start`),
//! the agent checks the node can run it, opens a capture source on that interface inside the
//! node's network namespace (the sources are `skydive_capture::source`), and the source's
//! flows go to every analyzer while the node carries the capture's state and counters in
//! `Captures`. `Stop` flushes the table; `Flow/TableQuery` reads the tables' last snapshots.
//!
//! This module is the scheduling glue: which source a node and a capture make, where it
//! listens, which namespace it enters. Reading packets is the capture crate's.

mod node;
mod sink;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value as Json, json};
use skydive_api::capture::{
    CaptureError, CaptureSpec, Request, StartRequest, StopRequest, WireReply, reply,
};
use skydive_api::message::Incoming;
use skydive_capture::SourceSpec;
use skydive_flow::capture::CaptureKind;
use skydive_flow::decode::LinkType;
use skydive_flow::{Flow, TableConfig};
use skydive_graph::{Filter, Graph, Node};
use skydive_hub::HubHandle;
use tokio::sync::broadcast;

use crate::link::RequestHandler;
use node::State;
use sink::{NodeSink, Outlets};

/// What the capture manager needs from the agent's settings.
#[derive(Clone, Debug)]
pub struct CaptureSettings {
    /// `flow.update`, ms.
    pub update_ms: i64,
    /// `flow.expire`, ms.
    pub expire_ms: i64,
    /// `flow.max_entries`.
    pub max_entries: usize,
    /// `flow.application_ports`.
    pub app_ports: BTreeMap<(u8, u16), String>,
    /// `flow.application_timeout`, ms.
    pub app_timeouts: BTreeMap<String, i64>,
    /// `flow.default_layer_key_mode`: for a capture that names none.
    pub default_l2: bool,
    /// `agent.capture.stats_update`.
    pub stats_every: Duration,
    /// `host:port` of the analyzers, whose traffic is never captured.
    pub analyzers: Vec<String>,
    /// `agent.flow.pcapsocket`: address and port range of pcapsocket captures.
    pub pcapsocket: (String, u16, u16),
    /// `agent.flow.sflow`: address and port range of the collectors of ovssflow captures.
    pub sflow: (String, u16, u16),
    /// `ovs.ovsdb`.
    pub ovsdb: String,
}

impl CaptureSettings {
    pub fn from_settings(s: &skydive_config::Settings) -> Self {
        CaptureSettings {
            update_ms: s.flow.update.saturating_mul(1000) as i64,
            expire_ms: s.flow.expire.saturating_mul(1000) as i64,
            max_entries: s.flow.max_entries as usize,
            app_ports: s.application_ports(),
            app_timeouts: s.application_timeouts_ms(),
            default_l2: s.flow.default_layer_key_mode != "L3",
            stats_every: Duration::from_secs(s.agent.capture.stats_update.max(1)),
            analyzers: s.analyzers.clone(),
            pcapsocket: (
                s.agent.flow.pcapsocket.bind_address.clone(),
                s.agent.flow.pcapsocket.min_port,
                s.agent.flow.pcapsocket.max_port,
            ),
            sflow: (
                s.agent.flow.sflow.bind_address.clone(),
                s.agent.flow.sflow.port_min,
                s.agent.flow.sflow.port_max,
            ),
            ovsdb: s.ovs.ovsdb.clone(),
        }
    }
}

/// A running capture on a node.
struct Running {
    sink: Arc<NodeSink>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Counters of the capture manager, for `/api/status` (`Flows`).
#[derive(Debug, Default)]
pub struct CaptureCounters {
    /// Flows handed to the links.
    pub flows_sent: AtomicU64,
    /// Flows produced while no link to an analyzer was up.
    pub flows_dropped: AtomicU64,
}

impl CaptureCounters {
    pub fn document(&self) -> serde_json::Value {
        json!({
            "Sent": self.flows_sent.load(Ordering::Relaxed),
            "Dropped": self.flows_dropped.load(Ordering::Relaxed),
        })
    }
}

/// The captures of an agent, by (capture, node).
pub struct Captures {
    settings: CaptureSettings,
    out: Outlets,
    running: Mutex<HashMap<(String, String), Running>>,
    pub counters: Arc<CaptureCounters>,
}

impl std::fmt::Debug for Captures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Captures").finish()
    }
}

/// The BPF filter a probe attaches: the user's, minus the traffic to the analyzers.
pub fn normalized_filter(user: &str, analyzers: &[String]) -> String {
    let mut excl = Vec::new();
    for a in analyzers {
        if let Some((host, port)) = a.rsplit_once(':') {
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let host = if host.is_empty() || host == "localhost" {
                "127.0.0.1"
            } else {
                host
            };
            if host.parse::<std::net::IpAddr>().is_ok() && port.parse::<u16>().is_ok() {
                excl.push(format!("(host {host} and port {port})"));
            }
        }
    }
    match (user.trim().is_empty(), excl.is_empty()) {
        (true, true) => String::new(),
        (false, true) => user.to_string(),
        (true, false) => format!("not ({})", excl.join(" or ")),
        (false, false) => format!("({user}) and not ({})", excl.join(" or ")),
    }
}

/// How the frames captured on an interface begin, from its `EncapType`: an interface without
/// a link layer (tun, WireGuard, ipip, sit, GRE and IPv6 tunnels, PPP) gives IP packets; any
/// other, Ethernet frames.
fn link_of_encap(encap: Option<&str>) -> LinkType {
    match encap {
        Some("none" | "gre" | "ipip" | "sit" | "tunnel6" | "ip6gre" | "gre6" | "ppp" | "rawip") => {
            LinkType::RawIp
        }
        _ => LinkType::Ethernet,
    }
}

/// The probe `spec` runs on `node`: the one it names if the node type allows it, or the node
/// type's default; refused when this agent cannot run it.
fn checked_kind(node: &Node, spec: &CaptureSpec) -> Result<CaptureKind, CaptureError> {
    let allowed = skydive_flow::capture::allowed_capture_types(node.type_str());
    let kind = spec.kind_for(node.type_str());
    let Some(kind) = kind.filter(|k| allowed.contains(k)) else {
        return Err(CaptureError::NotAllowed {
            kind: spec
                .kind
                .clone()
                .unwrap_or(CaptureKind::Other(String::new())),
            node_type: node.type_str().to_string(),
        });
    };
    match kind {
        CaptureKind::Afpacket
        | CaptureKind::Pcap
        | CaptureKind::PcapSocket
        | CaptureKind::Sflow
        | CaptureKind::OvsSflow => Ok(kind),
        other => Err(CaptureError::Unsupported(other)),
    }
}

/// A source to open, where, and what the node's entry shows of it.
struct Plan {
    source: SourceSpec,
    /// The namespace to open it in (`None`: the agent's own).
    netns: Option<String>,
    /// `host:port` of its socket, if it listens.
    socket: String,
    /// `(ovsdb address, bridge UUID)` of the OVS sFlow export made for it.
    ovs_export: Option<(String, String)>,
}

impl Captures {
    pub fn new(hub: HubHandle, settings: CaptureSettings) -> Arc<Captures> {
        let counters: Arc<CaptureCounters> = Arc::default();
        Arc::new(Captures {
            out: Outlets {
                hub,
                rt: tokio::runtime::Handle::current(),
                flows: broadcast::channel(1024).0,
                counters: counters.clone(),
                stats_every: settings.stats_every,
            },
            settings,
            running: Mutex::new(HashMap::new()),
            counters,
        })
    }

    /// Where flow batches are published (each link subscribes and sends them on).
    pub fn flow_sender(&self) -> broadcast::Sender<Arc<Vec<Flow>>> {
        self.out.flows.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Running>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts a capture on a node; nothing to do when it runs there already.
    fn start(&self, req: &StartRequest) -> Result<(), CaptureError> {
        let snap = self.out.hub.snapshot();
        let g = &snap.graph;
        let node = g
            .node(&req.node_id)
            .cloned()
            .ok_or_else(|| CaptureError::NodeNotFound(req.node_id.clone()))?;
        let spec = &req.resource;
        let kind = checked_kind(&node, spec)?;
        let key = (spec.uuid.clone(), node.id.to_string());
        if self.lock().contains_key(&key) {
            return Ok(());
        }
        let name = node.name().to_string();
        if name.is_empty() {
            return Err(CaptureError::NodeLacks {
                node: node.id.to_string(),
                what: "Name",
            });
        }
        let on_interface = matches!(kind, CaptureKind::Afpacket | CaptureKind::Pcap);
        if on_interface && !node::is_up(&node) {
            return Err(CaptureError::NodeDown(name));
        }
        let tid = node
            .str_at("TID")
            .ok_or_else(|| CaptureError::NodeLacks {
                node: name.clone(),
                what: "TID",
            })?
            .to_string();
        let plan = self.plan(g, &node, spec, &kind)?;
        let table = self.table_config(spec, tid);
        let sink = Arc::new(NodeSink::new(
            self.out.clone(),
            node.id.to_string(),
            spec.clone(),
            kind.clone(),
            plan.socket,
            plan.ovs_export.clone(),
        ));
        let started = skydive_capture::source::start(
            &format!("capture-{name}"),
            plan.netns.map(Into::into),
            plan.source,
            table,
            sink.clone(),
        );
        let thread = match started {
            Ok(t) => t,
            Err(e) => {
                if let Some((ovsdb, bridge)) = &plan.ovs_export {
                    let _ = self
                        .out
                        .rt
                        .block_on(skydive_probes::ovsdb::detach_sflow(ovsdb, bridge));
                }
                return Err(CaptureError::Source(e.to_string()));
            }
        };
        let entry = sink.entry(State::Active, "");
        let (hub, node_id, id) = (self.out.hub.clone(), node.id.to_string(), spec.uuid.clone());
        self.out
            .rt
            .spawn(async move { node::set_entry(&hub, node_id, id, Some(entry)).await });
        tracing::info!(capture = %spec.uuid, node = %node.id, %kind, "capture started");
        self.lock().insert(
            key,
            Running {
                sink,
                thread: Some(thread),
            },
        );
        Ok(())
    }

    /// The source a capture of `kind` opens on `node`.
    fn plan(
        &self,
        g: &Graph,
        node: &Node,
        spec: &CaptureSpec,
        kind: &CaptureKind,
    ) -> Result<Plan, CaptureError> {
        let filter = normalized_filter(&spec.bpf_filter, &self.settings.analyzers);
        let snaplen = if spec.header_size == 0 {
            256
        } else {
            spec.header_size as u32
        };
        let ifname = node.name().to_string();
        let link = link_of_encap(node.str_at("EncapType"));
        let netns = node::namespace_of(g, node);
        match kind {
            CaptureKind::Afpacket => Ok(Plan {
                source: SourceSpec::Afpacket {
                    ifname,
                    snaplen,
                    filter,
                    link,
                },
                netns,
                socket: String::new(),
                ovs_export: None,
            }),
            CaptureKind::Pcap => Ok(Plan {
                source: SourceSpec::Pcap {
                    ifname,
                    snaplen,
                    filter,
                    link,
                },
                netns,
                socket: String::new(),
                ovs_export: None,
            }),
            // A pcapsocket listens in the agent's namespace, on a port of its range.
            CaptureKind::PcapSocket => {
                let listener = self.pcap_listener()?;
                let socket = listener
                    .local_addr()
                    .map(|a| a.to_string())
                    .unwrap_or_default();
                Ok(Plan {
                    source: SourceSpec::PcapSocket(listener),
                    netns: None,
                    socket,
                    ovs_export: None,
                })
            }
            CaptureKind::Sflow => Self::plan_sflow(node, spec, filter, netns),
            CaptureKind::OvsSflow => self.plan_ovs_sflow(node, spec),
            other => Err(CaptureError::Unsupported(other.clone())),
        }
    }

    /// An sFlow collector on the node's address (in its namespace), or on every address when
    /// it has several.
    fn plan_sflow(
        node: &Node,
        spec: &CaptureSpec,
        filter: String,
        netns: Option<String>,
    ) -> Result<Plan, CaptureError> {
        let ifname = node.name().to_string();
        let ip = match node::ipv4_addresses(node).as_slice() {
            [] => {
                return Err(CaptureError::NodeLacks {
                    node: ifname,
                    what: "IPv4 address for sFlow",
                });
            }
            [one] => one.clone(),
            _ => "0.0.0.0".to_string(),
        };
        let port = if spec.port > 0 { spec.port } else { 6343 };
        let address = format!("{ip}:{port}");
        Ok(Plan {
            source: SourceSpec::Sflow {
                address: address.clone(),
                filter,
            },
            netns,
            socket: address,
            ovs_export: None,
        })
    }

    /// A collector of the agent's, and OVS told to send the bridge's sFlow to it.
    fn plan_ovs_sflow(&self, node: &Node, spec: &CaptureSpec) -> Result<Plan, CaptureError> {
        let ifname = node.name().to_string();
        let (sock, address) = self.sflow_collector()?;
        let bridge = node
            .str_at("UUID")
            .ok_or_else(|| CaptureError::NodeLacks {
                node: ifname.clone(),
                what: "UUID",
            })?
            .to_string();
        let export = skydive_probes::ovsdb::SflowExport {
            bridge: bridge.clone(),
            target: address.clone(),
            header: if spec.header_size > 0 {
                spec.header_size
            } else {
                128
            },
            sampling: if spec.sampling_rate < 1 {
                u32::MAX as i64
            } else {
                spec.sampling_rate
            },
            polling: if spec.polling_interval > 0 {
                spec.polling_interval
            } else {
                10
            },
            probe_id: spec.uuid.clone(),
        };
        self.out
            .rt
            .block_on(skydive_probes::ovsdb::attach_sflow(
                &self.settings.ovsdb,
                &export,
            ))
            .map_err(|e| {
                CaptureError::Source(format!("cannot configure sFlow on {ifname}: {e}"))
            })?;
        Ok(Plan {
            source: SourceSpec::SflowSocket(sock),
            netns: None,
            socket: address,
            ovs_export: Some((self.settings.ovsdb.clone(), bridge)),
        })
    }

    /// The flow table of a capture on a node of TID `tid`.
    fn table_config(&self, spec: &CaptureSpec, tid: String) -> TableConfig {
        TableConfig {
            node_tid: tid,
            capture_id: spec.uuid.clone(),
            l2_mode: match spec.layer_key_mode.as_str() {
                "" => self.settings.default_l2,
                mode => mode != "L3",
            },
            raw_packet_limit: spec.raw_packet_limit.clamp(0, 10) as usize,
            extra_tcp_metric: spec.extra_tcp_metric,
            ip_defrag: spec.ip_defrag,
            extra_layers: spec.extra_layers.clamp(0, 7) as u32,
            app_ports: self.settings.app_ports.clone().into_iter().collect(),
            app_timeouts: self.settings.app_timeouts.clone().into_iter().collect(),
            max_entries: self.settings.max_entries.max(1),
            update_ms: self.settings.update_ms.max(1000),
            expire_ms: self.settings.expire_ms.max(1000),
        }
    }

    /// A UDP socket on the first free port of `agent.flow.sflow`, with its `addr:port`.
    fn sflow_collector(&self) -> Result<(std::net::UdpSocket, String), CaptureError> {
        let (addr, min, max) = &self.settings.sflow;
        for port in *min..=*max {
            if let Ok(s) = std::net::UdpSocket::bind((addr.as_str(), port)) {
                return Ok((s, format!("{addr}:{port}")));
            }
        }
        Err(CaptureError::NoFreePort {
            what: "an sFlow collector",
            address: addr.clone(),
            min: *min,
            max: *max,
        })
    }

    /// A listener on the first free port of `agent.flow.pcapsocket`.
    fn pcap_listener(&self) -> Result<std::net::TcpListener, CaptureError> {
        let (addr, min, max) = &self.settings.pcapsocket;
        for port in *min..=*max {
            if let Ok(l) = std::net::TcpListener::bind((addr.as_str(), port)) {
                return Ok(l);
            }
        }
        Err(CaptureError::NoFreePort {
            what: "a pcapsocket capture",
            address: addr.clone(),
            min: *min,
            max: *max,
        })
    }

    /// Stops a capture on a node: its table is flushed, its entry leaves the node.
    fn stop(&self, req: &StopRequest) -> Result<(), CaptureError> {
        let running = self
            .lock()
            .remove(&(req.capture_id.clone(), req.node_id.clone()));
        let Some(mut r) = running else {
            return Err(CaptureError::NotRunning {
                capture: req.capture_id.clone(),
                node: req.node_id.clone(),
            });
        };
        r.sink.stop.store(true, Ordering::SeqCst);
        if let Some(t) = r.thread.take() {
            let _ = t.join();
        }
        tracing::info!(capture = %req.capture_id, node = %req.node_id, "capture stopped");
        let hub = self.out.hub.clone();
        let (node_id, id) = (req.node_id.clone(), req.capture_id.clone());
        self.out
            .rt
            .spawn(async move { node::set_entry(&hub, node_id, id, None).await });
        Ok(())
    }

    /// Stops every capture (the agent is stopping); their tables are flushed.
    pub fn stop_all(&self) {
        let keys: Vec<(String, String)> = self.lock().keys().cloned().collect();
        for (capture_id, node_id) in keys {
            let _ = self.stop(&StopRequest {
                node_id,
                capture_id,
            });
        }
    }

    /// The live flows of every capture that match `filter`.
    pub fn live_flows(&self, filter: &Filter) -> Vec<Flow> {
        self.lock()
            .values()
            .flat_map(|r| {
                r.sink
                    .snapshot
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .iter()
                    .filter(|f| filter.eval(*f))
                    .cloned()
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Does what the analyzer asks; the reply's payload when done.
    fn serve(&self, req: &Request) -> Result<Json, CaptureError> {
        match req {
            // Opening a source waits for its thread: not on the runtime's workers.
            Request::Start(r) => tokio::task::block_in_place(|| self.start(r)).map(|()| Json::Null),
            Request::Stop(r) => tokio::task::block_in_place(|| self.stop(r)).map(|()| Json::Null),
            Request::TableQuery(q) => {
                let flows: Vec<skydive_flow::WireFlow> = self
                    .live_flows(&q.filter)
                    .into_iter()
                    .map(skydive_flow::WireFlow::from)
                    .collect();
                Ok(json!(flows))
            }
        }
    }
}

impl Drop for Captures {
    fn drop(&mut self) {
        for r in self.lock().values() {
            r.sink.stop.store(true, Ordering::SeqCst);
        }
    }
}

/// Serves capture and flow requests, and hands the others to `rest`.
pub struct CaptureRequests {
    pub captures: Arc<Captures>,
    pub rest: Arc<dyn RequestHandler>,
}

impl RequestHandler for CaptureRequests {
    fn handle(&self, msg: &Incoming) -> WireReply {
        match Request::decode(msg) {
            None => self.rest.handle(msg),
            Some(Ok(req)) => reply(&req, self.captures.serve(&req)),
            Some(Err(e)) => (
                format!("{}Reply", msg.kind),
                e.status(),
                json!(e.to_string()),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_analyzers_traffic_is_kept_out() {
        let a = vec!["127.0.0.1:8082".to_string(), "[::1]:8082".to_string()];
        assert_eq!(
            normalized_filter("icmp", &a),
            "(icmp) and not ((host 127.0.0.1 and port 8082) or (host ::1 and port 8082))"
        );
        assert_eq!(
            normalized_filter("", &a[..1]),
            "not ((host 127.0.0.1 and port 8082))"
        );
        assert_eq!(normalized_filter("", &[]), "");
        for f in [normalized_filter("icmp", &a), normalized_filter("", &a)] {
            skydive_capture::bpf::check(&f).unwrap();
        }
    }

    #[tokio::test]
    async fn the_flow_settings_reach_the_captures_flow_tables() {
        let mut s = skydive_config::Settings::default();
        s.flow.application_timeout = [("DNS".to_string(), 3), ("arp".to_string(), 4)].into();
        s.flow.default_layer_key_mode = "L3".into();
        let hub = skydive_hub::Hub::new(Graph::new()).spawn();
        let c = Captures::new(hub, CaptureSettings::from_settings(&s));
        let spec = |mode: &str| CaptureSpec {
            layer_key_mode: mode.into(),
            ..Default::default()
        };
        let t = c.table_config(&spec(""), "tid".into());
        assert_eq!(t.app_timeouts.get("dns"), Some(&3_000));
        assert_eq!(t.app_timeouts.get("arp"), Some(&4_000));
        assert!(
            !t.l2_mode,
            "a capture naming no mode takes flow.default_layer_key_mode"
        );
        assert!(
            c.table_config(&spec("L2"), "tid".into()).l2_mode,
            "one naming L2 keeps it"
        );
    }

    #[test]
    fn a_node_runs_the_kind_asked_for_if_its_type_allows_it() {
        let node = |ty: &str| {
            Node::new(
                "n",
                skydive_graph::metadata! {"Name" => "eth0", "Type" => ty},
                "h",
                "agent.h",
                1,
            )
        };
        let spec = |kind: Option<CaptureKind>| CaptureSpec {
            kind,
            ..Default::default()
        };
        assert_eq!(
            checked_kind(&node("veth"), &spec(None)),
            Ok(CaptureKind::Afpacket)
        );
        assert_eq!(
            checked_kind(&node("ovsbridge"), &spec(Some(CaptureKind::PcapSocket))),
            Ok(CaptureKind::PcapSocket)
        );
        assert_eq!(
            checked_kind(&node("veth"), &spec(Some(CaptureKind::OvsSflow))),
            Err(CaptureError::NotAllowed {
                kind: CaptureKind::OvsSflow,
                node_type: "veth".into()
            })
        );
        assert_eq!(
            checked_kind(&node("veth"), &spec(Some(CaptureKind::Ebpf))),
            Err(CaptureError::Unsupported(CaptureKind::Ebpf))
        );
        let e = checked_kind(&node("host"), &spec(None)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Capture type  not allowed on this node type: host"
        );
    }
}
