//! Reaping children that are not workers, for a master that is PID 1 or a
//! child subreaper: a look at the first exited child that reaps nothing,
//! a reap of one pid, the list of this process's children.

use std::io;

use super::process::Reaped;

/// Asks the kernel to make this process the parent of every orphan among
/// its descendants (Linux's `PR_SET_CHILD_SUBREAPER`, FreeBSD's
/// `PROC_REAP_ACQUIRE`), as PID 1 is for the rest. macOS has no such call:
/// an `Unsupported` error says so.
#[cfg(target_os = "linux")]
pub(crate) fn set_child_subreaper() -> io::Result<()> {
    nix::sys::prctl::set_child_subreaper(true).map_err(io::Error::from)
}

/// See the Linux version.
#[cfg(target_os = "freebsd")]
pub(crate) fn set_child_subreaper() -> io::Result<()> {
    // SAFETY: procctl(PROC_REAP_ACQUIRE) on this process takes no data.
    let r = unsafe { libc::procctl(libc::P_PID, 0, libc::PROC_REAP_ACQUIRE, std::ptr::null_mut()) };
    if r == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// See the Linux version.
#[cfg(not(any(target_os = "linux", target_os = "freebsd")))]
pub(crate) fn set_child_subreaper() -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "a subreaper (Settings::subreaper) needs Linux or FreeBSD; this platform has no such call",
    ))
}

/// What [`peek`] saw among this process's children.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Peek {
    /// It has no child at all (`ECHILD`).
    NoChildren,
    /// It has children, none of them exited and not reaped yet.
    Running,
    /// This child has exited and is not reaped yet (it is still reported).
    Exited(u32),
}

/// The first exited child, left as it is (`WNOWAIT`): the caller decides
/// whether it may reap it. The kernel always reports the same one first
/// until it is reaped.
pub(crate) fn peek() -> io::Result<Peek> {
    let mut info = std::mem::MaybeUninit::<libc::siginfo_t>::zeroed();
    loop {
        // SAFETY: waitid writes one siginfo_t into `info`, a valid pointer
        // to our stack; P_ALL ignores the id; WNOWAIT reaps nothing.
        let r = unsafe {
            libc::waitid(
                libc::P_ALL,
                0,
                info.as_mut_ptr(),
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            )
        };
        if r == 0 {
            break;
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::ECHILD) => return Ok(Peek::NoChildren),
            _ => return Err(e),
        }
    }
    // SAFETY: zeroed, then filled in by a successful waitid; si_pid is 0
    // when WNOHANG found no exited child.
    let pid = unsafe { info.assume_init().si_pid() };
    Ok(if pid > 0 { Peek::Exited(pid as u32) } else { Peek::Running })
}

/// Reaps child `pid` if it has exited (`Ok(None)` while it runs). Only
/// for a pid that is this process's child and not reaped yet: nothing
/// else reaps it meanwhile (the master has one thread), so the pid cannot
/// be another process's.
pub(crate) fn reap(pid: u32) -> io::Result<Option<Reaped>> {
    super::process::waitid_reap(libc::P_PID, pid as libc::id_t)
}

/// This process's children, exited or not, from
/// `/proc/self/task/*/children`; where the kernel lacks that file, from the
/// parent pid of every process in `/proc`. Empty if `/proc` cannot be read
/// (macOS, FreeBSD without procfs mounted): then a reaping master that
/// shuts down stops only its workers, and its other children are left to
/// the reaping that follows their exit.
pub(crate) fn children() -> Vec<u32> {
    let me = std::process::id();
    let mut pids = Vec::new();
    let mut found = false;
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for task in tasks.flatten() {
            if let Ok(list) = std::fs::read_to_string(task.path().join("children")) {
                found = true;
                pids.extend(list.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
            }
        }
    }
    if !found {
        let Ok(procs) = std::fs::read_dir("/proc") else { return pids };
        for p in procs.flatten() {
            let Some(pid) = p.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(p.path().join("stat")) else { continue };
            // `pid (comm) state ppid ...`; comm may hold spaces and ')'.
            let ppid = stat.rsplit_once(')').and_then(|(_, rest)| {
                rest.split_whitespace().nth(1).and_then(|f| f.parse::<u32>().ok())
            });
            if ppid == Some(me) {
                pids.push(pid);
            }
        }
    }
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// Sends `sig` to child `pid`: a child not reaped yet keeps its pid, so
/// the signal cannot reach another process. `ESRCH` (it is gone) is not an
/// error.
pub(crate) fn signal_child(pid: u32, sig: i32) -> io::Result<()> {
    let sig = nix::sys::signal::Signal::try_from(sig)?;
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
        Err(e) => Err(e.into()),
    }
}
