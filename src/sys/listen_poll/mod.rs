//! Registering a shared listening socket in a worker's mio `Poll` the way
//! the accept balance wants it, which mio has no flag for. One interface,
//! two implementations, chosen here and nowhere else:
//!
//! - Linux: `EPOLLEXCLUSIVE`, level-triggered ([`exclusive`]): one idle
//!   worker is woken per connection, and a worker that goes to the back of
//!   the socket's queue of waiters (delete and add) makes wake-ups go round.
//!   [`WAKES_ONE`] is true: a worker that steps aside from a connection it
//!   was woken for rings the board's bell (an eventfd, [`bell`]), or nobody
//!   else would wake.
//! - Elsewhere, and on Linux with the `portable-backend` feature: a plain
//!   level-triggered registration ([`level`]; `EVFILT_READ` in the kqueue
//!   of mio's `Poll` on macOS and the BSDs, `EPOLLIN` on Linux): every
//!   waiting worker is woken for each connection, and the accept board
//!   alone keeps the shares. No bell is needed: the workers under their
//!   share were woken too.
//!
//! mio reads back whatever event the kernel returns and takes the token
//! from its data (epoll's `u64`, kqueue's `udata`), so a registration made
//! here shows up in `Poll::poll` like any other. Being level-triggered, a
//! worker that leaves connections queued is told again.

#[cfg(all(target_os = "linux", not(feature = "portable-backend")))]
mod exclusive;
#[cfg(any(not(target_os = "linux"), feature = "portable-backend"))]
mod level;

#[cfg(all(target_os = "linux", not(feature = "portable-backend")))]
pub(crate) use exclusive::{add, bell, remove, WAKES_ONE};
#[cfg(any(not(target_os = "linux"), feature = "portable-backend"))]
pub(crate) use level::{add, bell, remove, WAKES_ONE};

use std::io;
use std::os::fd::{BorrowedFd, RawFd};

/// Moves this poll's registration of `fd` to the back of the socket's
/// queue of waiters (delete and add; `EPOLL_CTL_MOD` is not allowed with
/// `EPOLLEXCLUSIVE`). The kernel wakes the first idle waiter in queue
/// order; going to the back after taking connections makes the wake-ups go
/// round. Where every waiter is woken, the add only reports the socket
/// again if connections are queued.
pub(crate) fn rearm(poll_fd: RawFd, fd: RawFd, token: usize) -> io::Result<()> {
    remove(poll_fd, fd)?;
    add(poll_fd, fd, token)
}

/// Rings a board's bell (adds one to the eventfd's counter). Never blocks:
/// a counter that cannot take more is rung already.
pub(crate) fn ring(bell: BorrowedFd<'_>) {
    // EAGAIN (the counter is full) means it is rung already; nothing else
    // can fail on an open eventfd with a valid 8-byte value.
    let _ = nix::unistd::write(bell, &1u64.to_ne_bytes());
}

/// True if `fd` has something to read right now (a listening socket: a
/// connection is queued). Never blocks.
pub(crate) fn readable_now(fd: RawFd) -> bool {
    let mut p = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    // SAFETY: poll reads and writes one pollfd on our stack; timeout 0.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    n == 1 && p.revents & libc::POLLIN != 0
}
