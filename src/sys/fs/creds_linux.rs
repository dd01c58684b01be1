//! Linux: the file-system user and group of the calling thread
//! (`setfsuid`, `setfsgid`, and the raw `setgroups` syscall).

use nix::errno::Errno;
use nix::unistd::{Gid, Uid};

use crate::sys::{SysError, Syscall};

/// Runs `f` with the file-system user `uid`, group `gid` and supplementary
/// `groups` of this thread (`setfsuid`, `setfsgid`, `setgroups`), then
/// restores the caller's own. Every permission check `f` causes is made
/// for those credentials, and when the file-system user goes from 0 to
/// another, the kernel drops the capabilities that bypass file permissions
/// (`CAP_DAC_OVERRIDE`, `CAP_FOWNER`, ...) until it comes back.
///
/// All three calls change the calling thread only (glibc's `setgroups`
/// would change every thread: the raw syscall is used), which is right for
/// the single-threaded master. If the switch cannot be made, `f` does not
/// run and the error is `EPERM`. A caller without `CAP_SETGID` cannot
/// change its groups, nor could it have started a worker with other groups:
/// then its own are kept. If the caller's credentials cannot be restored,
/// the process aborts rather than go on with a worker's.
pub(crate) fn as_ids<T>(
    uid: u32,
    gid: u32,
    groups: &[u32],
    f: impl FnOnce() -> T,
) -> Result<T, SysError> {
    let fail = |what: &str| {
        log::warn!("cannot take the file-system credentials uid={uid} gid={gid}: {what}");
        SysError::new(Syscall::Bind, libc::EPERM)
    };
    let own = Ids::current().map_err(|e| fail(&format!("getgroups: {e}")))?;
    let mut want: Vec<u32> = groups.to_vec();
    want.sort_unstable();
    want.dedup();
    let mut guard = Restore { own, groups_changed: false };
    if want != guard.own.groups {
        match set_groups(&want) {
            Ok(()) => guard.groups_changed = true,
            Err(Errno::EPERM) => log::debug!("no CAP_SETGID: path work keeps the master's groups"),
            Err(e) => return Err(fail(&format!("setgroups: {e}"))),
        }
    }
    nix::unistd::setfsgid(Gid::from_raw(gid));
    if fs_gid() != gid {
        return Err(fail("setfsgid refused"));
    }
    nix::unistd::setfsuid(Uid::from_raw(uid));
    if fs_uid() != uid {
        return Err(fail("setfsuid refused"));
    }
    let out = f();
    drop(guard);
    Ok(out)
}

/// A thread's file-system user and group, and its supplementary groups
/// (sorted).
struct Ids {
    fsuid: u32,
    fsgid: u32,
    groups: Vec<u32>,
}

impl Ids {
    fn current() -> nix::Result<Ids> {
        let mut groups: Vec<u32> = nix::unistd::getgroups()?.into_iter().map(Gid::as_raw).collect();
        groups.sort_unstable();
        groups.dedup();
        Ok(Ids { fsuid: fs_uid(), fsgid: fs_gid(), groups })
    }
}

/// Puts the caller's own credentials back, also if the work panicked.
struct Restore {
    own: Ids,
    groups_changed: bool,
}

impl Drop for Restore {
    fn drop(&mut self) {
        // The user first: it gives back the capabilities the switch dropped.
        nix::unistd::setfsuid(Uid::from_raw(self.own.fsuid));
        nix::unistd::setfsgid(Gid::from_raw(self.own.fsgid));
        let groups = if self.groups_changed { set_groups(&self.own.groups) } else { Ok(()) };
        let back = Ids::current();
        let ok = groups.is_ok()
            && back.is_ok_and(|b| {
                b.fsuid == self.own.fsuid
                    && b.fsgid == self.own.fsgid
                    && (!self.groups_changed || b.groups == self.own.groups)
            });
        if !ok {
            log::error!("cannot restore the master's own file-system credentials; aborting");
            std::process::abort();
        }
    }
}

/// The thread's file-system user id: `setfsuid(-1)` changes nothing and
/// returns it.
fn fs_uid() -> u32 {
    nix::unistd::setfsuid(Uid::from_raw(u32::MAX)).as_raw()
}

/// The thread's file-system group id, likewise.
fn fs_gid() -> u32 {
    nix::unistd::setfsgid(Gid::from_raw(u32::MAX)).as_raw()
}

/// `setgroups(2)` for the calling thread only.
fn set_groups(groups: &[u32]) -> Result<(), Errno> {
    // SAFETY: setgroups reads `groups.len()` gid_t values (u32 on Linux)
    // from a pointer to a live slice and keeps no reference to it.
    let r = unsafe {
        libc::syscall(libc::SYS_setgroups, groups.len() as libc::size_t, groups.as_ptr())
    };
    if r < 0 {
        return Err(Errno::last());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::fs::as_ids;

    #[test]
    fn work_as_another_user_has_only_its_rights_and_the_callers_come_back() {
        if !nix::unistd::Uid::effective().is_root() {
            eprintln!("not root: cannot take another user's credentials; skipped");
            return;
        }
        let dir = std::env::temp_dir().join(format!("mio-cluster-fs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        let before = Ids::current().unwrap();
        // Root's 0755 directory: no place for uid 65534 to write, even
        // though this thread's real and effective user stay root.
        let write = || std::fs::write(dir.join("f"), b"x").map_err(|e| e.raw_os_error());
        assert_eq!(as_ids(65534, 65534, &[65534], write).unwrap(), Err(Some(libc::EACCES)));
        let inside = as_ids(65534, 65534, &[65534, 100], || Ids::current().unwrap()).unwrap();
        assert_eq!((inside.fsuid, inside.fsgid, inside.groups), (65534, 65534, vec![100, 65534]));
        // The caller's own credentials, and rights, are back.
        let after = Ids::current().unwrap();
        assert_eq!(
            (after.fsuid, after.fsgid, after.groups),
            (before.fsuid, before.fsgid, before.groups)
        );
        write().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
