//! The wire format of the IPC channel: pure code, no I/O.
//!
//! Every frame is a 6-byte header and a body:
//!
//! ```text
//! u32 LE  body length (at most MAX_BODY)
//! u8      tag          (which message)
//! u8      nfds         (descriptors that travel with this frame)
//! ...     body         (fields of the message, little-endian)
//! ```
//!
//! Descriptors travel out of band (`SCM_RIGHTS`) attached to the first byte
//! of their frame, so by the time a whole frame has arrived, its descriptors
//! have too; the channel pairs them with the frame using `nfds`.
//!
//! [`decode`] never panics, never allocates more than the frame it was given
//! holds, and rejects anything that is not exactly one of the messages below.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};

use crate::listen::{Address, Kind};
use crate::sys::Syscall;

/// Bytes in a frame header.
pub const HEADER_LEN: usize = 6;
/// The largest body a frame may have (16 MiB): the limit of a user message.
pub const MAX_BODY: usize = 16 * 1024 * 1024;
/// The most descriptors one frame may carry.
pub const MAX_FDS: usize = crate::sys::socket::MAX_FDS_PER_MSG;
/// The longest address or path in a listen request.
pub const MAX_ADDRESS: usize = 4096;
/// [`Message::ListenOk`] without an accept board.
pub const NO_SEAT: u32 = u32::MAX;

/// A version of this protocol, `major.minor`.
///
/// Master and worker talk if their major versions are equal; the minor
/// versions may differ. What a minor version may change: it may add message
/// kinds, and fields or flags that old peers never see, and a side sends
/// what minor version `m` added only to a peer that announced `m` or above
/// (the master learns the worker's version from its first frame, `Online`, the
/// worker the master's from [`ENV_PROTOCOL`](crate::ENV_PROTOCOL)). So the
/// decoder stays strict: it never has to skip what it does not know.
/// Everything else (the frame header, the `Online` frame, what an existing
/// message means or carries) changes only with the major version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProtocolVersion {
    /// Must be equal on both sides.
    pub major: u16,
    /// May differ (see above).
    pub minor: u16,
}

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: ProtocolVersion = ProtocolVersion { major: 1, minor: 0 };

impl ProtocolVersion {
    /// What a peer from before versions speaks: its `Online` frame has an
    /// empty body, and its master sets no [`ENV_PROTOCOL`](crate::ENV_PROTOCOL).
    pub const UNVERSIONED: ProtocolVersion = ProtocolVersion { major: 0, minor: 0 };

    /// True if a side speaking `self` can talk to one speaking `other`.
    pub fn compatible(self, other: ProtocolVersion) -> bool {
        self.major == other.major
    }
}

impl fmt::Display for ProtocolVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

impl std::str::FromStr for ProtocolVersion {
    type Err = String;

    /// `MAJOR.MINOR`, as [`Display`](fmt::Display) writes it.
    fn from_str(s: &str) -> Result<ProtocolVersion, String> {
        let bad = || format!("protocol version {s:?}: not MAJOR.MINOR");
        let (major, minor) = s.split_once('.').ok_or_else(bad)?;
        Ok(ProtocolVersion {
            major: major.parse().map_err(|_| bad())?,
            minor: minor.parse().map_err(|_| bad())?,
        })
    }
}

const T_ONLINE: u8 = 1;
const T_LISTEN: u8 = 2;
const T_LISTENING: u8 = 3;
const T_CLOSE: u8 = 4;
const T_LEAVING: u8 = 5;
const T_HEARTBEAT: u8 = 6;
const T_READY: u8 = 7;
const T_LISTEN_OK: u8 = 16;
const T_LISTEN_ERR: u8 = 17;
const T_DISCONNECT: u8 = 18;
const T_USER: u8 = 32;

/// What a worker asks the master for when it listens: the registry key
/// `(kind, address, port, fd, index)` and the options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenRequest {
    /// Socket kind.
    pub kind: Kind,
    /// Numeric IP address as text, or a socket path; empty with `fd`.
    pub address: Vec<u8>,
    /// Port (0: any).
    pub port: u16,
    /// The master's descriptor to serve, or -1.
    pub fd: i32,
    /// How many servers this worker opened before on the same
    /// `(kind, address, port, fd)`.
    pub index: u32,
    /// `listen(2)` backlog.
    pub backlog: i32,
    /// `IPV6_V6ONLY` for IPv6 sockets.
    pub ipv6only: bool,
    /// Unix sockets: file readable by all.
    pub readable_all: bool,
    /// Unix sockets: file writable by all.
    pub writable_all: bool,
}

/// One frame of the protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Worker to master: the worker's runtime is up, and speaks this
    /// version of the protocol. The first frame a worker sends, and the same
    /// in every version: `u16 major, u16 minor` (an empty body is
    /// [`ProtocolVersion::UNVERSIONED`], as workers from before versions
    /// sent it).
    Online {
        /// The worker's protocol version.
        version: ProtocolVersion,
    },
    /// Worker to master: give me a listening socket.
    Listen {
        /// Matches the reply.
        seq: u32,
        /// The key and options.
        request: ListenRequest,
    },
    /// Worker to master: a server is listening at this address.
    Listening {
        /// Bound address.
        address: Address,
    },
    /// Worker to master: the worker closed the server of this registry handle.
    Close {
        /// The handle from [`Message::ListenOk`].
        handle: u32,
    },
    /// Worker to master: the worker is leaving of its own accord.
    Leaving,
    /// Worker to master: the worker's loop is alive.
    Heartbeat,
    /// Worker to master: the worker is ready to serve (`Worker::ready`).
    Ready,
    /// Master to worker: here is the socket (the first descriptor attached)
    /// and, unless `seat` is [`NO_SEAT`], the socket's accept board (the
    /// second) and, where one worker is woken per connection (Linux), its
    /// doorbell (an eventfd, the third).
    ListenOk {
        /// The request's sequence number.
        seq: u32,
        /// Registry handle, named again by [`Message::Close`].
        handle: u32,
        /// Bound address.
        address: Address,
        /// The worker's seat on the accept board, or [`NO_SEAT`].
        seat: u32,
    },
    /// Master to worker: the request failed.
    ListenErr {
        /// The request's sequence number.
        seq: u32,
        /// The errno.
        errno: i32,
        /// The call that failed.
        syscall: Syscall,
    },
    /// Master to worker: stop listening, finish open connections, exit.
    Disconnect,
    /// Either way: an application message, with any descriptors attached.
    User {
        /// The bytes, in the application's encoding.
        payload: Vec<u8>,
    },
}

/// A frame that [`decode`] took off the front of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub struct Decoded {
    /// The message.
    pub message: Message,
    /// How many descriptors belong to it.
    pub nfds: usize,
    /// How many bytes of the buffer it used.
    pub len: usize,
}

/// Why bytes are not a valid frame. Any of these ends the channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The header announces a body over [`MAX_BODY`].
    TooLarge(usize),
    /// The tag names no message.
    UnknownTag(u8),
    /// The message cannot carry that many descriptors.
    BadFdCount {
        /// The frame's tag.
        tag: u8,
        /// Descriptors announced.
        nfds: u8,
    },
    /// A field is missing, out of range, or bytes are left over.
    Malformed {
        /// The frame's tag.
        tag: u8,
        /// What was wrong.
        what: &'static str,
    },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::TooLarge(n) => {
                write!(f, "frame body of {n} bytes exceeds the limit of {MAX_BODY}")
            }
            DecodeError::UnknownTag(t) => write!(f, "unknown frame tag {t}"),
            DecodeError::BadFdCount { tag, nfds } => {
                write!(f, "frame tag {tag} cannot carry {nfds} descriptors")
            }
            DecodeError::Malformed { tag, what } => write!(f, "malformed frame tag {tag}: {what}"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Appends the frame of `msg`, announcing `nfds` descriptors, to `out`.
///
/// # Panics
/// If `nfds` exceeds [`MAX_FDS`] or the body exceeds [`MAX_BODY`]; callers
/// check both first (the channel returns an error instead).
pub fn encode(msg: &Message, nfds: usize, out: &mut Vec<u8>) {
    assert!(nfds <= MAX_FDS, "too many descriptors for one frame");
    let start = out.len();
    out.extend_from_slice(&[0; HEADER_LEN]);
    let tag = match msg {
        Message::Online { version } => {
            if *version != ProtocolVersion::UNVERSIONED {
                out.extend_from_slice(&version.major.to_le_bytes());
                out.extend_from_slice(&version.minor.to_le_bytes());
            }
            T_ONLINE
        }
        Message::Listen { seq, request } => {
            out.extend_from_slice(&seq.to_le_bytes());
            out.push(request.kind as u8);
            put_bytes(out, &request.address);
            out.extend_from_slice(&request.port.to_le_bytes());
            out.extend_from_slice(&request.fd.to_le_bytes());
            out.extend_from_slice(&request.index.to_le_bytes());
            out.extend_from_slice(&request.backlog.to_le_bytes());
            out.push(
                request.ipv6only as u8
                    | (request.readable_all as u8) << 1
                    | (request.writable_all as u8) << 2,
            );
            T_LISTEN
        }
        Message::Listening { address } => {
            put_address(out, address);
            T_LISTENING
        }
        Message::Close { handle } => {
            out.extend_from_slice(&handle.to_le_bytes());
            T_CLOSE
        }
        Message::Leaving => T_LEAVING,
        Message::Heartbeat => T_HEARTBEAT,
        Message::Ready => T_READY,
        Message::ListenOk { seq, handle, address, seat } => {
            out.extend_from_slice(&seq.to_le_bytes());
            out.extend_from_slice(&handle.to_le_bytes());
            out.extend_from_slice(&seat.to_le_bytes());
            put_address(out, address);
            T_LISTEN_OK
        }
        Message::ListenErr { seq, errno, syscall } => {
            out.extend_from_slice(&seq.to_le_bytes());
            out.extend_from_slice(&errno.to_le_bytes());
            out.push(*syscall as u8);
            T_LISTEN_ERR
        }
        Message::Disconnect => T_DISCONNECT,
        Message::User { payload } => {
            out.extend_from_slice(payload);
            T_USER
        }
    };
    let body = out.len() - start - HEADER_LEN;
    assert!(body <= MAX_BODY, "frame body over MAX_BODY");
    out[start..start + 4].copy_from_slice(&(body as u32).to_le_bytes());
    out[start + 4] = tag;
    out[start + 5] = nfds as u8;
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u16).to_le_bytes());
    out.extend_from_slice(b);
}

fn put_address(out: &mut Vec<u8>, a: &Address) {
    match a {
        Address::Inet(SocketAddr::V4(v4)) => {
            out.push(4);
            out.extend_from_slice(&v4.ip().octets());
            out.extend_from_slice(&v4.port().to_le_bytes());
        }
        Address::Inet(SocketAddr::V6(v6)) => {
            out.push(6);
            out.extend_from_slice(&v6.ip().octets());
            out.extend_from_slice(&v6.port().to_le_bytes());
            out.extend_from_slice(&v6.scope_id().to_le_bytes());
        }
        Address::Unix(path) => {
            out.push(1);
            put_bytes(out, path);
        }
    }
}

/// Takes one frame off the front of `buf`.
///
/// Returns `Ok(None)` when `buf` does not yet hold a whole frame (and its
/// header, if present, is acceptable), `Ok(Some(_))` with the message and the
/// bytes used, or an error for bytes that can never become a valid frame.
pub fn decode(buf: &[u8]) -> Result<Option<Decoded>, DecodeError> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let body_len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    let tag = buf[4];
    let nfds = buf[5];
    if body_len > MAX_BODY {
        return Err(DecodeError::TooLarge(body_len));
    }
    let max_fds = match tag {
        T_ONLINE | T_LISTEN | T_LISTENING | T_CLOSE | T_LEAVING | T_HEARTBEAT | T_READY
        | T_LISTEN_ERR | T_DISCONNECT => 0,
        T_LISTEN_OK => 3,
        T_USER => MAX_FDS,
        _ => return Err(DecodeError::UnknownTag(tag)),
    };
    let min_fds = if tag == T_LISTEN_OK { 1 } else { 0 };
    if (nfds as usize) > max_fds || (nfds as usize) < min_fds {
        return Err(DecodeError::BadFdCount { tag, nfds });
    }
    let total = HEADER_LEN + body_len;
    if buf.len() < total {
        return Ok(None);
    }
    let mut r = Reader { buf: &buf[HEADER_LEN..total], tag };
    let message = match tag {
        T_ONLINE if r.buf.is_empty() => Message::Online { version: ProtocolVersion::UNVERSIONED },
        T_ONLINE => {
            let version = ProtocolVersion { major: r.u16()?, minor: r.u16()? };
            if version == ProtocolVersion::UNVERSIONED {
                // Written as an empty body: one encoding per message.
                return Err(r.bad("version 0.0 in a body"));
            }
            Message::Online { version }
        }
        T_LISTEN => {
            let seq = r.u32()?;
            let kind = Kind::from_u8(r.u8()?).ok_or(r.bad("unknown socket kind"))?;
            let address = r.bytes()?;
            if address.len() > MAX_ADDRESS {
                return Err(r.bad("address too long"));
            }
            let port = r.u16()?;
            let fd = r.i32()?;
            let index = r.u32()?;
            let backlog = r.i32()?;
            let flags = r.u8()?;
            if flags & !0b111 != 0 {
                return Err(r.bad("unknown listen flags"));
            }
            Message::Listen {
                seq,
                request: ListenRequest {
                    kind,
                    address: address.to_vec(),
                    port,
                    fd,
                    index,
                    backlog,
                    ipv6only: flags & 1 != 0,
                    readable_all: flags & 2 != 0,
                    writable_all: flags & 4 != 0,
                },
            }
        }
        T_LISTENING => Message::Listening { address: r.address()? },
        T_CLOSE => Message::Close { handle: r.u32()? },
        T_LEAVING => Message::Leaving,
        T_HEARTBEAT => Message::Heartbeat,
        T_READY => Message::Ready,
        T_LISTEN_OK => {
            let (seq, handle, seat) = (r.u32()?, r.u32()?, r.u32()?);
            // The board, and its bell where the platform has one, travel
            // exactly when there is a seat.
            if (seat == NO_SEAT) != (nfds == 1) {
                return Err(DecodeError::BadFdCount { tag, nfds });
            }
            Message::ListenOk { seq, handle, seat, address: r.address()? }
        }
        T_LISTEN_ERR => {
            let seq = r.u32()?;
            let errno = r.i32()?;
            if errno <= 0 {
                return Err(r.bad("errno not positive"));
            }
            let syscall = Syscall::from_u8(r.u8()?).ok_or(r.bad("unknown syscall"))?;
            Message::ListenErr { seq, errno, syscall }
        }
        T_DISCONNECT => Message::Disconnect,
        T_USER => {
            let payload = r.buf.to_vec();
            r.buf = &[];
            Message::User { payload }
        }
        _ => unreachable!("tag checked above"),
    };
    if !r.buf.is_empty() {
        return Err(r.bad("bytes left over after the last field"));
    }
    Ok(Some(Decoded { message, nfds: nfds as usize, len: total }))
}

struct Reader<'a> {
    buf: &'a [u8],
    tag: u8,
}

impl<'a> Reader<'a> {
    fn bad(&self, what: &'static str) -> DecodeError {
        DecodeError::Malformed { tag: self.tag, what }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(self.bad("body shorter than its fields"));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut a = [0; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn i32(&mut self) -> Result<i32, DecodeError> {
        Ok(i32::from_le_bytes(self.array()?))
    }

    fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.u16()? as usize;
        self.take(n)
    }

    fn address(&mut self) -> Result<Address, DecodeError> {
        match self.u8()? {
            4 => {
                let ip = Ipv4Addr::from(self.array::<4>()?);
                let port = self.u16()?;
                Ok(Address::Inet(SocketAddr::new(IpAddr::V4(ip), port)))
            }
            6 => {
                let ip = Ipv6Addr::from(self.array::<16>()?);
                let port = self.u16()?;
                let scope = self.u32()?;
                Ok(Address::Inet(SocketAddr::V6(SocketAddrV6::new(ip, port, 0, scope))))
            }
            1 => {
                let path = self.bytes()?;
                if path.len() > MAX_ADDRESS {
                    return Err(self.bad("path too long"));
                }
                Ok(Address::Unix(path.to_vec()))
            }
            _ => Err(self.bad("unknown address family")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(msg: Message, nfds: usize) {
        let mut buf = Vec::new();
        encode(&msg, nfds, &mut buf);
        let d = decode(&buf).unwrap().unwrap();
        assert_eq!(d, Decoded { message: msg, nfds, len: buf.len() });
        for cut in 0..buf.len() {
            assert_eq!(decode(&buf[..cut]), Ok(None), "prefix of {cut} bytes");
        }
    }

    #[test]
    fn every_message_roundtrips() {
        roundtrip(Message::Online { version: PROTOCOL_VERSION }, 0);
        roundtrip(Message::Online { version: ProtocolVersion { major: 7, minor: 65535 } }, 0);
        roundtrip(Message::Online { version: ProtocolVersion::UNVERSIONED }, 0);
        roundtrip(
            Message::Listen {
                seq: 7,
                request: ListenRequest {
                    kind: Kind::Tcp,
                    address: b"::1".to_vec(),
                    port: 8080,
                    fd: -1,
                    index: 2,
                    backlog: 511,
                    ipv6only: true,
                    readable_all: false,
                    writable_all: true,
                },
            },
            0,
        );
        roundtrip(Message::Listening { address: Address::Inet("127.0.0.1:9".parse().unwrap()) }, 0);
        roundtrip(Message::Close { handle: 3 }, 0);
        roundtrip(Message::Leaving, 0);
        roundtrip(Message::Heartbeat, 0);
        roundtrip(Message::Ready, 0);
        roundtrip(
            Message::ListenOk {
                seq: 1,
                handle: 2,
                address: Address::Inet("[::1]:80".parse().unwrap()),
                seat: 0,
            },
            3,
        );
        roundtrip(
            Message::ListenOk {
                seq: 1,
                handle: 2,
                address: Address::Unix(b"/tmp/s".to_vec()),
                seat: NO_SEAT,
            },
            1,
        );
        roundtrip(
            Message::ListenErr { seq: 9, errno: libc::EADDRINUSE, syscall: Syscall::Bind },
            0,
        );
        roundtrip(Message::Disconnect, 0);
        roundtrip(Message::User { payload: b"hello".to_vec() }, 3);
    }

    #[test]
    fn rejects_bad_frames() {
        let mut buf = Vec::new();
        encode(&Message::Online { version: PROTOCOL_VERSION }, 0, &mut buf);
        buf[4] = 200;
        assert_eq!(decode(&buf), Err(DecodeError::UnknownTag(200)));
        buf[4] = T_ONLINE;
        buf[5] = 1;
        assert!(matches!(decode(&buf), Err(DecodeError::BadFdCount { .. })));
        let huge = [0xff, 0xff, 0xff, 0xff, T_USER, 0];
        assert_eq!(decode(&huge), Err(DecodeError::TooLarge(u32::MAX as usize)));
        let mut extra = Vec::new();
        encode(&Message::Close { handle: 1 }, 0, &mut extra);
        extra[0] += 1;
        extra.push(0);
        assert!(matches!(decode(&extra), Err(DecodeError::Malformed { .. })));
        // A version is 4 bytes, and 0.0 is only ever the empty body.
        for body in [&[1u8, 0][..], &[1, 0, 0, 0, 0], &[0, 0, 0, 0]] {
            let mut online = vec![body.len() as u8, 0, 0, 0, T_ONLINE, 0];
            online.extend_from_slice(body);
            assert!(matches!(decode(&online), Err(DecodeError::Malformed { .. })), "{body:?}");
        }
        // A seat without its board, or a board without a seat.
        for (seat, nfds) in [(3, 1), (NO_SEAT, 2), (NO_SEAT, 3)] {
            let mut ok = Vec::new();
            let address = Address::Unix(Vec::new());
            encode(&Message::ListenOk { seq: 1, handle: 1, address, seat }, nfds, &mut ok);
            assert!(matches!(decode(&ok), Err(DecodeError::BadFdCount { .. })), "{seat} {nfds}");
        }
    }
}
