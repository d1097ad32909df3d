//! A blocking REST client for the analyzer's and the agent's API, used by `skydive client`.
//!
//! Authentication follows Skydive's clients: with a username, `POST /login` once and send the
//! `authtoken` cookie it returns; when the server has no login (no authentication), fall
//! back to sending the credentials as HTTP basic authentication.

use std::time::Duration;

use base64::Engine as _;
use serde::Serialize;
use serde::de::DeserializeOwned;
use ureq::http;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach {url}: {message}")]
    Transport { url: String, message: String },
    /// The server answered with an error status; `body` is its message.
    #[error("{status}: {}", body.trim_end())]
    Status { status: u16, body: String },
    #[error("unexpected answer from {url}: {message}")]
    Decode { url: String, message: String },
    #[error("login failed: {0}")]
    Login(String),
}

/// A response: status, content type and body.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub content_type: String,
    pub body: Vec<u8>,
}

impl Response {
    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Credentials for an API that requires them.
#[derive(Clone, Debug, Default)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

/// A client of one analyzer or agent.
pub struct Client {
    base: String,
    agent: ureq::Agent,
    credentials: Option<Credentials>,
    token: std::sync::Mutex<Option<String>>,
    /// `http.cookie`: sent with every request.
    cookies: std::collections::BTreeMap<String, String>,
    /// How HTTPS servers are verified, for WebSocket connections too.
    tls: ClientTlsFiles,
}

/// How a client verifies the servers it talks to and proves who it is (`tls.ca_cert`,
/// `tls.client_cert`, `tls.client_key`; `skydive client`'s `--cacert`, `--cert`, `--key`,
/// `--insecure`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientTlsFiles {
    pub ca_cert: Option<std::path::PathBuf>,
    pub client_cert: Option<std::path::PathBuf>,
    pub client_key: Option<std::path::PathBuf>,
    pub insecure: bool,
}

impl ClientTlsFiles {
    /// Whether the client speaks HTTPS to addresses given without a scheme (Skydive's rule:
    /// when a CA or a certificate is given).
    pub fn wanted(&self) -> bool {
        self.ca_cert.is_some() || self.client_cert.is_some() || self.insecure
    }
}

/// The TLS configuration of an HTTP agent: servers verified against the CA file, or the
/// system's trust store; the client certificate presented when given. Files are checked as
/// the servers' are (a missing, unreadable, expired or mismatched file is an error naming
/// it).
pub fn tls_config(t: &ClientTlsFiles) -> Result<ureq::tls::TlsConfig, skydive_tls::TlsError> {
    use ureq::tls::{Certificate, ClientCert, PrivateKey, RootCerts, TlsConfig, TlsProvider};
    let roots = match &t.ca_cert {
        Some(p) => skydive_tls::read_certs("tls.ca_cert", p)?,
        None => skydive_tls::system_root_certs(),
    };
    let roots: Vec<Certificate<'static>> = roots
        .iter()
        .map(|c| Certificate::from_der(c.as_ref()).to_owned())
        .collect();
    let mut b = TlsConfig::builder()
        .provider(TlsProvider::Rustls)
        .unversioned_rustls_crypto_provider(skydive_tls::crypto_provider())
        .root_certs(RootCerts::new_with_certs(&roots))
        .disable_verification(t.insecure);
    match (&t.client_cert, &t.client_key) {
        (Some(c), Some(k)) => {
            let certs: Vec<Certificate<'static>> = skydive_tls::read_certs("tls.client_cert", c)?
                .iter()
                .map(|c| Certificate::from_der(c.as_ref()).to_owned())
                .collect();
            skydive_tls::read_key("tls.client_key", k)?;
            let pem = std::fs::read(k).map_err(|e| skydive_tls::TlsError::File {
                key: "tls.client_key",
                path: k.display().to_string(),
                message: e.to_string(),
            })?;
            let key = PrivateKey::from_pem(&pem)
                .map_err(|e| skydive_tls::TlsError::File {
                    key: "tls.client_key",
                    path: k.display().to_string(),
                    message: e.to_string(),
                })?
                .to_owned();
            b = b.client_cert(Some(ClientCert::new_with_certs(&certs, key)));
        }
        (None, None) => {}
        _ => {
            return Err(skydive_tls::TlsError::Config(
                "a client certificate and its key go together: give both or neither".into(),
            ));
        }
    }
    Ok(b.build())
}

/// Request headers, by name.
pub type Headers = Vec<(&'static str, String)>;

/// A `Cookie` header's value for `cookies` (`name=value; …`).
pub fn cookie_header(cookies: &std::collections::BTreeMap<String, String>) -> String {
    cookies
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("; ")
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("base", &self.base).finish()
    }
}

impl Client {
    /// A client of `addr` (`host:port`, or a full `http://` URL).
    pub fn new(addr: &str, credentials: Option<Credentials>) -> Client {
        let base = if addr.starts_with("http://") || addr.starts_with("https://") {
            addr.trim_end_matches('/').to_string()
        } else {
            format!("http://{addr}")
        };
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        Client {
            base,
            agent,
            credentials: credentials.filter(|c| !c.username.is_empty()),
            token: std::sync::Mutex::new(None),
            cookies: Default::default(),
            tls: ClientTlsFiles::default(),
        }
    }

    /// The client, sending `cookies` (`http.cookie`) with every request.
    pub fn with_cookies(mut self, cookies: std::collections::BTreeMap<String, String>) -> Client {
        self.cookies = cookies;
        self
    }

    /// The client, over HTTPS as `tls` says (an address given without a scheme then takes
    /// `https://`).
    pub fn with_tls(mut self, tls: &ClientTlsFiles) -> Result<Client, skydive_tls::TlsError> {
        if !tls.wanted() && !self.base.starts_with("https://") {
            return Ok(self);
        }
        if let Some(rest) = self.base.strip_prefix("http://")
            && tls.wanted()
        {
            self.base = format!("https://{rest}");
        }
        self.agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .tls_config(tls_config(tls)?)
            .build()
            .into();
        self.tls = tls.clone();
        Ok(self)
    }

    /// The base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn token(&self) -> Option<String> {
        self.token.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Logs in when credentials are set and no token is known yet.
    fn ensure_login(&self) -> Result<(), ClientError> {
        let Some(c) = &self.credentials else {
            return Ok(());
        };
        if self.token().is_some() {
            return Ok(());
        }
        let url = self.url("/login");
        let resp = self
            .agent
            .post(&url)
            .send_form([
                ("username", c.username.as_str()),
                ("password", c.password.as_str()),
            ])
            .map_err(|e| ClientError::Transport {
                url: url.clone(),
                message: e.to_string(),
            })?;
        let status = resp.status().as_u16();
        let cookie_token = resp
            .headers()
            .get_all(http::header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|v| v.strip_prefix("authtoken="))
            .map(|v| v.split(';').next().unwrap_or("").to_string());
        let mut body = resp.into_body();
        let text = body.read_to_string().unwrap_or_default();
        match (status, cookie_token) {
            (200, Some(t)) => {
                *self.token.lock().unwrap_or_else(|e| e.into_inner()) = Some(t);
                Ok(())
            }
            // No login endpoint: the server does not authenticate, or takes basic auth.
            (404 | 405 | 302, _) => Ok(()),
            (_, _) => Err(ClientError::Login(text.trim_end().to_string())),
        }
    }

    /// The headers that carry the credentials (the login's token or basic authentication)
    /// and the configured cookies.
    fn credential_headers(&self) -> Headers {
        let mut out = Vec::new();
        let cookies = &self.cookies;
        // The session token goes in a header: a request that carries it only in a cookie is
        // held to the rules against forged cross-site requests (see the auth middleware).
        if let Some(t) = self.token() {
            out.push(("X-Auth-Token", t));
        } else if let Some(c) = &self.credentials {
            let b64 = base64::engine::general_purpose::STANDARD
                .encode(format!("{}:{}", c.username, c.password));
            out.push(("Authorization", format!("Basic {b64}")));
        }
        if !cookies.is_empty() {
            out.push(("Cookie", cookie_header(cookies)));
        }
        out
    }

    /// How this client verifies HTTPS servers (for a `wss://` connection to the same one).
    pub fn tls(&self) -> &ClientTlsFiles {
        &self.tls
    }

    /// What a WebSocket connection to the same server needs: its `ws://` URL for `path`
    /// and the headers that authenticate it (logging in first when needed).
    pub fn websocket(&self, path: &str) -> Result<(String, Headers), ClientError> {
        self.ensure_login()?;
        let base = self
            .base
            .strip_prefix("https://")
            .map(|b| format!("wss://{b}"))
            .or_else(|| {
                self.base
                    .strip_prefix("http://")
                    .map(|b| format!("ws://{b}"))
            })
            .unwrap_or_else(|| self.base.clone());
        Ok((format!("{base}{path}"), self.credential_headers()))
    }

    /// Sends a request; error statuses are returned as responses, not errors.
    pub fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<(&str, Vec<u8>)>,
        headers: &[(&str, String)],
    ) -> Result<Response, ClientError> {
        self.ensure_login()?;
        let url = self.url(path);
        let mut req = http::Request::builder().method(method).uri(&url);
        if !headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("accept"))
        {
            req = req.header("Accept", "application/json");
        }
        for (k, v) in self.credential_headers() {
            req = req.header(k, v);
        }
        for (k, v) in headers {
            req = req.header(*k, v.as_str());
        }
        let (ctype, bytes) = match body {
            Some((ctype, bytes)) => (Some(ctype), bytes),
            None => (None, Vec::new()),
        };
        if let Some(ctype) = ctype {
            req = req.header("Content-Type", ctype);
        }
        let transport = |e: String| ClientError::Transport {
            url: url.clone(),
            message: e,
        };
        let req = req.body(bytes).map_err(|e| transport(e.to_string()))?;
        let resp = self.agent.run(req).map_err(|e| transport(e.to_string()))?;
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let body = resp
            .into_body()
            .with_config()
            .limit(u64::MAX)
            .read_to_vec()
            .map_err(|e| transport(e.to_string()))?;
        Ok(Response {
            status,
            content_type,
            body,
        })
    }

    /// Sends a request and turns error statuses into [`ClientError::Status`].
    pub fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<(&str, Vec<u8>)>,
        headers: &[(&str, String)],
    ) -> Result<Response, ClientError> {
        let r = self.send(method, path, body, headers)?;
        if r.status >= 400 {
            return Err(ClientError::Status {
                status: r.status,
                body: r.text(),
            });
        }
        Ok(r)
    }

    fn decode<T: DeserializeOwned>(&self, path: &str, r: Response) -> Result<T, ClientError> {
        serde_json::from_slice(&r.body).map_err(|e| ClientError::Decode {
            url: self.url(path),
            message: e.to_string(),
        })
    }

    /// `GET path`, decoded from JSON.
    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let r = self.call("GET", path, None, &[])?;
        self.decode(path, r)
    }

    /// `method path` with a JSON body, decoded from JSON.
    pub fn json<T: DeserializeOwned, B: Serialize + ?Sized>(
        &self,
        method: &str,
        path: &str,
        body: &B,
        headers: &[(&str, String)],
    ) -> Result<T, ClientError> {
        let bytes = serde_json::to_vec(body).map_err(|e| ClientError::Decode {
            url: self.url(path),
            message: e.to_string(),
        })?;
        let r = self.call(method, path, Some(("application/json", bytes)), headers)?;
        self.decode(path, r)
    }

    /// `DELETE path`.
    pub fn delete(&self, path: &str) -> Result<(), ClientError> {
        self.call("DELETE", path, None, &[]).map(|_| ())
    }

    /// A Gremlin query through `POST /api/topology`, answered in the format `accept` asks
    /// for (`application/json`, `text/vnd.graphviz`, `application/vnd.tcpdump.pcap`).
    pub fn query(&self, gremlin: &str, accept: &str) -> Result<Response, ClientError> {
        let body =
            serde_json::to_vec(&serde_json::json!({ "GremlinQuery": gremlin })).unwrap_or_default();
        self.call(
            "POST",
            "/api/topology",
            Some(("application/json", body)),
            &[("Accept", accept.to_string())],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Write};

    /// One HTTP request read by a server of its own; its header lines.
    fn serve_once() -> (String, std::thread::JoinHandle<Vec<String>>) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let t = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut lines = Vec::new();
            let mut r = BufReader::new(s.try_clone().unwrap());
            loop {
                let mut line = String::new();
                r.read_line(&mut line).unwrap();
                if line.trim().is_empty() {
                    break;
                }
                lines.push(line.trim().to_string());
            }
            s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}")
                .unwrap();
            lines
        });
        (addr, t)
    }

    #[test]
    fn configured_cookies_go_with_every_request() {
        let (addr, server) = serve_once();
        let cookies = [("session", "abc"), ("team", "net")]
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .into();
        let c = Client::new(&addr, None).with_cookies(cookies);
        assert_eq!(c.send("GET", "/api", None, &[]).unwrap().status, 200);
        let headers = server.join().unwrap();
        assert!(
            headers
                .iter()
                .any(|h| h.eq_ignore_ascii_case("cookie: session=abc; team=net")),
            "{headers:?}"
        );
    }
}
