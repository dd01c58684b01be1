//! Hot upgrade of the master: a new master, started from the program now at
//! the path this one was started from, takes over the same listening
//! sockets and starts its own workers; only once they all listen does it
//! say it is ready, and only then do the old workers drain.
//!
//! The design is nginx's and tableflip's (fork a new master), not einhorn's
//! (re-exec in place): the old master stays, unchanged and serving, until
//! the new one is ready, so every failure (a missing binary, one that
//! exits, panics or hangs) is rolled back by killing the new process, with
//! nothing to restore. The cost is a new main PID, which the old master
//! tells systemd (`MAINPID=`) before it exits.
//!
//! The new master runs in a process group of its own: a rollback kills the
//! whole group, so nothing the new program started keeps a socket. Started
//! [`detached`](UpgradeOptions::detach), it is not this master's child but
//! its grandchild, re-parented at once to the service manager (systemd), so
//! that the manager supervises it as a child of its own once it is named
//! the main process; its exit status then goes to the manager, and a new
//! master that gives up says why over the readiness channel first
//! ([`Master::report_failure`]). Not detached (a master that reaps as PID 1
//! or a subreaper would get it back as an orphan anyway), it is this
//! master's child, which the reaper spares: never signalled, reaped or
//! waited for by it.
//!
//! The readiness channel, a socket pair, carries lines: `pid=N` (a
//! detached start's pid), then from the new master `ready` or
//! `failed: REASON`, and from the old one `main` once it has named the new
//! one the service's main process (the new one notifies systemd only then).
//!
//! The hand-over, old side ([`Master::upgrade`]): every registry key and its
//! socket (the same open socket: device and inode, and a port-0 key's port,
//! stay), the target worker count and a socket pair for the readiness
//! report are passed to the new process as inherited descriptors, described
//! in [`ENV_UPGRADE`]; it runs with this process's arguments, so settings
//! from the command line carry over. New side ([`Master::new`]): the keys are
//! put in the registry before any worker asks, held until
//! [`Master::report_ready`]. The application watches the [`Upgrade`] in its
//! loop and, on [`UpgradeOutcome::Ready`], drains its workers and exits.

use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use mio::event::Source;
use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};

use super::Master;
use crate::sys;

/// The environment variable that makes a master the new master of a hot
/// upgrade: `ready=FD;target=N;generation=G;sockets=FD=KEY,FD=KEY...` (descriptors
/// inherited by number). Read and removed by [`Master::new`].
pub const ENV_UPGRADE: &str = "MIO_CLUSTER_UPGRADE";

/// How long a new master may take to report ready, by default.
pub const DEFAULT_UPGRADE_TIMEOUT: Duration = Duration::from_secs(30);

/// How often a new master is looked at where no descriptor reports its
/// exit (no pidfds).
const WATCH_EVERY: Duration = Duration::from_millis(50);

/// The most the readiness channel's lines may hold, in all.
pub(super) const MAX_REPORT: usize = 4096;

/// How to start a hot upgrade ([`Master::upgrade`]).
#[derive(Debug, Default)]
pub struct UpgradeOptions<'a> {
    /// The worker count the new master should keep
    /// ([`Master::inherited_target`]).
    pub target: Option<usize>,
    /// How long it may take to report ready ([`Master::report_ready`])
    /// before it is killed (zero: [`DEFAULT_UPGRADE_TIMEOUT`]).
    pub timeout: Duration,
    /// Added to its environment: what this process took out of its own and
    /// the new master needs, such as systemd's notification socket
    /// ([`Service::handover_env`](crate::host::systemd::Service::handover_env)).
    pub env: Vec<(OsString, OsString)>,
    /// Descriptors handed over by name besides the registry's sockets (the
    /// health listener's, say): the new master takes each with
    /// [`Master::take_handed_over`]. Names are `[a-z0-9_-]`, at most 32.
    pub descriptors: Vec<(String, BorrowedFd<'a>)>,
    /// Start it re-parented away from this process: this process's child
    /// forks it and exits at once, so it becomes the child of the nearest
    /// subreaper or of init, a service manager that then supervises it as
    /// its own once it is named the main process. Its exit status goes
    /// there too: a new master that gives up says why first
    /// ([`Master::report_failure`]). Ignored (with a warning) by a master
    /// that reaps, which would get it back as an orphan.
    pub detach: bool,
}

/// What a hot upgrade came to.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum UpgradeOutcome {
    /// The new master's workers all listen: it serves. This master should
    /// now tell systemd (`MAINPID=`, [`Service::main_pid`](crate::host::systemd::Service::main_pid)), drain its
    /// workers and exit.
    Ready {
        /// The new master's process id.
        pid: u32,
    },
    /// The new master failed and is gone (killed if it still ran); this
    /// master and its workers carry on unchanged.
    Failed {
        /// Why, for the log.
        reason: String,
    },
}

/// A hot upgrade under way: the new master's process and its readiness
/// report. A `mio` source (its pidfd where there are pidfds, and the
/// report, both `READABLE`):
/// register it, call [`Upgrade::process`] when it is readable and when
/// [`Upgrade::timeout`] has passed. Dropped while pending, it kills the new
/// master (a rollback).
#[derive(Debug)]
pub struct Upgrade {
    pid: u32,
    /// Its process group: killed whole on a rollback.
    group: u32,
    /// Watches it (its pidfd on Linux).
    process: sys::process::ProcessHandle,
    /// This process's child (reaped here), unless started detached.
    child: Option<Child>,
    /// Started detached: the go-between's zombie, holding the group's id.
    go_between: Option<Child>,
    report: UnixStream,
    got: Vec<u8>,
    deadline: Instant,
    timeout: Duration,
    done: bool,
}

impl Master {
    /// Starts a hot upgrade: a new master from [`started_program`] (the
    /// program now at the path this one was started from) with this
    /// process's arguments, handed every listening socket of the registry,
    /// the worker count to keep and the descriptors of `options`. It must
    /// report ready ([`Master::report_ready`]) within the timeout, or it is
    /// killed, with its whole process group.
    ///
    /// Fails at once, starting nothing, if the program is missing or not
    /// executable.
    ///
    /// [`started_program`]: super::started_program
    ///
    /// The sockets systemd passed by socket activation are handed over by
    /// name too, so `systemd:NAME` still names them in the new master.
    pub fn upgrade(&mut self, options: UpgradeOptions<'_>) -> io::Result<Upgrade> {
        let program = super::started_program();
        let meta = std::fs::metadata(&program).map_err(|e| {
            io::Error::new(e.kind(), format!("new master {}: {e}", program.display()))
        })?;
        if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("new master {}: not an executable file", program.display()),
            ));
        }
        for (name, _) in &options.descriptors {
            if !valid_name(name) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("upgrade: descriptor name {name:?} is not [a-z0-9_-]{{1,32}}"),
                ));
            }
        }
        let detach = options.detach && self.reaper.is_none();
        if options.detach && !detach {
            log::warn!(
                "upgrade: this master reaps (PID 1 or a subreaper): the new master stays its \
                 child instead of being detached"
            );
        }
        let (ours, theirs) = sys::socket::socketpair()?;
        let sockets = self.sockets.export();
        let mut keep: Vec<RawFd> = vec![theirs.as_raw_fd()];
        keep.extend(sockets.iter().map(|(fd, _)| *fd));
        keep.extend(options.descriptors.iter().map(|(_, fd)| fd.as_raw_fd()));
        let described: Vec<String> = sockets.iter().map(|(fd, k)| format!("{fd}={k}")).collect();
        let fds: Vec<String> =
            options.descriptors.iter().map(|(n, fd)| format!("{n}:{}", fd.as_raw_fd())).collect();
        let target = options.target.map_or(String::new(), |n| n.to_string());
        let value = format!(
            "ready={};target={target};generation={};sockets={};fds={}",
            theirs.as_raw_fd(),
            self.generation().saturating_add(1),
            described.join(","),
            fds.join(",")
        );
        let mut cmd = Command::new(&program);
        cmd.args(std::env::args_os().skip(1)).env(ENV_UPGRADE, value);
        cmd.envs(options.env.iter().map(|(k, v)| (k, v)));
        if let Some(v) = crate::listen::activation::encode_for_workers() {
            cmd.env(crate::listen::activation::ENV_SYSTEMD_SOCKETS, v);
        }
        let how = detach.then(|| (theirs.as_raw_fd(), ours.as_raw_fd()));
        let new = sys::process::spawn_new_master(&mut cmd, keep, how).map_err(|e| {
            io::Error::new(e.kind(), format!("starting new master {}: {e}", program.display()))
        })?;
        drop(theirs);
        if let (Some(r), Some(_)) = (self.reaper.as_mut(), new.child.as_ref()) {
            r.spare(Some(new.pid));
        }
        let timeout =
            if options.timeout.is_zero() { DEFAULT_UPGRADE_TIMEOUT } else { options.timeout };
        log::info!(
            "upgrade: new master (pid {}{}) started from {}, handed {} listening sockets{}; \
             waiting up to {timeout:?} for it to be ready",
            new.pid,
            if detach { ", detached" } else { "" },
            program.display(),
            sockets.len(),
            if fds.is_empty() { String::new() } else { format!(" and {}", fds.join(", ")) }
        );
        Ok(Upgrade {
            pid: new.pid,
            group: new.group,
            process: new.handle,
            child: new.child,
            go_between: new.go_between,
            report: UnixStream::from(ours),
            got: Vec::new(),
            deadline: crate::deadline::after(Instant::now(), timeout),
            timeout,
            done: false,
        })
    }
}

impl Upgrade {
    /// The new master's process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// How long until [`Upgrade::process`] must be called even if nothing
    /// happens (the deadline); `None` once it is over. Where no descriptor
    /// reports the new master's exit (no pidfds: macOS, FreeBSD), at most
    /// 50 ms.
    pub fn timeout(&self) -> Option<Duration> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        let left = match self.process.exit_fd() {
            Some(_) => left,
            None => left.min(WATCH_EVERY),
        };
        (!self.done).then_some(left)
    }

    /// Looks at the new master: `Some` once, when the upgrade is over
    /// (ready, or failed and rolled back: the new master's process group
    /// killed if it still ran, and the new master reaped if it is this
    /// process's child). Once ready, `master` (the one that started it) no
    /// longer unlinks the Unix socket files it bound: they are the new
    /// master's.
    pub fn process(&mut self, master: &mut Master) -> Option<UpgradeOutcome> {
        if self.done {
            return None;
        }
        let pid = self.pid;
        let mut buf = [0u8; 512];
        // An end of the report without `ready` is the new master exiting
        // (its descriptors close before it can be reaped): its handle says
        // how, or the deadline comes.
        let mut ended = false;
        loop {
            match self.report.read(&mut buf) {
                Ok(0) => {
                    ended = true;
                    break;
                }
                Ok(n) if self.got.len() + n <= MAX_REPORT => self.got.extend_from_slice(&buf[..n]),
                Ok(_) => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        // Exited, looked at without reaping it: its process group is killed
        // before anything is reaped, so the group's id cannot be another's
        // by then.
        let mut exited = self.process.exited();
        let mut said = None;
        let mut ready = false;
        for line in self.got.split(|&b| b == b'\n') {
            ready |= line == b"ready";
            if let Some(why) = line.strip_prefix(b"failed: ") {
                said = Some(String::from_utf8_lossy(why).into_owned());
            }
        }
        // Without pidfds a detached new master (not this process's child)
        // is seen gone only once its new parent reaps it, which a parent
        // that does not reap never does: its report ending before `ready`
        // is its giving up (it closes the report as it exits, or after
        // saying why).
        if self.child.is_none() && self.process.exit_fd().is_none() && ended && !ready {
            exited = Ok(true);
        }
        if ready && matches!(exited, Ok(false)) {
            self.done = true;
            self.reap_go_between();
            master.sockets.keep_files();
            log::info!("upgrade: the new master (pid {pid}) is ready");
            return Some(UpgradeOutcome::Ready { pid });
        }
        let said = said.map_or(String::new(), |s| format!(": {s}"));
        match exited {
            Ok(true) => {
                let status = self.kill();
                let status = match status {
                    Some(how) => describe(how),
                    None => "its exit status went to its new parent".into(),
                };
                let when =
                    if ready { "right after it said it was ready" } else { "before it was ready" };
                Some(self.fail(master, format!("exited ({status}) {when}{said}")))
            }
            Ok(false) if Instant::now() >= self.deadline => {
                self.kill();
                Some(self.fail(master, format!("was not ready within {:?}", self.timeout)))
            }
            Ok(false) => None,
            Err(e) => {
                self.kill();
                Some(self.fail(master, format!("cannot be watched: {e}")))
            }
        }
    }

    /// After [`UpgradeOutcome::Ready`], once this master has named the new
    /// one the service's main process (`MAINPID=`, or nothing to name):
    /// tells it that it speaks for the service from now on.
    pub fn confirm_main(&mut self) {
        if let Err(e) = self.report.write_all(b"main\n") {
            log::debug!("upgrade: telling the new master it is the main process: {e}");
        }
    }

    /// Calls the upgrade off (this master is leaving): the new master's
    /// process group is killed, as a rollback would, and the reaper of
    /// `master` stops sparing it.
    pub fn cancel(mut self, master: &mut Master) {
        if !self.done {
            log::warn!("upgrade called off: killing the new master (pid {})", self.pid);
            self.done = true;
            let _ = self.kill();
            if let Some(r) = master.reaper.as_mut() {
                r.spare(None);
            }
        }
    }

    /// Ends a failed upgrade (the new master already killed and reaped by
    /// [`Upgrade::kill`]).
    fn fail(&mut self, master: &mut Master, reason: String) -> UpgradeOutcome {
        self.done = true;
        if let Some(r) = master.reaper.as_mut() {
            r.spare(None);
        }
        let reason = format!("new master (pid {}) {reason}", self.pid);
        log::error!("upgrade failed: {reason}; this master keeps serving");
        UpgradeOutcome::Failed { reason }
    }

    /// Kills the new master's process group (its workers, in groups of
    /// their own, get their death signal), then reaps the new master if it
    /// is this process's child (its status: how it ended, by itself or by
    /// this), and the go-between of a detached start.
    fn kill(&mut self) -> Option<sys::process::Reaped> {
        let _ = self.process.signal(libc::SIGKILL);
        // Before any reap: the group's id is still held (by the new master,
        // or the go-between's zombie).
        if let Err(e) = sys::process::signal_group(self.group, libc::SIGKILL) {
            log::warn!("upgrade: SIGKILL to process group {}: {e}", self.group);
        }
        let status = self.child.as_mut().and_then(|child| {
            // Ours to reap: the reaper spares it (or the kernel reaped it:
            // then ECHILD).
            let status = child.wait().ok()?;
            use std::os::unix::process::ExitStatusExt;
            match (status.code(), status.signal()) {
                (Some(c), _) => Some(sys::process::Reaped::Code(c)),
                (None, Some(s)) => Some(sys::process::Reaped::Signal(s)),
                _ => None,
            }
        });
        self.reap_go_between();
        status
    }

    fn reap_go_between(&mut self) {
        if let Some(mut g) = self.go_between.take() {
            let _ = g.wait();
        }
    }
}

fn describe(how: sys::process::Reaped) -> String {
    match how {
        sys::process::Reaped::Code(c) => format!("code={c}"),
        sys::process::Reaped::Signal(s) => match crate::Signal::try_from(s) {
            Ok(sig) => format!("signal={}", sig.as_str()),
            Err(_) => format!("signal={s}"),
        },
    }
}

pub(super) fn valid_name(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

impl Drop for Upgrade {
    fn drop(&mut self) {
        if !self.done {
            log::warn!("upgrade abandoned: killing the new master (pid {})", self.pid);
            self.done = true;
            let _ = self.kill();
        }
        self.reap_go_between();
    }
}

impl Source for Upgrade {
    fn register(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        if let Some(fd) = self.process.exit_fd() {
            registry.register(&mut SourceFd(&fd.as_raw_fd()), token, interests)?;
        }
        registry.register(&mut SourceFd(&self.report.as_raw_fd()), token, interests)
    }

    fn reregister(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        if let Some(fd) = self.process.exit_fd() {
            registry.reregister(&mut SourceFd(&fd.as_raw_fd()), token, interests)?;
        }
        registry.reregister(&mut SourceFd(&self.report.as_raw_fd()), token, interests)
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        if let Some(fd) = self.process.exit_fd() {
            registry.deregister(&mut SourceFd(&fd.as_raw_fd()))?;
        }
        registry.deregister(&mut SourceFd(&self.report.as_raw_fd()))
    }
}
