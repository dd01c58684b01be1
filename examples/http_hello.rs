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

const BODY: &[u8] = b"Hello world\n";
const LISTENER: Token = Token(usize::MAX - 2);

struct Conn {
    stream: Stream,
    /// Bytes of a request not yet complete.
    input: Vec<u8>,
    /// Responses not yet written.
    output: Vec<u8>,
    /// The last response said `Connection: close`: once it is written, the
    /// connection ends and no further request on it is read.
    close_after: bool,
    /// Body bytes of the current request still to skip.
    skip: usize,
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
                            skip: 0,
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
                WorkerEvent::Message { .. } | WorkerEvent::Drained => {}
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
            close_gently(conn, buf);
            return true;
        }
        match conn.stream.read(buf) {
            Ok(0) => return true,
            Ok(n) => {
                conn.input.extend_from_slice(&buf[..n]);
                // Answer every complete request in the buffer (pipelining),
                // up to one that ends the connection.
                while !conn.close_after {
                    let skipped = conn.skip.min(conn.input.len());
                    conn.input.drain(..skipped);
                    conn.skip -= skipped;
                    if conn.skip > 0 {
                        break;
                    }
                    let Some(end) = find(&conn.input, b"\r\n\r\n") else { break };
                    let head = parse_head(&conn.input[..end]);
                    conn.input.drain(..end + 4);
                    conn.skip = head.body;
                    respond(&mut conn.output, &head);
                    conn.close_after = !head.keep_alive;
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

/// What the server needs of a request head.
struct Head {
    /// Whether the connection stays open after the response: HTTP/1.1
    /// unless `Connection: close`, HTTP/1.0 only with
    /// `Connection: keep-alive`. A head that does not parse closes it.
    keep_alive: bool,
    /// Body bytes that follow the head (`Content-Length`).
    body: usize,
    /// The status to answer with: 200, or 400 for a head it cannot frame.
    status: u16,
    /// The response's protocol version: the request's, or 1.1.
    version: &'static str,
}

/// Parses a request head (without its final blank line).
fn parse_head(raw: &[u8]) -> Head {
    let bad = Head { keep_alive: false, body: 0, status: 400, version: "HTTP/1.1" };
    let Ok(text) = std::str::from_utf8(raw) else { return bad };
    let mut lines = text.split("\r\n");
    let request_line = lines.next().unwrap_or("");
    let version = match request_line.rsplit(' ').next() {
        Some("HTTP/1.1") => "HTTP/1.1",
        Some("HTTP/1.0") => "HTTP/1.0",
        _ => return bad,
    };
    let (mut close, mut keep_alive, mut body) = (false, false, 0);
    for line in lines {
        let Some((name, value)) = line.split_once(':') else { return bad };
        let value = value.trim();
        if name.eq_ignore_ascii_case("connection") {
            for token in value.split(',').map(str::trim) {
                close |= token.eq_ignore_ascii_case("close");
                keep_alive |= token.eq_ignore_ascii_case("keep-alive");
            }
        } else if name.eq_ignore_ascii_case("content-length") {
            match value.parse() {
                Ok(n) => body = n,
                Err(_) => return bad,
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            // A chunked body cannot be skipped without decoding it: refuse
            // it and close rather than misread the body as requests.
            return Head { version, ..bad };
        }
    }
    let keep_alive = !close && (version == "HTTP/1.1" || keep_alive);
    Head { keep_alive, body, status: 200, version }
}

/// Appends the response to `head`: says `Connection: close` when the
/// connection ends after it, and `Connection: keep-alive` to an HTTP/1.0
/// client whose connection stays open.
fn respond(out: &mut Vec<u8>, head: &Head) {
    let (status, body): (&str, &[u8]) = match head.status {
        200 => ("200 OK", BODY),
        _ => ("400 Bad Request", b"bad request\n"),
    };
    let connection = match (head.keep_alive, head.version) {
        (false, _) => "Connection: close\r\n",
        (true, "HTTP/1.0") => "Connection: keep-alive\r\n",
        (true, _) => "",
    };
    let _ = write!(
        out,
        "{} {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n{connection}\r\n",
        head.version,
        body.len()
    );
    out.extend_from_slice(body);
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

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
