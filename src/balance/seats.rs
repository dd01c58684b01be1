//! The master's side of accept balance: one shared stream socket's accept
//! board, its bell, and who sits where. The registry keeps one per socket
//! and gives each worker that listens on it a seat.

use std::os::fd::OwnedFd;
use std::sync::atomic::Ordering::Relaxed;

use super::board::{Board, MAX_SEATS};
use crate::sys::listen_poll;
use crate::WorkerId;

/// An accept board, its bell, and who sits where.
pub(crate) struct Seats {
    board: Board,
    fd: OwnedFd,
    /// Where one worker is woken per connection; `None` where all are.
    bell: Option<OwnedFd>,
    taken: Vec<SeatUse>,
}

/// Who a seat belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SeatUse {
    Free,
    Held(WorkerId),
    /// Its worker left the key but may still be running (asked to
    /// disconnect) and writing to the seat: not given out until it exits.
    Retired(WorkerId),
}

/// A worker's seat on a board, with the descriptors it needs.
pub(crate) struct BoardShare {
    pub seat: u32,
    pub board: OwnedFd,
    pub bell: Option<OwnedFd>,
}

impl Seats {
    /// A new board and bell, or `None` (logged) if they cannot be made:
    /// then the socket's workers accept without balancing.
    pub(crate) fn new() -> Option<Seats> {
        match Board::create().and_then(|(board, fd)| Ok((board, fd, listen_poll::bell()?))) {
            Ok((board, fd, bell)) => Some(Seats { board, fd, bell, taken: Vec::new() }),
            Err(e) => {
                log::warn!("accept board: {e}; workers will accept without balancing");
                None
            }
        }
    }

    /// A seat for `worker` and duplicates of the board and its bell, if a
    /// seat is left (and the duplicates can be made).
    pub(crate) fn take(&mut self, worker: WorkerId) -> Option<BoardShare> {
        let board = self.fd.try_clone().ok()?;
        let bell = match &self.bell {
            Some(b) => Some(b.try_clone().ok()?),
            None => None,
        };
        let seat = match self.taken.iter().position(|t| *t == SeatUse::Free) {
            Some(i) => i,
            None if self.taken.len() < MAX_SEATS as usize => {
                self.taken.push(SeatUse::Free);
                self.taken.len() - 1
            }
            None => return None,
        };
        self.taken[seat] = SeatUse::Held(worker);
        self.board.open_seat(seat as u32, self.taken.len() as u32);
        Some(BoardShare { seat: seat as u32, board, bell })
    }

    /// `worker` left the key. If it closed its listener (`closed`), it no
    /// longer writes to the seat, which is free at once; otherwise (asked to
    /// leave) the seat is retired until the worker exits. Returns what it
    /// accepted on its seats.
    pub(crate) fn leave(&mut self, worker: WorkerId, closed: bool) -> u64 {
        let mut accepted = 0;
        for (i, t) in self.taken.iter_mut().enumerate() {
            if *t == SeatUse::Held(worker) {
                *t = if closed { SeatUse::Free } else { SeatUse::Retired(worker) };
                accepted += self.board.reset_seat(i as u32);
            }
        }
        self.trim();
        accepted
    }

    /// `worker` exited: its retired seats are free. Returns what it
    /// accepted on them since they were last read.
    pub(crate) fn exited(&mut self, worker: WorkerId) -> u64 {
        let mut accepted = 0;
        for (i, t) in self.taken.iter_mut().enumerate() {
            if matches!(*t, SeatUse::Held(w) | SeatUse::Retired(w) if w == worker) {
                *t = SeatUse::Free;
                accepted += self.board.reset_seat(i as u32);
            }
        }
        self.trim();
        accepted
    }

    /// What `worker` accepted on the seats it has now, and how many of
    /// those connections are open.
    pub(crate) fn counts(&self, worker: WorkerId) -> (u64, u64) {
        self.taken
            .iter()
            .enumerate()
            .filter(|(_, t)| matches!(**t, SeatUse::Held(w) | SeatUse::Retired(w) if w == worker))
            .fold((0, 0), |(a, o), (i, _)| {
                let seat = i as u32;
                (
                    a + self.board.accepted(seat).load(Relaxed),
                    o + u64::from(self.board.conns(seat).load(Relaxed)),
                )
            })
    }

    /// Lowers the board's high-water mark past the free seats at its end:
    /// every worker reads every seat below it at each accept it decides,
    /// and a rolling restart (old and new workers seated side by side)
    /// would otherwise leave it at its peak for good. A free seat counts
    /// for nothing (reset, and its worker no longer writes to it), so no
    /// reader's decision changes.
    fn trim(&mut self) {
        let used = self.taken.iter().rposition(|t| *t != SeatUse::Free).map_or(0, |i| i + 1);
        if used < self.taken.len() {
            self.taken.truncate(used);
            self.board.set_high_water(used as u32);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seat_is_given_again_only_once_its_worker_can_no_longer_write_to_it() {
        let mut seats = Seats::new().expect("memfd and eventfd");
        let (a, b, c): (WorkerId, WorkerId, WorkerId) = (1, 2, 3);
        assert_eq!(seats.take(a).unwrap().seat, 0);
        assert_eq!(seats.take(b).unwrap().seat, 1);
        // Asked to leave: `a` may still be running and writing to seat 0.
        seats.leave(a, false);
        assert_eq!(seats.take(c).unwrap().seat, 2);
        seats.exited(a);
        assert_eq!(seats.take(4).unwrap().seat, 0);
        // Closed its listener: it no longer writes, the seat is free at once.
        seats.leave(b, true);
        assert_eq!(seats.take(5).unwrap().seat, 1);
    }

    #[test]
    fn the_seats_read_come_down_when_the_last_seats_are_freed() {
        let mut seats = Seats::new().expect("memfd and eventfd");
        for w in 1..=4 {
            seats.take(w);
        }
        // A rolling restart: four new workers seated beside the old ones.
        for w in 1..=4 {
            seats.leave(w, false);
        }
        for w in 5..=8 {
            seats.take(w);
        }
        assert_eq!(seats.board.high_water(), 8);
        // The old ones exit: their seats are free, but only the ones at the
        // end can stop being read.
        for w in 1..=4 {
            seats.exited(w);
        }
        assert_eq!(seats.board.high_water(), 8);
        // The new ones leave in turn: the mark comes down past free seats.
        seats.leave(8, true);
        assert_eq!(seats.board.high_water(), 7);
        seats.exited(5);
        seats.exited(6);
        seats.exited(7);
        assert_eq!(seats.board.high_water(), 0);
        // Seats are given from the start again.
        assert_eq!(seats.take(9).unwrap().seat, 0);
        assert_eq!(seats.board.high_water(), 1);
    }
}
