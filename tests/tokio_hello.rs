//! The `tokio_hello` example: the worker runtime embedded in tokio's
//! current-thread runtime keeps echo's conventions, HTTP/1.1's connection
//! rules, one thread per process, and the accept balance.

mod util;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;
use util::*;

/// One balance test at a time: each runs its cluster under SCHED_FIFO,
/// which would keep another test's workers off the CPU.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn start(workers: usize) -> (Proc, SocketAddr) {
    start_cluster(Command::new(example("tokio_hello")), workers)
}

#[test]
fn tokio_hello_prints_echo_s_ready_line_and_exits_0_on_sigterm() {
    let mut cmd = Command::new(example("tokio_hello"));
    cmd.args(["--workers", "3", "--listen", "127.0.0.1:0", "--shutdown-timeout", "5"]);
    let mut p = Proc::start(cmd);
    let ready = p.expect("ready ");
    // Exactly echo's line: `ready addr=<bound address> workers=<N> pid=<master pid>`.
    let addr = assert_ready_line(&ready, 3, p.pid());
    // Serving, and then a connection still open at SIGTERM: it is
    // finished, not cut, and every process exits 0.
    let mut s = connect(addr).unwrap();
    s.write_all(HTTP_GET).unwrap();
    let mut got = vec![0u8; HTTP_OK.len()];
    s.read_exact(&mut got).unwrap();
    assert_eq!(String::from_utf8_lossy(&got), HTTP_OK);
    p.signal("TERM");
    std::thread::sleep(Duration::from_millis(300));
    s.write_all(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n").unwrap();
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).unwrap();
    assert_eq!(String::from_utf8_lossy(&rest), HTTP_CLOSING);
    assert_eq!(p.wait_exit(WAIT).code(), Some(0), "{}", p.stderr());
    assert!(!p.stderr().contains("died"), "{}", p.stderr());
}

#[test]
fn tokio_hello_answers_keep_alive_and_pipelined_requests() {
    let (p, addr) = start(2);
    assert_http_keep_alive_and_pipelining(addr);
    stop_cluster(p);
}

#[test]
fn tokio_hello_says_connection_close_before_it_closes() {
    let (p, addr) = start(2);
    assert_http_close_rules(addr);
    stop_cluster(p);
}

#[test]
fn tokio_hello_serves_on_a_unix_socket_too() {
    let path = std::env::temp_dir().join(format!("tokio_hello_{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let mut cmd = Command::new(example("tokio_hello"));
    cmd.args(["--workers", "2", "--listen", &format!("unix:{}", path.display())]);
    let mut p = Proc::start(cmd);
    p.expect("ready ");
    let mut s = std::os::unix::net::UnixStream::connect(&path).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(&[HTTP_GET, b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n"].concat()).unwrap();
    let mut got = Vec::new();
    s.read_to_end(&mut got).unwrap();
    assert_eq!(String::from_utf8_lossy(&got), format!("{HTTP_OK}{HTTP_CLOSING}"));
    stop_cluster(p);
    let _ = std::fs::remove_file(&path);
}

#[test]
fn wrk_sees_no_socket_errors_from_tokio_hello_with_keep_alive_or_connection_close() {
    if !wrk_installed() {
        return;
    }
    let (p, addr) = start(2);
    assert_wrk_sees_no_errors(addr);
    // Thousands of connections later, still one thread everywhere.
    assert_one_thread_each(p.pid(), 2);
    stop_cluster(p);
}

#[test]
fn every_tokio_hello_process_has_one_thread_while_it_serves() {
    // Every worker must get some of the connections: under SCHED_FIFO, and
    // not beside the other test that runs a cluster so (its real-time
    // workers would keep these off the CPU).
    let _serial = serial();
    let (p, addr) = start_cluster(realtime(&example("tokio_hello")), 3);
    assert_one_thread_each(p.pid(), 3);
    // Connections spread over the workers (the balance test shows how), each
    // served by a task on tokio: the runtime's I/O, timers and tasks run on
    // the process's only thread.
    let mut conns: Vec<TcpStream> = (0..24).map(|_| connect(addr).unwrap()).collect();
    for s in &mut conns {
        s.write_all(HTTP_GET).unwrap();
    }
    for s in &mut conns {
        let mut got = vec![0u8; HTTP_OK.len()];
        s.read_exact(&mut got).unwrap();
    }
    let served = owners(p.pid(), addr.port(), &conns);
    assert_eq!(served.values().filter(|&&n| n > 0).count(), 3, "{served:?}");
    assert_one_thread_each(p.pid(), 3);
    drop(conns);
    stop_cluster(p);
}

#[test]
fn tokio_hello_workers_share_64_connections_with_a_jain_index_of_at_least_0_95() {
    // Under SCHED_FIFO: a worker not scheduled within 2 ms is passed over
    // by design, and other load must not decide the shares (one worker
    // took 0 of 64 with both cores busy).
    let _serial = serial();
    let (p, addr) = start_cluster(realtime(&example("tokio_hello")), 4);
    // A burst: 64 connections opened back to back (the kernel queues them
    // before any worker accepts), then one request on each, answered.
    let mut conns: Vec<TcpStream> = (0..64).map(|_| connect(addr).unwrap()).collect();
    for s in &mut conns {
        s.write_all(HTTP_GET).unwrap();
    }
    for s in &mut conns {
        let mut got = vec![0u8; HTTP_OK.len()];
        s.read_exact(&mut got).unwrap();
        assert_eq!(String::from_utf8_lossy(&got), HTTP_OK);
    }
    let counts: Vec<usize> = owners(p.pid(), addr.port(), &conns).into_values().collect();
    assert_eq!(counts.len(), 4, "{counts:?}");
    assert_eq!(counts.iter().sum::<usize>(), 64, "every connection has a worker: {counts:?}");
    let j = jain(&counts);
    eprintln!("64 connections over 4 workers: {counts:?}, Jain index {j:.3}");
    assert!(j >= 0.95, "shares {counts:?}: Jain index {j:.3} < 0.95");
    assert_one_thread_each(p.pid(), 4);
    drop(conns);
    stop_cluster(p);
}

#[test]
fn tokio_hello_workers_keep_their_heartbeats_without_spinning_when_idle() {
    // The master kills a worker silent for 0.4 s: only a loop that wakes
    // for `Worker::timeout` (not just for readiness) keeps its workers.
    let mut cmd = Command::new(example("tokio_hello"));
    cmd.args(["--workers", "2", "--listen", "127.0.0.1:0", "--heartbeat-timeout", "0.4"]);
    let mut p = Proc::start(cmd);
    let addr: SocketAddr = field(&p.expect("ready "), "addr").parse().unwrap();
    let before = workers_of(p.pid());
    let ticks = |pids: &[u32]| -> u64 { pids.iter().map(|&pid| cpu_ticks(pid)).sum() };
    let start = ticks(&before);
    // Idle for 2 s, then 2 s with connections open and quiet.
    std::thread::sleep(Duration::from_secs(2));
    let conns: Vec<TcpStream> = (0..8).map(|_| connect(addr).unwrap()).collect();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(workers_of(p.pid()), before, "a worker was replaced:\n{}", p.stderr());
    assert!(!p.stderr().contains("died"), "{}", p.stderr());
    let spent = ticks(&before) - start;
    // Heartbeats every 40 ms cost little; a loop that spins costs 4 s of
    // CPU per worker here (ticks are 10 ms).
    assert!(spent <= 40, "workers spent {spent} ticks of CPU in 4 quiet seconds");
    drop(conns);
    stop_cluster(p);
}

/// User plus system CPU time of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // utime and stime: fields 14 and 15, 12 and 13 after the name.
    let rest: Vec<&str> = stat.rsplit(')').next().unwrap().split_whitespace().collect();
    rest[11].parse::<u64>().unwrap() + rest[12].parse::<u64>().unwrap()
}
