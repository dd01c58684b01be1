//! Registering a listening socket in a mio `Poll` with `EPOLLEXCLUSIVE`,
//! which mio has no flag for.
//!
//! mio's epoll backend reads back whatever `epoll_event` the kernel returns
//! and takes the token from its data field, so a registration made here
//! shows up in `Poll::poll` like any other. It is level-triggered: a worker
//! that leaves connections queued is told again.

use std::io;
use std::os::fd::RawFd;

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
pub(crate) fn add_exclusive(epfd: RawFd, fd: RawFd, token: usize) -> io::Result<()> {
    ctl(epfd, libc::EPOLL_CTL_ADD, fd, token)
}

/// Moves this epoll instance to the back of the socket's queue of exclusive
/// waiters (`EPOLL_CTL_MOD` is not allowed with `EPOLLEXCLUSIVE`, so: delete
/// and add). The kernel wakes the first idle waiter in queue order; going to
/// the back after taking connections makes the wake-ups go round.
pub(crate) fn rearm_exclusive(epfd: RawFd, fd: RawFd, token: usize) -> io::Result<()> {
    remove(epfd, fd)?;
    add_exclusive(epfd, fd, token)
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

/// True if `fd` has something to read right now (a listening socket: a
/// connection is queued). Never blocks.
pub(crate) fn readable_now(fd: RawFd) -> bool {
    let mut p = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    // SAFETY: poll reads and writes one pollfd on our stack; timeout 0.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    n == 1 && p.revents & libc::POLLIN != 0
}
