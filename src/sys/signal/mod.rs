//! The signals a process handles, read from a descriptor it registers in
//! its poll like any other source. One interface, two implementations,
//! chosen here and nowhere else:
//!
//! - Linux: a `signalfd`; the signals are blocked ([`signalfd`]).
//! - Elsewhere, and on Linux with the `portable-backend` feature: a
//!   self-pipe, written by an async-signal-safe handler ([`self_pipe`]).
//!
//! Either way, [`Signals::new`] takes the signals, [`Signals::read`] gives
//! the next one or `None`, and dropping it gives them back.

#[cfg(any(not(target_os = "linux"), feature = "portable-backend"))]
mod self_pipe;
#[cfg(all(target_os = "linux", not(feature = "portable-backend")))]
mod signalfd;

#[cfg(any(not(target_os = "linux"), feature = "portable-backend"))]
pub(crate) use self_pipe::Signals;
#[cfg(all(target_os = "linux", not(feature = "portable-backend")))]
pub(crate) use signalfd::Signals;

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};

impl std::fmt::Debug for Signals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signals").field("fd", &self.as_raw_fd()).finish()
    }
}

impl AsRawFd for Signals {
    fn as_raw_fd(&self) -> RawFd {
        self.fd().as_raw_fd()
    }
}

impl AsFd for Signals {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd()
    }
}
