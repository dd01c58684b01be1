//! A worker's seat on a shared socket's accept board ([`Board`]): the
//! open connections it counts there, its state, and the board's bell.
//!
//! Everything here is touched by the worker's one thread; the atomics only
//! keep [`Listener`](crate::Listener) and [`Stream`](crate::Stream) `Send`.

use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::Relaxed};
use std::sync::Arc;

use super::board::{Admission, Board, MAX_SEATS};
use crate::listen::Balance;

/// A seat on an accept board as the master sends it with a shared socket:
/// its number, the board, the bell (where the platform needs one).
pub(crate) type BoardFds = (u32, OwnedFd, Option<OwnedFd>);

/// This worker's seat on one socket's board.
pub(crate) struct Seat {
    board: Board,
    index: u32,
    /// The board's bell: rung to wake a sleeping worker, waited on by all
    /// (`None` where every worker is woken for each connection; see
    /// `sys::listen_poll`).
    bell: Option<OwnedFd>,
    /// Cleared when the worker closes the listener: the master may give the
    /// seat to another worker, so streams still open stop counting.
    open: AtomicBool,
    /// The bell is registered in the worker's poll.
    pub bell_registered: AtomicBool,
}

impl Seat {
    /// The seat a listener balanced by `balance` takes on the board the
    /// master sent with its socket: only with [`Balance::Even`], and only on
    /// a seat the board has ([`MAX_SEATS`]); past it, the worker accepts
    /// without balancing. If the board cannot be mapped, the error is the
    /// caller's to log, and the listener goes without a seat.
    pub(crate) fn join(board: Option<BoardFds>, balance: Balance) -> io::Result<Option<Arc<Seat>>> {
        match board {
            Some((seat, board, bell)) if balance == Balance::Even && seat < MAX_SEATS => {
                Ok(Some(Seat::new(Board::open(board.as_fd())?, seat, bell)))
            }
            _ => Ok(None),
        }
    }

    fn new(board: Board, index: u32, bell: Option<OwnedFd>) -> Arc<Seat> {
        Arc::new(Seat {
            board,
            index,
            bell,
            open: AtomicBool::new(true),
            bell_registered: AtomicBool::new(false),
        })
    }

    /// The bell's descriptor, for registering it, if there is a bell.
    pub(crate) fn bell_fd(&self) -> Option<RawFd> {
        self.bell.as_ref().map(AsRawFd::as_raw_fd)
    }

    /// Wakes every worker sleeping on the bell (it is never silenced: each
    /// ring is an edge every worker's poll reports once).
    pub(crate) fn ring(&self, now_ms: u32) {
        self.board.rang(now_ms);
        if let Some(bell) = &self.bell {
            crate::sys::listen_poll::ring(bell.as_fd());
        }
    }

    fn conns(&self) -> &AtomicU32 {
        self.board.conns(self.index)
    }

    /// Counts one more open connection; the guard counts it out on drop.
    pub(crate) fn take(self: &Arc<Seat>) -> SeatGuard {
        if self.open.load(Relaxed) {
            self.conns().fetch_add(1, Relaxed);
            self.board.accepted(self.index).fetch_add(1, Relaxed);
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
