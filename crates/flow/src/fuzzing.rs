//! The fuzz target's body, shared with the test that replays what the fuzzer once found
//! (`tests/fuzz-regressions/`), so that a finding stays fixed.

use crate::decode::{Decoded, LinkType, decode, segments};
use crate::packet::{fast_info, fast_layers_path, fast_vxlan, layers_path, segment_info};
use crate::{FlowTable, Packet, TableConfig};

/// Any byte string as a captured frame: the decoder, the flow keys, defragmentation, the
/// application layers and the table take it or count it, never panic. The first byte picks
/// the link type and the table's options.
///
/// Read as an Ethernet frame, what the common-case paths take of it must be exactly what the
/// general decoder reads (cut frames included).
///
/// The same bytes are then also read as a run of frames, each after a byte giving its length,
/// handed to one table in one batch and to another one by one: both must give the same flows
/// and counters (the batch's common-case path against the frame-by-frame one, evictions and
/// tunnels inside a group included).
pub fn frame(data: &[u8]) {
    let Some((&sel, frame)) = data.split_first() else {
        return;
    };
    let link = match sel % 3 {
        0 => LinkType::Ethernet,
        1 => LinkType::RawIp,
        _ if sel & 0x40 != 0 => LinkType::LinuxSll2,
        _ => LinkType::LinuxSll,
    };
    let table = || {
        FlowTable::new(TableConfig {
            raw_packet_limit: 2,
            extra_tcp_metric: true,
            ip_defrag: sel & 0x10 != 0,
            extra_layers: 7,
            l2_mode: sel & 0x20 != 0,
            max_entries: 8,
            ..Default::default()
        })
    };
    let mut t = table();
    t.process(frame, frame.len() as u32, 1_000_000, link);
    t.process(frame, u32::MAX, 2_000_000, link);
    for f in t.flush(10) {
        let _ = serde_json::to_vec(&f);
    }

    common_case_agrees(frame);

    let mut packets = Vec::new();
    let mut rest = frame;
    while let Some((&len, r)) = rest.split_first() {
        let (data, r) = r.split_at((len as usize).min(r.len()));
        packets.push(Packet {
            data,
            wire_len: data.len() as u32 + len as u32 % 7,
            ts_ns: 1_000_000 * packets.len() as i64,
        });
        rest = r;
    }
    batch_matches_one_by_one(&packets, link, table, 10);
}

/// `packets` handed to one table (made by `table`) in one batch and to another one by one
/// give the same counters and, flushed at `now_ms`, the same flows.
pub fn batch_matches_one_by_one(
    packets: &[Packet<'_>],
    link: LinkType,
    table: impl Fn() -> FlowTable,
    now_ms: i64,
) {
    let (mut batch, mut one_by_one) = (table(), table());
    batch.process_batch(packets, link);
    for p in packets {
        one_by_one.process(p.data, p.wire_len, p.ts_ns, link);
    }
    assert_eq!(batch.stats(), one_by_one.stats());
    assert_eq!(batch.flush(now_ms), one_by_one.flush(now_ms));
}

/// Any byte string as an sFlow datagram: refused or decoded, and its samples go through a
/// flow table; never a panic.
pub fn sflow_datagram(data: &[u8]) {
    if let Ok(d) = crate::sflow::decode(data) {
        let mut t = FlowTable::new(TableConfig {
            max_entries: 8,
            ..Default::default()
        });
        crate::sflow::feed(&mut t, &d, 1_000_000);
        for f in t.flush(10) {
            let _ = serde_json::to_vec(&f);
        }
    }
}

/// The common-case paths against the decoder, on one Ethernet frame: where one takes the
/// frame, it reads exactly what the decoder does, cut frames included.
pub fn common_case_agrees(frame: &[u8]) {
    let mut d = Decoded::default();
    let mut segs = Vec::new();
    decode(frame, LinkType::Ethernet, &mut d);
    segments(&d, &mut segs);
    if let Some((fast, cut)) = fast_info(frame) {
        assert_eq!(d.truncated, cut);
        assert_eq!(segs.len(), 1);
        assert_eq!(fast, segment_info(frame, &d, segs[0]));
        assert_eq!(fast_layers_path(frame, &fast), layers_path(&d, segs[0]));
    }
    if let Some((outer, inner, cut)) = fast_vxlan(frame) {
        assert_eq!(d.truncated, cut);
        assert_eq!(segs.len(), 2);
        assert_eq!(outer, segment_info(frame, &d, segs[0]));
        assert_eq!(inner, segment_info(frame, &d, segs[1]));
        assert_eq!(fast_layers_path(frame, &outer), layers_path(&d, segs[0]));
        let at = inner.offset as usize;
        assert_eq!(
            fast_layers_path(&frame[at..], &inner),
            layers_path(&d, segs[1])
        );
    }
}
