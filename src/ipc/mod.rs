//! The channel between the master and one worker.
//!
//! [`codec`] is pure: it turns [`Message`]s into bytes and bytes back into
//! messages, with no I/O, so the fuzz target and the tests call it directly.
//! The private `channel` module moves those bytes and the file descriptors attached to them
//! over a Unix socket pair without ever blocking. (The other way master and
//! workers share state, the accept boards, is in the private `balance`
//! module.)

pub(crate) mod channel;
pub mod codec;

pub use codec::{ListenRequest, Message};
// What only the fuzz target and the tests use (the crate calls `codec::`).
#[cfg(feature = "fuzzing")]
pub use codec::{decode, encode, DecodeError, Decoded};
