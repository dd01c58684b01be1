//! Running the master under a host: a container's PID 1 or a subreaper
//! ([`reaper`]), Kubernetes' probes ([`health`]) and its asynchronous
//! endpoint removal ([`linger`]).

pub mod health;
pub mod linger;
pub mod reaper;
