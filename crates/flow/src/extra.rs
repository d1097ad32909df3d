//! The application layers a capture may ask for (`ExtraLayers`): DNS, DHCPv4 and VRRPv2,
//! decoded into the shapes of Skydive's flow layers (Skydive's flow JSON: snake_case keys from
//! protobuf naming). Every length is checked; a malformed message gives `None`.

use std::net::{Ipv4Addr, Ipv6Addr};

use skydive_graph::{Map, Value};

fn be16(d: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*d.get(at)?, *d.get(at + 1)?]))
}

fn be32(d: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes([
        *d.get(at)?,
        *d.get(at + 1)?,
        *d.get(at + 2)?,
        *d.get(at + 3)?,
    ]))
}

/// A domain name at `at`, following compression pointers (at most 32 of them, so that a
/// pointer loop ends). Returns the name and the offset after it in the message.
fn dns_name(msg: &[u8], mut at: usize) -> Option<(String, usize)> {
    let mut name = String::new();
    let mut end = None;
    let mut jumps = 0;
    loop {
        let len = *msg.get(at)? as usize;
        if len == 0 {
            at += 1;
            break;
        }
        if len & 0xc0 == 0xc0 {
            let ptr = (be16(msg, at)? & 0x3fff) as usize;
            end.get_or_insert(at + 2);
            jumps += 1;
            if jumps > 32 || ptr >= msg.len() {
                return None;
            }
            at = ptr;
            continue;
        }
        if len & 0xc0 != 0 {
            return None;
        }
        let label = msg.get(at + 1..at + 1 + len)?;
        if !name.is_empty() {
            name.push('.');
        }
        name.push_str(&String::from_utf8_lossy(label));
        at += 1 + len;
        if name.len() > 1024 {
            return None;
        }
    }
    Some((name, end.unwrap_or(at)))
}

fn dns_type(t: u16) -> String {
    match t {
        1 => "A".into(),
        2 => "NS".into(),
        5 => "CNAME".into(),
        6 => "SOA".into(),
        12 => "PTR".into(),
        15 => "MX".into(),
        16 => "TXT".into(),
        28 => "AAAA".into(),
        33 => "SRV".into(),
        41 => "OPT".into(),
        255 => "ANY".into(),
        other => other.to_string(),
    }
}

fn dns_class(c: u16) -> String {
    match c {
        1 => "IN".into(),
        3 => "CH".into(),
        4 => "HS".into(),
        255 => "Any".into(),
        other => other.to_string(),
    }
}

fn dns_record(msg: &[u8], at: usize) -> Option<(Value, usize)> {
    let (name, at) = dns_name(msg, at)?;
    let ty = be16(msg, at)?;
    let class = be16(msg, at + 2)?;
    let ttl = be32(msg, at + 4)?;
    let len = be16(msg, at + 8)? as usize;
    let data_at = at + 10;
    let data = msg.get(data_at..data_at + len)?;
    let mut m = Map::new();
    m.insert("name", name.as_str());
    m.insert("type", dns_type(ty).as_str());
    m.insert("class", dns_class(class).as_str());
    m.insert("TTL", ttl as i64);
    m.insert("data_length", len as i64);
    match ty {
        1 if len == 4 => {
            m.insert(
                "IP",
                Ipv4Addr::new(data[0], data[1], data[2], data[3])
                    .to_string()
                    .as_str(),
            );
        }
        28 if len == 16 => {
            let mut b = [0u8; 16];
            b.copy_from_slice(data);
            m.insert("IP", Ipv6Addr::from(b).to_string().as_str());
        }
        2 => {
            m.insert("NS", dns_name(msg, data_at)?.0.as_str());
        }
        5 => {
            m.insert("c_name", dns_name(msg, data_at)?.0.as_str());
        }
        12 => {
            m.insert("PTR", dns_name(msg, data_at)?.0.as_str());
        }
        15 => {
            let mut mx = Map::new();
            mx.insert("preference", be16(msg, data_at)? as i64);
            mx.insert("name", dns_name(msg, data_at + 2)?.0.as_str());
            m.insert("MX", Value::Map(mx));
        }
        16 => {
            let mut txts = Vec::new();
            let mut i = 0;
            while i < data.len() {
                let l = data[i] as usize;
                let t = data.get(i + 1..i + 1 + l)?;
                txts.push(Value::from(String::from_utf8_lossy(t).as_ref()));
                i += 1 + l;
            }
            m.insert("TXTs", Value::Array(txts));
        }
        6 => {
            let (mname, a) = dns_name(msg, data_at)?;
            let (rname, a) = dns_name(msg, a)?;
            let mut soa = Map::new();
            soa.insert("mname", mname.as_str());
            soa.insert("rname", rname.as_str());
            for (i, k) in ["serial", "refresh", "retry", "expire", "minimum"]
                .iter()
                .enumerate()
            {
                soa.insert(*k, be32(msg, a + 4 * i)? as i64);
            }
            m.insert("SOA", Value::Map(soa));
        }
        33 => {
            let mut srv = Map::new();
            srv.insert("priority", be16(msg, data_at)? as i64);
            srv.insert("weight", be16(msg, data_at + 2)? as i64);
            srv.insert("port", be16(msg, data_at + 4)? as i64);
            srv.insert("name", dns_name(msg, data_at + 6)?.0.as_str());
            m.insert("SRV", Value::Map(srv));
        }
        _ => {}
    }
    Some((Value::Map(m), data_at + len))
}

/// A DNS message (`body` starts at the DNS header) with the time it was seen.
pub fn dns(body: &[u8], timestamp_ms: i64) -> Option<Value> {
    if body.len() < 12 {
        return None;
    }
    let flags = be16(body, 2)?;
    let counts: Vec<u16> = (0..4).map(|i| be16(body, 4 + 2 * i).unwrap_or(0)).collect();
    let mut m = Map::new();
    m.insert("ID", be16(body, 0)? as i64);
    m.insert("QR", flags & 0x8000 != 0);
    m.insert("op_code", ((flags >> 11) & 0xf) as i64);
    m.insert("AA", flags & 0x0400 != 0);
    m.insert("TC", flags & 0x0200 != 0);
    m.insert("RD", flags & 0x0100 != 0);
    m.insert("RA", flags & 0x0080 != 0);
    m.insert("z", ((flags >> 4) & 0x7) as i64);
    m.insert("response_code", (flags & 0xf) as i64);
    for (k, c) in ["q_d_count", "a_n_count", "n_s_count", "a_r_count"]
        .iter()
        .zip(&counts)
    {
        m.insert(*k, *c as i64);
    }
    let mut at = 12;
    let mut questions = Vec::new();
    for _ in 0..counts[0].min(64) {
        let (name, a) = dns_name(body, at)?;
        let mut q = Map::new();
        q.insert("name", name.as_str());
        q.insert("type", dns_type(be16(body, a)?).as_str());
        q.insert("class", dns_class(be16(body, a + 2)?).as_str());
        questions.push(Value::Map(q));
        at = a + 4;
    }
    m.insert("questions", Value::Array(questions));
    for (key, n) in [
        ("answers", counts[1]),
        ("authorities", counts[2]),
        ("additionals", counts[3]),
    ] {
        let mut rrs = Vec::new();
        for _ in 0..n.min(256) {
            let (rr, a) = dns_record(body, at)?;
            rrs.push(rr);
            at = a;
        }
        if !rrs.is_empty() {
            m.insert(key, Value::Array(rrs));
        }
    }
    m.insert("timestamp", timestamp_ms);
    Some(Value::Map(m))
}

/// A DHCPv4 message (`body` starts at the BOOTP header).
pub fn dhcpv4(body: &[u8]) -> Option<Value> {
    if body.len() < 240 {
        return None;
    }
    let ip =
        |at: usize| Ipv4Addr::new(body[at], body[at + 1], body[at + 2], body[at + 3]).to_string();
    let c_string = |b: &[u8]| {
        let end = b.iter().position(|c| *c == 0).unwrap_or(b.len());
        String::from_utf8_lossy(&b[..end]).into_owned()
    };
    let hlen = body[2] as usize;
    let mut m = Map::new();
    m.insert("operation", body[0] as i64);
    m.insert("hardware_type", body[1] as i64);
    m.insert("hardware_len", hlen as i64);
    m.insert("hardware_opts", body[3] as i64);
    m.insert("xid", be32(body, 4)? as i64);
    m.insert("secs", be16(body, 8)? as i64);
    m.insert("flags", be16(body, 10)? as i64);
    m.insert("client_ip", ip(12).as_str());
    m.insert("your_client_ip", ip(16).as_str());
    m.insert("next_server_ip", ip(20).as_str());
    m.insert("relay_agent_ip", ip(24).as_str());
    let hw: Vec<String> = body[28..28 + hlen.min(16)]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    m.insert("client_hw_addr", hw.join(":").as_str());
    m.insert("server_name", c_string(&body[44..108]).as_str());
    m.insert("file", c_string(&body[108..236]).as_str());
    // Options after the magic cookie.
    let mut opts = Vec::new();
    let mut at = 240;
    while let Some(&t) = body.get(at) {
        if t == 255 {
            break;
        }
        if t == 0 {
            at += 1;
            continue;
        }
        let l = *body.get(at + 1)? as usize;
        let data = body.get(at + 2..at + 2 + l)?;
        let mut o = Map::new();
        o.insert("type", t as i64);
        o.insert("length", l as i64);
        o.insert(
            "data",
            Value::Array(data.iter().map(|b| Value::Int(*b as i64)).collect()),
        );
        opts.push(Value::Map(o));
        at += 2 + l;
    }
    m.insert("options", Value::Array(opts));
    Some(Value::Map(m))
}

/// A VRRPv2 advertisement (`body` starts at the VRRP header).
pub fn vrrp(body: &[u8]) -> Option<Value> {
    if body.len() < 8 {
        return None;
    }
    let count = body[3] as usize;
    let mut m = Map::new();
    m.insert("version", (body[0] >> 4) as i64);
    m.insert("type", (body[0] & 0xf) as i64);
    m.insert("virtual_rtrID", body[1] as i64);
    m.insert("priority", body[2] as i64);
    m.insert("count_ipaddr", count as i64);
    m.insert("auth_type", body[4] as i64);
    m.insert("adver_int", body[5] as i64);
    m.insert("checksum", be16(body, 6)? as i64);
    let addrs: Vec<Value> = (0..count)
        .filter_map(|i| {
            let a = body.get(8 + 4 * i..12 + 4 * i)?;
            Some(Value::from(
                Ipv4Addr::new(a[0], a[1], a[2], a[3]).to_string().as_str(),
            ))
        })
        .collect();
    m.insert("ip_addresses", Value::Array(addrs));
    Some(Value::Map(m))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A response to `A example.com` with one answer using a compression pointer (RFC 1035
    /// layout).
    fn dns_response() -> Vec<u8> {
        let mut m = vec![0x12, 0x34, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0];
        m.extend_from_slice(b"\x07example\x03com\x00");
        m.extend_from_slice(&[0, 1, 0, 1]);
        m.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0x0e, 0x10, 0, 4, 192, 0, 2, 1]);
        m
    }

    #[test]
    fn dns_messages_decode_with_compression() {
        let v = dns(&dns_response(), 7).unwrap();
        let m = v.as_map().unwrap();
        assert_eq!(m.get("ID"), Some(&Value::Int(0x1234)));
        assert_eq!(m.get("QR"), Some(&Value::Bool(true)));
        assert_eq!(
            m.get_path("questions")
                .and_then(Value::as_array)
                .unwrap()
                .len(),
            1
        );
        let a = m.get("answers").and_then(Value::as_array).unwrap()[0]
            .as_map()
            .unwrap()
            .clone();
        assert_eq!(a.get("name").and_then(Value::as_str), Some("example.com"));
        assert_eq!(a.get("IP").and_then(Value::as_str), Some("192.0.2.1"));
        assert_eq!(a.get("TTL"), Some(&Value::Int(3600)));
        assert_eq!(a.get("type").and_then(Value::as_str), Some("A"));
    }

    #[test]
    fn hostile_dns_messages_are_refused() {
        // A pointer to itself.
        let mut m = vec![0, 0, 0x81, 0x80, 0, 1, 0, 0, 0, 0, 0, 0];
        m.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
        assert!(dns(&m, 0).is_none());
        // Truncated anywhere.
        let full = dns_response();
        for n in 0..full.len() {
            let _ = dns(&full[..n], 0);
        }
        assert!(dns(&full[..full.len() - 1], 0).is_none());
    }

    #[test]
    fn vrrp_and_dhcp_decode() {
        let v = vrrp(&[0x21, 7, 100, 1, 0, 1, 0xab, 0xcd, 169, 254, 0, 1]).unwrap();
        let m = v.as_map().unwrap();
        assert_eq!(m.get("virtual_rtrID"), Some(&Value::Int(7)));
        assert_eq!(
            m.get("ip_addresses").and_then(Value::as_array).unwrap()[0].as_str(),
            Some("169.254.0.1")
        );
        let mut d = vec![0u8; 244];
        d[0] = 1;
        d[2] = 6;
        d[28..34].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
        d[236..240].copy_from_slice(&[99, 130, 83, 99]);
        d[240..243].copy_from_slice(&[53, 1, 1]);
        d[243] = 255;
        let v = dhcpv4(&d).unwrap();
        let m = v.as_map().unwrap();
        assert_eq!(
            m.get("client_hw_addr").and_then(Value::as_str),
            Some("02:00:00:00:00:01")
        );
        assert_eq!(m.get("options").and_then(Value::as_array).unwrap().len(), 1);
        assert!(dhcpv4(&d[..100]).is_none());
    }
}
