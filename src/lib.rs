//! Node.js's `cluster` module for Rust servers, on mio.
//!
//! A master process forks workers (re-executions of the same program) and
//! talks to each over a Unix socket pair that carries file descriptors. When
//! a worker listens, it asks the master; the master binds the socket once per
//! key and hands every worker a duplicate, and each worker accepts on it in
//! its own mio loop. The kernel balances connections; nothing routes them.
//!
//! # Lifecycle
//!
//! 1. The program starts. [`role()`] tells it whether it is the master or a
//!    worker: the master sets `MIO_CLUSTER_WORKER_ID`, the channel's
//!    descriptor number in `MIO_CLUSTER_CHANNEL_FD` and its own pid in
//!    `MIO_CLUSTER_MASTER_PID` for each worker it forks. A process is a
//!    worker only if its parent is that master: a worker's own children
//!    inherit the variables (nothing changes the environment) but are not
//!    workers.
//! 2. The master creates a [`Master`], calls [`Master::fork`] for each
//!    worker, and drives its reactor with [`Master::poll`] and
//!    [`Master::next_event`]: `Fork`, `Online`, `Listening`, `Disconnect`,
//!    `Exit`, signals and messages, in order. To keep a pool (a target
//!    count, respawn, rolling restarts, heartbeats), a [`Supervisor`] drives
//!    the master through its public API, as PM2 sits on Node's cluster.
//! 3. A worker creates a [`Worker`] (which tells the master it is online),
//!    calls [`Worker::listen`], registers the [`Listener`] in its loop
//!    ([`Worker::register_listener`]) and takes connections with
//!    [`Worker::accept`], which keeps the workers to a fair share of them
//!    ([`Balance`]).
//! 4. [`Master::disconnect`] asks a worker to leave: it stops listening,
//!    finishes its connections, and exits 0. If the master dies, however it
//!    dies, every worker gets [`master::MASTER_DEATH_SIGNAL`] (`SIGTERM`),
//!    even one whose loop is busy or hung: without a handler it is gone at
//!    once; one whose loop runs also gets [`WorkerEvent::MasterGone`]
//!    when its channel closes, and exits when it is done.
//!
//! # Durations
//!
//! Every timeout the crate takes ([`Settings`], [`Policy`], the `host`
//! pieces) saturates: a duration too long to add to the monotonic clock's
//! reading, up to `Duration::MAX`, is a deadline a century away ("never"),
//! never a panic.
//!
//! # Processes and threads
//!
//! No function of this crate starts a thread: every process has exactly one.
//! Descriptors the crate opens are close-on-exec; a worker inherits exactly
//! one from the master, its end of the channel. The only memory processes
//! share is each shared socket's accept board, a sealed memfd (an unlinked
//! `shm_open` object on macOS) read and written through atomics.

#![deny(missing_docs)]
#![warn(missing_debug_implementations)]
// `unsafe` lives only in the syscall layer (`sys`), and each block there
// says why it is sound in a `// SAFETY:` comment.
#![deny(unsafe_code)]
#![deny(clippy::undocumented_unsafe_blocks)]

mod balance;
mod deadline;
mod debug;
pub mod host;
// The wire format is not part of the stable API: only the fuzz target and
// the crate's own tests (the `fuzzing` feature) reach it.
#[cfg(feature = "fuzzing")]
pub mod ipc;
#[cfg(not(feature = "fuzzing"))]
mod ipc;
// The parsers of untrusted input, for the fuzz targets (`fuzzing`).
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
mod listen;
pub mod master;
mod signal;
pub mod supervisor;
#[allow(unsafe_code)]
mod sys;
pub mod worker;

use std::os::fd::RawFd;
use std::sync::OnceLock;

pub use ipc::codec::{ProtocolVersion, PROTOCOL_VERSION};
pub use listen::{
    Address, Balance, Kind, ListenAddr, ListenError, ListenOptions, DEFAULT_ACCEPT_PAUSE,
};
pub use master::{
    Event, ExitStatus, Heartbeat, Master, MasterCounters, Output, OutputStream, Settings, SocketId,
    State, WorkerInfo, WorkerStatus,
};
pub use signal::Signal;
pub use supervisor::{Policy, Supervisor};
pub use sys::{SysError, Syscall};
pub use worker::{
    ConnGuard, Listener, SharedServer, StdStream, Stream, UdpSocket, Worker, WorkerEvent,
};

/// A worker's id: 1 for the first worker a master forks, never reused.
pub type WorkerId = u32;

/// The environment variable that makes a process a worker.
pub const ENV_WORKER_ID: &str = "MIO_CLUSTER_WORKER_ID";
/// The environment variable naming the worker's channel descriptor.
pub const ENV_CHANNEL_FD: &str = "MIO_CLUSTER_CHANNEL_FD";
/// The environment variable giving the worker's heartbeat interval (ms).
pub const ENV_HEARTBEAT_MS: &str = "MIO_CLUSTER_HEARTBEAT_MS";
/// The environment variable giving the pid of the master that forked the
/// worker: a process whose parent is another is not a worker.
pub const ENV_MASTER_PID: &str = "MIO_CLUSTER_MASTER_PID";

/// The environment variable giving the protocol version of the master that
/// forked the worker (`MAJOR.MINOR`; see [`ProtocolVersion`]).
pub const ENV_PROTOCOL: &str = "MIO_CLUSTER_PROTOCOL";

/// The exit code of a worker whose master speaks a protocol version it
/// cannot ([`ProtocolVersion::compatible`]): [`Worker::new`] says so, naming
/// both versions, and exits with it (sysexits' `EX_PROTOCOL`).
pub const EXIT_PROTOCOL: i32 = 76;

/// Which side of the cluster this process is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Not started by a master.
    Master,
    /// Started by a master, with this id.
    Worker(WorkerId),
}

#[derive(Debug, Clone, Copy)]
struct WorkerEnv {
    id: WorkerId,
    channel_fd: RawFd,
    heartbeat_ms: Option<u64>,
}

fn worker_env() -> Option<WorkerEnv> {
    static ENV: OnceLock<Option<WorkerEnv>> = OnceLock::new();
    *ENV.get_or_init(|| {
        let var = |k: &str| std::env::var_os(k)?.into_string().ok();
        let id = var(ENV_WORKER_ID)?.parse().ok()?;
        // The variables are inherited by the worker's own children: only
        // the master's child is the worker.
        let master: u32 = var(ENV_MASTER_PID)?.parse().ok()?;
        if master != std::os::unix::process::parent_id() {
            return None;
        }
        let channel_fd = var(ENV_CHANNEL_FD)?.parse().ok()?;
        let hb = std::env::var_os(ENV_HEARTBEAT_MS);
        let heartbeat_ms = hb.and_then(|v| v.to_str()?.parse().ok()).filter(|ms| *ms > 0);
        Some(WorkerEnv { id, channel_fd, heartbeat_ms })
    })
}

/// Whether this process is the master or a worker: a worker has the
/// variables a master sets and that master as its parent. Reads the
/// environment (never changes it) the first time it is called, and answers
/// the same afterwards.
pub fn role() -> Role {
    match worker_env() {
        Some(env) => Role::Worker(env.id),
        None => Role::Master,
    }
}
