//! Every rule of the supervisor, on a fake clock and a model of the master:
//! no process, no socket, no sleep. (The end-to-end tests in `tests/` run
//! the same rules on real processes.)

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io;
use std::time::{Duration, Instant};

mod heartbeats;
mod recycle;

use super::policy::{Policy, QUICK_DEATH, READY_BACKOFF_MAX};
use super::rules::{Pool, Rules, Seat, Verdict};
use crate::listen::Address;
use crate::master::{Event, ExitStatus, Heartbeat, SocketId, State, WorkerInfo};
use crate::{Signal, WorkerId};

const MS: Duration = Duration::from_millis(1);

/// The master as the rules see it: workers, their sockets, and a log of
/// every call.
#[derive(Default)]
struct FakePool {
    next: WorkerId,
    workers: BTreeMap<WorkerId, (WorkerInfo, Vec<SocketId>)>,
    env: BTreeMap<WorkerId, Vec<(OsString, OsString)>>,
    keep: BTreeMap<WorkerId, Option<Duration>>,
    shutting_down: bool,
    fail_forks: bool,
    calls: Vec<String>,
    /// What each worker accepted, and its resident memory.
    accepted: BTreeMap<WorkerId, u64>,
    rss: BTreeMap<WorkerId, u64>,
}

impl Pool for FakePool {
    fn fork(&mut self, env: &[(OsString, OsString)]) -> io::Result<WorkerId> {
        if self.fail_forks {
            self.calls.push("fork failed".into());
            return Err(io::Error::other("no fork today"));
        }
        self.next += 1;
        let id = self.next;
        let info =
            WorkerInfo { id, pid: 1000 + id, state: State::None, exited_after_disconnect: false };
        self.workers.insert(id, (info, Vec::new()));
        self.env.insert(id, env.to_vec());
        self.calls.push(format!("fork {id}"));
        Ok(id)
    }
    fn disconnect(&mut self, id: WorkerId) -> io::Result<()> {
        let (w, sockets) = self.workers.get_mut(&id).ok_or(io::ErrorKind::NotFound)?;
        w.exited_after_disconnect = true;
        sockets.clear();
        self.calls.push(format!("disconnect {id}"));
        Ok(())
    }
    fn disconnect_all(&mut self) -> io::Result<()> {
        self.shutting_down = true;
        for (w, sockets) in self.workers.values_mut() {
            w.exited_after_disconnect = true;
            sockets.clear();
        }
        self.calls.push("disconnect-all".into());
        Ok(())
    }
    fn is_shutting_down(&self) -> bool {
        self.shutting_down
    }
    fn kill(&mut self, id: WorkerId, signal: Signal) -> io::Result<()> {
        self.calls.push(format!("kill {id} {signal}"));
        Ok(())
    }
    fn kill_all(&mut self) {
        self.calls.push("kill-all".into());
    }
    fn keep_sockets(&mut self, id: WorkerId, longest: Option<Duration>) {
        self.keep.insert(id, longest);
    }
    fn release_kept(&mut self) {
        self.calls.push("release-kept".into());
    }
    fn worker(&self, id: WorkerId) -> Option<WorkerInfo> {
        self.workers.get(&id).map(|w| w.0)
    }
    fn live(&self) -> Vec<WorkerInfo> {
        self.workers.values().map(|w| w.0).collect()
    }
    fn sockets(&self, id: WorkerId) -> Vec<SocketId> {
        self.workers.get(&id).map(|w| w.1.clone()).unwrap_or_default()
    }
    fn accepted(&self, id: WorkerId) -> u64 {
        self.accepted.get(&id).copied().unwrap_or(0)
    }
    fn rss(&self, id: WorkerId) -> Option<u64> {
        self.workers.contains_key(&id).then(|| self.rss.get(&id).copied().unwrap_or(0))
    }
}

/// The rules, the model, and a clock that moves only when told.
struct Sim {
    rules: Rules,
    pool: FakePool,
    now: Instant,
}

impl Sim {
    fn new(policy: Policy) -> Sim {
        let now = Instant::now();
        Sim { rules: Rules::new(policy, now), pool: FakePool::default(), now }
    }

    fn with_workers(n: usize) -> Sim {
        let mut sim = Sim::new(Policy { workers: n, ..Policy::default() });
        sim.rules.set_target(&mut sim.pool, n, sim.now).unwrap();
        sim
    }

    /// Moves the clock and fires what is due.
    fn advance(&mut self, by: Duration) {
        self.now += by;
        self.rules.fire(&mut self.pool, self.now);
    }

    /// Fires every deadline up to `by` from now, in order, as a loop that
    /// waits for each would.
    fn run_for(&mut self, by: Duration) {
        let end = self.now + by;
        while let Some(next) = self.rules.deadline().filter(|&d| d <= end) {
            self.now = next.max(self.now);
            self.rules.fire(&mut self.pool, self.now);
        }
        self.now = end;
        self.rules.fire(&mut self.pool, self.now);
    }

    fn observe(&mut self, event: Event) {
        self.rules.observe(&mut self.pool, &event, self.now);
    }

    fn state(&mut self, id: WorkerId, state: State) {
        self.pool.workers.get_mut(&id).expect("a live worker").0.state = state;
    }

    fn online(&mut self, id: WorkerId) {
        self.state(id, State::Online);
        self.observe(Event::Online { id });
    }

    /// The worker listens on shared socket `socket`.
    fn listen(&mut self, id: WorkerId, socket: u32) {
        self.state(id, State::Listening);
        self.pool.workers.get_mut(&id).expect("a live worker").1.push(SocketId(socket));
        let address = Address::Inet("127.0.0.1:7000".parse().expect("an address"));
        self.observe(Event::Listening { id, address });
    }

    fn exit(&mut self, id: WorkerId, status: ExitStatus) {
        let (info, _) = self.pool.workers.remove(&id).expect("a live worker");
        self.observe(Event::Disconnect { id });
        self.observe(Event::Exit {
            id,
            pid: info.pid,
            status,
            exited_after_disconnect: info.exited_after_disconnect,
            accepted_connections: self.pool.accepted.get(&id).copied().unwrap_or(0),
            cpu_time: Some(MS),
        });
    }

    fn crash(&mut self, id: WorkerId) {
        self.exit(id, ExitStatus::Signal(9));
    }

    /// The calls made since the last look.
    fn calls(&mut self) -> Vec<String> {
        std::mem::take(&mut self.pool.calls)
    }

    fn events(&mut self) -> Vec<String> {
        self.rules.events.drain(..).map(|e| format!("{e:?}")).collect()
    }

    fn live(&self) -> Vec<WorkerId> {
        self.pool.workers.keys().copied().collect()
    }
}

fn policy() -> Policy {
    Policy { workers: 1, ..Policy::default() }
}

// ---- The respawn rule alone.

#[test]
fn workers_that_never_became_ready_back_off_to_the_limit_then_give_up() {
    let (p, mut seat) = (policy(), Seat::default());
    let delays: Vec<Verdict> = (0..5).map(|_| seat.death(&p, None)).collect();
    let want = [100, 200, 400, 800].map(|ms| Verdict::Replace(ms * MS));
    assert_eq!(delays[..4], want);
    assert_eq!(delays[4], Verdict::GiveUp);
}

#[test]
fn a_worker_that_was_ready_is_always_replaced_within_half_a_second() {
    let (p, mut seat) = (policy(), Seat::default());
    // Killed as soon as ready, a hundred times: capped, never given up.
    let delays: Vec<Verdict> = (0..100).map(|_| seat.death(&p, Some(MS))).collect();
    assert_eq!(delays[..5], [100, 200, 400, 500, 500].map(|ms| Verdict::Replace(ms * MS)));
    assert!(delays.iter().all(|d| *d != Verdict::GiveUp));
    // One that served a while is replaced at once, and resets the count.
    assert_eq!(seat.death(&p, Some(QUICK_DEATH)), Verdict::Replace(Duration::ZERO));
    assert_eq!(seat.death(&p, Some(MS)), Verdict::Replace(100 * MS));
}

#[test]
fn a_ready_worker_between_bad_starts_resets_the_crash_count() {
    let (p, mut seat) = (policy(), Seat::default());
    for _ in 0..10 {
        for _ in 0..p.crash_limit - 1 {
            assert_ne!(seat.death(&p, None), Verdict::GiveUp);
        }
        assert_eq!(seat.death(&p, Some(Duration::from_secs(1))), Verdict::Replace(Duration::ZERO));
    }
    // A low backoff_max caps both.
    let p = Policy { backoff_max: 50 * MS, ..policy() };
    let mut seat = Seat::default();
    assert_eq!(seat.death(&p, None), Verdict::Replace(50 * MS));
    assert_eq!(seat.death(&p, Some(MS)), Verdict::Replace(50 * MS));
}

// ---- Starting, respawning, giving up.

#[test]
fn start_forks_the_target_at_once_and_asks_the_master_to_keep_their_sockets() {
    let mut sim = Sim::with_workers(3);
    assert_eq!(sim.calls(), ["fork 1", "fork 2", "fork 3"]);
    let keep = Policy::default().backoff_max + Policy::default().start_timeout;
    assert!(sim.pool.keep.values().all(|k| *k == Some(keep)), "{:?}", sim.pool.keep);
    assert_eq!(sim.rules.deadline(), None, "nothing due once the pool is full");
}

#[test]
fn a_ready_worker_that_dies_is_replaced_at_once_and_one_that_died_quickly_after_a_delay() {
    let mut sim = Sim::with_workers(1);
    sim.calls();
    sim.listen(1, 0);
    sim.advance(Duration::from_secs(1));
    sim.crash(1);
    sim.advance(Duration::ZERO);
    assert_eq!(sim.calls(), ["fork 2"], "served a second: replaced at once");
    // Ready, then dead 10 ms later, again and again: 100, 200, 400, 500 ms.
    let mut id = 2;
    for want in [100, 200, 400, 500, 500] {
        sim.listen(id, 0);
        sim.advance(10 * MS);
        sim.crash(id);
        sim.advance(Duration::ZERO);
        assert_eq!(sim.rules.deadline(), Some(sim.now + want * MS));
        sim.advance(want * MS - MS);
        assert!(sim.calls().is_empty(), "not before {want} ms");
        sim.advance(MS);
        id += 1;
        assert_eq!(sim.calls(), [format!("fork {id}")]);
    }
    assert!(sim.events().is_empty(), "never a crash loop");
}

#[test]
fn workers_that_die_before_they_are_ready_back_off_then_the_supervisor_gives_up() {
    let mut sim = Sim::with_workers(1);
    sim.calls();
    let mut id = 1;
    for want in [100, 200, 400, 800] {
        sim.online(id);
        sim.advance(50 * MS);
        sim.exit(id, ExitStatus::Code(1));
        sim.advance(want * MS - MS);
        assert!(sim.calls().is_empty(), "not before {want} ms");
        sim.advance(MS);
        id += 1;
        assert_eq!(sim.calls(), [format!("fork {id}")]);
    }
    sim.exit(id, ExitStatus::Code(1));
    assert_eq!(sim.events(), [format!("CrashLoop {{ id: {id}, crashes: 5, status: Code(1) }}")]);
    assert_eq!(sim.calls(), ["release-kept"]);
    sim.run_for(Duration::from_secs(60));
    assert!(sim.calls().is_empty(), "no start after a crash loop");
    assert_eq!(sim.rules.deadline(), None);
}

#[test]
fn a_worker_that_lived_past_the_crash_window_counts_as_ready_though_it_never_said_so() {
    let mut sim = Sim::with_workers(1);
    sim.calls();
    for id in 1..=10 {
        sim.advance(Policy::default().crash_window);
        sim.crash(id);
        sim.advance(Duration::ZERO);
        assert_eq!(sim.calls(), [format!("fork {}", id + 1)], "replaced at once");
    }
    assert!(sim.events().is_empty());
}

#[test]
fn a_heartbeat_or_ready_makes_a_worker_ready_without_listening() {
    for ready in [Event::Heartbeat { id: 1 }, Event::Ready { id: 1 }] {
        let mut sim = Sim::with_workers(1);
        sim.calls();
        sim.observe(ready);
        sim.advance(Duration::from_secs(1));
        sim.crash(1);
        sim.advance(Duration::ZERO);
        assert_eq!(sim.calls(), ["fork 2"], "replaced at once: it was ready");
    }
}

#[test]
fn without_respawn_a_dead_worker_is_not_replaced_and_its_sockets_are_not_kept() {
    let mut sim = Sim::new(Policy { workers: 2, respawn: false, ..Policy::default() });
    sim.rules.set_target(&mut sim.pool, 2, sim.now).unwrap();
    assert!(sim.pool.keep.is_empty());
    sim.calls();
    sim.listen(1, 0);
    sim.crash(1);
    sim.run_for(Duration::from_secs(60));
    assert!(sim.calls().is_empty());
    assert_eq!(sim.live(), [2]);
}

#[test]
fn a_failed_fork_is_retried_after_backoff_max() {
    let mut sim = Sim::new(policy());
    sim.pool.fail_forks = true;
    sim.rules.set_target(&mut sim.pool, 1, sim.now).unwrap();
    assert_eq!(sim.calls(), ["fork failed"]);
    sim.pool.fail_forks = false;
    sim.advance(Policy::default().backoff_max - MS);
    assert!(sim.calls().is_empty());
    sim.advance(MS);
    assert_eq!(sim.calls(), ["fork 1"]);
}

// ---- Leaving, scaling, forks through the supervisor.

#[test]
fn a_worker_that_leaves_is_replaced_at_once_and_not_again_when_it_exits() {
    let mut sim = Sim::with_workers(2);
    sim.calls();
    sim.listen(1, 0);
    sim.observe(Event::Leaving { id: 1 });
    sim.advance(Duration::ZERO);
    assert_eq!(sim.calls(), ["fork 3"], "replaced while it finishes");
    sim.advance(Duration::from_secs(5));
    sim.pool.workers.get_mut(&1).unwrap().0.exited_after_disconnect = true;
    sim.exit(1, ExitStatus::Code(0));
    sim.run_for(Duration::from_secs(60));
    assert!(sim.calls().is_empty());
    assert_eq!(sim.live(), [2, 3]);
}

#[test]
fn a_smaller_target_retires_the_last_seats_and_a_larger_one_fills_new_seats_at_once() {
    let mut sim = Sim::with_workers(3);
    sim.calls();
    sim.rules.set_target(&mut sim.pool, 1, sim.now).unwrap();
    assert_eq!(sim.calls(), ["disconnect 3", "disconnect 2"]);
    assert_eq!(sim.pool.keep[&3], None, "a retired worker's sockets are not kept");
    // They leave and exit: nobody replaces them.
    for id in [2, 3] {
        sim.observe(Event::Leaving { id });
        sim.exit(id, ExitStatus::Code(0));
    }
    sim.run_for(Duration::from_secs(60));
    assert!(sim.calls().is_empty());
    sim.rules.set_target(&mut sim.pool, 2, sim.now).unwrap();
    assert_eq!(sim.calls(), ["fork 4"]);
    // SIGTTIN and SIGTTOU step by one, never below one.
    sim.rules.handle_signal(&mut sim.pool, Signal::SIGTTIN, sim.now).unwrap();
    assert_eq!(sim.rules.seats.len(), 3);
    for _ in 0..5 {
        sim.rules.handle_signal(&mut sim.pool, Signal::SIGTTOU, sim.now).unwrap();
    }
    assert_eq!(sim.rules.seats.len(), 1);
}

#[test]
fn a_worker_forked_through_the_supervisor_takes_a_seat_whose_environment_survives_respawns() {
    let mut sim = Sim::with_workers(1);
    let env = vec![(OsString::from("COLOUR"), OsString::from("green"))];
    let id = sim.rules.fork(&mut sim.pool, env.clone(), sim.now).unwrap();
    assert_eq!(sim.rules.seats.len(), 2);
    sim.listen(id, 0);
    sim.advance(Duration::from_secs(1));
    sim.crash(id);
    sim.advance(Duration::ZERO);
    assert_eq!(sim.pool.env[&3], env);
}

// ---- Rolling restarts.

/// Two workers listening on socket 0, both ready.
fn serving() -> Sim {
    let mut sim = Sim::with_workers(2);
    sim.listen(1, 0);
    sim.listen(2, 0);
    sim.calls();
    sim
}

#[test]
fn a_roll_replaces_one_worker_at_a_time_and_each_old_one_leaves_only_once_its_successor_listens() {
    let mut sim = serving();
    sim.rules.rolling_restart(&mut sim.pool, sim.now).unwrap();
    assert_eq!(sim.calls(), ["fork 3"]);
    sim.online(3);
    assert!(sim.calls().is_empty(), "online is not enough: worker 1 listened");
    sim.listen(3, 0);
    assert_eq!(sim.calls(), ["disconnect 1", "fork 4"]);
    sim.listen(4, 0);
    assert_eq!(sim.calls(), ["disconnect 2"]);
    assert_eq!(sim.events(), ["RollComplete"]);
    // The new workers have the old seats: their deaths are respawned.
    for id in [1, 2] {
        sim.observe(Event::Leaving { id });
        sim.exit(id, ExitStatus::Code(0));
    }
    sim.advance(Duration::from_secs(1));
    sim.crash(3);
    sim.advance(Duration::ZERO);
    assert_eq!(sim.calls(), ["fork 5"]);
    assert_eq!(sim.rules.restarts(4), Some(1));
}

#[test]
fn a_rolls_new_worker_must_hold_every_shared_socket_and_say_ready_if_the_old_one_did() {
    let mut sim = Sim::with_workers(1);
    sim.listen(1, 0);
    sim.listen(1, 1);
    sim.observe(Event::Ready { id: 1 });
    sim.calls();
    sim.rules.rolling_restart(&mut sim.pool, sim.now).unwrap();
    sim.listen(2, 0);
    sim.observe(Event::Ready { id: 2 });
    assert_eq!(sim.calls(), ["fork 2"], "socket 1 missing");
    sim.listen(2, 1);
    assert_eq!(sim.calls(), ["disconnect 1"], "both sockets, and ready");
}

#[test]
fn a_rolls_new_worker_that_holds_the_sockets_waits_for_ready_when_the_old_one_said_it() {
    let mut sim = Sim::with_workers(1);
    sim.listen(1, 0);
    sim.observe(Event::Ready { id: 1 });
    sim.calls();
    sim.rules.rolling_restart(&mut sim.pool, sim.now).unwrap();
    sim.listen(2, 0);
    assert_eq!(sim.calls(), ["fork 2"]);
    sim.observe(Event::Ready { id: 2 });
    assert_eq!(sim.calls(), ["disconnect 1"]);
}

#[test]
fn a_rolls_new_worker_that_dies_or_is_late_stops_the_roll_and_the_old_ones_keep_serving() {
    let mut sim = serving();
    sim.rules.rolling_restart(&mut sim.pool, sim.now).unwrap();
    sim.crash(3);
    assert_eq!(
        sim.events(),
        ["RollFailed { id: 3, reason: \"exited (signal=SIGKILL) before it was ready\" }"]
    );
    sim.run_for(Duration::from_secs(60));
    assert_eq!(sim.calls(), ["fork 3"], "nothing more");
    assert_eq!(sim.live(), [1, 2]);
    // A late one: killed at the start timeout.
    sim.rules.rolling_restart(&mut sim.pool, sim.now).unwrap();
    sim.online(4);
    sim.run_for(Policy::default().start_timeout);
    assert_eq!(sim.calls(), ["fork 4", "kill 4 SIGKILL"]);
    assert_eq!(sim.events(), ["RollFailed { id: 4, reason: \"was not ready in time\" }"]);
    assert!(!sim.calls().iter().any(|c| c.starts_with("disconnect")));
}

#[test]
fn a_second_roll_while_one_runs_is_refused() {
    let mut sim = serving();
    sim.rules.rolling_restart(&mut sim.pool, sim.now).unwrap();
    let e = sim.rules.rolling_restart(&mut sim.pool, sim.now).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
    // SIGHUP says so in the log, and is no error.
    assert!(sim.rules.handle_signal(&mut sim.pool, Signal::SIGHUP, sim.now).unwrap());
    assert_eq!(sim.calls(), ["fork 3"]);
}

#[test]
fn an_old_worker_that_dies_during_its_step_leaves_its_seat_to_the_new_one() {
    let mut sim = serving();
    sim.rules.rolling_restart(&mut sim.pool, sim.now).unwrap();
    sim.crash(1);
    sim.advance(Duration::from_secs(1));
    assert_eq!(sim.calls(), ["fork 3"], "the roll's new worker takes the seat");
    sim.listen(3, 0);
    assert_eq!(sim.calls(), ["fork 4"]);
    assert_eq!(sim.rules.seats[0].worker, Some(3));
}

// ---- Shutdown and signals.

#[test]
fn a_shutdown_disconnects_all_and_nothing_is_started_after_it() {
    let mut sim = serving();
    sim.rules.handle_signal(&mut sim.pool, Signal::SIGTERM, sim.now).unwrap();
    assert_eq!(sim.calls(), ["release-kept", "disconnect-all"]);
    sim.crash(1);
    sim.run_for(Duration::from_secs(60));
    assert!(sim.calls().is_empty());
    // A second SIGTERM kills at once.
    sim.rules.handle_signal(&mut sim.pool, Signal::SIGTERM, sim.now).unwrap();
    assert_eq!(sim.calls(), ["kill-all"]);
}

#[test]
fn sigquit_kills_at_once_and_unknown_signals_are_left_to_the_application() {
    let mut sim = serving();
    assert!(sim.rules.handle_signal(&mut sim.pool, Signal::SIGQUIT, sim.now).unwrap());
    assert_eq!(sim.calls(), ["release-kept", "disconnect-all", "kill-all"]);
    assert!(!sim.rules.handle_signal(&mut sim.pool, Signal::SIGUSR1, sim.now).unwrap());
}

#[test]
fn a_roll_in_progress_stops_at_a_shutdown() {
    let mut sim = serving();
    sim.rules.rolling_restart(&mut sim.pool, sim.now).unwrap();
    sim.rules.shutdown(&mut sim.pool).unwrap();
    sim.listen(3, 0);
    assert_eq!(sim.calls(), ["fork 3", "release-kept", "disconnect-all"]);
    assert!(sim.events().is_empty());
}

#[test]
fn ready_backoff_is_capped_at_half_a_second_whatever_backoff_max_says() {
    assert_eq!(READY_BACKOFF_MAX, 500 * MS);
    let mut sim =
        Sim::new(Policy { workers: 1, backoff_initial: Duration::from_secs(2), ..policy() });
    sim.rules.set_target(&mut sim.pool, 1, sim.now).unwrap();
    sim.listen(1, 0);
    sim.crash(1);
    sim.advance(Duration::ZERO);
    assert_eq!(sim.rules.deadline(), Some(sim.now + READY_BACKOFF_MAX));
}
