//! A minimal init for PID 1, so that the master below it can be upgraded.
//!
//! PID 1 of a PID namespace (a container's entry point) cannot hand over to
//! a new master and exit: the kernel ends the namespace, and everything in
//! it, with PID 1. [`Init::split`] forks at start-up: PID 1 stays a small
//! init, and the child goes on as the master, which can then be upgraded
//! like anywhere else. The init:
//!
//! - forwards the signals an operator sends (`SIGTERM`, `SIGINT`,
//!   `SIGQUIT`, `SIGHUP`, `SIGTTIN`, `SIGTTOU`, `SIGUSR1`, `SIGUSR2`) to the
//!   current master;
//! - follows the hand-over: it is the master's `NOTIFY_SOCKET` (an abstract
//!   socket of its own), and when the current master names a new main
//!   process (`MAINPID=`, as it tells systemd), that one is the current
//!   master from then on. Only the current master's word counts: the
//!   sender's pid is read from the kernel (`SCM_CREDENTIALS`). Under a
//!   service manager that set `NOTIFY_SOCKET` itself, every other line is
//!   passed on to it;
//! - reaps every orphan of the namespace (see [`reaper`]), and,
//!   once the current master has exited, stops the processes left as the
//!   master would (`SIGTERM`, then `SIGKILL` after the shutdown timeout);
//! - exits with the master's exit status: its code, or `128 +` the signal
//!   that ended it; 1 if the master exited 0 but a process had to be killed
//!   at the deadline; `128 +` the signal after a second `SIGINT`/`SIGTERM`
//!   or a `SIGQUIT`.
//!
//! The master below it is a subreaper, so that its own descendants' orphans
//! are still its own, and its shutdown still waits for them.

use std::io::{self, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr as UnixAddr, UnixDatagram};
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};

use super::reaper::{self, Reaper};
use super::systemd::Notifier;
use crate::supervisor::STANDARD_SIGNALS;
use crate::sys;
use crate::sys::signal::Signals;
use crate::{Settings, Signal};

/// Set in the masters below the init (inherited by the new master of each
/// hot upgrade): they are subreapers too.
pub const ENV_UNDER_INIT: &str = "MIO_CLUSTER_UNDER_INIT";

const SIGNALS: Token = Token(0);
const NOTIFY: Token = Token(1);
const MASTER: Token = Token(2);

/// PID 1 as a minimal init over the master. See the [module docs](self).
#[derive(Debug)]
pub struct Init {
    poll: Poll,
    signals: Signals,
    socket: UnixDatagram,
    /// The service manager's own `NOTIFY_SOCKET`, if it set one.
    upstream: Option<Notifier>,
    /// The current master, and its pidfd.
    master: u32,
    pidfd: OwnedFd,
    /// Its exit status, once it exited.
    status: Option<i32>,
    reaper: Reaper,
    timeout: Duration,
    /// `SIGINT`s and `SIGTERM`s received.
    stops: u32,
    /// The signal that asked for everything to be killed at once.
    killed_by: Option<Signal>,
    /// Notifications from other processes, ignored (the first ten logged).
    ignored: u64,
}

/// The signals the init passes on to the master.
fn forwarded() -> Vec<Signal> {
    STANDARD_SIGNALS.into_iter().chain([Signal::SIGUSR2]).collect()
}

impl Init {
    /// In PID 1: forks. Returns `Some(init)` in PID 1, which should then
    /// [`run`](Init::run) and exit with its code, and `None` in the child,
    /// which goes on as the master (`settings` made a subreaper, and
    /// `NOTIFY_SOCKET` set to the init's socket). Returns `None` at once,
    /// forking nothing, in a process that is not PID 1.
    pub fn split(settings: &mut Settings) -> io::Result<Option<Init>> {
        if std::process::id() != 1 {
            // A later generation of master below the init (a hot upgrade's
            // new master): a subreaper too.
            if std::env::var_os(ENV_UNDER_INIT).is_some() {
                settings.subreaper = true;
            }
            return Ok(None);
        }
        // Blocked before the fork: a signal sent to either process from now
        // on is queued, never acted on by default.
        let mut wanted = forwarded();
        wanted.push(Signal::SIGCHLD);
        let signals = Signals::new(&wanted)?;
        let name = format!("mio-cluster-init-{}", unique());
        let socket = UnixDatagram::bind_addr(&UnixAddr::from_abstract_name(name.as_bytes())?)?;
        socket.set_nonblocking(true)?;
        nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::PassCred, &true)?;
        let upstream = std::env::var_os("NOTIFY_SOCKET");
        let Some(master) = sys::process::fork()? else {
            // The master: the signals stay blocked (its own signalfd reads
            // them), the init's descriptors are closed.
            signals.close_keeping_mask();
            drop(socket);
            // One thread per process: nothing reads the environment meanwhile.
            std::env::set_var("NOTIFY_SOCKET", format!("@{name}"));
            std::env::set_var(ENV_UNDER_INIT, "1");
            if std::env::var("WATCHDOG_PID").is_ok_and(|p| p == "1") {
                std::env::set_var("WATCHDOG_PID", std::process::id().to_string());
            }
            settings.subreaper = true;
            return Ok(None);
        };
        for k in ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"] {
            std::env::remove_var(k);
        }
        let upstream = match upstream {
            Some(path) => Some(Notifier::new(&path, None)?),
            None => None,
        };
        let pidfd = sys::process::pidfd_open(master)?;
        let reaper = Reaper::new(false)?.expect("PID 1 reaps");
        let poll = Poll::new()?;
        poll.registry().register(
            &mut SourceFd(&signals.as_raw_fd()),
            SIGNALS,
            Interest::READABLE,
        )?;
        poll.registry().register(&mut SourceFd(&socket.as_raw_fd()), NOTIFY, Interest::READABLE)?;
        poll.registry().register(&mut SourceFd(&pidfd.as_raw_fd()), MASTER, Interest::READABLE)?;
        log::info!(
            "init: PID 1 forwards signals to the master (pid {master}), follows its hot \
             upgrades and reaps orphans"
        );
        Ok(Some(Init {
            poll,
            signals,
            socket,
            upstream,
            master,
            pidfd,
            status: None,
            reaper,
            timeout: settings.disconnect_timeout,
            stops: 0,
            killed_by: None,
            ignored: 0,
        }))
    }

    /// Runs until the master has exited and no other process is left: the
    /// exit code for PID 1 (see the [module docs](self)).
    pub fn run(mut self) -> io::Result<i32> {
        let mut events = Events::with_capacity(8);
        loop {
            let timeout =
                self.reaper.deadline().map(|d| d.saturating_duration_since(Instant::now()));
            match self.poll.poll(&mut events, timeout) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                res => res?,
            }
            // The hand-over first: a stop that comes with it goes to the
            // new master.
            self.hear();
            while let Some(sig) = self.signals.read()? {
                self.on_signal(sig);
            }
            self.watch_master();
            let master = (self.status.is_none()).then_some(self.master);
            self.reaper.reap(|pid| Some(pid) == master);
            if self.status.is_none() {
                continue;
            }
            if self.killed_by.is_some() {
                self.reaper.kill_now();
            }
            if !self.reaper.stop_others(self.timeout) {
                return Ok(self.exit_code(0));
            }
            if let Some(killed) = self.reaper.stopped(Instant::now()) {
                return Ok(self.exit_code(killed));
            }
        }
    }

    fn exit_code(&self, killed: usize) -> i32 {
        match (self.killed_by, self.status) {
            (Some(sig), _) => reaper::exit_code(sig),
            (None, Some(code)) if code != 0 => code,
            _ if killed > 0 => 1,
            _ => 0,
        }
    }

    fn on_signal(&mut self, sig: Signal) {
        if sig == Signal::SIGCHLD {
            self.reaper.wake();
            return;
        }
        if matches!(sig, Signal::SIGINT | Signal::SIGTERM) {
            self.stops += 1;
            if self.stops >= 2 {
                self.killed_by = Some(sig);
            }
        }
        if sig == Signal::SIGQUIT {
            self.killed_by = Some(sig);
        }
        if self.status.is_some() {
            return;
        }
        log::debug!("init: {sig} to the master (pid {})", self.master);
        if let Err(e) = sys::process::pidfd_send_signal(self.pidfd.as_fd(), sig.as_raw()) {
            log::warn!("init: {sig} to the master (pid {}): {e}", self.master);
        }
    }

    /// Reads the notifications: the current master's `MAINPID=` makes the
    /// named process the master; the rest goes to the service manager, if
    /// there is one.
    fn hear(&mut self) {
        let mut buf = [0u8; 4096];
        loop {
            let (n, sender) = match recv_with_sender(&self.socket, &mut buf) {
                Ok(got) => got,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::warn!("init: reading a notification: {e}");
                    return;
                }
            };
            if sender != Some(self.master) || self.status.is_some() {
                self.ignored += 1;
                if self.ignored > 10 {
                    continue;
                }
                log::warn!(
                    "init: a notification from pid {} ignored: only the master (pid {}) may \
                     notify",
                    sender.map_or("?".to_string(), |p| p.to_string()),
                    self.master
                );
                continue;
            }
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            let mut rest = Vec::new();
            for line in text.lines() {
                match line.strip_prefix("MAINPID=").map(str::parse::<u32>) {
                    Some(Ok(pid)) => self.follow(pid),
                    Some(Err(_)) => log::warn!("init: bad notification {line:?}"),
                    None => rest.push(line),
                }
            }
            if let (Some(up), false) = (self.upstream.as_ref(), rest.is_empty()) {
                if let Err(e) = up.notify(&rest.join("\n")) {
                    log::warn!("init: passing on {rest:?}: {e}");
                }
            }
        }
    }

    /// The current master handed over to `pid`.
    fn follow(&mut self, pid: u32) {
        let pidfd = match sys::process::pidfd_open(pid) {
            Ok(fd) => fd,
            Err(e) => {
                log::error!("init: the new master (pid {pid}) cannot be followed: {e}");
                return;
            }
        };
        let _ = self.poll.registry().deregister(&mut SourceFd(&self.pidfd.as_raw_fd()));
        if let Err(e) = self.poll.registry().register(
            &mut SourceFd(&pidfd.as_raw_fd()),
            MASTER,
            Interest::READABLE,
        ) {
            log::error!("init: watching the new master (pid {pid}): {e}");
        }
        log::info!("init: the master is pid {pid} now (the old one, pid {}, drains)", self.master);
        self.master = pid;
        self.pidfd = pidfd;
        // A stop forwarded to the old master while it was handing over is
        // the new one's to act on too.
        if self.stops > 0 {
            let _ = sys::process::pidfd_send_signal(self.pidfd.as_fd(), libc::SIGTERM);
        }
    }

    /// Takes the current master's exit status once it can: it is this
    /// process's child from the start, or once the old master it was
    /// handed over from has exited.
    fn watch_master(&mut self) {
        if self.status.is_some() {
            return;
        }
        match sys::process::pidfd_reap(self.pidfd.as_fd()) {
            Ok(Some(how)) => {
                let code = match how {
                    sys::process::Reaped::Code(c) => c,
                    sys::process::Reaped::Signal(s) => 128 + s,
                };
                log::info!("init: the master (pid {}) exited with {code}", self.master);
                self.status = Some(code);
            }
            Ok(None) => {}
            // Still the old master's child (a zombie it has not reaped):
            // it comes here when that one exits.
            Err(e) if e.raw_os_error() == Some(libc::ECHILD) => {}
            Err(e) => log::warn!("init: waiting for the master (pid {}): {e}", self.master),
        }
    }
}

/// A datagram and its sender's pid, from `SCM_CREDENTIALS`.
fn recv_with_sender(socket: &UnixDatagram, buf: &mut [u8]) -> io::Result<(usize, Option<u32>)> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    let mut space = nix::cmsg_space!(libc::ucred);
    let mut iov = [IoSliceMut::new(buf)];
    let msg =
        recvmsg::<()>(socket.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::MSG_DONTWAIT)?;
    let mut sender = None;
    for cmsg in msg.cmsgs()? {
        if let ControlMessageOwned::ScmCredentials(c) = cmsg {
            sender = u32::try_from(c.pid()).ok();
        }
    }
    Ok((msg.bytes, sender))
}

/// A name no other init in this network namespace has: a random UUID from
/// the kernel, or the time where that cannot be read.
fn unique() -> String {
    match std::fs::read_to_string("/proc/sys/kernel/random/uuid") {
        Ok(uuid) => uuid.trim().to_string(),
        Err(_) => {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
            format!("{:x}", now.map_or(0, |d| d.as_nanos()))
        }
    }
}
