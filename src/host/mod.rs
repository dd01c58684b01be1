//! Fitting the cluster into the engines that run it in production: systemd
//! ([`systemd`]: socket activation, readiness and the watchdog), a
//! container's PID 1 or a subreaper ([`reaper`]), Kubernetes' probes
//! ([`health`]) and its asynchronous endpoint removal ([`linger`]); a
//! minimal init for PID 1 so that the master below it can be upgraded
//! ([`init`]); and
//! the production master that puts them together with the signal
//! meanings, the hot upgrade and the exit codes ([`manager`]).

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
