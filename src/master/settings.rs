//! How workers are started and how the master behaves.

use std::ffi::OsString;
use std::path::PathBuf;
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
    /// The program a worker runs (default: `/proc/self/exe`). A worker is
    /// the master's own child: a wrapper named here must `exec` the worker
    /// program, not run it as a child of its own.
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
            exec: PathBuf::from("/proc/self/exe"),
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

/// Where a worker's stdout or stderr goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
