//! Any byte string as a pcap or pcapng stream (`POST /api/pcap`, a `pcapsocket` capture): refused with
//! a reason or read, never a panic; and a stream read whole gives the same flows as the same
//! stream in two chunks (its last byte says where to cut).
#![no_main]

use libfuzzer_sys::fuzz_target;
use skydive_capture::pcapfile::PcapFeeder;
use skydive_flow::TableConfig;

fuzz_target!(|data: &[u8]| {
    let Some((&cut, stream)) = data.split_last() else {
        return;
    };
    // Short ticks and a small table: ticks and evictions inside the stream.
    let cfg = TableConfig {
        max_entries: 8,
        update_ms: 1,
        expire_ms: 3,
        ..Default::default()
    };
    let Ok((whole, _)) = PcapFeeder::flows_of(stream, cfg.clone()) else {
        return;
    };
    let at = cut as usize * stream.len() / 255;
    let mut feeder = PcapFeeder::new(cfg);
    let mut flows = feeder
        .feed(&stream[..at])
        .expect("a readable stream's first part");
    flows.extend(
        feeder
            .feed(&stream[at..])
            .expect("a readable stream's second part"),
    );
    flows.extend(feeder.finish());
    assert_eq!(whole, flows);
});
