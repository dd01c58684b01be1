//! Portable: the process's effective user and group (`seteuid`, `setegid`)
//! and its supplementary groups (`setgroups`), switched around the work and
//! back. The master has one thread, so the process's credentials are its
//! thread's. Going from effective user 0 to another drops the capabilities
//! that bypass file permissions, as `setfsuid` does on Linux; going back
//! to 0 (the saved user stays 0) gives them back.

use nix::errno::Errno;
use nix::unistd::{Gid, Uid};

use crate::sys::{SysError, Syscall};

/// Runs `f` with the effective user `uid`, group `gid` and supplementary
/// `groups` of the process, then restores the caller's own. Every
/// permission check `f` causes is made for those credentials. If the
/// switch cannot be made, `f` does not run and the error is `EPERM`; a
/// caller that cannot change its groups keeps its own. If the caller's
/// credentials cannot be restored, the process aborts rather than go on
/// with a worker's.
pub(crate) fn as_ids<T>(
    uid: u32,
    gid: u32,
    groups: &[u32],
    f: impl FnOnce() -> T,
) -> Result<T, SysError> {
    let fail = |what: &str| {
        log::warn!("cannot take the credentials uid={uid} gid={gid}: {what}");
        SysError::new(Syscall::Bind, libc::EPERM)
    };
    let own = Ids::current().map_err(|e| fail(&format!("getgroups: {e}")))?;
    let mut want: Vec<u32> = groups.to_vec();
    want.sort_unstable();
    want.dedup();
    let mut guard = Restore { own, groups_changed: false, switched: false };
    if want != guard.own.groups {
        match set_groups(&want) {
            Ok(()) => guard.groups_changed = true,
            Err(Errno::EPERM) => log::debug!("cannot set groups: path work keeps the master's"),
            Err(e) => return Err(fail(&format!("setgroups: {e}"))),
        }
    }
    guard.switched = true;
    nix::unistd::setegid(Gid::from_raw(gid)).map_err(|e| fail(&format!("setegid: {e}")))?;
    nix::unistd::seteuid(Uid::from_raw(uid)).map_err(|e| fail(&format!("seteuid: {e}")))?;
    let out = f();
    drop(guard);
    Ok(out)
}

/// The process's effective user and group, and its supplementary groups
/// (sorted).
struct Ids {
    uid: u32,
    gid: u32,
    groups: Vec<u32>,
}

impl Ids {
    fn current() -> nix::Result<Ids> {
        let groups = super::groups()
            .map_err(|e| nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))?;
        Ok(Ids { uid: Uid::effective().as_raw(), gid: Gid::effective().as_raw(), groups })
    }
}

/// Puts the caller's own credentials back, also if the work panicked or
/// the switch stopped half-way.
struct Restore {
    own: Ids,
    groups_changed: bool,
    switched: bool,
}

impl Drop for Restore {
    fn drop(&mut self) {
        // The user first: back to 0, it may set the rest.
        let user = !self.switched || nix::unistd::seteuid(Uid::from_raw(self.own.uid)).is_ok();
        let group = !self.switched || nix::unistd::setegid(Gid::from_raw(self.own.gid)).is_ok();
        let groups = !self.groups_changed || set_groups(&self.own.groups).is_ok();
        let back = Ids::current();
        let ok = user
            && group
            && groups
            && back.is_ok_and(|b| {
                b.uid == self.own.uid
                    && b.gid == self.own.gid
                    && (!self.groups_changed || b.groups == self.own.groups)
            });
        if !ok {
            log::error!("cannot restore the master's own credentials; aborting");
            std::process::abort();
        }
    }
}

/// `setgroups(2)`.
fn set_groups(groups: &[u32]) -> Result<(), Errno> {
    // SAFETY: setgroups reads `groups.len()` gid_t values (u32 on every
    // platform this crate builds for) from a pointer to a live slice and
    // keeps no reference to it.
    let r = unsafe { libc::setgroups(groups.len() as _, groups.as_ptr()) };
    if r < 0 {
        return Err(Errno::last());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs in a forked child: the effective ids are the whole process's,
    /// and the test harness runs other tests on other threads.
    #[test]
    fn work_as_another_user_has_only_its_rights_and_the_callers_come_back() {
        if !nix::unistd::Uid::effective().is_root() {
            eprintln!("not root: cannot take another user's credentials; skipped");
            return;
        }
        let dir = std::env::temp_dir().join(format!("mio-cluster-fs-p-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        // SAFETY: the child runs the check and leaves with _exit.
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                let before = Ids::current().unwrap();
                let write = || std::fs::write(dir.join("f"), b"x").map_err(|e| e.raw_os_error());
                let denied =
                    as_ids(65534, 65534, &[65534], write).unwrap() == Err(Some(libc::EACCES));
                let inside =
                    as_ids(65534, 65534, &[65534, 100], || Ids::current().unwrap()).unwrap();
                let switched =
                    (inside.uid, inside.gid, inside.groups) == (65534, 65534, vec![100, 65534]);
                let after = Ids::current().unwrap();
                let back =
                    (after.uid, after.gid, after.groups) == (before.uid, before.gid, before.groups);
                let rights = write().is_ok();
                let code = [denied, switched, back, rights]
                    .iter()
                    .enumerate()
                    .find(|(_, ok)| !**ok)
                    .map_or(0, |(i, _)| 10 + i as i32);
                // SAFETY: leaves the child without running the harness's exit.
                unsafe { libc::_exit(code) }
            }
            nix::unistd::ForkResult::Parent { child } => {
                let status = nix::sys::wait::waitpid(child, None).unwrap();
                std::fs::remove_dir_all(&dir).unwrap();
                // 10: not denied, 11: not switched, 12: not back, 13: no rights.
                assert_eq!(status, nix::sys::wait::WaitStatus::Exited(child, 0));
            }
        }
    }
}
