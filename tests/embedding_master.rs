//! The master as a component of the application's own mio loop (the `embed`
//! example): the application's admin socket drives it, and the master's
//! deadlines fire with nothing but `Master::timeout` to wake the loop.

mod util;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};
use util::*;

fn admin_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("embed-{}-{name}.sock", std::process::id()))
}

fn start(admin: &PathBuf, args: &[&str]) -> (Proc, SocketAddr) {
    let mut cmd = Command::new(example("embed"));
    cmd.args(["--listen", "127.0.0.1:0", "--admin"]).arg(admin).args(args);
    let mut p = Proc::start(cmd);
    let ready = p.expect("ready ");
    assert!(ready.contains(&format!("pid={}", p.pid())), "{ready}");
    let addr = field(&ready, "addr").parse().unwrap();
    (p, addr)
}

struct Admin(BufReader<UnixStream>);

impl Admin {
    fn connect(path: &PathBuf) -> Admin {
        let s = UnixStream::connect(path).expect("connect to the admin socket");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        Admin(BufReader::new(s))
    }

    /// Sends one command; returns the reply's lines, the last one starting
    /// with `ok` or `error`.
    fn ask(&mut self, command: &str) -> Vec<String> {
        writeln!(self.0.get_mut(), "{command}").unwrap();
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            let n = self.0.read_line(&mut line).expect("admin reply");
            assert!(n > 0, "admin socket closed after {lines:?}");
            let line = line.trim_end().to_string();
            let last = line.starts_with("ok") || line.starts_with("error");
            lines.push(line);
            if last {
                return lines;
            }
        }
    }

    /// The worker rows of `status`: (pid, state).
    fn workers(&mut self) -> Vec<(u32, String)> {
        let reply = self.ask("status");
        assert!(reply[0].split_whitespace().eq(["id", "pid", "state", "uptime", "restarts"]));
        reply[1..reply.len() - 1]
            .iter()
            .map(|row| {
                let cols: Vec<&str> = row.split_whitespace().collect();
                (cols[1].parse().unwrap(), cols[2].to_string())
            })
            .collect()
    }
}

#[test]
fn embed_lists_its_workers_and_scales_the_pool_from_its_own_admin_socket() {
    let path = admin_path("scale");
    let (mut p, addr) = start(&path, &["--workers", "2"]);
    let mut admin = Admin::connect(&path);
    let reply = admin.ask("status");
    assert_eq!(reply.last().unwrap(), "ok 2 workers, target 2", "{reply:?}");
    let workers = admin.workers();
    assert_eq!(workers.len(), 2, "{workers:?}");
    assert!(workers.iter().all(|(pid, state)| state == "Listening" && alive(*pid)), "{workers:?}");

    assert_eq!(admin.ask("scale 3"), ["ok target 3"]);
    let mut last = Vec::new();
    let three = eventually(WAIT, || {
        last = admin.workers();
        last.len() == 3 && last.iter().all(|(_, state)| state == "Listening")
    });
    assert!(three, "not 3 listening workers: {last:?}");
    assert!(last.iter().all(|(pid, _)| alive(*pid)), "{last:?}");
    // The pool serves.
    for _ in 0..6 {
        echo_once(addr).unwrap();
    }

    // A bad command gets an error naming it; the master keeps going.
    let reply = admin.ask("scale lots");
    assert!(reply[0].starts_with("error: scale: \"lots\""), "{reply:?}");
    assert_eq!(admin.workers().len(), 3);

    p.signal("TERM");
    assert_eq!(p.wait_exit(WAIT).code(), Some(0), "{}", p.stderr());
    assert!(!path.exists(), "the admin socket is removed on exit");
}

#[test]
fn a_worker_that_outlives_its_disconnect_timeout_is_killed_on_time_with_nothing_else_waking_the_loop(
) {
    let path = admin_path("deadline");
    let (mut p, addr) =
        start(&path, &["--workers", "1", "--shutdown-timeout", "1", "--heartbeat-timeout", "0"]);
    let mut admin = Admin::connect(&path);
    let workers = admin.workers();
    assert_eq!(workers.len(), 1, "{workers:?}");
    let pid = workers[0].0;
    // A client the worker keeps serving: it leaves only once this closes.
    let mut client = connect(addr).unwrap();
    roundtrip(&mut client, b"hold on").unwrap();

    // Scaling to 0 disconnects the worker; the master must kill it after 1 s.
    // From here on nothing talks to the master: no heartbeats, no admin
    // command, no client traffic; only its deadline can wake the loop.
    assert_eq!(admin.ask("scale 0"), ["ok target 0"]);
    let asked = Instant::now();
    let mut buf = [0u8; 16];
    let end = client.read(&mut buf);
    let took = asked.elapsed();
    assert!(
        matches!(end, Ok(0))
            || end.as_ref().is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
        "the worker should have been killed, closing the connection: {end:?} after {took:?}"
    );
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_millis(2500),
        "killed after {took:?}, not at the 1 s deadline"
    );
    assert!(eventually(WAIT, || !alive(pid)), "worker {pid} still alive");
    // The log line comes through a pipe the test reads on a thread of its
    // own: wait for it rather than look once.
    assert!(eventually(WAIT, || p.stderr().contains("did not exit in time")), "{}", p.stderr());
    assert!(eventually(WAIT, || admin.workers().is_empty()), "worker {pid} still listed");

    p.signal("TERM");
    assert_eq!(p.wait_exit(WAIT).code(), Some(0), "{}", p.stderr());
}

/// CPU time (user + system) of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap().split_whitespace().collect();
    // utime and stime: fields 14 and 15 of stat, 12 and 13 after the name.
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[test]
fn an_idle_embedded_master_sleeps_in_the_applications_loop() {
    let path = admin_path("idle");
    // Heartbeats on (every 100 ms), so the loop has deadlines to wait for.
    let (mut p, _) = start(&path, &["--workers", "2", "--heartbeat-timeout", "1"]);
    std::thread::sleep(Duration::from_millis(200));
    let before = cpu_ticks(p.pid());
    std::thread::sleep(Duration::from_secs(1));
    let used = cpu_ticks(p.pid()) - before;
    // A loop that spun (a timeout stuck at zero) would use about 100 ticks.
    assert!(used <= 5, "the idle master used {used} ticks of CPU in 1 s");
    p.signal("TERM");
    assert_eq!(p.wait_exit(WAIT).code(), Some(0), "{}", p.stderr());
}
