//! What a [`Supervisor`](super::Supervisor) is asked to keep, and what it
//! reports.

use std::time::Duration;

use crate::Signal;

/// The signals [`Supervisor::handle_signal`](super::Supervisor::handle_signal)
/// gives a meaning to, plus `SIGUSR1` (status, left to the application):
/// block these with [`Settings::signals`](crate::Settings::signals).
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

/// A turn this much later than the supervisor's deadline means the process
/// was not running (stopped, or starved): silence before it is not held
/// against workers.
pub(crate) const STALL: Duration = Duration::from_millis(500);

/// How long after `SIGABRT` ([`Heartbeat::abort_first`](crate::Heartbeat::abort_first))
/// an unresponsive worker still alive gets `SIGKILL`.
pub(crate) const ABORT_GRACE: Duration = Duration::from_secs(1);

/// How a [`Supervisor`](super::Supervisor) keeps the pool.
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
    /// ready, respawning stops and [`Event::CrashLoop`](crate::Event::CrashLoop)
    /// is queued (default: 5). A worker that was ready never counts.
    pub crash_limit: u32,
    /// How long a new worker may take to be ready to replace an old one
    /// during a rolling restart before the roll is abandoned (default:
    /// 30 s).
    pub start_timeout: Duration,
    /// Recycle a worker once it has accepted this many connections (plus
    /// its jitter), as its accept boards count them: it is replaced as a
    /// rolling restart replaces one, the new worker ready first (gunicorn's
    /// `max_requests`). Only listeners balanced with
    /// [`Balance::Even`](crate::Balance::Even) (the default) have a seat on
    /// a board, so only their connections count. `None` (the default) or 0:
    /// never.
    pub max_worker_connections: Option<u64>,
    /// Each worker's limit is `max_worker_connections` plus a number drawn
    /// for it from 0 to this (gunicorn's `max_requests_jitter`), so that
    /// workers started together are not recycled together (default: 0).
    pub max_worker_connections_jitter: u64,
    /// Recycle a worker whose resident memory stayed above this many bytes
    /// for three checks in a row, one a second (PM2's
    /// `max_memory_restart`). A limit that a fresh worker already passes
    /// (the replacement of a worker recycled on memory is over it at its
    /// first check) is logged once, with both numbers, and recycling on
    /// memory is off from then on. `None` (the default): never.
    pub max_worker_rss: Option<u64>,
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
            max_worker_connections: None,
            max_worker_connections_jitter: 0,
            max_worker_rss: None,
        }
    }
}

impl Policy {
    /// How long a seat keeps its last worker's sockets for the next one:
    /// the longest a replacement can take to start and listen.
    pub(crate) fn keep_sockets_for(&self) -> Duration {
        self.backoff_max + self.start_timeout
    }
}
