//! An analyzer for tests: on a free port of 127.0.0.1, with its embedded store in a
//! temporary directory, restartable on the same port and store.

#![allow(dead_code)]

use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::Value;
use skydive_analyzer::Analyzer;
use skydive_api::client::{Client, Response};
use skydive_config::Settings;
use tokio_tungstenite::tungstenite::{self, Message, client::IntoClientRequest, http::HeaderValue};

pub struct TestAnalyzer {
    pub rt: tokio::runtime::Runtime,
    pub analyzer: Option<Analyzer>,
    pub dir: tempfile::TempDir,
    pub settings: Settings,
    pub client: Client,
}

/// Settings of a test analyzer whose store is in `dir`.
pub fn settings(dir: &std::path::Path, listen: &str) -> Settings {
    let mut s = Settings {
        host_id: "test-analyzer".into(),
        ..Default::default()
    };
    s.analyzer.listen = listen.into();
    s.analyzer.topology.agent_grace_period = 2;
    s.storage.insert(
        "embedded".into(),
        serde_json::json!({"driver": "embedded", "path": dir.display().to_string()}),
    );
    s
}

impl TestAnalyzer {
    pub fn start() -> TestAnalyzer {
        Self::start_with(|_| {})
    }

    pub fn start_with(f: impl FnOnce(&mut Settings)) -> TestAnalyzer {
        let dir = tempfile::tempdir().unwrap();
        let mut s = settings(dir.path(), "127.0.0.1:0");
        f(&mut s);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let analyzer = rt.block_on(Analyzer::start(&s)).unwrap();
        // Restarts reuse the port.
        s.analyzer.listen = analyzer.addr.to_string();
        let client = Client::new(&analyzer.addr.to_string(), None);
        TestAnalyzer {
            rt,
            analyzer: Some(analyzer),
            dir,
            settings: s,
            client,
        }
    }

    pub fn addr(&self) -> String {
        self.settings.analyzer.listen.clone()
    }

    /// Stops the analyzer and starts it again on the same port and store.
    pub fn restart(&mut self) {
        let a = self.analyzer.take().unwrap();
        self.rt.block_on(a.shutdown());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.rt.block_on(Analyzer::start(&self.settings)) {
                Ok(a) => {
                    self.analyzer = Some(a);
                    return;
                }
                Err(e) if Instant::now() < deadline => {
                    eprintln!("restart: {e:#}");
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => panic!("analyzer does not restart: {e:#}"),
            }
        }
    }

    pub fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, String)],
    ) -> Response {
        let body = body.map(|b| ("application/json", serde_json::to_vec(&b).unwrap()));
        self.client.send(method, path, body, headers).unwrap()
    }

    pub fn get(&self, path: &str) -> Value {
        let r = self.send("GET", path, None, &[]);
        assert_eq!(r.status, 200, "GET {path}: {}", r.text());
        serde_json::from_slice(&r.body).unwrap()
    }

    /// A Gremlin query's JSON result.
    pub fn query(&self, q: &str) -> Value {
        let r = self.client.query(q, "application/json").unwrap();
        serde_json::from_slice(&r.body).unwrap()
    }

    pub fn count(&self, q: &str) -> i64 {
        self.query(&format!("{q}.Count()")).as_i64().unwrap()
    }

    /// A WebSocket client of `endpoint` with the given handshake headers.
    pub fn ws(&self, endpoint: &str, headers: &[(&str, &str)]) -> Ws {
        ws_connect(&self.addr(), endpoint, headers).unwrap()
    }
}

impl Drop for TestAnalyzer {
    fn drop(&mut self) {
        if let Some(a) = self.analyzer.take() {
            self.rt.block_on(a.shutdown());
        }
    }
}

pub type Ws = tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<TcpStream>>;

/// Connects a blocking WebSocket client; the error is the HTTP status of a refusal.
pub fn ws_connect(addr: &str, endpoint: &str, headers: &[(&str, &str)]) -> Result<Ws, u16> {
    let mut req = format!("ws://{addr}{endpoint}")
        .into_client_request()
        .unwrap();
    for (k, v) in headers {
        let name = tungstenite::http::HeaderName::from_bytes(k.as_bytes()).unwrap();
        req.headers_mut()
            .append(name, HeaderValue::from_str(v).unwrap());
    }
    match tungstenite::connect(req) {
        Ok((ws, resp)) => {
            assert!(resp.headers().contains_key("X-Host-ID"));
            assert!(resp.headers().contains_key("X-Service-Type"));
            if let tungstenite::stream::MaybeTlsStream::Plain(s) = ws.get_ref() {
                s.set_read_timeout(Some(Duration::from_millis(200)))
                    .unwrap();
            }
            Ok(ws)
        }
        Err(tungstenite::Error::Http(resp)) => Err(resp.status().as_u16()),
        Err(e) => panic!("WebSocket connection failed: {e}"),
    }
}

/// Sends a JSON message.
pub fn ws_send(ws: &mut Ws, msg: Value) {
    ws.send(Message::text(msg.to_string())).unwrap();
}

/// Reads JSON messages until `pred` holds for one, within `timeout`; returns it. Messages
/// that arrive in an array frame are looked at one by one.
pub fn ws_wait(
    ws: &mut Ws,
    timeout: Duration,
    mut pred: impl FnMut(&Value) -> bool,
) -> Option<Value> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let tungstenite::stream::MaybeTlsStream::Plain(s) = ws.get_ref() {
            let left = deadline.saturating_duration_since(Instant::now());
            s.set_read_timeout(Some(
                left.clamp(Duration::from_millis(1), Duration::from_millis(200)),
            ))
            .unwrap();
        }
        match ws.read() {
            Ok(Message::Text(t)) => {
                let v: Value = serde_json::from_str(t.as_str()).unwrap();
                let items = match v {
                    Value::Array(a) => a,
                    v => vec![v],
                };
                for m in items {
                    if pred(&m) {
                        return Some(m);
                    }
                }
            }
            Ok(Message::Binary(b)) => {
                let m = skydive_api::message::decode_binary(&b).unwrap();
                let v = serde_json::json!({
                    "Namespace": m.namespace, "Type": m.kind, "UUID": m.uuid, "Status": m.status,
                    "Obj": serde_json::from_str::<Value>(m.obj_text()).unwrap(),
                });
                if pred(&v) {
                    return Some(v);
                }
            }
            Ok(_) => {}
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("WebSocket read failed: {e}"),
        }
    }
    None
}

/// Every message received within `window`.
pub fn ws_drain(ws: &mut Ws, window: Duration) -> Vec<Value> {
    let mut out = Vec::new();
    ws_wait(ws, window, |m| {
        out.push(m.clone());
        false
    });
    out
}

#[allow(unused_imports)]
pub use skydive_testkit::eventually;

/// A node as API clients send it.
pub fn node(id: &str, name: &str, ty: &str) -> Value {
    serde_json::json!({"ID": id, "Host": "test", "Metadata": {"Name": name, "Type": ty}})
}

/// One request on a connection of its own: status, headers (lower-case names) and body.
pub fn raw(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, Vec<(String, String)>, String) {
    raw_bytes(addr, method, path, headers, body.as_bytes())
}

/// As [`raw`], with a body of bytes.
pub fn raw_bytes(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Vec<(String, String)>, String) {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers, body.to_string())
}
