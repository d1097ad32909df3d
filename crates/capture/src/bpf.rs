//! BPF filters in tcpdump syntax, compiled by libpcap: checked when a capture is created,
//! attached to capture sockets in the kernel, and run in user space on raw packets
//! (`RawPackets().BPF(...)`).

use std::sync::Mutex;

use pcap::{Capture, Linktype};

/// Why a filter was refused: libpcap's own message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid BPF filter {filter:?}: {message}")]
pub struct BpfError {
    pub filter: String,
    pub message: String,
}

/// Link types of captured frames (the pcap `LINKTYPE_*` numbers).
pub const LINKTYPE_ETHERNET: u32 = 1;
pub const LINKTYPE_RAW: u32 = 101;

/// One classic BPF instruction, as the kernel's `struct sock_filter` holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Instruction {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

/// A compiled filter.
pub struct Bpf {
    filter: String,
    // libpcap's matcher only reads the program, but the crate marks it `Send` only.
    program: Mutex<pcap::BpfProgram>,
    instructions: Vec<Instruction>,
}

impl std::fmt::Debug for Bpf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bpf")
            .field("filter", &self.filter)
            .field("instructions", &self.instructions.len())
            .finish()
    }
}

impl Bpf {
    /// Compiles `filter` for frames of `linktype` (snap length 65535).
    pub fn compile(filter: &str, linktype: u32) -> Result<Bpf, BpfError> {
        let err = |message: String| BpfError {
            filter: filter.to_string(),
            message,
        };
        // libpcap opens by DLT number, which differs from the LINKTYPE for raw IP.
        let dlt = match linktype {
            LINKTYPE_RAW => 12,
            other => other as i32,
        };
        let dead = Capture::dead(Linktype(dlt)).map_err(|e| err(e.to_string()))?;
        let program = dead.compile(filter, true).map_err(|e| err(e.to_string()))?;
        let instructions = program
            .get_instructions()
            .iter()
            .map(|i| parse_instruction(&i.to_string()))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| err("libpcap returned an unreadable program".into()))?;
        Ok(Bpf {
            filter: filter.to_string(),
            program: Mutex::new(program),
            instructions,
        })
    }

    /// The filter's text.
    pub fn text(&self) -> &str {
        &self.filter
    }

    /// Whether the frame passes the filter.
    pub fn matches(&self, frame: &[u8]) -> bool {
        self.program
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .filter(frame)
    }

    /// The program, for the kernel (`SO_ATTACH_FILTER`).
    pub fn instructions(&self) -> &[Instruction] {
        &self.instructions
    }
}

/// Reads the `code jt jf k` form libpcap's instructions print as.
fn parse_instruction(s: &str) -> Option<Instruction> {
    let mut it = s.split_whitespace();
    let i = Instruction {
        code: it.next()?.parse().ok()?,
        jt: it.next()?.parse().ok()?,
        jf: it.next()?.parse().ok()?,
        k: it.next()?.parse().ok()?,
    };
    it.next().is_none().then_some(i)
}

/// Checks a capture's filter as Skydive does: it must compile for Ethernet. The empty
/// filter is valid.
pub fn check(filter: &str) -> Result<(), BpfError> {
    if filter.trim().is_empty() {
        return Ok(());
    }
    Bpf::compile(filter, LINKTYPE_ETHERNET).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An Ethernet/IPv4/ICMP echo request from 10.0.0.1 to 10.0.0.2.
    fn icmp_frame() -> Vec<u8> {
        let mut f = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1, 0x08, 0x00];
        f.extend_from_slice(&[
            0x45, 0, 0, 28, 0, 1, 0, 0, 64, 1, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
        ]);
        f.extend_from_slice(&[8, 0, 0, 0, 0, 1, 0, 1]);
        f
    }

    /// An Ethernet ARP request.
    fn arp_frame() -> Vec<u8> {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&[0x02, 0, 0, 0, 0, 1, 0x08, 0x06]);
        f.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
        f.extend_from_slice(&[0x02, 0, 0, 0, 0, 1, 10, 0, 0, 1]);
        f.extend_from_slice(&[0, 0, 0, 0, 0, 0, 10, 0, 0, 2]);
        f
    }

    #[test]
    fn filters_match_as_tcpdump_does() {
        let icmp = Bpf::compile("icmp", LINKTYPE_ETHERNET).unwrap();
        assert!(icmp.matches(&icmp_frame()));
        assert!(!icmp.matches(&arp_frame()));
        let host = Bpf::compile("host 10.0.0.2 and not port 53", LINKTYPE_ETHERNET).unwrap();
        assert!(host.matches(&icmp_frame()));
        let arp = Bpf::compile("arp", LINKTYPE_ETHERNET).unwrap();
        assert!(arp.matches(&arp_frame()));
        // The kernel form: `ldh [12]` (Ethernet type) first.
        assert_eq!(
            arp.instructions()[0],
            Instruction {
                code: 0x28,
                jt: 0,
                jf: 0,
                k: 12
            }
        );
        // Raw IP frames have no link header.
        let raw = Bpf::compile("icmp", LINKTYPE_RAW).unwrap();
        assert!(raw.matches(&icmp_frame()[14..]));
    }

    #[test]
    fn bad_filters_say_why() {
        let e = check("tcp port eighty").unwrap_err();
        assert_eq!(e.filter, "tcp port eighty");
        assert!(
            e.to_string()
                .starts_with("invalid BPF filter \"tcp port eighty\": "),
            "{e}"
        );
        assert!(check("").is_ok());
        assert!(check("udp and port 53").is_ok());
        assert!(check("(((").is_err());
        assert!(check("foo\0bar").is_err());
    }
}
