//! A pool under fire: the echo example with 4 workers serves a connect
//! loop while a random worker is `SIGKILL`ed every 250 ms for 15 s. The
//! master must keep replacing them (workers that were listening are always
//! replaced), so no connection is ever refused, only a connection open on a
//! killed worker may fail, and the pool is whole again soon after the last
//! kill.

mod util;

use std::io::{self, Write};
use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use util::*;

const WORKERS: usize = 4;
const KILL_EVERY: Duration = Duration::from_millis(250);
const KILL_FOR: Duration = Duration::from_secs(15);
/// How soon after the last kill the pool must be whole again.
const REFILL_WITHIN: Duration = Duration::from_secs(1);

/// The live (not zombie) children of `pid`.
fn children(pid: u32) -> Vec<u32> {
    let list = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .expect("/proc/PID/task/PID/children (CONFIG_PROC_CHILDREN)");
    list.split_whitespace().filter_map(|p| p.parse().ok()).filter(|p| alive(*p)).collect()
}

/// What the connect loop saw.
#[derive(Debug, Default)]
struct Tally {
    ok: u64,
    refused: u64,
    failed: u64,
    first_errors: Vec<String>,
}

/// Connect, write, read the echo, close; until `stop` (or a minute).
fn connect_loop(addr: SocketAddr, stop: Arc<AtomicBool>) -> Tally {
    let mut t = Tally::default();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        match connect(addr) {
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => t.refused += 1,
            Err(e) => {
                t.failed += 1;
                if t.first_errors.len() < 10 {
                    t.first_errors.push(format!("connect: {e}"));
                }
            }
            Ok(mut s) => match roundtrip(&mut s, b"0123456789abcdef") {
                Ok(()) => t.ok += 1,
                Err(e) => {
                    t.failed += 1;
                    if t.first_errors.len() < 10 {
                        t.first_errors.push(format!("echo: {e}"));
                    }
                }
            },
        }
    }
    t
}

/// xorshift64*: a random enough pick, no dependency.
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n as u64) as usize
    }
}

#[test]
fn a_pool_whose_workers_are_killed_every_250_ms_stays_full_and_refuses_nothing() {
    let mut cmd = Command::new(example("echo"));
    cmd.args(["--workers", &WORKERS.to_string(), "--listen", "127.0.0.1:0"]);
    let mut m = Proc::start(cmd);
    let ready = m.expect_by("ready", Duration::from_secs(30), |l| l.starts_with("ready "));
    let addr: SocketAddr = field(&ready, "addr").parse().unwrap();
    let master: u32 = field(&ready, "pid").parse().unwrap();
    assert_eq!(field(&ready, "workers"), WORKERS.to_string());
    assert_eq!(master, m.pid());

    let stop = Arc::new(AtomicBool::new(false));
    let client = {
        let stop = stop.clone();
        std::thread::spawn(move || connect_loop(addr, stop))
    };

    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
        | 1;
    let mut rng = Rng(seed);
    let started = Instant::now();
    let mut pool = Vec::new();
    let mut kills = 0u32;
    let mut last = None;
    // Between kills, the pool is also counted every 25 ms: how many samples
    // saw 0, 1, ... live workers.
    let mut fine = [0u32; WORKERS + 2];
    let mut next = started;
    while started.elapsed() < KILL_FOR {
        loop {
            let now = Instant::now();
            if now >= next {
                break;
            }
            std::thread::sleep((next - now).min(Duration::from_millis(25)));
            fine[children(master).len().min(WORKERS + 1)] += 1;
        }
        next += KILL_EVERY;
        assert!(alive(master), "the master died after {kills} kills:\n{}", m.stderr());
        let live = children(master);
        pool.push(live.len());
        if let Some(&pid) = live.get(rng.below(live.len().max(1))) {
            if kill(Pid::from_raw(pid as i32), Signal::SIGKILL).is_ok() {
                kills += 1;
                last = Some(pid);
            }
        }
    }
    let last_kill = Instant::now();
    // Whole again: four live workers, the last one killed not among them.
    let refilled = eventually(REFILL_WITHIN, || {
        let live = children(master);
        live.len() == WORKERS && last.is_none_or(|pid| !live.contains(&pid))
    });
    let refill_time = last_kill.elapsed();
    // Served after the storm, too.
    std::thread::sleep(Duration::from_millis(250));
    stop.store(true, Ordering::Relaxed);
    let tally = client.join().unwrap();
    let master_alive = alive(master) && m.child.try_wait().unwrap().is_none();
    let after = children(master).len();

    let line = pool.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(" ");
    let total: u32 = fine.iter().sum();
    let spread = (0..fine.len())
        .filter(|n| fine[*n] > 0)
        .map(|n| format!("{n}: {:.1}%", 100.0 * fine[n] as f64 / total as f64))
        .collect::<Vec<_>>()
        .join(", ");
    let mut err = io::stderr().lock();
    let _ = writeln!(
        err,
        "chaos: {kills} kills in {:?}; {} connections echoed, {} failed, {} refused; \
         pool back to {WORKERS}: {refilled} ({refill_time:?} after the last kill); \
         pool every 250 ms (before each kill): {line}; \
         pool in {total} samples 25 ms apart: {spread}",
        KILL_FOR, tally.ok, tally.failed, tally.refused
    );
    if !tally.first_errors.is_empty() {
        let _ = writeln!(err, "chaos: first failures: {:?}", tally.first_errors);
    }
    drop(err);

    assert!(master_alive, "the master is gone:\n{}", m.stderr());
    assert!(refilled, "the pool was not back to {WORKERS} within {REFILL_WITHIN:?}: {after}");
    assert_eq!(tally.refused, 0, "connections refused: {tally:?}");
    assert!(
        tally.failed <= kills as u64,
        "{} failures for {kills} kills: {:?}",
        tally.failed,
        tally.first_errors
    );
    assert!(tally.ok > 100, "only {} connections served", tally.ok);
    echo_once(addr).unwrap();

    m.signal("TERM");
    let status = m.wait_exit(Duration::from_secs(20));
    assert!(status.success(), "the master exited with {status}:\n{}", m.stderr());
}
