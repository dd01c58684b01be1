//! Every kind of shared socket: UDP (also `udp:fd:N`, v6only beside dual
//! stack), Unix stream sockets (relative and long paths, mode, stale files,
//! unlinking, abstract names), and IPv6 dual stack.

mod util;

use std::net::{SocketAddr, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Duration;
use util::*;

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("mio-cluster-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn udp_client() -> UdpSocket {
    let c = UdpSocket::bind("127.0.0.1:0").unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c
}

#[test]
fn four_udp_workers_share_one_port_and_each_receives() {
    let mut m = Proc::fixture(&["--udp", "udp:127.0.0.1:0"]);
    for _ in 0..4 {
        m.send("fork");
    }
    let mut addrs = Vec::new();
    for id in 1..=4 {
        let ok = m.expect(&format!("message id={id} udp-ok"));
        assert!(ok.ends_with("shared=true"), "{ok}");
        addrs.push(ok.split(' ').nth(3).unwrap().parse::<SocketAddr>().unwrap());
    }
    assert!(addrs.iter().all(|a| *a == addrs[0]), "{addrs:?}");
    m.send("sockets");
    assert_eq!(m.expect("sockets"), "sockets 1");
    // Datagrams from many source ports: the kernel hands each to a worker
    // waiting on the socket; every worker gets some within a bounded time
    // (on a loaded machine one worker can win hundreds in a row).
    let mut seen = std::collections::HashSet::new();
    let deadline = std::time::Instant::now() + WAIT;
    for i in 0.. {
        if std::time::Instant::now() > deadline {
            break;
        }
        let c = udp_client();
        c.send_to(format!("d{i}").as_bytes(), addrs[0]).unwrap();
        let mut buf = [0u8; 64];
        let (n, _) = c.recv_from(&mut buf).unwrap();
        let reply = String::from_utf8_lossy(&buf[..n]).to_string();
        assert!(reply.ends_with(&format!(":d{i}")), "{reply}");
        seen.insert(reply.split(':').next().unwrap().to_string());
        if seen.len() == 4 {
            break;
        }
    }
    assert_eq!(seen.len(), 4, "not every worker received: {seen:?}");
}

#[test]
fn udp_fd_n_serves_the_masters_udp_socket() {
    // The test hands a UDP socket to the master as its descriptor 3, through
    // the shell, as systemd would.
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = sock.local_addr().unwrap();
    let mut cmd = std::process::Command::new("sh");
    cmd.args(["-c", "exec 3<&0 0</dev/null; exec \"$0\" \"$@\""]).arg(example("udp_echo")).args([
        "--workers",
        "2",
        "--listen",
        "fd:3",
    ]);
    cmd.stdin(std::process::Stdio::from(std::os::fd::OwnedFd::from(sock)));
    cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    let mut p = Proc::start_configured(cmd);
    let ready = p.expect("ready");
    assert_eq!(field(&ready, "addr"), addr.to_string());
    let c = udp_client();
    c.send_to(b"over fd 3", addr).unwrap();
    let mut buf = [0u8; 64];
    let (n, _) = c.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"over fd 3");
}

#[test]
fn v6only_and_dual_stack_udp_sockets_share_a_port_number() {
    if UdpSocket::bind("[::1]:0").is_err() {
        eprintln!("no IPv6 on this machine; skipped");
        return;
    }
    // Find a port free for both families, then bind udp6 v6only and udp4 on it.
    let probe = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = probe.local_addr().unwrap().port();
    drop(probe);
    let v6 = format!("udp:[::]:{port}");
    let v4 = format!("udp:127.0.0.1:{port}");
    let mut m = Proc::fixture(&["--udp6only", &v6, "--udp", &v4]);
    m.send("fork");
    m.send("fork");
    for id in 1..=2 {
        let a = m.expect(&format!("message id={id} udp-ok"));
        let b = m.expect(&format!("message id={id} udp-ok"));
        assert!(a.contains(&format!(":{port} ")) && b.contains(&format!(":{port} ")), "{a} / {b}");
    }
    m.send("sockets");
    assert_eq!(m.expect("sockets"), "sockets 2");
    for target in [format!("127.0.0.1:{port}"), format!("[::1]:{port}")] {
        let c = UdpSocket::bind(if target.starts_with('[') { "[::1]:0" } else { "127.0.0.1:0" })
            .unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        c.send_to(b"x", target.as_str()).unwrap();
        let mut buf = [0u8; 16];
        let (n, _) = c.recv_from(&mut buf).unwrap();
        assert!(buf[..n].ends_with(b":x"), "{target}");
    }
}

#[test]
fn unix_socket_with_a_relative_path_resolved_in_the_workers_directory() {
    let dir = tmpdir("unix-rel");
    let mut m = Proc::fixture_env(
        &["--listen", "unix:echo.sock"],
        &[("FIXTURE_CWD", dir.to_str().unwrap())],
    );
    m.send("fork");
    m.send("fork");
    let path = dir.join("echo.sock");
    for id in 1..=2 {
        let l = m.expect(&format!("listening id={id}"));
        assert_eq!(field(&l, "addr"), format!("unix:{}", path.display()));
    }
    m.send("sockets");
    assert_eq!(m.expect("sockets"), "sockets 1");
    for _ in 0..10 {
        unix_echo(&path).unwrap();
    }
    // The last worker leaves: the master unlinks the file it created.
    m.send("disconnect-all");
    m.expect("alldisconnected");
    assert!(eventually(WAIT, || !path.exists()), "{} left behind", path.display());
}

#[test]
fn a_unix_path_too_long_for_sun_path_is_refused_clearly() {
    let dir = tmpdir("unix-long");
    let long = dir.join("x".repeat(120));
    let spec = format!("unix:{}", long.display());
    let mut m = Proc::fixture(&["--listen", &spec]);
    m.send("fork");
    let err = m.expect("message id=1 listen-err");
    assert_eq!(field(&err, "errno"), libc::ENAMETOOLONG.to_string(), "{err}");
    assert!(
        err.contains("File name too long") && err.contains(&long.display().to_string()),
        "{err}"
    );
    assert!(!long.exists());
}

#[test]
fn unix_socket_mode_readable_and_writable_by_all() {
    let dir = tmpdir("unix-mode");
    let path = dir.join("all.sock");
    let spec = format!("unix:{}", path.display());
    let mut m = Proc::fixture_env(
        &["--listen", &spec],
        &[("FIXTURE_UNIX_ALL", "1"), ("FIXTURE_UMASK", "022")],
    );
    m.send("fork");
    m.expect("listening id=1");
    // Read and write bits added to the 0755 the umask gives, as libuv does.
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o777, "mode {mode:o}");
    unix_echo(&path).unwrap();
}

#[test]
fn a_stale_socket_file_is_replaced_and_a_live_one_is_eaddrinuse() {
    let dir = tmpdir("unix-stale");
    let path = dir.join("stale.sock");
    // A socket file nobody listens on any more: a dead run's leftover.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let spec = format!("unix:{}", path.display());
    let mut m = Proc::fixture(&["--listen", &spec]);
    m.send("fork");
    m.expect("listening id=1");
    assert!(eventually(WAIT, || m.stderr().contains("removing stale socket")), "{}", m.stderr());
    unix_echo(&path).unwrap();
    // A second cluster on the same path while the first serves: refused.
    let mut other = Proc::fixture(&["--listen", &spec]);
    other.send("fork");
    let err = other.expect("message id=1 listen-err");
    assert_eq!(field(&err, "errno"), libc::EADDRINUSE.to_string(), "{err}");
    unix_echo(&path).unwrap();
    // A regular file in the way is never deleted.
    let file = dir.join("file");
    std::fs::write(&file, b"keep me").unwrap();
    other.send(&format!("send 1 listen unix:{}", file.display()));
    other.expect_by("listen-err for the file", WAIT, |l| {
        l.starts_with("message id=1 listen-err") && l.contains("/file")
    });
    assert_eq!(std::fs::read(&file).unwrap(), b"keep me");
}

/// Abstract addresses are Linux's own (elsewhere `unix:@NAME` is refused).
#[cfg(target_os = "linux")]
#[test]
fn abstract_unix_sockets_need_no_file() {
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;
    let name = format!("mio-cluster-test-{}", std::process::id());
    let spec = format!("unix:@{name}");
    let mut m = Proc::fixture(&["--listen", &spec]);
    m.send("fork");
    m.send("fork");
    m.expect("listening id=1");
    m.expect("listening id=2");
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    for _ in 0..5 {
        let mut s = UnixStream::connect_addr(&addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"abc").unwrap();
        let mut back = [0u8; 3];
        s.read_exact(&mut back).unwrap();
        assert_eq!(&back, b"abc");
    }
}

#[test]
fn ipv6_any_port_0_accepts_ipv4_clients_unless_v6only() {
    if std::net::TcpListener::bind("[::]:0").is_err() {
        eprintln!("no IPv6 on this machine; skipped");
        return;
    }
    let mut m = Proc::fixture(&["--listen", "[::]:0"]);
    m.send("fork");
    m.send("fork");
    let a: SocketAddr = field(&m.expect("listening id=1"), "addr").parse().unwrap();
    let b: SocketAddr = field(&m.expect("listening id=2"), "addr").parse().unwrap();
    assert_eq!(a, b);
    for _ in 0..10 {
        echo_once(SocketAddr::from(([127, 0, 0, 1], a.port()))).unwrap();
        echo_once(SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, a.port()))).unwrap();
    }
    let mut m = Proc::fixture(&["--listen6only", "[::]:0"]);
    m.send("fork");
    let a: SocketAddr = field(&m.expect("listening id=1"), "addr").parse().unwrap();
    echo_once(SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, a.port()))).unwrap();
    assert!(
        echo_once(SocketAddr::from(([127, 0, 0, 1], a.port()))).is_err(),
        "v6only accepted IPv4"
    );
}
