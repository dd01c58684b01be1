//! What the manager says of the pool: `/ready`'s answer and the `SIGUSR1`
//! table.

use std::collections::HashSet;
use std::time::Duration;

use crate::host::health::{Answers, Readiness};
use crate::host::linger::Linger;
use crate::{Master, State, Supervisor, WorkerId, WorkerStatus};

/// What `/ready` says: lingering, draining, or whether every seat has a
/// worker that listens, is not leaving, and (with heartbeats) was heard
/// from within `stale` (a stopped or hung worker does not count before the
/// master kills it).
pub(super) fn readiness(
    master: &Master,
    supervisor: &Supervisor,
    linger: &Linger,
    stale: Option<Duration>,
) -> Readiness {
    if linger.is_lingering() {
        return Readiness::Lingering;
    }
    if master.is_shutting_down() {
        return Readiness::Draining;
    }
    let listening: HashSet<WorkerId> = master
        .workers()
        .filter(|w| w.state == State::Listening && !w.exited_after_disconnect)
        .map(|w| w.id)
        .collect();
    let ready = master
        .status()
        .iter()
        .filter(|r| listening.contains(&r.id))
        .filter(|r| match (stale, r.last_heartbeat) {
            (Some(stale), Some(ago)) => ago <= stale,
            _ => true,
        })
        .count();
    Readiness::of_pool(ready, supervisor.target())
}

/// What the health listener asks the manager.
pub(super) struct Probe<'a> {
    pub master: &'a Master,
    pub supervisor: &'a Supervisor,
    pub linger: &'a Linger,
    pub stale: Option<Duration>,
    /// After a hand-over, what this master still answers (probes it had
    /// accepted) is the new one's word: it said it was ready.
    pub handed_over: bool,
    pub upgrades: crate::supervisor::Outcomes,
}

impl Answers for Probe<'_> {
    fn readiness(&mut self) -> Readiness {
        if self.handed_over {
            return Readiness::Ready;
        }
        readiness(self.master, self.supervisor, self.linger, self.stale)
    }

    fn metrics(&mut self) -> Option<String> {
        let mut m = self.supervisor.metrics(self.master);
        m.upgrades = self.upgrades;
        Some(crate::host::metrics::render(&m))
    }
}

/// The `SIGUSR1` table: one row per worker (id, pid, generation, state,
/// uptime, restarts, last heartbeat, RSS, CPU time).
pub fn status_table(rows: &[WorkerStatus]) -> String {
    let mut t = format!(
        "{:>4} {:>8} {:>3} {:<12} {:>9} {:>8} {:>10} {:>9} {:>9}\n",
        "id", "pid", "gen", "state", "uptime", "restarts", "heartbeat", "rss", "cpu"
    );
    for r in rows {
        let hb =
            r.last_heartbeat.map_or("-".to_string(), |d| format!("{:.1}s ago", d.as_secs_f64()));
        let rss =
            r.rss_bytes.map_or("-".to_string(), |b| format!("{:.1}MiB", b as f64 / 1048576.0));
        let cpu = r.cpu_time.map_or("-".to_string(), |d| format!("{:.2}s", d.as_secs_f64()));
        t += &format!(
            "{:>4} {:>8} {:>3} {:<12} {:>8.1}s {:>8} {:>10} {:>9} {:>9}\n",
            r.id,
            r.pid,
            r.generation,
            format!("{:?}", r.state),
            r.uptime.as_secs_f64(),
            r.restarts.unwrap_or(0),
            hb,
            rss,
            cpu
        );
    }
    t
}
