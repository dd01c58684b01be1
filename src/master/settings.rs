//! How workers are started and how the master behaves.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use crate::Signal;

/// The signal every worker gets when the master dies, however it dies
/// (`PR_SET_PDEATHSIG`, set after the worker's credentials are switched).
///
/// `SIGTERM`: a worker that does not handle it is gone at once, even with a
/// busy or hung loop, so its sockets are free for the next master; one that
/// handles it can finish its open connections first. (A worker whose loop
/// runs also sees its channel close, as
/// [`WorkerEvent::MasterGone`](crate::WorkerEvent::MasterGone).) The
/// request belongs to the thread that forks: fork from the thread that runs
/// the master.
pub const MASTER_DEATH_SIGNAL: Signal = Signal::SIGTERM;

/// How workers are started and how the master behaves.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The program a worker runs (default: [`started_program`]: the path
    /// this program was started from, so that a binary replaced on disk is
    /// what the next worker runs). A worker is the master's own child: a
    /// wrapper named here must `exec` the worker program, not run it as a
    /// child of its own.
    pub exec: PathBuf,
    /// Its arguments (default: this process's arguments, without `argv[0]`).
    pub args: Vec<OsString>,
    /// Extra environment for every worker.
    pub env: Vec<(OsString, OsString)>,
    /// Working directory of the workers (default: the master's).
    pub cwd: Option<PathBuf>,
    /// Signals the master reads through its reactor
    /// ([`Event::Signal`](super::Event::Signal)) instead of their default
    /// action (default: none).
    pub signals: Vec<Signal>,
    /// How long a worker asked to disconnect (or whose channel closed) may
    /// take to exit before it is sent `SIGKILL` (default: 30 s).
    pub disconnect_timeout: Duration,
    /// Start each worker in a process group of its own (default: true), so a
    /// Ctrl-C in a terminal reaches only the master, which then shuts the
    /// workers down gracefully instead of the kernel killing them all.
    pub own_process_group: bool,
    /// User id the workers run as (default: the master's). The master keeps
    /// its own, so it can still bind privileged ports for them. Without
    /// `gid`, a worker gets that user's primary group and supplementary
    /// groups (`initgroups`), never the master's; a uid with no entry in the
    /// password database needs a `gid`.
    pub uid: Option<u32>,
    /// Group id the workers run as (default: the master's). Alone, it is the
    /// worker's only group; with `uid`, the user's supplementary groups are
    /// added.
    pub gid: Option<u32>,
    /// Where the workers' stdout goes (default: inherited).
    pub stdout: Output,
    /// Where the workers' stderr goes (default: inherited).
    pub stderr: Output,
    /// Hung-worker detection (default: off). With it, each worker's runtime
    /// sends a heartbeat from its own loop ([`Event::Heartbeat`](super::Event::Heartbeat)),
    /// and a [`Supervisor`](crate::Supervisor) kills and replaces a worker
    /// silent for longer than the timeout.
    pub heartbeat: Option<Heartbeat>,
    /// How many of the master's descriptors one worker may cost it
    /// (default: 1024). Each key the worker holds counts what the master
    /// keeps open for it (3 for a TCP or Unix server: the socket, its accept
    /// board and bell; 1 for UDP), and so does every descriptor that came
    /// with its messages and is still in
    /// [`Event::Message`](super::Event::Message)s not yet taken by
    /// [`Master::next_event`](super::Master::next_event). A listen past the
    /// budget fails with `EMFILE` for that worker alone; past it with messages, the master
    /// stops reading that worker until the application takes its events
    /// (the worker's sends queue on its side). One message may carry up to
    /// 253 descriptors past the budget. The budget is lowered to half of
    /// what `RLIMIT_NOFILE` leaves after the master's reserve of 64, so that
    /// one worker can never bring the master to its limit.
    pub fd_budget: usize,
    /// Make the master a child subreaper (`PR_SET_CHILD_SUBREAPER`,
    /// default: false): orphans among its descendants become its children.
    /// With it, or when the master is PID 1 (in a container), the master
    /// reaps every child that is not a worker, and a shutdown waits for
    /// them too (see [`host::reaper`](crate::host::reaper)).
    pub subreaper: bool,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            exec: started_program(),
            args: std::env::args_os().skip(1).collect(),
            env: Vec::new(),
            cwd: None,
            signals: Vec::new(),
            disconnect_timeout: Duration::from_secs(30),
            own_process_group: true,
            heartbeat: None,
            fd_budget: 1024,
            uid: None,
            gid: None,
            stdout: Output::Inherit,
            stderr: Output::Inherit,
            subreaper: false,
        }
    }
}

/// The path this program was started from, as an absolute path: `argv[0]`
/// resolved as the kernel and the shell did (against the working directory
/// if it has a `/`, else along `PATH`), resolved once, the first time this
/// or [`Settings::default`] runs (so before the program changes directory).
/// Symbolic links are kept, not resolved: a deploy that switches a link
/// (`current -> releases/v2`) is followed too. Only if that path does not
/// name this very program (same device and inode as the running binary) at
/// that moment, for instance when `argv[0]` is not a path, is the answer
/// the running binary: on Linux `/proc/self/exe`, which names it even after
/// it is replaced; elsewhere the path the system gives for it
/// ([`std::env::current_exe`]). Which of the two is logged at debug level.
pub fn started_program() -> PathBuf {
    static PROGRAM: OnceLock<PathBuf> = OnceLock::new();
    PROGRAM
        .get_or_init(|| {
            let argv0 = std::env::args_os().next().unwrap_or_default();
            let cwd = std::env::current_dir().ok();
            let path = std::env::var_os("PATH");
            let found =
                cwd.as_deref().and_then(|cwd| resolve_program(&argv0, cwd, path.as_deref()));
            let running = crate::sys::procfs::running_binary();
            match found.filter(|p| same_file(p, &running)) {
                Some(p) => {
                    log::debug!(
                        "workers run {} (the path this program was started from)",
                        p.display()
                    );
                    p
                }
                None => {
                    log::debug!(
                        "argv[0] {argv0:?} names no file that is this program: workers run \
                         {} (a binary replaced on disk is not picked up)",
                        running.display()
                    );
                    running
                }
            }
        })
        .clone()
}

/// The absolute path `argv0` names, run from `cwd` with `PATH=path`: with a
/// `/`, relative to `cwd`; otherwise the first executable file of that name
/// in a directory of `path` (an empty entry is `cwd`). `None` if there is
/// no such file.
fn resolve_program(argv0: &OsStr, cwd: &Path, path: Option<&OsStr>) -> Option<PathBuf> {
    if argv0.is_empty() {
        return None;
    }
    let absolute = |p: &Path| -> PathBuf { cwd.join(p).components().collect() };
    let executable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if argv0.as_bytes().contains(&b'/') {
        let p = absolute(Path::new(argv0));
        return executable(&p).then_some(p);
    }
    std::env::split_paths(path?).map(|dir| absolute(&dir.join(argv0))).find(|p| executable(p))
}

/// True if both paths name the same file now.
fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
        _ => false,
    }
}

/// Where a worker's stdout or stderr goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Output {
    /// The master's own.
    Inherit,
    /// A pipe the master reads in its reactor, delivered as
    /// [`Event::Output`](super::Event::Output).
    Piped,
}

/// Hung-worker detection.
#[derive(Debug, Clone, Copy)]
pub struct Heartbeat {
    /// How often a worker's runtime sends a heartbeat (default: 1 s).
    pub interval: Duration,
    /// Silence after which a [`Supervisor`](crate::Supervisor) kills the
    /// worker (default: 10 s). Time the master itself was stopped does not
    /// count.
    pub timeout: Duration,
    /// Send `SIGABRT` first (for a core dump), then `SIGKILL` a second later
    /// (default: false: `SIGKILL` at once).
    pub abort_first: bool,
}

impl Default for Heartbeat {
    fn default() -> Heartbeat {
        Heartbeat {
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(10),
            abort_first: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir_with_program() -> (PathBuf, PathBuf) {
        let dir = std::env::temp_dir().join(format!("mio-cluster-exec-{}", std::process::id()));
        let _ = std::fs::create_dir_all(dir.join("bin"));
        let prog = dir.join("bin/prog");
        std::fs::write(&prog, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(dir.join("bin/plain"), "").unwrap();
        (dir, prog)
    }

    #[test]
    fn a_program_path_is_made_absolute_against_the_starting_directory() {
        let (dir, prog) = dir_with_program();
        let found = resolve_program(OsStr::new("./bin/prog"), &dir, None);
        assert_eq!(found.as_deref(), Some(prog.as_path()));
        assert!(found.unwrap().is_absolute());
        assert_eq!(resolve_program(OsStr::new("bin/missing"), &dir, None), None);
        assert_eq!(resolve_program(OsStr::new("bin/plain"), &dir, None), None, "not executable");
    }

    #[test]
    fn a_bare_program_name_is_looked_up_along_path_in_order() {
        let (dir, prog) = dir_with_program();
        let path = std::env::join_paths(["/nonexistent", "bin", "/usr/bin"]).unwrap();
        let found = resolve_program(OsStr::new("prog"), &dir, Some(&path));
        assert_eq!(found.as_deref(), Some(prog.as_path()), "a relative PATH entry is from cwd");
        assert_eq!(resolve_program(OsStr::new("prog"), &dir, None), None);
        assert_eq!(resolve_program(OsStr::new("plain"), &dir, Some(&path)), None);
        assert_eq!(resolve_program(OsStr::new(""), &dir, Some(&path)), None);
    }

    #[test]
    fn the_default_program_is_this_test_binary_by_its_path() {
        let p = started_program();
        assert!(p.is_absolute());
        assert_ne!(p, Path::new("/proc/self/exe"), "cargo starts tests by their path");
        assert!(same_file(&p, &std::env::current_exe().unwrap()));
        assert_eq!(Settings::default().exec, p);
    }
}
