//! `Metrics()`, `Metrics().Sum()`, `Metrics().Aggregates()` (Skydive's extension steps).
//!
//! A metric sample is a map of integer counters plus `Start` and `Last` (ms). Interface
//! metrics of nodes and flow metrics share this shape, so one implementation serves both.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use skydive_graph::{Map, Node, Value};

use crate::error::{Error, Result};
use crate::time::TimeSlice;

/// Maximum number of slices `Aggregates` produces.
pub const MAX_SLICES: i64 = 10_000;

/// The metadata key holding the samples of `Metrics(kind)` on nodes.
pub fn node_metric_key(kind: Option<&str>) -> Result<&'static str> {
    match kind {
        None | Some("LastUpdateMetric") => Ok("LastUpdateMetric"),
        Some("SFlow") | Some("SFlow.LastUpdateMetric") => Ok("SFlow.LastUpdateMetric"),
        Some("Ovs") | Some("Ovs.LastUpdateMetric") => Ok("Ovs.LastUpdateMetric"),
        Some(_) => Err(Error::msg("Metric field unknown")),
    }
}

fn int_field(m: &Map, k: &str) -> i64 {
    m.get(k).and_then(Value::cast_i64).unwrap_or(0)
}

/// Samples of the nodes (every revision in a time slice gives one), by node ID, sorted by
/// `Start`, deduplicated by `(ID, Start)`. In a time slice only samples strictly inside it
/// are kept.
pub fn node_metrics(
    nodes: &[Arc<Node>],
    key: &str,
    time: Option<TimeSlice>,
) -> BTreeMap<String, Vec<Value>> {
    let mut seen = HashSet::new();
    let mut out: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for n in nodes {
        let Some(Value::Map(m)) = n.metadata.get_path(key) else {
            continue;
        };
        let start = int_field(m, "Start");
        let last = int_field(m, "Last");
        if let Some(t) = time.filter(|t| !t.is_point())
            && !(start > t.start && last < t.last)
        {
            continue;
        }
        if !seen.insert((n.id.clone(), start)) {
            continue;
        }
        out.entry(n.id.to_string())
            .or_default()
            .push(Value::Map(m.clone()));
    }
    for samples in out.values_mut() {
        samples.sort_by_key(|s| s.as_map().map(|m| int_field(m, "Start")).unwrap_or(0));
    }
    out
}

fn samples(m: &BTreeMap<String, Vec<Value>>) -> impl Iterator<Item = &Map> {
    m.values().flatten().filter_map(Value::as_map)
}

/// All samples merged into one: counters added, `Start` the minimum, `Last` the maximum.
pub fn merge_all(m: &BTreeMap<String, Vec<Value>>) -> Value {
    let mut totals: BTreeMap<String, i64> = BTreeMap::new();
    let (mut start, mut last) = (i64::MAX, i64::MIN);
    for s in samples(m) {
        for (k, v) in s.iter() {
            match k.as_str() {
                "Start" => start = start.min(v.cast_i64().unwrap_or(start)),
                "Last" => last = last.max(v.cast_i64().unwrap_or(last)),
                _ => {
                    if let Some(i) = v.cast_i64() {
                        *totals.entry(k.to_string()).or_default() += i;
                    }
                }
            }
        }
    }
    let mut out = Map::new();
    for (k, v) in totals {
        out.insert(k, v);
    }
    if start != i64::MAX {
        out.insert("Start", start);
        out.insert("Last", last);
    }
    Value::Map(out)
}

/// The total of one counter over every sample.
pub fn sum_field(m: &BTreeMap<String, Vec<Value>>, key: &str) -> i64 {
    samples(m).map(|s| int_field(s, key)).sum()
}

/// The counter names found in the samples.
pub fn field_names(m: &BTreeMap<String, Vec<Value>>) -> Vec<Value> {
    let mut keys: Vec<String> = samples(m)
        .flat_map(|s| s.keys().map(|k| k.to_string()))
        .collect();
    keys.sort();
    keys.dedup();
    keys.into_iter().map(Value::from).collect()
}

/// `start + i * width`, saturating.
fn bound(start: i64, i: i64, width: i64) -> i64 {
    start.saturating_add(i.saturating_mul(width))
}

/// Cuts the sampled period into `slice_secs` slices and spreads each sample over the slices
/// it overlaps, pro rata by time. Empty slices are dropped.
pub fn aggregates(
    m: &BTreeMap<String, Vec<Value>>,
    slice_secs: i64,
    time: Option<TimeSlice>,
) -> Result<Vec<Value>> {
    if slice_secs <= 0 {
        return Err(Error::msg(
            "Aggregates slice length must be a positive number of seconds",
        ));
    }
    let all: Vec<&Map> = samples(m).collect();
    if all.is_empty() {
        return Ok(Vec::new());
    }
    let (start, last) = match time.filter(|t| !t.is_point()) {
        Some(t) => (t.start, t.last),
        None => (
            all.iter().map(|s| int_field(s, "Start")).min().unwrap_or(0),
            all.iter().map(|s| int_field(s, "Last")).max().unwrap_or(0),
        ),
    };
    let width = slice_secs.saturating_mul(1000);
    let span = last.saturating_sub(start).max(0);
    let count = (span / width + i64::from(span % width != 0)).max(1);
    if count > MAX_SLICES {
        return Err(Error::msg(format!(
            "Aggregates available slices exceeded: {count}/{MAX_SLICES}"
        )));
    }
    let mut buckets: Vec<BTreeMap<String, f64>> = vec![BTreeMap::new(); count as usize];
    for s in &all {
        let (s0, s1) = (int_field(s, "Start"), int_field(s, "Last"));
        for i in 0..count {
            let (b0, b1) = (bound(start, i, width), bound(start, i + 1, width));
            let share = if s1 <= s0 {
                if s0 >= b0 && (s0 < b1 || (i == count - 1 && s0 <= b1)) {
                    1.0
                } else {
                    0.0
                }
            } else {
                let overlap = s1.min(b1).saturating_sub(s0.max(b0));
                if overlap <= 0 {
                    0.0
                } else {
                    overlap as f64 / s1.saturating_sub(s0) as f64
                }
            };
            if share == 0.0 {
                continue;
            }
            for (k, v) in s.iter() {
                if k == "Start" || k == "Last" {
                    continue;
                }
                if let Some(x) = v.cast_i64() {
                    *buckets[i as usize].entry(k.to_string()).or_default() += x as f64 * share;
                }
            }
        }
    }
    Ok(buckets
        .into_iter()
        .enumerate()
        .filter(|(_, b)| !b.is_empty())
        .map(|(i, b)| {
            let mut out = Map::new();
            for (k, v) in b {
                out.insert(k, v.round() as i64);
            }
            let i = i as i64;
            out.insert("Start", bound(start, i, width));
            out.insert(
                "Last",
                bound(start, i + 1, width).min(last.max(bound(start, 1, width))),
            );
            Value::Map(out)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use skydive_graph::metadata;

    fn sample(start: i64, last: i64, rx: i64) -> Value {
        Value::Map(metadata! {"Start" => start, "Last" => last, "RxBytes" => rx})
    }

    #[test]
    fn merge_adds_counters_and_spans_time() {
        let m = BTreeMap::from([("a".to_string(), vec![sample(10, 20, 5), sample(20, 40, 7)])]);
        assert_eq!(
            serde_json::to_string(&merge_all(&m)).unwrap(),
            r#"{"Last":40,"RxBytes":12,"Start":10}"#
        );
        assert_eq!(sum_field(&m, "RxBytes"), 12);
    }

    #[test]
    fn aggregates_split_samples_pro_rata() {
        let m = BTreeMap::from([(
            "a".to_string(),
            vec![sample(0, 20_000, 100), sample(20_000, 30_000, 10)],
        )]);
        let out = aggregates(&m, 10, None).unwrap();
        let rx: Vec<i64> = out
            .iter()
            .map(|v| {
                v.as_map()
                    .unwrap()
                    .get("RxBytes")
                    .unwrap()
                    .cast_i64()
                    .unwrap()
            })
            .collect();
        assert_eq!(rx, vec![50, 50, 10]);
        let err = aggregates(
            &m,
            1,
            Some(TimeSlice {
                start: 0,
                last: 20_000_000,
            }),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "Aggregates available slices exceeded: 20000/10000"
        );
    }

    #[test]
    fn unknown_metric_kind_is_refused() {
        assert_eq!(
            node_metric_key(Some("Foo")).unwrap_err().to_string(),
            "Metric field unknown"
        );
        assert_eq!(
            node_metric_key(Some("SFlow")).unwrap(),
            "SFlow.LastUpdateMetric"
        );
    }
}
