//! A minimal HTTP/1.1 "hello world" server with keep-alive, on a cluster of
//! workers, for load tools such as `wrk`:
//!
//! ```text
//! cargo run --release --example http_hello -- --workers 2 --listen 127.0.0.1:8080
//! wrk -t2 -c64 -d10s http://127.0.0.1:8080/
//! ```
//!
//! Same flags, `ready` line, signals and supervision as `echo`. It answers
//! every request (pipelined ones too) with the same 200 response and reads
//! no bodies: a benchmark target, not a web server.

use std::io::{self, Read, Write};

use common::Args;
use mio::{Events, Interest, Token};
use mio_cluster::worker::IPC_TOKEN;
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

const RESPONSE: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 12\r\n\r\nHello world\n";
const LISTENER: Token = Token(usize::MAX - 2);

struct Conn {
    stream: Stream,
    /// Bytes of a request not yet complete.
    input: Vec<u8>,
    /// Responses not yet written.
    output: Vec<u8>,
    close_after: bool,
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
                IPC_TOKEN => {}
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
                            input: Vec::new(),
                            output: Vec::new(),
                            close_after: false,
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
        if let Some(WorkerEvent::Disconnect) = worker.next_event() {
            if let Some(l) = listener.take() {
                worker.close(l)?;
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
        if conn.close_after {
            return true;
        }
        match conn.stream.read(buf) {
            Ok(0) => return true,
            Ok(n) => {
                conn.input.extend_from_slice(&buf[..n]);
                // Answer every complete request in the buffer (pipelining).
                while let Some(end) = find(&conn.input, b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&conn.input[..end]).to_ascii_lowercase();
                    conn.output.extend_from_slice(RESPONSE);
                    conn.close_after |=
                        head.contains("\r\nconnection: close") || head.contains(" http/1.0");
                    conn.input.drain(..end + 4);
                }
                if conn.input.len() > 64 * 1024 {
                    return true; // no request head is that long
                }
            }
            // All read: wait for the next readable event.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return true,
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
