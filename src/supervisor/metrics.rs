//! The pool's numbers, as a plain struct ([`Supervisor::metrics`]): what
//! the master counts (frames, refused listens), what the accept boards count
//! (connections), what `/proc` says (memory, CPU), and what the supervisor
//! counted (exits, restarts, rolls, crash loops, recycling).
//! [`host::metrics::render`](crate::host::metrics::render) writes it in the
//! Prometheus text format.
//!
//! Workers are named by their slot in the pool (0 to target-1), never by id
//! or pid, which grow with every restart: a slot's counters go on counting
//! across its workers, so the series stay as many as the slots.

use std::fmt;
use std::time::Duration;

use super::Supervisor;
use crate::master::{Master, MasterCounters, State};
use crate::WorkerId;

/// Why a worker was recycled ([`Event::Recycled`](crate::Event::Recycled)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Recycle {
    /// It accepted its share of connections.
    #[non_exhaustive]
    Connections {
        /// What its accept boards counted.
        accepted: u64,
        /// Its limit: [`Policy::max_worker_connections`](crate::Policy::max_worker_connections)
        /// plus its jitter.
        limit: u64,
    },
    /// Its resident memory stayed above the limit.
    #[non_exhaustive]
    Memory {
        /// Its resident memory at the last check, in bytes.
        rss: u64,
        /// [`Policy::max_worker_rss`](crate::Policy::max_worker_rss).
        limit: u64,
    },
}

impl fmt::Display for Recycle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Recycle::Connections { accepted, limit } => {
                write!(f, "accepted {accepted} connections, its limit {limit}")
            }
            Recycle::Memory { rss, limit } => write!(
                f,
                "resident memory {} MiB over {} MiB",
                rss as f64 / 1048576.0,
                limit as f64 / 1048576.0
            ),
        }
    }
}

/// Live workers by where they are in their life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkerCounts {
    /// Started, runtime not up yet.
    pub starting: usize,
    /// Runtime up, not listening.
    pub online: usize,
    /// Listening.
    pub listening: usize,
    /// Asked to leave, or leaving of its own accord; not exited yet.
    pub disconnecting: usize,
}

/// Exits, by what ended them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ExitCounts {
    /// Exit code 0 (after a disconnect, or of its own accord).
    pub clean: u64,
    /// A non-zero exit code.
    pub code: u64,
    /// Killed by a signal (the heartbeat check's and recycling's are
    /// counted apart).
    pub signal: u64,
    /// Killed for its silence (heartbeat timeout).
    pub heartbeat: u64,
    /// Replaced by recycling, however it ended.
    pub recycled: u64,
    /// Reaped elsewhere: its status is unknown.
    pub unknown: u64,
}

/// Rolls or upgrades, by result.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Outcomes {
    /// Completed.
    pub succeeded: u64,
    /// Stopped (the new worker or master did not come up), or called off.
    pub failed: u64,
}

/// Workers recycled, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecycleCounts {
    /// [`Policy::max_worker_connections`](crate::Policy::max_worker_connections).
    pub connections: u64,
    /// [`Policy::max_worker_rss`](crate::Policy::max_worker_rss).
    pub memory: u64,
}

/// One slot of the pool: its worker now, and its counters across workers.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct SlotMetrics {
    /// Its index, 0 to target-1.
    pub slot: usize,
    /// The worker that fills it now.
    pub worker: Option<WorkerId>,
    /// Workers it had before the one now.
    pub restarts: u64,
    /// Connections its workers accepted (accept boards), those exited
    /// included.
    pub accepted_connections: u64,
    /// Connections open on its workers now.
    pub open_connections: u64,
    /// Its worker's resident memory, if it has one and it could be read.
    pub resident_memory_bytes: Option<u64>,
    /// CPU time of its workers, those exited included.
    pub cpu_time: Duration,
    /// How long ago its worker's last heartbeat came (`None`: none yet, or
    /// heartbeats off).
    pub heartbeat_age: Option<Duration>,
}

/// The pool's numbers at one moment ([`Supervisor::metrics`]):
/// what the master counts, what the accept boards count, what `/proc` says,
/// and what the supervisor counted.
/// [`host::metrics::render`](crate::host::metrics::render) writes it in the
/// Prometheus text format. Workers are named by their slot in the pool,
/// never by id or pid, and a slot's counters go on across its workers.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct Metrics {
    /// The supervisor's target.
    pub target_workers: usize,
    /// Live workers by state.
    pub workers: WorkerCounts,
    /// One entry per slot, in order.
    pub slots: Vec<SlotMetrics>,
    /// Workers that exited, by cause.
    pub exits: ExitCounts,
    /// Rolling restarts.
    pub rolls: Outcomes,
    /// Hot upgrades of the master: counted by a [`Manager`](crate::host::manager::Manager);
    /// zero from a supervisor alone.
    pub upgrades: Outcomes,
    /// Crash loops (respawning stopped).
    pub crash_loops: u64,
    /// Workers recycled.
    pub recycled: RecycleCounts,
    /// The master's own counters.
    pub master: MasterCounters,
    /// The master's generation (1, and one more with each hot upgrade).
    pub generation: u32,
}

impl Supervisor {
    /// The pool's numbers now. Reads `/proc` once per live worker (memory
    /// and CPU) and each accept board's seats; computes nothing between
    /// calls.
    pub fn metrics(&self, master: &Master) -> Metrics {
        let rules = &self.rules;
        let mut m = Metrics {
            target_workers: rules.seats.len(),
            exits: rules.tally.exits,
            rolls: rules.tally.rolls,
            crash_loops: rules.tally.crash_loops,
            recycled: rules.tally.recycled,
            master: master.counters(),
            generation: master.generation(),
            ..Metrics::default()
        };
        m.slots = rules
            .seats
            .iter()
            .enumerate()
            .map(|(slot, seat)| SlotMetrics {
                slot,
                worker: seat.worker,
                restarts: u64::from(seat.restarts),
                accepted_connections: seat.accepted_before,
                cpu_time: seat.cpu_before,
                ..SlotMetrics::default()
            })
            .collect();
        for row in master.status() {
            let leaving = master.worker(row.id).is_some_and(|w| w.exited_after_disconnect);
            let counts = &mut m.workers;
            match row.state {
                _ if leaving => counts.disconnecting += 1,
                State::None => counts.starting += 1,
                State::Online => counts.online += 1,
                State::Listening => counts.listening += 1,
                State::Disconnected | State::Dead => counts.disconnecting += 1,
            }
            let Some(slot) = rules.slot_of(row.id).and_then(|s| m.slots.get_mut(s)) else {
                continue;
            };
            // Every worker that counts for the slot adds to its counters
            // (one leaving and the one that took its place alike).
            slot.accepted_connections += row.accepted_connections;
            slot.open_connections += row.open_connections;
            slot.cpu_time += row.cpu_time.unwrap_or_default();
            if slot.worker == Some(row.id) {
                slot.resident_memory_bytes = row.rss_bytes;
                slot.heartbeat_age = row.last_heartbeat;
            }
        }
        m
    }

    /// Holds recycling (`true`) or lets it go on: a
    /// [`Manager`](crate::host::manager::Manager) holds it while a hot
    /// upgrade is under way.
    pub fn hold_recycling(&mut self, hold: bool) {
        self.rules.recycling.held = hold;
    }
}
