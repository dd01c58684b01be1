//! The echo example's health listener (`--health ADDR`) and linger
//! (`--shutdown-linger SECS`): what Kubernetes' probes see at target,
//! below it, during the linger and during the drain, and that no client
//! of the listener can hold up the master's loop.

mod util;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};
use util::*;

/// `GET path` on the health listener: status code and body.
fn get(health: SocketAddr, path: &str) -> (u16, String) {
    let mut s = connect(health).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: probe\r\n\r\n").unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    let code = reply.get(9..12).and_then(|c| c.parse().ok()).unwrap_or_else(|| panic!("{reply:?}"));
    let body = reply.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_string();
    (code, body)
}

#[test]
fn ready_is_200_at_target_live_is_200_and_other_paths_are_404() {
    let (mut p, _, health) = echo_with_health(&["--workers", "2"]);
    assert_eq!(get(health, "/ready"), (200, "ready\n".into()));
    assert_eq!(get(health, "/live"), (200, "live\n".into()));
    assert_eq!(get(health, "/").0, 404);
    assert_eq!(get(health, "/readyz").0, 404);
    p.signal("TERM");
    assert_eq!(p.wait_exit(WAIT).code(), Some(0), "{}", p.stderr());
}

#[test]
fn during_the_linger_ready_is_503_while_new_connections_are_still_accepted() {
    let (mut p, addr, health) = echo_with_health(&["--workers", "2", "--shutdown-linger", "3"]);
    assert_eq!(get(health, "/ready").0, 200);
    let sent = Instant::now();
    p.signal("TERM");
    assert!(
        eventually(WAIT, || get(health, "/ready") == (503, "lingering after SIGTERM\n".into())),
        "{}",
        p.stderr()
    );
    // Still accepting: new connections are served, several times over.
    for _ in 0..5 {
        echo_once(addr).unwrap();
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(sent.elapsed() < Duration::from_secs(3), "too slow to say anything of the linger");
    assert_eq!(get(health, "/live").0, 200);
    let status = p.wait_exit(WAIT);
    assert_eq!(status.code(), Some(0), "{}", p.stderr());
    assert!(sent.elapsed() >= Duration::from_secs(3), "drained after {:?}", sent.elapsed());
}

#[test]
fn while_draining_ready_is_503() {
    let (mut p, addr, health) = echo_with_health(&["--workers", "1"]);
    // An open connection keeps the drain going until it closes.
    let mut held = connect(addr).unwrap();
    roundtrip(&mut held, b"hold").unwrap();
    p.signal("TERM");
    assert!(eventually(WAIT, || get(health, "/ready") == (503, "draining\n".into())));
    assert_eq!(get(health, "/live").0, 200);
    drop(held);
    assert_eq!(p.wait_exit(WAIT).code(), Some(0), "{}", p.stderr());
}

#[test]
fn ready_is_503_below_target_while_a_worker_is_stopped_and_200_once_it_runs_again() {
    // Heartbeats every 400 ms; a worker silent for 2 s (half the timeout)
    // does not count; at 4 s it would be killed and replaced.
    let (mut p, _, health) = echo_with_health(&["--workers", "2", "--heartbeat-timeout", "4"]);
    assert_eq!(get(health, "/ready").0, 200);
    let worker = workers_of(p.pid())[0];
    signal(worker, "STOP");
    let stopped = Instant::now();
    let below = eventually(Duration::from_millis(3500), || {
        get(health, "/ready") == (503, "below target: 1 of 2 workers ready\n".into())
    });
    signal(worker, "CONT");
    assert!(below, "still ready {:?} after SIGSTOP:\n{}", stopped.elapsed(), p.stderr());
    assert!(eventually(WAIT, || get(health, "/ready").0 == 200), "{}", p.stderr());
    p.signal("TERM");
    assert_eq!(p.wait_exit(WAIT).code(), Some(0), "{}", p.stderr());
}

#[test]
fn slow_silent_and_malformed_clients_get_an_error_or_are_closed_without_holding_up_the_loop() {
    let (mut p, addr, health) = echo_with_health(&["--workers", "1"]);
    // A request that never ends, then silent clients past the 64 held at
    // once: each new one takes the place of the oldest silent one, and is
    // itself closed unanswered at its head's deadline.
    let mut half = connect(health).unwrap();
    half.write_all(b"GET /ready HT").unwrap();
    let opened = Instant::now();
    let silent: Vec<TcpStream> = (0..80).map(|_| connect(health).unwrap()).collect();
    let mut extra = connect(health).unwrap();
    let mut got = Vec::new();
    let t = Instant::now();
    extra.read_to_end(&mut got).unwrap();
    assert!(got.is_empty() && t.elapsed() < Duration::from_secs(2), "{got:?} {:?}", t.elapsed());
    // The master's loop goes on: the echo workers are supervised and serve.
    echo_once(addr).unwrap();
    drop(silent);
    assert!(eventually(WAIT, || get(health, "/ready").0 == 200));
    // Too long a head: 431, then closed.
    let mut big = connect(health).unwrap();
    let _ = big.write_all(&vec![b'a'; 4096]);
    let mut reply = Vec::new();
    let _ = big.read_to_end(&mut reply);
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.1 431 "), "{reply:?}");
    // Not HTTP: 400. Another method: 405.
    for (req, code) in [("hello there\r\n\r\n", "400"), ("DELETE /ready HTTP/1.1\r\n\r\n", "405")] {
        let mut s = connect(health).unwrap();
        s.write_all(req.as_bytes()).unwrap();
        let mut r = String::new();
        s.read_to_string(&mut r).unwrap();
        assert!(r.starts_with(&format!("HTTP/1.1 {code} ")), "{req:?}: {r:?}");
    }
    // The half-sent request is closed unanswered: it was the oldest silent
    // client when the table filled, or its head's deadline (300 ms) came.
    half.set_read_timeout(Some(Duration::from_secs(8))).unwrap();
    let mut rest = Vec::new();
    let _ = half.read_to_end(&mut rest);
    assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));
    let lived = opened.elapsed();
    assert!(lived < Duration::from_secs(5), "{lived:?}");
    p.signal("TERM");
    assert_eq!(p.wait_exit(WAIT).code(), Some(0), "{}", p.stderr());
}

/// Idle and half-sent connections, however many and reopened as soon as
/// they are closed, never keep a probe from its answer.
#[test]
fn a_flood_of_idle_and_half_sent_connections_does_not_silence_the_probes() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;
    let (mut p, _, health) = echo_with_health(&["--workers", "1"]);
    assert_eq!(get(health, "/ready").0, 200);
    let stop = Arc::new(AtomicBool::new(false));
    let reopened = Arc::new(AtomicUsize::new(0));
    // 4 threads of 100 connections: 300 idle, 100 that sent only a
    // request line; each reopened as soon as the master closes it.
    let attackers: Vec<_> = (0..4)
        .map(|t| {
            let (stop, reopened) = (stop.clone(), reopened.clone());
            std::thread::spawn(move || {
                let partial = t == 3;
                let open = || {
                    let s = TcpStream::connect_timeout(&health, Duration::from_secs(1)).ok()?;
                    if partial {
                        let _ = (&s).write_all(b"GET /live HTTP/1.1\r\n");
                    }
                    s.set_nonblocking(true).ok()?;
                    Some(s)
                };
                let mut conns: Vec<Option<TcpStream>> = (0..100).map(|_| open()).collect();
                while !stop.load(Ordering::Relaxed) {
                    for c in conns.iter_mut() {
                        let closed = match c {
                            Some(s) => !matches!(s.read(&mut [0u8; 64]),
                                Err(ref e) if e.kind() == std::io::ErrorKind::WouldBlock),
                            None => true,
                        };
                        if closed {
                            *c = open();
                            reopened.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    // A probe every 100 ms for 3 s: each answered 200 within 200 ms.
    let mut slowest = Duration::ZERO;
    let mut failed = Vec::new();
    for i in 0..30 {
        let path = if i % 2 == 0 { "/live" } else { "/ready" };
        let t = Instant::now();
        let answer = (|| {
            let mut s = TcpStream::connect_timeout(&health, Duration::from_secs(1)).ok()?;
            s.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
            write!(s, "GET {path} HTTP/1.1\r\nHost: kubelet\r\n\r\n").ok()?;
            let mut reply = String::new();
            s.read_to_string(&mut reply).ok()?;
            reply.get(9..12)?.parse::<u16>().ok()
        })();
        let took = t.elapsed();
        slowest = slowest.max(took);
        if answer != Some(200) || took > Duration::from_millis(200) {
            failed.push(format!("{path}: {answer:?} in {took:?}"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::Relaxed);
    for a in attackers {
        a.join().unwrap();
    }
    let churn = reopened.load(Ordering::Relaxed);
    eprintln!("flood: {churn} connections reopened; slowest probe {slowest:?}");
    assert!(churn >= 400, "the flood did not churn: {churn}");
    assert!(failed.is_empty(), "probes failed: {failed:?}");
    p.signal("TERM");
    assert_eq!(p.wait_exit(WAIT).code(), Some(0), "{}", p.stderr());
}
