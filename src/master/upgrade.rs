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
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use mio::event::Source;
use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};

use super::registry::SocketRegistry;
use super::Master;
use crate::sys;

/// The environment variable that makes a master the new master of a hot
/// upgrade: `ready=FD;target=N;generation=G;sockets=FD=KEY,FD=KEY...` (descriptors
/// inherited by number). Read and removed by [`Master::new`].
pub const ENV_UPGRADE: &str = "MIO_CLUSTER_UPGRADE";

/// How long a new master may take to report ready, by default.
pub const DEFAULT_UPGRADE_TIMEOUT: Duration = Duration::from_secs(30);

/// The most the readiness channel's lines may hold, in all.
const MAX_REPORT: usize = 4096;

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
/// report. A `mio` source (its pidfd and the report, both `READABLE`):
/// register it, call [`Upgrade::process`] when it is readable and when
/// [`Upgrade::timeout`] has passed. Dropped while pending, it kills the new
/// master (a rollback).
#[derive(Debug)]
pub struct Upgrade {
    pid: u32,
    /// Its process group: killed whole on a rollback.
    group: u32,
    pidfd: OwnedFd,
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
            pidfd: new.pidfd,
            child: new.child,
            go_between: new.go_between,
            report: UnixStream::from(ours),
            got: Vec::new(),
            deadline: crate::deadline::after(Instant::now(), timeout),
            timeout,
            done: false,
        })
    }

    /// Which generation of masters this one is: 1 for a master started
    /// afresh, one more than its old master's for the new master of a hot
    /// upgrade. Its workers are of the same generation
    /// ([`WorkerStatus::generation`](super::WorkerStatus::generation)).
    pub fn generation(&self) -> u32 {
        self.handover.as_ref().map_or(1, |h| h.generation)
    }

    /// In the new master of a hot upgrade, the worker count the old master
    /// kept (`None` otherwise, or if it had none).
    pub fn inherited_target(&self) -> Option<usize> {
        self.handover.as_ref().and_then(|h| h.target)
    }

    /// True in the new master of a hot upgrade until it reports ready.
    pub fn is_upgrading(&self) -> bool {
        self.handover.as_ref().is_some_and(|h| h.report.is_some() && !h.ready)
    }

    /// In the new master of a hot upgrade: tells the old master that this
    /// one serves (call it once its workers all listen), so the old one
    /// drains and exits; the inherited sockets no worker took are closed.
    /// Does nothing in a master that is not one, or the second time.
    /// Descriptors handed over by name and not taken by then are closed.
    pub fn report_ready(&mut self) -> io::Result<()> {
        let Some(h) = self.handover.as_mut() else { return Ok(()) };
        if h.ready {
            return Ok(());
        }
        let Some(report) = h.report.as_mut() else { return Ok(()) };
        h.ready = true;
        for handle in std::mem::take(&mut h.handles) {
            self.sockets.unpin(handle);
        }
        // Handed over and not taken (the new program serves no health
        // listener, say): closed, or its queue would fill unserved.
        h.fds.clear();
        report.write_all(b"ready\n")?;
        log::info!("upgrade: ready; the old master drains its workers");
        Ok(())
    }

    /// In the new master of a hot upgrade that has not reported ready: tells
    /// the old master why this one gives up (one line, before it exits), so
    /// that its log says so even when this process's exit status goes to
    /// another parent. Does nothing otherwise.
    pub fn report_failure(&mut self, reason: &str) {
        let Some(h) = self.handover.as_mut() else { return };
        if h.ready {
            return;
        }
        if let Some(mut report) = h.report.take() {
            let line: String = reason
                .chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .take(MAX_REPORT / 2)
                .collect();
            let _ = report.write_all(format!("failed: {line}\n").as_bytes());
        }
    }

    /// In the new master of a hot upgrade, once ready: the channel on which
    /// the old master says `main` (it has named this one the service's main
    /// process) or closes. Taken once.
    pub(crate) fn take_old_master_channel(&mut self) -> Option<UnixStream> {
        let h = self.handover.as_mut()?;
        if !h.ready {
            return None;
        }
        h.report.take()
    }

    /// In the new master of a hot upgrade: the descriptor the old master
    /// handed over under `name` ([`UpgradeOptions::descriptors`]), taken
    /// once.
    pub fn take_handed_over(&mut self, name: &str) -> Option<OwnedFd> {
        let h = self.handover.as_mut()?;
        let at = h.fds.iter().position(|(n, _)| n == name)?;
        Some(h.fds.swap_remove(at).1)
    }
}

impl Upgrade {
    /// The new master's process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// How long until [`Upgrade::process`] must be called even if nothing
    /// happens (the deadline); `None` once it is over.
    pub fn timeout(&self) -> Option<Duration> {
        (!self.done).then(|| self.deadline.saturating_duration_since(Instant::now()))
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
        // (its descriptors close before it can be reaped): its pidfd says
        // how, or the deadline comes.
        loop {
            match self.report.read(&mut buf) {
                Ok(0) => break,
                Ok(n) if self.got.len() + n <= MAX_REPORT => self.got.extend_from_slice(&buf[..n]),
                Ok(_) => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        // Exited (its pidfd is readable), looked at without reaping it: its
        // process group is killed before anything is reaped, so the
        // group's id cannot be another's by then.
        let exited = sys::process::pidfd_exited(self.pidfd.as_fd());
        let mut said = None;
        let mut ready = false;
        for line in self.got.split(|&b| b == b'\n') {
            ready |= line == b"ready";
            if let Some(why) = line.strip_prefix(b"failed: ") {
                said = Some(String::from_utf8_lossy(why).into_owned());
            }
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
        let _ = sys::process::pidfd_send_signal(self.pidfd.as_fd(), libc::SIGKILL);
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

fn valid_name(name: &str) -> bool {
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
        registry.register(&mut SourceFd(&self.pidfd.as_raw_fd()), token, interests)?;
        registry.register(&mut SourceFd(&self.report.as_raw_fd()), token, interests)
    }

    fn reregister(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        registry.reregister(&mut SourceFd(&self.pidfd.as_raw_fd()), token, interests)?;
        registry.reregister(&mut SourceFd(&self.report.as_raw_fd()), token, interests)
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        registry.deregister(&mut SourceFd(&self.pidfd.as_raw_fd()))?;
        registry.deregister(&mut SourceFd(&self.report.as_raw_fd()))
    }
}

/// What the new master of a hot upgrade was handed.
#[derive(Debug)]
pub(super) struct Handover {
    /// The readiness channel to the old master; `None` once given up or
    /// taken after ready.
    report: Option<UnixStream>,
    /// `ready` was reported.
    ready: bool,
    target: Option<usize>,
    /// This master's generation (the old one's plus one).
    generation: u32,
    /// The inherited keys, held until ready.
    handles: Vec<u32>,
    /// Descriptors handed over by name.
    fds: Vec<(String, OwnedFd)>,
}

/// What [`ENV_UPGRADE`] says, parsed and checked before any descriptor is
/// taken: every descriptor it names is what it is said to be (the report a
/// Unix stream socket, each key's socket a socket of that key's kind,
/// listening if a stream, each named descriptor a listening socket), no
/// number twice, a target of at least one worker. A value set by hand that
/// says otherwise is an error naming the variable, and nothing is closed.
#[derive(Debug)]
pub(crate) struct Plan {
    pub(crate) ready: RawFd,
    pub(crate) target: Option<usize>,
    pub(crate) generation: u32,
    pub(crate) sockets: Vec<(RawFd, String)>,
    pub(crate) fds: Vec<(String, RawFd)>,
}

impl Plan {
    /// Reads and removes [`ENV_UPGRADE`]: `None` if it is unset.
    pub(super) fn from_env() -> io::Result<Option<Plan>> {
        let Some(value) = std::env::var_os(ENV_UPGRADE) else { return Ok(None) };
        // One thread per process: nothing reads the environment meanwhile.
        std::env::remove_var(ENV_UPGRADE);
        let value = value.to_string_lossy().into_owned();
        Plan::parse(&value).and_then(|plan| plan.check().map(|()| plan)).map(Some).map_err(|why| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{ENV_UPGRADE}={value:?}: {why}; no descriptor taken"),
            )
        })
    }

    pub(crate) fn parse(value: &str) -> Result<Plan, String> {
        let fd = |v: &str| v.parse::<RawFd>().ok().filter(|&n| n >= 0);
        let mut plan =
            Plan { ready: -1, target: None, generation: 2, sockets: Vec::new(), fds: Vec::new() };
        for part in value.split(';') {
            match part.split_once('=') {
                Some(("ready", n)) => plan.ready = fd(n).ok_or(format!("bad ready={n:?}"))?,
                Some(("target", "")) => plan.target = None,
                Some(("target", n)) => {
                    let t = n.parse().ok().filter(|&t| t >= 1);
                    plan.target = Some(t.ok_or(format!("target={n:?} is not 1 or more"))?);
                }
                Some(("generation", g)) => {
                    plan.generation = g
                        .parse()
                        .ok()
                        .filter(|&g| g >= 2)
                        .ok_or(format!("generation={g:?} is not 2 or more"))?
                }
                Some(("sockets", list)) => {
                    for entry in list.split(',').filter(|e| !e.is_empty()) {
                        let (n, key) =
                            entry.split_once('=').ok_or(format!("{entry:?}: no FD=KEY"))?;
                        super::registry::parse_key(key)?;
                        plan.sockets
                            .push((fd(n).ok_or(format!("{entry:?}: bad descriptor"))?, key.into()));
                    }
                }
                Some(("fds", list)) => {
                    for entry in list.split(',').filter(|e| !e.is_empty()) {
                        let (name, n) = entry
                            .split_once(':')
                            .filter(|(name, _)| valid_name(name))
                            .ok_or(format!("{entry:?}: not NAME:FD"))?;
                        plan.fds.push((
                            name.into(),
                            fd(n).ok_or(format!("{entry:?}: bad descriptor"))?,
                        ));
                    }
                }
                _ => return Err(format!("unknown part {part:?}")),
            }
        }
        if plan.ready < 0 {
            return Err("no ready=FD".into());
        }
        Ok(plan)
    }

    /// Every named descriptor is what the plan says, each named once.
    fn check(&self) -> Result<(), String> {
        use nix::sys::socket::{AddressFamily, SockType};
        let mut seen = std::collections::HashSet::new();
        let all = std::iter::once(self.ready)
            .chain(self.sockets.iter().map(|(fd, _)| *fd))
            .chain(self.fds.iter().map(|(_, fd)| *fd));
        for fd in all {
            if !seen.insert(fd) {
                return Err(format!("descriptor {fd} is named twice"));
            }
        }
        let what = |fd: RawFd| sys::fd::inherited_socket_info(fd);
        match what(self.ready) {
            Some((AddressFamily::Unix, SockType::Stream, false)) => {}
            _ => return Err(format!("ready={}: not a socket pair's end", self.ready)),
        }
        let mut keys = std::collections::HashSet::new();
        for (fd, key) in &self.sockets {
            let parsed = super::registry::parse_key(key)?;
            let kind = parsed.kind;
            if !keys.insert(parsed) {
                return Err(format!("key {key:?} is named twice"));
            }
            use crate::listen::Kind;
            let inet = |f| matches!(f, AddressFamily::Inet | AddressFamily::Inet6);
            let ok = match what(*fd) {
                Some((f, SockType::Stream, true)) if kind == Kind::Tcp => inet(f),
                Some((f, SockType::Datagram, _)) if kind == Kind::Udp => inet(f),
                Some((AddressFamily::Unix, SockType::Stream, true)) => kind == Kind::Unix,
                _ => false,
            };
            if !ok {
                return Err(format!(
                    "{fd}={key}: descriptor {fd} is not a listening socket of that kind"
                ));
            }
        }
        for (name, fd) in &self.fds {
            if !matches!(what(*fd), Some((_, SockType::Stream, true))) {
                return Err(format!("{name}:{fd}: descriptor {fd} is not a listening socket"));
            }
        }
        Ok(())
    }

    /// Takes the descriptors (made close-on-exec, so workers do not inherit
    /// them) and puts the sockets in `sockets`, held until ready.
    pub(super) fn take(self, sockets: &mut SocketRegistry) -> Result<Handover, String> {
        let mut h = Handover {
            report: None,
            ready: false,
            target: self.target,
            generation: self.generation,
            handles: Vec::new(),
            fds: Vec::new(),
        };
        let report = sys::fd::take_inherited_socket(self.ready).map_err(|e| e.to_string())?;
        sockets.forget_inherited(self.ready);
        h.report = Some(UnixStream::from(report));
        for (fd, key) in self.sockets {
            let socket = sys::fd::take_inherited_socket(fd).map_err(|e| e.to_string())?;
            sockets.forget_inherited(fd);
            h.handles.push(sockets.import(socket, &key)?);
        }
        for (name, fd) in self.fds {
            let socket = sys::fd::take_inherited_socket(fd).map_err(|e| e.to_string())?;
            sockets.forget_inherited(fd);
            h.fds.push((name, socket));
        }
        log::info!(
            "upgrade: this master takes over {} listening sockets (target {:?})",
            h.handles.len(),
            h.target
        );
        Ok(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plan_refuses_what_it_cannot_parse_without_panicking() {
        let ok =
            Plan::parse("ready=7;target=2;generation=3;sockets=8=1:0:-1:0:7f000001;fds=health:9")
                .unwrap();
        assert_eq!((ok.ready, ok.target, ok.generation), (7, Some(2), 3));
        for bad in [
            "ready=7;sockets=8=1:0:-1:0:a\u{e9}b",
            "ready=7;sockets=8=9:0:-1:0:",
            "ready=7;sockets=8=1:0:-1:0:abc",
            "ready=7;target=0",
            "ready=-1",
            "ready=7;fds=Health:9",
            "ready=7;what=1",
            "target=2",
        ] {
            assert!(Plan::parse(bad).is_err(), "{bad:?}");
        }
    }
}
