//! The crate's parsers of untrusted input, reached by the fuzz targets
//! under `fuzz/` (the `fuzzing` feature). Pure: no descriptor is taken and
//! no variable read. Not part of the stable API.

use std::os::fd::RawFd;

/// The health listener's answer to `request`, as its parser reads it:
/// `None` while the head is not complete (and shorter than the most read),
/// else the whole reply. `/ready` is answered as if the pool were `ready`.
pub fn health_reply(request: &[u8], ready: bool) -> Option<Vec<u8>> {
    use crate::host::health::{Readiness, MAX_REQUEST};
    let request = &request[..request.len().min(MAX_REQUEST)];
    let end = crate::host::health::head_end(request)?;
    let mut readiness = || if ready { Readiness::Ready } else { Readiness::of_pool(1, 2) };
    Some(crate::host::health::reply(&request[..end], &mut readiness))
}

/// What `MIO_CLUSTER_UPGRADE`'s value says, if it parses: the report's
/// descriptor, the target, the generation, the sockets (descriptor, key)
/// and the named descriptors (name, descriptor).
#[allow(clippy::type_complexity)]
pub fn upgrade_env(
    value: &str,
) -> Result<(RawFd, Option<usize>, u32, Vec<(RawFd, String)>, Vec<(String, RawFd)>), String> {
    let p = crate::master::handover::Plan::parse(value)?;
    Ok((p.ready, p.target, p.generation, p.sockets, p.fds))
}

/// The descriptors and names `LISTEN_PID`, `LISTEN_FDS` and
/// `LISTEN_FDNAMES` pass to process `me`.
pub fn listen_env(
    pid: Option<&str>,
    fds: Option<&str>,
    names: Option<&str>,
    me: u32,
) -> Result<Vec<(RawFd, String)>, String> {
    crate::listen::activation::parse_listen_env(pid, fds, names, me)
}

/// What a worker reads of `MIO_CLUSTER_SYSTEMD_SOCKETS` (the master's
/// names for the sockets systemd passed): (descriptor, name) pairs.
pub fn workers_sockets_env(value: &str) -> Vec<(RawFd, String)> {
    crate::listen::activation::decode_for_workers(value)
        .into_iter()
        .map(|s| (s.fd, s.name))
        .collect()
}
