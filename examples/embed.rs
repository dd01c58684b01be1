//! The master inside an application's own mio loop: the application's
//! `Poll` holds the master and an admin Unix socket of its own.
//!
//! ```text
//! cargo run --example embed -- [--workers N] [--listen ADDR] [--admin PATH]
//! ```
//!
//! The workers serve TCP echo on ADDR (default `127.0.0.1:7000`). When every
//! worker listens, the master prints `ready addr=<address> workers=<N>
//! pid=<pid>` on stdout, as `echo` does. The admin socket (default
//! `embed-admin.sock` in the working directory) takes one command a line;
//! each reply ends with a line that starts with `ok` or `error`:
//!
//! ```text
//! $ socat - UNIX-CONNECT:embed-admin.sock
//! status
//!   id      pid state         uptime restarts
//!    1    12345 Listening       3.2s        0
//! ok 1 workers, target 1
//! scale 3
//! ok target 3
//! ```
//!
//! The loop below is the whole embedding contract: wait no longer than
//! `master.timeout()`, call `master.process()` after every wait, then take
//! the master's events. The master's deadlines (a worker that outlives its
//! disconnect timeout is killed, a dead worker is replaced after its
//! backoff, heartbeats are checked) fire on time with nothing else waking
//! the loop. SIGINT or SIGTERM shut down gracefully. Under systemd
//! (`NOTIFY_SOCKET`), the same loop notifies readiness, reloads, stops and
//! the watchdog (`mio_cluster::host::systemd::Service`).

use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::time::Duration;

use echo_conn::Conn;
use mio::net::{UnixListener, UnixStream};
use mio::{Events, Interest, Poll, Token};
use mio_cluster::supervisor::STANDARD_SIGNALS;
use mio_cluster::worker::{BELL_TOKEN, IPC_TOKEN};
use mio_cluster::{
    Event, Heartbeat, ListenAddr, ListenOptions, Master, Policy, Role, Settings, Supervisor,
    Worker, WorkerEvent,
};
use slab::Slab;

#[path = "common/echo_conn.rs"]
mod echo_conn;

const USAGE: &str = "\
usage: embed [--workers N] [--listen ADDR] [--admin PATH]
             [--shutdown-timeout SECS] [--heartbeat-timeout SECS]

A TCP echo cluster whose master runs inside the application's own mio loop,
next to an admin Unix socket (commands: `status`, `scale N`).

  --workers N               worker processes (default 2)
  --listen ADDR             HOST:PORT, [V6]:PORT, fd:N or unix:PATH
                            (default 127.0.0.1:7000)
  --admin PATH              the admin socket (default embed-admin.sock)
  --shutdown-timeout SECS   how long a leaving worker may take to finish its
                            connections before it is killed (10)
  --heartbeat-timeout SECS  a worker silent this long is replaced (10; 0: off)";

struct Args {
    workers: usize,
    listen: ListenAddr,
    admin: PathBuf,
    shutdown_timeout: Duration,
    heartbeat_timeout: Duration,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        workers: 2,
        listen: "127.0.0.1:7000".parse().expect("default address parses"),
        admin: PathBuf::from("embed-admin.sock"),
        shutdown_timeout: Duration::from_secs(10),
        heartbeat_timeout: Duration::from_secs(10),
    };
    let secs = |flag: &str, v: String| -> Result<Duration, String> {
        let s: f64 = v.parse().map_err(|e| format!("{flag}: {e}"))?;
        Duration::try_from_secs_f64(s).map_err(|e| format!("{flag}: {e}"))
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
            "--admin" => args.admin = PathBuf::from(value()?),
            "--shutdown-timeout" => args.shutdown_timeout = secs(&flag, value()?)?,
            "--heartbeat-timeout" => args.heartbeat_timeout = secs(&flag, value()?)?,
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
            eprintln!("embed: {e}\n{USAGE}");
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

// ---- The application: its loop, its admin socket, and the master in it.

const MASTER: Token = Token(0);
const ADMIN: Token = Token(1);
/// Admin connections: `CLIENTS + slab key`.
const CLIENTS: usize = 2;

/// One admin connection: a line protocol.
struct Client {
    stream: UnixStream,
    input: Vec<u8>,
    output: Vec<u8>,
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
    // systemd's notification socket, if set (read before any fork).
    let mut service =
        mio_cluster::host::systemd::Service::from_env(args.workers, heartbeat.as_ref())?;
    let mut master = Master::new(settings)?;
    // Supervision is a layer over the master: it keeps the pool.
    let mut supervisor = Supervisor::new(Policy { workers: args.workers, ..Policy::default() });
    supervisor.start(&mut master)?;

    let mut poll = Poll::new()?;
    poll.registry().register(&mut master, MASTER, Interest::READABLE)?;
    // A socket left by an earlier run is replaced.
    let _ = std::fs::remove_file(&args.admin);
    let mut admin = UnixListener::bind(&args.admin)?;
    poll.registry().register(&mut admin, ADMIN, Interest::READABLE)?;
    log::info!("admin socket at {}", args.admin.display());

    let mut clients: Slab<Client> = Slab::new();
    let mut events = Events::with_capacity(64);
    loop {
        // 1. Wait, never past the master's (or the supervisor's) next
        //    deadline (nor the watchdog's, under systemd).
        let timeout = match (supervisor.timeout(&master), service.timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        match poll.poll(&mut events, timeout) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            res => res?,
        }
        // 2. The application's own sources.
        for event in events.iter() {
            match event.token() {
                MASTER => {}
                ADMIN => accept_clients(&poll, &admin, &mut clients)?,
                Token(t) => {
                    let key = t - CLIENTS;
                    let open = match clients.get_mut(key) {
                        Some(c) => serve_client(c, &mut master, &mut supervisor),
                        None => continue,
                    };
                    if !open {
                        let mut c = clients.remove(key);
                        poll.registry().deregister(&mut c.stream)?;
                    }
                }
            }
        }
        // 3. One turn of the master and the supervisor, then their events.
        supervisor.process(&mut master)?;
        while let Some(event) = supervisor.next_event(&mut master) {
            let now_ready = service.on_event(&master, &event);
            match event {
                Event::Listening { address, .. } => {
                    if now_ready {
                        let pid = std::process::id();
                        println!("ready addr={address} workers={} pid={pid}", args.workers);
                        io::stdout().flush()?;
                    }
                }
                Event::Exit { id, pid, status, exited_after_disconnect, .. } => {
                    let how = if exited_after_disconnect { "left" } else { "died" };
                    log::info!("worker {id} (pid {pid}) {how}: {status}");
                }
                Event::CrashLoop { .. } => {
                    log::error!("workers keep dying at start-up; shutting down");
                    service.stopping();
                    supervisor.shutdown(&mut master)?;
                }
                Event::Signal(sig) => {
                    supervisor.handle_signal(&mut master, sig)?;
                }
                Event::AllDisconnected { forced, .. } => {
                    let _ = std::fs::remove_file(&args.admin);
                    log::info!("every worker has left ({forced} killed); bye");
                    std::process::exit(if forced > 0 { 1 } else { 0 });
                }
                other => log::debug!("{other:?}"),
            }
        }
        // 4. Under systemd: STATUS= and the watchdog's ping.
        service.tick(&master);
    }
}

fn accept_clients(poll: &Poll, admin: &UnixListener, clients: &mut Slab<Client>) -> io::Result<()> {
    loop {
        match admin.accept() {
            Ok((mut stream, _)) => {
                let entry = clients.vacant_entry();
                poll.registry().register(
                    &mut stream,
                    Token(CLIENTS + entry.key()),
                    Interest::READABLE | Interest::WRITABLE,
                )?;
                entry.insert(Client { stream, input: Vec::new(), output: Vec::new() });
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                log::warn!("admin accept: {e}");
                return Ok(());
            }
        }
    }
}

/// Reads the client's commands, answers each whole line, writes what it
/// can. Returns false once the client is gone.
fn serve_client(c: &mut Client, master: &mut Master, supervisor: &mut Supervisor) -> bool {
    let mut buf = [0u8; 4096];
    let mut open = true;
    loop {
        match c.stream.read(&mut buf) {
            Ok(0) => {
                open = false;
                break;
            }
            Ok(n) => c.input.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
        if c.input.len() > 64 * 1024 {
            // No command is that long.
            return false;
        }
    }
    while let Some(end) = c.input.iter().position(|&b| b == b'\n') {
        let line: Vec<u8> = c.input.drain(..=end).collect();
        let reply = command(master, supervisor, String::from_utf8_lossy(&line).trim());
        c.output.extend_from_slice(reply.as_bytes());
    }
    while !c.output.is_empty() {
        match c.stream.write(&c.output) {
            Ok(n) => {
                c.output.drain(..n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    open || !c.output.is_empty()
}

/// One admin command; the reply's last line starts with `ok` or `error`.
fn command(master: &mut Master, supervisor: &mut Supervisor, line: &str) -> String {
    let mut words = line.split_whitespace();
    match (words.next(), words.next(), words.next()) {
        (Some("status"), None, _) => {
            let rows = supervisor.status(master);
            let mut t = format!(
                "{:>4} {:>8} {:<12} {:>7} {:>8}\n",
                "id", "pid", "state", "uptime", "restarts"
            );
            for r in &rows {
                t += &format!(
                    "{:>4} {:>8} {:<12} {:>6.1}s {:>8}\n",
                    r.id,
                    r.pid,
                    format!("{:?}", r.state),
                    r.uptime.as_secs_f64(),
                    r.restarts.unwrap_or(0)
                );
            }
            let target = supervisor.target();
            t + &format!("ok {} workers, target {target}\n", rows.len())
        }
        (Some("scale"), Some(n), None) => match n.parse::<usize>() {
            Ok(n) => match supervisor.set_target(master, n) {
                Ok(()) => format!("ok target {n}\n"),
                Err(e) => format!("error: scale {n}: {e}\n"),
            },
            Err(e) => format!("error: scale: {n:?} is not a number of workers: {e}\n"),
        },
        _ => format!("error: unknown command {line:?} (status, scale N)\n"),
    }
}

// ---- A worker: TCP echo in its own mio loop.

const LISTENER: Token = Token(usize::MAX - 2);

fn worker(args: &Args) -> io::Result<()> {
    let mut worker = Worker::new()?;
    let mut listener = match worker.listen(&args.listen, ListenOptions::default()) {
        Ok(l) => Some(l),
        // Asked to leave before it listened.
        Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => worker.exit(0),
        Err(e) => {
            log::error!("worker {}: {e}", worker.id());
            worker.exit(1)
        }
    };
    if let Some(l) = listener.as_mut() {
        worker.register_listener(l, LISTENER)?;
    }
    let mut conns: Slab<Conn> = Slab::new();
    let mut events = Events::with_capacity(256);
    let mut buf = vec![0u8; 64 * 1024];
    // Set when accept failed for want of resources (EMFILE...): no new edge
    // will come for the connections left queued, so retry on a timer.
    let mut retry = false;
    loop {
        worker.poll(&mut events, retry.then_some(Duration::from_millis(50)))?;
        if retry {
            retry = accept(&mut worker, listener.as_ref(), &mut conns)?;
        }
        for event in events.iter() {
            match event.token() {
                IPC_TOKEN | BELL_TOKEN => {}
                LISTENER => retry = accept(&mut worker, listener.as_ref(), &mut conns)?,
                Token(key) => echo_conn::ready(worker.registry(), &mut conns, key, &mut buf)?,
            }
        }
        while let Some(ev) = worker.next_event() {
            if let WorkerEvent::Disconnect = ev {
                // Stop accepting; finish the open connections, then leave.
                if let Some(l) = listener.take() {
                    worker.close(l)?;
                }
            }
        }
        if worker.is_leaving() && conns.is_empty() {
            worker.exit(0);
        }
    }
}

/// Accepts what the listener's balance lets this worker take. Returns true
/// if it stopped on an error (retried on a timer).
fn accept(
    worker: &mut Worker,
    listener: Option<&mio_cluster::Listener>,
    conns: &mut Slab<Conn>,
) -> io::Result<bool> {
    let Some(listener) = listener else { return Ok(false) };
    loop {
        match worker.accept(listener) {
            Ok(stream) => {
                echo_conn::add(worker.registry(), conns, stream)?;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                log::warn!("accept: {e}");
                return Ok(true);
            }
        }
    }
}
