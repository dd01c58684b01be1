//! Recycling, on the fake clock: which worker goes, when its replacement
//! starts, and what holds it back.

use super::*;
use crate::supervisor::rules::recycle::{CONNECTION_CHECK, RSS_CHECK};
use crate::supervisor::Recycle;

const MIB: u64 = 1 << 20;

fn recycling(workers: usize, connections: Option<u64>, rss: Option<u64>) -> Sim {
    let policy = Policy {
        workers,
        max_worker_connections: connections,
        max_worker_rss: rss,
        ..Policy::default()
    };
    let mut sim = Sim::new(policy);
    sim.rules.set_target(&mut sim.pool, workers, sim.now).unwrap();
    for id in 1..=workers as WorkerId {
        sim.listen(id, 0);
    }
    sim.calls();
    sim
}

#[test]
fn a_worker_at_its_connection_limit_is_replaced_by_one_that_listens_first() {
    let mut sim = recycling(2, Some(100), None);
    sim.advance(Duration::from_secs(10));
    sim.pool.accepted.insert(1, 100);
    sim.pool.accepted.insert(2, 100);
    sim.advance(CONNECTION_CHECK);
    assert_eq!(sim.calls(), ["fork 3"], "one at a time");
    sim.advance(CONNECTION_CHECK);
    assert!(sim.calls().is_empty(), "nothing more while worker 3 starts");
    sim.listen(3, 0);
    assert_eq!(sim.calls(), ["disconnect 1"], "the old one leaves once the new one listens");
    let events = sim.events();
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(events[0].starts_with("Recycled { id: 1, by: 3"), "{events:?}");
    sim.exit(1, ExitStatus::Code(0));
    assert_eq!(sim.rules.tally.exits.recycled, 1);
    assert_eq!(sim.rules.tally.recycled.connections, 1);
    assert_eq!(sim.rules.seats[0].worker, Some(3));
    assert_eq!(sim.rules.seats[0].restarts, 1);
    assert_eq!(sim.rules.seats[0].accepted_before, 100, "the slot's counter goes on");
    // Then worker 2.
    sim.advance(CONNECTION_CHECK);
    assert_eq!(sim.calls(), ["fork 4"]);
}

#[test]
fn the_replacement_starts_ahead_of_the_limit_and_the_old_worker_serves_up_to_it() {
    let mut sim = recycling(1, Some(100), None);
    // 95 connections in a second: a replacement starting takes about 10
    // more, so it starts now.
    sim.advance(Duration::from_secs(1));
    sim.pool.accepted.insert(1, 95);
    sim.advance(CONNECTION_CHECK);
    assert_eq!(sim.calls(), ["fork 2"]);
    // It takes 100 ms to be ready (measured: the next one starts as far
    // ahead).
    sim.advance(100 * MS);
    sim.listen(2, 0);
    assert!(sim.calls().is_empty(), "worker 1 serves until its limit");
    sim.pool.accepted.insert(1, 100);
    sim.advance(CONNECTION_CHECK);
    assert_eq!(sim.calls(), ["disconnect 1"]);
    // A worker whose accepts stop short of its limit leaves anyway, a
    // second after its replacement is ready.
    sim.exit(1, ExitStatus::Code(0));
    sim.advance(Duration::from_secs(1));
    sim.pool.accepted.insert(2, 99);
    sim.advance(CONNECTION_CHECK);
    assert_eq!(sim.calls(), ["fork 3"]);
    sim.listen(3, 0);
    sim.advance(Duration::from_millis(900));
    assert!(sim.calls().is_empty());
    sim.advance(Duration::from_millis(120));
    assert_eq!(sim.calls(), ["disconnect 2"]);
}

#[test]
fn memory_over_the_limit_for_three_checks_recycles_and_a_fresh_worker_over_it_turns_it_off() {
    let mut sim = recycling(1, None, Some(100 * MIB));
    sim.pool.rss.insert(1, 50 * MIB);
    sim.advance(RSS_CHECK);
    sim.pool.rss.insert(1, 150 * MIB);
    sim.advance(RSS_CHECK);
    sim.advance(RSS_CHECK);
    assert!(sim.calls().is_empty(), "two checks over: not yet");
    sim.advance(RSS_CHECK);
    assert_eq!(sim.calls(), ["fork 2"]);
    sim.listen(2, 0);
    assert_eq!(sim.calls(), ["disconnect 1"]);
    let events = sim.events();
    assert!(events[0].contains("Memory { rss: 157286400, limit: 104857600 }"), "{events:?}");
    // A limit a fresh worker is over already: the first one is recycled,
    // its successor is over it at its first check: off, no loop.
    let mut sim = recycling(1, None, Some(100 * MIB));
    sim.pool.rss.insert(1, 150 * MIB);
    sim.run_for(Duration::from_secs(4));
    assert_eq!(sim.calls(), ["fork 2"]);
    sim.pool.rss.insert(2, 150 * MIB);
    sim.listen(2, 0);
    assert_eq!(sim.calls(), ["disconnect 1"]);
    sim.exit(1, ExitStatus::Code(0));
    sim.run_for(Duration::from_secs(30));
    assert!(sim.calls().is_empty());
    assert_eq!(sim.rules.deadline(), None, "no more memory checks");
}

#[test]
fn recycling_waits_for_a_roll_and_a_roll_takes_a_recycling_under_way_as_its_first_step() {
    let mut sim = recycling(2, Some(100), None);
    sim.advance(Duration::from_secs(10));
    // A roll first: no recycling while it runs.
    sim.rules.rolling_restart(&mut sim.pool, sim.now).unwrap();
    assert_eq!(sim.calls(), ["fork 3"]);
    sim.pool.accepted.insert(2, 100);
    sim.advance(CONNECTION_CHECK);
    assert!(sim.calls().is_empty(), "{:?}", sim.rules.events);
    sim.listen(3, 0);
    assert_eq!(sim.calls(), ["disconnect 1", "fork 4"]);
    sim.listen(4, 0);
    assert_eq!(sim.calls(), ["disconnect 2"]);
    assert_eq!(sim.events(), ["RollComplete"]);
    // A recycling first, then SIGHUP: one roll, which replaces the rest.
    sim.advance(Duration::from_secs(10));
    sim.pool.accepted.insert(3, 100);
    sim.advance(CONNECTION_CHECK);
    assert_eq!(sim.calls(), ["fork 5"]);
    sim.rules.rolling_restart(&mut sim.pool, sim.now).unwrap();
    sim.listen(5, 0);
    assert_eq!(sim.calls(), ["disconnect 3", "fork 6"]);
    sim.listen(6, 0);
    assert_eq!(sim.calls(), ["disconnect 4"]);
    assert_eq!(sim.events(), ["RollComplete"]);
}

#[test]
fn held_recycling_waits_and_a_replacement_that_fails_holds_it_for_the_backoff() {
    let mut sim = recycling(1, Some(100), None);
    sim.advance(Duration::from_secs(10));
    sim.rules.recycling.held = true;
    sim.pool.accepted.insert(1, 100);
    sim.advance(CONNECTION_CHECK);
    assert!(sim.calls().is_empty(), "held (a hot upgrade)");
    sim.rules.recycling.held = false;
    sim.advance(CONNECTION_CHECK);
    assert_eq!(sim.calls(), ["fork 2"]);
    sim.crash(2);
    assert!(sim.events().is_empty(), "a recycling that fails is no roll that failed");
    sim.advance(Duration::from_secs(9));
    assert!(!sim.calls().iter().any(|c| c.starts_with("fork")), "held for backoff_max");
    sim.advance(Duration::from_secs(2));
    assert_eq!(sim.calls(), ["fork 3"]);
    let why = Recycle::Connections { accepted: 100, limit: 100 };
    assert_eq!(why.to_string(), "accepted 100 connections, its limit 100");
}
