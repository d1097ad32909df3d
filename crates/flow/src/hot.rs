//! The flows' per-packet state, stored in the buckets of an open-addressing hash table keyed
//! by flow key: a packet of a known flow reads and writes one cache line (found at its key's
//! home bucket, or a few buckets on), instead of following a map bucket to a slot and the
//! slot to its state.
//!
//! Linear probing; a removed flow leaves a tombstone (so that the other flows keep their
//! buckets) unless the bucket after it is empty; the table is rebuilt when tombstones and
//! flows together fill half of it. Positions are stable except across a rebuild (which an
//! insert may do): a position is not kept across an insert.

use crate::model::FinishType;

/// What the per-packet path reads and writes of a flow, in one cache line: its key, the
/// counters, the time, the flow's A side, its state bits, where the rest of the flow is, and
/// its UUID hash.
#[derive(Clone, Copy, Debug, Default)]
#[repr(C, align(64))]
pub(crate) struct Hot {
    pub key: u64,
    pub ab_packets: i64,
    pub ab_bytes: i64,
    pub ba_packets: i64,
    pub ba_bytes: i64,
    pub last_ns: i64,
    /// The index of the rest of the flow (the table's `cold` entries).
    pub cold: u32,
    pub finish: FinishType,
    pub flags: u8,
    /// Raw packets kept so far (up to the capture's `RawPacketLimit`, at most 255).
    pub raw_captured: u8,
    /// The flow's UUID hash, the parent part of the keys of the flows encapsulated in it (a
    /// tunnel's frame needs it for its inner flow).
    pub uuid_hash: u64,
}

const _: () = assert!(size_of::<Hot>() == 64, "a bucket is one cache line");

/// [`Hot::flags`]: the bucket holds a flow.
pub(crate) const LIVE: u8 = 1;
pub(crate) const TOUCHED: u8 = 2;
/// Used since the eviction clock's hand last passed.
pub(crate) const REFERENCED: u8 = 4;
pub(crate) const RTT_STARTED: u8 = 8;
pub(crate) const RTT_DONE: u8 = 16;
/// The flow's first packet went from the greater endpoint to the smaller.
pub(crate) const A_SWAP: u8 = 32;
/// The canonical order does not tell the flow's endpoints apart: directions come from the
/// packet's side, compared with the flow's A side.
pub(crate) const UNDECIDED: u8 = 64;
/// The bucket held a flow that was removed: lookups go on past it.
const TOMBSTONE: u8 = 128;

/// The smallest table (buckets).
const MIN_BUCKETS: usize = 64;

#[derive(Default)]
pub(crate) struct HotTable {
    buckets: Vec<Hot>,
    live: usize,
    tombstones: usize,
}

impl HotTable {
    pub fn len(&self) -> usize {
        self.live
    }

    fn mask(&self) -> usize {
        self.buckets.len().wrapping_sub(1)
    }

    /// Reads the two buckets a lookup of `key` is most likely to read (its home bucket and
    /// the next one), so that they are fetched ahead of the lookup: a byte of each.
    #[inline]
    pub fn touch(&self, key: u64) -> u8 {
        let mask = self.mask();
        let home = key as usize & mask;
        let first = self.buckets.get(home).map_or(0, |h| h.flags);
        let second = self.buckets.get((home + 1) & mask).map_or(0, |h| h.flags);
        first ^ second
    }

    /// The position of the flow of `key`.
    #[inline]
    pub fn find(&self, key: u64) -> Option<usize> {
        let mask = self.mask();
        let mut i = key as usize & mask;
        loop {
            let b = self.buckets.get(i)?;
            if b.key == key && b.flags & LIVE != 0 {
                return Some(i);
            }
            if b.flags & (LIVE | TOMBSTONE) == 0 {
                return None;
            }
            i = (i + 1) & mask;
        }
    }

    /// Stores a flow (whose key is not in the table) and returns its position (the other
    /// flows move when the table is rebuilt).
    pub fn insert(&mut self, hot: Hot) -> usize {
        debug_assert!(hot.flags & LIVE != 0);
        if (self.live + self.tombstones + 1) * 2 > self.buckets.len() {
            // Grows when flows fill a quarter or more; otherwise only drops the tombstones.
            let want = ((self.live + 1) * 4).next_power_of_two().max(MIN_BUCKETS);
            self.rebuild(want.max(self.buckets.len()));
        }
        let i = self.vacant(hot.key);
        if self.buckets[i].flags & TOMBSTONE != 0 {
            self.tombstones -= 1;
        }
        self.buckets[i] = hot;
        self.live += 1;
        i
    }

    /// The first bucket from `key`'s home without a flow (the table is never full).
    fn vacant(&self, key: u64) -> usize {
        let mask = self.mask();
        let mut i = key as usize & mask;
        while self.buckets[i].flags & LIVE != 0 {
            i = (i + 1) & mask;
        }
        i
    }

    fn rebuild(&mut self, buckets: usize) {
        let old = std::mem::replace(&mut self.buckets, vec![Hot::default(); buckets]);
        for h in old.into_iter().filter(|h| h.flags & LIVE != 0) {
            let i = self.vacant(h.key);
            self.buckets[i] = h;
        }
        self.tombstones = 0;
    }

    /// Removes the flow at `at` and returns it.
    pub fn remove(&mut self, at: usize) -> Hot {
        let h = std::mem::take(&mut self.buckets[at]);
        debug_assert!(h.flags & LIVE != 0);
        self.live -= 1;
        let mask = self.mask();
        if self.buckets[(at + 1) & mask].flags & (LIVE | TOMBSTONE) == 0 {
            // Nothing was placed past this bucket: it and the tombstones just before it
            // end the lookups that reach them.
            let mut i = at.wrapping_sub(1) & mask;
            while self.buckets[i].flags & TOMBSTONE != 0 {
                self.buckets[i].flags = 0;
                self.tombstones -= 1;
                i = i.wrapping_sub(1) & mask;
            }
        } else {
            self.buckets[at].flags = TOMBSTONE;
            self.tombstones += 1;
        }
        h
    }

    /// Every bucket (live or not), for the ticks and the eviction clock.
    pub fn buckets(&self) -> &[Hot] {
        &self.buckets
    }

    pub fn get_mut(&mut self, at: usize) -> &mut Hot {
        &mut self.buckets[at]
    }

    /// Empties the table and returns its flows.
    pub fn take(&mut self) -> Vec<Hot> {
        self.live = 0;
        self.tombstones = 0;
        let mut all = std::mem::take(&mut self.buckets);
        all.retain(|h| h.flags & LIVE != 0);
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn hot(key: u64) -> Hot {
        Hot {
            key,
            flags: LIVE,
            ab_packets: key as i64,
            ..Hot::default()
        }
    }

    /// Random inserts and removes, with keys crowded on few home buckets, against a map.
    #[test]
    fn matches_a_map() {
        let mut t = HotTable::default();
        let mut model: HashMap<u64, i64> = HashMap::new();
        let mut x = 0x1234_5678_9abc_def0u64;
        for step in 0..200_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Few distinct low bits: long probe runs; keys 0 included.
            let key = (x % 3000) << ((x % 2) * 20);
            match (model.contains_key(&key), x >> 60) {
                (false, 0..=9) => {
                    let at = t.insert(hot(key));
                    assert_eq!(t.buckets()[at].key, key);
                    model.insert(key, key as i64);
                }
                (true, 0..=5) => {
                    let at = t.find(key).expect("present");
                    let h = t.remove(at);
                    assert_eq!((h.key, h.ab_packets), (key, key as i64));
                    model.remove(&key);
                }
                (present, _) => assert_eq!(t.find(key).is_some(), present, "step {step}"),
            }
            assert_eq!(t.len(), model.len());
        }
        for (&k, &v) in &model {
            let at = t.find(k).unwrap();
            assert_eq!(t.buckets()[at].ab_packets, v);
        }
        let live = t.buckets().iter().filter(|h| h.flags & LIVE != 0).count();
        let tombs = t
            .buckets()
            .iter()
            .filter(|h| h.flags & TOMBSTONE != 0)
            .count();
        assert_eq!((live, tombs), (t.live, t.tombstones));
        assert!((t.live + t.tombstones) * 2 <= t.buckets().len());
        let all = t.take();
        assert_eq!(all.len(), model.len());
        assert_eq!(t.find(1), None);
    }
}
