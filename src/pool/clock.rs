//! A pool's cheap clock for picks.
//!
//! Reading the monotonic clock costs about as much as a whole pick (25–30 ns
//! here), and a load-aware pick needs the time only to decay latency
//! estimates that change over seconds. So picks read the last time anyone
//! in the pool read the clock: every finished request reads it anyway and
//! publishes it here, and each thread reads the real clock itself every few
//! picks, which bounds how stale the reading can be when nothing finishes.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// Readings closer together than this are not published: it keeps the
/// shared value from being written by every response, and is far below
/// anything an estimate decaying over seconds can notice.
const PUBLISH_EVERY_NS: u64 = 1_000_000;

/// Each thread reads the real clock on one pick in this many.
const READ_EVERY_PICKS: u32 = 16;

thread_local! {
    static PICKS_SINCE_READ: Cell<u32> = const { Cell::new(0) };
}

/// The pool's epoch and the latest clock reading published to it.
#[derive(Debug)]
pub(crate) struct PoolClock {
    epoch: Instant,
    /// The latest published reading, in ns since `epoch`.
    recent: AtomicU64,
    /// Read the clock on every call: a seeded pool's picks must not depend
    /// on how many picks this thread made before (a per-thread count).
    exact: bool,
}

impl Default for PoolClock {
    fn default() -> Self {
        Self::new(false)
    }
}

impl PoolClock {
    /// A clock whose epoch is now; `exact` reads the real clock on every
    /// [`recent`](Self::recent) call.
    pub(crate) fn new(exact: bool) -> Self {
        Self {
            epoch: Instant::now(),
            recent: AtomicU64::new(0),
            exact,
        }
    }

    /// `now` in ns since the epoch.
    #[inline]
    pub(crate) fn nanos_at(&self, now: Instant) -> u64 {
        crate::time::saturating_nanos(now.saturating_duration_since(self.epoch))
    }

    /// Reads the real clock, publishes the reading, returns it in ns since
    /// the epoch.
    #[inline]
    pub(crate) fn now_nanos(&self) -> u64 {
        let now = self.nanos_at(Instant::now());
        self.publish(now);
        now
    }

    /// Makes a reading someone took (in ns since the epoch) the pool's
    /// recent time, if it differs by enough to matter. Either way: a
    /// reading taken on another runtime's paused clock may be behind, and
    /// the recent time must follow it rather than stay in its future.
    #[inline]
    pub(crate) fn publish(&self, now_ns: u64) {
        if now_ns.abs_diff(self.recent.load(Ordering::Relaxed)) >= PUBLISH_EVERY_NS {
            self.recent.store(now_ns, Ordering::Relaxed);
        }
    }

    /// A recent time: the latest reading published, or a fresh one on every
    /// `READ_EVERY_PICKS`th call on this thread (every call, if exact).
    #[inline]
    pub(crate) fn recent(&self) -> Instant {
        if self.exact {
            return Instant::now();
        }
        self.epoch + Duration::from_nanos(self.recent_nanos())
    }

    /// [`recent`](Self::recent) in ns since the epoch, as a picker
    /// computes with it (no round trip through `Instant`).
    #[inline]
    pub(crate) fn recent_nanos(&self) -> u64 {
        if self.exact {
            return self.nanos_at(Instant::now());
        }
        let read = PICKS_SINCE_READ.with(|picks| {
            let n = picks.get() + 1;
            let due = n >= READ_EVERY_PICKS;
            picks.set(if due { 0 } else { n });
            due
        });
        if read {
            self.now_nanos()
        } else {
            self.recent.load(Ordering::Relaxed)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn recent_time_follows_published_readings_and_reads_the_clock_itself() {
        let clock = PoolClock::default();
        tokio::time::advance(Duration::from_secs(5)).await;
        // Within READ_EVERY_PICKS calls, one reads the clock.
        let latest = (0..READ_EVERY_PICKS).map(|_| clock.recent()).max().unwrap();
        assert_eq!(latest, Instant::now());
        // A published reading is seen by the next call at once.
        tokio::time::advance(Duration::from_secs(5)).await;
        clock.publish(clock.nanos_at(Instant::now()));
        assert_eq!(clock.recent(), Instant::now());
        // A reading within a millisecond changes nothing.
        let now = clock.nanos_at(Instant::now());
        clock.publish(now - 1);
        assert_eq!(clock.recent(), Instant::now());
    }
}
