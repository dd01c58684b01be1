//! The `echo` example's public interface: its command line, its `ready`
//! line, serving, respawning, and shutting down on a signal.

mod util;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;
use util::*;

fn echo(args: &[&str]) -> Proc {
    let mut cmd = Command::new(example("echo"));
    cmd.args(args);
    Proc::start(cmd)
}

/// Parses `ready addr=A workers=N pid=P`, checking the exact shape.
fn ready(p: &mut Proc, workers: usize) -> SocketAddr {
    let line = p.expect("ready ");
    let words: Vec<&str> = line.split(' ').collect();
    assert_eq!(words.len(), 4, "{line}");
    assert_eq!(words[2], format!("workers={workers}"), "{line}");
    assert_eq!(words[3], format!("pid={}", p.pid()), "{line}");
    field(&line, "addr").parse().unwrap()
}

#[test]
fn ready_line_then_echo_then_sigterm_exits_0() {
    let mut p = echo(&["--workers", "3", "--listen", "127.0.0.1:0"]);
    let addr = ready(&mut p, 3);
    assert_ne!(addr.port(), 0);
    assert_eq!(workers_of(p.pid()).len(), 3);
    let mut held = connect(addr).unwrap();
    roundtrip(&mut held, b"hello").unwrap();
    for _ in 0..20 {
        echo_once(addr).unwrap();
    }
    p.signal("TERM");
    // Graceful: the open connection is still served until it closes.
    std::thread::sleep(Duration::from_millis(200));
    roundtrip(&mut held, b"still here").unwrap();
    drop(held);
    let status = p.wait_exit(WAIT);
    assert_eq!(status.code(), Some(0), "stderr:\n{}", p.stderr());
    // Exactly one stdout line in the whole run.
    assert!(p.drain(Duration::from_millis(100)).is_empty());
}

#[test]
fn ipv6_and_fd_addresses_are_accepted() {
    if std::net::TcpListener::bind("[::1]:0").is_ok() {
        let mut p = echo(&["--workers", "2", "--listen", "[::1]:0"]);
        let addr = ready(&mut p, 2);
        assert!(addr.is_ipv6());
        echo_once(addr).unwrap();
    }
    // fd:3 of the master: a socket the test bound, moved to descriptor 3 by
    // the shell before it runs the master.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let bound = l.local_addr().unwrap();
    let mut cmd = Command::new("sh");
    cmd.args(["-c", "exec 3<&0 0</dev/null; exec \"$0\" \"$@\""]).arg(example("echo")).args([
        "--workers",
        "2",
        "--listen",
        "fd:3",
    ]);
    cmd.stdin(Stdio::from(std::os::fd::OwnedFd::from(l)));
    let mut cmd_proc = {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        Proc::start_configured(cmd)
    };
    let addr = ready(&mut cmd_proc, 2);
    assert_eq!(addr, bound);
    for _ in 0..10 {
        echo_once(addr).unwrap();
    }
}

#[test]
fn a_dead_worker_is_replaced_and_serving_never_stops() {
    let mut p = echo(&["--workers", "2", "--listen", "127.0.0.1:0"]);
    let addr = ready(&mut p, 2);
    let before = workers_of(p.pid());
    signal(before[0], "KILL");
    echo_once(addr).unwrap();
    assert!(
        eventually(WAIT, || {
            let now = workers_of(p.pid());
            now.len() == 2 && !now.contains(&before[0])
        }),
        "no replacement for {}: {:?}",
        before[0],
        workers_of(p.pid())
    );
    assert!(eventually(WAIT, || p.stderr().matches("listening on").count() >= 3), "{}", p.stderr());
    echo_once(addr).unwrap();
}

#[test]
fn a_port_in_use_is_a_clear_error_and_exit_1() {
    let squatter = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = squatter.local_addr().unwrap().to_string();
    let mut p = echo(&["--workers", "2", "--listen", &addr]);
    let status = p.wait_exit(WAIT);
    assert_eq!(status.code(), Some(1));
    let err = p.stderr();
    assert!(
        err.contains("bind failed")
            && err.contains("Address already in use")
            && err.contains(&addr),
        "{err}"
    );
}

#[test]
fn bad_arguments_exit_2_with_usage() {
    for args in [&["--listen", "nonsense"][..], &["--workers", "0"], &["--bogus"]] {
        let mut p = echo(args);
        assert_eq!(p.wait_exit(WAIT).code(), Some(2), "{args:?}");
        assert!(p.stderr().contains("usage: echo"), "{}", p.stderr());
    }
    let mut p = echo(&["--help"]);
    assert_eq!(p.wait_exit(WAIT).code(), Some(0));
    assert!(p.expect("usage: echo").contains("echo"));
}
