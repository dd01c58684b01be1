//! One echo connection: what `echo` and the single-process reference
//! server both run, so that the benchmark compares the cluster and nothing
//! else.

use std::io::{self, Read, Write};

use mio_cluster::Stream;

/// One client connection: bytes read and not yet echoed wait in `pending`.
pub struct Conn {
    pub stream: Stream,
    pub pending: Vec<u8>,
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
