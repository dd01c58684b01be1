//! The accept board of one shared listening socket: a page of shared memory
//! where each worker that accepts on the socket keeps, in its seat, how many
//! connections from it are open and whether its loop is awake.
//!
//! The master creates the board with the socket and gives every worker that
//! shares the socket a seat (an index) with its duplicate of the socket, and
//! the board's bell (an eventfd every worker waits on, edge-triggered). The
//! workers decide alone, from the board, whether to take the next
//! connection ([`Board::admit`]): a worker with more than its fair share
//! steps aside for the workers under theirs, ringing the bell if they all
//! sleep. The kernel still hands each connection to whichever worker calls
//! `accept`; nothing routes connections.
//!
//! Layout: 64-byte lines of `u32` words, so that seats written by different
//! processes do not share a cache line.
//!
//! ```text
//! line 0   MAGIC, seats in use (high-water mark), pending
//! line 1+i seat i: open connections, state, rung, -, accepted (u64)
//! ```
//!
//! `accepted` counts every connection the seat's worker accepted (the
//! master reads it for metrics and recycling, and folds it into the
//! worker's total before the seat is reset).
//!
//! Times are ms of the monotonic clock, 30 bits. A seat's state is `0` (not
//! accepting), `ASLEEP | t` (waiting in its poll since `t`) or `AWAKE | t`
//! (its loop running since `t`). `rung` is when the bell first rang for a
//! seat asleep. Not counted: a seat awake for longer than [`STUCK_MS`] (a
//! hung loop must not hold the others back), and a seat still asleep
//! [`DEAF_MS`] after the bell first rang for it (every sleeper wakes on the
//! bell; one that does not is stopped). `pending` is non-zero while a worker
//! that stepped aside left connections queued.

use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};

use crate::sys::shm::SharedPage;

/// Bytes in a board.
pub(crate) const BOARD_BYTES: usize = 16 * 1024;
const LINE: usize = 16;
/// The most seats a board has; workers past it accept without balancing.
pub(crate) const MAX_SEATS: u32 = (BOARD_BYTES / 4 / LINE - 1) as u32;
const MAGIC: u32 = 0x6d63_6231; // "mcb1"
/// A seat whose loop has been running this long without polling is taken
/// for hung and not counted.
pub(crate) const STUCK_MS: u32 = 50;
/// A seat still asleep this long after the bell rang is taken for stopped
/// and not counted until it polls again.
pub(crate) const DEAF_MS: u32 = 20;
/// How many connections over its fair share a worker may take.
pub(crate) const SLACK: u64 = 1;

const AWAKE: u32 = 1 << 30;
const ASLEEP: u32 = 1 << 31;
const TIME: u32 = AWAKE - 1;

/// Milliseconds from `then` to `now`, both 30-bit times.
fn age(now: u32, then: u32) -> u32 {
    now.wrapping_sub(then) & TIME
}

/// 30-bit time `a` is at or after `b`.
fn after(a: u32, b: u32) -> bool {
    age(a, b) < TIME / 2
}

/// The shared page of one listening socket.
pub(crate) struct Board {
    page: SharedPage,
}

/// What [`Board::admit`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Take the connection.
    Take,
    /// Over the fair share (so another worker is under it): step aside. If
    /// `ring`, every worker under its share sleeps in its poll: ring the
    /// board's bell, which wakes every sleeper.
    StepAside {
        /// Wake the sleepers.
        ring: bool,
    },
}

impl Board {
    /// A new board (master), and the descriptor to give workers.
    pub(crate) fn create() -> io::Result<(Board, OwnedFd)> {
        let (page, fd) = SharedPage::create(c"mio-cluster-board", BOARD_BYTES)?;
        page.words()[0].store(MAGIC, Relaxed);
        Ok((Board { page }, fd))
    }

    /// Maps the board the master sent (worker).
    pub(crate) fn open(fd: BorrowedFd<'_>) -> io::Result<Board> {
        let page = SharedPage::open(fd, BOARD_BYTES)?;
        if page.words()[0].load(Relaxed) != MAGIC {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "not an accept board"));
        }
        Ok(Board { page })
    }

    fn word(&self, i: usize) -> &AtomicU32 {
        &self.page.words()[i]
    }

    /// The open-connection count of `seat` (below [`MAX_SEATS`]).
    pub(crate) fn conns(&self, seat: u32) -> &AtomicU32 {
        self.word(LINE * (seat as usize + 1))
    }

    /// The state word of `seat`.
    pub(crate) fn state(&self, seat: u32) -> &AtomicU32 {
        self.word(LINE * (seat as usize + 1) + 1)
    }

    /// How many connections the worker in `seat` accepted.
    pub(crate) fn accepted(&self, seat: u32) -> &AtomicU64 {
        &self.page.words64()[(LINE * (seat as usize + 1) + 4) / 2]
    }

    /// Non-zero while connections wait that a worker stepped aside from.
    pub(crate) fn pending(&self) -> &AtomicU32 {
        self.word(2)
    }

    fn rung(&self, seat: u32) -> &AtomicU32 {
        self.word(LINE * (seat as usize + 1) + 2)
    }

    /// Notes that the bell rang at `now_ms`: for each seat asleep that the
    /// bell has not rung for since it fell asleep, the first ring it slept
    /// through starts now.
    pub(crate) fn rang(&self, now_ms: u32) {
        for i in 0..self.high_water() {
            let state = self.state(i).load(Relaxed);
            let rung = self.rung(i).load(Relaxed);
            if state & ASLEEP != 0 && !(rung != 0 && after(rung & TIME, state & TIME)) {
                self.rung(i).store(AWAKE | (now_ms & TIME), Relaxed);
            }
        }
    }

    /// Seat `seat` has slept through a ring for [`DEAF_MS`].
    fn deaf(&self, seat: u32, since: u32, now_ms: u32) -> bool {
        let rung = self.rung(seat).load(Relaxed);
        rung != 0 && after(rung & TIME, since) && age(now_ms, rung & TIME) >= DEAF_MS
    }

    /// The seats in use: workers read the seats below it.
    pub(crate) fn high_water(&self) -> u32 {
        self.word(1).load(Relaxed).min(MAX_SEATS)
    }

    /// Master: seat `seat` is given out; seats below `high_water` are read.
    pub(crate) fn open_seat(&self, seat: u32, high_water: u32) {
        self.reset_seat(seat);
        self.set_high_water(high_water);
    }

    /// Master: only seats below `high_water` are read from now on.
    pub(crate) fn set_high_water(&self, high_water: u32) {
        self.word(1).store(high_water.min(MAX_SEATS), Relaxed);
    }

    /// Master: the seat's worker left; it counts for nothing until reused.
    /// Returns what it had accepted.
    pub(crate) fn reset_seat(&self, seat: u32) -> u64 {
        self.state(seat).store(0, Relaxed);
        self.conns(seat).store(0, Relaxed);
        self.rung(seat).store(0, Relaxed);
        self.accepted(seat).swap(0, Relaxed)
    }

    /// The state that says "running since `now_ms`".
    pub(crate) fn awake(now_ms: u32) -> u32 {
        AWAKE | (now_ms & TIME)
    }

    /// The state that says "waiting in its poll since `now_ms`".
    pub(crate) fn asleep(now_ms: u32) -> u32 {
        ASLEEP | (now_ms & TIME)
    }

    /// Whether the worker in `seat` should take the next connection. `now_ms`
    /// is [`monotonic_ms`](crate::sys::shm::monotonic_ms).
    ///
    /// Fair share: with `n` workers counted (awake, or asleep in their poll)
    /// holding `total` connections, a worker takes one if it then holds at
    /// most `ceil((total + 1) / n) + SLACK`. The worker with the fewest
    /// connections always may, so some worker can always take it.
    ///
    /// (A worker woken for a connection whose loop has not run yet still
    /// reads as asleep: ringing for it costs little.)
    pub(crate) fn admit(&self, seat: u32, now_ms: u32) -> Admission {
        let hw = self.high_water().max(seat + 1).min(MAX_SEATS);
        // The counted others, as (connections, awake).
        let others = || {
            (0..hw).filter(move |&i| i != seat).filter_map(move |i| {
                let state = self.state(i).load(Relaxed);
                let (awake, counted) = match state & (AWAKE | ASLEEP) {
                    AWAKE => (true, age(now_ms, state & TIME) < STUCK_MS),
                    ASLEEP => (false, !self.deaf(i, state & TIME, now_ms)),
                    _ => (false, false),
                };
                counted.then(|| (u64::from(self.conns(i).load(Relaxed)), awake))
            })
        };
        let own = u64::from(self.conns(seat).load(Relaxed));
        let (total, n) = others().fold((own, 1u64), |(t, n), (c, _)| (t + c, n + 1));
        let limit = (total + 1).div_ceil(n) + SLACK;
        if own < limit {
            return Admission::Take;
        }
        // Over the share: the counts sum to `total`, so some other counted
        // worker is under it.
        Admission::StepAside { ring: !others().any(|(c, awake)| awake && c < limit) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn board(seats: &[(u32, u32)]) -> Board {
        let (b, _fd) = Board::create().unwrap();
        for (i, &(conns, state)) in seats.iter().enumerate() {
            b.open_seat(i as u32, seats.len() as u32);
            b.conns(i as u32).store(conns, Relaxed);
            b.state(i as u32).store(state, Relaxed);
        }
        b
    }

    #[test]
    fn fair_share_and_stepping_aside() {
        let now = 10_000;
        let run = Board::awake(now);
        let sleep = Board::asleep(now - 5);
        // Alone: always take.
        assert_eq!(board(&[(100, run)]).admit(0, now), Admission::Take);
        // Even: take.
        let b = board(&[(4, run), (4, run), (4, run), (4, run)]);
        assert_eq!(b.admit(0, now), Admission::Take);
        // Two over the others, with an awake worker under its share.
        let b = board(&[(6, run), (2, run), (4, run), (4, run)]);
        assert_eq!(b.admit(0, now), Admission::StepAside { ring: false });
        assert_eq!(b.admit(1, now), Admission::Take);
        // The worker under its share sleeps: step aside and wake it.
        let b = board(&[(6, run), (2, sleep), (6, run)]);
        assert_eq!(b.admit(0, now), Admission::StepAside { ring: true });
        // Even: take.
        let b = board(&[(7, run), (7, run)]);
        assert_eq!(b.admit(0, now), Admission::Take);
        let b = board(&[(9, run), (6, run), (6, sleep)]);
        assert_eq!(b.admit(0, now), Admission::StepAside { ring: false });
        // A hung worker (running for longer than STUCK_MS) is not counted.
        let b = board(&[(6, run), (0, Board::awake(now - STUCK_MS - 1))]);
        assert_eq!(b.admit(0, now), Admission::Take);
        // A sleeper that did not wake for the bell is not counted, one that
        // fell asleep after it is.
        let b = board(&[(6, run), (0, sleep)]);
        b.rang(now - 3);
        assert_eq!(b.admit(0, now), Admission::StepAside { ring: true });
        // Later rings do not restart the count (a stopped worker would be
        // counted for ever while others keep ringing).
        b.rang(now - 3 + DEAF_MS - 1);
        assert_eq!(b.admit(0, now - 3 + DEAF_MS), Admission::Take);
        b.state(1).store(Board::asleep(now - 2 + DEAF_MS), Relaxed);
        assert_eq!(b.admit(0, now - 1 + DEAF_MS), Admission::StepAside { ring: true });
        // Seats not accepting (state 0) are not counted.
        let b = board(&[(6, run), (0, 0)]);
        assert_eq!(b.admit(0, now), Admission::Take);
    }

    #[test]
    fn a_worker_can_map_the_board_and_a_file_that_is_not_one_is_refused() {
        let (master, fd) = Board::create().unwrap();
        let worker = Board::open(std::os::fd::AsFd::as_fd(&fd)).unwrap();
        master.open_seat(3, 4);
        worker.conns(3).store(7, Relaxed);
        assert_eq!(master.conns(3).load(Relaxed), 7);
        let other = std::fs::File::open("/proc/self/status").unwrap();
        assert!(Board::open(std::os::fd::AsFd::as_fd(&other)).is_err());
    }
}
