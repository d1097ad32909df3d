//! A pcapsocket: a TCP listener where pcap streams are written (`tcpdump -w - | nc`); every
//! connection's packets go through a flow table of their own, with the stream's times.

use std::io::Read;
use std::time::{Duration, Instant};

use skydive_flow::TableConfig;

use super::{Report, Sink, Source, SourceError};
use crate::pcapfile::PcapFeeder;

/// How long a read waits on a connection before looking at the sink again.
const READ_TIMEOUT: Duration = Duration::from_millis(200);
/// How often the listener looks for a connection.
const ACCEPT_EVERY: Duration = Duration::from_millis(50);

/// A listener of pcap streams.
pub struct PcapSocket {
    listener: std::net::TcpListener,
}

impl PcapSocket {
    pub fn new(listener: std::net::TcpListener) -> PcapSocket {
        PcapSocket { listener }
    }
}

impl Source for PcapSocket {
    fn run(self: Box<Self>, cfg: TableConfig, sink: &dyn Sink) -> Result<(), SourceError> {
        let _ = self.listener.set_nonblocking(true);
        let mut report = Report::default();
        let mut last_stats = Instant::now();
        let mut chunk = vec![0u8; 64 * 1024];
        while !sink.stopped() {
            let Ok((mut conn, _)) = self.listener.accept() else {
                std::thread::sleep(ACCEPT_EVERY);
                if last_stats.elapsed() >= sink.stats_every() {
                    last_stats = Instant::now();
                    sink.report(&report, None);
                }
                continue;
            };
            let _ = conn.set_nonblocking(false);
            let _ = conn.set_read_timeout(Some(READ_TIMEOUT));
            let mut feeder = PcapFeeder::new(cfg.clone());
            let mut counted = 0;
            while !sink.stopped() {
                match conn.read(&mut chunk) {
                    Ok(0) => break,
                    Ok(n) => match feeder.feed(&chunk[..n]) {
                        Ok(flows) => sink.flows(flows),
                        Err(e) => {
                            tracing::warn!("pcapsocket stream refused: {e}");
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
                report.received += feeder.packets() - counted;
                counted = feeder.packets();
                if last_stats.elapsed() >= sink.stats_every() {
                    last_stats = Instant::now();
                    (report.flows, report.evicted) = feeder.table_stats();
                    sink.report(&report, None);
                }
            }
            report.received += feeder.packets() - counted;
            sink.flows(feeder.finish());
            sink.report(&report, None);
        }
        Ok(())
    }
}
