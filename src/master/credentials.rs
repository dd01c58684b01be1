//! Who the workers run as: the user, group and supplementary groups that
//! [`Settings::uid`](super::Settings::uid) and
//! [`Settings::gid`](super::Settings::gid) name, resolved once per spawn.
//!
//! The same credentials serve two ends: a worker is started with them, and
//! the master does the file-system work a worker asks for (binding a Unix
//! socket path, removing a stale one) with them, so a worker can never make
//! the master touch a file the worker could not touch itself.

use std::ffi::CString;
use std::io;

use nix::unistd::{Gid, Group, Uid, User};

/// A worker's user, primary group and supplementary groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Credentials {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (`initgroups` of the user, or just `gid`).
    pub groups: Vec<u32>,
}

impl Credentials {
    /// The credentials for `uid` and `gid` as the settings give them, or
    /// `None` when neither is set (workers run as the master does).
    ///
    /// - `uid` alone: the user's primary group from the password database
    ///   and the user's supplementary groups (`initgroups`), never the
    ///   master's group. A uid with no password entry needs a `gid`.
    /// - `gid` alone: the master's user, that group, and no other.
    /// - both: that user, that group, and the user's supplementary groups
    ///   when it has a password entry (only `gid` otherwise).
    pub(crate) fn resolve(uid: Option<u32>, gid: Option<u32>) -> io::Result<Option<Credentials>> {
        if uid.is_none() && gid.is_none() {
            return Ok(None);
        }
        let Some(uid) = uid else {
            let gid = gid.expect("checked above");
            return Ok(Some(Credentials { uid: Uid::current().as_raw(), gid, groups: vec![gid] }));
        };
        let user = User::from_uid(Uid::from_raw(uid)).map_err(io::Error::from)?;
        let gid = match (gid, &user) {
            (Some(g), _) => g,
            (None, Some(u)) => u.gid.as_raw(),
            (None, None) => {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("uid {uid} has no entry in the password database: set a gid too"),
                ))
            }
        };
        let groups = match &user {
            Some(u) => {
                let name = CString::new(u.name.as_bytes()).map_err(io::Error::other)?;
                crate::sys::fs::user_groups(&name, gid)?
            }
            None => vec![gid],
        };
        Ok(Some(Credentials { uid, gid, groups }))
    }

    /// A short description for logs: `uid=65534 gid=65534 groups=65534`.
    pub(crate) fn describe(&self) -> String {
        let groups: Vec<String> = self.groups.iter().map(|g| g.to_string()).collect();
        let name = Group::from_gid(Gid::from_raw(self.gid)).ok().flatten().map(|g| g.name);
        format!(
            "uid={} gid={}{} groups={}",
            self.uid,
            self.gid,
            name.map(|n| format!("({n})")).unwrap_or_default(),
            groups.join(",")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_uid_alone_gets_the_users_own_groups_never_group_0() {
        let Some(nobody) = User::from_name("nobody").ok().flatten() else { return };
        let c = Credentials::resolve(Some(nobody.uid.as_raw()), None).unwrap().unwrap();
        assert_eq!(c.gid, nobody.gid.as_raw());
        assert!(c.groups.contains(&nobody.gid.as_raw()));
        assert!(!c.groups.contains(&0) || nobody.gid.as_raw() == 0, "{c:?}");
    }

    #[test]
    fn nothing_set_means_the_masters_credentials() {
        assert_eq!(Credentials::resolve(None, None).unwrap(), None);
    }

    #[test]
    fn a_gid_alone_keeps_the_user_and_drops_other_groups() {
        let c = Credentials::resolve(None, Some(4242)).unwrap().unwrap();
        assert_eq!((c.uid, c.gid, c.groups.clone()), (Uid::current().as_raw(), 4242, vec![4242]));
    }

    #[test]
    fn an_unknown_uid_without_a_gid_is_refused() {
        let e = Credentials::resolve(Some(3_999_999), None).unwrap_err();
        assert!(e.to_string().contains("set a gid"), "{e}");
    }
}
