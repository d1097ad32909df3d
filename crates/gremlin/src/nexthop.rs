//! `NextHop(ip)`: the route a node would use to reach an address (longest prefix over its
//! `RoutingTables`, then the neighbour table for the MAC address).

use std::net::IpAddr;

use skydive_graph::{Map, Node, Value};

fn parse_prefix(s: &str) -> Option<(IpAddr, u8)> {
    let (a, l) = s.split_once('/')?;
    let addr: IpAddr = a.parse().ok()?;
    let len: u8 = l.parse().ok()?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    (len <= max).then_some((addr, len))
}

fn contains((net, len): (IpAddr, u8), ip: IpAddr) -> bool {
    match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(i)) => {
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            (u32::from(n) & mask) == (u32::from(i) & mask)
        }
        (IpAddr::V6(n), IpAddr::V6(i)) => {
            let mask = if len == 0 {
                0
            } else {
                u128::MAX << (128 - len)
            };
            (u128::from(n) & mask) == (u128::from(i) & mask)
        }
        _ => false,
    }
}

fn str_of<'a>(m: &'a Map, k: &str) -> &'a str {
    m.get(k).and_then(Value::as_str).unwrap_or("")
}

/// The next hop of `node` towards `ip`, as `{"Priority","IP","MAC","IfIndex"}`.
pub fn next_hop(node: &Node, ip: IpAddr) -> Option<Value> {
    let tables = node.metadata.get("RoutingTables")?.as_array()?;
    let mut best: Option<(u8, &Map)> = None;
    for table in tables.iter().filter_map(Value::as_map) {
        let Some(routes) = table.get("Routes").and_then(Value::as_array) else {
            continue;
        };
        for route in routes.iter().filter_map(Value::as_map) {
            let Some(prefix) = parse_prefix(str_of(route, "Prefix")) else {
                continue;
            };
            if contains(prefix, ip) && best.is_none_or(|(len, _)| prefix.1 > len) {
                best = Some((prefix.1, route));
            }
        }
    }
    let (_, route) = best?;
    let hops = route.get("NextHops").and_then(Value::as_array);
    let hop = hops
        .into_iter()
        .flatten()
        .filter_map(Value::as_map)
        .min_by_key(|h| h.get("Priority").and_then(Value::cast_i64).unwrap_or(0));
    let mut out = Map::new();
    let gateway = hop.map(|h| str_of(h, "IP")).filter(|s| !s.is_empty());
    if let Some(h) = hop {
        out.insert(
            "Priority",
            h.get("Priority").and_then(Value::cast_i64).unwrap_or(0),
        );
        if let Some(i) = h.get("IfIndex").and_then(Value::cast_i64) {
            out.insert("IfIndex", i);
        }
    }
    let target = gateway
        .map(str::to_string)
        .unwrap_or_else(|| ip.to_string());
    if let Some(g) = gateway {
        out.insert("IP", g);
    }
    let mac = hop
        .map(|h| str_of(h, "MAC"))
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .or_else(|| neighbour_mac(node, &target));
    if let Some(mac) = mac {
        out.insert("MAC", mac);
    }
    Some(Value::Map(out))
}

fn neighbour_mac(node: &Node, ip: &str) -> Option<String> {
    node.metadata
        .get("Neighbors")?
        .as_array()?
        .iter()
        .filter_map(Value::as_map)
        .find(|n| str_of(n, "IP") == ip)
        .map(|n| str_of(n, "MAC").to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(json: &str) -> Node {
        Node::new("n", serde_json::from_str(json).unwrap(), "h", "o", 1)
    }

    #[test]
    fn longest_prefix_wins_and_neighbour_gives_the_mac() {
        let n = node(
            r#"{"RoutingTables":[{"ID":254,"Routes":[
                {"Prefix":"0.0.0.0/0","NextHops":[{"IP":"10.0.0.1","Priority":0,"IfIndex":2}]},
                {"Prefix":"10.0.0.0/24","NextHops":[{"Priority":0,"IfIndex":2}]}]}],
              "Neighbors":[{"IP":"10.0.0.1","MAC":"aa:aa:aa:aa:aa:01"},{"IP":"10.0.0.7","MAC":"aa:aa:aa:aa:aa:07"}]}"#,
        );
        let far = next_hop(&n, "8.8.8.8".parse().unwrap()).unwrap();
        assert_eq!(
            serde_json::to_string(&far).unwrap(),
            r#"{"IP":"10.0.0.1","IfIndex":2,"MAC":"aa:aa:aa:aa:aa:01","Priority":0}"#
        );
        let near = next_hop(&n, "10.0.0.7".parse().unwrap()).unwrap();
        assert_eq!(
            serde_json::to_string(&near).unwrap(),
            r#"{"IfIndex":2,"MAC":"aa:aa:aa:aa:aa:07","Priority":0}"#
        );
        assert!(next_hop(&node("{}"), "8.8.8.8".parse().unwrap()).is_none());
    }
}
