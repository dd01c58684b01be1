//! `fd:N` names a descriptor by what it was when the master started, not by
//! its number; a descriptor of the wrong kind is refused untouched.

mod util;

use std::time::Duration;

use util::{field, Proc};

/// The inode of a socket descriptor of process `pid`, if it is one.
fn socket_inode(pid: u32, fd: &str) -> Option<String> {
    let target = std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).ok()?;
    let t = target.to_string_lossy().to_string();
    t.strip_prefix("socket:[")?.strip_suffix(']').map(str::to_string)
}

#[test]
fn a_descriptor_number_reused_by_the_master_is_refused_and_its_socket_closes_with_its_key() {
    let mut m = Proc::fixture_env(
        &[],
        &[("FIXTURE_MASTER_BIND", "127.0.0.1:0"), ("FIXTURE_NO_LISTEN", "1")],
    );
    let own = m.expect("masterfd ");
    let n = field(&own, "fd").to_string();
    let before = socket_inode(m.pid(), &n).expect("fd N is a socket");
    for _ in 0..2 {
        m.send("fork");
    }
    m.expect("online id=1");
    m.expect("online id=2");
    // The application closes fd N; the master's next socket takes the number.
    m.send("close-own");
    m.expect("closed-own ");
    m.send("send 1 listen 127.0.0.1:0");
    let ok = m.expect("message id=1 listen-");
    assert!(ok.contains("listen-ok"), "{ok}");
    let addr: std::net::SocketAddr = ok.split(' ').nth(3).unwrap().parse().unwrap();
    let after = socket_inode(m.pid(), &n).expect("fd N is a socket again");
    assert_ne!(before, after, "fd {n} now names the master's own listening socket");

    // Worker 2 asks for fd:N: refused, it is no longer what it was.
    m.send(&format!("send 2 listen fd:{n}"));
    let l = m.expect("message id=2 listen-");
    assert!(l.contains("errno=9 "), "EBADF expected: {l}");

    // When worker 1 leaves the key, its socket closes: nobody else holds it.
    m.send("send 1 close-all");
    m.expect("message id=1 closed");
    m.send("sockets");
    assert_eq!(m.expect("sockets "), "sockets 0");
    assert!(
        util::eventually(Duration::from_secs(2), || std::net::TcpStream::connect(addr).is_err()),
        "{addr} still accepts connections"
    );
}

#[test]
fn a_descriptor_of_the_wrong_kind_is_refused_without_being_changed() {
    let mut m = Proc::fixture_env(&[], &[("FIXTURE_MASTER_UNIX", "1"), ("FIXTURE_NO_LISTEN", "1")]);
    let line = m.expect("masterunix ");
    let n = field(&line, "fd").to_string();
    let pid = m.pid();
    let flags = || {
        let info = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{n}")).unwrap();
        let f = info.lines().find_map(|l| l.strip_prefix("flags:")).unwrap().trim().to_string();
        u32::from_str_radix(&f, 8).unwrap()
    };
    let before = flags();
    assert_eq!(before & libc::O_NONBLOCK as u32, 0, "starts blocking");
    m.send("fork");
    m.expect("online id=1");
    // A Unix stream socket asked for as a TCP server.
    m.send(&format!("send 1 listen fd:{n}"));
    let l = m.expect("message id=1 listen-");
    assert!(l.contains("errno=91 "), "EPROTOTYPE expected: {l}");
    assert_eq!(flags(), before, "O_NONBLOCK was not set on it");
    // And it was not put into the listening state.
    let ino = socket_inode(pid, &n).unwrap();
    let table = std::fs::read_to_string("/proc/net/unix").unwrap();
    let row = table
        .lines()
        .find(|l| l.split_whitespace().nth(6) == Some(ino.as_str()))
        .expect("the socket in /proc/net/unix");
    let sock_flags = u32::from_str_radix(row.split_whitespace().nth(3).unwrap(), 16).unwrap();
    assert_eq!(sock_flags & 0x10000, 0, "not listening: {row}");
}
