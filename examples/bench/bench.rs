//! The benchmark driver: runs, in one go and interleaved, our `echo` with 1,
//! 2 and 4 workers, Node's cluster in both scheduling policies (when `node`
//! is installed), and the single-process mio reference, under the same load
//! generator; then start-up times, memory, the channel, respawn time and the
//! idle master's wake-ups. Prints tables of medians and the ratios.
//!
//! ```text
//! cargo run --release --example bench -- [--duration SECS] [--rounds N] [--quick]
//!     [--only KEY,KEY..] [--skip-extras] [--baseline PATH]
//! ```
//!
//! `--only` keeps the listed servers of the main table (keys: `ours1`,
//! `ours2`, `ours4`, `ours4-shared`, `ours4-exclusive`, `node2-none`,
//! `node2-rr`, `node4-none`, `node4-rr`, `plain2`, `plain4`, `reference`,
//! and with `--baseline`, `base2` and `base4`); `--skip-extras` stops
//! after the main table, its ratios and the memory table.
//!
//! `plain2` and `plain4` are the plain multi-process server
//! (`reference_echo --processes N`: N mio loops on `SO_REUSEPORT` sockets,
//! nothing of the crate's): what N processes on this machine cost with no
//! cluster at all. `--baseline PATH` also runs another build of `echo` (a
//! copy of an older `target/release/examples/echo`) with 2 and 4 workers,
//! in the same rounds, so that a change is measured before and after in one
//! interleaved run.
//!
//! Server CPU: the utime + stime of every process of the server's tree
//! (master and workers, from `/proc/<pid>/stat`), read just before and just
//! after each load run, divided by the requests (echo) or the connections
//! (connect) the load generator completed; in microseconds.
//!
//! It builds the other examples first (`cargo build --release --examples`).
//! Every process it starts talks on 127.0.0.1 only and is stopped at the end.

#[path = "common.rs"]
mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

struct Opts {
    duration: f64,
    rounds: usize,
    quick: bool,
    only: Option<Vec<String>>,
    skip_extras: bool,
    baseline: Option<PathBuf>,
}

fn opts() -> Opts {
    let args: Vec<String> = std::env::args().collect();
    let get = |n: &str| {
        args.iter().position(|a| a == n).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok())
    };
    let quick = args.iter().any(|a| a == "--quick");
    Opts {
        duration: get("--duration").unwrap_or(if quick { 2.0 } else { 10.0 }),
        rounds: get("--rounds").map(|r: f64| r as usize).unwrap_or(3),
        quick,
        only: args
            .iter()
            .position(|a| a == "--only")
            .and_then(|i| args.get(i + 1))
            .map(|v| v.split(',').map(|k| k.trim().to_string()).collect()),
        skip_extras: args.iter().any(|a| a == "--skip-extras"),
        baseline: args
            .iter()
            .position(|a| a == "--baseline")
            .and_then(|i| args.get(i + 1))
            .map(PathBuf::from),
    }
}

/// The Node peer, next to this file.
fn node_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/bench/node_echo.js")
}

fn ours(workers: usize, extra: &[&str]) -> Server {
    let mut cmd = vec![bin("echo").display().to_string(), "--workers".into(), workers.to_string()];
    cmd.extend(["--listen".to_string(), "127.0.0.1:0".to_string()]);
    cmd.extend(extra.iter().map(|s| s.to_string()));
    let plural = if workers == 1 { "worker" } else { "workers" };
    Server {
        key: format!("ours{workers}"),
        name: format!("mio-cluster, {workers} {plural}"),
        cmd,
        env: vec![],
    }
}

fn node(workers: usize, policy: &str) -> Server {
    Server {
        key: format!("node{workers}-{policy}"),
        name: format!(
            "Node cluster {policy}, {workers} worker{}",
            if workers == 1 { "" } else { "s" }
        ),
        cmd: vec![
            "node".into(),
            node_script().display().to_string(),
            "--workers".into(),
            workers.to_string(),
            "--listen".into(),
            "127.0.0.1:0".into(),
        ],
        env: vec![("NODE_CLUSTER_SCHED_POLICY".into(), policy.into())],
    }
}

/// `echo` from another build (`--baseline`), with `workers` workers.
fn baseline(path: &std::path::Path, workers: usize) -> Server {
    let mut s = ours(workers, &[]);
    s.cmd[0] = path.display().to_string();
    s.key = format!("base{workers}");
    s.name = format!("mio-cluster, {workers} workers, baseline build");
    s
}

/// The plain multi-process server: `processes` mio loops, no cluster.
fn plain(processes: usize) -> Server {
    Server {
        key: format!("plain{processes}"),
        name: format!("{processes} processes, mio, SO_REUSEPORT, no cluster"),
        cmd: vec![
            bin("reference_echo").display().to_string(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--processes".into(),
            processes.to_string(),
        ],
        env: vec![],
    }
}

fn reference() -> Server {
    Server {
        key: "reference".into(),
        name: "one process, mio, no cluster".into(),
        cmd: vec![
            bin("reference_echo").display().to_string(),
            "--listen".into(),
            "127.0.0.1:0".into(),
        ],
        env: vec![],
    }
}

#[derive(Default)]
struct Samples {
    rps: Vec<f64>,
    p99: Vec<f64>,
    cps: Vec<f64>,
    jain: Vec<f64>,
    errors: Vec<f64>,
    cpu_req: Vec<f64>,
    cpu_conn: Vec<f64>,
}

fn main() {
    let o = opts();
    if std::env::var_os("BENCH_NO_BUILD").is_none() {
        let st = Command::new(env!("CARGO"))
            .args(["build", "--release", "--examples"])
            .status()
            .expect("cargo");
        assert!(st.success(), "cargo build --release --examples failed");
    }
    let has_node = Command::new("node").arg("--version").output().is_ok_and(|o| o.status.success());
    let mut servers = vec![
        ours(1, &[]),
        ours(2, &[]),
        ours(4, &[]),
        ours(4, &["--balance", "shared"]),
        ours(4, &["--balance", "exclusive"]),
    ];
    servers[3].name = "mio-cluster, 4 workers, shared wake-ups".into();
    servers[3].key = "ours4-shared".into();
    servers[4].name = "mio-cluster, 4 workers, exclusive wake-ups only".into();
    servers[4].key = "ours4-exclusive".into();
    let (shared, exclusive) = (servers[3].clone(), servers[4].clone());
    if has_node {
        for w in [2, 4] {
            servers.push(node(w, "none"));
            servers.push(node(w, "rr"));
        }
    }
    if let Some(path) = &o.baseline {
        servers.push(baseline(path, 2));
        servers.push(baseline(path, 4));
    }
    servers.push(plain(2));
    servers.push(plain(4));
    servers.push(reference());
    if let Some(only) = &o.only {
        servers.retain(|s| only.contains(&s.key));
        assert!(!servers.is_empty(), "--only {only:?} names no server");
    }
    println!(
        "# mio-cluster benchmark: {} rounds of {} s per measurement, 64 connections, 64-byte messages, {} CPUs",
        o.rounds,
        o.duration,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let mut samples: BTreeMap<String, Samples> = BTreeMap::new();
    let mut rss: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for round in 0..o.rounds {
        for s in &servers {
            let r = start(s, &[("RUST_LOG", "warn")]);
            std::thread::sleep(Duration::from_millis(300));
            let e = load_cpu(&r.addr, "echo", o.duration, Some(r.pid), r.pid);
            let c = load_cpu(&r.addr, "connect", o.duration, None, r.pid);
            let entry = samples.entry(s.name.clone()).or_default();
            let f = |m: &BTreeMap<String, String>, k: &str| {
                m.get(k).and_then(|v| v.parse::<f64>().ok())
            };
            entry.rps.extend(f(&e, "rps"));
            entry.p99.extend(f(&e, "p99_us"));
            entry.cps.extend(f(&c, "rps"));
            entry.cpu_req.extend(f(&e, "cpu_us_per"));
            entry.cpu_conn.extend(f(&c, "cpu_us_per"));
            entry.errors.push(f(&e, "errors").unwrap_or(0.0) + f(&c, "errors").unwrap_or(0.0));
            if children(r.pid).len() > 1 {
                entry.jain.extend(f(&e, "jain"));
            }
            if round == 0 {
                let kids = children(r.pid);
                let per = if kids.is_empty() {
                    0
                } else {
                    kids.iter().map(|k| status_field(*k, "VmRSS:")).sum::<u64>() / kids.len() as u64
                };
                rss.insert(s.name.clone(), (status_field(r.pid, "VmRSS:"), per));
            }
            eprintln!(
                "round {} {}: echo {} rps, p99 {} us, connect {} /s, jain {}, cpu {} us/req {} us/conn",
                round + 1,
                s.name,
                e.get("rps").map_or("?", |v| v),
                e.get("p99_us").map_or("?", |v| v),
                c.get("rps").map_or("?", |v| v),
                e.get("jain").map_or("-", |v| v),
                f(&e, "cpu_us_per").map_or("?".into(), |v| format!("{v:.2}")),
                f(&c, "cpu_us_per").map_or("?".into(), |v| format!("{v:.1}")),
            );
            stop(r);
        }
    }
    println!("\n| server | echo req/s | p99 latency (us) | new connections/s | Jain index, 64 conns (each run) | errors | server CPU per request (us) | server CPU per connection (us) |");
    println!("|---|---|---|---|---|---|---|---|");
    let mut med: BTreeMap<String, (f64, f64, f64, f64, f64)> = BTreeMap::new();
    for s in &servers {
        let x = &samples[&s.name];
        let (rps, p99, cps) = (median(x.rps.clone()), median(x.p99.clone()), median(x.cps.clone()));
        let (cpu_req, cpu_conn) = (median(x.cpu_req.clone()), median(x.cpu_conn.clone()));
        med.insert(s.name.clone(), (rps, p99, cps, cpu_req, cpu_conn));
        let jain: Vec<String> = x.jain.iter().map(|j| format!("{j:.2}")).collect();
        println!(
            "| {} | {:.0} | {:.0} | {:.0} | {} | {} | {:.2} | {:.1} |",
            s.name,
            rps,
            p99,
            cps,
            if jain.is_empty() { "-".into() } else { jain.join(" ") },
            x.errors.iter().sum::<f64>(),
            cpu_req,
            cpu_conn
        );
    }
    let get = |n: &str| med.get(n).copied();
    let reference = get("one process, mio, no cluster");
    println!("\n| ratio | 2 workers | 4 workers |");
    println!("|---|---|---|");
    let row = |label: &str, f: &dyn Fn(usize) -> Option<f64>| {
        let cell = |w| f(w).map_or("-".to_string(), |v| format!("{v:.2}"));
        println!("| {label} | {} | {} |", cell(2), cell(4));
    };
    let ours_at = |w: usize| get(&format!("mio-cluster, {w} workers"));
    let node_at = |w: usize, p: &str| get(&format!("Node cluster {p}, {w} workers"));
    row("echo req/s, ours / Node's best policy", &|w| {
        let best = node_at(w, "none")?.0.max(node_at(w, "rr")?.0);
        Some(ours_at(w)?.0 / best)
    });
    row("echo req/s, ours / single-process reference", &|w| Some(ours_at(w)?.0 / reference?.0));
    row("p99 latency, ours / Node's best (lower is better)", &|w| {
        let best = node_at(w, "none")?.1.min(node_at(w, "rr")?.1);
        Some(ours_at(w)?.1 / best)
    });
    row("new connections/s, ours / Node shared handle", &|w| {
        Some(ours_at(w)?.2 / node_at(w, "none")?.2)
    });
    row("new connections/s, ours / Node round-robin", &|w| {
        Some(ours_at(w)?.2 / node_at(w, "rr")?.2)
    });
    // CPU: lower is better; Node's best is its cheaper policy.
    row("server CPU per request, ours / single-process reference (lower is better)", &|w| {
        Some(ours_at(w)?.3 / reference?.3)
    });
    row("server CPU per request, ours / Node's best (lower is better)", &|w| {
        let best = node_at(w, "none")?.3.min(node_at(w, "rr")?.3);
        Some(ours_at(w)?.3 / best)
    });
    row("server CPU per connection, ours / single-process reference (lower is better)", &|w| {
        Some(ours_at(w)?.4 / reference?.4)
    });
    row("server CPU per connection, ours / Node's best (lower is better)", &|w| {
        let best = node_at(w, "none")?.4.min(node_at(w, "rr")?.4);
        Some(ours_at(w)?.4 / best)
    });
    let plain_at = |w: usize| get(&format!("{w} processes, mio, SO_REUSEPORT, no cluster"));
    row("server CPU per request, ours / plain mio with as many processes", &|w| {
        Some(ours_at(w)?.3 / plain_at(w)?.3)
    });
    row("server CPU per connection, ours / plain mio with as many processes", &|w| {
        Some(ours_at(w)?.4 / plain_at(w)?.4)
    });
    row(
        "server CPU per request, plain mio with as many processes / single-process reference",
        &|w| Some(plain_at(w)?.3 / reference?.3),
    );
    row(
        "server CPU per connection, plain mio with as many processes / single-process reference",
        &|w| Some(plain_at(w)?.4 / reference?.4),
    );
    let base_at = |w: usize| get(&format!("mio-cluster, {w} workers, baseline build"));
    row("server CPU per request, ours / baseline build", &|w| Some(ours_at(w)?.3 / base_at(w)?.3));
    row("server CPU per connection, ours / baseline build", &|w| {
        Some(ours_at(w)?.4 / base_at(w)?.4)
    });
    row("server CPU per request, baseline build / single-process reference", &|w| {
        Some(base_at(w)?.3 / reference?.3)
    });
    row("server CPU per connection, baseline build / single-process reference", &|w| {
        Some(base_at(w)?.4 / reference?.4)
    });

    println!("\n| memory after the echo load (VmRSS) | master | per worker |");
    println!("|---|---|---|");
    for (name, (m, w)) in &rss {
        println!("| {name} | {:.1} MiB | {:.1} MiB |", *m as f64 / 1024.0, *w as f64 / 1024.0);
    }
    if o.skip_extras {
        return;
    }

    // How 64 persistent connections spread over 4 workers: all at once (a
    // burst), and arriving 1 ms apart.
    let spread_runs = 5;
    println!("\n| 64 connections over 4 workers, Jain index per run ({spread_runs} runs) | all at once | 1 ms apart |");
    println!("|---|---|---|");
    let mut who = vec![ours(4, &[]), exclusive.clone(), shared.clone()];
    if has_node {
        who.push(node(4, "none"));
        who.push(node(4, "rr"));
    }
    for s in &who {
        let mut cells = Vec::new();
        for ramp in [0.0, 1.0] {
            let mut j = Vec::new();
            for _ in 0..spread_runs {
                let r = start(s, &[("RUST_LOG", "warn")]);
                std::thread::sleep(Duration::from_millis(300));
                let e = load_ramped(&r.addr, "echo", 0.5, Some(r.pid), ramp);
                j.push(e.get("jain").cloned().unwrap_or_else(|| "?".into()));
                stop(r);
            }
            cells.push(
                j.iter().map(|v| v.get(..4).unwrap_or(v).to_string()).collect::<Vec<_>>().join(" "),
            );
        }
        println!("| {} | {} | {} |", s.name, cells[0], cells[1]);
    }

    // Thundering herd: wake-ups of a worker's listener that found nothing to
    // accept, under the connect load (each worker logs its counts on exit).
    println!("\n| 4 workers, one client connecting in a loop, 5 s | listener wake-ups | of them empty | accepted |");
    println!("|---|---|---|---|");
    for s in [ours(4, &[]), exclusive, shared] {
        let r = start(&s, &[("RUST_LOG", "info")]);
        std::thread::sleep(Duration::from_millis(300));
        // One client at a time: every connection finds the workers idle,
        // which is when a thundering herd shows.
        let mut c = Command::new(bin("loadgen"));
        c.args(["--addr", &r.addr, "--mode", "connect", "--duration", "5", "--connections", "1"]);
        let _ = c.output();
        let lines = r.stderr_lines_after_stop();
        let (mut wakeups, mut empty, mut accepted) = (0u64, 0u64, 0u64);
        for l in lines.iter().filter(|l| l.contains(" wake-ups, ")) {
            // "worker N: accepted A connections in W wake-ups, E of them empty"
            let nums: Vec<u64> =
                l.split_whitespace().filter_map(|w| w.trim_end_matches(',').parse().ok()).collect();
            if let [a, w, e] = nums[nums.len().saturating_sub(3)..] {
                accepted += a;
                wakeups += w;
                empty += e;
            }
        }
        println!("| {} | {wakeups} | {empty} | {accepted} |", s.name);
    }

    // Start-up to the ready line.
    let runs = if o.quick { 3 } else { 5 };
    println!("\n| start to `ready` (median of {runs}) | 1 worker | 8 workers | 32 workers |");
    println!("|---|---|---|---|");
    let mut kinds = vec![("mio-cluster", None)];
    if has_node {
        kinds.push(("Node cluster", Some("none")));
    }
    for (label, policy) in kinds {
        let mut cells = Vec::new();
        for n in [1, 8, 32] {
            let s = match policy {
                None => ours(n, &["--heartbeat-timeout", "0"]),
                Some(p) => node(n, p),
            };
            let times: Vec<f64> = (0..runs)
                .map(|_| {
                    let r = start(&s, &[("RUST_LOG", "warn")]);
                    let t = r.started.as_secs_f64() * 1e3;
                    stop(r);
                    t
                })
                .collect();
            cells.push(format!("{:.1} ms", median(times)));
        }
        println!("| {label} | {} |", cells.join(" | "));
    }

    // The idle master: wake-ups (context switches) per second with 32 workers.
    println!("\n| idle master, 32 workers, 5 s | wake-ups/s |");
    println!("|---|---|");
    let mut idle = vec![
        ("mio-cluster, heartbeats off", ours(32, &["--heartbeat-timeout", "0"])),
        ("mio-cluster, default heartbeat (1 s interval)", ours(32, &[])),
    ];
    if has_node {
        idle.push(("Node cluster", node(32, "none")));
    }
    for (label, s) in idle {
        let r = start(&s, &[("RUST_LOG", "warn")]);
        std::thread::sleep(Duration::from_secs(1));
        let sw = |p| {
            status_field(p, "voluntary_ctxt_switches:")
                + status_field(p, "nonvoluntary_ctxt_switches:")
        };
        let before = sw(r.pid);
        std::thread::sleep(Duration::from_secs(5));
        let after = sw(r.pid);
        println!("| {label} | {:.1} |", (after - before) as f64 / 5.0);
        stop(r);
    }

    // Channel and respawn.
    let ipc = Command::new(bin("ipc_bench")).output().expect("ipc_bench");
    println!("\n```text\n{}```", String::from_utf8_lossy(&ipc.stdout));
    let samples_n = if o.quick { 3 } else { 10 };
    let r = start(&ours(2, &[]), &[("RUST_LOG", "info")]);
    let mut times = Vec::new();
    for _ in 0..samples_n {
        // Past the crash window, so each death is a healthy worker's.
        std::thread::sleep(Duration::from_millis(5200));
        while r.stderr.try_recv().is_ok() {}
        let victim = children(r.pid)[0];
        let t = Instant::now();
        let _ = Command::new("kill").args(["-KILL", &victim.to_string()]).status();
        loop {
            match r.stderr.recv_timeout(Duration::from_secs(10)) {
                Ok((at, line)) if line.contains("listening on") => {
                    times.push(at.duration_since(t).as_secs_f64() * 1e3);
                    break;
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
    }
    stop(r);
    println!(
        "respawn: SIGKILL of a worker to its replacement listening, median of {}: {:.2} ms",
        times.len(),
        median(times)
    );
}
