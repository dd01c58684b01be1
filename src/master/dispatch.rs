//! The master's side of the protocol: what it does with each frame a
//! worker sends.

use std::io;
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use super::{Event, Master, State};
use crate::ipc::Message;
use crate::sys;
use crate::{EXIT_PROTOCOL, PROTOCOL_VERSION};

/// What a listen counts against [`WORK_BUDGET`](super::channels::WORK_BUDGET).
const LISTEN_WORK: usize = 4;
/// What a listen that binds a socket counts against
/// [`WORK_BUDGET`](super::channels::WORK_BUDGET).
const BIND_WORK: usize = 16;
/// A listen that took longer than this (a scan of the system's Unix
/// sockets, a slow file system) counts as a bind: the worker's turn on
/// listens ends, and it rests.
const SLOW_LISTEN: Duration = Duration::from_micros(500);

/// At most [`LogLimit::PER_SECOND`] log lines a second for one kind of
/// line, and then how many were left out.
#[derive(Debug, Default)]
pub(super) struct LogLimit {
    since: Option<Instant>,
    logged: u32,
    suppressed: u64,
}

impl LogLimit {
    const PER_SECOND: u32 = 5;

    /// Whether to log one more line now: `Some(n)` with the lines left out
    /// since the last one logged, `None` to leave this one out.
    pub(super) fn admit(&mut self, now: Instant) -> Option<u64> {
        if self.since.is_none_or(|t| now.saturating_duration_since(t) >= Duration::from_secs(1)) {
            self.since = Some(now);
            self.logged = 0;
        }
        if self.logged < Self::PER_SECOND {
            self.logged += 1;
            return Some(std::mem::take(&mut self.suppressed));
        }
        self.suppressed += 1;
        None
    }
}

impl Master {
    /// Handles one frame; returns the work it took (see
    /// [`WORK_BUDGET`](super::channels::WORK_BUDGET)).
    pub(super) fn handle(&mut self, slot: usize, msg: Message, fds: Vec<OwnedFd>) -> usize {
        let bound = self.sockets.len();
        let listen = matches!(msg, Message::Listen { .. });
        // Only a listen is timed: the clock is not read for other frames.
        let started = listen.then(Instant::now);
        self.counters.frames_received += 1;
        self.handle_frame(slot, msg, fds);
        if self.sockets.len() > bound {
            // The socket, its board and its bell (where there is one).
            self.fds_received += 2 + usize::from(crate::sys::listen_poll::WAKES_ONE);
            BIND_WORK
        } else if started.is_some_and(|t| t.elapsed() >= SLOW_LISTEN) {
            BIND_WORK
        } else if listen {
            LISTEN_WORK
        } else {
            1
        }
    }

    fn handle_frame(&mut self, slot: usize, msg: Message, fds: Vec<OwnedFd>) {
        let w = &mut self.workers[slot];
        let id = w.info.id;
        match msg {
            Message::Online { version } if !PROTOCOL_VERSION.compatible(version) => {
                let e = io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "worker speaks IPC protocol {version}, this master {PROTOCOL_VERSION}; \
                         the major versions must match (a worker of this crate exits with code \
                         {EXIT_PROTOCOL})"
                    ),
                );
                self.close_channel(slot, Some(e));
            }
            Message::Online { .. } => {
                // Reported once, and in order even when its exit was seen
                // before this frame was read (its state is `Dead` then).
                if !w.online_reported {
                    w.online_reported = true;
                    if w.info.state == State::None {
                        w.info.state = State::Online;
                    }
                    self.queue.push_back(Event::Online { id });
                }
            }
            Message::Listen { .. } if w.info.state == State::Dead => {}
            Message::Listen { seq, request } => {
                let reply = if w.info.exited_after_disconnect {
                    Message::ListenErr {
                        seq,
                        errno: libc::ECONNABORTED,
                        syscall: sys::Syscall::Address,
                    }
                } else {
                    match self.sockets.listen(id, w.creds.as_ref(), &request, w.untaken_fds) {
                        Ok(share) => {
                            let mut fds = vec![share.socket];
                            let seat = match share.board {
                                Some(b) => {
                                    fds.push(b.board);
                                    fds.extend(b.bell);
                                    b.seat
                                }
                                None => crate::ipc::codec::NO_SEAT,
                            };
                            self.fds_received += fds.len();
                            let reply = Message::ListenOk {
                                seq,
                                handle: share.handle,
                                address: share.address,
                                seat,
                            };
                            self.queue_to(slot, reply, fds);
                            return;
                        }
                        Err(e) => {
                            self.counters.listen_errors += 1;
                            // A worker can make the master refuse it as
                            // fast as it writes: a few lines a second, then
                            // the count.
                            if let Some(suppressed) = w.refusals.admit(Instant::now()) {
                                log::warn!(
                                    "worker {id}: listen {:?} {}:{} fd {}: {e}{}",
                                    request.kind,
                                    String::from_utf8_lossy(&request.address),
                                    request.port,
                                    request.fd,
                                    match suppressed {
                                        0 => String::new(),
                                        n => format!(" ({n} more refusals not logged)"),
                                    }
                                );
                            }
                            Message::ListenErr { seq, errno: e.errno, syscall: e.syscall }
                        }
                    }
                };
                self.queue_to(slot, reply, Vec::new());
            }
            Message::Listening { address }
                if self.sockets.may_claim(id, &address) == Some(false) =>
            {
                // A socket the master bound, but not one it gave this
                // worker: the claim is false, and counts for nothing.
                if let Some(suppressed) = w.refusals.admit(Instant::now()) {
                    log::warn!(
                        "worker {id} says it listens on {address}, a socket it never asked for: \
                         not counted{}",
                        match suppressed {
                            0 => String::new(),
                            n => format!(" ({n} more refusals not logged)"),
                        }
                    );
                }
            }
            Message::Listening { address } => {
                if w.info.state < State::Listening && w.info.state != State::Dead {
                    w.info.state = State::Listening;
                }
                // A worker that skipped its `Online` frame gets no `Online`
                // after its `Listening`.
                w.online_reported = true;
                self.queue.push_back(Event::Listening { id, address });
            }
            Message::Close { handle } => {
                self.sockets.close(id, handle);
            }
            Message::Leaving if w.info.exited_after_disconnect => {}
            Message::Leaving => self.leaving(slot),
            Message::Heartbeat => {
                w.last_heartbeat = Some(Instant::now());
                self.queue.push_back(Event::Heartbeat { id });
            }
            Message::Ready => self.queue.push_back(Event::Ready { id }),
            Message::User { payload } => {
                w.untaken_fds += fds.len();
                self.fds_received += fds.len();
                self.queue.push_back(Event::Message { id, payload, fds })
            }
            Message::ListenOk { .. } | Message::ListenErr { .. } | Message::Disconnect => {
                let e =
                    io::Error::new(io::ErrorKind::InvalidData, "worker sent a master-only message");
                self.close_channel(slot, Some(e));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_limit_lets_five_lines_a_second_through_then_counts_the_rest() {
        let mut l = LogLimit::default();
        let t0 = Instant::now();
        let first: Vec<_> = (0..8).map(|_| l.admit(t0)).collect();
        assert_eq!(first, [Some(0), Some(0), Some(0), Some(0), Some(0), None, None, None]);
        // A second later: the next line says how many were left out.
        assert_eq!(l.admit(t0 + Duration::from_millis(1000)), Some(3));
        assert_eq!(l.admit(t0 + Duration::from_millis(1001)), Some(0));
    }
}
