//! Fitting the cluster into the engines that run it in production: systemd
//! ([`systemd`]: socket activation, readiness and the watchdog), a
//! container's PID 1 or a subreaper ([`reaper`]), Kubernetes' probes
//! ([`health`]) and its asynchronous endpoint removal ([`linger`]).

pub mod health;
pub mod linger;
pub mod reaper;
pub mod systemd;
