//! The master's side of [`host::reaper`](crate::host::reaper): as PID 1 or
//! a subreaper, it reaps the children that are not workers, and a shutdown
//! waits for them too.

use std::time::Instant;

use super::{Event, Master};

impl Master {
    /// End of a turn, after the workers' pidfds were read: reaps the other
    /// children that exited, and ends a shutdown that waited for them.
    pub(super) fn reap_others(&mut self, now: Instant) {
        let Some(reaper) = self.reaper.as_mut() else { return };
        let workers = &self.workers;
        reaper.reap(|pid| workers.iter().any(|(_, w)| w.info.pid == pid));
        if let Some(killed) = reaper.stopped(now) {
            self.forced += killed;
            self.disconnecting_all = false;
            self.queue
                .push_back(Event::AllDisconnected { forced: std::mem::take(&mut self.forced) });
        }
    }

    /// As PID 1 or a subreaper, once every worker has left a shutdown and
    /// the master waits for its other children (see
    /// [`host::reaper`](crate::host::reaper)): sends them `SIGKILL` now
    /// instead of at the deadline. Nothing otherwise.
    pub fn kill_others(&mut self) {
        if let Some(r) = self.reaper.as_mut() {
            r.kill_now();
        }
    }

    /// Every worker has left after `disconnect_all`: [`Event::AllDisconnected`],
    /// unless other children (adopted orphans) must leave first.
    pub(super) fn all_left(&mut self) {
        let timeout = self.settings.disconnect_timeout;
        if self.reaper.as_mut().is_some_and(|r| r.stop_others(timeout)) {
            return;
        }
        self.disconnecting_all = false;
        self.queue.push_back(Event::AllDisconnected { forced: std::mem::take(&mut self.forced) });
    }
}
