//! OpenFlow rules and groups of OVS bridges (Skydive's `ofrule` and `ofgroup` nodes,
//! `ovs.oflow.enable`), read with `ovs-ofctl dump-flows --no-stats` and `ovs-ofctl -O
//! OpenFlow13 dump-groups`, as Skydive's non-native mode read `ovs-ofctl` output. The parsers
//! are pure; [`dump`] runs the commands.

use skydive_graph::{Map, Value};

/// One OpenFlow rule as `ovs-ofctl` prints it.
#[derive(Clone, Debug, PartialEq)]
pub struct OfRule {
    pub cookie: String,
    pub table: i64,
    pub priority: i64,
    /// The match as printed (`ip,nw_src=10.0.0.0/8`), empty for "any".
    pub filters: String,
    pub actions: String,
}

/// One OpenFlow group.
#[derive(Clone, Debug, PartialEq)]
pub struct OfGroup {
    pub id: i64,
    pub kind: String,
    pub buckets: Vec<String>,
    /// The rest of the description (`selection_method=…`, …).
    pub meta: String,
}

/// OpenFlow's default priority, which `ovs-ofctl` does not print.
const DEFAULT_PRIORITY: i64 = 32768;

/// Splits on `sep` outside parentheses and brackets.
fn split_top(s: &str, sep: char) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' | '[' => depth += 1,
            ')' | ']' => depth -= 1,
            c if c == sep && depth == 0 => {
                out.push(&s[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out.into_iter().filter(|t| !t.trim().is_empty()).collect()
}

/// Parses the lines of `ovs-ofctl dump-flows --no-stats BRIDGE`; other lines are skipped.
pub fn parse_flows(text: &str) -> Vec<OfRule> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        let Some(idx) = line.find("actions=") else {
            continue;
        };
        let (head, actions) = (line[..idx].trim(), &line[idx + "actions=".len()..]);
        let mut rule = OfRule {
            cookie: "0x0".into(),
            table: 0,
            priority: DEFAULT_PRIORITY,
            filters: String::new(),
            actions: actions.trim().to_string(),
        };
        let mut filters = Vec::new();
        for tok in head.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            match tok.split_once('=') {
                Some(("cookie", v)) => rule.cookie = v.to_string(),
                Some(("table", v)) => rule.table = v.parse().unwrap_or(0),
                Some(("priority", v)) => rule.priority = v.parse().unwrap_or(DEFAULT_PRIORITY),
                _ => filters.push(tok),
            }
        }
        rule.filters = filters.join(",");
        out.push(rule);
    }
    out
}

/// Parses `ovs-ofctl -O OpenFlow13 dump-groups BRIDGE`.
pub fn parse_groups(text: &str) -> Vec<OfGroup> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if !line.starts_with("group_id=") {
            continue;
        }
        let mut g = OfGroup {
            id: 0,
            kind: String::new(),
            buckets: Vec::new(),
            meta: String::new(),
        };
        let mut meta = Vec::new();
        // Buckets run to the next `bucket=`: split there first.
        let mut parts = line.split(",bucket=");
        let head = parts.next().unwrap_or("");
        g.buckets = parts.map(str::to_string).collect();
        for tok in split_top(head, ',') {
            match tok.split_once('=') {
                Some(("group_id", v)) => g.id = v.parse().unwrap_or(0),
                Some(("type", v)) => g.kind = v.to_string(),
                _ => meta.push(tok),
            }
        }
        g.meta = meta.join(",");
        out.push(g);
    }
    out
}

/// `{"Key","Value","Mask"}` filters of a match (`nw_src=10.0.0.0/8` → key, value, mask;
/// `ip` → a key alone).
pub fn filters_value(filters: &str) -> Value {
    Value::Array(
        split_top(filters, ',')
            .into_iter()
            .map(|f| {
                let mut m = Map::new();
                let (k, v) = f.split_once('=').unwrap_or((f, ""));
                let (v, mask) = v.split_once('/').unwrap_or((v, ""));
                m.insert("Key", k);
                m.insert("Value", v);
                m.insert("Mask", mask);
                Value::Map(m)
            })
            .collect(),
    )
}

/// `{"Function","Arguments","Key"}` actions (`resubmit(,1)` → `resubmit`, `["", "1"]`;
/// `output:2` → `output`, `["2"]`).
pub fn actions_value(actions: &str) -> Value {
    Value::Array(
        split_top(actions, ',')
            .into_iter()
            .map(|a| {
                let a = a.trim();
                let (function, args): (&str, Vec<&str>) = if let Some(open) = a.find('(')
                    && a.ends_with(')')
                    && !a[..open].contains(':')
                {
                    (&a[..open], a[open + 1..a.len() - 1].split(',').collect())
                } else if let Some((f, rest)) = a.split_once(':') {
                    (f, vec![rest])
                } else {
                    (a, Vec::new())
                };
                let mut m = Map::new();
                m.insert("Function", function);
                m.insert(
                    "Arguments",
                    Value::Array(args.into_iter().map(Value::from).collect()),
                );
                m.insert("Key", a);
                Value::Map(m)
            })
            .collect(),
    )
}

/// Why a bridge's OpenFlow rules cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum OflowError {
    #[error("ovs-ofctl: {0}")]
    Run(#[from] std::io::Error),
    #[error("ovs-ofctl dump-flows {bridge}: {stderr}")]
    Refused { bridge: String, stderr: String },
}

/// The rules and groups of one bridge, or why they cannot be read.
pub async fn dump(bridge: &str) -> Result<(Vec<OfRule>, Vec<OfGroup>), OflowError> {
    let run = |args: Vec<&str>| {
        let mut c = tokio::process::Command::new("ovs-ofctl");
        c.args(args).kill_on_drop(true);
        c
    };
    let flows = run(vec!["dump-flows", "--no-stats", bridge])
        .output()
        .await?;
    if !flows.status.success() {
        return Err(OflowError::Refused {
            bridge: bridge.to_string(),
            stderr: String::from_utf8_lossy(&flows.stderr).trim().to_string(),
        });
    }
    let groups = run(vec!["-O", "OpenFlow13", "dump-groups", bridge])
        .output()
        .await?;
    Ok((
        parse_flows(&String::from_utf8_lossy(&flows.stdout)),
        parse_groups(&String::from_utf8_lossy(&groups.stdout)),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Printed by ovs-ofctl 3.1 for the rules of the bridge of the OVS test.
    const FLOWS: &str = " priority=0 actions=NORMAL
 actions=drop
 priority=100,ip,nw_src=10.0.0.0/8 actions=resubmit(,1)
 cookie=0x2a, table=1, priority=50,in_port=1,dl_vlan=10 actions=strip_vlan,output:2
 table=1, priority=10,tcp,tp_dst=80 actions=mod_nw_tos:16,NORMAL
NXST_FLOW reply (xid=0x4):
";

    #[test]
    fn flows_as_ovs_ofctl_prints_them() {
        let r = parse_flows(FLOWS);
        assert_eq!(r.len(), 5);
        assert_eq!(
            r[0],
            OfRule {
                cookie: "0x0".into(),
                table: 0,
                priority: 0,
                filters: "".into(),
                actions: "NORMAL".into()
            }
        );
        assert_eq!(r[1].priority, 32768);
        assert_eq!(r[1].actions, "drop");
        assert_eq!(r[2].filters, "ip,nw_src=10.0.0.0/8");
        assert_eq!(
            (
                r[3].cookie.as_str(),
                r[3].table,
                r[3].priority,
                r[3].filters.as_str()
            ),
            ("0x2a", 1, 50, "in_port=1,dl_vlan=10")
        );
        assert_eq!(r[4].actions, "mod_nw_tos:16,NORMAL");
    }

    #[test]
    fn filters_and_actions_as_skydive_shows_them() {
        let f = filters_value("ip,nw_src=10.0.0.0/8");
        let f = f.as_array().unwrap();
        assert_eq!(f.len(), 2);
        let m = f[1].as_map().unwrap();
        assert_eq!(m.get("Key").and_then(Value::as_str), Some("nw_src"));
        assert_eq!(m.get("Value").and_then(Value::as_str), Some("10.0.0.0"));
        assert_eq!(m.get("Mask").and_then(Value::as_str), Some("8"));
        assert_eq!(
            f[0].as_map().unwrap().get("Key").and_then(Value::as_str),
            Some("ip")
        );
        let a = actions_value(
            "resubmit(,1),output:2,strip_vlan,load:0x1->NXM_NX_REG0[],learn(table=1,priority=3)",
        );
        let a = a.as_array().unwrap();
        let fa = |i: usize| {
            let m = a[i].as_map().unwrap();
            let args: Vec<String> = m
                .get("Arguments")
                .and_then(Value::as_array)
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_string())
                .collect();
            (
                m.get("Function")
                    .and_then(Value::as_str)
                    .unwrap()
                    .to_string(),
                args,
            )
        };
        assert_eq!(a.len(), 5);
        assert_eq!(fa(0), ("resubmit".into(), vec!["".into(), "1".into()]));
        assert_eq!(fa(1), ("output".into(), vec!["2".into()]));
        assert_eq!(fa(2), ("strip_vlan".into(), vec![]));
        assert_eq!(fa(3), ("load".into(), vec!["0x1->NXM_NX_REG0[]".into()]));
        assert_eq!(
            fa(4),
            ("learn".into(), vec!["table=1".into(), "priority=3".into()])
        );
    }

    #[test]
    fn groups_with_their_buckets() {
        let g = parse_groups(
            "OFPST_GROUP_DESC reply (OF1.3) (xid=0x2):\n group_id=1,type=all,bucket=actions=output:1,bucket=actions=output:2\n group_id=7,type=select,selection_method=hash,bucket=weight:100,actions=output:3\n",
        );
        assert_eq!(g.len(), 2);
        assert_eq!((g[0].id, g[0].kind.as_str()), (1, "all"));
        assert_eq!(g[0].buckets, vec!["actions=output:1", "actions=output:2"]);
        assert_eq!(g[1].meta, "selection_method=hash");
        assert_eq!(g[1].buckets, vec!["weight:100,actions=output:3"]);
    }
}
