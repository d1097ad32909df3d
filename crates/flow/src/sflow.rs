//! sFlow v5 datagrams (sflow.org, "sFlow Version 5"): the flow samples' sampled packet
//! headers, which go through a flow table like captured frames, and the counter samples'
//! generic interface counters, which go into the `SFlow` metadata of nodes.
//!
//! Everything is bounds-checked: a truncated, corrupt or hostile datagram gives an error and
//! nothing else. Unknown sample and record formats are skipped by their lengths, as the
//! standard asks.

/// Why a datagram was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SflowError {
    #[error("truncated sFlow datagram (wanted {wanted} bytes at offset {at})")]
    Truncated { at: usize, wanted: usize },
    #[error("unsupported sFlow version {0}")]
    Version(u32),
    #[error("unknown agent address type {0}")]
    AddressType(u32),
    #[error("implausible count {0}")]
    Count(u32),
}

/// A sampled packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PacketSample<'a> {
    /// 1 in `sampling_rate` packets was sampled.
    pub sampling_rate: u32,
    pub input_if: u32,
    pub output_if: u32,
    /// The header protocol (1: Ethernet, 11: IPv4, 12: IPv6).
    pub protocol: u32,
    /// The packet's length on the wire.
    pub frame_length: u32,
    /// The first bytes of the packet.
    pub header: &'a [u8],
}

/// Generic interface counters (counter record format 1).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IfCounters {
    pub if_index: u32,
    pub if_type: u32,
    pub if_speed: u64,
    pub if_direction: u32,
    pub if_status: u32,
    pub if_in_octets: u64,
    pub if_in_ucast_pkts: u32,
    pub if_in_multicast_pkts: u32,
    pub if_in_broadcast_pkts: u32,
    pub if_in_discards: u32,
    pub if_in_errors: u32,
    pub if_in_unknown_protos: u32,
    pub if_out_octets: u64,
    pub if_out_ucast_pkts: u32,
    pub if_out_multicast_pkts: u32,
    pub if_out_broadcast_pkts: u32,
    pub if_out_discards: u32,
    pub if_out_errors: u32,
    pub if_promiscuous_mode: u32,
}

/// A decoded datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagram<'a> {
    pub agent: std::net::IpAddr,
    pub sub_agent_id: u32,
    pub sequence: u32,
    pub uptime_ms: u32,
    pub packets: Vec<PacketSample<'a>>,
    pub counters: Vec<IfCounters>,
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], SflowError> {
        let end = self.at.checked_add(n).filter(|e| *e <= self.b.len());
        match end {
            Some(end) => {
                let s = &self.b[self.at..end];
                self.at = end;
                Ok(s)
            }
            None => Err(SflowError::Truncated {
                at: self.at,
                wanted: n,
            }),
        }
    }
    fn u32(&mut self) -> Result<u32, SflowError> {
        let s = self.take(4)?;
        Ok(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
    }
    fn u64(&mut self) -> Result<u64, SflowError> {
        Ok(u64::from(self.u32()?) << 32 | u64::from(self.u32()?))
    }
    /// A length-prefixed opaque block (padded to 4 bytes), as a sub-reader.
    fn block(&mut self) -> Result<Reader<'a>, SflowError> {
        let len = self.u32()? as usize;
        let b = self.take(len)?;
        Ok(Reader { b, at: 0 })
    }
}

/// Samples in one datagram beyond this are refused (a datagram holds a few dozen).
const MAX_ITEMS: u32 = 10_000;

fn count(r: &mut Reader<'_>) -> Result<u32, SflowError> {
    let n = r.u32()?;
    if n > MAX_ITEMS {
        return Err(SflowError::Count(n));
    }
    Ok(n)
}

/// Decodes one datagram.
pub fn decode(b: &[u8]) -> Result<Datagram<'_>, SflowError> {
    let mut r = Reader { b, at: 0 };
    let version = r.u32()?;
    if version != 5 {
        return Err(SflowError::Version(version));
    }
    let agent = match r.u32()? {
        1 => {
            let a = r.take(4)?;
            std::net::IpAddr::from([a[0], a[1], a[2], a[3]])
        }
        2 => {
            let a: [u8; 16] = r.take(16)?.try_into().unwrap_or([0; 16]);
            std::net::IpAddr::from(a)
        }
        t => return Err(SflowError::AddressType(t)),
    };
    let mut d = Datagram {
        agent,
        sub_agent_id: r.u32()?,
        sequence: r.u32()?,
        uptime_ms: r.u32()?,
        packets: Vec::new(),
        counters: Vec::new(),
    };
    for _ in 0..count(&mut r)? {
        let format = r.u32()?;
        let mut s = r.block()?;
        // Enterprise 0 only; formats 1/3 flow samples, 2/4 counter samples.
        match format {
            1 | 3 => decode_flow_sample(&mut s, format == 3, &mut d.packets)?,
            2 | 4 => decode_counter_sample(&mut s, format == 4, &mut d.counters)?,
            _ => {}
        }
    }
    Ok(d)
}

fn decode_flow_sample<'a>(
    s: &mut Reader<'a>,
    expanded: bool,
    out: &mut Vec<PacketSample<'a>>,
) -> Result<(), SflowError> {
    let _seq = s.u32()?;
    let _source = if expanded {
        s.u64()?
    } else {
        u64::from(s.u32()?)
    };
    let sampling_rate = s.u32()?;
    let _sample_pool = s.u32()?;
    let _drops = s.u32()?;
    let (input_if, output_if) = if expanded {
        let _in_format = s.u32()?;
        let i = s.u32()?;
        let _out_format = s.u32()?;
        (i, s.u32()?)
    } else {
        // The interface index is in the low 30 bits.
        (s.u32()? & 0x3fff_ffff, s.u32()? & 0x3fff_ffff)
    };
    for _ in 0..count(s)? {
        let format = s.u32()?;
        let mut rec = s.block()?;
        if format == 1 {
            let protocol = rec.u32()?;
            let frame_length = rec.u32()?;
            let _stripped = rec.u32()?;
            let len = rec.u32()? as usize;
            let header = rec.take(len)?;
            out.push(PacketSample {
                sampling_rate: sampling_rate.max(1),
                input_if,
                output_if,
                protocol,
                frame_length,
                header,
            });
        }
    }
    Ok(())
}

fn decode_counter_sample(
    s: &mut Reader<'_>,
    expanded: bool,
    out: &mut Vec<IfCounters>,
) -> Result<(), SflowError> {
    let _seq = s.u32()?;
    if expanded {
        s.u64()?;
    } else {
        s.u32()?;
    }
    for _ in 0..count(s)? {
        let format = s.u32()?;
        let mut rec = s.block()?;
        if format == 1 {
            out.push(IfCounters {
                if_index: rec.u32()?,
                if_type: rec.u32()?,
                if_speed: rec.u64()?,
                if_direction: rec.u32()?,
                if_status: rec.u32()?,
                if_in_octets: rec.u64()?,
                if_in_ucast_pkts: rec.u32()?,
                if_in_multicast_pkts: rec.u32()?,
                if_in_broadcast_pkts: rec.u32()?,
                if_in_discards: rec.u32()?,
                if_in_errors: rec.u32()?,
                if_in_unknown_protos: rec.u32()?,
                if_out_octets: rec.u64()?,
                if_out_ucast_pkts: rec.u32()?,
                if_out_multicast_pkts: rec.u32()?,
                if_out_broadcast_pkts: rec.u32()?,
                if_out_discards: rec.u32()?,
                if_out_errors: rec.u32()?,
                if_promiscuous_mode: rec.u32()?,
            });
        }
    }
    Ok(())
}

/// Feeds the sampled packets of a datagram into a flow table, at `ts_ns`. Counters count
/// the samples (no scaling by the sampling rate). Samples of other header protocols than
/// Ethernet, IPv4 and IPv6 are skipped; returns how many were taken.
pub fn feed(table: &mut crate::FlowTable, d: &Datagram<'_>, ts_ns: i64) -> usize {
    let mut n = 0;
    for p in &d.packets {
        let link = match p.protocol {
            1 => crate::decode::LinkType::Ethernet,
            11 | 12 => crate::decode::LinkType::RawIp,
            _ => continue,
        };
        table.process(p.header, p.frame_length, ts_ns, link);
        n += 1;
    }
    n
}

/// Encodes a datagram (flow samples with raw headers, generic counters): for tests, fuzz
/// seeds and benchmarks.
pub fn encode(d: &Datagram<'_>) -> Vec<u8> {
    let mut o = Vec::new();
    let p32 = |o: &mut Vec<u8>, v: u32| o.extend_from_slice(&v.to_be_bytes());
    let p64 = |o: &mut Vec<u8>, v: u64| o.extend_from_slice(&v.to_be_bytes());
    p32(&mut o, 5);
    match d.agent {
        std::net::IpAddr::V4(a) => {
            p32(&mut o, 1);
            o.extend_from_slice(&a.octets());
        }
        std::net::IpAddr::V6(a) => {
            p32(&mut o, 2);
            o.extend_from_slice(&a.octets());
        }
    }
    p32(&mut o, d.sub_agent_id);
    p32(&mut o, d.sequence);
    p32(&mut o, d.uptime_ms);
    p32(&mut o, (d.packets.len() + d.counters.len()) as u32);
    for (i, p) in d.packets.iter().enumerate() {
        let mut rec = Vec::new();
        p32(&mut rec, p.protocol);
        p32(&mut rec, p.frame_length);
        p32(&mut rec, 4);
        p32(&mut rec, p.header.len() as u32);
        rec.extend_from_slice(p.header);
        while rec.len() % 4 != 0 {
            rec.push(0);
        }
        let mut s = Vec::new();
        p32(&mut s, i as u32);
        p32(&mut s, p.input_if);
        p32(&mut s, p.sampling_rate);
        p32(&mut s, 0);
        p32(&mut s, 0);
        p32(&mut s, p.input_if);
        p32(&mut s, p.output_if);
        p32(&mut s, 1);
        p32(&mut s, 1);
        p32(&mut s, rec.len() as u32);
        s.extend_from_slice(&rec);
        p32(&mut o, 1);
        p32(&mut o, s.len() as u32);
        o.extend_from_slice(&s);
    }
    for c in &d.counters {
        let mut rec = Vec::new();
        p32(&mut rec, c.if_index);
        p32(&mut rec, c.if_type);
        p64(&mut rec, c.if_speed);
        p32(&mut rec, c.if_direction);
        p32(&mut rec, c.if_status);
        p64(&mut rec, c.if_in_octets);
        for v in [
            c.if_in_ucast_pkts,
            c.if_in_multicast_pkts,
            c.if_in_broadcast_pkts,
            c.if_in_discards,
            c.if_in_errors,
            c.if_in_unknown_protos,
        ] {
            p32(&mut rec, v);
        }
        p64(&mut rec, c.if_out_octets);
        for v in [
            c.if_out_ucast_pkts,
            c.if_out_multicast_pkts,
            c.if_out_broadcast_pkts,
            c.if_out_discards,
            c.if_out_errors,
            c.if_promiscuous_mode,
        ] {
            p32(&mut rec, v);
        }
        let mut s = Vec::new();
        p32(&mut s, 0);
        p32(&mut s, c.if_index);
        p32(&mut s, 1);
        p32(&mut s, 1);
        p32(&mut s, rec.len() as u32);
        s.extend_from_slice(&rec);
        p32(&mut o, 2);
        p32(&mut o, s.len() as u32);
        o.extend_from_slice(&s);
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let header = [0xaau8; 60];
        encode(&Datagram {
            agent: "10.0.0.9".parse().unwrap(),
            sub_agent_id: 1,
            sequence: 77,
            uptime_ms: 1000,
            packets: vec![PacketSample {
                sampling_rate: 64,
                input_if: 3,
                output_if: 4,
                protocol: 1,
                frame_length: 1514,
                header: &header,
            }],
            counters: vec![IfCounters {
                if_index: 3,
                if_in_octets: 1 << 40,
                if_out_ucast_pkts: 12,
                ..Default::default()
            }],
        })
    }

    #[test]
    fn decodes_what_it_encodes() {
        let b = sample();
        let d = decode(&b).unwrap();
        assert_eq!(d.agent.to_string(), "10.0.0.9");
        assert_eq!(d.sequence, 77);
        assert_eq!(d.packets.len(), 1);
        let p = &d.packets[0];
        assert_eq!((p.sampling_rate, p.input_if, p.output_if), (64, 3, 4));
        assert_eq!((p.protocol, p.frame_length, p.header.len()), (1, 1514, 60));
        assert_eq!(d.counters[0].if_in_octets, 1 << 40);
        assert_eq!(d.counters[0].if_out_ucast_pkts, 12);
        assert_eq!(encode(&d), b);
    }

    #[test]
    fn every_truncation_and_corruption_is_an_error_not_a_panic() {
        let b = sample();
        for n in 0..b.len() {
            assert!(decode(&b[..n]).is_err(), "truncated at {n}");
        }
        let mut v = b.clone();
        v[3] = 4;
        assert_eq!(decode(&v), Err(SflowError::Version(4)));
        let mut huge = b.clone();
        // The sample count (offset 24) claims four billion samples.
        huge[24..28].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(decode(&huge), Err(SflowError::Count(u32::MAX)));
        // Every byte flipped in turn: errors or datagrams, never a panic.
        for i in 0..b.len() {
            let mut c = b.clone();
            c[i] ^= 0xff;
            let _ = decode(&c);
        }
    }
}
