//! The worker runtime: the worker's end of the channel, its heartbeats and
//! its accept balance, in an epoll instance of the worker's own (its
//! [`Poll`]), and listening through the master.
//!
//! # A worker's life
//!
//! 1. [`Worker::new`] takes the channel the master left it and tells the
//!    master the worker is online. It fails with `NotFound` in a process
//!    that is not a worker ([`role()`](crate::role)). A worker whose master
//!    speaks an IPC protocol major version it cannot exits there, with
//!    [`EXIT_PROTOCOL`]: the only exit inside the library.
//! 2. [`Worker::listen`] asks the master for a socket and returns a
//!    [`Listener`]; [`Worker::register_listener`] registers it in the
//!    worker's poll (the only way to: [`Listener`] is not a
//!    [`mio::event::Source`]), and [`Worker::accept`] takes its connections,
//!    until `WouldBlock`, on each event of its token ([accept
//!    balance](#accept-balance)). [`Worker::bind_udp`], [`Worker::adopt`]
//!    and [`Worker::close`] do the rest ([listening](#listening)).
//! 3. Once it can serve (after its last listen, with its caches warm), it
//!    may call [`Worker::ready`]. A [`Supervisor`](crate::Supervisor) counts
//!    it as ready from then on, and in a rolling restart replaces a worker
//!    that called it only with one that has called it too.
//! 4. It takes the master's [`WorkerEvent`]s with [`Worker::next_event`]:
//!    - `Disconnect`: leave gracefully. Close every listener, finish the
//!      open connections, then call [`Worker::exit`] with 0. The master has
//!      already taken the worker off its shared sockets. The worker's own
//!      [`Worker::disconnect`] (Node's `worker.disconnect()`) queues it too;
//!    - `Message { payload, fds }`: from the master ([messages](#messages));
//!    - `Drained`: a [`Worker::send`] that failed with `WouldBlock` can be
//!      retried;
//!    - `MasterGone`: the channel closed ([the master's
//!      death](#the-masters-death)).
//! 5. [`Worker::exit`] sends what is still queued to the master (waiting up
//!    to a second) and exits the process with its code.
//!
//! The simple path: the worker's poll is the application's loop.
//!
//! ```no_run
//! use mio::{Events, Interest, Token};
//! use mio_cluster::{ListenOptions, Worker, WorkerEvent};
//!
//! let mut worker = Worker::new()?;
//! let mut listener = worker.listen(&"127.0.0.1:7000".parse()?, ListenOptions::default())?;
//! worker.register_listener(&mut listener, Token(0))?;
//! let mut events = Events::with_capacity(256);
//! loop {
//!     worker.poll(&mut events, None)?;
//!     for event in events.iter() {
//!         if event.token() == Token(0) {
//!             while let Ok(stream) = worker.accept(&listener) {
//!                 drop(stream); // serve it
//!             }
//!         }
//!     }
//!     while let Some(event) = worker.next_event() {
//!         match event {
//!             WorkerEvent::Disconnect => {
//!                 worker.close(listener)?;
//!                 worker.exit(0); // once open connections are done
//!             }
//!             WorkerEvent::MasterGone => worker.exit(0),
//!             _ => {}
//!         }
//!     }
//! }
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! The runtime's own tokens in that poll are [`IPC_TOKEN`] and
//! [`BELL_TOKEN`] (the two highest): the application uses any other, and
//! skips events with these.
//!
//! # Embedding
//!
//! The worker does not need to own the loop. Its poll is one descriptor
//! ([`Worker`] is [`AsRawFd`] and a [`mio::event::Source`]): readable when
//! the runtime or the application has something to do in it. The contract,
//! for any loop (another mio [`Poll`], tokio's `AsyncFd`, `poll(2)`):
//!
//! 1. Register the worker's descriptor, readable, in the loop.
//! 2. Right before each wait, call [`Worker::timeout`] and wait no longer
//!    than it says (`None`: no deadline of the runtime's). It is the next
//!    heartbeat, the moment a listener that stepped aside comes back, or
//!    zero when work is queued; it also marks the worker asleep on its
//!    accept boards.
//! 3. When the descriptor is readable or the timeout passed, call
//!    [`Worker::process`]: it never waits. It hands back the events of the
//!    worker's poll, as [`Worker::poll`] does: the listeners' (registered
//!    with [`Worker::register_listener`], which exists only there) and
//!    those of sources the application registered through
//!    [`Worker::registry`]. Accept until `WouldBlock` on each listener
//!    event, and take [`WorkerEvent`]s with [`Worker::next_event`].
//!
//! Heartbeats are sent from `process` (and `poll`) when due: a loop that
//! does not honour the timeout is taken for hung by a master that asked
//! for heartbeats. Connections may live in the application's own poll.
//!
//! ```no_run
//! use mio::{Events, Interest, Poll, Token};
//! use mio_cluster::{ListenOptions, Worker, WorkerEvent};
//!
//! const WORKER: Token = Token(0);
//! const LISTENER: Token = Token(1);
//!
//! let mut app = Poll::new()?; // the application's loop
//! let mut worker = Worker::new()?;
//! app.registry().register(&mut worker, WORKER, Interest::READABLE)?;
//! let mut listener = worker.listen(&"127.0.0.1:7000".parse()?, ListenOptions::default())?;
//! worker.register_listener(&mut listener, LISTENER)?;
//! let (mut app_events, mut events) = (Events::with_capacity(256), Events::with_capacity(256));
//! loop {
//!     app.poll(&mut app_events, worker.timeout())?;
//!     // ... the application's own events (its connections, timers) ...
//!     worker.process(&mut events)?;
//!     for event in events.iter() {
//!         if event.token() == LISTENER {
//!             while let Ok(stream) = worker.accept(&listener) {
//!                 drop(stream); // register it in `app`, serve it
//!             }
//!         }
//!     }
//!     while let Some(event) = worker.next_event() {
//!         if let WorkerEvent::Disconnect | WorkerEvent::MasterGone = event {
//!             worker.exit(0); // once open connections are done
//!         }
//!     }
//! }
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! With tokio (a current-thread runtime), the same steps around
//! `AsyncFd<Worker>`, each connection a task of its own:
//!
//! ```no_run
//! use std::io;
//! use mio::{Events, Token};
//! use mio_cluster::{ListenOptions, StdStream, Worker, WorkerEvent};
//! use tokio::io::unix::AsyncFd;
//!
//! const LISTENER: Token = Token(0);
//!
//! async fn serve() -> io::Result<()> {
//!     let mut worker = Worker::new()?;
//!     let mut listener = worker.listen(&"127.0.0.1:7000".parse()?, ListenOptions::default())?;
//!     worker.register_listener(&mut listener, LISTENER)?;
//!     // SAFETY: the descriptor is the worker's own epoll instance, which the
//!     // `Worker` keeps open, unchanged, for as long as it lives; the `AsyncFd`
//!     // owns the worker.
//!     let interest = tokio::io::Interest::READABLE;
//!     let mut worker = unsafe { AsyncFd::register_with_interest(worker, interest) }?;
//!     let mut events = Events::with_capacity(256);
//!     loop {
//!         // Wait until the descriptor is readable, or the timeout passes.
//!         let readable = match worker.get_mut().timeout() {
//!             Some(t) => tokio::time::timeout(t, worker.readable()).await.ok(),
//!             None => Some(worker.readable().await),
//!         };
//!         if let Some(guard) = readable {
//!             guard?.clear_ready();
//!         }
//!         worker.get_mut().process(&mut events)?;
//!         for event in events.iter().filter(|e| e.token() == LISTENER) {
//!             while let Ok(stream) = worker.get_mut().accept(&listener) {
//!                 // Counted on the accept board until `guard` drops.
//!                 let (std_stream, guard) = stream.into_std();
//!                 if let StdStream::Tcp(tcp) = std_stream {
//!                     let tcp = tokio::net::TcpStream::from_std(tcp)?;
//!                     tokio::task::spawn_local(async move {
//!                         let _guard = guard;
//!                         # let _ = tcp;
//!                         // serve `tcp`
//!                     });
//!                 }
//!             }
//!         }
//!         while let Some(event) = worker.get_mut().next_event() {
//!             if let WorkerEvent::Disconnect | WorkerEvent::MasterGone = event {
//!                 worker.into_inner().exit(0); // once open connections are done
//!             }
//!         }
//!     }
//! }
//!
//! fn main() -> io::Result<()> {
//!     let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
//!     tokio::task::LocalSet::new().block_on(&rt, serve())
//! }
//! ```
//!
//! Clearing the readiness before `process` loses nothing: what arrives
//! after `process` took the worker's events wakes the outer loop again, and
//! what `process` leaves behind makes `timeout` zero. `examples/tokio_hello.rs`
//! is the whole program: it also lets the connections' tasks run when the
//! timeout is zero, and wakes the loop when a connection ends (see
//! [below](#connections-that-leave-for-another-runtime)).
//!
//! One difference with the simple path: the kernel's one-waiter-per-
//! connection wake-up (`EPOLLEXCLUSIVE`) only holds for a process waiting
//! in the worker's own poll. Nested in another loop, every idle worker is
//! woken for a connection, and the accept board alone keeps the shares
//! even ([`Balance::Even`](crate::Balance::Even)).
//!
//! # Accept balance
//!
//! Every worker accepts directly from the kernel's queue of the shared
//! socket; nothing routes connections, and a worker that dies leaves the
//! queued connections to the others (the queue belongs to the socket the
//! master holds). A worker registers the listener with
//! [`Worker::register_listener`] and takes connections with
//! [`Worker::accept`] until `WouldBlock`; how they are divided is the
//! listen's [`ListenOptions::balance`](crate::ListenOptions::balance), a
//! [`Balance`](crate::Balance):
//!
//! - [`Balance::Even`](crate::Balance::Even) (the default). The listener is
//!   registered with `EPOLLEXCLUSIVE`, so each new connection wakes one idle
//!   worker instead of all of them (no thundering herd), and after a
//!   wake-up's connections the worker moves itself to the back of the queue
//!   of waiting workers (nginx's trick), so connections go round. On top of
//!   that, the workers keep a fair share: with each shared stream socket the
//!   master makes an *accept board* (a sealed 16 KiB memfd every worker
//!   maps) and a *bell* (an eventfd every worker waits on), and gives each
//!   worker a seat. A worker keeps its count of open connections on its
//!   seat (a [`Stream`] counts until it, or the [`ConnGuard`] it leaves, is
//!   dropped) and whether its loop is awake or asleep, and since when.
//!   [`Worker::accept`] takes a connection only while the worker would then
//!   hold at most `ceil((total + 1) / workers) + 1`; over that, it steps out
//!   of the socket's queue, leaves a note on the board that connections
//!   wait, and, if every worker under its share sleeps, rings the bell,
//!   which wakes every sleeper. Awake workers see the note at their next
//!   poll, and one under its share takes the connections. The worker that
//!   stepped aside comes back as soon as it is under its share again, and
//!   after 2 ms at most. Not counted: a worker whose loop has not polled for
//!   50 ms (hung), and one that slept through a ring for 20 ms (stopped). So
//!   a burst of connections onto idle workers spreads evenly, and a new or
//!   respawned worker gets the new connections until it holds its share. A
//!   socket of the worker's own (exclusive or adopted) has no board: only
//!   the turns.
//! - [`Balance::Exclusive`](crate::Balance::Exclusive) `{ pause }`: the same
//!   wake-ups and turns, no board. During a burst onto idle workers, a
//!   worker that took a connection while more are queued, and had nothing
//!   else to do, steps aside for `pause`
//!   ([`DEFAULT_ACCEPT_PAUSE`](crate::DEFAULT_ACCEPT_PAUSE), 50 µs).
//! - [`Balance::Shared`](crate::Balance::Shared): the plain registration;
//!   every worker wakes for every connection and the fastest takes it
//!   (Node's shared-handle mode).
//!
//! On macOS and FreeBSD, which have no `EPOLLEXCLUSIVE`, every waiting
//! worker is woken for each connection: `Even` keeps the shares with the
//! board alone (no bell is needed), and `Exclusive` is `Shared` with turns.
//!
//! The cost of `Even`, when nothing waits: per [`Worker::poll`] (or
//! `timeout` and `process`), two clock reads (vDSO), two stores to the
//! worker's own seat and a fence; per accepted connection, a scan of the
//! seats in use; per wake-up that took connections, a delete and an add of
//! the epoll registration (the turns). The master counts each worker's
//! accepted connections from the boards ([`Master::status`](crate::Master::status),
//! `Event::Exit`); the design guide (`docs/design.md`) and the measured
//! spreads (`docs/performance.md`) say more.
//!
//! # Listening
//!
//! - [`Worker::listen`] takes a stream address (TCP or Unix;
//!   [`ListenAddr`](crate::ListenAddr) parses `HOST:PORT`, `[V6]:PORT`,
//!   `fd:N`, `unix:PATH` and `unix:@NAME`) and [`Worker::bind_udp`] a UDP
//!   one (`udp:HOST:PORT`, `udp:fd:N`); `systemd:NAME`, a socket systemd
//!   passed the master, goes to whichever fits its kind. Both ask
//!   the master, which binds once per key and hands every worker asking the
//!   same a duplicate ([the socket registry](crate::master#the-socket-registry)),
//!   and wait up to [`LISTEN_TIMEOUT`] for its answer; events that arrive
//!   meanwhile are kept for [`Worker::next_event`].
//! - [`ListenOptions::exclusive`](crate::ListenOptions::exclusive) binds in
//!   the worker itself, and [`Worker::adopt`] serves a socket the worker
//!   already holds: the master is only told.
//! - A failed listen is an `io::Error` of the errno's kind, holding a
//!   [`ListenError`](crate::ListenError) that names the errno, the syscall
//!   and the address.
//! - [`Worker::close`] deregisters a server and tells the master this
//!   worker left its key; the master closes the socket when its last worker
//!   leaves it, unless it keeps it for a worker to come.
//!
//! # Messages
//!
//! [`Worker::send`] sends the master bytes and descriptors, which it gets as
//! [`Event::Message`](crate::Event::Message); the master's
//! [`Master::send`](crate::Master::send) arrives as [`WorkerEvent::Message`].
//! Neither blocks: past the queue's limit a send fails with `WouldBlock` and
//! [`WorkerEvent::Drained`] says when to retry. The limits and the rest are
//! in the [master's docs](crate::master#messages).
//!
//! # The master's death
//!
//! When the channel closes (the master died, or dropped this worker), the
//! runtime queues [`WorkerEvent::MasterGone`] once and stops using the
//! channel; sends fail with `NotConnected`. Nothing exits inside the
//! library: close the listeners, finish what is quick, and exit. A master
//! that dies also sends every worker
//! [`MASTER_DEATH_SIGNAL`](crate::master::MASTER_DEATH_SIGNAL)
//! (`SIGTERM`; on Linux and FreeBSD), which ends a worker at once unless it
//! handles or blocks the signal: a server that wants to finish its requests
//! does. On macOS, where nothing sends it, a worker learns of its master's
//! death only from the channel, at its next poll.
//!
//! # Connections that leave for another runtime
//!
//! [`Stream::into_std`] gives the connection as a std stream, and a
//! [`ConnGuard`] that keeps it counted as one of this worker's open
//! connections on the accept board until it is dropped.
//!
//! Dropping a guard does not wake the worker's descriptor. A listener that
//! stepped aside (this worker over its share) comes back at the next
//! [`Worker::process`] and [`Worker::timeout`] that find the worker under
//! its share, or after [`Worker::timeout`]'s deadline (up to 2 ms): wake
//! the loop when a connection ends, as `examples/tokio_hello.rs` does, or
//! short connections wait out that deadline.

mod listener;
mod listening;
mod messages;
mod runtime;

use std::collections::{HashMap, VecDeque};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use mio::event::Source;
use mio::unix::SourceFd;
use mio::{Interest, Poll, Registry, Token};

use crate::balance::Balancer;
use crate::ipc::channel::Channel;
use crate::ipc::codec::{ProtocolVersion, PROTOCOL_VERSION};
use crate::ipc::Message;
use crate::{worker_env, WorkerId, ENV_PROTOCOL, EXIT_PROTOCOL};
use listening::{IndexKey, IndexSet};

pub use listener::{ConnGuard, Listener, SharedServer, StdStream, Stream, UdpSocket};

/// The token of the worker's channel in its [`Poll`]. The runtime's own
/// tokens are this one and [`BELL_TOKEN`] (the two highest): the
/// application uses any other, and skips events with these.
pub const IPC_TOKEN: Token = Token(usize::MAX - 1);
/// The token of the accept boards' bells in the worker's [`Poll`] (with
/// [`Balance::Even`](crate::Balance::Even) on a shared socket): the runtime's own, like
/// [`IPC_TOKEN`]. Apart from the channel's, so that a ring costs no read of
/// the channel.
pub const BELL_TOKEN: Token = Token(usize::MAX);
/// How long [`Worker::listen`] waits for the master's answer.
pub const LISTEN_TIMEOUT: Duration = Duration::from_secs(30);

/// What the master (or the runtime) tells the worker's code.
#[derive(Debug)]
#[non_exhaustive]
pub enum WorkerEvent {
    /// Leave gracefully: close every listener, finish open connections, then
    /// call [`Worker::exit`] with 0. The master has already stopped counting
    /// this worker on its shared sockets.
    Disconnect,
    /// A message from the master, with any descriptors attached.
    #[non_exhaustive]
    Message {
        /// The bytes.
        payload: Vec<u8>,
        /// Descriptors, now owned by this worker.
        fds: Vec<OwnedFd>,
    },
    /// A [`Worker::send`] that failed with `WouldBlock` can be retried.
    Drained,
    /// The master is gone: its end of the channel closed (it died, or it
    /// dropped this worker). Queued once. From here on the runtime no longer
    /// touches the channel: [`Worker::send`], [`Worker::ready`],
    /// [`Worker::listen`] and the like fail with `NotConnected`, and no
    /// heartbeat is sent. Stop accepting (close the listeners), finish what
    /// is quick to finish, and exit. (When the master dies, the worker also
    /// gets [`MASTER_DEATH_SIGNAL`](crate::master::MASTER_DEATH_SIGNAL),
    /// which ends it at once unless it handles or blocks that signal.)
    MasterGone,
}

/// The worker's side of the cluster. See the [module docs](self).
pub struct Worker {
    id: WorkerId,
    /// Before `poll`, so that it detaches the listeners before the poll
    /// closes.
    balance: Balancer,
    poll: Poll,
    channel: Channel,
    seq: u32,
    indexes: HashMap<IndexKey, IndexSet>,
    queue: VecDeque<WorkerEvent>,
    leaving: bool,
    again: bool,
    want_drained: bool,
    /// Heartbeat interval, when the master asked for heartbeats.
    heartbeat: Option<Duration>,
    /// When the next heartbeat is due (monotonic ns, as `balance::Now`).
    next_heartbeat: u64,
    /// Listen requests given up on (timed out) whose reply may still come.
    abandoned: Vec<u32>,
    /// The channel reached its end (or the peer reset it): the master is
    /// gone, and [`WorkerEvent::MasterGone`] was queued.
    gone: bool,
    /// The seats were marked asleep and the listeners put back since the
    /// last turn ([`Worker::timeout`]); the next turn need not do it.
    prepared: bool,
    /// When a listener that stepped aside must be put back (monotonic ns).
    comeback: Option<u64>,
    /// The last turn filled `events`: more may be ready.
    full: bool,
    /// An error of the work done in [`Worker::timeout`], for the next turn.
    deferred: Option<io::Error>,
}

/// The master's protocol version, from [`ENV_PROTOCOL`]: a master that
/// sets none is from before versions.
fn master_version() -> ProtocolVersion {
    let v = std::env::var(ENV_PROTOCOL).ok();
    v.and_then(|v| v.parse().ok()).unwrap_or(ProtocolVersion::UNVERSIONED)
}

/// The protocol version this worker announces: [`PROTOCOL_VERSION`], or,
/// for the crate's tests (the `fuzzing` feature only), the one in
/// `MIO_CLUSTER_TEST_PROTOCOL`, to play a build of another version.
fn claimed_version() -> ProtocolVersion {
    #[cfg(feature = "fuzzing")]
    if let Some(v) = std::env::var("MIO_CLUSTER_TEST_PROTOCOL").ok().and_then(|v| v.parse().ok()) {
        return v;
    }
    PROTOCOL_VERSION
}

impl Worker {
    /// Connects to the master through the inherited channel and tells it the
    /// worker is online. Fails with `NotFound` in a process that is not a
    /// worker, or if called twice.
    ///
    /// A master whose protocol version this worker cannot speak
    /// ([`ProtocolVersion::compatible`], read from
    /// [`ENV_PROTOCOL`]) is told the worker's version,
    /// the error is logged naming both versions, and the process exits with
    /// [`EXIT_PROTOCOL`]: the only exit inside the
    /// library, since such a worker can do nothing its master understands.
    pub fn new() -> io::Result<Worker> {
        static TAKEN: AtomicBool = AtomicBool::new(false);
        let env = worker_env().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                "not a worker: no MIO_CLUSTER_WORKER_ID in the environment",
            )
        })?;
        if TAKEN.swap(true, Ordering::SeqCst) {
            return Err(io::Error::new(io::ErrorKind::AlreadyExists, "Worker::new called twice"));
        }
        let fd = crate::sys::fd::take_inherited_socket(env.channel_fd)?;
        let poll = Poll::new()?;
        let mut channel = Channel::new(fd);
        poll.registry().register(
            &mut channel,
            IPC_TOKEN,
            Interest::READABLE | Interest::WRITABLE,
        )?;
        let mut w = Worker {
            id: env.id,
            balance: Balancer::new(poll.as_raw_fd()),
            poll,
            channel,
            seq: 0,
            indexes: HashMap::new(),
            queue: VecDeque::new(),
            leaving: false,
            again: false,
            want_drained: false,
            heartbeat: env.heartbeat_ms.map(Duration::from_millis),
            next_heartbeat: 0,
            abandoned: Vec::new(),
            gone: false,
            prepared: false,
            comeback: None,
            full: false,
            deferred: None,
        };
        let (ours, masters) = (claimed_version(), master_version());
        w.channel.queue(&Message::Online { version: ours }, Vec::new())?;
        w.channel.flush()?;
        if !ours.compatible(masters) {
            let what = format!(
                "worker {}: this program speaks IPC protocol {ours}, its master {masters}; \
                 the major versions must match; exiting with code {EXIT_PROTOCOL}",
                w.id
            );
            if log::log_enabled!(log::Level::Error) {
                log::error!("{what}");
            } else {
                eprintln!("{what}");
            }
            w.exit(EXIT_PROTOCOL);
        }
        log::debug!("worker {} online (pid {}, protocol {ours})", w.id, std::process::id());
        Ok(w)
    }

    /// This worker's id.
    pub fn id(&self) -> WorkerId {
        self.id
    }

    /// The registry of the worker's poll, for the application's sources.
    /// Any token but [`IPC_TOKEN`] and [`BELL_TOKEN`].
    pub fn registry(&self) -> &mio::Registry {
        self.poll.registry()
    }

    /// Takes the next event from the master.
    pub fn next_event(&mut self) -> Option<WorkerEvent> {
        self.queue.pop_front()
    }

    /// The channel's socket, for tests: only with the `fuzzing` feature, not
    /// part of the stable API. Writing to it bypasses the protocol and makes
    /// the master drop this worker.
    #[cfg(feature = "fuzzing")]
    pub fn channel_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.channel.socket_fd()
    }

    /// True once the worker was asked to leave, or asked itself.
    pub fn is_leaving(&self) -> bool {
        self.leaving
    }
}

impl AsRawFd for Worker {
    /// The worker's own epoll instance, where its channel, its listeners
    /// and their bells (and whatever the application registered through
    /// [`Worker::registry`]) are registered: readable when the worker has
    /// something to do. Wait on it in another loop, then call
    /// [`Worker::process`] (see the [module docs](self#embedding)).
    fn as_raw_fd(&self) -> RawFd {
        self.poll.as_raw_fd()
    }
}

impl Source for Worker {
    /// Registers the worker's descriptor ([`AsRawFd`]) in another poll,
    /// readable; call [`Worker::process`] on its events.
    fn register(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        SourceFd(&self.poll.as_raw_fd()).register(r, t, i)
    }
    fn reregister(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        SourceFd(&self.poll.as_raw_fd()).reregister(r, t, i)
    }
    fn deregister(&mut self, r: &Registry) -> io::Result<()> {
        SourceFd(&self.poll.as_raw_fd()).deregister(r)
    }
}
