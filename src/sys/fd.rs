//! Descriptor numbers the caller does not own.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use super::{SysError, Syscall};

/// Duplicates descriptor number `fd` of this process into a new close-on-exec
/// descriptor the caller owns. `fd` itself is left open and untouched; an fd
/// number that is not open gives `EBADF`.
pub(crate) fn dup_raw(fd: RawFd) -> Result<OwnedFd, SysError> {
    if fd < 0 {
        return Err(SysError::new(Syscall::Dup, libc::EBADF));
    }
    // SAFETY: fcntl(F_DUPFD_CLOEXEC) on any integer is memory-safe; it fails
    // with EBADF if the number is not an open descriptor.
    let new = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
    if new < 0 {
        return Err(SysError::last(Syscall::Dup));
    }
    // SAFETY: `new` was just returned by fcntl and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// The numbers of the descriptors open in this process now.
pub(crate) fn open_fds() -> io::Result<Vec<RawFd>> {
    let mut fds: Vec<RawFd> = std::fs::read_dir("/proc/self/fd")?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    // One of them was the directory being read, closed by now: drop it, or
    // its number would be trusted when something else reuses it.
    // SAFETY: fcntl(F_GETFD) on any integer is memory-safe; -1 means the
    // number is not open.
    fds.retain(|fd| unsafe { libc::fcntl(*fd, libc::F_GETFD) } != -1);
    fds.sort_unstable();
    Ok(fds)
}

/// Counts the open descriptors of this process (`/proc/self/fd`), not
/// counting the one used to read the directory.
pub fn count_open_fds() -> io::Result<usize> {
    Ok(std::fs::read_dir("/proc/self/fd")?.count().saturating_sub(1))
}

/// Takes ownership of the channel descriptor this worker inherited, by
/// number, from the environment: checks it is an open socket and makes it
/// close-on-exec, so that the worker's own children do not inherit it.
///
/// The caller must call this at most once per number (the worker runtime
/// guards it with a flag), since the returned `OwnedFd` closes it on drop.
pub(crate) fn take_inherited_socket(fd: RawFd) -> io::Result<OwnedFd> {
    use nix::sys::socket::{getsockopt, sockopt};
    // SAFETY: fcntl(F_SETFD) on any integer is memory-safe; it fails with
    // EBADF if the number is not open, in which case we stop here.
    if fd < 0 || unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } == -1 {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("inherited channel descriptor {fd} is not open"),
        ));
    }
    // SAFETY: the number is open (checked above); the master passed it to
    // this process for the channel alone and nothing else in the process
    // owns it; the caller takes it only once.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    getsockopt(&owned, sockopt::SockType).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("inherited channel descriptor {fd} is not a socket: {e}"),
        )
    })?;
    Ok(owned)
}

/// Sets `O_NONBLOCK` on a descriptor (a flag of the open file: shared with
/// every duplicate of it).
pub(crate) fn set_nonblocking(fd: std::os::fd::BorrowedFd<'_>) -> io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL)?);
    fcntl(fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    Ok(())
}
