//! What every example shares: the command line (`--workers N --listen ADDR
//! ...`), logging through `env_logger`, and the supervising master that
//! prints the `ready` line. Each example only writes its worker.

#![allow(dead_code)]

pub mod echo_conn;
pub mod http;

use std::io::{self, Write};
use std::net::SocketAddr;
use std::time::Duration;

use mio_cluster::host::init::Init;
use mio_cluster::host::manager::{Manager, ManagerEvent, EXIT_CANNOT_LISTEN};
use mio_cluster::{Balance, Event, Heartbeat, ListenAddr, Policy, Role, Settings, WorkerId};

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
                            draining), GET /live (200 while the loop turns),
                            GET /metrics (Prometheus text)
  --subreaper               reap every orphan among the descendants and wait
                            for them at shutdown (always on as PID 1)
  --upgrade-timeout SECS    how long a new master (SIGUSR2) may take to have
                            all its workers listening before it is killed
                            and this one keeps serving (30)
  --max-worker-connections N
                            replace a worker once it accepted N connections,
                            plus up to 10% more drawn for each worker; the
                            new worker listens before the old one leaves
  --max-worker-rss MIB      replace a worker whose resident memory stayed
                            above MIB MiB for 3 checks in a row (1 a second)

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
    pub max_worker_connections: Option<u64>,
    pub max_worker_rss_mib: Option<u64>,
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
        max_worker_connections: None,
        max_worker_rss_mib: None,
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
            "--shutdown-timeout" => args.shutdown_timeout = seconds(&flag, &value()?)?,
            "--heartbeat-timeout" => args.heartbeat_timeout = seconds(&flag, &value()?)?,
            "--upgrade-timeout" => args.upgrade_timeout = seconds(&flag, &value()?)?,
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
            "--shutdown-linger" => args.shutdown_linger = seconds(&flag, &value()?)?,
            "--health" => {
                args.health = Some(value()?.parse().map_err(|e| format!("--health: {e}"))?)
            }
            "--subreaper" => args.subreaper = true,
            "--max-worker-connections" => {
                args.max_worker_connections = Some(count(&flag, &value()?)?)
            }
            "--max-worker-rss" => args.max_worker_rss_mib = Some(count(&flag, &value()?)?),
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if args.max_worker_connections.is_some() && args.balance != Balance::Even {
        return Err("--max-worker-connections counts on the accept board, which only \
                    --balance even keeps"
            .into());
    }
    Ok(args)
}

/// A count of at least 1, as a flag's value.
fn count(flag: &str, value: &str) -> Result<u64, String> {
    match value.parse::<u64>() {
        Ok(n) if n > 0 => Ok(n),
        Ok(_) => Err(format!("{flag}: at least 1")),
        Err(e) => Err(format!("{flag}: {value:?}: {e}")),
    }
}

/// A number of seconds, as a flag's value: finite and not negative (a
/// fraction is fine). One too long to add to the clock means "never" in the
/// library.
fn seconds(flag: &str, value: &str) -> Result<Duration, String> {
    let secs: f64 = value.parse().map_err(|e| format!("{flag}: {value:?}: {e}"))?;
    Duration::try_from_secs_f64(secs)
        .map_err(|_| format!("{flag}: {value:?} is not a number of seconds (0 or more, finite)"))
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
    let mut settings = Settings {
        disconnect_timeout: args.shutdown_timeout,
        heartbeat,
        subreaper: args.subreaper,
        ..Settings::default()
    };
    // As a container's PID 1: PID 1 stays a minimal init (it forwards
    // signals, follows hot upgrades, reaps orphans) and the master is its
    // child, so that SIGUSR2 works there too.
    if let Some(init) = Init::split(&mut settings)? {
        std::process::exit(init.run()?);
    }
    let mut builder = Manager::builder()
        .settings(settings)
        .policy(Policy {
            workers: args.workers,
            max_worker_connections: args.max_worker_connections,
            max_worker_connections_jitter: args.max_worker_connections.map_or(0, |n| n / 10),
            max_worker_rss: args.max_worker_rss_mib.map(|m| m.saturating_mul(1 << 20)),
            ..Policy::default()
        })
        .linger(args.shutdown_linger)
        .upgrade_timeout(args.upgrade_timeout);
    if let Some(addr) = args.health {
        builder = builder.health(addr);
    }
    if let ListenAddr::Named(name) = &args.listen {
        // A name systemd did not pass: say which it did, before any worker.
        builder = builder.require_socket(name);
    }
    let manager = builder.build()?;
    let code = manager.run(|_, event| match event {
        ManagerEvent::Ready { address, workers, pid, .. } => {
            println!("ready addr={address} workers={workers} pid={pid}");
            let _ = io::stdout().flush();
        }
        ManagerEvent::Master(Event::Message { id, payload, .. }) => on_message(id, &payload),
        ManagerEvent::Master(other) => log::debug!("{other:?}"),
        _ => {}
    })?;
    std::process::exit(code)
}
