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
//! worker: the [`Worker`] is not its loop but one descriptor in tokio's,
//! following the embedding steps of the worker module's docs:
//!
//! 1. the worker's descriptor sits in an [`AsyncFd`];
//! 2. the loop waits until it is readable, or until [`Worker::timeout`]
//!    passes (heartbeats, the accept balance's deadlines);
//! 3. then [`Worker::process`], accepts on the listener's events until
//!    `WouldBlock` (the accept board keeps the workers' shares even), and
//!    the master's events.
//!
//! Each connection leaves for tokio ([`Stream::into_std`], then
//! `tokio::net::TcpStream::from_std`) and is served by a task of its own on
//! a [`LocalSet`]; its [`ConnGuard`] lives in the task, so the connection
//! counts on the accept board until the task ends. The runtime has no
//! blocking pool in use and no worker threads: every process keeps one
//! thread.

use std::cell::Cell;
use std::future::{poll_fn, Future};
use std::io;
use std::pin::{pin, Pin};
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use common::http::Session;
use common::Args;
use mio::{Events, Token};
use mio_cluster::worker::{ConnGuard, BELL_TOKEN, IPC_TOKEN};
use mio_cluster::{ListenOptions, StdStream, Stream, Worker, WorkerEvent};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::task::LocalSet;
use tokio::time::{Instant, Sleep};

mod common;

fn main() {
    common::run(
        "tokio_hello",
        "An HTTP/1.1 hello-world server on tokio, in a cluster of worker processes.",
        worker,
        |_, _| {},
    );
}

const LISTENER: Token = Token(0);

fn worker(args: &Args) -> io::Result<()> {
    // One thread: the I/O and the timers are driven from `block_on`.
    let rt = tokio::runtime::Builder::new_current_thread().enable_io().enable_time().build()?;
    LocalSet::new().block_on(&rt, serve_worker(args))
}

async fn serve_worker(args: &Args) -> io::Result<()> {
    let mut worker = Worker::new()?;
    let opts = ListenOptions { balance: args.balance, ..ListenOptions::default() };
    let mut listener = match worker.listen(&args.listen, opts) {
        Ok(l) => Some(l),
        Err(e) => common::cannot_listen(worker, e),
    };
    if let Some(l) = listener.as_mut() {
        worker.register_listener(l, LISTENER)?;
    }
    // SAFETY: the descriptor is the worker's own epoll instance, which the
    // `Worker` owns and keeps open, unchanged, for as long as it lives: the
    // `AsyncFd` owns the worker until `into_inner` or the process's exit.
    let registered =
        unsafe { AsyncFd::register_with_interest(worker, tokio::io::Interest::READABLE) };
    let mut worker = registered.map_err(io::Error::from)?;
    let open = Rc::new(Open::default());
    let mut events = Events::with_capacity(1024);
    let mut sleep = pin!(tokio::time::sleep(Duration::ZERO));
    loop {
        // Wait: for the worker's descriptor, its deadline, or a
        // connection's end.
        let timeout = worker.get_mut().timeout();
        if timeout == Some(Duration::ZERO) {
            // Work is queued in the worker: no wait, but the connections'
            // tasks get their turn first.
            tokio::task::yield_now().await;
        } else {
            if let Some(t) = timeout {
                sleep.as_mut().reset(Instant::now() + t);
            }
            poll_fn(|cx| wake_up(cx, &worker, timeout.map(|_| sleep.as_mut()), &open)).await?;
        }
        worker.get_mut().process(&mut events)?;
        for event in events.iter() {
            match event.token() {
                // The runtime's own.
                IPC_TOKEN | BELL_TOKEN => {}
                LISTENER => {
                    let Some(l) = listener.as_ref() else { continue };
                    loop {
                        match worker.get_mut().accept(l) {
                            Ok(stream) => spawn(stream, &open),
                            // Nothing more for this worker now (none queued,
                            // or its share is taken): wait for the next event.
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                            // Out of descriptors and the like: the next
                            // event retries.
                            Err(e) => {
                                log::warn!("accept: {e}");
                                break;
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        while let Some(ev) = worker.get_mut().next_event() {
            match ev {
                // Stop accepting; the open connections finish (the master's
                // --shutdown-timeout bounds how long they may take).
                WorkerEvent::Disconnect => {
                    if let Some(l) = listener.take() {
                        worker.get_mut().close(l)?;
                    }
                }
                // The master is gone: keep-alive connections may stay open
                // for long, so leave at once.
                WorkerEvent::MasterGone => {
                    if let Some(l) = listener.take() {
                        worker.get_mut().close(l)?;
                    }
                    worker.into_inner().exit(0);
                }
                WorkerEvent::Message { .. } | WorkerEvent::Drained => {}
            }
        }
        if worker.get_ref().is_leaving() && open.count.get() == 0 {
            worker.into_inner().exit(0);
        }
    }
}

/// Ready when the worker's descriptor is readable (its readiness is
/// cleared: [`Worker::process`] takes what is there, and whatever comes
/// after wakes it again), when `sleep` ends, or when a connection ended.
fn wake_up(
    cx: &mut Context<'_>,
    worker: &AsyncFd<Worker>,
    sleep: Option<Pin<&mut Sleep>>,
    open: &Open,
) -> Poll<io::Result<()>> {
    if let Poll::Ready(guard) = worker.poll_read_ready(cx) {
        guard?.clear_ready();
        return Poll::Ready(Ok(()));
    }
    if sleep.is_some_and(|s| s.poll(cx).is_ready()) {
        return Poll::Ready(Ok(()));
    }
    if open.ended.replace(false) {
        return Poll::Ready(Ok(()));
    }
    open.waker.set(Some(cx.waker().clone()));
    Poll::Pending
}

/// The connections open in this worker's tasks, and the worker loop's
/// waker while it waits.
///
/// A connection's end wakes the loop: it may bring this worker back under
/// its share of open connections, and the accept balance learns it from
/// the next [`Worker::process`] and [`Worker::timeout`] (a listener that
/// stepped aside comes back at once, not when its deadline passes). When
/// leaving, the last one's end is the time to exit.
#[derive(Default)]
struct Open {
    count: Cell<usize>,
    ended: Cell<bool>,
    waker: Cell<Option<Waker>>,
}

/// One open connection: counted in [`Open`] and, through its
/// [`ConnGuard`], on the accept board, until its task ends.
struct Counted {
    open: Rc<Open>,
    _guard: ConnGuard,
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.open.count.set(self.open.count.get() - 1);
        self.open.ended.set(true);
        if let Some(w) = self.open.waker.take() {
            w.wake();
        }
    }
}

/// Moves a connection to tokio and serves it in a task of its own.
fn spawn(stream: Stream, open: &Rc<Open>) {
    let _ = stream.set_nodelay(true);
    let (std, guard) = stream.into_std();
    open.count.set(open.count.get() + 1);
    let counted = Counted { open: open.clone(), _guard: guard };
    tokio::task::spawn_local(async move {
        let _counted = counted;
        // The socket is already non-blocking, as tokio needs it.
        let served = match std {
            StdStream::Tcp(s) => match tokio::net::TcpStream::from_std(s) {
                Ok(s) => serve(s).await,
                Err(e) => Err(e),
            },
            StdStream::Unix(s) => match tokio::net::UnixStream::from_std(s) {
                Ok(s) => serve(s).await,
                Err(e) => Err(e),
            },
        };
        if let Err(e) = served {
            log::debug!("connection: {e}");
        }
    });
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
