//! `Debug` for the crate's handles, written over their public view (ids,
//! pids, states, addresses) so that it shows what a log line needs and
//! nothing bulky (no buffers, queues or settings).

use std::fmt;
use std::os::fd::AsRawFd;

use crate::{Listener, Master, UdpSocket, Worker};

impl fmt::Debug for Master {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Master")
            .field("pid", &std::process::id())
            .field("workers", &self.workers().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for Worker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Worker")
            .field("id", &self.id())
            .field("pid", &std::process::id())
            .field("leaving", &self.is_leaving())
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Listener")
            .field("fd", &self.as_raw_fd())
            .field("address", self.address())
            .field("shared", &self.is_shared())
            .field("balance", &self.balance())
            .finish()
    }
}

impl fmt::Debug for UdpSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UdpSocket")
            .field("fd", &self.as_raw_fd())
            .field("address", self.address())
            .field("shared", &self.is_shared())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use crate::{Event, Master, Settings, Signal, State};

    #[test]
    fn a_masters_debug_shows_its_pid_and_each_worker_with_pid_and_state() {
        let settings =
            Settings { exec: "/bin/sleep".into(), args: vec!["10".into()], ..Settings::default() };
        let _one = crate::master::one_master_at_a_time();
        let mut master = Master::new(settings).unwrap();
        let me = std::process::id();
        assert_eq!(format!("{master:?}"), format!("Master {{ pid: {me}, workers: [], .. }}"));
        let id = master.fork().unwrap();
        let pid = master.worker(id).unwrap().pid;
        let shown = format!("{master:?}");
        master.kill(id, Signal::SIGKILL).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(Event::Exit { .. }) = master.wait(Some(Duration::from_millis(100))).unwrap()
            {
                break;
            }
        }
        assert_eq!(
            shown,
            format!(
                "Master {{ pid: {me}, workers: [WorkerInfo {{ id: {id}, pid: {pid}, state: {:?}, \
                 exited_after_disconnect: false }}], .. }}",
                State::None
            )
        );
    }
}
