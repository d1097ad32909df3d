//! pcapng, the format Wireshark and dumpcap write by default, read block by block from a
//! stream. Read by hand, as the classic records are: `pcap-file`'s pcapng parser takes every
//! packet's timestamp as nanoseconds whatever the interface's resolution (microseconds unless
//! it says otherwise), and copies each interface description it meets.
//!
//! What is read: section headers (either byte order, several per stream), interface
//! descriptions (link type, snap length, `if_tsresol`), enhanced, simple and (obsolete) packet
//! blocks. Every other block is skipped.

use pcap_file::DataLink;
use skydive_flow::Packet;
use skydive_flow::decode::LinkType;

use crate::pcapfile::Records;

/// The first bytes of a pcapng stream (a section header block's type).
pub(crate) const MAGIC: [u8; 4] = [0x0a, 0x0d, 0x0d, 0x0a];

/// The section header's byte-order magic, as written in the section's byte order.
const BYTE_ORDER: u32 = 0x1a2b3c4d;

/// The longest block accepted: larger than any packet block a snap length allows; a longer
/// one is corruption, not a reason to buffer the stream.
const MAX_BLOCK: usize = 16 << 20;

const SECTION_HEADER: u32 = 0x0a0d_0d0a;
const INTERFACE_DESCRIPTION: u32 = 1;
const PACKET: u32 = 2;
const SIMPLE_PACKET: u32 = 3;
const ENHANCED_PACKET: u32 = 6;

/// What a block of the stream holds.
pub(crate) enum Block<'a> {
    /// A packet, and how its frame begins.
    Packet(Packet<'a>, LinkType),
    /// A block that holds no packet (read for what it declares, or skipped).
    Other,
}

/// An interface a section declares.
struct Interface {
    /// Its link type, when frames of it are read.
    link: Result<LinkType, DataLink>,
    snaplen: u32,
    /// Timestamp units per second (`if_tsresol`; 10^6 by default).
    units: u64,
}

/// The section being read: its byte order and its interfaces.
pub(crate) struct Section {
    big_endian: bool,
    interfaces: Vec<Interface>,
    /// The latest packet's time: simple packet blocks carry none.
    last_ns: i64,
}

/// The 32-bit word at `at` of `b`, in a byte order (`b` holds it).
#[inline]
pub(crate) fn word(b: &[u8], at: usize, big_endian: bool) -> u32 {
    let w = [b[at], b[at + 1], b[at + 2], b[at + 3]];
    if big_endian {
        u32::from_be_bytes(w)
    } else {
        u32::from_le_bytes(w)
    }
}

fn half(b: &[u8], at: usize, big_endian: bool) -> u16 {
    let w = [b[at], b[at + 1]];
    if big_endian {
        u16::from_be_bytes(w)
    } else {
        u16::from_le_bytes(w)
    }
}

/// A raw block: its type, its body, what follows it, and the byte order it was read in (a
/// section header gives its own).
type RawBlock<'a> = (u32, &'a [u8], &'a [u8], bool);

/// The next block of `bytes`: `None` when it is not complete yet; the reason when it is
/// corrupt.
fn block(bytes: &[u8], big_endian: bool) -> Result<Option<RawBlock<'_>>, String> {
    let Some(h) = bytes.first_chunk::<12>() else {
        return Ok(None);
    };
    let mut big_endian = big_endian;
    if h[..4] == MAGIC {
        big_endian = match word(h, 8, true) {
            BYTE_ORDER => true,
            w if w == BYTE_ORDER.swap_bytes() => false,
            w => return Err(format!("a section header with byte-order magic {w:#010x}")),
        };
    }
    let kind = word(h, 0, big_endian);
    let len = word(h, 4, big_endian) as usize;
    if len < 12 || len % 4 != 0 || len > MAX_BLOCK {
        return Err(format!("a block of {len} bytes"));
    }
    let Some((b, rest)) = bytes.split_at_checked(len) else {
        return Ok(None);
    };
    let trailer = word(b, len - 4, big_endian) as usize;
    if trailer != len {
        return Err(format!(
            "a block of {len} bytes whose trailer says {trailer}"
        ));
    }
    Ok(Some((kind, &b[8..len - 4], rest, big_endian)))
}

/// Timestamp units per second of an `if_tsresol` value: a power of 10, or of 2 when its high
/// bit is set.
fn units(tsresol: u8) -> Option<u64> {
    if tsresol & 0x80 == 0 {
        10u64.checked_pow(tsresol as u32)
    } else {
        2u64.checked_pow((tsresol & 0x7f) as u32)
    }
}

impl Section {
    /// The section header at the start of a stream, and what follows it.
    pub(crate) fn first(bytes: &[u8]) -> Result<Option<(Section, &[u8])>, String> {
        let mut s = Section {
            big_endian: false,
            interfaces: Vec::new(),
            last_ns: 0,
        };
        Ok(s.next(bytes)?.map(|(_, rest)| (s, rest)))
    }
}

impl Records for Section {
    /// The next block of `bytes` and what follows it; `None` when the block is not complete
    /// yet; the reason when it is corrupt.
    fn next<'a>(&mut self, bytes: &'a [u8]) -> Result<Option<(Block<'a>, &'a [u8])>, String> {
        let Some((kind, body, rest, big_endian)) = block(bytes, self.big_endian)? else {
            return Ok(None);
        };
        let block = match kind {
            SECTION_HEADER => {
                // Byte-order magic, version, section length.
                if body.len() < 16 {
                    return Err(format!("a section header of {} bytes", body.len() + 12));
                }
                self.big_endian = big_endian;
                self.interfaces.clear();
                Block::Other
            }
            INTERFACE_DESCRIPTION => {
                self.interfaces.push(self.interface(body)?);
                Block::Other
            }
            ENHANCED_PACKET | PACKET => {
                if body.len() < 20 {
                    return Err(format!("a packet block of {} bytes", body.len() + 12));
                }
                let be = self.big_endian;
                let id = if kind == PACKET {
                    half(body, 0, be) as u32
                } else {
                    word(body, 0, be)
                };
                let ts = (word(body, 4, be) as u64) << 32 | word(body, 8, be) as u64;
                let (caplen, orig) = (word(body, 12, be), word(body, 16, be));
                let data = body[20..]
                    .get(..caplen as usize)
                    .ok_or_else(|| format!("a packet of {caplen} bytes in a shorter block"))?;
                let (link, units) = {
                    let i = self.interface_of(id)?;
                    (i.link, i.units)
                };
                let ns = (ts as u128 * 1_000_000_000 / units as u128).min(i64::MAX as u128);
                self.last_ns = ns as i64;
                self.packet(data, orig.max(caplen), link)?
            }
            SIMPLE_PACKET => {
                if body.len() < 4 {
                    return Err(format!(
                        "a simple packet block of {} bytes",
                        body.len() + 12
                    ));
                }
                let orig = word(body, 0, self.big_endian);
                let (link, snaplen) = {
                    let i = self.interface_of(0)?;
                    (i.link, i.snaplen)
                };
                // The packet, cut at the interface's snap length, padded to 32 bits.
                let mut len = (orig as usize).min(body.len() - 4);
                if snaplen > 0 {
                    len = len.min(snaplen as usize);
                }
                self.packet(&body[4..4 + len], orig.max(len as u32), link)?
            }
            _ => Block::Other,
        };
        Ok(Some((block, rest)))
    }
}

impl Section {
    fn packet<'a>(
        &self,
        data: &'a [u8],
        wire_len: u32,
        link: Result<LinkType, DataLink>,
    ) -> Result<Block<'a>, String> {
        let link = link.map_err(|dl| {
            format!(
                "a packet of link type {dl:?}: Ethernet, raw IP and Linux cooked captures are read"
            )
        })?;
        Ok(Block::Packet(
            Packet {
                data,
                wire_len,
                ts_ns: self.last_ns,
            },
            link,
        ))
    }

    fn interface_of(&self, id: u32) -> Result<&Interface, String> {
        self.interfaces.get(id as usize).ok_or_else(|| {
            format!("a packet of interface {id}, which the section does not declare")
        })
    }

    /// An interface description block's body.
    fn interface(&self, body: &[u8]) -> Result<Interface, String> {
        let be = self.big_endian;
        if body.len() < 8 {
            return Err(format!(
                "an interface description of {} bytes",
                body.len() + 12
            ));
        }
        let dl = DataLink::from(half(body, 0, be) as u32);
        let mut i = Interface {
            link: crate::pcapfile::link_type(dl).ok_or(dl),
            snaplen: word(body, 4, be),
            units: 1_000_000,
        };
        // Options: code, length, value padded to 32 bits; code 0 ends them.
        let mut opts = &body[8..];
        while let Some(h) = opts.first_chunk::<4>() {
            let (code, len) = (half(h, 0, be), half(h, 2, be) as usize);
            if code == 0 {
                break;
            }
            let value = opts[4..]
                .get(..len)
                .ok_or_else(|| format!("an interface option of {len} bytes past its block"))?;
            if code == 9 {
                let &[r] = value else {
                    return Err(format!("a time resolution of {len} bytes"));
                };
                i.units = units(r).ok_or_else(|| format!("a time resolution of {r:#04x}"))?;
            }
            opts = opts.get(4 + len.next_multiple_of(4)..).unwrap_or_default();
        }
        Ok(i)
    }
}
