//! The other examples keep echo's conventions (flags, `ready` line, exit on
//! SIGTERM) and do what they say.

mod util;

use std::io::Read;
use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::time::Duration;
use util::*;

fn start(name: &str, args: &[&str]) -> (Proc, SocketAddr) {
    let mut cmd = Command::new(example(name));
    cmd.args(args);
    let mut p = Proc::start(cmd);
    let ready = p.expect("ready ");
    assert!(ready.contains(&format!("pid={}", p.pid())), "{ready}");
    let addr = field(&ready, "addr").parse().unwrap();
    (p, addr)
}

fn stop(mut p: Proc) {
    p.signal("TERM");
    assert_eq!(p.wait_exit(WAIT).code(), Some(0), "{}", p.stderr());
}

#[test]
fn udp_echo_echoes_datagrams() {
    let (p, addr) = start("udp_echo", &["--workers", "2", "--listen", "127.0.0.1:0"]);
    let c = UdpSocket::bind("127.0.0.1:0").unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    for i in 0..20 {
        let msg = format!("datagram {i}");
        c.send_to(msg.as_bytes(), addr).unwrap();
        let mut buf = [0u8; 64];
        let (n, _) = c.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], msg.as_bytes());
    }
    stop(p);
}

#[test]
fn http_hello_answers_keep_alive_and_pipelined_requests() {
    let (p, addr) = start("http_hello", &["--workers", "2", "--listen", "127.0.0.1:0"]);
    assert_http_keep_alive_and_pipelining(addr);
    stop(p);
}

#[test]
fn http_hello_says_connection_close_before_it_closes() {
    let (p, addr) = start("http_hello", &["--workers", "2", "--listen", "127.0.0.1:0"]);
    assert_http_close_rules(addr);
    stop(p);
}

#[test]
fn wrk_sees_no_socket_errors_with_keep_alive_or_with_connection_close() {
    if !wrk_installed() {
        return;
    }
    let (p, addr) = start("http_hello", &["--workers", "2", "--listen", "127.0.0.1:0"]);
    assert_wrk_sees_no_errors(addr);
    stop(p);
}

#[test]
fn messages_adds_up_what_workers_report() {
    let (mut p, addr) = start("messages", &["--workers", "2", "--listen", "127.0.0.1:0"]);
    for _ in 0..30 {
        let mut s = connect(addr).unwrap();
        let mut greeting = String::new();
        s.read_to_string(&mut greeting).unwrap();
        assert!(greeting.starts_with("hello from worker "), "{greeting}");
    }
    assert!(
        eventually(WAIT, || p.stderr().contains("all workers: 30")),
        "no total of 30 in:\n{}",
        p.stderr()
    );
    let _ = p.drain(Duration::ZERO);
    stop(p);
}
