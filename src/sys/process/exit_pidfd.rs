//! A watched process on Linux: its pidfd.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use super::pidfd::{pidfd_open, pidfd_reap, pidfd_send_signal};
use super::Reaped;

/// Exits are reported by each process's own descriptor
/// ([`ProcessHandle::exit_fd`]): `SIGCHLD` is not needed.
pub(crate) const EXITS_NEED_SIGCHLD: bool = false;

/// A process this one watches: its pidfd.
#[derive(Debug)]
pub(crate) struct ProcessHandle {
    pidfd: OwnedFd,
}

impl ProcessHandle {
    /// A handle on `pid`, this process's child, not reaped yet.
    pub(crate) fn child(pid: u32) -> io::Result<ProcessHandle> {
        Ok(ProcessHandle { pidfd: pidfd_open(pid)? })
    }

    /// A handle on `pid`, a process that is not this one's child (a
    /// detached new master), or this process itself.
    pub(crate) fn other(pid: u32) -> io::Result<ProcessHandle> {
        ProcessHandle::child(pid)
    }

    /// A descriptor readable once it has exited, to register in a poll.
    pub(crate) fn exit_fd(&self) -> Option<BorrowedFd<'_>> {
        Some(self.pidfd.as_fd())
    }

    /// Reaps it if it has exited (`Ok(None)` while it runs). `ECHILD`: it
    /// was reaped by someone else (the kernel, with `SIGCHLD` ignored).
    pub(crate) fn reap(&self) -> io::Result<Option<Reaped>> {
        pidfd_reap(self.pidfd.as_fd())
    }

    /// Whether it has exited, without reaping it.
    pub(crate) fn exited(&self) -> io::Result<bool> {
        pidfd_exited(self.pidfd.as_fd())
    }

    /// Sends it `sig`; never another process that reused its pid.
    pub(crate) fn signal(&self, sig: i32) -> io::Result<()> {
        pidfd_send_signal(self.pidfd.as_fd(), sig)
    }
}

/// Whether the process of `pidfd` has exited (its pidfd is readable),
/// without reaping it: for a process that is not this one's child.
fn pidfd_exited(pidfd: BorrowedFd<'_>) -> io::Result<bool> {
    let mut fds = [libc::pollfd { fd: pidfd.as_raw_fd(), events: libc::POLLIN, revents: 0 }];
    loop {
        // SAFETY: poll reads and writes the one pollfd of our stack array,
        // and returns at once (timeout 0).
        let r = unsafe { libc::poll(fds.as_mut_ptr(), 1, 0) };
        if r >= 0 {
            return Ok(r > 0 && fds[0].revents & (libc::POLLIN | libc::POLLHUP) != 0);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}
