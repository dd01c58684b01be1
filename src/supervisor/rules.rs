//! The supervisor's rules, apart from any clock or process: every input
//! comes with the time it happened (`now`), and every action goes through a
//! [`Pool`], the master's public API in production and a model of it in the
//! unit tests (`tests.rs`), which drive a fake clock.

use std::collections::{BTreeMap, VecDeque};
use std::ffi::OsString;
use std::io;
use std::time::{Duration, Instant};

use super::policy::{Policy, ABORT_GRACE, QUICK_DEATH, READY_BACKOFF_MAX, STALL};
use crate::master::{Event, ExitStatus, Heartbeat, SocketId, State, WorkerInfo};
use crate::{Signal, WorkerId};

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
struct Life {
    seat: Option<usize>,
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

struct Roll {
    pending: VecDeque<WorkerId>,
    step: Option<Step>,
}

/// One worker of a roll being replaced.
struct Step {
    old: WorkerId,
    new: WorkerId,
    seat: Option<usize>,
    /// The old worker's shared sockets: the new one must hold them all.
    sockets: Vec<SocketId>,
    /// The old worker called `Worker::ready`: the new one must too.
    acked: bool,
    /// The old worker listened (maybe on sockets of its own, which the
    /// master does not share): the new one must too.
    listened: bool,
    deadline: Instant,
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
    /// `RollFailed`.
    pub(crate) events: VecDeque<Event>,
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
        }
    }

    /// How many workers that fill seats it had before, for worker `id`.
    pub(crate) fn restarts(&self, id: WorkerId) -> Option<u32> {
        let ix = self.lives.get(&id)?.seat?;
        self.seats.get(ix).map(|s| s.restarts)
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
        self.lives.insert(id, Life::new(seat, env, now));
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

    /// Replaces every live worker, one at a time.
    pub(crate) fn rolling_restart(&mut self, pool: &mut impl Pool, now: Instant) -> io::Result<()> {
        if self.roll.is_some() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "a rolling restart is in progress",
            ));
        }
        let mut pending: Vec<WorkerId> = pool
            .live()
            .into_iter()
            .filter(|w| staying(w) && !self.lives.get(&w.id).is_some_and(|l| l.leaving))
            .map(|w| w.id)
            .collect();
        pending.sort_unstable();
        log::info!("rolling restart of {} workers", pending.len());
        self.roll = Some(Roll { pending: pending.into(), step: None });
        self.roll_next(pool, now);
        Ok(())
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
            Event::Exit { id, status, exited_after_disconnect, .. } => {
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
                    self.events.push_back(Event::CrashLoop { id, crashes, status });
                    return;
                }
            }
        };
        seat.restarts += 1;
        seat.start_at = Some(now + delay);
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
            self.lives
                .values()
                .filter(|l| !l.leaving && !l.unresponsive)
                .map(|l| self.heard_of(l) + hb.timeout + Duration::from_millis(1))
        });
        step.into_iter().chain(starts).chain(kills).chain(silences).min()
    }

    /// When `life` was last heard of, as far as its silence counts.
    fn heard_of(&self, life: &Life) -> Instant {
        life.last_heartbeat.unwrap_or(life.started).max(life.started).max(self.resumed_at)
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
                        self.seats[ix].start_at = Some(now + retry);
                    }
                }
            }
        }
        // A deadline left in the past (its work could not be done) asks for
        // the next turn at once, not for a stall warning.
        self.due = self.deadline().map(|due| due.max(now));
    }

    /// Kills workers silent for longer than the heartbeat timeout.
    fn check_heartbeats(&mut self, pool: &mut impl Pool, now: Instant) {
        let resumed_at = self.resumed_at;
        let hb = self.heartbeat;
        for (&id, life) in self.lives.iter_mut() {
            if life.kill_at.is_some_and(|t| t <= now) {
                life.kill_at = None;
                let _ = pool.kill(id, Signal::SIGKILL);
            }
            let Some(hb) = hb else { continue };
            if life.leaving || life.unresponsive {
                continue;
            }
            let since =
                life.last_heartbeat.unwrap_or(life.started).max(life.started).max(resumed_at);
            let silent_for = now.saturating_duration_since(since);
            if silent_for <= hb.timeout {
                continue;
            }
            log::error!("worker {id} sent no heartbeat for {silent_for:?}; killing it");
            self.events.push_back(Event::Unresponsive { id, silent_for });
            life.unresponsive = true;
            if hb.abort_first {
                let _ = pool.kill(id, Signal::SIGABRT);
                life.kill_at = Some(now + ABORT_GRACE);
            } else {
                let _ = pool.kill(id, Signal::SIGKILL);
            }
        }
    }

    /// Starts the next step of the roll, or ends it.
    fn roll_next(&mut self, pool: &mut impl Pool, now: Instant) {
        loop {
            let Some(roll) = self.roll.as_mut() else { return };
            let Some(old) = roll.pending.pop_front() else {
                self.roll = None;
                log::info!("rolling restart complete");
                self.events.push_back(Event::RollComplete);
                return;
            };
            let Some(info) = pool.worker(old).filter(staying) else { continue };
            let (seat, acked, env) = match self.lives.get(&old) {
                Some(l) if l.leaving => continue,
                Some(l) => (l.seat, l.acked, l.env.clone()),
                None => (None, false, Vec::new()),
            };
            let sockets = pool.sockets(old);
            let listened = info.state == State::Listening;
            let deadline = now + self.policy.start_timeout;
            match self.start(pool, env, None, now) {
                Ok(new) => {
                    log::info!("rolling restart: worker {new} is to replace worker {old}");
                    if let Some(roll) = self.roll.as_mut() {
                        roll.step =
                            Some(Step { old, new, seat, sockets, acked, listened, deadline });
                    }
                }
                Err(e) => self.fail_roll(pool, format!("cannot start a new worker: {e}"), now),
            }
            return;
        }
    }

    /// A worker came online, listened or said it is ready: if it is the
    /// roll's new worker and now does everything the old one did, the old
    /// one leaves.
    fn roll_progress(&mut self, pool: &mut impl Pool, now: Instant) {
        let Some(step) = self.roll.as_ref().and_then(|r| r.step.as_ref()) else { return };
        let Some(new) = pool.worker(step.new) else { return };
        let acked = self.lives.get(&step.new).is_some_and(|l| l.acked);
        // Ready: alive and staying; holding every shared socket the old one
        // held; listening if the old one listened (servers a worker binds
        // alone, exclusive or adopted, are not the master's to count); and
        // having called `Worker::ready` if the old one had. A worker that
        // does none of these (messages only) only has to be online.
        let holds = pool.sockets(step.new);
        let ready = matches!(new.state, State::Online | State::Listening)
            && !new.exited_after_disconnect
            && (!step.listened || new.state == State::Listening)
            && (!step.acked || acked)
            && step.sockets.iter().all(|s| holds.contains(s));
        if !ready {
            return;
        }
        let step = self.roll.as_mut().and_then(|r| r.step.take()).expect("checked above");
        match step.seat {
            Some(ix) if ix >= self.seats.len() => {
                // The target shrank while this step ran: the old worker's
                // seat is gone, so the new one is not needed either.
                log::info!(
                    "rolling restart: seat of worker {} removed; dropping worker {}",
                    step.old,
                    step.new
                );
                let _ = self.retire(pool, step.new);
            }
            Some(ix) => {
                if let Some(life) = self.lives.get_mut(&step.new) {
                    life.seat = Some(ix);
                }
                let seat = &mut self.seats[ix];
                seat.worker = Some(step.new);
                seat.start_at = None;
                seat.restarts += 1;
                if self.policy.respawn {
                    pool.keep_sockets(step.new, Some(self.policy.keep_sockets_for()));
                }
            }
            None => {}
        }
        log::info!(
            "rolling restart: worker {} is ready; disconnecting worker {}",
            step.new,
            step.old
        );
        if let Err(e) = self.retire(pool, step.old) {
            log::error!("rolling restart: disconnecting worker {}: {e}", step.old);
        }
        self.roll_next(pool, now);
    }

    fn fail_roll(&mut self, pool: &impl Pool, reason: String, now: Instant) {
        let Some(roll) = self.roll.take() else { return };
        let Some(step) = roll.step else { return };
        log::error!("rolling restart stopped: new worker {}: {reason}", step.new);
        // If the worker it was to replace died meanwhile, its seat is empty.
        if let Some(seat) = step.seat.and_then(|ix| self.seats.get_mut(ix)) {
            if seat.worker.is_none()
                || seat.worker == Some(step.old) && pool.worker(step.old).is_none()
            {
                seat.worker = None;
                seat.start_at.get_or_insert(now);
            }
        }
        self.events.push_back(Event::RollFailed { id: step.new, reason });
    }
}

/// Alive, connected, and not asked to leave.
fn staying(w: &WorkerInfo) -> bool {
    !w.exited_after_disconnect && matches!(w.state, State::None | State::Online | State::Listening)
}
