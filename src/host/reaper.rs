//! The master as a container's PID 1, or as a child subreaper
//! ([`Settings::subreaper`](crate::Settings::subreaper)): it reaps every
//! child that is not a worker, and a shutdown waits for them too.
//!
//! PID 1 inherits every orphan of its PID namespace, and a subreaper every
//! orphan among its descendants: a worker's own child whose parent died,
//! the double-forked helper of a shell script. Nobody else will reap them,
//! so without this they stay zombies for the life of the container.
//!
//! # Never confused with workers
//!
//! Workers are reaped by their pidfd, in the master's turn, and their exit
//! status is reported in [`Event::Exit`](crate::Event::Exit). Others are
//! reaped here, and only by pid, after a look that reaps nothing
//! (`waitid(P_ALL, WNOWAIT)`):
//!
//! - the master reads `SIGCHLD` from its `signalfd` (PID 1 has no default
//!   actions, but blocked signals are always queued), and at the end of that
//!   turn, after its workers' pidfds were read, looks at the first exited
//!   child;
//! - a child that is not one of the master's live workers is reaped by its
//!   pid: a child not reaped yet keeps its pid, and the master, with one
//!   thread, is the only one reaping, so the pid cannot be anyone else's;
//! - a worker's pid (it died after the turn read the pidfds) is left for
//!   the master; the kernel reports it first until then, so the others are
//!   looked for by pid in the list of children, and the look is repeated at
//!   the end of the next turn (which that worker's pidfd starts).
//!
//! A child the application starts itself (with `std::process::Command`,
//! say) is a child that is not a worker: with reaping on, the master reaps
//! it, and the application's own `wait` fails with `ECHILD`.
//!
//! # Shutdown waits for every descendant
//!
//! [`Event::AllDisconnected`](crate::Event::AllDisconnected) comes once every
//! worker has exited *and* every other child too. When the last worker is
//! gone, each remaining child gets `SIGTERM` (a child adopted later, when
//! its own parent dies, gets it when it arrives), and those still there
//! after [`Settings::disconnect_timeout`](crate::Settings::disconnect_timeout)
//! get `SIGKILL`; they count in `forced`
//! ([`Master::kill_others`](crate::Master::kill_others) kills them at
//! once, for a second `SIGTERM`, say). A PID 1 that exits takes its
//! namespace down, and the kernel kills everything left at once: tini's bug
//! #180, exiting when its own child is gone while other descendants still
//! work, is what this avoids.
//!
//! # Exit status
//!
//! A master that ends because of a signal whose action is to kill (the
//! examples' `SIGQUIT`, or a second `SIGINT`/`SIGTERM`: the master passes
//! it on to every worker as `SIGKILL`) exits with [`exit_code`]: `128 +`
//! the signal's number, what a shell reports for a process a signal
//! killed. PID 1 cannot be killed by a signal it handles, so it says it
//! this way. A graceful shutdown exits 0.

use std::collections::HashSet;
use std::io;
use std::time::{Duration, Instant};

use crate::sys::process::Reaped;
use crate::sys::reap::{self, Peek};
use crate::Signal;

/// The exit code of a master that ends because of `sig`: `128 + ` its
/// number (130 for `SIGINT`, 131 for `SIGQUIT`, 143 for `SIGTERM`), as a
/// shell reports a process that signal killed.
pub fn exit_code(sig: Signal) -> i32 {
    128 + sig.as_raw()
}

/// Reaping for PID 1 or a subreaper, inside the master.
#[derive(Debug)]
pub(crate) struct Reaper {
    /// A `SIGCHLD` came, or a worker's zombie was first in line: look.
    due: bool,
    /// After the last worker left: the other children are being stopped.
    stopping: Option<Stopping>,
    /// The new master of a hot upgrade, while it is this process's child:
    /// never signalled, reaped or waited for here (its `Upgrade` does).
    spared: Option<u32>,
}

#[derive(Debug)]
struct Stopping {
    /// When those still there get `SIGKILL`.
    kill_at: Instant,
    /// Children sent `SIGTERM` (or `SIGKILL`, once `killing`).
    told: HashSet<u32>,
    killing: bool,
    killed: usize,
}

impl Reaper {
    /// A reaper if this process is PID 1 or `subreaper` is asked (then it
    /// becomes one: `PR_SET_CHILD_SUBREAPER`); `None` otherwise.
    pub(crate) fn new(subreaper: bool) -> io::Result<Option<Reaper>> {
        let pid1 = std::process::id() == 1;
        if subreaper && !pid1 {
            reap::set_child_subreaper()?;
        }
        if !(pid1 || subreaper) {
            return Ok(None);
        }
        log::debug!(
            "{}: reaping every child that is not a worker",
            if pid1 { "PID 1" } else { "child subreaper" }
        );
        // Orphans adopted before this point (a PID 1 started late) are
        // looked at in the first turn.
        Ok(Some(Reaper { due: true, stopping: None, spared: None }))
    }

    /// Spares `pid` (the new master of a hot upgrade, a child of this
    /// process), or no one: it is left out of every reap, signal and wait.
    pub(crate) fn spare(&mut self, pid: Option<u32>) {
        self.spared = pid;
    }

    /// The children this reaper answers for: all but the spared one.
    fn others(&self) -> Vec<u32> {
        let mut pids = reap::children();
        pids.retain(|&p| Some(p) != self.spared);
        pids
    }

    /// A `SIGCHLD` arrived: look at the end of this turn.
    pub(crate) fn wake(&mut self) {
        self.due = true;
    }

    /// Reaps every exited child for which `is_worker` is false; workers are
    /// left for their pidfds. Call it after the turn read the pidfds.
    pub(crate) fn reap(&mut self, is_worker: impl Fn(u32) -> bool) {
        if !std::mem::take(&mut self.due) {
            return;
        }
        let spared = self.spared;
        let is_worker = |pid| is_worker(pid) || Some(pid) == spared;
        loop {
            match reap::peek() {
                Ok(Peek::Exited(pid)) if !is_worker(pid) => {
                    if !reap_one(pid) {
                        break;
                    }
                }
                Ok(Peek::Exited(_)) => {
                    // A worker that died since the pidfds were read is
                    // reported first until the master reaps it: find the
                    // others by pid, and look again next turn.
                    for pid in reap::children().into_iter().filter(|&p| !is_worker(p)) {
                        reap_one(pid);
                    }
                    self.due = true;
                    break;
                }
                Ok(Peek::Running | Peek::NoChildren) => break,
                Err(e) => {
                    log::error!("waitid: {e}");
                    break;
                }
            }
        }
    }

    /// The last worker left: if other children remain, sends each `SIGTERM`
    /// and returns true (the shutdown waits for them, up to `timeout`).
    pub(crate) fn stop_others(&mut self, timeout: Duration) -> bool {
        if self.stopping.is_some() {
            return true;
        }
        if matches!(reap::peek(), Ok(Peek::NoChildren) | Err(_)) || self.others().is_empty() {
            return false;
        }
        let mut s = Stopping {
            kill_at: crate::deadline::after(Instant::now(), timeout),
            told: HashSet::new(),
            killing: false,
            killed: 0,
        };
        s.tell(Signal::SIGTERM, self.others());
        log::info!(
            "every worker has left; waiting up to {timeout:?} for {} other processes",
            s.told.len()
        );
        self.stopping = Some(s);
        true
    }

    /// While stopping the others: `Some(killed)` once no child is left
    /// (with how many needed `SIGKILL`); meanwhile tells newcomers, and
    /// kills everyone left at the deadline.
    pub(crate) fn stopped(&mut self, now: Instant) -> Option<usize> {
        self.stopping.as_ref()?;
        let others = self.others();
        let s = self.stopping.as_mut()?;
        if others.is_empty() {
            let killed = s.killed;
            self.stopping = None;
            return Some(killed);
        }
        if !s.killing && now >= s.kill_at {
            s.killing = true;
            s.told.clear();
            log::warn!("other processes outlived the shutdown timeout; killing them");
        }
        let sig = if s.killing { Signal::SIGKILL } else { Signal::SIGTERM };
        s.tell(sig, others);
        None
    }

    /// Kills the others at once (at the next turn) if they are being
    /// waited for.
    pub(crate) fn kill_now(&mut self) {
        if let Some(s) = self.stopping.as_mut() {
            s.kill_at = Instant::now();
        }
    }

    /// When the others still there get `SIGKILL`.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.stopping.as_ref().filter(|s| !s.killing).map(|s| s.kill_at)
    }
}

impl Stopping {
    /// Sends `sig` to every child in `children` not told yet.
    fn tell(&mut self, sig: Signal, children: Vec<u32>) {
        for pid in children {
            if self.told.insert(pid) {
                log::debug!("{sig} to pid {pid}");
                if sig == Signal::SIGKILL {
                    self.killed += 1;
                }
                if let Err(e) = reap::signal_child(pid, sig.as_raw()) {
                    log::warn!("{sig} to pid {pid}: {e}");
                }
            }
        }
    }
}

/// Reaps `pid`; false if that failed (logged).
fn reap_one(pid: u32) -> bool {
    match reap::reap(pid) {
        Ok(Some(status)) => {
            let how = match status {
                Reaped::Code(c) => format!("code={c}"),
                Reaped::Signal(s) => {
                    format!("signal={}", Signal::from_raw(s).map_or("?", |s| s.as_str()))
                }
            };
            log::debug!("reaped pid {pid}, not a worker: {how}");
            true
        }
        // Peeked as exited, yet not reapable: leave it for the next look.
        Ok(None) => false,
        Err(e) => {
            log::error!("waitid for pid {pid}: {e}");
            false
        }
    }
}
