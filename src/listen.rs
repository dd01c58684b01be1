//! What a worker can listen on, and how a failed listen is reported.

use std::fmt;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::RawFd;
use std::str::FromStr;

use crate::sys::{SysError, Syscall};

/// The kind of socket in a registry key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
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
            Address::Unix(p) => write!(f, "unix:{}", String::from_utf8_lossy(p)),
        }
    }
}

/// What to listen on, as the `--listen` flag of the examples spells it.
///
/// - `HOST:PORT` or `[V6]:PORT`: a TCP address (port 0: the master picks one
///   port, shared by every worker);
/// - `fd:N`: the listening socket that is descriptor `N` *of the master*
///   (inherited by the master, for instance from its parent or systemd).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    /// A TCP address.
    Tcp(SocketAddr),
    /// The master's descriptor `N`.
    Fd(RawFd),
}

impl FromStr for ListenAddr {
    type Err = io::Error;

    fn from_str(s: &str) -> io::Result<ListenAddr> {
        let bad = |why: &str| {
            io::Error::new(io::ErrorKind::InvalidInput, format!("bad listen address {s:?}: {why}"))
        };
        if let Some(n) = s.strip_prefix("fd:") {
            let fd: RawFd = n.parse().map_err(|_| bad("fd:N takes a descriptor number"))?;
            if fd < 0 {
                return Err(bad("descriptor numbers are not negative"));
            }
            return Ok(ListenAddr::Fd(fd));
        }
        if let Ok(a) = s.parse::<SocketAddr>() {
            return Ok(ListenAddr::Tcp(a));
        }
        if !s.contains(':') {
            return Err(bad("expected HOST:PORT, [V6]:PORT or fd:N"));
        }
        let mut addrs = s.to_socket_addrs().map_err(|e| bad(&e.to_string()))?;
        addrs.next().map(ListenAddr::Tcp).ok_or_else(|| bad("host resolves to no address"))
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::Tcp(a) => write!(f, "{a}"),
            ListenAddr::Fd(n) => write!(f, "fd:{n}"),
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
}

impl Default for ListenOptions {
    fn default() -> ListenOptions {
        ListenOptions { backlog: 511, ipv6only: false, exclusive: false }
    }
}

/// A listen that failed in the master (or in the worker, for `exclusive`):
/// the errno, the syscall and the address. Reaches the caller inside an
/// [`io::Error`] whose kind matches the errno; [`ListenError::from_io`]
/// gets it back.
#[derive(Debug, Clone, PartialEq, Eq)]
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
