//! Measures the master-worker channel: the round trip of a small message
//! (master to worker and back), the throughput of 1 MiB messages, and the
//! listen handshake (the worker asks for the master's socket and gets the
//! descriptor back).
//!
//! ```text
//! cargo run --release --example ipc_bench -- [--rounds N] [--size BYTES]
//! ```
//!
//! Prints one `result` line per measurement on stdout. The worker echoes
//! every message back unchanged.

#[path = "common.rs"]
mod common;

use std::io;
use std::time::{Duration, Instant};

use mio::Events;
use mio_cluster::{Event, ListenAddr, ListenOptions, Master, Role, Settings, Worker, WorkerEvent};
use std::os::fd::AsRawFd;

use common::arg;

fn main() -> io::Result<()> {
    env_logger::init();
    match mio_cluster::role() {
        Role::Master => master(),
        Role::Worker(_) => worker(),
    }
}

/// Sends `payload` to worker `id` and waits for it to come back.
fn round_trip(master: &mut Master, id: u32, payload: &[u8]) -> io::Result<()> {
    master.send(id, payload, Vec::new())?;
    loop {
        match master.wait(Some(Duration::from_secs(10)))? {
            Some(Event::Message { payload: back, .. }) => {
                assert_eq!(back.len(), payload.len());
                return Ok(());
            }
            Some(_) => {}
            None => return Err(io::Error::new(io::ErrorKind::TimedOut, "no echo in 10 s")),
        }
    }
}

fn master() -> io::Result<()> {
    let rounds = arg("--rounds", 10_000);
    let size = arg("--size", 64);
    // A socket of the master's own, opened before the master so a worker may
    // ask for it by number: the handshake then measures no bind, only the
    // request, the duplicate and its trip over the channel.
    let own = std::net::TcpListener::bind("127.0.0.1:0")?;
    let mut settings = Settings::default();
    settings.env.push(("IPC_BENCH_FD".into(), own.as_raw_fd().to_string().into()));
    let mut master = Master::new(settings)?;
    let id = master.fork()?;
    // Wait until the worker is online.
    while !matches!(master.wait(Some(Duration::from_secs(10)))?, Some(Event::Online { .. })) {}
    let small = vec![7u8; size];
    for _ in 0..1000 {
        round_trip(&mut master, id, &small)?; // warm-up
    }
    let mut rtts = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let t = Instant::now();
        round_trip(&mut master, id, &small)?;
        rtts.push(t.elapsed());
    }
    rtts.sort();
    let pct = |p: f64| rtts[((rtts.len() as f64 * p) as usize).min(rtts.len() - 1)];
    println!(
        "result rtt size={size} rounds={rounds} median_us={:.1} p99_us={:.1}",
        pct(0.5).as_secs_f64() * 1e6,
        pct(0.99).as_secs_f64() * 1e6
    );
    // Throughput: 1 MiB messages, 8 in flight, echoed back.
    let big = vec![3u8; 1 << 20];
    let total = 256;
    let t = Instant::now();
    let (mut sent, mut got) = (0, 0);
    while got < total {
        while sent < total && sent - got < 8 {
            master.send(id, &big, Vec::new())?;
            sent += 1;
        }
        match master.wait(Some(Duration::from_secs(10)))? {
            Some(Event::Message { payload, .. }) if payload.len() == big.len() => got += 1,
            Some(_) => {}
            None => return Err(io::Error::new(io::ErrorKind::TimedOut, "no echo in 10 s")),
        }
    }
    let secs = t.elapsed().as_secs_f64();
    // Each message crosses the channel twice.
    println!(
        "result throughput size=1MiB messages={total} MiB_per_s={:.0}",
        2.0 * total as f64 / secs
    );
    master.send(id, b"listen", Vec::new())?;
    loop {
        match master.wait(Some(Duration::from_secs(60)))? {
            Some(Event::Message { payload, .. }) if payload.starts_with(b"listen ") => {
                println!("result {}", String::from_utf8_lossy(&payload));
                break;
            }
            Some(_) => {}
            None => return Err(io::Error::new(io::ErrorKind::TimedOut, "no listen result")),
        }
    }
    master.disconnect_all()?;
    while !matches!(
        master.wait(Some(Duration::from_secs(10)))?,
        Some(Event::AllDisconnected { .. }) | None
    ) {}
    Ok(())
}

fn worker() -> io::Result<()> {
    let mut worker = Worker::new()?;
    let mut events = Events::with_capacity(16);
    loop {
        worker.poll(&mut events, None)?;
        while let Some(ev) = worker.next_event() {
            match ev {
                WorkerEvent::Message { payload, .. } if payload == b"listen" => {
                    let fd: i32 = std::env::var("IPC_BENCH_FD")
                        .ok()
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(-1);
                    let addr = ListenAddr::Fd(fd);
                    let mut times = Vec::with_capacity(1000);
                    for _ in 0..1000 {
                        let t = Instant::now();
                        let l = worker.listen(&addr, ListenOptions::default())?;
                        times.push(t.elapsed());
                        worker.close(l)?;
                    }
                    times.sort();
                    let text = format!(
                        "listen rounds=1000 median_us={:.1} p99_us={:.1}",
                        times[500].as_secs_f64() * 1e6,
                        times[990].as_secs_f64() * 1e6
                    );
                    worker.send(text.as_bytes(), Vec::new())?;
                }
                WorkerEvent::Message { payload, .. } => loop {
                    match worker.send(&payload, Vec::new()) {
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            worker.poll(&mut events, Some(Duration::from_millis(1)))?
                        }
                        other => break other?,
                    }
                },
                WorkerEvent::Disconnect | WorkerEvent::MasterGone => worker.exit(0),
                _ => {}
            }
        }
    }
}
