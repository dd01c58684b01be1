//! A worker's life as the master sees it: events in order, graceful
//! disconnect, kill, the master's death, and what a worker inherits.

mod util;

use std::time::Duration;
use util::*;

/// Forks one worker listening on port 0 and waits until it listens.
fn one_listening_worker(extra_env: &[(&str, &str)]) -> (Proc, std::net::SocketAddr) {
    let mut m = Proc::fixture_env(&["--listen", "127.0.0.1:0"], extra_env);
    m.send("fork");
    let l = m.expect("listening id=1");
    let addr = field(&l, "addr").parse().unwrap();
    (m, addr)
}

#[test]
fn events_of_one_worker_come_in_order() {
    let mut m = Proc::fixture(&["--listen", "127.0.0.1:0"]);
    m.send("fork");
    let mut seen = Vec::new();
    let mut asked = false;
    loop {
        let l = m.expect_by("any event", WAIT, |_| true);
        if l.starts_with("message") {
            continue;
        }
        let kind = l.split(' ').next().unwrap().to_string();
        assert_eq!(field(&l, "id"), "1", "{l}");
        if kind == "listening" && !asked {
            m.send("disconnect 1");
            asked = true;
        }
        let done = kind == "exit";
        if done {
            assert_eq!(field(&l, "status"), "code=0", "{l}");
            assert_eq!(field(&l, "after_disconnect"), "true", "{l}");
        }
        seen.push(kind);
        if done {
            break;
        }
    }
    assert_eq!(seen, ["fork", "online", "listening", "leaving", "disconnect", "exit"]);
}

#[test]
fn disconnect_waits_for_an_open_connection_then_exits_0() {
    let (mut m, addr) = one_listening_worker(&[]);
    let mut client = connect(addr).unwrap();
    roundtrip(&mut client, b"before").unwrap();
    m.send("disconnect 1");
    m.expect("message id=1 leaving open=1");
    // The worker stopped listening, and the master closed the socket: the
    // last worker left it. New connections are refused...
    assert!(eventually(WAIT, || echo_once(addr).is_err()), "new connections still accepted");
    // ...but the open one is still served, and the worker has not exited.
    roundtrip(&mut client, b"during").unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let early: Vec<String> = m.drain(Duration::ZERO);
    assert!(
        !early.iter().any(|l| l.starts_with("exit")),
        "exited with a connection open: {early:?}"
    );
    drop(client);
    let exit = m.expect("exit id=1");
    assert_eq!(field(&exit, "status"), "code=0");
    assert_eq!(field(&exit, "after_disconnect"), "true");
}

#[test]
fn disconnect_deadline_kills_a_worker_that_never_finishes() {
    let (mut m, addr) = one_listening_worker(&[("FIXTURE_DISCONNECT_MS", "300")]);
    let mut client = connect(addr).unwrap();
    roundtrip(&mut client, b"hold").unwrap();
    m.send("disconnect 1");
    let exit = m.expect("exit id=1");
    assert_eq!(field(&exit, "status"), "signal=SIGKILL");
    assert_eq!(field(&exit, "after_disconnect"), "true");
}

#[test]
fn kill_delivers_exactly_the_signal_asked() {
    let (mut m, _) = one_listening_worker(&[]);
    m.send("kill 1 SIGUSR1");
    let exit = m.expect("exit id=1");
    assert_eq!(field(&exit, "status"), "signal=SIGUSR1");
    assert_eq!(field(&exit, "after_disconnect"), "false");
    m.send("fork");
    m.send("kill 2 SIGTERM");
    let exit = m.expect("exit id=2");
    assert_eq!(field(&exit, "status"), "signal=SIGTERM");
}

#[test]
fn worker_asking_to_leave_is_marked_exited_after_disconnect() {
    let (mut m, addr) = one_listening_worker(&[]);
    m.send("send 1 disconnect");
    let exit = m.expect("exit id=1");
    assert_eq!(field(&exit, "status"), "code=0");
    assert_eq!(field(&exit, "after_disconnect"), "true");
    assert!(eventually(WAIT, || echo_once(addr).is_err()));
}

#[test]
fn disconnect_all_reports_when_every_worker_is_gone() {
    let mut m = Proc::fixture(&["--listen", "127.0.0.1:0"]);
    for _ in 0..3 {
        m.send("fork");
    }
    for id in 1..=3 {
        m.expect(&format!("listening id={id}"));
    }
    m.send("disconnect-all");
    m.expect("alldisconnected");
    let exits: Vec<String> = (1..=3).map(|id| m.expect(&format!("exit id={id}"))).collect();
    for e in exits {
        assert_eq!(field(&e, "status"), "code=0");
    }
    m.send("sockets");
    assert_eq!(m.expect("sockets"), "sockets 0");
}

#[test]
fn master_sigkill_ends_every_worker_within_a_second() {
    let mut m = Proc::fixture(&["--listen", "127.0.0.1:0"]);
    let mut pids = Vec::new();
    for id in 1..=3 {
        m.send("fork");
        pids.push(field(&m.expect(&format!("fork id={id}")), "pid").parse::<u32>().unwrap());
    }
    for id in 1..=3 {
        m.expect(&format!("listening id={id}"));
    }
    assert!(pids.iter().all(|p| alive(*p)));
    m.signal("KILL");
    assert!(
        eventually(Duration::from_secs(1), || pids.iter().all(|p| !alive(*p))),
        "workers outlived the master by a second: {:?}",
        pids.iter().filter(|p| alive(**p)).collect::<Vec<_>>()
    );
}

#[test]
fn every_process_has_exactly_one_thread() {
    let mut m = Proc::fixture(&["--listen", "127.0.0.1:0"]);
    m.send("fork");
    m.send("fork");
    let pids: Vec<u32> = (1..=2)
        .map(|id| field(&m.expect(&format!("fork id={id}")), "pid").parse().unwrap())
        .collect();
    for id in 1..=2 {
        m.expect(&format!("listening id={id}"));
        // Each worker reads its own /proc/self/status too.
        assert_eq!(field(&m.expect(&format!("message id={id} hello")), "threads"), "1");
    }
    assert_eq!(threads_of(m.pid()), 1, "master");
    for p in pids {
        assert_eq!(threads_of(p), 1, "worker {p}");
    }
    m.send("threads");
    assert_eq!(m.expect("threads"), "threads 1");
}

#[test]
fn a_worker_inherits_its_channel_and_nothing_else() {
    let mut m = Proc::fixture(&["--listen", "127.0.0.1:0"]);
    m.send("fork");
    m.expect("listening id=1");
    // By now the master holds a signal-free reactor, a pidfd, a channel and
    // a listening socket: the second worker must see none of them.
    m.send("fork");
    let hello = m.expect("message id=2 hello");
    assert_eq!(field(&hello, "sigblk"), "0000000000000000", "signal mask not empty: {hello}");
    let fds: Vec<&str> = field(&hello, "fdlist").split(',').collect();
    let count = |what: &str| fds.iter().filter(|f| f.contains(what)).count();
    assert_eq!(count("socket:"), 1, "exactly one socket (the channel) expected: {fds:?}");
    assert_eq!(count("eventpoll"), 1, "exactly one epoll (the worker's own) expected: {fds:?}");
    // Anything else must be something the master itself inherited from the
    // test's environment (same number, same target), not something it opened.
    let master_fds: Vec<String> = std::fs::read_dir(format!("/proc/{}/fd", m.pid()))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let t = std::fs::read_link(e.path()).ok()?;
            Some(format!("{}>{}", e.file_name().to_string_lossy(), t.display()))
        })
        .collect();
    for f in &fds {
        let (n, target) = f.split_once('>').unwrap();
        if ["0", "1", "2"].contains(&n)
            || target.contains("socket:")
            || target.contains("eventpoll")
            || target.starts_with("/proc/")
        {
            continue;
        }
        assert!(
            master_fds.contains(&f.to_string()),
            "descriptor {f} came from the master: {fds:?} vs {master_fds:?}"
        );
        assert!(!target.contains("anon_inode"), "master's {f} leaked into the worker");
    }
    assert!(!fds.iter().any(|f| f.contains("pidfd") || f.contains("signalfd")), "{fds:?}");
}

#[test]
fn a_leaving_worker_with_exclusive_wakeups_takes_no_new_connection() {
    // Workers register with EPOLLEXCLUSIVE: one waiting worker is woken per
    // connection. A leaving worker must be out of that queue at once, or a
    // connection could wake it, go unaccepted, and wait.
    let mut m = Proc::fixture(&["--listen", "127.0.0.1:0"]);
    m.send("fork");
    m.send("fork");
    let addr: std::net::SocketAddr = field(&m.expect("listening id=1"), "addr").parse().unwrap();
    m.expect("listening id=2");
    let mut held = connect(addr).unwrap();
    roundtrip(&mut held, b"held").unwrap();
    let holder = match conns_of(&mut m, &[1, 2])[..] {
        [1, 0] => 1,
        [0, 1] => 2,
        ref c => panic!("one worker should hold the connection: {c:?}"),
    };
    m.send(&format!("disconnect {holder}"));
    m.expect(&format!("message id={holder} leaving open=1"));
    // Every new connection is served by the other worker, promptly.
    for _ in 0..30 {
        echo_once(addr).unwrap();
    }
    roundtrip(&mut held, b"still").unwrap();
}
