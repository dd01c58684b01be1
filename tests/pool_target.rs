//! A supervised pool keeps its target: a worker that leaves of its own
//! accord, or that the application disconnects, is replaced (at once, while
//! it finishes its connections); one that leaves and then hangs is killed
//! at the disconnect deadline; a seat forked with an environment keeps it.
//!
//! A seat keeps its worker's sockets open (with their queued connections)
//! until its next worker holds them, so even a pool of one refuses nothing
//! while its worker is replaced.

mod util;

use std::time::{Duration, Instant};
use util::*;

#[test]
fn a_worker_that_leaves_of_its_own_accord_is_replaced_while_it_finishes() {
    let (mut m, addr) = supervised(2, &[]);
    let mut held = connect(addr).unwrap();
    roundtrip(&mut held, b"a").unwrap();
    let conns = conns_of(&mut m, &[1, 2]);
    let (id, other) = if conns == [1, 0] { (1, 2) } else { (2, 1) };
    assert_eq!(conns[id as usize - 1], 1, "{conns:?}");
    // gunicorn's max_requests: the worker decides to go.
    m.send(&format!("send {id} disconnect"));
    m.expect(&format!("message id={id} leaving open=1"));
    // Its replacement listens while it still serves its connection.
    m.expect("listening id=3");
    roundtrip(&mut held, b"still served").unwrap();
    echo_once(addr).unwrap();
    let lines = m.drain(Duration::ZERO);
    assert!(!lines.iter().any(|l| l.starts_with(&format!("exit id={id}"))), "{lines:?}");
    drop(held);
    let exit = m.expect(&format!("exit id={id}"));
    assert_eq!(field(&exit, "after_disconnect"), "true", "{exit}");
    assert_eq!(field(&exit, "status"), "code=0", "{exit}");
    let mut want = [other.to_string(), "3".to_string()];
    want.sort();
    assert_eq!(ids(&mut m), want);
    let lines = m.drain(Duration::from_millis(300));
    assert!(!lines.iter().any(|l| l.starts_with("fork id=4")), "{lines:?}");
}

#[test]
fn a_worker_the_application_disconnects_is_replaced_but_not_one_a_smaller_target_removes() {
    let (mut m, addr) = supervised(2, &[]);
    m.send("disconnect 1");
    m.expect("listening id=3");
    let exit = m.expect("exit id=1");
    assert_eq!(field(&exit, "after_disconnect"), "true", "{exit}");
    assert_eq!(ids(&mut m), ["2", "3"]);
    echo_once(addr).unwrap();
    m.drain(Duration::ZERO);
    // A smaller target removes a worker for good.
    m.send("target 1");
    let exit = m.expect("exit id=");
    assert_eq!(field(&exit, "after_disconnect"), "true", "{exit}");
    let lines = m.drain(Duration::from_millis(500));
    assert!(!lines.iter().any(|l| l.starts_with("fork")), "{lines:?}");
    assert_eq!(ids(&mut m).len(), 1);
    echo_once(addr).unwrap();
}

#[test]
fn a_worker_that_left_by_itself_and_hangs_is_killed_at_the_disconnect_deadline() {
    let (mut m, addr) = supervised(2, &[("FIXTURE_DISCONNECT_MS", "500")]);
    m.send("send 1 leave-hang");
    let asked = Instant::now();
    // Heartbeats are off: only the deadline can end it (it would exit by
    // itself, with code 9, after 20 s).
    let exit = m.expect("exit id=1");
    let took = asked.elapsed();
    assert_eq!(field(&exit, "status"), "signal=SIGKILL", "{exit}");
    assert_eq!(field(&exit, "after_disconnect"), "true", "{exit}");
    assert!(took >= Duration::from_millis(400), "killed after {took:?}, before its deadline");
    m.expect("listening id=3");
    echo_once(addr).unwrap();
    assert_eq!(ids(&mut m), ["2", "3"]);
}

#[test]
fn a_seat_forked_with_an_environment_keeps_it_through_respawns_and_rolls() {
    let (mut m, _) = supervised(1, &[]);
    m.send("fork-env FIXTURE_ECHO_ENV=blue");
    m.expect("message id=2 env FIXTURE_ECHO_ENV=blue");
    m.expect("listening id=2");
    // It took a seat of its own.
    assert_eq!(ids(&mut m), ["1", "2"]);
    m.send("kill 2 SIGKILL");
    m.expect("exit id=2");
    m.expect("message id=3 env FIXTURE_ECHO_ENV=blue");
    m.expect("listening id=3");
    m.send("roll");
    m.expect_by("rollcomplete", Duration::from_secs(30), |l| l == "rollcomplete");
    // Worker 4 replaced worker 1 (no environment), 5 replaced 3.
    m.expect("message id=5 env FIXTURE_ECHO_ENV=blue");
    let lines = m.drain(Duration::from_millis(200));
    assert!(!lines.iter().any(|l| l.starts_with("message id=4 env")), "{lines:?}");
    assert_eq!(ids(&mut m), ["4", "5"]);
    // And the rolled seat's next respawn still has it.
    m.send("kill 5 SIGKILL");
    m.expect("message id=6 env FIXTURE_ECHO_ENV=blue");
}

#[test]
fn a_pool_of_one_keeps_its_socket_and_refuses_nothing_while_its_worker_is_replaced() {
    // Port 0: a socket closed and bound again would get another port.
    let (mut m, addr) = supervised(1, &[]);
    let fork = m.expect("fork id=1");
    signal(field(&fork, "pid").parse().unwrap(), "KILL");
    m.expect("exit id=1");
    // No worker holds the socket now; the connection waits in its queue.
    let mut waiting = connect(addr).unwrap();
    let listening = m.expect("listening id=2");
    assert_eq!(field(&listening, "addr"), addr.to_string());
    roundtrip(&mut waiting, b"queued while no worker was there").unwrap();
    drop(waiting);
    // The same when the worker leaves by itself (gunicorn's max_requests).
    m.send("send 2 disconnect");
    m.expect("exit id=2");
    let mut waiting = connect(addr).unwrap();
    let listening = m.expect("listening id=3");
    assert_eq!(field(&listening, "addr"), addr.to_string());
    roundtrip(&mut waiting, b"queued again").unwrap();
    drop(waiting);
    m.send("sockets");
    assert_eq!(m.expect("sockets"), "sockets 1");
    // A smaller target, or a shutdown, does not keep it.
    m.send("shutdown");
    assert_eq!(m.expect("alldisconnected"), "alldisconnected forced=0");
    m.send("sockets");
    assert_eq!(m.expect("sockets"), "sockets 0");
    assert!(connect(addr).is_err(), "the socket outlived the pool");
}
