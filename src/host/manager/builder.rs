//! Building a [`Manager`]: the settings, the policy and the host pieces,
//! and, as it starts, the master, the pool and the health listener.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use mio::{Events, Poll};

use super::Manager;
use crate::host::health::Health;
use crate::host::linger::Linger;
use crate::host::systemd::Service;
use crate::supervisor::STANDARD_SIGNALS;
use crate::{Master, Policy, Settings, Signal, Supervisor};

/// Builds a [`Manager`]. See the [module docs](crate::host::manager).
#[derive(Debug, Default)]
pub struct Builder {
    pub(super) settings: Option<Settings>,
    pub(super) policy: Policy,
    pub(super) health: Option<SocketAddr>,
    pub(super) linger: Duration,
    pub(super) upgrade_timeout: Option<Duration>,
    pub(super) required_socket: Option<String>,
}

impl Builder {
    /// Fail in [`build`](Builder::build), before any worker starts, if
    /// systemd passed no socket named `name` (what `systemd:NAME` asks
    /// for), with an error that names the ones it passed
    /// ([`find_socket`](crate::host::systemd::find_socket)).
    pub fn require_socket(mut self, name: &str) -> Builder {
        self.required_socket = Some(name.to_string());
        self
    }

    /// How workers are started ([`Settings::default`] if not given). The
    /// signals the manager gives a meaning to are added to
    /// [`Settings::signals`].
    pub fn settings(mut self, settings: Settings) -> Builder {
        self.settings = Some(settings);
        self
    }

    /// How the pool is kept ([`Policy::default`] if not given).
    pub fn policy(mut self, policy: Policy) -> Builder {
        self.policy = policy;
        self
    }

    /// Serve `GET /ready` and `GET /live` on `addr`
    /// ([`health`](crate::host::health)).
    pub fn health(mut self, addr: SocketAddr) -> Builder {
        self.health = Some(addr);
        self
    }

    /// After the first `SIGTERM` or `SIGINT`, keep accepting this long
    /// (while `/ready` answers 503), then drain ([`linger`](crate::host::linger)).
    pub fn linger(mut self, length: Duration) -> Builder {
        self.linger = length;
        self
    }

    /// How long the new master of a hot upgrade may take until its workers
    /// all listen (default [`DEFAULT_UPGRADE_TIMEOUT`](crate::master::DEFAULT_UPGRADE_TIMEOUT)).
    pub fn upgrade_timeout(mut self, timeout: Duration) -> Builder {
        self.upgrade_timeout = Some(timeout);
        self
    }

    /// Creates the master, starts the pool and binds the health listener
    /// (or, in the new master of a hot upgrade, takes the old one's).
    pub fn build(mut self) -> io::Result<Manager> {
        let mut settings = self.settings.take().unwrap_or_default();
        for sig in STANDARD_SIGNALS.into_iter().chain([Signal::SIGUSR2]) {
            if !settings.signals.contains(&sig) {
                settings.signals.push(sig);
            }
        }
        let heartbeat = settings.heartbeat;
        // Takes systemd's sockets, if it passed any (or, in the new master
        // of a hot upgrade, the old master's).
        let mut master = Master::new(settings)?;
        match Manager::start(&mut master, self, heartbeat) {
            Ok(parts) => Ok(parts.into_manager(master)),
            Err(e) => {
                master.report_failure(&e.to_string());
                Err(e)
            }
        }
    }
}

/// Everything but the master, made by [`Manager::start`].
pub(super) struct Parts {
    pub(super) poll: Poll,
    pub(super) supervisor: Supervisor,
    pub(super) service: Service,
    pub(super) health: Option<Health>,
    pub(super) linger: Linger,
    pub(super) workers: usize,
    pub(super) upgrade_timeout: Duration,
    pub(super) stale: Option<Duration>,
}

impl Parts {
    pub(super) fn into_manager(self, master: Master) -> Manager {
        let upgrades = crate::supervisor::Outcomes {
            succeeded: u64::from(master.generation().saturating_sub(1)),
            failed: 0,
        };
        Manager {
            poll: self.poll,
            events: Events::with_capacity(16),
            master,
            supervisor: self.supervisor,
            service: self.service,
            health: self.health,
            linger: self.linger,
            upgrade: None,
            // The upgrades that made this master: its generation says how
            // many (a new master starts its other counters at zero).
            upgrades,
            upgrade_timeout: self.upgrade_timeout,
            handed_over: None,
            old_master: None,
            stop_signals: 0,
            killed_by: None,
            failed: false,
            exit: None,
            queue: VecDeque::new(),
            report_pending: false,
            workers: self.workers,
            stale: self.stale,
        }
    }
}
