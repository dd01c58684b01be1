//! Accept balance: how the workers that share a listening socket share its
//! connections. The kernel hands each connection to whichever worker calls
//! `accept`; nothing routes connections. What this module decides is who
//! waits for them and who calls `accept`.
//!
//! # The modes ([`Balance`](crate::Balance))
//!
//! - **Even** (the default): the socket is registered in each worker's poll
//!   with `EPOLLEXCLUSIVE` (level-triggered; on macOS and FreeBSD, which
//!   have nothing like it, every waiting worker is woken and the board alone
//!   keeps the shares, with no bell: see `sys::listen_poll`), so one idle
//!   worker is woken
//!   per connection; a worker that took a wake-up's connections goes to the
//!   back of the socket's queue of waiters (delete and add), so wake-ups go
//!   round. On a socket the master shares, each worker also has a seat on
//!   the socket's accept board and takes a connection only while it then
//!   holds at most its fair share ([`board::Board::admit`]). Over it, the
//!   worker steps aside: out of the queue, a note on the board if
//!   connections wait, and the board's bell rung if every worker under its
//!   share sleeps. It comes back at its next poll once under its share, or
//!   after [`STEP_ASIDE_MAX`] (then it takes the next connection whatever
//!   the board says). A socket of the worker's own has no board: only the
//!   turns.
//! - **Exclusive**: the same wake-ups and turns, no board; one connection
//!   per wake-up, and during a burst onto an idle worker a pause out of the
//!   queue so that the workers woken for the rest take them.
//! - **Shared**: a plain edge-triggered registration; every worker is woken
//!   and the fastest accepts. Nothing here but keeping it to detach.
//!
//! # The board, and who writes what
//!
//! One page of shared memory per shared stream socket (a sealed memfd; see
//! [`board`] for the layout), and its bell (an eventfd every seated worker
//! waits on, edge-triggered, under its own token, `BELL_TOKEN`).
//!
//! - The **master** ([`seats::Seats`], in the registry) creates both, gives
//!   each worker that listens a seat with duplicates of them, writes the
//!   seats in use (the high-water mark), and resets a seat when its worker
//!   closed the listener or exited (a worker asked to leave keeps its seat
//!   retired until it exits, since it may still write to it).
//! - A **worker** writes only its own seat: its open connections (one more
//!   per accepted [`Stream`](crate::Stream), one less when the stream or its
//!   [`ConnGuard`](crate::ConnGuard) drops; [`seat`]), and its state:
//!   asleep before each wait of its poll, awake after, 0 once it stops
//!   accepting ([`Balancer::before_poll`], [`Balancer::after_poll`]).
//! - Any worker writes the shared words: `pending` (set by a worker that
//!   stepped aside from queued connections, cleared by one that found the
//!   queue empty), and, when it rings the bell, the time of the first ring
//!   each sleeper has not woken for.
//! - Every worker reads every seat in use, when it decides whether to take
//!   a connection and when something waits on the board; an idle worker
//!   does not read the board at all.
//!
//! # Who holds what
//!
//! A [`Listener`](crate::Listener) owns its [`Turn`] (its mode, its seat,
//! its exclusive registration, whether it stepped aside). The worker owns a
//! [`Balancer`], which holds the turns weakly, registers them, decides each
//! accept, and runs before and after each wait of the worker's poll. The
//! syscalls (`epoll_ctl` or `kevent`, `poll`, the eventfd, the clock, the memfd) are in
//! `sys::listen_poll` and `sys::shm`. Everything runs on the worker's one thread;
//! the hot path (an accept, a poll) allocates nothing and makes no syscall
//! or clock read beyond the ones the rule needs.

mod balancer;
pub(crate) mod board;
mod seat;
pub(crate) mod seats;
mod turn;

use std::time::Duration;

use crate::sys::shm::monotonic_ns;

pub(crate) use balancer::Balancer;
pub(crate) use seat::{BoardFds, Seat, SeatGuard};
pub(crate) use turn::Turn;

/// The longest a worker stays out of the queue after stepping aside from a
/// connection it was over its share for.
pub(crate) const STEP_ASIDE_MAX: Duration = Duration::from_millis(2);

/// One reading of the monotonic clock ([`monotonic_ns`]), taken the first
/// time something asks for it: the worker's runtime reads the clock at most
/// once before each wait of its poll and once after, whoever needs it (the
/// seats' states, the listeners that stepped aside, the heartbeat).
#[derive(Default)]
pub(crate) struct Now(Option<u64>);

impl Now {
    /// Nanoseconds of the monotonic clock, read on the first call.
    pub(crate) fn ns(&mut self) -> u64 {
        *self.0.get_or_insert_with(monotonic_ns)
    }
}
