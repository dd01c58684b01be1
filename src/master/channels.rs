//! Servicing one worker's channel in the master's reactor: writing what is
//! queued, reading and handing frames to [`dispatch`](super::dispatch)
//! within a turn's budget, resting a worker whose turn went to listens,
//! pausing reads under backpressure or while the master is short of
//! descriptors, and closing the channel.

use std::io;
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use super::{Event, Master, State, FD_RESERVE};
use crate::ipc::channel::{is_peer_gone, ReadStatus, ReadTurn};
use crate::ipc::Message;
use crate::sys;
use crate::WorkerId;

/// Work done for one worker per reactor turn, in frames handled: 64 frames,
/// or 16 listens (a registry look-up, a reply written, maybe a log line), or
/// 4 listens that bind a socket; and never longer than [`TURN_TIME`]. A
/// worker with more to handle waits until every other source has had its
/// turn; one whose turn ran out on listens rests as long as the turn took
/// (see [`Master::end_turn`]).
pub(super) const WORK_BUDGET: usize = 64;
/// The longest one worker's turn may take, whatever its frames cost.
const TURN_TIME: Duration = Duration::from_millis(1);
/// A worker whose turn ran out with at least this much of it spent on
/// listens (4 listens, or 1 bind) rests before its next turn (see
/// [`Master::end_turn`]).
const REST_AFTER_LISTEN_WORK: usize = 16;
/// The longest rest.
const MAX_REST: Duration = Duration::from_millis(5);
/// Channels are read only while this many descriptors (for the messages
/// read) and half the reserve are free; a worker whose read waits for room
/// is retried every [`FD_RETRY`].
const READ_FD_ROOM: usize = 16;
/// How often a read waiting for descriptors to be free is retried.
pub(super) const FD_RETRY: Duration = Duration::from_millis(10);

impl Master {
    /// The application took `n` descriptors of worker `id`'s messages: if
    /// its channel waited for that, it is read again.
    pub(super) fn fds_taken(&mut self, id: WorkerId, n: usize) {
        let Some(&slot) = self.ids.get(&id) else { return };
        let w = &mut self.workers[slot];
        w.untaken_fds = w.untaken_fds.saturating_sub(n);
        if w.fd_paused && !self.over_fd_budget(slot) {
            self.workers[slot].fd_paused = false;
            if !self.again.contains(&slot) {
                self.again.push(slot);
            }
        }
    }

    /// True if a channel read (and the descriptors it may bring) leaves the
    /// master half its reserve. Counts the open descriptors again only when
    /// the last count and what arrived since come close to the limit.
    fn room_to_read(&mut self) -> bool {
        let room = |open: usize| open + READ_FD_ROOM + FD_RESERVE / 2 <= self.fd_limit;
        if room(self.fds_counted + self.fds_received) {
            return true;
        }
        self.fds_received = 0;
        self.fds_counted = sys::fd::count_open_fds().unwrap_or(self.fd_limit);
        room(self.fds_counted)
    }

    /// True while worker `slot` holds descriptors in untaken messages and,
    /// with its keys, costs the master its whole budget.
    fn over_fd_budget(&self, slot: usize) -> bool {
        let w = &self.workers[slot];
        w.untaken_fds > 0 && w.untaken_fds + self.sockets.cost_of(w.info.id) >= self.fd_budget
    }

    /// Writes what is queued to the worker, then reads and handles what it
    /// sent, within a budget.
    pub(super) fn service_channel(&mut self, slot: usize) {
        self.service_channel_with(slot, false)
    }

    /// With `draining` (the worker has exited), reads everything it left,
    /// ignoring the budget and the pause.
    pub(super) fn service_channel_with(&mut self, slot: usize, draining: bool) {
        let w = &mut self.workers[slot];
        let id = w.info.id;
        let Some(ch) = w.channel.as_mut() else { return };
        match ch.flush() {
            Ok(true) if w.want_drained => {
                w.want_drained = false;
                self.queue.push_back(Event::Drained { id });
            }
            Ok(_) => {}
            // The worker closed its end: nothing we queued will be read, but
            // what it sent before is still to be delivered.
            Err(e) if is_peer_gone(&e) => ch.discard_writes(),
            Err(e) => return self.close_channel(slot, Some(e)),
        }
        let mut reads = if draining { ReadTurn::unlimited() } else { ReadTurn::new() };
        let mut work = 0;
        let mut listen_work = 0;
        let started = Instant::now();
        loop {
            loop {
                let w = &mut self.workers[slot];
                let Some(ch) = w.channel.as_mut() else { return };
                if !draining && ch.backed_up() {
                    // The worker is not reading what we send; handle no more
                    // of its requests until it does (a writable event resumes).
                    return;
                }
                if (work >= WORK_BUDGET || started.elapsed() >= TURN_TIME) && !draining {
                    // Its turn is over; the others go first.
                    return self.end_turn(slot, started, listen_work);
                }
                match ch.next_frame() {
                    Ok(Some((msg, fds))) => {
                        let cost = self.handle(slot, msg, fds);
                        if cost > 1 {
                            listen_work += cost;
                        }
                        work += cost;
                    }
                    Ok(None) => break,
                    Err(e) => return self.close_channel(slot, Some(e)),
                }
            }
            if reads.spent() {
                return self.end_turn(slot, started, listen_work);
            }
            if !draining && self.over_fd_budget(slot) {
                // Its descriptors wait for the application: read no more of
                // them until it takes some (`fds_taken` resumes).
                self.workers[slot].fd_paused = true;
                return;
            }
            if !draining && !self.room_to_read() {
                // Reading now could bring descriptors the master has no room
                // for (and lose them): wait until some are closed.
                if !self.fd_starved.contains(&slot) {
                    self.fd_starved.push(slot);
                }
                return;
            }
            let Some(ch) = self.workers[slot].channel.as_mut() else { return };
            match reads.read(ch) {
                Ok(ReadStatus::Data) => continue,
                Ok(ReadStatus::WouldBlock) => return,
                Ok(ReadStatus::Eof) => {
                    let err = ch.eof_error();
                    return self.close_channel(slot, err);
                }
                Err(e) if is_peer_gone(&e) => return self.close_channel(slot, None),
                Err(e) => return self.close_channel(slot, Some(e)),
            }
        }
    }

    /// Worker `slot` has more to read after its turn, begun at `started`,
    /// of which `listen_work` went to listens. Frames that are mostly
    /// messages for the application are read again next turn, after the
    /// others. A turn spent on listens is followed by a rest as long as the
    /// turn (at most [`MAX_REST`]): a worker asking for listens without end
    /// then has about half the master's time, instead of keeping it at 100%
    /// while other processes (a worker starting, the application) wait for
    /// a CPU. A worker with a listen or two in a turn that the scheduler cut
    /// short (the turn's time is wall time) does not rest.
    fn end_turn(&mut self, slot: usize, started: Instant, listen_work: usize) {
        if listen_work >= REST_AFTER_LISTEN_WORK {
            let now = Instant::now();
            self.resting.push((slot, now + now.duration_since(started).min(MAX_REST)));
        } else {
            self.again.push(slot);
        }
    }

    pub(super) fn queue_to(&mut self, slot: usize, msg: Message, fds: Vec<OwnedFd>) {
        if let Some(ch) = self.workers[slot].channel.as_mut() {
            if let Err(e) = ch.queue(&msg, fds) {
                return self.close_channel(slot, Some(e));
            }
            self.counters.frames_sent += 1;
            // Flushed at the end of this service_channel turn or the next.
            match ch.flush() {
                Ok(_) => {}
                // The worker has exited, or closed its end: the reply will
                // not be read, which is no error of anyone's, and the frames
                // it sent before are still handled (its end of file closes
                // the channel).
                Err(e) if is_peer_gone(&e) => ch.discard_writes(),
                Err(e) => self.close_channel(slot, Some(e)),
            }
        }
    }

    /// Closes a worker's channel: it leaves every shared socket, and if it
    /// does not exit within the disconnect timeout it is killed.
    pub(super) fn close_channel(&mut self, slot: usize, error: Option<io::Error>) {
        let timeout = self.settings.disconnect_timeout;
        let w = &mut self.workers[slot];
        let Some(mut ch) = w.channel.take() else {
            return;
        };
        let id = w.info.id;
        match &error {
            Some(e) => log::error!(
                "worker {id} (pid {}): IPC channel error: {e}; closing its channel",
                w.info.pid
            ),
            None => log::debug!("worker {id}: channel closed"),
        }
        let _ = self.poll.registry().deregister(&mut ch);
        drop(ch);
        if w.info.state != State::Dead {
            w.info.state = State::Disconnected;
            w.kill_at.get_or_insert(crate::deadline::after(Instant::now(), timeout));
        }
        self.leave_sockets(slot);
        self.queue.push_back(Event::Disconnect { id });
    }
}
