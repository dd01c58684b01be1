//! User messages between the master and workers: in order, large, with
//! descriptors, and a connection handed from one worker to another.

mod util;

use std::time::Duration;
use util::*;

fn one_worker() -> (Proc, std::net::SocketAddr) {
    let mut m = Proc::fixture(&["--listen", "127.0.0.1:0"]);
    m.send("fork");
    let addr = field(&m.expect("listening id=1"), "addr").parse().unwrap();
    (m, addr)
}

#[test]
fn ten_thousand_messages_each_way_arrive_in_order() {
    let (mut m, _) = one_worker();
    m.send("sendmany 1 10000");
    let got = m.expect_by("worker's count", Duration::from_secs(60), |l| {
        l.starts_with("message id=1 got")
    });
    assert_eq!(got, "message id=1 got 10000 of 10000 inorder=true");
    m.send("send 1 burst 10000");
    let burst =
        m.expect_by("master's count", Duration::from_secs(60), |l| l.starts_with("burst id=1"));
    assert_eq!(burst, "burst id=1 got=10000 of=10000 inorder=true");
}

#[test]
fn a_16_mib_message_goes_both_ways_and_one_byte_more_is_refused() {
    let (mut m, addr) = one_worker();
    let size = 16 * 1024 * 1024;
    m.send(&format!("big 1 {size}"));
    let got = m.expect_by("worker got it", Duration::from_secs(60), |l| {
        l.starts_with("message id=1 big-got")
    });
    assert_eq!(field(&got, "len"), size.to_string());
    m.send(&format!("send 1 big {size}"));
    let back = m.expect_by("master got it", Duration::from_secs(60), |l| l.starts_with("big id=1"));
    assert_eq!(field(&back, "len"), size.to_string());
    // Both sides computed the same checksum of the same pattern.
    assert_eq!(field(&back, "sum"), field(&got, "sum"));
    // Past the limit: a clear error on the sending side, nothing sent.
    m.send(&format!("big 1 {}", size + 1));
    let err = m.expect("error big");
    assert!(err.contains("at most 16777216"), "{err}");
    m.send(&format!("send 1 big {}", size + 1));
    let err = m.expect("message id=1 send-err");
    assert!(err.contains("kind=InvalidInput") && err.contains("at most 16777216"), "{err}");
    // The internal protocol is unaffected: the worker still serves.
    echo_once(addr).unwrap();
}

#[test]
fn a_connection_passes_from_worker_to_master_to_worker_and_still_works() {
    let mut m = Proc::fixture(&["--listen", "127.0.0.1:0"]);
    m.send("fork");
    let addr = field(&m.expect("listening id=1"), "addr").parse().unwrap();
    // Worker 2 does not listen: only worker 1 can accept the client.
    m.send("fork-env FIXTURE_NO_LISTEN=1");
    m.expect("message id=2 hello");
    let mut client = connect(addr).unwrap();
    roundtrip(&mut client, b"served by 1").unwrap();
    m.send("send 1 pass 2");
    let passed = m.expect("message id=1 conn");
    assert_eq!(field(&passed, "fds"), "1");
    m.expect("message id=2 adopted");
    roundtrip(&mut client, b"served by 2 now").unwrap();
    // Worker 1 no longer has it: its report counts no open connection.
    m.send("send 1 report");
    assert_eq!(field(&m.expect("message id=1 report"), "conns"), "0");
    m.send("send 2 report");
    assert_eq!(field(&m.expect("message id=2 report"), "conns"), "1");
}

/// A worker that sends a listen and messages and dies before it could read
/// the reply: the reply finds no reader, which is nobody's error (no
/// `IPC channel error` in the log), and every message it sent before is
/// delivered.
#[test]
fn a_worker_that_dies_before_the_reply_to_its_listen_still_has_its_messages_delivered() {
    let (mut m, _) = one_worker();
    m.send("send 1 listen-then-die 50");
    for i in 0..50 {
        m.expect(&format!("message id=1 d{i}"));
    }
    m.expect("exit id=1");
    let log = m.stderr();
    assert!(!log.contains("IPC channel error"), "{log}");
    assert!(!log.contains("Broken pipe"), "{log}");
}
