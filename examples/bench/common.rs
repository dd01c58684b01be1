//! What the benchmark drivers share: starting a server and reading its
//! `ready` line, the CPU of a process tree from `/proc`, the load
//! generator, medians.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A sibling binary (another example), next to this one.
pub fn bin(name: &str) -> PathBuf {
    let mut p = std::env::current_exe().expect("own path");
    p.pop();
    p.join(name)
}

/// A server under test: how to start it.
#[derive(Clone)]
pub struct Server {
    /// Short name for `--only`.
    pub key: String,
    pub name: String,
    pub cmd: Vec<String>,
    pub env: Vec<(String, String)>,
}

pub struct Running {
    pub child: Child,
    pub addr: String,
    pub pid: u32,
    pub started: Duration,
    pub stderr: mpsc::Receiver<(Instant, String)>,
}

pub fn start(s: &Server, env: &[(&str, &str)]) -> Running {
    let t = Instant::now();
    let mut c = Command::new(&s.cmd[0]);
    c.args(&s.cmd[1..]).stdout(Stdio::piped()).stderr(Stdio::piped());
    for (k, v) in s.env.iter() {
        c.env(k, v);
    }
    for (k, v) in env {
        c.env(k, v);
    }
    let mut child = c.spawn().unwrap_or_else(|e| panic!("start {}: {e}", s.name));
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).expect("ready line");
    let started = t.elapsed();
    assert!(line.starts_with("ready "), "{}: {line:?}", s.name);
    let field = |k: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(k))
            .unwrap_or_else(|| panic!("no {k} in {line}"))
            .to_string()
    };
    let (tx, stderr) = mpsc::channel();
    let err = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for l in BufReader::new(err).lines().map_while(Result::ok) {
            let _ = tx.send((Instant::now(), l));
        }
    });
    Running { addr: field("addr="), pid: field("pid=").parse().unwrap(), child, started, stderr }
}

impl Running {
    /// Stops the server and returns what it logged on stderr.
    pub fn stderr_lines_after_stop(self) -> Vec<String> {
        let rx = stop_keep(self);
        let mut lines = Vec::new();
        while let Ok((_, l)) = rx.recv_timeout(Duration::from_millis(500)) {
            lines.push(l);
        }
        lines
    }
}

pub fn stop_keep(mut r: Running) -> mpsc::Receiver<(Instant, String)> {
    let _ = Command::new("kill").args(["-TERM", &r.pid.to_string()]).status();
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = r.child.try_wait() {
            return r.stderr;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = r.child.kill();
    let _ = r.child.wait();
    r.stderr
}

pub fn stop(r: Running) {
    drop(stop_keep(r));
}

pub fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

pub fn status_field(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Every process of the tree rooted at `pid` (itself, its children, theirs..).
pub fn tree(pid: u32) -> Vec<u32> {
    let mut all = vec![pid];
    let mut i = 0;
    while i < all.len() {
        let p = all[i];
        // Children of every thread (Node's master has several).
        if let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) {
            for t in tasks.flatten() {
                let f = t.path().join("children");
                for c in std::fs::read_to_string(f).unwrap_or_default().split_whitespace() {
                    if let Ok(c) = c.parse() {
                        if !all.contains(&c) {
                            all.push(c);
                        }
                    }
                }
            }
        }
        i += 1;
    }
    all
}

/// utime + stime of one process (all its threads), in clock ticks.
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold
    // spaces: state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest.split_whitespace().skip(1).map(|v| v.parse().unwrap_or(0)).collect();
    f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0)
}

/// CPU time of the server's whole tree, per process, in ticks.
pub fn tree_cpu(pid: u32) -> BTreeMap<u32, u64> {
    tree(pid).into_iter().map(|p| (p, cpu_ticks(p))).collect()
}

/// Seconds of CPU the tree spent between two readings (processes that
/// appeared in between count from zero).
pub fn cpu_spent(before: &BTreeMap<u32, u64>, after: &BTreeMap<u32, u64>) -> f64 {
    let ticks: u64 =
        after.iter().map(|(p, t)| t.saturating_sub(before.get(p).copied().unwrap_or(0))).sum();
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .filter(|&h| h > 0)
        .unwrap_or(100);
    ticks as f64 / hz as f64
}

/// Runs the load generator and measures the server's CPU over it: the
/// fields, plus `cpu_us_per` (server CPU per completed request, in µs).
pub fn load_cpu(
    addr: &str,
    mode: &str,
    secs: f64,
    spread_pid: Option<u32>,
    server: u32,
) -> BTreeMap<String, String> {
    let before = tree_cpu(server);
    let mut m = load(addr, mode, secs, spread_pid);
    let after = tree_cpu(server);
    let done = m.get("requests").and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    if done > 0.0 {
        m.insert("cpu_us_per".into(), format!("{}", cpu_spent(&before, &after) * 1e6 / done));
    }
    m
}

/// Runs the load generator; returns its `key=value` fields.
pub fn load(
    addr: &str,
    mode: &str,
    secs: f64,
    spread_pid: Option<u32>,
) -> BTreeMap<String, String> {
    load_ramped(addr, mode, secs, spread_pid, 0.0)
}

/// The same, opening the connections `ramp_ms` apart.
pub fn load_ramped(
    addr: &str,
    mode: &str,
    secs: f64,
    spread_pid: Option<u32>,
    ramp_ms: f64,
) -> BTreeMap<String, String> {
    let mut c = Command::new(bin("loadgen"));
    c.args(["--ramp-ms", &ramp_ms.to_string()]);
    c.args([
        "--addr",
        addr,
        "--mode",
        mode,
        "--duration",
        &secs.to_string(),
        "--connections",
        "64",
        "--size",
        "64",
    ]);
    if let Some(p) = spread_pid {
        c.args(["--spread-pid", &p.to_string()]);
    }
    let out = c.output().expect("loadgen");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|w| w.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
        .collect()
}

pub fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// The value after `--name` on the command line, parsed, or `default`.
pub fn arg<T: std::str::FromStr>(name: &str, default: T) -> T {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
