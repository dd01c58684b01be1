//! Plain level-triggered registrations: `EPOLLIN` in the epoll instance of
//! mio's `Poll` on Linux, `EVFILT_READ` in its kqueue elsewhere.

use std::io;
use std::os::fd::{OwnedFd, RawFd};

/// Every waiting worker is woken for each connection.
pub(crate) const WAKES_ONE: bool = false;

/// No bell: every waiting worker is woken by the socket itself.
pub(crate) fn bell() -> io::Result<Option<OwnedFd>> {
    Ok(None)
}

/// Adds `fd` to the poll `poll_fd` for reading, level-triggered.
#[cfg(target_os = "linux")]
pub(crate) fn add(poll_fd: RawFd, fd: RawFd, token: usize) -> io::Result<()> {
    let mut ev = libc::epoll_event { events: libc::EPOLLIN as u32, u64: token as u64 };
    // SAFETY: epoll_ctl reads one epoll_event from a valid pointer to our
    // stack; the descriptors are plain integers the kernel checks.
    if unsafe { libc::epoll_ctl(poll_fd, libc::EPOLL_CTL_ADD, fd, &mut ev) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Takes `fd` out of the poll `poll_fd`.
#[cfg(target_os = "linux")]
pub(crate) fn remove(poll_fd: RawFd, fd: RawFd) -> io::Result<()> {
    // SAFETY: EPOLL_CTL_DEL ignores the event pointer (null is allowed since
    // Linux 2.6.9).
    if unsafe { libc::epoll_ctl(poll_fd, libc::EPOLL_CTL_DEL, fd, std::ptr::null_mut()) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// One change to the kqueue `kq`: `flags` (`EV_ADD`, `EV_DELETE`) on the
/// read filter of `fd`, with `token` as its `udata` (mio's token).
#[cfg(not(target_os = "linux"))]
fn change(kq: RawFd, fd: RawFd, flags: u16, token: usize) -> io::Result<()> {
    // SAFETY: a kevent is a plain C struct for which all zeroes is valid
    // (the fields a platform adds, such as FreeBSD's `ext`, stay zero).
    let mut ev: libc::kevent = unsafe { std::mem::zeroed() };
    ev.ident = fd as libc::uintptr_t;
    ev.filter = libc::EVFILT_READ;
    ev.flags = flags;
    ev.udata = token as *mut libc::c_void;
    // SAFETY: kevent reads one change from a valid pointer to our stack and
    // writes nothing (no event list, no timeout needed without one).
    let r = unsafe { libc::kevent(kq, &ev, 1, std::ptr::null_mut(), 0, std::ptr::null()) };
    if r == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Adds `fd` to the poll `poll_fd` for reading, level-triggered.
#[cfg(not(target_os = "linux"))]
pub(crate) fn add(poll_fd: RawFd, fd: RawFd, token: usize) -> io::Result<()> {
    change(poll_fd, fd, libc::EV_ADD, token)
}

/// Takes `fd` out of the poll `poll_fd`.
#[cfg(not(target_os = "linux"))]
pub(crate) fn remove(poll_fd: RawFd, fd: RawFd) -> io::Result<()> {
    change(poll_fd, fd, libc::EV_DELETE, 0)
}
