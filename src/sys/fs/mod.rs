//! File-system work the master does on a worker's behalf: run with the
//! worker's file-system credentials, relative to a pinned directory, and
//! never following a symbolic link at the end of a path.

use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{Mode, SFlag};
use nix::unistd::UnlinkatFlags;

use super::{SysError, Syscall};

// The credential switch: per thread with `setfsuid` on Linux, the effective
// ids elsewhere (and with the `portable-backend` feature).
#[cfg(all(target_os = "linux", not(feature = "portable-backend")))]
#[path = "creds_linux.rs"]
mod creds;
#[cfg(any(not(target_os = "linux"), feature = "portable-backend"))]
#[path = "creds_portable.rs"]
mod creds;

pub(crate) use creds::as_ids;

/// Opens directory `path` (following links, as a path lookup does): a pin
/// on that directory that later `*at` calls use, whatever is renamed or
/// swapped along the path afterwards. On Linux an `O_PATH` descriptor,
/// which needs no read permission on the directory; elsewhere (and with the
/// `portable-backend` feature) it is opened for reading, which does.
pub(crate) fn open_dir(path: &[u8]) -> Result<OwnedFd, SysError> {
    #[cfg(all(target_os = "linux", not(feature = "portable-backend")))]
    let how = OFlag::O_PATH;
    #[cfg(any(not(target_os = "linux"), feature = "portable-backend"))]
    let how = OFlag::O_RDONLY;
    nix::fcntl::open(
        OsStr::from_bytes(path),
        how | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| SysError::from_nix(Syscall::Bind, e))
}

/// What `name` in a directory is: its device, inode, and whether it is a
/// socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileId {
    /// Device of the file system holding it.
    pub dev: u64,
    /// Inode number.
    pub ino: u64,
    /// True for a socket file.
    pub socket: bool,
}

/// `fstatat(dir, name, AT_SYMLINK_NOFOLLOW)`: a symbolic link is reported
/// as itself (not a socket), never followed. `None` if nothing has that
/// name.
// dev_t is i32 on macOS, u64 elsewhere.
#[allow(clippy::unnecessary_cast)]
pub(crate) fn stat_at(dir: BorrowedFd<'_>, name: &[u8]) -> Result<Option<FileId>, SysError> {
    match nix::sys::stat::fstatat(dir, OsStr::from_bytes(name), AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(FileId {
            dev: st.st_dev as u64,
            ino: st.st_ino,
            socket: SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFSOCK,
        })),
        Err(Errno::ENOENT) => Ok(None),
        Err(e) => Err(SysError::from_nix(Syscall::Bind, e)),
    }
}

/// `unlinkat(dir, name, 0)`: removes the name itself; a symbolic link is
/// removed, never its target.
pub(crate) fn unlink_at(dir: BorrowedFd<'_>, name: &[u8]) -> Result<(), SysError> {
    nix::unistd::unlinkat(dir.as_fd(), OsStr::from_bytes(name), UnlinkatFlags::NoRemoveDir)
        .map_err(|e| SysError::from_nix(Syscall::Bind, e))
}

/// Runs `f` with the permission bits `add` taken out of the process's
/// umask, so that a file `f` creates gets them on top of the mode the umask
/// gives (no `chmod` after the fact, on a path that may have changed).
pub(crate) fn with_bits_allowed<T>(add: u32, f: impl FnOnce() -> T) -> T {
    if add == 0 {
        return f();
    }
    let old = nix::sys::stat::umask(Mode::empty());
    nix::sys::stat::umask(old & !Mode::from_bits_truncate(add as libc::mode_t));
    let out = f();
    nix::sys::stat::umask(old);
    out
}

/// This process's supplementary groups, sorted, each once.
pub(crate) fn groups() -> std::io::Result<Vec<u32>> {
    let mut groups = group_ids::current()?;
    groups.sort_unstable();
    groups.dedup();
    Ok(groups)
}

/// The groups of user `name` whose primary group is `gid` (the group
/// database's `getgrouplist`), sorted, each once.
pub(crate) fn user_groups(name: &std::ffi::CStr, gid: u32) -> std::io::Result<Vec<u32>> {
    let mut groups = group_ids::of_user(name, gid)?;
    groups.sort_unstable();
    groups.dedup();
    Ok(groups)
}

/// nix's `getgroups` and `getgrouplist` (which it leaves out on macOS).
#[cfg(not(target_vendor = "apple"))]
mod group_ids {
    use nix::unistd::Gid;

    pub(super) fn current() -> std::io::Result<Vec<u32>> {
        Ok(nix::unistd::getgroups()?.into_iter().map(Gid::as_raw).collect())
    }

    pub(super) fn of_user(name: &std::ffi::CStr, gid: u32) -> std::io::Result<Vec<u32>> {
        let groups = nix::unistd::getgrouplist(name, Gid::from_raw(gid))?;
        Ok(groups.into_iter().map(Gid::as_raw).collect())
    }
}

/// macOS: the calls themselves (its `getgrouplist` takes `int`s).
#[cfg(target_vendor = "apple")]
mod group_ids {
    use std::io;

    pub(super) fn current() -> io::Result<Vec<u32>> {
        // SAFETY: with a size of 0, getgroups only counts and writes nothing.
        let n = unsafe { libc::getgroups(0, std::ptr::null_mut()) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut groups = vec![0 as libc::gid_t; n as usize];
        // SAFETY: getgroups writes at most `n` gid_t values into a buffer
        // that holds `n`.
        let got = unsafe { libc::getgroups(n, groups.as_mut_ptr()) };
        if got < 0 {
            return Err(io::Error::last_os_error());
        }
        groups.truncate(got as usize);
        Ok(groups)
    }

    pub(super) fn of_user(name: &std::ffi::CStr, gid: u32) -> io::Result<Vec<u32>> {
        let mut cap: libc::c_int = 32;
        loop {
            let mut groups = vec![0 as libc::c_int; cap as usize];
            let mut n = cap;
            // SAFETY: getgrouplist reads a NUL-terminated name and writes at
            // most `n` ints into a buffer that holds `cap`, and the count it
            // found into `n`.
            let r = unsafe {
                libc::getgrouplist(name.as_ptr(), gid as libc::c_int, groups.as_mut_ptr(), &mut n)
            };
            if r != -1 {
                groups.truncate(n.max(0) as usize);
                return Ok(groups.into_iter().map(|g| g as u32).collect());
            }
            if cap >= 65536 {
                return Err(io::Error::other(format!("getgrouplist: more than {cap} groups")));
            }
            cap *= 2;
        }
    }
}
