//! UDP datagrams read many per system call (`recvmmsg`), for the sFlow collectors: at tens of
//! thousands of datagrams a second, one `recv` each is most of a collector's CPU.

use std::io::IoSliceMut;
use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg};

/// What one datagram of a batch turned out to be.
#[derive(Debug, PartialEq, Eq)]
pub enum Datagram<'a> {
    Whole(&'a [u8]),
    /// Longer than the reader's buffers: cut, so not usable. Holds the bytes kept.
    Truncated(usize),
}

/// Reads datagrams from a UDP socket in batches, into buffers it keeps.
pub struct DatagramReader {
    bufs: Vec<Vec<u8>>,
    /// What the latest system call read into `bufs`: each datagram's length, and whether it
    /// was cut.
    lens: Vec<(usize, bool)>,
    gather: Duration,
}

impl DatagramReader {
    /// Up to `batch` datagrams per system call, each of up to `max_len` bytes.
    pub fn new(batch: usize, max_len: usize) -> DatagramReader {
        DatagramReader {
            bufs: vec![vec![0; max_len]; batch.max(1)],
            lens: Vec::with_capacity(batch.max(1)),
            gather: Duration::ZERO,
        }
    }

    /// After a wait that ends with fewer datagrams than a batch, lets `gather` pass before
    /// reading on, so that a steady stream is read in full batches: a thread woken for every
    /// datagram spends more on waking up than on the datagram. Delays what is read by at most
    /// `gather`.
    pub fn with_gather(mut self, gather: Duration) -> DatagramReader {
        self.gather = gather;
        self
    }

    /// Reads what `sock` has queued, a batch per system call, at most `batches` calls: the
    /// first call waits for a datagram as long as the socket's read timeout allows, the
    /// others take only what is there. Calls `f` with each datagram in order; returns how
    /// many were read (0 when the wait ended with none).
    pub fn read(
        &mut self,
        sock: &UdpSocket,
        batches: usize,
        f: &mut dyn FnMut(Datagram<'_>),
    ) -> std::io::Result<usize> {
        let mut total = 0;
        for call in 0..batches {
            let flags = if call == 0 {
                MsgFlags::MSG_WAITFORONE
            } else {
                MsgFlags::MSG_DONTWAIT
            };
            match self.read_batch(sock, flags) {
                Ok(()) => {}
                Err(Errno::EAGAIN | Errno::EINTR) => break,
                Err(e) => return Err(e.into()),
            }
            let lens = &self.lens;
            for (buf, &(len, truncated)) in self.bufs.iter().zip(lens) {
                f(if truncated {
                    Datagram::Truncated(len)
                } else {
                    Datagram::Whole(&buf[..len])
                });
            }
            total += lens.len();
            if lens.len() < self.bufs.len() {
                // The queue is empty: wait for more to gather, once.
                if call == 0 && !self.gather.is_zero() && !lens.is_empty() {
                    std::thread::sleep(self.gather);
                    continue;
                }
                break;
            }
        }
        Ok(total)
    }

    /// One `recvmmsg` into `bufs`, its datagrams' lengths into `lens`.
    fn read_batch(&mut self, sock: &UdpSocket, flags: MsgFlags) -> Result<(), Errno> {
        self.lens.clear();
        let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(self.bufs.len(), None);
        let mut slices: Vec<[IoSliceMut<'_>; 1]> =
            self.bufs.iter_mut().map(|b| [IoSliceMut::new(b)]).collect();
        let results = recvmmsg(
            sock.as_raw_fd(),
            &mut headers,
            slices.iter_mut(),
            flags,
            None,
        )?;
        self.lens
            .extend(results.map(|m| (m.bytes, m.flags.contains(MsgFlags::MSG_TRUNC))));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn pair() -> (UdpSocket, UdpSocket) {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        tx.connect(rx.local_addr().unwrap()).unwrap();
        (rx, tx)
    }

    #[test]
    fn queued_datagrams_come_in_order_over_several_batches() {
        let (rx, tx) = pair();
        for i in 0..70u8 {
            tx.send(&vec![i; 1 + i as usize * 10]).unwrap();
        }
        let mut r = DatagramReader::new(32, 2048);
        let mut got = Vec::new();
        let n = r
            .read(&rx, 8, &mut |d| match d {
                Datagram::Whole(b) => got.push((b[0], b.len())),
                Datagram::Truncated(_) => panic!("nothing is longer than 2048"),
            })
            .unwrap();
        assert_eq!(n, 70);
        let want: Vec<(u8, usize)> = (0..70u8).map(|i| (i, 1 + i as usize * 10)).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn batches_stop_at_the_limit_and_the_rest_waits() {
        let (rx, tx) = pair();
        for i in 0..10u8 {
            tx.send(&[i]).unwrap();
        }
        let mut r = DatagramReader::new(4, 64);
        let mut got = Vec::new();
        let mut take = |d: Datagram<'_>| {
            if let Datagram::Whole(b) = d {
                got.push(b[0]);
            }
        };
        assert_eq!(r.read(&rx, 2, &mut take).unwrap(), 8);
        assert_eq!(r.read(&rx, 2, &mut take).unwrap(), 2);
        assert_eq!(got, (0..10).collect::<Vec<u8>>());
    }

    #[test]
    fn a_datagram_longer_than_the_buffers_is_reported_cut() {
        let (rx, tx) = pair();
        tx.send(&[7; 100]).unwrap();
        tx.send(&[8; 10]).unwrap();
        let mut r = DatagramReader::new(8, 64);
        let mut got = Vec::new();
        r.read(&rx, 1, &mut |d| {
            got.push(match d {
                Datagram::Whole(b) => format!("whole {}", b.len()),
                Datagram::Truncated(n) => format!("cut at {n}"),
            });
        })
        .unwrap();
        assert_eq!(got, ["cut at 64", "whole 10"]);
    }

    #[test]
    fn what_arrives_while_gathering_is_read_in_the_same_call() {
        let (rx, tx) = pair();
        tx.send(&[0]).unwrap();
        let later = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            for i in 1..=10u8 {
                tx.send(&[i]).unwrap();
            }
        });
        let mut r = DatagramReader::new(32, 64).with_gather(Duration::from_millis(300));
        let mut got = Vec::new();
        let n = r
            .read(&rx, 4, &mut |d| {
                if let Datagram::Whole(b) = d {
                    got.push(b[0]);
                }
            })
            .unwrap();
        later.join().unwrap();
        assert_eq!(n, 11, "{got:?}");
        assert_eq!(got, (0..=10).collect::<Vec<u8>>());
        // Without gathering, the first datagram alone is read.
        let (rx, tx) = pair();
        tx.send(&[0]).unwrap();
        let later = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            tx.send(&[1]).unwrap();
        });
        let mut r = DatagramReader::new(32, 64);
        assert_eq!(r.read(&rx, 4, &mut |_| {}).unwrap(), 1);
        later.join().unwrap();
    }

    #[test]
    fn an_empty_socket_waits_for_its_read_timeout_then_reads_nothing() {
        let (rx, _tx) = pair();
        let mut r = DatagramReader::new(8, 64);
        let t = Instant::now();
        let n = r.read(&rx, 4, &mut |_| panic!("nothing was sent")).unwrap();
        assert_eq!(n, 0);
        let waited = t.elapsed();
        assert!(
            waited >= Duration::from_millis(40) && waited < Duration::from_secs(2),
            "{waited:?}"
        );
    }
}
