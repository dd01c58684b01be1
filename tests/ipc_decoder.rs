//! The IPC decoder is an attack surface: whatever bytes a worker sends, it
//! must not panic, must not claim bytes it was not given, and must only
//! accept canonical frames. This runs the fuzz target's property on the
//! committed seed corpus and on a few hundred thousand random and mutated
//! inputs, deterministically, so CI checks it without nightly.

use mio_cluster::ipc::codec::{HEADER_LEN, MAX_BODY};
use mio_cluster::ipc::{decode, encode, ListenRequest, Message};
use mio_cluster::{Address, Kind, ProtocolVersion, Syscall, PROTOCOL_VERSION};

/// The property the fuzz target checks: decode frames one after another as
/// the channel does; every accepted frame re-encodes to exactly its bytes.
fn check(input: &[u8]) -> usize {
    let mut buf = input;
    let mut frames = 0;
    loop {
        match decode(buf) {
            Ok(Some(d)) => {
                assert!(
                    d.len >= HEADER_LEN && d.len <= buf.len() && d.len <= HEADER_LEN + MAX_BODY
                );
                let mut again = Vec::new();
                encode(&d.message, d.nfds, &mut again);
                assert_eq!(&again[..], &buf[..d.len], "not canonical: {:?}", d.message);
                buf = &buf[d.len..];
                frames += 1;
            }
            Ok(None) | Err(_) => return frames,
        }
    }
}

fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let listen = |kind, address: &str, port, fd, index| Message::Listen {
        seq: 1,
        request: ListenRequest {
            kind,
            address: address.as_bytes().to_vec(),
            port,
            fd,
            index,
            backlog: 511,
            ipv6only: false,
            readable_all: false,
            writable_all: false,
        },
    };
    let frames: Vec<(&str, Message, usize)> = vec![
        ("online", Message::Online { version: PROTOCOL_VERSION }, 0),
        // A worker from before protocol versions: an empty body.
        ("online_unversioned", Message::Online { version: ProtocolVersion::UNVERSIONED }, 0),
        ("listen_tcp4", listen(Kind::Tcp, "127.0.0.1", 7000, -1, 0), 0),
        ("listen_tcp6", listen(Kind::Tcp, "::", 0, -1, 1), 0),
        ("listen_fd", listen(Kind::Tcp, "", 0, 3, 0), 0),
        (
            "listening",
            Message::Listening { address: Address::Inet("127.0.0.1:7000".parse().unwrap()) },
            0,
        ),
        ("close", Message::Close { handle: 0 }, 0),
        ("leaving", Message::Leaving, 0),
        ("heartbeat", Message::Heartbeat, 0),
        ("ready", Message::Ready, 0),
        (
            "listen_ok",
            Message::ListenOk {
                seq: 1,
                handle: 0,
                address: Address::Inet("[::1]:8080".parse().unwrap()),
                seat: 2,
            },
            3,
        ),
        (
            "listen_err",
            Message::ListenErr { seq: 1, errno: libc::EADDRINUSE, syscall: Syscall::Bind },
            0,
        ),
        ("disconnect", Message::Disconnect, 0),
        ("user", Message::User { payload: b"hello".to_vec() }, 2),
    ];
    let mut out: Vec<(&str, Vec<u8>)> = frames
        .into_iter()
        .map(|(name, m, nfds)| {
            let mut v = Vec::new();
            encode(&m, nfds, &mut v);
            (name, v)
        })
        .collect();
    let stream: Vec<u8> = out.iter().flat_map(|(_, v)| v.clone()).collect();
    out.push(("stream_of_all", stream));
    out
}

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn mutate(rng: &mut Rng, input: &[u8]) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        match rng.below(6) {
            0 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] ^= 1 << rng.below(8);
            }
            1 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] = [0, 1, 0x7f, 0x80, 0xff][rng.below(5)];
            }
            2 if !v.is_empty() => v.truncate(rng.below(v.len())),
            3 => {
                let i = rng.below(v.len() + 1);
                v.insert(i, rng.next() as u8);
            }
            4 if v.len() >= 4 => {
                // Rewrite the length field: the frame's, or a random spot's.
                let i = if rng.below(2) == 0 { 0 } else { rng.below(v.len() - 3) };
                let n = [0u32, 1, 5, 6, 0xffff, MAX_BODY as u32, MAX_BODY as u32 + 1, u32::MAX]
                    [rng.below(8)];
                v[i..i + 4].copy_from_slice(&n.to_le_bytes());
            }
            _ => {
                let n = rng.below(16);
                v.extend((0..n).map(|_| rng.next() as u8));
            }
        }
    }
    v
}

#[test]
fn the_committed_corpus_decodes_and_is_canonical() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/corpus/ipc_decode");
    if std::env::var_os("MIO_CLUSTER_WRITE_CORPUS").is_some() {
        for (name, bytes) in seeds() {
            std::fs::write(format!("{dir}/{name}"), bytes).unwrap();
        }
    }
    let mut files = 0;
    for entry in std::fs::read_dir(dir).expect("seed corpus committed") {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        assert!(check(&bytes) >= 1, "a seed is not a valid frame");
        files += 1;
    }
    assert!(files >= seeds().len(), "corpus has {files} files");
}

#[test]
fn every_prefix_of_a_valid_stream_waits_for_more() {
    for (name, bytes) in seeds() {
        for cut in 0..bytes.len() {
            check(&bytes[..cut]);
        }
        let first = decode(&bytes).unwrap().unwrap();
        for cut in 0..first.len {
            assert_eq!(decode(&bytes[..cut]), Ok(None), "{name}: prefix {cut}");
        }
    }
}

#[test]
fn random_and_mutated_inputs_never_break_the_decoder() {
    let seeds = seeds();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut accepted = 0usize;
    for i in 0..300_000 {
        let input = if i % 4 == 0 {
            let n = rng.below(64);
            (0..n).map(|_| rng.next() as u8).collect()
        } else {
            let seed = rng.below(seeds.len());
            mutate(&mut rng, &seeds[seed].1)
        };
        accepted += check(&input);
    }
    // The mutations keep many inputs valid, so the accepting paths run too.
    assert!(accepted > 10_000, "only {accepted} frames accepted");
}
