//! The worker's balancer: registers listeners the way their [`Balance`]
//! says, decides at each accept whether to take the connection, and around
//! each wait of the worker's poll marks its seats asleep or awake and puts
//! back the listeners that stepped aside. The worker calls it; it does its
//! syscalls through `sys::listen_poll` and reads the clock through `sys::shm`.

use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{fence, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};

use super::board::{Admission, Board};
use super::{Now, Seat, Turn, STEP_ASIDE_MAX};
use crate::listen::Balance;
use crate::sys::listen_poll;
use crate::sys::shm::{monotonic_ms, monotonic_ns};
use crate::worker::BELL_TOKEN;

/// The accept balance of one worker's poll (its epoll instance).
pub(crate) struct Balancer {
    /// The worker's poll.
    epfd: RawFd,
    /// Listeners registered by `register` (those that take turns or sit on
    /// a board, and shared ones: all are detached when this drops).
    turns: Vec<Weak<Turn>>,
    /// Seats whose bell is registered (with [`BELL_TOKEN`]) in the poll.
    bells: Vec<Arc<Seat>>,
    /// How many times the worker's poll returned.
    polls: u64,
    /// The last poll brought the application at most one readable event
    /// (the listener's): the worker is idle but for accepting.
    idle_but_accepting: bool,
}

impl Balancer {
    /// The balance of the listeners registered in the epoll instance `epfd`
    /// (the worker's poll, which outlives this).
    pub(crate) fn new(epfd: RawFd) -> Balancer {
        Balancer { epfd, turns: Vec::new(), bells: Vec::new(), polls: 0, idle_but_accepting: true }
    }

    /// Registers a listener (its `turn`) in the worker's poll, whose
    /// registry is `registry`: with [`Balance::Even`] and
    /// [`Balance::Exclusive`] exclusively (`EPOLLEXCLUSIVE`,
    /// level-triggered) under `token`, and with [`Balance::Even`] the
    /// socket's bell too (under [`BELL_TOKEN`]). With [`Balance::Shared`] the
    /// caller registered the socket itself (a plain registration): it is
    /// only kept, to be detached.
    pub(crate) fn register(
        &mut self,
        registry: &Registry,
        turn: &Arc<Turn>,
        token: Token,
    ) -> io::Result<()> {
        match turn.balance {
            Balance::Even | Balance::Exclusive { .. } => {
                listen_poll::add(self.epfd, turn.fd, token.0)?;
                turn.set_token(Some(token.0));
                turn.set_registered(Some(self.epfd));
                self.keep(turn);
                self.bells.retain(|b| b.is_open());
                let seat = turn.seat.as_ref();
                if let Some((seat, bell)) = seat.and_then(|s| Some((s, s.bell_fd()?))) {
                    if !seat.bell_registered.swap(true, Ordering::Relaxed) {
                        // Edge-triggered: each ring is reported once.
                        let bell = &mut SourceFd(&bell);
                        registry.register(bell, BELL_TOKEN, Interest::READABLE)?;
                        self.bells.push(seat.clone());
                    }
                }
                Ok(())
            }
            Balance::Shared => {
                turn.set_registered(Some(self.epfd));
                self.keep(turn);
                Ok(())
            }
        }
    }

    fn keep(&mut self, turn: &Arc<Turn>) {
        self.turns.retain(|t| t.strong_count() > 0);
        self.turns.push(Arc::downgrade(turn));
    }

    /// Forgets the bells of seats that were left (a listener was closed).
    pub(crate) fn forget_closed(&mut self) {
        self.bells.retain(|b| b.is_open());
    }

    /// Accepts one connection with `take` (which counts it on the seat it
    /// is given) the way the listener's balance says; see
    /// [`Worker::accept`](crate::Worker::accept).
    pub(crate) fn accept<S>(
        &self,
        turn: &Turn,
        take: impl FnOnce(Option<&Arc<Seat>>) -> io::Result<S>,
    ) -> io::Result<S> {
        let would_block = || Err(io::ErrorKind::WouldBlock.into());
        let pause = match turn.balance {
            Balance::Shared => return take(None),
            Balance::Exclusive { pause } => {
                // One connection per wake-up.
                if turn.taken_in.load(Ordering::Relaxed) == self.polls {
                    self.rearm(turn, pause)?;
                    return would_block();
                }
                pause
            }
            // Without a seat (a socket of this worker's own, or no board to
            // be had), only the turns.
            Balance::Even => Duration::ZERO,
        };
        let seat = turn.seat.as_ref();
        if let Some(seat) = seat {
            let now = monotonic_ns();
            let forced = turn.forced.swap(false, Ordering::Relaxed);
            if !forced && seat.admit(monotonic_ms(now)) != Admission::Take {
                self.step_aside(turn, seat, now)?;
                return would_block();
            }
        }
        match take(seat) {
            Ok(s) => {
                turn.taken_in.store(self.polls, Ordering::Relaxed);
                Ok(s)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if let Some(seat) = seat.filter(|s| s.pending().load(Ordering::Relaxed) != 0) {
                    seat.pending().store(0, Ordering::Relaxed);
                }
                // Took the wake-up's connections: to the back of the queue,
                // so the next one wakes another worker.
                if turn.taken_in.load(Ordering::Relaxed) == self.polls {
                    self.rearm(turn, pause)?;
                }
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    /// Moves an exclusive registration to the back of the socket's queue of
    /// waiting workers, so the next connection wakes another one. If
    /// connections are still queued (a burst) and `pause` is not zero, it
    /// steps aside for `pause` while out of the queue, so that workers woken
    /// for them get a chance to take them before this one does.
    fn rearm(&self, turn: &Turn, pause: Duration) -> io::Result<()> {
        let Some(token) = turn.token() else { return Ok(()) };
        if turn.aside_since().is_some() {
            return Ok(());
        }
        let epfd = self.epfd;
        if !pause.is_zero() && listen_poll::readable_now(turn.fd) {
            listen_poll::remove(epfd, turn.fd)?;
            // A burst onto idle workers (this worker had nothing to do but
            // accept): step aside so the others take their share. A busy
            // worker does not pause: then every worker is busy and pausing
            // would only cost connections per second.
            if self.idle_but_accepting {
                std::thread::sleep(pause)
            } else {
                let _ = nix::sched::sched_yield();
            }
            listen_poll::add(epfd, turn.fd, token)
        } else {
            listen_poll::rearm(epfd, turn.fd, token)
        }
    }

    /// Over its share: out of the socket's queue (until
    /// [`before_poll`](Self::before_poll) puts it back), and, if connections
    /// wait, a note on the board for the workers under their share to take
    /// them, and the bell rung if they all sleep.
    fn step_aside(&self, turn: &Turn, seat: &Seat, now: u64) -> io::Result<()> {
        if let (Some(_), None) = (turn.token(), turn.aside_since()) {
            listen_poll::remove(self.epfd, turn.fd)?;
            turn.set_aside(Some(now));
        }
        if listen_poll::readable_now(turn.fd) {
            seat.pending().store(1, Ordering::Relaxed);
            // The note first, then who is awake: a worker marks itself
            // asleep before it reads the note (see `before_poll`), so one
            // of the two sees the other.
            fence(Ordering::SeqCst);
            let now_ms = monotonic_ms(now);
            if seat.admit(now_ms) == (Admission::StepAside { ring: true }) {
                seat.ring(now_ms);
            }
        }
        Ok(())
    }

    /// Before waiting: puts back listeners that stepped aside once this
    /// worker is under its share again (or after [`STEP_ASIDE_MAX`]), lets a
    /// worker under its share see connections another stepped aside from,
    /// and marks its seats asleep. Returns how soon a listener must come back.
    /// Reads the clock (`now`) only if it has listeners.
    pub(crate) fn before_poll(&mut self, now: &mut Now) -> io::Result<Option<Duration>> {
        if self.turns.is_empty() {
            return Ok(None);
        }
        let now = now.ns();
        let epfd = self.epfd;
        let mut back: Option<Duration> = None;
        for turn in self.turns.iter().filter_map(Weak::upgrade) {
            let (Some(seat), Some(token)) = (turn.seat.as_ref(), turn.token()) else { continue };
            // Asleep first, then the note: see `step_aside`.
            seat.set_state(Board::asleep(monotonic_ms(now)));
            fence(Ordering::SeqCst);
            let pending = seat.pending().load(Ordering::Relaxed);
            let aside = turn.aside_since();
            // The board is read only when something waits on it: reading
            // every seat each turn would pull the other workers' lines.
            let under = (aside.is_some() || pending != 0)
                && seat.admit(monotonic_ms(now)) == Admission::Take;
            if let Some(since) = aside {
                let away = Duration::from_nanos(now.saturating_sub(since));
                if under || away >= STEP_ASIDE_MAX {
                    listen_poll::add(epfd, turn.fd, token)?;
                    turn.set_aside(None);
                    // Back after 2 ms with connections still waiting: the
                    // workers under their share did not come for them.
                    let waiting = !under && listen_poll::readable_now(turn.fd);
                    turn.forced.store(waiting, Ordering::Relaxed);
                } else {
                    let left = STEP_ASIDE_MAX - away;
                    back = Some(back.map_or(left, |b| b.min(left)));
                }
            } else if pending != 0 && under {
                // Delete and add: the add reports the queued connections,
                // which this worker's poll was not woken for.
                listen_poll::rearm(epfd, turn.fd, token)?;
                if !listen_poll::readable_now(turn.fd) {
                    seat.pending().store(0, Ordering::Relaxed);
                }
            }
        }
        Ok(back)
    }

    /// After waiting (whatever the wait returned): counts the poll, and
    /// marks the seats awake (running since `now`, read only if it has
    /// listeners).
    pub(crate) fn after_poll(&mut self, now: &mut Now) {
        self.polls += 1;
        if self.turns.is_empty() {
            return;
        }
        let state = Board::awake(monotonic_ms(now.ns()));
        let mut dropped = false;
        for t in &self.turns {
            match t.upgrade() {
                Some(turn) => {
                    if let (Some(seat), Some(_)) = (turn.seat.as_ref(), turn.token()) {
                        seat.set_state(state);
                    }
                }
                None => dropped = true,
            }
        }
        // Forgotten only once one is gone: the list is not rewritten each turn.
        if dropped {
            self.turns.retain(|t| t.strong_count() > 0);
        }
    }

    /// What the poll brought: whether the application had at most one
    /// readable event (the listener's), so that the worker is idle but for
    /// accepting (a burst onto it may pause; see [`Balance::Exclusive`]).
    pub(crate) fn set_idle_but_accepting(&mut self, idle: bool) {
        self.idle_but_accepting = idle;
    }

    /// The poll reported [`BELL_TOKEN`]: one of this worker's bells rang.
    /// Nothing to read (the bell is edge-triggered and never drained): the
    /// board is looked at before the next wait, as before every wait
    /// ([`before_poll`](Self::before_poll)). Forgets the bells of seats
    /// that were left.
    pub(crate) fn rung(&mut self) {
        self.bells.retain(|seat| seat.is_open());
    }
}

impl Drop for Balancer {
    /// Listeners that outlive the worker have no poll to be taken out of
    /// (and its descriptor number may be reused).
    fn drop(&mut self) {
        for turn in self.turns.iter().filter_map(Weak::upgrade) {
            turn.detach();
        }
    }
}
