//! The worker as a component of the application's own loop: driven from an
//! outer mio `Poll` through its descriptor, `Worker::timeout` and
//! `Worker::process`; the master's death as an event the worker outlives;
//! connections handed to std that keep counting on the accept board.

mod util;

use std::net::SocketAddr;
use std::time::Duration;

use util::*;

const OUTER: (&str, &str) = ("FIXTURE_OUTER_LOOP", "1");

/// One test at a time: a worker that is not scheduled within 2 ms is passed
/// over by the others (by design), so the balance test wants no load beside
/// it.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn a_worker_in_an_outer_mio_loop_keeps_its_heartbeats_and_its_share_of_connections() {
    let _serial = serial();
    let mut m = Proc::fixture_realtime(
        &["--listen", "127.0.0.1:0"],
        &[OUTER, ("FIXTURE_HEARTBEAT_MS", "20"), ("FIXTURE_HEARTBEAT_TIMEOUT_MS", "400")],
    );
    m.send("fork");
    m.send("fork");
    let addr: SocketAddr = field(&m.expect("listening id=1"), "addr").parse().unwrap();
    m.expect("listening id=2");
    let mut held = Vec::new();
    hold(addr, 20, &mut held);
    assert_eq!(conns_of(&mut m, &[1, 2]).iter().sum::<usize>(), 20);
    // Idle for four heartbeat timeouts: only the runtime's own deadline
    // (Worker::timeout) wakes the outer loop to send heartbeats.
    std::thread::sleep(Duration::from_millis(1600));
    // A newcomer: the two others hold their share (about 10 each of 30)
    // already, so the next 10 connections mostly go to it.
    assert_newcomer_takes_its_share(&mut m, addr, &mut held);
    let lines = m.drain(Duration::from_millis(100));
    assert!(
        !lines.iter().any(|l| l.starts_with("unresponsive") || l.starts_with("exit")),
        "a worker in an outer loop was taken for hung: {lines:?}"
    );
    m.send("status");
    for id in 1..=3 {
        let row = m.expect(&format!("status id={id} "));
        assert_eq!(field(&row, "hb"), "true", "{row}");
    }
}

/// The master dies (SIGKILL) while a client is connected: the worker (which
/// blocks the master-death SIGTERM, as a server that finishes its requests
/// would handle it) sees `MasterGone`, stops listening, still answers the
/// client, and exits once the client is done.
fn the_worker_outlives_its_master_to_finish_a_connection(env: &[(&str, &str)]) {
    let _serial = serial();
    let mut env = env.to_vec();
    env.push(("FIXTURE_BLOCK_SIGTERM", "1"));
    let mut m = Proc::fixture_env(&["--listen", "127.0.0.1:0"], &env);
    m.send("fork");
    let pid: u32 = field(&m.expect("fork id=1"), "pid").parse().unwrap();
    let _guard = KillOnDrop::new(pid);
    let addr: SocketAddr = field(&m.expect("listening id=1"), "addr").parse().unwrap();
    let mut client = connect(addr).unwrap();
    roundtrip(&mut client, b"before").unwrap();
    m.signal("KILL");
    // The worker's stdout is the master's: its line still comes through.
    let gone = m.expect("master-gone id=1");
    assert_eq!(field(&gone, "open"), "1", "{gone}");
    assert_eq!(field(&gone, "send"), "Some(NotConnected)", "{gone}");
    roundtrip(&mut client, b"after the master's death").unwrap();
    assert!(alive(pid), "the worker left before its client was done");
    // It closed its listener: nobody holds the socket any more.
    assert!(
        eventually(WAIT, || std::net::TcpListener::bind(addr).is_ok()),
        "the listening socket is still open"
    );
    drop(client);
    assert!(
        eventually(WAIT, || !alive(pid)),
        "the worker is still alive after its last connection closed"
    );
}

#[test]
fn the_masters_death_is_an_event_and_the_worker_finishes_its_request_before_exiting() {
    the_worker_outlives_its_master_to_finish_a_connection(&[]);
}

#[test]
fn in_an_outer_loop_the_masters_death_is_an_event_and_the_request_is_finished() {
    the_worker_outlives_its_master_to_finish_a_connection(&[OUTER]);
}

#[test]
fn a_stream_moved_to_std_counts_on_the_board_until_the_std_stream_is_dropped() {
    let _serial = serial();
    let mut m = Proc::fixture(&["--listen", "127.0.0.1:0"]);
    m.send("fork");
    let addr: SocketAddr = field(&m.expect("listening id=1"), "addr").parse().unwrap();
    let mut clients = Vec::new();
    hold(addr, 3, &mut clients);
    let report = |m: &mut Proc| {
        m.send("send 1 report");
        m.expect("message id=1 report")
    };
    let r = report(&mut m);
    assert_eq!((field(&r, "conns"), field(&r, "counted")), ("3", "3"), "{r}");
    m.send("send 1 to-std");
    m.expect("message id=1 to-std held=3");
    let r = report(&mut m);
    assert_eq!((field(&r, "conns"), field(&r, "held")), ("0", "3"), "{r}");
    assert_eq!(field(&r, "counted"), "3", "std streams stopped counting: {r}");
    m.send("send 1 drop-std");
    m.expect("message id=1 dropped-std");
    let r = report(&mut m);
    assert_eq!((field(&r, "held"), field(&r, "counted")), ("0", "0"), "{r}");
}
