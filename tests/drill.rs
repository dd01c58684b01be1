//! The drill: every configuration the README and `deploy/` ship, taken
//! through every operation people perform on it, under a connect loop that
//! counts failed connections and, where a health listener runs, probes of
//! `/ready`, `/live` and `/metrics` in turn every 100 ms.
//!
//! Configurations: the plain shell; `--subreaper` (with `--health`); PID 1
//! of a PID namespace with `--health` and `--shutdown-linger`, as
//! `deploy/kubernetes.yaml` runs it; the `deploy/` units, unchanged, under
//! a real systemd 252 (`shared/tools/realsystemd/run-systemd.sh`).
//! Operations: start; SIGHUP roll; SIGKILL of a worker; SIGSTOP of every
//! worker (the heartbeat, or systemd's watchdog); SIGUSR2 twice in a row;
//! SIGTERM (or `systemctl stop`) after the upgrades. Each test prints its
//! table (`cargo test --test drill -- --nocapture`).
//!
//! Also here: what a failed upgrade leaves behind, and what the old master
//! learns of it.

// systemd, PID namespaces and containers are Linux's: on other platforms
// this file is empty.
#![cfg(target_os = "linux")]

mod util;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use util::*;

/// How long one operation may take to settle, at most.
const OP_WAIT: Duration = Duration::from_secs(30);
/// Client threads of the connect loop: a killed worker holds at most this
/// many of its connections.
const CLIENTS: usize = 2;

/// This test process adopts the orphans among its descendants (a new
/// master outlives the old one, its parent), so it can wait for them and
/// read their exit codes.
fn adopt_orphans() {
    nix::sys::prctl::set_child_subreaper(true).unwrap();
}

/// A copy of the echo example at a path of its own: "no process left"
/// means no process runs it.
struct App {
    dir: PathBuf,
}

impl App {
    fn new(name: &str) -> App {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("drill-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let st = Command::new("cp").arg(example("echo")).arg(dir.join("app")).status().unwrap();
        assert!(st.success());
        App { dir }
    }

    fn path(&self) -> PathBuf {
        self.dir.join("app")
    }

    /// Puts `script` (a shell script) at the app's path, by an atomic
    /// rename: the next upgrade runs it.
    fn deploy_script(&self, script: &str) {
        let tmp = self.dir.join("app.new");
        std::fs::write(&tmp, script).unwrap();
        let st = Command::new("chmod").arg("755").arg(&tmp).status().unwrap();
        assert!(st.success());
        std::fs::rename(&tmp, self.path()).unwrap();
    }

    /// Processes that run the app (or a script at its path), by their
    /// `/proc/PID/exe` or their command line.
    fn processes(&self) -> Vec<u32> {
        let app = self.path().display().to_string();
        let mut found = Vec::new();
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            let exe = std::fs::read_link(e.path().join("exe")).unwrap_or_default();
            let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            let runs = exe.display().to_string().starts_with(&app)
                || String::from_utf8_lossy(&cmdline).contains(&app);
            if runs && alive(pid) {
                found.push(pid);
            }
        }
        found
    }
}

impl Drop for App {
    fn drop(&mut self) {
        for pid in self.processes() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Counters shared by the connect loop's threads.
#[derive(Default)]
struct Tally {
    ok: AtomicUsize,
    failures: Mutex<Vec<String>>,
    probes: AtomicUsize,
    unanswered: Mutex<Vec<String>>,
    /// `/ready` answers other than 200, with their code.
    not_ready: Mutex<Vec<u16>>,
}

/// The load: `CLIENTS` threads that connect, send a line and read it back,
/// one connection after another; and, with a health address, one thread
/// that probes `/ready`, `/live` and `/metrics` in turn every 100 ms. With `netns`,
/// every thread first enters that network namespace.
struct Load {
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

/// What the load saw between two marks.
#[derive(Debug, Clone, Copy, Default)]
struct Counts {
    ok: usize,
    failed: usize,
    probes: usize,
    unanswered: usize,
    not_ready: usize,
}

fn enter(netns: &Option<PathBuf>) {
    if let Some(path) = netns {
        let f = std::fs::File::open(path).unwrap();
        nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
    }
}

impl Load {
    fn start(
        addr: SocketAddr,
        health: Option<SocketAddr>,
        netns: Option<PathBuf>,
        read_timeout: Duration,
    ) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let tally = Arc::new(Tally::default());
        let mut threads = Vec::new();
        for _ in 0..CLIENTS {
            let (stop, tally, netns) = (stop.clone(), tally.clone(), netns.clone());
            threads.push(std::thread::spawn(move || {
                enter(&netns);
                while !stop.load(Ordering::Relaxed) {
                    match exchange(addr, read_timeout) {
                        Ok(()) => {
                            tally.ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => tally.failures.lock().unwrap().push(e),
                    }
                }
            }));
        }
        if let Some(health) = health {
            let (stop, tally, netns) = (stop.clone(), tally.clone(), netns.clone());
            threads.push(std::thread::spawn(move || {
                enter(&netns);
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let path = ["/ready", "/live", "/metrics"][n % 3];
                    n += 1;
                    let code = probe(health, path);
                    tally.probes.fetch_add(1, Ordering::Relaxed);
                    match code {
                        Err(e) => tally.unanswered.lock().unwrap().push(format!("{path}: {e}")),
                        Ok(c) if path == "/metrics" && c != 200 => {
                            tally.unanswered.lock().unwrap().push(format!("{path}: {c}"))
                        }
                        Ok(c) if path == "/ready" && c != 200 => {
                            tally.not_ready.lock().unwrap().push(c)
                        }
                        Ok(_) => {}
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }));
        }
        Load { stop, tally, threads }
    }

    fn mark(&self) -> Counts {
        let t = &self.tally;
        Counts {
            ok: t.ok.load(Ordering::Relaxed),
            failed: t.failures.lock().unwrap().len(),
            probes: t.probes.load(Ordering::Relaxed),
            unanswered: t.unanswered.lock().unwrap().len(),
            not_ready: t.not_ready.lock().unwrap().len(),
        }
    }

    /// Waits until `more` connections more were served.
    fn wait_served(&self, more: usize) -> bool {
        let start = self.tally.ok.load(Ordering::Relaxed);
        eventually(OP_WAIT, || self.tally.ok.load(Ordering::Relaxed) >= start + more)
    }

    fn failures(&self) -> Vec<String> {
        self.tally.failures.lock().unwrap().clone()
    }

    fn unanswered(&self) -> Vec<String> {
        self.tally.unanswered.lock().unwrap().clone()
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
    }
}

/// One connection: a line sent and read back.
fn exchange(addr: SocketAddr, read_timeout: Duration) -> Result<(), String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(read_timeout)).unwrap();
    s.write_all(b"drill\n").map_err(|e| format!("write: {e}"))?;
    let mut got = [0u8; 6];
    s.read_exact(&mut got).map_err(|e| format!("read: {e}"))?;
    if &got != b"drill\n" {
        return Err(format!("echoed {got:?}"));
    }
    Ok(())
}

/// `GET path`, answered within a second: its status code.
fn probe(addr: SocketAddr, path: &str) -> Result<u16, String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1))
        .map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: drill\r\n\r\n").map_err(|e| format!("write: {e}"))?;
    let mut reply = String::new();
    let _ = s.read_to_string(&mut reply);
    reply.get(9..12).and_then(|c| c.parse().ok()).ok_or_else(|| format!("reply {reply:?}"))
}

/// `GET path`'s body.
fn get_body(addr: SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: drill\r\n\r\n").unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    reply.split_once("\r\n\r\n").map_or(String::new(), |(_, b)| b.to_string())
}

/// One row of a drill's table.
struct Row {
    op: &'static str,
    counts: Counts,
    exit: String,
}

/// A drill's table, printed at the end (and as it goes).
struct Table {
    config: &'static str,
    rows: Vec<Row>,
    last: Counts,
}

impl Table {
    fn new(config: &'static str, load: &Load) -> Table {
        Table { config, rows: Vec::new(), last: load.mark() }
    }

    /// Closes the row of `op`: the load's counts since the last row, which
    /// may have at most `may_fail` failed connections (those open on a
    /// killed worker), and no unanswered probe.
    fn row(&mut self, op: &'static str, load: &Load, may_fail: usize, exit: &str) {
        let now = load.mark();
        let counts = Counts {
            ok: now.ok - self.last.ok,
            failed: now.failed - self.last.failed,
            probes: now.probes - self.last.probes,
            unanswered: now.unanswered - self.last.unanswered,
            not_ready: now.not_ready - self.last.not_ready,
        };
        self.last = now;
        eprintln!(
            "drill {}: {op}: {} served, {} failed, probes {}/{} answered, exit {exit}",
            self.config,
            counts.ok,
            counts.failed,
            counts.probes - counts.unanswered,
            counts.probes
        );
        self.rows.push(Row { op, counts, exit: exit.to_string() });
        assert!(
            counts.failed <= may_fail,
            "{}: {op}: {} connections failed (at most {may_fail} may): {:?}",
            self.config,
            counts.failed,
            load.failures()
        );
        assert_eq!(counts.unanswered, 0, "{}: {op}: {:?}", self.config, load.unanswered());
        // A hot upgrade keeps the pool at target throughout: `/ready` is
        // 200 (the new master answers only once it is ready).
        if op.starts_with("SIGUSR2") {
            assert_eq!(counts.not_ready, 0, "{}: {op}: /ready was not 200", self.config);
        }
    }

    fn print(&self) {
        let mut t = String::from(
            "\n| configuration | operation | connections | failed | probes answered | exit |\n\
             |---|---|---|---|---|---|\n",
        );
        for r in &self.rows {
            let probes = if r.counts.probes == 0 {
                "-".to_string()
            } else {
                format!("{}/{}", r.counts.probes - r.counts.unanswered, r.counts.probes)
            };
            t += &format!(
                "| {} | {} | {} | {} | {} | {} |\n",
                self.config,
                r.op,
                r.counts.ok + r.counts.failed,
                r.counts.failed,
                probes,
                r.exit
            );
        }
        eprintln!("{t}");
    }
}

/// Waits for `pid`, a child of this process (or an orphan it adopted):
/// its exit code, 128 + the signal that killed it.
fn wait_pid(pid: u32, timeout: Duration) -> i32 {
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    let deadline = Instant::now() + timeout;
    loop {
        match waitpid(nix::unistd::Pid::from_raw(pid as i32), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => return code,
            Ok(WaitStatus::Signaled(_, sig, _)) => return 128 + sig as i32,
            Ok(_) => {}
            Err(e) => panic!("waitpid {pid}: {e}"),
        }
        assert!(Instant::now() < deadline, "process {pid} still runs after {timeout:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits for the started process to exit (its pipes stay open: a new
/// master inherited them): its exit code.
fn exit_of(p: &mut Proc) -> Option<i32> {
    let deadline = Instant::now() + OP_WAIT;
    loop {
        if let Some(s) = p.child.try_wait().unwrap() {
            return s.code();
        }
        assert!(Instant::now() < deadline, "master {} still runs:\n{}", p.pid(), p.stderr());
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Waits for `p`'s next `ready` line from a master other than `not`.
fn next_ready(p: &mut Proc, not: u32) -> u32 {
    let line = p.expect_by("ready line of a new master", OP_WAIT, |l| {
        l.starts_with("ready ") && field(l, "pid") != not.to_string()
    });
    field(&line, "pid").parse().unwrap()
}

/// The address a master logged for its health listener.
fn health_addr(p: &Proc) -> SocketAddr {
    let mut addr = None;
    assert!(
        eventually(WAIT, || {
            addr = p.stderr().lines().find_map(|l| {
                l.split("health listener on ").nth(1)?.split_whitespace().next()?.parse().ok()
            });
            addr.is_some()
        }),
        "no health listener in the log:\n{}",
        p.stderr()
    );
    addr.unwrap()
}

/// `master`'s workers once there are `n` of them, all listening with pids
/// none of which is in `not`.
fn pool_of(master: u32, n: usize, not: &[u32]) -> Vec<u32> {
    let mut now = Vec::new();
    let ok = eventually(OP_WAIT, || {
        now = workers_of(master);
        now.len() == n && now.iter().all(|w| !not.contains(w))
    });
    assert!(ok, "master {master}: workers {now:?}, wanted {n} none of {not:?}");
    now
}

/// The operations on a pool of two workers of `master`, with signals for
/// the master sent to `to` (the master, or PID 1 above it): SIGHUP (every
/// worker replaced, a new one listening before an old one leaves), SIGKILL
/// of a worker (replaced; only its own connections may fail), SIGSTOP of
/// every worker (the heartbeat timeout replaces them all).
fn pool_operations(to: u32, master: u32, load: &Load, table: &mut Table) {
    let old = workers_of(master);
    signal(to, "HUP");
    pool_of(master, 2, &old);
    assert!(load.wait_served(20));
    table.row("SIGHUP roll", load, 0, "-");

    let old = workers_of(master);
    signal(old[0], "KILL");
    pool_of(master, 2, &old[..1]);
    assert!(load.wait_served(20));
    table.row("SIGKILL a worker", load, CLIENTS, "-");

    let old = workers_of(master);
    for w in &old {
        signal(*w, "STOP");
    }
    pool_of(master, 2, &old);
    assert!(load.wait_served(20));
    table.row("SIGSTOP every worker", load, CLIENTS, "-");
}

/// The plain shell and `--subreaper`: the same operations, the second with
/// a health listener whose socket every master in turn serves.
fn drill_shell(config: &'static str, extra: &[&str]) {
    adopt_orphans();
    let app = App::new(config);
    let mut cmd = Command::new(app.path());
    cmd.args(["--workers", "2", "--listen", "127.0.0.1:0", "--heartbeat-timeout", "3"])
        .args(extra)
        .env("RUST_LOG", "info");
    let mut p = Proc::start(cmd);
    let first = p.pid();
    let addr: SocketAddr = field(&p.expect("ready "), "addr").parse().unwrap();
    let health = extra.contains(&"--health").then(|| health_addr(&p));
    let health_inode = health.map(|h| listen_inode(h.port()).expect("the health socket"));
    let load = Load::start(addr, health, None, Duration::from_secs(5));
    let mut table = Table::new(config, &load);
    assert!(load.wait_served(20), "no connection served:\n{}", p.stderr());
    table.row("start", &load, 0, "-");

    pool_operations(first, first, &load, &mut table);

    // SIGUSR2 twice. Connections held on the first master's workers keep
    // it draining; one SIGTERM to it then changes nothing (it handed over),
    // and it exits 0 once they are closed.
    let mut held: Vec<TcpStream> = Vec::new();
    hold(addr, 4, &mut held);
    p.signal("USR2");
    let second = next_ready(&mut p, first);
    if let Some(h) = health {
        assert_eq!(listen_inode(h.port()), health_inode, "the health socket changed");
        assert!(holds_socket(second, health_inode.unwrap()), "the new master has no health socket");
    }
    signal(first, "TERM");
    std::thread::sleep(Duration::from_millis(300));
    assert!(alive(first), "one SIGTERM after the hand-over ended the old master");
    for s in &mut held {
        roundtrip(s, b"still served").unwrap();
    }
    drop(held);
    let code = exit_of(&mut p);
    assert_eq!(code, Some(0), "{}", p.stderr());
    assert!(load.wait_served(20));
    table.row("SIGUSR2 (1st), SIGTERM to the old", &load, 0, "old master 0");

    signal(second, "USR2");
    let third = next_ready(&mut p, second);
    let code = wait_pid(second, OP_WAIT);
    assert_eq!(code, 0, "{}", p.stderr());
    assert!(load.wait_served(20));
    table.row("SIGUSR2 (2nd)", &load, 0, "old master 0");
    pool_of(third, 2, &[]);

    // SIGTERM to the third master: a graceful exit, and nothing left.
    load.stop();
    signal(third, "TERM");
    let code = wait_pid(third, OP_WAIT);
    assert_eq!(code, 0, "{}", p.stderr());
    assert!(eventually(WAIT, || app.processes().is_empty()), "left: {:?}", app.processes());
    assert!(std::net::TcpStream::connect(addr).is_err(), "{addr} still accepts");
    table.rows.push(Row {
        op: "SIGTERM after the upgrades",
        counts: Counts::default(),
        exit: "0".into(),
    });
    table.print();
}

#[test]
fn drill_the_plain_shell() {
    drill_shell("shell", &[]);
}

#[test]
fn drill_a_subreaper_with_a_health_listener() {
    drill_shell("--subreaper --health", &["--subreaper", "--health", "127.0.0.1:0"]);
}

/// The pid, as seen from here, of the descendant of `ancestor` whose pid
/// in its own PID namespace is `nspid` (the `NSpid:` line of its status).
fn host_pid(ancestor: u32, nspid: u32) -> Option<u32> {
    let mut todo = vec![ancestor];
    while let Some(pid) = todo.pop() {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let ns = status.lines().find_map(|l| l.strip_prefix("NSpid:"));
        if ns.and_then(|n| n.split_whitespace().last()) == Some(&nspid.to_string()) {
            return Some(pid);
        }
        todo.extend(workers_of(pid));
    }
    None
}

/// PID 1 of a PID namespace, with the manifest's health listener and
/// linger. PID 1 is the init (`host::init`), the master its child: signals
/// go to PID 1, as `docker kill` and the kubelet send them, and SIGUSR2
/// upgrades the master below it, twice.
#[test]
fn drill_pid_1_with_health_and_linger() {
    if !pid_namespaces() {
        return;
    }
    let app = App::new("pid1");
    let mut cmd = Command::new("unshare");
    cmd.args(["--pid", "--fork", "--kill-child", "--mount-proc"]).arg(app.path()).args([
        "--workers",
        "2",
        "--listen",
        "127.0.0.1:0",
        "--health",
        "127.0.0.1:0",
        "--shutdown-linger",
        "2",
        "--heartbeat-timeout",
        "3",
    ]);
    // PID 1's reaper says how each old master exited.
    cmd.env("RUST_LOG", "info,mio_cluster::host::reaper=debug");
    let mut p = Proc::start(cmd);
    let line = p.expect("ready ");
    let addr: SocketAddr = field(&line, "addr").parse().unwrap();
    let init = workers_of(p.pid())[0];
    let mut master = workers_of(init)[0];
    let mut ns_master: u32 = field(&line, "pid").parse().unwrap();
    let health = health_addr(&p);
    let load = Load::start(addr, Some(health), None, Duration::from_secs(5));
    let mut table = Table::new("PID 1 --health --shutdown-linger", &load);
    assert!(load.wait_served(20), "no connection served:\n{}", p.stderr());
    table.row("start", &load, 0, "-");

    pool_operations(init, master, &load, &mut table);

    // SIGUSR2 to PID 1, twice: the master below it is upgraded, and PID 1
    // follows the new one.
    for n in ["SIGUSR2 (1st)", "SIGUSR2 (2nd)"] {
        signal(init, "USR2");
        let new_ns = next_ready(&mut p, ns_master);
        let new = host_pid(init, new_ns).expect("the new master in the namespace");
        assert!(eventually(OP_WAIT, || !alive(master)), "the old master did not leave");
        assert!(
            eventually(WAIT, || p
                .stderr()
                .contains(&format!("init: the master is pid {new_ns} now"))),
            "{}",
            p.stderr()
        );
        // The old master, a zombie until PID 1 reaps it, then gone.
        assert!(
            eventually(WAIT, || workers_of(init) == vec![new]),
            "PID 1's children: {:?}",
            workers_of(init)
        );
        let reaped = format!("reaped pid {ns_master}, not a worker: code=0");
        assert!(eventually(WAIT, || p.stderr().contains(&reaped)), "{}", p.stderr());
        pool_of(new, 2, &[]);
        (master, ns_master) = (new, new_ns);
        assert!(load.wait_served(20));
        table.row(n, &load, 0, "old master 0");
    }
    assert!(!p.stderr().contains("upgrade failed"), "{}", p.stderr());
    // The third master says so in its metrics.
    let metrics = get_body(health, "/metrics");
    for line in ["mio_cluster_generation 3", "mio_cluster_upgrades_total{result=\"succeeded\"} 2"] {
        assert!(metrics.lines().any(|l| l == line), "{line} in\n{metrics}");
    }

    // The kubelet's SIGTERM to PID 1: /ready says 503 at once, connections
    // are still served during the linger, then a clean exit.
    signal(init, "TERM");
    assert!(eventually(WAIT, || probe(health, "/ready") == Ok(503)));
    assert!(load.wait_served(5), "not served during the linger");
    let before = load.mark();
    load.stop();
    let code = p.wait_exit(OP_WAIT).code();
    assert_eq!(code, Some(0), "{}", p.stderr());
    assert!(app.processes().is_empty(), "left: {:?}", app.processes());
    let counts = Counts {
        ok: before.ok - table.last.ok,
        failed: before.failed - table.last.failed,
        probes: before.probes - table.last.probes,
        unanswered: before.unanswered - table.last.unanswered,
        not_ready: before.not_ready - table.last.not_ready,
    };
    assert_eq!(counts.failed, 0, "failed during the linger");
    table.rows.push(Row { op: "SIGTERM to PID 1 (linger, drain)", counts, exit: "0".into() });
    table.print();
}

/// A failed upgrade leaves nothing of the new program: a script that starts
/// a child of its own (which inherits the listening sockets) and never
/// reports ready is killed with its whole process group.
#[test]
fn a_failed_upgrade_kills_the_new_programs_whole_process_group() {
    adopt_orphans();
    let app = App::new("rollback-group");
    let mut cmd = Command::new(app.path());
    cmd.args(["--workers", "2", "--listen", "127.0.0.1:0", "--upgrade-timeout", "2"])
        .env("RUST_LOG", "info");
    let mut p = Proc::start(cmd);
    let addr: SocketAddr = field(&p.expect("ready "), "addr").parse().unwrap();
    let inode = listen_inode(addr.port()).unwrap();
    let bg = app.dir.join("bg.pid");
    app.deploy_script(&format!(
        "#!/bin/sh\nsleep 300 &\necho $! > {}\nexec sleep 300\n",
        bg.display()
    ));
    p.signal("USR2");
    assert!(
        eventually(OP_WAIT, || p.stderr().contains("was not ready within 2s")),
        "{}",
        p.stderr()
    );
    let bg: u32 = std::fs::read_to_string(&bg).unwrap().trim().parse().unwrap();
    assert!(eventually(WAIT, || !alive(bg)), "the new program's child {bg} outlived the rollback");
    echo_once(addr).unwrap();
    p.signal("TERM");
    assert_eq!(p.wait_exit(OP_WAIT).code(), Some(0), "{}", p.stderr());
    assert!(app.processes().is_empty(), "left: {:?}", app.processes());
    assert!(!holds_socket(bg, inode));
    assert!(std::net::TcpStream::connect(addr).is_err(), "{addr} still accepts");
}

/// Under a reaping master the reaper never takes the new master's exit
/// status from the rollback: every failure is logged with its code.
#[test]
fn under_a_reaping_master_every_rollback_logs_the_exit_code() {
    let app = App::new("rollback-code");
    let mut cmd = Command::new(app.path());
    cmd.args(["--workers", "1", "--listen", "127.0.0.1:0", "--subreaper"]).env("RUST_LOG", "info");
    let mut p = Proc::start(cmd);
    let addr: SocketAddr = field(&p.expect("ready "), "addr").parse().unwrap();
    app.deploy_script("#!/bin/sh\nexit 3\n");
    for n in 1..=5 {
        p.signal("USR2");
        assert!(
            eventually(OP_WAIT, || p.stderr().matches("upgrade failed: new master").count() >= n),
            "{}",
            p.stderr()
        );
    }
    let log = p.stderr();
    assert_eq!(log.matches("exited (code=3) before it was ready").count(), 5, "{log}");
    assert!(!log.contains("No child processes"), "{log}");
    echo_once(addr).unwrap();
    p.signal("TERM");
    assert_eq!(p.wait_exit(OP_WAIT).code(), Some(0), "{}", p.stderr());
}

/// Started detached (under systemd), a new master that gives up is not
/// the old one's child: it says why over the readiness channel, and the old
/// master's log has it.
#[test]
fn a_detached_new_master_that_gives_up_says_why() {
    let app = App::new("rollback-detached");
    let notify = app.dir.join("notify");
    let sock = std::os::unix::net::UnixDatagram::bind(&notify).unwrap();
    let mut cmd = Command::new(app.path());
    cmd.args(["--workers", "1", "--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "info")
        .env("NOTIFY_SOCKET", &notify);
    let mut p = Proc::start(cmd);
    let addr: SocketAddr = field(&p.expect("ready "), "addr").parse().unwrap();
    // The new build's workers speak another protocol major: they die at
    // start, and the new master gives up on the crash loop.
    let real = app.dir.join("echo-v2");
    let st = Command::new("cp").arg(example("echo")).arg(&real).status().unwrap();
    assert!(st.success());
    app.deploy_script(&format!(
        "#!/bin/sh\nMIO_CLUSTER_TEST_PROTOCOL=2.0 exec {} \"$@\"\n",
        real.display()
    ));
    p.signal("USR2");
    assert!(
        eventually(OP_WAIT, || p.stderr().contains("upgrade failed: new master")),
        "{}",
        p.stderr()
    );
    let log = p.stderr();
    assert!(
        log.contains(
            "before it was ready: workers keep dying at start-up; this master keeps serving"
        ),
        "{log}"
    );
    assert!(log.contains("its exit status went to its new parent"), "{log}");
    echo_once(addr).unwrap();
    drop(sock);
    p.signal("TERM");
    assert_eq!(p.wait_exit(OP_WAIT).code(), Some(0), "{}", p.stderr());
}

/// A private systemd 252 as PID 1 of fresh namespaces
/// (`shared/tools/realsystemd/run-systemd.sh`), stopped when dropped.
struct Systemd {
    script: PathBuf,
    name: String,
}

impl Systemd {
    /// An instance with `units` on its unit path; `None` (the reason
    /// printed) where this machine cannot run one.
    fn start(units: &Path) -> Option<Systemd> {
        // Beside the checkout, as on the developers' machines and in CI;
        // RUN_SYSTEMD names it elsewhere.
        let script = std::env::var_os("RUN_SYSTEMD").map(PathBuf::from).unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/tools/realsystemd/run-systemd.sh")
        });
        let missing = if !nix::unistd::geteuid().is_root() {
            Some("root".to_string())
        } else if !script.exists() {
            Some(script.display().to_string())
        } else if !Path::new("/lib/systemd/systemd").exists() {
            Some("/lib/systemd/systemd".to_string())
        } else {
            None
        };
        if let Some(what) = missing {
            eprintln!("skipped: a real systemd needs {what}");
            return None;
        }
        let sd = Systemd { script, name: format!("drill{}", std::process::id()) };
        let out = sd.run(&["start", &units.display().to_string()]);
        assert!(out.0, "run-systemd.sh start: {}", out.1);
        Some(sd)
    }

    /// `run-systemd.sh ARGS`, bounded to a minute: (success, output).
    fn run(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new("timeout")
            .arg("60")
            .arg(&self.script)
            .args(args)
            .env("RS_NAME", &self.name)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), text)
    }

    /// A shell command inside the instance: its stdout.
    fn sh(&self, command: &str) -> String {
        self.run(&["exec", "sh", "-c", command]).1
    }

    fn systemctl(&self, args: &[&str]) -> (bool, String) {
        let mut all = vec!["systemctl"];
        all.extend_from_slice(args);
        self.run(&all)
    }

    /// One property of the echo service.
    fn show(&self, property: &str) -> String {
        let (_, out) = self.systemctl(&["show", "-p", property, "--value", SERVICE]);
        out.trim().to_string()
    }

    fn main_pid(&self) -> u32 {
        self.show("MainPID").parse().unwrap_or(0)
    }

    /// The main process's children (its workers), pids inside the instance.
    fn workers(&self, main: u32) -> Vec<u32> {
        let out = self.sh(&format!("cat /proc/{main}/task/{main}/children"));
        out.split_whitespace().filter_map(|p| p.parse().ok()).collect()
    }

    fn journal(&self) -> String {
        self.run(&["journalctl", "--no-pager", "-o", "short-monotonic"]).1
    }

    /// The instance's network namespace, for the load's threads.
    fn netns(&self) -> PathBuf {
        let state = std::env::var("RS_STATE")
            .unwrap_or_else(|_| format!("/tmp/realsystemd-state/{}", self.name));
        let pid = std::fs::read_to_string(Path::new(&state).join("nspid")).unwrap();
        PathBuf::from(format!("/proc/{}/ns/net", pid.trim()))
    }

    /// Waits until the service's main process is not `not` and its
    /// status says that every worker listens: the new main pid and its
    /// workers, none of them in `old`.
    fn serving(&self, not: u32, old: &[u32]) -> (u32, Vec<u32>) {
        let mut got = (0, Vec::new());
        let ok = eventually(OP_WAIT, || {
            let main = self.main_pid();
            if main == 0 || main == not {
                return false;
            }
            let workers = self.workers(main);
            got = (main, workers.clone());
            workers.len() == 4
                && workers.iter().all(|w| !old.contains(w))
                && self.show("StatusText") == "4 workers listening on 127.0.0.1:7000"
        });
        assert!(ok, "not serving: main {} workers {:?}\n{}", got.0, got.1, self.journal());
        got
    }
}

impl Drop for Systemd {
    fn drop(&mut self) {
        let (ok, out) = self.run(&["stop"]);
        if !ok {
            eprintln!("run-systemd.sh stop: {out}");
        }
    }
}

const SERVICE: &str = "mio-cluster-echo.service";

/// The `deploy/` units, unchanged, under a real systemd: socket activation,
/// readiness, reload, the watchdog, two hot upgrades, and a stop that is
/// graceful after them (`Result=success`), with every notification
/// accepted.
#[test]
fn drill_the_shipped_units_under_a_real_systemd() {
    let units = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy");
    let Some(sd) = Systemd::start(&units) else { return };
    // The unit runs /usr/local/bin/mio-cluster-echo: the echo example, on a
    // file system of the instance's own (the host's directory is hidden,
    // not changed).
    let echo = example("echo");
    sd.sh(&format!(
        "mount -t tmpfs tmpfs /usr/local/bin && cp {} /usr/local/bin/mio-cluster-echo",
        echo.display()
    ));
    let (ok, out) = sd.systemctl(&["start", "mio-cluster-echo.socket", SERVICE]);
    assert!(ok, "systemctl start: {out}\n{}", sd.journal());
    let (first, _) = sd.serving(0, &[]);
    let addr: SocketAddr = "127.0.0.1:7000".parse().unwrap();
    // Long reads: while the watchdog restarts the service, connections
    // wait in the socket's queue, which systemd holds.
    let load = Load::start(addr, None, Some(sd.netns()), Duration::from_secs(20));
    let mut table = Table::new("systemd units", &load);
    assert!(load.wait_served(20), "no connection served:\n{}", sd.journal());
    table.row("start", &load, 0, "-");

    // systemctl reload: SIGHUP, a rolling restart.
    let old = sd.workers(first);
    let (ok, out) = sd.systemctl(&["reload", SERVICE]);
    assert!(ok, "systemctl reload: {out}");
    let ok = eventually(OP_WAIT, || {
        let now = sd.workers(first);
        now.len() == 4 && now.iter().all(|w| !old.contains(w))
    });
    assert!(ok, "the roll did not replace every worker:\n{}", sd.journal());
    assert!(load.wait_served(20));
    table.row("systemctl reload (SIGHUP)", &load, 0, "-");

    // SIGKILL of a worker.
    let old = sd.workers(first);
    sd.sh(&format!("kill -KILL {}", old[0]));
    let ok = eventually(OP_WAIT, || {
        let now = sd.workers(first);
        now.len() == 4 && !now.contains(&old[0])
    });
    assert!(ok, "the killed worker was not replaced:\n{}", sd.journal());
    assert!(load.wait_served(20));
    table.row("SIGKILL a worker", &load, CLIENTS, "-");

    // Before any worker hangs, the master has said nothing about the
    // watchdog: its pings went out from the start.
    let journal = sd.journal();
    assert!(!journal.contains("not pinging"), "{journal}");
    assert!(!journal.contains("watchdog: WATCHDOG_USEC"), "the shipped values: {journal}");

    // SIGSTOP of every worker: the shipped WatchdogSec catches the hung
    // pool before the master's heartbeat timeout would replace it.
    let old = sd.workers(first);
    let list: Vec<String> = old.iter().map(|w| w.to_string()).collect();
    sd.sh(&format!("kill -STOP {}", list.join(" ")));
    let (second, _) = sd.serving(first, &old);
    let journal = sd.journal();
    assert!(journal.contains("Watchdog timeout"), "no watchdog timeout:\n{journal}");
    assert!(load.wait_served(20));
    table.row("SIGSTOP every worker (watchdog restart)", &load, CLIENTS, "restarted");

    // Two hot upgrades.
    let mut main = second;
    for n in ["1st", "2nd"] {
        let old = sd.workers(main);
        let (ok, out) = sd.systemctl(&["kill", "-s", "USR2", "--kill-whom=main", SERVICE]);
        assert!(ok, "systemctl kill: {out}");
        let (new, _) = sd.serving(main, &old);
        let gone = eventually(OP_WAIT, || {
            sd.sh(&format!("test -d /proc/{main} || echo gone")).contains("gone")
        });
        assert!(gone, "the old master {main} is still there:\n{}", sd.journal());
        main = new;
        assert!(load.wait_served(20));
        table.row(
            if n == "1st" { "SIGUSR2 (1st)" } else { "SIGUSR2 (2nd)" },
            &load,
            0,
            "old master gone",
        );
    }

    // systemctl stop after the upgrades: SIGTERM to the main process, a
    // drain, and the unit ends inactive with Result=success.
    load.stop();
    let (ok, out) = sd.systemctl(&["stop", SERVICE]);
    assert!(ok, "systemctl stop: {out}");
    let result = sd.show("Result");
    let state = sd.show("ActiveState");
    table.rows.push(Row {
        op: "systemctl stop after the upgrades",
        counts: Counts::default(),
        exit: format!("{state}, Result={result}"),
    });
    table.print();
    let journal = sd.journal();
    assert_eq!((state.as_str(), result.as_str()), ("inactive", "success"), "{journal}");
    assert!(journal.contains("STOPPING") || journal.contains("graceful shutdown"), "{journal}");
    for bad in
        ["reception only permitted", "not our child", "stop-sigkill", "Failed with result 'signal'"]
    {
        assert!(!journal.contains(bad), "{bad:?} in the journal:\n{journal}");
    }
    let left = sd.sh("for p in /proc/[0-9]*; do readlink $p/exe; done | grep -c mio-cluster-echo");
    assert_eq!(left.trim(), "0", "processes left:\n{journal}");
}

/// The shipped unit's `WatchdogSec` and `--heartbeat-timeout` work
/// together: the master says nothing of them at start. With the values the
/// unit had before (a watchdog as long as the heartbeat timeout), it warns
/// that the watchdog cannot catch a pool that hangs just after a ping.
#[test]
fn the_master_warns_at_start_when_the_watchdog_cannot_catch_a_hung_pool() {
    let unit =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy").join(SERVICE))
            .unwrap();
    let watchdog: u64 = unit
        .lines()
        .find_map(|l| l.strip_prefix("WatchdogSec="))
        .expect("WatchdogSec=")
        .parse()
        .unwrap();
    let exec = unit.lines().find_map(|l| l.strip_prefix("ExecStart=")).unwrap();
    let words: Vec<&str> = exec.split_whitespace().collect();
    let at = words.iter().position(|w| *w == "--heartbeat-timeout").unwrap();
    let heartbeat = words[at + 1];
    let app = App::new("watchdog");
    let notify = app.dir.join("notify");
    let _sock = std::os::unix::net::UnixDatagram::bind(&notify).unwrap();
    let start = |watchdog_secs: u64| {
        let mut cmd = Command::new(app.path());
        cmd.args(["--workers", "1", "--listen", "127.0.0.1:0", "--heartbeat-timeout", heartbeat])
            .env("RUST_LOG", "info")
            .env("NOTIFY_SOCKET", &notify)
            .env("WATCHDOG_USEC", (watchdog_secs * 1_000_000).to_string());
        let mut p = Proc::start(cmd);
        p.expect("ready ");
        p.signal("TERM");
        assert_eq!(p.wait_exit(OP_WAIT).code(), Some(0), "{}", p.stderr());
        p.stderr()
    };
    let shipped = start(watchdog);
    assert!(!shipped.contains("watchdog:"), "the shipped values: {shipped}");
    let old = start(heartbeat.parse().unwrap());
    assert!(
        old.contains(&format!("watchdog: WATCHDOG_USEC is {heartbeat}s with a heartbeat timeout")),
        "{old}"
    );
}
