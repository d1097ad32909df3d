//! A small OVSDB client (RFC 7047): JSON-RPC over a unix or TCP socket, the `monitor` of the
//! tables the OVS probe reads, `update` notifications applied to a local copy of those
//! tables, `echo` answered, and `transact` for the rows the agent writes (sFlow).
//!
//! Written here because no OVSDB client crate is mature; the probe needs only this much.
//! Messages are JSON values one after the other on the stream, with no delimiter: they are
//! cut with serde_json's streaming deserializer.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

/// Why an OVSDB exchange failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OvsdbError {
    #[error("cannot connect to OVSDB at {addr}: {message}")]
    Connect { addr: String, message: String },
    #[error("OVSDB connection lost: {0}")]
    Closed(String),
    #[error("OVSDB error: {0}")]
    Server(String),
    #[error("invalid OVSDB message: {0}")]
    Protocol(String),
}

/// A row: column name → OVSDB value (atom, `["set", …]`, `["map", …]`, `["uuid", …]`).
pub type Row = serde_json::Map<String, Value>;

/// `{table: {row uuid: {"old": row, "new": row}}}` as OVSDB sends it.
pub type TableUpdates = BTreeMap<String, BTreeMap<String, RowUpdate>>;

/// The change of one row.
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize)]
pub struct RowUpdate {
    #[serde(default)]
    pub old: Option<Row>,
    #[serde(default)]
    pub new: Option<Row>,
}

/// A monitored copy of some tables: table → row uuid → row.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tables(pub BTreeMap<String, BTreeMap<String, Row>>);

impl Tables {
    /// Applies a monitor reply or an `update` notification (monitor v1: `new` holds the whole
    /// row, absent when the row is deleted).
    pub fn apply(&mut self, updates: &TableUpdates) {
        for (table, rows) in updates {
            let t = self.0.entry(table.clone()).or_default();
            for (uuid, u) in rows {
                match &u.new {
                    Some(row) => {
                        // Monitor v1 sends the changed columns in `new` together with the
                        // unchanged ones only on insert; merge to keep every column.
                        let r = t.entry(uuid.clone()).or_default();
                        for (k, v) in row {
                            r.insert(k.clone(), v.clone());
                        }
                    }
                    None => {
                        t.remove(uuid);
                    }
                }
            }
        }
    }

    pub fn rows(&self, table: &str) -> impl Iterator<Item = (&String, &Row)> {
        self.0.get(table).into_iter().flatten()
    }

    pub fn row(&self, table: &str, uuid: &str) -> Option<&Row> {
        self.0.get(table)?.get(uuid)
    }
}

/// A row column's string atom.
pub fn string(row: &Row, col: &str) -> Option<String> {
    row.get(col)?.as_str().map(str::to_string)
}

/// The members of a set column (a single atom counts as a set of one), as atoms with the
/// `["uuid", x]` wrapping removed.
pub fn set(row: &Row, col: &str) -> Vec<Value> {
    let unwrap = |v: &Value| -> Value {
        match v.as_array().map(Vec::as_slice) {
            Some([tag, x]) if tag == "uuid" || tag == "named-uuid" => x.clone(),
            _ => v.clone(),
        }
    };
    match row.get(col) {
        None => Vec::new(),
        Some(v) => match v.as_array().map(Vec::as_slice) {
            Some([tag, Value::Array(items)]) if tag == "set" => items.iter().map(unwrap).collect(),
            _ => vec![unwrap(v)],
        },
    }
}

/// A map column as string keys and values.
pub fn map(row: &Row, col: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if let Some(Value::Array(v)) = row.get(col)
        && let [tag, Value::Array(pairs)] = v.as_slice()
        && tag == "map"
    {
        for p in pairs {
            if let Some([k, v]) = p.as_array().map(Vec::as_slice) {
                let s = |x: &Value| match x {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                out.insert(s(k), s(v));
            }
        }
    }
    out
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Result<Value, OvsdbError>>>>>;

/// A connected client.
pub struct OvsdbClient {
    out: mpsc::UnboundedSender<Vec<u8>>,
    pending: Pending,
    next_id: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for OvsdbClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OvsdbClient")
    }
}

/// What the server sent that was not a reply.
#[derive(Debug, Clone, PartialEq)]
pub enum Notification {
    /// `update`: (monitor id, changes).
    Update(Value, TableUpdates),
    /// The connection ended.
    Closed(String),
}

impl OvsdbClient {
    /// Connects to an address in any form `ovs.ovsdb` takes: `unix:///path` (Skydive's),
    /// `unix:/path`, a bare `/path`, `tcp://host:port`, `tcp:host:port` or `host:port`.
    pub async fn connect(
        addr: &str,
    ) -> Result<(OvsdbClient, mpsc::UnboundedReceiver<Notification>), OvsdbError> {
        let err = |e: std::io::Error| OvsdbError::Connect {
            addr: addr.to_string(),
            message: e.to_string(),
        };
        let unix = addr
            .strip_prefix("unix://")
            .or_else(|| addr.strip_prefix("unix:"))
            .or_else(|| addr.starts_with('/').then_some(addr));
        match unix {
            Some(path) => {
                let s = tokio::net::UnixStream::connect(path).await.map_err(err)?;
                let (r, w) = s.into_split();
                Ok(Self::start(r, w))
            }
            None => {
                let hp = addr
                    .strip_prefix("tcp://")
                    .or_else(|| addr.strip_prefix("tcp:"))
                    .unwrap_or(addr);
                let s = tokio::net::TcpStream::connect(hp).await.map_err(err)?;
                let (r, w) = s.into_split();
                Ok(Self::start(r, w))
            }
        }
    }

    /// Runs the client over any byte stream (the tests replay recorded exchanges this way).
    pub fn start<R, W>(mut r: R, mut w: W) -> (OvsdbClient, mpsc::UnboundedReceiver<Notification>)
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let (out_tx, mut out_rx) = mpsc::unbounded_channel::<Vec<u8>>();
        let (note_tx, note_rx) = mpsc::unbounded_channel();
        let pending: Pending = Arc::default();
        tokio::spawn(async move {
            while let Some(b) = out_rx.recv().await {
                if w.write_all(&b).await.is_err() || w.flush().await.is_err() {
                    return;
                }
            }
        });
        let (p, echo) = (pending.clone(), out_tx.clone());
        tokio::spawn(async move {
            let mut buf: Vec<u8> = Vec::new();
            let mut chunk = vec![0u8; 64 * 1024];
            let reason = loop {
                let n = match r.read(&mut chunk).await {
                    Ok(0) => break "end of stream".to_string(),
                    Ok(n) => n,
                    Err(e) => break e.to_string(),
                };
                buf.extend_from_slice(&chunk[..n]);
                let mut stream = serde_json::Deserializer::from_slice(&buf).into_iter::<Value>();
                let mut used = 0;
                let mut bad = None;
                loop {
                    match stream.next() {
                        Some(Ok(msg)) => {
                            used = stream.byte_offset();
                            dispatch(msg, &p, &echo, &note_tx);
                        }
                        Some(Err(e)) if e.is_eof() => break,
                        Some(Err(e)) => {
                            bad = Some(e.to_string());
                            break;
                        }
                        None => break,
                    }
                }
                if let Some(e) = bad {
                    break format!("unreadable message: {e}");
                }
                buf.drain(..used);
            };
            for (_, tx) in p.lock().unwrap_or_else(|e| e.into_inner()).drain() {
                let _ = tx.send(Err(OvsdbError::Closed(reason.clone())));
            }
            let _ = note_tx.send(Notification::Closed(reason));
        });
        (
            OvsdbClient {
                out: out_tx,
                pending,
                next_id: std::sync::atomic::AtomicU64::new(1),
            },
            note_rx,
        )
    }

    /// Sends a request and waits for its reply's `result`.
    pub async fn request(&self, method: &str, params: Value) -> Result<Value, OvsdbError> {
        let id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, tx);
        let msg = json!({"id": id, "method": method, "params": params});
        let bytes = serde_json::to_vec(&msg).map_err(|e| OvsdbError::Protocol(e.to_string()))?;
        self.out
            .send(bytes)
            .map_err(|_| OvsdbError::Closed("the writer is gone".into()))?;
        rx.await
            .map_err(|_| OvsdbError::Closed("no reply".into()))?
    }

    /// Starts monitoring `columns` of tables of `db`; returns the tables' current rows.
    pub async fn monitor(
        &self,
        db: &str,
        monitor_id: Value,
        columns: &[(&str, &[&str])],
    ) -> Result<TableUpdates, OvsdbError> {
        let mut requests = serde_json::Map::new();
        for (table, cols) in columns {
            requests.insert(table.to_string(), json!({"columns": cols}));
        }
        let r = self
            .request("monitor", json!([db, monitor_id, requests]))
            .await?;
        serde_json::from_value(r).map_err(|e| OvsdbError::Protocol(e.to_string()))
    }

    /// Runs a transaction; an operation error is an error.
    pub async fn transact(&self, db: &str, ops: Vec<Value>) -> Result<Vec<Value>, OvsdbError> {
        let mut params = vec![json!(db)];
        params.extend(ops);
        let r = self.request("transact", Value::Array(params)).await?;
        let results = r
            .as_array()
            .cloned()
            .ok_or_else(|| OvsdbError::Protocol(format!("transact result {r}")))?;
        for res in &results {
            if let Some(e) = res.get("error").filter(|e| !e.is_null()) {
                let details = res.get("details").and_then(Value::as_str).unwrap_or("");
                return Err(OvsdbError::Server(
                    format!("{e} {details}").trim().to_string(),
                ));
            }
        }
        Ok(results)
    }
}

fn dispatch(
    msg: Value,
    pending: &Pending,
    out: &mpsc::UnboundedSender<Vec<u8>>,
    notes: &mpsc::UnboundedSender<Notification>,
) {
    match msg.get("method").and_then(Value::as_str) {
        Some("echo") => {
            let reply = json!({"id": msg["id"], "result": msg["params"], "error": null});
            let _ = out.send(serde_json::to_vec(&reply).unwrap_or_default());
        }
        Some("update") => {
            let params = msg["params"].as_array().cloned().unwrap_or_default();
            if let [id, updates] = params.as_slice() {
                match serde_json::from_value::<TableUpdates>(updates.clone()) {
                    Ok(u) => {
                        let _ = notes.send(Notification::Update(id.clone(), u));
                    }
                    Err(e) => tracing::warn!("invalid OVSDB update: {e}"),
                }
            }
        }
        Some(_) => {}
        None => {
            let Some(id) = msg.get("id").and_then(Value::as_u64) else {
                return;
            };
            let waiter = pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&id);
            if let Some(tx) = waiter {
                let r = match msg.get("error").filter(|e| !e.is_null()) {
                    Some(e) => Err(OvsdbError::Server(e.to_string())),
                    None => Ok(msg.get("result").cloned().unwrap_or(Value::Null)),
                };
                let _ = tx.send(r);
            }
        }
    }
}

/// A bridge's sFlow export, as an `ovssflow` capture configures it: OVS samples the
/// bridge's traffic and sends it to `target`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SflowExport {
    /// The bridge's row UUID.
    pub bridge: String,
    /// `ip:port` of the collector.
    pub target: String,
    /// Bytes of each sampled packet's header.
    pub header: i64,
    /// One packet sampled out of `sampling`.
    pub sampling: i64,
    /// Seconds between counter samples.
    pub polling: i64,
    /// The capture's ID, kept in the row's `external_ids` (`skydive-probe-id`).
    pub probe_id: String,
}

/// Points a bridge's sFlow at a collector: a new `sFlow` row (agent `lo`) referenced by the
/// bridge, in one transaction on the server at `addr`.
pub async fn attach_sflow(addr: &str, export: &SflowExport) -> Result<(), OvsdbError> {
    let (client, _) = OvsdbClient::connect(addr).await?;
    client
        .transact(
            "Open_vSwitch",
            vec![
                json!({"op": "insert", "table": "sFlow", "uuid-name": "sf", "row": {
                    "agent": "lo", "header": export.header, "sampling": export.sampling,
                    "polling": export.polling, "targets": ["set", [export.target]],
                    "external_ids": ["map", [["skydive-probe-id", export.probe_id.replace('-', "_")]]]}}),
                json!({"op": "update", "table": "Bridge",
                    "where": [["_uuid", "==", ["uuid", export.bridge]]],
                    "row": {"sflow": ["named-uuid", "sf"]}}),
            ],
        )
        .await
        .map(|_| ())
}

/// Removes a bridge's sFlow configuration (OVSDB deletes the row no longer referenced).
pub async fn detach_sflow(addr: &str, bridge: &str) -> Result<(), OvsdbError> {
    let (client, _) = OvsdbClient::connect(addr).await?;
    client
        .transact(
            "Open_vSwitch",
            vec![json!({"op": "update", "table": "Bridge",
                "where": [["_uuid", "==", ["uuid", bridge]]],
                "row": {"sflow": ["set", []]}})],
        )
        .await
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A monitor exchange in the shape ovsdb-server sends it (RFC 7047, sections 4.1.5 and 4.1.6),
    /// delivered in awkward pieces, with an echo request in between. The same exchanges with
    /// a real ovsdb-server are in `tests/ovsdb.rs`.
    #[tokio::test]
    async fn replays_a_recorded_exchange() {
        let (client_side, mut server_side) = tokio::io::duplex(1 << 16);
        let (r, w) = tokio::io::split(client_side);
        let (client, mut notes) = OvsdbClient::start(r, w);
        let server = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let n = server_side.read(&mut buf).await.unwrap();
            let req: Value = serde_json::from_slice(&buf[..n]).unwrap();
            assert_eq!(req["method"], "monitor");
            assert_eq!(req["params"][0], "Open_vSwitch");
            assert_eq!(
                req["params"][2]["Bridge"]["columns"],
                json!(["name", "ports"])
            );
            let id = req["id"].clone();
            let reply = format!(
                r#"{{"id":{id},"result":{{"Bridge":{{"1d5a1c4e-7d6e-4f1a-9a1b-0b0b0b0b0b0b":{{"new":{{"name":"br0","ports":["set",[["uuid","9f0e0d0c-0000-4000-8000-000000000001"],["uuid","9f0e0d0c-0000-4000-8000-000000000002"]]]}}}}}}}},"error":null}}{{"id":"echo","method":"echo","params":[]}}{{"id":null,"method":"update","params":[null,{{"Bridge":{{"1d5a1c4e-7d6e-4f1a-9a1b-0b0b0b0b0b0b":{{"old":{{"name":"br0"}}}}}}}}]}}"#
            );
            let bytes = reply.as_bytes();
            for part in [&bytes[..17], &bytes[17..200], &bytes[200..]] {
                server_side.write_all(part).await.unwrap();
                tokio::task::yield_now().await;
            }
            let n = server_side.read(&mut buf).await.unwrap();
            let echo: Value = serde_json::from_slice(&buf[..n]).unwrap();
            assert_eq!(echo, json!({"id": "echo", "result": [], "error": null}));
        });
        let initial = client
            .monitor(
                "Open_vSwitch",
                Value::Null,
                &[("Bridge", &["name", "ports"])],
            )
            .await
            .unwrap();
        let mut tables = Tables::default();
        tables.apply(&initial);
        let (uuid, br) = tables.rows("Bridge").next().unwrap();
        assert_eq!(uuid, "1d5a1c4e-7d6e-4f1a-9a1b-0b0b0b0b0b0b");
        assert_eq!(string(br, "name").as_deref(), Some("br0"));
        assert_eq!(
            set(br, "ports"),
            vec![
                json!("9f0e0d0c-0000-4000-8000-000000000001"),
                json!("9f0e0d0c-0000-4000-8000-000000000002")
            ]
        );
        match notes.recv().await.unwrap() {
            Notification::Update(_, u) => tables.apply(&u),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            tables.rows("Bridge").count(),
            0,
            "the delete removed the row"
        );
        server.await.unwrap();
        assert!(matches!(notes.recv().await, Some(Notification::Closed(_))));
    }

    #[test]
    fn columns_decode() {
        let row: Row = serde_json::from_value(json!({
            "external_ids": ["map", [["iface-id", "vm1"], ["attached-mac", "02:00:00:00:00:01"]]],
            "ofport": 3,
            "tag": ["set", []],
            "interfaces": ["uuid", "aaaa"]
        }))
        .unwrap();
        assert_eq!(map(&row, "external_ids")["iface-id"], "vm1");
        assert!(set(&row, "tag").is_empty());
        assert_eq!(set(&row, "interfaces"), vec![json!("aaaa")]);
        assert_eq!(set(&row, "ofport"), vec![json!(3)]);
    }
}
