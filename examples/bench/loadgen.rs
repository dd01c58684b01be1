//! A load generator for the echo servers (ours, Node's, the single-process
//! reference), efficient enough not to be the bottleneck: each client thread
//! drives its connections from one mio loop.
//!
//! ```text
//! cargo run --release --example loadgen -- --addr 127.0.0.1:7000 [--mode echo|connect]
//!     [--connections 64] [--size 64] [--duration 10] [--threads 1] [--spread-pid PID]
//!     [--ramp-ms MS]
//! ```
//!
//! - `echo`: C persistent connections; each sends S bytes, waits for the whole
//!   echo, repeats.
//! - `connect`: C slots; each connects, sends S bytes, reads the echo, closes
//!   (with `SO_LINGER` 0, so no TIME_WAIT exhausts the ports), repeats.
//!
//! Prints one line: `result mode=.. conns=.. size=.. secs=.. requests=..
//! rps=.. p50_us=.. p99_us=.. p999_us=.. errors=..`. With `--spread-pid`
//! (the master's pid, from the `ready` line) in echo mode it also prints
//! `spread workers=N counts=a,b,.. jain=J`: which worker process owns the
//! server side of each connection, found through /proc, with no change to
//! the echo protocol. `--ramp-ms` opens the connections that far apart
//! instead of all at once.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

struct Opts {
    addr: SocketAddr,
    connect_mode: bool,
    conns: usize,
    size: usize,
    duration: Duration,
    threads: usize,
    spread_pid: Option<u32>,
    /// Pause between opening two connections (0: all at once, a burst).
    ramp: Duration,
}

fn opts() -> Opts {
    let args: Vec<String> = std::env::args().collect();
    let get =
        |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let num = |name: &str, d: usize| get(name).and_then(|v| v.parse().ok()).unwrap_or(d);
    Opts {
        addr: get("--addr")
            .unwrap_or_else(|| "127.0.0.1:7000".into())
            .parse()
            .expect("--addr HOST:PORT"),
        connect_mode: get("--mode").as_deref() == Some("connect"),
        conns: num("--connections", 64),
        size: num("--size", 64),
        duration: Duration::from_secs_f64(
            get("--duration").and_then(|v| v.parse().ok()).unwrap_or(10.0),
        ),
        threads: num("--threads", 1).max(1),
        spread_pid: get("--spread-pid").and_then(|v| v.parse().ok()),
        ramp: Duration::from_micros(
            (get("--ramp-ms").and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0) * 1000.0) as u64,
        ),
    }
}

struct Conn {
    stream: Option<TcpStream>,
    sent: usize,
    got: usize,
    started: Instant,
}

struct Outcome {
    latencies_ns: Vec<u64>,
    errors: u64,
    local_ports: Vec<u16>,
}

fn main() {
    let o = opts();
    let per = o.conns.div_ceil(o.threads);
    let (ports_tx, ports_rx) = std::sync::mpsc::channel();
    let start = Instant::now();
    let handles: Vec<_> = (0..o.threads)
        .map(|t| {
            let n = per.min(o.conns - (t * per).min(o.conns));
            let (addr, size, dur, connect_mode, ramp) =
                (o.addr, o.size, o.duration, o.connect_mode, o.ramp);
            let tx = ports_tx.clone();
            std::thread::spawn(move || run(addr, n, size, dur, connect_mode, ramp, tx))
        })
        .collect();
    drop(ports_tx);
    let spread = o.spread_pid.filter(|_| !o.connect_mode).map(|pid| {
        let ports: Vec<u16> = ports_rx.iter().take(o.threads).flatten().collect();
        spread(pid, o.addr.port(), &ports)
    });
    let mut lat = Vec::new();
    let mut errors = 0;
    for h in handles {
        let out = h.join().expect("client thread");
        lat.extend(out.latencies_ns);
        errors += out.errors;
        let _ = out.local_ports;
    }
    let secs = start.elapsed().as_secs_f64();
    lat.sort_unstable();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0) as f64
            / 1e3
    };
    println!(
        "result mode={} conns={} size={} secs={:.1} requests={} rps={:.0} p50_us={:.1} p99_us={:.1} p999_us={:.1} errors={errors}",
        if o.connect_mode { "connect" } else { "echo" },
        o.conns,
        o.size,
        secs,
        lat.len(),
        lat.len() as f64 / o.duration.as_secs_f64(),
        pct(0.5),
        pct(0.99),
        pct(0.999)
    );
    if let Some((counts, jain)) = spread {
        let list: Vec<String> = counts.iter().map(|c| c.to_string()).collect();
        println!("spread workers={} counts={} jain={jain:.3}", counts.len(), list.join(","));
    }
}

fn open(addr: SocketAddr, poll: &Poll, token: Token) -> io::Result<TcpStream> {
    let mut s = TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    poll.registry().register(&mut s, token, Interest::READABLE | Interest::WRITABLE)?;
    Ok(s)
}

fn run(
    addr: SocketAddr,
    n: usize,
    size: usize,
    dur: Duration,
    connect_mode: bool,
    ramp: Duration,
    ports: std::sync::mpsc::Sender<Vec<u16>>,
) -> Outcome {
    let mut poll = Poll::new().expect("poll");
    let mut events = Events::with_capacity(1024);
    let msg = vec![b'x'; size];
    let mut buf = vec![0u8; size.max(4096)];
    let mut out =
        Outcome { latencies_ns: Vec::with_capacity(1 << 20), errors: 0, local_ports: Vec::new() };
    let mut conns: Vec<Conn> = (0..n)
        .map(|i| {
            if i > 0 && !ramp.is_zero() {
                std::thread::sleep(ramp);
            }
            Conn {
                stream: open(addr, &poll, Token(i)).ok(),
                sent: 0,
                got: 0,
                started: Instant::now(),
            }
        })
        .collect();
    if !connect_mode {
        // Wait for every connection to be up, then report the local ports.
        let deadline = Instant::now() + Duration::from_secs(10);
        while conns.iter().any(|c| c.stream.as_ref().is_some_and(|s| s.peer_addr().is_err()))
            && Instant::now() < deadline
        {
            let _ = poll.poll(&mut events, Some(Duration::from_millis(10)));
        }
        out.local_ports = conns
            .iter()
            .filter_map(|c| c.stream.as_ref()?.local_addr().ok().map(|a| a.port()))
            .collect();
        let _ = ports.send(out.local_ports.clone());
    }
    let end = Instant::now() + dur;
    // Kick every connection: edge-triggered writes need a first attempt.
    let mut pending: Vec<usize> = (0..n).collect();
    while Instant::now() < end {
        for i in pending.drain(..) {
            step(&mut conns[i], i, &msg, &mut buf, &mut out, addr, &poll, connect_mode);
        }
        if poll.poll(&mut events, Some(Duration::from_millis(50))).is_err() {
            continue;
        }
        for ev in events.iter() {
            pending.push(ev.token().0);
        }
    }
    out
}

/// Advances one connection as far as it goes without blocking.
#[allow(clippy::too_many_arguments)]
fn step(
    c: &mut Conn,
    i: usize,
    msg: &[u8],
    buf: &mut [u8],
    out: &mut Outcome,
    addr: SocketAddr,
    poll: &Poll,
    connect_mode: bool,
) {
    loop {
        let Some(s) = c.stream.as_mut() else {
            // Reconnect (connect mode, or after an error).
            match open(addr, poll, Token(i)) {
                Ok(s) => {
                    c.stream = Some(s);
                    c.sent = 0;
                    c.got = 0;
                    c.started = Instant::now();
                    continue;
                }
                Err(_) => {
                    out.errors += 1;
                    return;
                }
            }
        };
        if c.sent < msg.len() {
            match s.write(&msg[c.sent..]) {
                Ok(k) => c.sent += k,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                // Not connected yet: wait for the writable event.
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
                Err(_) => return fail(c, out, poll),
            }
            continue;
        }
        match s.read(&mut buf[..msg.len() - c.got]) {
            Ok(0) => return fail(c, out, poll),
            Ok(k) => {
                c.got += k;
                if c.got == msg.len() {
                    out.latencies_ns.push(c.started.elapsed().as_nanos() as u64);
                    c.sent = 0;
                    c.got = 0;
                    c.started = Instant::now();
                    if connect_mode {
                        close(c, poll);
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(_) => return fail(c, out, poll),
        }
    }
}

fn close(c: &mut Conn, poll: &Poll) {
    if let Some(mut s) = c.stream.take() {
        let _ = poll.registry().deregister(&mut s);
        // RST instead of FIN: no TIME_WAIT to exhaust ephemeral ports.
        let _ = nix::sys::socket::setsockopt(
            &s,
            nix::sys::socket::sockopt::Linger,
            &libc::linger { l_onoff: 1, l_linger: 0 },
        );
    }
}

fn fail(c: &mut Conn, out: &mut Outcome, poll: &Poll) {
    out.errors += 1;
    close(c, poll);
}

/// Connections per worker process of `master`, from /proc: the server side
/// of each client connection (local port = server port, remote port = the
/// client's) is a socket inode; the worker holding that inode serves it.
fn spread(master: u32, server_port: u16, client_ports: &[u16]) -> (Vec<usize>, f64) {
    std::thread::sleep(Duration::from_millis(300)); // let the workers accept
    let mut inode_of: HashMap<u16, String> = HashMap::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else { continue };
        let needle = format!(":{server_port:04X} ");
        for line in text.lines().skip(1).filter(|l| l.contains(&needle)) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 10 {
                continue;
            }
            let port = |s: &str| u16::from_str_radix(s.rsplit(':').next().unwrap_or(""), 16).ok();
            // Established server-side sockets only: TIME_WAIT leftovers of
            // earlier connections may share the client port, with inode 0.
            if port(f[1]) == Some(server_port) && f[3] == "01" && f[9] != "0" {
                if let Some(rp) = port(f[2]) {
                    inode_of.insert(rp, f[9].to_string());
                }
            }
        }
    }
    let wanted: HashMap<String, u16> = client_ports
        .iter()
        .filter_map(|p| inode_of.get(p).map(|i| (format!("socket:[{i}]"), *p)))
        .collect();
    let children: Vec<u32> =
        std::fs::read_to_string(format!("/proc/{master}/task/{master}/children"))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
    // A process with no children serves alone (the single-process reference).
    let servers = if children.is_empty() { vec![master] } else { children };
    let counts: Vec<usize> = servers
        .iter()
        .map(|pid| {
            std::fs::read_dir(format!("/proc/{pid}/fd"))
                .map(|d| {
                    d.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                        .filter(|t| wanted.contains_key(&t.to_string_lossy().to_string()))
                        .count()
                })
                .unwrap_or(0)
        })
        .collect();
    let sum: f64 = counts.iter().sum::<usize>() as f64;
    let sq: f64 = counts.iter().map(|c| (*c as f64).powi(2)).sum();
    let jain = if sq == 0.0 { 0.0 } else { sum * sum / (counts.len() as f64 * sq) };
    (counts, jain)
}
