//! `EPOLLEXCLUSIVE` registrations in the epoll instance of mio's `Poll`.

use std::io;
use std::os::fd::{OwnedFd, RawFd};

use nix::sys::eventfd::{EfdFlags, EventFd};

/// One waiting worker is woken per connection.
pub(crate) const WAKES_ONE: bool = true;

fn ctl(epfd: RawFd, op: libc::c_int, fd: RawFd, token: usize) -> io::Result<()> {
    let mut ev = libc::epoll_event {
        events: (libc::EPOLLIN | libc::EPOLLEXCLUSIVE) as u32,
        u64: token as u64,
    };
    // SAFETY: epoll_ctl reads one epoll_event from a valid pointer to our
    // stack; the descriptors are plain integers the kernel checks.
    if unsafe { libc::epoll_ctl(epfd, op, fd, &mut ev) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Adds `fd` to the epoll instance `epfd` for reading, exclusively: when a
/// connection arrives, the kernel wakes one waiting worker, not all of them.
pub(crate) fn add(epfd: RawFd, fd: RawFd, token: usize) -> io::Result<()> {
    ctl(epfd, libc::EPOLL_CTL_ADD, fd, token)
}

/// Takes `fd` out of the epoll instance `epfd`.
pub(crate) fn remove(epfd: RawFd, fd: RawFd) -> io::Result<()> {
    // SAFETY: EPOLL_CTL_DEL ignores the event pointer (null is allowed since
    // Linux 2.6.9).
    if unsafe { libc::epoll_ctl(epfd, libc::EPOLL_CTL_DEL, fd, std::ptr::null_mut()) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A new bell for an accept board: a non-blocking, close-on-exec eventfd,
/// with which a worker that steps aside wakes the others that sleep in
/// their poll (each registers it edge-triggered).
pub(crate) fn bell() -> io::Result<Option<OwnedFd>> {
    let flags = EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK;
    Ok(Some(EventFd::from_flags(flags)?.into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::errno::Errno;
    use nix::fcntl::{fcntl, FcntlArg, FdFlag, OFlag};
    use std::os::fd::AsFd;

    #[test]
    fn the_bell_is_close_on_exec_non_blocking_and_counts_rings() {
        let bell = bell().unwrap().unwrap();
        let flags = fcntl(&bell, FcntlArg::F_GETFD).unwrap();
        assert!(FdFlag::from_bits_truncate(flags).contains(FdFlag::FD_CLOEXEC));
        let fl = OFlag::from_bits_truncate(fcntl(&bell, FcntlArg::F_GETFL).unwrap());
        assert!(fl.contains(OFlag::O_NONBLOCK));
        super::super::ring(bell.as_fd());
        super::super::ring(bell.as_fd());
        let mut buf = [0u8; 8];
        assert_eq!(nix::unistd::read(&bell, &mut buf), Ok(8));
        assert_eq!(u64::from_ne_bytes(buf), 2);
        assert_eq!(nix::unistd::read(&bell, &mut buf), Err(Errno::EAGAIN));
    }
}
