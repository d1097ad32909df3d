//! Any byte string as a captured frame (see `skydive_flow::fuzzing::frame`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| skydive_flow::fuzzing::frame(data));
