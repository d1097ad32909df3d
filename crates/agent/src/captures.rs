//! The agent's captures (compat spec §6.4, §6.5): the analyzer asks for a capture on a node
//! (`OnDemandCapture/Start`), the agent opens a probe on that interface inside the node's
//! network namespace, feeds a flow table, and sends the flows to every analyzer; the node
//! carries the capture's state and counters in `Captures`. `Stop` flushes the table.
//!
//! One thread per probe: it enters the namespace, opens the socket (an AF_PACKET ring, or
//! libpcap for `pcap`), reads batches of frames into the table, runs the table's update and
//! expiry ticks on the wall clock, and every `agent.capture.stats_update` seconds writes the
//! counters into the node and a snapshot of the table for live flow queries.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{Value as Json, json};
use skydive_api::message::Incoming;
use skydive_capture::afpacket::{Ring, RingConfig, ifindex};
use skydive_capture::bpf::Bpf;
use skydive_flow::decode::LinkType;
use skydive_flow::{Flow, FlowTable, Packet, TableConfig};
use skydive_graph::{Filter, Graph, Map, Node, Value, now_ms};
use skydive_hub::HubHandle;
use tokio::sync::broadcast;

use crate::link::RequestHandler;

/// The namespace of capture requests.
pub const NAMESPACE: &str = "OnDemandCapture";
use crate::link::FLOW_NAMESPACE;

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
    pub app_ports: HashMap<(u8, u16), String>,
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
        let mut app_ports = HashMap::new();
        for (proto, n) in [("tcp", 6u8), ("udp", 17u8)] {
            if let Some(m) = s
                .flow
                .application_ports
                .get(proto)
                .and_then(Json::as_object)
            {
                for (port, app) in m {
                    if let (Ok(p), Some(a)) = (port.parse::<u16>(), app.as_str()) {
                        app_ports.insert((n, p), a.to_string());
                    }
                }
            }
        }
        CaptureSettings {
            update_ms: s.flow.update.saturating_mul(1000) as i64,
            expire_ms: s.flow.expire.saturating_mul(1000) as i64,
            max_entries: s.flow.max_entries as usize,
            app_ports,
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

/// The capture resource fields a probe uses.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct CaptureSpec {
    #[serde(rename = "UUID")]
    pub uuid: String,
    #[serde(rename = "Name")]
    pub name: String,
    #[serde(rename = "Description")]
    pub description: String,
    #[serde(rename = "Type")]
    pub kind: String,
    #[serde(rename = "BPFFilter")]
    pub bpf_filter: String,
    #[serde(rename = "HeaderSize")]
    pub header_size: i64,
    #[serde(rename = "RawPacketLimit")]
    pub raw_packet_limit: i64,
    #[serde(rename = "ExtraTCPMetric")]
    pub extra_tcp_metric: bool,
    #[serde(rename = "IPDefrag")]
    pub ip_defrag: bool,
    #[serde(rename = "LayerKeyMode")]
    pub layer_key_mode: String,
    #[serde(rename = "ExtraLayers")]
    pub extra_layers: i64,
    /// The UDP port of an `sflow` capture (6343 when 0).
    #[serde(rename = "Port")]
    pub port: i64,
    /// sFlow sampling 1:N (`ovssflow`).
    #[serde(rename = "SamplingRate")]
    pub sampling_rate: i64,
    /// sFlow counter polling, seconds (`ovssflow`).
    #[serde(rename = "PollingInterval")]
    pub polling_interval: i64,
}

#[derive(Deserialize)]
struct StartRequest {
    #[serde(rename = "NodeID")]
    node_id: String,
    #[serde(rename = "Resource")]
    resource: CaptureSpec,
}

/// A running probe.
struct Probe {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// The table's flows at the last statistics tick (for live queries).
    snapshot: Arc<Mutex<Vec<Flow>>>,
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

/// The captures of an agent.
pub struct Captures {
    hub: HubHandle,
    settings: CaptureSettings,
    rt: tokio::runtime::Handle,
    flows: broadcast::Sender<Arc<Vec<Flow>>>,
    probes: Mutex<HashMap<(String, String), Probe>>,
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

/// The network namespace file of a node: that of the `netns` node owning it, or none for the
/// host's own namespace.
fn namespace_of(g: &Graph, node: &Node) -> Option<String> {
    g.in_edges(&node.id)
        .filter(|e| e.relation_type() == "ownership")
        .filter_map(|e| g.node(&e.parent))
        .find(|p| p.type_str() == "netns")
        .and_then(|p| p.str_at("Path").map(str::to_string))
}

fn is_up(node: &Node) -> bool {
    match node.metadata.get("LinkFlags") {
        Some(Value::Array(flags)) => flags.iter().any(|f| f.as_str() == Some("UP")),
        _ => node.str_at("State") == Some("UP"),
    }
}

/// A `Captures` entry.
/// A probe's counters, as its `Captures` entry shows them.
#[derive(Clone, Copy, Debug, Default)]
struct ProbeCounts {
    received: u64,
    dropped: u64,
    /// Flows in the table.
    flows: u64,
    /// Flows evicted because the table was full.
    evicted: u64,
}

fn capture_entry(
    spec: &CaptureSpec,
    socket: &str,
    kind: &str,
    state: &str,
    error: &str,
    counts: ProbeCounts,
) -> Value {
    let mut m = Map::new();
    m.insert("ID", spec.uuid.as_str());
    m.insert("State", state);
    m.insert("Type", kind);
    if !spec.name.is_empty() {
        m.insert("Name", spec.name.as_str());
    }
    if !spec.description.is_empty() {
        m.insert("Description", spec.description.as_str());
    }
    if !spec.bpf_filter.is_empty() {
        m.insert("BPFFilter", spec.bpf_filter.as_str());
    }
    if !error.is_empty() {
        m.insert("Error", error);
    }
    if !socket.is_empty() {
        let key = if kind == "sflow" {
            "SFlowSocket"
        } else {
            "PCAPSocket"
        };
        m.insert(key, socket);
    }
    m.insert("PacketsReceived", Value::Int(counts.received as i64));
    m.insert("PacketsDropped", Value::Int(counts.dropped as i64));
    // The flow table: flows in it, flows evicted because it was full (the `stats` messages of
    // `/ws/subscriber/flow` carry them as FlowCount and FlowDropped).
    m.insert("FlowCount", Value::Int(counts.flows as i64));
    m.insert("FlowDropped", Value::Int(counts.evicted as i64));
    Value::Map(m)
}

/// Replaces (or with `None` removes) the entry of capture `id` in the node's `Captures`.
async fn set_entry(hub: &HubHandle, node: String, id: String, entry: Option<Value>) {
    update_node(hub, node, move |m| {
        let mut list = match m.get("Captures") {
            Some(Value::Array(l)) => l.clone(),
            _ => Vec::new(),
        };
        list.retain(|c| {
            c.as_map().and_then(|c| c.get("ID")).and_then(Value::as_str) != Some(id.as_str())
        });
        if let Some(e) = entry {
            list.push(e);
        }
        if list.is_empty() {
            m.remove("Captures");
        } else {
            m.insert("Captures", Value::Array(list));
        }
    })
    .await;
}

/// Changes a node's metadata, if the node is still there.
async fn update_node(hub: &HubHandle, node: String, f: impl FnOnce(&mut Map) + Send + 'static) {
    let _ = hub
        .apply(None, move |g| {
            if g.node(&node).is_none() {
                return Ok(Vec::new());
            }
            Ok(g.update_node_metadata(&node, now_ms(), f)?
                .into_iter()
                .collect())
        })
        .await;
}

/// Connects to OVSDB (`ovs.ovsdb`).
async fn ovsdb_client(addr: &str) -> Result<skydive_probes::ovsdb::OvsdbClient, String> {
    skydive_probes::ovsdb::OvsdbClient::connect(addr)
        .await
        .map(|(c, _)| c)
        .map_err(|e| e.to_string())
}

/// Points the bridge's sFlow at `target` (compat spec §6.5 ovssflow): a new `sFlow` row
/// (agent `lo`, header, sampling, polling, the capture's ID in `external_ids`) referenced by
/// the bridge.
async fn ovs_sflow_attach(
    ovsdb: &str,
    bridge_uuid: &str,
    spec: &CaptureSpec,
    target: &str,
) -> Result<(), String> {
    let client = ovsdb_client(ovsdb).await?;
    let sampling = if spec.sampling_rate < 1 {
        u32::MAX as i64
    } else {
        spec.sampling_rate
    };
    let header = if spec.header_size > 0 {
        spec.header_size
    } else {
        128
    };
    let polling = if spec.polling_interval > 0 {
        spec.polling_interval
    } else {
        10
    };
    client
        .transact(
            "Open_vSwitch",
            vec![
                json!({"op": "insert", "table": "sFlow", "uuid-name": "sf", "row": {
                    "agent": "lo", "header": header, "sampling": sampling, "polling": polling,
                    "targets": ["set", [target]],
                    "external_ids": ["map", [["skydive-probe-id", spec.uuid.replace('-', "_")]]]}}),
                json!({"op": "update", "table": "Bridge",
                    "where": [["_uuid", "==", ["uuid", bridge_uuid]]],
                    "row": {"sflow": ["named-uuid", "sf"]}}),
            ],
        )
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Removes the bridge's sFlow configuration (OVSDB deletes the unreferenced row).
async fn ovs_sflow_detach(ovsdb: &str, bridge_uuid: &str) -> Result<(), String> {
    let client = ovsdb_client(ovsdb).await?;
    client
        .transact(
            "Open_vSwitch",
            vec![json!({"op": "update", "table": "Bridge",
                "where": [["_uuid", "==", ["uuid", bridge_uuid]]],
                "row": {"sflow": ["set", []]}})],
        )
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Where frames come from.
enum Source {
    Ring(Ring),
    /// Non-blocking: libpcap in immediate mode may otherwise wait forever for a packet.
    Pcap(pcap::Capture<pcap::Active>),
    /// sFlow datagrams: their sampled Ethernet headers are the frames.
    Sflow(SflowSource),
}

/// The receive buffer of sFlow collectors: 16 MiB, a few seconds of a busy switch.
const SFLOW_RCVBUF: usize = 16 << 20;

/// How long a probe's read waits for traffic before it looks at its clock and stop flag.
const READ_WAIT: Duration = Duration::from_millis(100);
/// sFlow datagrams read per system call, and calls per read before the flow table's turn.
const SFLOW_BATCH: usize = 32;
const SFLOW_BATCHES: usize = 8;
/// The longest sFlow datagram taken (agents send datagrams of a network MTU; longer ones are
/// counted as dropped).
const SFLOW_DATAGRAM_MAX: usize = 16 << 10;
/// How long a collector woken by a datagram lets more gather before reading on: a busy
/// switch's stream is then read in full batches, at most this late.
const SFLOW_GATHER: Duration = Duration::from_millis(1);

/// An `sflow` capture's socket.
struct SflowSource {
    sock: std::net::UdpSocket,
    bpf: Option<Bpf>,
    reader: skydive_capture::DatagramReader,
    /// Samples taken.
    received: u64,
    /// Samples refused (not Ethernet) and datagrams refused (malformed).
    dropped: u64,
    /// The interface counters of the latest counter sample, with when it came (ms).
    counters: Option<(skydive_flow::sflow::IfCounters, i64)>,
}

/// The `SFlow` metadata of a node (Skydive's SFMetric fields): the counters, and what they
/// grew by since `prev`.
fn sflow_metadata(
    cur: &skydive_flow::sflow::IfCounters,
    prev: Option<&skydive_flow::sflow::IfCounters>,
    start: i64,
    last: i64,
) -> Value {
    let fields = |c: &skydive_flow::sflow::IfCounters| -> [(&'static str, i64); 13] {
        [
            ("IfInOctets", c.if_in_octets as i64),
            ("IfInUcastPkts", c.if_in_ucast_pkts.into()),
            ("IfInMulticastPkts", c.if_in_multicast_pkts.into()),
            ("IfInBroadcastPkts", c.if_in_broadcast_pkts.into()),
            ("IfInDiscards", c.if_in_discards.into()),
            ("IfInErrors", c.if_in_errors.into()),
            ("IfInUnknownProtos", c.if_in_unknown_protos.into()),
            ("IfOutOctets", c.if_out_octets as i64),
            ("IfOutUcastPkts", c.if_out_ucast_pkts.into()),
            ("IfOutMulticastPkts", c.if_out_multicast_pkts.into()),
            ("IfOutBroadcastPkts", c.if_out_broadcast_pkts.into()),
            ("IfOutDiscards", c.if_out_discards.into()),
            ("IfOutErrors", c.if_out_errors.into()),
        ]
    };
    let mut metric = Map::new();
    let mut delta = Map::new();
    let before = prev.map(fields);
    for (i, (k, v)) in fields(cur).into_iter().enumerate() {
        metric.insert(k, Value::Int(v));
        let was = before.as_ref().map_or(0, |b| b[i].1);
        delta.insert(k, Value::Int(v.saturating_sub(was).max(0)));
    }
    metric.insert("Start", Value::Int(start));
    metric.insert("Last", Value::Int(last));
    delta.insert("Start", Value::Int(start));
    delta.insert("Last", Value::Int(last));
    let mut m = Map::new();
    m.insert("Metric", Value::Map(metric));
    m.insert("LastUpdateMetric", Value::Map(delta));
    Value::Map(m)
}

impl SflowSource {
    /// A collector on `sock`: a large receive buffer, reads that wait at most [`READ_WAIT`].
    fn new(sock: std::net::UdpSocket, bpf: Option<Bpf>) -> SflowSource {
        skydive_capture::large_receive_buffer(&sock, SFLOW_RCVBUF);
        let _ = sock.set_read_timeout(Some(READ_WAIT));
        SflowSource {
            sock,
            bpf,
            reader: skydive_capture::DatagramReader::new(SFLOW_BATCH, SFLOW_DATAGRAM_MAX)
                .with_gather(SFLOW_GATHER),
            received: 0,
            dropped: 0,
            counters: None,
        }
    }

    /// Waits for a datagram (up to [`READ_WAIT`]), then takes those already queued, a batch
    /// per system call.
    fn read(&mut self, push: &mut dyn FnMut(&[u8], u32, i64)) -> Result<(), String> {
        let SflowSource {
            sock,
            bpf,
            reader,
            received,
            dropped,
            counters,
        } = self;
        let mut take = |d: skydive_capture::Datagram<'_>| {
            let skydive_capture::Datagram::Whole(datagram) = d else {
                *dropped += 1;
                tracing::debug!("sFlow datagram longer than {SFLOW_DATAGRAM_MAX} bytes dropped");
                return;
            };
            let now = now_ms();
            let now_ns = now * 1_000_000;
            match skydive_flow::sflow::decode(datagram) {
                Ok(d) => {
                    if let Some(c) = d.counters.last() {
                        *counters = Some((*c, now));
                    }
                    for p in &d.packets {
                        if p.protocol != 1 {
                            *dropped += 1;
                            continue;
                        }
                        if bpf.as_ref().is_some_and(|b| !b.matches(p.header)) {
                            continue;
                        }
                        *received += 1;
                        push(p.header, p.frame_length, now_ns);
                    }
                }
                Err(e) => {
                    *dropped += 1;
                    tracing::debug!("sFlow datagram dropped: {e}");
                }
            }
        };
        reader
            .read(sock, SFLOW_BATCHES, &mut take)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

/// How the frames captured on an interface begin, from its `EncapType` (compat spec §6.5): an
/// interface without a link layer (tun, WireGuard, ipip, sit, GRE and IPv6 tunnels, PPP) gives
/// IP packets; any other, Ethernet frames.
fn link_of_encap(encap: Option<&str>) -> LinkType {
    match encap {
        Some("none" | "gre" | "ipip" | "sit" | "tunnel6" | "ip6gre" | "gre6" | "ppp" | "rawip") => {
            LinkType::RawIp
        }
        _ => LinkType::Ethernet,
    }
}

impl Source {
    /// Opens the capture; returns it with how its frames begin (`link`, the interface's,
    /// unless libpcap tells otherwise; sFlow samples are Ethernet frames).
    fn open(
        kind: &str,
        ifname: &str,
        snaplen: u32,
        filter: &str,
        sflow_addr: &str,
        link: LinkType,
    ) -> Result<(Source, LinkType), String> {
        let link = if kind == "sflow" {
            LinkType::Ethernet
        } else {
            link
        };
        let bpf = if filter.is_empty() {
            None
        } else {
            Some(Bpf::compile(filter, link.pcap()).map_err(|e| e.to_string())?)
        };
        match kind {
            "sflow" => {
                let sock = std::net::UdpSocket::bind(sflow_addr)
                    .map_err(|e| format!("cannot listen for sFlow on {sflow_addr}: {e}"))?;
                Ok((Source::Sflow(SflowSource::new(sock, bpf)), link))
            }
            "pcap" => {
                let mut c = pcap::Capture::from_device(ifname)
                    .map_err(|e| e.to_string())?
                    .snaplen(snaplen as i32)
                    .immediate_mode(true)
                    .open()
                    .map_err(|e| format!("cannot capture on {ifname}: {e}"))?;
                if !filter.is_empty() {
                    c.filter(filter, true).map_err(|e| e.to_string())?;
                }
                let link = LinkType::from_pcap(c.get_datalink().0 as u32).unwrap_or(link);
                let c = c.setnonblock().map_err(|e| e.to_string())?;
                Ok((Source::Pcap(c), link))
            }
            _ => {
                let cfg = RingConfig {
                    ifindex: ifindex(ifname).map_err(|e| format!("no interface {ifname}: {e}"))?,
                    snaplen,
                    ..Default::default()
                };
                Ring::open(&cfg, bpf.as_ref().map(|b| b.instructions()))
                    .map(|r| (Source::Ring(r), link))
                    .map_err(|e| format!("cannot capture on {ifname}: {e}"))
            }
        }
    }

    /// Reads what is there (waiting up to `wait`) into `buf`/`frames`.
    fn read(
        &mut self,
        wait: Duration,
        buf: &mut Vec<u8>,
        frames: &mut Vec<(usize, usize, u32, i64)>,
    ) -> Result<(), String> {
        let mut push = |data: &[u8], wire: u32, ts: i64| {
            let start = buf.len();
            buf.extend_from_slice(data);
            frames.push((start, data.len(), wire, ts));
        };
        match self {
            Source::Sflow(s) => s.read(&mut push),
            Source::Ring(r) => r
                .next_block(wait, |f| push(f.data, f.wire_len, f.ts_ns))
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Source::Pcap(c) => {
                for _ in 0..256 {
                    match c.next_packet() {
                        Ok(p) => {
                            let ts =
                                p.header.ts.tv_sec * 1_000_000_000 + p.header.ts.tv_usec * 1000;
                            push(p.data, p.header.len, ts);
                        }
                        Err(pcap::Error::TimeoutExpired) => break,
                        Err(e) => return Err(e.to_string()),
                    }
                }
                Ok(())
            }
        }
    }

    fn stats(&mut self) -> (u64, u64) {
        match self {
            Source::Sflow(s) => (s.received, s.dropped),
            Source::Ring(r) => r.stats().map(|s| (s.received, s.dropped)).unwrap_or((0, 0)),
            Source::Pcap(c) => c
                .stats()
                .map(|s| (u64::from(s.received), u64::from(s.dropped)))
                .unwrap_or((0, 0)),
        }
    }
}

impl Captures {
    pub fn new(hub: HubHandle, settings: CaptureSettings) -> Arc<Captures> {
        Arc::new(Captures {
            hub,
            settings,
            rt: tokio::runtime::Handle::current(),
            flows: broadcast::channel(1024).0,
            probes: Mutex::new(HashMap::new()),
            counters: Arc::default(),
        })
    }

    /// Where flow batches are published (each link subscribes and sends them on).
    pub fn flow_sender(&self) -> broadcast::Sender<Arc<Vec<Flow>>> {
        self.flows.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Probe>> {
        self.probes.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn start(&self, req: StartRequest) -> Result<(), (i64, String)> {
        let snap = self.hub.snapshot();
        let g = &snap.graph;
        let node = g
            .node(&req.node_id)
            .cloned()
            .ok_or((404, format!("node {} not found", req.node_id)))?;
        let spec = req.resource;
        let allowed = skydive_flow::capture::allowed_capture_types(node.type_str());
        let kind = if spec.kind.is_empty() {
            allowed.first().copied().unwrap_or("")
        } else {
            spec.kind.as_str()
        };
        if !allowed.contains(&kind) {
            return Err((
                500,
                format!(
                    "Capture type {kind} not allowed on this node type: {}",
                    node.type_str()
                ),
            ));
        }
        if !matches!(
            kind,
            "afpacket" | "pcap" | "pcapsocket" | "sflow" | "ovssflow"
        ) {
            return Err((
                500,
                format!("capture type {kind} is not available on this agent yet"),
            ));
        }
        let key = (spec.uuid.clone(), node.id.to_string());
        if self.lock().contains_key(&key) {
            return Ok(());
        }
        let name = node.name().to_string();
        if name.is_empty() {
            return Err((500, "the node has no Name".into()));
        }
        if !matches!(kind, "pcapsocket" | "sflow" | "ovssflow") && !is_up(&node) {
            return Err((500, format!("Can't start capture on node down {name}")));
        }
        // A pcapsocket capture listens in the agent's namespace, on a port of its range.
        let listener = if kind == "pcapsocket" {
            Some(self.pcap_listener()?)
        } else {
            None
        };
        let mut socket_addr = listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
            .map(|a| a.to_string())
            .unwrap_or_default();
        if kind == "sflow" {
            // On the node's address (in its namespace), or every address when it has several.
            let ips: Vec<String> = match node.metadata.get("IPV4") {
                Some(Value::Array(a)) => a
                    .iter()
                    .filter_map(|v| v.as_str())
                    .filter_map(|c| c.split('/').next().map(str::to_string))
                    .collect(),
                _ => Vec::new(),
            };
            let ip = match ips.as_slice() {
                [] => {
                    return Err((
                        500,
                        format!("the node {name} has no IPv4 address for sFlow"),
                    ));
                }
                [one] => one.clone(),
                _ => "0.0.0.0".to_string(),
            };
            let port = if spec.port > 0 { spec.port } else { 6343 };
            socket_addr = format!("{ip}:{port}");
        }
        // An ovssflow capture: a collector of ours, and OVS told to send sFlow to it.
        let mut ovs_sflow = None;
        if kind == "ovssflow" {
            let (sock, addr) = self.sflow_collector()?;
            let bridge = node
                .str_at("UUID")
                .ok_or((500, format!("the bridge {name} has no UUID")))?
                .to_string();
            self.rt
                .block_on(ovs_sflow_attach(
                    &self.settings.ovsdb,
                    &bridge,
                    &spec,
                    &addr,
                ))
                .map_err(|e| (500, format!("cannot configure sFlow on {name}: {e}")))?;
            socket_addr = addr;
            ovs_sflow = Some((sock, bridge));
        }
        let tid = node
            .str_at("TID")
            .ok_or((500, format!("the node {name} has no TID")))?
            .to_string();
        let netns = namespace_of(g, &node);
        let link = link_of_encap(node.str_at("EncapType"));
        let filter = normalized_filter(&spec.bpf_filter, &self.settings.analyzers);
        let snaplen = if spec.header_size == 0 {
            256
        } else {
            spec.header_size as u32
        };
        let cfg = TableConfig {
            node_tid: tid,
            capture_id: spec.uuid.clone(),
            l2_mode: spec.layer_key_mode != "L3",
            raw_packet_limit: spec.raw_packet_limit.clamp(0, 10) as usize,
            extra_tcp_metric: spec.extra_tcp_metric,
            ip_defrag: spec.ip_defrag,
            extra_layers: spec.extra_layers.clamp(0, 7) as u32,
            app_ports: self.settings.app_ports.clone(),
            max_entries: self.settings.max_entries.max(1),
            update_ms: self.settings.update_ms.max(1000),
            expire_ms: self.settings.expire_ms.max(1000),
            ..TableConfig::default()
        };

        let stop = Arc::new(AtomicBool::new(false));
        let snapshot = Arc::new(Mutex::new(Vec::new()));
        let (opened_tx, opened_rx) = std::sync::mpsc::channel::<Result<(), String>>();
        let ctx = ProbeContext {
            hub: self.hub.clone(),
            rt: self.rt.clone(),
            flows: self.flows.clone(),
            counters: self.counters.clone(),
            stats_every: self.settings.stats_every,
            stop: stop.clone(),
            snapshot: snapshot.clone(),
            node_id: node.id.to_string(),
            spec: spec.clone(),
            kind: kind.to_string(),
            socket: socket_addr.clone(),
            table: Default::default(),
        };
        let kind_owned = kind.to_string();
        let sflow_addr = socket_addr.clone();
        let ovsdb_addr = self.settings.ovsdb.clone();
        let thread = std::thread::Builder::new()
            .name(format!("capture-{name}"))
            .spawn(move || {
                if let Some(listener) = listener {
                    let _ = opened_tx.send(Ok(()));
                    ctx.run_socket(listener, cfg);
                    return;
                }
                if let Some((sock, bridge)) = ovs_sflow {
                    let _ = opened_tx.send(Ok(()));
                    let source = Source::Sflow(SflowSource::new(sock, None));
                    let (rt, ovsdb) = (ctx.rt.clone(), ovsdb_addr.clone());
                    ctx.run(source, LinkType::Ethernet, cfg);
                    // The capture ends: OVS stops sending (the sFlow row goes with the reference).
                    if let Err(e) = rt.block_on(ovs_sflow_detach(&ovsdb, &bridge)) {
                        tracing::warn!(bridge = %bridge, "cannot remove the sFlow configuration: {e}");
                    }
                    return;
                }
                if let Some(path) = &netns {
                    let entered = std::fs::File::open(path)
                        .map_err(|e| e.to_string())
                        .and_then(|f| {
                            nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET)
                                .map_err(|e| e.to_string())
                        });
                    if let Err(e) = entered {
                        let _ =
                            opened_tx.send(Err(format!("cannot enter the namespace {path}: {e}")));
                        return;
                    }
                }
                match Source::open(&kind_owned, &name, snaplen, &filter, &sflow_addr, link) {
                    Ok((source, link)) => {
                        let _ = opened_tx.send(Ok(()));
                        ctx.run(source, link, cfg);
                    }
                    Err(e) => {
                        let _ = opened_tx.send(Err(e));
                    }
                }
            })
            .map_err(|e| (500, e.to_string()))?;
        match opened_rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                let _ = thread.join();
                return Err((500, e));
            }
            Err(_) => return Err((500, "the probe did not start within 10 s".into())),
        }
        let hub = self.hub.clone();
        let entry = capture_entry(
            &spec,
            &socket_addr,
            kind,
            "active",
            "",
            ProbeCounts::default(),
        );
        let (node_id, id) = (node.id.to_string(), spec.uuid.clone());
        self.rt
            .spawn(async move { set_entry(&hub, node_id, id, Some(entry)).await });
        tracing::info!(capture = %spec.uuid, node = %node.id, kind, "capture started");
        self.lock().insert(
            key,
            Probe {
                stop,
                thread: Some(thread),
                snapshot,
            },
        );
        Ok(())
    }

    /// A UDP socket on the first free port of `agent.flow.sflow`, with its `addr:port`.
    fn sflow_collector(&self) -> Result<(std::net::UdpSocket, String), (i64, String)> {
        let (addr, min, max) = &self.settings.sflow;
        for port in *min..=*max {
            if let Ok(s) = std::net::UdpSocket::bind((addr.as_str(), port)) {
                return Ok((s, format!("{addr}:{port}")));
            }
        }
        Err((
            500,
            format!("no free port for an sFlow collector on {addr}, {min}-{max}"),
        ))
    }

    /// A listener on the first free port of `agent.flow.pcapsocket`.
    fn pcap_listener(&self) -> Result<std::net::TcpListener, (i64, String)> {
        let (addr, min, max) = &self.settings.pcapsocket;
        for port in *min..=*max {
            if let Ok(l) = std::net::TcpListener::bind((addr.as_str(), port)) {
                return Ok(l);
            }
        }
        Err((
            500,
            format!("no free port for a pcapsocket capture on {addr}, {min}-{max}"),
        ))
    }

    fn stop(&self, node_id: &str, capture_id: &str) -> bool {
        let probe = self
            .lock()
            .remove(&(capture_id.to_string(), node_id.to_string()));
        let Some(mut p) = probe else { return false };
        p.stop.store(true, Ordering::SeqCst);
        if let Some(t) = p.thread.take() {
            let _ = t.join();
        }
        tracing::info!(capture = %capture_id, node = %node_id, "capture stopped");
        let hub = self.hub.clone();
        let (node_id, id) = (node_id.to_string(), capture_id.to_string());
        self.rt
            .spawn(async move { set_entry(&hub, node_id, id, None).await });
        true
    }

    /// Stops every probe (the agent is stopping); their tables are flushed.
    pub fn stop_all(&self) {
        let keys: Vec<(String, String)> = self.lock().keys().cloned().collect();
        for (capture, node) in keys {
            self.stop(&node, &capture);
        }
    }

    /// The live flows of every probe that match `filter`.
    pub fn live_flows(&self, filter: &Filter) -> Vec<Flow> {
        self.lock()
            .values()
            .flat_map(|p| {
                p.snapshot
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .iter()
                    .filter(|f| filter.eval(*f))
                    .cloned()
                    .collect::<Vec<_>>()
            })
            .collect()
    }
}

impl Drop for Captures {
    fn drop(&mut self) {
        for p in self.lock().values() {
            p.stop.store(true, Ordering::SeqCst);
        }
    }
}

struct ProbeContext {
    hub: HubHandle,
    rt: tokio::runtime::Handle,
    flows: broadcast::Sender<Arc<Vec<Flow>>>,
    counters: Arc<CaptureCounters>,
    stats_every: Duration,
    stop: Arc<AtomicBool>,
    snapshot: Arc<Mutex<Vec<Flow>>>,
    node_id: String,
    spec: CaptureSpec,
    kind: String,
    /// `host:port` of a pcapsocket capture.
    socket: String,
    /// The flow table's size and evictions at the last statistics tick.
    table: std::cell::Cell<(u64, u64)>,
}

impl ProbeContext {
    /// Writes the capture's entry of the node's `Captures`.
    fn write_entry(&self, state: &str, error: &str, received: u64, dropped: u64) {
        let entry = capture_entry(
            &self.spec,
            &self.socket,
            &self.kind,
            state,
            error,
            ProbeCounts {
                received,
                dropped,
                flows: self.table.get().0,
                evicted: self.table.get().1,
            },
        );
        self.rt.block_on(set_entry(
            &self.hub,
            self.node_id.clone(),
            self.spec.uuid.clone(),
            Some(entry),
        ));
    }

    /// A pcapsocket capture: every connection writes a pcap stream (a global header and
    /// packet records) whose packets go through a flow table, with the stream's times.
    fn run_socket(self, listener: std::net::TcpListener, cfg: TableConfig) {
        use std::io::Read;
        let _ = listener.set_nonblocking(true);
        let mut received = 0u64;
        let mut last_stats = Instant::now();
        let mut chunk = vec![0u8; 64 * 1024];
        while !self.stop.load(Ordering::SeqCst) {
            let mut conn = match listener.accept() {
                Ok((c, _)) => c,
                Err(_) => {
                    std::thread::sleep(Duration::from_millis(50));
                    if last_stats.elapsed() >= self.stats_every {
                        last_stats = Instant::now();
                        self.write_entry("active", "", received, 0);
                    }
                    continue;
                }
            };
            let _ = conn.set_nonblocking(false);
            let _ = conn.set_read_timeout(Some(Duration::from_millis(200)));
            let mut feeder = skydive_capture::pcapfile::PcapFeeder::new(cfg.clone());
            let mut counted = 0;
            loop {
                if self.stop.load(Ordering::SeqCst) {
                    break;
                }
                match conn.read(&mut chunk) {
                    Ok(0) => break,
                    Ok(n) => match feeder.feed(&chunk[..n]) {
                        Ok(flows) => self.send(flows),
                        Err(e) => {
                            tracing::warn!(capture = %self.spec.uuid, "pcapsocket stream refused: {e}");
                            break;
                        }
                    },
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) => {}
                    Err(_) => break,
                }
                received += feeder.packets() - counted;
                counted = feeder.packets();
                if last_stats.elapsed() >= self.stats_every {
                    last_stats = Instant::now();
                    self.table.set(feeder.table_stats());
                    self.write_entry("active", "", received, 0);
                }
            }
            received += feeder.packets() - counted;
            self.send(feeder.finish());
            self.write_entry("active", "", received, 0);
        }
    }

    fn send(&self, flows: Vec<Flow>) {
        if flows.is_empty() {
            return;
        }
        let n = flows.len() as u64;
        match self.flows.send(Arc::new(flows)) {
            Ok(_) => self.counters.flows_sent.fetch_add(n, Ordering::Relaxed),
            // No analyzer link listening.
            Err(_) => self.counters.flows_dropped.fetch_add(n, Ordering::Relaxed),
        };
    }

    /// Writes a node's `SFlow` counters.
    fn write_sflow(&self, v: Value) {
        self.rt
            .block_on(update_node(&self.hub, self.node_id.clone(), move |m| {
                m.insert("SFlow", v);
            }));
    }

    fn run(self, mut source: Source, link: LinkType, cfg: TableConfig) {
        let mut table = FlowTable::new(cfg);
        // The sFlow counters last written, with when.
        let mut sflow_prev: Option<(skydive_flow::sflow::IfCounters, i64)> = None;
        let mut buf = Vec::with_capacity(1 << 20);
        let mut frames = Vec::with_capacity(4096);
        let mut last_stats = Instant::now();
        let mut error = String::new();
        while !self.stop.load(Ordering::SeqCst) {
            buf.clear();
            frames.clear();
            if let Err(e) = source.read(READ_WAIT, &mut buf, &mut frames) {
                error = e;
                break;
            }
            if !frames.is_empty() {
                let packets: Vec<Packet<'_>> = frames
                    .iter()
                    .map(|&(start, len, wire_len, ts_ns)| Packet {
                        data: &buf[start..start + len],
                        wire_len,
                        ts_ns,
                    })
                    .collect();
                table.process_batch(&packets, link);
            }
            self.send(table.advance(now_ms()));
            if last_stats.elapsed() >= self.stats_every {
                last_stats = Instant::now();
                if let Source::Sflow(sf) = &source
                    && let Some((cur, at)) = sf.counters
                    && sflow_prev.is_none_or(|(_, prev_at)| prev_at != at)
                {
                    let start = sflow_prev.map_or(at, |(_, p)| p);
                    self.write_sflow(sflow_metadata(
                        &cur,
                        sflow_prev.as_ref().map(|(c, _)| c),
                        start,
                        at,
                    ));
                    sflow_prev = Some((cur, at));
                }
                *self.snapshot.lock().unwrap_or_else(|e| e.into_inner()) = table.flows();
                self.table.set((table.len() as u64, table.stats().evicted));
                let (rx, dropped) = source.stats();
                self.write_entry("active", "", rx, dropped);
            }
        }
        self.send(table.flush(now_ms()));
        if !error.is_empty() {
            tracing::warn!(capture = %self.spec.uuid, node = %self.node_id, "capture failed: {error}");
            let (rx, dropped) = source.stats();
            self.write_entry("error", &error, rx, dropped);
        }
    }
}

/// Serves capture and flow requests, and hands the others to `rest`.
pub struct CaptureRequests {
    pub captures: Arc<Captures>,
    pub rest: Arc<dyn RequestHandler>,
}

impl RequestHandler for CaptureRequests {
    fn handle(&self, msg: &Incoming) -> (String, i64, serde_json::Value) {
        let this = &self.captures;
        match (msg.namespace.as_str(), msg.kind.as_str()) {
            (NAMESPACE, "Start") => {
                let req: StartRequest = match serde_json::from_str(msg.obj_text()) {
                    Ok(r) => r,
                    Err(e) => {
                        return (
                            "StartReply".into(),
                            400,
                            json!(format!("invalid request: {e}")),
                        );
                    }
                };
                // Opening a probe waits for its thread: not on the runtime's workers.
                match tokio::task::block_in_place(|| this.start(req)) {
                    Ok(()) => ("StartReply".into(), 200, json!(null)),
                    Err((status, e)) => ("StartReply".into(), status, json!(e)),
                }
            }
            (NAMESPACE, "Stop") => {
                let v: Json = serde_json::from_str(msg.obj_text()).unwrap_or_default();
                let node = v["NodeID"].as_str().unwrap_or("").to_string();
                let id = v["CaptureID"]
                    .as_str()
                    .or_else(|| v["Resource"]["UUID"].as_str())
                    .unwrap_or("")
                    .to_string();
                let stopped = tokio::task::block_in_place(|| this.stop(&node, &id));
                if stopped {
                    ("StopReply".into(), 200, json!(null))
                } else {
                    (
                        "StopReply".into(),
                        404,
                        json!(format!("no capture {id} on node {node}")),
                    )
                }
            }
            (FLOW_NAMESPACE, "TableQuery") => {
                let v: Json = serde_json::from_str(msg.obj_text()).unwrap_or_default();
                let filter: Filter =
                    serde_json::from_value(v["Filter"].clone()).unwrap_or(Filter::True);
                let flows: Vec<skydive_flow::WireFlow> = this
                    .live_flows(&filter)
                    .into_iter()
                    .map(skydive_flow::WireFlow::from)
                    .collect();
                ("TableResult".into(), 200, json!(flows))
            }
            _ => self.rest.handle(msg),
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
}
