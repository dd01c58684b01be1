//! An HTTP health listener for Kubernetes' probes, served by the master's
//! own loop (no thread).
//!
//! - `GET /ready`: 200 while the pool is at its target, 503 while the
//!   master lingers after `SIGTERM` ([`linger`](super::linger)), drains,
//!   or has fewer workers ready than its target. The application says
//!   which with a [`Readiness`], asked for only when a request needs it.
//! - `GET /live`: 200. The listener is served by the master's loop, so an
//!   answer at all is the proof that the loop turns: a stalled master does
//!   not answer, and the probe's timeout fails it.
//! - Any other path: 404; a method other than `GET` or `HEAD`: 405; a
//!   request that is not HTTP/1: 400. Every reply closes the connection.
//!
//! It is built like the master: [`Health`] is a [`mio::event::Source`]
//! (an epoll descriptor of its own, readable when it has work) that the
//! application registers once in its `Poll`, next to the master; after
//! every wait of that loop it calls [`Health::process`], and it waits no
//! longer than [`Health::timeout`]. A turn never blocks, and no client can
//! keep a probe from its answer:
//!
//! - a connection's request is read as soon as it is accepted, and
//!   answered at once if it came with it (a probe's does): such a probe
//!   never waits for a place;
//! - a request head is at most 2 KiB and has [`HEAD_TIMEOUT`] (300 ms) to
//!   arrive, the whole exchange [`CLIENT_TIMEOUT`];
//! - at most [`MAX_CLIENTS`] clients wait at once; a new one past that
//!   takes the place of the oldest that has not sent a complete head.
//!
//! So idle or half-sent connections, however many and however often
//! reopened, cost the master accepts and closes, never a probe's answer.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Registry, Token};
use slab::Slab;

/// The longest request head read (request line and headers).
pub const MAX_REQUEST: usize = 2048;
/// The most clients served at once.
pub const MAX_CLIENTS: usize = 64;
/// How long a client has to send its request head: a probe sends it with
/// the connection.
pub const HEAD_TIMEOUT: Duration = Duration::from_millis(300);
/// How long a client has to send its request and take the reply.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

const LISTENER: Token = Token(usize::MAX - 1);
/// Accepts per turn: past it, the next turn goes on (zero timeout).
const ACCEPT_BATCH: usize = 64;

/// What the health listener asks the application, when a request needs it.
/// A closure that returns a [`Readiness`] is one (with no metrics).
pub trait Answers {
    /// `/ready`'s answer.
    fn readiness(&mut self) -> Readiness;
    /// `/metrics`' body, in the Prometheus text format
    /// ([`host::metrics::render`](crate::host::metrics::render)), or
    /// `None`: `/metrics` is 404.
    fn metrics(&mut self) -> Option<String> {
        None
    }
}

impl<F: FnMut() -> Readiness> Answers for F {
    fn readiness(&mut self) -> Readiness {
        self()
    }
}

/// What `/ready` answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Readiness {
    /// The pool is at its target: 200.
    Ready,
    /// `SIGTERM` came; still accepting until the linger is over: 503.
    Lingering,
    /// Shutting down: 503.
    Draining,
    /// Fewer workers ready than the target: 503.
    BelowTarget {
        /// Workers ready.
        ready: usize,
        /// The target.
        target: usize,
    },
}

impl Readiness {
    /// `Ready` if `ready` workers reach `target`, `BelowTarget` otherwise.
    pub fn of_pool(ready: usize, target: usize) -> Readiness {
        if ready >= target {
            Readiness::Ready
        } else {
            Readiness::BelowTarget { ready, target }
        }
    }
}

/// The health listener. See the [module docs](self).
#[derive(Debug)]
pub struct Health {
    poll: Poll,
    events: Events,
    /// `None` once [`Health::stop_listening`] closed it.
    listener: Option<TcpListener>,
    addr: SocketAddr,
    clients: Slab<Client>,
    /// The accept loop stopped at its batch: go on next turn.
    more: bool,
}

#[derive(Debug)]
struct Client {
    stream: TcpStream,
    request: Vec<u8>,
    reply: Vec<u8>,
    written: usize,
    accepted: Instant,
    deadline: Instant,
}

impl Health {
    /// Binds the listener (`SO_REUSEADDR`, close-on-exec, non-blocking).
    pub fn bind(addr: SocketAddr) -> io::Result<Health> {
        let listener = TcpListener::bind(addr)
            .map_err(|e| io::Error::new(e.kind(), format!("health listener on {addr}: {e}")))?;
        Health::with_listener(listener)
    }

    /// Serves on a listening socket bound elsewhere: inherited from an old
    /// master in a hot upgrade ([`Master::take_handed_over`](crate::Master::take_handed_over)),
    /// or from a service manager. Made non-blocking.
    pub fn from_std(listener: std::net::TcpListener) -> io::Result<Health> {
        listener.set_nonblocking(true)?;
        Health::with_listener(TcpListener::from_std(listener))
    }

    /// The listening socket, to hand over to the new master of a hot
    /// upgrade ([`UpgradeOptions::descriptors`](crate::master::UpgradeOptions::descriptors)):
    /// the same socket keeps its queue, so no probe goes unanswered.
    /// `None` once [`Health::stop_listening`] closed it.
    pub fn listener_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        use std::os::fd::AsFd;
        self.listener.as_ref().map(|l| l.as_fd())
    }

    /// Closes this process's listening socket (the new master of a hot
    /// upgrade serves it now), and answers the clients already accepted.
    pub fn stop_listening(&mut self) {
        if let Some(mut l) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut l);
        }
    }

    fn with_listener(mut listener: TcpListener) -> io::Result<Health> {
        let addr = listener.local_addr()?;
        // A queue as deep as the system allows: connections that hold no
        // place are accepted and closed fast, and a probe's SYN must not be
        // dropped (a retry comes a second later) while they queue.
        {
            use std::os::fd::AsFd;
            crate::sys::socket::deepen_backlog(listener.as_fd())?;
        }
        let poll = Poll::new()?;
        poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
        let listener = Some(listener);
        Ok(Health {
            poll,
            events: Events::with_capacity(64),
            listener,
            addr,
            clients: Slab::new(),
            more: false,
        })
    }

    /// The bound address (the port chosen, for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// How long the application's loop may wait before the next
    /// [`Health::process`]: zero while work is left, until the earliest
    /// client's deadline, `None` with no client.
    pub fn timeout(&self) -> Option<Duration> {
        if self.more {
            return Some(Duration::ZERO);
        }
        let now = Instant::now();
        self.clients.iter().map(|(_, c)| c.deadline.saturating_duration_since(now)).min()
    }

    /// One turn that never blocks: accepts, reads requests, replies, and
    /// closes clients past their deadline. `answers` is asked once per
    /// `/ready` or `/metrics` request (a closure that returns a
    /// [`Readiness`] will do, and `/metrics` is then 404).
    pub fn process(&mut self, mut answers: impl Answers) -> io::Result<()> {
        match self.poll.poll(&mut self.events, Some(Duration::ZERO)) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            res => res?,
        }
        let ready: Vec<Token> = self.events.iter().map(|e| e.token()).collect();
        // A full batch may leave ready clients behind, and no new edge
        // will say so: the next turn comes at once (a zero timeout).
        let full = ready.len() >= self.events.capacity();
        let mut ready = ready;
        if std::mem::take(&mut self.more) && !ready.contains(&LISTENER) {
            ready.push(LISTENER);
        }
        self.more = full;
        // Clients first: a request already here is answered before new
        // connections could take its place.
        for &token in ready.iter().filter(|&&t| t != LISTENER) {
            if self.clients.contains(token.0) {
                self.serve(token.0, &mut answers);
            }
        }
        if ready.contains(&LISTENER) {
            self.accept(&mut answers);
        }
        let now = Instant::now();
        let late: Vec<usize> =
            self.clients.iter().filter(|(_, c)| c.deadline <= now).map(|(k, _)| k).collect();
        for key in late {
            log::debug!("health: a client missed its deadline; closed");
            self.close(key);
        }
        Ok(())
    }

    /// Room for one more client: the oldest one that has not sent a
    /// complete head is closed if the table is full. False if every place
    /// holds a client being answered.
    fn make_room(&mut self, answers: &mut impl Answers) -> bool {
        if self.clients.len() < MAX_CLIENTS {
            return true;
        }
        // The oldest one without a complete head: it may have sent its
        // request since (answered, it leaves by itself); if not, it goes.
        let Some(key) = self
            .clients
            .iter()
            .filter(|(_, c)| c.reply.is_empty())
            .min_by_key(|(_, c)| c.accepted)
            .map(|(k, _)| k)
        else {
            return false;
        };
        self.serve(key, answers);
        if self.clients.len() >= MAX_CLIENTS && self.clients.contains(key) {
            log::debug!("health: {MAX_CLIENTS} clients already; the oldest silent one closed");
            self.close(key);
        }
        self.clients.len() < MAX_CLIENTS
    }

    fn accept(&mut self, answers: &mut impl Answers) {
        for _ in 0..ACCEPT_BATCH {
            let Some(listener) = self.listener.as_ref() else { return };
            match listener.accept() {
                Ok((stream, _)) => {
                    if !self.make_room(answers) {
                        log::debug!("health: {MAX_CLIENTS} clients being answered; one closed");
                        continue;
                    }
                    let entry = self.clients.vacant_entry();
                    let key = entry.key();
                    let now = Instant::now();
                    let mut client = Client {
                        stream,
                        request: Vec::new(),
                        reply: Vec::new(),
                        written: 0,
                        accepted: now,
                        deadline: now + HEAD_TIMEOUT,
                    };
                    let interest = Interest::READABLE | Interest::WRITABLE;
                    if let Err(e) =
                        self.poll.registry().register(&mut client.stream, Token(key), interest)
                    {
                        log::warn!("health: {e}");
                        continue;
                    }
                    entry.insert(client);
                    // A probe sends its request with the connection:
                    // answered now, it never waits for a place.
                    self.serve(key, answers);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // Out of descriptors, say: the next connection's edge
                // tries again (no busy retry).
                Err(e) => {
                    log::warn!("health: accept: {e}");
                    return;
                }
            }
        }
        self.more = true;
    }

    /// Reads what came; once the head is complete, writes the reply; closes
    /// the client when it is all written or something went wrong.
    fn serve(&mut self, key: usize, answers: &mut impl Answers) {
        let c = &mut self.clients[key];
        if c.reply.is_empty() {
            let mut buf = [0u8; 512];
            loop {
                match c.stream.read(&mut buf) {
                    // Closed before a complete request.
                    Ok(0) => return self.close(key),
                    Ok(n) => {
                        c.request.extend_from_slice(&buf[..n]);
                        if head_end(&c.request).is_some() || c.request.len() >= MAX_REQUEST {
                            break;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => return self.close(key),
                }
            }
            // The head is in: the rest of the exchange may take longer.
            c.deadline = c.accepted + CLIENT_TIMEOUT;
            c.reply = match head_end(&c.request) {
                Some(end) => reply(&c.request[..end], answers),
                None => {
                    response(431, "Request Header Fields Too Large", "request too large\n", true)
                }
            };
        }
        while c.written < c.reply.len() {
            match c.stream.write(&c.reply[c.written..]) {
                Ok(n) => c.written += n,
                // The rest when it is writable again (registered for it).
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        self.close(key);
    }

    fn close(&mut self, key: usize) {
        let mut c = self.clients.remove(key);
        let _ = self.poll.registry().deregister(&mut c.stream);
        // Everything is sent: a clean FIN. Unread bytes from the client
        // would turn the close into a reset, so take what is there first.
        let _ = c.stream.shutdown(std::net::Shutdown::Write);
        let mut sink = [0u8; 512];
        let _ = c.stream.read(&mut sink);
    }
}

/// Where the request head ends (after the blank line), if it has.
pub(crate) fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4)
        .or_else(|| buf.windows(2).position(|w| w == b"\n\n").map(|i| i + 2))
}

/// The reply to one request head.
pub(crate) fn reply(head: &[u8], answers: &mut impl Answers) -> Vec<u8> {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = std::str::from_utf8(line).unwrap_or("").trim_end_matches('\r');
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return response(400, "Bad Request", "bad request\n", false);
    };
    if !version.starts_with("HTTP/1.") {
        return response(400, "Bad Request", "bad request\n", false);
    }
    let head_only = match method {
        "GET" => false,
        "HEAD" => true,
        _ => return response(405, "Method Not Allowed", "GET or HEAD\n", false),
    };
    let path = target.split('?').next().unwrap_or(target);
    match path {
        "/live" => response(200, "OK", "live\n", head_only),
        "/metrics" => match answers.metrics() {
            Some(text) => {
                response_typed(200, "OK", crate::host::metrics::CONTENT_TYPE, &text, head_only)
            }
            None => response(404, "Not Found", "not found\n", head_only),
        },
        "/ready" => match answers.readiness() {
            Readiness::Ready => response(200, "OK", "ready\n", head_only),
            Readiness::Lingering => {
                response(503, "Service Unavailable", "lingering after SIGTERM\n", head_only)
            }
            Readiness::Draining => response(503, "Service Unavailable", "draining\n", head_only),
            Readiness::BelowTarget { ready, target } => response(
                503,
                "Service Unavailable",
                &format!("below target: {ready} of {target} workers ready\n"),
                head_only,
            ),
        },
        _ => response(404, "Not Found", "not found\n", head_only),
    }
}

fn response(code: u16, reason: &str, body: &str, head_only: bool) -> Vec<u8> {
    response_typed(code, reason, "text/plain", body, head_only)
}

fn response_typed(code: u16, reason: &str, ctype: &str, body: &str, head_only: bool) -> Vec<u8> {
    let mut r = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if code == 405 {
        r.insert_str(r.len() - 2, "Allow: GET, HEAD\r\n");
    }
    if !head_only {
        r.push_str(body);
    }
    r.into_bytes()
}

/// Registers the health listener's epoll descriptor in the application's
/// `Poll`, readable when [`Health::process`] has work.
impl mio::event::Source for Health {
    fn register(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        SourceFd(&self.poll.as_raw_fd()).register(registry, token, interests)
    }

    fn reregister(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        SourceFd(&self.poll.as_raw_fd()).reregister(registry, token, interests)
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        SourceFd(&self.poll.as_raw_fd()).deregister(registry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(req: &str, r: Readiness) -> String {
        let head = req.as_bytes();
        let end = head_end(head).expect("complete head");
        String::from_utf8(reply(&head[..end], &mut || r)).unwrap()
    }

    #[test]
    fn ready_and_live_answer_by_the_pool_and_the_rest_is_refused() {
        let get = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
        let r = answer(&get("/ready"), Readiness::Ready);
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n") && r.ends_with("\r\n\r\nready\n"), "{r}");
        assert!(r.contains("Content-Length: 6\r\nConnection: close\r\n"), "{r}");
        for (state, body) in [
            (Readiness::Lingering, "lingering after SIGTERM\n"),
            (Readiness::Draining, "draining\n"),
            (Readiness::of_pool(3, 4), "below target: 3 of 4 workers ready\n"),
        ] {
            let r = answer(&get("/ready?verbose=1"), state);
            assert!(r.starts_with("HTTP/1.1 503 Service Unavailable\r\n"), "{r}");
            assert!(r.ends_with(body), "{r}");
        }
        assert_eq!(Readiness::of_pool(4, 4), Readiness::Ready);
        assert!(answer(&get("/live"), Readiness::Draining).starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(answer(&get("/"), Readiness::Ready).starts_with("HTTP/1.1 404 Not Found\r\n"));
        let head = answer("HEAD /ready HTTP/1.0\n\n", Readiness::Ready);
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n") && head.ends_with("\r\n\r\n"), "{head}");
        let post = answer("POST /ready HTTP/1.1\r\n\r\n", Readiness::Ready);
        assert!(post.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"), "{post}");
        assert!(post.contains("\r\nAllow: GET, HEAD\r\n"), "{post}");
        for bad in ["GET /ready\r\n\r\n", "GET /ready SPDY/3\r\n\r\n", "\u{1}\u{2}\r\n\r\n"] {
            assert!(answer(bad, Readiness::Ready).starts_with("HTTP/1.1 400 Bad Request\r\n"));
        }
    }
}
