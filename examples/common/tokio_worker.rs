//! The worker of the tokio examples (`tokio_hello`, `axum_hello`): the
//! [`Worker`] is not its loop but one descriptor in tokio's current-thread
//! runtime, following the embedding steps of the worker module's docs:
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
//! a [`LocalSet`], with the example's own function; its [`ConnGuard`] lives
//! in the task, so the connection counts on the accept board until the task
//! ends. The runtime has no blocking pool in use and no worker threads:
//! every process keeps one thread.

// Each example uses what it needs of it.
#![allow(dead_code)]

use std::cell::Cell;
use std::future::{poll_fn, Future};
use std::io;
use std::pin::{pin, Pin};
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use mio::{Events, Token};
use mio_cluster::worker::{ConnGuard, BELL_TOKEN, IPC_TOKEN};
use mio_cluster::{ListenOptions, StdStream, Stream, Worker, WorkerEvent};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::task::LocalSet;
use tokio::time::{Instant, Sleep};

use crate::common::Args;

const LISTENER: Token = Token(0);

/// Runs this process as a worker on tokio's current-thread runtime, each
/// connection served by `serve` in a task of its own. `serve` is told when
/// the worker leaves ([`Leaving`]): it should then finish what is under
/// way and close. The worker exits once its last connection is done.
pub fn run<F, Fut>(args: &Args, serve: F) -> io::Result<()>
where
    F: Fn(Conn, Rc<Leaving>) -> Fut + 'static,
    Fut: Future<Output = io::Result<()>> + 'static,
{
    // One thread: the I/O and the timers are driven from `block_on`.
    let rt = tokio::runtime::Builder::new_current_thread().enable_io().enable_time().build()?;
    LocalSet::new().block_on(&rt, serve_worker(args, Rc::new(serve)))
}

async fn serve_worker<F, Fut>(args: &Args, serve: Rc<F>) -> io::Result<()>
where
    F: Fn(Conn, Rc<Leaving>) -> Fut + 'static,
    Fut: Future<Output = io::Result<()>> + 'static,
{
    let mut worker = Worker::new()?;
    let opts = ListenOptions { balance: args.balance, ..ListenOptions::default() };
    let mut listener = match worker.listen(&args.listen, opts) {
        Ok(l) => Some(l),
        Err(e) => crate::common::cannot_listen(worker, e),
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
    let leaving = Rc::new(Leaving::default());
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
                            Ok(stream) => spawn(stream, &open, &leaving, &serve),
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
                    leaving.start();
                }
                // The master is gone: keep-alive connections may stay open
                // for long, so leave at once.
                WorkerEvent::MasterGone => {
                    if let Some(l) = listener.take() {
                        worker.get_mut().close(l)?;
                    }
                    worker.into_inner().exit(0);
                }
                _ => {}
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

/// The worker is leaving (the master said `Disconnect`): connections should
/// finish what is under way and close.
#[derive(Default)]
pub struct Leaving {
    started: Cell<bool>,
    notify: Notify,
}

impl Leaving {
    fn start(&self) {
        self.started.set(true);
        self.notify.notify_waiters();
    }

    /// Resolves once the worker is leaving (at once if it is already).
    pub async fn wait(&self) {
        let notified = self.notify.notified();
        if self.started.get() {
            return;
        }
        notified.await
    }
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
fn spawn<F, Fut>(stream: Stream, open: &Rc<Open>, leaving: &Rc<Leaving>, serve: &Rc<F>)
where
    F: Fn(Conn, Rc<Leaving>) -> Fut + 'static,
    Fut: Future<Output = io::Result<()>> + 'static,
{
    let _ = stream.set_nodelay(true);
    let (std, guard) = stream.into_std();
    open.count.set(open.count.get() + 1);
    let counted = Counted { open: open.clone(), _guard: guard };
    let (serve, leaving) = (serve.clone(), leaving.clone());
    tokio::task::spawn_local(async move {
        let _counted = counted;
        // The socket is already non-blocking, as tokio needs it.
        let conn = match std {
            StdStream::Tcp(s) => tokio::net::TcpStream::from_std(s).map(Conn::Tcp),
            StdStream::Unix(s) => tokio::net::UnixStream::from_std(s).map(Conn::Unix),
        };
        let served = match conn {
            Ok(conn) => serve(conn, leaving).await,
            Err(e) => Err(e),
        };
        if let Err(e) = served {
            log::debug!("connection: {e}");
        }
    });
}

/// A connection, over TCP or a Unix socket, as tokio reads and writes it.
pub enum Conn {
    /// A TCP connection.
    Tcp(tokio::net::TcpStream),
    /// A Unix socket connection.
    Unix(tokio::net::UnixStream),
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Unix(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Tcp(s) => Pin::new(s).poll_flush(cx),
            Conn::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}
