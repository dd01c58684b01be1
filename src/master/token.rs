//! The tokens of the master's reactor: one encoding, with named kinds.
//!
//! `Token(0)` is the `signalfd`; each worker's slot has four tokens after
//! it, one per [`Source`] kind, whether or not its pipes exist.

use mio::Token;

use super::OutputStream;

/// What a token of the master's reactor stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Source {
    /// The `signalfd` of [`Settings::signals`](super::Settings::signals).
    Signals,
    /// The IPC channel of the worker in this slot.
    Channel(usize),
    /// The pidfd of the worker in this slot: readable once it has exited.
    Exit(usize),
    /// A piped stdout or stderr of the worker in this slot.
    Output(usize, OutputStream),
}

/// Tokens per worker slot.
const PER_SLOT: usize = 4;

impl Source {
    /// The token this source is registered with.
    pub(super) fn token(self) -> Token {
        let (slot, kind) = match self {
            Source::Signals => return Token(0),
            Source::Channel(slot) => (slot, 0),
            Source::Exit(slot) => (slot, 1),
            Source::Output(slot, OutputStream::Stdout) => (slot, 2),
            Source::Output(slot, OutputStream::Stderr) => (slot, 3),
        };
        Token(1 + PER_SLOT * slot + kind)
    }

    /// The source a token stands for.
    pub(super) fn of(token: Token) -> Source {
        let Some(n) = token.0.checked_sub(1) else { return Source::Signals };
        let slot = n / PER_SLOT;
        match n % PER_SLOT {
            0 => Source::Channel(slot),
            1 => Source::Exit(slot),
            2 => Source::Output(slot, OutputStream::Stdout),
            _ => Source::Output(slot, OutputStream::Stderr),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_source_comes_back_from_its_token_and_no_two_share_one() {
        let mut seen = std::collections::HashSet::new();
        let mut sources = vec![Source::Signals];
        for slot in [0, 1, 2, 1000, usize::MAX / 8] {
            sources.extend([
                Source::Channel(slot),
                Source::Exit(slot),
                Source::Output(slot, OutputStream::Stdout),
                Source::Output(slot, OutputStream::Stderr),
            ]);
        }
        for s in sources {
            assert_eq!(Source::of(s.token()), s);
            assert!(seen.insert(s.token()), "{s:?} shares {:?}", s.token());
        }
    }
}
