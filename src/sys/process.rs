//! Spawning workers and learning of their exit.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};

/// Spawns `cmd` so that descriptor `keep` (close-on-exec in this process)
/// survives `exec` in the child, and the child starts with an empty signal
/// mask (the master blocks the signals it reads from its `signalfd`, and a
/// mask survives `exec`). No other descriptor is affected: everything the
/// crate opens is close-on-exec.
pub(crate) fn spawn_keeping_fd(cmd: &mut Command, keep: RawFd) -> io::Result<Child> {
    // SAFETY: the closure runs in the child between fork and exec and only
    // calls fcntl(2), sigemptyset(3) and sigprocmask(2), all async-signal-safe,
    // on a descriptor number the child inherited and a sigset on its own
    // stack; it allocates nothing and takes no lock.
    unsafe {
        cmd.pre_exec(move || {
            if libc::fcntl(keep, libc::F_SETFD, 0) == -1 {
                return Err(io::Error::last_os_error());
            }
            let mut set = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
            libc::sigemptyset(set.as_mut_ptr());
            if libc::sigprocmask(libc::SIG_SETMASK, set.as_ptr(), std::ptr::null_mut()) == -1 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn()
}

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
