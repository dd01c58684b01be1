//! Workers' piped stdout and stderr ([`Output::Piped`](super::Output::Piped)): read in the
//! master's reactor, within a budget, and delivered as [`Event::Output`].

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd};

use mio::unix::SourceFd;
use mio::Interest;

use super::token::Source;
use super::{Event, Master, OutputStream};
use crate::ipc::channel::READ_BUDGET;
use crate::sys;

/// The streams in the order of [`WorkerEntry::output`](super::WorkerEntry::output).
pub(super) const STREAMS: [OutputStream; 2] = [OutputStream::Stdout, OutputStream::Stderr];

impl OutputStream {
    /// Its index in [`WorkerEntry::output`](super::WorkerEntry::output).
    pub(super) fn pipe(self) -> usize {
        match self {
            OutputStream::Stdout => 0,
            OutputStream::Stderr => 1,
        }
    }
}

impl Master {
    /// Registers the piped outputs of the worker about to fill `slot`
    /// (in the order of [`STREAMS`]), non-blocking.
    pub(super) fn register_output(
        &self,
        slot: usize,
        output: &mut [Option<File>; 2],
    ) -> io::Result<()> {
        let registry = self.poll.registry();
        for (stream, pipe) in STREAMS.into_iter().zip(output.iter_mut()) {
            if let Some(f) = pipe {
                sys::fd::set_nonblocking(f.as_fd())?;
                registry.register(
                    &mut SourceFd(&f.as_raw_fd()),
                    Source::Output(slot, stream).token(),
                    Interest::READABLE,
                )?;
            }
        }
        Ok(())
    }

    /// Reads a worker's piped stdout or stderr, within a budget
    /// unless `draining`.
    pub(super) fn read_output(&mut self, slot: usize, stream: OutputStream, draining: bool) {
        let w = &mut self.workers[slot];
        let id = w.info.id;
        let k = stream.pipe();
        let Some(f) = w.output[k].as_mut() else { return };
        let mut buf = [0u8; 16 * 1024];
        let mut budget = READ_BUDGET;
        loop {
            if budget == 0 && !draining {
                self.again_output.push((slot, stream));
                return;
            }
            budget = budget.saturating_sub(1);
            match std::io::Read::read(f, &mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    self.queue.push_back(Event::Output { id, stream, data: buf[..n].to_vec() })
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::warn!("reading worker {id}'s {stream:?}: {e}");
                    break;
                }
            }
        }
        // End of file (or an error): stop watching it.
        if let Some(f) = w.output[k].take() {
            let _ = self.poll.registry().deregister(&mut SourceFd(&f.as_raw_fd()));
        }
    }
}
