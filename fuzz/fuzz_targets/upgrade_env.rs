//! Fuzzes the parser of `MIO_CLUSTER_UPGRADE`, which anyone who starts
//! the program can set: it must not panic, and what it accepts keeps the
//! rules the master relies on before it looks at any descriptor.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mio_cluster::fuzzing::upgrade_env;

fuzz_target!(|data: &[u8]| {
    let value = String::from_utf8_lossy(data);
    let Ok((ready, target, generation, sockets, fds)) = upgrade_env(&value) else { return };
    assert!(ready >= 0);
    assert!(target.map_or(true, |t| t >= 1));
    assert!(generation >= 2);
    assert!(sockets.iter().all(|(fd, key)| *fd >= 0 && !key.contains(',') && !key.contains(';')));
    for (name, fd) in &fds {
        assert!(*fd >= 0);
        assert!((1..=32).contains(&name.len()), "{name:?}");
        assert!(name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-'));
    }
    // Nothing made up: every descriptor named is written in the value.
    for fd in std::iter::once(ready).chain(sockets.iter().map(|s| s.0)).chain(fds.iter().map(|f| f.1)) {
        assert!(value.contains(&fd.to_string()));
    }
});
