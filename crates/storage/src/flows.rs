//! Flow storage: the latest state of every flow, the history of its metric updates and its
//! raw packets, queried by time and by any flow field (Skydive's extension steps "Time context",
//! Skydive's Elasticsearch documents "Flow documents").
//!
//! A flow is alive during `[Start, Last]`; a query for `[start, last]` returns the flows
//! whose life overlaps it and that match the filter. The embedded store answers the common
//! filters from indexes (`UUID`, `NodeTID`, `TrackingID`, `L3TrackingID`, `Application`,
//! `Network.A`, `Network.B`) and checks the whole filter on each candidate.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use rusqlite::{ToSql, params, params_from_iter};
use serde::{Deserialize, Serialize};
use skydive_flow::{FinishType, Flow, FlowMetric, IpMetric, RawPacket, TcpMetric};
use skydive_graph::{Filter, Time};

use crate::embedded::Embedded;
use crate::{Result, StorageError};

/// Where flows are kept.
pub trait FlowStore: Send + Sync {
    /// Stores flow updates (the latest state of each flow, its `LastUpdateMetric` as one
    /// metric update, its `LastRawPackets`); durable when this returns.
    fn store_flows(&self, flows: &[Flow]) -> Result<()>;
    /// The flows alive during `[start, last]` that match `filter`.
    fn flows(&self, filter: &Filter, start: Time, last: Time) -> Result<Vec<Flow>>;
    /// The metric updates, over `[start, last]`, of the flows `flows` would return, by UUID
    /// and ordered by `Start`.
    fn metrics(
        &self,
        filter: &Filter,
        start: Time,
        last: Time,
    ) -> Result<BTreeMap<String, Vec<FlowMetric>>>;
    /// The raw packets, captured during `[start, last]`, of the flows `flows` would return,
    /// by UUID and ordered by time.
    fn raw_packets(
        &self,
        filter: &Filter,
        start: Time,
        last: Time,
    ) -> Result<BTreeMap<String, Vec<RawPacket>>>;
}

/// The row key of a flow: the 64 bits of its UUID (16 hex digits, as the flow table makes
/// them), or a hash of any other string.
pub fn flow_key(uuid: &str) -> i64 {
    if uuid.len() == 16
        && let Ok(v) = u64::from_str_radix(uuid, 16)
    {
        return v as i64;
    }
    twox_hash::XxHash64::oneshot(0, uuid.as_bytes()) as i64
}

fn network_end(f: &Flow, b: bool) -> &str {
    f.network
        .as_ref()
        .map(|n| if b { n.b.as_str() } else { n.a.as_str() })
        .unwrap_or("")
}

/// One equality an index answers.
#[derive(Debug, PartialEq)]
enum Lookup {
    Key(i64),
    Column(&'static str, String),
}

/// The indexed columns, by flow field.
fn indexed_column(key: &str) -> Option<&'static str> {
    Some(match key {
        "NodeTID" => "node_tid",
        "TrackingID" => "tracking_id",
        "L3TrackingID" => "l3_tracking_id",
        "Application" => "application",
        "Network.A" => "network_a",
        "Network.B" => "network_b",
        _ => return None,
    })
}

/// A set of index lookups whose union holds every flow the filter matches, when there is
/// one: a term on an indexed field, an OR whose every branch has such a set, an AND one of
/// whose members has.
fn index_plan(f: &Filter) -> Option<Vec<Lookup>> {
    match f {
        Filter::TermString { key, value } if key == "UUID" => {
            Some(vec![Lookup::Key(flow_key(value))])
        }
        Filter::TermString { key, value } => {
            Some(vec![Lookup::Column(indexed_column(key)?, value.clone())])
        }
        Filter::Or(fs) => {
            let mut out = Vec::new();
            for f in fs {
                out.extend(index_plan(f)?);
            }
            Some(out)
        }
        Filter::And(fs) => fs.iter().find_map(index_plan),
        Filter::False => Some(Vec::new()),
        _ => None,
    }
}

/// At most this many lookups go into one statement.
const LOOKUPS_PER_STATEMENT: usize = 400;

fn decode_error(message: impl ToString) -> StorageError {
    StorageError::Decode {
        kind: "flow".into(),
        id: String::new(),
        message: message.to_string(),
    }
}

/// The rarely present parts of a flow's changing state, as JSON.
#[derive(Serialize)]
struct ExtraRef<'a> {
    #[serde(rename = "T", skip_serializing_if = "Option::is_none")]
    tcp_metric: &'a Option<Box<TcpMetric>>,
    #[serde(rename = "I", skip_serializing_if = "Option::is_none")]
    ip_metric: &'a Option<IpMetric>,
    #[serde(rename = "D", skip_serializing_if = "Option::is_none")]
    dns: &'a Option<Box<skydive_graph::Value>>,
    #[serde(rename = "H", skip_serializing_if = "Option::is_none")]
    dhcpv4: &'a Option<Box<skydive_graph::Value>>,
    #[serde(rename = "V", skip_serializing_if = "Option::is_none")]
    vrrpv2: &'a Option<Box<skydive_graph::Value>>,
}

#[derive(Deserialize, Default)]
struct Extra {
    #[serde(rename = "T", default)]
    tcp_metric: Option<Box<TcpMetric>>,
    #[serde(rename = "I", default)]
    ip_metric: Option<IpMetric>,
    #[serde(rename = "D", default)]
    dns: Option<Box<skydive_graph::Value>>,
    #[serde(rename = "H", default)]
    dhcpv4: Option<Box<skydive_graph::Value>>,
    #[serde(rename = "V", default)]
    vrrpv2: Option<Box<skydive_graph::Value>>,
}

const HAS_METRIC: u8 = 1;
const HAS_LAST_UPDATE: u8 = 2;
const HAS_EXTRA: u8 = 4;

fn put_varint(out: &mut Vec<u8>, v: i64) {
    // Zigzag, then 7 bits a byte.
    let mut u = ((v << 1) ^ (v >> 63)) as u64;
    while u >= 0x80 {
        out.push(u as u8 | 0x80);
        u >>= 7;
    }
    out.push(u as u8);
}

fn get_varint(b: &mut &[u8]) -> Result<i64> {
    let mut u = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = b
            .split_first()
            .ok_or_else(|| decode_error("truncated state"))?;
        *b = rest;
        u |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok((u >> 1) as i64 ^ -((u & 1) as i64));
        }
    }
    Err(decode_error("overlong varint in state"))
}

fn put_metric(out: &mut Vec<u8>, m: &FlowMetric) {
    for v in [
        m.ab_packets,
        m.ab_bytes,
        m.ba_packets,
        m.ba_bytes,
        m.start,
        m.last,
        m.rtt,
    ] {
        put_varint(out, v);
    }
}

fn get_metric(b: &mut &[u8]) -> Result<FlowMetric> {
    Ok(FlowMetric {
        ab_packets: get_varint(b)?,
        ab_bytes: get_varint(b)?,
        ba_packets: get_varint(b)?,
        ba_bytes: get_varint(b)?,
        start: get_varint(b)?,
        last: get_varint(b)?,
        rtt: get_varint(b)?,
    })
}

/// The changing part of a flow as stored at each update: its counters in a few dozen bytes
/// (zigzag varints; the row is rewritten at every update, so its size is what ingestion
/// costs), and the rarely present parts as JSON. Public for the B6 benchmark, which writes
/// the same rows with the `sqlite3` tool.
pub fn encode_state(f: &Flow, out: &mut Vec<u8>) -> Result<()> {
    out.clear();
    let extra = f.tcp_metric.is_some()
        || f.ip_metric.is_some()
        || f.dns.is_some()
        || f.dhcpv4.is_some()
        || f.vrrpv2.is_some();
    let mut flags = 0;
    if f.metric.is_some() {
        flags |= HAS_METRIC;
    }
    if f.last_update_metric.is_some() {
        flags |= HAS_LAST_UPDATE;
    }
    if extra {
        flags |= HAS_EXTRA;
    }
    out.push(flags);
    put_varint(out, f.finish_type.number());
    put_varint(out, f.raw_packets_captured);
    if let Some(m) = &f.metric {
        put_metric(out, m);
    }
    if let Some(m) = &f.last_update_metric {
        put_metric(out, m);
    }
    if extra {
        serde_json::to_writer(
            &mut *out,
            &ExtraRef {
                tcp_metric: &f.tcp_metric,
                ip_metric: &f.ip_metric,
                dns: &f.dns,
                dhcpv4: &f.dhcpv4,
                vrrpv2: &f.vrrpv2,
            },
        )
        .map_err(decode_error)?;
    }
    Ok(())
}

/// A stored flow: its first record with the latest state laid over it.
fn decode_flow(doc: &[u8], last: Time, state: &[u8]) -> Result<Flow> {
    let mut f: Flow = serde_json::from_slice(doc).map_err(decode_error)?;
    let (&flags, mut b) = state
        .split_first()
        .ok_or_else(|| decode_error("empty state"))?;
    f.last = last;
    f.finish_type = FinishType::from_number(get_varint(&mut b)?);
    f.raw_packets_captured = get_varint(&mut b)?;
    f.metric = (flags & HAS_METRIC != 0)
        .then(|| get_metric(&mut b))
        .transpose()?;
    f.last_update_metric = (flags & HAS_LAST_UPDATE != 0)
        .then(|| get_metric(&mut b))
        .transpose()?;
    let extra: Extra = if flags & HAS_EXTRA != 0 {
        serde_json::from_slice(b).map_err(decode_error)?
    } else {
        Extra::default()
    };
    f.tcp_metric = extra.tcp_metric;
    f.ip_metric = extra.ip_metric;
    f.dns = extra.dns;
    f.dhcpv4 = extra.dhcpv4;
    f.vrrpv2 = extra.vrrpv2;
    Ok(f)
}

impl Embedded {
    /// The stored flows matching the filter and time range, with their row keys, by key.
    fn matching_flows(&self, filter: &Filter, start: Time, last: Time) -> Result<Vec<(i64, Flow)>> {
        let conn = self.reader()?;
        let base =
            "SELECT d.key, d.doc, f.last, f.state FROM flows f JOIN flow_docs d ON d.key = f.key
                    WHERE f.start <= ?1 AND f.last >= ?2";
        let mut out = Vec::new();
        let mut run = |sql: &str, extra: Vec<Box<dyn ToSql>>| -> Result<()> {
            let mut stmt = conn.prepare_cached(sql)?;
            let mut args: Vec<Box<dyn ToSql>> = vec![Box::new(last), Box::new(start)];
            args.extend(extra);
            let mut rows = stmt.query(params_from_iter(args.iter()))?;
            while let Some(r) = rows.next()? {
                let flow = decode_flow(
                    r.get_ref(1)?.as_blob()?,
                    r.get(2)?,
                    r.get_ref(3)?.as_blob()?,
                )?;
                if filter.eval(&flow) {
                    out.push((r.get(0)?, flow));
                }
            }
            Ok(())
        };
        match index_plan(filter) {
            None => run(base, Vec::new())?,
            Some(lookups) => {
                for chunk in lookups.chunks(LOOKUPS_PER_STATEMENT) {
                    let mut sql = format!("{base} AND (");
                    let mut args: Vec<Box<dyn ToSql>> = Vec::new();
                    for (i, l) in chunk.iter().enumerate() {
                        if i > 0 {
                            sql.push_str(" OR ");
                        }
                        let n = args.len() + 3;
                        match l {
                            Lookup::Key(k) => {
                                sql.push_str(&format!("d.key = ?{n}"));
                                args.push(Box::new(*k));
                            }
                            Lookup::Column(c, v) => {
                                sql.push_str(&format!("d.{c} = ?{n}"));
                                args.push(Box::new(v.clone()));
                            }
                        }
                    }
                    sql.push(')');
                    run(&sql, args)?;
                }
            }
        }
        // Lookups of different chunks (or of two columns) can find the same flow.
        out.sort_by_key(|(k, _)| *k);
        out.dedup_by_key(|(k, _)| *k);
        Ok(out)
    }
}

impl FlowStore for Embedded {
    fn store_flows(&self, flows: &[Flow]) -> Result<()> {
        if flows.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        {
            // Most writes update a flow already stored: only its small `flows` row changes.
            let mut update =
                tx.prepare_cached("UPDATE flows SET last = ?2, state = ?3 WHERE key = ?1")?;
            let mut insert = tx.prepare_cached(
                "INSERT INTO flows (key, start, last, state) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (key) DO NOTHING",
            )?;
            let mut insert_doc = tx.prepare_cached(
                "INSERT INTO flow_docs (key, uuid, node_tid, tracking_id, l3_tracking_id,
                     application, network_a, network_b, doc)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                 ON CONFLICT (key) DO NOTHING",
            )?;
            let mut metric = tx.prepare_cached(
                "INSERT INTO flow_metrics (flow, start, last, ab_packets, ab_bytes, ba_packets,
                     ba_bytes, rtt)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?;
            let mut packet = tx.prepare_cached(
                "INSERT INTO flow_packets (flow, timestamp, idx, link_type, data)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            let mut state = Vec::with_capacity(256);
            let mut doc = Vec::with_capacity(1024);
            for f in flows {
                let key = flow_key(&f.uuid);
                encode_state(f, &mut state)?;
                if update.execute(params![key, f.last, state])? == 0 {
                    doc.clear();
                    serde_json::to_writer(&mut doc, f).map_err(decode_error)?;
                    insert_doc.execute(params![
                        key,
                        f.uuid.as_str(),
                        f.node_tid.as_str(),
                        f.tracking_id.as_str(),
                        f.l3_tracking_id.as_str(),
                        f.application.as_str(),
                        network_end(f, false),
                        network_end(f, true),
                        doc,
                    ])?;
                    insert.execute(params![key, f.start, f.last, state])?;
                }
                if let Some(m) = &f.last_update_metric {
                    metric.execute(params![
                        key,
                        m.start,
                        m.last,
                        m.ab_packets,
                        m.ab_bytes,
                        m.ba_packets,
                        m.ba_bytes,
                        m.rtt
                    ])?;
                }
                for p in &f.last_raw_packets {
                    packet.execute(params![key, p.timestamp, p.index, p.link_type, p.data])?;
                }
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn flows(&self, filter: &Filter, start: Time, last: Time) -> Result<Vec<Flow>> {
        Ok(self
            .matching_flows(filter, start, last)?
            .into_iter()
            .map(|(_, f)| f)
            .collect())
    }

    fn metrics(
        &self,
        filter: &Filter,
        start: Time,
        last: Time,
    ) -> Result<BTreeMap<String, Vec<FlowMetric>>> {
        // Metric rows are indexed by time: read the slice, keep the matching flows' rows.
        let mut out = self.rows_of_flows(
            filter,
            start,
            last,
            "SELECT flow, start, last, ab_packets, ab_bytes, ba_packets, ba_bytes, rtt
             FROM flow_metrics WHERE last >= ?1 AND start <= ?2",
            |r| {
                Ok(FlowMetric {
                    start: r.get(1)?,
                    last: r.get(2)?,
                    ab_packets: r.get(3)?,
                    ab_bytes: r.get(4)?,
                    ba_packets: r.get(5)?,
                    ba_bytes: r.get(6)?,
                    rtt: r.get(7)?,
                })
            },
        )?;
        for ms in out.values_mut() {
            ms.sort_by_key(|m| (m.start, m.last));
        }
        Ok(out)
    }

    fn raw_packets(
        &self,
        filter: &Filter,
        start: Time,
        last: Time,
    ) -> Result<BTreeMap<String, Vec<RawPacket>>> {
        let mut out = self.rows_of_flows(
            filter,
            start,
            last,
            "SELECT flow, timestamp, idx, link_type, data FROM flow_packets
             WHERE timestamp >= ?1 AND timestamp <= ?2",
            |r| {
                Ok(RawPacket {
                    timestamp: r.get(1)?,
                    index: r.get(2)?,
                    link_type: r.get(3)?,
                    data: r.get(4)?,
                })
            },
        )?;
        for ps in out.values_mut() {
            ps.sort_by_key(|p| (p.timestamp, p.index));
        }
        Ok(out)
    }
}

impl Embedded {
    /// The rows of a per-flow, time-indexed table (`sql` takes the slice as `?1`, `?2` and
    /// returns the flow key first) that belong to the flows matching `filter`, by UUID.
    fn rows_of_flows<T>(
        &self,
        filter: &Filter,
        start: Time,
        last: Time,
        sql: &str,
        decode: impl Fn(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<BTreeMap<String, Vec<T>>> {
        let flows = self.matching_flows(filter, start, last)?;
        let uuids: HashMap<i64, String> = flows
            .into_iter()
            .map(|(k, f)| (k, f.uuid.into_string()))
            .collect();
        let mut out: BTreeMap<String, Vec<T>> = BTreeMap::new();
        if uuids.is_empty() {
            return Ok(out);
        }
        let conn = self.reader()?;
        let mut stmt = conn.prepare_cached(sql)?;
        let mut rows = stmt.query(params![start, last])?;
        while let Some(r) = rows.next()? {
            let Some(uuid) = uuids.get(&r.get::<_, i64>(0)?) else {
                continue;
            };
            out.entry(uuid.clone()).or_default().push(decode(r)?);
        }
        Ok(out)
    }
}

/// Flows in memory: what the memory backend keeps while the analyzer runs.
#[derive(Default)]
pub struct MemoryFlows {
    inner: Mutex<MemoryFlowsInner>,
}

#[derive(Default)]
struct MemoryFlowsInner {
    flows: BTreeMap<String, Flow>,
    metrics: BTreeMap<String, Vec<FlowMetric>>,
    packets: BTreeMap<String, Vec<RawPacket>>,
}

impl std::fmt::Debug for MemoryFlows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MemoryFlows")
    }
}

impl MemoryFlows {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemoryFlowsInner> {
        // Every update below leaves the maps consistent before anything can panic.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn matching<'a>(
        inner: &'a MemoryFlowsInner,
        filter: &'a Filter,
        start: Time,
        last: Time,
    ) -> impl Iterator<Item = &'a Flow> + 'a {
        inner
            .flows
            .values()
            .filter(move |f| f.start <= last && f.last >= start && filter.eval(*f))
    }

    /// The items of `table` kept by `keep`, of `flows`, by UUID, sorted by `key`.
    fn per_flow<'a, T: Clone, K: Ord>(
        flows: impl Iterator<Item = &'a Flow>,
        table: &BTreeMap<String, Vec<T>>,
        keep: impl Fn(&T) -> bool,
        key: impl Fn(&T) -> K,
    ) -> BTreeMap<String, Vec<T>> {
        let mut out = BTreeMap::new();
        for f in flows {
            let mut items: Vec<T> = table
                .get(f.uuid.as_str())
                .into_iter()
                .flatten()
                .filter(|x| keep(x))
                .cloned()
                .collect();
            items.sort_by_key(|x| key(x));
            if !items.is_empty() {
                out.insert(f.uuid.to_string(), items);
            }
        }
        out
    }
}

impl FlowStore for MemoryFlows {
    fn store_flows(&self, flows: &[Flow]) -> Result<()> {
        let mut inner = self.lock();
        for f in flows {
            let mut stored = f.clone();
            stored.last_raw_packets.clear();
            if let Some(m) = f.last_update_metric {
                inner.metrics.entry(f.uuid.to_string()).or_default().push(m);
            }
            if !f.last_raw_packets.is_empty() {
                inner
                    .packets
                    .entry(f.uuid.to_string())
                    .or_default()
                    .extend(f.last_raw_packets.iter().cloned());
            }
            inner.flows.insert(f.uuid.to_string(), stored);
        }
        Ok(())
    }

    fn flows(&self, filter: &Filter, start: Time, last: Time) -> Result<Vec<Flow>> {
        let inner = self.lock();
        let mut out: Vec<Flow> = Self::matching(&inner, filter, start, last)
            .cloned()
            .collect();
        out.sort_by_key(|f| flow_key(&f.uuid));
        Ok(out)
    }

    fn metrics(
        &self,
        filter: &Filter,
        start: Time,
        last: Time,
    ) -> Result<BTreeMap<String, Vec<FlowMetric>>> {
        let inner = self.lock();
        Ok(Self::per_flow(
            Self::matching(&inner, filter, start, last),
            &inner.metrics,
            |m| m.start <= last && m.last >= start,
            |m| (m.start, m.last),
        ))
    }

    fn raw_packets(
        &self,
        filter: &Filter,
        start: Time,
        last: Time,
    ) -> Result<BTreeMap<String, Vec<RawPacket>>> {
        let inner = self.lock();
        Ok(Self::per_flow(
            Self::matching(&inner, filter, start, last),
            &inner.packets,
            |p| p.timestamp >= start && p.timestamp <= last,
            |p| (p.timestamp, p.index),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips() {
        let mut f = Flow {
            metric: Some(FlowMetric {
                ab_packets: 3,
                ab_bytes: -1,
                ba_packets: i64::MAX,
                ba_bytes: i64::MIN,
                start: 1_764_000_000_000,
                last: 1_764_000_000_999,
                rtt: 0,
            }),
            finish_type: FinishType::TcpRst,
            raw_packets_captured: 7,
            ..Default::default()
        };
        let mut buf = Vec::new();
        for extra in [false, true] {
            if extra {
                f.tcp_metric = Some(Box::new(TcpMetric {
                    ab_syn_start: 12,
                    ..Default::default()
                }));
                f.last_update_metric = f.metric;
            }
            encode_state(&f, &mut buf).unwrap();
            let back = decode_flow(b"{}", 5, &buf).unwrap();
            assert_eq!(
                back,
                Flow {
                    last: 5,
                    ..f.clone()
                }
            );
        }
        assert!(decode_flow(b"{}", 5, &buf[..3]).is_err());
        assert!(decode_flow(b"{}", 5, &[1, 0x80]).is_err());
    }

    #[test]
    fn flow_keys_are_the_uuid_bits() {
        assert_eq!(flow_key("00000000000000ff"), 255);
        assert_eq!(flow_key("ffffffffffffffff"), -1);
        assert_ne!(flow_key("not-hex"), flow_key("not-hex2"));
    }

    #[test]
    fn plans_use_indexes_only_when_they_cover_the_filter() {
        let net = Filter::or(vec![
            Filter::term_str("Network.A", "10.0.0.1"),
            Filter::term_str("Network.B", "10.0.0.1"),
        ]);
        assert_eq!(
            index_plan(&net),
            Some(vec![
                Lookup::Column("network_a", "10.0.0.1".into()),
                Lookup::Column("network_b", "10.0.0.1".into())
            ])
        );
        let and = Filter::and(vec![
            Filter::term_int("Transport.A", 80),
            Filter::term_str("NodeTID", "t1"),
        ]);
        assert_eq!(
            index_plan(&and),
            Some(vec![Lookup::Column("node_tid", "t1".into())])
        );
        let or_unindexed = Filter::or(vec![
            Filter::term_str("NodeTID", "t1"),
            Filter::term_str("LayersPath", "Ethernet/IPv4"),
        ]);
        assert_eq!(index_plan(&or_unindexed), None);
        assert_eq!(
            index_plan(&Filter::term_str("UUID", "00000000000000ff")),
            Some(vec![Lookup::Key(255)])
        );
    }
}
