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

/// What a descriptor number refers to: the device and inode of its open
/// file. A socket's inode is unique among the sockets alive in the system,
/// so a number that was closed and reused for another socket (or file) no
/// longer has the identity recorded for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Identity {
    dev: u64,
    ino: u64,
}

/// The identity of descriptor number `fd`, or `None` if it is not open.
pub(crate) fn identity(fd: RawFd) -> Option<Identity> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat on any integer is memory-safe; it writes a whole `stat`
    // into the buffer on success, and fails with EBADF if `fd` is not open.
    if fd < 0 || unsafe { libc::fstat(fd, st.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: fstat succeeded, so the buffer is initialised.
    let st = unsafe { st.assume_init() };
    // dev_t is i32 on macOS and ino_t u32 on some platforms.
    #[allow(clippy::unnecessary_cast)]
    Some(Identity { dev: st.st_dev as u64, ino: st.st_ino as u64 })
}

/// The descriptors open in this process now, each with its identity.
pub(crate) fn open_fds() -> io::Result<Vec<(RawFd, Identity)>> {
    let fds: Vec<RawFd> = std::fs::read_dir("/proc/self/fd")?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    // One of them was the directory being read, closed by now: `identity`
    // drops it, or its number would be trusted when something else reuses
    // it.
    let mut fds: Vec<(RawFd, Identity)> =
        fds.into_iter().filter_map(|fd| Some((fd, identity(fd)?))).collect();
    fds.sort_unstable_by_key(|(fd, _)| *fd);
    Ok(fds)
}

/// Raises this process's soft `RLIMIT_NOFILE` to its hard limit (as the Go
/// runtime does at start) and returns the soft limit now in force.
// rlim_t is i64 on FreeBSD, u64 elsewhere.
#[allow(clippy::unnecessary_cast)]
pub(crate) fn raise_nofile_limit() -> io::Result<u64> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes one `rlimit` into the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
        // SAFETY: setrlimit only reads the struct we pass.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            return Ok(raised.rlim_cur as u64);
        }
        let e = io::Error::last_os_error();
        log::debug!("raising RLIMIT_NOFILE from {} to {}: {e}", lim.rlim_cur, lim.rlim_max);
    }
    Ok(lim.rlim_cur as u64)
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

/// What inherited descriptor `fd` is, looked at without owning it (nothing
/// is closed, whatever it is): `None` if it is not open or not a socket,
/// else its family, its type, and whether it listens.
pub(crate) fn inherited_socket_info(
    fd: RawFd,
) -> Option<(nix::sys::socket::AddressFamily, nix::sys::socket::SockType, bool)> {
    use nix::sys::socket::{getsockname, getsockopt, sockopt, SockaddrLike, SockaddrStorage};
    // SAFETY: fcntl(F_GETFD) on any integer is memory-safe; it tells us
    // whether the number is open, and we borrow it only if it is.
    if fd < 0 || unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
        return None;
    }
    // SAFETY: `fd` is open (checked just above) and stays open while it is
    // borrowed here: this process is single-threaded and nothing below
    // closes it.
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    let ty = getsockopt(&fd, sockopt::SockType).ok()?;
    let listening = getsockopt(&fd, sockopt::AcceptConn).unwrap_or(false);
    let ss: SockaddrStorage = getsockname(std::os::fd::AsRawFd::as_raw_fd(&fd)).ok()?;
    Some((ss.family()?, ty, listening))
}

/// Sets `O_NONBLOCK` on a descriptor (a flag of the open file: shared with
/// every duplicate of it).
pub(crate) fn set_nonblocking(fd: std::os::fd::BorrowedFd<'_>) -> io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL)?);
    fcntl(fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    Ok(())
}
