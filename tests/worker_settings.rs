//! Node's `setupPrimary` and `fork(env)`: per-fork environment, working
//! directory, the user workers run as, and piped worker output.

mod util;

use std::net::SocketAddr;
use util::*;

#[test]
fn per_fork_environment_and_working_directory_reach_the_worker() {
    let dir = std::env::temp_dir().join(format!("mio-cluster-cwd-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut m = Proc::fixture_env(&[], &[("FIXTURE_CWD", dir.to_str().unwrap())]);
    m.send("fork-env FIXTURE_ECHO_ENV=first");
    m.send("fork-env FIXTURE_ECHO_ENV=second");
    m.send("fork");
    assert_eq!(m.expect("message id=1 env"), "message id=1 env FIXTURE_ECHO_ENV=first");
    assert_eq!(m.expect("message id=2 env"), "message id=2 env FIXTURE_ECHO_ENV=second");
    m.expect("message id=3 hello");
    m.send("send 3 uid");
    let uid = m.expect("message id=3 uid");
    assert_eq!(field(&uid, "cwd"), dir.canonicalize().unwrap().to_str().unwrap());
    // The third fork got no extra variable.
    let late = m.drain(std::time::Duration::from_millis(200));
    assert!(!late.iter().any(|l| l.starts_with("message id=3 env")), "{late:?}");
}

#[test]
fn a_worker_run_as_nobody_serves_a_socket_the_master_bound() {
    let Some(_) = nobody() else { return };
    // The worker re-executes the fixture binary: nobody must be able to
    // read it, which holds for the usual 0755 target directories.
    let mut m = Proc::fixture_env(
        &["--listen", "127.0.0.1:0"],
        &[("FIXTURE_USER", "nobody"), ("FIXTURE_CWD", "/")],
    );
    m.send("fork");
    let addr: SocketAddr = field(&m.expect("listening id=1"), "addr").parse().unwrap();
    m.send("send 1 uid");
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    assert_eq!(field(&m.expect("message id=1 uid"), "uid"), nobody.uid.to_string());
    for _ in 0..5 {
        echo_once(addr).unwrap();
    }
    // The master kept its privileges.
    let status = std::fs::read_to_string(format!("/proc/{}/status", m.pid())).unwrap();
    let uid = status.lines().find_map(|l| l.strip_prefix("Uid:")).unwrap();
    assert_eq!(uid.split_whitespace().next(), Some("0"));
}

#[test]
fn piped_worker_output_is_read_by_the_master() {
    let mut m = Proc::fixture_env(&[], &[("FIXTURE_PIPE", "1")]);
    m.send("fork");
    m.expect("message id=1 hello");
    m.send("send 1 say hi");
    assert_eq!(m.expect("output id=1 stream=Stdout"), "output id=1 stream=Stdout stdout says hi");
    // stderr is unbuffered: the line may come in pieces; gather them.
    let mut err = String::new();
    while !err.contains("stderr says hi") {
        let piece = m.expect("output id=1 stream=Stderr");
        err.push_str(piece.trim_start_matches("output id=1 stream=Stderr"));
    }
    // What a worker wrote just before exiting is delivered before its exit.
    m.send("send 1 say-exit last");
    let mut order = Vec::new();
    while order.len() < 2 {
        let l = m.expect_by("output or exit", WAIT, |l| {
            l == "output id=1 stream=Stdout stdout says last" || l.starts_with("exit id=1")
        });
        order.push(l.split(' ').next().unwrap().to_string());
    }
    assert_eq!(order, ["output", "exit"]);
}
