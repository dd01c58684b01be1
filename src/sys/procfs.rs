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
///
/// The path is the rest of a line after its seventh field, as the kernel
/// prints it: it may hold spaces. A path with a newline cannot be told
/// apart from the next line, so it always counts as listened on.
pub(crate) fn unix_path_listening(path: &std::path::Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    const SO_ACCEPTCON: u32 = 1 << 16;
    let want = path.as_os_str().as_bytes();
    if want.contains(&b'\n') {
        return true;
    }
    let Ok(table) = std::fs::read("/proc/net/unix") else { return true };
    table.split(|&b| b == b'\n').skip(1).any(|line| {
        let Some((fields, bound)) = unix_line(line) else { return false };
        let listening = std::str::from_utf8(fields[3])
            .ok()
            .and_then(|f| u32::from_str_radix(f, 16).ok())
            .is_some_and(|flags| flags & SO_ACCEPTCON != 0);
        // A path bound relative to another directory shows as given: count
        // any relative path that ends `path` as a match, to stay on the
        // safe side.
        listening
            && (bound == want
                || (!bound.starts_with(b"/")
                    && want.len() > bound.len()
                    && want.ends_with(bound)
                    && want[want.len() - bound.len() - 1] == b'/'))
    })
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
    use super::unix_line;

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
