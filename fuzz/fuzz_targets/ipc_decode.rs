//! Fuzzes the IPC decoder with what a buggy or hostile worker could send:
//! frames are decoded one after another as the channel does; the decoder
//! must not panic, must not use bytes it was not given, and every frame it
//! accepts must re-encode to exactly the same bytes.
//!
//! `cargo fuzz run -s none ipc_decode fuzz/corpus/ipc_decode` (stable works
//! with `-s none`).

#![no_main]

use libfuzzer_sys::fuzz_target;
use mio_cluster::ipc::codec::HEADER_LEN;
use mio_cluster::ipc::{decode, encode};

fuzz_target!(|data: &[u8]| {
    let mut buf = data;
    while let Ok(Some(d)) = decode(buf) {
        assert!(d.len >= HEADER_LEN && d.len <= buf.len());
        let mut again = Vec::new();
        encode(&d.message, d.nfds, &mut again);
        assert_eq!(&again[..], &buf[..d.len]);
        buf = &buf[d.len..];
    }
});
