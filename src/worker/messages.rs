//! The worker's channel to the master: the messages it sends (user
//! messages, leaving, ready), reading and dispatching what the master
//! sends, and the master's death.

use std::io;
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout};

use super::listening::Reply;
use super::{Worker, WorkerEvent};
use crate::ipc::channel::{is_peer_gone, ReadStatus, ReadTurn};
use crate::ipc::Message;

impl Worker {
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

    pub(super) fn flush(&mut self) -> io::Result<()> {
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

    pub(super) fn wait_channel(&self, flags: PollFlags, deadline: Instant) -> io::Result<()> {
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
    pub(super) fn service(&mut self, want: Option<u32>) -> io::Result<Option<Reply>> {
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
                        // (and its bell, where there is one) exactly when
                        // there is a seat.
                        let mut fds = fds.into_iter();
                        let fd = fds.next().expect("ListenOk carries the socket");
                        let board = fds.next().map(|b| (seat, b, fds.next()));
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
    pub(super) fn check_connected(&self) -> io::Result<()> {
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
