//! One echo connection: what `echo`'s and `embed`'s workers, the
//! single-process reference server and the test fixture's workers all run,
//! so that the benchmark compares the cluster and nothing else, and the
//! tests exercise the examples' own echo.
//!
//! Connections live in a `Slab`, each registered under its slab key as its
//! token.

use std::io::{self, Read, Write};

use mio::{Interest, Registry, Token};
use mio_cluster::Stream;
use slab::Slab;

/// One client connection: bytes read and not yet echoed wait in `pending`.
pub struct Conn {
    pub stream: Stream,
    pub pending: Vec<u8>,
}

/// Registers `stream` in `registry` under its key in `conns`, and keeps it
/// there. Returns the key.
pub fn add(registry: &Registry, conns: &mut Slab<Conn>, mut stream: Stream) -> io::Result<usize> {
    let entry = conns.vacant_entry();
    let key = entry.key();
    registry.register(&mut stream, Token(key), Interest::READABLE | Interest::WRITABLE)?;
    entry.insert(Conn { stream, pending: Vec::new() });
    Ok(key)
}

/// An event for connection `key`: echoes what it sent and, when it is
/// finished, deregisters and closes it. A key that is gone is ignored.
pub fn ready(
    registry: &Registry,
    conns: &mut Slab<Conn>,
    key: usize,
    buf: &mut [u8],
) -> io::Result<()> {
    let Some(conn) = conns.get_mut(key) else { return Ok(()) };
    if serve(conn, buf) {
        let mut conn = conns.remove(key);
        registry.deregister(&mut conn.stream)?;
    }
    Ok(())
}

/// Echoes what the connection sent. Returns true when it is finished.
pub fn serve(conn: &mut Conn, buf: &mut [u8]) -> bool {
    loop {
        // Write out what is pending before reading more (backpressure).
        while !conn.pending.is_empty() {
            match conn.stream.write(&conn.pending) {
                Ok(n) => {
                    conn.pending.drain(..n);
                }
                // The peer's window is full: wait for a writable event.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return true,
            }
        }
        match conn.stream.read(buf) {
            Ok(0) => return true,
            Ok(n) => match conn.stream.write(&buf[..n]) {
                Ok(m) => conn.pending.extend_from_slice(&buf[m..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    conn.pending.extend_from_slice(&buf[..n])
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                    conn.pending.extend_from_slice(&buf[..n])
                }
                Err(_) => return true,
            },
            // Everything the peer sent is echoed: wait for a readable event.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return true,
        }
    }
}
