//! One turn of the master's reactor: what is ready (channels, exits,
//! signals, output pipes), then what is due (disconnect kills, kept
//! sockets), and reaping a worker that exited.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Token};

use super::token::Source;
use super::{Event, ExitStatus, Master, OutputStream, State, STALL};
use crate::sys;
use crate::Signal;

impl Master {
    pub(super) fn turn(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        let mut events = self.events.take().unwrap_or_else(|| Events::with_capacity(256));
        let before = Instant::now();
        // Its deadline as of the last turn, unless that one is gone since
        // (a worker exited, a seat was removed).
        let due = match (self.due, self.next_deadline()) {
            (Some(then), Some(now)) => Some(then.max(now)),
            _ => None,
        };
        if let Some(due) = due.filter(|&due| before > due + STALL) {
            // Run far past its deadline: the process was stopped, or the
            // application's loop did not call it.
            log::warn!("the master ran {:?} after its deadline", before - due);
        }
        let res = self.poll.poll(&mut events, timeout);
        let after = Instant::now();
        if let Some(t) = timeout {
            // Woken far later than asked: this process was stopped or starved.
            if after.duration_since(before) > t + STALL {
                log::warn!("the master was stalled for {:?}", after.duration_since(before) - t);
            }
        }
        if let Err(e) = res {
            self.events = Some(events);
            return if e.kind() == io::ErrorKind::Interrupted { Ok(()) } else { Err(e) };
        }
        // A full batch may have left ready sources in the reactor, and no
        // new edge will tell the application's loop.
        self.more_ready = events.iter().count() >= events.capacity();
        let starved = std::mem::take(&mut self.fd_starved);
        let now = Instant::now();
        let rested: Vec<usize> =
            self.resting.iter().filter(|&&(_, t)| t <= now).map(|&(slot, _)| slot).collect();
        self.resting.retain(|&(_, t)| t > now);
        let turns = std::mem::take(&mut self.again).into_iter().chain(rested);
        for slot in turns.chain(starved) {
            if self.workers.contains(slot) {
                self.service_channel(slot);
            }
        }
        for (slot, stream) in std::mem::take(&mut self.again_output) {
            if self.workers.contains(slot) {
                self.read_output(slot, stream, false);
            }
        }
        for ev in events.iter() {
            let source = Source::of(ev.token());
            match source {
                Source::Signals => self.read_signals(),
                Source::Channel(slot) | Source::Exit(slot) | Source::Output(slot, _)
                    if !self.workers.contains(slot) => {}
                // A worker with work left from its last turn gets its next
                // one after everyone else (it is in `again`), or when its
                // rest is over.
                Source::Channel(slot)
                    if self.again.contains(&slot)
                        || self.resting.iter().any(|&(s, _)| s == slot) => {}
                Source::Channel(slot) => self.service_channel(slot),
                Source::Exit(slot) => self.reap(slot),
                Source::Output(slot, stream) => self.read_output(slot, stream, false),
            }
        }
        self.events = Some(events);
        let now = Instant::now();
        self.reap_others(now);
        self.fire_deadlines(now);
        // A deadline left in the past (its work could not be done) asks for
        // the next turn at once, not for a stall warning.
        self.due = self.next_deadline().map(|due| due.max(now));
        Ok(())
    }

    pub(super) fn next_deadline(&self) -> Option<Instant> {
        let kills = self.workers.iter().filter_map(|(_, w)| w.kill_at);
        let others = self.reaper.as_ref().and_then(|r| r.deadline());
        kills.chain(self.sockets.kept_until()).chain(others).min()
    }

    fn fire_deadlines(&mut self, now: Instant) {
        for (_, w) in self.workers.iter_mut() {
            if w.kill_at.is_some_and(|t| t <= now) {
                w.kill_at = None;
                log::warn!(
                    "worker {} (pid {}) did not exit in time; killing it",
                    w.info.id,
                    w.info.pid
                );
                w.forced = true;
                let _ = w.signal(Signal::SIGKILL);
            }
        }
        self.sockets.expire_kept(now);
    }

    fn read_signals(&mut self) {
        let Some(s) = self.signals.as_ref() else {
            return;
        };
        let mut sweep = false;
        loop {
            match s.read() {
                Ok(Some(Signal::SIGCHLD))
                    if self.reaper.is_some() || sys::process::EXITS_NEED_SIGCHLD =>
                {
                    if let Some(r) = self.reaper.as_mut() {
                        r.wake();
                    }
                    sweep |= sys::process::EXITS_NEED_SIGCHLD;
                    if self.settings.signals.contains(&Signal::SIGCHLD) {
                        self.queue.push_back(Event::Signal(Signal::SIGCHLD));
                    }
                }
                Ok(Some(sig)) => self.queue.push_back(Event::Signal(sig)),
                Ok(None) => break,
                Err(e) => {
                    log::error!("reading signals: {e}");
                    break;
                }
            }
        }
        if sweep {
            // No pidfd said which: every worker that exited (looked at
            // without reaping it) is reaped.
            let exited: Vec<usize> = self
                .workers
                .iter()
                .filter(|(_, w)| w.process.exited().unwrap_or(true))
                .map(|(s, _)| s)
                .collect();
            for slot in exited {
                self.reap(slot);
            }
        }
    }

    /// The worker may have exited (its pidfd is readable, or `SIGCHLD`
    /// came): reap it if so.
    fn reap(&mut self, slot: usize) {
        // If it was reaped elsewhere (SIGCHLD ignored, a PID 1 reaping
        // everything), its status is lost but its exit is still reported.
        // Reaped through its handle: by its pidfd on Linux, never by its
        // pid, since a pid freed by the kernel may be another process's;
        // elsewhere by its pid, which is ours until we reap it.
        // Its CPU time, while it is a zombie of ours (its pid cannot be
        // another process's yet); kept only if it is reaped here.
        let cpu_time = sys::procfs::cpu_time(self.workers[slot].info.pid);
        let reaped = self.workers[slot].process.reap();
        let cpu_time = cpu_time.filter(|_| matches!(reaped, Ok(Some(_))));
        let status = match reaped {
            Ok(Some(sys::process::Reaped::Code(c))) => ExitStatus::Code(c),
            Ok(Some(sys::process::Reaped::Signal(s))) => ExitStatus::Signal(s),
            Ok(None) => return,
            Err(e) if e.raw_os_error() == Some(libc::ECHILD) => ExitStatus::Unknown,
            Err(e) => {
                log::error!("waitid for worker {}: {e}", self.workers[slot].info.id);
                ExitStatus::Unknown
            }
        };
        self.retire(slot, status, cpu_time);
    }

    /// Worker `slot` has exited with `status`: what it sent and wrote before
    /// is delivered, then its disconnect and exit, and its entry goes.
    pub(super) fn retire(&mut self, slot: usize, status: ExitStatus, cpu_time: Option<Duration>) {
        // Deliver whatever it sent and wrote before dying, then its disconnect.
        // It is dead already: nothing it says now makes it a roll's new
        // worker or earns it a socket.
        self.workers[slot].info.state = State::Dead;
        self.service_channel_with(slot, true);
        self.read_output(slot, OutputStream::Stdout, true);
        self.read_output(slot, OutputStream::Stderr, true);
        self.close_channel(slot, None);
        let mut w = self.workers.remove(slot);
        self.again.retain(|s| *s != slot);
        self.resting.retain(|&(s, _)| s != slot);
        self.fd_starved.retain(|s| *s != slot);
        self.again_output.retain(|(s, _)| *s != slot);
        if let Some(fd) = w.process.exit_fd() {
            let _ = self.poll.registry().deregister(&mut SourceFd(&fd.as_raw_fd()));
        }
        self.ids.remove(&w.info.id);
        w.info.state = State::Dead;
        log::debug!("worker {} (pid {}) exited: {status}", w.info.id, w.info.pid);
        let accepted_connections = self.sockets.worker_exited(w.info.id);
        self.queue.push_back(Event::Exit {
            id: w.info.id,
            pid: w.info.pid,
            status,
            exited_after_disconnect: w.info.exited_after_disconnect,
            accepted_connections,
            cpu_time,
        });
        if w.forced && self.disconnecting_all {
            self.forced += 1;
        }
        if self.disconnecting_all && self.workers.is_empty() {
            self.all_left();
        }
    }
}

impl AsRawFd for Master {
    /// The reactor's epoll descriptor: readable when [`Master::process`] has
    /// work, so the master can be nested in another event loop (with
    /// [`Master::timeout`] for its deadlines).
    fn as_raw_fd(&self) -> RawFd {
        self.poll.as_raw_fd()
    }
}

/// Registers the master's epoll descriptor in the application's [`Poll`](mio::Poll),
/// readable when [`Master::process`] has work. See the [module
/// docs](crate::master) for the loop around it.
impl mio::event::Source for Master {
    fn register(
        &mut self,
        registry: &mio::Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        SourceFd(&self.poll.as_raw_fd()).register(registry, token, interests)
    }

    fn reregister(
        &mut self,
        registry: &mio::Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        SourceFd(&self.poll.as_raw_fd()).reregister(registry, token, interests)
    }

    fn deregister(&mut self, registry: &mio::Registry) -> io::Result<()> {
        SourceFd(&self.poll.as_raw_fd()).deregister(registry)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::os::unix::net::UnixStream;

    use crate::ipc::{encode, Message};
    use crate::{Event, Master, Settings, PROTOCOL_VERSION};

    /// A worker that came online, said something and died at once: its
    /// exit may be seen (a `SIGCHLD` sweep, or its pidfd first in the
    /// batch) before a turn read its channel. What it sent is still
    /// reported, in order: `Online` first, then its message, its
    /// disconnect and its exit.
    #[test]
    fn frames_read_only_once_the_exit_is_seen_are_reported_in_order_online_first() {
        let _one = crate::master::one_master_at_a_time();
        let mut master = Master::new(Settings::default()).unwrap();
        let (id, theirs) = master.fuzz_attach().unwrap();
        while master.next_event().is_some() {}
        let mut frames = Vec::new();
        encode(&Message::Online { version: PROTOCOL_VERSION }, 0, &mut frames);
        encode(&Message::User { payload: b"bye".to_vec() }, 0, &mut frames);
        UnixStream::from(theirs).write_all(&frames).unwrap();
        // Its exit is seen before any turn read the channel.
        master.fuzz_detach(id);
        let events: Vec<Event> = std::iter::from_fn(|| master.next_event()).collect();
        assert!(
            matches!(
                events.as_slice(),
                [
                    Event::Online { id: a },
                    Event::Message { id: b, payload, .. },
                    Event::Disconnect { id: c },
                    Event::Exit { id: d, .. },
                ] if [*a, *b, *c, *d] == [id; 4] && payload == b"bye"
            ),
            "{events:?}"
        );
    }
}
