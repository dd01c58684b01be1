//! The socket registry: one socket per key shared by every worker, port 0,
//! `fd:N`, bypasses, errors, and closing when the last worker leaves.

mod util;

use std::collections::HashSet;
use std::net::SocketAddr;
use util::*;

fn listening_addrs(m: &mut Proc, ids: std::ops::RangeInclusive<u32>) -> Vec<SocketAddr> {
    ids.map(|id| field(&m.expect(&format!("listening id={id}")), "addr").parse().unwrap()).collect()
}

#[test]
fn port_0_is_one_port_for_four_workers_and_all_of_them_accept() {
    let mut m = Proc::fixture(&["--listen", "127.0.0.1:0"]);
    for _ in 0..4 {
        m.send("fork");
    }
    let addrs = listening_addrs(&mut m, 1..=4);
    assert_ne!(addrs[0].port(), 0);
    assert!(addrs.iter().all(|a| *a == addrs[0]), "{addrs:?}");
    m.send("sockets");
    assert_eq!(m.expect("sockets"), "sockets 1");
    // Every worker accepts on the shared queue. Hold connections open so a
    // worker busy with one leaves the next to the others.
    let mut held = Vec::new();
    let mut accepted = [0u64; 4];
    for round in 0..20 {
        for _ in 0..20 {
            let mut c = connect(addrs[0]).unwrap();
            roundtrip(&mut c, b"x").unwrap();
            held.push(c);
        }
        for id in 1..=4 {
            m.send(&format!("send {id} report"));
        }
        for id in 1..=4 {
            let r = m.expect(&format!("message id={id} report"));
            accepted[id as usize - 1] = field(&r, "accepted").parse().unwrap();
        }
        if accepted.iter().all(|n| *n > 0) {
            break;
        }
        assert!(round < 19, "some worker never accepted: {accepted:?}");
    }
    assert_eq!(accepted.iter().sum::<u64>(), held.len() as u64);
}

#[test]
fn a_second_listen_0_in_one_worker_gets_another_port_shared_by_index() {
    let mut m = Proc::fixture(&["--listen", "127.0.0.1:0", "--listen", "127.0.0.1:0"]);
    m.send("fork");
    let first: Vec<SocketAddr> =
        listening_addrs(&mut m, 1..=1).into_iter().chain(listening_addrs(&mut m, 1..=1)).collect();
    assert_ne!(first[0].port(), first[1].port(), "{first:?}");
    m.send("fork");
    let second: HashSet<SocketAddr> =
        listening_addrs(&mut m, 2..=2).into_iter().chain(listening_addrs(&mut m, 2..=2)).collect();
    assert_eq!(
        second,
        first.iter().copied().collect(),
        "the Nth server of every worker shares a socket"
    );
    m.send("sockets");
    assert_eq!(m.expect("sockets"), "sockets 2");
    for a in &first {
        echo_once(*a).unwrap();
    }
}

#[test]
fn a_port_in_use_gives_eaddrinuse_and_a_retry_after_it_is_freed_works() {
    // A port no connection of another test can take as its source port
    // once it is freed (see listener_below_ephemeral).
    let squatter = listener_below_ephemeral();
    let addr = squatter.local_addr().unwrap().to_string();
    let mut m = Proc::fixture(&["--listen", &addr]);
    m.send("fork");
    let err = m.expect("message id=1 listen-err");
    assert!(err.contains("kind=AddrInUse"), "{err}");
    assert_eq!(field(&err, "errno"), libc::EADDRINUSE.to_string());
    assert_eq!(field(&err, "syscall"), "bind");
    assert!(err.contains(&addr), "the error names the address: {err}");
    // The master lives on, logged the failure, and holds no socket for it.
    m.send("sockets");
    assert_eq!(m.expect("sockets"), "sockets 0");
    assert!(eventually(WAIT, || m.stderr().contains("Address already in use")), "{}", m.stderr());
    drop(squatter);
    m.send(&format!("send 1 listen {addr}"));
    let ok = m.expect_by("listen-ok", WAIT, |l| {
        if l.starts_with("message id=1 listen-err") {
            let port = addr.rsplit(':').next().unwrap().parse().unwrap();
            panic!("{l}\nthe port, freed: {}", who_has_port(port));
        }
        l.starts_with("message id=1 listen-ok")
    });
    assert!(ok.contains(&addr), "{ok}");
    echo_once(addr.parse().unwrap()).unwrap();
}

#[test]
fn an_unassignable_address_gives_eaddrnotavail() {
    // 192.0.2.0/24 is TEST-NET-1: never assigned to this machine. Nothing is
    // sent to it; bind(2) fails locally.
    let mut m = Proc::fixture(&["--listen", "192.0.2.1:0"]);
    m.send("fork");
    let err = m.expect("message id=1 listen-err");
    assert!(err.contains("kind=AddrNotAvailable"), "{err}");
    assert_eq!(field(&err, "errno"), libc::EADDRNOTAVAIL.to_string());
    assert_eq!(field(&err, "syscall"), "bind");
    m.send("threads");
    m.expect("threads 1");
}

#[test]
fn fd_n_serves_the_masters_descriptor_n() {
    let mut m = Proc::fixture_env(&[], &[("FIXTURE_MASTER_BIND", "127.0.0.1:0")]);
    let own = m.expect("masterfd");
    let fd = field(&own, "fd");
    let addr: SocketAddr = field(&own, "addr").parse().unwrap();
    m.send("fork");
    m.send("fork");
    for id in 1..=2 {
        m.expect(&format!("message id={id} hello"));
        m.send(&format!("send {id} listen fd:{fd}"));
        let ok = m.expect(&format!("message id={id} listen-ok"));
        assert!(ok.contains(&addr.to_string()), "{ok}");
    }
    for _ in 0..10 {
        echo_once(addr).unwrap();
    }
    // A number the master has not open is EBADF, named as such.
    m.send("send 1 listen fd:999");
    let err = m.expect("message id=1 listen-err");
    assert_eq!(field(&err, "errno"), libc::EBADF.to_string(), "{err}");
}

#[test]
fn exclusive_and_an_already_held_socket_bypass_the_master() {
    let mut m = Proc::fixture(&["--exclusive", "127.0.0.1:0", "--adopt", "127.0.0.1:0"]);
    m.send("fork");
    m.send("fork");
    let mut ports = HashSet::new();
    for id in 1..=2 {
        for _ in 0..2 {
            let ok = m.expect(&format!("message id={id} listen-ok"));
            assert!(ok.ends_with("shared=false"), "{ok}");
            let a: SocketAddr = ok.split(' ').nth(3).unwrap().parse().unwrap();
            echo_once(a).unwrap();
            ports.insert(a.port());
        }
        // The master is told (listening events) but holds nothing.
        m.expect(&format!("listening id={id}"));
        m.expect(&format!("listening id={id}"));
    }
    assert_eq!(ports.len(), 4, "each worker bound its own sockets");
    m.send("sockets");
    assert_eq!(m.expect("sockets"), "sockets 0");
}

#[test]
fn the_master_closes_a_socket_when_its_last_worker_leaves() {
    let mut m = Proc::fixture(&["--listen", "127.0.0.1:0"]);
    m.send("fork");
    m.send("fork");
    let addr = listening_addrs(&mut m, 1..=2)[0];
    // Death of one worker: the other still serves, the socket stays.
    m.send("kill 1 SIGKILL");
    m.expect("exit id=1");
    m.send("sockets");
    assert_eq!(m.expect("sockets"), "sockets 1");
    echo_once(addr).unwrap();
    // The last worker closes its server: the master closes the socket.
    m.send("send 2 close-all");
    m.expect("message id=2 closed");
    assert!(
        eventually(WAIT, || {
            m.send("sockets");
            m.expect("sockets") == "sockets 0"
        }),
        "socket still held"
    );
    assert!(echo_once(addr).is_err(), "connection accepted after the last worker left");
    // A new listen on the same key binds again (here on a new port 0).
    m.send("send 2 listen 127.0.0.1:0");
    let old = addr.to_string();
    let ok = m.expect_by("new listen-ok", WAIT, |l| {
        l.starts_with("message id=2 listen-ok") && !l.contains(&old)
    });
    let again: SocketAddr = ok.split(' ').nth(3).unwrap().parse().unwrap();
    echo_once(again).unwrap();
}

#[test]
fn fd_n_never_names_one_of_the_masters_own_descriptors() {
    let mut m = Proc::fixture(&["--listen", "127.0.0.1:0"]);
    m.send("fork");
    m.expect("listening id=1");
    // Now the master holds its epoll, a pidfd, a channel and a listening
    // socket, all opened after it started: none may be named with fd:N.
    m.send("fdlist");
    let list = m.expect("fdlist");
    let own: Vec<&str> = list["fdlist ".len()..]
        .split(',')
        .filter(|f| f.contains("socket:") || f.contains("anon_inode"))
        .map(|f| f.split('>').next().unwrap())
        .collect();
    assert!(own.len() >= 3, "{list}");
    for fd in own {
        m.send(&format!("send 1 listen fd:{fd}"));
        let err = m.expect("message id=1 listen-err");
        assert_eq!(field(&err, "errno"), libc::EBADF.to_string(), "fd {fd}: {err}");
    }
    m.send("sockets");
    assert_eq!(m.expect("sockets"), "sockets 1");
}
