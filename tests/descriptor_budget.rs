//! One worker cannot exhaust the master's descriptors or hurt another
//! worker: keys and message descriptors count against a per-worker budget,
//! and the master keeps a reserve below `RLIMIT_NOFILE`.

mod util;

use std::process::Command;
use std::time::Duration;

use util::{example, field, Proc};

/// The fixture master under `RLIMIT_NOFILE` 256 (soft and hard), three
/// supervised workers listening on one shared key.
fn master_with_256_descriptors() -> Proc {
    let mut cmd = Command::new("prlimit");
    cmd.arg("--nofile=256:256")
        .arg("--")
        .arg(example("fixture"))
        .args(["--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "debug")
        .env("FIXTURE_SUPERVISE", "3")
        .env("FIXTURE_BACKOFF_MS", "0");
    let mut m = Proc::start(cmd);
    for id in 1..=3 {
        m.expect(&format!("listening id={id} "));
    }
    m
}

fn ask(m: &mut Proc, id: u32, command: &str, reply: &str) -> String {
    m.send(&format!("send {id} {command}"));
    m.expect(&format!("message id={id} {reply}"))
}

#[test]
fn a_worker_opening_keys_until_refused_leaves_the_others_their_messages_listens_and_respawns() {
    let mut m = master_with_256_descriptors();

    // Worker 1 opens keys until it is refused: its own budget (lowered to
    // (256 - 64) / 2 = 96 descriptors, 3 per key: the socket, its accept
    // board and its bell; 2 without the bell, on the portable backend)
    // stops it.
    let per_key = if cfg!(feature = "portable-backend") { 2 } else { 3 };
    let l = ask(&mut m, 1, "listen-until 127.0.0.1:0", "listen-until");
    assert_eq!(field(&l, "errno"), "24", "refused with EMFILE: {l}");
    let first: usize = field(&l, "ok").parse().unwrap();

    // Worker 2 still passes descriptors to the master and gets them back,
    // and still opens a key of its own.
    ask(&mut m, 2, "fdecho 100", "fdecho-done got=100");
    let l = ask(&mut m, 2, "listen 127.0.0.1:0", "listen-");
    assert!(l.contains("listen-ok"), "{l}");
    assert_eq!(first, 96 / per_key - 1, "96 descriptors, {per_key} per key, one key held before");

    // Worker 3 opens keys too (on another address: keys of its own), until
    // the master's reserve stops it before its own budget does.
    let l = ask(&mut m, 3, "listen-until 127.0.0.2:0", "listen-until");
    assert_eq!(field(&l, "errno"), "24", "refused with EMFILE: {l}");
    let third: usize = field(&l, "ok").parse().unwrap();
    assert!(third < first, "the reserve, not the budget, stopped worker 3: {l}");

    // Inside the reserve, worker 2's messages with descriptors still flow,
    // it still listens (a key the master holds already), and a killed
    // worker is replaced and listens.
    ask(&mut m, 2, "fdecho 100", "fdecho-done got=200");
    let l = ask(&mut m, 2, "listen 127.0.0.1:0", "listen-");
    assert!(l.contains("listen-ok"), "{l}");
    m.send("kill 2 SIGKILL");
    m.expect("exit id=2 ");
    m.expect("listening id=4 ");
    ask(&mut m, 4, "fdecho 50", "fdecho-done got=50");

    // Nobody else lost its channel.
    let lines = m.drain(Duration::from_millis(200));
    for id in [1, 3, 4] {
        let gone = format!("disconnect id={id}");
        assert!(!lines.iter().any(|l| l.starts_with(&gone)), "{gone} in {lines:?}");
    }
    assert!(!m.stderr().contains("IPC channel error"), "stderr:\n{}", m.stderr());
    m.send("sockets");
    m.expect("sockets ");
    assert!(m.child.try_wait().unwrap().is_none(), "the master is alive");
}
