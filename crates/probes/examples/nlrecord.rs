//! Records the rtnetlink messages of a dump as hex, one message per line, for the reducer's
//! fixtures: `nlrecord link|addr|route|neigh [NETNS]` (run as root; with NETNS, inside
//! `ip netns exec NETNS`).

use netlink_packet_core::{
    NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::address::AddressMessage;
use netlink_packet_route::link::LinkMessage;
use netlink_packet_route::neighbour::NeighbourMessage;
use netlink_packet_route::route::RouteMessage;
use netlink_sys::{Socket, protocols::NETLINK_ROUTE};

fn main() -> std::io::Result<()> {
    let what = std::env::args().nth(1).unwrap_or_else(|| "link".into());
    let req = match what.as_str() {
        "link" => RouteNetlinkMessage::GetLink(LinkMessage::default()),
        "addr" => RouteNetlinkMessage::GetAddress(AddressMessage::default()),
        "route" => RouteNetlinkMessage::GetRoute(RouteMessage::default()),
        "neigh" => RouteNetlinkMessage::GetNeighbour(NeighbourMessage::default()),
        other => panic!("unknown dump {other}"),
    };
    let mut s = Socket::new(NETLINK_ROUTE)?;
    s.bind_auto()?;
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    header.sequence_number = 1;
    let mut m = NetlinkMessage::new(header, NetlinkPayload::from(req));
    m.finalize();
    let mut out = vec![0u8; m.buffer_len()];
    m.serialize(&mut out);
    s.send(&out, 0)?;
    loop {
        let mut buf = Vec::with_capacity(1 << 16);
        s.recv(&mut buf, 0)?;
        let mut off = 0;
        while off + 16 <= buf.len() {
            let len =
                u32::from_ne_bytes([buf[off], buf[off + 1], buf[off + 2], buf[off + 3]]) as usize;
            let ty = u16::from_ne_bytes([buf[off + 4], buf[off + 5]]);
            if ty == 3 {
                return Ok(());
            }
            let hex: String = buf[off..off + len]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            println!("{hex}");
            off += (len + 3) & !3;
        }
    }
}
