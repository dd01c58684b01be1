//! A listening socket a worker accepts on.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use mio::event::Source;
use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry, Token};

use super::IndexKey;
use crate::listen::Address;

pub(super) struct Share {
    pub handle: u32,
    pub key: IndexKey,
    pub index: u32,
}

/// A TCP listening socket: a duplicate of the master's shared socket, or one
/// this worker bound alone (`exclusive`) or already held. Register it in
/// [`Worker::registry`](super::Worker::registry) and call
/// [`accept`](Listener::accept) until `WouldBlock`.
///
/// The socket is non-blocking. Its `O_NONBLOCK` flag is shared with every
/// other duplicate of it (the master's and the other workers'), so keep it
/// non-blocking even after [`into_std`](Listener::into_std).
pub struct Listener {
    inner: TcpListener,
    address: Address,
    share: Option<Share>,
}

impl Listener {
    pub(super) fn new(fd: OwnedFd, share: Option<Share>) -> io::Result<Listener> {
        let inner = TcpListener::from_std(std::net::TcpListener::from(fd));
        let address = Address::Inet(inner.local_addr()?);
        Ok(Listener { inner, address, share })
    }

    /// Accepts one connection (`WouldBlock` when none is queued).
    pub fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        self.inner.accept()
    }

    /// The bound address.
    pub fn address(&self) -> &Address {
        &self.address
    }

    /// The bound socket address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    /// True if the master shares this socket with other workers.
    pub fn is_shared(&self) -> bool {
        self.share.is_some()
    }

    /// The mio listener, for APIs that want one.
    pub fn as_mio(&self) -> &TcpListener {
        &self.inner
    }

    /// The standard library's listener, for another runtime to adopt. The
    /// master is not told; it learns that this worker left the key when the
    /// worker disconnects or exits.
    pub fn into_std(self) -> std::net::TcpListener {
        std::net::TcpListener::from(OwnedFd::from(self.inner))
    }

    pub(super) fn into_share(self) -> Option<Share> {
        self.share
    }
}

impl AsRawFd for Listener {
    fn as_raw_fd(&self) -> RawFd {
        self.inner.as_raw_fd()
    }
}

impl Source for Listener {
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
