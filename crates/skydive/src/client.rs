//! `skydive client`: the commands of Skydive's command-line client over
//! the REST API. Resources print as JSON indented by two spaces, query results by tabs, as
//! Skydive's client printed them; errors go to standard error with exit code 1.

use std::io::Write;
use std::process::ExitCode;

use clap::{Args, Subcommand, ValueEnum};
use serde::Serialize;
use serde_json::{Value, json};
use skydive_api::client::{Client, ClientError, Credentials};
use skydive_config::Config;

#[derive(Args)]
pub struct ClientArgs {
    /// Analyzer (or agent) address, host:port. Default: the first of `analyzers`, else
    /// 127.0.0.1:8082.
    #[arg(long, env = "SKYDIVE_ANALYZER", global = true)]
    analyzer: Option<String>,
    /// User name, when the API requires authentication.
    #[arg(long, env = "SKYDIVE_USERNAME", default_value = "", global = true)]
    username: String,
    /// Password, when the API requires authentication.
    #[arg(
        long,
        env = "SKYDIVE_PASSWORD",
        default_value = "",
        hide_env_values = true,
        global = true
    )]
    password: String,
    /// CA certificate the analyzer's is verified against (HTTPS then); `tls.ca_cert`.
    #[arg(long, global = true)]
    cacert: Option<std::path::PathBuf>,
    /// Client certificate, for analyzers that require one (HTTPS then); `tls.client_cert`.
    #[arg(long, global = true)]
    cert: Option<std::path::PathBuf>,
    /// The client certificate's key; `tls.client_key`.
    #[arg(long, global = true)]
    key: Option<std::path::PathBuf>,
    /// HTTPS without verifying the analyzer's certificate.
    #[arg(long, global = true)]
    insecure: bool,
    #[command(subcommand)]
    command: ClientCommand,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Json,
    Dot,
    Pcap,
}

impl Format {
    fn accept(self) -> &'static str {
        match self {
            Format::Json => "application/json",
            Format::Dot => "text/vnd.graphviz",
            Format::Pcap => "application/vnd.tcpdump.pcap",
        }
    }
}

#[derive(Subcommand)]
enum ClientCommand {
    /// Run a Gremlin query.
    Query {
        /// The query, e.g. "G.V().Has('Type', 'netns')".
        gremlin: String,
        /// Output format.
        #[arg(long, value_enum, default_value = "json")]
        format: Format,
        /// Accepted for compatibility; does nothing (as in Skydive).
        #[arg(long, hide = true)]
        delete: bool,
    },
    /// Query or export the topology.
    #[command(subcommand)]
    Topology(TopologyCommand),
    /// Nodes of the graph.
    #[command(subcommand)]
    Node(ElementCommand),
    /// Edges of the graph.
    #[command(subcommand)]
    Edge(ElementCommand),
    /// Flow captures.
    #[command(subcommand)]
    Capture(CaptureCommand),
    /// Alerts.
    #[command(subcommand)]
    Alert(AlertCommand),
    /// Upload a pcap or pcapng file: its flows are computed and stored.
    Pcap {
        /// The pcap file.
        #[arg(long)]
        trace: std::path::PathBuf,
    },
    /// Node rules.
    #[command(subcommand, name = "node-rule")]
    NodeRule(NodeRuleCommand),
    /// Edge rules.
    #[command(subcommand, name = "edge-rule")]
    EdgeRule(EdgeRuleCommand),
    /// Show the status of the analyzer (or agent).
    Status,
}

#[derive(Subcommand)]
enum TopologyCommand {
    /// Run a Gremlin query (use `client query` instead).
    Query {
        #[arg(long, default_value = "G")]
        gremlin: String,
        #[arg(long, value_enum, default_value = "json")]
        format: Format,
    },
    /// The whole topology (same as `query G`).
    Export,
    /// Publish a graph written by `topology export` (`[{"Nodes": […], "Edges": […]}]`),
    /// kept by the analyzer after the client leaves.
    Import {
        /// The graph, as `topology export` writes it; `-` reads standard input.
        #[arg(long, default_value = "graph.json")]
        file: std::path::PathBuf,
        /// The publisher WebSocket endpoint.
        #[arg(long, default_value = "/ws/publisher")]
        endpoint: String,
    },
}

#[derive(Subcommand)]
enum ElementCommand {
    /// Create one (the client generates its ID).
    Create {
        /// Node name (nodes).
        #[arg(long = "node-name", default_value = "")]
        node_name: String,
        /// Node type (nodes).
        #[arg(long = "node-type", default_value = "")]
        node_type: String,
        /// Relation type (edges).
        #[arg(long = "edge-type", default_value = "")]
        edge_type: String,
        /// Parent node ID (edges).
        #[arg(long, default_value = "")]
        parent: String,
        /// Child node ID (edges).
        #[arg(long, default_value = "")]
        child: String,
        /// Metadata: 'k1=v1, k2=v2' (dotted keys make nested maps).
        #[arg(long, short = 'm', default_value = "")]
        metadata: String,
        /// Host name (default: this host).
        #[arg(long, default_value = "")]
        host: String,
    },
    /// Show one.
    Get { id: String },
    /// List all.
    List,
    /// Delete by ID, or every one a query returns.
    Delete {
        ids: Vec<String>,
        #[arg(long)]
        gremlin: Option<String>,
    },
    /// Add (-a k=v) or remove (-r k) metadata.
    Update {
        id: String,
        #[arg(short = 'a', long = "add")]
        add: Vec<String>,
        #[arg(short = 'r', long = "remove")]
        remove: Vec<String>,
    },
}

#[derive(Subcommand)]
enum AlertCommand {
    /// Create an alert.
    Create {
        #[arg(long, default_value = "")]
        name: String,
        #[arg(long, default_value = "")]
        description: String,
        /// graph, or duration:<Go duration> (e.g. duration:10s).
        #[arg(long, default_value = "graph")]
        trigger: String,
        /// A Gremlin query; the alert fires when its result becomes non-empty or changes.
        #[arg(long)]
        expression: String,
        /// http(s)://… (the payload is POSTed) or file://… (a program given the payload).
        #[arg(long, default_value = "")]
        action: String,
    },
    Get {
        id: String,
    },
    List,
    Delete {
        ids: Vec<String>,
    },
    /// Change some fields of an alert.
    Update {
        id: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        description: Option<String>,
        #[arg(long)]
        trigger: Option<String>,
        #[arg(long)]
        expression: Option<String>,
        #[arg(long)]
        action: Option<String>,
    },
}

fn alert(c: &Client, cmd: &AlertCommand) -> Result<(), String> {
    match cmd {
        AlertCommand::Create {
            name,
            description,
            trigger,
            expression,
            action,
        } => {
            let body = json!({"Name": name, "Description": description, "Trigger": trigger,
                "Expression": expression, "Action": action});
            let r: Value = c
                .json("POST", "/api/alert", &body, &[])
                .map_err(|e| e.to_string())?;
            print_json(&r);
            Ok(())
        }
        AlertCommand::Update {
            id,
            name,
            description,
            trigger,
            expression,
            action,
        } => {
            let ops: Vec<Value> = [
                ("Name", name),
                ("Description", description),
                ("Trigger", trigger),
                ("Expression", expression),
                ("Action", action),
            ]
            .into_iter()
            .filter_map(|(k, v)| {
                v.as_ref()
                    .map(|v| json!({"op": "add", "path": format!("/{k}"), "value": v}))
            })
            .collect();
            let r = c
                .send(
                    "PATCH",
                    &format!("/api/alert/{id}"),
                    Some((
                        "application/json",
                        serde_json::to_vec(&ops).unwrap_or_default(),
                    )),
                    &[],
                )
                .map_err(|e| e.to_string())?;
            match r.status {
                200 => {
                    let v: Value = serde_json::from_slice(&r.body).map_err(|e| e.to_string())?;
                    print_json(&v);
                    Ok(())
                }
                304 => {
                    eprintln!("alert {id} unchanged");
                    Ok(())
                }
                s => Err(format!("{s}: {}", r.text().trim_end())),
            }
        }
        AlertCommand::Get { id } => resource_common(c, "alert", Some(id), false, &[]),
        AlertCommand::List => resource_common(c, "alert", None, true, &[]),
        AlertCommand::Delete { ids } => resource_common(c, "alert", None, false, ids),
    }
}

#[derive(Subcommand)]
enum CaptureCommand {
    /// Create a capture on the nodes of a Gremlin query, a node TID or a probe path.
    Create(Box<CaptureCreate>),
    Get {
        id: String,
    },
    List,
    Delete {
        ids: Vec<String>,
    },
}

#[derive(Args)]
struct CaptureCreate {
    /// The nodes to capture on, e.g. "G.V().Has('Name', 'eth0')".
    #[arg(long, default_value = "", conflicts_with_all = ["node", "probepath"])]
    gremlin: String,
    /// The TID of the node to capture on.
    #[arg(long, default_value = "", conflicts_with = "probepath")]
    node: String,
    /// A probe path of Skydive's first versions: "host1[Type=host]/br1[Type=ovsbridge]",
    /// `*` for any host.
    #[arg(long, short = 'p', default_value = "")]
    probepath: String,
    /// A BPF filter, in tcpdump syntax.
    #[arg(long, default_value = "")]
    bpf: String,
    #[arg(long, default_value = "")]
    name: String,
    #[arg(long, default_value = "")]
    description: String,
    /// afpacket, pcap, pcapsocket, sflow, ovssflow, … (default: the node type's).
    #[arg(long = "type", default_value = "")]
    kind: String,
    #[arg(long, default_value_t = 0)]
    port: i64,
    #[arg(long, default_value_t = 1)]
    samplingrate: i64,
    #[arg(long, default_value_t = 10)]
    pollinginterval: i64,
    #[arg(long = "header-size", default_value_t = 0)]
    header_size: i64,
    #[arg(long = "rawpacket-limit", default_value_t = 0)]
    rawpacket_limit: i64,
    #[arg(long = "extra-tcp-metric")]
    extra_tcp_metric: bool,
    #[arg(long = "ip-defrag")]
    ip_defrag: bool,
    /// (Spelt as Skydive spelt it.)
    #[arg(long = "reassamble-tcp")]
    reassemble_tcp: bool,
    #[arg(long = "layer-key-mode", default_value = "L2")]
    layer_key_mode: String,
    /// DNS, DHCPv4 or VRRP; repeatable.
    #[arg(long = "extra-layer")]
    extra_layer: Vec<String>,
    #[arg(long, default_value = "")]
    target: String,
    #[arg(long = "target-type", default_value = "")]
    target_type: String,
    /// Time to live, in milliseconds.
    #[arg(long, default_value_t = 0)]
    ttl: u64,
}

/// Translates a probe path (`A[Type=a]/B[Type=b]`, `*` for any host) into the Gremlin
/// query selecting the same node: each segment an ownership child of the previous one.
pub fn probe_path_query(path: &str) -> Result<String, String> {
    let segment = |seg: &str| -> Result<(String, String), String> {
        let (name, rest) = seg.split_once('[').ok_or_else(|| {
            format!("invalid probe path segment {seg:?}: expected Name[Type=type]")
        })?;
        let t = rest
            .strip_suffix(']')
            .and_then(|r| r.strip_prefix("Type="))
            .ok_or_else(|| {
                format!("invalid probe path segment {seg:?}: expected Name[Type=type]")
            })?;
        if name.is_empty() || t.is_empty() || name.contains('\'') || t.contains('\'') {
            return Err(format!("invalid probe path segment {seg:?}"));
        }
        Ok((name.to_string(), t.to_string()))
    };
    let mut parts = path.split('/');
    let first = parts.next().unwrap_or("");
    let mut q = if first == "*" {
        "G.V().Has('Type', 'host')".to_string()
    } else {
        let (n, t) = segment(first)?;
        format!("G.V().Has('Name', '{n}', 'Type', '{t}')")
    };
    for seg in parts {
        let (n, t) = segment(seg)?;
        q.push_str(&format!(
            ".OutE('RelationType', 'ownership').OutV('Name', '{n}', 'Type', '{t}')"
        ));
    }
    Ok(q)
}

fn upload_pcap(c: &Client, trace: &std::path::Path) -> Result<(), String> {
    let bytes =
        std::fs::read(trace).map_err(|e| format!("cannot read {}: {e}", trace.display()))?;
    let r = c
        .send(
            "POST",
            "/api/pcap",
            Some(("application/octet-stream", bytes)),
            &[],
        )
        .map_err(|e| e.to_string())?;
    match r.status {
        202 => Ok(()),
        s => Err(format!("{s}: {}", r.text().trim_end())),
    }
}

fn capture(c: &Client, cmd: &CaptureCommand) -> Result<(), String> {
    match cmd {
        CaptureCommand::Create(a) => {
            let query = if !a.gremlin.is_empty() {
                a.gremlin.clone()
            } else if !a.node.is_empty() {
                format!("G.V().Has('TID', '{}')", a.node.replace('\'', "\\'"))
            } else if !a.probepath.is_empty() {
                probe_path_query(&a.probepath)?
            } else {
                return Err("one of --gremlin, --node or --probepath is needed".into());
            };
            let mut layers = 0;
            for l in &a.extra_layer {
                layers |= match l.to_ascii_uppercase().as_str() {
                    "VRRP" => 1,
                    "DNS" => 2,
                    "DHCPV4" => 4,
                    _ => return Err(format!("unknown extra layer {l:?}: DNS, DHCPv4 or VRRP")),
                };
            }
            let body = json!({
                "GremlinQuery": query, "BPFFilter": a.bpf, "Name": a.name,
                "Description": a.description, "Type": a.kind, "Port": a.port,
                "SamplingRate": a.samplingrate, "PollingInterval": a.pollinginterval,
                "HeaderSize": a.header_size, "RawPacketLimit": a.rawpacket_limit,
                "ExtraTCPMetric": a.extra_tcp_metric, "IPDefrag": a.ip_defrag,
                "ReassembleTCP": a.reassemble_tcp, "LayerKeyMode": a.layer_key_mode,
                "ExtraLayers": layers, "Target": a.target, "TargetType": a.target_type,
            });
            let headers = if a.ttl > 0 {
                vec![("X-Resource-TTL", format!("{}ms", a.ttl))]
            } else {
                Vec::new()
            };
            let hdrs: Vec<(&str, String)> = headers.into_iter().collect();
            let r: Value = c
                .json("POST", "/api/capture", &body, &hdrs)
                .map_err(|e| e.to_string())?;
            print_json(&r);
            Ok(())
        }
        CaptureCommand::Get { id } => resource_common(c, "capture", Some(id), false, &[]),
        CaptureCommand::List => resource_common(c, "capture", None, true, &[]),
        CaptureCommand::Delete { ids } => {
            for id in ids {
                if id.contains('[') || id.contains('/') {
                    delete_by_probe_path(c, id)?;
                } else {
                    resource_common(c, "capture", None, false, std::slice::from_ref(id))?;
                }
            }
            Ok(())
        }
    }
}

/// Deletes the captures a probe path created (`capture create -p PATH`): those whose
/// query is the one the path stands for.
fn delete_by_probe_path(c: &Client, path: &str) -> Result<(), String> {
    let query = probe_path_query(path)?;
    let all: Value = c.get("/api/capture").map_err(|e| e.to_string())?;
    let ids: Vec<&String> = all
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(_, v)| v["GremlinQuery"] == query.as_str())
                .map(|(id, _)| id)
                .collect()
        })
        .unwrap_or_default();
    if ids.is_empty() {
        return Err(format!("no capture was created for the probe path {path}"));
    }
    for id in ids {
        c.delete(&format!("/api/capture/{}", segment(id)))
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// `id` as one segment of a URL path.
fn segment(id: &str) -> String {
    percent_encoding::utf8_percent_encode(id, percent_encoding::NON_ALPHANUMERIC).to_string()
}

#[derive(Subcommand)]
enum NodeRuleCommand {
    /// Create a node rule.
    Create {
        #[arg(long, default_value = "")]
        name: String,
        #[arg(long, default_value = "")]
        description: String,
        #[arg(long = "node-name", default_value = "")]
        node_name: String,
        #[arg(long = "node-type", default_value = "")]
        node_type: String,
        #[arg(long, short = 'm', default_value = "")]
        metadata: String,
        /// The nodes an `update` rule applies to.
        #[arg(long, default_value = "")]
        query: String,
        /// create or update.
        #[arg(long, default_value = "create")]
        action: String,
    },
    Get {
        id: String,
    },
    List,
    Delete {
        ids: Vec<String>,
    },
}

#[derive(Subcommand)]
enum EdgeRuleCommand {
    /// Create an edge rule.
    Create {
        #[arg(long, default_value = "")]
        name: String,
        #[arg(long, default_value = "")]
        description: String,
        /// Gremlin query of the parents.
        #[arg(long)]
        src: String,
        /// Gremlin query of the children.
        #[arg(long)]
        dst: String,
        #[arg(long, default_value = "layer2")]
        relationtype: String,
        #[arg(long, short = 'm', default_value = "")]
        metadata: String,
    },
    Get {
        id: String,
    },
    List,
    Delete {
        ids: Vec<String>,
    },
}

/// A value typed the way Skydive's client reads `k=v`: integers, floats and booleans are
/// numbers and booleans, anything else a string.
fn typed(v: &str) -> Value {
    let v = v.trim();
    if let Ok(i) = v.parse::<i64>() {
        return json!(i);
    }
    if let Ok(f) = v.parse::<f64>()
        && f.is_finite()
    {
        return json!(f);
    }
    match v {
        "true" => json!(true),
        "false" => json!(false),
        _ => json!(v),
    }
}

/// Sets a dotted key in a JSON object.
fn set_dotted(m: &mut serde_json::Map<String, Value>, key: &str, v: Value) {
    match key.split_once('.') {
        None => {
            m.insert(key.to_string(), v);
        }
        Some((head, rest)) => {
            let child = m
                .entry(head.to_string())
                .or_insert_with(|| Value::Object(Default::default()));
            if !child.is_object() {
                *child = Value::Object(Default::default());
            }
            if let Value::Object(c) = child {
                set_dotted(c, rest, v);
            }
        }
    }
}

/// `'k1=v1, k2=v2'` as metadata.
fn parse_metadata(s: &str) -> Result<serde_json::Map<String, Value>, String> {
    let mut m = serde_json::Map::new();
    for pair in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| format!("invalid metadata {pair:?}: expected key=value"))?;
        set_dotted(&mut m, k.trim(), typed(v));
    }
    Ok(m)
}

fn print_json<T: Serialize>(v: &T) {
    match serde_json::to_string_pretty(v) {
        Ok(s) => println!("{s}"),
        Err(e) => eprintln!("Error: {e}"),
    }
}

fn print_tabbed(body: &[u8]) -> Result<(), String> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| format!("invalid JSON from the server: {e}"))?;
    let mut out = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"\t");
    let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
    v.serialize(&mut ser).map_err(|e| e.to_string())?;
    out.push(b'\n');
    std::io::stdout().write_all(&out).map_err(|e| e.to_string())
}

fn query(c: &Client, gremlin: &str, format: Format) -> Result<(), String> {
    let r = c
        .query(gremlin, format.accept())
        .map_err(|e| e.to_string())?;
    match format {
        Format::Json if r.status == 204 => Ok(()),
        Format::Json => print_tabbed(&r.body),
        Format::Dot | Format::Pcap => std::io::stdout()
            .write_all(&r.body)
            .map_err(|e| e.to_string()),
    }
}

/// The nodes and edges of an exported graph: `[{"Nodes": […], "Edges": […]}]`, or the
/// object alone.
fn exported_graph(text: &str) -> Result<(Vec<Value>, Vec<Value>), String> {
    let v: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let graph = match v {
        Value::Array(mut a) if a.len() == 1 => a.remove(0),
        Value::Object(_) => v,
        _ => {
            return Err(
                "invalid graph format: expected [{\"Nodes\": [...], \"Edges\": [...]}]".into(),
            );
        }
    };
    let list = |k: &str| -> Result<Vec<Value>, String> {
        match &graph[k] {
            Value::Null => Ok(Vec::new()),
            Value::Array(a) => Ok(a.clone()),
            other => Err(format!("invalid graph format: {k} is {other}, not a list")),
        }
    };
    Ok((list("Nodes")?, list("Edges")?))
}

/// `topology import`: the graph's nodes then edges as `NodeAdded`/`EdgeAdded` messages to
/// the publisher endpoint (persistent), then a check that the analyzer has every one of
/// them: what it refused is named, and the command fails.
fn import(c: &Client, file: &std::path::Path, endpoint: &str) -> Result<(), String> {
    use tokio_tungstenite::tungstenite::{self, Message, client::IntoClientRequest};
    let text = if file.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).map_err(|e| format!("stdin: {e}"))?
    } else {
        std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?
    };
    let (nodes, edges) = exported_graph(&text).map_err(|e| format!("{}: {e}", file.display()))?;
    let ids = |elems: &[Value], what: &str| -> Result<Vec<String>, String> {
        elems
            .iter()
            .map(|e| {
                e["ID"]
                    .as_str()
                    .map(str::to_string)
                    .ok_or_else(|| format!("{}: a {what} without an ID: {e}", file.display()))
            })
            .collect()
    };
    let (node_ids, edge_ids) = (ids(&nodes, "node")?, ids(&edges, "edge")?);
    let (url, auth) = c.websocket(endpoint).map_err(|e| e.to_string())?;
    let mut req = url
        .as_str()
        .into_client_request()
        .map_err(|e| format!("{url}: {e}"))?;
    let h = req.headers_mut();
    let mut put = |k: &str, v: &str| -> Result<(), String> {
        let name =
            tungstenite::http::HeaderName::from_bytes(k.as_bytes()).map_err(|e| e.to_string())?;
        let value = tungstenite::http::HeaderValue::from_str(v).map_err(|e| e.to_string())?;
        h.append(name, value);
        Ok(())
    };
    put("X-Client-Type", "CLI")?;
    put("X-Host-ID", &hostname())?;
    put("X-Persistence-Policy", "Persistent")?;
    for (k, v) in &auth {
        put(k, v)?;
    }
    let stream = std::net::TcpStream::connect(
        c.base()
            .split_once("://")
            .map(|(_, a)| a)
            .unwrap_or(c.base()),
    )
    .map_err(|e| format!("{url}: {e}"))?;
    // wss:// verifies the analyzer as the client's HTTPS does.
    let connector = if url.starts_with("wss://") {
        let t = c.tls();
        let files = skydive_tls::TlsFiles {
            ca_cert: t.ca_cert.clone(),
            client_cert: t.client_cert.clone(),
            client_key: t.client_key.clone(),
            ..Default::default()
        };
        let opts = skydive_tls::ClientOptions {
            insecure: t.insecure,
        };
        let tls = skydive_tls::ClientTls::load(&files, &opts).map_err(|e| e.to_string())?;
        Some(tungstenite::Connector::Rustls(tls.config))
    } else {
        Some(tungstenite::Connector::Plain)
    };
    let (mut ws, _) = tungstenite::client_tls_with_config(req, stream, None, connector)
        .map_err(|e| match e {
            tungstenite::handshake::HandshakeError::Failure(e) => e,
            tungstenite::handshake::HandshakeError::Interrupted(_) => {
                tungstenite::Error::Io(std::io::ErrorKind::WouldBlock.into())
            }
        })
        .map_err(|e| match e {
            tungstenite::Error::Http(r) => format!(
                "{url}: {} {}",
                r.status().as_u16(),
                String::from_utf8_lossy(r.body().as_deref().unwrap_or_default()).trim_end()
            ),
            e => format!("{url}: {e}"),
        })?;
    let send = |ws: &mut tungstenite::WebSocket<_>, kind: &str, obj: &Value| {
        let msg = json!({"Namespace": "Graph", "Type": kind, "Obj": obj});
        ws.send(Message::text(msg.to_string()))
            .map_err(|e| format!("{url}: {e}"))
    };
    for n in &nodes {
        send(&mut ws, "NodeAdded", n)?;
    }
    for e in &edges {
        send(&mut ws, "EdgeAdded", e)?;
    }
    let _ = ws.close(None);
    // Read until the server closes: everything sent before has been applied.
    while ws.read().is_ok() {}
    // What the analyzer has now, by ID.
    let present = || -> Result<(Vec<String>, Vec<String>), String> {
        let r = c
            .query("G", "application/json")
            .map_err(|e| e.to_string())?;
        let g: Value = serde_json::from_slice(&r.body).map_err(|e| e.to_string())?;
        let ids = |k: &str| -> Vec<String> {
            g[0][k]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|e| e["ID"].as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default()
        };
        Ok((ids("Nodes"), ids("Edges")))
    };
    let absent = |wanted: &[String], have: &[String]| -> Vec<String> {
        let have: std::collections::HashSet<&String> = have.iter().collect();
        wanted
            .iter()
            .filter(|i| !have.contains(i))
            .cloned()
            .collect()
    };
    // The analyzer applies what it received in order, but after the connection closes:
    // give it a moment.
    let mut tries = 0;
    let (lost_nodes, lost_edges) = loop {
        let (n, e) = present()?;
        let lost = (absent(&node_ids, &n), absent(&edge_ids, &e));
        tries += 1;
        if (lost.0.is_empty() && lost.1.is_empty()) || tries == 20 {
            break lost;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    if lost_nodes.is_empty() && lost_edges.is_empty() {
        eprintln!(
            "{} nodes and {} edges imported",
            node_ids.len(),
            edge_ids.len()
        );
        return Ok(());
    }
    Err(format!(
        "the analyzer refused {} of {} nodes ({}) and {} of {} edges ({}); its log says why",
        lost_nodes.len(),
        node_ids.len(),
        lost_nodes.join(", "),
        lost_edges.len(),
        edge_ids.len(),
        lost_edges.join(", ")
    ))
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".to_string())
}

fn now_ms() -> i64 {
    skydive_graph::now_ms()
}

fn element(c: &Client, kind: &str, cmd: &ElementCommand) -> Result<(), String> {
    let base = format!("/api/{kind}");
    let e = |e: ClientError| e.to_string();
    match cmd {
        ElementCommand::Create {
            node_name,
            node_type,
            edge_type,
            parent,
            child,
            metadata,
            host,
        } => {
            let mut md = parse_metadata(metadata)?;
            let host = if host.is_empty() {
                hostname()
            } else {
                host.clone()
            };
            let now = now_ms();
            let mut body = json!({
                "ID": uuid::Uuid::new_v4().to_string(),
                "Host": host,
                "CreatedAt": now,
                "UpdatedAt": now,
                "Revision": 1,
            });
            if kind == "node" {
                if !node_name.is_empty() {
                    md.insert("Name".into(), json!(node_name));
                }
                if !node_type.is_empty() {
                    md.insert("Type".into(), json!(node_type));
                }
            } else {
                if !edge_type.is_empty() {
                    md.insert("RelationType".into(), json!(edge_type));
                }
                body["Parent"] = json!(parent);
                body["Child"] = json!(child);
            }
            body["Metadata"] = Value::Object(md);
            let created: Value = c.json("POST", &base, &body, &[]).map_err(e)?;
            print_json(&created);
        }
        ElementCommand::Get { id } => {
            print_json(&c.get::<Value>(&format!("{base}/{id}")).map_err(e)?);
        }
        ElementCommand::List => print_json(&c.get::<Value>(&base).map_err(e)?),
        ElementCommand::Delete { ids, gremlin } => {
            let mut ids = ids.clone();
            if let Some(q) = gremlin {
                let r = c.query(q, "application/json").map_err(e)?;
                let found: Vec<Value> = serde_json::from_slice(&r.body).unwrap_or_default();
                ids.extend(
                    found
                        .iter()
                        .filter_map(|v| v["ID"].as_str().map(str::to_string)),
                );
            }
            if ids.is_empty() {
                return Err(format!("no {kind} to delete: give IDs or --gremlin"));
            }
            for id in ids {
                c.delete(&format!("{base}/{id}")).map_err(e)?;
            }
        }
        ElementCommand::Update { id, add, remove } => {
            let mut ops = Vec::new();
            for a in add {
                let (k, v) = a
                    .split_once('=')
                    .ok_or_else(|| format!("invalid -a {a:?}: expected key=value"))?;
                ops.push(json!({"op": "add", "path": format!("/Metadata/{}", k.trim().replace('.', "/")), "value": typed(v)}));
            }
            for r in remove {
                ops.push(json!({"op": "remove", "path": format!("/Metadata/{}", r.trim().replace('.', "/"))}));
            }
            let body = serde_json::to_vec(&ops).map_err(|e| e.to_string())?;
            let r = c
                .send(
                    "PATCH",
                    &format!("{base}/{id}"),
                    Some(("application/json", body)),
                    &[],
                )
                .map_err(e)?;
            match r.status {
                200 => print_tabbed(&r.body)?,
                304 => eprintln!("{kind} {id} unchanged"),
                s => return Err(format!("{s}: {}", r.text().trim_end())),
            }
        }
    }
    Ok(())
}

fn resource_common(
    c: &Client,
    kind: &str,
    get: Option<&str>,
    list: bool,
    delete: &[String],
) -> Result<(), String> {
    let e = |e: ClientError| e.to_string();
    if let Some(id) = get {
        print_json(
            &c.get::<Value>(&format!("/api/{kind}/{}", segment(id)))
                .map_err(e)?,
        );
    } else if list {
        print_json(&c.get::<Value>(&format!("/api/{kind}")).map_err(e)?);
    } else {
        for id in delete {
            c.delete(&format!("/api/{kind}/{}", segment(id)))
                .map_err(e)?;
        }
    }
    Ok(())
}

fn node_rule(c: &Client, cmd: &NodeRuleCommand) -> Result<(), String> {
    match cmd {
        NodeRuleCommand::Create {
            name,
            description,
            node_name,
            node_type,
            metadata,
            query,
            action,
        } => {
            let mut md = parse_metadata(metadata)?;
            if !node_name.is_empty() {
                md.insert("Name".into(), json!(node_name));
            }
            if !node_type.is_empty() {
                md.insert("Type".into(), json!(node_type));
            }
            let body = json!({"Name": name, "Description": description, "Metadata": md, "Query": query, "Action": action});
            let r: Value = c
                .json("POST", "/api/noderule", &body, &[])
                .map_err(|e| e.to_string())?;
            print_json(&r);
            Ok(())
        }
        NodeRuleCommand::Get { id } => resource_common(c, "noderule", Some(id), false, &[]),
        NodeRuleCommand::List => resource_common(c, "noderule", None, true, &[]),
        NodeRuleCommand::Delete { ids } => resource_common(c, "noderule", None, false, ids),
    }
}

fn edge_rule(c: &Client, cmd: &EdgeRuleCommand) -> Result<(), String> {
    match cmd {
        EdgeRuleCommand::Create {
            name,
            description,
            src,
            dst,
            relationtype,
            metadata,
        } => {
            let mut md = parse_metadata(metadata)?;
            md.insert("RelationType".into(), json!(relationtype));
            let body = json!({"Name": name, "Description": description, "Src": src, "Dst": dst, "Metadata": md});
            let r: Value = c
                .json("POST", "/api/edgerule", &body, &[])
                .map_err(|e| e.to_string())?;
            print_json(&r);
            Ok(())
        }
        EdgeRuleCommand::Get { id } => resource_common(c, "edgerule", Some(id), false, &[]),
        EdgeRuleCommand::List => resource_common(c, "edgerule", None, true, &[]),
        EdgeRuleCommand::Delete { ids } => resource_common(c, "edgerule", None, false, ids),
    }
}

/// What the client takes from the configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientConfig {
    /// The first of `analyzers`, the address used without `--analyzer`.
    pub analyzer: String,
    /// `http.cookie`: sent with every request.
    pub cookies: std::collections::BTreeMap<String, String>,
    /// `tls.ca_cert`, `tls.client_cert`, `tls.client_key` (the flags take precedence).
    pub tls: skydive_api::client::ClientTlsFiles,
}

impl ClientConfig {
    pub fn from_settings(s: &skydive_config::Settings) -> ClientConfig {
        ClientConfig {
            analyzer: s
                .analyzers
                .first()
                .cloned()
                .unwrap_or_else(|| "127.0.0.1:8082".to_string()),
            cookies: s.http.cookies(),
            tls: {
                let t = skydive_tls::TlsFiles::from_settings(s);
                skydive_api::client::ClientTlsFiles {
                    ca_cert: t.ca_cert,
                    client_cert: t.client_cert,
                    client_key: t.client_key,
                    insecure: false,
                }
            },
        }
    }
}

/// Runs a client command.
pub fn run(args: &ClientArgs, config: &Config) -> ExitCode {
    let cfg = ClientConfig::from_settings(&config.settings);
    let addr = args.analyzer.clone().unwrap_or(cfg.analyzer);
    let creds = Credentials {
        username: args.username.clone(),
        password: args.password.clone(),
    };
    let tls = skydive_api::client::ClientTlsFiles {
        ca_cert: args.cacert.clone().or(cfg.tls.ca_cert),
        client_cert: args.cert.clone().or(cfg.tls.client_cert),
        client_key: args.key.clone().or(cfg.tls.client_key),
        insecure: args.insecure,
    };
    let c = match Client::new(&addr, Some(creds))
        .with_cookies(cfg.cookies)
        .with_tls(&tls)
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("Error: {e}");
            return ExitCode::from(64);
        }
    };
    let result = match &args.command {
        ClientCommand::Query {
            gremlin, format, ..
        } => query(&c, gremlin, *format),
        ClientCommand::Topology(TopologyCommand::Query { gremlin, format }) => {
            query(&c, gremlin, *format)
        }
        ClientCommand::Topology(TopologyCommand::Export) => query(&c, "G", Format::Json),
        ClientCommand::Topology(TopologyCommand::Import { file, endpoint }) => {
            import(&c, file, endpoint)
        }
        ClientCommand::Node(cmd) => element(&c, "node", cmd),
        ClientCommand::Edge(cmd) => element(&c, "edge", cmd),
        ClientCommand::Capture(cmd) => capture(&c, cmd),
        ClientCommand::Alert(cmd) => alert(&c, cmd),
        ClientCommand::Pcap { trace } => upload_pcap(&c, trace),
        ClientCommand::NodeRule(cmd) => node_rule(&c, cmd),
        ClientCommand::EdgeRule(cmd) => edge_rule(&c, cmd),
        ClientCommand::Status => c
            .get::<Value>("/api/status")
            .map(|v| print_json(&v))
            .map_err(|e| e.to_string()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_flags_are_typed_and_nested() {
        let m = parse_metadata("a=1, b=x, c.d=true, e=1.5").unwrap();
        assert_eq!(
            Value::Object(m),
            json!({"a": 1, "b": "x", "c": {"d": true}, "e": 1.5})
        );
        assert!(parse_metadata("novalue").is_err());
        assert!(parse_metadata("").unwrap().is_empty());
    }
}
