//! The manager's side of a hot upgrade: starting one on `SIGUSR2`, watching
//! it, handing over (or calling it off), and, in a new master, reporting
//! ready and hearing that it is the main process.

use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;

use mio::unix::SourceFd;
use mio::Interest;

use super::{Manager, HEALTH, HEALTH_FD, OLD_MASTER, UPGRADE};
use crate::host::health::Health;
use crate::master::{UpgradeOptions, UpgradeOutcome};

impl Manager {
    pub(super) fn flush_report(&mut self) -> io::Result<()> {
        self.report_pending = false;
        if !self.master.is_upgrading() {
            return Ok(());
        }
        // The probes are this master's from now on.
        if let Some(h) = self.health.as_mut() {
            self.poll.registry().register(h, HEALTH, Interest::READABLE)?;
        }
        if let Err(e) = self.master.report_ready() {
            // The old master is gone: this one speaks for the service.
            self.service.became_main(&self.master);
            return Err(e);
        }
        if let Some(mut ch) = self.master.take_old_master_channel() {
            let fd = ch.as_raw_fd();
            self.poll.registry().register(&mut SourceFd(&fd), OLD_MASTER, Interest::READABLE)?;
            // Already said, or gone: read at once.
            if !self.hear_old_master_on(&mut ch) {
                self.old_master = Some(ch);
            }
        }
        Ok(())
    }

    /// In a new master: reads the old master's word; true once it is heard
    /// (`main`, or the channel closed: the old master is gone), and systemd
    /// is told the state from now on.
    pub(super) fn hear_old_master_on(&mut self, ch: &mut UnixStream) -> bool {
        let mut buf = [0u8; 64];
        let heard = match ch.read(&mut buf) {
            Ok(0) => true,
            Ok(n) => buf[..n].split(|&b| b == b'\n').any(|l| l == b"main"),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => false,
            Err(_) => true,
        };
        if heard {
            let fd = ch.as_raw_fd();
            let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
            log::info!("upgrade: this master is the main process now");
            self.service.became_main(&self.master);
        }
        heard
    }

    pub(super) fn watch_upgrade(&mut self) -> io::Result<()> {
        let Some(up) = self.upgrade.as_mut() else { return Ok(()) };
        let Some(outcome) = up.process(&mut self.master) else { return Ok(()) };
        let mut up = self.upgrade.take().expect("an upgrade under way");
        self.poll.registry().deregister(&mut up)?;
        match outcome {
            UpgradeOutcome::Ready { .. } => self.upgrades.succeeded += 1,
            UpgradeOutcome::Failed { .. } => self.upgrades.failed += 1,
        }
        if let UpgradeOutcome::Ready { pid } = outcome {
            // Under systemd the unit's main process is the new one before
            // this one drains; the new one notifies from then on.
            self.service.main_pid(pid);
            up.confirm_main();
            log::info!("handed over to the new master (pid {pid}); draining the old workers");
            self.handed_over = Some(pid);
            // The new master serves the health listener's socket now: this
            // one, draining, would answer 503 to some of the probes. Those
            // it accepted already get their answer.
            if let Some(h) = self.health.as_mut() {
                h.stop_listening();
            }
            self.supervisor.shutdown(&mut self.master)?;
        }
        Ok(())
    }

    pub(super) fn cancel_upgrade(&mut self) {
        if let Some(mut up) = self.upgrade.take() {
            let _ = self.poll.registry().deregister(&mut up);
            up.cancel(&mut self.master);
            self.upgrades.failed += 1;
        }
    }

    pub(super) fn start_upgrade(&mut self) -> io::Result<()> {
        if let Some(up) = &self.upgrade {
            log::warn!("upgrade refused: one is under way (new master pid {})", up.pid());
            return Ok(());
        }
        if let Some(pid) = self.handed_over {
            log::warn!("upgrade refused: this master handed over to pid {pid}");
            return Ok(());
        }
        if self.master.is_upgrading() || self.master.is_shutting_down() {
            log::warn!("upgrade refused: this master is not serving yet, or is leaving");
            return Ok(());
        }
        if self.linger.is_lingering() {
            log::warn!("upgrade refused: this master is lingering before it drains");
            return Ok(());
        }
        if std::process::id() == 1 {
            log::warn!(
                "upgrade refused: this master is PID 1 of its PID namespace (a container), and \
                 the namespace ends when PID 1 exits, so it cannot hand over to a new master; \
                 start it below host::init::Init (the echo example does), or roll out a new \
                 image instead (the orchestrator replaces the container), or SIGHUP to \
                 restart the workers from the program now at the path"
            );
            return Ok(());
        }
        let env = self.service.handover_env();
        let health = self.health.as_ref().and_then(Health::listener_fd);
        let options = UpgradeOptions {
            target: Some(self.supervisor.target()),
            timeout: self.upgrade_timeout,
            env,
            descriptors: health.into_iter().map(|fd| (HEALTH_FD.to_string(), fd)).collect(),
            // Under systemd: re-parented to it before it is named the
            // main process (a master that reaps would get it back).
            detach: self.service.has_notifier() && !self.master.settings().subreaper,
        };
        match self.master.upgrade(options) {
            Ok(mut up) => match self.poll.registry().register(&mut up, UPGRADE, Interest::READABLE)
            {
                Ok(()) => self.upgrade = Some(up),
                Err(e) => {
                    log::error!("upgrade failed: watching the new master: {e}");
                    up.cancel(&mut self.master);
                    self.upgrades.failed += 1;
                }
            },
            Err(e) => {
                log::error!("upgrade failed: {e}; this master keeps serving");
                self.upgrades.failed += 1;
            }
        }
        Ok(())
    }
}
