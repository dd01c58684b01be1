//! The no-cluster reference for the benchmark: one process, one mio loop,
//! the same echo code as `echo`'s workers, the same `ready` line.
//!
//! ```text
//! cargo run --release --example reference_echo -- [--listen HOST:PORT] [--processes N]
//! ```
//!
//! With `--processes N` (N > 1) it is the plain multi-process server instead:
//! N processes, each its own listening socket on the same port
//! (`SO_REUSEPORT`, the kernel spreads connections by hash) and its own mio
//! loop, nothing shared and nothing balanced. It pays the context switches
//! of N processes and nothing of the crate's: the floor the cluster's CPU is
//! compared with. The extra processes are children of the first, started
//! before the `ready` line, and end with it (`PR_SET_PDEATHSIG`).

use std::io::{self, BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Command, Stdio};

use echo_conn::Conn;
use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token};
use mio_cluster::Stream;
use nix::sys::socket::{self, sockopt, AddressFamily, SockFlag, SockType, SockaddrStorage};
use slab::Slab;

#[path = "../common/echo_conn.rs"]
mod echo_conn;

const LISTENER: Token = Token(usize::MAX);

fn main() -> io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1));
    let addr: SocketAddr = arg("--listen")
        .map_or("127.0.0.1:7000", |s| s.as_str())
        .parse()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("--listen: {e}")))?;
    let processes: usize = match arg("--processes") {
        None => 1,
        Some(n) => n.parse().ok().filter(|n| *n >= 1).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, format!("--processes: {n:?}"))
        })?,
    };
    if args.iter().any(|a| a == "--reuseport-child") {
        // Ends with the first process (the parent), where Linux can say so.
        #[cfg(target_os = "linux")]
        nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM)?;
        let listener = bind_reuseport(addr)?;
        println!("listening");
        io::stdout().flush()?;
        return serve(listener);
    }
    if processes == 1 {
        let listener = TcpListener::bind(addr)?;
        println!("ready addr={} workers=1 pid={}", listener.local_addr()?, std::process::id());
        io::stdout().flush()?;
        return serve(listener);
    }
    let listener = bind_reuseport(addr)?;
    let bound = listener.local_addr()?;
    let exe = std::env::current_exe()?;
    let mut children = Vec::new();
    for _ in 1..processes {
        let mut child = Command::new(&exe)
            .args(["--listen", &bound.to_string(), "--reuseport-child"])
            .stdout(Stdio::piped())
            .spawn()?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line)?;
        if line.trim() != "listening" {
            return Err(io::Error::other(format!("a child process did not listen: {line:?}")));
        }
        children.push(child);
    }
    println!("ready addr={bound} workers={processes} pid={}", std::process::id());
    io::stdout().flush()?;
    serve(listener)
}

/// A listening socket on `addr` that other processes may bind too
/// (`SO_REUSEPORT`).
fn bind_reuseport(addr: SocketAddr) -> io::Result<TcpListener> {
    let family = if addr.is_ipv4() { AddressFamily::Inet } else { AddressFamily::Inet6 };
    // Flags set after creation: macOS takes none at `socket(2)`.
    let fd = socket::socket(family, SockType::Stream, SockFlag::empty(), None)?;
    use nix::fcntl::{fcntl, FcntlArg, FdFlag};
    fcntl(&fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))?;
    socket::setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    socket::setsockopt(&fd, sockopt::ReusePort, &true)?;
    socket::bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &SockaddrStorage::from(addr))?;
    socket::listen(&fd, socket::Backlog::new(1024).map_err(io::Error::from)?)?;
    let listener = std::net::TcpListener::from(fd);
    listener.set_nonblocking(true)?;
    Ok(TcpListener::from_std(listener))
}

/// The echo loop: accept, echo, close.
fn serve(mut listener: TcpListener) -> io::Result<()> {
    let mut poll = Poll::new()?;
    poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
    let mut conns: Slab<Conn> = Slab::new();
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        poll.poll(&mut events, None)?;
        for event in events.iter() {
            if event.token() == LISTENER {
                // Edge-triggered: accept until the queue is empty.
                while let Ok((stream, _)) = listener.accept() {
                    let _ = stream.set_nodelay(true);
                    echo_conn::add(poll.registry(), &mut conns, Stream::from(stream))?;
                }
                continue;
            }
            echo_conn::ready(poll.registry(), &mut conns, event.token().0, &mut buf)?;
        }
    }
}
