//! The no-cluster reference for the benchmark: one process, one mio loop,
//! the same echo code as `echo`'s workers, the same `ready` line.
//!
//! ```text
//! cargo run --release --example reference_echo -- [--listen HOST:PORT]
//! ```

use std::io::{self, Write};

use echo_conn::Conn;
use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token};
use mio_cluster::Stream;
use slab::Slab;

#[path = "../common/echo_conn.rs"]
mod echo_conn;

const LISTENER: Token = Token(usize::MAX);

fn main() -> io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let addr = args
        .iter()
        .position(|a| a == "--listen")
        .and_then(|i| args.get(i + 1))
        .map_or("127.0.0.1:7000", |s| s.as_str())
        .parse()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("--listen: {e}")))?;
    let mut listener = TcpListener::bind(addr)?;
    let mut poll = Poll::new()?;
    poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
    println!("ready addr={} workers=1 pid={}", listener.local_addr()?, std::process::id());
    io::stdout().flush()?;
    let mut conns: Slab<Conn> = Slab::new();
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        poll.poll(&mut events, None)?;
        for event in events.iter() {
            if event.token() == LISTENER {
                // Edge-triggered: accept until the queue is empty.
                while let Ok((stream, _)) = listener.accept() {
                    let _ = stream.set_nodelay(true);
                    echo_conn::add(poll.registry(), &mut conns, Stream::from(stream))?;
                }
                continue;
            }
            echo_conn::ready(poll.registry(), &mut conns, event.token().0, &mut buf)?;
        }
    }
}
