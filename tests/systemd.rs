//! Running under systemd: socket activation (`LISTEN_PID`, `LISTEN_FDS`,
//! `LISTEN_FDNAMES`, served as `--listen systemd:NAME`), the notification
//! socket (`NOTIFY_SOCKET`: `READY=1`, `RELOADING=1`, `STOPPING=1`,
//! `STATUS=`, `WATCHDOG=1`) and the unit files in `deploy/`.
//!
//! The protocols are tested everywhere by setting the variables on the
//! process these tests start; `systemd-socket-activate` and
//! `systemd-analyze`, where installed, check the same against systemd's
//! own tools.

// systemd, PID namespaces and containers are Linux's: on other platforms
// this file is empty.
#![cfg(target_os = "linux")]

mod util;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::net::{UnixDatagram, UnixListener};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use util::*;

/// Spawns in this file are serialised: while one passes sockets (made
/// inheritable for the moment of its spawn), no other may inherit them.
static SPAWN: Mutex<()> = Mutex::new(());

fn spawn(cmd: Command) -> Proc {
    let _g = SPAWN.lock().unwrap_or_else(|e| e.into_inner());
    Proc::start(cmd)
}

fn tempdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("mio-cluster-systemd-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Starts example `name` with `args` the way systemd starts a service with
/// sockets: `sockets` become descriptors 3, 4, ... with `LISTEN_FDS`,
/// `LISTEN_FDNAMES` and `LISTEN_PID` (the pid of the process that runs the
/// example, unless `pid` gives another).
fn activated(
    name: &str,
    args: &[&str],
    sockets: &[(BorrowedFd<'_>, &str)],
    pid: Option<u32>,
    env: &[(&str, &str)],
) -> Proc {
    // bash, for descriptor numbers past 9: each socket goes to 100+i, then
    // to 3+i, so that no original number is overwritten before it is read.
    let mut script = String::from("exec");
    for (i, (fd, _)) in sockets.iter().enumerate() {
        script += &format!(" {}<&{}", 100 + i, fd.as_raw_fd());
    }
    for (fd, _) in sockets {
        script += &format!(" {}<&-", fd.as_raw_fd());
    }
    script += "; exec";
    for i in 0..sockets.len() {
        script += &format!(" {}<&{} {}<&-", 3 + i, 100 + i, 100 + i);
    }
    let names: Vec<&str> = sockets.iter().map(|(_, n)| *n).collect();
    let listen_pid = pid.map_or("$$".to_string(), |p| p.to_string());
    script += &format!(
        "; export LISTEN_PID={listen_pid} LISTEN_FDS={} LISTEN_FDNAMES={}; exec \"$0\" \"$@\"",
        sockets.len(),
        names.join(":")
    );
    let mut cmd = Command::new("bash");
    cmd.args(["-c", &script]).arg(example(name)).args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let _g = SPAWN.lock().unwrap_or_else(|e| e.into_inner());
    for (fd, _) in sockets {
        fcntl(fd, FcntlArg::F_SETFD(FdFlag::empty())).unwrap();
    }
    let p = Proc::start(cmd);
    for (fd, _) in sockets {
        fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).unwrap();
    }
    p
}

/// Parses `ready addr=A workers=N pid=P`, checking its exact shape.
fn ready(p: &mut Proc, workers: usize) -> String {
    let line = p.expect("ready ");
    let words: Vec<&str> = line.split(' ').collect();
    assert_eq!(words.len(), 4, "{line}");
    assert_eq!(words[2], format!("workers={workers}"), "{line}");
    assert_eq!(words[3], format!("pid={}", p.pid()), "{line}");
    field(&line, "addr").to_string()
}

fn environ(pid: u32) -> String {
    let raw = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
    String::from_utf8_lossy(&raw).replace('\0', "\n")
}

/// The descriptors of `pid` that name the same socket as `fd` of this
/// process (`socket:[inode]`).
fn fds_naming(pid: u32, fd: BorrowedFd<'_>) -> Vec<String> {
    let target = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap();
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| {
            let e = e.ok()?;
            (std::fs::read_link(e.path()).ok()? == target)
                .then(|| e.file_name().to_string_lossy().into_owned())
        })
        .collect()
}

#[test]
fn sockets_passed_by_the_protocol_are_served_by_name_tcp_udp_and_unix() {
    let dir = tempdir("kinds");
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let path = dir.join("ctl.sock");
    let unix = UnixListener::bind(&path).unwrap();
    let sockets = [(tcp.as_fd(), "web"), (udp.as_fd(), "dns"), (unix.as_fd(), "ctl")];

    // TCP, by name (descriptor 3).
    let mut p =
        activated("echo", &["--workers", "2", "--listen", "systemd:web"], &sockets, None, &[]);
    assert_eq!(ready(&mut p, 2), tcp.local_addr().unwrap().to_string());
    for _ in 0..5 {
        echo_once(tcp.local_addr().unwrap()).unwrap();
    }
    // The master took all three, close-on-exec: a worker holds exactly one
    // descriptor of the socket it serves (the master's duplicate) and none
    // of the others.
    let workers = workers_of(p.pid());
    assert_eq!(workers.len(), 2);
    for &w in &workers {
        assert_eq!(fds_naming(w, tcp.as_fd()).len(), 1, "worker {w}");
        assert!(fds_naming(w, udp.as_fd()).is_empty(), "worker {w}");
        assert!(fds_naming(w, unix.as_fd()).is_empty(), "worker {w}");
    }
    assert_eq!(fds_naming(p.pid(), udp.as_fd()), vec!["4".to_string()]);
    drop(p);

    // UDP (descriptor 4).
    let mut p =
        activated("udp_echo", &["--workers", "2", "--listen", "systemd:dns"], &sockets, None, &[]);
    assert_eq!(ready(&mut p, 2), udp.local_addr().unwrap().to_string());
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    client.send_to(b"ping", udp.local_addr().unwrap()).unwrap();
    let mut buf = [0u8; 16];
    let (n, _) = client.recv_from(&mut buf).expect("UDP echo");
    assert_eq!(&buf[..n], b"ping");
    drop(p);

    // Unix stream (descriptor 5).
    let mut p =
        activated("echo", &["--workers", "2", "--listen", "systemd:ctl"], &sockets, None, &[]);
    assert_eq!(ready(&mut p, 2), format!("unix:{}", path.display()));
    for _ in 0..5 {
        unix_echo(&path).unwrap();
    }
    drop(p);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_listen_variables_are_removed_and_workers_never_see_them() {
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut p = activated(
        "echo",
        &["--workers", "2", "--listen", "fd:3"],
        &[(tcp.as_fd(), "web")],
        None,
        &[],
    );
    ready(&mut p, 2);
    echo_once(tcp.local_addr().unwrap()).unwrap();
    let workers = workers_of(p.pid());
    assert_eq!(workers.len(), 2);
    for w in workers {
        let env = environ(w);
        assert!(env.contains("MIO_CLUSTER_WORKER_ID="), "not a worker's environment: {env}");
        for var in ["LISTEN_PID=", "LISTEN_FDS=", "LISTEN_FDNAMES="] {
            assert!(!env.lines().any(|l| l.starts_with(var)), "worker {w} sees {var}: {env}");
        }
    }
}

#[test]
fn listen_variables_for_another_pid_are_ignored() {
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut p = activated(
        "echo",
        &["--workers", "1", "--listen", "systemd:web"],
        &[(tcp.as_fd(), "web")],
        Some(1),
        &[],
    );
    let status = p.wait_exit(WAIT);
    assert_eq!(status.code(), Some(1));
    let err = p.stderr();
    assert!(err.contains("LISTEN_PID=1 is not this process"), "{err}");
    assert!(
        err.contains("no socket passed by systemd is named \"web\"")
            && err.contains("systemd passed no socket to this master"),
        "{err}"
    );
    // Nothing was started.
    assert!(!err.contains("listening on"), "{err}");
}

#[test]
fn an_unknown_name_is_an_error_naming_the_sockets_passed() {
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut p = activated(
        "echo",
        &["--workers", "1", "--listen", "systemd:www"],
        &[(tcp.as_fd(), "web"), (udp.as_fd(), "dns")],
        None,
        &[],
    );
    let status = p.wait_exit(WAIT);
    assert_eq!(status.code(), Some(1));
    let err = p.stderr();
    assert!(
        err.contains(
            "no socket passed by systemd is named \"www\": the sockets systemd passed are: \
             web (fd 3, tcp), dns (fd 4, udp)"
        ),
        "{err}"
    );
}

#[test]
fn echo_serves_the_socket_systemd_socket_activate_passes() {
    if Command::new("systemd-socket-activate").arg("--version").output().is_err() {
        eprintln!("skipped: systemd-socket-activate is not installed");
        return;
    }
    // A free port (the tool binds it itself).
    let port = free_addr().port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut cmd = Command::new("systemd-socket-activate");
    cmd.args(["-l", &addr.to_string(), "--fdname=web"]).arg(example("echo")).args([
        "--workers",
        "2",
        "--listen",
        "systemd:web",
    ]);
    let mut p = spawn(cmd);
    // The tool runs the service at the first connection, which the service
    // then serves.
    let mut first = None;
    assert!(eventually(WAIT, || {
        first = connect(addr).ok();
        first.is_some()
    }));
    let mut first = first.unwrap();
    assert_eq!(ready(&mut p, 2), addr.to_string());
    roundtrip(&mut first, b"first").unwrap();
    for _ in 0..10 {
        echo_once(addr).unwrap();
    }
    let named = "socket activation: descriptor 3 named \"web\": tcp";
    assert!(eventually(WAIT, || p.stderr().contains(named)), "{}", p.stderr());
    for w in workers_of(p.pid()) {
        assert!(!environ(w).contains("LISTEN_FDS="), "worker {w}");
    }
    drop(first);
    p.signal("TERM");
    assert_eq!(p.wait_exit(WAIT).code(), Some(0), "{}", p.stderr());
}

// ---- sd_notify ----

/// A datagram socket the test owns, as `NOTIFY_SOCKET`.
struct NotifySocket {
    socket: UnixDatagram,
    /// `NOTIFY_SOCKET`'s value.
    name: String,
    dir: Option<PathBuf>,
}

impl NotifySocket {
    fn path(tag: &str) -> NotifySocket {
        let dir = tempdir(tag);
        let path = dir.join("notify");
        let socket = UnixDatagram::bind(&path).unwrap();
        NotifySocket { socket, name: path.display().to_string(), dir: Some(dir) }
    }

    fn abstract_name(tag: &str) -> NotifySocket {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("mio-cluster-notify-{tag}-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let socket = UnixDatagram::bind_addr(&addr).unwrap();
        NotifySocket { socket, name: format!("@{name}"), dir: None }
    }

    /// The next notification, within `timeout`.
    fn recv(&self, timeout: Duration) -> Option<String> {
        self.socket.set_read_timeout(Some(timeout)).unwrap();
        let mut buf = [0u8; 4096];
        let n = self.socket.recv(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    /// The next notification other than `WATCHDOG=1`, within `timeout`.
    fn next(&self, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let msg = self.recv(left.max(Duration::from_millis(1)));
            match msg {
                Some(m) if m == "WATCHDOG=1" => continue,
                Some(m) => return m,
                None => panic!("no notification within {timeout:?}"),
            }
        }
    }

    /// Times of the `WATCHDOG=1` pings within `window` (other notifications
    /// are dropped).
    fn pings(&self, window: Duration) -> Vec<Instant> {
        let deadline = Instant::now() + window;
        let mut at = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return at;
            }
            if let Some(m) = self.recv(left) {
                if m == "WATCHDOG=1" {
                    at.push(Instant::now());
                }
            }
        }
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        if let Some(d) = &self.dir {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

fn monotonic_usec() -> u64 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).unwrap();
    t.tv_sec() as u64 * 1_000_000 + t.tv_nsec() as u64 / 1000
}

fn echo_notified(notify: &NotifySocket, args: &[&str], env: &[(&str, &str)]) -> Proc {
    let mut cmd = Command::new(example("echo"));
    cmd.args(args).env("NOTIFY_SOCKET", &notify.name);
    for (k, v) in env {
        cmd.env(k, v);
    }
    spawn(cmd)
}

fn is_pool_status(m: &str, addr: &str) -> bool {
    let Some(rest) = m.strip_prefix("STATUS=") else { return false };
    let Some((n, tail)) = rest.split_once(' ') else { return false };
    n.parse::<u32>().is_ok()
        && (tail == format!("workers listening on {addr}")
            || tail == format!("worker listening on {addr}"))
}

/// Start, a bigger then smaller pool, SIGHUP (a rolling restart) and
/// SIGTERM, with `notify` as `NOTIFY_SOCKET`: the exact notifications of
/// each.
fn assert_notify_sequence(notify: NotifySocket) {
    let mut p = echo_notified(&notify, &["--workers", "2", "--listen", "127.0.0.1:0"], &[]);
    let addr = ready(&mut p, 2);
    // Start: READY=1 once both workers listen, with the pool's status, and
    // nothing before it.
    assert_eq!(notify.next(WAIT), format!("READY=1\nSTATUS=2 workers listening on {addr}"));
    // Workers do not have the variable.
    for w in workers_of(p.pid()) {
        assert!(!environ(w).contains("NOTIFY_SOCKET="), "worker {w}");
    }

    // The pool changes: one worker more (SIGTTIN), one less (SIGTTOU).
    p.signal("TTIN");
    assert_eq!(notify.next(WAIT), format!("STATUS=3 workers listening on {addr}"));
    p.signal("TTOU");
    assert_eq!(notify.next(WAIT), format!("STATUS=2 workers listening on {addr}"));

    // SIGHUP: RELOADING=1 with the monotonic time, pool updates while the
    // workers are replaced one by one, READY=1 when the roll is complete.
    let before = monotonic_usec();
    p.signal("HUP");
    let reloading = notify.next(WAIT);
    let after = monotonic_usec();
    let usec: u64 = reloading
        .strip_prefix("RELOADING=1\nMONOTONIC_USEC=")
        .unwrap_or_else(|| panic!("not RELOADING: {reloading:?}"))
        .parse()
        .unwrap();
    assert!(before <= usec && usec <= after, "{before} <= {usec} <= {after}");
    let mut statuses = Vec::new();
    let ready_again = loop {
        let m = notify.next(Duration::from_secs(20));
        if m.starts_with("STATUS=") {
            assert!(is_pool_status(&m, &addr), "{m:?}");
            statuses.push(m);
            continue;
        }
        break m;
    };
    assert_eq!(ready_again, format!("READY=1\nSTATUS=2 workers listening on {addr}"));
    // The pool had two workers listening throughout (each new one listened
    // before its old one was asked to leave): no STATUS= said otherwise.
    assert!(statuses.is_empty(), "{statuses:?}");
    echo_once(addr.parse().unwrap()).unwrap();

    // SIGTERM: STOPPING=1, and nothing else until the master exits.
    p.signal("TERM");
    assert_eq!(notify.next(WAIT), "STOPPING=1");
    assert_eq!(p.wait_exit(WAIT).code(), Some(0), "{}", p.stderr());
    let rest: Vec<String> =
        std::iter::from_fn(|| notify.recv(Duration::from_millis(100))).collect();
    assert!(rest.is_empty(), "after STOPPING=1: {rest:?}");
}

#[test]
fn notify_socket_as_a_path_gets_ready_status_reloading_ready_stopping() {
    assert_notify_sequence(NotifySocket::path("seq"));
}

#[test]
fn notify_socket_as_an_abstract_name_gets_ready_status_reloading_ready_stopping() {
    assert_notify_sequence(NotifySocket::abstract_name("seq"));
}

/// An echo master of `workers` workers with a 1 s watchdog (pinged every
/// 0.5 s) and an 8 s heartbeat timeout (heartbeats every 0.8 s: a worker
/// silent for 2.4 s is not fresh, one silent for 8 s is replaced).
fn watched(notify: &NotifySocket, workers: usize) -> (Proc, Vec<u32>) {
    let n = workers.to_string();
    let mut p = echo_notified(
        notify,
        &["--workers", &n, "--listen", "127.0.0.1:0", "--heartbeat-timeout", "8"],
        &[("WATCHDOG_USEC", "1000000")],
    );
    ready(&mut p, workers);
    assert!(notify.next(WAIT).starts_with("READY=1\n"));
    let pids = workers_of(p.pid());
    assert_eq!(pids.len(), workers);
    (p, pids)
}

fn longest_gap(start: Instant, pings: &[Instant], end: Instant) -> Duration {
    let mut edges = vec![start];
    edges.extend_from_slice(pings);
    edges.push(end);
    edges.windows(2).map(|w| w[1] - w[0]).max().unwrap()
}

#[test]
fn watchdog_pings_go_on_while_one_of_several_workers_is_stopped() {
    let notify = NotifySocket::path("wd-one");
    let (p, pids) = watched(&notify, 3);
    signal(pids[0], "STOP");
    // 4 s: well past the 2.4 s after which the stopped worker is stale.
    let start = Instant::now();
    let pings = notify.pings(Duration::from_secs(4));
    let gap = longest_gap(start, &pings, Instant::now());
    signal(pids[0], "CONT");
    // Every 0.5 s; what matters to systemd is that no gap reaches the
    // watchdog timeout, 1 s.
    assert!(pings.len() >= 5, "{} pings in 4 s", pings.len());
    assert!(gap < Duration::from_secs(1), "a gap of {gap:?} between pings");
    assert_eq!(workers_of(p.pid()), pids, "a worker was replaced");
}

#[test]
fn watchdog_pings_stop_while_every_worker_is_stopped_and_resume_after() {
    let notify = NotifySocket::path("wd-all");
    let (p, pids) = watched(&notify, 2);
    assert!(!notify.pings(Duration::from_millis(1200)).is_empty(), "no ping while healthy");
    for &w in &pids {
        signal(w, "STOP");
    }
    let stopped = Instant::now();
    // Stale after 2.4 s at most (plus a heartbeat interval): from 3.5 s to
    // 5.5 s after the stop, no ping; no worker is replaced before 8 s.
    notify.pings(Duration::from_millis(3500));
    let silent = notify.pings(Duration::from_secs(2));
    for &w in &pids {
        signal(w, "CONT");
    }
    assert!(silent.is_empty(), "{} pings with every worker stopped", silent.len());
    assert!(
        stopped.elapsed() < Duration::from_secs(7),
        "too slow to trust: {:?}",
        stopped.elapsed()
    );
    let resumed = notify.pings(Duration::from_secs(3));
    assert!(resumed.len() >= 2, "{} pings in the 3 s after SIGCONT", resumed.len());
    assert_eq!(workers_of(p.pid()), pids, "a worker was replaced");
}

// ---- deploy/ ----

fn deploy(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("deploy").join(file)
}

#[test]
fn the_systemd_units_in_deploy_pass_systemd_analyze_verify() {
    let service = deploy("mio-cluster-echo.service");
    let socket = deploy("mio-cluster-echo.socket");
    let unit = std::fs::read_to_string(&service).unwrap();
    for line in [
        "Type=notify\n",
        "NotifyAccess=main",
        "WatchdogSec=",
        "ExecReload=kill -HUP $MAINPID",
        "--listen systemd:",
    ] {
        assert!(unit.contains(line), "{} lacks {line:?}", service.display());
    }
    assert!(std::fs::read_to_string(&socket).unwrap().contains("FileDescriptorName="));
    if Command::new("systemd-analyze").arg("--version").output().is_err() {
        eprintln!("skipped: systemd-analyze is not installed");
        return;
    }
    // The units name the binary at its installed path: verify them with that
    // path mapped to a built echo (`systemd-analyze verify` checks that
    // ExecStart's program exists), in a copy of the folder.
    let dir = tempdir("units");
    let bin = dir.join("mio-cluster-echo");
    std::fs::copy(example("echo"), &bin).unwrap();
    for (src, name) in
        [(&service, "mio-cluster-echo.service"), (&socket, "mio-cluster-echo.socket")]
    {
        let text = std::fs::read_to_string(src).unwrap();
        let text = text.replace("/usr/local/bin/mio-cluster-echo", bin.to_str().unwrap());
        std::fs::File::create(dir.join(name)).unwrap().write_all(text.as_bytes()).unwrap();
    }
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(dir.join("mio-cluster-echo.socket"))
        .arg(dir.join("mio-cluster-echo.service"))
        .output()
        .unwrap();
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    out.stderr.as_slice().read_to_string(&mut text).unwrap();
    assert!(out.status.success(), "systemd-analyze verify failed:\n{text}");
    // Warnings about our units count as failures too (systemd-analyze
    // prints them but exits 0).
    let ours: Vec<&str> = text.lines().filter(|l| l.contains("mio-cluster-echo")).collect();
    assert!(ours.is_empty(), "systemd-analyze verify:\n{text}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_service_units_command_line_serves_its_named_socket_and_notifies() {
    // ExecStart's arguments, run as systemd would run them: the socket unit's
    // FileDescriptorName on descriptor 3, NOTIFY_SOCKET and WATCHDOG_USEC set.
    let service = std::fs::read_to_string(deploy("mio-cluster-echo.service")).unwrap();
    let socket_unit = std::fs::read_to_string(deploy("mio-cluster-echo.socket")).unwrap();
    let exec = service.lines().find_map(|l| l.strip_prefix("ExecStart=")).unwrap();
    let mut words = exec.split_whitespace();
    assert_eq!(words.next(), Some("/usr/local/bin/mio-cluster-echo"));
    let args: Vec<&str> = words.collect();
    let name = socket_unit.lines().find_map(|l| l.strip_prefix("FileDescriptorName=")).unwrap();
    let workers: usize =
        args[args.iter().position(|a| *a == "--workers").unwrap() + 1].parse().unwrap();
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    let notify = NotifySocket::path("unit");
    let mut p = activated(
        "echo",
        &args,
        &[(tcp.as_fd(), name)],
        None,
        &[("NOTIFY_SOCKET", &notify.name), ("WATCHDOG_USEC", "10000000")],
    );
    let addr = tcp.local_addr().unwrap();
    assert_eq!(ready(&mut p, workers), addr.to_string());
    assert_eq!(notify.next(WAIT), format!("READY=1\nSTATUS={workers} workers listening on {addr}"));
    echo_once(addr).unwrap();
    p.signal("TERM");
    assert_eq!(notify.next(WAIT), "STOPPING=1");
    assert_eq!(p.wait_exit(Duration::from_secs(30)).code(), Some(0), "{}", p.stderr());
}

#[test]
fn the_embedded_master_notifies_from_the_applications_loop() {
    let notify = NotifySocket::abstract_name("embed");
    let dir = tempdir("embed");
    let mut cmd = Command::new(example("embed"));
    cmd.args(["--workers", "2", "--listen", "127.0.0.1:0", "--admin"])
        .arg(dir.join("admin.sock"))
        .env("NOTIFY_SOCKET", &notify.name)
        .env("WATCHDOG_USEC", "400000");
    let mut p = spawn(cmd);
    let addr = ready(&mut p, 2);
    assert_eq!(notify.next(WAIT), format!("READY=1\nSTATUS=2 workers listening on {addr}"));
    // Pings every 200 ms from the application's loop.
    let pings = notify.pings(Duration::from_secs(1));
    assert!(pings.len() >= 3, "{} pings in 1 s", pings.len());
    p.signal("TERM");
    assert_eq!(notify.next(WAIT), "STOPPING=1");
    assert_eq!(p.wait_exit(WAIT).code(), Some(0), "{}", p.stderr());
    let _ = std::fs::remove_dir_all(&dir);
}
