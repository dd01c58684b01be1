//! Worker processes: they die with their master, run with the groups their
//! user has, are reaped by pidfd under their own id, know they are workers
//! without touching the environment, and a listener dropped without
//! `Worker::close` leaves nothing behind in their poll.

mod util;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};
use util::*;

/// CPU time (user + system) a process has used so far.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read stat");
    // Fields after the command name: state is field 3, utime 14, stime 15.
    let rest: Vec<&str> = stat.rsplit(')').next().unwrap().split_whitespace().collect();
    let ticks: u64 = rest[11].parse::<u64>().unwrap() + rest[12].parse::<u64>().unwrap();
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).unwrap().unwrap_or(100);
    Duration::from_millis(ticks * 1000 / hz as u64)
}

#[test]
fn a_hung_worker_is_gone_within_a_second_of_its_masters_death_and_frees_its_port() {
    let mut m = Proc::fixture(&["--listen", "127.0.0.1:0"]);
    m.send("fork");
    let pid: u32 = field(&m.expect("fork id=1"), "pid").parse().unwrap();
    let _guard = KillOnDrop::new(pid);
    let addr: SocketAddr = field(&m.expect("listening id=1"), "addr").parse().unwrap();
    if cfg!(feature = "portable-backend") {
        // A platform difference: the portable backend, as on macOS, has no
        // death signal. A worker learns of its master's death when its
        // channel closes, at its next poll; a hung one never does. What is
        // checked here instead: a worker in its loop is gone within the
        // same second.
        eprintln!(
            "portable backend: no death signal; a worker in its loop is checked, not a hung one"
        );
    } else {
        // The worker's loop stops for good: it will never read its channel.
        m.send("send 1 hang");
        let hung = eventually(WAIT, || {
            std::fs::read_to_string(format!("/proc/{pid}/wchan")).is_ok_and(|w| w.contains("sleep"))
        });
        assert!(hung, "worker {pid} never went to sleep");
    }
    std::thread::sleep(Duration::from_millis(50));
    assert!(alive(pid));
    m.signal("KILL");
    m.wait_exit(WAIT);
    let died = Instant::now();
    let gone = eventually(Duration::from_secs(1), || !alive(pid));
    assert!(gone, "worker {pid} still alive 1 s after its master was killed");
    eprintln!("worker gone {:?} after its master's death", died.elapsed());
    // Its duplicate of the listening socket went with it.
    std::net::TcpListener::bind(addr).expect("the port can be bound again");
}

/// (nix has no `getgrouplist` on macOS, where the test would read it.)
#[cfg(not(target_vendor = "apple"))]
#[test]
fn a_uid_without_a_gid_gives_the_worker_that_users_groups_never_group_0() {
    use std::ffi::CString;
    let Some(nobody) = nobody() else { return };
    let mut m = Proc::fixture_env(&[], &[("FIXTURE_UID_ONLY", "nobody"), ("FIXTURE_CWD", "/")]);
    m.send("fork");
    m.expect("message id=1 hello");
    m.send("send 1 uid");
    let line = m.expect("message id=1 uid");
    assert_eq!(field(&line, "uid"), nobody.uid.to_string(), "{line}");
    assert_eq!(field(&line, "gid"), nobody.gid.to_string(), "primary group: {line}");
    let name = CString::new(nobody.name.as_str()).unwrap();
    let mut want: Vec<String> = nix::unistd::getgrouplist(&name, nobody.gid)
        .unwrap()
        .into_iter()
        .map(|g| g.to_string())
        .collect();
    want.sort();
    want.dedup();
    let mut got: Vec<String> =
        field(&line, "groups").split(',').filter(|g| !g.is_empty()).map(String::from).collect();
    got.sort();
    assert_eq!(got, want, "supplementary groups of nobody: {line}");
    if nobody.gid.as_raw() != 0 {
        assert!(!got.contains(&"0".to_string()), "group 0 kept: {line}");
    }
}

#[test]
fn a_worker_enters_its_working_directory_as_its_own_user() {
    use std::os::unix::fs::PermissionsExt;
    let Some(_) = nobody() else { return };
    // A directory only root may enter.
    let dir = std::env::temp_dir().join(format!("mio-cluster-private-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let mut m = Proc::fixture_env(
        &[],
        &[("FIXTURE_USER", "nobody"), ("FIXTURE_CWD", dir.to_str().unwrap())],
    );
    m.send("fork");
    let line = m.expect("error fork");
    assert!(line.contains("Permission denied"), "{line}");
    // The master is still there.
    m.send("threads");
    m.expect("threads");
    let _ = std::fs::remove_dir(&dir);
}

#[test]
fn with_sigchld_ignored_every_fast_dying_worker_is_reported_once_under_its_own_id() {
    // SIGCHLD ignored before the master starts, as an application (or
    // whatever started it: an ignored signal survives exec) may have it:
    // the kernel then reaps children as they exit.
    if !std::path::Path::new("/bin/bash").exists() {
        eprintln!("no /bin/bash to start the master with SIGCHLD ignored; skipped");
        return;
    }
    let exit_at_once = ["/bin/true", "/usr/bin/true"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("a true(1) program");
    let mut cmd = Command::new("/bin/bash");
    cmd.arg("-c")
        .arg(r#"trap '' CHLD; exec "$0""#)
        .arg(example("fixture"))
        .env("RUST_LOG", "debug")
        // Workers that exit as soon as they start, on the master's CPU: many
        // are gone before the master returns from spawning them.
        .env("FIXTURE_EXEC", exit_at_once)
        .env("FIXTURE_ONE_CPU", "1");
    let mut m = Proc::start(cmd);
    let master = m.pid();
    let fixture = example("fixture");
    let execd = eventually(WAIT, || {
        std::fs::read_link(format!("/proc/{master}/exe")).is_ok_and(|p| p == fixture)
    });
    assert!(execd, "bash never ran the fixture");
    let sigign = || {
        let status = std::fs::read_to_string(format!("/proc/{master}/status")).unwrap();
        let hex = status.lines().find_map(|l| l.strip_prefix("SigIgn:")).unwrap().trim();
        u64::from_str_radix(hex, 16).unwrap() & (1 << (libc::SIGCHLD - 1)) != 0
    };
    // With the portable backend the master handles SIGCHLD itself while it
    // runs (that is how it learns of exits), so the kernel reaps nothing;
    // what is checked then is the rest: one exit per worker, its own.
    let portable = cfg!(feature = "portable-backend");
    assert!(portable || sigign(), "the master does not ignore SIGCHLD: the test is void");
    const N: u32 = 60;
    for _ in 0..N {
        m.send("fork");
    }
    let mut forks: HashMap<u32, String> = HashMap::new();
    let mut exits: HashMap<u32, (String, String)> = HashMap::new();
    let deadline = Instant::now() + WAIT;
    while exits.len() < N as usize {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = m.expect_by("fork, exit or error", left, |l| {
            l.starts_with("fork ") || l.starts_with("exit ") || l.starts_with("error")
        });
        assert!(!line.starts_with("error"), "{line}\nstderr:\n{}", m.stderr());
        let id: u32 = field(&line, "id").parse().unwrap();
        let pid = field(&line, "pid").to_string();
        if line.starts_with("fork ") {
            assert!(forks.insert(id, pid).is_none(), "two forks for id {id}");
        } else {
            let status = field(&line, "status").to_string();
            assert!(exits.insert(id, (pid, status)).is_none(), "two exits for id {id}");
        }
    }
    let mut statuses: HashMap<&str, usize> = HashMap::new();
    for id in 1..=N {
        let (pid, status) = exits.get(&id).unwrap_or_else(|| panic!("no exit for worker {id}"));
        assert_eq!(forks.get(&id), Some(pid), "worker {id}: exit under another pid");
        // Reaped by the master (a zombie kept until its pidfd was open) or
        // by the kernel (status lost): never another worker's status.
        assert!(["code=0", "unknown"].contains(&status.as_str()), "worker {id}: {status}");
        *statuses.entry(status.as_str()).or_default() += 1;
    }
    eprintln!("exit statuses of {N} workers: {statuses:?}");
    let late = m.drain(Duration::from_millis(200));
    assert!(!late.iter().any(|l| l.starts_with("exit ") || l.starts_with("error")), "{late:?}");
    // The application's disposition is back (the portable backend keeps
    // its handler while the master lives).
    assert!(portable || sigign(), "the master no longer ignores SIGCHLD");
}

#[test]
fn a_workers_own_child_is_not_a_worker_and_the_environment_is_left_alone() {
    let mut m = Proc::fixture(&[]);
    m.send("fork");
    // role() read the variables without removing them.
    let hello = m.expect("message id=1 hello");
    assert_eq!(field(&hello, "env_id"), r#"Some("1")"#, "{hello}");
    // The worker runs this same program as its child, which inherits every
    // variable, yet is no worker: its parent is not the master.
    m.send("send 1 child-role");
    let line = m.expect("message id=1 child-role");
    assert_eq!(field(&line, "env_id"), r#"Some("1")"#, "{line}");
    assert_eq!(field(&line, "role"), "Master", "{line}");
    assert_eq!(field(&line, "worker_new"), "Some(NotFound)", "{line}");
    // And the worker itself still is one.
    m.send("send 1 report");
    m.expect("message id=1 report");
}

/// A worker gives up its listener without `Worker::close` (`how`) while
/// connections queue on the socket: it must sit idle, not spin.
fn listener_given_up_leaves_the_worker_idle(how: &str, balance: &str) {
    let mut m = Proc::fixture_env(&["--listen", "127.0.0.1:0"], &[("FIXTURE_BALANCE", balance)]);
    m.send("fork");
    let pid: u32 = field(&m.expect("fork id=1"), "pid").parse().unwrap();
    let addr: SocketAddr = field(&m.expect("listening id=1"), "addr").parse().unwrap();
    m.send(&format!("send 1 {how}-listeners"));
    m.expect(&format!("message id=1 {}", if how == "drop" { "dropped" } else { "into-fd" }));
    // Connections the master's socket queues, which nobody accepts.
    let clients: Vec<_> = (0..4).map(|_| connect(addr).expect("connect")).collect();
    std::thread::sleep(Duration::from_millis(100));
    let (before, t0) = (cpu_time(pid), Instant::now());
    std::thread::sleep(Duration::from_secs(1));
    let (used, wall) = (cpu_time(pid) - before, t0.elapsed());
    eprintln!("{how} ({balance}): worker used {used:?} of CPU in {wall:?}");
    assert!(used < wall / 10, "worker spins after {how}: {used:?} of CPU in {wall:?}");
    // It still serves its channel.
    m.send("send 1 report");
    assert_eq!(field(&m.expect("message id=1 report"), "servers"), "0");
    drop(clients);
}

#[test]
fn a_listener_dropped_without_close_leaves_the_worker_idle_while_connections_queue() {
    listener_given_up_leaves_the_worker_idle("drop", "even");
}

#[test]
fn a_listener_turned_into_a_descriptor_leaves_the_worker_idle_while_connections_queue() {
    listener_given_up_leaves_the_worker_idle("into-fd", "even");
}

#[test]
fn an_exclusive_listener_dropped_without_close_leaves_the_worker_idle() {
    listener_given_up_leaves_the_worker_idle("drop", "exclusive");
}
