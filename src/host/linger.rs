//! Keep accepting for a while after `SIGTERM`, then drain: Kubernetes
//! removes a terminating pod from its Service's endpoints asynchronously,
//! while the pod already has its `SIGTERM`, so for a moment new
//! connections still come to it.
//!
//! A [`Linger`] is a timer with no I/O, driven by the application's loop:
//! when `SIGTERM` (or `SIGINT`) comes, [`Linger::on_signal`] holds it for
//! the linger; the loop waits no longer than [`Linger::timeout`], and when
//! [`Linger::due`] says so, it starts the graceful shutdown it held back
//! (`supervisor.handle_signal(&mut master, SIGTERM)` in the examples). Meanwhile the workers
//! keep accepting, and the health listener ([`health`](super::health))
//! answers `/ready` with 503 so that the endpoint goes.
//!
//! The budget: the pod's `terminationGracePeriodSeconds` (30 s unless set)
//! must cover the linger plus the shutdown timeout (how long workers may
//! take to finish their connections), or the kubelet's `SIGKILL` comes
//! first.
//!
//! A second `SIGTERM` or `SIGINT` during the linger ends it: the drain
//! starts at once. Any other signal is not held.

use std::time::{Duration, Instant};

use crate::Signal;

/// The linger after `SIGTERM`. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct Linger {
    length: Duration,
    until: Option<Instant>,
    /// Held once already: it is not held again.
    used: bool,
}

impl Linger {
    /// A linger of `length` (zero: none, every signal passes at once).
    pub fn new(length: Duration) -> Linger {
        Linger { length, until: None, used: false }
    }

    /// `sig` arrived at `now`. True if the linger holds it: the application
    /// does nothing with it now (and calls [`Linger::due`] later). False if
    /// it is to be handled at once: any signal but `SIGTERM` and `SIGINT`,
    /// any signal with no linger set, the second one during a linger (it
    /// ends the linger) and every one after.
    pub fn on_signal(&mut self, sig: Signal, now: Instant) -> bool {
        if !matches!(sig, Signal::SIGTERM | Signal::SIGINT) {
            return false;
        }
        if self.until.take().is_some() {
            log::info!("{sig} during the linger: draining now");
            return false;
        }
        if self.used || self.length.is_zero() {
            return false;
        }
        self.used = true;
        self.until = Some(crate::deadline::after(now, self.length));
        log::info!("{sig}: still accepting for {:?}, then draining", self.length);
        true
    }

    /// True while a held signal waits.
    pub fn is_lingering(&self) -> bool {
        self.until.is_some()
    }

    /// How long the loop may wait before calling [`Linger::due`]; `None`
    /// when not lingering.
    pub fn timeout(&self, now: Instant) -> Option<Duration> {
        self.until.map(|u| u.saturating_duration_since(now))
    }

    /// True once, when the linger is over: start the drain now.
    pub fn due(&mut self, now: Instant) -> bool {
        if self.until.is_some_and(|u| now >= u) {
            self.until = None;
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn sigterm_is_held_for_the_linger_then_due_once() {
        let t0 = Instant::now();
        let mut l = Linger::new(5 * S);
        assert!(l.on_signal(Signal::SIGTERM, t0));
        assert!(l.is_lingering());
        assert_eq!(l.timeout(t0 + S), Some(4 * S));
        assert!(!l.due(t0 + 4 * S));
        assert!(l.due(t0 + 5 * S));
        assert!(!l.is_lingering());
        assert!(!l.due(t0 + 6 * S));
        assert_eq!(l.timeout(t0 + 6 * S), None);
        // The drain has started: a later SIGTERM is the application's.
        assert!(!l.on_signal(Signal::SIGTERM, t0 + 7 * S));
    }

    #[test]
    fn a_second_sigterm_or_sigint_ends_the_linger_at_once() {
        let t0 = Instant::now();
        let mut l = Linger::new(5 * S);
        assert!(l.on_signal(Signal::SIGINT, t0));
        assert!(!l.on_signal(Signal::SIGTERM, t0 + S));
        assert!(!l.is_lingering());
        assert!(!l.due(t0 + 10 * S));
    }

    #[test]
    fn no_linger_and_other_signals_pass_at_once() {
        let t0 = Instant::now();
        assert!(!Linger::new(Duration::ZERO).on_signal(Signal::SIGTERM, t0));
        let mut l = Linger::new(5 * S);
        for sig in [Signal::SIGQUIT, Signal::SIGHUP, Signal::SIGUSR1] {
            assert!(!l.on_signal(sig, t0));
        }
        assert!(!l.is_lingering());
        assert!(l.on_signal(Signal::SIGTERM, t0));
        // SIGQUIT during the linger is the application's (kill at once).
        assert!(!l.on_signal(Signal::SIGQUIT, t0));
        assert!(l.is_lingering());
    }
}
