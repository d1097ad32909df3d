//! Any byte string as an sFlow datagram (see `skydive_flow::fuzzing::sflow_datagram`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| skydive_flow::fuzzing::sflow_datagram(data));
