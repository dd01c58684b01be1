//! Fuzzes the parsers of socket activation's variables (`LISTEN_PID`,
//! `LISTEN_FDS`, `LISTEN_FDNAMES`, as a service manager or anyone who
//! starts the program sets them) and of the master's list for its workers
//! (`MIO_CLUSTER_SYSTEMD_SOCKETS`). The input is split at 0xff bytes into
//! the values. No panic; what is accepted is bounded and consecutive.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mio_cluster::fuzzing::{listen_env, workers_sockets_env};

fuzz_target!(|data: &[u8]| {
    let mut parts = data.split(|&b| b == 0xff).map(|p| String::from_utf8_lossy(p).into_owned());
    let (pid, fds, names) = (parts.next(), parts.next(), parts.next());
    let me = 4242;
    if let Ok(passed) = listen_env(pid.as_deref(), fds.as_deref(), names.as_deref(), me) {
        assert!(passed.len() <= 65536);
        for (i, (fd, name)) in passed.iter().enumerate() {
            assert_eq!(*fd, 3 + i as i32);
            assert!(!name.contains(':'));
        }
        if !passed.is_empty() {
            assert_eq!(pid.as_deref(), Some("4242"));
        }
    }
    let listed = workers_sockets_env(&String::from_utf8_lossy(data));
    assert!(listed.len() <= data.len());
});
