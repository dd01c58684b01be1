//! Starting a worker: the command it runs (built without side effects, from
//! the settings), a guard that kills and reaps a started child until it is
//! handed to the reactor, and [`Master::spawn`], which joins the two. The
//! syscalls (fork, exec, the process handle) are in `sys::process`.

use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Instant, SystemTime};

use mio::unix::SourceFd;
use mio::Interest;

use super::credentials::Credentials;
use super::dispatch::LogLimit;
use super::token::Source;
use super::{Master, Output, Settings, State, WorkerEntry, WorkerInfo, MASTER_DEATH_SIGNAL};
use crate::ipc::channel::Channel;
use crate::sys;
use crate::sys::process::ProcessHandle;
use crate::{
    WorkerId, ENV_CHANNEL_FD, ENV_HEARTBEAT_MS, ENV_MASTER_PID, ENV_PROTOCOL, ENV_WORKER_ID,
    PROTOCOL_VERSION,
};

/// The command that starts worker `id`: the program and arguments of
/// `settings`, the environment of `settings` then `env` (the worker's own),
/// the runtime's variables (its id, its end of the channel, `master_pid`,
/// the heartbeat interval or its absence), piped outputs, and a process
/// group of its own. Pure: nothing is opened or started.
pub(super) fn command(
    settings: &Settings,
    env: &[(OsString, OsString)],
    id: WorkerId,
    channel_fd: RawFd,
    master_pid: u32,
) -> Command {
    let mut cmd = Command::new(&settings.exec);
    cmd.args(&settings.args)
        .envs(settings.env.iter().map(|(k, v)| (k, v)))
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env(ENV_WORKER_ID, id.to_string())
        .env(ENV_CHANNEL_FD, channel_fd.to_string())
        .env(ENV_MASTER_PID, master_pid.to_string())
        .env(ENV_PROTOCOL, PROTOCOL_VERSION.to_string());
    match &settings.heartbeat {
        Some(hb) => {
            cmd.env(ENV_HEARTBEAT_MS, hb.interval.as_millis().max(1).to_string());
        }
        None => {
            // This master may itself run in a worker's child, which still
            // has its parent's variables.
            cmd.env_remove(ENV_HEARTBEAT_MS);
        }
    }
    // The sockets systemd passed, by name, for `systemd:NAME` (a master in
    // a worker's child must not pass its parent's on).
    match crate::listen::activation::encode_for_workers() {
        Some(v) => cmd.env(crate::listen::activation::ENV_SYSTEMD_SOCKETS, v),
        None => cmd.env_remove(crate::listen::activation::ENV_SYSTEMD_SOCKETS),
    };
    if settings.stdout == Output::Piped {
        cmd.stdout(Stdio::piped());
    }
    if settings.stderr == Output::Piped {
        cmd.stderr(Stdio::piped());
    }
    if settings.own_process_group {
        cmd.process_group(0);
    }
    cmd
}

/// What the child does before `exec`: switch to `creds`, ask for
/// [`MASTER_DEATH_SIGNAL`], enter [`Settings::cwd`].
fn child_setup(
    settings: &Settings,
    creds: Option<&Credentials>,
) -> io::Result<sys::process::ChildSetup> {
    Ok(sys::process::ChildSetup {
        creds: match creds {
            Some(c) => Some(sys::process::ChildCreds::new(c.uid, c.gid, &c.groups)?),
            None => None,
        },
        death_signal: MASTER_DEATH_SIGNAL.as_raw(),
        cwd: settings.cwd.as_deref().map(sys::process::c_path).transpose()?,
    })
}

/// A started worker not yet handed to the reactor: dropped before
/// [`Spawned::commit`], it is sent `SIGKILL` (through its handle) and reaped.
pub(super) struct Spawned {
    child: Option<Child>,
    handle: Option<ProcessHandle>,
}

impl Spawned {
    /// Starts `cmd` keeping descriptor `keep` open in the child (see
    /// [`sys::process::spawn_worker`]).
    pub(super) fn start(
        cmd: &mut Command,
        keep: RawFd,
        setup: &sys::process::ChildSetup,
    ) -> io::Result<Spawned> {
        let (child, handle) = sys::process::spawn_worker(cmd, keep, setup)?;
        Ok(Spawned { child: Some(child), handle: Some(handle) })
    }

    /// Its process id.
    pub(super) fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Its handle.
    pub(super) fn handle(&self) -> &ProcessHandle {
        self.handle.as_ref().expect("a Spawned has its handle until committed")
    }

    /// Its piped stdout and stderr (in the order of
    /// [`STREAMS`](super::output::STREAMS)), if any;
    /// taken once.
    pub(super) fn take_output(&mut self) -> [Option<File>; 2] {
        let Some(child) = self.child.as_mut() else { return [None, None] };
        [
            child.stdout.take().map(|p| File::from(OwnedFd::from(p))),
            child.stderr.take().map(|p| File::from(OwnedFd::from(p))),
        ]
    }

    /// Keeps the worker: it is the reactor's now, which reaps it through the
    /// handle returned.
    pub(super) fn commit(mut self) -> ProcessHandle {
        self.child = None;
        self.handle.take().expect("a Spawned has its handle until committed")
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let (Some(mut child), Some(handle)) = (self.child.take(), self.handle.take()) else {
            return;
        };
        let _ = handle.signal(libc::SIGKILL);
        // Reaped by us, or by the kernel if SIGCHLD is ignored (then
        // ECHILD); no other child of ours was started meanwhile.
        let _ = child.wait();
    }
}

impl WorkerEntry {
    /// A worker just started: its id and pid, its handle, its channel and
    /// output pipes, the credentials it runs with.
    fn new(
        id: WorkerId,
        pid: u32,
        process: ProcessHandle,
        channel: Channel,
        output: [Option<File>; 2],
        creds: Option<Credentials>,
    ) -> WorkerEntry {
        WorkerEntry {
            info: WorkerInfo { id, pid, state: State::None, exited_after_disconnect: false },
            process,
            channel: Some(channel),
            kill_at: None,
            want_drained: false,
            keep: None,
            started: Instant::now(),
            started_at: SystemTime::now(),
            last_heartbeat: None,
            output,
            forced: false,
            creds,
            refusals: LogLimit::default(),
            untaken_fds: 0,
            fd_paused: false,
            online_reported: false,
        }
    }
}

impl Master {
    /// Starts a worker with `env` (its own, on top of the settings') and
    /// registers it in the reactor.
    pub(super) fn spawn(&mut self, env: Vec<(OsString, OsString)>) -> io::Result<WorkerId> {
        let creds = Credentials::resolve(self.settings.uid, self.settings.gid)?;
        let (ours, theirs) = sys::socket::socketpair()?;
        let id = self.next_id;
        let mut cmd = command(&self.settings, &env, id, theirs.as_raw_fd(), std::process::id());
        let setup = child_setup(&self.settings, creds.as_ref())?;
        let mut child = Spawned::start(&mut cmd, theirs.as_raw_fd(), &setup).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("spawning worker {}: {e}", self.settings.exec.display()),
            )
        })?;
        drop(theirs);
        let pid = child.pid();
        self.next_id += 1;
        // The channel, the pidfd (on Linux), and the output pipes.
        self.fds_received += 4;
        let slot = self.workers.vacant_key();
        let mut channel = Channel::new(ours);
        let mut output = child.take_output();
        let registered = self.register_worker(slot, &mut channel, child.handle(), &mut output);
        match &creds {
            Some(c) => log::debug!("worker {id} (pid {pid}) runs as {}", c.describe()),
            None => log::debug!("worker {id} (pid {pid}) runs as the master does"),
        }
        if let Err(e) = registered {
            let registry = self.poll.registry();
            let _ = registry.deregister(&mut channel);
            if let Some(fd) = child.handle().exit_fd() {
                let _ = registry.deregister(&mut SourceFd(&fd.as_raw_fd()));
            }
            // `child` is killed and reaped as it goes.
            return Err(e);
        }
        let entry = WorkerEntry::new(id, pid, child.commit(), channel, output, creds);
        let inserted = self.workers.insert(entry);
        debug_assert_eq!(inserted, slot);
        self.ids.insert(id, slot);
        log::debug!("forked worker {id} (pid {pid})");
        self.queue.push_back(super::Event::Fork { id, pid });
        Ok(id)
    }

    /// The fuzz target's (and the unit tests') fake worker: a channel and
    /// no process (its handle is on this process, which never exits while
    /// it runs, and is never reaped).
    /// Returns its id and the worker's end of the channel.
    #[cfg(any(test, feature = "fuzzing"))]
    pub fn fuzz_attach(&mut self) -> io::Result<(WorkerId, std::os::fd::OwnedFd)> {
        let (ours, theirs) = sys::socket::socketpair()?;
        let process = ProcessHandle::other(std::process::id())?;
        let id = self.next_id;
        self.next_id += 1;
        let slot = self.workers.vacant_key();
        let mut channel = Channel::new(ours);
        let mut output = [None, None];
        self.register_worker(slot, &mut channel, &process, &mut output)?;
        self.workers.insert(WorkerEntry::new(id, 0, process, channel, output, None));
        self.ids.insert(id, slot);
        Ok((id, theirs))
    }

    /// The fuzz target's fake worker `id` is gone, as if it had exited: what
    /// it sent is handled, then its exit is reported and its entry removed.
    #[cfg(any(test, feature = "fuzzing"))]
    pub fn fuzz_detach(&mut self, id: WorkerId) {
        if let Some(&slot) = self.ids.get(&id) {
            self.retire(slot, crate::ExitStatus::Unknown, None);
        }
    }

    /// Registers the channel, the exit descriptor (a pidfd, where the
    /// platform has one; elsewhere exits come with `SIGCHLD`) and the output
    /// pipes of the worker about to fill `slot`.
    fn register_worker(
        &self,
        slot: usize,
        channel: &mut Channel,
        process: &ProcessHandle,
        output: &mut [Option<File>; 2],
    ) -> io::Result<()> {
        let registry = self.poll.registry();
        registry.register(
            channel,
            Source::Channel(slot).token(),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        if let Some(fd) = process.exit_fd() {
            registry.register(
                &mut SourceFd(&fd.as_raw_fd()),
                Source::Exit(slot).token(),
                Interest::READABLE,
            )?;
        }
        self.register_output(slot, output)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Heartbeat;
    use std::ffi::OsStr;
    use std::time::Duration;

    fn env_of<'a>(cmd: &'a Command, key: &str) -> Option<Option<&'a OsStr>> {
        cmd.get_envs().find(|(k, _)| *k == OsStr::new(key)).map(|(_, v)| v)
    }

    fn settings() -> Settings {
        Settings {
            exec: "/bin/worker".into(),
            args: vec!["--port".into(), "80".into()],
            env: vec![("SHARED".into(), "settings".into()), ("BOTH".into(), "settings".into())],
            ..Settings::default()
        }
    }

    /// Starts `sleep 30` as a worker would be started.
    fn sleeper() -> Spawned {
        let (_ours, theirs) = sys::socket::socketpair().unwrap();
        let mut cmd = Command::new("sleep");
        cmd.arg("30");
        let setup = child_setup(&Settings::default(), None).unwrap();
        Spawned::start(&mut cmd, theirs.as_raw_fd(), &setup).unwrap()
    }

    #[test]
    fn a_started_worker_not_committed_is_killed_and_reaped_when_dropped() {
        let child = sleeper();
        // A second handle on the same process outlives the guard.
        let probe = ProcessHandle::child(child.pid()).unwrap();
        assert!(probe.reap().unwrap().is_none(), "it runs");
        assert!(!probe.exited().unwrap(), "it runs");
        drop(child);
        // Reaped already: nothing is left to wait for.
        let e = probe.reap().unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ECHILD));
    }

    #[test]
    fn a_committed_worker_is_left_running_for_the_reactor_to_reap() {
        let process = sleeper().commit();
        assert!(process.reap().unwrap().is_none(), "it still runs");
        process.signal(libc::SIGKILL).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match process.reap().unwrap() {
                Some(r) => break assert_eq!(r, sys::process::Reaped::Signal(libc::SIGKILL)),
                None if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
                None => panic!("the committed worker did not die of SIGKILL within 10 s"),
            }
        }
    }

    #[test]
    fn a_worker_command_runs_the_settings_program_with_its_arguments() {
        let cmd = command(&settings(), &[], 1, 7, 42);
        assert_eq!(cmd.get_program(), OsStr::new("/bin/worker"));
        let args: Vec<_> = cmd.get_args().collect();
        assert_eq!(args, [OsStr::new("--port"), OsStr::new("80")]);
    }

    #[test]
    fn a_worker_command_names_the_worker_its_channel_and_its_master() {
        let cmd = command(&settings(), &[], 3, 7, 42);
        assert_eq!(env_of(&cmd, ENV_WORKER_ID), Some(Some(OsStr::new("3"))));
        assert_eq!(env_of(&cmd, ENV_CHANNEL_FD), Some(Some(OsStr::new("7"))));
        assert_eq!(env_of(&cmd, ENV_MASTER_PID), Some(Some(OsStr::new("42"))));
        let version = PROTOCOL_VERSION.to_string();
        assert_eq!(env_of(&cmd, ENV_PROTOCOL), Some(Some(OsStr::new(&version))));
    }

    #[test]
    fn a_workers_own_environment_comes_on_top_of_the_settings() {
        let own = [("BOTH".into(), "own".into()), ("OWN".into(), "own".into())];
        let cmd = command(&settings(), &own, 1, 7, 42);
        assert_eq!(env_of(&cmd, "SHARED"), Some(Some(OsStr::new("settings"))));
        assert_eq!(env_of(&cmd, "BOTH"), Some(Some(OsStr::new("own"))));
        assert_eq!(env_of(&cmd, "OWN"), Some(Some(OsStr::new("own"))));
    }

    #[test]
    fn a_worker_command_carries_the_heartbeat_interval_or_removes_an_inherited_one() {
        let cmd = command(&settings(), &[], 1, 7, 42);
        assert_eq!(env_of(&cmd, ENV_HEARTBEAT_MS), Some(None));
        let with = Settings {
            heartbeat: Some(Heartbeat {
                interval: Duration::from_millis(250),
                ..Heartbeat::default()
            }),
            ..settings()
        };
        let cmd = command(&with, &[], 1, 7, 42);
        assert_eq!(env_of(&cmd, ENV_HEARTBEAT_MS), Some(Some(OsStr::new("250"))));
    }
}
