//! A UDP echo server on a cluster of workers: every worker receives on the
//! one socket the master bound, and the kernel picks which worker gets each
//! datagram.
//!
//! ```text
//! cargo run --release --example udp_echo -- [--workers N] [--listen ADDR]
//! ```
//!
//! ADDR is as for `echo` (`HOST:PORT`, `[V6]:PORT`, `fd:N`), taken as UDP.
//! Same `ready` line, signals and supervision as `echo`.

use std::io;

use common::Args;
use mio::{Events, Interest, Token};
use mio_cluster::{ListenAddr, ListenOptions, Worker, WorkerEvent};

mod common;

fn main() {
    common::run(
        "udp_echo",
        "A UDP echo server on a cluster of worker processes.",
        worker,
        |_, _| {},
    );
}

const SOCKET: Token = Token(0);

fn worker(args: &Args) -> io::Result<()> {
    let mut worker = Worker::new()?;
    let addr = match &args.listen {
        ListenAddr::Tcp(a) => ListenAddr::Udp(*a),
        ListenAddr::Fd(n) => ListenAddr::UdpFd(*n),
        other => other.clone(),
    };
    let mut socket = match worker.bind_udp(&addr, ListenOptions::default()) {
        Ok(s) => s,
        Err(e) => common::cannot_listen(worker, e),
    };
    worker.registry().register(&mut socket, SOCKET, Interest::READABLE)?;
    let mut events = Events::with_capacity(64);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        worker.poll(&mut events, None)?;
        if events.iter().any(|e| e.token() == SOCKET) {
            loop {
                match socket.recv_from(&mut buf) {
                    // A full send buffer drops the reply, as UDP may.
                    Ok((n, from)) => drop(socket.send_to(&buf[..n], from)),
                    // Drained (or another worker took the datagram).
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        log::warn!("recv_from: {e}");
                        break;
                    }
                }
            }
        }
        // No connections to finish: leave as soon as asked, or as soon as
        // the master is gone.
        while let Some(ev) = worker.next_event() {
            if let WorkerEvent::Disconnect | WorkerEvent::MasterGone = ev {
                worker.close(socket)?;
                worker.exit(0);
            }
        }
    }
}
