//! What Linux's `/proc` tells: a process's resource use, the Unix sockets
//! that listen, the running binary. Elsewhere (macOS, FreeBSD without
//! procfs) the reads find nothing: resource use is unknown (no memory or
//! CPU in the metrics, no recycling on memory), a stale socket file is
//! told by a refused connect alone, and the running binary is the path
//! the system gives.

use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The running program's binary: on Linux `/proc/self/exe`, which names it
/// even after the file is replaced or removed; elsewhere
/// [`std::env::current_exe`] (or `argv[0]` if even that fails).
pub(crate) fn running_binary() -> PathBuf {
    if cfg!(target_os = "linux") {
        return PathBuf::from("/proc/self/exe");
    }
    std::env::current_exe()
        .unwrap_or_else(|_| PathBuf::from(std::env::args_os().next().unwrap_or_default()))
}

/// Resident set size in bytes and CPU time (user + system) of `pid`, or
/// `None` if the process is gone: one read of `/proc/PID/stat` (a few
/// hundred bytes; `/proc/PID/status` costs the kernel several times more
/// to format, which a scrape of many workers would pay for each).
pub(crate) fn usage(pid: u32) -> Option<(u64, Duration)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold
    // spaces: state is field 3, utime and stime are fields 14 and 15, rss
    // (in pages) field 24.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| fields.get(i)?.parse::<u64>().ok();
    let (utime, stime, rss) = (field(11)?, field(12)?, field(21)?);
    let ticks =
        nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok().flatten().unwrap_or(100);
    let page =
        nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE).ok().flatten().unwrap_or(4096);
    let cpu = Duration::from_secs_f64((utime + stime) as f64 / ticks.max(1) as f64);
    Some((rss * page.max(1) as u64, cpu))
}

/// CPU time (user + system) of `pid`, or `None` if it is gone. A zombie
/// (exited, not yet reaped) still has it.
pub(crate) fn cpu_time(pid: u32) -> Option<Duration> {
    usage(pid).map(|u| u.1)
}

/// A scan of `/proc/net/unix` that took `T` is reused for
/// `SCAN_REUSE * T`: however many listens ask, scanning takes at most
/// about a tenth of the master's time. A table of a few hundred lines
/// takes microseconds, so it is read afresh for nearly every listen; one of
/// 100k sockets takes tens of milliseconds, and is then reused for a few
/// hundred.
const SCAN_REUSE: u32 = 10;

/// The Unix socket paths listened on, from `/proc/net/unix` (flag
/// `__SO_ACCEPTCON`); none of it blocks, and no connection is made to find
/// out. The table is read again only once the last read is older than
/// [`SCAN_REUSE`] times what that read took.
///
/// A reused read can be out of date in one direction that matters: a
/// server that stopped since still counts as listening, and its socket file
/// is not removed as stale until the next read (the listen is `EADDRINUSE`
/// meanwhile). A server that started since is missed here and found by the
/// caller's `connect`, which is refused only if nothing listens.
#[derive(Debug, Default)]
pub(crate) struct UnixListeners {
    /// The listening paths as of `read_at`; `None` if the table could not
    /// be read (then every path counts as listened on).
    paths: Option<Vec<Vec<u8>>>,
    read_at: Option<Instant>,
    reuse_for: Duration,
    /// Reads reuse the table for at least this long (tests).
    floor: Duration,
    reads: u64,
}

impl UnixListeners {
    /// A table whose reads are reused for at least `floor`.
    #[cfg(test)]
    pub(crate) fn with_floor(floor: Duration) -> UnixListeners {
        UnixListeners { floor, ..UnixListeners::default() }
    }

    /// True if some socket listens on the Unix socket file `path`. If the
    /// table cannot be read, true: the caller must not remove a file it
    /// cannot prove stale. Where the system has no such table (not Linux),
    /// false: the caller's connect alone decides.
    ///
    /// The path is the rest of a line after its seventh field, as the kernel
    /// prints it: it may hold spaces. A path with a newline cannot be told
    /// apart from the next line, so it always counts as listened on.
    pub(crate) fn listening(&mut self, path: &std::path::Path) -> bool {
        use std::os::unix::ffi::OsStrExt;
        if !cfg!(target_os = "linux") {
            return false;
        }
        let want = path.as_os_str().as_bytes();
        if want.contains(&b'\n') {
            return true;
        }
        let now = Instant::now();
        if self.read_at.is_none_or(|at| now.duration_since(at) >= self.reuse_for) {
            self.paths = std::fs::read("/proc/net/unix").ok().map(|t| listening_paths(&t));
            let took = now.elapsed();
            self.read_at = Some(now);
            self.reuse_for = (took * SCAN_REUSE).max(self.floor);
            self.reads += 1;
        }
        let Some(paths) = &self.paths else { return true };
        // A path bound relative to another directory shows as given: count
        // any relative path that ends `path` as a match, to stay on the safe
        // side.
        paths.iter().any(|bound| {
            bound == want
                || (!bound.starts_with(b"/")
                    && want.len() > bound.len()
                    && want.ends_with(bound)
                    && want[want.len() - bound.len() - 1] == b'/')
        })
    }

    /// How many times the table was read.
    #[cfg(test)]
    pub(crate) fn reads(&self) -> u64 {
        self.reads
    }
}

/// The paths of the listening sockets in a `/proc/net/unix` table.
fn listening_paths(table: &[u8]) -> Vec<Vec<u8>> {
    const SO_ACCEPTCON: u32 = 1 << 16;
    table
        .split(|&b| b == b'\n')
        .skip(1)
        .filter_map(unix_line)
        .filter(|(fields, _)| {
            std::str::from_utf8(fields[3])
                .ok()
                .and_then(|f| u32::from_str_radix(f, 16).ok())
                .is_some_and(|flags| flags & SO_ACCEPTCON != 0)
        })
        .map(|(_, path)| path.to_vec())
        .collect()
}

/// The seven fields of a `/proc/net/unix` line (`Num RefCount Protocol
/// Flags Type St Inode`) and its path, the rest of the line after one
/// space; `None` for a line without a path.
fn unix_line(line: &[u8]) -> Option<([&[u8]; 7], &[u8])> {
    let mut fields: [&[u8]; 7] = [&[]; 7];
    let mut rest = line;
    for f in fields.iter_mut() {
        let start = rest.iter().position(|&b| b != b' ')?;
        rest = &rest[start..];
        let end = rest.iter().position(|&b| b == b' ')?;
        *f = &rest[..end];
        rest = &rest[end..];
    }
    Some((fields, rest.strip_prefix(b" ")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scan_is_reused_within_its_window_and_read_again_after_it() {
        let mut t = UnixListeners::with_floor(Duration::from_millis(200));
        let path = std::path::Path::new("/nonexistent/mio-cluster-scan-test.sock");
        assert!(!t.listening(path));
        assert!(!t.listening(path));
        assert_eq!(t.reads(), 1, "the second ask within 200 ms reuses the read");
        // Past the window (the floor, or ten times the read if the read
        // was slower than 20 ms), the table is read again.
        std::thread::sleep(t.reuse_for + Duration::from_millis(10));
        assert!(!t.listening(path));
        assert_eq!(t.reads(), 2);
    }

    #[test]
    fn usage_reads_this_process_memory_and_cpu_from_one_file() {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let vm_rss_kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap();
        let (rss, _) = usage(std::process::id()).unwrap();
        // The same pages counted two ways, a moment apart.
        let (a, b) = (rss as f64, (vm_rss_kb * 1024) as f64);
        assert!((a - b).abs() / b < 0.2, "stat {rss} status {}", vm_rss_kb * 1024);
        assert!(usage(u32::MAX).is_none());
    }

    #[test]
    fn only_listening_paths_are_kept_from_the_table() {
        let table = b"Num RefCount Protocol Flags Type St Inode Path\n\
0000000000000000: 00000002 00000000 00010000 0001 01  4521 /tmp/my app.sock\n\
0000000000000000: 00000002 00000000 00000000 0001 03  4522 /tmp/client.sock\n\
0000000000000000: 00000003 00000000 00000000 0001 03 20468\n";
        assert_eq!(listening_paths(table), vec![b"/tmp/my app.sock".to_vec()]);
    }

    #[test]
    fn a_proc_net_unix_path_is_the_rest_of_the_line_spaces_and_all() {
        let line = b"0000000000000000: 00000002 00000000 00010000 0001 01  4521 /tmp/my app.sock";
        let (fields, path) = unix_line(line).unwrap();
        assert_eq!(fields[3], b"00010000");
        assert_eq!(fields[6], b"4521");
        assert_eq!(path, b"/tmp/my app.sock");
        let unnamed = b"0000000000000000: 00000003 00000000 00000000 0001 03 20468";
        assert!(unix_line(unnamed).is_none());
    }
}
