//! What the application asks of the master about its workers: start them,
//! stop them, ask them to leave, keep their sockets for a successor, send
//! them messages, and read their status and counters.

use std::ffi::OsString;
use std::io;
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use super::{Event, Master, MasterCounters, SocketId, State, WorkerInfo, WorkerStatus};
use crate::ipc::codec::Message;
use crate::{Signal, WorkerId};

impl Master {
    /// Starts a worker. Queues [`Event::Fork`].
    pub fn fork(&mut self) -> io::Result<WorkerId> {
        self.fork_with_env(std::iter::empty::<(OsString, OsString)>())
    }

    /// Starts a worker with extra environment variables for it alone.
    pub fn fork_with_env<I, K, V>(&mut self, env: I) -> io::Result<WorkerId>
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<OsString>,
        V: Into<OsString>,
    {
        let env: Vec<(OsString, OsString)> =
            env.into_iter().map(|(k, v)| (k.into(), v.into())).collect();
        self.spawn(env)
    }

    /// Sends `signal` to worker `id`, and nothing else. It goes through the
    /// worker's pidfd, so it can never reach another process that reused the
    /// pid.
    pub fn kill(&mut self, id: WorkerId, signal: Signal) -> io::Result<()> {
        let slot = self.slot(id)?;
        self.workers[slot].signal(signal)
    }

    /// `SIGKILL` to every worker now; during a shutdown they count as
    /// forced ([`Event::AllDisconnected`]).
    pub fn kill_all(&mut self) {
        for (_, w) in self.workers.iter_mut() {
            if w.info.state != State::Dead && w.signal(Signal::SIGKILL).is_ok() {
                w.forced = true;
            }
            w.kill_at = None;
        }
    }

    /// Asks worker `id` to leave gracefully: the master removes it from every
    /// shared socket at once and queues [`Event::Leaving`]; the worker stops
    /// listening, finishes its open connections and exits. After
    /// [`Settings::disconnect_timeout`](super::Settings::disconnect_timeout) it is killed.
    pub fn disconnect(&mut self, id: WorkerId) -> io::Result<()> {
        let slot = self.slot(id)?;
        if !self.workers[slot].info.exited_after_disconnect {
            self.leaving(slot);
        }
        if let Some(ch) = self.workers[slot].channel.as_mut() {
            ch.queue(&Message::Disconnect, Vec::new())?;
            self.counters.frames_sent += 1;
        }
        self.service_channel(slot);
        Ok(())
    }

    /// Worker `slot` leaves, asked to or of its own accord: it must exit
    /// within the disconnect timeout, and it is off every shared socket
    /// from now on.
    pub(super) fn leaving(&mut self, slot: usize) {
        let deadline = crate::deadline::after(Instant::now(), self.settings.disconnect_timeout);
        let w = &mut self.workers[slot];
        w.info.exited_after_disconnect = true;
        if w.info.state != State::Dead {
            w.kill_at.get_or_insert(deadline);
        }
        let id = w.info.id;
        self.leave_sockets(slot);
        self.queue.push_back(Event::Leaving { id });
    }

    /// Takes worker `slot` off every shared socket, keeping those sockets
    /// open for a worker to come if it was to ([`Master::keep_sockets`]).
    pub(super) fn leave_sockets(&mut self, slot: usize) {
        let w = &self.workers[slot];
        if let Some(longest) = w.keep.filter(|_| !self.disconnecting_all) {
            self.sockets.keep(w.info.id, crate::deadline::after(Instant::now(), longest));
        }
        self.sockets.remove_worker(w.info.id);
    }

    /// When worker `id` leaves its shared sockets (it leaves, dies, or its
    /// channel closes), keep them open, with the connections queued on
    /// them, until a worker started after it holds them too, or for at
    /// most `longest` (`None`, the default: they close with their last
    /// worker, as Node's do). A [`Supervisor`](crate::Supervisor) asks this
    /// of every worker it will replace, so that even a pool of one refuses
    /// no connection while its worker is replaced. Not during a shutdown.
    pub fn keep_sockets(&mut self, id: WorkerId, longest: Option<Duration>) {
        if let Ok(slot) = self.slot(id) {
            self.workers[slot].keep = longest;
        }
    }

    /// Closes every socket kept for a worker to come
    /// ([`keep_sockets`](Master::keep_sockets)) that no worker holds.
    pub fn release_kept(&mut self) {
        self.sockets.release_kept();
    }

    /// The shared sockets worker `id` holds.
    pub fn sockets_of(&self, id: WorkerId) -> Vec<SocketId> {
        self.sockets.handles_of(id).into_iter().map(SocketId).collect()
    }

    /// How many connections worker `id` accepted on shared sockets, as
    /// their accept boards count them (0 for a worker it does not know).
    pub fn accepted_connections(&self, id: WorkerId) -> u64 {
        self.sockets.connections_of(id).0
    }

    /// Frames read and sent, and listens refused, since the master started.
    pub fn counters(&self) -> MasterCounters {
        self.counters
    }

    /// Every live worker's id, pid, state, start time, last heartbeat, RSS
    /// and CPU time, by id ([`WorkerStatus::restarts`] is a
    /// [`Supervisor`](crate::Supervisor)'s: see its `status`).
    pub fn status(&self) -> Vec<WorkerStatus> {
        let now = Instant::now();
        let generation = self.generation();
        let mut rows: Vec<WorkerStatus> = self
            .workers
            .iter()
            .map(|(_, w)| {
                let usage = crate::sys::procfs::usage(w.info.pid);
                let (accepted, open) = self.sockets.connections_of(w.info.id);
                WorkerStatus {
                    id: w.info.id,
                    pid: w.info.pid,
                    state: w.info.state,
                    started_at: w.started_at,
                    uptime: now.duration_since(w.started),
                    generation,
                    restarts: None,
                    last_heartbeat: w.last_heartbeat.map(|t| now.duration_since(t)),
                    rss_bytes: usage.map(|u| u.0),
                    cpu_time: usage.map(|u| u.1),
                    accepted_connections: accepted,
                    open_connections: open,
                }
            })
            .collect();
        rows.sort_by_key(|r| r.id);
        rows
    }

    /// Disconnects every worker; [`Event::AllDisconnected`] follows once all
    /// have exited (at once if there are none).
    pub fn disconnect_all(&mut self) -> io::Result<()> {
        self.disconnecting_all = true;
        self.sockets.release_kept();
        let ids: Vec<WorkerId> = self.workers.iter().map(|(_, w)| w.info.id).collect();
        for id in ids {
            self.disconnect(id)?;
        }
        if self.workers.is_empty() {
            self.all_left();
        }
        Ok(())
    }

    /// Sends a message to worker `id`, with descriptors attached (the master's
    /// copies are closed once sent). Never blocks: with more than 64 MiB
    /// already queued to that worker it fails with `WouldBlock`, and
    /// [`Event::Drained`] says when to retry.
    pub fn send(&mut self, id: WorkerId, payload: &[u8], fds: Vec<OwnedFd>) -> io::Result<()> {
        let slot = self.slot(id)?;
        let w = &mut self.workers[slot];
        let Some(ch) = w.channel.as_mut() else {
            return Err(io::Error::new(
                io::ErrorKind::NotConnected,
                format!("worker {id} is disconnected"),
            ));
        };
        if ch.full_for(payload.len()) {
            w.want_drained = true;
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                format!("channel to worker {id} is full ({} bytes queued)", ch.queued_bytes()),
            ));
        }
        ch.queue(&Message::User { payload: payload.to_vec() }, fds)?;
        self.counters.frames_sent += 1;
        self.service_channel(slot);
        Ok(())
    }

    /// What the master knows of worker `id`, while it lives.
    pub fn worker(&self, id: WorkerId) -> Option<WorkerInfo> {
        self.ids.get(&id).map(|&slot| self.workers[slot].info)
    }

    /// True between [`Master::disconnect_all`] and
    /// [`Event::AllDisconnected`].
    pub fn is_shutting_down(&self) -> bool {
        self.disconnecting_all
    }

    /// Every live worker.
    pub fn workers(&self) -> impl Iterator<Item = WorkerInfo> + '_ {
        self.workers.iter().map(|(_, w)| w.info)
    }

    /// How many listening sockets the registry holds. For tests: only with
    /// the `fuzzing` feature, not part of the stable API.
    #[cfg(feature = "fuzzing")]
    pub fn listening_sockets(&self) -> usize {
        self.sockets.len()
    }

    /// The slot of live worker `id`; `NotFound` if there is none.
    pub(super) fn slot(&self, id: WorkerId) -> io::Result<usize> {
        self.ids
            .get(&id)
            .copied()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no live worker {id}")))
    }
}
