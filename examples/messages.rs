//! Messages between workers and the master: each worker greets its clients
//! (`hello from worker N`) and reports how many it served to the master, at
//! most ten times a second; the master adds the reports up and logs the
//! total.
//!
//! ```text
//! cargo run --release --example messages -- --workers 2 --listen 127.0.0.1:7001
//! ```
//!
//! Same flags, `ready` line, signals and supervision as `echo`.

use std::collections::HashMap;
use std::io::{self, Write};
use std::time::{Duration, Instant};

use common::Args;
use mio::{Events, Token};
use mio_cluster::{ListenOptions, Worker, WorkerEvent};

mod common;

fn main() {
    // The master's side: a message is "served N", the worker's running count.
    let mut counts: HashMap<u32, u64> = HashMap::new();
    common::run(
        "messages",
        "Workers greet clients and report counts to the master.",
        worker,
        move |id, payload| {
            let text = String::from_utf8_lossy(payload);
            if let Some(n) = text.strip_prefix("served ").and_then(|n| n.parse().ok()) {
                counts.insert(id, n);
                log::info!("worker {id} served {n}; all workers: {}", counts.values().sum::<u64>());
            }
        },
    );
}

const LISTENER: Token = Token(0);
const REPORT_EVERY: Duration = Duration::from_millis(100);

fn worker(args: &Args) -> io::Result<()> {
    let mut worker = Worker::new()?;
    let opts = ListenOptions { balance: args.balance, ..ListenOptions::default() };
    let mut listener = match worker.listen(&args.listen, opts) {
        Ok(l) => l,
        Err(e) => common::cannot_listen(worker, e),
    };
    worker.register_listener(&mut listener, LISTENER)?;
    let greeting = format!("hello from worker {}\n", worker.id());
    let mut events = Events::with_capacity(64);
    let (mut served, mut reported) = (0u64, 0u64);
    let mut last_report = Instant::now();
    loop {
        // Wake up for the next report only when there is something to report.
        let timeout =
            (served != reported).then(|| REPORT_EVERY.saturating_sub(last_report.elapsed()));
        worker.poll(&mut events, timeout)?;
        // Greet and close every queued connection (a short write is fine
        // for a one-line greeting on a fresh socket).
        while let Ok(mut stream) = worker.accept(&listener) {
            let _ = stream.write(greeting.as_bytes());
            served += 1;
        }
        if served != reported && last_report.elapsed() >= REPORT_EVERY {
            // A message to the master: bytes, in our own encoding.
            match worker.send(format!("served {served}").as_bytes(), Vec::new()) {
                Ok(()) => reported = served,
                // The channel is full: try again at the next report.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // The master is gone: WorkerEvent::MasterGone follows.
                Err(e) if e.kind() == io::ErrorKind::NotConnected => {}
                Err(e) => return Err(e),
            }
            last_report = Instant::now();
        }
        match worker.next_event() {
            Some(WorkerEvent::Disconnect) => {
                worker.close(listener)?;
                if served != reported {
                    let _ = worker.send(format!("served {served}").as_bytes(), Vec::new());
                }
                worker.exit(0); // sends what is queued first
            }
            // Nobody to report to: leave at once.
            Some(WorkerEvent::MasterGone) => {
                worker.close(listener)?;
                worker.exit(0);
            }
            Some(_) | None => {}
        }
    }
}
