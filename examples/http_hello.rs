//! A minimal HTTP/1.1 "hello world" server with keep-alive, on a cluster of
//! workers, for load tools such as `wrk`:
//!
//! ```text
//! cargo run --release --example http_hello -- --workers 2 --listen 127.0.0.1:8080
//! wrk -t2 -c64 -d10s http://127.0.0.1:8080/
//! ```
//!
//! Same flags, `ready` line, signals and supervision as `echo`. It answers
//! every request (pipelined ones too) with the same 200 response, skips
//! `Content-Length` bodies, and keeps HTTP/1.1's connection rules: a
//! request with `Connection: close`, or an HTTP/1.0 one without
//! `Connection: keep-alive`, gets `Connection: close` in its response and
//! then the close. A benchmark target, not a web server.

use std::io::{self, Read, Write};

use common::http::Session;
use common::Args;
use mio::{Events, Interest, Token};
use mio_cluster::worker::{BELL_TOKEN, IPC_TOKEN};
use mio_cluster::{ListenOptions, Stream, Worker, WorkerEvent};
use slab::Slab;

mod common;

fn main() {
    common::run(
        "http_hello",
        "An HTTP/1.1 hello-world server on a cluster of worker processes.",
        worker,
        |_, _| {},
    );
}

const LISTENER: Token = Token(usize::MAX - 2);

struct Conn {
    stream: Stream,
    /// Its requests so far.
    session: Session,
    /// Responses not yet written.
    output: Vec<u8>,
}

fn worker(args: &Args) -> io::Result<()> {
    let mut worker = Worker::new()?;
    let opts = ListenOptions { balance: args.balance, ..ListenOptions::default() };
    let mut listener = match worker.listen(&args.listen, opts) {
        Ok(l) => Some(l),
        Err(e) => common::cannot_listen(worker, e),
    };
    if let Some(l) = listener.as_mut() {
        worker.register_listener(l, LISTENER)?;
    }
    let mut conns: Slab<Conn> = Slab::new();
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        worker.poll(&mut events, None)?;
        for event in events.iter() {
            match event.token() {
                IPC_TOKEN | BELL_TOKEN => {}
                LISTENER => {
                    let Some(l) = listener.as_ref() else { continue };
                    while let Ok(mut stream) = worker.accept(l) {
                        let _ = stream.set_nodelay(true);
                        let entry = conns.vacant_entry();
                        let token = Token(entry.key());
                        worker.registry().register(
                            &mut stream,
                            token,
                            Interest::READABLE | Interest::WRITABLE,
                        )?;
                        entry.insert(Conn {
                            stream,
                            session: Session::default(),
                            output: Vec::new(),
                        });
                    }
                }
                Token(key) => {
                    let Some(conn) = conns.get_mut(key) else { continue };
                    if serve(conn, &mut buf) {
                        let mut conn = conns.remove(key);
                        worker.registry().deregister(&mut conn.stream)?;
                    }
                }
            }
        }
        while let Some(ev) = worker.next_event() {
            match ev {
                WorkerEvent::Disconnect => {
                    if let Some(l) = listener.take() {
                        worker.close(l)?;
                    }
                }
                // The master is gone: keep-alive connections may stay open
                // for long, so leave at once.
                WorkerEvent::MasterGone => {
                    if let Some(l) = listener.take() {
                        worker.close(l)?;
                    }
                    worker.exit(0);
                }
                _ => {}
            }
        }
        if worker.is_leaving() && conns.is_empty() {
            worker.exit(0);
        }
    }
}

/// Reads requests and writes responses. Returns true when the connection is
/// finished.
fn serve(conn: &mut Conn, buf: &mut [u8]) -> bool {
    loop {
        while !conn.output.is_empty() {
            match conn.stream.write(&conn.output) {
                Ok(n) => drop(conn.output.drain(..n)),
                // The client is not reading: wait for a writable event.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return true,
            }
        }
        if conn.session.closing() {
            close_gently(conn, buf);
            return true;
        }
        match conn.stream.read(buf) {
            Ok(0) => return true,
            // Answer every complete request in the buffer (pipelining), up
            // to one that ends the connection; a head over MAX_HEAD drops it.
            Ok(n) if !conn.session.feed(&buf[..n], &mut conn.output) => return true,
            Ok(_) => {}
            // All read: wait for the next readable event.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return true,
        }
    }
}

/// Ends a connection after its last response: sends FIN first and reads
/// what the client already sent, so that closing does not answer unread
/// bytes with a reset that could destroy the response in flight.
fn close_gently(conn: &mut Conn, buf: &mut [u8]) {
    let _ = match (conn.stream.as_tcp(), conn.stream.as_unix()) {
        (Some(s), _) => s.shutdown(std::net::Shutdown::Write),
        (_, Some(s)) => s.shutdown(std::net::Shutdown::Write),
        _ => Ok(()),
    };
    while matches!(conn.stream.read(buf), Ok(n) if n > 0) {}
}
