//! Passive outlier detection: every finished request is evidence.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::mpsc::UnboundedSender;
use tokio::time::Instant;

use crate::health::HealthEvent;

/// When to take an endpoint out of rotation on the strength of the requests
/// it fails, and for how long.
///
/// On by default for every pool: an endpoint that fails 5 requests in a row
/// (refused or reset connections, 5xx answers; a 4xx is the caller's fault)
/// is ejected for 30 s, then 60 s the next time, up to 300 s; the count of
/// past ejections decays while the endpoint behaves. At most half a pool is
/// ejected at once, so a wide failure cannot empty it.
///
/// ```
/// use std::time::Duration;
/// use tower_lb::health::OutlierDetection;
///
/// let strict = OutlierDetection::new()
///     .consecutive_failures(3)
///     .failure_rate(0.5, 20, Duration::from_secs(10))
///     .base_ejection_time(Duration::from_secs(10))
///     .max_ejection_time(Duration::from_secs(120))
///     .max_ejected_percent(34);
/// let off = OutlierDetection::disabled();
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OutlierDetection {
    pub(crate) enabled: bool,
    pub(crate) consecutive_failures: u32,
    pub(crate) failure_rate: Option<FailureRate>,
    pub(crate) base_ejection_time: Duration,
    pub(crate) max_ejection_time: Duration,
    pub(crate) max_ejected_percent: u8,
}

/// Ejection on a failure rate: at least `threshold` of at least
/// `min_requests` requests in one window failed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct FailureRate {
    pub(crate) threshold: f64,
    pub(crate) min_requests: u32,
    pub(crate) window: Duration,
}

impl Default for OutlierDetection {
    fn default() -> Self {
        Self {
            enabled: true,
            consecutive_failures: 5,
            failure_rate: None,
            base_ejection_time: Duration::from_secs(30),
            max_ejection_time: Duration::from_secs(300),
            max_ejected_percent: 50,
        }
    }
}

impl OutlierDetection {
    /// The defaults: 5 consecutive failures, 30 s base, 300 s cap, 50%.
    pub fn new() -> Self {
        Self::default()
    }

    /// No passive ejection at all.
    pub fn disabled() -> Self {
        Self {
            enabled: false,
            ..Self::default()
        }
    }

    /// Eject after this many failures in a row (default 5; at least 1).
    pub fn consecutive_failures(mut self, n: u32) -> Self {
        self.consecutive_failures = n.max(1);
        self
    }

    /// Also eject when at least `threshold` (0 to 1) of at least
    /// `min_requests` requests in a `window` failed. Off by default.
    pub fn failure_rate(mut self, threshold: f64, min_requests: u32, window: Duration) -> Self {
        let threshold = if threshold.is_finite() {
            threshold.clamp(0.0, 1.0)
        } else {
            1.0
        };
        self.failure_rate = Some(FailureRate {
            threshold,
            min_requests: min_requests.max(1),
            window: window.max(Duration::from_millis(1)),
        });
        self
    }

    /// The first ejection's length; the n-th lasts n times as long
    /// (default 30 s).
    pub fn base_ejection_time(mut self, time: Duration) -> Self {
        self.base_ejection_time = time;
        self
    }

    /// The longest an ejection lasts (default 300 s).
    pub fn max_ejection_time(mut self, time: Duration) -> Self {
        self.max_ejection_time = time;
        self
    }

    /// The largest share of a pool ejected at once, in percent (default
    /// 50; at most 100). With 50, a pool of 3 ejects at most 1.
    pub fn max_ejected_percent(mut self, percent: u8) -> Self {
        self.max_ejected_percent = percent.min(100);
        self
    }

    /// How long the `times`-th ejection lasts.
    pub(crate) fn ejection_time(&self, times: u32) -> Duration {
        self.base_ejection_time
            .saturating_mul(times.max(1))
            .min(self.max_ejection_time.max(self.base_ejection_time))
    }
}

/// The request path's half of outlier detection, over one endpoint's
/// counts: counts failures with atomics and, when a threshold is crossed,
/// tells the pool's driver, which decides (the share cap needs the whole
/// pool's view).
///
/// A view, made when an outcome is counted: the counts live in the
/// endpoint's state (the run of failures in the word its in-flight count
/// leaves free), the settings in the pool's shared ones, so that a monitor
/// costs an endpoint 4 bytes, or 12 with a failure-rate window (it was 24,
/// which took an endpoint's member past an allocation size).
#[derive(Debug, Clone, Copy)]
pub(crate) struct PassiveMonitor<'a> {
    /// One copy for all the pool's endpoints.
    pub(crate) shared: &'a MonitorShared,
    // No key of its own: the caller, which holds the endpoint, names it
    // (a copy of the key cost 48 bytes an endpoint).
    pub(crate) consecutive: &'a AtomicU32,
    /// The failure-rate window, only when the pool counts one (off by
    /// default): boxed, so that a state without one stays small.
    pub(crate) window: Option<&'a RateWindow>,
}

/// One failure-rate window's counts.
#[derive(Debug, Default)]
pub(crate) struct RateWindow {
    start: AtomicU64,
    requests: AtomicU32,
    failures: AtomicU32,
}

impl RateWindow {
    /// A window for an endpoint of a pool that counts failure rates.
    pub(crate) fn for_pool(shared: &MonitorShared) -> Option<Box<Self>> {
        shared.config.failure_rate.map(|_| Box::default())
    }
}

/// What every monitor of one pool shares: the settings and where to report.
#[derive(Debug)]
pub(crate) struct MonitorShared {
    config: OutlierDetection,
    events: UnboundedSender<HealthEvent>,
}

impl MonitorShared {
    pub(crate) fn new(config: OutlierDetection, events: UnboundedSender<HealthEvent>) -> Self {
        Self { config, events }
    }
}

impl PassiveMonitor<'_> {
    /// Records one outcome of the endpoint `key`; `now_ns` is the state's
    /// own clock.
    pub(crate) fn record(&self, key: &str, failed: bool, now_ns: u64) {
        if failed {
            let run = self.consecutive.fetch_add(1, Ordering::Relaxed) + 1;
            // At every multiple of the threshold: one event per threshold's
            // worth of failures, so an endpoint the ejection cap spared is
            // reported again while it goes on failing.
            let threshold = self.shared.config.consecutive_failures;
            if run >= threshold && run.is_multiple_of(threshold) {
                self.report(key, format!("{run} consecutive failures"));
            }
        } else {
            self.consecutive.store(0, Ordering::Relaxed);
        }
        if let (Some(rate), Some(window)) = (self.shared.config.failure_rate, self.window) {
            self.record_rate(key, window, &rate, failed, now_ns);
        }
    }

    fn record_rate(
        &self,
        key: &str,
        window: &RateWindow,
        rate: &FailureRate,
        failed: bool,
        now_ns: u64,
    ) {
        let start = window.start.load(Ordering::Relaxed);
        if now_ns.saturating_sub(start) >= rate.window.as_nanos() as u64 {
            // A new window; a racing reset loses a sample or two, harmlessly.
            window.start.store(now_ns, Ordering::Relaxed);
            window.requests.store(0, Ordering::Relaxed);
            window.failures.store(0, Ordering::Relaxed);
        }
        let requests = window.requests.fetch_add(1, Ordering::Relaxed) + 1;
        let failures = if failed {
            window.failures.fetch_add(1, Ordering::Relaxed) + 1
        } else {
            window.failures.load(Ordering::Relaxed)
        };
        if failed
            && requests >= rate.min_requests
            && f64::from(failures) >= rate.threshold * f64::from(requests)
        {
            self.report(
                key,
                format!(
                    "{failures} of {requests} requests failed in the last {:?}",
                    rate.window
                ),
            );
            // Start over, so one bad window sends one event.
            window.requests.store(0, Ordering::Relaxed);
            window.failures.store(0, Ordering::Relaxed);
        }
    }

    /// Forgets past failures: the endpoint was just ejected or came back.
    pub(crate) fn reset(&self) {
        self.consecutive.store(0, Ordering::Relaxed);
        if let Some(window) = self.window {
            window.requests.store(0, Ordering::Relaxed);
            window.failures.store(0, Ordering::Relaxed);
        }
    }

    fn report(&self, key: &str, reason: String) {
        // The driver may be gone (pool dropped); nothing to do then.
        let _ = self.shared.events.send(HealthEvent::Failing {
            key: key.into(),
            reason,
            at: Instant::now(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_again_while_failures_go_on() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let shared = MonitorShared::new(OutlierDetection::new().consecutive_failures(3), tx);
        let consecutive = AtomicU32::new(0);
        let monitor = PassiveMonitor {
            shared: &shared,
            consecutive: &consecutive,
            window: None,
        };
        for _ in 0..7 {
            monitor.record("http://h:1", true, 0);
        }
        // At 3 and 6: a refused ejection is asked for again.
        let events: Vec<_> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
        assert_eq!(events.len(), 2);
        assert!(
            matches!(&events[0], HealthEvent::Failing { key, .. } if &**key == "http://h:1"),
            "{events:?}"
        );
        monitor.record("http://h:1", false, 0);
        monitor.record("http://h:1", true, 0);
        assert!(rx.try_recv().is_err(), "a success starts the count over");
    }
}
