//! The supervisor's rules, apart from any clock or process: every input
//! comes with the time it happened (`now`), and every action goes through a
//! [`Pool`], the master's public API in production and a model of it in the
//! unit tests (`tests.rs`), which drive a fake clock.

use std::collections::{BTreeMap, VecDeque};
use std::ffi::OsString;
use std::io;
use std::time::{Duration, Instant};

use super::policy::{Policy, QUICK_DEATH, READY_BACKOFF_MAX, STALL};
use crate::master::{Event, ExitStatus, Heartbeat, SocketId, WorkerInfo};
use crate::{Signal, WorkerId};
use heartbeat::heard_of;
use roll::Roll;

mod heartbeat;
pub(crate) mod recycle;
mod roll;

/// What the rules need of a master: its public API, nothing more.
pub(crate) trait Pool {
    /// Starts a worker with `env` on top of the settings'.
    fn fork(&mut self, env: &[(OsString, OsString)]) -> io::Result<WorkerId>;
    /// Asks a worker to leave gracefully.
    fn disconnect(&mut self, id: WorkerId) -> io::Result<()>;
    /// Asks every worker to leave; the pool is shutting down from now on.
    fn disconnect_all(&mut self) -> io::Result<()>;
    /// True from `disconnect_all` until every worker has exited.
    fn is_shutting_down(&self) -> bool;
    /// Sends a signal to a worker.
    fn kill(&mut self, id: WorkerId, signal: Signal) -> io::Result<()>;
    /// `SIGKILL` to every worker.
    fn kill_all(&mut self);
    /// Keep the sockets of worker `id` open for up to `longest` when it
    /// leaves them (`None`: close them as usual).
    fn keep_sockets(&mut self, id: WorkerId, longest: Option<Duration>);
    /// Close every socket kept for a worker to come.
    fn release_kept(&mut self);
    /// How many connections a worker accepted (its accept boards' count).
    fn accepted(&self, id: WorkerId) -> u64;
    /// A worker's resident memory in bytes, if it can be read.
    fn rss(&self, id: WorkerId) -> Option<u64>;
    /// A live worker.
    fn worker(&self, id: WorkerId) -> Option<WorkerInfo>;
    /// Every live worker.
    fn live(&self) -> Vec<WorkerInfo>;
    /// The shared sockets a worker holds.
    fn sockets(&self, id: WorkerId) -> Vec<SocketId>;
}

/// One place in the pool: the worker that fills it, and its history.
#[derive(Debug, Default)]
pub(crate) struct Seat {
    pub(crate) worker: Option<WorkerId>,
    pub(crate) restarts: u32,
    /// Workers in a row that died before they were ready.
    pub(crate) crashes: u32,
    /// Ready workers in a row that died within [`QUICK_DEATH`] of being
    /// ready.
    quick_deaths: u32,
    /// When its next worker is to start (if it has none).
    pub(crate) start_at: Option<Instant>,
    /// The environment every worker of this seat is forked with.
    env: Vec<(OsString, OsString)>,
    /// What the seat's workers that exited accepted, and their CPU time:
    /// its counters go on across its workers.
    pub(crate) accepted_before: u64,
    pub(crate) cpu_before: Duration,
}

/// What to do when a seat's worker died.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Start a new worker after this delay.
    Replace(Duration),
    /// Stop respawning: a crash loop.
    GiveUp,
}

impl Seat {
    /// The respawn rule: a worker of this seat died, having been ready for
    /// `served` (`None`: it never was).
    pub(crate) fn death(&mut self, p: &Policy, served: Option<Duration>) -> Verdict {
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

/// What the rules remember of one live worker.
#[derive(Debug)]
pub(crate) struct Life {
    seat: Option<usize>,
    /// The seat it counts for in the metrics: the one it filled last (kept
    /// while it leaves, so the seat's counters never go back).
    pub(crate) slot: Option<usize>,
    /// It is recycled once it accepted this many connections.
    conn_limit: Option<u64>,
    /// Memory checks in a row it was over the limit, and checks in all.
    rss_over: u32,
    rss_checks: u32,
    /// It was replaced by recycling.
    recycled: bool,
    /// It replaces a worker recycled on memory.
    memory_successor: bool,
    /// The environment it was forked with (beyond the settings'): a worker
    /// that replaces it gets the same.
    env: Vec<(OsString, OsString)>,
    started: Instant,
    /// When it first listened, sent a heartbeat or called `Worker::ready`.
    ready_at: Option<Instant>,
    /// It called `Worker::ready`.
    acked: bool,
    last_heartbeat: Option<Instant>,
    /// It leaves (asked to, of its own accord, or its channel closed): no
    /// heartbeat is expected of it any more.
    leaving: bool,
    /// It was killed for its silence...
    unresponsive: bool,
    /// ... with `SIGABRT`: `SIGKILL` then, if it still lives.
    kill_at: Option<Instant>,
}

impl Life {
    fn new(seat: Option<usize>, env: Vec<(OsString, OsString)>, now: Instant) -> Life {
        Life {
            seat,
            slot: seat,
            conn_limit: None,
            rss_over: 0,
            rss_checks: 0,
            recycled: false,
            memory_successor: false,
            env,
            started: now,
            ready_at: None,
            acked: false,
            last_heartbeat: None,
            leaving: false,
            unresponsive: false,
            kill_at: None,
        }
    }

    fn mark_ready(&mut self, now: Instant) {
        self.ready_at.get_or_insert(now);
    }
}

/// The supervisor's state: seats, the roll, what it knows of each worker.
pub(crate) struct Rules {
    pub(crate) policy: Policy,
    /// Hung-worker detection, as the master's settings say.
    pub(crate) heartbeat: Option<Heartbeat>,
    pub(crate) seats: Vec<Seat>,
    lives: BTreeMap<WorkerId, Life>,
    roll: Option<Roll>,
    /// No more starts: a shutdown, or a crash loop.
    stopped: bool,
    /// When the process last resumed from a stall.
    resumed_at: Instant,
    /// The deadline as of the last [`fire`](Rules::fire).
    due: Option<Instant>,
    /// What the rules report: `CrashLoop`, `Unresponsive`, `RollComplete`,
    /// `RollFailed`, `Recycled`.
    pub(crate) events: VecDeque<Event>,
    /// What the rules counted, for the metrics.
    pub(crate) tally: Tally,
    /// Recycling: when to check next, and what holds it back.
    pub(crate) recycling: recycle::Recycling,
}

/// Counts the supervisor keeps for [`Metrics`](super::Metrics).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Tally {
    pub(crate) exits: super::metrics::ExitCounts,
    pub(crate) rolls: super::metrics::Outcomes,
    pub(crate) crash_loops: u64,
    pub(crate) recycled: super::metrics::RecycleCounts,
}

impl Rules {
    pub(crate) fn new(policy: Policy, now: Instant) -> Rules {
        Rules {
            policy,
            heartbeat: None,
            seats: Vec::new(),
            lives: BTreeMap::new(),
            roll: None,
            stopped: false,
            resumed_at: now,
            due: None,
            events: VecDeque::new(),
            tally: Tally::default(),
            recycling: recycle::Recycling::new(now),
        }
    }

    /// How many workers that fill seats it had before, for worker `id`.
    pub(crate) fn restarts(&self, id: WorkerId) -> Option<u32> {
        let ix = self.lives.get(&id)?.seat?;
        self.seats.get(ix).map(|s| s.restarts)
    }

    /// The seat worker `id` counts for in the metrics.
    pub(crate) fn slot_of(&self, id: WorkerId) -> Option<usize> {
        self.lives.get(&id)?.slot
    }

    /// Starts a worker, in `seat` if any.
    fn start(
        &mut self,
        pool: &mut impl Pool,
        env: Vec<(OsString, OsString)>,
        seat: Option<usize>,
        now: Instant,
    ) -> io::Result<WorkerId> {
        let id = pool.fork(&env)?;
        if seat.is_some() && self.policy.respawn {
            pool.keep_sockets(id, Some(self.policy.keep_sockets_for()));
        }
        let mut life = Life::new(seat, env, now);
        life.conn_limit = self.connection_limit(id);
        self.lives.insert(id, life);
        Ok(id)
    }

    /// Asks `id` to leave for good: its seat, if any, is not filled again.
    fn retire(&mut self, pool: &mut impl Pool, id: WorkerId) -> io::Result<()> {
        if let Some(life) = self.lives.get_mut(&id) {
            life.seat = None;
            life.leaving = true;
        }
        pool.keep_sockets(id, None);
        if pool.worker(id).is_some() {
            pool.disconnect(id)?;
        }
        Ok(())
    }

    /// Changes the number of seats: new ones are filled at once, workers in
    /// removed ones leave gracefully.
    pub(crate) fn set_target(
        &mut self,
        pool: &mut impl Pool,
        n: usize,
        now: Instant,
    ) -> io::Result<()> {
        while self.seats.len() < n {
            self.seats.push(Seat { start_at: Some(now), ..Seat::default() });
        }
        let mut leaving = Vec::new();
        while self.seats.len() > n {
            let Some(seat) = self.seats.pop() else { break };
            leaving.extend(seat.worker);
        }
        log::info!("target: {n} workers");
        for id in leaving {
            self.retire(pool, id)?;
        }
        self.fire(pool, now);
        Ok(())
    }

    /// A worker the application forks through the supervisor takes a new
    /// seat, which keeps `env` for the workers that fill it later.
    pub(crate) fn fork(
        &mut self,
        pool: &mut impl Pool,
        env: Vec<(OsString, OsString)>,
        now: Instant,
    ) -> io::Result<WorkerId> {
        let ix = self.seats.len();
        self.seats.push(Seat { env: env.clone(), ..Seat::default() });
        match self.start(pool, env, Some(ix), now) {
            Ok(id) => {
                self.seats[ix].worker = Some(id);
                log::info!("target: {} workers", self.seats.len());
                Ok(id)
            }
            Err(e) => {
                // No trace: the target is what it was.
                self.seats.pop();
                Err(e)
            }
        }
    }

    /// Stops starting and rolling, and disconnects every worker.
    pub(crate) fn shutdown(&mut self, pool: &mut impl Pool) -> io::Result<()> {
        self.stopped = true;
        for seat in &mut self.seats {
            seat.start_at = None;
        }
        self.roll = None;
        pool.release_kept();
        pool.disconnect_all()
    }

    /// The conventional meaning of a signal to a master.
    pub(crate) fn handle_signal(
        &mut self,
        pool: &mut impl Pool,
        sig: Signal,
        now: Instant,
    ) -> io::Result<bool> {
        match sig {
            Signal::SIGINT | Signal::SIGTERM if pool.is_shutting_down() => {
                log::warn!("{sig} during shutdown: killing every worker now");
                pool.kill_all();
            }
            Signal::SIGINT | Signal::SIGTERM => {
                log::info!("{sig}: graceful shutdown");
                self.shutdown(pool)?;
            }
            Signal::SIGQUIT => {
                log::warn!("{sig}: killing every worker now");
                self.shutdown(pool)?;
                pool.kill_all();
            }
            Signal::SIGHUP => match self.rolling_restart(pool, now) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => log::warn!("{sig}: {e}"),
                Err(e) => return Err(e),
            },
            Signal::SIGTTIN => self.set_target(pool, self.seats.len() + 1, now)?,
            Signal::SIGTTOU if self.seats.len() > 1 => {
                self.set_target(pool, self.seats.len() - 1, now)?
            }
            Signal::SIGTTOU => {}
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Takes in one of the master's events.
    pub(crate) fn observe(&mut self, pool: &mut impl Pool, event: &Event, now: Instant) {
        match *event {
            Event::Fork { id, .. } => {
                self.lives.entry(id).or_insert_with(|| Life::new(None, Vec::new(), now));
            }
            Event::Online { .. } => self.roll_progress(pool, now),
            Event::Listening { id, .. } => {
                if let Some(life) = self.lives.get_mut(&id) {
                    life.mark_ready(now);
                }
                self.roll_progress(pool, now);
            }
            Event::Ready { id } => {
                if let Some(life) = self.lives.get_mut(&id) {
                    life.acked = true;
                    life.mark_ready(now);
                }
                self.roll_progress(pool, now);
            }
            Event::Heartbeat { id } => {
                if let Some(life) = self.lives.get_mut(&id) {
                    life.last_heartbeat = Some(now);
                    life.mark_ready(now);
                }
            }
            Event::Leaving { id } => self.leave_seat(pool, id, now),
            Event::Disconnect { id } => {
                if let Some(life) = self.lives.get_mut(&id) {
                    life.leaving = true;
                }
            }
            Event::Exit {
                id,
                status,
                exited_after_disconnect,
                accepted_connections,
                cpu_time,
                ..
            } => {
                let life = self.lives.get(&id).map(|l| (l.recycled, l.unresponsive, l.slot));
                if let Some((recycled, unresponsive, slot)) = life {
                    self.count_exit(recycled, unresponsive, status);
                    if let Some(seat) = slot.and_then(|s| self.seats.get_mut(s)) {
                        seat.accepted_before += accepted_connections;
                        seat.cpu_before += cpu_time.unwrap_or_default();
                    }
                }
                self.on_exit(pool, id, status, exited_after_disconnect, now)
            }
            _ => {}
        }
    }

    /// Worker `id` leaves of its own accord, or the application asked it
    /// to: it gives up its seat now, and a replacement starts at once, so
    /// the pool keeps its capacity while it finishes its connections. Not
    /// during a shutdown, nor for a worker a roll or a smaller target is
    /// removing (those have no seat any more).
    fn leave_seat(&mut self, pool: &impl Pool, id: WorkerId, now: Instant) {
        let Some(life) = self.lives.get_mut(&id) else { return };
        life.leaving = true;
        let Some(ix) = life.seat.take() else { return };
        let Some(seat) = self.seats.get_mut(ix).filter(|s| s.worker == Some(id)) else { return };
        seat.worker = None;
        let rolling = self.roll.as_ref().and_then(|r| r.step.as_ref()).map(|s| (s.old, s.seat));
        if rolling == Some((id, Some(ix))) {
            // The roll's new worker is about to take this seat.
            log::info!("worker {id} leaves; the rolling restart replaces it");
            return;
        }
        if self.stopped || !self.policy.respawn || pool.is_shutting_down() {
            return;
        }
        log::info!("worker {id} leaves; starting a worker in its place");
        seat.restarts += 1;
        seat.start_at = Some(now);
    }

    /// A worker exited: keep the roll and the seats right.
    fn on_exit(
        &mut self,
        pool: &mut impl Pool,
        id: WorkerId,
        status: ExitStatus,
        asked: bool,
        now: Instant,
    ) {
        let Some(life) = self.lives.remove(&id) else { return };
        let step = self.roll.as_mut().and_then(|roll| {
            roll.pending.retain(|p| *p != id);
            roll.step.as_ref().map(|s| (s.old, s.new))
        });
        if step.is_some_and(|(_, new)| new == id) {
            self.fail_roll(pool, format!("exited ({status}) before it was ready"), now);
        }
        let replaced_by_roll = step.is_some_and(|(old, _)| old == id);
        let Some(ix) = life.seat else { return };
        let Some(seat) = self.seats.get_mut(ix).filter(|s| s.worker == Some(id)) else { return };
        seat.worker = None;
        if pool.is_shutting_down() || self.stopped || !self.policy.respawn || replaced_by_roll {
            return;
        }
        let p = &self.policy;
        // A worker that said nothing but lived past the crash window counts
        // as ready, and as having served.
        let served = match life.ready_at {
            Some(t) => Some(now.saturating_duration_since(t)),
            None if now.saturating_duration_since(life.started) >= p.crash_window => {
                Some(QUICK_DEATH)
            }
            None => None,
        };
        let delay = if asked {
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
                    let crashes = seat.crashes;
                    log::error!(
                        "worker {id} died ({status}) before it was ready, the {crashes} in a \
                         row; no more respawns"
                    );
                    self.give_up(pool);
                    self.tally.crash_loops += 1;
                    self.events.push_back(Event::CrashLoop { id, crashes, status });
                    return;
                }
            }
        };
        seat.restarts += 1;
        seat.start_at = Some(crate::deadline::after(now, delay));
    }

    /// A crash loop: no more starts, and no socket kept for a worker that
    /// will not come.
    fn give_up(&mut self, pool: &mut impl Pool) {
        self.stopped = true;
        for seat in &mut self.seats {
            seat.start_at = None;
        }
        for id in self.lives.keys() {
            pool.keep_sockets(*id, None);
        }
        pool.release_kept();
    }

    /// When [`fire`](Rules::fire) has work next.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        let step = self.roll.as_ref().and_then(|r| r.step.as_ref()).map(|s| s.deadline);
        let starts = (!self.stopped)
            .then(|| self.seats.iter().filter(|s| s.worker.is_none()).filter_map(|s| s.start_at))
            .into_iter()
            .flatten();
        let kills = self.lives.values().filter_map(|l| l.kill_at);
        let silences = self.heartbeat.iter().flat_map(|hb| {
            self.lives.values().filter(|l| !l.leaving && !l.unresponsive).map(|l| {
                let heard = heard_of(l, self.resumed_at);
                crate::deadline::after(heard, hb.timeout.saturating_add(Duration::from_millis(1)))
            })
        });
        let recycle = self.recycle_deadline();
        step.into_iter().chain(starts).chain(kills).chain(silences).chain(recycle).min()
    }

    /// Does what is due at `now`: a roll's step out of time, workers silent
    /// too long, seats to fill.
    pub(crate) fn fire(&mut self, pool: &mut impl Pool, now: Instant) {
        if let Some(due) = self.due.filter(|&due| now > due + STALL) {
            log::warn!("the supervisor ran {:?} after its deadline", now - due);
            self.resumed_at = now;
        }
        if let Some(step) = self.roll.as_ref().and_then(|r| r.step.as_ref()) {
            if step.deadline <= now {
                let new = step.new;
                let _ = pool.kill(new, Signal::SIGKILL);
                self.fail_roll(pool, "was not ready in time".to_string(), now);
            }
        }
        self.check_heartbeats(pool, now);
        self.check_recycling(pool, now);
        if !(pool.is_shutting_down() || self.stopped) {
            let due: Vec<usize> = (0..self.seats.len())
                .filter(|&i| {
                    let s = &self.seats[i];
                    s.worker.is_none() && s.start_at.is_some_and(|t| t <= now)
                })
                .collect();
            for ix in due {
                let env = self.seats[ix].env.clone();
                match self.start(pool, env, Some(ix), now) {
                    Ok(id) => {
                        let seat = &mut self.seats[ix];
                        seat.worker = Some(id);
                        seat.start_at = None;
                    }
                    Err(e) => {
                        let retry = self.policy.backoff_max;
                        log::error!("cannot start a worker: {e}; retrying in {retry:?}");
                        self.seats[ix].start_at = Some(crate::deadline::after(now, retry));
                    }
                }
            }
        }
        // A deadline left in the past (its work could not be done) asks for
        // the next turn at once, not for a stall warning.
        self.due = self.deadline().map(|due| due.max(now));
    }
}
