//! Time from outside, kept safe and cheap: instants and nanosecond counts
//! from durations that come from input or configuration, without overflow
//! (a `Duration::MAX` interval means "far in the future", not a panic),
//! and the deadlines that bound requests ([`Alarm`]), kept in shared groups
//! of deadlines due at nearly the same time (`group.rs`).

use std::time::Duration;

use tokio::time::Instant;

mod alarm;
mod group;

pub(crate) use alarm::Alarm;

/// About thirty years: later than any process lives, early enough that
/// adding it to any `Instant` the clock gives never overflows.
pub(crate) const FAR_FUTURE: Duration = Duration::from_secs(30 * 365 * 24 * 3600);

/// `now + wait`, or [`FAR_FUTURE`] from now if that is sooner (a huge
/// `wait` past the clock's range included).
pub(crate) fn after(wait: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(wait.min(FAR_FUTURE))
        .or_else(|| now.checked_add(Duration::from_secs(3600)))
        .unwrap_or(now)
}

/// `d` in whole nanoseconds, saturated at `u64::MAX` (584 years).
pub(crate) fn saturating_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn huge_waits_saturate() {
        let now = Instant::now();
        assert_eq!(after(Duration::from_secs(1)) - now, Duration::from_secs(1));
        assert_eq!(after(Duration::MAX) - now, FAR_FUTURE);
        assert_eq!(after(Duration::ZERO), now);
    }
}
