//! The sockets a worker serves on: [`Listener`] for TCP and Unix stream
//! sockets (accepting [`Stream`]s), [`UdpSocket`] for datagrams.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;

use mio::event::Source;
use mio::{Interest, Registry, Token};

use super::IndexKey;
use crate::balance::{Seat, SeatGuard, Turn};
use crate::listen::{Address, Balance, Kind};

/// A worker's share of a registry key: what to name when leaving it.
#[doc(hidden)]
#[derive(Debug)]
pub struct Share {
    pub(super) handle: u32,
    pub(super) key: IndexKey,
    pub(super) index: u32,
}

/// A server socket [`Worker::close`](super::Worker::close) can close:
/// [`Listener`] or [`UdpSocket`].
pub trait SharedServer: sealed::Sealed {
    /// Gives up the socket, returning the master's share of it, if any.
    #[doc(hidden)]
    fn into_share(self) -> Option<Share>;
}

enum Inner {
    Tcp(mio::net::TcpListener),
    Unix(mio::net::UnixListener),
}

pub(super) mod sealed {
    use mio::Registry;
    use std::io;

    /// What only the crate may call on a server.
    pub trait Sealed {
        /// Takes the socket out of `registry` (the worker's poll).
        fn leave_poll(&mut self, registry: &Registry) -> io::Result<()>;
    }
    impl Sealed for super::Listener {
        fn leave_poll(&mut self, r: &Registry) -> io::Result<()> {
            self.deregister_from(r)
        }
    }
    impl Sealed for super::UdpSocket {
        fn leave_poll(&mut self, r: &Registry) -> io::Result<()> {
            mio::event::Source::deregister(self, r)
        }
    }
}

/// A listening stream socket (TCP or Unix): a duplicate of the master's
/// shared socket, or one this worker bound alone (`exclusive`) or already
/// held. Register it with
/// [`Worker::register_listener`](super::Worker::register_listener) and call
/// [`Worker::accept`](super::Worker::accept) until `WouldBlock`.
///
/// That is the only way to register it: it is not a [`mio::event::Source`],
/// since a plain registration would drop the balance (the exclusive
/// wake-ups, the turns, the accept board) without a word:
///
/// ```compile_fail,E0277
/// fn plain(registry: &mio::Registry, listener: &mut mio_cluster::Listener) {
///     registry.register(listener, mio::Token(0), mio::Interest::READABLE).unwrap();
/// }
/// ```
///
/// The socket is non-blocking. Its `O_NONBLOCK` flag is shared with every
/// other duplicate of it (the master's and the other workers'), so keep it
/// non-blocking even after [`into_fd`](Listener::into_fd).
pub struct Listener {
    /// First, so it drops before `inner` closes the socket: its drop takes
    /// the socket out of the worker's poll.
    pub(super) turn: Arc<Turn>,
    inner: Inner,
    address: Address,
    share: Option<Share>,
}

impl Listener {
    pub(super) fn new(
        fd: OwnedFd,
        kind: Kind,
        share: Option<Share>,
        balance: Balance,
        seat: Option<Arc<Seat>>,
    ) -> io::Result<Listener> {
        let (inner, address) = if kind == Kind::Unix {
            let l = mio::net::UnixListener::from_std(std::os::unix::net::UnixListener::from(fd));
            let address = unix_address(&l.local_addr()?);
            (Inner::Unix(l), address)
        } else {
            let l = mio::net::TcpListener::from_std(std::net::TcpListener::from(fd));
            let address = Address::Inet(l.local_addr()?);
            (Inner::Tcp(l), address)
        };
        let turn = Turn::new(inner_fd(&inner), balance, seat);
        Ok(Listener { turn, inner, address, share })
    }

    /// Accepts one connection (`WouldBlock` when none is queued), counted
    /// on `seat`.
    pub(super) fn accept_raw(&self, seat: Option<&Arc<Seat>>) -> io::Result<Stream> {
        let inner = match &self.inner {
            Inner::Tcp(l) => Conn::Tcp(l.accept()?.0),
            Inner::Unix(l) => Conn::Unix(l.accept()?.0),
        };
        Ok(Stream { inner, _seat: seat.map(Seat::take) })
    }

    /// The bound address.
    pub fn address(&self) -> &Address {
        &self.address
    }

    /// True if the master shares this socket with other workers.
    pub fn is_shared(&self) -> bool {
        self.share.is_some()
    }

    /// How this listener shares connections with the other workers
    /// ([`ListenOptions::balance`](crate::ListenOptions::balance)).
    pub fn balance(&self) -> Balance {
        self.turn.balance
    }

    /// This worker's open connections from this listener as its accept
    /// board counts them ([`Balance::Even`] on a shared socket; `None`
    /// without a seat on a board): the [`Stream`]s accepted and not yet
    /// dropped, and the [`ConnGuard`]s of those given to another runtime.
    pub fn connections(&self) -> Option<u32> {
        self.turn.connections()
    }

    /// The socket, for another runtime to adopt (`std::net::TcpListener::from`
    /// or `UnixListener::from`). The master is not told; it learns that this
    /// worker left the key when the worker disconnects or exits. A
    /// registration made by
    /// [`Worker::register_listener`](super::Worker::register_listener) is
    /// removed (so is it when the listener is dropped).
    pub fn into_fd(self) -> OwnedFd {
        match self.inner {
            Inner::Tcp(l) => l.into(),
            Inner::Unix(l) => l.into(),
        }
    }

    fn source(&mut self) -> &mut dyn Source {
        match &mut self.inner {
            Inner::Tcp(l) => l,
            Inner::Unix(l) => l,
        }
    }
}

fn inner_fd(inner: &Inner) -> RawFd {
    match inner {
        Inner::Tcp(l) => l.as_raw_fd(),
        Inner::Unix(l) => l.as_raw_fd(),
    }
}

fn unix_address(a: &std::os::unix::net::SocketAddr) -> Address {
    use std::os::unix::ffi::OsStrExt;
    if let Some(p) = a.as_pathname() {
        return Address::Unix(p.as_os_str().as_bytes().to_vec());
    }
    if let Some(name) = crate::sys::socket::std_abstract_name(a) {
        let mut v = vec![0];
        v.extend_from_slice(name);
        return Address::Unix(v);
    }
    Address::Unix(Vec::new())
}

impl SharedServer for Listener {
    fn into_share(self) -> Option<Share> {
        self.turn.close_seat();
        self.share
    }
}

impl AsRawFd for Listener {
    fn as_raw_fd(&self) -> RawFd {
        inner_fd(&self.inner)
    }
}

impl Listener {
    /// Takes the socket out of `r` (the worker's poll), with an exclusive
    /// registration made by
    /// [`Worker::register_listener`](super::Worker::register_listener),
    /// which mio does not know of. (Closing the descriptor would not: other
    /// processes hold the same socket, so epoll keeps the entry.)
    pub(super) fn deregister_from(&mut self, r: &Registry) -> io::Result<()> {
        if self.turn.leave_poll(r)? {
            return Ok(());
        }
        self.source().deregister(r)
    }

    /// A plain (edge-triggered) registration, for [`Balance::Shared`].
    pub(super) fn register_plain(&mut self, r: &Registry, t: Token) -> io::Result<()> {
        self.source().register(r, t, Interest::READABLE)
    }
}

/// An accepted connection, TCP or Unix.
///
/// A connection accepted from a listener that balances on an accept board
/// ([`Balance::Even`]) counts as one of this worker's open connections
/// until it is dropped. To serve it from another runtime (std, tokio) and
/// keep it counted, take it apart with [`into_std`](Stream::into_std); given
/// away with [`into_fd`](Stream::into_fd), it no longer counts.
#[derive(Debug)]
pub struct Stream {
    inner: Conn,
    _seat: Option<SeatGuard>,
}

#[derive(Debug)]
enum Conn {
    Tcp(mio::net::TcpStream),
    Unix(mio::net::UnixStream),
}

impl Stream {
    /// `TCP_NODELAY` on a TCP connection; nothing on a Unix one.
    pub fn set_nodelay(&self, on: bool) -> io::Result<()> {
        match &self.inner {
            Conn::Tcp(s) => s.set_nodelay(on),
            Conn::Unix(_) => Ok(()),
        }
    }

    /// The TCP connection, if it is one.
    pub fn as_tcp(&self) -> Option<&mio::net::TcpStream> {
        match &self.inner {
            Conn::Tcp(s) => Some(s),
            Conn::Unix(_) => None,
        }
    }

    /// The Unix connection, if it is one.
    pub fn as_unix(&self) -> Option<&mio::net::UnixStream> {
        match &self.inner {
            Conn::Unix(s) => Some(s),
            Conn::Tcp(_) => None,
        }
    }

    /// The connection as a std stream, for another runtime (for tokio,
    /// `tokio::net::TcpStream::from_std`), and the guard that keeps it
    /// counted as one of this worker's open connections on its listener's
    /// accept board: drop the guard when the connection closes (keep them
    /// together). The stream stays non-blocking; deregister it from any
    /// mio registry first.
    ///
    /// ```no_run
    /// # fn f(worker: &mut mio_cluster::Worker, listener: &mio_cluster::Listener)
    /// # -> std::io::Result<()> {
    /// use mio_cluster::StdStream;
    /// let stream = worker.accept(listener)?;
    /// let (std_stream, guard) = stream.into_std();
    /// if let StdStream::Tcp(tcp) = std_stream {
    ///     // Served elsewhere; counted until `guard` is dropped.
    ///     # let _ = tcp;
    /// }
    /// drop(guard); // closed: this worker may take another
    /// # Ok(()) }
    /// ```
    pub fn into_std(self) -> (StdStream, ConnGuard) {
        let stream = match self.inner {
            Conn::Tcp(s) => StdStream::Tcp(std::net::TcpStream::from(OwnedFd::from(s))),
            Conn::Unix(s) => {
                StdStream::Unix(std::os::unix::net::UnixStream::from(OwnedFd::from(s)))
            }
        };
        (stream, ConnGuard { _seat: self._seat })
    }

    /// Gives the connection away (to another runtime, or to another process
    /// in a message); it no longer counts as this worker's (see
    /// [`into_std`](Stream::into_std) to keep it counted).
    pub fn into_fd(self) -> OwnedFd {
        match self.inner {
            Conn::Tcp(s) => s.into(),
            Conn::Unix(s) => s.into(),
        }
    }

    fn source(&mut self) -> &mut dyn Source {
        match &mut self.inner {
            Conn::Tcp(s) => s,
            Conn::Unix(s) => s,
        }
    }
}

/// A connection taken out of the crate's hands with [`Stream::into_std`].
#[derive(Debug)]
pub enum StdStream {
    /// A TCP connection.
    Tcp(std::net::TcpStream),
    /// A Unix stream connection.
    Unix(std::os::unix::net::UnixStream),
}

impl From<StdStream> for OwnedFd {
    fn from(s: StdStream) -> OwnedFd {
        match s {
            StdStream::Tcp(s) => s.into(),
            StdStream::Unix(s) => s.into(),
        }
    }
}

impl AsRawFd for StdStream {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            StdStream::Tcp(s) => s.as_raw_fd(),
            StdStream::Unix(s) => s.as_raw_fd(),
        }
    }
}

/// One open connection of this worker's, counted on its listener's accept
/// board (see [`Stream::into_std`]) until the guard is dropped. A guard for
/// a connection that was never counted (no board) counts nothing.
#[derive(Debug)]
#[must_use = "dropping the guard counts the connection as closed"]
pub struct ConnGuard {
    _seat: Option<SeatGuard>,
}

impl From<mio::net::TcpStream> for Stream {
    /// A TCP connection from elsewhere (adopted, or received in a message):
    /// not counted on any board.
    fn from(s: mio::net::TcpStream) -> Stream {
        Stream { inner: Conn::Tcp(s), _seat: None }
    }
}

impl From<mio::net::UnixStream> for Stream {
    /// A Unix connection from elsewhere: not counted on any board.
    fn from(s: mio::net::UnixStream) -> Stream {
        Stream { inner: Conn::Unix(s), _seat: None }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.inner {
            Conn::Tcp(s) => s.read(buf),
            Conn::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.inner {
            Conn::Tcp(s) => s.write(buf),
            Conn::Unix(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl AsRawFd for Stream {
    fn as_raw_fd(&self) -> RawFd {
        match &self.inner {
            Conn::Tcp(s) => s.as_raw_fd(),
            Conn::Unix(s) => s.as_raw_fd(),
        }
    }
}

impl Source for Stream {
    fn register(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        self.source().register(r, t, i)
    }
    fn reregister(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        self.source().reregister(r, t, i)
    }
    fn deregister(&mut self, r: &Registry) -> io::Result<()> {
        self.source().deregister(r)
    }
}

/// A UDP socket: a duplicate of the master's shared socket (every worker
/// receives on it; the kernel picks which worker gets a datagram), or one
/// this worker bound alone.
pub struct UdpSocket {
    inner: mio::net::UdpSocket,
    address: Address,
    share: Option<Share>,
}

impl UdpSocket {
    pub(super) fn new(fd: OwnedFd, share: Option<Share>) -> io::Result<UdpSocket> {
        let inner = mio::net::UdpSocket::from_std(std::net::UdpSocket::from(fd));
        let address = Address::Inet(inner.local_addr()?);
        Ok(UdpSocket { inner, address, share })
    }

    /// Receives one datagram (`WouldBlock` when none is queued).
    pub fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.inner.recv_from(buf)
    }

    /// Sends one datagram.
    pub fn send_to(&self, buf: &[u8], to: SocketAddr) -> io::Result<usize> {
        self.inner.send_to(buf, to)
    }

    /// The bound address.
    pub fn address(&self) -> &Address {
        &self.address
    }

    /// True if the master shares this socket with other workers.
    pub fn is_shared(&self) -> bool {
        self.share.is_some()
    }
}

impl SharedServer for UdpSocket {
    fn into_share(self) -> Option<Share> {
        self.share
    }
}

impl AsRawFd for UdpSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.inner.as_raw_fd()
    }
}

impl Source for UdpSocket {
    fn register(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        self.inner.register(r, t, i)
    }
    fn reregister(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        self.inner.reregister(r, t, i)
    }
    fn deregister(&mut self, r: &Registry) -> io::Result<()> {
        self.inner.deregister(r)
    }
}
