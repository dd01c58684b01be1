//! Supervision as a layer over the master, as PM2 sits on Node's cluster:
//! a target number of workers, respawn with exponential backoff, crash-loop
//! protection, zero-downtime rolling restart, hung-worker detection by
//! heartbeat, recycling, scaling at run time, graceful shutdown, and
//! per-worker status.
//!
//! A [`Master`] alone is Node's: it starts the workers it is asked to and
//! manages no pool. A [`Supervisor`] drives one through its public API only.
//! It sees every event the master reports (take them through
//! [`Supervisor::next_event`]), reports its own next deadline
//! ([`Supervisor::timeout`]), and acts when one is due
//! ([`Supervisor::process`]). Its rules read no clock and make no system
//! call: every input comes with its time, every action goes through the
//! master's API, and the unit tests drive them with a fake clock and a model
//! of the master, one test per rule; the end-to-end tests check the same
//! rules on real processes.
//!
//! The pool stays full. A worker is *ready* once it listened, sent a
//! heartbeat or called [`Worker::ready`](crate::Worker::ready) (or lived
//! past [`Policy::crash_window`]). A worker that was ready is always
//! replaced, after at most [`READY_BACKOFF_MAX`]; only workers that die
//! before they are ready, a broken deploy that respawning cannot fix, make
//! the supervisor give up ([`Event::CrashLoop`]), as gunicorn's boot-error
//! rule. While a seat's worker is replaced, the master keeps the sockets it
//! held open (with their queued connections) for the next one
//! ([`Master::keep_sockets`]), so even a pool of one refuses nothing.
//!
//! ```no_run
//! use mio_cluster::{Event, Master, Policy, Settings, Supervisor};
//! use mio_cluster::supervisor::STANDARD_SIGNALS;
//! let settings = Settings { signals: STANDARD_SIGNALS.to_vec(), ..Settings::default() };
//! let mut master = Master::new(settings)?;
//! let mut supervisor = Supervisor::new(Policy { workers: 4, ..Policy::default() });
//! supervisor.start(&mut master)?;
//! loop {
//!     supervisor.poll(&mut master, None)?;
//!     while let Some(event) = supervisor.next_event(&mut master) {
//!         match event {
//!             Event::Signal(sig) => {
//!                 supervisor.handle_signal(&mut master, sig)?;
//!             }
//!             Event::AllDisconnected { .. } | Event::CrashLoop { .. } => return Ok(()),
//!             other => eprintln!("{other:?}"),
//!         }
//!     }
//! }
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! # In the application's own loop
//!
//! The supervisor rides on its master's registration: wait at most
//! [`Supervisor::timeout`] (the master's deadlines and its own), call
//! [`Supervisor::process`] after every wait ([`Master::process`], then what
//! is due), and take every event through [`Supervisor::next_event`], in
//! place of the master's: every event of the master must come through it.
//! The contract is the
//! [master's](crate::master#inside-the-applications-own-loop).
//!
//! ```no_run
//! use mio::{Events, Interest, Poll, Token};
//! use mio_cluster::{Event, Master, Policy, Settings, Supervisor};
//!
//! let mut master = Master::new(Settings::default())?;
//! let mut poll = Poll::new()?;
//! poll.registry().register(&mut master, Token(0), Interest::READABLE)?;
//! let mut events = Events::with_capacity(128);
//! let mut supervisor = Supervisor::new(Policy { workers: 4, ..Policy::default() });
//! supervisor.start(&mut master)?;
//! loop {
//!     poll.poll(&mut events, supervisor.timeout(&master))?; // its deadlines and the master's
//!     supervisor.process(&mut master)?; // master.process(), then what is due
//!     while let Some(event) = supervisor.next_event(&mut master) {
//!         if let Event::Signal(sig) = event {
//!             supervisor.handle_signal(&mut master, sig)?;
//!         }
//!     }
//! }
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! # The rules
//!
//! | [`Policy`] field | default | meaning |
//! |---|---|---|
//! | `workers` | one per CPU | the target count; [`Supervisor::set_target`] changes it live |
//! | `respawn` | true | replace a worker that exits without being asked to, or leaves of its own accord |
//! | `backoff_initial`, `backoff_max` | 100 ms, 10 s | the delay before replacing a worker that died before it was ready, doubled for each such death in a row up to `backoff_max`; a worker that was ready is replaced at once, or, if it died within [`QUICK_DEATH`] (100 ms) of being ready, after this delay capped at [`READY_BACKOFF_MAX`] (500 ms) |
//! | `crash_window` | 5 s | a worker that lived this long counts as ready even if it never said so |
//! | `crash_limit` | 5 | workers in a row (in one seat) that died before they were ready, before respawning stops with [`Event::CrashLoop`] |
//! | `start_timeout` | 30 s | how long a rolling restart waits for a new worker to be ready |
//! | `max_worker_connections`, `max_worker_connections_jitter` | none, 0 | recycle a worker once it accepted this many connections, plus its own jitter from 0 to the second |
//! | `max_worker_rss` | none | recycle a worker whose resident memory stayed above this many bytes for three checks in a row, a second apart |
//!
//! **Seats.** The pool is a row of seats, one per worker of the target.
//! [`Supervisor::start`] fills them; [`Supervisor::fork`] and
//! [`Supervisor::fork_with_env`] add a seat (the target grows by one). A
//! seat keeps the environment it was forked with for every replacement,
//! and a rolling restart forks each new worker with its old worker's
//! environment. A worker started with [`Master::fork`] has no seat: it is
//! not replaced when it dies, but a rolling restart replaces it.
//!
//! **Respawn.** A worker that was ready is always replaced: at once, or,
//! if it keeps dying within [`QUICK_DEATH`] of being ready (a request that
//! kills it, say), after the backoff, at most [`READY_BACKOFF_MAX`] later,
//! however often it happens. Only workers that die before they are ready
//! count towards giving up: after `crash_limit` of them in a row in one
//! seat, respawning stops, [`Event::CrashLoop`] is queued, and no socket is
//! kept for a worker that will not come. A worker that leaves of its own
//! accord ([`Worker::disconnect`](crate::Worker::disconnect), gunicorn's
//! `max_requests`) or that the application disconnects
//! ([`Master::disconnect`]) gives up its seat at once (`Event::Leaving`),
//! and its replacement starts while it finishes its connections; one that
//! then hangs is killed at
//! [`Settings::disconnect_timeout`](crate::Settings::disconnect_timeout)
//! like any other. A fork that fails is retried after `backoff_max`.
//! Workers leave for good only through a shutdown, a smaller target, a
//! crash loop, or with `respawn: false`.
//!
//! **Kept sockets.** The supervisor asks the master to keep each seated
//! worker's sockets when it leaves them ([`Master::keep_sockets`]): the
//! master keeps them open, with their queued connections, until a worker
//! started later holds them, for at most `backoff_max + start_timeout`, so
//! even a pool of one refuses no connection while its worker is replaced.
//! Not past a shutdown, a crash loop or a smaller target.
//!
//! **Heartbeats.** With
//! [`Settings::heartbeat`](crate::Settings::heartbeat) set, each worker's
//! runtime sends a heartbeat from its own loop ([`Worker::poll`](crate::Worker::poll) or
//! [`Worker::process`](crate::Worker::process), woken by
//! [`Worker::timeout`](crate::Worker::timeout)), which the master reports as
//! [`Event::Heartbeat`]. The supervisor kills a worker silent for longer
//! than [`Heartbeat::timeout`](crate::Heartbeat::timeout) (`SIGABRT` first,
//! then `SIGKILL` a second later, with
//! [`abort_first`](crate::Heartbeat::abort_first)), reports
//! [`Event::Unresponsive`], and replaces it. Silence is measured from the
//! later of the last heartbeat (or the worker's start) and the supervisor's
//! last resumption: a master that was itself stopped (`SIGSTOP`, a paused
//! VM) kills no healthy worker when it resumes. A worker that leaves is not
//! expected to send heartbeats.
//!
//! **Rolling restart.** [`Supervisor::rolling_restart`] replaces workers one
//! at a time: the new worker must hold every shared socket the old one
//! held before the old one is disconnected, so connections are never
//! refused (the accept queue belongs to the shared socket, not to a
//! worker). It must also have listened at all if the old one did (sockets
//! of its own), and called [`Worker::ready`](crate::Worker::ready) if the
//! old one had (einhorn's ack: call it once the worker can serve); a worker
//! that does none of these (messages only) only has to be online. A new
//! worker that dies, or is not ready within `start_timeout` (it is then
//! killed), stops the roll with [`Event::RollFailed`], and the old workers
//! keep serving; [`Event::RollComplete`] ends a good one. A second roll
//! while one runs fails with `AlreadyExists`.
//!
//! **Recycling.** A worker past `max_worker_connections` (as its accept
//! boards count them: listeners balanced with
//! [`Balance::Even`](crate::Balance::Even) only) or `max_worker_rss` is
//! replaced as a rolling restart replaces one, its replacement ready first,
//! and [`Event::Recycled`] says so. One at a time, never during a roll (a
//! roll takes a recycling under way as its first step) or a shutdown, nor
//! while [`Supervisor::hold_recycling`] holds it. A replacement that does
//! not come up leaves the old worker serving, and recycling waits
//! `backoff_max` before it tries again. A limit that a fresh worker already
//! passes (the replacement of a worker recycled on memory is over it at its
//! first check) is logged once, and recycling on memory is off from then
//! on.
//!
//! **Scaling, shutdown, signals, status.** [`Supervisor::set_target`] fills
//! new seats at once and disconnects the workers of removed ones
//! gracefully. [`Supervisor::shutdown`] stops respawning and rolling,
//! disconnects every worker (each killed if it outlives the disconnect
//! timeout), and [`Event::AllDisconnected`] `{ forced }` follows.
//! [`Supervisor::handle_signal`] gives the signals their conventional
//! meaning, as gunicorn and unicorn do: `SIGINT` and `SIGTERM` a graceful
//! shutdown (a second one kills every worker at once), `SIGQUIT` kill at
//! once, `SIGHUP` a rolling restart, `SIGTTIN` and `SIGTTOU` one worker more
//! or fewer (never below one); it returns false for any other (`SIGUSR1`,
//! left to the application). Block them with
//! [`STANDARD_SIGNALS`] in [`Settings::signals`](crate::Settings::signals).
//! [`Supervisor::status`] is the per-worker table, with each seat's restart
//! count, and [`Supervisor::metrics`] the pool's numbers.

mod metrics;
mod policy;
mod rules;
#[cfg(test)]
mod tests;

use std::ffi::OsString;
use std::fmt;
use std::io;
use std::time::{Duration, Instant};

use crate::master::{Event, Master, SocketId, WorkerInfo, WorkerStatus};
use crate::{Signal, WorkerId};
use rules::{Pool, Rules};

pub use metrics::{
    ExitCounts, Metrics, Outcomes, Recycle, RecycleCounts, SlotMetrics, WorkerCounts,
};
pub use policy::{Policy, QUICK_DEATH, READY_BACKOFF_MAX, STANDARD_SIGNALS};

/// Keeps a pool of workers on a [`Master`]. See the [module docs](self).
pub struct Supervisor {
    rules: Rules,
}

impl fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Supervisor")
            .field("policy", &self.rules.policy)
            .field("target", &self.rules.seats.len())
            .finish_non_exhaustive()
    }
}

impl Supervisor {
    /// A supervisor that will keep `policy.workers` workers, once
    /// [`start`](Supervisor::start)ed.
    pub fn new(policy: Policy) -> Supervisor {
        Supervisor { rules: Rules::new(policy, Instant::now()) }
    }

    /// Forks workers up to the target; from now on keeps that many,
    /// replacing those that die.
    pub fn start(&mut self, master: &mut Master) -> io::Result<()> {
        self.sync(master);
        let n = self.rules.policy.workers;
        self.rules.set_target(master, n, Instant::now())
    }

    /// The policy it keeps.
    pub fn policy(&self) -> &Policy {
        &self.rules.policy
    }

    /// The target number of workers.
    pub fn target(&self) -> usize {
        self.rules.seats.len()
    }

    /// Changes the target number of workers: new seats are filled at once,
    /// workers in removed seats are disconnected gracefully.
    pub fn set_target(&mut self, master: &mut Master, n: usize) -> io::Result<()> {
        self.sync(master);
        self.rules.set_target(master, n, Instant::now())
    }

    /// Starts a worker in a seat of its own (the target grows by one): it is
    /// replaced like the others. (A worker forked with [`Master::fork`] is
    /// not replaced when it dies, but a rolling restart replaces it.)
    pub fn fork(&mut self, master: &mut Master) -> io::Result<WorkerId> {
        self.fork_with_env(master, std::iter::empty::<(OsString, OsString)>())
    }

    /// As [`fork`](Supervisor::fork), with extra environment variables: every
    /// worker that fills this seat later, and the one a rolling restart puts
    /// in its place, gets them too.
    pub fn fork_with_env<I, K, V>(&mut self, master: &mut Master, env: I) -> io::Result<WorkerId>
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<OsString>,
        V: Into<OsString>,
    {
        self.sync(master);
        let env = env.into_iter().map(|(k, v)| (k.into(), v.into())).collect();
        self.rules.fork(master, env, Instant::now())
    }

    /// Replaces every live worker, one at a time, without refusing a
    /// connection: a new worker is forked and listening on every server the
    /// old one had (and has called [`Worker::ready`](crate::Worker::ready)
    /// if the old one had) before the old one is disconnected. A new worker
    /// that does not come up within [`Policy::start_timeout`] stops the roll
    /// ([`Event::RollFailed`]) and leaves the old workers serving;
    /// [`Event::RollComplete`] ends a good one. Fails with `AlreadyExists`
    /// while a roll is in progress.
    pub fn rolling_restart(&mut self, master: &mut Master) -> io::Result<()> {
        self.sync(master);
        self.rules.rolling_restart(master, Instant::now())
    }

    /// Graceful shutdown: stops respawning and rolling, disconnects every
    /// worker (each is killed if it outlives
    /// [`Settings::disconnect_timeout`](crate::Settings::disconnect_timeout));
    /// [`Event::AllDisconnected`] follows.
    pub fn shutdown(&mut self, master: &mut Master) -> io::Result<()> {
        self.rules.shutdown(master)
    }

    /// The conventional meaning of a signal to a master, as gunicorn and
    /// unicorn give it: `SIGINT`/`SIGTERM` graceful shutdown (a second one:
    /// kill at once), `SIGQUIT` kill at once, `SIGHUP` rolling restart,
    /// `SIGTTIN`/`SIGTTOU` one worker more/less. Returns false for a signal
    /// it gives no meaning to (such as `SIGUSR1`).
    pub fn handle_signal(&mut self, master: &mut Master, sig: Signal) -> io::Result<bool> {
        self.sync(master);
        self.rules.handle_signal(master, sig, Instant::now())
    }

    /// Every live worker's [`Master::status`], with its seat's restart count.
    pub fn status(&self, master: &Master) -> Vec<WorkerStatus> {
        let mut rows = master.status();
        for r in &mut rows {
            r.restarts = self.rules.restarts(r.id);
        }
        rows
    }

    /// How long the application's loop may wait before it calls
    /// [`process`](Supervisor::process): the master's
    /// [`Master::timeout`], or sooner, the supervisor's own next deadline
    /// (a start or a backoff, a roll's step, a heartbeat due); zero while
    /// events are pending.
    pub fn timeout(&self, master: &Master) -> Option<Duration> {
        if !self.rules.events.is_empty() {
            return Some(Duration::ZERO);
        }
        let own = self.rules.deadline().map(|d| d.saturating_duration_since(Instant::now()));
        match (master.timeout(), own) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// One non-blocking turn: [`Master::process`], then what is due of the
    /// supervisor's own. Call it after every wait of the application's loop.
    pub fn process(&mut self, master: &mut Master) -> io::Result<()> {
        master.process()?;
        self.fire(master);
        Ok(())
    }

    /// Waits up to `timeout` (never past either deadline) for the master,
    /// then does what is due: for a process whose loop is the supervisor's.
    pub fn poll(&mut self, master: &mut Master, timeout: Option<Duration>) -> io::Result<()> {
        let own = self.rules.deadline().map(|d| d.saturating_duration_since(Instant::now()));
        let timeout = match (timeout, own) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let timeout = if self.rules.events.is_empty() { timeout } else { Some(Duration::ZERO) };
        master.poll(timeout)?;
        self.fire(master);
        Ok(())
    }

    /// The next event: the supervisor's own (`CrashLoop`, `Unresponsive`,
    /// `RollComplete`, `RollFailed`), else the master's, which the
    /// supervisor takes in before handing it on. Every event of the master
    /// must come through here.
    pub fn next_event(&mut self, master: &mut Master) -> Option<Event> {
        if let Some(e) = self.rules.events.pop_front() {
            return Some(e);
        }
        let event = master.next_event()?;
        self.rules.observe(master, &event, Instant::now());
        Some(event)
    }

    fn fire(&mut self, master: &mut Master) {
        self.sync(master);
        self.rules.fire(master, Instant::now());
    }

    /// The heartbeat settings are the master's.
    fn sync(&mut self, master: &Master) {
        self.rules.heartbeat = master.settings().heartbeat;
    }
}

impl Pool for Master {
    fn fork(&mut self, env: &[(OsString, OsString)]) -> io::Result<WorkerId> {
        self.fork_with_env(env.iter().cloned())
    }

    fn disconnect(&mut self, id: WorkerId) -> io::Result<()> {
        Master::disconnect(self, id)
    }

    fn disconnect_all(&mut self) -> io::Result<()> {
        Master::disconnect_all(self)
    }

    fn is_shutting_down(&self) -> bool {
        Master::is_shutting_down(self)
    }

    fn kill(&mut self, id: WorkerId, signal: Signal) -> io::Result<()> {
        Master::kill(self, id, signal)
    }

    fn kill_all(&mut self) {
        Master::kill_all(self)
    }

    fn keep_sockets(&mut self, id: WorkerId, longest: Option<Duration>) {
        Master::keep_sockets(self, id, longest)
    }

    fn release_kept(&mut self) {
        Master::release_kept(self)
    }

    fn worker(&self, id: WorkerId) -> Option<WorkerInfo> {
        Master::worker(self, id)
    }

    fn live(&self) -> Vec<WorkerInfo> {
        self.workers().collect()
    }

    fn sockets(&self, id: WorkerId) -> Vec<SocketId> {
        self.sockets_of(id)
    }

    fn accepted(&self, id: WorkerId) -> u64 {
        self.accepted_connections(id)
    }

    fn rss(&self, id: WorkerId) -> Option<u64> {
        let pid = Master::worker(self, id)?.pid;
        crate::sys::procfs::usage(pid).map(|u| u.0)
    }
}
