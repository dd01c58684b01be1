//! Portable: a handler writes each signal's number into a pipe that the
//! process reads from its poll (the self-pipe trick).
//!
//! The handler is async-signal-safe: it saves `errno`, compares `getpid()`
//! with the pid that owns the pipe, writes one byte without blocking, and
//! puts `errno` back. The pid check keeps a forked child (between `fork`
//! and `exec`, when it still runs the parent's handler) from writing a
//! signal meant for it into the parent's pipe. A full pipe drops the byte:
//! hundreds of signals are already waiting to be read.
//!
//! Unlike a `signalfd`, where a standard signal sent twice before it is
//! read is pending once, each delivery is one byte: two `SIGTERM`s sent
//! quickly are read as two. One [`Signals`] per process at a time.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicI32, Ordering::SeqCst};

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, FdFlag, OFlag};
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, SigmaskHow};

use crate::Signal;

/// The pipe's write end, for the handler (-1: none).
static WRITE_END: AtomicI32 = AtomicI32::new(-1);
/// The pid of the process that owns the pipe.
static OWNER: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    let saved = Errno::last_raw();
    // SAFETY: getpid and write are async-signal-safe; the byte is on this
    // handler's stack, and a closed or invalid descriptor only fails.
    unsafe {
        if libc::getpid() == OWNER.load(SeqCst) {
            let fd = WRITE_END.load(SeqCst);
            if fd >= 0 {
                let byte = sig as u8;
                libc::write(fd, (&byte as *const u8).cast(), 1);
            }
        }
    }
    Errno::set_raw(saved);
}

/// Signals caught by a handler and read from a pipe.
pub(crate) struct Signals {
    read: OwnedFd,
    write: OwnedFd,
    /// Each signal taken, and the action it had before.
    old: Vec<(nix::sys::signal::Signal, SigAction)>,
}

fn nonblocking_cloexec(fd: &OwnedFd) -> io::Result<()> {
    fcntl(fd, FcntlArg::F_SETFL(OFlag::O_NONBLOCK))?;
    fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))?;
    Ok(())
}

impl Signals {
    pub(crate) fn new(signals: &[Signal]) -> io::Result<Signals> {
        let me = std::process::id() as i32;
        if OWNER.load(SeqCst) == me && WRITE_END.load(SeqCst) >= 0 {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "this process already reads its signals through a self-pipe",
            ));
        }
        let (read, write) = nix::unistd::pipe()?;
        nonblocking_cloexec(&read)?;
        nonblocking_cloexec(&write)?;
        OWNER.store(me, SeqCst);
        WRITE_END.store(write.as_raw_fd(), SeqCst);
        let mut taken = Signals { read, write, old: Vec::new() };
        let mut set = SigSet::empty();
        let action =
            SigAction::new(SigHandler::Handler(on_signal), SaFlags::SA_RESTART, SigSet::empty());
        for s in signals {
            let sig = nix::sys::signal::Signal::try_from(s.as_raw())?;
            // SAFETY: the handler only calls async-signal-safe functions
            // (see `on_signal`).
            let old = unsafe { sigaction(sig, &action) }?;
            taken.old.push((sig, old));
            set.add(sig);
        }
        // Blocked signals would never reach the handler (a process forked
        // by an init that had them blocked inherits the mask).
        nix::sys::signal::sigprocmask(SigmaskHow::SIG_UNBLOCK, Some(&set), None)?;
        Ok(taken)
    }

    /// Closes the pipe and leaves the handlers: in a forked child that
    /// reads its signals through a `Signals` of its own (the handler of an
    /// inherited one writes nothing in another process).
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    pub(crate) fn close_keeping_mask(mut self) {
        self.old.clear();
    }

    /// Reads one pending signal, `None` when there is none.
    pub(crate) fn read(&self) -> io::Result<Option<Signal>> {
        let mut byte = [0u8; 1];
        loop {
            match nix::unistd::read(&self.read, &mut byte) {
                Ok(1) => match Signal::from_raw(i32::from(byte[0])) {
                    Some(s) => return Ok(Some(s)),
                    None => continue,
                },
                Ok(_) => return Ok(None),
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) => return Ok(None),
                Err(e) => return Err(e.into()),
            }
        }
    }
}

impl Signals {
    /// The descriptor the signals are read from.
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.read.as_fd()
    }
}

impl Drop for Signals {
    fn drop(&mut self) {
        for (sig, old) in self.old.drain(..) {
            // SAFETY: puts back the action sigaction returned for it.
            let _ = unsafe { sigaction(sig, &old) };
        }
        if OWNER.load(SeqCst) == std::process::id() as i32
            && WRITE_END.load(SeqCst) == self.write.as_raw_fd()
        {
            WRITE_END.store(-1, SeqCst);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signal_is_read_from_the_pipe_and_one_a_forked_child_gets_is_not() {
        let signals = Signals::new(&[Signal::SIGUSR2]).unwrap();
        assert!(Signals::new(&[Signal::SIGUSR1]).is_err(), "one per process");
        assert_eq!(signals.read().unwrap(), None);
        nix::sys::signal::raise(nix::sys::signal::Signal::SIGUSR2).unwrap();
        assert_eq!(signals.read().unwrap(), Some(Signal::SIGUSR2));
        assert_eq!(signals.read().unwrap(), None);
        // A forked child that gets the signal before any exec runs the
        // inherited handler: it must not write into this process's pipe.
        // SAFETY: the child only raises a signal and exits.
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGUSR2);
                // SAFETY: _exit skips the test harness's atexit work.
                unsafe { libc::_exit(0) }
            }
            nix::unistd::ForkResult::Parent { child } => {
                nix::sys::wait::waitpid(child, None).unwrap();
            }
        }
        assert_eq!(signals.read().unwrap(), None, "the child's signal is its own");
        drop(signals);
        // Given back: a new one can be made.
        let again = Signals::new(&[Signal::SIGUSR2]).unwrap();
        drop(again);
    }
}
