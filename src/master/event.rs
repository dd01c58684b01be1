//! What the master reports: its events, and what it knows of a worker.

use std::fmt;
use std::os::fd::OwnedFd;
use std::time::{Duration, SystemTime};

use crate::listen::Address;
use crate::{Signal, WorkerId};

/// Where a worker is in its life, in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[non_exhaustive]
pub enum State {
    /// Forked; its runtime has not said it is up.
    None,
    /// Its runtime is up.
    Online,
    /// It listens on at least one server.
    Listening,
    /// Its channel is closed.
    Disconnected,
    /// It exited (reported once, in [`Event::Exit`]).
    Dead,
}

/// How a worker ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// It exited with this code.
    Code(i32),
    /// A signal ended it.
    Signal(i32),
    /// It was reaped by someone else (for instance with `SIGCHLD` ignored).
    Unknown,
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitStatus::Code(c) => write!(f, "code={c}"),
            ExitStatus::Signal(s) => match Signal::try_from(*s) {
                Ok(sig) => write!(f, "signal={}", sig.as_str()),
                Err(_) => write!(f, "signal={s}"),
            },
            ExitStatus::Unknown => write!(f, "unknown"),
        }
    }
}

/// What happened, in order. Per worker: `Fork`, `Online`, `Listening` (once
/// per server), `Leaving` if it was asked to leave or chose to, then
/// `Disconnect` and `Exit`.
#[derive(Debug)]
#[non_exhaustive]
pub enum Event {
    /// A worker process was started.
    #[non_exhaustive]
    Fork {
        /// The worker.
        id: WorkerId,
        /// Its process id.
        pid: u32,
    },
    /// The worker's runtime is up (before its own code runs).
    #[non_exhaustive]
    Online {
        /// The worker.
        id: WorkerId,
    },
    /// The worker listens on a server at this address.
    #[non_exhaustive]
    Listening {
        /// The worker.
        id: WorkerId,
        /// The bound address.
        address: Address,
    },
    /// The worker called [`Worker::ready`](crate::Worker::ready).
    #[non_exhaustive]
    Ready {
        /// The worker.
        id: WorkerId,
    },
    /// A heartbeat from the worker's runtime (every
    /// [`Heartbeat::interval`](super::Heartbeat::interval), with heartbeats
    /// on).
    #[non_exhaustive]
    Heartbeat {
        /// The worker.
        id: WorkerId,
    },
    /// The worker leaves: it was asked to ([`Master::disconnect`](super::Master::disconnect)),
    /// or said it leaves of its own accord
    /// ([`Worker::disconnect`](crate::Worker::disconnect)). It is off every
    /// shared socket already; it finishes its open work and exits.
    #[non_exhaustive]
    Leaving {
        /// The worker.
        id: WorkerId,
    },
    /// A message from a worker, with the descriptors that came with it.
    #[non_exhaustive]
    Message {
        /// The worker.
        id: WorkerId,
        /// The bytes it sent.
        payload: Vec<u8>,
        /// Descriptors it attached, now owned by the master.
        fds: Vec<OwnedFd>,
    },
    /// A [`Master::send`](super::Master::send) that returned `WouldBlock`
    /// can be retried: the channel to this worker has drained.
    #[non_exhaustive]
    Drained {
        /// The worker.
        id: WorkerId,
    },
    /// The worker's channel closed.
    #[non_exhaustive]
    Disconnect {
        /// The worker.
        id: WorkerId,
    },
    /// The worker process ended.
    #[non_exhaustive]
    Exit {
        /// The worker.
        id: WorkerId,
        /// Its process id.
        pid: u32,
        /// Code or signal.
        status: ExitStatus,
        /// True if it was asked to leave (disconnect), false if it died.
        exited_after_disconnect: bool,
        /// The connections it accepted on shared sockets, as their accept
        /// boards counted them ([`Balance::Even`](crate::Balance::Even)).
        accepted_connections: u64,
        /// Its user plus system CPU time, read just before it was reaped
        /// (`None` if it could not be).
        cpu_time: Option<Duration>,
    },
    /// A worker wrote to a piped stdout or stderr
    /// ([`Output::Piped`](super::Output::Piped)).
    #[non_exhaustive]
    Output {
        /// The worker.
        id: WorkerId,
        /// Which stream.
        stream: OutputStream,
        /// What it wrote (as it arrived: not split into lines).
        data: Vec<u8>,
    },
    /// The master received one of [`Settings::signals`](super::Settings::signals).
    Signal(Signal),
    /// After [`Master::disconnect_all`](super::Master::disconnect_all) or
    /// [`Supervisor::shutdown`](crate::Supervisor::shutdown): every worker has
    /// exited; and, for a master that is PID 1 or a subreaper, every other
    /// child too ([`host::reaper`](crate::host::reaper)).
    #[non_exhaustive]
    AllDisconnected {
        /// How many had to be killed because they outlived the deadline
        /// (workers, and other children of a PID 1 or subreaper).
        forced: usize,
    },
    /// From a [`Supervisor`](crate::Supervisor): it stopped respawning,
    /// workers kept dying soon after they started
    /// ([`Policy::crash_limit`](crate::Policy::crash_limit) times in a row).
    #[non_exhaustive]
    CrashLoop {
        /// The last worker that died.
        id: WorkerId,
        /// Consecutive early deaths.
        crashes: u32,
        /// How the last one ended.
        status: ExitStatus,
    },
    /// From a [`Supervisor`](crate::Supervisor): a worker sent no
    /// heartbeat for longer than
    /// [`Heartbeat::timeout`](super::Heartbeat::timeout); it is being
    /// killed.
    #[non_exhaustive]
    Unresponsive {
        /// The worker.
        id: WorkerId,
        /// How long it was silent.
        silent_for: Duration,
    },
    /// From a [`Supervisor`](crate::Supervisor): a rolling restart replaced
    /// every worker it set out to replace.
    RollComplete,
    /// From a [`Supervisor`](crate::Supervisor): a worker past one of
    /// [`Policy`](crate::Policy)'s recycling limits is being replaced: its
    /// replacement is ready, and it was asked to leave.
    #[non_exhaustive]
    Recycled {
        /// The worker replaced.
        id: WorkerId,
        /// The worker in its place.
        by: WorkerId,
        /// Which limit it passed.
        why: crate::supervisor::Recycle,
    },
    /// From a [`Supervisor`](crate::Supervisor): a rolling restart stopped,
    /// the new worker did not come up. The old
    /// workers that were not replaced yet keep serving.
    #[non_exhaustive]
    RollFailed {
        /// The new worker that failed.
        id: WorkerId,
        /// What went wrong.
        reason: String,
    },
}

/// What the master knows of one live worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkerInfo {
    /// Its id (from 1, never reused).
    pub id: WorkerId,
    /// Its process id.
    pub pid: u32,
    /// Where it is in its life.
    pub state: State,
    /// True once it was asked, or asked itself, to leave.
    pub exited_after_disconnect: bool,
}

/// Which of a worker's output streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputStream {
    /// Its stdout.
    Stdout,
    /// Its stderr.
    Stderr,
}

/// One row of [`Master::status`](super::Master::status) or
/// [`Supervisor::status`](crate::Supervisor::status).
#[derive(Debug, Clone)]
#[non_exhaustive]
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
    /// Its master's generation ([`Master::generation`](super::Master::generation)):
    /// 1, and one more with each hot upgrade.
    pub generation: u32,
    /// How many workers its supervisor seat had before it (`None`: not
    /// supervised, or not in a seat).
    pub restarts: Option<u32>,
    /// How long ago its last heartbeat came (`None`: none yet, or off).
    pub last_heartbeat: Option<Duration>,
    /// Resident memory, from `/proc/PID/status`.
    pub rss_bytes: Option<u64>,
    /// User plus system CPU time, from `/proc/PID/stat`.
    pub cpu_time: Option<Duration>,
    /// Connections it accepted on shared sockets, as their accept boards
    /// count them ([`Balance::Even`](crate::Balance::Even), the default; a
    /// listener balanced otherwise is not counted).
    pub accepted_connections: u64,
    /// Of those, the ones still open on the sockets it listens on.
    pub open_connections: u64,
}

/// What the master counted since it started ([`Master::counters`](super::Master::counters)).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MasterCounters {
    /// Frames read from workers' channels.
    pub frames_received: u64,
    /// Frames queued to workers' channels.
    pub frames_sent: u64,
    /// Listens the master refused (each one's error went to its worker).
    pub listen_errors: u64,
}

/// A listening socket the master shares, as long as some worker holds it
/// (or it is kept for one: [`Master::keep_sockets`](super::Master::keep_sockets)).
/// An id may name another socket once this one is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SocketId(pub(crate) u32);
