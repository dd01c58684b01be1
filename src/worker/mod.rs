//! The worker runtime: the worker's end of the channel, its heartbeats and
//! its accept balance, in an epoll instance of the worker's own (its
//! [`Poll`]), and listening through the master.
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
//! `AsyncFd<Worker>` (`examples/tokio_hello.rs` is the whole program):
//!
//! ```text
//! // SAFETY: the worker owns its epoll descriptor for as long as it lives.
//! let worker = unsafe { AsyncFd::register_with_interest(Worker::new()?, Interest::READABLE) }?;
//! loop {
//!     let timeout = worker.get_mut().timeout();   // (AsyncFd::get_mut)
//!     tokio::select! {
//!         guard = worker.readable() => guard?.clear_ready(),
//!         _ = sleep_or_pending(timeout) => {}
//!     }
//!     worker.get_mut().process(&mut events)?;
//!     // accept on the listener's events; each stream goes to tokio as
//!     // `Stream::into_std` + `TcpStream::from_std`, its `ConnGuard`
//!     // dropped when the task ends; then `next_event`.
//! }
//! ```
//!
//! Clearing the readiness before `process` loses nothing: what arrives
//! after `process` took the worker's events wakes the outer loop again, and
//! what `process` leaves behind makes `timeout` zero.
//!
//! One difference with the simple path: the kernel's one-waiter-per-
//! connection wake-up (`EPOLLEXCLUSIVE`) only holds for a process waiting
//! in the worker's own poll. Nested in another loop, every idle worker is
//! woken for a connection, and the accept board alone keeps the shares
//! even ([`Balance::Even`]).
//!
//! # The master's death
//!
//! When the channel closes (the master died, or dropped this worker), the
//! runtime queues [`WorkerEvent::MasterGone`] once and stops using the
//! channel; sends fail with `NotConnected`. Nothing exits inside the
//! library: close the listeners, finish what is quick, and exit. A master
//! that dies also sends every worker
//! [`MASTER_DEATH_SIGNAL`](crate::master::MASTER_DEATH_SIGNAL)
//! (`SIGTERM`), which ends a worker at once unless it handles or blocks
//! the signal: a server that wants to finish its requests does.
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

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mio::event::Source;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Registry, Token};
use nix::poll::{PollFd, PollFlags, PollTimeout};

use crate::balance::{Balancer, BoardFds, Now, Seat};
use crate::ipc::channel::{is_peer_gone, Channel, ReadStatus, ReadTurn};
use crate::ipc::{ListenRequest, Message};
use crate::listen::{Balance, Kind, ListenAddr, ListenError, ListenOptions};
use crate::sys::socket::{self, BindOptions, Transport};
use crate::{worker_env, WorkerId};

pub use listener::{ConnGuard, Listener, SharedServer, StdStream, Stream, UdpSocket};

/// The token of the worker's channel in its [`Poll`]. The runtime's own
/// tokens are this one and [`BELL_TOKEN`] (the two highest): the
/// application uses any other, and skips events with these.
pub const IPC_TOKEN: Token = Token(usize::MAX - 1);
/// The token of the accept boards' bells in the worker's [`Poll`] (with
/// [`Balance::Even`] on a shared socket): the runtime's own, like
/// [`IPC_TOKEN`]. Apart from the channel's, so that a ring costs no read of
/// the channel.
pub const BELL_TOKEN: Token = Token(usize::MAX);
/// How long [`Worker::listen`] waits for the master's answer.
pub const LISTEN_TIMEOUT: Duration = Duration::from_secs(30);

/// What the master (or the runtime) tells the worker's code.
#[derive(Debug)]
pub enum WorkerEvent {
    /// Leave gracefully: close every listener, finish open connections, then
    /// call [`Worker::exit`] with 0. The master has already stopped counting
    /// this worker on its shared sockets.
    Disconnect,
    /// A message from the master, with any descriptors attached.
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

type IndexKey = (Kind, Vec<u8>, u16, i32);

/// Which indexes of one `(kind, address, port, fd)` this worker holds open.
#[derive(Default)]
struct IndexSet {
    next: u32,
    open: Vec<u32>,
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
    /// When the next heartbeat is due (monotonic ns, as [`Now`]).
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

enum Reply {
    Ok { handle: u32, fd: OwnedFd, board: Option<BoardFds> },
    Err(crate::SysError),
}

impl Worker {
    /// Connects to the master through the inherited channel and tells it the
    /// worker is online. Fails with `NotFound` in a process that is not a
    /// worker, or if called twice.
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
        w.channel.queue(&Message::Online, Vec::new())?;
        w.channel.flush()?;
        log::debug!("worker {} online (pid {})", w.id, std::process::id());
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

    /// Waits for readiness like [`Poll::poll`], handles the channel's own
    /// events, and leaves all events in `events` (skip [`IPC_TOKEN`] and
    /// [`BELL_TOKEN`]). Then take [`WorkerEvent`]s with
    /// [`Worker::next_event`]. The wait is cut short by the runtime's own
    /// deadlines ([`Worker::timeout`]).
    ///
    /// This is the simple path, for a worker whose loop is this poll. A
    /// loop of the application's own (another mio `Poll`, tokio) uses
    /// [`Worker::timeout`] and [`Worker::process`] instead: see the
    /// [module docs](self#embedding).
    ///
    /// When the master asked for heartbeats, they are sent from here (and
    /// from [`Worker::process`]): a loop that stops running the runtime for
    /// longer than the master's timeout is taken for hung and killed.
    pub fn poll(&mut self, events: &mut Events, timeout: Option<Duration>) -> io::Result<()> {
        let due = self.timeout();
        let timeout = match (timeout, due) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.turn(events, timeout)
    }

    /// Runs one turn of the runtime without waiting: takes what is ready in
    /// the worker's poll into `events` (the application's events are left
    /// there, as with [`Worker::poll`]; skip [`IPC_TOKEN`] and
    /// [`BELL_TOKEN`]), reads the channel, sends a heartbeat if one is due.
    /// Then take [`WorkerEvent`]s with [`Worker::next_event`].
    ///
    /// Call it when the worker's descriptor ([`AsRawFd`]) is readable, and
    /// when [`Worker::timeout`] has passed.
    pub fn process(&mut self, events: &mut Events) -> io::Result<()> {
        self.turn(events, Some(Duration::ZERO))
    }

    /// How long the application's loop may wait before it must call
    /// [`Worker::process`], when the worker's descriptor stays quiet:
    /// `Some(ZERO)` when work is queued (events not taken, a channel read
    /// cut short, a full `events`), else the next heartbeat or the moment a
    /// listener that stepped aside comes back; `None` if nothing is due.
    ///
    /// Call it right before the loop waits, every time: it also marks this
    /// worker asleep on its accept boards (so that the others wake it for
    /// the connections they leave to it) and puts back the listeners that
    /// stepped aside once they may take connections again.
    pub fn timeout(&mut self) -> Option<Duration> {
        // One clock reading for the balance and the deadlines.
        let mut now = Now::default();
        if !self.prepared {
            self.prepared = true;
            match self.balance.before_poll(&mut now) {
                Ok(back) => self.comeback = back.map(|b| now.ns() + b.as_nanos() as u64),
                Err(e) => self.deferred = Some(e),
            }
        }
        if self.again || self.full || self.deferred.is_some() || !self.queue.is_empty() {
            return Some(Duration::ZERO);
        }
        let heartbeat = self.heartbeat.filter(|_| !self.gone).map(|_| self.next_heartbeat);
        let due = match (heartbeat, self.comeback) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        // The clock is read only when something is due.
        due.map(|d| Duration::from_nanos(d.saturating_sub(now.ns())))
    }

    /// One turn: the wait (up to `timeout`), then the runtime's work.
    fn turn(&mut self, events: &mut Events, timeout: Option<Duration>) -> io::Result<()> {
        if !self.prepared {
            // Not prepared by `timeout`: put back the listeners due now.
            if let Err(e) = self.balance.before_poll(&mut Now::default()) {
                self.deferred = Some(e);
            }
        }
        self.prepared = false;
        self.comeback = None;
        if let Some(e) = self.deferred.take() {
            events.clear();
            return Err(e);
        }
        let polled = self.poll.poll(events, timeout);
        // One clock reading after the wait, for the seats and the heartbeat.
        let mut now = Now::default();
        self.balance.after_poll(&mut now);
        match polled {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                events.clear();
                return Ok(());
            }
            Err(e) => return Err(e),
        }
        if let (Some(interval), false) = (self.heartbeat, self.gone) {
            let now = now.ns();
            if now >= self.next_heartbeat {
                self.next_heartbeat = now + interval.as_nanos() as u64;
                self.channel.queue(&Message::Heartbeat, Vec::new())?;
                self.flush()?;
            }
        }
        // One pass: is the channel ready, did a bell ring, and how much
        // work came for the application (readable events; a fresh
        // connection's first writable edge is not work).
        let (mut ipc, mut bell, mut readable, mut n) = (false, false, 0, 0);
        for e in events.iter() {
            n += 1;
            match e.token() {
                IPC_TOKEN => ipc = true,
                BELL_TOKEN => bell = true,
                _ if e.is_readable() => readable += 1,
                _ => {}
            }
        }
        self.balance.set_idle_but_accepting(readable <= 1);
        // A full `events` may have left readiness in the worker's poll that
        // an outer loop is not told of again.
        self.full = n == events.capacity();
        if self.again || ipc {
            self.again = false;
            self.service(None)?;
        }
        if bell {
            self.balance.rung();
        }
        Ok(())
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

    /// Listens on a stream address (TCP or Unix) through the master, or
    /// alone with [`ListenOptions::exclusive`], waiting up to
    /// [`LISTEN_TIMEOUT`] for the answer. Events that arrive meanwhile are
    /// kept for [`Worker::next_event`]; the application's sources are not
    /// polled.
    ///
    /// A failure is an `io::Error` of the errno's kind, holding a
    /// [`ListenError`] that names the errno, the syscall and the address.
    pub fn listen(&mut self, addr: &ListenAddr, opts: ListenOptions) -> io::Result<Listener> {
        if addr.kind() == Kind::Udp {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{addr} is a UDP address: use Worker::bind_udp"),
            ));
        }
        let (fd, share, board) = self.share(addr, opts)?;
        let seat = Seat::join(board, opts.balance).unwrap_or_else(|e| {
            log::warn!("worker {}: accept board of {addr}: {e}", self.id);
            None
        });
        self.listening(Listener::new(fd, addr.kind(), share, opts.balance, seat)?)
    }

    /// Registers a listener in the worker's poll for accepting, the way its
    /// [`ListenOptions::balance`] says: with [`Balance::Even`] (the default)
    /// and [`Balance::Exclusive`], only one idle worker is woken per
    /// connection (`EPOLLEXCLUSIVE`, level-triggered), and with
    /// [`Balance::Even`] the socket's bell is registered too (under
    /// [`BELL_TOKEN`]); with [`Balance::Shared`] it is a plain edge-triggered
    /// registration. Take connections with [`Worker::accept`].
    pub fn register_listener(&mut self, listener: &mut Listener, token: Token) -> io::Result<()> {
        if listener.turn.balance == Balance::Shared {
            listener.register_plain(self.poll.registry(), token)?;
        }
        self.balance.register(self.poll.registry(), &listener.turn, token)
    }

    /// Accepts one connection from `listener` the way its balance says;
    /// call it until `WouldBlock` after each event of the listener's token.
    ///
    /// - [`Balance::Even`]: `WouldBlock` also when this worker would hold
    ///   more than its share of the socket's open connections; a worker
    ///   under its share is told (woken through the board's bell if it
    ///   sleeps). The worker is then out of the socket's queue until it is
    ///   under its share again, or 2 ms have passed. After a wake-up's last
    ///   connection, the worker goes to the back of the queue.
    /// - [`Balance::Exclusive`]: one connection per wake-up; the next call
    ///   moves the worker to the back of the queue (stepping aside for the
    ///   pause during a burst) and returns `WouldBlock`.
    /// - [`Balance::Shared`]: every queued connection.
    pub fn accept(&mut self, listener: &Listener) -> io::Result<Stream> {
        self.balance.accept(&listener.turn, |seat| listener.accept_raw(seat))
    }

    /// Binds a UDP address through the master (every worker receives on the
    /// one shared socket; the kernel picks which gets a datagram), or alone
    /// with [`ListenOptions::exclusive`].
    pub fn bind_udp(&mut self, addr: &ListenAddr, opts: ListenOptions) -> io::Result<UdpSocket> {
        if addr.kind() != Kind::Udp {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{addr} is not a UDP address (udp:HOST:PORT or udp:fd:N)"),
            ));
        }
        let (fd, share, _) = self.share(addr, opts)?;
        let sock = UdpSocket::new(fd, share)?;
        self.check_connected()?;
        self.channel.queue(&Message::Listening { address: sock.address().clone() }, Vec::new())?;
        self.flush()?;
        Ok(sock)
    }

    /// The socket for `addr`: the master's duplicate (with its seat on the
    /// socket's accept board, if any), or one bound here.
    fn share(
        &mut self,
        addr: &ListenAddr,
        opts: ListenOptions,
    ) -> io::Result<(OwnedFd, Option<listener::Share>, Option<BoardFds>)> {
        let kind = addr.kind();
        let (address, port, fd) = match addr {
            ListenAddr::Tcp(sa) | ListenAddr::Udp(sa) => (ip_text(sa), sa.port(), -1),
            ListenAddr::Fd(n) | ListenAddr::UdpFd(n) => (Vec::new(), 0, *n),
            ListenAddr::Unix(path) => {
                let path = unix_path(path)?;
                // Refused here, whatever its length: it never reaches the
                // master (nor wraps a length prefix on the way).
                socket::check_unix_path(&path)
                    .map_err(|e| io::Error::from(ListenError::new(e, addr.to_string())))?;
                (path, 0, -1)
            }
        };
        let err = |e| io::Error::from(ListenError::new(e, addr.to_string()));
        if opts.exclusive {
            let bind = BindOptions { backlog: opts.backlog, ipv6only: opts.ipv6only };
            let fd = match addr {
                ListenAddr::Tcp(sa) => socket::bind_inet(Transport::Stream, *sa, bind),
                ListenAddr::Udp(sa) => socket::bind_inet(Transport::Datagram, *sa, bind),
                ListenAddr::Unix(_) => socket::bind_unix(&address, opts.backlog),
                ListenAddr::Fd(_) | ListenAddr::UdpFd(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "exclusive applies to addresses, not to the master's descriptors",
                    ))
                }
            };
            return Ok((fd.map_err(err)?, None, None));
        }
        let key: IndexKey = (kind, address.clone(), port, fd);
        let set = self.indexes.entry(key.clone()).or_default();
        let index = set.next;
        set.next += 1;
        set.open.push(index);
        let request = ListenRequest {
            kind,
            address,
            port,
            fd,
            index,
            backlog: opts.backlog,
            ipv6only: opts.ipv6only,
            readable_all: opts.readable_all,
            writable_all: opts.writable_all,
        };
        match self.request(request) {
            Ok(Reply::Ok { handle, fd, board }) => {
                // The socket must be of the kind asked for; if not, give the
                // share back, since the master keeps one for us.
                match socket::check_kind(fd.as_fd(), kind) {
                    Ok(()) => Ok((fd, Some(listener::Share { handle, key, index }), board)),
                    Err(e) => {
                        self.release_index(&key, index);
                        self.channel.queue(&Message::Close { handle }, Vec::new())?;
                        self.flush()?;
                        Err(err(e))
                    }
                }
            }
            Ok(Reply::Err(e)) => {
                self.release_index(&key, index);
                Err(err(e))
            }
            Err(e) => {
                self.release_index(&key, index);
                Err(e)
            }
        }
    }

    /// Serves a listening socket this worker already holds (Node's
    /// `listen(handle)`): the master is not asked, only told.
    pub fn adopt(&mut self, listener: std::net::TcpListener) -> io::Result<Listener> {
        listener.set_nonblocking(true)?;
        let fd = OwnedFd::from(listener);
        self.listening(Listener::new(fd, Kind::Tcp, None, Balance::default(), None)?)
    }

    /// Closes a server ([`Listener`] or [`UdpSocket`]) and tells the master
    /// this worker left its key.
    ///
    /// The socket is deregistered from the worker's poll first: other
    /// processes hold the same socket, so closing this descriptor alone
    /// would leave it registered.
    pub fn close<S: SharedServer>(&mut self, mut server: S) -> io::Result<()> {
        let _ = server.leave_poll(self.poll.registry());
        let share = server.into_share();
        self.balance.forget_closed();
        if let Some(share) = share {
            self.release_index(&share.key, share.index);
            if !self.leaving && !self.gone {
                self.channel.queue(&Message::Close { handle: share.handle }, Vec::new())?;
                self.flush()?;
            }
        }
        Ok(())
    }

    /// Sends a message to the master, with descriptors attached (this
    /// process's copies close once sent). Never blocks: with more than
    /// 64 MiB queued it fails with `WouldBlock` and [`WorkerEvent::Drained`]
    /// says when to retry. Once the master is gone
    /// ([`WorkerEvent::MasterGone`]) it fails with `NotConnected`, as do
    /// [`Worker::ready`], [`Worker::disconnect`] and the listens.
    pub fn send(&mut self, payload: &[u8], fds: Vec<OwnedFd>) -> io::Result<()> {
        self.check_connected()?;
        let queued = self.channel.queued_bytes();
        if self.channel.full_for(payload.len()) {
            self.want_drained = true;
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                format!("channel to the master is full ({queued} bytes queued)"),
            ));
        }
        self.channel.queue(&Message::User { payload: payload.to_vec() }, fds)?;
        self.flush()
    }

    /// Leaves of the worker's own accord (Node's `worker.disconnect()` in a
    /// worker): the master stops counting it on shared sockets and will not
    /// respawn it as a crash; a [`WorkerEvent::Disconnect`] follows, handled
    /// like the master's.
    pub fn disconnect(&mut self) -> io::Result<()> {
        self.check_connected()?;
        if !self.leaving {
            self.leaving = true;
            self.channel.queue(&Message::Leaving, Vec::new())?;
            self.flush()?;
            self.queue.push_back(WorkerEvent::Disconnect);
        }
        Ok(())
    }

    /// Tells the master this worker is ready to serve (einhorn's ack). It
    /// is optional, and may be called more than once. A supervising master
    /// uses it twice:
    /// - a worker is ready once it listened, sent a heartbeat or called
    ///   this; one that was ready is always replaced when it dies, and only
    ///   workers that die before they are ready count towards giving up
    ///   ([`Event::CrashLoop`](crate::Event::CrashLoop));
    /// - in a rolling restart, a new worker replaces an old one that called
    ///   this only once it has called it too (and holds every shared socket
    ///   the old one held). Call it when the worker can serve: after its
    ///   last listen, with its caches warm.
    pub fn ready(&mut self) -> io::Result<()> {
        self.check_connected()?;
        self.channel.queue(&Message::Ready, Vec::new())?;
        self.flush()
    }

    /// Sends what is still queued to the master (waiting up to a second),
    /// closes the channel and exits the process with `code`.
    pub fn exit(mut self, code: i32) -> ! {
        let deadline = Instant::now() + Duration::from_secs(1);
        while !self.gone && self.channel.queued_bytes() > 0 && Instant::now() < deadline {
            // Errors only end the attempt: the exit code is the caller's.
            if self.channel.flush().is_err()
                || self.wait_channel(PollFlags::POLLOUT, deadline).is_err()
            {
                break;
            }
        }
        log::debug!("worker {} exits with code {code}", self.id);
        std::process::exit(code)
    }

    fn listening(&mut self, l: Listener) -> io::Result<Listener> {
        self.check_connected()?;
        self.channel.queue(&Message::Listening { address: l.address().clone() }, Vec::new())?;
        self.flush()?;
        Ok(l)
    }

    fn release_index(&mut self, key: &IndexKey, index: u32) {
        if let Some(set) = self.indexes.get_mut(key) {
            set.open.retain(|i| *i != index);
            if set.open.is_empty() {
                self.indexes.remove(key);
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.gone {
            return Ok(());
        }
        match self.channel.flush() {
            Ok(true) if self.want_drained => {
                self.want_drained = false;
                self.queue.push_back(WorkerEvent::Drained);
                Ok(())
            }
            Ok(_) => Ok(()),
            Err(e) => self.channel_failed(e),
        }
    }

    fn request(&mut self, request: ListenRequest) -> io::Result<Reply> {
        self.check_connected()?;
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        self.channel.queue(&Message::Listen { seq, request }, Vec::new())?;
        let deadline = Instant::now() + LISTEN_TIMEOUT;
        loop {
            self.flush()?;
            if let Some(reply) = self.service(Some(seq))? {
                return Ok(reply);
            }
            self.check_connected()?;
            let mut flags = PollFlags::POLLIN;
            if self.channel.queued_bytes() > 0 {
                flags |= PollFlags::POLLOUT;
            }
            if let Err(e) = self.wait_channel(flags, deadline) {
                // A reply that comes later is given back to the master.
                self.abandoned.push(seq);
                return Err(e);
            }
        }
    }

    fn wait_channel(&self, flags: PollFlags, deadline: Instant) -> io::Result<()> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "no answer from the master"));
        }
        let ms = PollTimeout::try_from(left.as_millis().clamp(1, i32::MAX as u128) as i32)
            .unwrap_or(PollTimeout::MAX);
        let sock = self.channel.socket_fd();
        let mut fds = [PollFd::new(sock, flags)];
        match nix::poll::poll(&mut fds, ms) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Flushes and reads the channel. With `want`, returns the reply to that
    /// listen request if it arrived; everything else is queued as events.
    fn service(&mut self, want: Option<u32>) -> io::Result<Option<Reply>> {
        self.flush()?;
        if self.gone {
            return Ok(None);
        }
        let mut reply = None;
        let mut reads = ReadTurn::new();
        while !reads.spent() {
            let status = match reads.read(&mut self.channel) {
                Ok(s) => s,
                Err(e) => return self.channel_failed(e),
            };
            loop {
                let frame = match self.channel.next_frame() {
                    Ok(f) => f,
                    Err(e) => return self.channel_failed(e),
                };
                let Some((msg, fds)) = frame else { break };
                match msg {
                    Message::ListenOk { seq, handle, seat, .. } if Some(seq) == want => {
                        // The decoder checked: the socket, then the board
                        // exactly when there is a seat.
                        let mut fds = fds.into_iter();
                        let fd = fds.next().expect("ListenOk carries the socket");
                        let board = fds.next().zip(fds.next()).map(|(b, bell)| (seat, b, bell));
                        reply = Some(Reply::Ok { handle, fd, board });
                    }
                    Message::ListenErr { seq, errno, syscall } if Some(seq) == want => {
                        reply = Some(Reply::Err(crate::SysError { errno, syscall }));
                    }
                    Message::ListenOk { seq, handle, .. } if self.abandoned.contains(&seq) => {
                        self.abandoned.retain(|s| *s != seq);
                        self.channel.queue(&Message::Close { handle }, Vec::new())?;
                    }
                    Message::ListenErr { seq, .. } if self.abandoned.contains(&seq) => {
                        self.abandoned.retain(|s| *s != seq);
                    }
                    Message::Disconnect => {
                        if !self.leaving {
                            self.leaving = true;
                            self.queue.push_back(WorkerEvent::Disconnect);
                        }
                    }
                    Message::User { payload } => {
                        self.queue.push_back(WorkerEvent::Message { payload, fds })
                    }
                    other => {
                        let e = io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!("unexpected message from the master: {other:?}"),
                        );
                        return self.channel_failed(e);
                    }
                }
            }
            match status {
                ReadStatus::Data => continue,
                ReadStatus::WouldBlock => return Ok(reply),
                ReadStatus::Eof => {
                    self.master_gone();
                    return Ok(reply);
                }
            }
        }
        self.again = true;
        Ok(reply)
    }

    /// The channel is over: queue [`WorkerEvent::MasterGone`] (once), and
    /// stop touching the channel.
    fn master_gone(&mut self) {
        if self.gone {
            return;
        }
        self.gone = true;
        if self.leaving {
            log::info!("worker {}: channel closed while leaving", self.id);
        } else {
            log::info!("worker {}: the master is gone (channel closed)", self.id);
        }
        let _ = self.poll.registry().deregister(&mut self.channel);
        self.channel.discard_writes();
        self.again = false;
        self.want_drained = false;
        self.queue.push_back(WorkerEvent::MasterGone);
    }

    /// `NotConnected` once the master is gone.
    fn check_connected(&self) -> io::Result<()> {
        if self.gone {
            return Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "the master is gone (the worker's channel is closed)",
            ));
        }
        Ok(())
    }

    fn channel_failed<T: Default>(&mut self, e: io::Error) -> io::Result<T> {
        if is_peer_gone(&e) {
            self.master_gone();
            return Ok(T::default());
        }
        log::error!("worker {}: IPC channel error: {e}", self.id);
        Err(e)
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

/// The address text of an IP socket address, with `%scope` for a scoped
/// IPv6 address.
fn ip_text(sa: &SocketAddr) -> Vec<u8> {
    match sa {
        SocketAddr::V6(v6) if v6.scope_id() != 0 => {
            format!("{}%{}", v6.ip(), v6.scope_id()).into_bytes()
        }
        _ => sa.ip().to_string().into_bytes(),
    }
}

/// A Unix socket path as the master binds it: `@NAME` becomes the abstract
/// name `\0NAME`; a relative path is resolved against this process's working
/// directory (the master's may differ).
fn unix_path(path: &std::path::Path) -> io::Result<Vec<u8>> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = path.as_os_str().as_bytes();
    if let Some(name) = bytes.strip_prefix(b"@") {
        let mut v = vec![0];
        v.extend_from_slice(name);
        return Ok(v);
    }
    let abs =
        if path.is_absolute() { path.to_path_buf() } else { std::env::current_dir()?.join(path) };
    Ok(abs.as_os_str().as_bytes().to_vec())
}
