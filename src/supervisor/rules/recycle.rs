//! Recycling: a worker is replaced before a slow leak hurts, once it has
//! accepted [`Policy::max_worker_connections`](crate::Policy::max_worker_connections)
//! connections (plus a jitter of its own, as gunicorn's `max_requests`), or
//! once its resident memory stayed above
//! [`Policy::max_worker_rss`](crate::Policy::max_worker_rss) for
//! [`RSS_CHECKS`] checks in a row (PM2's `max_memory_restart`).
//!
//! It is a roll of one worker: the new one is ready before the old one is
//! disconnected, so the pool never drops below its target. One at a time,
//! never while a roll runs (a `SIGHUP` roll takes a recycling under way as
//! its first step), never during a shutdown, and not while the application
//! holds it ([`Supervisor::hold_recycling`](crate::Supervisor::hold_recycling):
//! the manager does during a hot upgrade). A worker that replaces one
//! recycled on memory and is over the limit at its first check shows that
//! a fresh worker already passes it: that is logged once, with both
//! numbers, and recycling on memory is off from then on, so no loop
//! follows.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::time::{Duration, Instant};

use super::{Pool, Rules};
use crate::master::ExitStatus;
use crate::supervisor::Recycle;
use crate::WorkerId;

/// How often the accept boards are read for connection counts: a few
/// atomic loads per worker, no system call.
pub(crate) const CONNECTION_CHECK: Duration = Duration::from_millis(20);
/// How often each worker's resident memory is read (`/proc/PID/status`).
pub(crate) const RSS_CHECK: Duration = Duration::from_secs(1);
/// Memory checks in a row over the limit before a worker is recycled: a
/// short peak is not a leak.
pub(crate) const RSS_CHECKS: u32 = 3;

/// When recycling checks next, and what holds it back.
#[derive(Debug)]
pub(crate) struct Recycling {
    next_connections: Instant,
    next_rss: Instant,
    /// A replacement failed: nothing is recycled before this.
    hold_until: Option<Instant>,
    /// The application holds it (a hot upgrade under way).
    pub(crate) held: bool,
    /// A fresh worker was already over the memory limit (logged once).
    rss_off: bool,
    /// Each worker's jitter, from a per-process random key.
    jitter: RandomState,
    /// How long the last replacement took to be ready: a worker recycled
    /// on connections gets its replacement started that much ahead of its
    /// limit, at its rate of accepts, so that it stops near the limit.
    start_time: Duration,
}

impl Recycling {
    pub(crate) fn new(now: Instant) -> Recycling {
        Recycling {
            next_connections: now,
            next_rss: now,
            hold_until: None,
            held: false,
            rss_off: false,
            jitter: RandomState::new(),
            start_time: Duration::from_millis(100),
        }
    }

    /// A replacement took `took` to be ready.
    pub(crate) fn started_in(&mut self, took: Duration) {
        self.start_time = took;
    }

    /// Nothing is recycled for `wait` from `now`.
    pub(crate) fn hold(&mut self, now: Instant, wait: Duration) {
        self.hold_until = Some(crate::deadline::after(now, wait));
    }
}

impl Rules {
    /// The number of connections after which worker `id` is recycled: the
    /// policy's, plus up to its jitter (the same for a given worker).
    pub(super) fn connection_limit(&self, id: WorkerId) -> Option<u64> {
        let max = self.policy.max_worker_connections.filter(|&n| n > 0)?;
        let jitter = self.policy.max_worker_connections_jitter;
        let extra = match jitter {
            0 => 0,
            j => self.recycling.jitter.hash_one(id) % j.saturating_add(1),
        };
        Some(max.saturating_add(extra))
    }

    /// When recycling checks next, if it is on.
    pub(super) fn recycle_deadline(&self) -> Option<Instant> {
        if self.stopped || self.lives.is_empty() {
            return None;
        }
        let r = &self.recycling;
        let connections =
            self.policy.max_worker_connections.filter(|&n| n > 0).map(|_| r.next_connections);
        let rss = self.policy.max_worker_rss.filter(|_| !r.rss_off).map(|_| r.next_rss);
        connections.into_iter().chain(rss).min()
    }

    /// Reads what is due (connection counts, memory), and recycles the
    /// first worker past a limit if nothing else is replacing workers.
    pub(super) fn check_recycling(&mut self, pool: &mut impl Pool, now: Instant) {
        let max_rss = self.policy.max_worker_rss.filter(|_| !self.recycling.rss_off);
        let counting = self.policy.max_worker_connections.is_some_and(|n| n > 0);
        let r = &mut self.recycling;
        let connections_due = counting && now >= r.next_connections;
        let rss_due = max_rss.is_some() && now >= r.next_rss;
        if connections_due {
            r.next_connections = now + CONNECTION_CHECK;
        }
        if rss_due {
            r.next_rss = now + RSS_CHECK;
        }
        if !(connections_due || rss_due) {
            return;
        }
        // A replacement ready ahead of the limit: the old worker may have
        // reached it now.
        if connections_due && self.roll.as_ref().is_some_and(|r| r.recycle.is_some()) {
            self.roll_progress(pool, now);
        }
        let start_time = self.recycling.start_time;
        let mut due: Option<(WorkerId, Recycle)> = None;
        for (&id, life) in self.lives.iter_mut() {
            // Only a ready worker in a seat: not a roll's new worker, not
            // one leaving.
            if life.seat.is_none() || life.leaving || life.ready_at.is_none() {
                continue;
            }
            if let (true, Some(limit), Some(ready_at)) =
                (connections_due, life.conn_limit, life.ready_at)
            {
                // Started ahead by what it accepts while a replacement
                // starts (at its rate since it was ready), at most half its
                // limit ahead.
                let accepted = pool.accepted(id);
                let age = now.saturating_duration_since(ready_at).as_secs_f64().max(0.001);
                let lead = (accepted as f64 / age * start_time.as_secs_f64()).ceil() as u64;
                if accepted.saturating_add(lead.min(limit / 2)) >= limit && due.is_none() {
                    due = Some((id, Recycle::Connections { accepted, limit }));
                }
            }
            let (true, Some(limit)) = (rss_due, max_rss) else { continue };
            let Some(rss) = pool.rss(id) else { continue };
            life.rss_checks += 1;
            if rss <= limit {
                life.rss_over = 0;
                continue;
            }
            life.rss_over += 1;
            if life.rss_checks == 1 && life.memory_successor && !self.recycling.rss_off {
                log::warn!(
                    "max_worker_rss is {} MiB, but worker {id}, which replaced a worker over it, \
                     takes {} MiB as soon as it is ready: recycling on memory would replace \
                     every worker in turn; it is off",
                    limit >> 20,
                    rss >> 20
                );
                self.recycling.rss_off = true;
                continue;
            }
            if life.rss_over >= RSS_CHECKS && due.is_none() && !self.recycling.rss_off {
                due = Some((id, Recycle::Memory { rss, limit }));
            }
        }
        let Some((id, why)) = due else { return };
        let r = &self.recycling;
        let busy = self.roll.is_some()
            || self.stopped
            || pool.is_shutting_down()
            || r.held
            || r.hold_until.is_some_and(|t| now < t);
        if !busy {
            self.recycle(pool, id, why, now);
        }
    }

    /// Counts an exit for the metrics, by what ended it.
    pub(super) fn count_exit(&mut self, recycled: bool, unresponsive: bool, status: ExitStatus) {
        let e = &mut self.tally.exits;
        match status {
            _ if recycled => e.recycled += 1,
            _ if unresponsive => e.heartbeat += 1,
            ExitStatus::Code(0) => e.clean += 1,
            ExitStatus::Code(_) => e.code += 1,
            ExitStatus::Signal(_) => e.signal += 1,
            ExitStatus::Unknown => e.unknown += 1,
        }
    }
}
