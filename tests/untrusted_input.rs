//! What enters the master from outside the cluster: the command line and
//! the environment. A value that says something false is refused with an
//! error naming it, and nothing the master does not own is closed.

mod util;

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;
use util::*;

/// Durations from the command line: one that is not a number of seconds
/// gets the usage and exit 2; one too long to add to the clock means
/// "never", and the hot upgrade and the drain still work (no panic).
#[test]
fn durations_are_checked_where_they_enter_and_huge_ones_mean_never() {
    for (flag, value) in [
        ("--upgrade-timeout", "-1"),
        ("--shutdown-timeout", "nan"),
        ("--heartbeat-timeout", "inf"),
        ("--shutdown-linger", "1e400"),
    ] {
        let out = Command::new(example("echo")).args([flag, value]).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flag} {value}: {err}");
        assert!(err.contains(&format!("{flag}: \"{value}\"")) && err.contains("usage:"), "{err}");
    }
    let mut cmd = Command::new(example("echo"));
    cmd.args(["--workers", "1", "--listen", "127.0.0.1:0"])
        .args(["--upgrade-timeout", "1e19", "--shutdown-timeout", "1e19"])
        .args(["--heartbeat-timeout", "1e19", "--shutdown-linger", "0"])
        .env("RUST_LOG", "info");
    let mut p = Proc::start(cmd);
    let addr: SocketAddr = field(&p.expect("ready "), "addr").parse().unwrap();
    let first = p.pid();
    p.signal("USR2");
    let line = p.expect_by("the new master's ready line", WAIT, |l| {
        l.starts_with("ready ") && field(l, "pid") != first.to_string()
    });
    let second: u32 = field(&line, "pid").parse().unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    let code = loop {
        if let Some(s) = p.child.try_wait().unwrap() {
            break s.code();
        }
        assert!(std::time::Instant::now() < deadline, "{}", p.stderr());
        std::thread::sleep(std::time::Duration::from_millis(5));
    };
    assert_eq!(code, Some(0), "{}", p.stderr());
    echo_once(addr).unwrap();
    signal(second, "TERM");
    assert!(eventually(WAIT, || !alive(second)), "{}", p.stderr());
    assert!(!p.stderr().contains("panicked"), "{}", p.stderr());
}

/// `MIO_CLUSTER_UPGRADE` set by hand, naming descriptors that are not what
/// it says (stdin, stdout, a closed number) or a target of 0: an error
/// naming the variable, exit 1, and nothing closed (the error itself still
/// reaches stderr, and stdout is not handed to a worker).
#[test]
fn an_upgrade_variable_set_by_hand_is_refused_and_closes_nothing() {
    for value in [
        "ready=1;target=2;generation=2;sockets=;fds=",
        "ready=0",
        "ready=3;sockets=0=1:0:-1:0:7f000001",
        "ready=900;target=0",
        "ready=3;fds=health:1",
        "ready=2;bogus",
    ] {
        let out = Command::new(example("echo"))
            .args(["--workers", "1", "--listen", "127.0.0.1:0"])
            .env("MIO_CLUSTER_UPGRADE", value)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{value}: {err}");
        assert!(
            err.contains("MIO_CLUSTER_UPGRADE=") && err.contains("no descriptor taken"),
            "{err}"
        );
        assert!(out.stdout.is_empty(), "{value}: {:?}", String::from_utf8_lossy(&out.stdout));
    }
}

/// `LISTEN_FDS` naming descriptors that are not sockets: none is closed (a
/// file stays open in the master, close-on-exec so that no worker inherits
/// it), and 65,536 of them make one warning, not 65,536.
#[test]
fn listen_fds_naming_what_is_not_a_socket_closes_nothing_and_warns_once() {
    let script = "exec 3</etc/hostname; LISTEN_PID=$$ LISTEN_FDS=65536 exec \"$0\" \"$@\"";
    let mut cmd = Command::new("sh");
    cmd.args(["-c", script]).arg(example("echo"));
    cmd.args(["--workers", "1", "--listen", "127.0.0.1:0"]).env("RUST_LOG", "info");
    let mut p = Proc::start(cmd);
    let addr: SocketAddr = field(&p.expect("ready "), "addr").parse().unwrap();
    echo_once(addr).unwrap();
    let fd3 = std::fs::read_link(format!("/proc/{}/fd/3", p.pid())).unwrap();
    assert_eq!(fd3, std::path::Path::new("/etc/hostname"), "descriptor 3 was closed");
    for w in workers_of(p.pid()) {
        let held = std::fs::read_link(format!("/proc/{w}/fd/3")).ok();
        assert_ne!(held.as_deref(), Some(std::path::Path::new("/etc/hostname")), "worker {w}");
    }
    // stderr is read on a thread of the test's: wait for the line.
    assert!(eventually(WAIT, || p.stderr().contains("65536 of the descriptors")), "{}", p.stderr());
    let log = p.stderr();
    let warnings: Vec<&str> = log.lines().filter(|l| l.contains("socket activation")).collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("65536 of the descriptors"), "{warnings:?}");
    p.signal("TERM");
    assert_eq!(p.wait_exit(WAIT).code(), Some(0), "{}", p.stderr());
}

/// A worker that says it listens on a socket the master bound but never gave
/// it is not counted as listening; a claim on a socket of its own (which the
/// master cannot check) still is.
#[test]
fn a_listening_claim_on_a_master_socket_the_worker_never_asked_for_is_not_counted() {
    let mut m = Proc::fixture(&["--listen", "127.0.0.1:0"]);
    m.send("fork");
    let addr = field(&m.expect("listening id=1"), "addr").to_string();
    m.send("fork-env FIXTURE_NO_LISTEN=1");
    m.expect("message id=2 hello");
    m.send(&format!("send 2 claim {addr}"));
    m.expect("message id=2 claimed");
    // Its own socket, as an exclusive listen would be: counted.
    m.send("send 2 claim 127.0.0.1:1");
    m.expect("message id=2 claimed");
    let lines = m.drain(Duration::ZERO);
    let claims: Vec<_> = lines.iter().filter(|l| l.starts_with("listening id=2")).collect();
    assert_eq!(claims, ["listening id=2 addr=127.0.0.1:1"], "{lines:?}");
    let log = m.stderr();
    assert!(
        log.contains(&format!("worker 2 says it listens on {addr}, a socket it never asked for")),
        "{log}"
    );
    // Worker 1 still serves.
    echo_once(addr.parse().unwrap()).unwrap();
}
