//! The master's turn is fair: a worker that floods its channel with listen
//! and message frames gets a bounded share of each turn, and the other
//! workers' listens and a new worker's start are served in between.

mod util;

use std::time::{Duration, Instant};

use util::{field, Proc};

fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}

/// Worker 1 times 21 listen round trips; the median in microseconds.
fn listen_round_trip(m: &mut Proc) -> u64 {
    m.send("send 1 time-listen 127.0.0.1:0 21");
    let l = m.expect("message id=1 time-listen");
    median(field(&l, "us").split(',').map(|x| x.parse().unwrap()).collect())
}

/// Forks a worker and times it until it listens (as the test sees it).
fn fork_to_listening(m: &mut Proc, id: u32) -> u64 {
    let t = Instant::now();
    m.send("fork");
    m.expect(&format!("listening id={id} "));
    t.elapsed().as_micros() as u64
}

#[test]
fn a_worker_flooding_its_channel_delays_neither_another_workers_listen_nor_a_new_worker() {
    let mut m = Proc::fixture_env(&["--listen", "127.0.0.1:0"], &[("RUST_LOG", "info")]);
    m.send("fork");
    m.send("fork");
    m.expect("listening id=1 ");
    m.expect("listening id=2 ");

    // Quiet: the figures to compare with.
    let quiet_listen = listen_round_trip(&mut m);
    let quiet_fork = median((3..=5).map(|id| fork_to_listening(&mut m, id)).collect());

    // Worker 2 floods its channel for 4 s.
    m.send("send 2 flood 4000");
    std::thread::sleep(Duration::from_millis(300));
    let flood_listen = listen_round_trip(&mut m);
    let flood_fork = median((6..=8).map(|id| fork_to_listening(&mut m, id)).collect());
    let flooded = m.expect("flooded frames=");
    eprintln!(
        "listen round trip: quiet {quiet_listen} us, flooded {flood_listen} us; \
         fork to listening: quiet {quiet_fork} us, flooded {flood_fork} us; {flooded}"
    );
    assert!(flood_listen < 10_000, "listen round trip {flood_listen} us under a flood");
    assert!(
        flood_fork < quiet_fork + 10_000,
        "fork to listening {flood_fork} us under a flood, {quiet_fork} us quiet"
    );
}
