//! Helpers shared by the integration tests: start the example programs as
//! real processes, read their lines with deadlines, talk to them over
//! loopback. Every wait here is bounded.

#![allow(dead_code)]

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Generous bound for anything that should take milliseconds.
pub const WAIT: Duration = Duration::from_secs(10);

/// Path of a built example (cargo builds examples before integration tests).
pub fn example(name: &str) -> PathBuf {
    let mut p = std::env::current_exe().expect("test binary path");
    p.pop();
    if p.ends_with("deps") {
        p.pop();
    }
    let path = p.join("examples").join(name);
    assert!(path.exists(), "{} is not built; run the tests with cargo test", path.display());
    path
}

/// A running example: stdout lines arrive through a channel, stderr is kept.
pub struct Proc {
    pub child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    backlog: VecDeque<String>,
    stderr: Arc<Mutex<String>>,
    stderr_done: Arc<std::sync::atomic::AtomicBool>,
}

impl Proc {
    /// Starts `cmd` with piped stdio.
    pub fn start(mut cmd: Command) -> Proc {
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        Self::start_configured(cmd)
    }

    /// Starts `cmd` whose stdout and stderr are piped (stdin as configured).
    pub fn start_configured(mut cmd: Command) -> Proc {
        let mut child = cmd.spawn().expect("spawn");
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let err = Arc::new(Mutex::new(String::new()));
        let err2 = err.clone();
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let done2 = done.clone();
        std::thread::spawn(move || {
            let mut r = BufReader::new(stderr);
            let mut line = String::new();
            while r.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
                if std::env::var_os("TEST_VERBOSE").is_some() {
                    eprint!("{line}");
                }
                err2.lock().unwrap().push_str(&line);
                line.clear();
            }
            done2.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        Proc {
            stdin: child.stdin.take(),
            child,
            lines,
            backlog: VecDeque::new(),
            stderr: err,
            stderr_done: done,
        }
    }

    /// Starts the fixture master with these arguments (passed on to workers).
    pub fn fixture(args: &[&str]) -> Proc {
        Self::fixture_env(args, &[])
    }

    /// The fixture master, its workers with it, under the real-time
    /// policy `SCHED_FIFO` ([`realtime`]).
    pub fn fixture_realtime(args: &[&str], env: &[(&str, &str)]) -> Proc {
        let mut cmd = realtime(&example("fixture"));
        cmd.args(args).env("RUST_LOG", "debug");
        for (k, v) in env {
            cmd.env(k, v);
        }
        Proc::start(cmd)
    }

    /// Starts the fixture master with arguments and environment.
    pub fn fixture_env(args: &[&str], env: &[(&str, &str)]) -> Proc {
        let mut cmd = Command::new(example("fixture"));
        cmd.args(args).env("RUST_LOG", "debug");
        for (k, v) in env {
            cmd.env(k, v);
        }
        Proc::start(cmd)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Writes one command line to stdin.
    pub fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{line}").expect("write command");
        stdin.flush().unwrap();
    }

    /// Waits for the first line (seen or new) that satisfies `f`; lines
    /// passed over are kept for later calls.
    pub fn expect_by(&mut self, what: &str, timeout: Duration, f: impl Fn(&str) -> bool) -> String {
        if let Some(i) = self.backlog.iter().position(|l| f(l)) {
            return self.backlog.remove(i).unwrap();
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if f(&line) => return line,
                Ok(line) => self.backlog.push_back(line),
                Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => panic!(
                    "no line {what} within {timeout:?}; unmatched lines: {:?}\nstderr:\n{}",
                    self.backlog,
                    self.stderr()
                ),
            }
        }
    }

    /// Waits for a line starting with `prefix`.
    pub fn expect(&mut self, prefix: &str) -> String {
        self.expect_by(&format!("starting with {prefix:?}"), WAIT, |l| l.starts_with(prefix))
    }

    /// Every line received so far or within `wait`, in order, consumed.
    pub fn drain(&mut self, wait: Duration) -> Vec<String> {
        let deadline = Instant::now() + wait;
        while let Ok(l) =
            self.lines.recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            self.backlog.push_back(l);
        }
        self.backlog.drain(..).collect()
    }

    /// What the process wrote on stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits for the process to exit; panics after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                // Let the reader take in everything it wrote on stderr.
                let done = &self.stderr_done;
                eventually(Duration::from_secs(2), || {
                    done.load(std::sync::atomic::Ordering::SeqCst)
                });
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "process {} still running after {timeout:?}",
                self.pid()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends a signal to the process.
    pub fn signal(&self, sig: &str) {
        signal(self.pid(), sig);
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `kill -SIG pid`.
pub fn signal(pid: u32, sig: &str) {
    let st = Command::new("kill").arg(format!("-{sig}")).arg(pid.to_string()).status().unwrap();
    assert!(st.success(), "kill -{sig} {pid}");
}

/// The value of `key=` in an event line.
pub fn field<'a>(line: &'a str, key: &str) -> &'a str {
    line.split(' ')
        .find_map(|w| w.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
        .unwrap_or_else(|| panic!("no {key}= in {line:?}"))
}

/// Connects with a bounded wait, and bounded reads and writes.
pub fn connect(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    Ok(s)
}

/// Sends `msg` on `s` and reads the same bytes back.
pub fn roundtrip(s: &mut TcpStream, msg: &[u8]) -> std::io::Result<()> {
    s.write_all(msg)?;
    let mut back = vec![0; msg.len()];
    s.read_exact(&mut back)?;
    if back != msg {
        return Err(std::io::Error::other("echo differs"));
    }
    Ok(())
}

/// One connection, one echo, closed.
pub fn echo_once(addr: SocketAddr) -> std::io::Result<()> {
    let mut s = connect(addr)?;
    roundtrip(&mut s, b"ping")
}

/// Process ids of this process's children's children etc. are not needed:
/// reads `Threads:` of any process.
pub fn threads_of(pid: u32) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    status.lines().find_map(|l| l.strip_prefix("Threads:")).unwrap().trim().parse().unwrap()
}

/// True while `/proc/PID` exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'),
        Err(_) => false,
    }
}

/// Polls `f` until it is true or `timeout` passes.
pub fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The open connections of each worker of a fixture master, by id (each
/// worker answers a `report`).
pub fn conns_of(m: &mut Proc, ids: &[u32]) -> Vec<usize> {
    ids.iter()
        .map(|id| {
            m.send(&format!("send {id} report"));
            field(&m.expect(&format!("message id={id} report")), "conns").parse().unwrap()
        })
        .collect()
}

/// A fixture master that supervises `n` workers listening on a port of
/// its choosing (`FIXTURE_SUPERVISE`, plus `env`), once all of them listen,
/// with that port's address.
pub fn supervised(n: u32, env: &[(&str, &str)]) -> (Proc, SocketAddr) {
    let n_s = n.to_string();
    let mut all = vec![("FIXTURE_SUPERVISE", n_s.as_str())];
    all.extend_from_slice(env);
    let mut m = Proc::fixture_env(&["--listen", "127.0.0.1:0"], &all);
    let mut addr = None;
    for id in 1..=n {
        addr = Some(field(&m.expect(&format!("listening id={id}")), "addr").parse().unwrap());
    }
    (m, addr.unwrap())
}

/// A fixture master's `status` rows, one per worker.
pub fn status(m: &mut Proc) -> Vec<String> {
    m.send("status");
    let mut rows = Vec::new();
    loop {
        let l = m.expect_by("status row", WAIT, |l| l.starts_with("status"));
        if l == "status-end" {
            return rows;
        }
        rows.push(l);
    }
}

/// The ids of a fixture master's workers, from its `status` rows.
pub fn ids(m: &mut Proc) -> Vec<String> {
    status(m).iter().map(|r| field(r, "id").to_string()).collect()
}

/// A command that runs `program` (the same pid: `chrt` execs it) under
/// the real-time policy `SCHED_FIFO` (`chrt -f 1`), as root: for tests of
/// the accept balance, where a worker not scheduled within 2 ms is passed
/// over by design, so that other load on the machine (another test, a
/// build, a busy loop) cannot delay the worker the test watches. Without
/// root, or without `chrt`, the normal policy, said on stderr.
pub fn realtime(program: &std::path::Path) -> Command {
    let rt = nix::unistd::geteuid().is_root()
        && Command::new("chrt").args(["-f", "1", "true"]).status().is_ok_and(|s| s.success());
    if !rt {
        eprintln!("SCHED_FIFO unavailable (needs root and chrt): other load may skew the balance");
        return Command::new(program);
    }
    let mut cmd = Command::new("chrt");
    cmd.args(["-f", "1"]).arg(program);
    cmd
}

/// The user `nobody`, if this test runs as root and it exists; otherwise
/// `None`, and the reason on stderr (the caller skips).
pub fn nobody() -> Option<nix::unistd::User> {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("not root: workers cannot run as another user; skipped");
        return None;
    }
    let user = nix::unistd::User::from_name("nobody").ok().flatten();
    if user.is_none() {
        eprintln!("no user nobody; skipped");
        return None;
    }
    // Its workers run the examples as nobody: every folder above them must
    // let others through (a checkout under /root or a `mktemp -d` does not).
    let program = example("fixture");
    if let Some(closed) = closed_to_others(&program) {
        eprintln!(
            "{} cannot be reached by nobody ({} is closed to others); skipped",
            program.display(),
            closed.display()
        );
        return None;
    }
    user
}

/// The first folder above `path` (or `path` itself) that others may not
/// pass through or run, if any.
fn closed_to_others(path: &std::path::Path) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let mut at = Some(path);
    while let Some(p) = at {
        let mode = std::fs::metadata(p).ok()?.permissions().mode();
        if mode & 0o001 == 0 {
            return Some(p.to_path_buf());
        }
        at = p.parent().filter(|p| !p.as_os_str().is_empty());
    }
    None
}

/// A process this test did not start itself (a new master, a worker), to
/// kill when dropped: only if it is still the same process, with the start
/// time it had when it was taken (its pid alone may be another process's
/// by then: pids are reused).
pub struct KillOnDrop {
    pid: u32,
    start: Option<u64>,
}

impl KillOnDrop {
    pub fn new(pid: u32) -> KillOnDrop {
        KillOnDrop { pid, start: start_time(pid) }
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if self.start.is_some() && start_time(self.pid) == self.start {
            let pid = nix::unistd::Pid::from_raw(self.pid as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        }
    }
}

/// When process `pid` started (`/proc/PID/stat`, clock ticks since boot).
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// One `ping` echoed over the Unix socket at `path`.
pub fn unix_echo(path: &std::path::Path) -> std::io::Result<()> {
    let mut s = std::os::unix::net::UnixStream::connect(path)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(b"ping")?;
    let mut back = [0u8; 4];
    s.read_exact(&mut back)?;
    assert_eq!(&back, b"ping");
    Ok(())
}

/// `n` connections to `addr`, each echoed once (so a worker has accepted
/// it), added to `held`, which keeps them open.
pub fn hold(addr: SocketAddr, n: usize, held: &mut Vec<TcpStream>) {
    for _ in 0..n {
        let mut s = connect(addr).unwrap();
        roundtrip(&mut s, b"x").unwrap();
        held.push(s);
    }
}

/// `http_hello`'s and `tokio_hello`'s answer (examples/common/http.rs).
pub const HTTP_OK: &str =
    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 12\r\n\r\nHello world\n";
/// The same answer, when the server closes the connection after it.
pub const HTTP_CLOSING: &str =
    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 12\r\n\
                                Connection: close\r\n\r\nHello world\n";
/// A keep-alive request.
pub const HTTP_GET: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";

/// Sends `request` on a new connection and reads until the server closes,
/// or for at most 5 s (a server that keeps the connection open fails the
/// read with a timeout).
pub fn http_exchange(addr: SocketAddr, request: &[u8]) -> std::io::Result<String> {
    let mut s = connect(addr)?;
    s.write_all(request)?;
    let mut got = Vec::new();
    s.read_to_end(&mut got)?;
    Ok(String::from_utf8_lossy(&got).into_owned())
}

/// The hello-world server at `addr` answers three requests on one
/// connection, two of them pipelined, then honours `Connection: close`
/// and says so.
pub fn assert_http_keep_alive_and_pipelining(addr: SocketAddr) {
    let mut s = connect(addr).unwrap();
    s.write_all(HTTP_GET).unwrap();
    s.write_all(&[HTTP_GET, HTTP_GET].concat()).unwrap();
    let mut got = vec![0u8; HTTP_OK.len() * 3];
    s.read_exact(&mut got).unwrap();
    assert_eq!(String::from_utf8_lossy(&got), HTTP_OK.repeat(3));
    s.write_all(b"GET / HTTP/1.1\r\nconnection:  Close\r\n\r\n").unwrap();
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).unwrap();
    assert_eq!(String::from_utf8_lossy(&rest), HTTP_CLOSING);
}

/// The hello-world server at `addr` says `Connection: close` in the
/// response before it closes (HTTP/1.0, a request that asks, a body it
/// cannot skip), keeps HTTP/1.0 keep-alive connections open, and skips a
/// body with a length.
pub fn assert_http_close_rules(addr: SocketAddr) {
    // HTTP/1.0 without keep-alive: the response says close, then EOF.
    let got = http_exchange(addr, b"GET / HTTP/1.0\r\n\r\n").unwrap();
    assert_eq!(got, HTTP_CLOSING.replace("HTTP/1.1", "HTTP/1.0"));
    // Pipelined requests after a `Connection: close` one are not answered.
    let get = "GET / HTTP/1.1\r\n\r\n";
    let got = http_exchange(
        addr,
        format!("{get}GET / HTTP/1.1\r\nConnection: close\r\n\r\n{get}").as_bytes(),
    )
    .unwrap();
    assert_eq!(got.matches("HTTP/1.1 200 OK").count(), 2, "{got}");
    assert!(got.ends_with(HTTP_CLOSING), "{got}");
    // HTTP/1.0 with keep-alive stays open and says so.
    let mut s = connect(addr).unwrap();
    for _ in 0..2 {
        s.write_all(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").unwrap();
        let want = "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 12\r\n\
                    Connection: keep-alive\r\n\r\nHello world\n";
        let mut got = vec![0u8; want.len()];
        s.read_exact(&mut got).unwrap();
        assert_eq!(String::from_utf8_lossy(&got), want);
    }
    drop(s);
    // A body is skipped, not read as the next request.
    let body = "GET / HTTP/1.1\r\n\r\n";
    let post = format!("POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}", body.len());
    let got = http_exchange(
        addr,
        format!("{post}GET / HTTP/1.1\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .unwrap();
    assert_eq!(got.matches("HTTP/1.1 200 OK").count(), 2, "{got}");
    // A chunked body cannot be skipped: 400 and close.
    let got =
        http_exchange(addr, b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
            .unwrap();
    assert!(got.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{got}");
    assert!(got.contains("\r\nConnection: close\r\n"), "{got}");
}

/// A master's children: its workers (`/proc/PID/task/PID/children`).
pub fn workers_of(master: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{master}/task/{master}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect()
}

/// True if `wrk` can run; says why the caller skips otherwise.
pub fn wrk_installed() -> bool {
    let ok = Command::new("wrk").arg("--version").output().is_ok();
    if !ok {
        eprintln!("wrk is not installed (apt-get install wrk): skipped");
    }
    ok
}

/// Runs `wrk` for 2 s against the HTTP server at `addr`, with keep-alive and
/// with `Connection: close`: each run must serve over 100 requests with no
/// socket error and no non-2xx answer.
pub fn assert_wrk_sees_no_errors(addr: SocketAddr) {
    let url = format!("http://{addr}/");
    for extra in [&[][..], &["-H", "Connection: close"][..]] {
        let out = Command::new("timeout")
            .args(["20", "wrk", "-t1", "-c16", "-d2s"])
            .args(extra)
            .arg(&url)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "wrk {extra:?}: {text}");
        let requests: u64 = text
            .lines()
            .find_map(|l| l.trim().split_once(" requests in "))
            .and_then(|(n, _)| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("no request count in wrk's output:\n{text}"));
        assert!(requests > 100, "wrk {extra:?}: only {requests} requests:\n{text}");
        assert!(!text.contains("Socket errors"), "wrk {extra:?}:\n{text}");
        assert!(!text.contains("Non-2xx"), "wrk {extra:?}:\n{text}");
        eprintln!("wrk {extra:?}: {requests} requests, no socket errors");
    }
}

/// Workers 1 and 2 hold 20 connections in `held`, about 10 each: forks
/// worker 3, opens 10 more one at a time, and asserts the newcomer took at
/// least 6 of them (taking turns alone would give it about 3).
pub fn assert_newcomer_takes_its_share(m: &mut Proc, addr: SocketAddr, held: &mut Vec<TcpStream>) {
    m.send("fork");
    m.expect("listening id=3");
    hold(addr, 10, held);
    let counts = conns_of(m, &[1, 2, 3]);
    eprintln!("open connections by worker: {counts:?}");
    assert_eq!(counts.iter().sum::<usize>(), 30, "{counts:?}");
    assert!(counts[2] >= 6, "the newcomer took {} of 10: {counts:?}", counts[2]);
}

/// The inode of the socket listening on TCP `port` (`/proc/net/tcp`).
pub fn listen_inode(port: u16) -> Option<u64> {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    table.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        let local_port = u16::from_str_radix(f[1].rsplit(':').next()?, 16).ok()?;
        (local_port == port && f[3] == "0A").then(|| f[9].parse().ok())?
    })
}

/// True if process `pid` has the socket of `inode` open.
pub fn holds_socket(pid: u32, inode: u64) -> bool {
    let want = format!("socket:[{inode}]");
    std::fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|d| {
        d.flatten().any(|e| std::fs::read_link(e.path()).is_ok_and(|l| l.to_str() == Some(&want)))
    })
}

/// True if this test can make PID namespaces (`unshare --pid --fork
/// --mount-proc`, as root); otherwise false, and why on stderr (the caller
/// skips).
pub fn pid_namespaces() -> bool {
    let ok = nix::unistd::geteuid().is_root()
        && Command::new("unshare")
            .args(["--pid", "--fork", "--mount-proc", "true"])
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("skipped: needs root and `unshare --pid --fork --mount-proc`");
    }
    ok
}

/// A TCP listener on 127.0.0.1, bound below the kernel's ephemeral range
/// (`ip_local_port_range`): a port the kernel handed out for port 0 can be
/// handed out again, as the source port of any connection on the machine,
/// once it is freed; below the range, only an explicit bind takes it. Each
/// call in a process tries the next port of its own sequence, so parallel
/// tests do not pick the same one.
pub fn listener_below_ephemeral() -> std::net::TcpListener {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32768);
    let (first, span) = (10_000u32, low.saturating_sub(10_000).max(1000));
    let start = std::process::id().wrapping_mul(7919);
    for _ in 0..span {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = first + start.wrapping_add(n.wrapping_mul(97)) % span;
        if let Ok(l) = std::net::TcpListener::bind(("127.0.0.1", port as u16)) {
            return l;
        }
    }
    panic!("no free port between {first} and {}", first + span)
}

/// A port free a moment ago on 127.0.0.1, for a process to bind later
/// (below the ephemeral range: see [`listener_below_ephemeral`]).
pub fn free_addr() -> SocketAddr {
    listener_below_ephemeral().local_addr().unwrap()
}

/// What `ss` says of `port` (sockets and their processes): for an error
/// message when a port was not what a test expected.
pub fn who_has_port(port: u16) -> String {
    let out = Command::new("ss").args(["-tanpe"]).output().map(|o| o.stdout).unwrap_or_default();
    let out = String::from_utf8_lossy(&out);
    let at = format!(":{port} ");
    out.lines().filter(|l| l.contains(&at)).collect::<Vec<_>>().join("\n")
}

/// The echo master with a health listener: the process, the echo address,
/// the health address.
pub fn echo_with_health(args: &[&str]) -> (Proc, SocketAddr, SocketAddr) {
    let health = free_addr();
    let mut cmd = Command::new(example("echo"));
    cmd.args(["--listen", "127.0.0.1:0", "--health", &health.to_string()]).args(args);
    let mut p = Proc::start(cmd);
    let addr = field(&p.expect("ready "), "addr").parse().unwrap();
    (p, addr, health)
}

/// Asserts `Threads: 1` in the master and in each of its `workers` workers.
pub fn assert_one_thread_each(master: u32, workers: usize) {
    let pids = workers_of(master);
    assert_eq!(pids.len(), workers, "workers of {master}: {pids:?}");
    for pid in std::iter::once(master).chain(pids) {
        assert_eq!(threads_of(pid), 1, "threads of pid {pid} (master {master})");
    }
}

/// Jain's fairness index: 1 when all shares are equal, 1/n when one takes
/// everything.
pub fn jain(counts: &[usize]) -> f64 {
    let sum: f64 = counts.iter().sum::<usize>() as f64;
    let sq: f64 = counts.iter().map(|&c| (c as f64).powi(2)).sum();
    sum * sum / (counts.len() as f64 * sq)
}

/// How many of `conns` each worker of `master` serves, by worker pid, found
/// through /proc as `examples/loadgen.rs` does: the server side of each
/// connection (local port `server_port`, remote port the client's) is an
/// established socket whose inode one worker holds among its descriptors.
pub fn owners(master: u32, server_port: u16, conns: &[TcpStream]) -> HashMap<u32, usize> {
    let client_ports: HashSet<u16> = conns.iter().map(|s| s.local_addr().unwrap().port()).collect();
    let port = |s: &str| u16::from_str_radix(s.rsplit(':').next().unwrap_or(""), 16).ok();
    let mut inodes = HashSet::new();
    for line in std::fs::read_to_string("/proc/net/tcp").unwrap().lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        // local, remote, state (01: established), ..., inode.
        if f.len() >= 10
            && port(f[1]) == Some(server_port)
            && port(f[2]).is_some_and(|p| client_ports.contains(&p))
            && f[3] == "01"
            && f[9] != "0"
        {
            inodes.insert(format!("socket:[{}]", f[9]));
        }
    }
    assert_eq!(inodes.len(), conns.len(), "server sides found in /proc/net/tcp");
    workers_of(master)
        .into_iter()
        .map(|pid| {
            let held = std::fs::read_dir(format!("/proc/{pid}/fd"))
                .unwrap()
                .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .filter(|t| inodes.contains(&*t.to_string_lossy()))
                .count();
            (pid, held)
        })
        .collect()
}

/// Starts an example's cluster of `workers` on a port of its own, and
/// returns it with the address of its `ready` line.
pub fn start_cluster(mut cmd: Command, workers: usize) -> (Proc, SocketAddr) {
    cmd.args(["--workers", &workers.to_string(), "--listen", "127.0.0.1:0"]);
    let mut p = Proc::start(cmd);
    let ready = p.expect("ready ");
    let addr = field(&ready, "addr").parse().unwrap();
    (p, addr)
}

/// `SIGTERM` to an example's master, which must exit 0.
pub fn stop_cluster(mut p: Proc) {
    p.signal("TERM");
    assert_eq!(p.wait_exit(WAIT).code(), Some(0), "{}", p.stderr());
}

/// Checks that `ready` is exactly echo's line for a master of pid `pid`
/// with `workers` workers: `ready addr=<bound address> workers=<N>
/// pid=<master pid>`; returns the address.
pub fn assert_ready_line(ready: &str, workers: usize, pid: u32) -> SocketAddr {
    let words: Vec<&str> = ready.split(' ').collect();
    assert_eq!(words.len(), 4, "{ready}");
    let addr: SocketAddr = field(ready, "addr").parse().unwrap();
    assert_ne!(addr.port(), 0, "{ready}");
    assert_eq!(words[2], format!("workers={workers}"), "{ready}");
    assert_eq!(words[3], format!("pid={pid}"), "{ready}");
    addr
}
