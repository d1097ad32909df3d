//! The TCP listener of the API: every accepted connection records when it last received
//! bytes, so that a WebSocket's read deadline counts bytes, as Skydive's (Go's
//! `SetReadDeadline`) did, rather than whole messages: a client sending one large message
//! over a slow or busy link stays connected while its bytes keep coming.
//!
//! With TLS, every accepted connection's handshake runs in a task of its own (bounded by
//! [`HANDSHAKE_TIMEOUT`]), so that a slow or silent client delays nobody; only connections
//! whose handshake succeeded reach the server. Plain HTTP is then not served.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::connect_info::Connected;
use axum::serve::IncomingStream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// How long a client has to complete its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

fn base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

fn now_ms() -> u64 {
    base().elapsed().as_millis() as u64
}

/// When a connection last received bytes.
#[derive(Clone, Debug)]
pub struct Activity(Arc<AtomicU64>);

impl Activity {
    pub fn new() -> Activity {
        Activity(Arc::new(AtomicU64::new(now_ms())))
    }

    fn touch(&self) {
        self.0.store(now_ms(), Ordering::Relaxed);
    }

    /// How long since bytes last arrived.
    pub fn idle(&self) -> Duration {
        Duration::from_millis(now_ms().saturating_sub(self.0.load(Ordering::Relaxed)))
    }
}

impl Default for Activity {
    fn default() -> Self {
        Activity::new()
    }
}

/// A connection's bytes: plain TCP, or TLS over it.
enum Io {
    Plain(TcpStream),
    Tls(Box<skydive_tls::server::TlsStream<TcpStream>>),
}

/// A TCP connection that records its read activity.
pub struct ActivityStream {
    inner: Io,
    activity: Activity,
}

impl ActivityStream {
    fn new(inner: Io) -> ActivityStream {
        ActivityStream {
            inner,
            activity: Activity::new(),
        }
    }

    /// Whether the connection is encrypted.
    pub fn is_tls(&self) -> bool {
        matches!(self.inner, Io::Tls(_))
    }
}

macro_rules! with_io {
    ($self:ident, $io:ident => $e:expr) => {
        match &mut $self.inner {
            Io::Plain($io) => {
                let $io = Pin::new($io);
                $e
            }
            Io::Tls($io) => {
                let $io = Pin::new($io.as_mut());
                $e
            }
        }
    };
}

impl AsyncRead for ActivityStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = with_io!(self, io => io.poll_read(cx, buf));
        if let Poll::Ready(Ok(())) = r
            && buf.filled().len() > before
        {
            self.activity.touch();
        }
        r
    }
}

impl AsyncWrite for ActivityStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        with_io!(self, io => io.poll_write(cx, buf))
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        with_io!(self, io => io.poll_flush(cx))
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        with_io!(self, io => io.poll_shutdown(cx))
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        with_io!(self, io => io.poll_write_vectored(cx, bufs))
    }
    fn is_write_vectored(&self) -> bool {
        match &self.inner {
            Io::Plain(io) => io.is_write_vectored(),
            Io::Tls(io) => io.is_write_vectored(),
        }
    }
}

/// Connections whose TLS handshake is done, from the tasks that ran them.
struct Handshakes {
    acceptor: skydive_tls::TlsAcceptor,
    done_tx: mpsc::Sender<(ActivityStream, SocketAddr)>,
    done: mpsc::Receiver<(ActivityStream, SocketAddr)>,
}

/// The listener of the API.
pub struct ActivityListener {
    tcp: TcpListener,
    tls: Option<Handshakes>,
}

impl ActivityListener {
    /// Accepts on `tcp`; with `tls`, only connections that complete a TLS handshake.
    pub fn new(tcp: TcpListener, tls: Option<skydive_tls::TlsAcceptor>) -> ActivityListener {
        let tls = tls.map(|acceptor| {
            let (done_tx, done) = mpsc::channel(64);
            Handshakes {
                acceptor,
                done_tx,
                done,
            }
        });
        ActivityListener { tcp, tls }
    }
}

/// The next TCP connection; errors that concern one connection are skipped.
async fn accept_tcp(listener: &TcpListener) -> (TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok((tcp, addr)) => {
                // Small replies and WebSocket frames must not wait for Nagle's algorithm.
                if let Err(e) = tcp.set_nodelay(true) {
                    tracing::debug!("cannot set TCP_NODELAY: {e}");
                }
                return (tcp, addr);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
                ) => {}
            Err(e) => {
                // Out of file descriptors, most likely: wait for some to be freed.
                tracing::error!("accept error: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

impl axum::serve::Listener for ActivityListener {
    type Io = ActivityStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (ActivityStream, SocketAddr) {
        let Some(h) = &mut self.tls else {
            let (tcp, addr) = accept_tcp(&self.tcp).await;
            return (ActivityStream::new(Io::Plain(tcp)), addr);
        };
        loop {
            tokio::select! {
                (tcp, addr) = accept_tcp(&self.tcp) => {
                    let (acceptor, done) = (h.acceptor.clone(), h.done_tx.clone());
                    tokio::spawn(async move {
                        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                            Ok(Ok(tls)) => {
                                let _ = done
                                    .send((ActivityStream::new(Io::Tls(Box::new(tls))), addr))
                                    .await;
                            }
                            Ok(Err(e)) => tracing::info!(peer = %addr, "TLS handshake failed: {e}"),
                            Err(_) => tracing::info!(peer = %addr, "TLS handshake timed out"),
                        }
                    });
                }
                Some(conn) = h.done.recv() => return conn,
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.tcp.local_addr()
    }
}

/// What handlers know about the client's connection.
#[derive(Clone, Debug)]
pub struct ClientInfo {
    pub addr: SocketAddr,
    pub activity: Activity,
    /// Whether the connection is TLS (session cookies are then `Secure`).
    pub tls: bool,
}

impl Connected<IncomingStream<'_, ActivityListener>> for ClientInfo {
    fn connect_info(stream: IncomingStream<'_, ActivityListener>) -> Self {
        ClientInfo {
            addr: *stream.remote_addr(),
            activity: stream.io().activity.clone(),
            tls: stream.io().is_tls(),
        }
    }
}
