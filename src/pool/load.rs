//! The live load of one endpoint, kept across endpoint-set updates.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::health::outlier::{MonitorShared, PassiveMonitor, RateWindow};
use crate::pool::clock::PoolClock;

/// What a balancer needs the pool to measure about every endpoint.
///
/// A [`Balancer`](crate::balance::Balancer) returns one from
/// [`load_tracking`](crate::balance::Balancer::load_tracking); the pool
/// applies it to every endpoint it creates. The defaults suit every
/// built-in balancer but Peak-EWMA and bounded-load hashing, which set
/// their own.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct LoadTracking {
    /// How fast latency estimates forget: after this long an old sample
    /// weighs `1/e` of a fresh one (default 10 s).
    pub decay: Duration,
    /// The round-trip estimate of an endpoint with no history (default
    /// 30 ms, Finagle's and Linkerd's choice: pessimistic enough that a new
    /// endpoint is not flooded before it has answered anything).
    pub default_rtt: Duration,
    /// The least round-trip a failure counts as (default 1 s): an endpoint
    /// that fails fast (refused connection, instant 5xx) must look
    /// expensive, not fast.
    pub failure_penalty: Duration,
    /// Keep a pool-wide count of requests in flight, for balancers that
    /// compare an endpoint with the mean (default off: it is one more
    /// shared counter touched by every request).
    pub total_in_flight: bool,
}

impl Default for LoadTracking {
    fn default() -> Self {
        Self {
            decay: Duration::from_secs(10),
            default_rtt: Duration::from_millis(30),
            failure_penalty: Duration::from_secs(1),
            total_in_flight: false,
        }
    }
}

/// Load and outcome counters for one endpoint of one pool.
///
/// Shared by every snapshot in which the endpoint appears, so an update that
/// keeps the endpoint keeps its in-flight count and history. All fields are
/// atomics: requests update them without a lock.
//
// `repr(C)` keeps the declared order: the first 32 bytes hold everything a
// pick reads or writes, together, so a pick touches at most two lines of
// each endpoint it looks at. Not aligned to cache lines: the alignment made
// every state 256 bytes (its reference counts took a line of their own) and
// an aligned allocation besides (115 bytes an endpoint more, churn bench),
// and two threads picking from one pool showed no false sharing without it:
// 0.9x (P2C) and 1.2x (round robin) the two-pools control in one run,
// within that bench's noise (benches/pick.rs, `pick_2_threads`).
#[repr(C)]
pub struct EndpointState {
    /// 32 bits: more requests in flight at one endpoint than that is not a
    /// load any process carries, and the other half of the word holds
    /// `consecutive_failures`.
    in_flight: AtomicU32,
    /// Outlier detection's run of consecutive failures (unused when the
    /// pool does not eject): here rather than in a monitor of its own, whose
    /// padding took the member and its state past an allocation size.
    consecutive_failures: AtomicU32,
    /// Peak-sensitive round-trip estimate for balancers, `f64` ns bits;
    /// failures count as at least the penalty. 0 = none yet. The sign bit
    /// says whether the latest sample was a failure: a slow endpoint and a
    /// failing one look alike by their estimate alone, and the first cache
    /// line has no room for a flag of its own.
    rtt: AtomicU64,
    /// When the estimates were last updated, in ns since the clock's epoch.
    stamp: AtomicU64,
    /// The pool's settings and clock, one copy for all its endpoints (a
    /// copy in each cost 88 bytes an endpoint, the pick's numbers in each
    /// 32, and a clock pointer of its own 8, which took the member and its
    /// state past an allocation size): one line that every pick reads, so
    /// always in cache.
    settings: Arc<StateSettings>,
    // -- end of what a pick reads --
    /// Slow start: when the ramp began, in ns since the epoch plus one; 0 = none.
    ramp_from: AtomicU64,
    requests: AtomicU64,
    failures: AtomicU64,
    /// Average time to the response head for stats, as `f64` ns bits;
    /// 0 = none yet.
    latency: AtomicU64,
    /// Average time to the last body byte for stats, likewise.
    last_byte: AtomicU64,
    /// Outlier detection's failure-rate window, when the pool counts one.
    rate_window: Option<Box<RateWindow>>,
}

/// What every endpoint state of one pool shares.
#[derive(Debug)]
pub(crate) struct StateSettings {
    /// The pool's clock.
    clock: Arc<PoolClock>,
    /// Outlier detection's settings, when the pool ejects.
    monitor: Option<Arc<MonitorShared>>,
    tracking: LoadTracking,
    /// `tracking`'s durations as the numbers a pick computes with, converted
    /// once: a `u128` to `f64` conversion on every pick costs more than the
    /// rest of the arithmetic.
    nanos: TrackingNanos,
    pool_in_flight: Option<Arc<AtomicUsize>>,
    /// A request cancelled after waiting this long counts as timed out.
    cancel_timeout: Option<Duration>,
    /// A body abandoned unfinished this long after its head counts as
    /// timed out (off unless the pool asks for it).
    abandoned_body_timeout: Option<Duration>,
}

impl StateSettings {
    pub(crate) fn new(
        clock: Arc<PoolClock>,
        tracking: LoadTracking,
        pool_in_flight: Option<Arc<AtomicUsize>>,
        cancel_timeout: Option<Duration>,
        abandoned_body_timeout: Option<Duration>,
        monitor: Option<Arc<MonitorShared>>,
    ) -> Self {
        Self {
            clock,
            monitor,
            nanos: TrackingNanos::new(&tracking),
            tracking,
            pool_in_flight,
            cancel_timeout,
            abandoned_body_timeout,
        }
    }
}

impl EndpointState {
    /// A state with settings of its own, for tests.
    #[cfg(test)]
    pub(crate) fn new(
        tracking: LoadTracking,
        pool_in_flight: Option<Arc<AtomicUsize>>,
        monitor: Option<Arc<MonitorShared>>,
        clock: Arc<PoolClock>,
        cancel_timeout: Option<Duration>,
    ) -> Self {
        let settings = StateSettings::new(
            clock,
            tracking,
            pool_in_flight,
            cancel_timeout,
            None,
            monitor,
        );
        Self::with_settings(Arc::new(settings))
    }

    /// A state with default tracking and no pool around it, for the unit
    /// tests of the member set, the roster and the pickers.
    #[cfg(test)]
    pub(crate) fn detached() -> Self {
        Self::new(LoadTracking::default(), None, None, Arc::default(), None)
    }

    /// A fresh state under the pool's shared `settings`.
    pub(crate) fn with_settings(settings: Arc<StateSettings>) -> Self {
        Self {
            rate_window: settings.monitor.as_deref().and_then(RateWindow::for_pool),
            consecutive_failures: AtomicU32::new(0),
            last_byte: AtomicU64::new(0),
            in_flight: AtomicU32::new(0),
            requests: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            latency: AtomicU64::new(0),
            rtt: AtomicU64::new(0),
            stamp: AtomicU64::new(0),
            settings,
            ramp_from: AtomicU64::new(0),
        }
    }

    /// Requests sent to this endpoint and not yet finished or dropped.
    #[inline]
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed) as usize
    }

    /// Requests finished (successfully or not), and requests cancelled
    /// after the pool's cancellation timeout (which count as failures);
    /// not requests cancelled sooner.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Finished requests classified as failures.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// The time-decayed average time to the response head, once a request
    /// has answered (or been cancelled: its wait is a sample too).
    pub fn latency(&self) -> Option<Duration> {
        let ns = f64::from_bits(self.latency.load(Ordering::Relaxed));
        (ns > 0.0).then(|| Duration::from_nanos(ns as u64))
    }

    /// The peak-sensitive round-trip estimate in nanoseconds, decayed to
    /// now: it jumps up at once with a slow answer (or a failure, which
    /// counts as at least the failure penalty) and drifts down with fast
    /// ones and with time, so an endpoint left alone is eventually tried
    /// again. An endpoint with no history is estimated at the default.
    #[inline]
    pub fn rtt_estimate_nanos(&self) -> f64 {
        self.rtt_estimate_at(Instant::now())
    }

    /// [`rtt_estimate_nanos`](Self::rtt_estimate_nanos) as of `now`, for a
    /// picker that compares several endpoints against one clock reading.
    #[inline]
    pub fn rtt_estimate_at(&self, now: Instant) -> f64 {
        self.estimate_at(now).rtt
    }

    /// The round-trip estimate as of `now` with what a picker needs
    /// besides: whether the endpoint has any history, and whether it is
    /// penalized. One read of the estimate for all three.
    #[inline]
    pub fn estimate_at(&self, now: Instant) -> Estimate {
        let raw = f64::from_bits(self.rtt.load(Ordering::Relaxed));
        if raw == 0.0 {
            return Estimate {
                rtt: self.settings.nanos.default_rtt,
                sampled: false,
                penalized: false,
            };
        }
        self.sampled_estimate(raw, self.nanos_at(now))
    }

    /// [`estimate_at`](Self::estimate_at) for a pick, with the time read
    /// only when the estimate needs it (an endpoint with no sample needs
    /// none), from the pool's cheap clock ([`recent_now`](Self::recent_now)),
    /// and once for every candidate of the pick: `now` holds the reading.
    // Always inlined: a pick calls it for two or three candidates, and
    // LLVM, left to itself, stopped inlining it into Peak-EWMA's pick once
    // the state moved into the member (40 instructions a pick of calls).
    #[inline(always)]
    pub(crate) fn estimate_recent(&self, now: &mut Option<u64>) -> Estimate {
        let raw = f64::from_bits(self.rtt.load(Ordering::Relaxed));
        if raw == 0.0 {
            return Estimate {
                rtt: self.settings.nanos.default_rtt,
                sampled: false,
                penalized: false,
            };
        }
        let now = *now.get_or_insert_with(|| self.settings.clock.recent_nanos());
        self.sampled_estimate(raw, now)
    }

    /// The estimate of a sampled endpoint (`raw` is its stored `rtt`, not
    /// 0) at `now_ns`.
    #[inline]
    fn sampled_estimate(&self, raw: f64, now_ns: u64) -> Estimate {
        let failed = raw.is_sign_negative();
        let rtt = raw.abs();
        let idle = now_ns.saturating_sub(self.stamp.load(Ordering::Relaxed));
        // A busy endpoint was updated a moment ago: skip the exponential
        // (the error is under 0.1%) and keep the pick in nanoseconds.
        let rtt = if idle < self.settings.nanos.fresh {
            rtt
        } else {
            rtt * self.keep(idle)
        };
        Estimate {
            rtt,
            sampled: true,
            penalized: failed && self.is_penalized(rtt),
        }
    }

    /// True while the endpoint's latest sample was a failure and the
    /// failure penalty still dominates its round-trip estimate (it is above
    /// half the penalty). An endpoint that answers slowly but well is never
    /// penalized, however slow: slow is not failing.
    #[inline]
    pub fn is_penalized_at(&self, now: Instant) -> bool {
        self.estimate_at(now).penalized
    }

    /// Whether a round-trip estimate is large enough to be dominated by the
    /// failure penalty (above half of it). On its own this cannot tell a
    /// failing endpoint from a slow one: see
    /// [`is_penalized_at`](Self::is_penalized_at).
    #[inline]
    pub fn is_penalized(&self, rtt_estimate_nanos: f64) -> bool {
        rtt_estimate_nanos * 2.0 >= self.settings.nanos.failure_penalty
    }

    /// A recent time for [`rtt_estimate_at`](Self::rtt_estimate_at), far
    /// cheaper to read than the clock (a picker reads it on every pick):
    /// the last time a request of the pool finished (within a millisecond),
    /// or a fresh reading every 16th call on a thread. While requests
    /// finish it is at most milliseconds old; when none do, it may lag by
    /// up to 16 picks on this thread (on a paused clock, a pick right after
    /// `advance` may still see the time before it).
    #[inline]
    pub fn recent_now(&self) -> Instant {
        self.settings.clock.recent()
    }

    /// The tracking settings this state was created with.
    pub fn tracking(&self) -> &LoadTracking {
        &self.settings.tracking
    }

    #[inline]
    pub(crate) fn start(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        if let Some(total) = &self.settings.pool_in_flight {
            total.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[inline]
    pub(crate) fn finish(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        if let Some(total) = &self.settings.pool_in_flight {
            total.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Records a finished request: its outcome, and its latency when
    /// timed. What [`Picked::finish`](crate::Picked::finish) does.
    #[cfg(test)]
    pub(crate) fn record(&self, latency: Option<Duration>, failed: bool) {
        self.record_at(
            self.settings.clock.now_nanos(),
            latency,
            failed,
            "http://test:1",
        );
    }

    /// Records a finished request of the endpoint `key` at `now_ns` (from
    /// [`stamp`](Self::stamp)): its outcome, and its latency when timed.
    pub(crate) fn record_at(
        &self,
        now_ns: u64,
        latency: Option<Duration>,
        failed: bool,
        key: &str,
    ) {
        self.count_at(now_ns, failed, key);
        // An untimed success says nothing about latency; an untimed
        // failure still counts as the failure penalty.
        if latency.is_some() || failed {
            self.observe_latency_at(now_ns, latency, failed);
        }
    }

    /// `now` as this state's clock counts it, not published as the pool's
    /// recent time (a request's start: its end publishes).
    #[inline]
    pub(crate) fn nanos_at(&self, now: Instant) -> u64 {
        self.settings.clock.nanos_at(now)
    }

    /// `now` as this state's clock counts it, for the `_at` methods: one
    /// clock reading serves a request's latency and its records.
    #[inline]
    pub(crate) fn stamp(&self, now: Instant) -> u64 {
        let ns = self.settings.clock.nanos_at(now);
        self.settings.clock.publish(ns);
        ns
    }

    /// Counts one outcome at `now_ns` (from [`stamp`](Self::stamp)): the
    /// request and failure counters, and outlier detection's (which names
    /// the endpoint `key` in what it reports).
    pub(crate) fn count_at(&self, now_ns: u64, failed: bool, key: &str) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if failed {
            self.failures.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(passive) = self.passive() {
            passive.record(key, failed, now_ns);
        }
    }

    /// Feeds one latency sample (time to the response head, or how long a
    /// cancelled request had waited) to the estimates: the stats average
    /// and the peak-sensitive round trip, where a failure counts as at
    /// least the failure penalty.
    ///
    /// Two racing updates may lose one sample; an estimate can afford that,
    /// and a compare-and-swap loop on every response could not be afforded.
    /// `None`: a failure with no time to it, the penalty alone.
    pub(crate) fn observe_latency(&self, latency: Option<Duration>, failed: bool) {
        self.observe_latency_at(self.settings.clock.now_nanos(), latency, failed);
    }

    /// [`observe_latency`](Self::observe_latency) at `now` (ns, from
    /// [`stamp`](Self::stamp)).
    pub(crate) fn observe_latency_at(&self, now: u64, latency: Option<Duration>, failed: bool) {
        let keep = self.keep(now.saturating_sub(self.stamp.swap(now, Ordering::Relaxed)));
        let sample = latency.map_or(0.0, nanos_f64);
        if latency.is_some() {
            blend(&self.latency, sample, keep);
        }
        let sample = if failed {
            sample.max(self.settings.nanos.failure_penalty)
        } else {
            sample
        };
        let rtt = f64::from_bits(self.rtt.load(Ordering::Relaxed)).abs();
        // Peak-sensitive: a worse sample replaces the estimate outright, a
        // better one only pulls it down by its weight in time.
        let rtt = if rtt == 0.0 || sample > rtt {
            sample
        } else {
            rtt * keep + sample * (1.0 - keep)
        };
        // The sign remembers whether this sample was a failure.
        let rtt = if failed { -rtt.max(1.0) } else { rtt.max(1.0) };
        self.rtt.store(rtt.to_bits(), Ordering::Relaxed);
    }

    /// Feeds the time to a response's last byte to its stats average
    /// (balancers do not read it: see [`Picked`](crate::Picked)).
    pub(crate) fn observe_last_byte(&self, latency: Duration) {
        // A tenth of the round-trip decay per sample: a plain moving
        // average, with no clock reading of its own.
        blend(&self.last_byte, nanos_f64(latency), 0.9);
    }

    /// The average time to the last byte of a response body, once one has
    /// ended.
    pub fn last_byte_latency(&self) -> Option<Duration> {
        let ns = f64::from_bits(self.last_byte.load(Ordering::Relaxed));
        (ns > 0.0).then(|| Duration::from_nanos(ns as u64))
    }

    /// How long a request may wait before its cancellation counts as a
    /// timeout of this endpoint (`None`: never).
    pub fn cancel_timeout(&self) -> Option<Duration> {
        self.settings.cancel_timeout
    }

    /// How long after its head a response body may be abandoned before
    /// that counts as a timeout of this endpoint (`None`: never, the
    /// default).
    pub fn abandoned_body_timeout(&self) -> Option<Duration> {
        self.settings.abandoned_body_timeout
    }

    /// Outlier detection over this endpoint's counts, when the pool ejects.
    fn passive(&self) -> Option<PassiveMonitor<'_>> {
        Some(PassiveMonitor {
            shared: self.settings.monitor.as_deref()?,
            consecutive: &self.consecutive_failures,
            window: self.rate_window.as_deref(),
        })
    }

    /// Starts a slow-start ramp now.
    pub(crate) fn begin_ramp(&self) {
        let now = self.settings.clock.nanos_at(Instant::now());
        self.ramp_from.store(now + 1, Ordering::Relaxed);
    }

    /// Forgets the failures outlier detection counted.
    pub(crate) fn reset_failures(&self) {
        if let Some(passive) = self.passive() {
            passive.reset();
        }
    }

    /// How far along its slow-start ramp the endpoint is at `now`, from 0
    /// to 1 (1 when not ramping).
    #[inline]
    pub(crate) fn ramp_fraction(&self, now: Instant, window: Duration) -> f64 {
        let from = self.ramp_from.load(Ordering::Relaxed);
        if from == 0 {
            return 1.0;
        }
        let elapsed = self.nanos_at(now).saturating_sub(from - 1);
        (elapsed as f64 / window.as_nanos().max(1) as f64).min(1.0)
    }

    /// The weight an estimate keeps after `elapsed_ns`: `e^(-elapsed/decay)`.
    #[inline]
    fn keep(&self, elapsed_ns: u64) -> f64 {
        (-(elapsed_ns as f64) / self.settings.nanos.decay).exp()
    }
}

/// What [`EndpointState::estimate_at`] read: the round-trip estimate and
/// how far a picker may trust it.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct Estimate {
    /// The decayed round-trip estimate in nanoseconds (the default round
    /// trip when there is no sample yet).
    pub rtt: f64,
    /// False until the endpoint has given a first sample: its estimate is
    /// then only the configured default.
    pub sampled: bool,
    /// The latest sample was a failure and still dominates the estimate.
    pub penalized: bool,
}

/// Moves the average in `slot` (`f64` bits, 0 = none yet) toward `sample`,
/// keeping `keep` of the old value. Never stores 0.0, which means "none".
fn blend(slot: &AtomicU64, sample: f64, keep: f64) {
    let average = f64::from_bits(slot.load(Ordering::Relaxed));
    let average = if average == 0.0 {
        sample
    } else {
        average * keep + sample * (1.0 - keep)
    };
    slot.store(average.max(1.0).to_bits(), Ordering::Relaxed);
}

/// [`LoadTracking`]'s durations in nanoseconds, as picks use them.
#[derive(Debug, Clone, Copy)]
#[repr(C)]
struct TrackingNanos {
    decay: f64,
    /// Idle for less than this, an estimate's decay is under 0.1%: skipped.
    fresh: u64,
    default_rtt: f64,
    failure_penalty: f64,
}

impl TrackingNanos {
    fn new(tracking: &LoadTracking) -> Self {
        let decay = tracking.decay.as_nanos().max(1);
        Self {
            decay: decay as f64,
            fresh: u64::try_from(decay / 1024).unwrap_or(u64::MAX),
            default_rtt: tracking.default_rtt.as_nanos() as f64,
            failure_penalty: tracking.failure_penalty.as_nanos() as f64,
        }
    }
}

impl fmt::Debug for EndpointState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EndpointState")
            .field("in_flight", &self.in_flight())
            .field("requests", &self.requests())
            .field("failures", &self.failures())
            .field("latency", &self.latency())
            .field("rtt_estimate_ms", &(self.rtt_estimate_nanos() / 1e6))
            .finish()
    }
}

/// `d` in nanoseconds as an `f64`, by way of whole seconds and the rest:
/// `as_nanos() as f64` converts a `u128`, a library call dearer than the
/// arithmetic it feeds on every response.
#[inline]
fn nanos_f64(d: Duration) -> f64 {
    d.as_secs() as f64 * 1e9 + f64::from(d.subsec_nanos())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_a_pick_reads_is_together_at_the_start() {
        // With the member's reference counts before it, 48 bytes: one
        // cache line when the allocation starts one, two at most.
        assert_eq!(std::mem::offset_of!(EndpointState, ramp_from), 32);
    }

    #[test]
    fn a_state_is_small() {
        // Inline in its member (see `pool::member`): with the member's
        // reference counts and endpoint, 104 bytes, glibc's 112-byte class.
        assert!(std::mem::size_of::<EndpointState>() <= 80);
    }

    fn state() -> EndpointState {
        EndpointState::new(LoadTracking::default(), None, None, Arc::default(), None)
    }

    #[test]
    fn first_sample_sets_the_average() {
        let s = state();
        assert_eq!(s.latency(), None);
        s.record(Some(Duration::from_millis(10)), false);
        assert_eq!(s.latency(), Some(Duration::from_millis(10)));
        assert_eq!((s.requests(), s.failures()), (1, 0));
        s.record(Some(Duration::from_millis(10)), true);
        assert_eq!((s.requests(), s.failures()), (2, 1));
    }

    #[test]
    fn rtt_starts_at_the_default_and_fast_failures_look_expensive() {
        let s = state();
        assert_eq!(s.rtt_estimate_nanos(), 30e6);
        s.record(Some(Duration::from_micros(100)), true);
        assert!(s.rtt_estimate_nanos() > 0.9e9, "{}", s.rtt_estimate_nanos());
        assert!(s.is_penalized_at(Instant::now()));
    }

    #[test]
    fn slow_is_not_failing() {
        let s = state();
        assert!(!s.estimate_at(Instant::now()).sampled);
        s.record(Some(Duration::from_secs(2)), false);
        let estimate = s.estimate_at(Instant::now());
        assert!(estimate.sampled && estimate.rtt > 1.9e9, "{estimate:?}");
        assert!(!estimate.penalized, "a slow success is no failure");
        s.record(Some(Duration::from_millis(1)), true);
        assert!(s.is_penalized_at(Instant::now()), "a failure after it is");
        s.record(Some(Duration::from_millis(1)), false);
        assert!(
            !s.is_penalized_at(Instant::now()),
            "and a success clears it"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn rtt_is_peak_sensitive_and_decays() {
        let s = state();
        s.record(Some(Duration::from_millis(1)), false);
        s.record(Some(Duration::from_millis(50)), false);
        assert!((s.rtt_estimate_nanos() - 50e6).abs() < 1e3);
        tokio::time::advance(Duration::from_secs(10)).await;
        let decayed = s.rtt_estimate_nanos();
        assert!(
            (decayed - 50e6 / std::f64::consts::E).abs() < 1e5,
            "{decayed}"
        );
    }
}
