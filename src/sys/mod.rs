//! The syscall layer: every `unsafe` block of the crate lives below this module.
//!
//! Contract of what this layer provides to the rest of the crate:
//!
//! - [`socket`]: a close-on-exec, non-blocking Unix socket pair; `sendmsg` and
//!   `recvmsg` that carry file descriptors (`SCM_RIGHTS`), never raise
//!   `SIGPIPE`, and receive descriptors already close-on-exec; listening
//!   sockets bound with the options the registry needs, every failure reported
//!   as a [`SysError`] that names the syscall.
//! - [`process`]: spawning a worker so that exactly one extra descriptor (its
//!   end of the channel) crosses `exec`, with its credentials switched and a
//!   signal asked for when the master dies (where the platform has one); a
//!   handle made before the child can be reaped, to learn of its exit and
//!   to reap and signal it (a `pidfd` on Linux; elsewhere its pid, with
//!   exits learnt from `SIGCHLD`).
//! - [`signal`]: the signals the master handles, read from a descriptor (a
//!   `signalfd` on Linux, a self-pipe elsewhere).
//! - [`reap`]: for a master that is PID 1 or a subreaper, a look at the
//!   first exited child without reaping it, a reap of one pid, the list of
//!   children, and becoming a subreaper (Linux, FreeBSD).
//! - [`fd`]: duplicating a raw descriptor number the caller does not own.
//! - [`listen_fds`]: descriptors a service manager passed (socket
//!   activation): made close-on-exec and classified by number.
//! - [`fs`]: file-system work with another user's credentials (`setfsuid`,
//!   `setfsgid`, `setgroups` for this thread only on Linux; the effective
//!   ids elsewhere), on a pinned directory, never following a symbolic link
//!   at the end of a path.
//! - [`listen_poll`]: a shared listening socket's registration in a mio
//!   `Poll` (`EPOLLEXCLUSIVE` on Linux; level-triggered and woken for all
//!   elsewhere), and the accept board's bell where one is needed.
//! - [`shm`]: a shared page seen as atomics (a sealed `memfd`, or an
//!   unlinked `shm_open` object on macOS), and the system-wide monotonic
//!   clock in milliseconds.
//! - [`procfs`]: what Linux's `/proc` tells (resource use, listening Unix
//!   sockets, the running binary), and what stands in for it elsewhere.
//! - [`socket`] and [`fs`] also hold the small differences: macOS's missing
//!   `SOCK_CLOEXEC`, `MSG_CMSG_CLOEXEC` and `MSG_NOSIGNAL`, abstract Unix
//!   addresses (Linux only), the group database.
//!
//! The platform is chosen here and nowhere else: a module with two
//! implementations picks one with `cfg` (Linux's own calls, or the portable
//! ones, which the `portable-backend` feature selects on Linux too so that
//! they are tested there); the rest of the crate sees one interface, and at
//! most a constant that says what the platform does
//! ([`process::EXITS_NEED_SIGCHLD`], [`listen_poll::WAKES_ONE`],
//! [`socket::HAS_ABSTRACT`]). Outside `sys`, only what is a platform's by
//! nature is: the PID 1 init (`host::init`, Linux) and the signal
//! constants only some platforms have.
//!
//! Every descriptor this layer creates is close-on-exec. Ownership is always
//! explicit: functions return [`OwnedFd`](std::os::fd::OwnedFd) for what the
//! caller now owns and take [`BorrowedFd`](std::os::fd::BorrowedFd) or
//! `AsFd` for what they only use.

pub(crate) mod fd;
pub(crate) mod fs;
pub(crate) mod listen_fds;
pub(crate) mod listen_poll;
pub(crate) mod process;
pub(crate) mod procfs;
pub(crate) mod reap;
pub(crate) mod shm;
pub(crate) mod signal;
pub(crate) mod socket;

use std::fmt;
use std::io;

/// A failed syscall: the errno and the name of the call that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct SysError {
    /// The errno value.
    pub errno: i32,
    /// The syscall that failed.
    pub syscall: Syscall,
}

impl SysError {
    pub(crate) fn new(syscall: Syscall, errno: i32) -> SysError {
        SysError { errno, syscall }
    }

    pub(crate) fn last(syscall: Syscall) -> SysError {
        SysError::new(syscall, io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO))
    }

    pub(crate) fn from_nix(syscall: Syscall, e: nix::errno::Errno) -> SysError {
        SysError::new(syscall, e as i32)
    }
}

impl fmt::Display for SysError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.syscall, io::Error::from_raw_os_error(self.errno))
    }
}

impl From<SysError> for io::Error {
    fn from(e: SysError) -> io::Error {
        io::Error::new(io::Error::from_raw_os_error(e.errno).kind(), e.to_string())
    }
}

/// The syscalls whose failure the master reports to a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
#[non_exhaustive]
pub enum Syscall {
    /// `socket(2)`
    Socket = 1,
    /// `setsockopt(2)`
    Setsockopt = 2,
    /// `bind(2)`
    Bind = 3,
    /// `listen(2)`
    Listen = 4,
    /// `getsockname(2)`
    Getsockname = 5,
    /// `fcntl(2)` or `dup(2)` on a descriptor number
    Dup = 6,
    /// `getsockopt(2)`
    Getsockopt = 7,
    /// Resolving or validating the requested address (no syscall ran).
    Address = 8,
    /// `chmod(2)` on a Unix socket file.
    Chmod = 9,
}

impl Syscall {
    /// Decodes the wire value; `None` for an unknown one.
    pub(crate) fn from_u8(v: u8) -> Option<Syscall> {
        Some(match v {
            1 => Syscall::Socket,
            2 => Syscall::Setsockopt,
            3 => Syscall::Bind,
            4 => Syscall::Listen,
            5 => Syscall::Getsockname,
            6 => Syscall::Dup,
            7 => Syscall::Getsockopt,
            8 => Syscall::Address,
            9 => Syscall::Chmod,
            _ => return None,
        })
    }

    /// The name of the call, as in its man page.
    pub fn name(self) -> &'static str {
        match self {
            Syscall::Socket => "socket",
            Syscall::Setsockopt => "setsockopt",
            Syscall::Bind => "bind",
            Syscall::Listen => "listen",
            Syscall::Getsockname => "getsockname",
            Syscall::Dup => "fcntl(F_DUPFD_CLOEXEC)",
            Syscall::Getsockopt => "getsockopt",
            Syscall::Address => "address",
            Syscall::Chmod => "chmod",
        }
    }
}

impl fmt::Display for Syscall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
