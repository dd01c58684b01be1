//! The supervisor on real processes: respawn, crash-loop stop, graceful
//! shutdown with a deadline, zero-downtime rolling restart, hung-worker
//! detection that survives a stopped master, scaling, status. The timing of
//! each rule (backoff delays, caps, deadlines) is unit-tested on a fake
//! clock in `src/supervisor/tests.rs`; here the order of what happens is.

mod util;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use util::*;

fn crash_file(name: &str) -> String {
    let p = std::env::temp_dir().join(format!("mio-cluster-{name}-{}", std::process::id()));
    let _ = std::fs::remove_file(&p);
    p.to_string_lossy().into_owned()
}

#[test]
fn workers_that_die_before_they_are_ready_are_respawned_until_the_deploy_is_fixed() {
    let file = crash_file("backoff");
    std::fs::write(&file, b"").unwrap();
    let mut m = Proc::fixture_env(
        &["--listen", "127.0.0.1:0"],
        &[
            ("FIXTURE_SUPERVISE", "1"),
            ("FIXTURE_BACKOFF_MS", "100"),
            ("FIXTURE_CRASH_LIMIT", "10"),
            ("FIXTURE_CRASH_FILE", &file),
        ],
    );
    for id in 1..=4 {
        let exit = m.expect(&format!("exit id={id}"));
        assert_eq!(field(&exit, "status"), "code=1", "{exit}");
        m.expect(&format!("fork id={}", id + 1));
    }
    // The deploy is fixed: the next worker (the one forked now, or the one
    // after it) listens and serves.
    std::fs::remove_file(&file).unwrap();
    let listening = m.expect_by("a worker listening", WAIT, |l| l.starts_with("listening"));
    let addr: SocketAddr = field(&listening, "addr").parse().unwrap();
    echo_once(addr).unwrap();
    let rows = status(&mut m);
    assert_eq!(rows.len(), 1);
    assert!(field(&rows[0], "restarts").parse::<u32>().unwrap() >= 4, "{rows:?}");
}

#[test]
fn a_worker_killed_as_soon_as_it_listens_is_always_replaced_and_never_a_crash_loop() {
    // A crash limit of 2 does not apply: these workers were ready.
    let mut m = Proc::fixture_env(
        &["--listen", "127.0.0.1:0"],
        &[("FIXTURE_SUPERVISE", "1"), ("FIXTURE_BACKOFF_MS", "100"), ("FIXTURE_CRASH_LIMIT", "2")],
    );
    let mut fork = m.expect("fork id=1");
    for id in 1..=6 {
        let pid: u32 = field(&fork, "pid").parse().unwrap();
        m.expect(&format!("listening id={id}"));
        // Killed as soon as it listens, every time: the replacement is
        // slowed down (never past READY_BACKOFF_MAX, 500 ms), never stopped.
        signal(pid, "KILL");
        m.expect(&format!("exit id={id}"));
        fork = m.expect(&format!("fork id={}", id + 1));
    }
    let addr: SocketAddr = field(&m.expect("listening id=7"), "addr").parse().unwrap();
    echo_once(addr).unwrap();
    let lines = m.drain(Duration::ZERO);
    assert!(!lines.iter().any(|l| l.starts_with("crashloop")), "{lines:?}");
    let rows = status(&mut m);
    assert_eq!(rows.len(), 1);
    assert_eq!(field(&rows[0], "restarts"), "6", "{rows:?}");
}

#[test]
fn a_worker_that_comes_online_but_exits_before_listening_every_time_is_a_crash_loop() {
    let file = crash_file("crashonline");
    std::fs::write(&file, b"").unwrap();
    let mut m = Proc::fixture_env(
        &["--listen", "127.0.0.1:0"],
        &[
            ("FIXTURE_SUPERVISE", "1"),
            ("FIXTURE_BACKOFF_MS", "10"),
            ("FIXTURE_CRASH_LIMIT", "3"),
            ("FIXTURE_CRASH_FILE", &file),
            ("FIXTURE_CRASH_ONLINE", "1"),
            // Heartbeats on: a worker that never ran its loop sent none.
            ("FIXTURE_HEARTBEAT_MS", "20"),
        ],
    );
    m.expect("online id=1");
    let cl = m.expect("crashloop");
    assert_eq!(field(&cl, "id"), "3");
    assert_eq!(field(&cl, "crashes"), "3");
    assert_eq!(field(&cl, "status"), "code=1");
    let later = m.drain(Duration::from_millis(500));
    assert!(
        !later.iter().any(|l| l.starts_with("fork id=4")),
        "respawned after the crash loop: {later:?}"
    );
    std::fs::remove_file(&file).unwrap();
}

#[test]
fn a_crash_loop_stops_respawning_with_an_event() {
    let file = crash_file("crashloop");
    std::fs::write(&file, b"").unwrap();
    let mut m = Proc::fixture_env(
        &["--listen", "127.0.0.1:0"],
        &[
            ("FIXTURE_SUPERVISE", "1"),
            ("FIXTURE_BACKOFF_MS", "10"),
            ("FIXTURE_CRASH_LIMIT", "3"),
            ("FIXTURE_CRASH_FILE", &file),
        ],
    );
    let cl = m.expect("crashloop");
    assert_eq!(field(&cl, "crashes"), "3");
    assert_eq!(field(&cl, "status"), "code=1");
    let later = m.drain(Duration::from_millis(500));
    assert!(
        !later.iter().any(|l| l.starts_with("fork id=4")),
        "respawned after the crash loop: {later:?}"
    );
    std::fs::remove_file(&file).unwrap();
}

#[test]
fn graceful_shutdown_waits_for_an_open_connection() {
    let (mut m, addr) = supervised(2, &[("FIXTURE_SIGNALS", "1")]);
    let mut held = connect(addr).unwrap();
    roundtrip(&mut held, b"a").unwrap();
    m.signal("TERM");
    m.expect("signal SIGTERM");
    // The worker holding the connection stays; nothing is respawned.
    std::thread::sleep(Duration::from_millis(300));
    roundtrip(&mut held, b"still served").unwrap();
    assert!(eventually(WAIT, || echo_once(addr).is_err()), "still accepting during shutdown");
    drop(held);
    assert_eq!(m.expect("alldisconnected"), "alldisconnected forced=0");
    let lines = m.drain(Duration::from_millis(100));
    assert!(
        !lines.iter().any(|l| l.starts_with("fork id=3")),
        "respawned during shutdown: {lines:?}"
    );
    // The master blocks the signals it reads; its workers must not inherit
    // that mask.
    for l in lines.iter().filter(|l| l.contains(" hello ")) {
        assert_eq!(field(l, "sigblk"), "0000000000000000", "{l}");
    }
}

#[test]
fn the_shutdown_deadline_kills_a_worker_that_never_finishes() {
    let (mut m, addr) = supervised(2, &[("FIXTURE_DISCONNECT_MS", "400")]);
    let mut held = connect(addr).unwrap();
    roundtrip(&mut held, b"a").unwrap();
    m.send("shutdown");
    assert_eq!(m.expect("alldisconnected"), "alldisconnected forced=1");
}

#[test]
fn a_second_sigterm_or_a_sigquit_kills_at_once() {
    let (mut m, addr) = supervised(2, &[("FIXTURE_SIGNALS", "1")]);
    let mut held = connect(addr).unwrap();
    roundtrip(&mut held, b"a").unwrap();
    m.signal("TERM");
    m.expect("signal SIGTERM");
    m.expect_by("one worker left", WAIT, |l| l.starts_with("exit"));
    m.signal("TERM");
    let done = m.expect("alldisconnected");
    assert_eq!(done, "alldisconnected forced=1");
    drop(held);

    let (mut m, _) = supervised(2, &[("FIXTURE_SIGNALS", "1")]);
    m.signal("QUIT");
    assert_eq!(m.expect("alldisconnected"), "alldisconnected forced=2");
}

/// Clients doing connect, echo, close in a loop until told to stop.
fn load(
    addr: SocketAddr,
    clients: usize,
    stop: Arc<AtomicBool>,
) -> Vec<std::thread::JoinHandle<(u64, Vec<String>)>> {
    (0..clients)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let (mut ok, mut failures) = (0u64, Vec::new());
                let deadline = Instant::now() + Duration::from_secs(60);
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    match connect(addr).and_then(|mut s| roundtrip(&mut s, b"0123456789abcdef")) {
                        Ok(()) => ok += 1,
                        Err(e) => failures.push(e.to_string()),
                    }
                }
                (ok, failures)
            })
        })
        .collect()
}

#[test]
fn a_rolling_restart_of_four_workers_under_load_loses_nothing() {
    let (mut m, addr) = supervised(4, &[]);
    let stop = Arc::new(AtomicBool::new(false));
    let clients = load(addr, 4, stop.clone());
    std::thread::sleep(Duration::from_millis(300));
    m.send("roll");
    m.expect_by("rollcomplete", Duration::from_secs(60), |l| l == "rollcomplete");
    for id in 1..=4 {
        let exit = m.expect(&format!("exit id={id}"));
        assert_eq!(field(&exit, "after_disconnect"), "true", "{exit}");
        assert_eq!(field(&exit, "status"), "code=0", "{exit}");
    }
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let (mut ok, mut failures) = (0, Vec::new());
    for c in clients {
        let (o, f) = c.join().unwrap();
        ok += o;
        failures.extend(f);
    }
    assert!(
        failures.is_empty(),
        "{} failures during the roll: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(ok > 100, "only {ok} requests during the roll");
    let rows = status(&mut m);
    let ids: Vec<&str> = rows.iter().map(|r| field(r, "id")).collect();
    assert_eq!(ids, ["5", "6", "7", "8"], "{rows:?}");
    eprintln!("rolling restart of 4 workers: {ok} requests, {} failures", failures.len());
}

#[test]
fn a_rolling_restart_whose_new_worker_crashes_leaves_the_old_ones_serving() {
    let file = crash_file("roll");
    let (mut m, addr) = supervised(2, &[("FIXTURE_CRASH_FILE", &file)]);
    std::fs::write(&file, b"").unwrap();
    m.send("roll");
    let failed = m.expect("rollfailed");
    assert_eq!(field(&failed, "id"), "3", "{failed}");
    std::fs::remove_file(&file).unwrap();
    let rows = status(&mut m);
    let ids: Vec<&str> = rows.iter().map(|r| field(r, "id")).collect();
    assert_eq!(ids, ["1", "2"], "{rows:?}");
    for _ in 0..10 {
        echo_once(addr).unwrap();
    }
    let lines = m.drain(Duration::from_millis(200));
    assert!(
        !lines.iter().any(|l| l.starts_with("exit id=1") || l.starts_with("exit id=2")),
        "{lines:?}"
    );
}

#[test]
fn a_hung_worker_is_killed_and_replaced() {
    let (mut m, addr) =
        supervised(2, &[("FIXTURE_HEARTBEAT_MS", "50"), ("FIXTURE_HEARTBEAT_TIMEOUT_MS", "600")]);
    m.send("send 1 hang");
    let hung = Instant::now();
    let u = m.expect("unresponsive id=1");
    // Silent for more than the timeout: 600.x ms prints as 600 (the
    // supervisor checks on every turn, not only at its deadline).
    let silent_ms: u64 = field(&u, "silent_ms").parse().unwrap();
    assert!(silent_ms >= 600, "{u}");
    let exit = m.expect("exit id=1");
    assert_eq!(field(&exit, "status"), "signal=SIGKILL");
    m.expect("listening id=3");
    // A sanity bound only (a busy CI machine runs this in debug, in
    // parallel with a load test): detection time is the timeout above.
    assert!(hung.elapsed() < Duration::from_secs(20), "replaced only after {:?}", hung.elapsed());
    echo_once(addr).unwrap();
    // The replacement sends heartbeats too (its first comes with its first
    // turn of the loop, just after it listens).
    assert!(
        eventually(WAIT, || status(&mut m).iter().all(|r| field(r, "hb") == "true")),
        "{:?}",
        status(&mut m)
    );
}

#[test]
fn a_stopped_master_kills_no_healthy_worker_when_it_resumes() {
    let (mut m, addr) =
        supervised(2, &[("FIXTURE_HEARTBEAT_MS", "50"), ("FIXTURE_HEARTBEAT_TIMEOUT_MS", "500")]);
    std::thread::sleep(Duration::from_millis(200));
    m.signal("STOP");
    std::thread::sleep(Duration::from_millis(1500));
    m.signal("CONT");
    std::thread::sleep(Duration::from_millis(1500));
    let lines = m.drain(Duration::ZERO);
    assert!(
        !lines.iter().any(|l| l.starts_with("unresponsive") || l.starts_with("exit")),
        "healthy workers killed after the master resumed: {lines:?}"
    );
    echo_once(addr).unwrap();
    assert_eq!(status(&mut m).len(), 2);
}

#[test]
fn ttin_and_ttou_change_the_live_count() {
    let (mut m, addr) = supervised(2, &[("FIXTURE_SIGNALS", "1")]);
    m.signal("TTIN");
    m.expect("listening id=3");
    assert_eq!(status(&mut m).len(), 3);
    m.signal("TTOU");
    let exit = m.expect("exit");
    assert_eq!(field(&exit, "after_disconnect"), "true");
    assert_eq!(field(&exit, "status"), "code=0");
    assert_eq!(status(&mut m).len(), 2);
    m.send("target 4");
    m.expect("listening id=4");
    m.expect("listening id=5");
    assert_eq!(status(&mut m).len(), 4);
    echo_once(addr).unwrap();
}
