//! What every example shares: the command line (`--workers N --listen ADDR
//! ...`), logging through `env_logger`, and the supervising master that
//! prints the `ready` line. Each example only writes its worker.

#![allow(dead_code)]

pub mod echo_conn;
pub mod http;

use std::collections::HashSet;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio_cluster::host::health::{Health, Readiness};
use mio_cluster::host::linger::Linger;
use mio_cluster::host::reaper;
use mio_cluster::host::systemd;
use mio_cluster::master::{Upgrade, UpgradeOutcome};
use mio_cluster::supervisor::STANDARD_SIGNALS;
use mio_cluster::{
    Balance, Event, ExitStatus, Heartbeat, ListenAddr, Master, Policy, Role, Settings, Signal,
    State, Supervisor, WorkerId,
};

/// A worker's exit code when it cannot listen: the master then gives up
/// instead of respawning it (sysexits' EX_CONFIG).
pub const EXIT_CANNOT_LISTEN: i32 = 78;

/// A worker's listen failed: if the master had asked it to leave meanwhile
/// (`ECONNABORTED`), or is gone (`NotConnected`), it just leaves; otherwise
/// the error is logged and the worker exits with [`EXIT_CANNOT_LISTEN`].
pub fn cannot_listen(worker: mio_cluster::Worker, e: io::Error) -> ! {
    if matches!(e.kind(), io::ErrorKind::ConnectionAborted | io::ErrorKind::NotConnected) {
        worker.exit(0);
    }
    log::error!("worker {}: {e}", worker.id());
    worker.exit(EXIT_CANNOT_LISTEN)
}

const OPTIONS: &str = "\
  --workers N               worker processes (default: one per CPU)
  --listen ADDR             HOST:PORT, [V6]:PORT, fd:N (the master's descriptor N),
                            unix:PATH, unix:@NAME or systemd:NAME (the socket
                            systemd passed under NAME) (default 127.0.0.1:7000)
  --shutdown-timeout SECS   how long workers may take to finish their
                            connections on shutdown before they are killed (10)
  --heartbeat-timeout SECS  a worker whose loop is silent this long is killed
                            and replaced (10; 0: off)
  --balance MODE            even (default: one idle worker woken per
                            connection, in turn, and no worker takes more
                            than its share of open connections while another
                            is awake to take them), exclusive (woken in turn
                            only; during a burst a worker steps aside 50 us
                            after each one), exclusive:MICROS (another pause;
                            0: just yield) or shared (all woken, as Node)
  --shutdown-linger SECS    after SIGTERM/SIGINT, keep accepting this long
                            (while /ready says 503), then shut down (0)
  --health ADDR             HOST:PORT of an HTTP health listener in the
                            master's loop: GET /ready (200 while every
                            worker listens, 503 below target, lingering or
                            draining), GET /live (200 while the loop turns)
  --subreaper               reap every orphan among the descendants and wait
                            for them at shutdown (always on as PID 1)
  --upgrade-timeout SECS    how long a new master (SIGUSR2) may take to have
                            all its workers listening before it is killed
                            and this one keeps serving (30)

stdout: one line, `ready addr=<bound address> workers=<N> pid=<master pid>`,
once every worker listens. Logs on stderr (RUST_LOG=debug for more).

signals to the master:
  SIGINT, SIGTERM   graceful shutdown (after the linger, if any): workers
                    stop accepting, finish open connections, exit; master
                    exits 0 (1 if any had to be killed). A second one ends
                    the linger; during the shutdown it kills every worker at
                    once, and the master exits 128+signal (130, 143).
  SIGQUIT           kill every worker at once and exit 131
  SIGHUP            zero-downtime rolling restart of every worker
  SIGTTIN, SIGTTOU  one worker more, one worker less
  SIGUSR1           print a status table on stderr
  SIGUSR2           hot upgrade: a new master from the program now at this
                    path takes over the listening sockets; once its workers
                    all listen, this one drains its workers and exits

A worker that dies is replaced (within 500 ms, however often). Only if 5
workers in a row die before they listen does the master give up and exit 1.

under systemd: sockets passed by socket activation (LISTEN_FDS) are served
with --listen systemd:NAME or fd:N; with NOTIFY_SOCKET set the master sends
READY=1, RELOADING=1 (SIGHUP), STOPPING=1 and STATUS=, and WATCHDOG=1 every
WATCHDOG_USEC/2 while a worker listens with a fresh heartbeat.";

/// The command line every example takes.
pub struct Args {
    pub workers: usize,
    pub listen: ListenAddr,
    pub shutdown_timeout: Duration,
    pub heartbeat_timeout: Duration,
    pub balance: Balance,
    pub shutdown_linger: Duration,
    pub health: Option<SocketAddr>,
    pub subreaper: bool,
    pub upgrade_timeout: Duration,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
        listen: "127.0.0.1:7000".parse().expect("default address parses"),
        shutdown_timeout: Duration::from_secs(10),
        heartbeat_timeout: Duration::from_secs(10),
        balance: Balance::default(),
        shutdown_linger: Duration::ZERO,
        health: None,
        subreaper: false,
        upgrade_timeout: mio_cluster::master::DEFAULT_UPGRADE_TIMEOUT,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--workers" => {
                args.workers = value()?.parse().map_err(|e| format!("--workers: {e}"))?;
                if args.workers == 0 {
                    return Err("--workers: at least 1".into());
                }
            }
            "--listen" => args.listen = value()?.parse().map_err(|e| format!("--listen: {e}"))?,
            "--shutdown-timeout" => {
                let secs: f64 = value()?.parse().map_err(|e| format!("--shutdown-timeout: {e}"))?;
                args.shutdown_timeout = Duration::from_secs_f64(secs);
            }
            "--heartbeat-timeout" => {
                let secs: f64 =
                    value()?.parse().map_err(|e| format!("--heartbeat-timeout: {e}"))?;
                args.heartbeat_timeout = Duration::from_secs_f64(secs);
            }
            "--upgrade-timeout" => {
                let secs: f64 = value()?.parse().map_err(|e| format!("--upgrade-timeout: {e}"))?;
                args.upgrade_timeout = Duration::from_secs_f64(secs);
            }
            "--balance" => {
                let v = value()?;
                args.balance = match v.split_once(':') {
                    _ if v == "even" => Balance::Even,
                    _ if v == "exclusive" => {
                        Balance::Exclusive { pause: mio_cluster::DEFAULT_ACCEPT_PAUSE }
                    }
                    _ if v == "shared" => Balance::Shared,
                    Some(("exclusive", us)) => Balance::Exclusive {
                        pause: Duration::from_micros(
                            us.parse().map_err(|e| format!("--balance: {e}"))?,
                        ),
                    },
                    _ => {
                        return Err(format!(
                            "--balance: even, exclusive[:MICROS] or shared, not {v:?}"
                        ))
                    }
                }
            }
            "--shutdown-linger" => {
                let secs: f64 = value()?.parse().map_err(|e| format!("--shutdown-linger: {e}"))?;
                args.shutdown_linger = Duration::try_from_secs_f64(secs)
                    .map_err(|e| format!("--shutdown-linger: {e}"))?;
            }
            "--health" => {
                args.health = Some(value()?.parse().map_err(|e| format!("--health: {e}"))?)
            }
            "--subreaper" => args.subreaper = true,
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(args)
}

/// Sets up logging, parses the command line (usage on `--help`; usage and
/// exit 2 on a bad one), then runs the master or, in a worker, `worker`.
/// `on_message` sees every message a worker sends the master.
pub fn run(
    name: &str,
    about: &str,
    worker: fn(&Args) -> io::Result<()>,
    on_message: impl FnMut(WorkerId, &[u8]),
) {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let usage = format!(
        "usage: {name} [--workers N] [--listen ADDR] [--shutdown-timeout SECS]\n{:w$}[--heartbeat-timeout SECS] [--upgrade-timeout SECS]\n\n{about}\n\n{OPTIONS}",
        "",
        w = name.len() + 8
    );
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) if e.is_empty() => {
            println!("{usage}");
            return;
        }
        Err(e) => {
            eprintln!("{name}: {e}\n{usage}");
            std::process::exit(2);
        }
    };
    let result = match mio_cluster::role() {
        Role::Master => master(&args, on_message),
        Role::Worker(_) => worker(&args),
    };
    if let Err(e) = result {
        log::error!("{e}");
        std::process::exit(1);
    }
}

fn master(args: &Args, mut on_message: impl FnMut(WorkerId, &[u8])) -> io::Result<()> {
    let heartbeat = (!args.heartbeat_timeout.is_zero()).then(|| Heartbeat {
        timeout: args.heartbeat_timeout,
        interval: (args.heartbeat_timeout / 10).max(Duration::from_millis(10)),
        ..Heartbeat::default()
    });
    let mut signals = STANDARD_SIGNALS.to_vec();
    signals.push(Signal::SIGUSR2);
    let settings = Settings {
        signals,
        disconnect_timeout: args.shutdown_timeout,
        heartbeat,
        subreaper: args.subreaper,
        ..Settings::default()
    };
    // Takes systemd's sockets, if it passed any (or, in the new master of a
    // hot upgrade, the old master's).
    let mut master = Master::new(settings)?;
    if let ListenAddr::Named(name) = &args.listen {
        // A name systemd did not pass: say which it did, before any worker.
        systemd::find_socket(name)?;
    }
    // The new master of a hot upgrade keeps the old one's count (SIGTTIN
    // and SIGTTOU may have changed it).
    let workers = master.inherited_target().unwrap_or(args.workers);
    // The service as systemd sees it: READY=1, RELOADING=1, STOPPING=1,
    // STATUS= and the watchdog, if NOTIFY_SOCKET is set (read before any
    // worker is forked: the variables are removed, workers do not notify).
    let mut service = systemd::Service::from_env(workers, heartbeat.as_ref())?;
    // Keep `workers` alive: replace every worker that dies; stop only if
    // workers keep dying before they listen (a crash loop).
    let mut supervisor = Supervisor::new(Policy { workers, ..Policy::default() });
    supervisor.start(&mut master)?;
    // The master in a loop of the example's own, as an application would
    // embed it (`examples/embed.rs` adds a source of its own).
    let mut poll = mio::Poll::new()?;
    poll.registry().register(&mut master, mio::Token(0), mio::Interest::READABLE)?;
    // The health listener is a source in the same loop, bound after the
    // master so that workers cannot name its descriptor with fd:N.
    let mut health = match args.health {
        Some(addr) => {
            let mut h = Health::bind(addr)?;
            poll.registry().register(&mut h, mio::Token(1), mio::Interest::READABLE)?;
            log::info!("health listener on {}", h.local_addr());
            Some(h)
        }
        None => None,
    };
    let mut linger = Linger::new(args.shutdown_linger);
    // The signal that ended the master by killing every worker, if any.
    let mut killed_by = None;
    let mut events = mio::Events::with_capacity(16);
    let mut failed = false;
    // A hot upgrade under way (SIGUSR2), and the new master once it took
    // over (this one then only drains).
    let mut upgrade: Option<Upgrade> = None;
    let mut handed_over: Option<u32> = None;
    loop {
        let timeout = [
            supervisor.timeout(&master),
            service.timeout(),
            health.as_ref().and_then(|h| h.timeout()),
            linger.timeout(Instant::now()),
            upgrade.as_ref().and_then(Upgrade::timeout),
        ]
        .into_iter()
        .flatten()
        .min();
        match poll.poll(&mut events, timeout) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            res => res?,
        }
        supervisor.process(&mut master)?;
        if let Some(h) = health.as_mut() {
            h.process(|| readiness(&master, &supervisor, &linger, args))?;
        }
        if linger.due(Instant::now()) && !master.is_shutting_down() {
            log::info!("the linger is over: graceful shutdown");
            supervisor.handle_signal(&mut master, Signal::SIGTERM)?;
        }
        if let Some(outcome) = upgrade.as_mut().and_then(|up| up.process(&mut master)) {
            if let Some(mut up) = upgrade.take() {
                poll.registry().deregister(&mut up)?;
            }
            if let UpgradeOutcome::Ready { pid } = outcome {
                // Under systemd the unit's main process is the new one
                // before this one exits.
                service.main_pid(pid);
                log::info!("handed over to the new master (pid {pid}); draining the old workers");
                handed_over = Some(pid);
                supervisor.shutdown(&mut master)?;
            }
        }
        while let Some(event) = supervisor.next_event(&mut master) {
            let now_ready = service.on_event(&master, &event);
            match event {
                Event::Listening { id, address } => {
                    log::info!("worker {id} listening on {address}");
                    if now_ready {
                        let pid = std::process::id();
                        println!("ready addr={address} workers={workers} pid={pid}");
                        io::stdout().flush()?;
                        // In the new master of a hot upgrade: the old one
                        // may go now.
                        master.report_ready()?;
                    }
                }
                Event::Exit { id, status, exited_after_disconnect: false, .. }
                    if status == ExitStatus::Code(EXIT_CANNOT_LISTEN)
                        && !master.is_shutting_down() =>
                {
                    log::error!("worker {id} cannot listen on {}; shutting down", args.listen);
                    failed = true;
                    service.stopping();
                    supervisor.shutdown(&mut master)?;
                }
                Event::Exit { id, pid, status, exited_after_disconnect } => {
                    let how = if exited_after_disconnect { "left" } else { "died" };
                    log::info!("worker {id} (pid {pid}) {how}: {status}");
                }
                Event::CrashLoop { .. } => {
                    log::error!("workers keep dying at start-up; shutting down");
                    failed = true;
                    service.stopping();
                    supervisor.shutdown(&mut master)?;
                }
                Event::Signal(Signal::SIGUSR1) => {
                    eprint!("{}", status_table(&supervisor.status(&master)))
                }
                Event::Signal(Signal::SIGUSR2) => {
                    if let Some(up) = &upgrade {
                        log::warn!(
                            "upgrade refused: one is under way (new master pid {})",
                            up.pid()
                        );
                    } else if let Some(pid) = handed_over {
                        log::warn!("upgrade refused: this master handed over to pid {pid}");
                    } else if master.is_upgrading() || master.is_shutting_down() {
                        log::warn!(
                            "upgrade refused: this master is not serving yet, or is leaving"
                        );
                    } else {
                        let env = service.handover_env();
                        match master.upgrade(Some(supervisor.target()), args.upgrade_timeout, &env)
                        {
                            Ok(mut up) => {
                                poll.registry().register(
                                    &mut up,
                                    mio::Token(2),
                                    mio::Interest::READABLE,
                                )?;
                                upgrade = Some(up);
                            }
                            Err(e) => log::error!("upgrade failed: {e}; this master keeps serving"),
                        }
                    }
                }
                // Held during the linger: the workers keep accepting.
                Event::Signal(sig) if linger.on_signal(sig, Instant::now()) => {}
                Event::Signal(sig) => {
                    if matches!(sig, Signal::SIGINT | Signal::SIGTERM | Signal::SIGQUIT) {
                        // Leaving: a pending upgrade is called off (killed).
                        upgrade = None;
                    }
                    let kills = sig == Signal::SIGQUIT
                        || (matches!(sig, Signal::SIGINT | Signal::SIGTERM)
                            && master.is_shutting_down());
                    if kills {
                        killed_by = Some(sig);
                        // As PID 1: other processes waited for go too.
                        master.kill_others();
                    }
                    supervisor.handle_signal(&mut master, sig)?;
                }
                Event::RollFailed { id, reason } => {
                    log::error!("rolling restart stopped at worker {id}: {reason}");
                }
                Event::AllDisconnected { forced } => {
                    if forced > 0 {
                        log::warn!("{forced} workers had to be killed");
                    }
                    log::info!("every worker has left; bye");
                    // Ended by a signal that killed every worker: 128 +
                    // its number, as a shell shows a process it killed.
                    std::process::exit(match killed_by {
                        Some(sig) => reaper::exit_code(sig),
                        None if failed || forced > 0 => 1,
                        None => 0,
                    });
                }
                Event::Message { id, payload, .. } => on_message(id, &payload),
                other => log::debug!("{other:?}"),
            }
        }
        // STATUS= if the pool changed; WATCHDOG=1 from this loop, while
        // the pool can serve.
        service.tick(&master);
    }
}

/// What `/ready` says: lingering, draining, or whether every seat has a
/// worker that listens, is not leaving, and (with heartbeats) was heard
/// from within half the heartbeat timeout (a stopped or hung worker does
/// not count before the master kills it).
fn readiness(master: &Master, supervisor: &Supervisor, linger: &Linger, args: &Args) -> Readiness {
    if linger.is_lingering() {
        return Readiness::Lingering;
    }
    if master.is_shutting_down() {
        return Readiness::Draining;
    }
    let stale = (!args.heartbeat_timeout.is_zero()).then(|| args.heartbeat_timeout / 2);
    let listening: HashSet<WorkerId> = master
        .workers()
        .filter(|w| w.state == State::Listening && !w.exited_after_disconnect)
        .map(|w| w.id)
        .collect();
    let ready = master
        .status()
        .iter()
        .filter(|r| listening.contains(&r.id))
        .filter(|r| match (stale, r.last_heartbeat) {
            (Some(stale), Some(ago)) => ago <= stale,
            _ => true,
        })
        .count();
    Readiness::of_pool(ready, supervisor.target())
}

/// The `SIGUSR1` table: one row per worker.
fn status_table(rows: &[mio_cluster::WorkerStatus]) -> String {
    let mut t = format!(
        "{:>4} {:>8} {:>3} {:<12} {:>9} {:>8} {:>10} {:>9} {:>9}\n",
        "id", "pid", "gen", "state", "uptime", "restarts", "heartbeat", "rss", "cpu"
    );
    for r in rows {
        let hb =
            r.last_heartbeat.map_or("-".to_string(), |d| format!("{:.1}s ago", d.as_secs_f64()));
        let rss =
            r.rss_bytes.map_or("-".to_string(), |b| format!("{:.1}MiB", b as f64 / 1048576.0));
        let cpu = r.cpu_time.map_or("-".to_string(), |d| format!("{:.2}s", d.as_secs_f64()));
        t += &format!(
            "{:>4} {:>8} {:>3} {:<12} {:>8.1}s {:>8} {:>10} {:>9} {:>9}\n",
            r.id,
            r.pid,
            r.generation,
            format!("{:?}", r.state),
            r.uptime.as_secs_f64(),
            r.restarts.unwrap_or(0),
            hb,
            rss,
            cpu
        );
    }
    t
}
