//! A TCP echo server on a cluster of workers: the crate's main example.
//!
//! ```text
//! cargo run --release --example echo -- [--workers N] [--listen ADDR]
//! ```
//!
//! The master forks N workers (default: one per CPU); each asks the master
//! for ADDR (default `127.0.0.1:7000`; also `[V6]:PORT`, port 0, or `fd:N`,
//! the master's inherited descriptor N) and accepts on the shared socket in
//! its own mio loop. When every worker listens, the master prints one line on
//! stdout:
//!
//! ```text
//! ready addr=127.0.0.1:7000 workers=4 pid=12345
//! ```
//!
//! Logs go to stderr (`RUST_LOG=debug` for more). The master supervises:
//! a worker that dies or hangs is replaced, SIGHUP restarts every worker
//! without refusing a connection, SIGTTIN/SIGTTOU scale, SIGUSR1 prints a
//! status table, SIGINT/SIGTERM shut down gracefully (`--help` for all).

use std::collections::HashSet;
use std::io::{self, Read, Write};
use std::time::Duration;

use mio::{Events, Interest, Token};
use mio_cluster::master::STANDARD_SIGNALS;
use mio_cluster::worker::IPC_TOKEN;
use mio_cluster::{
    Event, ExitStatus, Heartbeat, ListenAddr, ListenOptions, Master, Policy, Role, Settings,
    Signal, Stream, Worker, WorkerEvent,
};
use slab::Slab;

/// A worker's exit code when it cannot listen: the master then gives up
/// instead of respawning it (sysexits' EX_CONFIG).
const EXIT_CANNOT_LISTEN: i32 = 78;

const USAGE: &str = "\
usage: echo [--workers N] [--listen ADDR] [--shutdown-timeout SECS]
            [--heartbeat-timeout SECS]

  --workers N               worker processes (default: one per CPU)
  --listen ADDR             HOST:PORT, [V6]:PORT or fd:N (default 127.0.0.1:7000)
  --shutdown-timeout SECS   how long workers may take to finish their
                            connections on shutdown before they are killed (10)
  --heartbeat-timeout SECS  a worker whose loop is silent this long is killed
                            and replaced (10; 0: off)

signals to the master:
  SIGINT, SIGTERM   graceful shutdown: workers stop accepting, finish open
                    connections, exit; master exits 0 (1 if any had to be
                    killed). A second one kills every worker at once.
  SIGQUIT           kill every worker at once and exit
  SIGHUP            zero-downtime rolling restart of every worker
  SIGTTIN, SIGTTOU  one worker more, one worker less
  SIGUSR1           print a status table on stderr

A worker that dies is replaced (with backoff if it keeps dying early; after
5 early deaths in a row the master gives up and exits 1).";

struct Args {
    workers: usize,
    listen: ListenAddr,
    shutdown_timeout: Duration,
    heartbeat_timeout: Duration,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
        listen: "127.0.0.1:7000".parse().expect("default address parses"),
        shutdown_timeout: Duration::from_secs(10),
        heartbeat_timeout: Duration::from_secs(10),
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
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(args)
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) if e.is_empty() => {
            println!("{USAGE}");
            return;
        }
        Err(e) => {
            eprintln!("echo: {e}\n{USAGE}");
            std::process::exit(2);
        }
    };
    let result = match mio_cluster::role() {
        Role::Master => master(&args),
        Role::Worker(_) => worker(&args),
    };
    if let Err(e) = result {
        log::error!("{e}");
        std::process::exit(1);
    }
}

fn master(args: &Args) -> io::Result<()> {
    let heartbeat = (!args.heartbeat_timeout.is_zero()).then(|| Heartbeat {
        timeout: args.heartbeat_timeout,
        interval: (args.heartbeat_timeout / 10).max(Duration::from_millis(10)),
        ..Heartbeat::default()
    });
    let settings = Settings {
        signals: STANDARD_SIGNALS.to_vec(),
        disconnect_timeout: args.shutdown_timeout,
        heartbeat,
        ..Settings::default()
    };
    let mut master = Master::new(settings)?;
    // Keep `workers` alive: respawn with backoff, stop on a crash loop.
    master.supervise(Policy { workers: args.workers, ..Policy::default() })?;
    let mut listening = HashSet::new();
    let mut ready = false;
    let mut failed = false;
    loop {
        master.poll(None)?;
        while let Some(event) = master.next_event() {
            match event {
                Event::Listening { id, address } => {
                    log::info!("worker {id} listening on {address}");
                    listening.insert(id);
                    if !ready && listening.len() == args.workers {
                        ready = true;
                        let pid = std::process::id();
                        println!("ready addr={address} workers={} pid={pid}", args.workers);
                        io::stdout().flush()?;
                    }
                }
                Event::Exit { id, status, .. }
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
                Event::Signal(sig) => {
                    master.handle_signal(sig)?;
                }
                Event::AllDisconnected { forced } => {
                    if forced > 0 {
                        log::warn!("{forced} workers had to be killed");
                    }
                    log::info!("every worker has left; bye");
                    std::process::exit(if failed || forced > 0 { 1 } else { 0 });
                }
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

/// One client connection: bytes read and not yet echoed wait in `pending`.
struct Conn {
    stream: Stream,
    pending: Vec<u8>,
}

const LISTENER: Token = Token(usize::MAX - 2);

fn worker(args: &Args) -> io::Result<()> {
    let mut worker = Worker::new()?;
    let mut listener = match worker.listen(&args.listen, ListenOptions::default()) {
        Ok(l) => Some(l),
        Err(e) => {
            log::error!("worker {}: {e}", worker.id());
            worker.exit(EXIT_CANNOT_LISTEN);
        }
    };
    if let Some(l) = listener.as_mut() {
        worker.registry().register(l, LISTENER, Interest::READABLE)?;
    }
    let mut conns: Slab<Conn> = Slab::new();
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 64 * 1024];
    // Set when accept failed for want of resources (EMFILE...): the queue was
    // not drained, so no new readiness edge will come; retry on a timer.
    let mut retry_accept = false;
    loop {
        let timeout = retry_accept.then_some(Duration::from_millis(50));
        worker.poll(&mut events, timeout)?;
        if retry_accept {
            retry_accept = accept_all(&worker, listener.as_ref(), &mut conns)?;
        }
        for event in events.iter() {
            match event.token() {
                IPC_TOKEN => {}
                LISTENER => retry_accept = accept_all(&worker, listener.as_ref(), &mut conns)?,
                Token(key) => {
                    let done = match conns.get_mut(key) {
                        Some(conn) => serve(conn, &mut buf),
                        None => continue,
                    };
                    if done {
                        let mut conn = conns.remove(key);
                        worker.registry().deregister(&mut conn.stream)?;
                    }
                }
            }
        }
        while let Some(ev) = worker.next_event() {
            if let WorkerEvent::Disconnect = ev {
                if let Some(l) = listener.take() {
                    log::debug!(
                        "worker {}: closing listener, {} open connections",
                        worker.id(),
                        conns.len()
                    );
                    worker.close(l)?;
                }
            }
        }
        if worker.is_leaving() && conns.is_empty() {
            worker.exit(0);
        }
    }
}

/// Accepts every queued connection. Returns true if it had to stop early
/// (the caller retries later).
fn accept_all(
    worker: &Worker,
    listener: Option<&mio_cluster::Listener>,
    conns: &mut Slab<Conn>,
) -> io::Result<bool> {
    let Some(listener) = listener else { return Ok(false) };
    loop {
        match listener.accept() {
            Ok(mut stream) => {
                let _ = stream.set_nodelay(true);
                let entry = conns.vacant_entry();
                worker.registry().register(
                    &mut stream,
                    Token(entry.key()),
                    Interest::READABLE | Interest::WRITABLE,
                )?;
                entry.insert(Conn { stream, pending: Vec::new() });
            }
            // The queue is empty (or another worker took the connection).
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            // A connection reset before we accepted it: try the next one.
            Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => continue,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            // Out of descriptors and the like: log, and retry on a timer.
            Err(e) => {
                log::warn!("accept: {e}");
                return Ok(true);
            }
        }
    }
}

/// Echoes what the connection sent. Returns true when it is finished.
fn serve(conn: &mut Conn, buf: &mut [u8]) -> bool {
    loop {
        // Write out what is pending before reading more (backpressure).
        while !conn.pending.is_empty() {
            match conn.stream.write(&conn.pending) {
                Ok(n) => {
                    conn.pending.drain(..n);
                }
                // The peer's window is full: wait for a writable event.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return true,
            }
        }
        match conn.stream.read(buf) {
            Ok(0) => return true,
            Ok(n) => match conn.stream.write(&buf[..n]) {
                Ok(m) => conn.pending.extend_from_slice(&buf[m..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    conn.pending.extend_from_slice(&buf[..n])
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                    conn.pending.extend_from_slice(&buf[..n])
                }
                Err(_) => return true,
            },
            // Everything the peer sent is echoed: wait for a readable event.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return true,
        }
    }
}
