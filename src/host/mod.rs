//! Fitting the cluster into the engines that run it in production: systemd
//! ([`systemd`]: socket activation, readiness and the watchdog), a
//! container's PID 1 or a subreaper ([`reaper`]), Kubernetes' probes
//! ([`health`], with [`metrics`] for Prometheus) and its asynchronous
//! endpoint removal ([`linger`]); a minimal init for PID 1 so that the
//! master below it can be upgraded ([`init`]); and the production master
//! that puts them together with the signal meanings, the hot upgrade and
//! the exit codes ([`manager`]).
//!
//! No piece starts a thread. The [`Manager`](manager::Manager) runs them
//! all in one loop; an application that runs its own master drives the
//! pieces it needs from its own loop, as it drives the master
//! (`examples/embed.rs` does so for systemd's notifications).
//!
//! # The production master
//!
//! What an operator expects of the master process, in one library type:
//! [`Manager`](manager::Manager) runs a [`Master`](crate::Master), a
//! [`Supervisor`](crate::Supervisor) and the host pieces (systemd's
//! notifications and watchdog, the health listener, the linger, the hot
//! upgrade and its hand-overs), with the signal meanings and the exit codes
//! listed in [`manager`]. The master of every example but `embed` is this
//! and nothing more, and every behaviour the drill checks (`tests/drill.rs`)
//! is the library's, not an example's:
//!
//! ```no_run
//! use mio_cluster::host::manager::{Manager, ManagerEvent};
//! use mio_cluster::{Policy, Role};
//!
//! if let Role::Master = mio_cluster::role() {
//!     let manager = Manager::builder()
//!         .policy(Policy { workers: 4, ..Policy::default() })
//!         .health("127.0.0.1:8080".parse().unwrap())
//!         .build()?;
//!     let code = manager.run(|_, event| {
//!         if let ManagerEvent::Ready { address, workers, pid, .. } = event {
//!             println!("ready addr={address} workers={workers} pid={pid}");
//!         }
//!     })?;
//!     std::process::exit(code);
//! }
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! The workers are the same program: in a worker, [`role()`](crate::role)
//! answers `Worker` and the program runs a [`Worker`](crate::Worker)
//! ([`crate::worker`]).
//!
//! # In the application's own loop
//!
//! [`Manager::run`](manager::Manager::run) is the embedding contract and
//! nothing more. A `Manager` is also a [`mio::event::Source`], for an
//! application's own loop: wait no longer than
//! [`Manager::timeout`](manager::Manager::timeout), call
//! [`Manager::process`](manager::Manager::process) after every wait, take
//! every [`Manager::next_event`](manager::Manager::next_event), and leave
//! with [`Manager::exit_code`](manager::Manager::exit_code) once it is
//! `Some`.
//!
//! ```no_run
//! use mio::{Events, Interest, Poll, Token};
//! use mio_cluster::host::manager::{Manager, ManagerEvent};
//!
//! let mut manager = Manager::builder().build()?;
//! let mut poll = Poll::new()?;
//! poll.registry().register(&mut manager, Token(0), Interest::READABLE)?;
//! let mut events = Events::with_capacity(64);
//! let code = loop {
//!     poll.poll(&mut events, manager.timeout())?;
//!     // ... the application's own events ...
//!     manager.process()?;
//!     while let Some(event) = manager.next_event() {
//!         if let ManagerEvent::Ready { address, .. } = event {
//!             println!("ready addr={address}");
//!         }
//!     }
//!     if let Some(code) = manager.exit_code() {
//!         break code;
//!     }
//! };
//! std::process::exit(code);
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! How to deploy it (a rolling restart and the master's hot upgrade,
//! systemd units, containers and Kubernetes, metrics) is the operations
//! guide's matter, `docs/operations.md` in the repository.

pub mod health;
// A container's PID 1 is a Linux matter; elsewhere `Init::split` never
// splits.
#[cfg(target_os = "linux")]
pub mod init;
#[cfg(not(target_os = "linux"))]
#[path = "init_elsewhere.rs"]
pub mod init;
pub mod linger;
pub mod manager;
pub mod metrics;
pub mod reaper;
pub mod systemd;
