//! Socket activation (`sd_listen_fds(3)`): the sockets systemd (or
//! `systemd-socket-activate`) passed the master, written against the
//! protocol. See [`host::systemd`](crate::host::systemd) for the whole
//! story; this part sits below the master, which takes the sockets in
//! [`Master::new`](crate::Master::new), and the worker, which names them.

use std::io;
use std::os::fd::RawFd;
use std::sync::OnceLock;

use nix::sys::socket::{AddressFamily, SockType};

use super::Kind;
use crate::sys::listen_fds;

/// What a worker can serve of a socket of this family and type: TCP
/// (stream, inet), UDP (datagram, inet) or a Unix stream socket.
fn servable((family, ty): (AddressFamily, SockType)) -> Option<Kind> {
    match (family, ty) {
        (AddressFamily::Inet | AddressFamily::Inet6, SockType::Stream) => Some(Kind::Tcp),
        (AddressFamily::Inet | AddressFamily::Inet6, SockType::Datagram) => Some(Kind::Udp),
        (AddressFamily::Unix, SockType::Stream) => Some(Kind::Unix),
        _ => None,
    }
}

/// The environment variable in which the master gives its workers the
/// sockets systemd passed it: `FD,KIND,NAME` entries separated by `:`
/// (systemd's names never contain `:`), `KIND` being `tcp`, `udp`, `unix`
/// or `-` (not a socket a worker can serve). The numbers are the
/// master's descriptors.
pub const ENV_SYSTEMD_SOCKETS: &str = "MIO_CLUSTER_SYSTEMD_SOCKETS";

/// The first descriptor systemd passes (`SD_LISTEN_FDS_START`).
pub const LISTEN_FDS_START: RawFd = 3;

/// One socket systemd passed to the master.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ActivatedSocket {
    /// The master's descriptor number (from 3).
    pub fd: RawFd,
    /// Its name (`LISTEN_FDNAMES`; `unknown` when systemd gave none, as
    /// `sd_listen_fds_with_names(3)` does).
    pub name: String,
    /// What it is, if a worker can serve it (a TCP or UDP socket, a Unix
    /// stream socket).
    pub kind: Option<Kind>,
}

static SOCKETS: OnceLock<Vec<ActivatedSocket>> = OnceLock::new();

/// The sockets systemd passed to this cluster, read once per process.
///
/// In the master (the first call is [`Master::new`](crate::Master::new)'s,
/// or the application's before it): the `LISTEN_*` variables, as the
/// [`host::systemd`](crate::host::systemd) docs say; they are removed from
/// the environment whatever they held. In a worker: what its master found
/// ([`ENV_SYSTEMD_SOCKETS`]). Empty when there are none.
pub fn activated_sockets() -> &'static [ActivatedSocket] {
    take(false)
}

/// [`activated_sockets`], read by the master as it starts: `handed_over`
/// in the new master of a hot upgrade, which takes the old master's, under
/// their names (their sockets come with the registry's), when systemd
/// passed it none itself.
pub(crate) fn take(handed_over: bool) -> &'static [ActivatedSocket] {
    SOCKETS.get_or_init(|| match crate::role() {
        crate::Role::Worker(_) => {
            std::env::var(ENV_SYSTEMD_SOCKETS).map(|v| decode_for_workers(&v)).unwrap_or_default()
        }
        crate::Role::Master => {
            let passed = take_listen_fds();
            let old = std::env::var(ENV_SYSTEMD_SOCKETS).ok();
            // One thread per process: nothing reads the environment meanwhile.
            std::env::remove_var(ENV_SYSTEMD_SOCKETS);
            match old {
                Some(v) if passed.is_empty() && handed_over => decode_for_workers(&v),
                _ => passed,
            }
        }
    })
}

/// Reads and removes `LISTEN_PID`, `LISTEN_FDS` and `LISTEN_FDNAMES`;
/// makes the descriptors close-on-exec if they are this process's.
fn take_listen_fds() -> Vec<ActivatedSocket> {
    let var = |k: &str| std::env::var_os(k).map(|v| v.to_string_lossy().into_owned());
    let (pid, fds, names) = (var("LISTEN_PID"), var("LISTEN_FDS"), var("LISTEN_FDNAMES"));
    for k in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        // The crate's processes have one thread: nothing reads the
        // environment concurrently.
        std::env::remove_var(k);
    }
    let passed = match parse_listen_env(
        pid.as_deref(),
        fds.as_deref(),
        names.as_deref(),
        std::process::id(),
    ) {
        Ok(passed) => passed,
        Err(why) => {
            log::warn!("socket activation: {why}; no socket taken");
            return Vec::new();
        }
    };
    let mut sockets = Vec::with_capacity(passed.len().min(1024));
    // Descriptors that are not open sockets: never closed (an open one is
    // made close-on-exec), and logged once, as ranges.
    let mut skipped: Vec<RawFd> = Vec::new();
    for (fd, name) in passed {
        let Some(ty) = listen_fds::socket_type(fd) else {
            // Open but not a socket (a FIFO, a file): not for a worker, and
            // not for the workers to inherit either; left open.
            let _ = listen_fds::set_cloexec(fd);
            skipped.push(fd);
            continue;
        };
        if let Err(e) = listen_fds::set_cloexec(fd) {
            log::warn!("socket activation: descriptor {fd} ({name}): {e}; skipped");
            continue;
        }
        let kind = servable(ty);
        log::info!("socket activation: descriptor {fd} named {name:?}: {}", kind_text(kind));
        sockets.push(ActivatedSocket { fd, name, kind });
    }
    if !skipped.is_empty() {
        log::warn!(
            "socket activation: {} of the descriptors LISTEN_FDS names are not open sockets \
             ({}); not served, and not closed",
            skipped.len(),
            ranges(&skipped)
        );
    }
    sockets
}

/// `3-7, 9, 12-20`: sorted numbers as ranges, at most ten of them.
fn ranges(fds: &[RawFd]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < fds.len() {
        let mut j = i;
        while j + 1 < fds.len() && fds[j + 1] == fds[j] + 1 {
            j += 1;
        }
        out.push(if i == j { fds[i].to_string() } else { format!("{}-{}", fds[i], fds[j]) });
        i = j + 1;
    }
    if out.len() > 10 {
        let more = out.len() - 10;
        out.truncate(10);
        out.push(format!("and {more} more ranges"));
    }
    out.join(", ")
}

/// The descriptors and names the variables pass to process `me`: none if
/// `LISTEN_FDS` is unset or `LISTEN_PID` is another process's (an error
/// only for values that do not parse). Names default to `unknown`.
pub(crate) fn parse_listen_env(
    pid: Option<&str>,
    fds: Option<&str>,
    names: Option<&str>,
    me: u32,
) -> Result<Vec<(RawFd, String)>, String> {
    let Some(fds) = fds else { return Ok(Vec::new()) };
    let Some(pid) = pid else {
        return Err("LISTEN_FDS is set but LISTEN_PID is not".into());
    };
    // Digits only: `+42`, ` 42` or `042` name no pid, whatever a lenient
    // parser would make of them.
    let digits = |v: &str| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit());
    let pid: u32 = Some(pid)
        .filter(|p| digits(p) && !p.starts_with('0'))
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| format!("LISTEN_PID={pid:?} is not a pid"))?;
    if pid != me {
        log::info!("socket activation: LISTEN_PID={pid} is not this process ({me}); ignored");
        return Ok(Vec::new());
    }
    let n: RawFd = Some(fds)
        .filter(|f| digits(f))
        .and_then(|f| f.parse().ok())
        .filter(|n| (0..=65536).contains(n))
        .ok_or_else(|| format!("LISTEN_FDS={fds:?} is not a descriptor count"))?;
    let mut names: Vec<String> = match names {
        Some(names) => names.split(':').map(str::to_string).collect(),
        None => Vec::new(),
    };
    if names.len() != n as usize {
        if !names.is_empty() {
            log::warn!(
                "socket activation: LISTEN_FDNAMES has {} names for {n} descriptors; names ignored",
                names.len()
            );
        }
        names = vec!["unknown".to_string(); n as usize];
    }
    Ok(names
        .into_iter()
        .enumerate()
        .map(|(i, name)| (LISTEN_FDS_START + i as RawFd, name))
        .collect())
}

fn kind_text(kind: Option<Kind>) -> &'static str {
    match kind {
        Some(Kind::Tcp) => "tcp",
        Some(Kind::Udp) => "udp",
        Some(Kind::Unix) => "unix",
        None => "-",
    }
}

/// [`ENV_SYSTEMD_SOCKETS`]'s value for the master's workers, if systemd
/// passed sockets.
pub(crate) fn encode_for_workers() -> Option<String> {
    let sockets = activated_sockets();
    if sockets.is_empty() || crate::role() != crate::Role::Master {
        return None;
    }
    let entries: Vec<String> =
        sockets.iter().map(|s| format!("{},{},{}", s.fd, kind_text(s.kind), s.name)).collect();
    Some(entries.join(":"))
}

pub(crate) fn decode_for_workers(value: &str) -> Vec<ActivatedSocket> {
    value
        .split(':')
        .filter_map(|entry| {
            let mut it = entry.splitn(3, ',');
            let fd = it.next()?.parse().ok()?;
            let kind = match it.next()? {
                "tcp" => Some(Kind::Tcp),
                "udp" => Some(Kind::Udp),
                "unix" => Some(Kind::Unix),
                _ => None,
            };
            Some(ActivatedSocket { fd, kind, name: it.next()?.to_string() })
        })
        .collect()
}

/// The socket systemd passed under `name`; if none has that name, an
/// `InvalidInput` error naming the ones that do exist.
pub fn find_socket(name: &str) -> io::Result<&'static ActivatedSocket> {
    let sockets = activated_sockets();
    if let Some(s) = sockets.iter().find(|s| s.name == name) {
        return Ok(s);
    }
    let why = if sockets.is_empty() {
        "systemd passed no socket to this master (LISTEN_FDS unset, or LISTEN_PID not the master's pid)"
            .to_string()
    } else {
        let names: Vec<String> = sockets
            .iter()
            .map(|s| format!("{} (fd {}, {})", s.name, s.fd, kind_text(s.kind)))
            .collect();
        format!("the sockets systemd passed are: {}", names.join(", "))
    };
    Err(io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("no socket passed by systemd is named {name:?}: {why}"),
    ))
}

/// The kind of the socket named `name`, if there is one and it can be
/// served.
pub(crate) fn kind_of(name: &str) -> Option<Kind> {
    activated_sockets().iter().find(|s| s.name == name).and_then(|s| s.kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_variables_for_another_pid_pass_nothing() {
        assert_eq!(parse_listen_env(Some("1"), Some("2"), Some("a:b"), 42), Ok(Vec::new()));
    }

    #[test]
    fn listen_variables_for_this_pid_pass_descriptors_from_3_with_their_names() {
        let got = parse_listen_env(Some("42"), Some("2"), Some("web:dns"), 42).unwrap();
        assert_eq!(got, vec![(3, "web".to_string()), (4, "dns".to_string())]);
    }

    #[test]
    fn names_that_do_not_match_the_count_become_unknown() {
        let got = parse_listen_env(Some("42"), Some("2"), Some("web"), 42).unwrap();
        assert_eq!(got, vec![(3, "unknown".to_string()), (4, "unknown".to_string())]);
        let got = parse_listen_env(Some("42"), Some("1"), None, 42).unwrap();
        assert_eq!(got, vec![(3, "unknown".to_string())]);
    }

    #[test]
    fn only_plain_digits_name_a_pid_or_a_count() {
        // Found by the activation_env fuzz target: `+42` parsed as 42.
        for (pid, fds) in [("+42", "1"), (" 42", "1"), ("042", "1"), ("42", "+1"), ("42", "1 ")] {
            assert!(parse_listen_env(Some(pid), Some(fds), None, 42).is_err(), "{pid:?} {fds:?}");
        }
        assert_eq!(parse_listen_env(Some("42"), Some("0"), None, 42), Ok(Vec::new()));
    }

    #[test]
    fn no_listen_fds_is_no_socket_and_bad_values_are_errors() {
        assert_eq!(parse_listen_env(None, None, None, 42), Ok(Vec::new()));
        assert!(parse_listen_env(Some("x"), Some("1"), None, 42).is_err());
        assert!(parse_listen_env(Some("42"), Some("-1"), None, 42).is_err());
        assert!(parse_listen_env(None, Some("1"), None, 42).is_err());
    }

    #[test]
    fn the_workers_variable_round_trips_names_with_commas() {
        let v = "3,tcp,web:4,udp,dns:5,unix,a,b:6,-,fifo";
        let got = decode_for_workers(v);
        assert_eq!(got.len(), 4);
        assert_eq!(got[2], ActivatedSocket { fd: 5, kind: Some(Kind::Unix), name: "a,b".into() });
        assert_eq!(got[3].kind, None);
    }
}
