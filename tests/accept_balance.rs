//! Fair accept balance without a router. With exclusive wake-ups,
//! connections that arrive one after another go round the workers; with the
//! default, `Balance::Even`, a burst spreads too (and see `fair_share.rs`). The load
//! generator finds the worker serving each connection through /proc. (The
//! benchmark reports the exact figures; the bounds here are generous so a
//! busy CI machine does not fail them.)

mod util;

use std::process::Command;
use util::*;

fn spread(balance: &str, ramp_ms: &str) -> (Vec<usize>, f64) {
    let mut cmd = Command::new(example("echo"));
    cmd.args(["--workers", "4", "--listen", "127.0.0.1:0", "--balance", balance]);
    let mut p = Proc::start(cmd);
    let ready = p.expect("ready ");
    let (addr, pid) = (field(&ready, "addr").to_string(), field(&ready, "pid").to_string());
    // Let every worker register its listener.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let out = Command::new(example("loadgen"))
        .args(["--addr", &addr, "--connections", "64", "--duration", "3", "--ramp-ms", ramp_ms])
        .args(["--spread-pid", &pid])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let line = text.lines().find(|l| l.starts_with("spread")).unwrap_or_else(|| panic!("{text}"));
    let counts: Vec<usize> = field(line, "counts").split(',').map(|c| c.parse().unwrap()).collect();
    let jain: f64 = field(line, "jain").parse().unwrap();
    let result = text.lines().find(|l| l.starts_with("result")).unwrap();
    assert_eq!(field(result, "errors"), "0", "{result}");
    p.signal("TERM");
    assert_eq!(p.wait_exit(WAIT).code(), Some(0));
    (counts, jain)
}

#[test]
fn exclusive_wakeups_spread_paced_connections_over_every_worker() {
    if cfg!(feature = "portable-backend") {
        // A platform difference: without EPOLLEXCLUSIVE (macOS, FreeBSD)
        // every waiting worker is woken for each connection, and there is
        // no queue of waiters to go round: `Balance::Exclusive` is shared
        // wake-ups with turns, and whichever worker runs first takes the
        // connection (47 of 64 to one worker with both cores busy). The
        // board keeps the shares there: see the `Balance::Even` test.
        eprintln!("portable backend: no exclusive wake-ups to go round; skipped");
        return;
    }
    let (counts, jain) = spread("exclusive", "2");
    assert_eq!(counts.len(), 4);
    assert_eq!(counts.iter().sum::<usize>(), 64, "{counts:?}");
    assert!(counts.iter().all(|c| *c >= 8), "a worker was left out: {counts:?}");
    assert!(jain >= 0.85, "Jain index {jain:.3} for {counts:?}");
}

#[test]
fn even_balance_spreads_a_burst_of_connections_over_every_worker() {
    // All 64 connect at once, and the load starts on each at once: without
    // the board, the first workers to run take most of them.
    let (counts, jain) = spread("even", "0");
    assert_eq!(counts.len(), 4);
    assert_eq!(counts.iter().sum::<usize>(), 64, "{counts:?}");
    assert!(counts.iter().all(|c| *c >= 10), "a worker was left out: {counts:?}");
    assert!(jain >= 0.9, "Jain index {jain:.3} for {counts:?}");
}
