//! Unix socket paths a worker names: a root master acts on them only with
//! the worker's rights (a worker running as `nobody` cannot make it remove,
//! chmod or take over root's files, even by swapping a directory for a
//! symlink), and paths behave (any length past `sun_path` is
//! `ENAMETOOLONG` in the worker, mode bits are added, a live socket whose
//! path has spaces is never removed).

mod util;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::time::Duration;
use util::*;

/// A fresh directory of root's, mode 0755, under the temp directory.
fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("mio-cluster-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
    d
}

/// A directory owned by `user`, mode 0755.
fn dir_of(path: &Path, user: &nix::unistd::User) {
    std::fs::create_dir(path).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::chown(path, Some(user.uid.as_raw()), Some(user.gid.as_raw())).unwrap();
}

/// Everything that tells whether a file was touched: inode, mode, owner,
/// change time, and its bytes (for a regular file).
#[derive(Debug, PartialEq)]
struct Facts {
    ino: u64,
    mode: u32,
    uid: u32,
    ctime: (i64, i64),
    bytes: Option<Vec<u8>>,
}

fn facts(path: &Path) -> Option<Facts> {
    let m = std::fs::symlink_metadata(path).ok()?;
    Some(Facts {
        ino: m.ino(),
        mode: m.mode(),
        uid: m.uid(),
        ctime: (m.ctime(), m.ctime_nsec()),
        bytes: m.is_file().then(|| std::fs::read(path).unwrap()),
    })
}

/// A fixture master whose workers run as `nobody`, listening on `spec`.
fn master_as_nobody(args: &[&str], env: &[(&str, &str)]) -> Proc {
    let mut all = vec![("FIXTURE_USER", "nobody"), ("FIXTURE_CWD", "/")];
    all.extend_from_slice(env);
    Proc::fixture_env(args, &all)
}

#[test]
fn a_worker_cannot_make_the_master_unlink_a_file_by_swapping_a_directory_for_a_symlink() {
    let Some(nobody) = nobody() else { return };
    let base = tmpdir("sec-unlink");
    let x = base.join("x");
    dir_of(&x, &nobody);
    let d = x.join("d");
    dir_of(&d, &nobody);
    let root_dir = base.join("root");
    std::fs::create_dir(&root_dir).unwrap();
    let victim = root_dir.join("sock");
    std::fs::write(&victim, b"root's file").unwrap();
    let before = facts(&victim).unwrap();

    let spec = format!("unix:{}", d.join("sock").display());
    let mut m = master_as_nobody(&["--listen", &spec], &[]);
    m.send("fork");
    m.expect("listening id=1");
    // The worker, with nobody's rights, moves its directory away and puts
    // a symlink to root's directory in its place.
    m.send(&format!("send 1 swap {} {}", d.display(), root_dir.display()));
    assert_eq!(m.expect("message id=1 swapped"), "message id=1 swapped Ok(())");
    m.send("send 1 close-all");
    m.expect("message id=1 closed");
    m.send("sockets");
    assert_eq!(m.expect("sockets"), "sockets 0");

    assert_eq!(facts(&victim), Some(before), "root's file was touched");
    // The master removed the socket file it created, where it now is.
    let moved = x.join("d.old").join("sock");
    assert!(eventually(WAIT, || !moved.exists()), "{} left behind", moved.display());
    let _ = std::fs::remove_dir_all(&base);
}

/// Swaps with Linux's `renameat2(RENAME_EXCHANGE)`.
#[cfg(target_os = "linux")]
#[test]
fn a_worker_cannot_make_the_master_chmod_or_unlink_a_file_by_swapping_directories_during_listens() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Instant;
    let Some(nobody) = nobody() else { return };
    let base = tmpdir("sec-chmod");
    let x = base.join("x");
    dir_of(&x, &nobody);
    let (d, e) = (x.join("d"), x.join("e"));
    dir_of(&d, &nobody);
    let root_dir = base.join("root");
    std::fs::create_dir(&root_dir).unwrap();
    let victim = root_dir.join("sock");
    std::fs::write(&victim, b"root's secret").unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::symlink(&root_dir, &e).unwrap();
    let before = facts(&victim).unwrap();

    // `d` flips between the worker's directory and a symlink to root's, as
    // fast as it goes, while the worker listens and closes again and again
    // with readable_all and writable_all (the test does the flipping, as
    // root; nobody could do the same in its own directory).
    let stop = Arc::new(AtomicBool::new(false));
    let flipper = {
        let (stop, d, e) = (stop.clone(), d.clone(), e.clone());
        std::thread::spawn(move || {
            let mut flips = 0u64;
            while !stop.load(Ordering::Relaxed) {
                nix::fcntl::renameat2(
                    nix::fcntl::AT_FDCWD,
                    &d,
                    nix::fcntl::AT_FDCWD,
                    &e,
                    nix::fcntl::RenameFlags::RENAME_EXCHANGE,
                )
                .unwrap();
                flips += 1;
            }
            flips
        })
    };
    let spec = format!("unix:{}", d.join("sock").display());
    let mut m = master_as_nobody(&[], &[("FIXTURE_UNIX_ALL", "1")]);
    m.send("fork");
    m.expect("message id=1 hello");
    let (mut listens, mut bound) = (0, 0);
    let deadline = Instant::now() + Duration::from_secs(8);
    while listens < 300 && Instant::now() < deadline && facts(&victim).as_ref() == Some(&before) {
        m.send(&format!("send 1 listen {spec}"));
        let reply = m.expect_by("a listen reply", WAIT, |l| {
            l.starts_with("message id=1 listen-ok") || l.starts_with("message id=1 listen-err")
        });
        listens += 1;
        if reply.starts_with("message id=1 listen-ok") {
            bound += 1;
            m.send("send 1 close-all");
            m.expect("message id=1 closed");
        }
    }
    stop.store(true, Ordering::Relaxed);
    let flips = flipper.join().unwrap();
    eprintln!("{listens} listens ({bound} bound) during {flips} flips");
    // Some listens bound (and closed) while the directory flipped.
    assert!(bound > 0 && flips > 0, "{listens} listens, {bound} bound, {flips} flips");
    assert_eq!(facts(&victim), Some(before), "root's file was touched");
    let _ = std::fs::remove_dir_all(&base);
}

#[test]
fn a_worker_cannot_make_the_master_remove_a_stale_socket_it_could_not_remove_itself() {
    if nobody().is_none() {
        return;
    }
    let root_dir = tmpdir("sec-stale");
    let other = root_dir.join("other.sock");
    // Another service's socket file, nobody listening on it now.
    drop(UnixListener::bind(&other).unwrap());
    let before = facts(&other).unwrap();
    let spec = format!("unix:{}", other.display());
    let mut m = master_as_nobody(&["--listen", &spec], &[]);
    m.send("fork");
    let err = m.expect("message id=1 listen-err");
    let errno: i32 = field(&err, "errno").parse().unwrap();
    assert!([libc::EADDRINUSE, libc::EACCES].contains(&errno), "{err}");
    assert_eq!(facts(&other), Some(before), "the other service's socket file was touched");
    let _ = std::fs::remove_dir_all(&root_dir);
}

#[test]
fn a_worker_cannot_make_the_master_create_a_socket_where_it_cannot_write() {
    if nobody().is_none() {
        return;
    }
    let root_dir = tmpdir("sec-create");
    let path = root_dir.join("new.sock");
    let spec = format!("unix:{}", path.display());
    let mut m = master_as_nobody(&["--listen", &spec], &[]);
    m.send("fork");
    let err = m.expect("message id=1 listen-err");
    assert_eq!(field(&err, "errno"), libc::EACCES.to_string(), "{err}");
    assert!(!path.exists(), "the master created {}", path.display());
    let _ = std::fs::remove_dir_all(&root_dir);
}

#[test]
fn a_socket_bound_for_a_worker_belongs_to_its_user_and_is_removed_with_the_key() {
    let Some(nobody) = nobody() else { return };
    let base = tmpdir("sec-own");
    let x = base.join("x");
    dir_of(&x, &nobody);
    let path = x.join("own.sock");
    let spec = format!("unix:{}", path.display());
    let mut m = master_as_nobody(&["--listen", &spec], &[]);
    m.send("fork");
    m.send("fork");
    m.expect("listening id=1");
    m.expect("listening id=2");
    assert_eq!(std::fs::symlink_metadata(&path).unwrap().uid(), nobody.uid.as_raw());
    for _ in 0..4 {
        unix_echo(&path).unwrap();
    }
    m.send("disconnect-all");
    m.expect("alldisconnected");
    assert!(eventually(WAIT, || !path.exists()), "{} left behind", path.display());
    let _ = std::fs::remove_dir_all(&base);
}

#[test]
fn a_unix_path_of_any_length_past_sun_path_fails_with_enametoolong_and_the_worker_runs_on() {
    let dir = tmpdir("unix-len");
    let mut m = Proc::fixture(&[]);
    m.send("fork");
    m.expect("message id=1 hello");
    let prefix = format!("{}/", dir.display());
    let path_of = |len: usize| format!("{prefix}{}", "a".repeat(len - prefix.len()));
    // 107 bytes and the NUL fill sun_path exactly.
    m.send(&format!("send 1 listen unix:{}", path_of(107)));
    assert!(m.expect("message id=1 listen-").starts_with("message id=1 listen-ok"));
    for len in [108, 4096, 4097, 65_535, 65_536, 70_000] {
        m.send(&format!("send 1 listen unix:{}", path_of(len)));
        let err = m.expect("message id=1 listen-");
        assert!(err.starts_with("message id=1 listen-err"), "{len} bytes: {}", &err[..80]);
        assert_eq!(field(&err, "errno"), libc::ENAMETOOLONG.to_string(), "{len} bytes");
        assert!(err.contains("File name too long"), "{len} bytes");
    }
    m.send("send 1 report");
    m.expect("message id=1 report");
    let late = m.drain(Duration::from_millis(200));
    assert!(!late.iter().any(|l| l.starts_with("exit") || l.starts_with("fork id=2")), "{late:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The mode of the socket file a master with umask `umask` makes for
/// `FIXTURE_UNIX_ALL=all`.
fn mode_made(name: &str, umask: &str, all: &str) -> u32 {
    let dir = tmpdir(name);
    let path = dir.join("s.sock");
    let spec = format!("unix:{}", path.display());
    let mut m = Proc::fixture_env(
        &["--listen", &spec],
        &[("FIXTURE_UMASK", umask), ("FIXTURE_UNIX_ALL", all)],
    );
    m.send("fork");
    m.expect("listening id=1");
    let mode = std::fs::symlink_metadata(&path).unwrap().mode() & 0o7777;
    drop(m);
    let _ = std::fs::remove_dir_all(&dir);
    mode
}

#[test]
fn readable_all_and_writable_all_add_bits_to_the_mode_the_umask_gives() {
    // readable_all alone with umask 002 keeps group write.
    assert_eq!(mode_made("mode-r", "002", "r"), 0o775);
    assert_eq!(mode_made("mode-w", "077", "w"), 0o722);
    assert_eq!(mode_made("mode-rw", "077", "rw"), 0o766);
}

#[test]
fn a_live_socket_whose_path_has_spaces_is_never_judged_stale() {
    let dir = tmpdir("unix-space");
    let path = dir.join("my app.sock");
    let spec = format!("unix:{}", path.display());
    let mut first = Proc::fixture(&["--listen", &spec]);
    first.send("fork");
    first.expect("listening id=1");
    let before = facts(&path).unwrap();
    let mut second = Proc::fixture(&["--listen", &spec]);
    second.send("fork");
    let err = second.expect("message id=1 listen-");
    assert!(err.starts_with("message id=1 listen-err"), "{err}");
    assert_eq!(field(&err, "errno"), libc::EADDRINUSE.to_string(), "{err}");
    assert_eq!(facts(&path), Some(before));
    unix_echo(&path).unwrap();
    first.send("send 1 report");
    let report = first.expect("message id=1 report");
    assert_eq!(field(&report, "accepted"), "1", "the first master no longer serves its path");
    drop(second);
    let _ = std::fs::remove_dir_all(&dir);
}
