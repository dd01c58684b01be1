//! The other examples keep echo's conventions (flags, `ready` line, exit on
//! SIGTERM) and do what they say.

mod util;

use std::io::{Read, Write};
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
    let mut s = connect(addr).unwrap();
    let req = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    // Three requests on one connection, two of them pipelined.
    s.write_all(req).unwrap();
    s.write_all(&[&req[..], &req[..]].concat()).unwrap();
    let one =
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 12\r\n\r\nHello world\n";
    let mut got = vec![0u8; one.len() * 3];
    s.read_exact(&mut got).unwrap();
    assert_eq!(got, [&one[..], &one[..], &one[..]].concat());
    // Connection: close is honoured, and said in the response.
    s.write_all(b"GET / HTTP/1.1\r\nconnection:  Close\r\n\r\n").unwrap();
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).unwrap();
    assert_eq!(String::from_utf8_lossy(&rest), CLOSING);
    stop(p);
}

const CLOSING: &str = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 12\r\n\
                       Connection: close\r\n\r\nHello world\n";

/// Sends `request` on a new connection and reads until the server closes,
/// or for at most 5 s (a server that keeps the connection open fails the
/// read with a timeout).
fn exchange(addr: SocketAddr, request: &[u8]) -> std::io::Result<String> {
    let mut s = connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(request)?;
    let mut got = Vec::new();
    s.read_to_end(&mut got)?;
    Ok(String::from_utf8_lossy(&got).into_owned())
}

#[test]
fn http_hello_says_connection_close_before_it_closes() {
    let (p, addr) = start("http_hello", &["--workers", "2", "--listen", "127.0.0.1:0"]);
    // HTTP/1.0 without keep-alive: the response says close, then EOF.
    let got = exchange(addr, b"GET / HTTP/1.0\r\n\r\n").unwrap();
    assert_eq!(got, CLOSING.replace("HTTP/1.1", "HTTP/1.0"));
    // Pipelined requests after a `Connection: close` one are not answered.
    let get = "GET / HTTP/1.1\r\n\r\n";
    let got =
        exchange(addr, format!("{get}GET / HTTP/1.1\r\nConnection: close\r\n\r\n{get}").as_bytes())
            .unwrap();
    assert_eq!(got.matches("HTTP/1.1 200 OK").count(), 2, "{got}");
    assert!(got.ends_with(CLOSING), "{got}");
    // HTTP/1.0 with keep-alive stays open and says so.
    let mut s = connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
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
    let got =
        exchange(addr, format!("{post}GET / HTTP/1.1\r\nConnection: close\r\n\r\n").as_bytes())
            .unwrap();
    assert_eq!(got.matches("HTTP/1.1 200 OK").count(), 2, "{got}");
    // A chunked body cannot be skipped: 400 and close.
    let got =
        exchange(addr, b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n").unwrap();
    assert!(got.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{got}");
    assert!(got.contains("\r\nConnection: close\r\n"), "{got}");
    stop(p);
}

#[test]
fn wrk_sees_no_socket_errors_with_keep_alive_or_with_connection_close() {
    if Command::new("wrk").arg("--version").output().is_err() {
        eprintln!("wrk is not installed (apt-get install wrk): skipped");
        return;
    }
    let (p, addr) = start("http_hello", &["--workers", "2", "--listen", "127.0.0.1:0"]);
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
