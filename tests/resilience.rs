//! Workers are separate processes: one dying, or sending garbage, never
//! disturbs the master or the others, and nothing leaks.

mod util;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use util::*;

fn cluster(n: u32) -> (Proc, SocketAddr) {
    cluster_env(n, &[])
}

fn cluster_env(n: u32, env: &[(&str, &str)]) -> (Proc, SocketAddr) {
    let mut m = Proc::fixture_env(&["--listen", "127.0.0.1:0"], env);
    for _ in 0..n {
        m.send("fork");
    }
    let mut addr = None;
    for id in 1..=n {
        addr = Some(field(&m.expect(&format!("listening id={id}")), "addr").parse().unwrap());
    }
    (m, addr.unwrap())
}

#[test]
fn killing_one_of_three_workers_under_a_connect_loop_refuses_no_connection() {
    kill_under_connect_loop(&[]);
}

#[test]
fn the_same_with_every_worker_woken_for_every_connection() {
    kill_under_connect_loop(&[("FIXTURE_BALANCE", "shared")]);
}

/// Kills two of three workers while one client connects, echoes and closes
/// in a loop (the listen's balance from `env`).
fn kill_under_connect_loop(env: &[(&str, &str)]) {
    let (mut m, addr) = cluster_env(3, env);
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    // One client: connect, echo, close, as fast as it can, for a bounded time.
    let client = std::thread::spawn(move || {
        let (mut ok, mut refused, mut other) = (0u32, 0u32, Vec::new());
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !stop2.load(Ordering::Relaxed) && std::time::Instant::now() < deadline {
            match connect(addr) {
                Ok(mut s) => match roundtrip(&mut s, b"hello") {
                    Ok(()) => ok += 1,
                    Err(e) => other.push(e.to_string()),
                },
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => refused += 1,
                Err(e) => other.push(e.to_string()),
            }
        }
        (ok, refused, other)
    });
    std::thread::sleep(Duration::from_millis(300));
    m.send("kill 2 SIGKILL");
    m.expect("exit id=2");
    std::thread::sleep(Duration::from_millis(300));
    m.send("kill 3 SIGKILL");
    m.expect("exit id=3");
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let (ok, refused, other) = client.join().unwrap();
    assert_eq!(refused, 0, "connections refused while a worker was alive");
    // A connection that the killed worker had accepted but not yet answered
    // is reset by the kernel; with one client that is at most one per kill.
    assert!(other.len() <= 2, "failures beyond the in-flight ones: {other:?}");
    assert!(ok > 50, "only {ok} echoes");
    echo_once(addr).unwrap();
}

#[test]
fn a_worker_writing_garbage_is_dropped_and_the_others_keep_serving() {
    let (mut m, addr) = cluster(3);
    m.send("send 2 garbage");
    m.expect("disconnect id=2");
    // Its channel closed, it sees EOF and leaves; it is not a crash of ours.
    let exit = m.expect("exit id=2");
    assert_eq!(field(&exit, "status"), "code=0");
    // The log line travels on stderr, apart from the events on stdout.
    let logged = |l: &str| l.contains("worker 2") && l.contains("unknown frame tag 238");
    assert!(eventually(WAIT, || logged(&m.stderr())), "{}", m.stderr());
    for _ in 0..30 {
        echo_once(addr).unwrap();
    }
    for id in [1, 3] {
        m.send(&format!("send {id} report"));
        m.expect(&format!("message id={id} report"));
    }
    m.send("sockets");
    assert_eq!(m.expect("sockets"), "sockets 1");
}

#[test]
fn a_worker_dying_mid_frame_is_reported_and_the_others_keep_serving() {
    let (mut m, addr) = cluster(3);
    m.send("send 1 truncated");
    let exit = m.expect("exit id=1");
    assert_eq!(field(&exit, "status"), "code=3");
    assert!(eventually(WAIT, || m.stderr().contains("middle of a frame")), "{}", m.stderr());
    for _ in 0..30 {
        echo_once(addr).unwrap();
    }
    m.send("fork");
    m.expect("listening id=4");
}

#[test]
fn fork_and_kill_200_times_leaves_the_masters_descriptors_where_they_were() {
    let (mut m, addr) = cluster(1);
    m.send("fds");
    let before: usize = m.expect("fds").split(' ').nth(1).unwrap().parse().unwrap();
    for id in 2..202 {
        m.send("fork");
        // Half of them die before they are even online.
        if id % 2 == 0 {
            m.expect(&format!("listening id={id}"));
        } else {
            m.expect(&format!("fork id={id}"));
        }
        m.send(&format!("kill {id} SIGKILL"));
        m.expect(&format!("exit id={id}"));
    }
    m.send("fds");
    let after: usize = m.expect("fds").split(' ').nth(1).unwrap().parse().unwrap();
    assert_eq!(before, after, "descriptor count changed over 200 fork/kill cycles");
    m.send("sockets");
    assert_eq!(m.expect("sockets"), "sockets 1");
    echo_once(addr).unwrap();
}

#[test]
fn what_a_worker_sent_just_before_dying_is_delivered_before_its_exit() {
    let (mut m, _) = cluster(2);
    for id in 1..=2 {
        m.send(&format!("send {id} bye"));
        let mut order = Vec::new();
        while order.len() < 3 {
            let l = m.expect_by("events of the dying worker", WAIT, |l| {
                l == format!("message id={id} bye")
                    || l.starts_with(&format!("disconnect id={id}"))
                    || l.starts_with(&format!("exit id={id}"))
            });
            order.push(l.split(' ').next().unwrap().to_string());
        }
        assert_eq!(order, ["message", "disconnect", "exit"]);
    }
}
