//! The production master in one piece: a [`Master`], a [`Supervisor`] and
//! the host pieces ([`systemd`](super::systemd), [`health`](super::health),
//! [`linger`](super::linger), the hot upgrade), with the signal meanings and
//! exit codes an operator expects. The echo example's master is
//! [`Manager::run`] and nothing more.
//!
//! ```no_run
//! use mio_cluster::host::manager::{Manager, ManagerEvent};
//! use mio_cluster::{Policy, Role};
//!
//! if let Role::Master = mio_cluster::role() {
//!     let manager = Manager::builder()
//!         .policy(Policy { workers: 4, ..Policy::default() })
//!         .health("127.0.0.1:8080".parse().unwrap())
//!         .build()?;
//!     let code = manager.run(|_, event| {
//!         if let ManagerEvent::Ready { address, workers, pid, .. } = event {
//!             println!("ready addr={address} workers={workers} pid={pid}");
//!         }
//!     })?;
//!     std::process::exit(code);
//! }
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! # Signals
//!
//! | signal | effect |
//! |---|---|
//! | `SIGINT`, `SIGTERM` | graceful shutdown, after the [linger](Builder::linger) if one is set; a second one ends the linger, and during the shutdown kills every worker at once (exit `128 +` the signal). To a master that has handed over to a new one (it is already draining), the first one changes nothing. |
//! | `SIGQUIT` | kill every worker at once, exit 131 |
//! | `SIGHUP` | rolling restart |
//! | `SIGTTIN`, `SIGTTOU` | one worker more, one fewer |
//! | `SIGUSR1` | a status table on stderr ([`status_table`]) |
//! | `SIGUSR2` | hot upgrade of the master ([`Master::upgrade`]) |
//!
//! # Hot upgrade, as each host sees it
//!
//! On `SIGUSR2` the manager starts a new master from the program now at
//! its path and hands it the registry's sockets and the health listener's
//! (the same kernel sockets: no connection and no probe is refused). When
//! the new master's workers all listen, it reports ready; this one names it
//! the main process to systemd (`MAINPID=`, which the new one waits for
//! before it notifies anything), drains its workers and exits 0. If the new
//! master fails, its whole process group is killed and this one serves on.
//!
//! - Under systemd (`NOTIFY_SOCKET` set), the new master is started
//!   detached: re-parented to systemd before it is named the main process,
//!   so systemd supervises it as its own child, and a later stop is
//!   graceful.
//! - A master that reaps (`--subreaper`) keeps the new master as its child
//!   and spares it: never signalled, reaped or waited for by the reaper.
//! - As PID 1 of a PID namespace (a container), split off a minimal init
//!   first ([`Init::split`](super::init::Init::split), as the echo example
//!   does): PID 1 stays the init, the master is its child and can be
//!   upgraded, and the init follows the hand-over. A manager that is PID 1
//!   itself refuses `SIGUSR2` with a log line: PID 1 cannot hand over,
//!   since the namespace ends with it.
//!
//! # Exit codes
//!
//! 0 after a graceful shutdown or a hand-over; 1 if a worker had to be
//! killed at the deadline, if workers kept dying before they listened
//! (a crash loop), or if a worker exited with [`EXIT_CANNOT_LISTEN`];
//! `128 +` the signal after a shutdown forced by `SIGQUIT` or a second
//! `SIGINT`/`SIGTERM`.

mod builder;
mod hand_over;
mod status;

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Registry, Token};

use super::health::{Health, Readiness};
use super::linger::Linger;
use super::reaper;
use super::systemd::Service;
use crate::master::{Upgrade, DEFAULT_UPGRADE_TIMEOUT};
use crate::supervisor::{Metrics, Outcomes};
use crate::{Address, Event, ExitStatus, Master, Policy, Signal, Supervisor};

/// A worker's exit code when it cannot listen (a port in use, a bad
/// address, a permission): the manager shuts the pool down and exits 1
/// instead of replacing it (sysexits' `EX_CONFIG`).
pub const EXIT_CANNOT_LISTEN: i32 = 78;

pub use builder::Builder;
use builder::Parts;
pub use status::status_table;
use status::{readiness, Probe};

/// The name the health listener's socket is handed over under.
const HEALTH_FD: &str = "health";

const MASTER: Token = Token(0);
const HEALTH: Token = Token(1);
const UPGRADE: Token = Token(2);
const OLD_MASTER: Token = Token(3);

/// What the manager hands the application, in order.
#[derive(Debug)]
#[non_exhaustive]
pub enum ManagerEvent {
    /// Every initial worker listens (once per master): the moment for the
    /// application's own "ready" line. `address` is the first worker's.
    #[non_exhaustive]
    Ready {
        /// The address the pool listens on.
        address: Address,
        /// The worker count the pool keeps.
        workers: usize,
        /// This master's pid.
        pid: u32,
    },
    /// One of the master's events, after the manager acted on it
    /// (messages from workers, exits, signals...).
    Master(Event),
}

/// The production master. See the [module docs](self).
///
/// Run it with [`Manager::run`], or register it in the application's own
/// loop: it is a [`mio::event::Source`] (one descriptor, readable when it
/// has work) with the master's contract: wait no longer than
/// [`Manager::timeout`], call [`Manager::process`] after every wait, take
/// every [`Manager::next_event`], and leave once [`Manager::exit_code`] says
/// so.
#[derive(Debug)]
pub struct Manager {
    poll: Poll,
    events: Events,
    master: Master,
    supervisor: Supervisor,
    service: Service,
    health: Option<Health>,
    linger: Linger,
    /// A hot upgrade under way (`SIGUSR2`).
    upgrade: Option<Upgrade>,
    /// Hot upgrades, by result.
    upgrades: Outcomes,
    upgrade_timeout: Duration,
    /// The new master this one handed over to: it only drains now.
    handed_over: Option<u32>,
    /// In a new master, once ready: the channel on which the old one says
    /// it has named this one the main process.
    old_master: Option<UnixStream>,
    /// `SIGINT`s and `SIGTERM`s that reached the shutdown (a linger holds
    /// the first).
    stop_signals: u32,
    /// The signal that ended the master by killing every worker, if any.
    killed_by: Option<Signal>,
    /// Workers could not listen, or kept dying: exit 1.
    failed: bool,
    exit: Option<i32>,
    queue: VecDeque<ManagerEvent>,
    /// `Ready` is queued: report it to the old master (of a hot upgrade)
    /// before the application sees it.
    report_pending: bool,
    workers: usize,
    /// A worker silent this long is not counted ready (half the heartbeat
    /// timeout).
    stale: Option<Duration>,
}

impl Manager {
    /// A [`Builder`] with the defaults: [`Settings::default`](crate::Settings::default),
    /// [`Policy::default`], no health listener, no linger.
    pub fn builder() -> Builder {
        Builder::default()
    }

    fn start(
        master: &mut Master,
        b: Builder,
        heartbeat: Option<crate::Heartbeat>,
    ) -> io::Result<Parts> {
        if let Some(name) = &b.required_socket {
            super::systemd::find_socket(name)?;
        }
        // The new master of a hot upgrade keeps the old one's count
        // (SIGTTIN and SIGTTOU may have changed it).
        let workers = master.inherited_target().unwrap_or(b.policy.workers);
        // READY=1, RELOADING=1, STOPPING=1, STATUS= and the watchdog, if
        // NOTIFY_SOCKET is set (read before any worker is forked: the
        // variables are removed, workers do not notify).
        let mut service = Service::from_env(workers, heartbeat.as_ref())?;
        if master.is_upgrading() {
            // systemd hears from this master once the old one has named it
            // the main process.
            service.hold();
        }
        let poll = Poll::new()?;
        poll.registry().register(master, MASTER, Interest::READABLE)?;
        // The health listener: the old master's socket in a hot upgrade,
        // else bound here, after the master, so that workers cannot name
        // its descriptor with fd:N.
        let health = match b.health {
            Some(addr) => {
                let mut h = match master.take_handed_over(HEALTH_FD) {
                    Some(fd) => {
                        let h = Health::from_std(std::net::TcpListener::from(fd))?;
                        log::info!("health listener on {} (from the old master)", h.local_addr());
                        h
                    }
                    None => {
                        let h = Health::bind(addr)?;
                        log::info!("health listener on {}", h.local_addr());
                        h
                    }
                };
                // A new master serves the probes once it is ready: until then
                // the old one answers them (the kernel's queue is shared).
                if !master.is_upgrading() {
                    poll.registry().register(&mut h, HEALTH, Interest::READABLE)?;
                }
                Some(h)
            }
            None => None,
        };
        // Keep `workers` alive: replace every worker that dies; stop only
        // if workers keep dying before they listen (a crash loop).
        let mut supervisor = Supervisor::new(Policy { workers, ..b.policy });
        supervisor.start(master)?;
        Ok(Parts {
            poll,
            supervisor,
            service,
            health,
            linger: Linger::new(b.linger),
            workers,
            upgrade_timeout: b.upgrade_timeout.unwrap_or(DEFAULT_UPGRADE_TIMEOUT),
            stale: heartbeat.map(|h| h.timeout / 2),
        })
    }

    /// Runs the manager's own loop until the pool is gone; returns the exit
    /// code (see the [module docs](self)). `on_event` sees every event.
    ///
    /// In the new master of a hot upgrade, an error is also reported to the
    /// old master ([`Master::report_failure`]) before it is returned.
    ///
    /// It is the embedding contract and nothing more: the manager registered
    /// in a `Poll` of its own, as an application registers it in its own.
    pub fn run(mut self, mut on_event: impl FnMut(&mut Manager, ManagerEvent)) -> io::Result<i32> {
        let mut poll = Poll::new()?;
        poll.registry().register(&mut self, Token(0), Interest::READABLE)?;
        let mut events = Events::with_capacity(4);
        loop {
            let turn = match poll.poll(&mut events, self.timeout()) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => self.process(),
                Err(e) => Err(e),
                Ok(()) => self.process(),
            };
            if let Err(e) = turn {
                self.master.report_failure(&e.to_string());
                return Err(e);
            }
            while let Some(event) = self.next_event() {
                on_event(&mut self, event);
            }
            if let Some(code) = self.exit {
                return Ok(code);
            }
        }
    }

    /// How long the application's loop may wait before
    /// [`Manager::process`]: zero while events or work are pending.
    pub fn timeout(&self) -> Option<Duration> {
        if !self.queue.is_empty() || self.report_pending || self.exit.is_some() {
            return Some(Duration::ZERO);
        }
        let now = Instant::now();
        [
            self.supervisor.timeout(&self.master),
            self.service.timeout(),
            self.health.as_ref().and_then(Health::timeout),
            self.linger.timeout(now),
            self.upgrade.as_ref().and_then(Upgrade::timeout),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// One non-blocking turn: reads what is ready, fires what is due, and
    /// queues the events for [`Manager::next_event`].
    pub fn process(&mut self) -> io::Result<()> {
        if self.report_pending {
            self.flush_report()?;
        }
        // Each part below looks at its own sources whatever woke the loop:
        // this only empties the ready list (all of it, so that the
        // descriptor the application registered goes quiet).
        loop {
            match self.poll.poll(&mut self.events, Some(Duration::ZERO)) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
                Ok(()) => {}
            }
            if self.events.iter().count() < self.events.capacity() {
                break;
            }
        }
        self.supervisor.process(&mut self.master)?;
        if let Some(h) = self.health.as_mut().filter(|_| !self.master.is_upgrading()) {
            h.process(Probe {
                master: &self.master,
                supervisor: &self.supervisor,
                linger: &self.linger,
                stale: self.stale,
                handed_over: self.handed_over.is_some(),
                upgrades: self.upgrades,
            })?;
        }
        if self.linger.due(Instant::now()) && !self.master.is_shutting_down() {
            log::info!("the linger is over: graceful shutdown");
            self.supervisor.handle_signal(&mut self.master, Signal::SIGTERM)?;
        }
        // The new master's report before this turn's signals: a new master
        // that said it is ready (which its `ready` line, printed after the
        // report, tells a script) has it, and a stop read in the same turn
        // finds this master handed over (graceful); one read while the
        // upgrade is still pending calls it off.
        self.watch_upgrade()?;
        if let Some(mut ch) = self.old_master.take() {
            if !self.hear_old_master_on(&mut ch) {
                self.old_master = Some(ch);
            }
        }
        while let Some(event) = self.supervisor.next_event(&mut self.master) {
            self.on_event(&event)?;
            self.queue.push_back(ManagerEvent::Master(event));
        }
        // No worker is recycled while a new master takes over.
        self.supervisor.hold_recycling(self.upgrade.is_some() || self.handed_over.is_some());
        // STATUS= if the pool changed; WATCHDOG=1 from this loop, while the
        // pool can serve.
        self.service.tick(&self.master);
        Ok(())
    }

    /// The next event, if any.
    pub fn next_event(&mut self) -> Option<ManagerEvent> {
        // Before the application sees `Ready` (and prints its line): the
        // old master is told first, so that whoever sees the line can rely
        // on the hand-over being under way.
        if self.report_pending {
            if let Err(e) = self.flush_report() {
                log::warn!("upgrade: reporting ready to the old master: {e}");
            }
        }
        self.queue.pop_front()
    }

    /// `Some(code)` once the pool is gone and the process should exit
    /// with `code`.
    pub fn exit_code(&self) -> Option<i32> {
        self.exit
    }

    /// The master.
    pub fn master(&mut self) -> &mut Master {
        &mut self.master
    }

    /// The supervisor and the master it drives (to send messages, scale,
    /// read the status).
    pub fn pool(&mut self) -> (&mut Supervisor, &mut Master) {
        (&mut self.supervisor, &mut self.master)
    }

    /// The health listener's address, if one is served.
    pub fn health_addr(&self) -> Option<SocketAddr> {
        self.health.as_ref().map(Health::local_addr)
    }

    /// The pool's numbers now, hot upgrades included: what `/metrics`
    /// serves ([`Supervisor::metrics`]).
    pub fn metrics(&self) -> Metrics {
        let mut m = self.supervisor.metrics(&self.master);
        m.upgrades = self.upgrades;
        m
    }

    /// What `/ready` says now ([`Readiness`]).
    pub fn readiness(&self) -> Readiness {
        readiness(&self.master, &self.supervisor, &self.linger, self.stale)
    }

    fn on_event(&mut self, event: &Event) -> io::Result<()> {
        let now_ready = self.service.on_event(&self.master, event);
        match event {
            Event::Listening { id, address } => {
                log::info!("worker {id} listening on {address}");
                if now_ready {
                    self.queue.push_back(ManagerEvent::Ready {
                        address: address.clone(),
                        workers: self.workers,
                        pid: std::process::id(),
                    });
                    self.report_pending = self.master.is_upgrading();
                }
            }
            Event::Exit { id, status, exited_after_disconnect: false, .. }
                if *status == ExitStatus::Code(EXIT_CANNOT_LISTEN)
                    && !self.master.is_shutting_down() =>
            {
                self.give_up(&format!("worker {id} cannot listen"))?;
            }
            Event::Exit { id, pid, status, exited_after_disconnect, .. } => {
                let how = if *exited_after_disconnect { "left" } else { "died" };
                log::info!("worker {id} (pid {pid}) {how}: {status}");
            }
            Event::CrashLoop { .. } => {
                self.give_up("workers keep dying at start-up")?;
            }
            Event::Signal(Signal::SIGUSR1) => {
                eprint!("{}", status_table(&self.supervisor.status(&self.master)))
            }
            Event::Signal(Signal::SIGUSR2) => self.start_upgrade()?,
            // Leaving, however it goes on (a linger first, or not): a
            // pending upgrade is called off (its new master killed), so the
            // stop cannot be lost to a hand-over.
            Event::Signal(sig @ (Signal::SIGINT | Signal::SIGTERM | Signal::SIGQUIT))
                if self.upgrade.is_some() =>
            {
                log::info!("{sig}: the upgrade under way is called off");
                self.cancel_upgrade();
                self.on_event(event)?;
            }
            // Held during the linger: the workers keep accepting.
            Event::Signal(sig) if self.linger.on_signal(*sig, Instant::now()) => {}
            Event::Signal(sig @ (Signal::SIGINT | Signal::SIGTERM))
                if self.stop_signals == 0 && self.master.is_shutting_down() =>
            {
                // Shutting down already, not because of a signal (a
                // hand-over, a failure): this one is the first.
                self.stop_signals = 1;
                self.cancel_upgrade();
                log::info!("{sig}: already draining; a second one kills every worker");
            }
            Event::Signal(sig) => {
                let sig = *sig;
                if matches!(sig, Signal::SIGINT | Signal::SIGTERM | Signal::SIGQUIT) {
                    // Leaving: a pending upgrade is called off (killed).
                    self.cancel_upgrade();
                }
                if matches!(sig, Signal::SIGINT | Signal::SIGTERM) {
                    self.stop_signals += 1;
                }
                let kills = sig == Signal::SIGQUIT
                    || (matches!(sig, Signal::SIGINT | Signal::SIGTERM)
                        && self.master.is_shutting_down());
                if kills {
                    self.killed_by = Some(sig);
                    // As PID 1: other processes waited for go too.
                    self.master.kill_others();
                }
                self.supervisor.handle_signal(&mut self.master, sig)?;
            }
            Event::RollFailed { id, reason } => {
                log::error!("rolling restart stopped at worker {id}: {reason}");
            }
            Event::Recycled { id, by, why } => {
                log::info!("worker {id} recycled ({why}); worker {by} in its place");
            }
            Event::AllDisconnected { forced } => {
                if *forced > 0 {
                    log::warn!("{forced} workers had to be killed");
                }
                log::info!("every worker has left; bye");
                // Ended by a signal that killed every worker: 128 + its
                // number, as a shell shows a process it killed.
                self.exit = Some(match self.killed_by {
                    Some(sig) => reaper::exit_code(sig),
                    None if self.failed || *forced > 0 => 1,
                    None => 0,
                });
            }
            _ => {}
        }
        Ok(())
    }

    /// The pool cannot serve: shut it down and exit 1 (in the new master
    /// of a hot upgrade, the old one is told why first).
    fn give_up(&mut self, why: &str) -> io::Result<()> {
        log::error!("{why}; shutting down");
        self.master.report_failure(why);
        self.failed = true;
        self.service.stopping();
        self.supervisor.shutdown(&mut self.master)
    }
}

impl mio::event::Source for Manager {
    fn register(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        SourceFd(&self.poll.as_raw_fd()).register(registry, token, interests)
    }

    fn reregister(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        SourceFd(&self.poll.as_raw_fd()).reregister(registry, token, interests)
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        SourceFd(&self.poll.as_raw_fd()).deregister(registry)
    }
}
