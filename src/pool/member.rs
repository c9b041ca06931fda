//! The live state of one endpoint, kept across endpoint-set updates.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::Endpoint;

/// How fast the latency average forgets: after this long, an old sample
/// weighs `1/e` of a fresh one.
const LATENCY_DECAY: Duration = Duration::from_secs(10);

/// Load and outcome counters for one endpoint of one pool.
///
/// Shared by every snapshot in which the endpoint appears, so an update that
/// keeps the endpoint keeps its in-flight count and history. All fields are
/// atomics: requests update them without a lock.
//
// Aligned to a cache line so that two endpoints' counters, written by
// different cores, never share one.
#[repr(align(64))]
pub struct EndpointState {
    in_flight: AtomicUsize,
    requests: AtomicU64,
    failures: AtomicU64,
    /// Time-decayed average latency in nanoseconds, as `f64` bits; 0 = none yet.
    latency_ewma: AtomicU64,
    /// When `latency_ewma` was last updated, in ns since `epoch`.
    latency_stamp: AtomicU64,
    epoch: Instant,
}

impl EndpointState {
    pub(crate) fn new() -> Self {
        Self {
            in_flight: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            latency_ewma: AtomicU64::new(0),
            latency_stamp: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    /// Requests sent to this endpoint and not yet finished or dropped.
    #[inline]
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Requests finished (successfully or not), not counting dropped ones.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Finished requests classified as failures.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// The time-decayed average latency, once a request has finished.
    pub fn latency(&self) -> Option<Duration> {
        let ns = f64::from_bits(self.latency_ewma.load(Ordering::Relaxed));
        (ns > 0.0).then(|| Duration::from_nanos(ns as u64))
    }

    #[inline]
    pub(crate) fn start(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    #[inline]
    pub(crate) fn finish(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    pub(crate) fn record(&self, latency: Duration, failed: bool) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if failed {
            self.failures.fetch_add(1, Ordering::Relaxed);
        }
        self.record_latency(latency);
    }

    /// Folds one sample into the average, weighting it by the time since the
    /// previous one, so the average means "recent" whatever the request rate.
    /// Two racing updates may lose one sample; an average can afford that,
    /// and a compare-and-swap loop on every response could not be afforded.
    fn record_latency(&self, latency: Duration) {
        let now = self.epoch.elapsed().as_nanos() as u64;
        let sample = latency.as_nanos() as f64;
        let old = f64::from_bits(self.latency_ewma.load(Ordering::Relaxed));
        let then = self.latency_stamp.swap(now, Ordering::Relaxed);
        let next = if old == 0.0 {
            sample
        } else {
            let elapsed = now.saturating_sub(then) as f64;
            let keep = (-elapsed / LATENCY_DECAY.as_nanos() as f64).exp();
            old * keep + sample * (1.0 - keep)
        };
        // Never store 0.0: it means "no sample yet".
        self.latency_ewma
            .store(next.max(1.0).to_bits(), Ordering::Relaxed);
    }
}

impl fmt::Debug for EndpointState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EndpointState")
            .field("in_flight", &self.in_flight())
            .field("requests", &self.requests())
            .field("failures", &self.failures())
            .field("latency", &self.latency())
            .finish()
    }
}

/// One endpoint of a pool's current set, with its live state: what a
/// [`Picker`](crate::balance::Picker) chooses among.
///
/// Cheap to clone (one reference count), so a pick hands one out without
/// copying the endpoint.
#[derive(Clone, Debug)]
pub struct Member {
    inner: Arc<MemberInner>,
}

#[derive(Debug)]
struct MemberInner {
    endpoint: Endpoint,
    state: Arc<EndpointState>,
}

impl Member {
    pub(crate) fn new(endpoint: Endpoint, state: Arc<EndpointState>) -> Self {
        Self {
            inner: Arc::new(MemberInner { endpoint, state }),
        }
    }

    /// The endpoint.
    #[inline]
    pub fn endpoint(&self) -> &Endpoint {
        &self.inner.endpoint
    }

    /// Its weight (shortcut for `endpoint().weight()`).
    #[inline]
    pub fn weight(&self) -> u32 {
        self.inner.endpoint.weight()
    }

    /// Its live load and counters.
    #[inline]
    pub fn state(&self) -> &EndpointState {
        &self.inner.state
    }

    /// The state, shared: an update that keeps the endpoint hands the same
    /// state to the new member.
    pub(crate) fn shared_state(&self) -> &Arc<EndpointState> {
        &self.inner.state
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_sample_sets_the_average() {
        let s = EndpointState::new();
        assert_eq!(s.latency(), None);
        s.record(Duration::from_millis(10), false);
        assert_eq!(s.latency(), Some(Duration::from_millis(10)));
        assert_eq!((s.requests(), s.failures()), (1, 0));
        s.record(Duration::from_millis(10), true);
        assert_eq!((s.requests(), s.failures()), (2, 1));
    }
}
