//! Linux's pidfds: a descriptor for a process, readable when it exits,
//! through which it is signalled and reaped without its pid.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use super::Reaped;

/// Opens a pidfd for `pid`: it becomes readable when the process exits.
/// The caller must not have reaped `pid` yet (a zombie keeps the pid).
pub(crate) fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes two integers and returns a new descriptor
    // (close-on-exec by definition) or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Reaps the process of `pidfd` if it has exited (`Ok(None)` while it runs).
/// `ECHILD` means someone else reaped it (the kernel, with `SIGCHLD`
/// ignored). Never reaps another process, whatever became of the pid.
pub(crate) fn pidfd_reap(pidfd: BorrowedFd<'_>) -> io::Result<Option<Reaped>> {
    // P_PIDFD takes the descriptor number as the id.
    super::waitid_reap(libc::P_PIDFD, pidfd.as_raw_fd() as libc::id_t)
}

/// Sends `sig` to the process of `pidfd`: unlike `kill(2)` it cannot reach
/// another process that reused the pid.
pub(crate) fn pidfd_send_signal(pidfd: BorrowedFd<'_>, sig: i32) -> io::Result<()> {
    // SAFETY: pidfd_send_signal takes a descriptor, a signal number, a null
    // siginfo pointer (allowed: the kernel fills one in) and flags 0.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
