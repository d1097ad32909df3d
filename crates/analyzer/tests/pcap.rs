//! `POST /api/pcap`: streamed, checked on its first bytes, bounded, and stored whole.

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::*;

/// A classic pcap file of `flows` UDP datagrams, each its own flow (distinct source ports),
/// one millisecond apart.
fn pcap_of(flows: u32) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(&65535u32.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes()); // Ethernet
    for i in 0..flows {
        let sport = 10_000 + (i % 50_000) as u16;
        let src = [10, 9, (i / 50_000) as u8, 1];
        let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00];
        let payload = b"hello";
        let total = (20 + 8 + payload.len()) as u16;
        f.extend_from_slice(&[0x45, 0]);
        f.extend_from_slice(&total.to_be_bytes());
        f.extend_from_slice(&[0, 1, 0, 0, 64, 17, 0, 0]);
        f.extend_from_slice(&src);
        f.extend_from_slice(&[10, 9, 255, 2]);
        f.extend_from_slice(&sport.to_be_bytes());
        f.extend_from_slice(&5000u16.to_be_bytes());
        f.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        f.extend_from_slice(&[0, 0]);
        f.extend_from_slice(payload);
        let (sec, usec) = (1_700_000_000 + i / 1000, (i % 1000) * 1000);
        out.extend_from_slice(&sec.to_le_bytes());
        out.extend_from_slice(&usec.to_le_bytes());
        out.extend_from_slice(&(f.len() as u32).to_le_bytes());
        out.extend_from_slice(&(f.len() as u32).to_le_bytes());
        out.extend_from_slice(&f);
    }
    out
}

fn upload(a: &TestAnalyzer, body: &[u8]) -> (u16, String) {
    let (status, _, text) = raw_bytes(
        &a.addr(),
        "POST",
        "/api/pcap",
        &[("Content-Type", "application/vnd.tcpdump.pcap")],
        body,
    );
    (status, text)
}

/// Sends a request head and the first bytes of a body, then reads the answer without
/// sending the rest.
fn answer_before_the_rest(addr: &str, head: &str, first: &[u8]) -> (u16, String, Duration) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let start = Instant::now();
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(first).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&out).contains("\r\n\r\n") {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    // The body of the answer, if it came in the same reads.
    let _ = s.set_read_timeout(Some(Duration::from_millis(300)));
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, text, start.elapsed())
}

#[test]
fn a_file_of_more_flows_than_the_buffer_is_stored_whole() {
    // 200 flows queued at most: the upload waits for the store instead of dropping.
    let a = TestAnalyzer::start_with(|s| s.analyzer.flow.max_buffer_size = 200);
    let (status, text) = upload(&a, &pcap_of(20_000));
    assert_eq!(status, 202, "{text}");
    // Answered once stored: no waiting needed.
    assert_eq!(a.count("G.Context(NOW, 3600).Flows()"), 0);
    assert_eq!(
        a.count("G.Context(1700000100, 3600).Flows().Has('Transport.B', 5000)"),
        20_000
    );
    let status = a.get("/api/status");
    assert_eq!(status["Flows"]["Dropped"], 0, "{status}");
}

#[test]
fn a_file_that_is_not_a_capture_is_refused_on_its_first_bytes() {
    let a = TestAnalyzer::start();
    // 100 MB announced, 64 bytes sent: the answer comes without the rest.
    let head = format!(
        "POST /api/pcap HTTP/1.1\r\nHost: {}\r\nContent-Length: 100000000\r\n\r\n",
        a.addr()
    );
    let (status, text, took) = answer_before_the_rest(&a.addr(), &head, &[b'x'; 64]);
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("not a pcap file"), "{text}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    // A file cut inside a record: refused with the reason.
    let mut cut = pcap_of(10);
    cut.truncate(cut.len() - 7);
    let (status, text) = upload(&a, &cut);
    assert_eq!(status, 400);
    assert!(
        text.contains("the file ends inside a packet record"),
        "{text}"
    );
}

#[test]
fn a_file_over_the_size_limit_is_refused_with_the_key() {
    let a = TestAnalyzer::start_with(|s| s.analyzer.flow.pcap_max_size = 1 << 20);
    let big = pcap_of(40_000); // about 2.4 MB
    assert!(big.len() > 2 << 20);
    // Announced: refused before anything is read or stored.
    let head = format!(
        "POST /api/pcap HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\n\r\n",
        a.addr(),
        big.len()
    );
    let (status, text, _) = answer_before_the_rest(&a.addr(), &head, &big[..1024]);
    assert_eq!(status, 413, "{text}");
    assert!(
        text.contains("larger than analyzer.flow.pcap_max_size (1048576 bytes)"),
        "{text}"
    );
    // Sent in chunks without a length: cut at the limit, and said so.
    let head = format!(
        "POST /api/pcap HTTP/1.1\r\nHost: {}\r\nTransfer-Encoding: chunked\r\n\r\n",
        a.addr()
    );
    let mut chunked = Vec::new();
    for c in big.chunks(64 * 1024) {
        chunked.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
        chunked.extend_from_slice(c);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let (status, text, _) = answer_before_the_rest(&a.addr(), &head, &chunked);
    assert_eq!(status, 413, "{text}");
    assert!(text.contains("the flows of its first"), "{text}");
    assert_eq!(a.get("/api")["Service"], "analyzer");
}
