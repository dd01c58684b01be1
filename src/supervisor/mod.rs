//! Supervision as a layer over the master, as PM2 sits on Node's cluster:
//! a target number of workers, respawn with exponential backoff, crash-loop
//! protection, zero-downtime rolling restart, hung-worker detection by
//! heartbeat, scaling at run time, graceful shutdown, and per-worker status.
//!
//! A [`Master`] alone is Node's: it starts the workers it is asked to and
//! manages no pool. A [`Supervisor`] drives one through its public API only.
//! It sees every event the master reports (take them through
//! [`Supervisor::next_event`]), reports its own next deadline
//! ([`Supervisor::timeout`]), and acts when one is due
//! ([`Supervisor::process`]). Its rules (`rules.rs`) read no clock and make
//! no system call: the unit tests drive them with a fake clock.
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
//! In the application's own loop, wait at most [`Supervisor::timeout`] and
//! call [`Supervisor::process`] after every wait, in place of the master's
//! (see the [master's docs](crate::master)).

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
