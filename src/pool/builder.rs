//! [`PoolBuilder`]: a pool's configuration, and the build that starts it.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::watch;

use crate::balance::rng::{self, SeededRng};
use crate::balance::{Balancer, Members, RoundRobin};
use crate::discover::BoxDiscover;
use crate::health::{DEFAULT_PANIC_THRESHOLD, HealthCheck, OutlierDetection};
use crate::pool::clock::PoolClock;
use crate::pool::restart::DriverSlot;
use crate::pool::{DEFAULT_READY_TIMEOUT, Pool, Shared, Snapshot, SourceStatus, driver};

/// Configures a [`Pool`]. Made by [`Pool::builder`].
pub struct PoolBuilder {
    service: String,
    source: BoxDiscover,
    balancer: Option<Arc<dyn Balancer>>,
    ready_timeout: Duration,
    allow_empty: bool,
    backoff: driver::Backoff,
    outlier: OutlierDetection,
    check: Option<HealthCheck>,
    panic_threshold: f64,
    slow_start: Option<Duration>,
    cancel_timeout: Option<Duration>,
    abandoned_body_timeout: Option<Duration>,
    metrics_endpoint_limit: usize,
    seed: Option<u64>,
}

/// How long a request may wait before its cancellation counts as a
/// timeout of its endpoint, by default: 1 s, the round trip Peak-EWMA
/// already charges a failure (its failure penalty).
pub const DEFAULT_CANCEL_TIMEOUT: Duration = Duration::from_secs(1);

impl PoolBuilder {
    /// The defaults, for [`Pool::builder`].
    pub(super) fn new(service: String, source: BoxDiscover) -> Self {
        PoolBuilder {
            service,
            source,
            balancer: None,
            ready_timeout: DEFAULT_READY_TIMEOUT,
            allow_empty: false,
            backoff: driver::Backoff::default(),
            outlier: OutlierDetection::default(),
            check: None,
            panic_threshold: DEFAULT_PANIC_THRESHOLD,
            slow_start: None,
            cancel_timeout: Some(DEFAULT_CANCEL_TIMEOUT),
            abandoned_body_timeout: None,
            metrics_endpoint_limit: crate::metrics::DEFAULT_ENDPOINT_LIMIT,
            seed: None,
        }
    }

    /// The balancer for this pool (default: [`RoundRobin`]).
    pub fn balancer(mut self, balancer: impl Balancer) -> Self {
        self.balancer = Some(Arc::new(balancer));
        self
    }

    pub(crate) fn balancer_arc(mut self, balancer: Arc<dyn Balancer>) -> Self {
        self.balancer = Some(balancer);
        self
    }

    pub(crate) fn has_balancer(&self) -> bool {
        self.balancer.is_some()
    }

    /// How long a request waits for discovery's first answer before failing
    /// with [`Error::NotReady`](crate::Error::NotReady) (default 5 s).
    pub fn ready_timeout(mut self, timeout: Duration) -> Self {
        self.ready_timeout = timeout;
        self
    }

    /// Whether an [`Update::Replace`](crate::discover::Update::Replace) with
    /// no endpoints may empty a non-empty pool (default: no; it is logged,
    /// counted in stats and ignored, since a registry that suddenly lists
    /// nothing is far more often broken than right).
    pub fn allow_empty(mut self, allow: bool) -> Self {
        self.allow_empty = allow;
        self
    }

    /// How long to wait before asking a failed source again: starts at
    /// `base`, doubles per consecutive failure up to `cap`, with jitter
    /// (defaults 100 ms and 30 s).
    pub fn discovery_backoff(mut self, base: Duration, cap: Duration) -> Self {
        self.backoff = driver::Backoff::new(base, cap);
        self
    }

    /// Passive outlier detection: when to eject an endpoint on the strength
    /// of the requests it fails (default: on, see [`OutlierDetection`]).
    pub fn outlier_detection(mut self, outlier: OutlierDetection) -> Self {
        self.outlier = outlier;
        self
    }

    /// Active health checks (default: none).
    pub fn health_check(mut self, check: HealthCheck) -> Self {
        self.check = Some(check);
        self
    }

    /// Below this share of eligible endpoints (0 to 1, default 0.5), the
    /// pool balances over all of them rather than crushing the few that
    /// remain; stats report the panic. 0 turns panic mode off.
    pub fn panic_threshold(mut self, threshold: f64) -> Self {
        self.panic_threshold = if threshold.is_finite() {
            threshold.clamp(0.0, 1.0)
        } else {
            DEFAULT_PANIC_THRESHOLD
        };
        self
    }

    /// Ramps the traffic of an endpoint that joins the pool or returns to
    /// rotation up over `window` (from 10% to its full share) instead of
    /// giving it its full share at once (default: off; 30 s is typical).
    pub fn slow_start(mut self, window: Duration) -> Self {
        self.slow_start = (!window.is_zero()).then_some(window);
        self
    }

    /// A request dropped before its answer (a caller's own timeout, a
    /// `select!`, a dropped task, a hedge that lost) after waiting at least
    /// `timeout` counts as a timeout failure of its endpoint, for outlier
    /// detection and Peak-EWMA (default [`DEFAULT_CANCEL_TIMEOUT`], 1 s).
    /// A request dropped sooner still leaves its wait as a latency sample.
    /// Raise it for services whose calls are legitimately long (long
    /// polls), or turn it off with [`without_cancel_timeout`](Self::without_cancel_timeout).
    pub fn cancel_timeout(mut self, timeout: Duration) -> Self {
        self.cancel_timeout = Some(timeout);
        self
    }

    /// A response body the caller drops unfinished `timeout` or more after
    /// its head counts as a timeout failure of its endpoint (default: off).
    /// For services whose answers are short: an instance that sends its
    /// head and then trickles or stalls its body is ejected, where by
    /// default a dropped body is the caller's choice (it may stop reading a
    /// long stream on purpose) and the head's verdict stands.
    pub fn abandoned_body_timeout(mut self, timeout: Duration) -> Self {
        self.abandoned_body_timeout = Some(timeout);
        self
    }

    /// Above `limit` endpoints (default 64), the pool's per-endpoint series
    /// (feature `metrics`) go without `server.address` and `server.port`:
    /// one series per service instead of one per instance, so that a large
    /// registry cannot blow up the time-series database. See
    /// [`metrics`](crate::metrics).
    pub fn metrics_endpoint_limit(mut self, limit: usize) -> Self {
        self.metrics_endpoint_limit = limit;
        self
    }

    /// A cancelled request never counts as a failure (its wait is still a
    /// latency sample).
    pub fn without_cancel_timeout(mut self) -> Self {
        self.cancel_timeout = None;
        self
    }

    /// Seeds every random choice the pool makes (picks, its round-robin
    /// starting point, slow-start draws, discovery backoff, health-check
    /// spread), so that a run on tokio's paused clock, on one thread,
    /// repeats exactly (default: fresh randomness per thread). A seeded
    /// pool keeps a sequence per thread that draws from it (the first
    /// thread gets the seed's own), one atomic add per draw, a little
    /// dearer than the per-thread default.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Builds the pool. Its background task starts now when called inside
    /// a tokio runtime, otherwise on first use inside one.
    pub fn build(self) -> Pool {
        let balancer = self.balancer.unwrap_or_else(|| Arc::new(RoundRobin::new()));
        let tracking = balancer.load_tracking();
        let rng = self.seed.map(|seed| Arc::new(SeededRng::new(seed)));
        let placeholder = Snapshot {
            picker: rng::building_with(rng.as_ref(), || balancer.picker(&Members::default())),
            members: Members::default(),
            all: Members::default(),
            health: Arc::default(),
            panic: false,
            ready: false,
        };
        let pool = Pool {
            shared: Arc::new(Shared {
                service: self.service.into(),
                balancer,
                tracking,
                total_in_flight: tracking
                    .total_in_flight
                    .then(|| Arc::new(AtomicUsize::new(0))),
                // A seeded pool repeats exactly: its picks read the clock
                // itself rather than a per-thread count's recent reading.
                clock: Arc::new(PoolClock::new(self.seed.is_some())),
                ready_timeout: self.ready_timeout,
                allow_empty: self.allow_empty,
                snapshot: Arc::new(ArcSwap::from_pointee(placeholder)),
                ready: watch::Sender::new(false),
                status: Mutex::new(SourceStatus::default()),
                started: AtomicBool::new(false),
                slow_start: self.slow_start,
                cancel_timeout: self.cancel_timeout,
                abandoned_body_timeout: self.abandoned_body_timeout,
                metrics_endpoint_limit: self.metrics_endpoint_limit,
                rng,
                driver: Mutex::new(DriverSlot::Waiting(self.source)),
                driver_config: driver::DriverConfig {
                    backoff: self.backoff,
                    outlier: self.outlier,
                    check: self.check,
                    panic_threshold: self.panic_threshold,
                },
            }),
        };
        pool.ensure_started();
        pool
    }
}

impl fmt::Debug for PoolBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolBuilder")
            .field("service", &self.service)
            .field("balancer", &self.balancer)
            .field("ready_timeout", &self.ready_timeout)
            .field("allow_empty", &self.allow_empty)
            .finish_non_exhaustive()
    }
}
