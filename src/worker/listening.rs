//! Listening through the master: asking for a shared socket (or binding one
//! alone), registering it with its balance, accepting, and closing; and which
//! indexes of each address this worker holds.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::time::Instant;

use mio::Token;
use nix::poll::PollFlags;

use super::listener::{self, Listener, SharedServer, Stream, UdpSocket};
use super::{Worker, LISTEN_TIMEOUT};
use crate::balance::{BoardFds, Seat};
use crate::ipc::{ListenRequest, Message};
use crate::listen::{Balance, Kind, ListenAddr, ListenError, ListenOptions};
use crate::sys::socket::{self, BindOptions, Transport};

pub(super) type IndexKey = (Kind, Vec<u8>, u16, i32);

/// Which indexes of one `(kind, address, port, fd)` this worker holds open.
#[derive(Default)]
pub(super) struct IndexSet {
    next: u32,
    open: Vec<u32>,
}

/// The master's answer to a listen request.
pub(super) enum Reply {
    Ok { handle: u32, fd: OwnedFd, board: Option<BoardFds> },
    Err(crate::SysError),
}

impl Worker {
    /// Listens on a stream address (TCP or Unix) through the master, or
    /// alone with [`ListenOptions::exclusive`], waiting up to
    /// [`LISTEN_TIMEOUT`] for the answer. Events that arrive meanwhile are
    /// kept for [`Worker::next_event`]; the application's sources are not
    /// polled.
    ///
    /// A failure is an `io::Error` of the errno's kind, holding a
    /// [`ListenError`] that names the errno, the syscall and the address.
    pub fn listen(&mut self, addr: &ListenAddr, opts: ListenOptions) -> io::Result<Listener> {
        if let ListenAddr::Named(name) = addr {
            crate::listen::activation::find_socket(name)?;
        }
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
    /// [`BELL_TOKEN`](super::BELL_TOKEN)); with [`Balance::Shared`] it is a plain edge-triggered
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
        if let ListenAddr::Named(name) = addr {
            crate::listen::activation::find_socket(name)?;
        }
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
            // The master's descriptor that systemd passed under that name.
            ListenAddr::Named(name) => {
                let socket = crate::listen::activation::find_socket(name)?;
                if socket.kind.is_none() {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!(
                            "{addr} (fd {}) is not a TCP, UDP or Unix stream socket",
                            socket.fd
                        ),
                    ));
                }
                (Vec::new(), 0, socket.fd)
            }
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
                ListenAddr::Fd(_) | ListenAddr::UdpFd(_) | ListenAddr::Named(_) => {
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
/// name `\0NAME` (an `Unsupported` error where the platform has no abstract
/// namespace); a relative path is resolved against this process's working
/// directory (the master's may differ).
fn unix_path(path: &std::path::Path) -> io::Result<Vec<u8>> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = path.as_os_str().as_bytes();
    if let Some(name) = bytes.strip_prefix(b"@") {
        if !crate::sys::socket::HAS_ABSTRACT {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!("unix:{}: {}", path.display(), crate::sys::socket::NO_ABSTRACT),
            ));
        }
        let mut v = vec![0];
        v.extend_from_slice(name);
        return Ok(v);
    }
    let abs =
        if path.is_absolute() { path.to_path_buf() } else { std::env::current_dir()?.join(path) };
    Ok(abs.as_os_str().as_bytes().to_vec())
}
