//! The crate's own signal type, so that its API does not depend on nix's
//! (whose major versions would otherwise be the crate's).

use std::fmt;
use std::io;
use std::str::FromStr;

/// A POSIX signal: one of the constants below (`Signal::SIGTERM`, ...),
/// spelled as in `signal(7)`. The constants are the platform's: Linux has
/// `SIGSTKFLT` and `SIGPWR`, macOS and the BSDs `SIGEMT` and `SIGINFO`. Compare it, match on it, print it (`SIGTERM`),
/// parse it from its name, or turn it into the platform's number with
/// [`Signal::as_raw`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Signal(i32);

macro_rules! signals {
    ($($(#[doc = $doc:expr])* $(@cfg($cfg:meta))? $name:ident,)*) => {
        impl Signal {
            $($(#[doc = $doc])* $(#[cfg($cfg)])? pub const $name: Signal = Signal(libc::$name);)*

            /// Every signal this type knows on this platform.
            const ALL: &'static [(Signal, &'static str)] =
                &[$($(#[cfg($cfg)])? (Signal::$name, stringify!($name)),)*];
        }
    };
}

signals! {
    /// Hangup.
    SIGHUP,
    /// Interrupt (Ctrl-C).
    SIGINT,
    /// Quit (Ctrl-\).
    SIGQUIT,
    /// Illegal instruction.
    SIGILL,
    /// Trace or breakpoint trap.
    SIGTRAP,
    /// Abort.
    SIGABRT,
    /// Bus error.
    SIGBUS,
    /// Floating-point exception.
    SIGFPE,
    /// Kill (cannot be caught).
    SIGKILL,
    /// User-defined signal 1.
    SIGUSR1,
    /// Invalid memory reference.
    SIGSEGV,
    /// User-defined signal 2.
    SIGUSR2,
    /// Write to a pipe with no reader.
    SIGPIPE,
    /// Timer (alarm).
    SIGALRM,
    /// Termination.
    SIGTERM,
    /// Stack fault on a coprocessor (Linux only).
    @cfg(any(target_os = "linux", target_os = "android")) SIGSTKFLT,
    /// Child stopped or terminated.
    SIGCHLD,
    /// Continue if stopped.
    SIGCONT,
    /// Stop (cannot be caught).
    SIGSTOP,
    /// Stop typed at a terminal (Ctrl-Z).
    SIGTSTP,
    /// Terminal input for a background process.
    SIGTTIN,
    /// Terminal output for a background process.
    SIGTTOU,
    /// Urgent condition on a socket.
    SIGURG,
    /// CPU time limit exceeded.
    SIGXCPU,
    /// File size limit exceeded.
    SIGXFSZ,
    /// Virtual alarm clock.
    SIGVTALRM,
    /// Profiling timer expired.
    SIGPROF,
    /// Window resize.
    SIGWINCH,
    /// I/O now possible.
    SIGIO,
    /// Power failure (Linux only).
    @cfg(any(target_os = "linux", target_os = "android")) SIGPWR,
    /// Bad system call.
    SIGSYS,
    /// Emulator trap (macOS and the BSDs).
    @cfg(not(any(target_os = "linux", target_os = "android"))) SIGEMT,
    /// Status request from the keyboard, Ctrl-T (macOS and the BSDs).
    @cfg(not(any(target_os = "linux", target_os = "android"))) SIGINFO,
}

impl Signal {
    /// The signal with this number, if it is one of the constants.
    pub fn from_raw(signo: i32) -> Option<Signal> {
        Signal::ALL.iter().map(|&(s, _)| s).find(|s| s.0 == signo)
    }

    /// The platform's number for it (`libc::SIGTERM` for `SIGTERM`).
    pub fn as_raw(self) -> i32 {
        self.0
    }

    /// Its name, as in `signal(7)`: `"SIGTERM"`.
    pub fn as_str(self) -> &'static str {
        Signal::ALL.iter().find(|(s, _)| *s == self).map_or("SIG?", |&(_, name)| name)
    }
}

impl TryFrom<i32> for Signal {
    type Error = io::Error;

    /// [`Signal::from_raw`], failing with `InvalidInput` for a number that
    /// is none of the constants.
    fn try_from(signo: i32) -> io::Result<Signal> {
        Signal::from_raw(signo).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, format!("unknown signal number {signo}"))
        })
    }
}

impl From<Signal> for i32 {
    fn from(s: Signal) -> i32 {
        s.0
    }
}

impl FromStr for Signal {
    type Err = io::Error;

    /// Parses a name as in `signal(7)` (`"SIGTERM"`), failing with
    /// `InvalidInput` for anything else.
    fn from_str(name: &str) -> io::Result<Signal> {
        Signal::ALL.iter().find(|&&(_, n)| n == name).map(|&(s, _)| s).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, format!("unknown signal name {name:?}"))
        })
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::Signal;

    #[test]
    fn every_signal_has_the_platforms_number_and_nixs_name() {
        assert_eq!(Signal::ALL.len(), nix::sys::signal::Signal::iterator().count());
        for nix_sig in nix::sys::signal::Signal::iterator() {
            let ours = Signal::from_raw(nix_sig as i32).expect("known to nix, known here");
            assert_eq!(ours.as_raw(), nix_sig as i32);
            assert_eq!(ours.as_str(), nix_sig.as_str());
            assert_eq!(ours.to_string().parse::<Signal>().unwrap(), ours);
        }
        assert_eq!(Signal::SIGTERM.as_raw(), libc::SIGTERM);
        assert_eq!(format!("{:?} {}", Signal::SIGKILL, Signal::SIGHUP), "SIGKILL SIGHUP");
    }

    #[test]
    fn unknown_numbers_and_names_are_refused_with_what_was_wrong() {
        assert_eq!(Signal::from_raw(0), None);
        #[cfg(target_os = "linux")]
        assert_eq!(Signal::from_raw(libc::SIGRTMIN()), None);
        let e = Signal::try_from(999).unwrap_err();
        assert!(e.to_string().contains("999"), "{e}");
        let e = "SIGNOPE".parse::<Signal>().unwrap_err();
        assert!(e.to_string().contains("SIGNOPE"), "{e}");
        assert!("sigterm".parse::<Signal>().is_err());
    }
}
