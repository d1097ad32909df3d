//! TLS for every link of the project, built from the configuration's `tls` section in one
//! place: the servers' configuration (the analyzer's and the agent's HTTP and WebSocket
//! listeners), the clients' (the agent's link to its analyzers, `skydive client`, alert
//! webhooks), with rustls and its ring provider (no OpenSSL).
//!
//! Certificates and keys are checked when loaded: a file that is missing, unreadable, not
//! PEM, without a certificate or key, a certificate that has expired or is not valid yet, or
//! a key that does not match its certificate is an error naming the key of the configuration
//! and the file, at start rather than as a failed handshake later. The server's and the
//! client's own certificates are read again when their files change (rotation without a
//! restart): [`Reloader::check`] is called every few seconds; a new pair that does not pass
//! the checks is logged and the previous one kept.

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use rustls::client::ResolvesClientCert;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

pub use rustls::{ClientConfig, ServerConfig};
pub use tokio_rustls::{TlsAcceptor, TlsConnector, client, server};

/// How often certificate files are checked for a change.
pub const RELOAD_EVERY: Duration = Duration::from_secs(2);

/// The `tls` section: which files, and whether clients must present a certificate.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsFiles {
    pub server_cert: Option<PathBuf>,
    pub server_key: Option<PathBuf>,
    pub ca_cert: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    pub require_client_cert: bool,
}

fn path(s: &str) -> Option<PathBuf> {
    (!s.trim().is_empty()).then(|| PathBuf::from(s.trim()))
}

impl TlsFiles {
    /// The `tls` section of a configuration.
    pub fn from_settings(s: &skydive_config::Settings) -> TlsFiles {
        let t = &s.tls;
        TlsFiles {
            server_cert: path(&t.server_cert),
            server_key: path(&t.server_key),
            ca_cert: path(&t.ca_cert),
            client_cert: path(&t.client_cert),
            client_key: path(&t.client_key),
            require_client_cert: t.require_client_cert,
        }
    }

    /// Whether the services serve HTTPS and WSS (Skydive's rule: a server certificate and
    /// key are set).
    pub fn serves_tls(&self) -> bool {
        self.server_cert.is_some() || self.server_key.is_some()
    }

    /// Whether links to other services use TLS: when the services serve it, or when a CA or
    /// a client certificate is given.
    pub fn links_use_tls(&self) -> bool {
        self.serves_tls() || self.ca_cert.is_some() || self.client_cert.is_some()
    }
}

/// Why TLS cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file named by a key of the configuration cannot be used.
    #[error("{key}: {path}: {message}")]
    File {
        key: &'static str,
        path: String,
        message: String,
    },
    /// The keys of the configuration do not go together.
    #[error("{0}")]
    Config(String),
    #[error("TLS: {0}")]
    Rustls(#[from] rustls::Error),
}

fn file_error(key: &'static str, p: &Path, message: impl Into<String>) -> TlsError {
    TlsError::File {
        key,
        path: p.display().to_string(),
        message: message.into(),
    }
}

fn read(key: &'static str, p: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(p).map_err(|e| file_error(key, p, e.to_string()))
}

/// The certificates of a PEM file (at least one), each checked to be valid now.
pub fn read_certs(key: &'static str, p: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(key, p)?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| file_error(key, p, format!("not a PEM certificate file: {e}")))?;
    if certs.is_empty() {
        return Err(file_error(key, p, "no certificate in the file"));
    }
    for c in &certs {
        check_validity(key, p, c)?;
    }
    Ok(certs)
}

/// Whether a certificate is valid now: not expired, not valid only later.
fn check_validity(key: &'static str, p: &Path, cert: &CertificateDer<'_>) -> Result<(), TlsError> {
    let (_, x) = x509_parser::parse_x509_certificate(cert.as_ref())
        .map_err(|e| file_error(key, p, format!("cannot read the certificate: {e}")))?;
    let v = x.validity();
    let now = x509_parser::time::ASN1Time::now();
    if now > v.not_after {
        return Err(file_error(
            key,
            p,
            format!(
                "the certificate of {} expired on {}",
                x.subject(),
                v.not_after
            ),
        ));
    }
    if now < v.not_before {
        return Err(file_error(
            key,
            p,
            format!(
                "the certificate of {} is not valid before {}",
                x.subject(),
                v.not_before
            ),
        ));
    }
    Ok(())
}

/// The private key of a PEM file (PKCS #8, PKCS #1 or SEC1).
pub fn read_key(key: &'static str, p: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(key, p)?;
    PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|e| file_error(key, p, format!("no private key in the file: {e}")))
}

/// ring, rather than rustls's default aws-lc-rs, which builds a C library of its own under a
/// licence outside the project's policy; rustls marks ring's provider deprecated because it
/// has no post-quantum key exchange.
#[allow(deprecated)]
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The cryptography every TLS configuration of the project uses (ring).
pub fn crypto_provider() -> Arc<CryptoProvider> {
    provider()
}

/// The certificates of the system's trust store.
pub fn system_root_certs() -> Vec<CertificateDer<'static>> {
    let found = rustls_native_certs::load_native_certs();
    for e in &found.errors {
        tracing::warn!("system trust store: {e}");
    }
    found.certs
}

/// A certificate with its key, checked to go together.
fn certified_key(
    (cert_key, cert_path): (&'static str, &Path),
    (key_key, key_path): (&'static str, &Path),
) -> Result<CertifiedKey, TlsError> {
    let certs = read_certs(cert_key, cert_path)?;
    let key = read_key(key_key, key_path)?;
    let signing = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| file_error(key_key, key_path, format!("unusable private key: {e}")))?;
    let ck = CertifiedKey::new(certs, signing);
    ck.keys_match().map_err(|_| {
        file_error(
            key_key,
            key_path,
            format!(
                "the key does not match the certificate of {}",
                cert_path.display()
            ),
        )
    })?;
    Ok(ck)
}

/// The trust anchors of a CA file.
fn roots_of(p: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for c in read_certs("tls.ca_cert", p)? {
        roots.add(c).map_err(|e| {
            file_error(
                "tls.ca_cert",
                p,
                format!("not a usable CA certificate: {e}"),
            )
        })?;
    }
    Ok(roots)
}

/// The system's trust store.
fn system_roots() -> RootCertStore {
    let mut roots = RootCertStore::empty();
    let (added, ignored) = roots.add_parsable_certificates(system_root_certs());
    if ignored > 0 {
        tracing::debug!("system trust store: {added} certificates, {ignored} unusable");
    }
    roots
}

fn modified(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

/// A certificate and key pair read again when their files change.
#[derive(Debug)]
pub struct Reloading {
    cert: (&'static str, PathBuf),
    key: (&'static str, PathBuf),
    current: RwLock<Arc<CertifiedKey>>,
    stamps: Mutex<(Option<SystemTime>, Option<SystemTime>)>,
}

impl Reloading {
    fn load(
        cert: (&'static str, &Path),
        key: (&'static str, &Path),
    ) -> Result<Reloading, TlsError> {
        let stamps = (modified(cert.1), modified(key.1));
        let ck = certified_key(cert, key)?;
        Ok(Reloading {
            cert: (cert.0, cert.1.to_path_buf()),
            key: (key.0, key.1.to_path_buf()),
            current: RwLock::new(Arc::new(ck)),
            stamps: Mutex::new(stamps),
        })
    }

    fn current(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Reads the pair again if a file changed; `Ok(true)` when a new pair is in use.
    pub fn check(&self) -> Result<bool, TlsError> {
        let now = (modified(&self.cert.1), modified(&self.key.1));
        let mut stamps = self.stamps.lock().unwrap_or_else(|e| e.into_inner());
        if *stamps == now {
            return Ok(false);
        }
        // Remember the change even when the new files fail: they are said to fail once.
        *stamps = now;
        let ck = certified_key((self.cert.0, &self.cert.1), (self.key.0, &self.key.1))?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(ck);
        Ok(true)
    }
}

impl ResolvesServerCert for Reloading {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

impl ResolvesClientCert for Reloading {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// What keeps a configuration's certificates fresh: [`Reloader::check`] every
/// [`RELOAD_EVERY`], or [`Reloader::spawn`].
#[derive(Clone, Debug, Default)]
pub struct Reloader(Vec<Arc<Reloading>>);

impl Reloader {
    /// Reads the changed files again; logs what changed and what failed.
    pub fn check(&self) {
        for r in &self.0 {
            match r.check() {
                Ok(true) => tracing::info!(cert = %r.cert.1.display(), "certificate reloaded"),
                Ok(false) => {}
                Err(e) => tracing::error!("{e}; the previous certificate stays in use"),
            }
        }
    }

    /// Checks every [`RELOAD_EVERY`] until the runtime stops.
    pub fn spawn(self) -> Option<tokio::task::JoinHandle<()>> {
        if self.0.is_empty() {
            return None;
        }
        Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval(RELOAD_EVERY);
            loop {
                tick.tick().await;
                self.check();
            }
        }))
    }
}

/// A server's TLS: the configuration its listener accepts with, and what reloads it.
#[derive(Clone, Debug)]
pub struct ServerTls {
    pub config: Arc<ServerConfig>,
    pub reloader: Reloader,
}

impl ServerTls {
    /// The server side of `files`, `None` when the services do not serve TLS.
    pub fn load(files: &TlsFiles) -> Result<Option<ServerTls>, TlsError> {
        if !files.serves_tls() {
            return Ok(None);
        }
        let (Some(cert), Some(key)) = (&files.server_cert, &files.server_key) else {
            return Err(TlsError::Config(
                "tls.server_cert and tls.server_key go together: set both or neither".into(),
            ));
        };
        let pair = Arc::new(Reloading::load(
            ("tls.server_cert", cert),
            ("tls.server_key", key),
        )?);
        let builder = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?;
        let builder = match &files.ca_cert {
            Some(ca) => {
                let verifier = WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots_of(ca)?),
                    provider(),
                );
                let verifier = if files.require_client_cert {
                    verifier
                } else {
                    verifier.allow_unauthenticated()
                };
                builder.with_client_cert_verifier(
                    verifier
                        .build()
                        .map_err(|e| TlsError::Config(format!("tls.ca_cert: {e}")))?,
                )
            }
            None if files.require_client_cert => {
                return Err(TlsError::Config(
                    "tls.require_client_cert needs tls.ca_cert, the CA client certificates are \
                     checked against"
                        .into(),
                ));
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_cert_resolver(pair.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Some(ServerTls {
            config: Arc::new(config),
            reloader: Reloader(vec![pair]),
        }))
    }

    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.config.clone())
    }
}

/// What a client is told beyond the configuration (`skydive client`'s flags).
#[derive(Clone, Debug, Default)]
pub struct ClientOptions {
    /// `--insecure`: the server's certificate is not verified.
    pub insecure: bool,
}

/// A client's TLS: its configuration and what reloads its own certificate.
#[derive(Clone, Debug)]
pub struct ClientTls {
    pub config: Arc<ClientConfig>,
    pub reloader: Reloader,
}

impl ClientTls {
    /// The client side of `files`: servers verified against `tls.ca_cert` (the system's trust
    /// store when unset), `tls.client_cert`/`client_key` presented when set.
    pub fn load(files: &TlsFiles, opts: &ClientOptions) -> Result<ClientTls, TlsError> {
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?;
        let builder = if opts.insecure {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerification(provider())))
        } else {
            let roots = match &files.ca_cert {
                Some(ca) => roots_of(ca)?,
                None => system_roots(),
            };
            builder.with_root_certificates(roots)
        };
        let (config, reloader) = match (&files.client_cert, &files.client_key) {
            (Some(cert), Some(key)) => {
                let pair = Arc::new(Reloading::load(
                    ("tls.client_cert", cert),
                    ("tls.client_key", key),
                )?);
                (
                    builder.with_client_cert_resolver(pair.clone()),
                    Reloader(vec![pair]),
                )
            }
            (None, None) => (builder.with_no_client_auth(), Reloader::default()),
            _ => {
                return Err(TlsError::Config(
                    "tls.client_cert and tls.client_key go together: set both or neither".into(),
                ));
            }
        };
        Ok(ClientTls {
            config: Arc::new(config),
            reloader,
        })
    }

    pub fn connector(&self) -> TlsConnector {
        TlsConnector::from(self.config.clone())
    }
}

/// `--insecure`: any certificate is accepted (signatures are still checked, so the
/// handshake completes only with the key of the certificate shown).
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Certificates for tests: a CA and certificates it signs, written as PEM files.
#[cfg(test)]
mod tests;
