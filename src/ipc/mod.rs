//! The channel between the master and one worker.
//!
//! [`codec`] is pure: it turns [`Message`]s into bytes and bytes back into
//! messages, with no I/O, so the fuzz target and the tests call it directly.
//! The private `channel` module moves those bytes and the file descriptors attached to them
//! over a Unix socket pair without ever blocking. The private `board` module is
//! the other way master and workers share state: a page of shared memory per
//! listening socket that the workers balance their accepting on.

pub(crate) mod board;
pub(crate) mod channel;
pub mod codec;

pub use codec::{ListenRequest, Message};
// What only the fuzz target and the tests use (the crate calls `codec::`).
#[cfg(feature = "fuzzing")]
pub use codec::{decode, encode, DecodeError, Decoded};
