//! Deadlines from durations the application or the operator gave: a
//! duration too long to add to the clock's reading means "never", not a
//! panic.
//!
//! Every timeout of [`Settings`](crate::Settings), [`Policy`](crate::Policy)
//! and the host pieces goes through [`after`]: `Duration::MAX`, or a
//! command line's `1e19` seconds, is a deadline about a century away.

use std::time::{Duration, Instant};

/// How far away "never" is: far past any process's life, and small enough
/// to add to any reading of the monotonic clock.
const NEVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// `now + d`, or a deadline a century away if that cannot be represented
/// (or `d` is longer than a century).
pub(crate) fn after(now: Instant, d: Duration) -> Instant {
    now.checked_add(d.min(NEVER)).unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_duration_too_long_is_a_deadline_a_century_away() {
        let now = Instant::now();
        assert_eq!(after(now, Duration::from_secs(5)), now + Duration::from_secs(5));
        assert_eq!(after(now, Duration::MAX), now + NEVER);
        assert_eq!(after(now, Duration::from_secs_f64(1e19)), now + NEVER);
    }
}
