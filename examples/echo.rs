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
//! That master, and the command line, are in `examples/common/mod.rs`,
//! shared by every example; this file is the worker.

use std::io;
use std::time::Duration;

use common::echo_conn::{self, Conn};
use common::Args;
use mio::{Events, Token};
use mio_cluster::worker::{BELL_TOKEN, IPC_TOKEN};
use mio_cluster::{ListenOptions, Worker, WorkerEvent};
use slab::Slab;

mod common;

fn main() {
    common::run(
        "echo",
        "A TCP (or Unix socket) echo server on a cluster of worker processes.",
        worker,
        |_, _| {},
    );
}

const LISTENER: Token = Token(usize::MAX - 2);

fn worker(args: &Args) -> io::Result<()> {
    let mut worker = Worker::new()?;
    let opts = ListenOptions { balance: args.balance, ..ListenOptions::default() };
    let mut listener = match worker.listen(&args.listen, opts) {
        Ok(l) => Some(l),
        Err(e) => common::cannot_listen(worker, e),
    };
    if let Some(l) = listener.as_mut() {
        // One idle worker is woken per connection, and the workers keep to
        // their share of open connections (Balance::Even, the default).
        worker.register_listener(l, LISTENER)?;
    }
    let mut conns: Slab<Conn> = Slab::new();
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 64 * 1024];
    // Set when accept failed for want of resources (EMFILE...): the queue was
    // not drained, so no new readiness edge will come; retry on a timer.
    let mut retry_accept = false;
    let mut stats = AcceptStats::default();
    loop {
        let timeout = retry_accept.then_some(Duration::from_millis(50));
        worker.poll(&mut events, timeout)?;
        if retry_accept {
            retry_accept = accept_some(&mut worker, listener.as_ref(), &mut conns, &mut stats)?;
        }
        for event in events.iter() {
            match event.token() {
                IPC_TOKEN | BELL_TOKEN => {}
                LISTENER => {
                    retry_accept =
                        accept_some(&mut worker, listener.as_ref(), &mut conns, &mut stats)?
                }
                Token(key) => echo_conn::ready(worker.registry(), &mut conns, key, &mut buf)?,
            }
        }
        while let Some(ev) = worker.next_event() {
            match ev {
                WorkerEvent::Disconnect => {
                    if let Some(l) = listener.take() {
                        log::debug!(
                            "worker {}: closing listener, {} open connections",
                            worker.id(),
                            conns.len()
                        );
                        worker.close(l)?;
                    }
                }
                // The master is gone: echo connections may stay open for
                // ever, so leave at once (they are reset).
                WorkerEvent::MasterGone => {
                    if let Some(l) = listener.take() {
                        worker.close(l)?;
                    }
                    log::info!("worker {}: exiting, {} connections open", worker.id(), conns.len());
                    worker.exit(0);
                }
                _ => {}
            }
        }
        if worker.is_leaving() && conns.is_empty() {
            log::info!(
                "worker {}: accepted {} connections in {} wake-ups, {} of them empty",
                worker.id(),
                stats.accepted,
                stats.wakeups,
                stats.empty
            );
            worker.exit(0);
        }
    }
}

/// What a worker counts of its accepting, logged when it leaves.
#[derive(Default)]
struct AcceptStats {
    accepted: u64,
    wakeups: u64,
    /// Wake-ups that found no connection to accept (thundering herd).
    empty: u64,
}

/// Accepts queued connections, as many as the listener's balance lets this
/// worker take. Returns true if it had to stop on an error (the caller
/// retries later).
fn accept_some(
    worker: &mut Worker,
    listener: Option<&mio_cluster::Listener>,
    conns: &mut Slab<Conn>,
    stats: &mut AcceptStats,
) -> io::Result<bool> {
    let Some(listener) = listener else { return Ok(false) };
    stats.wakeups += 1;
    let mut taken = 0;
    let retry = loop {
        match worker.accept(listener) {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                echo_conn::add(worker.registry(), conns, stream)?;
                taken += 1;
            }
            // The queue is empty (or another worker took the connection, or
            // this one has its share).
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break false,
            // A connection reset before we accepted it: try the next one.
            Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => continue,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            // Out of descriptors and the like: log, and retry on a timer.
            Err(e) => {
                log::warn!("accept: {e}");
                break true;
            }
        }
    };
    stats.accepted += taken as u64;
    if taken == 0 {
        stats.empty += 1;
    }
    Ok(retry)
}
