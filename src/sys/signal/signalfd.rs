//! Linux: the signals are blocked and read from a `signalfd`.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};

use nix::sys::signal::{SigSet, SigmaskHow};

use nix::sys::signalfd::{SfdFlags, SignalFd};

use crate::Signal;

/// Signals blocked in this process and read from a descriptor instead.
///
/// Creating it blocks the signals for the (single) thread of the process;
/// dropping it unblocks them again. Children do not inherit the mask: the
/// standard library empties it before `exec`.
pub(crate) struct Signals {
    fd: SignalFd,
    set: SigSet,
}

impl Signals {
    pub(crate) fn new(signals: &[Signal]) -> io::Result<Signals> {
        let mut set = SigSet::empty();
        for s in signals {
            set.add(nix::sys::signal::Signal::try_from(s.as_raw())?);
        }
        nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), None)?;
        let fd = SignalFd::with_flags(&set, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)?;
        Ok(Signals { fd, set })
    }

    /// Closes the descriptor and leaves the signals blocked: in a forked
    /// child that reads them through a `signalfd` of its own.
    pub(crate) fn close_keeping_mask(mut self) {
        self.set = SigSet::empty();
    }

    /// Reads one pending signal, `None` when there is none.
    pub(crate) fn read(&self) -> io::Result<Option<Signal>> {
        loop {
            match self.fd.read_signal() {
                Ok(Some(info)) => match Signal::from_raw(info.ssi_signo as i32) {
                    Some(s) => return Ok(Some(s)),
                    None => continue,
                },
                Ok(None) => return Ok(None),
                Err(nix::errno::Errno::EINTR) => continue,
                Err(nix::errno::Errno::EAGAIN) => return Ok(None),
                Err(e) => return Err(e.into()),
            }
        }
    }
}

impl Signals {
    /// The descriptor the signals are read from.
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Drop for Signals {
    fn drop(&mut self) {
        let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_UNBLOCK, Some(&self.set), None);
    }
}
