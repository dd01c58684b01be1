//! "Hello, World!" from axum, on hyper and tokio's current-thread runtime,
//! on a cluster of workers listening through this crate:
//!
//! ```text
//! cargo run --release --example axum_hello -- --workers 2 --listen 127.0.0.1:8080
//! wrk -t2 -c64 -d10s http://127.0.0.1:8080/
//! ```
//!
//! Same flags, `ready` line, signals and supervision as `echo`. The worker
//! is `tokio_hello`'s (`examples/common/tokio_worker.rs`): the crate's
//! [`Worker`](mio_cluster::Worker) is one descriptor in tokio's loop, and
//! it accepts each connection itself, so the accept board keeps the
//! workers' shares even. What differs is who serves a connection: an axum
//! [`Router`], through hyper's HTTP/1 server (`serve_connection`), instead
//! of `axum::serve`, which would accept on a listener of its own and leave
//! the balance to whichever worker wakes first. When the worker leaves
//! (`SIGHUP`, `SIGTERM`, a scale-down), each connection finishes the request
//! under way and closes (hyper's `graceful_shutdown`).
//!
//! One thread per process: no multi-threaded runtime, no blocking pool.

use std::future::{poll_fn, Future};
use std::io;
use std::pin::pin;
use std::rc::Rc;
use std::task::Poll;

use axum::routing::get;
use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;

mod common;
#[path = "common/tokio_worker.rs"]
mod tokio_worker;

fn main() {
    common::run(
        "axum_hello",
        "An axum hello-world server, in a cluster of worker processes.",
        |args| {
            let app = Router::new().route("/", get(|| async { "Hello, World!" }));
            tokio_worker::run(args, move |conn, leaving| serve(app.clone(), conn, leaving))
        },
        |_, _| {},
    );
}

/// Serves one connection with `app` until the client closes it, or, once
/// the worker is leaving, until the request under way is answered.
async fn serve(
    app: Router,
    conn: tokio_worker::Conn,
    leaving: Rc<tokio_worker::Leaving>,
) -> io::Result<()> {
    let service = TowerToHyperService::new(app);
    let mut conn = pin!(http1::Builder::new().serve_connection(TokioIo::new(conn), service));
    let mut leave = pin!(leaving.wait());
    // Served to the end, or told to leave first.
    let ended = poll_fn(|cx| match conn.as_mut().poll(cx) {
        Poll::Ready(served) => Poll::Ready(Some(served)),
        Poll::Pending => leave.as_mut().poll(cx).map(|()| None),
    })
    .await;
    if let Some(served) = ended {
        return served.map_err(io::Error::other);
    }
    conn.as_mut().graceful_shutdown();
    conn.await.map_err(io::Error::other)
}
