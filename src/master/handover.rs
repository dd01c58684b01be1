//! The new master's side of a hot upgrade: what the old master handed
//! over ([`ENV_UPGRADE`], checked whole before any descriptor is taken),
//! the report that it is ready (or why it gives up), and the old master's
//! word that it is the main process now. The old side is
//! [`upgrade`](super::upgrade).

use std::io::{self, Write};
use std::os::fd::{OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use super::registry::SocketRegistry;
use super::upgrade::{valid_name, ENV_UPGRADE, MAX_REPORT};
use super::Master;
use crate::sys;

impl Master {
    /// Which generation of masters this one is: 1 for a master started
    /// afresh, one more than its old master's for the new master of a hot
    /// upgrade. Its workers are of the same generation
    /// ([`WorkerStatus::generation`](super::WorkerStatus::generation)).
    pub fn generation(&self) -> u32 {
        self.handover.as_ref().map_or(1, |h| h.generation)
    }

    /// In the new master of a hot upgrade, the worker count the old master
    /// kept (`None` otherwise, or if it had none).
    pub fn inherited_target(&self) -> Option<usize> {
        self.handover.as_ref().and_then(|h| h.target)
    }

    /// True in the new master of a hot upgrade until it reports ready.
    pub fn is_upgrading(&self) -> bool {
        self.handover.as_ref().is_some_and(|h| h.report.is_some() && !h.ready)
    }

    /// In the new master of a hot upgrade: tells the old master that this
    /// one serves (call it once its workers all listen), so the old one
    /// drains and exits; the inherited sockets no worker took are closed.
    /// Does nothing in a master that is not one, or the second time.
    /// Descriptors handed over by name and not taken by then are closed.
    pub fn report_ready(&mut self) -> io::Result<()> {
        let Some(h) = self.handover.as_mut() else { return Ok(()) };
        if h.ready {
            return Ok(());
        }
        let Some(report) = h.report.as_mut() else { return Ok(()) };
        h.ready = true;
        for handle in std::mem::take(&mut h.handles) {
            self.sockets.unpin(handle);
        }
        // Handed over and not taken (the new program serves no health
        // listener, say): closed, or its queue would fill unserved.
        h.fds.clear();
        report.write_all(b"ready\n")?;
        log::info!("upgrade: ready; the old master drains its workers");
        Ok(())
    }

    /// In the new master of a hot upgrade that has not reported ready: tells
    /// the old master why this one gives up (one line, before it exits), so
    /// that its log says so even when this process's exit status goes to
    /// another parent. Does nothing otherwise.
    pub fn report_failure(&mut self, reason: &str) {
        let Some(h) = self.handover.as_mut() else { return };
        if h.ready {
            return;
        }
        if let Some(mut report) = h.report.take() {
            let line: String = reason
                .chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .take(MAX_REPORT / 2)
                .collect();
            let _ = report.write_all(format!("failed: {line}\n").as_bytes());
        }
    }

    /// In the new master of a hot upgrade, once ready: the channel on which
    /// the old master says `main` (it has named this one the service's main
    /// process) or closes. Taken once.
    pub(crate) fn take_old_master_channel(&mut self) -> Option<UnixStream> {
        let h = self.handover.as_mut()?;
        if !h.ready {
            return None;
        }
        h.report.take()
    }

    /// In the new master of a hot upgrade: the descriptor the old master
    /// handed over under `name` ([`UpgradeOptions::descriptors`](super::UpgradeOptions::descriptors)), taken
    /// once.
    pub fn take_handed_over(&mut self, name: &str) -> Option<OwnedFd> {
        let h = self.handover.as_mut()?;
        let at = h.fds.iter().position(|(n, _)| n == name)?;
        Some(h.fds.swap_remove(at).1)
    }
}

/// What the new master of a hot upgrade was handed.
#[derive(Debug)]
pub(super) struct Handover {
    /// The readiness channel to the old master; `None` once given up or
    /// taken after ready.
    report: Option<UnixStream>,
    /// `ready` was reported.
    ready: bool,
    target: Option<usize>,
    /// This master's generation (the old one's plus one).
    generation: u32,
    /// The inherited keys, held until ready.
    handles: Vec<u32>,
    /// Descriptors handed over by name.
    fds: Vec<(String, OwnedFd)>,
}

/// What [`ENV_UPGRADE`] says, parsed and checked before any descriptor is
/// taken: every descriptor it names is what it is said to be (the report a
/// Unix stream socket, each key's socket a socket of that key's kind,
/// listening if a stream, each named descriptor a listening socket), no
/// number twice, a target of at least one worker. A value set by hand that
/// says otherwise is an error naming the variable, and nothing is closed.
#[derive(Debug)]
pub(crate) struct Plan {
    pub(crate) ready: RawFd,
    pub(crate) target: Option<usize>,
    pub(crate) generation: u32,
    pub(crate) sockets: Vec<(RawFd, String)>,
    pub(crate) fds: Vec<(String, RawFd)>,
}

impl Plan {
    /// Reads and removes [`ENV_UPGRADE`]: `None` if it is unset.
    pub(super) fn from_env() -> io::Result<Option<Plan>> {
        let Some(value) = std::env::var_os(ENV_UPGRADE) else { return Ok(None) };
        // One thread per process: nothing reads the environment meanwhile.
        std::env::remove_var(ENV_UPGRADE);
        let value = value.to_string_lossy().into_owned();
        Plan::parse(&value).and_then(|plan| plan.check().map(|()| plan)).map(Some).map_err(|why| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{ENV_UPGRADE}={value:?}: {why}; no descriptor taken"),
            )
        })
    }

    pub(crate) fn parse(value: &str) -> Result<Plan, String> {
        let fd = |v: &str| v.parse::<RawFd>().ok().filter(|&n| n >= 0);
        let mut plan =
            Plan { ready: -1, target: None, generation: 2, sockets: Vec::new(), fds: Vec::new() };
        for part in value.split(';') {
            match part.split_once('=') {
                Some(("ready", n)) => plan.ready = fd(n).ok_or(format!("bad ready={n:?}"))?,
                Some(("target", "")) => plan.target = None,
                Some(("target", n)) => {
                    let t = n.parse().ok().filter(|&t| t >= 1);
                    plan.target = Some(t.ok_or(format!("target={n:?} is not 1 or more"))?);
                }
                Some(("generation", g)) => {
                    plan.generation = g
                        .parse()
                        .ok()
                        .filter(|&g| g >= 2)
                        .ok_or(format!("generation={g:?} is not 2 or more"))?
                }
                Some(("sockets", list)) => {
                    for entry in list.split(',').filter(|e| !e.is_empty()) {
                        let (n, key) =
                            entry.split_once('=').ok_or(format!("{entry:?}: no FD=KEY"))?;
                        super::registry::parse_key(key)?;
                        plan.sockets
                            .push((fd(n).ok_or(format!("{entry:?}: bad descriptor"))?, key.into()));
                    }
                }
                Some(("fds", list)) => {
                    for entry in list.split(',').filter(|e| !e.is_empty()) {
                        let (name, n) = entry
                            .split_once(':')
                            .filter(|(name, _)| valid_name(name))
                            .ok_or(format!("{entry:?}: not NAME:FD"))?;
                        plan.fds.push((
                            name.into(),
                            fd(n).ok_or(format!("{entry:?}: bad descriptor"))?,
                        ));
                    }
                }
                _ => return Err(format!("unknown part {part:?}")),
            }
        }
        if plan.ready < 0 {
            return Err("no ready=FD".into());
        }
        Ok(plan)
    }

    /// Every named descriptor is what the plan says, each named once.
    fn check(&self) -> Result<(), String> {
        use nix::sys::socket::{AddressFamily, SockType};
        let mut seen = std::collections::HashSet::new();
        let all = std::iter::once(self.ready)
            .chain(self.sockets.iter().map(|(fd, _)| *fd))
            .chain(self.fds.iter().map(|(_, fd)| *fd));
        for fd in all {
            if !seen.insert(fd) {
                return Err(format!("descriptor {fd} is named twice"));
            }
        }
        let what = |fd: RawFd| sys::fd::inherited_socket_info(fd);
        match what(self.ready) {
            Some((AddressFamily::Unix, SockType::Stream, false)) => {}
            _ => return Err(format!("ready={}: not a socket pair's end", self.ready)),
        }
        let mut keys = std::collections::HashSet::new();
        for (fd, key) in &self.sockets {
            let parsed = super::registry::parse_key(key)?;
            let kind = parsed.kind;
            if !keys.insert(parsed) {
                return Err(format!("key {key:?} is named twice"));
            }
            use crate::listen::Kind;
            let inet = |f| matches!(f, AddressFamily::Inet | AddressFamily::Inet6);
            let ok = match what(*fd) {
                Some((f, SockType::Stream, true)) if kind == Kind::Tcp => inet(f),
                Some((f, SockType::Datagram, _)) if kind == Kind::Udp => inet(f),
                Some((AddressFamily::Unix, SockType::Stream, true)) => kind == Kind::Unix,
                _ => false,
            };
            if !ok {
                return Err(format!(
                    "{fd}={key}: descriptor {fd} is not a listening socket of that kind"
                ));
            }
        }
        for (name, fd) in &self.fds {
            if !matches!(what(*fd), Some((_, SockType::Stream, true))) {
                return Err(format!("{name}:{fd}: descriptor {fd} is not a listening socket"));
            }
        }
        Ok(())
    }

    /// Takes the descriptors (made close-on-exec, so workers do not inherit
    /// them) and puts the sockets in `sockets`, held until ready.
    pub(super) fn take(self, sockets: &mut SocketRegistry) -> Result<Handover, String> {
        let mut h = Handover {
            report: None,
            ready: false,
            target: self.target,
            generation: self.generation,
            handles: Vec::new(),
            fds: Vec::new(),
        };
        let report = sys::fd::take_inherited_socket(self.ready).map_err(|e| e.to_string())?;
        sockets.forget_inherited(self.ready);
        h.report = Some(UnixStream::from(report));
        for (fd, key) in self.sockets {
            let socket = sys::fd::take_inherited_socket(fd).map_err(|e| e.to_string())?;
            sockets.forget_inherited(fd);
            h.handles.push(sockets.import(socket, &key)?);
        }
        for (name, fd) in self.fds {
            let socket = sys::fd::take_inherited_socket(fd).map_err(|e| e.to_string())?;
            sockets.forget_inherited(fd);
            h.fds.push((name, socket));
        }
        log::info!(
            "upgrade: this master takes over {} listening sockets (target {:?})",
            h.handles.len(),
            h.target
        );
        Ok(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plan_refuses_what_it_cannot_parse_without_panicking() {
        let ok =
            Plan::parse("ready=7;target=2;generation=3;sockets=8=1:0:-1:0:7f000001;fds=health:9")
                .unwrap();
        assert_eq!((ok.ready, ok.target, ok.generation), (7, Some(2), 3));
        for bad in [
            "ready=7;sockets=8=1:0:-1:0:a\u{e9}b",
            "ready=7;sockets=8=9:0:-1:0:",
            "ready=7;sockets=8=1:0:-1:0:abc",
            "ready=7;target=0",
            "ready=-1",
            "ready=7;fds=Health:9",
            "ready=7;what=1",
            "target=2",
        ] {
            assert!(Plan::parse(bad).is_err(), "{bad:?}");
        }
    }
}
