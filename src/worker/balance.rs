//! The worker's side of accept balance: its seat on a shared socket's
//! accept board (see `ipc::board`), and the state of a registered listener
//! that [`Worker::accept`](super::Worker::accept) and
//! [`Worker::poll`](super::Worker::poll) keep between calls.
//!
//! Everything here is touched by the worker's one thread; the atomics only
//! keep [`Listener`](super::Listener) and [`Stream`](super::Stream) `Send`.

use std::fmt;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{
    AtomicBool, AtomicI32, AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed,
};
use std::sync::Arc;
use std::time::Duration;

use crate::ipc::board::{Admission, Board};
use crate::listen::Balance;

/// The longest a worker stays out of the queue after stepping aside from a
/// connection it was over its share for.
pub(crate) const STEP_ASIDE_MAX: Duration = Duration::from_millis(2);

/// This worker's seat on one socket's board.
pub(crate) struct Seat {
    board: Board,
    index: u32,
    /// The board's bell: rung to wake a sleeping worker, waited on by all.
    bell: OwnedFd,
    /// Cleared when the worker closes the listener: the master may give the
    /// seat to another worker, so streams still open stop counting.
    open: AtomicBool,
    /// The bell is registered in the worker's poll.
    pub bell_registered: AtomicBool,
}

impl Seat {
    pub(crate) fn new(board: Board, index: u32, bell: OwnedFd) -> Arc<Seat> {
        Arc::new(Seat {
            board,
            index,
            bell,
            open: AtomicBool::new(true),
            bell_registered: AtomicBool::new(false),
        })
    }

    /// The bell's descriptor, for registering it.
    pub(crate) fn bell_fd(&self) -> RawFd {
        self.bell.as_raw_fd()
    }

    /// Wakes every worker sleeping on the bell (it is never silenced: each
    /// ring is an edge every worker's poll reports once).
    pub(crate) fn ring(&self, now_ms: u32) {
        self.board.rang(now_ms);
        crate::sys::shm::ring(self.bell.as_fd());
    }

    fn conns(&self) -> &AtomicU32 {
        self.board.conns(self.index)
    }

    /// Counts one more open connection; the guard counts it out on drop.
    pub(crate) fn take(self: &Arc<Seat>) -> SeatGuard {
        if self.open.load(Relaxed) {
            self.conns().fetch_add(1, Relaxed);
        }
        SeatGuard(self.clone())
    }

    /// The open connections counted on this seat.
    pub(crate) fn open_connections(&self) -> u32 {
        self.conns().load(Relaxed)
    }

    pub(crate) fn admit(&self, now_ms: u32) -> Admission {
        self.board.admit(self.index, now_ms)
    }

    pub(crate) fn set_state(&self, state: u32) {
        if self.open.load(Relaxed) {
            self.board.state(self.index).store(state, Relaxed);
        }
    }

    pub(crate) fn pending(&self) -> &AtomicU32 {
        self.board.pending()
    }

    /// False once the worker left the seat.
    pub(crate) fn is_open(&self) -> bool {
        self.open.load(Relaxed)
    }

    /// The worker leaves the seat (closing its listener).
    pub(crate) fn close(&self) {
        self.set_state(0);
        self.open.store(false, Relaxed);
    }
}

/// One open connection counted on a seat.
pub(crate) struct SeatGuard(Arc<Seat>);

impl Drop for SeatGuard {
    fn drop(&mut self) {
        if self.0.open.load(Relaxed) {
            let _ = self.0.conns().fetch_update(Relaxed, Relaxed, |c| c.checked_sub(1));
        }
    }
}

impl fmt::Debug for SeatGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "seat {}", self.0.index)
    }
}

const NO_TOKEN: usize = usize::MAX;

/// A listener's accepting state, shared by the [`Listener`](super::Listener)
/// and (weakly) the worker's poll.
pub(crate) struct Turn {
    pub fd: RawFd,
    pub balance: Balance,
    /// Its seat on the socket's board: only with [`Balance::Even`] on a
    /// shared socket.
    pub seat: Option<Arc<Seat>>,
    /// The token of its exclusive registration, or `NO_TOKEN`.
    token: AtomicUsize,
    /// The epoll instance (the worker's poll) it is registered in by
    /// [`Worker::register_listener`](super::Worker::register_listener), or
    /// -1: dropping the listener takes it out of there.
    epfd: AtomicI32,
    /// Out of the poll since this time (monotonic ns), or 0.
    aside_since: AtomicU64,
    /// Take the next connection whatever the board says (came back after
    /// [`STEP_ASIDE_MAX`]).
    pub forced: AtomicBool,
    /// The worker's poll count when it last took a connection
    /// ([`Balance::Exclusive`]: one per wake-up).
    pub taken_in: AtomicU64,
}

impl Turn {
    pub(crate) fn new(fd: RawFd, balance: Balance, seat: Option<Arc<Seat>>) -> Arc<Turn> {
        Arc::new(Turn {
            fd,
            balance,
            seat,
            token: AtomicUsize::new(NO_TOKEN),
            epfd: AtomicI32::new(-1),
            aside_since: AtomicU64::new(0),
            forced: AtomicBool::new(false),
            taken_in: AtomicU64::new(u64::MAX),
        })
    }

    /// The token of its exclusive registration.
    pub(crate) fn token(&self) -> Option<usize> {
        Some(self.token.load(Relaxed)).filter(|t| *t != NO_TOKEN)
    }

    pub(crate) fn set_token(&self, token: Option<usize>) {
        self.token.store(token.unwrap_or(NO_TOKEN), Relaxed);
    }

    /// When it stepped out of the poll, if it did.
    pub(crate) fn aside_since(&self) -> Option<u64> {
        Some(self.aside_since.load(Relaxed)).filter(|t| *t != 0)
    }

    pub(crate) fn set_aside(&self, since: Option<u64>) {
        self.aside_since.store(since.map_or(0, |t| t.max(1)), Relaxed);
    }

    /// Registered in the epoll instance `epfd`, or (`None`) no longer.
    pub(crate) fn set_registered(&self, epfd: Option<RawFd>) {
        self.epfd.store(epfd.unwrap_or(-1), Relaxed);
    }

    /// The poll it was registered in is gone: nothing to take it out of.
    pub(crate) fn detach(&self) {
        self.set_registered(None);
        if let Some(seat) = &self.seat {
            seat.bell_registered.store(false, Relaxed);
        }
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        // The listener is gone (closed, dropped, or given away): it no
        // longer accepts, so it must not be counted, nor its connections.
        if let Some(seat) = &self.seat {
            seat.close();
        }
        // Dropped, or given away with `into_fd`, without `Worker::close`:
        // its registrations outlive the descriptor (other processes hold
        // the socket and the bell), and a level-triggered one for a token
        // nobody serves would wake the poll at once, every time, while
        // connections queue. The socket is still open here (`Listener`
        // drops its turn first, and `into_fd` hands the descriptor on).
        let epfd = self.epfd.swap(-1, Relaxed);
        if epfd < 0 {
            return;
        }
        if self.aside_since().is_none() {
            let _ = crate::sys::epoll::remove(epfd, self.fd);
        }
        if let Some(seat) = &self.seat {
            if seat.bell_registered.swap(false, Relaxed) {
                let _ = crate::sys::epoll::remove(epfd, seat.bell_fd());
            }
        }
    }
}
