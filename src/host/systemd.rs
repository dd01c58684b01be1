//! Running under systemd, written against its protocols (no libsystemd, no
//! extra crate): socket activation (`sd_listen_fds(3)`) and the
//! notification socket (`sd_notify(3)`).
//!
//! # Socket activation
//!
//! When systemd (or `systemd-socket-activate`) starts the master with
//! sockets, it passes them as descriptors 3, 4, ... and says so in
//! `LISTEN_PID`, `LISTEN_FDS` and `LISTEN_FDNAMES`. [`Master::new`] reads
//! them (through [`activated_sockets`]) before it starts any worker:
//!
//! - the descriptors are taken only if `LISTEN_PID` is the master's pid (a
//!   child that inherited the variables by mistake takes nothing);
//! - they are made close-on-exec (no worker inherits them: workers get
//!   duplicates from the master when they listen, as for any `fd:N`);
//! - the three variables are removed from the master's environment, taken
//!   or not, so no worker (nor any other child) ever sees them.
//!
//! A worker then names one by number, [`ListenAddr::Fd`] (`fd:N`), or by
//! its name, [`ListenAddr::Named`] (`systemd:NAME`; systemd names a socket
//! after its `.socket` unit, or `FileDescriptorName=`). The master gives
//! its workers the names and descriptor numbers in
//! [`ENV_SYSTEMD_SOCKETS`]. TCP, UDP and Unix stream sockets can be
//! served; [`Worker::listen`](crate::Worker::listen) takes TCP and Unix
//! ones, [`Worker::bind_udp`](crate::Worker::bind_udp) UDP ones.
//!
//! # Notification
//!
//! [`Notifier`] sends systemd the state of the service (`READY=1`,
//! `RELOADING=1`, `STOPPING=1`, `STATUS=`) and the watchdog's pings
//! (`WATCHDOG=1`), from the master's own loop: it has a
//! [`timeout`](Notifier::timeout) to wait no longer than, and a
//! [`tick`](Notifier::tick) to call after every wait, which pings only
//! while the caller says the pool is alive ([`pool_alive`]). A stalled
//! master, or a pool with no healthy worker, stops the pings, and systemd
//! restarts the service.
//!
//! [`Master::new`]: crate::Master::new
//! [`ListenAddr::Fd`]: crate::ListenAddr::Fd
//! [`ListenAddr::Named`]: crate::ListenAddr::Named

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr as UnixAddr, UnixDatagram};
use std::time::{Duration, Instant};

pub use crate::listen::activation::{
    activated_sockets, find_socket, ActivatedSocket, ENV_SYSTEMD_SOCKETS, LISTEN_FDS_START,
};
use crate::listen::Address;
use crate::master::{State, WorkerStatus};

/// True if the pool can serve, for the watchdog: at least one worker
/// listens and, if `fresh` is given (heartbeats are on), sent its last
/// heartbeat no longer than `fresh` ago. Pick `fresh` well under the
/// heartbeat timeout (three heartbeat intervals, say), so that a pool that
/// stopped answering stops the pings before the master has replaced
/// anyone, and a single hung worker among healthy ones does not.
pub fn pool_alive(rows: &[WorkerStatus], fresh: Option<Duration>) -> bool {
    rows.iter().any(|r| {
        r.state == State::Listening
            && fresh.is_none_or(|f| r.last_heartbeat.is_some_and(|ago| ago <= f))
    })
}

/// `STATUS=`'s text for `n` listening workers on these addresses:
/// `2 workers listening on 127.0.0.1:7000`.
pub fn pool_status<'a>(n: usize, addresses: impl IntoIterator<Item = &'a Address>) -> String {
    let set: BTreeSet<String> = addresses.into_iter().map(|a| a.to_string()).collect();
    let list: Vec<String> = set.into_iter().collect();
    let workers = if n == 1 { "worker" } else { "workers" };
    if list.is_empty() {
        format!("{n} {workers} listening")
    } else {
        format!("{n} {workers} listening on {}", list.join(", "))
    }
}

/// The service's side of systemd's notification socket (`sd_notify(3)`),
/// for the master's loop. Every send is one non-blocking datagram; a
/// failed one is logged and dropped, as `sd_notify` does.
#[derive(Debug)]
pub struct Notifier {
    socket: UnixDatagram,
    addr: UnixAddr,
    /// `NOTIFY_SOCKET` as it was given.
    path: OsString,
    /// `WATCHDOG_USEC`, if it is this process's.
    watchdog: Option<Duration>,
    next_ping: Option<Instant>,
    last_status: Option<String>,
    /// The last due ping found the pool dead (logged once per outage).
    withheld: bool,
    /// `READY=1` was sent: a withheld ping is worth a warning from then on.
    started: bool,
}

impl Notifier {
    /// The notifier `NOTIFY_SOCKET` asks for (`None` if it is unset: then
    /// nothing is ever sent), with the watchdog of `WATCHDOG_USEC` if
    /// `WATCHDOG_PID` is unset or this process's pid. Removes the three
    /// variables from the environment: workers are not the service's main
    /// process, and do not notify.
    pub fn from_env() -> io::Result<Option<Notifier>> {
        let socket = std::env::var_os("NOTIFY_SOCKET");
        let usec = std::env::var_os("WATCHDOG_USEC");
        let pid = std::env::var_os("WATCHDOG_PID");
        for k in ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"] {
            // One thread per process: nothing reads the environment meanwhile.
            std::env::remove_var(k);
        }
        let Some(socket) = socket else { return Ok(None) };
        let text = |v: Option<OsString>| v.map(|v| v.to_string_lossy().into_owned());
        let watchdog = watchdog_interval(text(usec).as_deref(), text(pid).as_deref());
        Notifier::new(&socket, watchdog).map(Some)
    }

    /// A notifier for the socket `path` (a file, or `@NAME` in the abstract
    /// namespace), with a watchdog of `watchdog` (pinged every half of it).
    pub fn new(path: &std::ffi::OsStr, watchdog: Option<Duration>) -> io::Result<Notifier> {
        let bytes = path.as_bytes();
        let addr = match bytes.first() {
            Some(b'@') => crate::sys::socket::std_abstract_addr(&bytes[1..])?,
            Some(b'/') => UnixAddr::from_pathname(path)?,
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "NOTIFY_SOCKET={:?}: neither an absolute path nor @NAME",
                        path.to_string_lossy()
                    ),
                ))
            }
        };
        let socket = UnixDatagram::unbound()?;
        socket.set_nonblocking(true)?;
        let next_ping = watchdog.map(|_| Instant::now());
        Ok(Notifier {
            socket,
            addr,
            path: path.to_os_string(),
            watchdog,
            next_ping,
            last_status: None,
            withheld: false,
            started: false,
        })
    }

    /// Sends one notification (`KEY=VALUE` lines).
    pub fn notify(&self, message: &str) -> io::Result<()> {
        log::debug!("sd_notify: {:?}", message);
        self.socket.send_to_addr(message.as_bytes(), &self.addr).map(drop)
    }

    fn send(&self, message: &str) {
        if let Err(e) = self.notify(message) {
            log::warn!("sd_notify {message:?}: {e}");
        }
    }

    /// `READY=1` with `STATUS=status`: the service is up (or done
    /// reloading).
    pub fn ready(&mut self, status: &str) {
        self.send(&format!("READY=1\nSTATUS={status}"));
        self.last_status = Some(status.to_string());
        self.started = true;
    }

    /// `RELOADING=1` with `MONOTONIC_USEC=` now, as `Type=notify-reload`
    /// wants: send [`ready`](Self::ready) when the reload is done.
    pub fn reloading(&mut self) {
        self.send(&format!("RELOADING=1\nMONOTONIC_USEC={}", monotonic_usec()));
    }

    /// `STOPPING=1`: the service is shutting down.
    pub fn stopping(&mut self) {
        self.send("STOPPING=1");
    }

    /// `STATUS=status`, if it differs from the last one sent.
    pub fn status(&mut self, status: &str) {
        if self.last_status.as_deref() != Some(status) {
            self.send(&format!("STATUS={status}"));
            self.last_status = Some(status.to_string());
        }
    }

    /// The watchdog timeout systemd set (`WATCHDOG_USEC`), if it is on for
    /// this process. Pings go every half of it.
    pub fn watchdog(&self) -> Option<Duration> {
        self.watchdog
    }

    /// How long the loop may wait before the next [`tick`](Self::tick)
    /// (`None`: no watchdog). Rounded up to the millisecond.
    pub fn timeout(&self) -> Option<Duration> {
        let left = self.next_ping?.saturating_duration_since(Instant::now());
        Some(Duration::from_millis(left.as_micros().div_ceil(1000) as u64))
    }

    /// Call after every wait of the loop. When a ping is due, asks `alive`
    /// (whether the pool can serve: [`pool_alive`]) and sends `WATCHDOG=1`
    /// only if it is; the next ping is due half the watchdog timeout
    /// later, or, after a pool that was not alive, a tenth of it later.
    /// Returns true if it pinged.
    pub fn tick(&mut self, alive: impl FnOnce() -> bool) -> bool {
        let (Some(at), Some(every)) = (self.next_ping, self.watchdog) else { return false };
        let now = Instant::now();
        if now < at {
            return false;
        }
        if alive() {
            if std::mem::take(&mut self.withheld) {
                log::info!("watchdog: a worker listens with a fresh heartbeat; pinging again");
            }
            self.send("WATCHDOG=1");
            self.next_ping = Some(crate::deadline::after(now, every / 2));
            true
        } else {
            // Before READY=1 no worker listens yet: nothing to say.
            if self.started && !std::mem::replace(&mut self.withheld, true) {
                log::warn!("watchdog: no worker listens with a fresh heartbeat; not pinging");
            }
            self.next_ping =
                Some(crate::deadline::after(now, (every / 10).max(Duration::from_millis(1))));
            false
        }
    }
}

/// The service as systemd sees it, kept from the master's events: what a
/// supervising master's loop tells systemd, in one place. Without
/// `NOTIFY_SOCKET` it only tracks the pool (for [`Service::on_event`]'s
/// answer) and sends nothing.
///
/// In the loop: wait no longer than [`timeout`](Self::timeout) (with the
/// master's own), pass every event to [`on_event`](Self::on_event) before
/// acting on it (before `handle_signal` for a signal), call
/// [`stopping`](Self::stopping) when the application shuts the pool down
/// on its own, and [`tick`](Self::tick) after each turn's events.
///
/// - `READY=1` with `STATUS=` once the initial `workers` listen;
/// - `STATUS=` whenever the pool changes after that (workers listening and
///   not asked to leave, and their addresses);
/// - on `SIGHUP`, `RELOADING=1` with `MONOTONIC_USEC=`, then `READY=1`
///   when the rolling restart ends (complete or failed);
/// - `STOPPING=1` on `SIGINT`, `SIGTERM`, `SIGQUIT` or [`stopping`](Self::stopping);
/// - `WATCHDOG=1` every `WATCHDOG_USEC`/2 while [`pool_alive`].
#[derive(Debug)]
pub struct Service {
    notifier: Option<Notifier>,
    workers: usize,
    listening: std::collections::HashMap<crate::WorkerId, Address>,
    ready: bool,
    stopping: bool,
    fresh: Option<Duration>,
    /// The new master of a hot upgrade, until the old one has named it the
    /// main process: systemd would refuse its notifications.
    held: bool,
}

impl Service {
    /// For a pool of `workers` (READY=1 once that many listen), with the
    /// master's heartbeats (a worker whose last one is older than three
    /// intervals does not keep the watchdog pinging). Reads the
    /// notification variables ([`Notifier::from_env`]).
    ///
    /// Warns if the watchdog cannot catch a hung pool with these heartbeats
    /// ([`watchdog_mismatch`]).
    pub fn from_env(workers: usize, heartbeat: Option<&crate::Heartbeat>) -> io::Result<Service> {
        let notifier = Notifier::from_env()?;
        if let Some(w) = notifier.as_ref().and_then(Notifier::watchdog) {
            if let Some(why) = watchdog_mismatch(w, heartbeat) {
                log::warn!("watchdog: {why}");
            }
        }
        Ok(Service {
            notifier,
            workers,
            listening: Default::default(),
            ready: false,
            stopping: false,
            fresh: heartbeat.map(fresh_window),
            held: false,
        })
    }

    /// Whether there is a notification socket (`NOTIFY_SOCKET` was set),
    /// and this master has not handed it over.
    pub fn has_notifier(&self) -> bool {
        self.notifier.is_some()
    }

    /// In the new master of a hot upgrade: says nothing to systemd until
    /// [`became_main`](Self::became_main) (systemd takes notifications only
    /// from the main process, and the old master is that until it names this
    /// one with `MAINPID=`).
    pub fn hold(&mut self) {
        self.held = true;
    }

    /// The old master has named this one the main process: from now on the
    /// status and the watchdog's pings go out.
    pub fn became_main(&mut self, master: &crate::Master) {
        if !std::mem::take(&mut self.held) {
            return;
        }
        let status = self.pool_text(master);
        if let Some(n) = self.notifier.as_mut() {
            n.started = self.ready;
            n.status(&status);
        }
    }

    /// The notifier, if `NOTIFY_SOCKET` was set.
    pub fn notifier(&mut self) -> Option<&mut Notifier> {
        self.notifier.as_mut()
    }

    /// How long the loop may wait before [`tick`](Self::tick).
    pub fn timeout(&self) -> Option<Duration> {
        self.notifier.as_ref().and_then(Notifier::timeout)
    }

    /// Takes one of the master's events into account. Returns true for the
    /// event that made the initial pool ready (every worker listens), once.
    pub fn on_event(&mut self, master: &crate::Master, event: &crate::Event) -> bool {
        use crate::{Event, Signal};
        match event {
            Event::Listening { id, address } => {
                self.listening.insert(*id, address.clone());
                if !self.ready && self.listening.len() >= self.workers {
                    self.ready = true;
                    let status = self.pool_text(master);
                    if let (Some(n), false) = (self.notifier.as_mut(), self.held) {
                        n.ready(&status);
                    }
                    return true;
                }
            }
            Event::Exit { id, .. } => {
                self.listening.remove(id);
            }
            Event::Signal(Signal::SIGHUP) if self.ready && !master.is_shutting_down() => {
                if let Some(n) = self.notifier.as_mut() {
                    n.reloading();
                }
            }
            Event::Signal(Signal::SIGINT | Signal::SIGTERM | Signal::SIGQUIT) => self.stopping(),
            Event::RollComplete | Event::RollFailed { .. } if !self.stopping => {
                let status = self.pool_text(master);
                if let Some(n) = self.notifier.as_mut() {
                    n.ready(&status);
                }
            }
            _ => {}
        }
        false
    }

    /// `MAINPID=pid`: after a hot upgrade, the new master is the service's
    /// main process (sent before this one exits, so that systemd, with
    /// `NotifyAccess=main`, takes the new one's notifications).
    /// This service says nothing more after it: the new master speaks for
    /// the service, its status and its watchdog.
    pub fn main_pid(&mut self, pid: u32) {
        if let Some(n) = self.notifier.take() {
            n.send(&format!("MAINPID={pid}"));
        }
    }

    /// The notification variables this process took out of its
    /// environment, for the new master of a hot upgrade
    /// ([`Master::upgrade`](crate::Master::upgrade)): `NOTIFY_SOCKET`, and
    /// `WATCHDOG_USEC` (without `WATCHDOG_PID`: the new master becomes the
    /// main process).
    pub fn handover_env(&self) -> Vec<(OsString, OsString)> {
        let Some(n) = self.notifier.as_ref() else { return Vec::new() };
        let mut env = vec![(OsString::from("NOTIFY_SOCKET"), n.path.clone())];
        if let Some(w) = n.watchdog {
            env.push((OsString::from("WATCHDOG_USEC"), OsString::from(w.as_micros().to_string())));
        }
        env
    }

    /// `STOPPING=1` (once): the pool is shutting down.
    pub fn stopping(&mut self) {
        if let (Some(n), false) = (self.notifier.as_mut(), self.stopping) {
            n.stopping();
        }
        self.stopping = true;
    }

    /// After each turn's events: `STATUS=` if the pool changed, and the
    /// watchdog's ping if one is due and the pool is alive.
    pub fn tick(&mut self, master: &crate::Master) {
        if self.notifier.is_none() || self.held {
            return;
        }
        let status = (self.ready && !self.stopping).then(|| self.pool_text(master));
        let fresh = self.fresh;
        let Some(n) = self.notifier.as_mut() else { return };
        if let Some(status) = status {
            n.status(&status);
        }
        n.tick(|| pool_alive(&master.status(), fresh));
    }

    /// The pool for `STATUS=`: workers that listen and were not asked to
    /// leave.
    fn pool_text(&self, master: &crate::Master) -> String {
        let serving: Vec<&Address> = master
            .workers()
            .filter(|w| !w.exited_after_disconnect)
            .filter_map(|w| self.listening.get(&w.id))
            .collect();
        pool_status(serving.len(), serving)
    }
}

/// How long after its last heartbeat a worker still keeps the watchdog
/// pinged: three heartbeat intervals.
fn fresh_window(h: &crate::Heartbeat) -> Duration {
    h.interval.saturating_mul(3)
}

/// Why a watchdog of `watchdog` cannot always catch a hung pool with these
/// heartbeats, if it cannot. When every worker hangs just after a ping, the
/// pings go on while the workers' last heartbeats are fresh (three
/// intervals), and the master replaces the hung workers at the heartbeat
/// timeout and pings again: systemd's deadline, the last ping plus the
/// watchdog timeout, must come before that. `WatchdogSec` at most half the
/// heartbeat timeout is always enough with the default interval (a tenth
/// of the timeout). Without heartbeats a hung worker is never seen.
pub fn watchdog_mismatch(
    watchdog: Duration,
    heartbeat: Option<&crate::Heartbeat>,
) -> Option<String> {
    let Some(h) = heartbeat else {
        return Some(format!(
            "WATCHDOG_USEC is {watchdog:?} but heartbeats are off: a hung worker keeps the \
             watchdog pinged; turn heartbeats on (--heartbeat-timeout)"
        ));
    };
    let latest = fresh_window(h).saturating_add(watchdog);
    (latest >= h.timeout).then(|| {
        format!(
            "WATCHDOG_USEC is {watchdog:?} with a heartbeat timeout of {:?}: a pool that hangs \
             just after a ping is replaced by the master before systemd's deadline; use a \
             watchdog of at most half the heartbeat timeout (WatchdogSec={})",
            h.timeout,
            (h.timeout / 2).as_secs().max(1)
        )
    })
}

/// The watchdog timeout `WATCHDOG_USEC` gives this process
/// (`sd_watchdog_enabled(3)`): none if unset, zero or unparsable, or if
/// `WATCHDOG_PID` names another process.
fn watchdog_interval(usec: Option<&str>, pid: Option<&str>) -> Option<Duration> {
    if let Some(pid) = pid {
        if pid.parse::<u32>().ok() != Some(std::process::id()) {
            return None;
        }
    }
    let usec: u64 = usec?.parse().ok().filter(|u| *u > 0)?;
    Some(Duration::from_micros(usec))
}

/// `CLOCK_MONOTONIC` in microseconds, the clock systemd compares
/// `MONOTONIC_USEC` with.
fn monotonic_usec() -> u64 {
    use nix::time::{clock_gettime, ClockId};
    clock_gettime(ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1_000_000 + t.tv_nsec() as u64 / 1000)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watchdog_is_off_for_another_pid_or_zero() {
        let me = std::process::id().to_string();
        assert_eq!(watchdog_interval(Some("2000000"), None), Some(Duration::from_secs(2)));
        assert_eq!(watchdog_interval(Some("2000000"), Some(&me)), Some(Duration::from_secs(2)));
        assert_eq!(watchdog_interval(Some("2000000"), Some("1")), None);
        assert_eq!(watchdog_interval(Some("0"), None), None);
        assert_eq!(watchdog_interval(None, None), None);
    }

    #[test]
    fn the_watchdog_must_fire_before_the_heartbeat_timeout_replaces_a_hung_pool() {
        let hb = |secs| crate::Heartbeat {
            timeout: Duration::from_secs(secs),
            interval: Duration::from_secs(secs) / 10,
            ..crate::Heartbeat::default()
        };
        // The shipped unit: WatchdogSec=5, --heartbeat-timeout 10.
        assert_eq!(watchdog_mismatch(Duration::from_secs(5), Some(&hb(10))), None);
        // The old one: WatchdogSec=10 with the same timeout.
        let why = watchdog_mismatch(Duration::from_secs(10), Some(&hb(10))).unwrap();
        assert!(why.contains("WatchdogSec=5"), "{why}");
        assert!(watchdog_mismatch(Duration::from_secs(7), Some(&hb(10))).is_some());
        assert!(watchdog_mismatch(Duration::from_secs(5), None).unwrap().contains("off"));
    }

    #[test]
    fn pool_status_lists_each_address_once() {
        let a = Address::Inet("127.0.0.1:7000".parse().unwrap());
        assert_eq!(pool_status(2, [&a, &a]), "2 workers listening on 127.0.0.1:7000");
        assert_eq!(pool_status(1, [&a]), "1 worker listening on 127.0.0.1:7000");
        assert_eq!(pool_status(0, []), "0 workers listening");
    }
}
