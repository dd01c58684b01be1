//! Hung-worker detection: a worker silent for longer than the heartbeat
//! timeout is killed (`SIGABRT` first if asked, then `SIGKILL`).

use std::time::Instant;

use super::{Life, Pool, Rules};
use crate::master::Event;
use crate::supervisor::policy::ABORT_GRACE;
use crate::Signal;

/// When `life` was last heard of, as far as its silence counts: its last
/// heartbeat, its start, or the last time the process resumed from a stall,
/// whichever is latest.
pub(super) fn heard_of(life: &Life, resumed_at: Instant) -> Instant {
    life.last_heartbeat.unwrap_or(life.started).max(resumed_at)
}

impl Rules {
    /// Kills workers silent for longer than the heartbeat timeout.
    pub(super) fn check_heartbeats(&mut self, pool: &mut impl Pool, now: Instant) {
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
            let silent_for = now.saturating_duration_since(heard_of(life, resumed_at));
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
}
