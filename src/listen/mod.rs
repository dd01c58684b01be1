//! What a worker can listen on, and how a failed listen is reported.

use std::fmt;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::RawFd;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

pub(crate) mod activation;

use crate::sys::{SysError, Syscall};

/// The kind of socket in a registry key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
#[non_exhaustive]
pub enum Kind {
    /// A TCP listening socket (tcp4 or tcp6, by address).
    Tcp = 1,
    /// A UDP socket (udp4 or udp6, by address).
    Udp = 2,
    /// A Unix stream socket.
    Unix = 3,
}

impl Kind {
    pub(crate) fn from_u8(v: u8) -> Option<Kind> {
        match v {
            1 => Some(Kind::Tcp),
            2 => Some(Kind::Udp),
            3 => Some(Kind::Unix),
            _ => None,
        }
    }
}

/// Where a server is bound.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Address {
    /// An IPv4 or IPv6 address and port.
    Inet(SocketAddr),
    /// A Unix socket path (bytes, as the kernel sees them).
    Unix(Vec<u8>),
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Inet(a) => write!(f, "{a}"),
            Address::Unix(p) if p.first() == Some(&0) => {
                write!(f, "unix:@{}", String::from_utf8_lossy(&p[1..]))
            }
            Address::Unix(p) => write!(f, "unix:{}", String::from_utf8_lossy(p)),
        }
    }
}

/// What to listen on, as the `--listen` flag of the examples spells it.
///
/// - `HOST:PORT` or `[V6]:PORT`: a TCP address (port 0: the master picks one
///   port, shared by every worker);
/// - `fd:N`: the TCP listening socket that is descriptor `N` *of the master*
///   (inherited by the master, for instance from its parent or systemd);
/// - `udp:HOST:PORT`, `udp:fd:N`: the same for a UDP socket;
/// - `unix:PATH`: a Unix stream socket; a relative path is resolved against
///   the worker's working directory; `unix:@NAME` is Linux's abstract
///   namespace (no file);
/// - `systemd:NAME`: the socket systemd passed the master under `NAME`
///   (socket activation: [`host::systemd`](crate::host::systemd)), a TCP,
///   UDP or Unix stream socket.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ListenAddr {
    /// A TCP address.
    Tcp(SocketAddr),
    /// The master's descriptor `N`, a TCP listening socket.
    Fd(RawFd),
    /// A UDP address.
    Udp(SocketAddr),
    /// The master's descriptor `N`, a UDP socket.
    UdpFd(RawFd),
    /// A Unix socket path (`@NAME`: abstract namespace).
    Unix(PathBuf),
    /// The socket systemd passed the master under this name
    /// (`LISTEN_FDNAMES`): TCP, UDP or Unix stream, whichever it is.
    Named(String),
}

impl ListenAddr {
    /// The socket kind this address asks for.
    pub fn kind(&self) -> Kind {
        match self {
            ListenAddr::Tcp(_) | ListenAddr::Fd(_) => Kind::Tcp,
            ListenAddr::Udp(_) | ListenAddr::UdpFd(_) => Kind::Udp,
            ListenAddr::Unix(_) => Kind::Unix,
            // What systemd passed; a name it did not pass fails at listen.
            ListenAddr::Named(name) => activation::kind_of(name).unwrap_or(Kind::Tcp),
        }
    }
}

fn parse_fd(n: &str) -> Option<RawFd> {
    n.parse().ok().filter(|fd: &RawFd| *fd >= 0)
}

fn parse_inet(s: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    if !s.contains(':') {
        return Err(
            "expected HOST:PORT, [V6]:PORT, fd:N, udp:..., unix:PATH or systemd:NAME".into()
        );
    }
    let mut addrs = s.to_socket_addrs().map_err(|e| e.to_string())?;
    addrs.next().ok_or_else(|| "host resolves to no address".to_string())
}

impl FromStr for ListenAddr {
    type Err = io::Error;

    fn from_str(s: &str) -> io::Result<ListenAddr> {
        let bad = |why: &str| {
            io::Error::new(io::ErrorKind::InvalidInput, format!("bad listen address {s:?}: {why}"))
        };
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() || path == "@" {
                return Err(bad("unix: takes a path or @NAME"));
            }
            return Ok(ListenAddr::Unix(PathBuf::from(path)));
        }
        if let Some(name) = s.strip_prefix("systemd:") {
            // systemd's names: up to 255 printable ASCII characters, no `:`.
            let valid = !name.is_empty()
                && name.len() <= 255
                && name.bytes().all(|b| b.is_ascii_graphic() && b != b':');
            if !valid {
                return Err(bad("systemd: takes a socket name (printable ASCII, no ':')"));
            }
            return Ok(ListenAddr::Named(name.to_string()));
        }
        if let Some(rest) = s.strip_prefix("udp:") {
            if let Some(n) = rest.strip_prefix("fd:") {
                return parse_fd(n)
                    .map(ListenAddr::UdpFd)
                    .ok_or_else(|| bad("fd:N takes a descriptor number"));
            }
            return parse_inet(rest).map(ListenAddr::Udp).map_err(|e| bad(&e));
        }
        if let Some(n) = s.strip_prefix("fd:") {
            return parse_fd(n)
                .map(ListenAddr::Fd)
                .ok_or_else(|| bad("fd:N takes a descriptor number"));
        }
        parse_inet(s).map(ListenAddr::Tcp).map_err(|e| bad(&e))
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::Tcp(a) => write!(f, "{a}"),
            ListenAddr::Fd(n) => write!(f, "fd:{n}"),
            ListenAddr::Udp(a) => write!(f, "udp:{a}"),
            ListenAddr::UdpFd(n) => write!(f, "udp:fd:{n}"),
            ListenAddr::Unix(p) => write!(f, "unix:{}", p.display()),
            ListenAddr::Named(name) => write!(f, "systemd:{name}"),
        }
    }
}

/// Options of one listen. Backlog and `ipv6only` are not part of the
/// registry key: the first worker to ask for a key decides them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenOptions {
    /// `listen(2)` backlog (default 511, as Node; the kernel caps it).
    pub backlog: i32,
    /// Set `IPV6_V6ONLY` on an IPv6 socket (default false: dual stack).
    pub ipv6only: bool,
    /// Bind in the worker itself instead of asking the master: the socket is
    /// this worker's alone (default false).
    pub exclusive: bool,
    /// Unix sockets: make the socket file readable by everyone (the master
    /// applies the mode; default false).
    pub readable_all: bool,
    /// Unix sockets: make the socket file writable (connectable) by everyone
    /// (default false).
    pub writable_all: bool,
    /// How this worker shares the connections of a shared stream socket
    /// with the other workers, when registered with
    /// [`Worker::register_listener`](crate::Worker::register_listener) and
    /// accepted from with [`Worker::accept`](crate::Worker::accept)
    /// (default: [`Balance::Even`]).
    pub balance: Balance,
}

/// How long a worker steps aside, by default, after taking a connection
/// while more are queued ([`Balance::Exclusive`]).
pub const DEFAULT_ACCEPT_PAUSE: Duration = Duration::from_micros(50);

/// How workers sharing one listening socket divide its connections. Every
/// mode accepts directly from the kernel; none routes connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Balance {
    /// The default. `EPOLLEXCLUSIVE` wake-ups (one idle worker is woken per
    /// connection, no thundering herd) that go round the workers, plus a
    /// fair share: the workers keep their counts of open connections on a
    /// shared page (the socket's accept board, from the master), and a
    /// worker that would then hold more than `ceil((total + 1) / workers) + 1`
    /// steps aside: it leaves a note for the awake workers under their share
    /// and, if they all sleep, rings the board's bell (an eventfd every
    /// worker waits on) to wake them. At its next poll it comes back as
    /// soon as it is under its share again, and after 2 ms at most (its
    /// poll waits no longer than that), so a connection never waits long on
    /// workers that do not run. Not counted: a worker whose loop has not
    /// polled for 50 ms (hung), and one that slept through a ring for 20 ms
    /// (stopped). A listener without a board (the worker's own socket)
    /// only takes turns.
    ///
    /// On macOS and FreeBSD, which have no `EPOLLEXCLUSIVE`, every waiting
    /// worker is woken for each connection and the board alone keeps the
    /// shares (no bell is needed: the workers under their share were woken
    /// too).
    #[default]
    Even,
    /// `EPOLLEXCLUSIVE` wake-ups that go round the workers (a worker that
    /// took connections goes to the back of the queue, as nginx does), with
    /// no shared counts. On macOS and FreeBSD every waiting worker is woken,
    /// so this is [`Balance::Shared`] with turns.
    ///
    /// If connections are still queued after it took one while it had
    /// nothing else to do (a burst onto idle workers), the worker steps out
    /// of the queue for `pause` (sleeping; with zero it only yields the
    /// CPU), so that the workers woken for them get to run and take them. A
    /// busy worker never pauses.
    Exclusive {
        /// How long to step aside during a burst.
        pause: Duration,
    },
    /// Plain registration: every waiting worker is woken for each
    /// connection and the fastest takes it (Node's shared-handle mode).
    Shared,
}

impl Default for ListenOptions {
    fn default() -> ListenOptions {
        ListenOptions {
            backlog: 511,
            ipv6only: false,
            exclusive: false,
            readable_all: false,
            writable_all: false,
            balance: Balance::default(),
        }
    }
}

/// A listen that failed in the master (or in the worker, for `exclusive`):
/// the errno, the syscall and the address. Reaches the caller inside an
/// [`io::Error`] whose kind matches the errno; [`ListenError::from_io`]
/// gets it back.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ListenError {
    /// The errno value (for instance `libc::EADDRINUSE`).
    pub errno: i32,
    /// The syscall that failed.
    pub syscall: Syscall,
    /// What was asked for.
    pub address: String,
}

impl ListenError {
    pub(crate) fn new(e: SysError, address: String) -> ListenError {
        ListenError { errno: e.errno, syscall: e.syscall, address }
    }

    /// The `ListenError` inside an `io::Error` returned by a listen, if any.
    pub fn from_io(e: &io::Error) -> Option<&ListenError> {
        e.get_ref().and_then(|inner| inner.downcast_ref::<ListenError>())
    }
}

impl fmt::Display for ListenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "listen on {}: {} failed: {}",
            self.address,
            self.syscall,
            io::Error::from_raw_os_error(self.errno)
        )
    }
}

impl std::error::Error for ListenError {}

impl From<ListenError> for io::Error {
    fn from(e: ListenError) -> io::Error {
        io::Error::new(io::Error::from_raw_os_error(e.errno).kind(), e)
    }
}
