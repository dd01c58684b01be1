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
//!    worker, runs its reactor and takes its [`Event`]s with
//!    [`Master::next_event`]. Per worker, in order: `Fork`, `Online`,
//!    `Listening` (once per server), `Ready` (if the worker says so),
//!    `Leaving` (if it was asked to leave, or chose to), `Disconnect` and
//!    `Exit`; heartbeats, messages and output come in between ([the events
//!    in order](crate::master#events-in-order)). To keep a pool (a target
//!    count, respawn, rolling restarts, heartbeats), a [`Supervisor`] drives
//!    the master through its public API, as PM2 sits on Node's cluster
//!    ([its rules](crate::supervisor#the-rules)).
//! 3. A worker creates a [`Worker`] (which tells the master it is online),
//!    calls [`Worker::listen`], registers the [`Listener`] in its loop
//!    ([`Worker::register_listener`]) and takes connections with
//!    [`Worker::accept`], which keeps the workers to a fair share of them
//!    ([accept balance](crate::worker#accept-balance)). It takes the
//!    master's [`WorkerEvent`]s with [`Worker::next_event`].
//! 4. [`Master::disconnect`] asks a worker to leave: the master takes it off
//!    its shared sockets at once, and the worker ([`WorkerEvent::Disconnect`])
//!    closes its listeners, finishes its connections, and exits 0; one that
//!    outlives [`Settings::disconnect_timeout`] is killed. When the master
//!    dies, however it dies, each worker gets
//!    [`master::MASTER_DEATH_SIGNAL`] (`SIGTERM`) on Linux and FreeBSD, even
//!    one whose loop is busy or hung: without a handler, it is gone at once.
//!    A worker whose loop runs also gets [`WorkerEvent::MasterGone`] when its
//!    channel closes (on macOS, its only news of it), and exits when it is
//!    done.
//!
//! # The loop
//!
//! No part of the crate needs to own the process's loop. [`Master`],
//! [`Worker`] and the production master ([`host::manager::Manager`]) each
//! offer a loop of their own (`poll`, or `run`) for a process that has
//! nothing else to wait for, and each is also a [`mio::event::Source`], one
//! descriptor, to register in the application's loop: another mio `Poll`,
//! or tokio through `AsyncFd`. There, each keeps the same contract:
//!
//! 1. Before every wait, ask its `timeout()` and wait no longer than it says
//!    (`None`: only readiness brings work; zero: work is pending).
//! 2. After every wait, whatever woke the loop, call its `process()` once:
//!    one turn that never waits.
//! 3. Take its events with `next_event()` until `None`.
//!
//! A [`Supervisor`] rides on its master's registration: its `timeout`,
//! `process` and `next_event` take the master's place.
//!
//! ```no_run
//! use mio::{Events, Interest, Poll, Token};
//! use mio_cluster::{Master, Settings};
//!
//! let mut master = Master::new(Settings::default())?;
//! let mut poll = Poll::new()?; // the application's, with its own sources
//! poll.registry().register(&mut master, Token(0), Interest::READABLE)?;
//! let mut events = Events::with_capacity(128);
//! loop {
//!     poll.poll(&mut events, master.timeout())?; // 1. never past its deadline
//!     // ... the application's own events ...
//!     master.process()?; // 2. one turn, never waits
//!     while let Some(event) = master.next_event() {
//!         // 3. take them all
//!         # let _ = event;
//!     }
//! }
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! In full: the [master's](crate::master#inside-the-applications-own-loop),
//! the [worker's](crate::worker#embedding) (tokio included), the
//! [supervisor's](crate::supervisor#in-the-applications-own-loop) and the
//! [production master's](crate::host#in-the-applications-own-loop).
//!
//! # A whole program
//!
//! One program, both roles: the master forks four workers and replaces those
//! that die; each worker serves `127.0.0.1:7000`.
//!
//! ```no_run
//! use std::io;
//! use mio::{Events, Token};
//! use mio_cluster::{Event, ListenOptions, Master, Role, Settings, Worker, WorkerEvent};
//!
//! fn main() -> io::Result<()> {
//!     match mio_cluster::role() {
//!         Role::Master => master(),
//!         Role::Worker(_) => worker(),
//!     }
//! }
//!
//! fn master() -> io::Result<()> {
//!     let mut master = Master::new(Settings::default())?;
//!     for _ in 0..4 {
//!         master.fork()?;
//!     }
//!     loop {
//!         master.poll(None)?;
//!         while let Some(event) = master.next_event() {
//!             if let Event::Exit { id, status, exited_after_disconnect: false, .. } = event {
//!                 eprintln!("worker {id} died ({status}); forking another");
//!                 master.fork()?;
//!             }
//!         }
//!     }
//! }
//!
//! fn worker() -> io::Result<()> {
//!     let mut worker = Worker::new()?;
//!     let mut listener = worker.listen(&"127.0.0.1:7000".parse()?, ListenOptions::default())?;
//!     worker.register_listener(&mut listener, Token(0))?;
//!     let mut events = Events::with_capacity(256);
//!     loop {
//!         worker.poll(&mut events, None)?;
//!         while let Ok(_stream) = worker.accept(&listener) { /* serve it */ }
//!         while let Some(event) = worker.next_event() {
//!             match event {
//!                 WorkerEvent::Disconnect => {
//!                     worker.close(listener)?;
//!                     worker.exit(0); // once open connections are done
//!                 }
//!                 WorkerEvent::MasterGone => worker.exit(0),
//!                 _ => {}
//!             }
//!         }
//!     }
//! }
//! ```
//!
//! A production master (a pool kept full, signals, systemd, health probes,
//! hot upgrade) is one call: [`host::manager::Manager`].
//!
//! # Where the rest is
//!
//! - [`master`]: the events in order, the operations, the loop contract in
//!   full, the socket registry, messages, and the worker settings
//!   ([`Settings`]).
//! - [`worker`]: a worker's life and events, embedding (tokio included),
//!   the accept balance ([`Balance`]), listening, and the master's death.
//! - [`supervisor`]: the rules that keep a pool full, and [`Policy`].
//! - [`host`]: the production master, and the pieces for systemd,
//!   containers and Kubernetes.
//!
//! The guides are in the repository's `docs/`: operations (deploying a new
//! version, systemd, containers and Kubernetes, signals, exit codes),
//! security, performance, and the design.
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
// The README's Rust example compiles, as a doc test.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeExamples;
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
