//! Deploying a new version: a rolling restart (SIGHUP) runs the program now
//! at the path the master was started from, under a connect loop that
//! counts every failed connection; a build that speaks another protocol
//! version stops the roll and the old workers keep serving.

mod util;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use util::*;

/// How long a roll of two workers may take, at most.
const ROLL_WAIT: Duration = Duration::from_secs(20);
/// What every client of the connect loop sends: `echo` sends it back,
/// `http_hello` answers it and closes.
const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";

/// A directory of its own under cargo's temporary directory, removed at the
/// end, where a test deploys programs.
struct Site {
    dir: PathBuf,
}

impl Site {
    fn new(name: &str) -> Site {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("deploy-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Site { dir }
    }

    /// The path the master is started from.
    fn app(&self) -> PathBuf {
        self.dir.join("app")
    }

    /// Puts a copy of `example` at the app's path by an atomic rename, as
    /// deploy tools do.
    fn deploy(&self, example: &str) {
        let tmp = self.dir.join("app.new");
        copy(&util::example(example), &tmp);
        std::fs::rename(&tmp, self.app()).unwrap();
    }

    /// Puts at the app's path, by an atomic rename, a script that runs a
    /// copy of `example` (named `file`) with `env` set.
    fn deploy_wrapped(&self, example: &str, file: &str, env: &str) {
        let real = self.dir.join(file);
        copy(&util::example(example), &real);
        let tmp = self.dir.join("app.new");
        let script = format!("#!/bin/sh\n{env} exec {} \"$@\"\n", real.display());
        let st = Command::new("sh")
            .args(["-c", "printf '%s' \"$1\" > \"$0\" && chmod 755 \"$0\""])
            .arg(&tmp)
            .arg(script)
            .status()
            .unwrap();
        assert!(st.success());
        std::fs::rename(&tmp, self.app()).unwrap();
    }

    /// Starts the app with `args`; returns it and its address once it is
    /// ready.
    fn start(&self, args: &[&str]) -> (Proc, SocketAddr) {
        let mut cmd = Command::new(self.app());
        cmd.args(args).env("RUST_LOG", "info");
        let mut p = Proc::start(cmd);
        let addr = field(&p.expect("ready "), "addr").parse().unwrap();
        (p, addr)
    }
}

/// Copies a program with `cp`: a file this process had open for writing
/// could be inherited, for a moment, by a child another test forks, and its
/// `exec` would then fail with `ETXTBSY`.
fn copy(from: &Path, to: &Path) {
    let st = Command::new("cp").arg(from).arg(to).status().unwrap();
    assert!(st.success(), "cp {} {}", from.display(), to.display());
}

impl Drop for Site {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What a client of the connect loop got.
#[derive(Debug, Default)]
struct Tally {
    echoed: AtomicUsize,
    http: AtomicUsize,
    failures: Mutex<Vec<String>>,
}

/// Clients that connect, send [`REQUEST`] and read the answer, one after
/// another, on `threads` threads, until stopped.
struct ConnectLoop {
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl ConnectLoop {
    fn start(addr: SocketAddr, threads: usize) -> ConnectLoop {
        let stop = Arc::new(AtomicBool::new(false));
        let tally = Arc::new(Tally::default());
        let threads = (0..threads)
            .map(|_| {
                let (stop, tally) = (stop.clone(), tally.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        match exchange(addr) {
                            Ok(Answer::Echo) => tally.echoed.fetch_add(1, Ordering::Relaxed),
                            Ok(Answer::Http) => tally.http.fetch_add(1, Ordering::Relaxed),
                            Err(e) => {
                                tally.failures.lock().unwrap().push(e);
                                0
                            }
                        };
                    }
                })
            })
            .collect();
        ConnectLoop { stop, tally, threads }
    }

    /// Waits until `more` more answers of the new program arrived.
    fn wait_http(&self, more: usize) {
        let start = self.tally.http.load(Ordering::Relaxed);
        assert!(
            eventually(WAIT, || self.tally.http.load(Ordering::Relaxed) >= start + more),
            "no answer of the new program"
        );
    }

    /// Stops the clients: (echoed, http answers, failures).
    fn stop(self) -> (usize, usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        let t = &self.tally;
        let failures = std::mem::take(&mut *t.failures.lock().unwrap());
        (t.echoed.load(Ordering::Relaxed), t.http.load(Ordering::Relaxed), failures)
    }
}

enum Answer {
    Echo,
    Http,
}

/// One connection: [`REQUEST`] sent, and either it echoed back or the
/// hello-world answer, then the end, received.
fn exchange(addr: SocketAddr) -> Result<Answer, String> {
    let mut s = connect(addr).map_err(|e| format!("connect: {e}"))?;
    s.write_all(REQUEST).map_err(|e| format!("write: {e}"))?;
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    loop {
        if got == REQUEST {
            return Ok(Answer::Echo);
        }
        match s.read(&mut buf) {
            Ok(0) if got == HTTP_CLOSING.as_bytes() => return Ok(Answer::Http),
            Ok(0) => return Err(format!("closed after {:?}", String::from_utf8_lossy(&got))),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => return Err(format!("read after {:?}: {e}", String::from_utf8_lossy(&got))),
        }
    }
}

/// What `/proc/PID/exe` links to.
fn exe_of(pid: u32) -> String {
    std::fs::read_link(format!("/proc/{pid}/exe"))
        .map(|p| p.display().to_string())
        .unwrap_or_else(|e| format!("({e})"))
}

/// Waits until the master's stderr has a line containing `what`.
fn expect_log(p: &Proc, what: &str, timeout: Duration) {
    assert!(
        eventually(timeout, || p.stderr().contains(what)),
        "no {what:?} in the log within {timeout:?}:\n{}",
        p.stderr()
    );
}

#[test]
fn a_rolling_restart_runs_the_program_now_at_the_path_and_refuses_no_connection() {
    let site = Site::new("roll");
    site.deploy("echo");
    let (mut p, addr) = site.start(&["--workers", "2", "--listen", "127.0.0.1:0"]);
    let old = workers_of(p.pid());
    assert_eq!(old.len(), 2);
    let clients = ConnectLoop::start(addr, 2);
    std::thread::sleep(Duration::from_millis(200));

    site.deploy("http_hello");
    p.signal("HUP");
    expect_log(&p, "rolling restart complete", ROLL_WAIT);
    clients.wait_http(20);
    // The old workers drain and go; every worker is then the new file (not
    // the old inode, which reads "(deleted)").
    let app = site.app().display().to_string();
    let mut now = Vec::new();
    let all_new = eventually(ROLL_WAIT, || {
        now = workers_of(p.pid());
        now.len() == 2 && now.iter().all(|w| exe_of(*w) == app)
    });
    let exes: Vec<_> = now.iter().map(|w| exe_of(*w)).collect();
    assert!(all_new, "workers {now:?} run {exes:?}, not {app}");
    assert!(now.iter().all(|w| !old.contains(w)), "old {old:?}, now {now:?}");
    let (echoed, http, failures) = clients.stop();
    eprintln!("connect loop: {echoed} echoed, {http} answered by http_hello, {failures:?} failed");
    assert!(echoed > 0, "the old program never answered");
    assert!(failures.is_empty(), "{} connections failed: {failures:?}", failures.len());
    assert_eq!(http_exchange(addr, REQUEST).unwrap(), HTTP_CLOSING);
    p.signal("TERM");
    assert_eq!(p.wait_exit(WAIT).code(), Some(0), "{}", p.stderr());
}

#[test]
fn a_build_of_another_protocol_major_stops_the_roll_and_the_old_workers_keep_serving() {
    let site = Site::new("protocol");
    site.deploy("echo");
    let (mut p, addr) = site.start(&["--workers", "2", "--listen", "127.0.0.1:0"]);
    let old = workers_of(p.pid());
    let clients = ConnectLoop::start(addr, 2);
    std::thread::sleep(Duration::from_millis(200));

    // A build that speaks protocol 2.0 (the test hook of the `fuzzing`
    // feature, which the examples are built with).
    site.deploy_wrapped("echo", "echo-v2", "MIO_CLUSTER_TEST_PROTOCOL=2.0");
    let t0 = Instant::now();
    p.signal("HUP");
    expect_log(&p, "rolling restart stopped", ROLL_WAIT);
    eprintln!("roll stopped {:?} after SIGHUP", t0.elapsed());
    let v = mio_cluster::PROTOCOL_VERSION;
    // The worker says why, naming both versions, and exits with its code;
    // the master logs the same mismatch.
    expect_log(&p, &format!("this program speaks IPC protocol 2.0, its master {v}"), WAIT);
    expect_log(&p, &format!("worker speaks IPC protocol 2.0, this master {v}"), WAIT);
    expect_log(&p, &format!("died: code={}", mio_cluster::EXIT_PROTOCOL), WAIT);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(workers_of(p.pid()), old, "the old workers are the ones left");
    let (echoed, _, failures) = clients.stop();
    eprintln!("connect loop: {echoed} echoed, {failures:?} failed");
    assert!(failures.is_empty(), "{} connections failed: {failures:?}", failures.len());
    echo_once(addr).unwrap();

    // Another minor version of the same major is spoken: that roll goes
    // through.
    let minor = format!("MIO_CLUSTER_TEST_PROTOCOL={}.{}", v.major, v.minor + 7);
    site.deploy_wrapped("echo", "echo-minor", &minor);
    p.signal("HUP");
    expect_log(&p, "rolling restart complete", ROLL_WAIT);
    let replaced = eventually(ROLL_WAIT, || {
        let now = workers_of(p.pid());
        now.len() == 2 && now.iter().all(|w| !old.contains(w))
    });
    assert!(replaced, "old {old:?}, now {:?}", workers_of(p.pid()));
    echo_once(addr).unwrap();
    p.signal("TERM");
    assert_eq!(p.wait_exit(WAIT).code(), Some(0), "{}", p.stderr());
}

/// Waits for the next `ready` line, of a master other than `not`: its pid.
fn next_ready(p: &mut Proc, not: u32, timeout: Duration) -> u32 {
    let line = p.expect_by("ready line of a new master", timeout, |l| {
        l.starts_with("ready ") && field(l, "pid") != not.to_string()
    });
    field(&line, "pid").parse().unwrap()
}

/// Waits for the started process to exit (its pipes may stay open: a new
/// master inherited them). Its exit code.
fn exit_code(p: &mut Proc, timeout: Duration) -> Option<i32> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(s) = p.child.try_wait().unwrap() {
            return s.code();
        }
        assert!(Instant::now() < deadline, "master {} still runs:\n{}", p.pid(), p.stderr());
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Terminates a new master and waits until it is gone.
fn stop(pid: u32) {
    signal(pid, "TERM");
    assert!(eventually(WAIT, || !alive(pid)), "master {pid} did not exit on SIGTERM");
}

#[test]
fn a_sigusr2_hands_the_same_socket_to_a_new_master_running_the_new_program_with_no_failure() {
    let site = Site::new("upgrade");
    site.deploy("echo");
    let (mut p, addr) = site.start(&["--workers", "2", "--listen", "127.0.0.1:0"]);
    let old_pid = p.pid();
    let inode = listen_inode(addr.port()).expect("a listening socket");
    let clients = ConnectLoop::start(addr, 2);
    std::thread::sleep(Duration::from_millis(200));

    site.deploy("http_hello");
    let t0 = Instant::now();
    p.signal("USR2");
    // The new master prints its ready line once all its workers listen.
    let new_pid = next_ready(&mut p, old_pid, ROLL_WAIT);
    let listening = t0.elapsed();
    let _guard = KillOnDrop::new(new_pid);
    assert_eq!(exit_code(&mut p, ROLL_WAIT), Some(0), "{}", p.stderr());
    let gone = t0.elapsed();
    clients.wait_http(20);
    let (echoed, http, failures) = clients.stop();
    eprintln!(
        "SIGUSR2: {} connections ({echoed} echoed by the old program, {http} answered by the \
         new), {} failed; new workers listening {listening:?} after the signal, old generation \
         gone after {gone:?}",
        echoed + http + failures.len(),
        failures.len()
    );
    assert!(failures.is_empty(), "{} connections failed: {failures:?}", failures.len());
    assert!(echoed > 0);

    // The same socket, held by the new master and its workers; each runs the
    // new file at the path; the master's pid is the new master's.
    assert_ne!(new_pid, old_pid);
    assert_eq!(listen_inode(addr.port()), Some(inode), "the listening socket changed");
    assert!(holds_socket(new_pid, inode), "the new master does not hold socket {inode}");
    let app = site.app().display().to_string();
    assert_eq!(exe_of(new_pid), app);
    let workers = workers_of(new_pid);
    assert_eq!(workers.len(), 2, "{workers:?}");
    for w in &workers {
        assert_eq!(exe_of(*w), app, "worker {w}");
        assert!(holds_socket(*w, inode), "worker {w} does not hold socket {inode}");
    }
    assert_eq!(http_exchange(addr, REQUEST).unwrap(), HTTP_CLOSING);
    // The old master logs the hand-over once it has read the new one's
    // report: wait for the line rather than look once.
    expect_log(&p, &format!("handed over to the new master (pid {new_pid})"), WAIT);
    stop(new_pid);
}

#[test]
fn a_new_master_that_cannot_start_or_exits_at_once_is_rolled_back_and_the_log_says_why() {
    let site = Site::new("upgrade-exits");
    site.deploy("echo");
    let (mut p, addr) = site.start(&["--workers", "2", "--listen", "127.0.0.1:0"]);
    let old = workers_of(p.pid());
    let clients = ConnectLoop::start(addr, 2);
    std::thread::sleep(Duration::from_millis(100));

    // A build that exits at once.
    site.deploy_wrapped("echo", "unused", "exit 3;");
    p.signal("USR2");
    expect_log(&p, "exited (code=3) before it was ready; this master keeps serving", WAIT);
    // A path with no program, and a file that is not executable.
    std::fs::remove_file(site.app()).unwrap();
    p.signal("USR2");
    expect_log(&p, "No such file or directory", WAIT);
    let st = Command::new("sh").arg("-c").arg("echo x > \"$0\"").arg(site.app()).status();
    assert!(st.unwrap().success());
    p.signal("USR2");
    expect_log(&p, "not an executable file; this master keeps serving", WAIT);

    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(workers_of(p.pid()), old, "the same workers serve");
    let (echoed, _, failures) = clients.stop();
    eprintln!("connect loop: {echoed} echoed, {failures:?} failed");
    assert!(failures.is_empty(), "{} connections failed: {failures:?}", failures.len());
    echo_once(addr).unwrap();
    p.signal("TERM");
    assert_eq!(exit_code(&mut p, WAIT), Some(0), "{}", p.stderr());
}

#[test]
fn a_new_master_that_never_becomes_ready_is_killed_after_the_upgrade_timeout() {
    let site = Site::new("upgrade-hangs");
    site.deploy("echo");
    let args = ["--workers", "2", "--listen", "127.0.0.1:0", "--upgrade-timeout", "1"];
    let (mut p, addr) = site.start(&args);
    let old = workers_of(p.pid());
    let clients = ConnectLoop::start(addr, 2);

    // A build that never gets as far as its workers listening.
    site.deploy_wrapped("echo", "unused", "exec sleep 60;");
    let t0 = Instant::now();
    p.signal("USR2");
    expect_log(&p, "upgrade: new master (pid", WAIT);
    let log = p.stderr();
    let pid: u32 = log.split("upgrade: new master (pid ").nth(1).unwrap()[..]
        .split(')')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let _guard = KillOnDrop::new(pid);
    // One at a time.
    p.signal("USR2");
    expect_log(&p, &format!("upgrade refused: one is under way (new master pid {pid})"), WAIT);
    expect_log(&p, "was not ready within 1s; this master keeps serving", WAIT);
    let waited = t0.elapsed();
    assert!(waited >= Duration::from_secs(1), "rolled back after {waited:?}");
    assert!(!alive(pid), "the new master still runs");
    assert_eq!(workers_of(p.pid()), old, "the same workers serve");
    let (echoed, _, failures) = clients.stop();
    eprintln!("rolled back {waited:?} after SIGUSR2; connect loop: {echoed} echoed, {failures:?}");
    assert!(failures.is_empty(), "{} connections failed: {failures:?}", failures.len());
    p.signal("TERM");
    assert_eq!(exit_code(&mut p, WAIT), Some(0), "{}", p.stderr());
}

#[test]
fn two_upgrades_back_to_back_both_succeed_while_the_first_generation_still_drains() {
    let site = Site::new("upgrade-twice");
    site.deploy("echo");
    let args = ["--workers", "2", "--listen", "127.0.0.1:0", "--shutdown-timeout", "20"];
    let (mut p, addr) = site.start(&args);
    let first = p.pid();
    // An open connection keeps an old worker, and so its master, draining.
    let mut held = Vec::new();
    hold(addr, 1, &mut held);
    let clients = ConnectLoop::start(addr, 2);

    site.deploy("http_hello");
    p.signal("USR2");
    let second = next_ready(&mut p, first, ROLL_WAIT);
    let _g2 = KillOnDrop::new(second);
    expect_log(&p, &format!("handed over to the new master (pid {second})"), WAIT);
    assert!(alive(first), "the first master still drains");

    site.deploy("echo");
    signal(second, "USR2");
    let third = p.expect_by("ready line of the third master", ROLL_WAIT, |l| {
        l.starts_with("ready ")
            && ![first, second].map(|p| p.to_string()).contains(&field(l, "pid").to_string())
    });
    let third: u32 = field(&third, "pid").parse().unwrap();
    let _g3 = KillOnDrop::new(third);
    // The status table (SIGUSR1) names each worker's generation: the first
    // master's workers are 1, the third master's 3.
    signal(third, "USR1");
    let row = |p: &Proc, gen: &str| {
        p.stderr().lines().any(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            w.len() > 3 && w[0].parse::<u32>().is_ok() && w[2] == gen
        })
    };
    assert!(eventually(WAIT, || row(&p, "3")), "no generation-3 row:\n{}", p.stderr());
    signal(first, "USR1");
    assert!(eventually(WAIT, || row(&p, "1")), "no generation-1 row:\n{}", p.stderr());
    assert!(eventually(ROLL_WAIT, || !alive(second)), "the second master did not leave");
    assert!(alive(first), "the first master still drains: its connection is open");
    roundtrip(&mut held[0], b"still served").unwrap();
    drop(held);
    assert_eq!(exit_code(&mut p, ROLL_WAIT), Some(0), "{}", p.stderr());

    let (echoed, http, failures) = clients.stop();
    eprintln!("two upgrades: {echoed} echoed, {http} http, {failures:?} failed");
    assert!(failures.is_empty(), "{} connections failed: {failures:?}", failures.len());
    assert!(http > 0, "the second master never answered");
    let app = site.app().display().to_string();
    assert!(workers_of(third).iter().all(|w| exe_of(*w) == app));
    echo_once(addr).unwrap();
    stop(third);
}

/// The parent pid of `pid`, from `/proc/PID/stat`.
fn parent_of(pid: u32) -> u32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let (_, rest) = stat.rsplit_once(')').unwrap();
    rest.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn under_systemd_the_old_master_names_the_new_one_main_pid_before_it_exits() {
    let site = Site::new("upgrade-systemd");
    site.deploy("echo");
    let notify = site.dir.join("notify");
    let sock = std::os::unix::net::UnixDatagram::bind(&notify).unwrap();
    sock.set_read_timeout(Some(WAIT)).unwrap();
    let mut cmd = Command::new(site.app());
    cmd.args(["--workers", "2", "--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "info")
        .env("NOTIFY_SOCKET", &notify);
    let mut p = Proc::start(cmd);
    p.expect("ready ");
    let mut buf = [0u8; 256];
    let mut next = || {
        let n = sock.recv(&mut buf).expect("a notification within 10 s");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let first = next();
    assert!(first.starts_with("READY=1\nSTATUS=2 workers listening on"), "{first:?}");
    let old = p.pid();
    p.signal("USR2");
    let new = next_ready(&mut p, old, ROLL_WAIT);
    let _guard = KillOnDrop::new(new);
    // The old master's MAINPID= first: systemd takes notifications from
    // the main process alone, so the new master (handed the notification
    // socket) says nothing before it, then its status. After MAINPID= the
    // old master says nothing more, and it exits only after it sent it.
    assert_eq!(next(), format!("MAINPID={new}"));
    let status = next();
    assert!(status.starts_with("STATUS=2 workers listening on"), "{status:?}");
    // Started detached: the service manager, not the old master, is its
    // parent (so that systemd supervises it as its own child).
    assert_ne!(parent_of(new), old, "the new master is still the old one's child");
    assert_eq!(exit_code(&mut p, ROLL_WAIT), Some(0), "{}", p.stderr());
    stop(new);
}

#[test]
fn a_unix_socket_file_is_still_served_after_an_upgrade() {
    let site = Site::new("upgrade-unix");
    site.deploy("echo");
    let path = site.dir.join("echo.sock");
    let listen = format!("unix:{}", path.display());
    let mut cmd = Command::new(site.app());
    cmd.args(["--workers", "2", "--listen", &listen]).env("RUST_LOG", "info");
    let mut p = Proc::start(cmd);
    p.expect("ready ");
    unix_echo(&path).unwrap();
    let old = p.pid();
    p.signal("USR2");
    let new = next_ready(&mut p, old, ROLL_WAIT);
    let _guard = KillOnDrop::new(new);
    assert_eq!(exit_code(&mut p, ROLL_WAIT), Some(0), "{}", p.stderr());
    // The old master did not unlink the file the new one serves.
    for _ in 0..10 {
        unix_echo(&path).unwrap();
    }
    stop(new);
}
