//! Spawning workers and learning of their exit.
//!
//! A spawned process is watched through a [`ProcessHandle`], made before
//! any `wait` could reap it. One interface, two implementations, chosen
//! here and nowhere else:
//!
//! - Linux: a pidfd ([`exit_pidfd`]): readable when the process exits, and
//!   the process is reaped and signalled through it, never through its pid
//!   (a pid can be reused once its process is reaped, a pidfd cannot).
//! - Elsewhere, and on Linux with the `portable-backend` feature: the pid
//!   ([`exit_sigchld`]). The caller learns of exits from `SIGCHLD`
//!   ([`EXITS_NEED_SIGCHLD`]) and then tries to reap each child with
//!   `waitid(P_PID, WNOHANG)`. A child's pid cannot be reused before it is
//!   reaped, so signals and reaps by pid reach the right process; a process
//!   that is not this one's child (a detached new master) is watched with
//!   `kill(pid, 0)`.
//!
//! The death signal a worker asks for when the master dies is Linux's
//! `PR_SET_PDEATHSIG` and FreeBSD's `PROC_PDEATHSIG_CTL`; macOS has none
//! (nor does Linux with `portable-backend`): there the worker learns of
//! its master's death when its channel closes, at its next poll.

use std::ffi::CString;
use std::io;
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command};

#[cfg(all(target_os = "linux", not(feature = "portable-backend")))]
mod exit_pidfd;
#[cfg(any(not(target_os = "linux"), feature = "portable-backend"))]
mod exit_sigchld;

#[cfg(all(target_os = "linux", not(feature = "portable-backend")))]
pub(crate) use exit_pidfd::{ProcessHandle, EXITS_NEED_SIGCHLD};
#[cfg(any(not(target_os = "linux"), feature = "portable-backend"))]
pub(crate) use exit_sigchld::{ProcessHandle, EXITS_NEED_SIGCHLD};

// The init (Linux only) watches its master through a pidfd whatever the
// backend.
#[cfg(target_os = "linux")]
mod pidfd;
#[cfg(target_os = "linux")]
pub(crate) use pidfd::{pidfd_open, pidfd_reap, pidfd_send_signal};

/// What the child does between `fork` and `exec`, besides keeping its end of
/// the channel.
#[derive(Debug, Clone)]
pub(crate) struct ChildSetup {
    /// Switch to these credentials (uid, gid, supplementary groups).
    pub creds: Option<ChildCreds>,
    /// The signal the child gets when the master dies (`PR_SET_PDEATHSIG`).
    pub death_signal: libc::c_int,
    /// Working directory, entered with the child's credentials.
    pub cwd: Option<CString>,
}

/// A path as the child's syscalls take it.
pub(crate) fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("path {} contains a NUL byte", path.display()),
        )
    })
}

/// Credentials as the child sets them: prepared before `fork`, so the child
/// allocates nothing.
#[derive(Debug, Clone)]
pub(crate) struct ChildCreds {
    pub uid: libc::uid_t,
    pub gid: libc::gid_t,
    /// Supplementary groups; `None` leaves them as they are (the master's
    /// are already exactly these).
    pub groups: Option<Vec<libc::gid_t>>,
}

impl ChildCreds {
    /// Credentials for `uid`, `gid` and `groups`; the supplementary groups
    /// are set in the child only if this process's differ, so that an
    /// unprivileged master can name its own credentials.
    pub(crate) fn new(uid: u32, gid: u32, groups: &[u32]) -> io::Result<ChildCreds> {
        let mut want: Vec<libc::gid_t> = groups.to_vec();
        want.sort_unstable();
        want.dedup();
        let have: Vec<libc::gid_t> = super::fs::groups()?;
        Ok(ChildCreds { uid, gid, groups: (have != want).then_some(want) })
    }
}

/// Spawns `cmd` as a worker and makes its [`ProcessHandle`]. The child:
///
/// - keeps descriptor `keep` (close-on-exec in this process) across `exec`,
///   and touches no other: everything the crate opens is close-on-exec;
/// - starts with an empty signal mask (the master blocks the signals it
///   reads from its `signalfd`, and a mask survives `exec`);
/// - switches to `setup.creds`: supplementary groups, group, then user;
/// - then asks for `setup.death_signal` when this process dies (after the
///   switch: the kernel clears the request on a change of credentials), and
///   gives up if this process is already gone (it raced the request);
/// - enters `setup.cwd`, as the user it now is.
///
/// While this runs, a child that exits stays a zombie even if the
/// application ignores `SIGCHLD` (which makes the kernel reap children at
/// once): the handle is made before the pid can be freed and reused. The
/// child gets the application's `SIGCHLD` disposition back before `exec`.
pub(crate) fn spawn_worker(
    cmd: &mut Command,
    keep: RawFd,
    setup: &ChildSetup,
) -> io::Result<(Child, ProcessHandle)> {
    let master = std::process::id() as libc::pid_t;
    let sig = setup.death_signal;
    let creds = setup.creds.clone();
    let cwd = setup.cwd.clone();
    let zombies = KeepZombies::new()?;
    let ignored = zombies.ignored;
    // SAFETY: the closure runs in the child between fork and exec and only
    // calls async-signal-safe functions (fcntl, sigemptyset, sigprocmask,
    // signal, setgroups, setgid, setuid, prctl or procctl, getppid, chdir)
    // on integers,
    // a sigset on its own stack, and a group list and a NUL-terminated path
    // allocated before the fork that it only reads; it allocates nothing
    // and takes no lock.
    unsafe {
        cmd.pre_exec(move || {
            prepare_exec(&[keep], ignored)?;
            if let Some(c) = &creds {
                if let Some(groups) = &c.groups {
                    if libc::setgroups(groups.len() as _, groups.as_ptr()) == -1 {
                        return Err(io::Error::last_os_error());
                    }
                }
                if libc::setgid(c.gid) == -1 || libc::setuid(c.uid) == -1 {
                    return Err(io::Error::last_os_error());
                }
            }
            ask_death_signal(sig)?;
            // The master died before the request: nobody will send it (or,
            // without a death signal, the worker would start orphaned).
            if libc::getppid() != master {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            if let Some(dir) = &cwd {
                if libc::chdir(dir.as_ptr()) == -1 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let spawned = spawn_watched(cmd);
    drop(zombies);
    spawned
}

/// In a forked child before exec: asks for `sig` when the parent dies, where
/// the platform can (Linux's `PR_SET_PDEATHSIG`, FreeBSD's
/// `PROC_PDEATHSIG_CTL`); elsewhere nothing, and the worker learns of it
/// when its channel closes. Async-signal-safe.
#[cfg(all(target_os = "linux", not(feature = "portable-backend")))]
fn ask_death_signal(sig: libc::c_int) -> io::Result<()> {
    // SAFETY: prctl(PR_SET_PDEATHSIG) takes integers only.
    if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, sig as libc::c_ulong, 0, 0, 0) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// See the Linux version.
#[cfg(target_os = "freebsd")]
fn ask_death_signal(sig: libc::c_int) -> io::Result<()> {
    let mut sig = sig;
    // SAFETY: procctl reads one c_int from a valid pointer to our stack.
    let r = unsafe {
        libc::procctl(
            libc::P_PID,
            0,
            libc::PROC_PDEATHSIG_CTL,
            (&mut sig as *mut libc::c_int).cast(),
        )
    };
    if r == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// See the Linux version: this platform (or the `portable-backend` build)
/// has no death signal.
#[cfg(not(any(
    all(target_os = "linux", not(feature = "portable-backend")),
    target_os = "freebsd"
)))]
fn ask_death_signal(_sig: libc::c_int) -> io::Result<()> {
    Ok(())
}

/// While alive, children of this process that exit stay zombies until
/// waited for: `SIGCHLD` set to `SIG_IGN`, or `SA_NOCLDWAIT`, is lifted, and
/// put back on drop. (The master has one thread; nothing else runs between.)
struct KeepZombies {
    old: Option<libc::sigaction>,
    /// `SIGCHLD` was ignored.
    ignored: bool,
}

impl KeepZombies {
    fn new() -> io::Result<KeepZombies> {
        let mut old = std::mem::MaybeUninit::<libc::sigaction>::zeroed();
        // SAFETY: sigaction with a null new action only writes the current
        // one into `old`, a valid pointer to our stack.
        if unsafe { libc::sigaction(libc::SIGCHLD, std::ptr::null(), old.as_mut_ptr()) } == -1 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: sigaction succeeded and filled it in (it was zeroed anyway).
        let old = unsafe { old.assume_init() };
        let ignored = old.sa_sigaction == libc::SIG_IGN;
        if !ignored && old.sa_flags & libc::SA_NOCLDWAIT == 0 {
            return Ok(KeepZombies { old: None, ignored });
        }
        let mut new = old;
        if ignored {
            new.sa_sigaction = libc::SIG_DFL;
        }
        new.sa_flags &= !libc::SA_NOCLDWAIT;
        // SAFETY: installs a copy of the current action (same handler and
        // mask, if any) without SA_NOCLDWAIT, or SIG_DFL instead of SIG_IGN.
        if unsafe { libc::sigaction(libc::SIGCHLD, &new, std::ptr::null_mut()) } == -1 {
            return Err(io::Error::last_os_error());
        }
        Ok(KeepZombies { old: Some(old), ignored })
    }
}

impl Drop for KeepZombies {
    fn drop(&mut self) {
        if let Some(old) = &self.old {
            // SAFETY: puts back the action sigaction returned earlier.
            unsafe { libc::sigaction(libc::SIGCHLD, old, std::ptr::null_mut()) };
        }
    }
}

/// In a forked child before exec: keeps `keep` open across exec, empties
/// the signal mask (the master blocks the signals it reads through its
/// signalfd; a new process starts with none blocked), and ignores `SIGCHLD`
/// again if the parent did (inherited across exec, as it would have been
/// without [`KeepZombies`]). Async-signal-safe: system calls on integers
/// and a sigset on the stack; it allocates nothing and takes no lock.
fn prepare_exec(keep: &[RawFd], sigchld_ignored: bool) -> io::Result<()> {
    for &fd in keep {
        // SAFETY: fcntl(F_SETFD) on an integer changes no memory of ours.
        if unsafe { libc::fcntl(fd, libc::F_SETFD, 0) } == -1 {
            return Err(io::Error::last_os_error());
        }
    }
    let mut set = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigemptyset initialises the set on our stack; sigprocmask reads
    // it and writes nothing back (a null old set).
    let r = unsafe {
        libc::sigemptyset(set.as_mut_ptr());
        libc::sigprocmask(libc::SIG_SETMASK, set.as_ptr(), std::ptr::null_mut())
    };
    if r == -1 {
        return Err(io::Error::last_os_error());
    }
    if sigchld_ignored {
        // SAFETY: setting a disposition to SIG_IGN installs no handler.
        unsafe { libc::signal(libc::SIGCHLD, libc::SIG_IGN) };
    }
    Ok(())
}

/// Spawns `cmd` and makes its [`ProcessHandle`], while the caller keeps
/// children from being reaped by anyone else ([`KeepZombies`]); a child
/// whose handle cannot be made is killed and reaped.
fn spawn_watched(cmd: &mut Command) -> io::Result<(Child, ProcessHandle)> {
    let mut child = cmd.spawn()?;
    match ProcessHandle::child(child.id()) {
        Ok(handle) => Ok((child, handle)),
        Err(e) => {
            // Not reaped yet (it cannot be, here): the pid is still ours.
            let _ = child.kill();
            let _ = child.wait();
            Err(e)
        }
    }
}

/// How a child ended, from `waitid`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reaped {
    /// It exited with this code.
    Code(i32),
    /// A signal ended it.
    Signal(i32),
}

/// Reaps the child `id` names for `idtype` if it exited (`waitid` with
/// `WEXITED | WNOHANG`); `None` if it is still running.
pub(crate) fn waitid_reap(idtype: libc::idtype_t, id: libc::id_t) -> io::Result<Option<Reaped>> {
    waitid(idtype, id, 0)
}

/// `waitid(idtype, id, WEXITED | WNOHANG | extra)`: how the child ended,
/// or `None` if it has not.
fn waitid(
    idtype: libc::idtype_t,
    id: libc::id_t,
    extra: libc::c_int,
) -> io::Result<Option<Reaped>> {
    let mut info = std::mem::MaybeUninit::<libc::siginfo_t>::zeroed();
    loop {
        // SAFETY: waitid writes one siginfo_t into `info`, a valid pointer
        // to our stack.
        let r = unsafe {
            libc::waitid(idtype, id, info.as_mut_ptr(), libc::WEXITED | libc::WNOHANG | extra)
        };
        if r == 0 {
            break;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    // SAFETY: zeroed, then filled in by a successful waitid.
    let info = unsafe { info.assume_init() };
    // SAFETY: after waitid with WEXITED the child fields are the valid ones;
    // si_pid 0 means WNOHANG found nothing to report yet.
    let (pid, status) = unsafe { (info.si_pid(), info.si_status()) };
    if pid == 0 {
        return Ok(None);
    }
    Ok(Some(match info.si_code {
        libc::CLD_EXITED => Reaped::Code(status),
        _ => Reaped::Signal(status),
    }))
}

/// A new master, started by [`spawn_new_master`].
#[derive(Debug)]
pub(crate) struct NewMaster {
    /// Its process id.
    pub pid: u32,
    /// Watches it: its exit, and signals to it.
    pub handle: ProcessHandle,
    /// Its process group, of its own: every descendant that stays in it.
    pub group: u32,
    /// This process's child (`Some`, to reap), or re-parented at once
    /// (`None`: a double fork, its exit status goes to its new parent).
    pub child: Option<Child>,
    /// After a double fork: the go-between, exited and not reaped yet. Its
    /// zombie is a member of the process group and keeps the group's id
    /// from being reused: reap it once the group is no longer to be killed.
    pub go_between: Option<Child>,
}

/// Spawns `cmd`, a program that is not a worker (a new master, for a hot
/// upgrade), in a process group of its own, and makes its handle. The child
/// keeps the descriptors `keep` (close-on-exec in this process) at their
/// numbers across `exec`, starts with an empty signal mask and the
/// application's `SIGCHLD` disposition, and, unlike a worker, gets no death
/// signal: it outlives this process.
///
/// With `detach`, it is not this process's child: the forked child forks
/// once more, writes `pid=N\n` (the grandchild's pid) to `detach.0` (one
/// end of a socket pair, kept), and exits; this process reads the pid from
/// the other end, `detach.1`, leaving the line there (`MSG_PEEK`); the grandchild, re-parented to the nearest
/// subreaper or init (a service manager), runs the program. Without it,
/// the child runs it and, as with [`spawn_worker`], stays a zombie until
/// its handle is made.
pub(crate) fn spawn_new_master(
    cmd: &mut Command,
    keep: Vec<RawFd>,
    detach: Option<(RawFd, RawFd)>,
) -> io::Result<NewMaster> {
    cmd.process_group(0);
    // Held to the end: the go-between stays a zombie until it is waited for.
    let zombies = KeepZombies::new()?;
    let ignored = zombies.ignored;
    // SAFETY: the closure runs in the child between fork and exec and only
    // calls async-signal-safe functions (fcntl, sigemptyset, sigprocmask,
    // signal, fork, write, _exit) on integers, a vector allocated before the
    // fork that it only reads, and buffers on its own stack; it allocates
    // nothing and takes no lock.
    unsafe {
        cmd.pre_exec(move || {
            prepare_exec(&keep, ignored)?;
            let Some((report, _)) = detach else { return Ok(()) };
            match libc::fork() {
                -1 => Err(io::Error::last_os_error()),
                0 => Ok(()),
                pid => {
                    let mut line = [0u8; 24];
                    let n = pid_line(pid as u32, &mut line);
                    let ok = libc::write(report, line.as_ptr().cast(), n) == n as isize;
                    libc::_exit(if ok { 0 } else { 1 })
                }
            }
        });
    }
    let Some((_, report)) = detach else {
        let (child, handle) = spawn_watched(cmd)?;
        let pid = child.id();
        return Ok(NewMaster { pid, handle, group: pid, child: Some(child), go_between: None });
    };
    let mut go_between = cmd.spawn()?;
    let group = go_between.id();
    // The go-between wrote the pid before it exited, and `spawn` returns
    // once the program was executed (or failed to be): the line is there.
    // The go-between is not reaped here: its zombie keeps the process
    // group's id reserved while the upgrade may still kill the group.
    let mut buf = [0u8; 24];
    // SAFETY: recv writes at most `buf.len()` bytes into our stack buffer;
    // MSG_PEEK leaves them for the caller's own reads (it skips the line).
    let n = unsafe { libc::recv(report, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_PEEK) };
    let line = if n > 0 { &buf[..n as usize] } else { &[][..] };
    let opened = match parse_pid_line(line) {
        Some(pid) => ProcessHandle::other(pid).map(|h| (pid, h)).map_err(|e| {
            io::Error::new(e.kind(), format!("new master (pid {pid}) exited at once: {e}"))
        }),
        None => Err(io::Error::other("the go-between of a detached spawn wrote no pid")),
    };
    match opened {
        Ok((pid, handle)) => {
            Ok(NewMaster { pid, handle, group, child: None, go_between: Some(go_between) })
        }
        Err(e) => {
            // Whatever runs in its group (the new master, if it started)
            // goes too: nothing is left holding the sockets.
            let _ = signal_group(group, libc::SIGKILL);
            let _ = go_between.wait();
            drop(zombies);
            Err(e)
        }
    }
}

/// Writes `pid=N\n` into `out` without allocating; returns its length.
fn pid_line(pid: u32, out: &mut [u8; 24]) -> usize {
    let mut digits = [0u8; 10];
    let mut n = 0;
    let mut v = pid;
    loop {
        digits[n] = b'0' + (v % 10) as u8;
        n += 1;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out[..4].copy_from_slice(b"pid=");
    for i in 0..n {
        out[4 + i] = digits[n - 1 - i];
    }
    out[4 + n] = b'\n';
    5 + n
}

/// The pid of a `pid=N\n` line at the start of `bytes`.
pub(crate) fn parse_pid_line(bytes: &[u8]) -> Option<u32> {
    let rest = bytes.strip_prefix(b"pid=")?;
    let end = rest.iter().position(|&b| b == b'\n')?;
    std::str::from_utf8(&rest[..end]).ok()?.parse().ok().filter(|&p| p > 0)
}

/// Sends `sig` to every process of process group `group`. `ESRCH` (no
/// process is left in it) is not an error.
pub(crate) fn signal_group(group: u32, sig: i32) -> io::Result<()> {
    let sig = nix::sys::signal::Signal::try_from(sig)?;
    match nix::sys::signal::killpg(nix::unistd::Pid::from_raw(group as i32), sig) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Forks this process (which has one thread): `Some(child pid)` in the
/// parent, `None` in the child, which goes on with a copy of everything.
/// (The PID 1 init's, on Linux.)
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
pub(crate) fn fork() -> io::Result<Option<u32>> {
    // SAFETY: the process has exactly one thread (the crate starts none), so
    // the child inherits no lock held by another thread and may go on with
    // any code, allocation included.
    match unsafe { nix::unistd::fork() }? {
        nix::unistd::ForkResult::Parent { child } => Ok(Some(child.as_raw() as u32)),
        nix::unistd::ForkResult::Child => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pid_line_reads_back() {
        for pid in [1u32, 42, 4_194_304, u32::MAX] {
            let mut line = [0u8; 24];
            let n = pid_line(pid, &mut line);
            assert_eq!(&line[..n], format!("pid={pid}\n").as_bytes());
            assert_eq!(parse_pid_line(&line[..n]), Some(pid));
        }
        assert_eq!(parse_pid_line(b"pid=0\n"), None);
        assert_eq!(parse_pid_line(b"pid=12"), None);
        assert_eq!(parse_pid_line(b"ready\n"), None);
    }
}
