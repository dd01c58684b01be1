//! HTTP/1.1 "hello world" from tokio's current-thread runtime, on a cluster
//! of workers listening through this crate:
//!
//! ```text
//! cargo run --release --example tokio_hello -- --workers 2 --listen 127.0.0.1:8080
//! wrk -t2 -c64 -d10s http://127.0.0.1:8080/
//! ```
//!
//! Same flags, `ready` line, signals and supervision as `echo`, and the same
//! answers as `http_hello` (`examples/common/http.rs`). What differs is the
//! worker: the [`Worker`](mio_cluster::Worker) is not its loop but one
//! descriptor in tokio's (`examples/common/tokio_worker.rs`, shared with
//! `axum_hello`), and each connection is a tokio task that runs the
//! hand-written HTTP/1.1 framing below.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::Poll;

use common::http::Session;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

mod common;
#[path = "common/tokio_worker.rs"]
mod tokio_worker;

fn main() {
    common::run(
        "tokio_hello",
        "An HTTP/1.1 hello-world server on tokio, in a cluster of worker processes.",
        |args| tokio_worker::run(args, |conn, _leaving| serve(conn)),
        |_, _| {},
    );
}

/// Answers the requests of one connection until the client closes it, or
/// a response says `Connection: close`.
async fn serve<S: AsyncRead + AsyncWrite + Unpin>(mut s: S) -> io::Result<()> {
    let mut session = Session::default();
    let (mut buf, mut out) = (vec![0u8; 16 * 1024], Vec::new());
    loop {
        let n = s.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        if !session.feed(&buf[..n], &mut out) {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "request head too long"));
        }
        // Every response to what was read at once, in one write.
        if !out.is_empty() {
            s.write_all(&out).await?;
            out.clear();
        }
        if session.closing() {
            close_gently(&mut s, &mut buf).await;
            return Ok(());
        }
    }
}

/// Ends a connection after its last response: sends FIN first and reads
/// what the client already sent (without waiting for more), so that
/// closing does not answer unread bytes with a reset that could destroy
/// the response in flight.
async fn close_gently<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, buf: &mut [u8]) {
    let _ = s.shutdown().await;
    loop {
        let mut rb = ReadBuf::new(buf);
        let got = poll_fn(|cx| match Pin::new(&mut *s).poll_read(cx, &mut rb) {
            Poll::Ready(r) => Poll::Ready(Some(r)),
            // Nothing more there now.
            Poll::Pending => Poll::Ready(None),
        })
        .await;
        match got {
            Some(Ok(())) if !rb.filled().is_empty() => {}
            _ => return,
        }
    }
}
