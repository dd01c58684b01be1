//! Hung-worker detection, on the fake clock.

use super::*;

fn heartbeats(abort_first: bool) -> Sim {
    let mut sim = Sim::with_workers(2);
    sim.rules.heartbeat =
        Some(Heartbeat { interval: 100 * MS, timeout: Duration::from_secs(1), abort_first });
    sim.calls();
    sim
}

#[test]
fn a_silent_worker_is_killed_just_after_the_timeout_and_one_that_beats_never() {
    let mut sim = heartbeats(false);
    for _ in 0..20 {
        sim.observe(Event::Heartbeat { id: 2 });
        sim.advance(100 * MS);
    }
    // Worker 1 was silent 2 s: killed once its silence passed 1 s.
    let calls = sim.calls();
    assert_eq!(calls, ["kill 1 SIGKILL"]);
    assert_eq!(sim.events(), ["Unresponsive { id: 1, silent_for: 1.1s }"]);
    // Its deadline was exact: the kill came at the first turn past 1 s.
    let mut sim = heartbeats(false);
    sim.observe(Event::Heartbeat { id: 1 });
    sim.observe(Event::Heartbeat { id: 2 });
    sim.advance(Duration::from_secs(1));
    assert!(sim.calls().is_empty(), "silent exactly the timeout: alive");
    assert_eq!(sim.rules.deadline(), Some(sim.now + MS));
    sim.advance(MS);
    assert_eq!(sim.calls(), ["kill 1 SIGKILL", "kill 2 SIGKILL"].map(String::from).to_vec());
}

#[test]
fn abort_first_sends_sigabrt_then_sigkill_a_second_later() {
    let mut sim = heartbeats(true);
    // Worker 2's channel closed: it is on its way out, not hung.
    sim.observe(Event::Disconnect { id: 2 });
    sim.run_for(Duration::from_millis(1001));
    assert_eq!(sim.calls(), ["kill 1 SIGABRT"]);
    sim.run_for(Duration::from_secs(1));
    assert_eq!(sim.calls(), ["kill 1 SIGKILL"]);
    sim.run_for(Duration::from_secs(10));
    assert!(sim.calls().is_empty(), "once, and never a worker on its way out");
}

#[test]
fn time_the_process_was_stopped_does_not_count_against_workers() {
    let mut sim = heartbeats(false);
    sim.observe(Event::Heartbeat { id: 1 });
    sim.observe(Event::Heartbeat { id: 2 });
    sim.advance(500 * MS);
    // Stopped for 20 s: the first turn after it kills nobody...
    sim.advance(Duration::from_secs(20));
    assert!(sim.calls().is_empty());
    // ... and silence counts again from there.
    sim.run_for(Duration::from_millis(1001));
    assert_eq!(sim.calls().len(), 2);
}
