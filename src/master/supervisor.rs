//! Opt-in supervision on top of the master's manual control: a target
//! number of workers, respawn with exponential backoff, crash-loop
//! protection, zero-downtime rolling restart, hung-worker detection by
//! heartbeat, scaling at run time, and per-worker status.
//!
//! Nothing here runs unless asked: [`Master::supervise`] turns the policy
//! on, [`Settings::heartbeat`](super::Settings::heartbeat) turns heartbeats
//! on. Without them the master is Node's: it manages no pool.
//!
//! The pool stays full. A worker is *ready* once it listened, sent a
//! heartbeat or called [`Worker::ready`](crate::Worker::ready) (or lived
//! past [`Policy::crash_window`]). A worker that was ready is always
//! replaced, after at most [`READY_BACKOFF_MAX`]; only workers that die
//! before they are ready, a broken deploy that respawning cannot fix, make
//! the master give up ([`Event::CrashLoop`]), as gunicorn's boot-error rule.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io;
use std::time::{Duration, Instant, SystemTime};

use crate::Signal;

use super::{Event, ExitStatus, Master, State, WorkerEntry};
use crate::WorkerId;

/// The signals [`Master::handle_signal`] gives a meaning to, plus `SIGUSR1`
/// (status, left to the application): block these with
/// [`Settings::signals`](super::Settings::signals).
pub const STANDARD_SIGNALS: [Signal; 7] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGQUIT,
    Signal::SIGHUP,
    Signal::SIGTTIN,
    Signal::SIGTTOU,
    Signal::SIGUSR1,
];

/// A worker that died sooner than this after it became ready died as soon
/// as it served (a request that kills it, say): if its seat's workers keep
/// doing that, their replacements are slowed down (see
/// [`Policy::backoff_initial`]). One that served longer is replaced at once.
pub const QUICK_DEATH: Duration = Duration::from_millis(100);

/// The most a worker that was ready waits for its replacement, whatever
/// [`Policy::backoff_max`] says: the pool must stay full.
pub const READY_BACKOFF_MAX: Duration = Duration::from_millis(500);

/// How [`Master::supervise`] keeps the pool.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Target number of workers (default: one per CPU).
    pub workers: usize,
    /// Replace a worker that exits without having been asked to, or that
    /// leaves of its own accord (default: true).
    pub respawn: bool,
    /// The first delay before a replacement, doubled for each further death
    /// in a row in the same seat (default: 100 ms):
    /// - a worker that died before it was ready (it never listened, sent a
    ///   heartbeat or called [`Worker::ready`](crate::Worker::ready)) is
    ///   replaced after that delay, capped at `backoff_max`;
    /// - a worker that was ready is replaced at once, unless it died within
    ///   [`QUICK_DEATH`] (100 ms) of becoming ready: then after that delay,
    ///   doubled for each such death in a row and capped at
    ///   [`READY_BACKOFF_MAX`] (500 ms). This only spares the CPU when
    ///   workers keep dying as soon as they serve; the pool stays full.
    pub backoff_initial: Duration,
    /// The cap on the delay for workers that died before they were ready
    /// (default: 10 s).
    pub backoff_max: Duration,
    /// A worker that dies sooner than this after it started died early
    /// (default: 5 s). A worker that lived this long counts as ready even if
    /// it never said so.
    pub crash_window: Duration,
    /// After this many workers in a row in one seat died before they were
    /// ready, respawning stops and [`Event::CrashLoop`] is queued (default:
    /// 5). A worker that was ready never counts.
    pub crash_limit: u32,
    /// How long a new worker may take to be ready to replace an old one
    /// during a rolling restart before the roll is abandoned (default:
    /// 30 s).
    pub start_timeout: Duration,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
            respawn: true,
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(10),
            crash_window: Duration::from_secs(5),
            crash_limit: 5,
            start_timeout: Duration::from_secs(30),
        }
    }
}

/// Hung-worker detection.
#[derive(Debug, Clone, Copy)]
pub struct Heartbeat {
    /// How often a worker's runtime sends a heartbeat (default: 1 s).
    pub interval: Duration,
    /// Silence after which the worker is killed (default: 10 s). Time the
    /// master itself was stopped does not count.
    pub timeout: Duration,
    /// Send `SIGABRT` first (for a core dump), then `SIGKILL` a second later
    /// (default: false: `SIGKILL` at once).
    pub abort_first: bool,
}

impl Default for Heartbeat {
    fn default() -> Heartbeat {
        Heartbeat {
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(10),
            abort_first: false,
        }
    }
}

impl Heartbeat {
    pub(super) fn check_every(&self) -> Duration {
        (self.timeout / 4).max(Duration::from_millis(10))
    }
}

/// One row of [`Master::status`].
#[derive(Debug, Clone)]
pub struct WorkerStatus {
    /// Worker id.
    pub id: WorkerId,
    /// Process id.
    pub pid: u32,
    /// Lifecycle state.
    pub state: State,
    /// When it was forked.
    pub started_at: SystemTime,
    /// How long ago it was forked.
    pub uptime: Duration,
    /// How many workers its supervisor seat had before it.
    pub restarts: u32,
    /// How long ago its last heartbeat came (`None`: none yet, or off).
    pub last_heartbeat: Option<Duration>,
    /// Resident memory, from `/proc/PID/status`.
    pub rss_bytes: Option<u64>,
    /// User plus system CPU time, from `/proc/PID/stat`.
    pub cpu_time: Option<Duration>,
}

/// What supervision remembers of one worker.
#[derive(Debug, Default)]
pub(super) struct Life {
    /// The environment it was forked with (beyond `Settings::env`): a
    /// worker that replaces it gets the same.
    pub(super) env: Vec<(OsString, OsString)>,
    /// It listened at least once.
    pub(super) listened: bool,
    /// It called `Worker::ready`.
    pub(super) acked: bool,
    /// When it first listened, sent a heartbeat or called `Worker::ready`.
    pub(super) ready_at: Option<Instant>,
}

impl Life {
    pub(super) fn new(env: Vec<(OsString, OsString)>) -> Life {
        Life { env, ..Life::default() }
    }

    /// It listened, sent a heartbeat or called `Worker::ready`.
    pub(super) fn mark_ready(&mut self) {
        self.ready_at.get_or_insert_with(Instant::now);
    }
}

#[derive(Debug, Default)]
struct Seat {
    worker: Option<WorkerId>,
    restarts: u32,
    /// Workers in a row that died before they were ready.
    crashes: u32,
    /// Ready workers in a row that died within [`QUICK_DEATH`] of being
    /// ready.
    quick_deaths: u32,
    start_at: Option<Instant>,
    /// The environment every worker of this seat is forked with.
    env: Vec<(OsString, OsString)>,
    /// Sockets of its last worker that the seat keeps open (pinned in the
    /// registry), with their queued connections, for its next worker...
    held: Vec<u32>,
    /// ... until then at the latest.
    held_until: Option<Instant>,
}

/// Pins in the registry every socket `worker` holds, for its `seat`, for
/// at most `longest`.
fn hold(
    sockets: &mut super::registry::SocketRegistry,
    seat: &mut Seat,
    worker: WorkerId,
    longest: Duration,
) {
    for h in sockets.handles_of(worker) {
        if !seat.held.contains(&h) {
            sockets.pin(h);
            seat.held.push(h);
        }
    }
    if !seat.held.is_empty() {
        seat.held_until = Some(Instant::now() + longest);
    }
}

/// What to do when a seat's worker died.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// Start a new worker after this delay.
    Replace(Duration),
    /// Stop respawning: a crash loop.
    GiveUp,
}

impl Seat {
    /// The rule, without clocks: a worker of this seat died, having been
    /// ready for `served` (`None`: it never was).
    fn death(&mut self, p: &Policy, served: Option<Duration>) -> Verdict {
        match served {
            // It was ready: always replaced, at once unless it died as soon
            // as it served.
            Some(served) => {
                self.crashes = 0;
                self.quick_deaths = if served >= QUICK_DEATH { 0 } else { self.quick_deaths + 1 };
                let cap = p.backoff_max.min(READY_BACKOFF_MAX);
                Verdict::Replace(backoff(p.backoff_initial, self.quick_deaths, cap))
            }
            None => {
                self.crashes += 1;
                if self.crashes >= p.crash_limit {
                    return Verdict::GiveUp;
                }
                Verdict::Replace(backoff(p.backoff_initial, self.crashes, p.backoff_max))
            }
        }
    }
}

/// `initial`, doubled for each death after the first, capped at `max`.
fn backoff(initial: Duration, deaths: u32, max: Duration) -> Duration {
    match deaths {
        0 => Duration::ZERO,
        n => initial.saturating_mul(1u32 << (n - 1).min(16)).min(max),
    }
}

pub(super) struct Supervisor {
    policy: Policy,
    seats: Vec<Seat>,
    stopped: bool,
}

impl Supervisor {
    pub(super) fn restarts(&self, seat: usize) -> u32 {
        self.seats.get(seat).map_or(0, |s| s.restarts)
    }
}

pub(super) struct Roll {
    pending: VecDeque<WorkerId>,
    step: Option<Step>,
}

struct Step {
    old: WorkerId,
    new: WorkerId,
    seat: Option<usize>,
    /// The old worker's shared sockets: the new one must hold them all.
    handles: Vec<u32>,
    /// The old worker called `Worker::ready`: the new one must too.
    acked: bool,
    /// The old worker listened (maybe on sockets of its own, which the
    /// master does not hold): the new one must too.
    listened: bool,
    deadline: Instant,
}

fn not_supervised() -> io::Error {
    io::Error::new(io::ErrorKind::Unsupported, "the master is not supervising (call supervise)")
}

impl Master {
    /// Turns supervision on: forks workers up to `policy.workers` and from
    /// now on keeps that many, replacing those that die.
    pub fn supervise(&mut self, policy: Policy) -> io::Result<()> {
        let n = policy.workers;
        self.supervisor = Some(Supervisor { policy, seats: Vec::new(), stopped: false });
        self.set_target(n)
    }

    /// The target number of workers, when supervising.
    pub fn target(&self) -> Option<usize> {
        self.supervisor.as_ref().map(|s| s.seats.len())
    }

    /// Changes the target number of workers: new seats are filled at once,
    /// workers in removed seats are disconnected gracefully.
    pub fn set_target(&mut self, n: usize) -> io::Result<()> {
        let sv = self.supervisor.as_mut().ok_or_else(not_supervised)?;
        let now = Instant::now();
        while sv.seats.len() < n {
            sv.seats.push(Seat { start_at: Some(now), ..Seat::default() });
        }
        let mut leaving = Vec::new();
        while sv.seats.len() > n {
            let Some(seat) = sv.seats.pop() else { break };
            for h in seat.held {
                self.sockets.unpin(h);
            }
            if let Some(id) = seat.worker {
                leaving.push(id);
            }
        }
        log::info!("target: {n} workers");
        for id in leaving {
            if let Some(&slot) = self.ids.get(&id) {
                self.workers[slot].seat = None;
            }
            self.disconnect(id)?;
        }
        self.fire_supervisor(now);
        Ok(())
    }

    /// Replaces every live worker, one at a time, without refusing a
    /// connection: a new worker is forked and listening on every server the
    /// old one had before the old one is disconnected. A new worker that
    /// does not come up stops the roll ([`Event::RollFailed`]) and leaves
    /// the old workers serving; [`Event::RollComplete`] ends a good one.
    pub fn rolling_restart(&mut self) -> io::Result<()> {
        if self.roll.is_some() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "a rolling restart is in progress",
            ));
        }
        let mut pending: Vec<WorkerId> = self
            .workers
            .iter()
            .filter(|(_, w)| !w.info.exited_after_disconnect && w.channel.is_some())
            .map(|(_, w)| w.info.id)
            .collect();
        pending.sort_unstable();
        log::info!("rolling restart of {} workers", pending.len());
        self.roll = Some(Roll { pending: pending.into(), step: None });
        self.roll_next();
        Ok(())
    }

    /// Graceful shutdown: stops respawning and rolling, disconnects every
    /// worker (each is killed if it outlives
    /// [`Settings::disconnect_timeout`](super::Settings::disconnect_timeout));
    /// [`Event::AllDisconnected`] follows.
    pub fn shutdown(&mut self) -> io::Result<()> {
        if let Some(sv) = self.supervisor.as_mut() {
            sv.stopped = true;
            for seat in &mut sv.seats {
                seat.start_at = None;
            }
        }
        self.release_held(None);
        self.roll = None;
        self.disconnect_all()
    }

    /// True between [`Master::shutdown`] (or `disconnect_all`) and
    /// [`Event::AllDisconnected`].
    pub fn is_shutting_down(&self) -> bool {
        self.disconnecting_all
    }

    /// The conventional meaning of a signal to a master, as gunicorn and
    /// unicorn give it: `SIGINT`/`SIGTERM` graceful shutdown (a second one:
    /// kill at once), `SIGQUIT` kill at once, `SIGHUP` rolling restart,
    /// `SIGTTIN`/`SIGTTOU` one worker more/less. Returns false for a signal
    /// it gives no meaning to (such as `SIGUSR1`).
    pub fn handle_signal(&mut self, sig: Signal) -> io::Result<bool> {
        match sig {
            Signal::SIGINT | Signal::SIGTERM if self.disconnecting_all => {
                log::warn!("{sig} during shutdown: killing every worker now");
                self.kill_all();
            }
            Signal::SIGINT | Signal::SIGTERM => {
                log::info!("{sig}: graceful shutdown");
                self.shutdown()?;
            }
            Signal::SIGQUIT => {
                log::warn!("{sig}: killing every worker now");
                self.shutdown()?;
                self.kill_all();
            }
            Signal::SIGHUP => match self.rolling_restart() {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => log::warn!("{sig}: {e}"),
                Err(e) => return Err(e),
            },
            Signal::SIGTTIN => {
                let n = self.target().ok_or_else(not_supervised)?;
                self.set_target(n + 1)?;
            }
            Signal::SIGTTOU => {
                let n = self.target().ok_or_else(not_supervised)?;
                if n > 1 {
                    self.set_target(n - 1)?;
                }
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// `SIGKILL` to every worker; during a shutdown they count as forced.
    fn kill_all(&mut self) {
        for (_, w) in self.workers.iter_mut() {
            if w.info.state != State::Dead && w.signal(Signal::SIGKILL).is_ok() {
                w.forced = true;
            }
            w.kill_at = None;
        }
    }

    /// Every live worker's id, pid, state, start time, restart count, last
    /// heartbeat, RSS and CPU time, by id.
    pub fn status(&self) -> Vec<WorkerStatus> {
        let now = Instant::now();
        let mut rows: Vec<WorkerStatus> = self
            .workers
            .iter()
            .map(|(_, w)| {
                let usage = crate::sys::procfs::usage(w.info.pid);
                WorkerStatus {
                    id: w.info.id,
                    pid: w.info.pid,
                    state: w.info.state,
                    started_at: w.started_at,
                    uptime: now.duration_since(w.started),
                    restarts: w.restarts,
                    last_heartbeat: w.last_heartbeat.map(|t| now.duration_since(t)),
                    rss_bytes: usage.map(|u| u.0),
                    cpu_time: usage.map(|u| u.1),
                }
            })
            .collect();
        rows.sort_by_key(|r| r.id);
        rows
    }

    /// A worker was reaped: keep the roll and the seats right.
    pub(super) fn on_exit(&mut self, w: &WorkerEntry, status: ExitStatus) {
        let id = w.info.id;
        let mut replaced_by_roll = false;
        if let Some(roll) = self.roll.as_mut() {
            roll.pending.retain(|p| *p != id);
            if let Some(step) = &roll.step {
                if step.new == id {
                    self.fail_roll(format!("exited ({status}) before it was ready"));
                } else if step.old == id {
                    replaced_by_roll = true;
                }
            }
        }
        let Some(seat_ix) = w.seat else { return };
        let disconnecting = self.disconnecting_all;
        let Some(sv) = self.supervisor.as_mut() else { return };
        let Some(seat) = sv.seats.get_mut(seat_ix) else { return };
        if seat.worker != Some(id) {
            return;
        }
        seat.worker = None;
        if disconnecting || sv.stopped || !sv.policy.respawn || replaced_by_roll {
            return;
        }
        let p = &sv.policy;
        let now = Instant::now();
        // A worker that said nothing but lived past the crash window counts
        // as ready, and as having served.
        let served = match w.life.ready_at {
            Some(t) => Some(now.saturating_duration_since(t)),
            None if now.saturating_duration_since(w.started) >= p.crash_window => Some(QUICK_DEATH),
            None => None,
        };
        let delay = if w.info.exited_after_disconnect {
            // It left (its seat is normally given up as it leaves).
            Duration::ZERO
        } else {
            match seat.death(p, served) {
                Verdict::Replace(delay) if served.is_some() => {
                    log::warn!("worker {id} died ({status}); replacing it in {delay:?}");
                    delay
                }
                Verdict::Replace(delay) => {
                    log::warn!(
                        "worker {id} died ({status}) before it was ready ({} in a row); \
                         replacing it in {delay:?}",
                        seat.crashes
                    );
                    delay
                }
                Verdict::GiveUp => {
                    sv.stopped = true;
                    let crashes = seat.crashes;
                    log::error!(
                        "worker {id} died ({status}) before it was ready, the {crashes} in a \
                         row; no more respawns"
                    );
                    self.release_held(None);
                    self.queue.push_back(Event::CrashLoop { id, crashes, status });
                    return;
                }
            }
        };
        seat.restarts += 1;
        seat.start_at = Some(now + delay);
    }

    /// Under supervision, a worker the application forks takes a new seat,
    /// which keeps `env` for the workers that fill it later.
    pub(super) fn fork_seated(&mut self, env: Vec<(OsString, OsString)>) -> io::Result<WorkerId> {
        let sv = self.supervisor.as_mut().ok_or_else(not_supervised)?;
        let ix = sv.seats.len();
        sv.seats.push(Seat { env: env.clone(), ..Seat::default() });
        let res = self.spawn(env, Some(ix));
        if let Some(sv) = self.supervisor.as_mut() {
            match &res {
                Ok(id) => sv.seats[ix].worker = Some(*id),
                // No trace: the target is what it was.
                Err(_) => drop(sv.seats.pop()),
            }
            log::info!("target: {} workers", sv.seats.len());
        }
        res
    }

    /// Worker `slot` leaves of its own accord, or the application asked it
    /// to: it gives up its seat now, and a replacement starts at once, so
    /// the pool keeps its capacity while it finishes its connections. Not
    /// during a shutdown, nor for a worker a roll or a smaller target is
    /// removing (those have no seat any more).
    pub(super) fn leave_seat(&mut self, slot: usize) {
        let Some((id, ix)) = self.hold_keys(slot) else { return };
        self.workers[slot].seat = None;
        let Some(seat) = self.supervisor.as_mut().map(|sv| &mut sv.seats[ix]) else { return };
        seat.worker = None;
        let rolling = self.roll.as_ref().and_then(|r| r.step.as_ref()).map(|s| (s.old, s.seat));
        if rolling == Some((id, Some(ix))) {
            // The roll's new worker is about to take this seat.
            log::info!("worker {id} leaves; the rolling restart replaces it");
            return;
        }
        log::info!("worker {id} leaves; starting a worker in its place");
        seat.restarts += 1;
        seat.start_at = Some(Instant::now());
    }

    /// A worker said it leaves of its own accord (`Worker::disconnect`):
    /// as if the master had asked, it must exit within the disconnect
    /// timeout, and its seat is filled again.
    pub(super) fn on_leaving(&mut self, slot: usize) {
        self.leave_seat(slot);
        let deadline = Instant::now() + self.settings.disconnect_timeout;
        let w = &mut self.workers[slot];
        w.info.exited_after_disconnect = true;
        if w.info.state != State::Dead {
            w.kill_at.get_or_insert(deadline);
        }
        let id = w.info.id;
        self.sockets.remove_worker(id);
    }

    /// A seated worker is about to leave every socket (its channel closed:
    /// it died, or is about to be killed) and its seat is to be filled
    /// again: the seat keeps its sockets open for the next worker, so a
    /// pool of one refuses nothing while it is replaced.
    /// Returns the worker's id and seat when the seat is to be filled again
    /// (none during a shutdown, a crash loop, or without respawning).
    pub(super) fn hold_keys(&mut self, slot: usize) -> Option<(WorkerId, usize)> {
        let w = &self.workers[slot];
        let (id, Some(ix)) = (w.info.id, w.seat) else { return None };
        if self.disconnecting_all {
            return None;
        }
        let sv = self.supervisor.as_mut().filter(|sv| !sv.stopped && sv.policy.respawn)?;
        let longest = sv.policy.backoff_max + sv.policy.start_timeout;
        let seat = sv.seats.get_mut(ix).filter(|s| s.worker == Some(id))?;
        hold(&mut self.sockets, seat, id, longest);
        Some((id, ix))
    }

    /// A worker listened: if it fills a seat, the sockets the seat kept for
    /// it that it now holds are its own; then the roll may go on.
    pub(super) fn on_listening(&mut self, slot: usize) {
        let w = &mut self.workers[slot];
        w.life.listened = true;
        w.life.mark_ready();
        if let Some(ix) = w.seat {
            self.release_held(Some(ix));
        }
        self.roll_progress();
    }

    /// Gives back the sockets seat `ix` keeps that its worker now holds
    /// (all of them past their time); `None`: every seat's, all of them.
    fn release_held(&mut self, ix: Option<usize>) {
        let Some(sv) = self.supervisor.as_mut() else { return };
        let now = Instant::now();
        for (i, seat) in sv.seats.iter_mut().enumerate() {
            if ix.is_some_and(|ix| ix != i) || seat.held.is_empty() {
                continue;
            }
            let all = ix.is_none() || seat.held_until.is_some_and(|t| t <= now);
            let worker = seat.worker;
            let sockets = &mut self.sockets;
            seat.held.retain(|h| {
                let done = all || worker.is_some_and(|w| sockets.holds(w, *h));
                if done {
                    sockets.unpin(*h);
                }
                !done
            });
            if seat.held.is_empty() {
                seat.held_until = None;
            }
        }
    }

    /// A worker called `Worker::ready`.
    pub(super) fn on_ready(&mut self, slot: usize) {
        let life = &mut self.workers[slot].life;
        life.acked = true;
        life.mark_ready();
        self.roll_progress();
    }

    pub(super) fn supervisor_deadline(&self) -> Option<Instant> {
        let step = self.roll.as_ref().and_then(|r| r.step.as_ref()).map(|s| s.deadline);
        if self.disconnecting_all {
            return step;
        }
        let starts = self.supervisor.as_ref().filter(|sv| !sv.stopped).and_then(|sv| {
            let starts = sv.seats.iter().filter(|s| s.worker.is_none()).filter_map(|s| s.start_at);
            starts.chain(sv.seats.iter().filter_map(|s| s.held_until)).min()
        });
        step.into_iter().chain(starts).min()
    }

    pub(super) fn fire_supervisor(&mut self, now: Instant) {
        if let Some(step) = self.roll.as_ref().and_then(|r| r.step.as_ref()) {
            if step.deadline <= now {
                let new = step.new;
                let _ = self.kill(new, Signal::SIGKILL);
                self.fail_roll("was not ready in time".to_string());
            }
        }
        if self.disconnecting_all {
            return;
        }
        let overdue = self
            .supervisor
            .as_ref()
            .is_some_and(|sv| sv.seats.iter().any(|s| s.held_until.is_some_and(|t| t <= now)));
        if overdue {
            for ix in 0..self.supervisor.as_ref().map_or(0, |sv| sv.seats.len()) {
                self.release_held(Some(ix));
            }
        }
        let due: Vec<usize> = match self.supervisor.as_ref() {
            Some(sv) if !sv.stopped => sv
                .seats
                .iter()
                .enumerate()
                .filter(|(_, s)| s.worker.is_none() && s.start_at.is_some_and(|t| t <= now))
                .map(|(i, _)| i)
                .collect(),
            _ => return,
        };
        for ix in due {
            let env = self.supervisor.as_ref().map(|sv| sv.seats[ix].env.clone());
            let res = self.spawn(env.unwrap_or_default(), Some(ix));
            let Some(sv) = self.supervisor.as_mut() else { return };
            let seat = &mut sv.seats[ix];
            match res {
                Ok(id) => {
                    seat.worker = Some(id);
                    seat.start_at = None;
                }
                Err(e) => {
                    log::error!(
                        "cannot start a worker: {e}; retrying in {:?}",
                        sv.policy.backoff_max
                    );
                    seat.start_at = Some(now + sv.policy.backoff_max);
                }
            }
        }
    }

    /// Starts the next step of the roll, or ends it.
    fn roll_next(&mut self) {
        loop {
            let Some(roll) = self.roll.as_mut() else { return };
            let Some(old) = roll.pending.pop_front() else {
                self.roll = None;
                log::info!("rolling restart complete");
                self.queue.push_back(Event::RollComplete);
                return;
            };
            let Some(&slot) = self.ids.get(&old) else { continue };
            let w = &self.workers[slot];
            if w.info.exited_after_disconnect || w.channel.is_none() {
                continue;
            }
            let seat = w.seat;
            let (acked, listened, env) = (w.life.acked, w.life.listened, w.life.env.clone());
            let handles = self.sockets.handles_of(old);
            let deadline = Instant::now()
                + self
                    .supervisor
                    .as_ref()
                    .map_or(Duration::from_secs(30), |s| s.policy.start_timeout);
            match self.spawn(env, None) {
                Ok(new) => {
                    log::info!("rolling restart: worker {new} is to replace worker {old}");
                    if let Some(roll) = self.roll.as_mut() {
                        roll.step =
                            Some(Step { old, new, seat, handles, acked, listened, deadline });
                    }
                }
                Err(e) => self.fail_roll(format!("cannot start a new worker: {e}")),
            }
            return;
        }
    }

    /// A worker came online, listened or said it is ready: if it is the
    /// roll's new worker and now does everything the old one did, the old
    /// one leaves.
    pub(super) fn roll_progress(&mut self) {
        let Some(step) = self.roll.as_ref().and_then(|r| r.step.as_ref()) else { return };
        let Some(&slot) = self.ids.get(&step.new) else { return };
        let new = &self.workers[slot];
        // Ready: alive and staying; holding every shared socket the old one
        // held; listening if the old one listened (servers a worker binds
        // alone, exclusive or adopted, are not the master's to count); and
        // having called `Worker::ready` if the old one had. A worker that
        // does none of these (messages only) only has to be online.
        let ready = matches!(new.info.state, State::Online | State::Listening)
            && !new.info.exited_after_disconnect
            && (!step.listened || new.life.listened)
            && (!step.acked || new.life.acked)
            && step.handles.iter().all(|h| self.sockets.holds(step.new, *h));
        if !ready {
            return;
        }
        let step = self.roll.as_mut().and_then(|r| r.step.take()).expect("checked above");
        let seat_exists = match (step.seat, self.supervisor.as_ref()) {
            (Some(ix), Some(sv)) => ix < sv.seats.len(),
            (None, _) => true,
            (Some(_), None) => false,
        };
        if !seat_exists {
            // The target shrank while this step ran: the old worker's seat is
            // gone, so the new one is not needed either.
            log::info!(
                "rolling restart: seat of worker {} removed; dropping worker {}",
                step.old,
                step.new
            );
            let _ = self.disconnect(step.new);
        } else {
            self.workers[slot].seat = step.seat;
            if let (Some(ix), Some(sv)) = (step.seat, self.supervisor.as_mut()) {
                let seat = &mut sv.seats[ix];
                seat.worker = Some(step.new);
                seat.start_at = None;
                seat.restarts += 1;
                self.workers[slot].restarts = seat.restarts;
            }
            if let Some(ix) = step.seat {
                self.release_held(Some(ix));
            }
        }
        if let Some(&old_slot) = self.ids.get(&step.old) {
            self.workers[old_slot].seat = None;
            log::info!(
                "rolling restart: worker {} is ready; disconnecting worker {}",
                step.new,
                step.old
            );
            if let Err(e) = self.disconnect(step.old) {
                log::error!("rolling restart: disconnecting worker {}: {e}", step.old);
            }
        }
        self.roll_next();
    }

    fn fail_roll(&mut self, reason: String) {
        let Some(roll) = self.roll.take() else { return };
        let Some(step) = roll.step else { return };
        log::error!("rolling restart stopped: new worker {}: {reason}", step.new);
        // If the worker it was to replace died meanwhile, its seat is empty.
        if let (Some(ix), Some(sv)) = (step.seat, self.supervisor.as_mut()) {
            if let Some(seat) = sv.seats.get_mut(ix) {
                if seat.worker.is_none()
                    || seat.worker == Some(step.old) && !self.ids.contains_key(&step.old)
                {
                    seat.worker = None;
                    seat.start_at.get_or_insert(Instant::now());
                }
            }
        }
        self.queue.push_back(Event::RollFailed { id: step.new, reason });
    }

    /// Kills workers silent for longer than the heartbeat timeout.
    pub(super) fn check_heartbeats(&mut self, now: Instant) {
        let Some(hb) = self.settings.heartbeat else {
            self.next_heartbeat_check = None;
            return;
        };
        self.next_heartbeat_check = Some(now + hb.check_every());
        let resumed_at = self.resumed_at;
        for (_, w) in self.workers.iter_mut() {
            if w.kill_at.is_some() || w.channel.is_none() || w.info.exited_after_disconnect {
                continue;
            }
            let since = w.last_heartbeat.unwrap_or(w.started).max(w.started).max(resumed_at);
            let silent_for = now.saturating_duration_since(since);
            if silent_for <= hb.timeout {
                continue;
            }
            let (id, pid) = (w.info.id, w.info.pid);
            log::error!("worker {id} (pid {pid}) sent no heartbeat for {silent_for:?}; killing it");
            self.queue.push_back(Event::Unresponsive { id, silent_for });
            let _ = w.signal(if hb.abort_first { Signal::SIGABRT } else { Signal::SIGKILL });
            w.forced = true;
            w.kill_at = Some(now + Duration::from_secs(1));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn policy() -> Policy {
        Policy { workers: 1, ..Policy::default() }
    }

    #[test]
    fn workers_that_never_became_ready_back_off_to_the_limit_then_give_up() {
        let (p, mut seat) = (policy(), Seat::default());
        let delays: Vec<Verdict> = (0..5).map(|_| seat.death(&p, None)).collect();
        let want = [100, 200, 400, 800].map(|ms| Verdict::Replace(ms * MS));
        assert_eq!(delays[..4], want);
        assert_eq!(delays[4], Verdict::GiveUp);
    }

    #[test]
    fn a_worker_that_was_ready_is_always_replaced_within_half_a_second() {
        let (p, mut seat) = (policy(), Seat::default());
        // Killed as soon as ready, a hundred times: capped, never given up.
        let delays: Vec<Verdict> = (0..100).map(|_| seat.death(&p, Some(MS))).collect();
        assert_eq!(delays[..5], [100, 200, 400, 500, 500].map(|ms| Verdict::Replace(ms * MS)));
        assert!(delays.iter().all(|d| *d != Verdict::GiveUp));
        // One that served a while is replaced at once, and resets the count.
        assert_eq!(seat.death(&p, Some(QUICK_DEATH)), Verdict::Replace(Duration::ZERO));
        assert_eq!(seat.death(&p, Some(MS)), Verdict::Replace(100 * MS));
    }

    #[test]
    fn a_ready_worker_between_bad_starts_resets_the_crash_count() {
        let (p, mut seat) = (policy(), Seat::default());
        for _ in 0..10 {
            for _ in 0..p.crash_limit - 1 {
                assert_ne!(seat.death(&p, None), Verdict::GiveUp);
            }
            assert_eq!(
                seat.death(&p, Some(Duration::from_secs(1))),
                Verdict::Replace(Duration::ZERO)
            );
        }
        // A low backoff_max caps both.
        let p = Policy { backoff_max: 50 * MS, ..policy() };
        let mut seat = Seat::default();
        assert_eq!(seat.death(&p, None), Verdict::Replace(50 * MS));
        assert_eq!(seat.death(&p, Some(MS)), Verdict::Replace(50 * MS));
    }
}
