//! The worker's runtime turn: the wait of its poll (or a turn without
//! waiting, for a loop of the application's own), with the balance before
//! and after it, the heartbeat, and the channel's events.

use std::io;
use std::time::Duration;

use mio::Events;

use super::{Worker, BELL_TOKEN, IPC_TOKEN};
use crate::balance::Now;
use crate::ipc::Message;

impl Worker {
    /// Waits for readiness like [`Poll::poll`](mio::Poll::poll), handles the channel's own
    /// events, and leaves all events in `events` (skip [`IPC_TOKEN`] and
    /// [`BELL_TOKEN`]). Then take [`WorkerEvent`](super::WorkerEvent)s with
    /// [`Worker::next_event`]. The wait is cut short by the runtime's own
    /// deadlines ([`Worker::timeout`]).
    ///
    /// This is the simple path, for a worker whose loop is this poll. A
    /// loop of the application's own (another mio `Poll`, tokio) uses
    /// [`Worker::timeout`] and [`Worker::process`] instead: see the
    /// [module docs](crate::worker#embedding).
    ///
    /// When the master asked for heartbeats, they are sent from here (and
    /// from [`Worker::process`]): a loop that stops running the runtime for
    /// longer than the master's timeout is taken for hung and killed.
    pub fn poll(&mut self, events: &mut Events, timeout: Option<Duration>) -> io::Result<()> {
        let due = self.timeout();
        let timeout = match (timeout, due) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.turn(events, timeout)
    }

    /// Runs one turn of the runtime without waiting: takes what is ready in
    /// the worker's poll into `events` (the application's events are left
    /// there, as with [`Worker::poll`]; skip [`IPC_TOKEN`] and
    /// [`BELL_TOKEN`]), reads the channel, sends a heartbeat if one is due.
    /// Then take [`WorkerEvent`](super::WorkerEvent)s with [`Worker::next_event`].
    ///
    /// Call it when the worker's descriptor ([`AsRawFd`](std::os::fd::AsRawFd)) is readable, and
    /// when [`Worker::timeout`] has passed.
    pub fn process(&mut self, events: &mut Events) -> io::Result<()> {
        self.turn(events, Some(Duration::ZERO))
    }

    /// How long the application's loop may wait before it must call
    /// [`Worker::process`], when the worker's descriptor stays quiet:
    /// `Some(ZERO)` when work is queued (events not taken, a channel read
    /// cut short, a full `events`), else the next heartbeat or the moment a
    /// listener that stepped aside comes back; `None` if nothing is due.
    ///
    /// Call it right before the loop waits, every time: it also marks this
    /// worker asleep on its accept boards (so that the others wake it for
    /// the connections they leave to it) and puts back the listeners that
    /// stepped aside once they may take connections again.
    pub fn timeout(&mut self) -> Option<Duration> {
        // One clock reading for the balance and the deadlines.
        let mut now = Now::default();
        if !self.prepared {
            self.prepared = true;
            match self.balance.before_poll(&mut now) {
                Ok(back) => self.comeback = back.map(|b| now.ns() + b.as_nanos() as u64),
                Err(e) => self.deferred = Some(e),
            }
        }
        if self.again || self.full || self.deferred.is_some() || !self.queue.is_empty() {
            return Some(Duration::ZERO);
        }
        let heartbeat = self.heartbeat.filter(|_| !self.gone).map(|_| self.next_heartbeat);
        let due = match (heartbeat, self.comeback) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        // The clock is read only when something is due.
        due.map(|d| Duration::from_nanos(d.saturating_sub(now.ns())))
    }

    /// One turn: the wait (up to `timeout`), then the runtime's work.
    fn turn(&mut self, events: &mut Events, timeout: Option<Duration>) -> io::Result<()> {
        if !self.prepared {
            // Not prepared by `timeout`: put back the listeners due now.
            if let Err(e) = self.balance.before_poll(&mut Now::default()) {
                self.deferred = Some(e);
            }
        }
        self.prepared = false;
        self.comeback = None;
        if let Some(e) = self.deferred.take() {
            events.clear();
            return Err(e);
        }
        let polled = self.poll.poll(events, timeout);
        // One clock reading after the wait, for the seats and the heartbeat.
        let mut now = Now::default();
        self.balance.after_poll(&mut now);
        match polled {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                events.clear();
                return Ok(());
            }
            Err(e) => return Err(e),
        }
        if let (Some(interval), false) = (self.heartbeat, self.gone) {
            let now = now.ns();
            if now >= self.next_heartbeat {
                self.next_heartbeat =
                    now.saturating_add(u64::try_from(interval.as_nanos()).unwrap_or(u64::MAX));
                self.channel.queue(&Message::Heartbeat, Vec::new())?;
                self.flush()?;
            }
        }
        // One pass: is the channel ready, did a bell ring, and how much
        // work came for the application (readable events; a fresh
        // connection's first writable edge is not work).
        let (mut ipc, mut bell, mut readable, mut n) = (false, false, 0, 0);
        for e in events.iter() {
            n += 1;
            match e.token() {
                IPC_TOKEN => ipc = true,
                BELL_TOKEN => bell = true,
                _ if e.is_readable() => readable += 1,
                _ => {}
            }
        }
        self.balance.set_idle_but_accepting(readable <= 1);
        // A full `events` may have left readiness in the worker's poll that
        // an outer loop is not told of again.
        self.full = n == events.capacity();
        if self.again || ipc {
            self.again = false;
            self.service(None)?;
        }
        if bell {
            self.balance.rung();
        }
        Ok(())
    }
}
