//! Unix socket files the master binds for workers (`unix:PATH`).
//!
//! The master may run with more rights than its workers (`Settings::uid`),
//! so every file-system step it takes for a worker runs with that worker's
//! credentials: a worker can make the master create or remove only a file
//! it could create or remove itself. The directory is pinned (an `O_PATH`
//! descriptor) when the listen starts; later steps work on the name in that
//! directory and never follow a symbolic link at its end. No mode is
//! changed after the fact: the bits `readable_all`/`writable_all` add are
//! given at creation. On the last close the file is removed only if it is
//! still the socket file bound then (same device and inode).

use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::credentials::Credentials;
use crate::ipc::ListenRequest;
use crate::listen::Address;
use crate::sys::fs::{self, FileId};
use crate::sys::procfs::UnixListeners;
use crate::sys::socket;
use crate::sys::{SysError, Syscall};

/// A socket file the master created for a key, removed with the key.
pub(super) struct SocketFile {
    /// The directory it was bound in, pinned.
    dir: OwnedFd,
    /// Its name in `dir`.
    name: Vec<u8>,
    /// What it was right after the bind.
    id: FileId,
    /// The credentials of the worker it was bound for (`None`: the
    /// master's own).
    creds: Option<Credentials>,
    /// The path as asked for, for logs.
    path: PathBuf,
}

impl SocketFile {
    /// The socket file as bound.
    pub(super) fn id(&self) -> FileId {
        self.id
    }

    /// Unlinks the file if it is still the socket bound for the key, with
    /// the credentials of the worker it was bound for; leaves anything else
    /// there alone (and says so).
    pub(super) fn remove(&self) {
        let res =
            as_worker(self.creds.as_ref(), || match fs::stat_at(self.dir.as_fd(), &self.name)? {
                Some(found) if found == self.id => {
                    fs::unlink_at(self.dir.as_fd(), &self.name).map(|()| true)
                }
                _ => Ok(false),
            });
        match res {
            Ok(true) => log::debug!("unlinked {}", self.path.display()),
            Ok(false) => log::warn!(
                "{} is no longer the socket file the master bound: left in place",
                self.path.display()
            ),
            Err(e) => log::warn!("unlinking {}: {e}", self.path.display()),
        }
    }
}

/// Runs path work with the credentials of the worker it is done for.
fn as_worker<T>(
    creds: Option<&Credentials>,
    f: impl FnOnce() -> Result<T, SysError>,
) -> Result<T, SysError> {
    match creds {
        None => f(),
        Some(c) => fs::as_ids(c.uid, c.gid, &c.groups, f)?,
    }
}

/// What a Unix listen may consult to tell a live socket file from a stale
/// one: the files the master bound itself, and the system's table.
pub(super) struct Liveness<'a> {
    /// The socket files the master holds: in use, whatever the path says.
    pub held: &'a [FileId],
    /// The listening paths of `/proc/net/unix`.
    pub table: &'a mut UnixListeners,
}

/// Binds a Unix socket for a worker with credentials `creds`. A socket file
/// left by a dead server is removed first, on purpose and logged; a live
/// one, or a file that is not a socket, is `EADDRINUSE`. Returns the
/// socket, its address, and the socket file to remove with the key.
pub(super) fn open_unix(
    req: &ListenRequest,
    creds: Option<&Credentials>,
    live: Liveness<'_>,
) -> Result<(OwnedFd, Address, Option<SocketFile>), SysError> {
    let address = Address::Unix(req.address.clone());
    if req.address.first() == Some(&0) {
        // Abstract: no file, nothing to check.
        return Ok((socket::bind_unix(&req.address, req.backlog)?, address, None));
    }
    socket::check_unix_path(&req.address)?;
    let (parent, name) = split(&req.address)?;
    let path = PathBuf::from(OsStr::from_bytes(&req.address));
    let mut add = 0;
    if req.readable_all {
        add |= 0o444;
    }
    if req.writable_all {
        add |= 0o222;
    }
    as_worker(creds, || {
        let dir = fs::open_dir(parent)?;
        remove_stale(dir.as_fd(), name, &path, live)?;
        // The full path, so that peers and /proc/net/unix see it as asked
        // for; with the worker's credentials it can create nothing the
        // worker could not.
        let s = fs::with_bits_allowed(add, || socket::bind_unix(&req.address, req.backlog))?;
        let file = match fs::stat_at(dir.as_fd(), name) {
            Ok(Some(id)) if id.socket => {
                Some(SocketFile { dir, name: name.to_vec(), id, creds: creds.cloned(), path })
            }
            other => {
                log::warn!(
                    "{} is not the socket just bound ({other:?}): it will not be unlinked",
                    path.display()
                );
                None
            }
        };
        Ok((s, address, file))
    })
}

/// The directory and the name of a socket path.
fn split(path: &[u8]) -> Result<(&[u8], &[u8]), SysError> {
    let (parent, name): (&[u8], &[u8]) = match path.iter().rposition(|&b| b == b'/') {
        Some(0) => (b"/", &path[1..]),
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (b".", path),
    };
    if name.is_empty() || name == b"." || name == b".." {
        return Err(SysError::new(Syscall::Address, libc::EINVAL));
    }
    Ok((parent, name))
}

/// Makes way for a bind of `name` in `dir`: nothing there is fine; a
/// socket file no one listens on is removed; anything else, a socket file
/// the master holds first of all (by identity, so under any spelling of its
/// path, and without reading the system's table), is `EADDRINUSE`. The caller runs it with the worker's credentials, so a
/// file the worker could not remove stays, and the listen fails with the
/// error the removal got.
fn remove_stale(
    dir: BorrowedFd<'_>,
    name: &[u8],
    path: &Path,
    live: Liveness<'_>,
) -> Result<(), SysError> {
    let in_use = SysError::new(Syscall::Bind, libc::EADDRINUSE);
    let Some(found) = fs::stat_at(dir, name)? else { return Ok(()) };
    if live.held.contains(&found) {
        return Err(in_use);
    }
    // Stale only if /proc/net/unix shows no listener on the path and a
    // connect is refused: a server bound under another spelling of the
    // path is missed by the first, never by the second.
    if !found.socket
        || live.table.listening(path)
        || !socket::unix_refuses(path.as_os_str().as_bytes())
    {
        return Err(in_use);
    }
    // Still the same file: it was not replaced while we looked.
    if fs::stat_at(dir, name)? != Some(found) {
        return Err(in_use);
    }
    log::info!("removing stale socket {} (nothing listens on it)", path.display());
    fs::unlink_at(dir, name)
        .inspect_err(|e| log::warn!("cannot remove stale socket {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_socket_path_splits_into_its_directory_and_a_plain_name() {
        assert_eq!(split(b"/tmp/x/a.sock").unwrap(), (&b"/tmp/x"[..], &b"a.sock"[..]));
        assert_eq!(split(b"/a.sock").unwrap(), (&b"/"[..], &b"a.sock"[..]));
        assert_eq!(split(b"a.sock").unwrap(), (&b"."[..], &b"a.sock"[..]));
        for bad in [&b"/tmp/"[..], b"/tmp/..", b"/tmp/.", b"/"] {
            assert_eq!(split(bad).unwrap_err().errno, libc::EINVAL, "{bad:?}");
        }
    }
}
