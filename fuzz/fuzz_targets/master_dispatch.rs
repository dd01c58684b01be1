//! Fuzzes the master's dispatch and registry with what buggy or hostile
//! workers send, statefully: up to three fake workers (channels with no
//! process behind them) each send a sequence of frames, well-formed ones
//! built from the input (online; listen on loopback TCP and UDP, on
//! abstract Unix names, on Unix paths in a directory of the fuzzer's own,
//! and on `fd:N` for descriptors that are sockets inherited by the master
//! or not sockets at all; listening claims; close, leaving, heartbeat,
//! ready, user messages with descriptors) and raw bytes; the master runs its turns in
//! between. Then every worker goes, and the master must hold nothing: no
//! socket in its registry, no descriptor more than before. No panic, no
//! hang, no descriptor lost.

#![no_main]

use std::cell::RefCell;
use std::io::IoSlice;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use mio_cluster::ipc::{encode, ListenRequest, Message};
use mio_cluster::{Address, Kind, Master, ProtocolVersion, Settings, WorkerId};
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};

struct Fixture {
    master: Master,
    /// The directory the Unix paths are in.
    dir: String,
    /// A listening TCP socket the master inherited (`fd:N` may name it).
    inherited: std::net::TcpListener,
    /// Descriptors open once the master was made.
    baseline: usize,
}

thread_local! {
    static FIXTURE: RefCell<Option<Fixture>> = const { RefCell::new(None) };
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map(|d| d.count()).unwrap_or(0)
}

/// Runs the master's turns until it has nothing more to do now, dropping
/// every event (and the descriptors that came with messages).
fn settle(master: &mut Master) {
    for _ in 0..64 {
        master.process().expect("a turn");
        let mut any = false;
        while let Some(e) = master.next_event() {
            any = true;
            drop(e);
        }
        if !any && master.timeout() != Some(Duration::ZERO) {
            return;
        }
    }
}

/// Reads the input a byte at a time; zeros once it is used up.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.byte(), self.byte()])
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.byte(), self.byte(), self.byte(), self.byte()])
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let n = n.min(self.0.len());
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a.to_vec()
    }
}

/// `fd:N` numbers: standard streams (not sockets), the inherited listener,
/// and numbers that name nothing the master inherited.
fn fd_number(input: &mut Input, inherited: i32) -> i32 {
    match input.byte() % 4 {
        0 => input.byte() as i32 % 3,
        1 | 2 => inherited,
        _ => 3 + input.byte() as i32 % 64,
    }
}

fn message(input: &mut Input, dir: &str, inherited: i32) -> Message {
    match input.byte() % 9 {
        0 => Message::Online { version: ProtocolVersion { major: input.byte() as u16 % 3, minor: input.u16() } },
        1 => {
            let kind = match input.byte() % 3 {
                0 => Kind::Tcp,
                1 => Kind::Udp,
                _ => Kind::Unix,
            };
            // Loopback, an abstract Unix name, or a path in the fuzzer's
            // directory (one name spelled two ways).
            let name = b'a' + input.byte() % 4;
            let address = match kind {
                Kind::Unix => match input.byte() % 3 {
                    0 => [&[0u8][..], b"mio-fuzz-", &[name]].concat(),
                    1 => format!("{dir}/{}", name as char).into_bytes(),
                    _ => format!("{dir}/./{}", name as char).into_bytes(),
                },
                _ if input.byte() % 2 == 0 => b"127.0.0.1".to_vec(),
                _ => b"::1".to_vec(),
            };
            let fd = if input.byte() % 4 == 0 { fd_number(input, inherited) } else { -1 };
            let request = ListenRequest {
                kind,
                address: if fd >= 0 { Vec::new() } else { address },
                port: 0,
                fd,
                index: input.byte() as u32 % 4,
                backlog: input.byte() as i32,
                ipv6only: input.byte() % 2 == 0,
                readable_all: false,
                writable_all: false,
            };
            Message::Listen { seq: input.u32(), request }
        }
        2 => Message::Listening {
            address: match input.byte() % 2 {
                0 => Address::Inet(std::net::SocketAddr::from(([127, 0, 0, 1], input.u16()))),
                _ => Address::Unix(format!("{dir}/{}", (b'a' + input.byte() % 4) as char).into_bytes()),
            },
        },
        3 => Message::Close { handle: input.u32() % 8 },
        4 => Message::Leaving,
        5 => Message::Heartbeat,
        6 => Message::Ready,
        7 => {
            let n = input.byte() as usize % 64;
            Message::User { payload: input.bytes(n) }
        }
        _ => Message::Disconnect,
    }
}

/// Writes `frame` (with `fds`) to a worker's end, letting the master read
/// while the socket is full; gives up after a while (the master may have
/// closed that channel).
fn send(master: &mut Master, end: &OwnedFd, frame: &[u8], fds: &[i32]) {
    let mut sent = 0;
    for _ in 0..64 {
        if sent == frame.len() {
            return;
        }
        let iov = [IoSlice::new(&frame[sent..])];
        let cmsg = [ControlMessage::ScmRights(fds)];
        let cmsgs: &[ControlMessage] = if sent == 0 && !fds.is_empty() { &cmsg } else { &[] };
        match sendmsg::<()>(end.as_raw_fd(), &iov, cmsgs, MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL, None) {
            Ok(n) => sent += n,
            Err(nix::errno::Errno::EAGAIN) => settle(master),
            Err(_) => return,
        }
    }
}

fuzz_target!(|data: &[u8]| {
    FIXTURE.with(|f| {
        let mut f = f.borrow_mut();
        let fx = f.get_or_insert_with(|| {
            let settings = Settings { disconnect_timeout: Duration::MAX, ..Settings::default() };
            let dir = format!("/tmp/mio-fuzz-dispatch-{}", std::process::id());
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir(&dir).expect("a directory for Unix paths");
            let inherited = std::net::TcpListener::bind("127.0.0.1:0").expect("a listener");
            let master = Master::new(settings).expect("a master");
            Fixture { master, dir, inherited, baseline: open_fds() }
        });
        let master = &mut fx.master;
        let inherited = fx.inherited.as_raw_fd();
        let mut input = Input(data);
        let n = 1 + input.byte() as usize % 3;
        let mut workers: Vec<(WorkerId, OwnedFd)> =
            (0..n).map(|_| master.fuzz_attach().expect("a fake worker")).collect();
        let null = std::fs::File::open("/dev/null").unwrap();
        for _ in 0..64 {
            if input.0.is_empty() {
                break;
            }
            let w = input.byte() as usize % workers.len();
            match input.byte() % 8 {
                // Raw bytes, whatever they are.
                0 => {
                    let len = input.byte() as usize;
                    let raw = input.bytes(len);
                    send(master, &workers[w].1, &raw, &[]);
                }
                // A turn of the master.
                1 => settle(master),
                // A worker goes.
                2 if workers.len() > 1 => {
                    let (id, end) = workers.swap_remove(w);
                    drop(end);
                    master.fuzz_detach(id);
                }
                // A well-formed frame, with up to three descriptors.
                _ => {
                    let msg = message(&mut input, &fx.dir, inherited);
                    let nfds = input.byte() as usize % 4;
                    let fds = vec![null.as_raw_fd(); nfds];
                    let mut frame = Vec::new();
                    encode(&msg, nfds, &mut frame);
                    send(master, &workers[w].1, &frame, &fds);
                }
            }
        }
        settle(master);
        for (id, end) in workers {
            drop(end);
            master.fuzz_detach(id);
        }
        settle(master);
        drop(null);
        assert_eq!(master.listening_sockets(), 0, "the registry kept a socket");
        assert_eq!(open_fds(), fx.baseline, "descriptors left open");
        // Every socket file the master bound was removed with its key.
        let left: Vec<_> = std::fs::read_dir(&fx.dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert!(left.is_empty(), "socket files left: {left:?}");
    });
});
