//! The master: forks workers, runs the reactor, owns the socket registry.
//!
//! One [`mio::Poll`] inside the master multiplexes every worker's IPC
//! channel, a pidfd per worker (its exit; on macOS and FreeBSD exits come
//! with `SIGCHLD`), a `signalfd` for the signals the master handles (a
//! self-pipe elsewhere), and its output pipes; the master also keeps
//! deadlines (disconnect kills, sockets kept for a worker to come). A turn of
//! that reactor queues [`Event`]s, and [`Master::next_event`] hands them out.
//! No thread is started: the caller's thread is the reactor.
//!
//! The sections below: [the events in order](#events-in-order), [the
//! operations](#operations), the reactor [in a loop of its
//! own](#running-its-own-loop) or [inside the application's
//! loop](#inside-the-applications-own-loop), [the socket
//! registry](#the-socket-registry), [messages](#messages) and [worker
//! settings](#worker-settings). A pool that keeps itself full is a
//! [`Supervisor`](crate::Supervisor)'s work, over this API.
//!
//! # Events in order
//!
//! [`Master::next_event`] hands out the events in the order they happened.
//! Per worker:
//!
//! 1. `Fork { id, pid }`: [`Master::fork`] started it (queued by the call).
//! 2. `Online`: its runtime is up ([`Worker::new`](crate::Worker::new)),
//!    before the worker's own code runs.
//! 3. `Listening { address }`: once per server it listens on, with the bound
//!    address.
//! 4. `Ready`: it called [`Worker::ready`](crate::Worker::ready), usually
//!    after its last listen (optional; it may call it more than once, and
//!    each call is reported when it comes).
//! 5. `Leaving`: it leaves, asked to ([`Master::disconnect`],
//!    [`Master::disconnect_all`]) or of its own accord
//!    ([`Worker::disconnect`](crate::Worker::disconnect)). It is off every
//!    shared socket already; it finishes its open work and exits. Queued when
//!    the master learns of it, so a worker asked to leave before it is online
//!    has it right after `Fork`.
//! 6. `Disconnect`: its channel closed.
//! 7. `Exit { status, exited_after_disconnect, .. }`: the process ended.
//!    [`ExitStatus`] is its code, the signal that ended it, or `Unknown` when
//!    someone else reaped it (`SIGCHLD` ignored, say);
//!    `exited_after_disconnect` says whether it was asked to leave (or chose
//!    to), as opposed to died; with them come the connections it accepted on
//!    shared sockets and its CPU time.
//!
//! A worker that dies skips the steps it did not reach (`Fork`, `Disconnect`,
//! `Exit` for one that died before its runtime came up), and what it sent or
//! wrote before it died is delivered before its `Disconnect` and `Exit`.
//! Before its `Disconnect`, at any time:
//!
//! - `Heartbeat`: every [`Heartbeat::interval`], when
//!   [`Settings::heartbeat`] is set;
//! - `Message { payload, fds }`: bytes and descriptors from the worker
//!   ([messages](#messages));
//! - `Drained`: a [`Master::send`] to it that failed with `WouldBlock` can be
//!   retried.
//!
//! `Output { stream, data }` (with [`Output::Piped`]) comes whenever the
//! worker writes, from its start to its `Exit`. And, about no single worker:
//!
//! - `Signal`: one of [`Settings::signals`] reached the master;
//! - `AllDisconnected { forced }`: after [`Master::disconnect_all`] (or
//!   [`Supervisor::shutdown`](crate::Supervisor::shutdown)), every worker has
//!   exited (and, for a master that is PID 1 or a subreaper, every other
//!   child too); `forced` of them were killed at the deadline;
//! - from a [`Supervisor`](crate::Supervisor) only: `CrashLoop`,
//!   `Unresponsive`, `Recycled`, `RollComplete` and `RollFailed` (see [its
//!   rules](crate::supervisor#the-rules)).
//!
//! [`WorkerInfo::state`] follows the same life, in this order:
//! [`State::None`] (forked), `Online`, `Listening`, `Disconnected` (channel
//! closed), `Dead`.
//!
//! # Operations
//!
//! | method | what it does |
//! |---|---|
//! | [`Master::fork`], [`Master::fork_with_env`] | starts a worker (with extra environment variables for it alone) and queues `Fork` |
//! | [`Master::disconnect`] | asks a worker to leave gracefully: it is off every shared socket at once (`Leaving`), and killed if it has not exited after [`Settings::disconnect_timeout`] |
//! | [`Master::disconnect_all`] | the same for every worker; `AllDisconnected` follows once all have exited |
//! | [`Master::kill`] | sends a worker exactly that signal, through its process handle (a pidfd on Linux), so never to a process that reused its pid |
//! | [`Master::kill_all`] | `SIGKILL` to every worker |
//! | [`Master::send`] | a message to a worker ([messages](#messages)) |
//! | [`Master::worker`], [`Master::workers`] | what the master knows of live workers: pid, [`State`], whether it leaves |
//! | [`Master::status`], [`Master::counters`] | per-worker numbers (uptime, heartbeat, memory, CPU, connections), and the master's own |
//! | [`Master::keep_sockets`] | keeps a worker's shared sockets, with their queued connections, for a worker to come ([the socket registry](#the-socket-registry)) |
//! | [`Master::upgrade`] | a hot upgrade: a new master from the program now at this one's path, handed every listening socket |
//!
//! # Running its own loop
//!
//! The simple path: [`Master::poll`] waits up to its timeout (never past the
//! master's own next deadline), runs one turn, and returns.
//!
//! ```no_run
//! use mio_cluster::{Master, Settings, Event};
//! let mut master = Master::new(Settings::default())?;
//! for _ in 0..4 {
//!     master.fork()?;
//! }
//! loop {
//!     master.poll(None)?;
//!     while let Some(event) = master.next_event() {
//!         match event {
//!             Event::Exit { id, status, .. } => eprintln!("worker {id} exited: {status}"),
//!             other => eprintln!("{other:?}"),
//!         }
//!     }
//! }
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! # Inside the application's own loop
//!
//! `Master` is a [`mio::event::Source`] (its epoll descriptor, readable when
//! it has work; [`AsRawFd`] gives the same descriptor to other loops). The
//! application registers it once, `READABLE`, next to its own sources, and
//! keeps this contract:
//!
//! 1. Before every wait, ask [`Master::timeout`] and wait no longer than it
//!    says (`None`: no deadline of the master's, only readiness brings work;
//!    `Some(ZERO)`: work is pending, do not sleep). Round up, as mio does:
//!    waking early costs a turn that finds nothing due.
//! 2. After every wait (whatever woke it, the master's token or not, or a
//!    signal that interrupted it), call [`Master::process`] once: one
//!    non-blocking turn that reads what is ready and fires what is due.
//! 3. Then take every event with [`Master::next_event`] until `None`. Events
//!    left in the queue keep [`Master::timeout`] at zero.
//!
//! The master's own registration is edge-triggered, like every mio source:
//! a turn that leaves work behind (a budget ran out, more descriptors were
//! ready than one turn takes) says so through a zero timeout, not through
//! another readiness edge. The master's methods (`fork`, `send`,
//! `disconnect`...) can be called between turns, from any of the
//! application's handlers; so can [`Master::poll`] or [`Master::wait`], to
//! wait for the master alone for a while (for [`Event::Drained`], say).
//!
//! ```no_run
//! use mio::{Events, Interest, Poll, Token};
//! use mio_cluster::{Master, Settings};
//! const MASTER: Token = Token(0);
//! let mut poll = Poll::new()?;
//! let mut master = Master::new(Settings::default())?;
//! poll.registry().register(&mut master, MASTER, Interest::READABLE)?;
//! master.fork()?;
//! let mut events = Events::with_capacity(128);
//! loop {
//!     poll.poll(&mut events, master.timeout())?;
//!     for event in events.iter() {
//!         // The application's own sources (MASTER needs nothing here).
//!         # let _ = event;
//!     }
//!     master.process()?;
//!     while let Some(event) = master.next_event() {
//!         eprintln!("{event:?}");
//!     }
//! }
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! `examples/embed.rs` is a whole application built this way (the master,
//! a supervisor and an admin socket in one `Poll`); the examples' shared
//! master ([`host::manager::Manager`](crate::host::manager::Manager)) and the
//! tests' fixture run the same loop. With a
//! [`Supervisor`](crate::Supervisor), its `timeout`, `process` and
//! `next_event` take the place of the master's ([its
//! loop](crate::supervisor#in-the-applications-own-loop)).
//!
//! # The socket registry
//!
//! A worker's [`Worker::listen`](crate::Worker::listen) (or
//! [`Worker::bind_udp`](crate::Worker::bind_udp)) asks the master, with
//! Node's key `(kind, address, port, fd, index)`:
//!
//! - The master binds once per key and keeps the socket; every worker asking
//!   for the same key gets a duplicate of it, so all accept on one kernel
//!   queue.
//! - Port 0 is bound once per key: every worker gets the same port. `index`
//!   counts the servers one worker opened on the same address, so a second
//!   `listen(0)` in a worker gets another port (and every worker's second
//!   server shares that one).
//! - `fd:N` ([`ListenAddr::Fd`](crate::ListenAddr::Fd)) is the *master's*
//!   descriptor N, and only one that was open when the `Master` was created
//!   (inherited ones, or ones the application opened first): never one of
//!   the master's own channels, pidfds or sockets. `systemd:NAME` is a
//!   socket systemd passed ([`host::systemd`](crate::host::systemd)).
//! - Kinds: TCP (`tcp4`/`tcp6` by address); UDP (every worker receives on
//!   the one socket, the kernel picks who gets a datagram); and Unix stream
//!   sockets (`unix:PATH`). A relative path is resolved in the worker; a path
//!   longer than `sun_path` is refused in the worker with `ENAMETOOLONG`,
//!   never truncated; [`ListenOptions::readable_all`](crate::ListenOptions::readable_all)
//!   and [`writable_all`](crate::ListenOptions::writable_all) add read and
//!   write bits for all to the mode the umask gives, as libuv does; a stale
//!   socket file nobody listens on is removed, a live one or a file that is
//!   not a socket is `EADDRINUSE`; the master does all of this with the
//!   worker's credentials, and unlinks the file when the last worker leaves
//!   if it is still the one it bound. `unix:@NAME` is Linux's abstract
//!   namespace.
//! - IPv6: `[::]:0` shared by several workers accepts IPv4 clients unless
//!   [`ListenOptions::ipv6only`](crate::ListenOptions::ipv6only); a v6-only
//!   and an IPv4 socket may share a port number.
//! - [`Worker::adopt`](crate::Worker::adopt) (a socket the worker already
//!   holds) and [`ListenOptions::exclusive`](crate::ListenOptions::exclusive)
//!   bypass the master.
//! - Failures reach the worker as an `io::Error` of the errno's kind holding
//!   a [`ListenError`](crate::ListenError) (errno, syscall, address):
//!   `listen on 127.0.0.1:7000: bind failed: Address already in use (os
//!   error 98)`. The key is forgotten, so a retry binds again. A bound port
//!   that differs from the requested one is `EADDRINUSE`. Each worker's keys
//!   count against [`Settings::fd_budget`]: past it, a listen fails with
//!   `EMFILE` for that worker alone.
//! - When the last worker leaves a key (close, disconnect or death), the
//!   master closes the socket, unless it was asked to keep that worker's
//!   sockets ([`Master::keep_sockets`], as the supervisor does for every
//!   worker it will replace): then the socket, and its queued connections,
//!   stay until a worker started later holds it, or for the longest time
//!   given. Not during a shutdown ([`Master::disconnect_all`]).
//!
//! How the workers then divide a socket's connections is the worker's
//! [accept balance](crate::worker#accept-balance).
//!
//! # Messages
//!
//! [`Master::send`] and [`Worker::send`](crate::Worker::send) carry byte
//! payloads (the application picks the encoding) of up to 16 MiB, with up to
//! 253 descriptors attached; they arrive in order, as [`Event::Message`] and
//! [`WorkerEvent::Message`](crate::WorkerEvent::Message), the descriptors
//! owned by the receiver (the sender's copies are closed once sent). Neither
//! side ever blocks: a message that would take what is queued towards the
//! peer past 64 MiB fails with `WouldBlock`, and [`Event::Drained`] /
//! [`WorkerEvent::Drained`](crate::WorkerEvent::Drained) says when to retry;
//! a message over 16 MiB, or with more than 253 descriptors, is refused with
//! `InvalidInput`, nothing sent. A send to a worker whose channel is closed
//! fails with `NotConnected`; so do a worker's sends once its master is gone.
//! The runtime's own messages (listens, heartbeats, leaving, ready) share
//! the channel, and reach the application only as their own events, never as
//! a `Message`. A worker can hand a connected socket to the master, and the
//! master to another worker.
//!
//! Descriptors that came with a worker's messages count against
//! [`Settings::fd_budget`] until the application takes their events: past
//! it, the master stops reading that worker's channel (its sends queue on
//! its side) until it does.
//!
//! # Worker settings
//!
//! [`Settings`] is Node's `setupPrimary`: [`exec`](Settings::exec) and
//! [`args`](Settings::args) (default: the path this program was started from,
//! and its arguments), [`env`](Settings::env) for every worker and
//! [`Master::fork_with_env`] for one, [`cwd`](Settings::cwd),
//! [`uid`](Settings::uid) and [`gid`](Settings::gid) (the master keeps its
//! privileges, so it can bind port 80 for workers running as `nobody`),
//! [`stdout`](Settings::stdout) and [`stderr`](Settings::stderr)
//! ([`Output::Inherit`], or [`Output::Piped`]: the master reads them in its
//! reactor and delivers `Event::Output`), [`signals`](Settings::signals),
//! [`disconnect_timeout`](Settings::disconnect_timeout),
//! [`heartbeat`](Settings::heartbeat),
//! [`own_process_group`](Settings::own_process_group),
//! [`fd_budget`](Settings::fd_budget) and
//! [`subreaper`](Settings::subreaper). Changes through
//! [`Master::settings_mut`] apply to later forks.
//!
//! - The default `exec` is [`started_program`]: `argv[0]` made absolute
//!   once, the first time `Settings::default()` runs (against the working
//!   directory if it has a `/`, else along `PATH`, as the shell found it),
//!   symbolic links kept. So a worker started after a deploy replaced the
//!   file at that path (an atomic rename, or a switched `current` link) runs
//!   the new program, as Node's cluster re-runs the script. Only if that path
//!   is not this very program at start (same device and inode; an `argv[0]`
//!   that is no path, say) is the running binary the default: on Linux
//!   `/proc/self/exe`, which keeps running the old binary. The choice is
//!   logged at debug level.
//! - `uid` alone gives the worker that user's primary group and
//!   supplementary groups (`initgroups`), never the master's group; `gid`
//!   alone makes that group the worker's only one. The switch (groups, group,
//!   user) happens in the child before `exec`, and the working directory is
//!   entered after it.
//! - A worker dies with its master, however the master dies (Linux and
//!   FreeBSD): it gets [`MASTER_DEATH_SIGNAL`] (`SIGTERM`, asked for after
//!   the switch of credentials), so even a busy or hung worker is gone at
//!   once and frees the ports; an application that handles `SIGTERM` can
//!   finish its connections first (it also gets
//!   [`WorkerEvent::MasterGone`](crate::WorkerEvent::MasterGone)). On macOS
//!   only the channel's close tells it.
//! - A worker is the master's child: [`role()`](crate::role) answers
//!   `Worker` only when the parent is the master named in
//!   `MIO_CLUSTER_MASTER_PID`. The worker's own children inherit the
//!   variables (nothing removes them) but are not workers, so a wrapper in
//!   `exec` must `exec` the program, not fork it.
//! - An application may ignore `SIGCHLD`: while the master spawns a worker,
//!   children that exit stay zombies until the worker's process handle (a
//!   pidfd on Linux) is made, then the disposition is put back; workers are
//!   reaped through that handle, so a reused pid never reaches another
//!   process. A worker reaped by the kernel exits with
//!   [`ExitStatus::Unknown`].

mod channels;
mod credentials;
mod dispatch;
mod event;
pub(crate) mod handover;
mod operations;
mod orphans;
mod output;
mod reactor;
mod registry;
mod settings;
mod spawn;
mod token;
mod unix_socket;
pub(crate) mod upgrade;

use std::collections::{HashMap, VecDeque};
use std::io;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant, SystemTime};

use crate::Signal;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll};
use slab::Slab;

use crate::ipc::channel::Channel;
use crate::sys;
use crate::sys::signal::Signals;
use crate::WorkerId;
use channels::FD_RETRY;
use credentials::Credentials;
use dispatch::LogLimit;
use registry::{FdLimits, SocketRegistry};
use token::Source;

pub use event::{
    Event, ExitStatus, MasterCounters, OutputStream, SocketId, State, WorkerInfo, WorkerStatus,
};
pub use settings::{started_program, Heartbeat, Output, Settings, MASTER_DEATH_SIGNAL};
pub use upgrade::{Upgrade, UpgradeOptions, UpgradeOutcome, DEFAULT_UPGRADE_TIMEOUT, ENV_UPGRADE};

/// Descriptors below `RLIMIT_NOFILE` that no worker's new key may take:
/// kept for the channels, spawns (about 6 each) and listen replies.
const FD_RESERVE: usize = 64;
/// A reactor turn this much later than its timeout means the master itself
/// was not running.
const STALL: Duration = Duration::from_millis(500);

struct WorkerEntry {
    info: WorkerInfo,
    /// Its process: exit, reaping, signals.
    process: sys::process::ProcessHandle,
    channel: Option<Channel>,
    kill_at: Option<Instant>,
    want_drained: bool,
    /// Keep its sockets open this long for a worker to come when it leaves
    /// them ([`Master::keep_sockets`]).
    keep: Option<Duration>,
    started: Instant,
    started_at: SystemTime,
    last_heartbeat: Option<Instant>,
    /// Piped stdout and stderr, while open.
    output: [Option<std::fs::File>; 2],
    /// The master killed it (a deadline, a hung heartbeat, a forced
    /// shutdown); counted in [`Event::AllDisconnected`].
    forced: bool,
    /// Who it runs as, when not as the master: the master does the
    /// file-system work this worker asks for with these credentials.
    creds: Option<Credentials>,
    /// Its refused listens, as logged.
    refusals: LogLimit,
    /// Descriptors that came with its messages, in events not yet taken.
    untaken_fds: usize,
    /// Its channel is not read until the application takes its events.
    fd_paused: bool,
    /// [`Event::Online`] was reported. Kept apart from its state, which
    /// says `Dead` once its exit is seen: the `Online` frame it sent
    /// before it died may be read only then, and is still reported.
    online_reported: bool,
}

impl WorkerEntry {
    fn signal(&self, signal: Signal) -> io::Result<()> {
        self.process.signal(signal.as_raw())
    }
}

/// The master process's side of the cluster. See the [module docs](self).
pub struct Master {
    poll: Poll,
    events: Option<Events>,
    settings: Settings,
    workers: Slab<WorkerEntry>,
    ids: HashMap<WorkerId, usize>,
    next_id: WorkerId,
    sockets: SocketRegistry,
    signals: Option<Signals>,
    queue: VecDeque<Event>,
    again: Vec<usize>,
    /// Workers whose turn ran out on listens, and when they are read again.
    resting: Vec<(usize, Instant)>,
    /// Output pipes whose reads were cut short by the budget.
    again_output: Vec<(usize, OutputStream)>,
    disconnecting_all: bool,
    /// Workers killed by a deadline while disconnecting all.
    forced: usize,
    /// The earliest deadline at the end of the last turn (or that end): a
    /// turn far past it means the master was not run (stopped, or not
    /// called).
    due: Option<Instant>,
    /// The last turn took as many events as it had room for: more may be
    /// ready.
    more_ready: bool,
    /// [`Settings::fd_budget`], lowered to what `RLIMIT_NOFILE` allows.
    fd_budget: usize,
    /// The soft `RLIMIT_NOFILE`.
    fd_limit: usize,
    /// Descriptors open at the last count, and an upper bound of those the
    /// master opened or received since (closing is not subtracted).
    fds_counted: usize,
    fds_received: usize,
    /// Workers whose channel waits for descriptors to be free.
    fd_starved: Vec<usize>,
    /// PID 1 or a subreaper: reaps the children that are not workers.
    reaper: Option<crate::host::reaper::Reaper>,
    /// In the new master of a hot upgrade: what the old one handed over.
    handover: Option<handover::Handover>,
    /// Frames and refusals counted since the start.
    counters: MasterCounters,
}

impl Master {
    /// Creates the reactor; starts no worker. Blocks [`Settings::signals`]
    /// and reads them from a `signalfd` from now on.
    ///
    /// The descriptors open at this moment are the ones a worker may name
    /// with `fd:N` (inherited sockets, or ones the application opened first);
    /// the master's own never are. Each is recorded with its identity
    /// (device and inode): if the application closes one and the number is
    /// reused, `fd:N` is refused with `EBADF`.
    ///
    /// Raises the soft `RLIMIT_NOFILE` to the hard limit.
    ///
    /// In the new master of a hot upgrade ([`ENV_UPGRADE`] set, by
    /// [`Master::upgrade`]), takes over the old master's listening sockets:
    /// its workers get the same ones.
    pub fn new(settings: Settings) -> io::Result<Master> {
        // Socket activation: takes systemd's sockets (or, in the new master
        // of a hot upgrade, the old one's names for them) and removes its
        // variables before any worker is forked.
        let plan = handover::Plan::from_env()?;
        crate::listen::activation::take(plan.is_some());
        let inherited = sys::fd::open_fds()?;
        let limit = sys::fd::raise_nofile_limit()?;
        let room = usize::try_from(limit).unwrap_or(usize::MAX).saturating_sub(FD_RESERVE);
        let fd_budget = settings.fd_budget.min(room / 2);
        log::debug!(
            "RLIMIT_NOFILE {limit}; {FD_RESERVE} kept in reserve; {fd_budget} descriptors per worker"
        );
        let limits = FdLimits { budget: fd_budget, limit, reserve: FD_RESERVE };
        let poll = Poll::new()?;
        let reaper = crate::host::reaper::Reaper::new(settings.subreaper)?;
        let mut wanted = settings.signals.clone();
        // Exits come with SIGCHLD where no pidfd reports them.
        let reaps_on_sigchld = reaper.is_some() || sys::process::EXITS_NEED_SIGCHLD;
        if reaps_on_sigchld && !wanted.contains(&Signal::SIGCHLD) {
            wanted.push(Signal::SIGCHLD);
        }
        let signals = if wanted.is_empty() {
            None
        } else {
            let s = Signals::new(&wanted)?;
            poll.registry().register(
                &mut SourceFd(&s.as_raw_fd()),
                Source::Signals.token(),
                Interest::READABLE,
            )?;
            Some(s)
        };
        let mut master = Master {
            poll,
            events: Some(Events::with_capacity(256)),
            settings,
            workers: Slab::new(),
            ids: HashMap::new(),
            next_id: 1,
            sockets: SocketRegistry::with_inherited(inherited, limits),
            signals,
            queue: VecDeque::new(),
            again: Vec::new(),
            resting: Vec::new(),
            again_output: Vec::new(),
            disconnecting_all: false,
            forced: 0,
            due: None,
            more_ready: false,
            fd_budget,
            fd_limit: usize::try_from(limit).unwrap_or(usize::MAX),
            fds_counted: sys::fd::count_open_fds()?,
            fds_received: 0,
            fd_starved: Vec::new(),
            reaper,
            handover: None,
            counters: MasterCounters::default(),
        };
        if let Some(plan) = plan {
            let handover = plan.take(&mut master.sockets).map_err(|why| {
                io::Error::new(io::ErrorKind::InvalidInput, format!("{ENV_UPGRADE}: {why}"))
            })?;
            master.handover = Some(handover);
        }
        Ok(master)
    }

    /// The settings workers are started with.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The settings workers are started with; changes apply to later forks.
    pub fn settings_mut(&mut self) -> &mut Settings {
        &mut self.settings
    }

    /// Takes the next queued event.
    pub fn next_event(&mut self) -> Option<Event> {
        let event = self.queue.pop_front()?;
        if let Event::Message { id, fds, .. } = &event {
            if !fds.is_empty() {
                self.fds_taken(*id, fds.len());
            }
        }
        Some(event)
    }

    /// Runs reactor turns until an event is queued or `timeout` passes, and
    /// returns that event.
    pub fn wait(&mut self, timeout: Option<Duration>) -> io::Result<Option<Event>> {
        let deadline = timeout.map(|t| crate::deadline::after(Instant::now(), t));
        loop {
            if let Some(e) = self.next_event() {
                return Ok(Some(e));
            }
            let left = match deadline {
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return Ok(None);
                    }
                    Some(d - now)
                }
                None => None,
            };
            self.poll(left)?;
        }
    }

    /// One reactor turn: waits up to `timeout` (forever with `None`, but never
    /// past [`Master::timeout`], the master's own next deadline) and queues
    /// what happened. An idle master with no deadline sleeps in `epoll_wait`
    /// and does no work.
    pub fn poll(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        let timeout = match (timeout, self.timeout()) {
            (Some(asked), Some(own)) => Some(asked.min(own)),
            (asked, own) => asked.or(own),
        };
        self.turn(timeout)
    }

    /// One turn that never waits: reads what is ready, fires the deadlines
    /// that are due, and queues what happened. For a master inside the
    /// application's loop: call it after every wait of that loop (see the
    /// [module docs](self)).
    pub fn process(&mut self) -> io::Result<()> {
        self.turn(Some(Duration::ZERO))
    }

    /// How long the application's loop may wait before it calls
    /// [`Master::process`]: until the master's next deadline (a worker to
    /// kill after its disconnect timeout, a kept socket to close); zero
    /// while work is
    /// pending (events not taken yet, a worker whose turn was cut short);
    /// `None` when only readiness can bring work.
    pub fn timeout(&self) -> Option<Duration> {
        if self.more_ready
            || !self.again.is_empty()
            || !self.again_output.is_empty()
            || !self.queue.is_empty()
        {
            return Some(Duration::ZERO);
        }
        let mut timeout =
            self.next_deadline().map(|next| next.saturating_duration_since(Instant::now()));
        if !self.fd_starved.is_empty() {
            timeout = Some(timeout.map_or(FD_RETRY, |t| t.min(FD_RETRY)));
        }
        // A worker resting after a turn spent on listens is served when
        // its rest is over.
        if let Some(next) = self.resting.iter().map(|&(_, t)| t).min() {
            let left = next.saturating_duration_since(Instant::now());
            timeout = Some(timeout.map_or(left, |t| t.min(left)));
        }
        timeout
    }
}

/// Held by the unit tests that make a [`Master`]: with signals read
/// through a self-pipe (macOS, FreeBSD, `portable-backend`) a process has
/// one master at a time, and the test harness runs tests on threads.
#[cfg(test)]
pub(crate) fn one_master_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
