//! A rolling restart for every kind of worker: ones that hold no shared
//! socket (messages only, or sockets of their own), ones with several
//! servers on one address, and ones that say when they are ready
//! (`Worker::ready`, einhorn's ack). A new worker replaces an old one once
//! it does everything the old one did; a replacement keeps the old one's
//! environment.

mod util;

use std::net::SocketAddr;
use std::time::Duration;
use util::*;

/// Long enough that a roll waiting for it would fail the test's own wait.
const START_TIMEOUT: (&str, &str) = ("FIXTURE_START_TIMEOUT_MS", "20000");
const ROLL_WAIT: Duration = Duration::from_secs(15);

fn roll_complete(m: &mut Proc) {
    let l = m.expect_by("rollcomplete or rollfailed", ROLL_WAIT, |l| {
        l == "rollcomplete" || l.starts_with("rollfailed")
    });
    assert_eq!(l, "rollcomplete");
}

/// Index of the first line starting with `prefix`.
fn at(lines: &[String], prefix: &str) -> usize {
    lines
        .iter()
        .position(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix:?} in {lines:?}"))
}

#[test]
fn a_rolling_restart_replaces_workers_that_hold_no_socket() {
    let mut m = Proc::fixture_env(
        &[],
        &[("FIXTURE_SUPERVISE", "2"), ("FIXTURE_NO_LISTEN", "1"), START_TIMEOUT],
    );
    m.expect("message id=1 hello");
    m.expect("message id=2 hello");
    m.send("roll");
    roll_complete(&mut m);
    for id in 1..=2 {
        let exit = m.expect(&format!("exit id={id}"));
        assert_eq!(field(&exit, "after_disconnect"), "true", "{exit}");
        assert_eq!(field(&exit, "status"), "code=0", "{exit}");
    }
    assert_eq!(ids(&mut m), ["3", "4"]);
}

#[test]
fn a_rolling_restart_replaces_workers_that_serve_a_socket_of_their_own() {
    let mut m = Proc::fixture_env(
        &["--adopt", "127.0.0.1:0"],
        &[("FIXTURE_SUPERVISE", "1"), START_TIMEOUT],
    );
    m.expect("listening id=1");
    m.send("roll");
    roll_complete(&mut m);
    let exit = m.expect("exit id=1");
    assert_eq!(field(&exit, "after_disconnect"), "true", "{exit}");
    // The new worker listened before the old one was asked to leave.
    let lines = m.drain(Duration::from_millis(200));
    let listening = &lines[at(&lines, "listening id=2")];
    assert!(at(&lines, "listening id=2") < at(&lines, "message id=1 leaving"), "{lines:?}");
    let addr: SocketAddr = field(listening, "addr").parse().unwrap();
    echo_once(addr).unwrap();
    assert_eq!(ids(&mut m), ["2"]);
}

#[test]
fn a_rolling_restart_replaces_workers_with_several_servers_on_one_address() {
    let mut m = Proc::fixture_env(
        &["--listen", "127.0.0.1:0", "--listen", "127.0.0.1:0"],
        &[("FIXTURE_SUPERVISE", "1"), START_TIMEOUT],
    );
    // Index 0 and index 1 of the same (kind, address, port): two sockets.
    let a = field(&m.expect("listening id=1"), "addr").to_string();
    let b = field(&m.expect("listening id=1"), "addr").to_string();
    assert_ne!(a, b);
    m.send("roll");
    roll_complete(&mut m);
    m.expect("exit id=1");
    let lines = m.drain(Duration::from_millis(200));
    // The new worker took over both sockets (same addresses, so neither was
    // closed and bound again) and listened before the old one was asked to
    // leave (its `leaving` report). The roll waits for the registry to give
    // it both sockets and for its first `Listening`; its second `Listening`
    // may come after the old worker's report (the master reads both listens
    // in one turn).
    let got_a = at(&lines, &format!("listening id=2 addr={a}"));
    let got_b = at(&lines, &format!("listening id=2 addr={b}"));
    let left = at(&lines, "message id=1 leaving");
    assert!(got_a.min(got_b) < left, "{lines:?}");
    for addr in [&a, &b] {
        echo_once(addr.parse().unwrap()).unwrap();
    }
    m.send("sockets");
    assert_eq!(m.expect("sockets"), "sockets 2");
}

#[test]
fn a_rolling_restart_waits_for_the_new_worker_to_say_it_is_ready_if_the_old_one_did() {
    let mut m = Proc::fixture_env(
        &["--listen", "127.0.0.1:0"],
        &[("FIXTURE_SUPERVISE", "1"), START_TIMEOUT],
    );
    let addr: SocketAddr = field(&m.expect("listening id=1"), "addr").parse().unwrap();
    m.send("send 1 ready");
    m.expect("message id=1 ready");
    m.send("roll");
    m.expect("listening id=2");
    // Listening on every socket is not enough: worker 1 had said ready.
    let lines = m.drain(Duration::from_millis(700));
    assert!(
        !lines.iter().any(|l| l == "rollcomplete" || l.starts_with("message id=1 leaving")),
        "{lines:?}"
    );
    echo_once(addr).unwrap();
    m.send("send 2 ready");
    roll_complete(&mut m);
    let exit = m.expect("exit id=1");
    assert_eq!(field(&exit, "after_disconnect"), "true", "{exit}");
    echo_once(addr).unwrap();
    assert_eq!(ids(&mut m), ["2"]);
}

#[test]
fn a_worker_that_holds_no_socket_is_replaced_once_it_says_it_is_ready() {
    let mut m = Proc::fixture_env(
        &[],
        &[("FIXTURE_SUPERVISE", "1"), ("FIXTURE_NO_LISTEN", "1"), START_TIMEOUT],
    );
    m.expect("message id=1 hello");
    m.send("send 1 ready");
    m.expect("message id=1 ready");
    m.send("roll");
    m.expect("message id=2 hello");
    let lines = m.drain(Duration::from_millis(700));
    assert!(!lines.iter().any(|l| l == "rollcomplete"), "{lines:?}");
    m.send("send 2 ready");
    roll_complete(&mut m);
    m.expect("exit id=1");
    assert_eq!(ids(&mut m), ["2"]);
}

#[test]
fn a_rolled_worker_keeps_the_environment_it_was_forked_with() {
    // A supervisor with no seats of its own: the application forks through
    // it, and rolls.
    let mut m = Proc::fixture_env(
        &["--listen", "127.0.0.1:0"],
        &[("FIXTURE_SUPERVISE", "0"), START_TIMEOUT],
    );
    m.send("fork-env FIXTURE_ECHO_ENV=green");
    m.expect("message id=1 env FIXTURE_ECHO_ENV=green");
    m.expect("listening id=1");
    m.send("roll");
    m.expect("message id=2 env FIXTURE_ECHO_ENV=green");
    roll_complete(&mut m);
    m.expect("exit id=1");
}
