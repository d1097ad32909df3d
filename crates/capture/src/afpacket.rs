//! AF_PACKET capture with a TPACKET_V3 memory-mapped ring (Skydive's probe behaviours `afpacket`).
//!
//! The kernel fills blocks of the ring with frames and hands a block over when it is full or
//! after a timeout; the reader walks the block's frames in place and gives the block back.
//! The BPF filter runs in the kernel, attached before the socket is bound, so no frame the
//! filter refuses is ever captured; its accept value is lowered to the snap length, so the
//! kernel copies only the header bytes asked for.
//!
//! Written on `libc` because no maintained crate offers TPACKET_V3 rings with BPF and
//! statistics; the unsafe parts are the ring's `mmap` and the reads of the kernel's block and
//! frame headers, each bounded by the block length.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{Ordering, fence};
use std::time::Duration;

use crate::bpf::Instruction;

/// What a ring is made of.
#[derive(Clone, Debug)]
pub struct RingConfig {
    /// The interface, by index in the socket's network namespace.
    pub ifindex: u32,
    /// Bytes kept of each frame.
    pub snaplen: u32,
    /// Bytes per block (a multiple of the page size).
    pub block_size: u32,
    /// Number of blocks.
    pub blocks: u32,
    /// A block is handed over after this long even when not full.
    pub block_timeout: Duration,
    /// A fanout group to join (load balancing by flow hash), if any.
    pub fanout_group: Option<u16>,
}

impl Default for RingConfig {
    fn default() -> Self {
        RingConfig {
            ifindex: 0,
            snaplen: 256,
            block_size: 1 << 20,
            blocks: 16,
            block_timeout: Duration::from_millis(10),
            fanout_group: None,
        }
    }
}

/// A captured frame.
#[derive(Debug, Clone, Copy)]
pub struct Frame<'a> {
    /// The bytes kept (up to the snap length), link header first.
    pub data: &'a [u8],
    /// The frame's length on the wire.
    pub wire_len: u32,
    /// Kernel timestamp, nanoseconds since the epoch.
    pub ts_ns: i64,
}

/// Counters of the socket since it was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RingStats {
    /// Frames that passed the filter.
    pub received: u64,
    /// Frames the kernel dropped because the ring was full.
    pub dropped: u64,
}

/// An open capture ring.
pub struct Ring {
    fd: OwnedFd,
    map: NonNull<u8>,
    map_len: usize,
    block_size: usize,
    blocks: usize,
    next: usize,
    stats: RingStats,
    /// Frames with a VLAN tag the kernel took out are rebuilt here.
    scratch: Vec<u8>,
}

// SAFETY: the ring is owned by one `Ring`; the mapping is only touched through `&mut self`.
unsafe impl Send for Ring {}

impl std::fmt::Debug for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring")
            .field("fd", &self.fd.as_raw_fd())
            .field("blocks", &self.blocks)
            .field("block_size", &self.block_size)
            .finish()
    }
}

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn setsockopt<T>(fd: &OwnedFd, level: libc::c_int, name: libc::c_int, v: &T) -> io::Result<()> {
    // SAFETY: `v` points to a live `T` of the size given.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (v as *const T).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    };
    check(r).map(|_| ())
}

/// The filter for the kernel: `program` with every non-zero accept lowered to `snaplen`,
/// or a lone "accept `snaplen` bytes" without a program.
pub fn kernel_program(program: Option<&[Instruction]>, snaplen: u32) -> Vec<libc::sock_filter> {
    const BPF_RET_K: u16 = 0x06;
    match program {
        None => vec![libc::sock_filter {
            code: BPF_RET_K,
            jt: 0,
            jf: 0,
            k: snaplen,
        }],
        Some(p) => p
            .iter()
            .map(|i| libc::sock_filter {
                code: i.code,
                jt: i.jt,
                jf: i.jf,
                k: if i.code == BPF_RET_K && i.k != 0 {
                    i.k.min(snaplen)
                } else {
                    i.k
                },
            })
            .collect(),
    }
}

impl Ring {
    /// Opens a ring on an interface of the calling thread's network namespace.
    pub fn open(cfg: &RingConfig, program: Option<&[Instruction]>) -> io::Result<Ring> {
        let eth_p_all = (libc::ETH_P_ALL as u16).to_be();
        // Protocol 0: the socket receives nothing until it is bound, after the filter is set.
        // SAFETY: plain system call.
        let raw = check(unsafe {
            libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0)
        })?;
        // SAFETY: `raw` is a new descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let version = libc::tpacket_versions::TPACKET_V3 as libc::c_int;
        setsockopt(&fd, libc::SOL_PACKET, libc::PACKET_VERSION, &version)?;
        let page = 4096u32;
        let block_size = cfg.block_size.max(page).div_ceil(page) * page;
        let frame_size = 2048u32;
        let req = libc::tpacket_req3 {
            tp_block_size: block_size,
            tp_block_nr: cfg.blocks.max(2),
            tp_frame_size: frame_size,
            tp_frame_nr: block_size / frame_size * cfg.blocks.max(2),
            tp_retire_blk_tov: cfg.block_timeout.as_millis().clamp(1, 1000) as u32,
            tp_sizeof_priv: 0,
            tp_feature_req_word: 0,
        };
        setsockopt(&fd, libc::SOL_PACKET, libc::PACKET_RX_RING, &req)?;
        let map_len = block_size as usize * req.tp_block_nr as usize;
        // SAFETY: maps the ring the kernel just allocated for this socket.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if map == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let map = NonNull::new(map.cast::<u8>()).ok_or_else(|| io::Error::other("null ring"))?;
        let mut ring = Ring {
            fd,
            map,
            map_len,
            block_size: block_size as usize,
            blocks: req.tp_block_nr as usize,
            next: 0,
            stats: RingStats::default(),
            scratch: Vec::new(),
        };
        let mut filter = kernel_program(program, cfg.snaplen.max(14));
        let prog = libc::sock_fprog {
            len: filter.len() as u16,
            filter: filter.as_mut_ptr(),
        };
        setsockopt(&ring.fd, libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, &prog)?;
        // SAFETY: an all-zero sockaddr_ll is valid; the fields that matter are set below.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = eth_p_all;
        addr.sll_ifindex = cfg.ifindex as i32;
        // SAFETY: `addr` is a valid sockaddr_ll of the size given.
        check(unsafe {
            libc::bind(
                ring.fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_ll).cast(),
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        })?;
        if let Some(group) = cfg.fanout_group {
            let arg: u32 = u32::from(group) | (libc::PACKET_FANOUT_HASH << 16);
            setsockopt(&ring.fd, libc::SOL_PACKET, libc::PACKET_FANOUT, &arg)?;
        }
        // Statistics count from here.
        ring.read_kernel_stats()?;
        ring.stats = RingStats::default();
        Ok(ring)
    }

    fn block(&self, i: usize) -> *mut u8 {
        // SAFETY: `i < blocks`, so the offset stays inside the mapping.
        unsafe { self.map.as_ptr().add(i * self.block_size) }
    }

    fn block_status(&self, i: usize) -> u32 {
        let b = self.block(i).cast::<libc::tpacket_block_desc>();
        // SAFETY: the block descriptor is at the start of the block, inside the mapping; the
        // kernel writes the status concurrently, hence the volatile read.
        let status = unsafe { std::ptr::addr_of!((*b).hdr.bh1.block_status).read_volatile() };
        fence(Ordering::Acquire);
        status
    }

    /// Waits up to `timeout` for a block, then hands each of its frames to `f`. Returns the
    /// number of frames (0 after a timeout).
    pub fn next_block(
        &mut self,
        timeout: Duration,
        mut f: impl FnMut(Frame<'_>),
    ) -> io::Result<usize> {
        let i = self.next;
        if self.block_status(i) & libc::TP_STATUS_USER == 0 {
            let mut pfd = libc::pollfd {
                fd: self.fd.as_raw_fd(),
                events: libc::POLLIN | libc::POLLERR,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            let r = unsafe { libc::poll(&mut pfd, 1, timeout.as_millis().min(60_000) as i32) };
            if r < 0 {
                let e = io::Error::last_os_error();
                return if e.kind() == io::ErrorKind::Interrupted {
                    Ok(0)
                } else {
                    Err(e)
                };
            }
            if self.block_status(i) & libc::TP_STATUS_USER == 0 {
                return Ok(0);
            }
        }
        let block = self.block(i);
        let desc = block.cast::<libc::tpacket_block_desc>();
        // SAFETY: the block belongs to user space until its status is given back below.
        let (num, first, blk_len) = unsafe {
            let h = std::ptr::addr_of!((*desc).hdr.bh1).read();
            (
                h.num_pkts as usize,
                h.offset_to_first_pkt as usize,
                h.blk_len as usize,
            )
        };
        let limit = blk_len.min(self.block_size);
        let mut off = first;
        let mut n = 0;
        for _ in 0..num {
            if off + size_of::<libc::tpacket3_hdr>() > limit {
                break;
            }
            // SAFETY: `off` plus the header size is inside the block (checked above).
            let h = unsafe { block.add(off).cast::<libc::tpacket3_hdr>().read_unaligned() };
            let start = off + h.tp_mac as usize;
            let len = h.tp_snaplen as usize;
            if start + len > limit {
                break;
            }
            // SAFETY: `[start, start + len)` is inside the block (checked above).
            let data = unsafe { std::slice::from_raw_parts(block.add(start), len) };
            let ts_ns = i64::from(h.tp_sec) * 1_000_000_000 + i64::from(h.tp_nsec);
            let mut wire_len = h.tp_len;
            if h.tp_status & libc::TP_STATUS_VLAN_VALID != 0 && len >= 12 {
                // The kernel took the 802.1Q tag out: put it back, as it was on the wire.
                let tpid = if h.tp_status & libc::TP_STATUS_VLAN_TPID_VALID != 0 {
                    h.hv1.tp_vlan_tpid
                } else {
                    0x8100
                };
                self.scratch.clear();
                self.scratch.extend_from_slice(&data[..12]);
                self.scratch.extend_from_slice(&tpid.to_be_bytes());
                self.scratch
                    .extend_from_slice(&(h.hv1.tp_vlan_tci as u16).to_be_bytes());
                self.scratch.extend_from_slice(&data[12..]);
                wire_len += 4;
                f(Frame {
                    data: &self.scratch,
                    wire_len,
                    ts_ns,
                });
            } else {
                f(Frame {
                    data,
                    wire_len,
                    ts_ns,
                });
            }
            n += 1;
            if h.tp_next_offset == 0 {
                break;
            }
            off += h.tp_next_offset as usize;
        }
        fence(Ordering::Release);
        // SAFETY: gives the block back to the kernel; nothing refers into it any more.
        unsafe {
            std::ptr::addr_of_mut!((*desc).hdr.bh1.block_status)
                .write_volatile(libc::TP_STATUS_KERNEL);
        }
        self.next = (i + 1) % self.blocks;
        Ok(n)
    }

    fn read_kernel_stats(&mut self) -> io::Result<()> {
        let mut s = libc::tpacket_stats_v3 {
            tp_packets: 0,
            tp_drops: 0,
            tp_freeze_q_cnt: 0,
        };
        let mut len = size_of::<libc::tpacket_stats_v3>() as libc::socklen_t;
        // SAFETY: `s` is a valid tpacket_stats_v3 of the length given.
        check(unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_STATISTICS,
                (&mut s as *mut libc::tpacket_stats_v3).cast(),
                &mut len,
            )
        })?;
        // The kernel resets its counters at each read; `tp_packets` includes the drops.
        self.stats.received += u64::from(s.tp_packets);
        self.stats.dropped += u64::from(s.tp_drops);
        Ok(())
    }

    /// The counters since the ring was opened.
    pub fn stats(&mut self) -> io::Result<RingStats> {
        self.read_kernel_stats()?;
        Ok(self.stats)
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // SAFETY: unmaps what `open` mapped; the socket closes after.
        unsafe {
            libc::munmap(self.map.as_ptr().cast(), self.map_len);
        }
    }
}

/// The index of an interface of the calling thread's namespace.
pub fn ifindex(name: &str) -> io::Result<u32> {
    let c =
        std::ffi::CString::new(name).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: a valid C string.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if i == 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(i)
    }
}
