//! The fuzz target's body, shared with the test that replays what the fuzzer once found
//! (`tests/fuzz-regressions/`), so that a finding stays fixed.

use crate::decode::LinkType;
use crate::{FlowTable, TableConfig};

/// Any byte string as a captured frame: the decoder, the flow keys, defragmentation, the
/// application layers and the table take it or count it, never panic. The first byte picks
/// the link type and the table's options.
pub fn frame(data: &[u8]) {
    let Some((&sel, frame)) = data.split_first() else {
        return;
    };
    let link = match sel % 3 {
        0 => LinkType::Ethernet,
        1 => LinkType::RawIp,
        _ => LinkType::LinuxSll,
    };
    let mut t = FlowTable::new(TableConfig {
        raw_packet_limit: 2,
        extra_tcp_metric: true,
        ip_defrag: sel & 0x10 != 0,
        extra_layers: 7,
        l2_mode: sel & 0x20 != 0,
        max_entries: 8,
        ..Default::default()
    });
    t.process(frame, frame.len() as u32, 1_000_000, link);
    t.process(frame, u32::MAX, 2_000_000, link);
    for f in t.flush(10) {
        let _ = serde_json::to_vec(&f);
    }
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
