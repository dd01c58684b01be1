//! The echo example as a container's PID 1 (in a PID namespace of its own,
//! made with `unshare --pid --fork --mount-proc`, as root): PID 1 is the
//! init (`host::init`), the master its child, pid 2. Signals go to PID 1, as
//! `docker stop` and the kubelet send them; it forwards them, reaps every
//! orphan of the namespace without taking a worker's exit from the master,
//! waits for every process at shutdown, and exits with the master's code
//! (128+signal when it ends by killing its workers). And the master as a
//! subreaper.

// systemd, PID namespaces and containers are Linux's: on other platforms
// this file is empty.
#![cfg(target_os = "linux")]

mod util;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use util::*;

/// The echo example as PID 1 of a new PID namespace: the `unshare` process
/// (its exit status is PID 1's), PID 1 (the init) and the master (its
/// child) as seen from here, and the echo address. `None`, with a message,
/// where that cannot run.
fn echo_as_pid_1(args: &[&str]) -> Option<(Proc, u32, u32, SocketAddr)> {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: PID namespaces need root");
        return None;
    }
    let probe = Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "true"])
        .stderr(Stdio::null())
        .status();
    if !probe.is_ok_and(|s| s.success()) {
        eprintln!("skipped: `unshare --pid --fork --mount-proc` does not run here");
        return None;
    }
    let mut cmd = Command::new("unshare");
    cmd.args(["--pid", "--fork", "--kill-child", "--mount-proc"]).arg(example("echo")).args(args);
    cmd.env("RUST_LOG", "debug");
    let mut p = Proc::start(cmd);
    let line = p.expect("ready ");
    // The master is PID 1's first child.
    assert!(line.ends_with(" pid=2"), "{line}");
    let addr = field(&line, "addr").parse().unwrap();
    let unshare = p.pid();
    let init = workers_of(unshare);
    assert_eq!(init.len(), 1, "unshare's children: {init:?}");
    let master = workers_of(init[0]);
    assert_eq!(master.len(), 1, "PID 1's children: {master:?}");
    assert_eq!(threads_of(init[0]), 1);
    Some((p, init[0], master[0], addr))
}

/// Runs `script` with `sh` inside the PID namespace of `pid` (its
/// processes are orphans of the namespace once `sh` exits: PID 1's).
fn in_namespace(pid: u32, script: &str) {
    let st = Command::new("nsenter")
        .args(["-t", &pid.to_string(), "--pid", "--mount", "sh", "-c", script])
        .status()
        .expect("nsenter");
    assert!(st.success(), "nsenter sh -c {script:?}");
}

/// The children of `parent` that are not among `known`.
fn others(parent: u32, known: &[u32]) -> Vec<u32> {
    workers_of(parent).into_iter().filter(|p| !known.contains(p)).collect()
}

fn gone(pid: u32) -> bool {
    !std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
fn as_pid_1_the_echo_example_serves_reaps_orphans_apart_from_workers_and_exits_0_on_sigterm() {
    let Some((mut p, init, master, addr)) =
        echo_as_pid_1(&["--workers", "2", "--listen", "127.0.0.1:0"])
    else {
        return;
    };
    echo_once(addr).unwrap();
    let workers = workers_of(master);
    assert_eq!(workers.len(), 2);
    // Three orphans that end together, and a worker killed at the same
    // moment: PID 1 must reap the orphans, and the master still get the
    // worker's own exit status through its pidfd.
    in_namespace(init, "for i in 1 2 3; do sleep 0.6 & done; exit 0");
    let orphans = others(init, &[master]);
    assert_eq!(orphans.len(), 3, "the orphans were not adopted by PID 1: {orphans:?}");
    std::thread::sleep(Duration::from_millis(600));
    signal(workers[0], "KILL");
    // Each is reaped: no zombie is left 1 s after they end.
    assert!(
        eventually(Duration::from_secs(1), || orphans.iter().all(|&o| gone(o))),
        "orphans left: {:?}",
        orphans.iter().filter(|&&o| !gone(o)).collect::<Vec<_>>()
    );
    assert!(
        eventually(WAIT, || p.stderr().contains("died: signal=SIGKILL")),
        "the killed worker's status was lost:\n{}",
        p.stderr()
    );
    assert!(!p.stderr().contains("died: unknown"), "{}", p.stderr());
    assert_eq!(p.stderr().matches(", not a worker: code=0").count(), 3, "{}", p.stderr());
    // Replaced, and serving.
    assert!(
        eventually(WAIT, || workers_of(master).len() == 2 && others(master, &workers).len() == 1)
    );
    echo_once(addr).unwrap();
    // PID 1 has no default action for SIGTERM: the signalfd reads it.
    let mut held = connect(addr).unwrap();
    roundtrip(&mut held, b"before").unwrap();
    signal(init, "TERM");
    std::thread::sleep(Duration::from_millis(200));
    roundtrip(&mut held, b"draining").unwrap();
    drop(held);
    let status = p.wait_exit(WAIT);
    assert_eq!(status.code(), Some(0), "{}", p.stderr());
}

#[test]
fn as_pid_1_shutdown_waits_for_an_orphan_that_ignores_sigterm() {
    let Some((mut p, init, master, _)) =
        echo_as_pid_1(&["--workers", "2", "--listen", "127.0.0.1:0"])
    else {
        return;
    };
    // It ignores SIGTERM and ends on its own 2 s from now.
    let started = Instant::now();
    in_namespace(init, "(trap '' TERM; exec sleep 2) & exit 0");
    let orphan = others(init, &[master]);
    signal(init, "TERM");
    let status = p.wait_exit(WAIT);
    let lived = started.elapsed();
    assert_eq!(status.code(), Some(0), "{}", p.stderr());
    // Not cut short by the namespace going down with its PID 1.
    assert!(lived >= Duration::from_millis(1900), "PID 1 exited after {lived:?}");
    assert!(p.stderr().contains("waiting up to 10s for 1 other processes"), "{}", p.stderr());
    assert!(p.stderr().contains(", not a worker: code=0"), "{}", p.stderr());
    assert!(orphan.iter().all(|&o| gone(o)));
}

#[test]
fn as_pid_1_an_orphan_past_the_shutdown_timeout_is_killed_and_counted() {
    let args = ["--workers", "1", "--listen", "127.0.0.1:0", "--shutdown-timeout", "1"];
    let Some((mut p, init, _, _)) = echo_as_pid_1(&args) else {
        return;
    };
    in_namespace(init, "(trap '' TERM; exec sleep 60) & exit 0");
    let started = Instant::now();
    signal(init, "TERM");
    let status = p.wait_exit(WAIT);
    assert!(started.elapsed() >= Duration::from_millis(900), "{:?}", started.elapsed());
    // One process had to be killed: exit 1, as for a worker.
    assert_eq!(status.code(), Some(1), "{}", p.stderr());
    assert!(p.stderr().contains("outlived the shutdown timeout"), "{}", p.stderr());
}

#[test]
fn as_pid_1_a_second_sigterm_while_waiting_for_other_processes_kills_them_and_exits_143() {
    let Some((mut p, init, master, _)) =
        echo_as_pid_1(&["--workers", "1", "--listen", "127.0.0.1:0"])
    else {
        return;
    };
    in_namespace(init, "(trap '' TERM; exec sleep 60) & exit 0");
    let orphan = others(init, &[master]);
    signal(init, "TERM");
    assert!(eventually(WAIT, || p.stderr().contains("waiting up to 10s")), "{}", p.stderr());
    let t = Instant::now();
    signal(init, "TERM");
    assert_eq!(p.wait_exit(WAIT).code(), Some(143), "{}", p.stderr());
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert!(orphan.iter().all(|&o| gone(o)));
}

#[test]
fn as_pid_1_sigquit_kills_every_worker_and_exits_128_plus_3() {
    let Some((mut p, init, _, _)) = echo_as_pid_1(&["--workers", "2", "--listen", "127.0.0.1:0"])
    else {
        return;
    };
    signal(init, "QUIT");
    assert_eq!(p.wait_exit(WAIT).code(), Some(131), "{}", p.stderr());
}

#[test]
fn a_second_sigterm_during_the_shutdown_exits_128_plus_15() {
    let mut cmd = Command::new(example("echo"));
    cmd.args(["--workers", "1", "--listen", "127.0.0.1:0"]);
    let mut p = Proc::start(cmd);
    let addr: SocketAddr = field(&p.expect("ready "), "addr").parse().unwrap();
    // An open connection keeps the drain going.
    let mut held = connect(addr).unwrap();
    roundtrip(&mut held, b"hold").unwrap();
    p.signal("TERM");
    assert!(eventually(WAIT, || p.stderr().contains("graceful shutdown")));
    p.signal("TERM");
    assert_eq!(p.wait_exit(WAIT).code(), Some(143), "{}", p.stderr());
}

#[test]
fn a_subreaper_master_reaps_a_child_that_is_not_a_worker() {
    // `sh` starts a child, then becomes the master (exec): the master has a
    // child it did not fork as a worker, which exits 300 ms later.
    let run = |subreaper: bool| {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "sleep 0.3 & exec \"$0\" \"$@\""]).arg(example("echo"));
        cmd.args(["--workers", "1", "--listen", "127.0.0.1:0"]);
        if subreaper {
            cmd.arg("--subreaper");
        }
        cmd.env("RUST_LOG", "debug");
        let mut p = Proc::start(cmd);
        p.expect("ready ");
        p
    };
    let mut p = run(true);
    assert!(eventually(Duration::from_secs(2), || p.stderr().contains(", not a worker: code=0")));
    assert_eq!(workers_of(p.pid()).len(), 1, "only the worker is left");
    p.signal("TERM");
    assert_eq!(p.wait_exit(WAIT).code(), Some(0), "{}", p.stderr());
    // Without it, the child stays a zombie: the master is not a reaper.
    let mut p = run(false);
    std::thread::sleep(Duration::from_millis(800));
    let zombies = workers_of(p.pid()).into_iter().filter(|&c| !alive(c) && !gone(c)).count();
    assert_eq!(zombies, 1, "{}", p.stderr());
    p.signal("TERM");
    assert_eq!(p.wait_exit(WAIT).code(), Some(0), "{}", p.stderr());
}

#[test]
fn as_pid_1_the_init_takes_mainpid_from_the_master_alone() {
    let Some((mut p, init, master, addr)) =
        echo_as_pid_1(&["--workers", "1", "--listen", "127.0.0.1:0"])
    else {
        return;
    };
    // The init's notification socket is abstract, in the network namespace
    // this test shares: anyone here can send to it, as any process of a
    // container could.
    // Its own, among those of the other tests' inits: the socket PID 1 holds.
    let held: Vec<String> = std::fs::read_dir(format!("/proc/{init}/fd"))
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok()?.to_str().map(str::to_string))
        .collect();
    let table = std::fs::read_to_string("/proc/net/unix").unwrap();
    let name = table
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| {
            f.len() > 7
                && f[7].starts_with("@mio-cluster-init-")
                && held.contains(&format!("socket:[{}]", f[6]))
        })
        .map(|f| f[7].to_string())
        .unwrap_or_else(|| panic!("no init socket of PID 1 in /proc/net/unix: {held:?}"));
    use std::os::linux::net::SocketAddrExt;
    let to = std::os::unix::net::SocketAddr::from_abstract_name(&name.as_bytes()[1..]).unwrap();
    let sock = std::os::unix::net::UnixDatagram::unbound().unwrap();
    sock.send_to_addr(b"MAINPID=1", &to).unwrap();
    assert!(eventually(WAIT, || p.stderr().contains("notification from pid")), "{}", p.stderr());
    assert!(p.stderr().contains("only the master (pid 2) may notify"), "{}", p.stderr());
    // Signals still go to the master: SIGHUP restarts its worker.
    let old = workers_of(master);
    signal(init, "HUP");
    assert!(eventually(WAIT, || {
        let now = workers_of(master);
        now.len() == 1 && now != old
    }));
    echo_once(addr).unwrap();
    signal(init, "TERM");
    assert_eq!(p.wait_exit(WAIT).code(), Some(0), "{}", p.stderr());
}
