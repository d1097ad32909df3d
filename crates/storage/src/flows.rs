//! Flow storage: the latest state of every flow, the history of its metric updates and its
//! raw packets, queried by time and by any flow field (compat spec §4.6 "Time context",
//! §10.2 "Flow documents").
//!
//! A flow is alive during `[Start, Last]`; a query for `[start, last]` returns the flows
//! whose life overlaps it and that match the filter. The embedded store answers the common
//! filters from indexes (`UUID`, `NodeTID`, `TrackingID`, `L3TrackingID`, `Application`,
//! `Network.A`, `Network.B`) and checks the whole filter on each candidate.

use std::collections::BTreeMap;
use std::sync::Mutex;

use rusqlite::{ToSql, params, params_from_iter};
use skydive_flow::{Flow, FlowMetric, RawPacket};
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

fn decode_flow(doc: &[u8]) -> Result<Flow> {
    serde_json::from_slice(doc).map_err(|e| StorageError::Decode {
        kind: "flow".into(),
        id: String::new(),
        message: e.to_string(),
    })
}

impl Embedded {
    /// The stored flows matching the filter and time range, with their row keys.
    fn matching_flows(&self, filter: &Filter, start: Time, last: Time) -> Result<Vec<(i64, Flow)>> {
        let conn = self.reader()?;
        let base = "SELECT key, doc FROM flows WHERE start <= ?1 AND last >= ?2";
        let mut out = Vec::new();
        let mut run = |sql: &str, extra: Vec<Box<dyn ToSql>>| -> Result<()> {
            let mut stmt = conn.prepare(sql)?;
            let mut args: Vec<Box<dyn ToSql>> = vec![Box::new(last), Box::new(start)];
            args.extend(extra);
            let mut rows = stmt.query(params_from_iter(args.iter()))?;
            while let Some(r) = rows.next()? {
                let flow = decode_flow(r.get_ref(1)?.as_blob()?)?;
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
                                sql.push_str(&format!("key = ?{n}"));
                                args.push(Box::new(*k));
                            }
                            Lookup::Column(c, v) => {
                                sql.push_str(&format!("{c} = ?{n}"));
                                args.push(Box::new(v.clone()));
                            }
                        }
                    }
                    sql.push(')');
                    run(&sql, args)?;
                }
                // Lookups of different chunks (or of two columns) can find the same flow.
                out.sort_by_key(|(k, _)| *k);
                out.dedup_by_key(|(k, _)| *k);
            }
        }
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
            let mut upsert = tx.prepare_cached(
                "INSERT INTO flows (key, uuid, node_tid, tracking_id, l3_tracking_id,
                     application, network_a, network_b, start, last, doc)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
                 ON CONFLICT (key) DO UPDATE SET last = excluded.last, doc = excluded.doc
                 WHERE flows.uuid = excluded.uuid",
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
            let mut doc = Vec::with_capacity(1024);
            for f in flows {
                let key = flow_key(&f.uuid);
                doc.clear();
                serde_json::to_writer(&mut doc, f).map_err(|e| StorageError::Decode {
                    kind: "flow".into(),
                    id: f.uuid.clone(),
                    message: e.to_string(),
                })?;
                upsert.execute(params![
                    key,
                    f.uuid,
                    f.node_tid,
                    f.tracking_id,
                    f.l3_tracking_id,
                    f.application,
                    network_end(f, false),
                    network_end(f, true),
                    f.start,
                    f.last,
                    doc,
                ])?;
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
        let flows = self.matching_flows(filter, start, last)?;
        let conn = self.reader()?;
        let mut stmt = conn.prepare_cached(
            "SELECT start, last, ab_packets, ab_bytes, ba_packets, ba_bytes, rtt
             FROM flow_metrics WHERE flow = ?1 AND start <= ?2 AND last >= ?3
             ORDER BY start",
        )?;
        let mut out = BTreeMap::new();
        for (key, flow) in flows {
            let metrics = stmt
                .query_map(params![key, last, start], |r| {
                    Ok(FlowMetric {
                        start: r.get(0)?,
                        last: r.get(1)?,
                        ab_packets: r.get(2)?,
                        ab_bytes: r.get(3)?,
                        ba_packets: r.get(4)?,
                        ba_bytes: r.get(5)?,
                        rtt: r.get(6)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            if !metrics.is_empty() {
                out.insert(flow.uuid, metrics);
            }
        }
        Ok(out)
    }

    fn raw_packets(
        &self,
        filter: &Filter,
        start: Time,
        last: Time,
    ) -> Result<BTreeMap<String, Vec<RawPacket>>> {
        let flows = self.matching_flows(filter, start, last)?;
        let conn = self.reader()?;
        let mut stmt = conn.prepare_cached(
            "SELECT timestamp, idx, link_type, data FROM flow_packets
             WHERE flow = ?1 AND timestamp >= ?2 AND timestamp <= ?3
             ORDER BY timestamp, idx",
        )?;
        let mut out = BTreeMap::new();
        for (key, flow) in flows {
            let packets = stmt
                .query_map(params![key, start, last], |r| {
                    Ok(RawPacket {
                        timestamp: r.get(0)?,
                        index: r.get(1)?,
                        link_type: r.get(2)?,
                        data: r.get(3)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            if !packets.is_empty() {
                out.insert(flow.uuid, packets);
            }
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

    fn matching(inner: &MemoryFlowsInner, filter: &Filter, start: Time, last: Time) -> Vec<Flow> {
        inner
            .flows
            .values()
            .filter(|f| f.start <= last && f.last >= start && filter.eval(*f))
            .cloned()
            .collect()
    }
}

impl FlowStore for MemoryFlows {
    fn store_flows(&self, flows: &[Flow]) -> Result<()> {
        let mut inner = self.lock();
        for f in flows {
            let mut stored = f.clone();
            stored.last_raw_packets.clear();
            if let Some(m) = f.last_update_metric {
                inner.metrics.entry(f.uuid.clone()).or_default().push(m);
            }
            if !f.last_raw_packets.is_empty() {
                inner
                    .packets
                    .entry(f.uuid.clone())
                    .or_default()
                    .extend(f.last_raw_packets.iter().cloned());
            }
            inner.flows.insert(f.uuid.clone(), stored);
        }
        Ok(())
    }

    fn flows(&self, filter: &Filter, start: Time, last: Time) -> Result<Vec<Flow>> {
        let inner = self.lock();
        let mut out = Self::matching(&inner, filter, start, last);
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
        let mut out = BTreeMap::new();
        for f in Self::matching(&inner, filter, start, last) {
            let mut ms: Vec<FlowMetric> = inner
                .metrics
                .get(&f.uuid)
                .into_iter()
                .flatten()
                .filter(|m| m.start <= last && m.last >= start)
                .copied()
                .collect();
            ms.sort_by_key(|m| m.start);
            if !ms.is_empty() {
                out.insert(f.uuid, ms);
            }
        }
        Ok(out)
    }

    fn raw_packets(
        &self,
        filter: &Filter,
        start: Time,
        last: Time,
    ) -> Result<BTreeMap<String, Vec<RawPacket>>> {
        let inner = self.lock();
        let mut out = BTreeMap::new();
        for f in Self::matching(&inner, filter, start, last) {
            let mut ps: Vec<RawPacket> = inner
                .packets
                .get(&f.uuid)
                .into_iter()
                .flatten()
                .filter(|p| p.timestamp >= start && p.timestamp <= last)
                .cloned()
                .collect();
            ps.sort_by_key(|p| (p.timestamp, p.index));
            if !ps.is_empty() {
                out.insert(f.uuid, ps);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
