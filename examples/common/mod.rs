//! What every example shares: the command line (`--workers N --listen ADDR
//! ...`), logging through `env_logger`, and the supervising master that
//! prints the `ready` line. Each example only writes its worker.

#![allow(dead_code)]

pub mod echo_conn;
pub mod http;

use std::collections::HashSet;
use std::io::{self, Write};
use std::time::Duration;

use mio_cluster::master::{notify_systemd, Upgrade, UpgradeOutcome, STANDARD_SIGNALS};
use mio_cluster::{
    Balance, Event, ExitStatus, Heartbeat, ListenAddr, Master, Policy, Role, Settings, Signal,
    WorkerId,
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
                            unix:PATH or unix:@NAME (default 127.0.0.1:7000)
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
  --upgrade-timeout SECS    how long a new master (SIGUSR2) may take to have
                            all its workers listening before it is killed
                            and this one keeps serving (30)

stdout: one line, `ready addr=<bound address> workers=<N> pid=<master pid>`,
once every worker listens. Logs on stderr (RUST_LOG=debug for more).

signals to the master:
  SIGINT, SIGTERM   graceful shutdown: workers stop accepting, finish open
                    connections, exit; master exits 0 (1 if any had to be
                    killed). A second one kills every worker at once.
  SIGQUIT           kill every worker at once and exit
  SIGHUP            zero-downtime rolling restart of every worker
  SIGTTIN, SIGTTOU  one worker more, one worker less
  SIGUSR1           print a status table on stderr
  SIGUSR2           hot upgrade: a new master from the program now at this
                    path takes over the listening sockets; once its workers
                    all listen, this one drains its workers and exits

A worker that dies is replaced (within 500 ms, however often). Only if 5
workers in a row die before they listen does the master give up and exit 1.";

/// The command line every example takes.
pub struct Args {
    pub workers: usize,
    pub listen: ListenAddr,
    pub shutdown_timeout: Duration,
    pub heartbeat_timeout: Duration,
    pub balance: Balance,
    pub upgrade_timeout: Duration,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
        listen: "127.0.0.1:7000".parse().expect("default address parses"),
        shutdown_timeout: Duration::from_secs(10),
        heartbeat_timeout: Duration::from_secs(10),
        balance: Balance::default(),
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
        ..Settings::default()
    };
    let mut master = Master::new(settings)?;
    // The new master of a hot upgrade keeps the old one's count (SIGTTIN
    // and SIGTTOU may have changed it).
    let workers = master.inherited_target().unwrap_or(args.workers);
    // Keep `workers` alive: replace every worker that dies; stop only if
    // workers keep dying before they listen (a crash loop).
    master.supervise(Policy { workers, ..Policy::default() })?;
    // The master in a loop of the example's own, as an application would
    // embed it (`examples/embed.rs` adds a source of its own).
    let mut poll = mio::Poll::new()?;
    poll.registry().register(&mut master, mio::Token(0), mio::Interest::READABLE)?;
    let mut events = mio::Events::with_capacity(16);
    let mut listening = HashSet::new();
    let mut ready = false;
    let mut failed = false;
    // A hot upgrade under way (SIGUSR2), and the new master once it took
    // over (this one then only drains).
    let mut upgrade: Option<Upgrade> = None;
    let mut handed_over: Option<u32> = None;
    loop {
        let timeout = match (master.timeout(), upgrade.as_ref().and_then(Upgrade::timeout)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        match poll.poll(&mut events, timeout) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            res => res?,
        }
        master.process()?;
        if let Some(outcome) = upgrade.as_mut().and_then(|up| up.process(&mut master)) {
            if let Some(mut up) = upgrade.take() {
                poll.registry().deregister(&mut up)?;
            }
            if let UpgradeOutcome::Ready { pid } = outcome {
                // Under systemd the unit's main process is the new one
                // before this one exits.
                notify_systemd(&format!("MAINPID={pid}"))?;
                log::info!("handed over to the new master (pid {pid}); draining the old workers");
                handed_over = Some(pid);
                master.shutdown()?;
            }
        }
        while let Some(event) = master.next_event() {
            match event {
                Event::Listening { id, address } => {
                    log::info!("worker {id} listening on {address}");
                    listening.insert(id);
                    if !ready && listening.len() == workers {
                        ready = true;
                        let pid = std::process::id();
                        println!("ready addr={address} workers={workers} pid={pid}");
                        io::stdout().flush()?;
                        // In the new master of a hot upgrade: the old one
                        // may go now.
                        master.report_ready()?;
                        notify_systemd("READY=1")?;
                    }
                }
                Event::Exit { id, status, exited_after_disconnect: false, .. }
                    if status == ExitStatus::Code(EXIT_CANNOT_LISTEN)
                        && !master.is_shutting_down() =>
                {
                    log::error!("worker {id} cannot listen on {}; shutting down", args.listen);
                    failed = true;
                    master.shutdown()?;
                }
                Event::Exit { id, pid, status, exited_after_disconnect } => {
                    listening.remove(&id);
                    let how = if exited_after_disconnect { "left" } else { "died" };
                    log::info!("worker {id} (pid {pid}) {how}: {status}");
                }
                Event::CrashLoop { .. } => {
                    log::error!("workers keep dying at start-up; shutting down");
                    failed = true;
                    master.shutdown()?;
                }
                Event::Signal(Signal::SIGUSR1) => eprint!("{}", status_table(&master)),
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
                        match master.upgrade(master.target(), args.upgrade_timeout) {
                            Ok(mut up) => {
                                poll.registry().register(
                                    &mut up,
                                    mio::Token(1),
                                    mio::Interest::READABLE,
                                )?;
                                upgrade = Some(up);
                            }
                            Err(e) => log::error!("upgrade failed: {e}; this master keeps serving"),
                        }
                    }
                }
                Event::Signal(sig) => {
                    if matches!(sig, Signal::SIGINT | Signal::SIGTERM | Signal::SIGQUIT) {
                        // Leaving: a pending upgrade is called off (killed).
                        upgrade = None;
                    }
                    master.handle_signal(sig)?;
                }
                Event::AllDisconnected { forced } => {
                    if forced > 0 {
                        log::warn!("{forced} workers had to be killed");
                    }
                    log::info!("every worker has left; bye");
                    std::process::exit(if failed || forced > 0 { 1 } else { 0 });
                }
                Event::Message { id, payload, .. } => on_message(id, &payload),
                other => log::debug!("{other:?}"),
            }
        }
    }
}

/// The `SIGUSR1` table: one row per worker.
fn status_table(master: &Master) -> String {
    let mut t = format!(
        "{:>4} {:>8} {:<12} {:>9} {:>8} {:>10} {:>9} {:>9}\n",
        "id", "pid", "state", "uptime", "restarts", "heartbeat", "rss", "cpu"
    );
    for r in master.status() {
        let hb =
            r.last_heartbeat.map_or("-".to_string(), |d| format!("{:.1}s ago", d.as_secs_f64()));
        let rss =
            r.rss_bytes.map_or("-".to_string(), |b| format!("{:.1}MiB", b as f64 / 1048576.0));
        let cpu = r.cpu_time.map_or("-".to_string(), |d| format!("{:.2}s", d.as_secs_f64()));
        t += &format!(
            "{:>4} {:>8} {:<12} {:>8.1}s {:>8} {:>10} {:>9} {:>9}\n",
            r.id,
            r.pid,
            format!("{:?}", r.state),
            r.uptime.as_secs_f64(),
            r.restarts,
            hb,
            rss,
            cpu
        );
    }
    t
}
