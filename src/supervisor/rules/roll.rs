//! Rolling restarts: one worker at a time, the new one ready before the
//! old one leaves.

use std::collections::VecDeque;
use std::io;
use std::time::Instant;

use super::{Pool, Rules};
use crate::master::{Event, SocketId, State, WorkerInfo};
use crate::WorkerId;

pub(super) struct Roll {
    pub(super) pending: VecDeque<WorkerId>,
    pub(super) step: Option<Step>,
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
}

impl Rules {
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
            let deadline = crate::deadline::after(now, self.policy.start_timeout);
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

    pub(super) fn fail_roll(&mut self, pool: &impl Pool, reason: String, now: Instant) {
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
