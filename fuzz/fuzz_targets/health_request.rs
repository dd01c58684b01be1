//! Fuzzes the health listener's request-head parser with what any client
//! on the network could send: it must not panic, and every reply is one
//! well-formed HTTP/1.1 response that closes the connection, its
//! `Content-Length` that of its body (none for `HEAD`).

#![no_main]

use libfuzzer_sys::fuzz_target;
use mio_cluster::fuzzing::health_reply;

fuzz_target!(|data: &[u8]| {
    let (ready, request) = match data.split_first() {
        Some((b, rest)) => (b & 1 == 1, rest),
        None => (true, data),
    };
    let Some(reply) = health_reply(request, ready) else { return };
    let text = std::str::from_utf8(&reply).expect("a reply is text");
    assert!(text.starts_with("HTTP/1.1 "), "{text:?}");
    let code: u16 = text[9..12].parse().expect("a status code");
    assert!([200, 400, 404, 405, 503].contains(&code), "{text:?}");
    let (head, body) = text.split_once("\r\n\r\n").expect("a head that ends");
    assert!(head.contains("\r\nConnection: close"), "{text:?}");
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .expect("a length")
        .parse()
        .unwrap();
    assert!(body.is_empty() || body.len() == length, "{text:?}");
    assert!(length <= 64, "{text:?}");
});
