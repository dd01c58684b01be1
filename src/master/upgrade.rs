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
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
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

/// The line a new master writes when it is ready.
const READY: &[u8] = b"ready\n";

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
    child: Child,
    pidfd: OwnedFd,
    report: UnixStream,
    got: Vec<u8>,
    deadline: Instant,
    timeout: Duration,
    done: bool,
}

impl Master {
    /// Starts a hot upgrade: a new master from [`started_program`] (the
    /// program now at the path this one was started from) with this
    /// process's arguments, handed every listening socket of the registry
    /// and `target` (the worker count it should keep; see
    /// [`Master::inherited_target`]). It must report ready
    /// ([`Master::report_ready`]) within `timeout`, or it is killed.
    ///
    /// Fails at once, starting nothing, if the program is missing or not
    /// executable.
    ///
    /// [`started_program`]: super::started_program
    ///
    /// `env` is added to the new master's environment: what this process
    /// took out of its own and the new master needs, such as systemd's
    /// notification socket ([`Service::handover_env`](crate::host::systemd::Service::handover_env)).
    /// The sockets systemd passed by socket activation are handed over by
    /// name too, so `systemd:NAME` still names them in the new master.
    pub fn upgrade(
        &mut self,
        target: Option<usize>,
        timeout: Duration,
        env: &[(OsString, OsString)],
    ) -> io::Result<Upgrade> {
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
        let (ours, theirs) = sys::socket::socketpair()?;
        let sockets = self.sockets.export();
        let mut keep: Vec<RawFd> = vec![theirs.as_raw_fd()];
        keep.extend(sockets.iter().map(|(fd, _)| *fd));
        let described: Vec<String> = sockets.iter().map(|(fd, k)| format!("{fd}={k}")).collect();
        let target = target.map_or(String::new(), |n| n.to_string());
        let value = format!(
            "ready={};target={target};generation={};sockets={}",
            theirs.as_raw_fd(),
            self.generation() + 1,
            described.join(",")
        );
        let mut cmd = Command::new(&program);
        cmd.args(std::env::args_os().skip(1)).env(ENV_UPGRADE, value);
        cmd.envs(env.iter().map(|(k, v)| (k, v)));
        if let Some(v) = crate::listen::activation::encode_for_workers() {
            cmd.env(crate::listen::activation::ENV_SYSTEMD_SOCKETS, v);
        }
        let (child, pidfd) = sys::process::spawn_keeping(&mut cmd, keep).map_err(|e| {
            io::Error::new(e.kind(), format!("starting new master {}: {e}", program.display()))
        })?;
        drop(theirs);
        log::info!(
            "upgrade: new master (pid {}) started from {}, handed {} listening sockets; \
             waiting up to {timeout:?} for it to be ready",
            child.id(),
            program.display(),
            sockets.len()
        );
        Ok(Upgrade {
            child,
            pidfd,
            report: UnixStream::from(ours),
            got: Vec::new(),
            deadline: Instant::now() + timeout,
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
        self.handover.as_ref().is_some_and(|h| h.report.is_some())
    }

    /// In the new master of a hot upgrade: tells the old master that this
    /// one serves (call it once its workers all listen), so the old one
    /// drains and exits; the inherited sockets no worker took are closed.
    /// Does nothing in a master that is not one, or the second time.
    pub fn report_ready(&mut self) -> io::Result<()> {
        let Some(h) = self.handover.as_mut() else { return Ok(()) };
        let Some(report) = h.report.take() else { return Ok(()) };
        for handle in std::mem::take(&mut h.handles) {
            self.sockets.unpin(handle);
        }
        let mut report = UnixStream::from(report);
        report.write_all(READY)?;
        log::info!("upgrade: ready; the old master drains its workers");
        Ok(())
    }
}

impl Upgrade {
    /// The new master's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// How long until [`Upgrade::process`] must be called even if nothing
    /// happens (the deadline); `None` once it is over.
    pub fn timeout(&self) -> Option<Duration> {
        (!self.done).then(|| self.deadline.saturating_duration_since(Instant::now()))
    }

    /// Looks at the new master: `Some` once, when the upgrade is over
    /// (ready, or failed and rolled back: the new master killed if it still
    /// ran, and reaped). Once ready, `master` (the one that started it) no
    /// longer unlinks the Unix socket files it bound: they are the new
    /// master's.
    pub fn process(&mut self, master: &mut Master) -> Option<UpgradeOutcome> {
        if self.done {
            return None;
        }
        let pid = self.pid();
        let mut buf = [0u8; 64];
        // An end of the report without `ready` is the new master exiting
        // (its descriptors close before it can be reaped): its pidfd says
        // how, or the deadline comes.
        loop {
            match self.report.read(&mut buf) {
                Ok(0) => break,
                Ok(n) if self.got.len() < READY.len() => self.got.extend_from_slice(&buf[..n]),
                Ok(_) => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        if self.got.starts_with(READY) {
            self.done = true;
            master.sockets.keep_files();
            log::info!("upgrade: the new master (pid {pid}) is ready");
            return Some(UpgradeOutcome::Ready { pid });
        }
        let reason = match sys::process::pidfd_reap(self.pidfd.as_fd()) {
            Ok(Some(how)) => Some(format!("exited ({}) before it was ready", describe(how))),
            Ok(None) if Instant::now() >= self.deadline => {
                Some(format!("was not ready within {:?}", self.timeout))
            }
            Ok(None) => None,
            Err(e) => Some(format!("cannot be watched: {e}")),
        }?;
        Some(self.fail(reason))
    }

    fn fail(&mut self, reason: String) -> UpgradeOutcome {
        self.done = true;
        self.kill();
        let reason = format!("new master (pid {}) {reason}", self.pid());
        log::error!("upgrade failed: {reason}; this master keeps serving");
        UpgradeOutcome::Failed { reason }
    }

    /// Kills the new master (its workers get their death signal) and
    /// reaps it.
    fn kill(&mut self) {
        let _ = sys::process::pidfd_send_signal(self.pidfd.as_fd(), libc::SIGKILL);
        // Ours to reap: nobody else waits for it (or the kernel reaped it:
        // then ECHILD).
        let _ = self.child.wait();
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

impl Drop for Upgrade {
    fn drop(&mut self) {
        if !self.done {
            log::warn!("upgrade abandoned: killing the new master (pid {})", self.pid());
            self.done = true;
            self.kill();
        }
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
    /// Where to report ready; `None` once reported.
    report: Option<OwnedFd>,
    target: Option<usize>,
    /// This master's generation (the old one's plus one).
    generation: u32,
    /// The inherited keys, held until ready.
    handles: Vec<u32>,
}

impl Handover {
    /// In a master started by [`Master::upgrade`]: takes the inherited
    /// descriptors named in [`ENV_UPGRADE`] (made close-on-exec, so workers
    /// do not inherit them), puts the sockets in `sockets`, and removes the
    /// variable. A description that cannot be used is logged, and the rest
    /// is taken; a socket not taken is bound afresh when a worker asks.
    pub(super) fn take(sockets: &mut SocketRegistry) -> Option<Handover> {
        let value = std::env::var(ENV_UPGRADE).ok()?;
        std::env::remove_var(ENV_UPGRADE);
        let mut h = Handover { report: None, target: None, generation: 2, handles: Vec::new() };
        for part in value.split(';') {
            match part.split_once('=') {
                Some(("ready", fd)) => match fd.parse().map(sys::fd::take_inherited_socket) {
                    Ok(Ok(fd)) => h.report = Some(fd),
                    _ => log::error!("upgrade: no report descriptor in {part:?}"),
                },
                Some(("target", n)) => h.target = n.parse().ok(),
                Some(("generation", g)) => h.generation = g.parse().unwrap_or(2),
                Some(("sockets", list)) => {
                    for entry in list.split(',').filter(|e| !e.is_empty()) {
                        match import(sockets, entry) {
                            Ok(handle) => h.handles.push(handle),
                            Err(e) => log::error!("upgrade: inherited socket {entry:?}: {e}"),
                        }
                    }
                }
                _ => log::error!("upgrade: unknown part {part:?} of {ENV_UPGRADE}"),
            }
        }
        log::info!(
            "upgrade: this master takes over {} listening sockets (target {:?})",
            h.handles.len(),
            h.target
        );
        Some(h)
    }
}

fn import(sockets: &mut SocketRegistry, entry: &str) -> Result<u32, String> {
    let (fd, key) = entry.split_once('=').ok_or("no FD=KEY")?;
    let fd: RawFd = fd.parse().map_err(|_| "bad descriptor number")?;
    let socket = sys::fd::take_inherited_socket(fd).map_err(|e| e.to_string())?;
    sockets.import(socket, key)
}
