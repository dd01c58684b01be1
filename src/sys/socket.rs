//! Sockets: the channel's socket pair with descriptor passing, and the
//! listening sockets of the master's registry.

use std::collections::VecDeque;
use std::io;
use std::mem;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::{
    self as nsock, sockopt, AddressFamily, Backlog, SockFlag, SockType, SockaddrIn, SockaddrIn6,
    SockaddrLike, SockaddrStorage,
};

use super::{SysError, Syscall};

/// The most descriptors one `sendmsg` may carry on Linux (`SCM_MAX_FD`).
pub const MAX_FDS_PER_MSG: usize = 253;

/// A connected, close-on-exec, non-blocking `AF_UNIX` stream socket pair.
/// Makes listening socket `fd`'s queue as long as the system allows
/// (`SOMAXCONN`; `listen(2)` again on a listening socket only changes it).
pub(crate) fn deepen_backlog(fd: BorrowedFd<'_>) -> io::Result<()> {
    nsock::listen(&fd, nsock::Backlog::MAXCONN)?;
    Ok(())
}

pub(crate) fn socketpair() -> io::Result<(OwnedFd, OwnedFd)> {
    let (a, b) = nsock::socketpair(AddressFamily::Unix, SockType::Stream, None, CLOEXEC_NONBLOCK)?;
    after_create(&a)?;
    after_create(&b)?;
    no_sigpipe(&a)?;
    no_sigpipe(&b)?;
    Ok((a, b))
}

/// The flags that make a new socket close-on-exec and non-blocking from
/// its creation, where `socket(2)` takes them (macOS does not: see
/// [`after_create`]).
#[cfg(not(target_vendor = "apple"))]
const CLOEXEC_NONBLOCK: SockFlag = SockFlag::SOCK_CLOEXEC.union(SockFlag::SOCK_NONBLOCK);
#[cfg(target_vendor = "apple")]
const CLOEXEC_NONBLOCK: SockFlag = SockFlag::empty();

/// Makes a new socket close-on-exec and non-blocking where the flags could
/// not be given at creation (macOS; this process has one thread, so no
/// fork comes between). Nothing to do elsewhere.
#[cfg(not(target_vendor = "apple"))]
fn after_create(_fd: &OwnedFd) -> nix::Result<()> {
    Ok(())
}

#[cfg(target_vendor = "apple")]
fn after_create(fd: &OwnedFd) -> nix::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, FdFlag, OFlag};
    fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))?;
    let fl = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL)?);
    fcntl(fd, FcntlArg::F_SETFL(fl | OFlag::O_NONBLOCK))?;
    Ok(())
}

/// `send` on a socket whose peer is gone must not raise `SIGPIPE`: Linux
/// and FreeBSD take `MSG_NOSIGNAL` on each send; macOS has no such flag,
/// and the socket is marked `SO_NOSIGPIPE` instead.
#[cfg(not(target_vendor = "apple"))]
fn no_sigpipe(_fd: &OwnedFd) -> nix::Result<()> {
    Ok(())
}

#[cfg(target_vendor = "apple")]
fn no_sigpipe(fd: &OwnedFd) -> nix::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: setsockopt reads one c_int from a valid pointer to our stack.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_NOSIGPIPE,
            (&on as *const libc::c_int).cast(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    nix::errno::Errno::result(r).map(drop)
}

#[cfg(not(target_vendor = "apple"))]
const SEND_FLAGS: libc::c_int = libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT;
#[cfg(target_vendor = "apple")]
const SEND_FLAGS: libc::c_int = libc::MSG_DONTWAIT;

/// Received descriptors are close-on-exec from the start where `recvmsg`
/// takes `MSG_CMSG_CLOEXEC`; on macOS each is marked right after (one
/// thread: no fork comes between).
#[cfg(not(target_vendor = "apple"))]
const RECV_FLAGS: libc::c_int = libc::MSG_CMSG_CLOEXEC | libc::MSG_DONTWAIT;
#[cfg(target_vendor = "apple")]
const RECV_FLAGS: libc::c_int = libc::MSG_DONTWAIT;

/// Control-message buffer for up to [`MAX_FDS_PER_MSG`] descriptors, aligned
/// for `cmsghdr`.
#[repr(C, align(8))]
struct CmsgBuf([u8; 1040]);

const _: () =
    assert!(mem::size_of::<libc::cmsghdr>() + MAX_FDS_PER_MSG * mem::size_of::<RawFd>() <= 1040);

/// Sends `buf` with `fds` attached to its first byte. Never blocks and never
/// raises `SIGPIPE`. Returns the bytes written; when it returns `Ok`, the fds
/// were sent (the kernel holds its own references), even on a short write.
pub(crate) fn send_with_fds(sock: BorrowedFd<'_>, buf: &[u8], fds: &[RawFd]) -> io::Result<usize> {
    if fds.len() > MAX_FDS_PER_MSG {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} descriptors in one message; at most {MAX_FDS_PER_MSG}", fds.len()),
        ));
    }
    let mut cmsg = CmsgBuf([0; 1040]);
    let mut iov = libc::iovec { iov_base: buf.as_ptr() as *mut libc::c_void, iov_len: buf.len() };
    // SAFETY: msghdr is a plain C struct for which all-zero is a valid value.
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !fds.is_empty() {
        let payload = mem::size_of_val(fds) as u32;
        // SAFETY: CMSG_SPACE/CMSG_LEN are pure arithmetic.
        let space = unsafe { libc::CMSG_SPACE(payload) } as usize;
        msg.msg_control = cmsg.0.as_mut_ptr() as *mut libc::c_void;
        msg.msg_controllen = space as _;
        // SAFETY: msg_control points at `space` <= 1040 zeroed, aligned bytes,
        // so CMSG_FIRSTHDR returns a valid header inside the buffer, and its
        // data area holds `payload` bytes (CMSG_LEN <= CMSG_SPACE).
        unsafe {
            let hdr = libc::CMSG_FIRSTHDR(&msg);
            (*hdr).cmsg_level = libc::SOL_SOCKET;
            (*hdr).cmsg_type = libc::SCM_RIGHTS;
            (*hdr).cmsg_len = libc::CMSG_LEN(payload) as _;
            std::ptr::copy_nonoverlapping(
                fds.as_ptr() as *const u8,
                libc::CMSG_DATA(hdr),
                payload as usize,
            );
        }
    }
    loop {
        // SAFETY: `msg` points at `iov` (valid for `buf.len()` bytes) and at
        // the control buffer, all of which outlive the call.
        let n = unsafe { libc::sendmsg(sock.as_raw_fd(), &msg, SEND_FLAGS) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Receives into `buf`, appending every received descriptor (close-on-exec)
/// to `fds`. Returns the bytes received (0 at end of stream) and whether the
/// control message was truncated (more descriptors than fit, or this
/// process at its descriptor limit): the bytes and the descriptors that did
/// arrive are kept either way, so nothing is misparsed or leaked, and the
/// caller decides what a truncation means. Never blocks.
pub(crate) fn recv_with_fds(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
    fds: &mut VecDeque<OwnedFd>,
) -> io::Result<(usize, bool)> {
    let mut cmsg = CmsgBuf([0; 1040]);
    let mut iov =
        libc::iovec { iov_base: buf.as_mut_ptr() as *mut libc::c_void, iov_len: buf.len() };
    // SAFETY: msghdr is a plain C struct for which all-zero is a valid value.
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cmsg.0.as_mut_ptr() as *mut libc::c_void;
    msg.msg_controllen = cmsg.0.len() as _;
    let n = loop {
        // SAFETY: `msg` points at `iov` (valid for `buf.len()` writable bytes)
        // and at the 1040-byte control buffer, both alive for the call.
        let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, RECV_FLAGS) };
        if n >= 0 {
            break n as usize;
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    };
    // SAFETY: after a successful recvmsg the kernel has filled msg_control
    // with msg_controllen bytes of well-formed cmsghdrs; CMSG_FIRSTHDR and
    // CMSG_NXTHDR stay inside that range, and each SCM_RIGHTS payload holds
    // (cmsg_len - CMSG_LEN(0)) / 4 descriptors that are now ours.
    unsafe {
        let mut hdr = libc::CMSG_FIRSTHDR(&msg);
        while !hdr.is_null() {
            if (*hdr).cmsg_level == libc::SOL_SOCKET && (*hdr).cmsg_type == libc::SCM_RIGHTS {
                let bytes = (*hdr).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                let data = libc::CMSG_DATA(hdr) as *const RawFd;
                for i in 0..bytes / mem::size_of::<RawFd>() {
                    let raw = std::ptr::read_unaligned(data.add(i));
                    let fd = OwnedFd::from_raw_fd(raw);
                    if cfg!(target_vendor = "apple") {
                        // No MSG_CMSG_CLOEXEC here.
                        let _ = nix::fcntl::fcntl(
                            &fd,
                            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
                        );
                    }
                    fds.push_back(fd);
                }
            }
            hdr = libc::CMSG_NXTHDR(&msg, hdr);
        }
    }
    Ok((n, msg.msg_flags & libc::MSG_CTRUNC != 0))
}

/// The transport a listening socket uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transport {
    Stream,
    Datagram,
}

/// Options applied when the master creates a socket.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BindOptions {
    pub backlog: i32,
    pub ipv6only: bool,
}

/// Creates a non-blocking, close-on-exec socket bound to `addr` with
/// `SO_REUSEADDR`, listening with `backlog` when it is a stream socket.
pub(crate) fn bind_inet(
    transport: Transport,
    addr: SocketAddr,
    opts: BindOptions,
) -> Result<OwnedFd, SysError> {
    let family = match addr {
        SocketAddr::V4(_) => AddressFamily::Inet,
        SocketAddr::V6(_) => AddressFamily::Inet6,
    };
    let ty = match transport {
        Transport::Stream => SockType::Stream,
        Transport::Datagram => SockType::Datagram,
    };
    let fd = nsock::socket(family, ty, CLOEXEC_NONBLOCK, None)
        .map_err(|e| SysError::from_nix(Syscall::Socket, e))?;
    after_create(&fd).map_err(|e| SysError::from_nix(Syscall::Socket, e))?;
    if transport == Transport::Stream {
        nsock::setsockopt(&fd, sockopt::ReuseAddr, &true)
            .map_err(|e| SysError::from_nix(Syscall::Setsockopt, e))?;
    }
    let res = match addr {
        SocketAddr::V4(a) => nsock::bind(fd.as_raw_fd(), &SockaddrIn::from(a)),
        SocketAddr::V6(a) => {
            nsock::setsockopt(&fd, sockopt::Ipv6V6Only, &opts.ipv6only)
                .map_err(|e| SysError::from_nix(Syscall::Setsockopt, e))?;
            nsock::bind(fd.as_raw_fd(), &SockaddrIn6::from(a))
        }
    };
    res.map_err(|e| SysError::from_nix(Syscall::Bind, e))?;
    if transport == Transport::Stream {
        listen(fd.as_fd(), opts.backlog)?;
    }
    Ok(fd)
}

fn listen(fd: BorrowedFd<'_>, backlog: i32) -> Result<(), SysError> {
    let backlog = Backlog::new(backlog.clamp(1, libc::SOMAXCONN))
        .map_err(|e| SysError::from_nix(Syscall::Listen, e))?;
    nsock::listen(&fd, backlog).map_err(|e| SysError::from_nix(Syscall::Listen, e))
}

/// Makes an inherited socket usable as a shared server of `kind`: it must
/// be a socket of that transport and family ([`check_kind`], checked before
/// anything is changed); a stream socket that is not listening yet is put
/// into the listening state. The socket is set non-blocking.
pub(crate) fn prepare_inherited(
    fd: BorrowedFd<'_>,
    kind: crate::listen::Kind,
    backlog: i32,
) -> Result<(), SysError> {
    check_kind(fd, kind)?;
    if kind != crate::listen::Kind::Udp {
        let listening = nsock::getsockopt(&fd, sockopt::AcceptConn)
            .map_err(|e| SysError::from_nix(Syscall::Getsockopt, e))?;
        if !listening {
            listen(fd, backlog)?;
        }
    }
    super::fd::set_nonblocking(fd)
        .map_err(|e| SysError::new(Syscall::Dup, e.raw_os_error().unwrap_or(libc::EIO)))
}

/// The address a socket is bound to, if it is an internet socket.
pub(crate) fn local_inet_addr(fd: BorrowedFd<'_>) -> Result<Option<SocketAddr>, SysError> {
    let ss: SockaddrStorage = nsock::getsockname(fd.as_raw_fd())
        .map_err(|e| SysError::from_nix(Syscall::Getsockname, e))?;
    if let Some(a) = ss.as_sockaddr_in() {
        return Ok(Some(SocketAddr::from(*a)));
    }
    if let Some(a) = ss.as_sockaddr_in6() {
        return Ok(Some(SocketAddr::from(*a)));
    }
    let _ = ss.family();
    Ok(None)
}

/// Creates a non-blocking, close-on-exec Unix stream socket bound to `path`
/// and listening. A path whose first byte is NUL is in Linux's abstract
/// namespace (no file). A path longer than `sun_path` is refused with
/// `ENAMETOOLONG`, never truncated.
pub(crate) fn bind_unix(path: &[u8], backlog: i32) -> Result<OwnedFd, SysError> {
    let addr = unix_addr(path)?;
    let fd = nsock::socket(AddressFamily::Unix, SockType::Stream, CLOEXEC_NONBLOCK, None)
        .map_err(|e| SysError::from_nix(Syscall::Socket, e))?;
    after_create(&fd).map_err(|e| SysError::from_nix(Syscall::Socket, e))?;
    nsock::bind(fd.as_raw_fd(), &addr).map_err(|e| SysError::from_nix(Syscall::Bind, e))?;
    listen(fd.as_fd(), backlog)?;
    Ok(fd)
}

/// The `sockaddr_un` for `path` (abstract when its first byte is NUL;
/// `EAFNOSUPPORT` where there is no abstract namespace).
fn unix_addr(path: &[u8]) -> Result<nsock::UnixAddr, SysError> {
    use std::os::unix::ffi::OsStrExt;
    match path.split_first() {
        Some((0, name)) => abstract_unix_addr(name),
        _ => nsock::UnixAddr::new(std::ffi::OsStr::from_bytes(path)),
    }
    .map_err(|e| SysError::from_nix(Syscall::Bind, e))
}

/// Whether this platform has abstract Unix socket addresses (`unix:@NAME`):
/// Linux only.
pub(crate) const HAS_ABSTRACT: bool = cfg!(any(target_os = "linux", target_os = "android"));

/// What a platform without abstract addresses says of one.
pub(crate) const NO_ABSTRACT: &str =
    "abstract Unix socket addresses (unix:@NAME) exist only on Linux; use a path";

#[cfg(any(target_os = "linux", target_os = "android"))]
fn abstract_unix_addr(name: &[u8]) -> nix::Result<nsock::UnixAddr> {
    nsock::UnixAddr::new_abstract(name)
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn abstract_unix_addr(_name: &[u8]) -> nix::Result<nsock::UnixAddr> {
    Err(nix::errno::Errno::EAFNOSUPPORT)
}

/// The abstract name of a nix Unix address, if it has one.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) fn abstract_name_of(addr: &nsock::UnixAddr) -> Option<&[u8]> {
    addr.as_abstract()
}

/// The abstract name of a nix Unix address: never, here.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub(crate) fn abstract_name_of(_addr: &nsock::UnixAddr) -> Option<&[u8]> {
    None
}

/// A standard-library Unix address for abstract name `name`; an
/// `Unsupported` error naming the problem where there is no abstract
/// namespace.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) fn std_abstract_addr(name: &[u8]) -> io::Result<std::os::unix::net::SocketAddr> {
    use std::os::linux::net::SocketAddrExt;
    std::os::unix::net::SocketAddr::from_abstract_name(name)
}

/// See the Linux version.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub(crate) fn std_abstract_addr(_name: &[u8]) -> io::Result<std::os::unix::net::SocketAddr> {
    Err(io::Error::new(io::ErrorKind::Unsupported, NO_ABSTRACT))
}

/// The abstract name of a standard-library Unix address, if it has one.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) fn std_abstract_name(addr: &std::os::unix::net::SocketAddr) -> Option<&[u8]> {
    use std::os::linux::net::SocketAddrExt;
    addr.as_abstract_name()
}

/// See the Linux version: never, here.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub(crate) fn std_abstract_name(_addr: &std::os::unix::net::SocketAddr) -> Option<&[u8]> {
    None
}

/// Checks that `path` fits in `sun_path` (with its terminating NUL; an
/// abstract name without): `ENAMETOOLONG` otherwise, whatever the length.
/// A NUL inside a path is `EINVAL`.
pub(crate) fn check_unix_path(path: &[u8]) -> Result<(), SysError> {
    unix_addr(path).map(drop)
}

/// True only if connecting to the Unix socket file `path` is refused
/// (`ECONNREFUSED`: no socket listens on it). The connect does not block;
/// any other outcome (connected, backlog full, no permission, ...) is
/// false. A server that listens gets a connection closed at once.
pub(crate) fn unix_refuses(path: &[u8]) -> bool {
    let Ok(addr) = unix_addr(path) else { return false };
    let Ok(fd) = nsock::socket(AddressFamily::Unix, SockType::Stream, CLOEXEC_NONBLOCK, None)
    else {
        return false;
    };
    if after_create(&fd).is_err() {
        return false;
    }
    nsock::connect(fd.as_raw_fd(), &addr) == Err(nix::errno::Errno::ECONNREFUSED)
}

/// Checks that `fd` is a socket of the transport and family `kind` names
/// (`EPROTOTYPE` if not; `ENOTSOCK` from `getsockopt` if it is no socket).
/// Reads only: nothing about the descriptor changes.
pub(crate) fn check_kind(fd: BorrowedFd<'_>, kind: crate::listen::Kind) -> Result<(), SysError> {
    use crate::listen::Kind;
    let ty = nsock::getsockopt(&fd, sockopt::SockType)
        .map_err(|e| SysError::from_nix(Syscall::Getsockopt, e))?;
    let ss: SockaddrStorage = nsock::getsockname(fd.as_raw_fd())
        .map_err(|e| SysError::from_nix(Syscall::Getsockname, e))?;
    let family = ss.family();
    let inet = matches!(family, Some(AddressFamily::Inet | AddressFamily::Inet6));
    let ok = match kind {
        Kind::Tcp => ty == SockType::Stream && inet,
        Kind::Udp => ty == SockType::Datagram && inet,
        Kind::Unix => ty == SockType::Stream && family == Some(AddressFamily::Unix),
    };
    if ok {
        Ok(())
    } else {
        Err(SysError::new(Syscall::Getsockopt, libc::EPROTOTYPE))
    }
}
