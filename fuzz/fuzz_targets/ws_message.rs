//! Any byte string, as a WebSocket frame (text or protobuf binary) of a publisher: the
//! envelope, the graph elements and the schema checks decode it or refuse it, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use skydive_api::message::{decode_binary, decode_text_batch};
use skydive_graph::{Edge, Node, PartialUpdate};

fuzz_target!(|data: &[u8]| {
    let msgs = match std::str::from_utf8(data) {
        Ok(text) => decode_text_batch(text).unwrap_or_default(),
        Err(_) => decode_binary(data).map(|m| vec![m]).unwrap_or_default(),
    };
    for m in msgs {
        let raw = m.obj_text();
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(raw) {
            let _ = skydive_api::schema::validate_node(&v);
            let _ = skydive_api::schema::validate_edge(&v);
        }
        let _ = Node::from_slice(raw.as_bytes(), 0);
        let _ = Edge::from_slice(raw.as_bytes(), 0);
        let _ = serde_json::from_str::<PartialUpdate>(raw);
    }
});
