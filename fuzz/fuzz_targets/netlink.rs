//! Any byte string, as a datagram of the rtnetlink event socket, through the parser and the
//! netlink reducer: messages are counted as malformed or applied, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netlink_packet_core::NetlinkPayload;
use skydive_probes::netlink::reducer::NsModel;
use skydive_probes::netlink::socket::parse_datagram;

fuzz_target!(|data: &[u8]| {
    let (msgs, _bad) = parse_datagram(data);
    let mut model = NsModel::new();
    for m in msgs {
        if let NetlinkPayload::InnerMessage(inner) = m.payload {
            let changes = model.apply(&inner);
            for i in changes.changed {
                let _ = model.metadata(i);
            }
        }
    }
});
