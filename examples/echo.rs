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
//! Logs go to stderr (`RUST_LOG=debug` for more). A worker that dies is
//! replaced. SIGINT or SIGTERM: every worker stops accepting, finishes its
//! open connections and exits, then the master exits 0; a second signal
//! kills the workers at once and the master exits 1.

use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Token};
use mio_cluster::worker::IPC_TOKEN;
use mio_cluster::{
    Event, ExitStatus, ListenAddr, ListenOptions, Master, Role, Settings, Signal, Worker,
    WorkerEvent,
};
use slab::Slab;

/// A worker's exit code when it cannot listen: the master then gives up
/// instead of respawning it (sysexits' EX_CONFIG).
const EXIT_CANNOT_LISTEN: i32 = 78;

const USAGE: &str = "\
usage: echo [--workers N] [--listen ADDR] [--shutdown-timeout SECS]

  --workers N             worker processes (default: one per CPU)
  --listen ADDR           HOST:PORT, [V6]:PORT or fd:N (default 127.0.0.1:7000)
  --shutdown-timeout SECS how long workers may take to finish their
                          connections on shutdown before they are killed (10)

signals (to the master): SIGINT, SIGTERM  graceful shutdown (twice: at once)";

struct Args {
    workers: usize,
    listen: ListenAddr,
    shutdown_timeout: Duration,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
        listen: "127.0.0.1:7000".parse().expect("default address parses"),
        shutdown_timeout: Duration::from_secs(10),
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
    let settings = Settings {
        signals: vec![Signal::SIGINT, Signal::SIGTERM],
        disconnect_timeout: args.shutdown_timeout,
        ..Settings::default()
    };
    let mut master = Master::new(settings)?;
    for _ in 0..args.workers {
        master.fork()?;
    }
    let mut listening = std::collections::HashSet::new();
    let mut ready = false;
    let mut shutting_down = false;
    let mut failed = false;
    // Respawns wait a little after a fast crash, so a worker that cannot
    // start does not make the master spin.
    let mut respawns: Vec<Instant> = Vec::new();
    let mut delay = Duration::from_millis(100);
    loop {
        let now = Instant::now();
        let due = respawns.iter().filter(|t| **t <= now).count();
        respawns.retain(|t| *t > now);
        for _ in 0..due {
            if !shutting_down {
                master.fork()?;
            }
        }
        let timeout = respawns.iter().min().map(|t| t.saturating_duration_since(now));
        let Some(event) = master.wait(timeout)? else {
            continue;
        };
        match event {
            Event::Listening { id, address } => {
                log::info!("worker {id} listening on {address}");
                listening.insert(id);
                if !ready && listening.len() == args.workers {
                    ready = true;
                    println!(
                        "ready addr={address} workers={} pid={}",
                        args.workers,
                        std::process::id()
                    );
                    io::stdout().flush()?;
                }
            }
            Event::Exit { id, pid, status, exited_after_disconnect } => {
                listening.remove(&id);
                if status == ExitStatus::Code(EXIT_CANNOT_LISTEN) && !shutting_down {
                    log::error!("worker {id} cannot listen on {}; shutting down", args.listen);
                    failed = true;
                    shutting_down = true;
                    master.disconnect_all()?;
                } else if exited_after_disconnect || shutting_down {
                    log::info!("worker {id} (pid {pid}) left: {status}");
                } else {
                    log::warn!(
                        "worker {id} (pid {pid}) died: {status}; starting a new one in {delay:?}"
                    );
                    respawns.push(Instant::now() + delay);
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
            Event::Online { .. } => delay = Duration::from_millis(100).max(delay / 2),
            Event::Signal(sig) if shutting_down => {
                log::warn!("{sig} again: killing every worker now");
                for w in master.workers().collect::<Vec<_>>() {
                    let _ = master.kill(w.id, Signal::SIGKILL);
                }
                std::process::exit(1);
            }
            Event::Signal(sig) => {
                log::info!("{sig}: shutting down gracefully");
                shutting_down = true;
                master.disconnect_all()?;
            }
            Event::AllDisconnected if failed => std::process::exit(1),
            Event::AllDisconnected => {
                log::info!("every worker has left; bye");
                return Ok(());
            }
            other => log::debug!("{other:?}"),
        }
    }
}

/// One client connection: bytes read and not yet echoed wait in `pending`.
struct Conn {
    stream: TcpStream,
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
    loop {
        worker.poll(&mut events, None)?;
        for event in events.iter() {
            match event.token() {
                IPC_TOKEN => {}
                LISTENER => accept_all(&worker, listener.as_ref(), &mut conns)?,
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

fn accept_all(
    worker: &Worker,
    listener: Option<&mio_cluster::Listener>,
    conns: &mut Slab<Conn>,
) -> io::Result<()> {
    let Some(listener) = listener else {
        return Ok(());
    };
    loop {
        match listener.accept() {
            Ok((mut stream, _)) => {
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
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            // A connection reset before we accepted it: try the next one.
            Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => continue,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            // Out of descriptors and the like: log and wait for the next event.
            Err(e) => {
                log::warn!("accept: {e}");
                return Ok(());
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
