//! Reading a process's resource use from `/proc`.

use std::time::Duration;

/// Resident set size in bytes and CPU time (user + system) of `pid`, or
/// `None` if the process is gone.
pub(crate) fn usage(pid: u32) -> Option<(u64, Duration)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold
    // spaces: state is field 3, utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let ticks =
        nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok().flatten().unwrap_or(100);
    let cpu = Duration::from_secs_f64((utime + stime) as f64 / ticks.max(1) as f64);
    Some((rss_kb * 1024, cpu))
}

/// True if some socket listens on the Unix socket file `path`, from
/// `/proc/net/unix` (flag `__SO_ACCEPTCON`); none of it blocks, and no
/// connection is made to find out. If the table cannot be read, true: the
/// caller must not remove a file it cannot prove stale.
pub(crate) fn unix_path_listening(path: &std::path::Path) -> bool {
    const SO_ACCEPTCON: u32 = 1 << 16;
    let Ok(table) = std::fs::read_to_string("/proc/net/unix") else { return true };
    let want = path.to_string_lossy();
    table.lines().skip(1).any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        // A path bound relative to another directory shows as given: count
        // any relative path that ends `path` as a match, to stay on the safe
        // side.
        f.len() >= 8
            && (f[7] == want || (!f[7].starts_with('/') && want.ends_with(&format!("/{}", f[7]))))
            && u32::from_str_radix(f[3], 16).is_ok_and(|flags| flags & SO_ACCEPTCON != 0)
    })
}
