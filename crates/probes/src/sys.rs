//! The only `unsafe` of the probes: the ethtool ioctl, which has no netlink equivalent for
//! the driver name and the statistics. Everything else goes through safe wrappers (nix,
//! netlink-sys).

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// `SIOCETHTOOL` (linux/sockios.h), of the type `ioctl` takes its request in (it differs
/// between C libraries).
const SIOCETHTOOL: libc::Ioctl = 0x8946;

/// `struct ifreq` with the `ifr_data` member of its union (40 bytes on 64-bit Linux).
#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    data: *mut libc::c_void,
    _pad: [u8; 16],
}

/// Runs one ethtool command on interface `ifname`, through a socket of the interface's
/// namespace. `buf` holds the command's structure (its first 4 bytes are the command) and
/// receives the kernel's answer.
pub fn ethtool(sock: BorrowedFd<'_>, ifname: &str, buf: &mut [u8]) -> io::Result<()> {
    if ifname.len() >= libc::IFNAMSIZ || ifname.as_bytes().contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "invalid interface name",
        ));
    }
    if buf.len() < 4 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "ethtool buffer too small",
        ));
    }
    let mut ifr = IfReq {
        name: [0; libc::IFNAMSIZ],
        data: buf.as_mut_ptr().cast(),
        _pad: [0; 16],
    };
    ifr.name[..ifname.len()].copy_from_slice(ifname.as_bytes());
    // SAFETY: `ifr` is a valid `struct ifreq` whose `ifr_data` points to `buf`, which is
    // alive and exclusively borrowed for the duration of the call and at least as large as
    // the structure of the command it holds (each caller sizes it for the kernel's answer).
    let r = unsafe { libc::ioctl(sock.as_raw_fd(), SIOCETHTOOL, &mut ifr as *mut IfReq) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Registers a netlink socket with the tokio reactor.
pub fn register_netlink(
    s: netlink_sys::Socket,
) -> io::Result<tokio::io::unix::AsyncFd<netlink_sys::Socket>> {
    // SAFETY: a netlink_sys::Socket owns its descriptor (it is closed when the socket is
    // dropped, not before) and `as_raw_fd` always returns that same descriptor, for as long
    // as the AsyncFd owns the socket.
    unsafe { tokio::io::unix::AsyncFd::register(s) }.map_err(|e| e.into_parts().1)
}

/// An inotify instance, seen by its descriptor.
pub struct InotifyFd(pub nix::sys::inotify::Inotify);

impl AsRawFd for InotifyFd {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsFd;
        self.0.as_fd().as_raw_fd()
    }
}

/// Registers an inotify instance with the tokio reactor.
pub fn register_inotify(i: InotifyFd) -> io::Result<tokio::io::unix::AsyncFd<InotifyFd>> {
    // SAFETY: nix's Inotify owns its descriptor (an OwnedFd, closed on drop) and `as_raw_fd`
    // returns that descriptor for as long as the AsyncFd owns it.
    unsafe { tokio::io::unix::AsyncFd::register(i) }.map_err(|e| e.into_parts().1)
}
