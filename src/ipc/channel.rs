//! A non-blocking channel of frames and file descriptors over a Unix stream
//! socket. Used by both sides: registered in the master's reactor for every
//! worker, and in each worker's own loop.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};

use mio::event::Source;
use mio::{Interest, Registry, Token};

use super::codec::{self, Message, HEADER_LEN, MAX_BODY, MAX_FDS};
use crate::sys::socket::{recv_with_fds, send_with_fds};

/// Bytes read per `recvmsg`.
const CHUNK: usize = 64 * 1024;
/// Fd-less frames are appended to the last queued buffer up to this size.
const COALESCE: usize = 64 * 1024;
/// Descriptors received but not yet claimed by a frame: beyond this the peer
/// is sending descriptors no frame announces.
const MAX_PENDING_FDS: usize = 2 * MAX_FDS;

/// Reads of one channel per turn of its loop before other sources get a
/// turn (see [`ReadTurn`]).
pub(crate) const READ_BUDGET: usize = 16;
/// A user message is refused (`WouldBlock`) past this much queued (see
/// [`Channel::full_for`]).
pub(crate) const MAX_QUEUED: usize = 64 * 1024 * 1024;
/// Stop handling the peer's requests while this much is queued towards it.
const PAUSE_READS_AT: usize = 1024 * 1024;
/// Stop handling the peer's requests while this many descriptors are
/// queued towards it.
const PAUSE_FDS_AT: usize = 64;

/// True if `e` says the peer closed its end (it is gone; what it sent
/// before is still to be read).
pub(crate) fn is_peer_gone(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset)
}

/// The reads one channel gets in one turn of its loop: [`READ_BUDGET`], or
/// no limit (draining a peer that has exited).
#[derive(Debug)]
pub(crate) struct ReadTurn {
    left: Option<usize>,
}

impl ReadTurn {
    /// A turn of [`READ_BUDGET`] reads.
    pub(crate) fn new() -> ReadTurn {
        ReadTurn { left: Some(READ_BUDGET) }
    }

    /// A turn without a limit.
    pub(crate) fn unlimited() -> ReadTurn {
        ReadTurn { left: None }
    }

    /// True once every read of the turn is spent: more may be ready, for
    /// the next turn.
    pub(crate) fn spent(&self) -> bool {
        self.left == Some(0)
    }

    /// One read of the turn ([`Channel::read_some`]).
    pub(crate) fn read(&mut self, ch: &mut Channel) -> io::Result<ReadStatus> {
        if let Some(left) = self.left.as_mut() {
            *left = left.saturating_sub(1);
        }
        ch.read_some()
    }
}

/// What a read found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReadStatus {
    /// Bytes arrived; there may be more.
    Data,
    /// Nothing more to read for now.
    WouldBlock,
    /// The peer closed its end.
    Eof,
}

struct Out {
    buf: Vec<u8>,
    pos: usize,
    fds: Vec<OwnedFd>,
}

/// One end of a master-worker channel.
pub(crate) struct Channel {
    sock: mio::net::UnixStream,
    rbuf: Vec<u8>,
    start: usize,
    end: usize,
    rfds: VecDeque<OwnedFd>,
    wq: VecDeque<Out>,
    wq_bytes: usize,
    failed: bool,
}

impl Channel {
    /// Wraps a connected, non-blocking stream socket.
    pub(crate) fn new(fd: OwnedFd) -> Channel {
        let std = std::os::unix::net::UnixStream::from(fd);
        Channel {
            sock: mio::net::UnixStream::from_std(std),
            rbuf: Vec::new(),
            start: 0,
            end: 0,
            rfds: VecDeque::new(),
            wq: VecDeque::new(),
            wq_bytes: 0,
            failed: false,
        }
    }

    /// Queues `msg` with `fds` attached. Nothing is written until [`flush`].
    ///
    /// [`flush`]: Channel::flush
    pub(crate) fn queue(&mut self, msg: &Message, fds: Vec<OwnedFd>) -> io::Result<()> {
        if fds.len() > MAX_FDS {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} descriptors in one message; at most {MAX_FDS}", fds.len()),
            ));
        }
        if let Message::User { payload } = msg {
            if payload.len() > MAX_BODY {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("message of {} bytes; at most {MAX_BODY}", payload.len()),
                ));
            }
        }
        let before;
        match self.wq.back_mut() {
            Some(last) if fds.is_empty() && last.buf.len() < COALESCE => {
                before = last.buf.len();
                codec::encode(msg, 0, &mut last.buf);
                self.wq_bytes += last.buf.len() - before;
            }
            _ => {
                let mut buf = Vec::new();
                codec::encode(msg, fds.len(), &mut buf);
                self.wq_bytes += buf.len();
                self.wq.push_back(Out { buf, pos: 0, fds });
            }
        }
        Ok(())
    }

    /// Bytes received that do not yet make a whole frame.
    pub(crate) fn partial_bytes(&self) -> usize {
        self.end - self.start
    }

    /// Descriptors queued and not yet sent.
    pub(crate) fn queued_fds(&self) -> usize {
        self.wq.iter().map(|o| o.fds.len()).sum()
    }

    /// Drops everything queued: the peer is gone and will read none of it.
    pub(crate) fn discard_writes(&mut self) {
        self.wq.clear();
        self.wq_bytes = 0;
    }

    /// True while the peer is not reading what is sent to it: handle no
    /// more of its requests until it does (a writable event resumes).
    pub(crate) fn backed_up(&self) -> bool {
        self.queued_bytes() > PAUSE_READS_AT || self.queued_fds() > PAUSE_FDS_AT
    }

    /// True if a message of `len` more bytes is to be refused with
    /// `WouldBlock`: something is queued, and with it more than
    /// [`MAX_QUEUED`].
    pub(crate) fn full_for(&self, len: usize) -> bool {
        self.queued_bytes() > 0 && self.queued_bytes() + len > MAX_QUEUED
    }

    /// After [`ReadStatus::Eof`]: the error if the peer closed its end in
    /// the middle of a frame, `None` for a clean close.
    pub(crate) fn eof_error(&self) -> Option<io::Error> {
        let partial = self.partial_bytes();
        (partial > 0).then(|| {
            io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("channel closed in the middle of a frame ({partial} bytes of it)"),
            )
        })
    }

    /// Bytes queued and not yet written.
    pub(crate) fn queued_bytes(&self) -> usize {
        self.wq_bytes
    }

    /// Writes as much of the queue as the socket takes. Returns `true` when
    /// the queue is empty.
    pub(crate) fn flush(&mut self) -> io::Result<bool> {
        let mut raw: Vec<RawFd> = Vec::new();
        while let Some(out) = self.wq.front_mut() {
            raw.clear();
            if out.pos == 0 {
                raw.extend(out.fds.iter().map(|f| f.as_raw_fd()));
            }
            match send_with_fds(self.sock.as_fd(), &out.buf[out.pos..], &raw) {
                Ok(n) => {
                    // The kernel holds the descriptors now; ours can close.
                    out.fds.clear();
                    out.pos += n;
                    self.wq_bytes -= n;
                    if out.pos == out.buf.len() {
                        self.wq.pop_front();
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// One `recvmsg` into the read buffer.
    pub(crate) fn read_some(&mut self) -> io::Result<ReadStatus> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            if self.rbuf.len() > 4 * CHUNK {
                self.rbuf = Vec::new();
            }
        }
        if self.rbuf.len() - self.end < CHUNK {
            if self.start > 0 {
                self.rbuf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            if self.rbuf.len() - self.end < CHUNK {
                let want = (self.end + CHUNK).max(self.rbuf.len() * 2);
                let cap = HEADER_LEN + MAX_BODY + CHUNK;
                self.rbuf.resize(want.min(cap), 0);
            }
        }
        if self.end == self.rbuf.len() {
            // Unreachable while the decoder enforces MAX_BODY; keep the bound.
            return Err(io::Error::new(io::ErrorKind::InvalidData, "read buffer full"));
        }
        if self.failed {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "channel failed earlier"));
        }
        match recv_with_fds(self.sock.as_fd(), &mut self.rbuf[self.end..], &mut self.rfds) {
            Ok((0, _)) => Ok(ReadStatus::Eof),
            Ok((n, truncated)) => {
                self.end += n;
                if truncated {
                    // Descriptors were lost: frames can no longer be paired
                    // with theirs. The channel is unusable from here on.
                    self.failed = true;
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "descriptors lost in transit (control message truncated: too many \
                         in one message, or this process is at its descriptor limit)",
                    ));
                }
                if self.rfds.len() > MAX_PENDING_FDS {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("{} descriptors received that no frame announces", self.rfds.len()),
                    ));
                }
                Ok(ReadStatus::Data)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(ReadStatus::WouldBlock),
            Err(e) => Err(e),
        }
    }

    /// Takes the next whole frame out of the read buffer, with its fds.
    pub(crate) fn next_frame(&mut self) -> io::Result<Option<(Message, Vec<OwnedFd>)>> {
        let d = match codec::decode(&self.rbuf[self.start..self.end]) {
            Ok(Some(d)) => d,
            Ok(None) => return Ok(None),
            Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
        };
        self.start += d.len;
        if self.rfds.len() < d.nfds {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("frame announces {} descriptors but {} arrived", d.nfds, self.rfds.len()),
            ));
        }
        let fds = self.rfds.drain(..d.nfds).collect();
        Ok(Some((d.message, fds)))
    }

    /// The socket, for `poll(2)` while waiting for a reply.
    pub(crate) fn socket_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.sock.as_fd()
    }
}

impl Source for Channel {
    fn register(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        self.sock.register(r, t, i)
    }
    fn reregister(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        self.sock.reregister(r, t, i)
    }
    fn deregister(&mut self, r: &Registry) -> io::Result<()> {
        self.sock.deregister(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::socket::socketpair;

    fn pair() -> (Channel, Channel) {
        let (a, b) = socketpair().unwrap();
        (Channel::new(a), Channel::new(b))
    }

    #[test]
    fn a_read_turn_allows_its_budget_of_reads_and_an_unlimited_one_never_runs_out() {
        let (mut ours, _theirs) = pair();
        let mut turn = ReadTurn::new();
        for _ in 0..READ_BUDGET {
            assert!(!turn.spent());
            assert_eq!(turn.read(&mut ours).unwrap(), ReadStatus::WouldBlock);
        }
        assert!(turn.spent());
        let mut unlimited = ReadTurn::unlimited();
        for _ in 0..2 * READ_BUDGET {
            unlimited.read(&mut ours).unwrap();
        }
        assert!(!unlimited.spent());
    }

    #[test]
    fn a_channel_refuses_a_message_only_past_its_limit_with_something_queued() {
        let (mut ours, _theirs) = pair();
        assert!(!ours.full_for(MAX_QUEUED + 1), "an empty queue takes any one message");
        ours.queue(&Message::Online { version: codec::PROTOCOL_VERSION }, Vec::new()).unwrap();
        let queued = ours.queued_bytes();
        assert!(!ours.full_for(MAX_QUEUED - queued));
        assert!(ours.full_for(MAX_QUEUED - queued + 1));
        assert!(!ours.backed_up());
    }

    #[test]
    fn a_peer_closing_in_the_middle_of_a_frame_is_an_error_and_between_frames_is_not() {
        let (mut ours, theirs) = pair();
        drop(theirs);
        assert_eq!(ours.read_some().unwrap(), ReadStatus::Eof);
        assert!(ours.eof_error().is_none());

        let (mut ours, mut theirs) = pair();
        let mut frame = Vec::new();
        codec::encode(&Message::Online { version: codec::PROTOCOL_VERSION }, 0, &mut frame);
        let half = &frame[..frame.len() - 1];
        std::io::Write::write_all(&mut theirs.sock, half).unwrap();
        drop(theirs);
        assert_eq!(ours.read_some().unwrap(), ReadStatus::Data);
        assert!(ours.next_frame().unwrap().is_none());
        assert_eq!(ours.read_some().unwrap(), ReadStatus::Eof);
        let e = ours.eof_error().expect("a partial frame is an error");
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    }
}
