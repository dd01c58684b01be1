//! Rolling restarts: one worker at a time, the new one ready before the
//! old one leaves.

use std::collections::VecDeque;
use std::io;
use std::time::Instant;

use super::{Pool, Rules};
use crate::master::{Event, SocketId, State, WorkerInfo};
use crate::supervisor::Recycle;

/// The longest a worker recycled on connections keeps serving, once its
/// replacement is ready, to reach its limit.
pub(super) const LIMIT_WAIT: std::time::Duration = std::time::Duration::from_secs(1);
use crate::WorkerId;

pub(super) struct Roll {
    pub(super) pending: VecDeque<WorkerId>,
    pub(super) step: Option<Step>,
    /// A roll of one worker that recycling replaces, and why: it ends with
    /// [`Event::Recycled`] instead of [`Event::RollComplete`].
    pub(super) recycle: Option<Recycle>,
}

/// One worker of a roll being replaced.
pub(super) struct Step {
    pub(super) old: WorkerId,
    pub(super) new: WorkerId,
    pub(super) seat: Option<usize>,
    /// The old worker's shared sockets: the new one must hold them all.
    sockets: Vec<SocketId>,
    /// The old worker called `Worker::ready`: the new one must too.
    acked: bool,
    /// The old worker listened (maybe on sockets of its own, which the
    /// master does not share): the new one must too.
    listened: bool,
    pub(super) deadline: Instant,
    /// When it started, and when the new worker was ready while the old
    /// one had not yet reached the connection count it is recycled at.
    started: Instant,
    pub(super) waiting_since: Option<Instant>,
}

impl Rules {
    /// Replaces every live worker, one at a time.
    /// A recycling under way becomes the roll's first step.
    pub(crate) fn rolling_restart(&mut self, pool: &mut impl Pool, now: Instant) -> io::Result<()> {
        if self.roll.as_ref().is_some_and(|r| r.recycle.is_none()) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "a rolling restart is in progress",
            ));
        }
        let busy: Vec<WorkerId> = self
            .roll
            .iter()
            .flat_map(|r| {
                r.step.iter().flat_map(|s| [s.old, s.new]).chain(r.pending.iter().copied())
            })
            .collect();
        let mut pending: Vec<WorkerId> = pool
            .live()
            .into_iter()
            .filter(|w| staying(w) && !self.lives.get(&w.id).is_some_and(|l| l.leaving))
            .map(|w| w.id)
            .filter(|id| !busy.contains(id))
            .collect();
        pending.sort_unstable();
        if let Some(roll) = self.roll.as_mut() {
            log::info!(
                "rolling restart of {} more workers after the one being recycled",
                pending.len()
            );
            roll.recycle = None;
            roll.pending.extend(pending);
            return Ok(());
        }
        log::info!("rolling restart of {} workers", pending.len());
        self.roll = Some(Roll { pending: pending.into(), step: None, recycle: None });
        self.roll_next(pool, now);
        Ok(())
    }

    /// Replaces worker `old` as a roll of one would, for `why`.
    pub(super) fn recycle(
        &mut self,
        pool: &mut impl Pool,
        old: WorkerId,
        why: Recycle,
        now: Instant,
    ) {
        log::info!("recycling worker {old}: {why}");
        self.roll = Some(Roll { pending: [old].into(), step: None, recycle: Some(why) });
        self.roll_next(pool, now);
    }

    /// Starts the next step of the roll, or ends it.
    fn roll_next(&mut self, pool: &mut impl Pool, now: Instant) {
        loop {
            let Some(roll) = self.roll.as_mut() else { return };
            let Some(old) = roll.pending.pop_front() else {
                let recycled = self.roll.take().and_then(|r| r.recycle).is_some();
                if !recycled {
                    log::info!("rolling restart complete");
                    self.tally.rolls.succeeded += 1;
                    self.events.push_back(Event::RollComplete);
                }
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
            let deadline = crate::deadline::after(now, self.policy.start_timeout);
            match self.start(pool, env, None, now) {
                Ok(new) => {
                    let recycle = self.roll.as_ref().and_then(|r| r.recycle);
                    if let (Some(Recycle::Memory { .. }), Some(life)) =
                        (recycle, self.lives.get_mut(&new))
                    {
                        life.memory_successor = true;
                    }
                    log::info!("rolling restart: worker {new} is to replace worker {old}");
                    if let Some(roll) = self.roll.as_mut() {
                        roll.step = Some(Step {
                            old,
                            new,
                            seat,
                            sockets,
                            acked,
                            listened,
                            deadline,
                            started: now,
                            waiting_since: None,
                        });
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
    pub(super) fn roll_progress(&mut self, pool: &mut impl Pool, now: Instant) {
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
        // Recycled on connections: the replacement was started ahead of
        // the limit, so the old worker serves until it reaches it (or for
        // at most [`LIMIT_WAIT`] more).
        let old = step.old;
        if let Some(Recycle::Connections { limit, .. }) = self.roll.as_ref().and_then(|r| r.recycle)
        {
            let since = *self
                .roll
                .as_mut()
                .and_then(|r| r.step.as_mut())
                .expect("checked above")
                .waiting_since
                .get_or_insert(now);
            if pool.accepted(old) < limit && now.saturating_duration_since(since) < LIMIT_WAIT {
                return;
            }
        }
        let step = self.roll.as_mut().and_then(|r| r.step.take()).expect("checked above");
        if self.roll.as_ref().is_some_and(|r| r.recycle.is_some()) {
            let took = step.waiting_since.unwrap_or(now).saturating_duration_since(step.started);
            self.recycling.started_in(took);
        }
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
                    life.slot = Some(ix);
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
        let recycle = self.roll.as_ref().and_then(|r| r.recycle);
        log::info!(
            "{}: worker {} is ready; disconnecting worker {}",
            if recycle.is_some() { "recycling" } else { "rolling restart" },
            step.new,
            step.old
        );
        if let Some(mut why) = recycle {
            if let Recycle::Connections { accepted, .. } = &mut why {
                *accepted = pool.accepted(step.old);
            }
            if let Some(life) = self.lives.get_mut(&step.old) {
                life.recycled = true;
            }
            match why {
                Recycle::Connections { .. } => self.tally.recycled.connections += 1,
                Recycle::Memory { .. } => self.tally.recycled.memory += 1,
            }
            self.events.push_back(Event::Recycled { id: step.old, by: step.new, why });
        }
        if let Err(e) = self.retire(pool, step.old) {
            log::error!("rolling restart: disconnecting worker {}: {e}", step.old);
        }
        self.roll_next(pool, now);
    }

    pub(super) fn fail_roll(&mut self, pool: &impl Pool, reason: String, now: Instant) {
        let Some(roll) = self.roll.take() else { return };
        let Some(step) = roll.step else { return };
        // If the worker it was to replace died meanwhile, its seat is empty.
        if let Some(seat) = step.seat.and_then(|ix| self.seats.get_mut(ix)) {
            if seat.worker.is_none()
                || seat.worker == Some(step.old) && pool.worker(step.old).is_none()
            {
                seat.worker = None;
                seat.start_at.get_or_insert(now);
            }
        }
        if let Some(why) = roll.recycle {
            // The old worker keeps serving; recycling waits before it tries
            // again, so a deploy that cannot start is not forked in a loop.
            let wait = self.policy.backoff_max;
            log::error!(
                "recycling worker {} ({why}) stopped: new worker {}: {reason}; worker {} keeps \
                 serving, and recycling waits {wait:?}",
                step.old,
                step.new,
                step.old
            );
            self.recycling.hold(now, wait);
            return;
        }
        log::error!("rolling restart stopped: new worker {}: {reason}", step.new);
        self.tally.rolls.failed += 1;
        self.events.push_back(Event::RollFailed { id: step.new, reason });
    }
}

/// Alive, connected, and not asked to leave.
fn staying(w: &WorkerInfo) -> bool {
    !w.exited_after_disconnect && matches!(w.state, State::None | State::Online | State::Listening)
}
