//! Descriptors passed by a service manager (systemd's socket activation):
//! making them close-on-exec and finding what kind of socket each is, by
//! number, before anything owns them.

use std::io;
use std::os::fd::{BorrowedFd, RawFd};

use nix::sys::socket::{
    self as nsock, sockopt, AddressFamily, SockType, SockaddrLike, SockaddrStorage,
};

/// Sets `FD_CLOEXEC` on descriptor `fd`, which this process inherited and
/// nothing owns yet. Fails with `EBADF` if it is not open.
pub(crate) fn set_cloexec(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl(F_SETFD) on any integer is memory-safe; it fails with
    // EBADF if the number is not open, and changes no memory of ours.
    if fd < 0 || unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The family and type of socket descriptor `fd`; `None` if it is not a
/// socket (a FIFO, a closed number) or has no address family.
pub(crate) fn socket_type(fd: RawFd) -> Option<(AddressFamily, SockType)> {
    // SAFETY: fcntl(F_GETFD) on any integer is memory-safe; it tells us
    // whether the number is open, and we borrow it only if it is.
    if fd < 0 || unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
        return None;
    }
    // SAFETY: `fd` is open (checked just above) and stays open while it is
    // borrowed here: this process is single-threaded and nothing below
    // closes it.
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    let ty = nsock::getsockopt(&fd, sockopt::SockType).ok()?;
    let ss: SockaddrStorage = nsock::getsockname(std::os::fd::AsRawFd::as_raw_fd(&fd)).ok()?;
    Some((ss.family()?, ty))
}

/// The path a Unix socket is bound to, as [`Address::Unix`](crate::Address)
/// holds it (a leading NUL for the abstract namespace); empty if unnamed
/// or not a Unix socket.
pub(crate) fn local_unix_path(fd: std::os::fd::BorrowedFd<'_>) -> Vec<u8> {
    use std::os::unix::ffi::OsStrExt;
    let Ok(ss) = nsock::getsockname::<SockaddrStorage>(std::os::fd::AsRawFd::as_raw_fd(&fd)) else {
        return Vec::new();
    };
    let Some(unix) = ss.as_unix_addr() else { return Vec::new() };
    if let Some(path) = unix.path() {
        return path.as_os_str().as_bytes().to_vec();
    }
    match super::socket::abstract_name_of(unix) {
        Some(name) => [&[0u8][..], name].concat(),
        None => Vec::new(),
    }
}
