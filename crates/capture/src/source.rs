//! Capture sources: where a capture's packets come from, and the thread that runs one.
//!
//! A [`Source`] runs until its [`Sink`] says stop: it reads packets into a flow table, hands
//! the table's flows to the sink as they are ready, and reports its counters (and a
//! snapshot of the table, for live queries) every `Sink::stats_every`. Most sources read
//! frames ([`FrameSource`]: an AF_PACKET ring, libpcap, an sFlow collector) and share one
//! loop whose table ticks on the wall clock; a pcapsocket reads pcap streams whose packets
//! carry their own times.
//!
//! [`start`] runs a source on a thread of its own, inside the node's network namespace: the
//! thread enters the namespace, opens the source there (a socket stays bound to the
//! namespace it was opened in) and runs it; the caller learns whether it opened.

use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use skydive_flow::decode::LinkType;
use skydive_flow::sflow::IfCounters;
use skydive_flow::{Flow, FlowTable, Packet, TableConfig};

use crate::bpf::Bpf;

pub mod afpacket;
pub mod libpcap;
pub mod pcapsocket;
pub mod sflow;

/// Why a source could not open or stopped reading.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(transparent)]
    Filter(#[from] crate::BpfError),
    #[error("no interface {ifname}: {source}")]
    NoInterface {
        ifname: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot capture on {ifname}: {message}")]
    Open { ifname: String, message: String },
    #[error("cannot listen for sFlow on {address}: {source}")]
    Listen {
        address: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Namespace(#[from] skydive_netns::NetnsError),
    #[error("the capture thread could not start: {0}")]
    Thread(#[source] std::io::Error),
    #[error("the probe did not start within {} s", .0.as_secs())]
    Timeout(Duration),
    /// Reading failed after the source opened.
    #[error("{0}")]
    Read(String),
}

/// What a source reports at each statistics tick.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Packets (or sFlow samples) taken since the source opened.
    pub received: u64,
    /// Packets the kernel or the source dropped.
    pub dropped: u64,
    /// Flows in the table.
    pub flows: u64,
    /// Flows evicted because the table was full.
    pub evicted: u64,
    /// The interface counters of the latest sFlow counter sample, with when it came (ms).
    pub sflow_counters: Option<(IfCounters, i64)>,
}

/// Where a running source sends what it makes, and how it is stopped.
pub trait Sink: Send + Sync {
    /// Whether the source must stop (checked at least every [`READ_WAIT`]).
    fn stopped(&self) -> bool;
    /// How often counters and the table's snapshot are reported.
    fn stats_every(&self) -> Duration;
    /// Flows made or updated.
    fn flows(&self, flows: Vec<Flow>);
    /// The counters, and the flows of the table (for live queries) when it has one.
    fn report(&self, report: &Report, table: Option<Vec<Flow>>);
    /// The source ended: stopped, or failed with `error`.
    fn ended(&self, error: Option<&SourceError>);
}

/// A source of packets for a flow table.
pub trait Source: Send {
    /// Runs until `sink` says stop, or until reading fails.
    fn run(self: Box<Self>, table: TableConfig, sink: &dyn Sink) -> Result<(), SourceError>;
}

/// How long a source's read waits for traffic before it looks at its clock and the sink.
pub const READ_WAIT: Duration = Duration::from_millis(100);

/// A source that reads frames (or sFlow's sampled headers), timed by the wall clock.
pub trait FrameSource: Send {
    /// How the frames begin.
    fn link(&self) -> LinkType;
    /// Reads what is there, waiting up to [`READ_WAIT`]: each frame's bytes, its length on
    /// the wire and its time (ns since the epoch).
    fn read(&mut self, push: &mut dyn FnMut(&[u8], u32, i64)) -> Result<(), SourceError>;
    /// Packets received and dropped since the source opened.
    fn counts(&mut self) -> (u64, u64);
    /// The latest sFlow interface counters (sFlow collectors only).
    fn sflow_counters(&self) -> Option<(IfCounters, i64)> {
        None
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl<T: FrameSource> Source for T {
    fn run(mut self: Box<Self>, cfg: TableConfig, sink: &dyn Sink) -> Result<(), SourceError> {
        let link = self.link();
        let mut table = FlowTable::new(cfg);
        let mut buf = Vec::with_capacity(1 << 20);
        // Each frame: where it starts in `buf`, its length, its length on the wire, its time.
        let mut frames: Vec<(usize, usize, u32, i64)> = Vec::with_capacity(4096);
        let mut last_stats = Instant::now();
        let mut result = Ok(());
        while !sink.stopped() {
            buf.clear();
            frames.clear();
            let read = self.read(&mut |data, wire_len, ts_ns| {
                frames.push((buf.len(), data.len(), wire_len, ts_ns));
                buf.extend_from_slice(data);
            });
            if let Err(e) = read {
                result = Err(e);
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
            sink.flows(table.advance(now_ms()));
            if last_stats.elapsed() >= sink.stats_every() {
                last_stats = Instant::now();
                let (received, dropped) = self.counts();
                let report = Report {
                    received,
                    dropped,
                    flows: table.len() as u64,
                    evicted: table.stats().evicted,
                    sflow_counters: self.sflow_counters(),
                };
                sink.report(&report, Some(table.flows()));
            }
        }
        sink.flows(table.flush(now_ms()));
        result
    }
}

/// What to open.
#[derive(Debug)]
pub enum SourceSpec {
    /// An AF_PACKET ring on interface `ifname`.
    Afpacket {
        ifname: String,
        snaplen: u32,
        filter: String,
        link: LinkType,
    },
    /// libpcap on interface `ifname` (which may tell another link type).
    Pcap {
        ifname: String,
        snaplen: u32,
        filter: String,
        link: LinkType,
    },
    /// An sFlow collector listening on `address` (`ip:port`).
    Sflow { address: String, filter: String },
    /// An sFlow collector on a socket already bound (in the agent's namespace).
    SflowSocket(std::net::UdpSocket),
    /// A TCP listener taking pcap streams.
    PcapSocket(std::net::TcpListener),
}

/// Compiles a capture's filter for frames of `link`; none when the filter is empty.
fn compile(filter: &str, link: LinkType) -> Result<Option<Bpf>, SourceError> {
    if filter.is_empty() {
        return Ok(None);
    }
    Ok(Some(Bpf::compile(filter, link.pcap())?))
}

/// Opens a source, in the calling thread's namespace.
pub fn open(spec: SourceSpec) -> Result<Box<dyn Source>, SourceError> {
    Ok(match spec {
        SourceSpec::Afpacket {
            ifname,
            snaplen,
            filter,
            link,
        } => {
            let bpf = compile(&filter, link)?;
            Box::new(afpacket::RingSource::open(&ifname, snaplen, bpf, link)?)
        }
        SourceSpec::Pcap {
            ifname,
            snaplen,
            filter,
            link,
        } => Box::new(libpcap::PcapSource::open(&ifname, snaplen, &filter, link)?),
        SourceSpec::Sflow { address, filter } => {
            let bpf = compile(&filter, LinkType::Ethernet)?;
            let sock =
                std::net::UdpSocket::bind(&address).map_err(|source| SourceError::Listen {
                    address: address.clone(),
                    source,
                })?;
            Box::new(sflow::SflowSource::new(sock, bpf))
        }
        SourceSpec::SflowSocket(sock) => Box::new(sflow::SflowSource::new(sock, None)),
        SourceSpec::PcapSocket(listener) => Box::new(pcapsocket::PcapSocket::new(listener)),
    })
}

/// How long opening a source may take.
pub const OPEN_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs a source on a thread named `name`: the thread enters the namespace of `netns`
/// (stays in the caller's when `None`), opens `spec` there and runs it with `table` into
/// `sink`, which hears when it ends. Returns once the source is open, or why it is not.
pub fn start(
    name: &str,
    netns: Option<PathBuf>,
    spec: SourceSpec,
    table: TableConfig,
    sink: std::sync::Arc<dyn Sink>,
) -> Result<std::thread::JoinHandle<()>, SourceError> {
    let (opened_tx, opened_rx) = mpsc::channel::<Result<(), SourceError>>();
    let thread = std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            let opened = netns
                .as_deref()
                .map_or(Ok(()), |path| skydive_netns::enter(path, None))
                .map_err(SourceError::from)
                .and_then(|()| open(spec));
            let source = match opened {
                Ok(s) => {
                    let _ = opened_tx.send(Ok(()));
                    s
                }
                Err(e) => {
                    let _ = opened_tx.send(Err(e));
                    return;
                }
            };
            let result = source.run(table, sink.as_ref());
            sink.ended(result.as_ref().err());
        })
        .map_err(SourceError::Thread)?;
    match opened_rx.recv_timeout(OPEN_TIMEOUT) {
        Ok(Ok(())) => Ok(thread),
        Ok(Err(e)) => {
            let _ = thread.join();
            Err(e)
        }
        Err(_) => Err(SourceError::Timeout(OPEN_TIMEOUT)),
    }
}
