//! A registered listener's accepting state: how it balances, its seat, its
//! exclusive registration in the worker's poll, and whether it stepped
//! aside. The [`Listener`](crate::Listener) owns it; the worker's
//! [`Balancer`](super::Balancer) holds it weakly, to put it back in the poll
//! and mark its seat awake or asleep.
//!
//! Everything here is touched by the worker's one thread; the atomics only
//! keep [`Listener`](crate::Listener) `Send`.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

use mio::Registry;

use super::Seat;
use crate::listen::Balance;

const NO_TOKEN: usize = usize::MAX;

/// A listener's accepting state, shared by the [`Listener`](crate::Listener)
/// and (weakly) the worker's [`Balancer`](super::Balancer).
pub(crate) struct Turn {
    pub fd: RawFd,
    pub balance: Balance,
    /// Its seat on the socket's board: only with [`Balance::Even`] on a
    /// shared socket.
    pub seat: Option<Arc<Seat>>,
    /// The token of its exclusive registration, or `NO_TOKEN`.
    token: AtomicUsize,
    /// The epoll instance (the worker's poll) it is registered in by
    /// [`Worker::register_listener`](crate::Worker::register_listener), or
    /// -1: dropping the listener takes it out of there.
    epfd: AtomicI32,
    /// Out of the poll since this time (monotonic ns), or 0.
    aside_since: AtomicU64,
    /// Take the next connection whatever the board says (came back after
    /// [`STEP_ASIDE_MAX`](super::STEP_ASIDE_MAX)).
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

    /// This worker's open connections on its seat, if it sits on a board
    /// (and has not left it).
    pub(crate) fn connections(&self) -> Option<u32> {
        self.seat.as_ref().filter(|s| s.is_open()).map(|s| s.open_connections())
    }

    /// The listener is given up: it leaves its seat (it is no longer
    /// counted, nor are its connections).
    pub(crate) fn close_seat(&self) {
        if let Some(seat) = &self.seat {
            seat.close();
        }
    }

    /// Takes an exclusive registration (and the seat's bell) out of `r`
    /// (the worker's poll), which mio does not know of: closing the
    /// descriptor would not, since other processes hold the same socket and
    /// epoll keeps the entry. Returns false if there is none (a plain
    /// registration, [`Balance::Shared`], or none at all): the caller
    /// deregisters its source from `r` itself.
    pub(crate) fn leave_poll(&self, r: &Registry) -> io::Result<bool> {
        self.set_registered(None);
        if self.token().is_none() {
            return Ok(false);
        }
        self.set_token(None);
        if let Some(seat) = self.seat.as_ref() {
            // Not accepting: not counted, and deaf to the bell.
            seat.set_state(0);
            if let Some(bell) = seat.bell_fd().filter(|_| seat.bell_registered.swap(false, Relaxed))
            {
                let _ = r.deregister(&mut mio::unix::SourceFd(&bell));
            }
        }
        // Out of the poll already if it stepped aside.
        if self.aside_since().is_some() {
            self.set_aside(None);
            return Ok(true);
        }
        crate::sys::listen_poll::remove(r.as_raw_fd(), self.fd)?;
        Ok(true)
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
            let _ = crate::sys::listen_poll::remove(epfd, self.fd);
        }
        if let Some(seat) = &self.seat {
            if let Some(bell) = seat.bell_fd().filter(|_| seat.bell_registered.swap(false, Relaxed))
            {
                let _ = crate::sys::listen_poll::remove(epfd, bell);
            }
        }
    }
}
