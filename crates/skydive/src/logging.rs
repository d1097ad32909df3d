//! Logging as the configuration says: `logging.level`, and `logging.backends` (`stderr`,
//! `stdout`, `file` at `logging.file.path`, `syslog` at `logging.syslog.address` over its
//! `protocol` with its `tag`), each line as text (colour on a terminal with `logging.color`)
//! or, with `logging.encoder: json`, as a JSON object.
//!
//! The syslog writer is written here: each line is one RFC 3164 message
//! (`<priority>tag[pid]: line`), facility `daemon`, severity from the event's level, over a
//! unix datagram or stream socket, UDP or TCP. The crates that send syslog do much more
//! (structured data, reconnection policies) than a daemon's log needs.

use std::collections::BTreeSet;
use std::io::Write;
use std::sync::Mutex;

use skydive_config::Settings;
use tracing::Level;
use tracing_subscriber::Layer;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Where logs go.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Backend {
    Stderr,
    Stdout,
    File(String),
    Syslog {
        address: String,
        protocol: String,
        tag: String,
    },
}

/// The logging of a configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoggingConfig {
    /// The default filter (`RUST_LOG` replaces it when set).
    pub level: &'static str,
    pub backends: BTreeSet<Backend>,
    /// `logging.encoder: json`.
    pub json: bool,
    /// `logging.color`: colour on a terminal.
    pub color: bool,
}

impl LoggingConfig {
    /// The logging part of a configuration; a backend or an encoder this build cannot write
    /// to is refused naming the key.
    pub fn from_settings(s: &Settings) -> Result<LoggingConfig, skydive_config::ConfigError> {
        let invalid = |key: &str, m: String| skydive_config::ConfigError::invalid(key, m);
        let l = &s.logging;
        let level = match l.level.to_ascii_uppercase().as_str() {
            "CRITICAL" | "ERROR" => "error",
            "WARNING" | "WARN" => "warn",
            "DEBUG" => "debug",
            "TRACE" => "trace",
            _ => "info",
        };
        let field = |section: &serde_json::Value, k: &str, default: &str| {
            section
                .get(k)
                .and_then(serde_json::Value::as_str)
                .unwrap_or(default)
                .to_string()
        };
        let mut backends = BTreeSet::new();
        for b in &l.backends {
            backends.insert(match b.as_str() {
                "stderr" => Backend::Stderr,
                "stdout" => Backend::Stdout,
                "file" => Backend::File(field(&l.file, "path", "/var/log/skydive.log")),
                "syslog" => {
                    let protocol = field(&l.syslog, "protocol", "unixgram");
                    if !matches!(protocol.as_str(), "unixgram" | "unix" | "udp" | "tcp") {
                        return Err(invalid(
                            "logging.syslog.protocol",
                            format!("{protocol:?}: expected unixgram, unix, udp or tcp"),
                        ));
                    }
                    Backend::Syslog {
                        address: field(&l.syslog, "address", "/dev/log"),
                        protocol,
                        tag: field(&l.syslog, "tag", "skydive"),
                    }
                }
                other => {
                    return Err(invalid(
                        "logging.backends",
                        format!("{other:?}: expected stderr, stdout, file or syslog"),
                    ));
                }
            });
        }
        let json = match l.encoder.as_str() {
            "" | "text" | "console" => false,
            "json" => true,
            other => {
                return Err(invalid(
                    "logging.encoder",
                    format!("{other:?}: expected json, or nothing for text"),
                ));
            }
        };
        Ok(LoggingConfig {
            level,
            backends,
            json,
            color: l.color,
        })
    }

    /// Installs the logging (once per process); what cannot be opened is said, with its key.
    pub fn init(&self) -> anyhow::Result<()> {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(self.level));
        let mut layers: Vec<Box<dyn Layer<_> + Send + Sync>> = Vec::new();
        for b in &self.backends {
            let terminal = match b {
                Backend::Stderr => std::io::IsTerminal::is_terminal(&std::io::stderr()),
                Backend::Stdout => std::io::IsTerminal::is_terminal(&std::io::stdout()),
                _ => false,
            };
            let ansi = self.color && terminal && !self.json;
            match b {
                Backend::Stderr => layers.push(self.layer(std::io::stderr, ansi)),
                Backend::Stdout => layers.push(self.layer(std::io::stdout, ansi)),
                Backend::File(path) => {
                    let f = std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(path)
                        .map_err(|e| anyhow::anyhow!("logging.file.path: {path}: {e}"))?;
                    layers.push(self.layer(Mutex::new(f), false));
                }
                Backend::Syslog {
                    address,
                    protocol,
                    tag,
                } => {
                    let sink = Syslog::connect(address, protocol, tag).map_err(|e| {
                        anyhow::anyhow!("logging.syslog.address: {protocol} {address}: {e}")
                    })?;
                    layers.push(self.layer(sink, false));
                }
            }
        }
        tracing_subscriber::registry()
            .with(layers)
            .with(filter)
            .try_init()
            .map_err(|e| anyhow::anyhow!("logging: {e}"))
    }

    fn layer<S, W>(&self, writer: W, ansi: bool) -> Box<dyn Layer<S> + Send + Sync>
    where
        S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
        W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
    {
        let fmt = tracing_subscriber::fmt::layer()
            .with_writer(writer)
            .with_ansi(ansi);
        if self.json {
            fmt.json().boxed()
        } else {
            fmt.boxed()
        }
    }
}

/// A connection to a syslog daemon.
enum SyslogSocket {
    UnixDatagram(std::os::unix::net::UnixDatagram),
    UnixStream(Mutex<std::os::unix::net::UnixStream>),
    Udp(std::net::UdpSocket),
    Tcp(Mutex<std::net::TcpStream>),
}

/// The syslog backend.
struct Syslog {
    socket: std::sync::Arc<SyslogSocket>,
    tag: String,
}

impl Syslog {
    fn connect(address: &str, protocol: &str, tag: &str) -> std::io::Result<Syslog> {
        let socket = match protocol {
            "unixgram" => {
                let s = std::os::unix::net::UnixDatagram::unbound()?;
                s.connect(address)?;
                SyslogSocket::UnixDatagram(s)
            }
            "unix" => SyslogSocket::UnixStream(Mutex::new(
                std::os::unix::net::UnixStream::connect(address)?,
            )),
            "udp" => {
                let s = std::net::UdpSocket::bind("0.0.0.0:0")?;
                s.connect(address)?;
                SyslogSocket::Udp(s)
            }
            _ => SyslogSocket::Tcp(Mutex::new(std::net::TcpStream::connect(address)?)),
        };
        Ok(Syslog {
            socket: std::sync::Arc::new(socket),
            tag: tag.to_string(),
        })
    }
}

/// One log line on its way to syslog: buffered, sent as one message when dropped.
struct SyslogLine {
    socket: std::sync::Arc<SyslogSocket>,
    header: String,
    line: Vec<u8>,
}

impl Write for SyslogLine {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.line.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for SyslogLine {
    fn drop(&mut self) {
        while self.line.last() == Some(&b'\n') {
            self.line.pop();
        }
        if self.line.is_empty() {
            return;
        }
        let mut msg = self.header.clone().into_bytes();
        msg.extend_from_slice(&self.line);
        // A log line that cannot be sent is lost: logging must never stop the service.
        let _ = match &*self.socket {
            SyslogSocket::UnixDatagram(s) => s.send(&msg).map(|_| ()),
            SyslogSocket::Udp(s) => s.send(&msg).map(|_| ()),
            SyslogSocket::UnixStream(s) => {
                msg.push(b'\n');
                s.lock().unwrap_or_else(|e| e.into_inner()).write_all(&msg)
            }
            SyslogSocket::Tcp(s) => {
                msg.push(b'\n');
                s.lock().unwrap_or_else(|e| e.into_inner()).write_all(&msg)
            }
        };
    }
}

/// The syslog priority of a level: facility daemon (3), the level's severity.
fn priority(level: &Level) -> u8 {
    let severity = match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    };
    3 * 8 + severity
}

impl<'w> MakeWriter<'w> for Syslog {
    type Writer = SyslogLine;

    fn make_writer(&'w self) -> SyslogLine {
        self.line_for(&Level::INFO)
    }

    fn make_writer_for(&'w self, meta: &tracing::Metadata<'_>) -> SyslogLine {
        self.line_for(meta.level())
    }
}

impl Syslog {
    fn line_for(&self, level: &Level) -> SyslogLine {
        SyslogLine {
            socket: self.socket.clone(),
            header: format!(
                "<{}>{}[{}]: ",
                priority(level),
                self.tag,
                std::process::id()
            ),
            line: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backends_and_encoders_are_read_or_refused_naming_the_key() {
        let mut s = Settings::default();
        s.logging.backends = vec!["stderr".into(), "syslog".into(), "file".into()];
        s.logging.encoder = "json".into();
        let c = LoggingConfig::from_settings(&s).unwrap();
        assert!(c.json);
        assert_eq!(c.backends.len(), 3);
        assert!(c.backends.contains(&Backend::Syslog {
            address: "/dev/log".into(),
            protocol: "unixgram".into(),
            tag: "skydive".into()
        }));
        s.logging.backends = vec!["kafka".into()];
        let e = LoggingConfig::from_settings(&s).unwrap_err().to_string();
        assert!(
            e.contains("`logging.backends`") && e.contains("\"kafka\""),
            "{e}"
        );
        s.logging.backends = vec!["stderr".into()];
        s.logging.encoder = "xml".into();
        assert!(LoggingConfig::from_settings(&s).is_err());
    }

    #[test]
    fn a_syslog_line_is_one_rfc3164_message() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.sock");
        let server = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        let sink = Syslog::connect(path.to_str().unwrap(), "unixgram", "skytest").unwrap();
        let mut line = sink.line_for(&Level::WARN);
        line.write_all(b"probe restarted\n").unwrap();
        drop(line);
        let mut buf = [0u8; 256];
        let n = server.recv(&mut buf).unwrap();
        let text = std::str::from_utf8(&buf[..n]).unwrap();
        assert_eq!(
            text,
            format!("<28>skytest[{}]: probe restarted", std::process::id())
        );
    }
}
