//! A watched process without pidfds (macOS, FreeBSD, and Linux with the
//! `portable-backend` feature): its pid. Exits are learnt from `SIGCHLD`,
//! after which the caller tries [`ProcessHandle::reap`] on each child.

use std::io;
use std::os::fd::BorrowedFd;

use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::Reaped;

/// No descriptor reports an exit: the caller handles `SIGCHLD` and then
/// reaps each of its children that may have exited.
pub(crate) const EXITS_NEED_SIGCHLD: bool = true;

/// A process this one watches: its pid, and whether it is this process's
/// child (then its pid cannot be reused before this process reaps it).
#[derive(Debug)]
pub(crate) struct ProcessHandle {
    pid: u32,
    child: bool,
}

impl ProcessHandle {
    /// A handle on `pid`, this process's child, not reaped yet.
    pub(crate) fn child(pid: u32) -> io::Result<ProcessHandle> {
        Ok(ProcessHandle { pid, child: true })
    }

    /// A handle on `pid`, a process that is not this one's child (a
    /// detached new master), or this process itself. Its pid could be
    /// reused once its parent reaps it; signals to it are sent only while
    /// it is known to run.
    pub(crate) fn other(pid: u32) -> io::Result<ProcessHandle> {
        Ok(ProcessHandle { pid, child: false })
    }

    /// None: exits come with `SIGCHLD` ([`EXITS_NEED_SIGCHLD`]).
    pub(crate) fn exit_fd(&self) -> Option<BorrowedFd<'_>> {
        None
    }

    /// Reaps it if it has exited (`Ok(None)` while it runs, and always for
    /// a process that is not this one's child). `ECHILD`: it was reaped by
    /// someone else.
    pub(crate) fn reap(&self) -> io::Result<Option<Reaped>> {
        if !self.child {
            return Ok(None);
        }
        super::waitid_reap(libc::P_PID, self.pid as libc::id_t)
    }

    /// Whether it has exited, without reaping it: a child is looked at with
    /// `WNOWAIT`; another process is gone once `kill(pid, 0)` finds no such
    /// process (a zombie still counts until its parent reaps it).
    pub(crate) fn exited(&self) -> io::Result<bool> {
        if self.child {
            return match super::waitid(libc::P_PID, self.pid as libc::id_t, libc::WNOWAIT) {
                Ok(found) => Ok(found.is_some()),
                Err(e) if e.raw_os_error() == Some(libc::ECHILD) => Ok(true),
                Err(e) => Err(e),
            };
        }
        match kill(Pid::from_raw(self.pid as i32), None) {
            Ok(()) | Err(Errno::EPERM) => Ok(false),
            Err(Errno::ESRCH) => Ok(true),
            Err(e) => Err(e.into()),
        }
    }

    /// Sends it `sig` with `kill(2)`. A child not reaped yet keeps its pid;
    /// another process is signalled only if it has not exited.
    pub(crate) fn signal(&self, sig: i32) -> io::Result<()> {
        if !self.child && self.exited()? {
            return Err(io::Error::from_raw_os_error(libc::ESRCH));
        }
        let sig = Signal::try_from(sig)?;
        kill(Pid::from_raw(self.pid as i32), sig).map_err(io::Error::from)
    }
}
