//! A minimal init for PID 1, so that the master below it can be upgraded:
//! on Linux. A container's PID 1 is a Linux matter; on this platform
//! [`Init::split`] never splits, and the master runs as it was started.

use std::io;

use crate::Settings;

/// Set in the masters below the init (inherited by the new master of each
/// hot upgrade): they are subreapers too.
pub const ENV_UNDER_INIT: &str = "MIO_CLUSTER_UNDER_INIT";

/// PID 1 as a minimal init over the master: never made on this platform.
#[derive(Debug)]
pub struct Init {
    never: std::convert::Infallible,
}

impl Init {
    /// Returns `None` at once, forking nothing: the caller goes on as the
    /// master. (On Linux, PID 1 forks here and stays a small init.)
    pub fn split(_settings: &mut Settings) -> io::Result<Option<Init>> {
        Ok(None)
    }

    /// Never called: no `Init` exists on this platform.
    pub fn run(self) -> io::Result<i32> {
        match self.never {}
    }
}
