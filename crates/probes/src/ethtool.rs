//! The ethtool probe: driver, bus, speed and duplex, offload features and device statistics of
//! an interface (the metadata Skydive's netlink probe writes: `Driver`, `BusInfo`, `Speed`,
//! `Features`), read with the `SIOCETHTOOL` ioctl through a socket of the interface's
//! namespace.
//!
//! The request building and answer parsing are here, in safe code over byte buffers; the
//! ioctl itself is in `sys.rs`.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::os::fd::BorrowedFd;
use std::sync::{Mutex, OnceLock};

use skydive_graph::{Map, Value};

const ETHTOOL_GSET: u32 = 0x01;
const ETHTOOL_GDRVINFO: u32 = 0x03;
const ETHTOOL_GSTRINGS: u32 = 0x1b;
const ETHTOOL_GSTATS: u32 = 0x1d;
const ETHTOOL_GSSET_INFO: u32 = 0x37;
const ETHTOOL_GFEATURES: u32 = 0x3a;
const ETH_SS_STATS: u32 = 1;
const ETH_SS_FEATURES: u32 = 4;
const ETH_GSTRING_LEN: usize = 32;
/// More strings than any device has: a bound on what a misbehaving driver makes us allocate.
const MAX_STRINGS: usize = 4096;

/// What ethtool says about an interface.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EthtoolInfo {
    pub driver: Option<String>,
    pub bus_info: Option<String>,
    /// Mb/s.
    pub speed: Option<u32>,
    pub duplex: Option<&'static str>,
    /// `Features`, already in metadata form: interfaces with the same feature set share one
    /// map (see [`intern_features`]), and every copy of the interface's metadata shares it.
    pub features: Map,
    /// `EthtoolStats`, in metadata form.
    pub stats: Map,
}

impl EthtoolInfo {
    /// Writes `Driver`, `BusInfo`, `Speed`, `Duplex`, `Features` and `EthtoolStats`.
    pub fn write_metadata(&self, m: &mut Map) {
        if let Some(d) = &self.driver {
            m.insert("Driver", d.as_str());
        }
        if let Some(b) = &self.bus_info {
            m.insert("BusInfo", b.as_str());
        }
        if let Some(s) = self.speed {
            m.insert("Speed", s as i64);
        }
        if let Some(d) = self.duplex {
            m.insert("Duplex", d);
        }
        if !self.features.is_empty() {
            m.insert("Features", Value::Map(self.features.clone()));
        }
        if !self.stats.is_empty() {
            m.insert("EthtoolStats", Value::Map(self.stats.clone()));
        }
    }
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    b.get(off..off + 4)
        .map(|s| u32::from_ne_bytes([s[0], s[1], s[2], s[3]]))
        .unwrap_or(0)
}

fn u16_at(b: &[u8], off: usize) -> u16 {
    b.get(off..off + 2)
        .map(|s| u16::from_ne_bytes([s[0], s[1]]))
        .unwrap_or(0)
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    b.get(off..off + 8)
        .map(|s| {
            let mut a = [0u8; 8];
            a.copy_from_slice(s);
            u64::from_ne_bytes(a)
        })
        .unwrap_or(0)
}

fn put_u32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_ne_bytes());
}

fn put_u64(b: &mut [u8], off: usize, v: u64) {
    b[off..off + 8].copy_from_slice(&v.to_ne_bytes());
}

/// A NUL-padded C string of a fixed-size field.
fn c_string(b: &[u8]) -> String {
    let end = b.iter().position(|c| *c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// `struct ethtool_drvinfo`: driver and bus.
pub fn parse_drvinfo(b: &[u8]) -> (Option<String>, Option<String>) {
    let field = |off: usize| {
        let s = c_string(b.get(off..off + 32).unwrap_or(&[]));
        (!s.is_empty()).then_some(s)
    };
    (field(4), field(4 + 32 * 3))
}

/// `struct ethtool_cmd`: speed in Mb/s (unknown: `None`) and duplex.
pub fn parse_link_settings(b: &[u8]) -> (Option<u32>, Option<&'static str>) {
    let speed = (u32::from(u16_at(b, 28)) << 16) | u32::from(u16_at(b, 12));
    let speed = (speed != 0 && speed != u32::MAX && speed != 0xffff).then_some(speed);
    let duplex = match b.get(14) {
        Some(0) => Some("half"),
        Some(1) => Some("full"),
        _ => None,
    };
    (speed, duplex)
}

/// The strings of a `struct ethtool_gstrings` answer.
pub fn parse_strings(b: &[u8], n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            c_string(
                b.get(12 + i * ETH_GSTRING_LEN..12 + (i + 1) * ETH_GSTRING_LEN)
                    .unwrap_or(&[]),
            )
        })
        .collect()
}

/// Active features of a `struct ethtool_gfeatures` answer, by name.
pub fn parse_features(b: &[u8], names: &[String]) -> Map {
    names
        .iter()
        .enumerate()
        .filter(|(_, n)| !n.is_empty())
        .map(|(i, n)| {
            // Blocks of {available, requested, active, never_changed}, 16 bytes each.
            let active = u32_at(b, 8 + (i / 32) * 16 + 8);
            (
                n.as_str().into(),
                Value::Bool(active & (1 << (i % 32)) != 0),
            )
        })
        .collect()
}

/// Distinct feature sets kept for sharing; past this many, new sets are not kept.
const MAX_FEATURE_SETS: usize = 256;

/// The shared copy of a feature set. Most interfaces of a host have one of a few feature sets
/// (every veth has the same), so a thousand veths hold one `Features` map between them instead
/// of a thousand copies of sixty entries.
pub fn intern_features(features: Map) -> Map {
    static SETS: OnceLock<Mutex<HashMap<u64, Vec<Map>>>> = OnceLock::new();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for (k, v) in features.iter() {
        k.hash(&mut h);
        v.as_bool().hash(&mut h);
    }
    let digest = h.finish();
    let mut sets = SETS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(m) = sets
        .get(&digest)
        .and_then(|same| same.iter().find(|m| **m == features))
    {
        return m.clone();
    }
    if sets.values().map(Vec::len).sum::<usize>() < MAX_FEATURE_SETS {
        sets.entry(digest).or_default().push(features.clone());
    }
    features
}

/// What the netlink probes asked ethtool, for the ethtool probe's status.
#[derive(Debug, Default)]
pub struct EthtoolCounters {
    /// Interfaces asked about.
    reads: std::sync::atomic::AtomicU64,
    /// Of which a driver answered.
    answered: std::sync::atomic::AtomicU64,
}

impl EthtoolCounters {
    pub fn record(&self, info: &EthtoolInfo) {
        use std::sync::atomic::Ordering::Relaxed;
        self.reads.fetch_add(1, Relaxed);
        if info.driver.is_some() {
            self.answered.fetch_add(1, Relaxed);
        }
    }

    pub fn document(&self) -> serde_json::Value {
        use std::sync::atomic::Ordering::Relaxed;
        serde_json::json!({
            "Reads": self.reads.load(Relaxed),
            "Answered": self.answered.load(Relaxed),
        })
    }
}

/// Reads everything ethtool knows about `ifname`; what the device does not support is left
/// out. Runs ioctls on `sock`, a socket of the interface's namespace.
pub fn read(sock: BorrowedFd<'_>, ifname: &str) -> EthtoolInfo {
    let mut info = EthtoolInfo::default();
    let mut drv = vec![0u8; 196];
    put_u32(&mut drv, 0, ETHTOOL_GDRVINFO);
    if crate::sys::ethtool(sock, ifname, &mut drv).is_ok() {
        (info.driver, info.bus_info) = parse_drvinfo(&drv);
    }
    let mut cmd = vec![0u8; 44];
    put_u32(&mut cmd, 0, ETHTOOL_GSET);
    if crate::sys::ethtool(sock, ifname, &mut cmd).is_ok() {
        (info.speed, info.duplex) = parse_link_settings(&cmd);
    }
    if let Some(names) = strings(sock, ifname, ETH_SS_FEATURES) {
        let blocks = names.len().div_ceil(32);
        let mut f = vec![0u8; 8 + blocks * 16];
        put_u32(&mut f, 0, ETHTOOL_GFEATURES);
        put_u32(&mut f, 4, blocks as u32);
        if crate::sys::ethtool(sock, ifname, &mut f).is_ok() {
            info.features = intern_features(parse_features(&f, &names));
        }
    }
    if let Some(names) = strings(sock, ifname, ETH_SS_STATS) {
        let mut s = vec![0u8; 8 + names.len() * 8];
        put_u32(&mut s, 0, ETHTOOL_GSTATS);
        put_u32(&mut s, 4, names.len() as u32);
        if crate::sys::ethtool(sock, ifname, &mut s).is_ok() {
            let n = (u32_at(&s, 4) as usize).min(names.len());
            info.stats = names
                .iter()
                .take(n)
                .enumerate()
                .map(|(i, name)| {
                    let v = u64_at(&s, 8 + i * 8).min(i64::MAX as u64) as i64;
                    (name.as_str().into(), Value::Int(v))
                })
                .collect();
        }
    }
    info
}

/// The strings of a string set, or `None` when the device has none.
fn strings(sock: BorrowedFd<'_>, ifname: &str, set: u32) -> Option<Vec<String>> {
    let mut info = vec![0u8; 20];
    put_u32(&mut info, 0, ETHTOOL_GSSET_INFO);
    put_u64(&mut info, 8, 1u64 << set);
    crate::sys::ethtool(sock, ifname, &mut info).ok()?;
    if u64_at(&info, 8) & (1u64 << set) == 0 {
        return None;
    }
    let n = u32_at(&info, 16) as usize;
    if n == 0 || n > MAX_STRINGS {
        return None;
    }
    let mut s = vec![0u8; 12 + n * ETH_GSTRING_LEN];
    put_u32(&mut s, 0, ETHTOOL_GSTRINGS);
    put_u32(&mut s, 4, set);
    put_u32(&mut s, 8, n as u32);
    crate::sys::ethtool(sock, ifname, &mut s).ok()?;
    let got = (u32_at(&s, 8) as usize).min(n);
    Some(parse_strings(&s, got))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drvinfo_answer_gives_driver_and_bus() {
        // struct ethtool_drvinfo as the kernel fills it for a virtio NIC (laid out from
        // linux/ethtool.h: cmd, driver[32], version[32], fw_version[32], bus_info[32], ...).
        let mut b = vec![0u8; 196];
        put_u32(&mut b, 0, ETHTOOL_GDRVINFO);
        b[4..4 + 10].copy_from_slice(b"virtio_net");
        b[36..36 + 5].copy_from_slice(b"1.0.0");
        b[100..100 + 12].copy_from_slice(b"0000:00:03.0");
        assert_eq!(
            parse_drvinfo(&b),
            (Some("virtio_net".into()), Some("0000:00:03.0".into()))
        );
        let empty = vec![0u8; 196];
        assert_eq!(parse_drvinfo(&empty), (None, None));
    }

    #[test]
    fn link_settings_give_speed_and_duplex() {
        // struct ethtool_cmd of a 10 Gb/s full-duplex veth: speed (u16 at 12) = 10000,
        // duplex (u8 at 14) = 1, speed_hi (u16 at 28) = 0.
        let mut b = vec![0u8; 44];
        b[12..14].copy_from_slice(&10000u16.to_ne_bytes());
        b[14] = 1;
        assert_eq!(parse_link_settings(&b), (Some(10000), Some("full")));
        // 100 Gb/s needs speed_hi.
        let s = 100_000u32;
        b[12..14].copy_from_slice(&((s & 0xffff) as u16).to_ne_bytes());
        b[28..30].copy_from_slice(&((s >> 16) as u16).to_ne_bytes());
        assert_eq!(parse_link_settings(&b).0, Some(100_000));
        // Unknown speed and duplex (SPEED_UNKNOWN = -1, DUPLEX_UNKNOWN = 0xff).
        b[12..14].copy_from_slice(&0xffffu16.to_ne_bytes());
        b[28..30].copy_from_slice(&0xffffu16.to_ne_bytes());
        b[14] = 0xff;
        assert_eq!(parse_link_settings(&b), (None, None));
    }

    #[test]
    fn features_are_read_by_name_from_their_bit() {
        let names: Vec<String> = (0..40).map(|i| format!("f{i}")).collect();
        let mut b = vec![0u8; 8 + 2 * 16];
        // Block 0: active bits 0 and 3; block 1: active bit 1 (feature 33).
        put_u32(&mut b, 8 + 8, 0b1001);
        put_u32(&mut b, 8 + 16 + 8, 0b10);
        let f = parse_features(&b, &names);
        let on = |k: &str| f.get(k).and_then(Value::as_bool);
        assert_eq!(on("f0"), Some(true));
        assert_eq!(on("f1"), Some(false));
        assert_eq!(on("f3"), Some(true));
        assert_eq!(on("f33"), Some(true));
        assert_eq!(f.len(), 40);
    }

    #[test]
    fn equal_feature_sets_share_one_map() {
        let names: Vec<String> = (0..40).map(|i| format!("share{i}")).collect();
        let mut b = vec![0u8; 8 + 2 * 16];
        put_u32(&mut b, 8 + 8, 0b1001);
        let a = intern_features(parse_features(&b, &names));
        let again = intern_features(parse_features(&b, &names));
        assert!(a.ptr_eq(&again), "the second copy is the first one");
        put_u32(&mut b, 8 + 8, 0b1011);
        let other = intern_features(parse_features(&b, &names));
        assert!(!a.ptr_eq(&other));
        assert_eq!(other.get("share1"), Some(&Value::Bool(true)));
        assert_eq!(a.get("share1"), Some(&Value::Bool(false)));
    }

    #[test]
    fn metadata_keys_follow_skydive() {
        let info = EthtoolInfo {
            driver: Some("veth".into()),
            speed: Some(10000),
            duplex: Some("full"),
            features: [("highdma".into(), Value::Bool(true))]
                .into_iter()
                .collect(),
            stats: [("peer_ifindex".into(), Value::Int(7))]
                .into_iter()
                .collect(),
            ..Default::default()
        };
        let mut m = Map::new();
        info.write_metadata(&mut m);
        assert_eq!(m.get("Driver").and_then(Value::as_str), Some("veth"));
        assert_eq!(m.get_path("Features.highdma"), Some(&Value::Bool(true)));
        assert_eq!(
            m.get_path("EthtoolStats.peer_ifindex"),
            Some(&Value::Int(7))
        );
        assert_eq!(m.get("Speed"), Some(&Value::Int(10000)));
        assert!(m.get("BusInfo").is_none());
    }
}
