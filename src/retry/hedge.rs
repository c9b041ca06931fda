//! Hedging: when an attempt is slow, a second copy to another endpoint.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// When to send a hedge: one more copy of a slow idempotent request, to a
/// different endpoint; the first good answer wins and the other attempt
/// is cancelled.
///
/// A hedge is an attempt (it counts toward the attempt limit) and spends
/// the retry budget like a retry, so hedging cannot double the load of a
/// struggling service. At most one hedge is sent per call.
///
/// ```
/// use std::time::Duration;
/// use tower_lb::retry::{Hedge, RetryLayer};
///
/// // After a fixed 50 ms...
/// let fixed = RetryLayer::builder().hedge(Hedge::after(Duration::from_millis(50))).build()?;
/// // ...or at the service's recent 95th percentile latency, once 20
/// // answers have been seen in the window.
/// let adaptive = RetryLayer::builder().hedge(Hedge::percentile(95.0).min_samples(20)).build()?;
/// # Ok::<(), tower_lb::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hedge {
    delay: Delay,
    min_samples: u32,
    window: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Delay {
    Fixed(Duration),
    Percentile(f64),
}

impl Hedge {
    /// Hedge an attempt that has not answered after `delay`.
    pub fn after(delay: Duration) -> Self {
        Self {
            delay: Delay::Fixed(delay),
            min_samples: 20,
            window: Duration::from_secs(10),
        }
    }

    /// Hedge an attempt slower than the `percentile` (above 0, below 100)
    /// of the service's recent answers. No hedging until
    /// [`min_samples`](Self::min_samples) answers have been seen.
    pub fn percentile(percentile: f64) -> Self {
        Self {
            delay: Delay::Percentile(percentile),
            ..Self::after(Duration::ZERO)
        }
    }

    /// Answers needed before a percentile means anything (default 20).
    pub fn min_samples(mut self, samples: u32) -> Self {
        self.min_samples = samples.max(1);
        self
    }

    /// How long an answer's latency counts (default 10 s; the percentile
    /// covers the last one to two windows).
    pub fn window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    pub(crate) fn check(&self) -> Result<(), String> {
        if let Delay::Percentile(p) = self.delay {
            if !(p > 0.0 && p < 100.0) {
                return Err(format!("hedge percentile {p} is not between 0 and 100"));
            }
            if self.window < Duration::from_millis(1) {
                return Err(format!("hedge window {:?} is under 1 ms", self.window));
            }
        }
        Ok(())
    }

    /// A latency window, when the delay is a percentile.
    pub(crate) fn latency_window(&self) -> Option<LatencyWindow> {
        matches!(self.delay, Delay::Percentile(_)).then(|| LatencyWindow::new(self.window))
    }

    /// How long to wait before hedging, given the service's latencies;
    /// `None`: do not hedge (yet).
    pub(crate) fn delay(&self, latency: Option<&LatencyWindow>) -> Option<Duration> {
        match self.delay {
            Delay::Fixed(delay) => Some(delay),
            Delay::Percentile(p) => latency?.percentile(p, self.min_samples),
        }
    }
}

/// Buckets: exact below 16 µs, then 8 per power of two (12.5% wide) up
/// to 2^40 µs (12 days).
const BUCKETS: usize = 16 + 36 * 8;
const MAX_MICROS: u64 = (1 << 40) - 1;

fn bucket(micros: u64) -> usize {
    let v = micros.min(MAX_MICROS);
    if v < 16 {
        return v as usize;
    }
    let exp = 63 - v.leading_zeros() as usize; // 4..=39
    let mantissa = ((v >> (exp - 3)) & 7) as usize;
    16 + (exp - 4) * 8 + mantissa
}

/// The largest value in bucket `index`, in microseconds.
fn bucket_max(index: usize) -> u64 {
    if index < 16 {
        return index as u64;
    }
    let exp = (index - 16) / 8 + 4;
    let mantissa = ((index - 16) % 8) as u64;
    ((8 + mantissa + 1) << (exp - 3)) - 1
}

/// Recent latencies of one service, as a histogram in two generations:
/// the current window and the one before. Lock-free: writers add to the
/// current generation; the first writer past the window's end clears the
/// older one and makes it current.
pub(crate) struct LatencyWindow {
    generations: [Box<[AtomicU32]>; 2],
    current: AtomicUsize,
    base: Instant,
    window_ms: u64,
    rotated_ms: AtomicU64,
    /// The last percentile computed, in µs + 1 (0: none), and the samples
    /// recorded since.
    cached: AtomicU64,
    since: AtomicU32,
}

/// Recompute the percentile after this many new samples.
const RECOMPUTE_EVERY: u32 = 16;

impl LatencyWindow {
    pub(crate) fn new(window: Duration) -> Self {
        let make = || {
            (0..BUCKETS)
                .map(|_| AtomicU32::new(0))
                .collect::<Box<[_]>>()
        };
        Self {
            generations: [make(), make()],
            current: AtomicUsize::new(0),
            base: Instant::now(),
            window_ms: u64::try_from(window.as_millis()).unwrap_or(u64::MAX).max(1),
            rotated_ms: AtomicU64::new(0),
            cached: AtomicU64::new(0),
            since: AtomicU32::new(RECOMPUTE_EVERY),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn rotate_if_due(&self) {
        let now = self.now_ms();
        let rotated = self.rotated_ms.load(Ordering::Relaxed);
        if now.saturating_sub(rotated) < self.window_ms {
            return;
        }
        if self
            .rotated_ms
            .compare_exchange(rotated, now, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            return;
        }
        let older = 1 - self.current.load(Ordering::Acquire);
        // Two windows or more without a rotation: both are stale.
        if now.saturating_sub(rotated) >= self.window_ms.saturating_mul(2) {
            for count in self.generations[1 - older].iter() {
                count.store(0, Ordering::Relaxed);
            }
        }
        for count in self.generations[older].iter() {
            count.store(0, Ordering::Relaxed);
        }
        self.current.store(older, Ordering::Release);
        self.since.store(RECOMPUTE_EVERY, Ordering::Relaxed);
    }

    /// Records one answer's latency.
    pub(crate) fn record(&self, latency: Duration) {
        self.rotate_if_due();
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        let current = self.current.load(Ordering::Acquire);
        self.generations[current][bucket(micros)].fetch_add(1, Ordering::Relaxed);
        self.since.fetch_add(1, Ordering::Relaxed);
    }

    /// The `p`th percentile (0 < p < 100) of the recent latencies, rounded
    /// up to its bucket's top; `None` with fewer than `min_samples`.
    pub(crate) fn percentile(&self, p: f64, min_samples: u32) -> Option<Duration> {
        self.rotate_if_due();
        if self.since.load(Ordering::Relaxed) < RECOMPUTE_EVERY {
            let cached = self.cached.load(Ordering::Relaxed);
            return cached.checked_sub(1).map(Duration::from_micros);
        }
        self.since.store(0, Ordering::Relaxed);
        let counts: Vec<u64> = (0..BUCKETS)
            .map(|i| {
                u64::from(self.generations[0][i].load(Ordering::Relaxed))
                    + u64::from(self.generations[1][i].load(Ordering::Relaxed))
            })
            .collect();
        let total: u64 = counts.iter().sum();
        let value = if total < u64::from(min_samples) || total == 0 {
            None
        } else {
            // The smallest bucket with at least p% of the samples at or below it.
            let rank = ((p / 100.0) * total as f64).ceil().max(1.0) as u64;
            let mut seen = 0;
            counts.iter().position(|&c| {
                seen += c;
                seen >= rank
            })
        };
        let micros = value.map(bucket_max);
        self.cached
            .store(micros.map_or(0, |m| m + 1), Ordering::Relaxed);
        micros.map(Duration::from_micros)
    }
}

impl std::fmt::Debug for LatencyWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LatencyWindow")
            .field("window_ms", &self.window_ms)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_ordered_and_contain_their_values() {
        let mut last = 0;
        for v in (0..100_000u64).chain([1 << 20, 1 << 39, MAX_MICROS, u64::MAX]) {
            let b = bucket(v);
            assert!(b < BUCKETS);
            assert!(b >= last || v > 100_000);
            last = b;
            assert!(bucket_max(b) >= v.min(MAX_MICROS), "{v} in bucket {b}");
            if b > 0 {
                assert!(bucket_max(b - 1) < v.min(MAX_MICROS), "{v} in bucket {b}");
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn percentiles_over_the_window() {
        let window = LatencyWindow::new(Duration::from_secs(10));
        for _ in 0..10 {
            window.record(Duration::from_millis(1));
        }
        assert_eq!(window.percentile(90.0, 20), None);
        for _ in 0..85 {
            window.record(Duration::from_millis(1));
        }
        for _ in 0..5 {
            window.record(Duration::from_millis(100));
        }
        let p90 = window.percentile(90.0, 20).unwrap();
        assert!(p90 >= Duration::from_millis(1) && p90 < Duration::from_micros(1125));
        window.record(Duration::from_millis(100));
        let p99 = Hedge::percentile(99.0)
            .delay(Some(&window))
            .expect("enough samples");
        // Cached until enough new samples arrive.
        assert_eq!(p99, p90);
        for _ in 0..RECOMPUTE_EVERY {
            window.record(Duration::from_millis(100));
        }
        let p99 = window.percentile(99.0, 20).unwrap();
        assert!(p99 >= Duration::from_millis(100) && p99 < Duration::from_micros(112_500));
        // Two windows later everything has aged out.
        tokio::time::advance(Duration::from_secs(25)).await;
        assert_eq!(window.percentile(99.0, 20), None);
    }

    #[test]
    fn percentile_must_be_inside_0_and_100() {
        assert!(Hedge::percentile(0.0).check().is_err());
        assert!(Hedge::percentile(100.0).check().is_err());
        assert!(Hedge::percentile(f64::NAN).check().is_err());
        assert!(Hedge::percentile(99.9).check().is_ok());
        assert!(Hedge::after(Duration::ZERO).check().is_ok());
    }
}
