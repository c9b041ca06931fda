//! [`Pool`]: the live endpoint set of one logical service.
//!
//! A pool owns a discovery source and a balancer. A background task drives
//! the source; every update becomes a new immutable snapshot (the member
//! list and the balancer's picker for it), published with `arc-swap`, so a
//! pick reads the current snapshot without taking a lock.

mod builder;
mod cached;
mod clock;
mod driver;
pub(crate) mod load;
pub(crate) mod member;
pub(crate) mod members;
mod pick;
mod picked;
mod restart;
mod roster;
mod stats;

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::watch;
use tokio::time::Instant;

pub use builder::{DEFAULT_CANCEL_TIMEOUT, PoolBuilder};
pub use cached::CachedPool;
use load::LoadTracking;
use member::Member;
use members::Members;
pub use picked::Picked;
use restart::DriverSlot;

use crate::balance::rng::SeededRng;
use crate::balance::{Balancer, PickContext, Picker};
use crate::discover::Discover;
use crate::health::Views;
use crate::stats::PoolStats;
use crate::{Endpoint, Error};

/// How long a request waits for discovery's first answer, by default.
pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(5);

/// The live endpoint set of one logical service. Cheap to clone: clones
/// share the set. Dropping the last clone stops the background task.
///
/// The background task runs on the tokio runtime of the first pick (or of
/// the `build` call, inside one). If that runtime shuts down while the pool
/// is still in use (a client kept in a static across tests, each with its
/// own runtime), the next pick starts the task again on its own runtime,
/// with the same source and endpoint set; health state (ejections) starts
/// afresh.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use tower_lb::{Pool, balance::LeastRequest, discover::Fixed};
///
/// let pool = Pool::builder("greet", Fixed::new(["127.0.0.1:5001", "127.0.0.1:5002"])?)
///     .balancer(LeastRequest::new())
///     .ready_timeout(Duration::from_secs(1))
///     .build();
/// pool.ready().await?;
/// assert_eq!(pool.endpoints().len(), 2);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Pool {
    shared: Arc<Shared>,
}

pub(crate) struct Shared {
    service: Arc<str>,
    balancer: Arc<dyn Balancer>,
    /// The balancer's wishes, fixed for the pool's life.
    tracking: LoadTracking,
    /// Requests in flight across the pool, when the balancer asked for it.
    total_in_flight: Option<Arc<AtomicUsize>>,
    /// The time source of every endpoint's estimates.
    clock: Arc<clock::PoolClock>,
    /// The slow-start window, if new and returning endpoints ramp up.
    slow_start: Option<Duration>,
    /// A request cancelled after waiting this long counts as timed out.
    cancel_timeout: Option<Duration>,
    /// A body abandoned this long after its head counts as timed out.
    abandoned_body_timeout: Option<Duration>,
    /// Above this many endpoints, series go without endpoint labels.
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    metrics_endpoint_limit: usize,
    /// The pool's seeded sequence, when seeded.
    rng: Option<Arc<SeededRng>>,
    ready_timeout: Duration,
    allow_empty: bool,
    /// Shared with every [`CachedPool`]'s cache.
    snapshot: Arc<ArcSwap<Snapshot>>,
    ready: watch::Sender<bool>,
    status: Mutex<SourceStatus>,
    /// Fast check on the pick path; the slot itself is behind the mutex.
    started: AtomicBool,
    driver: Mutex<DriverSlot>,
    /// What every start of the background task is given.
    driver_config: driver::DriverConfig,
}

/// One published endpoint set and the picker built for it.
pub(crate) struct Snapshot {
    /// The eligible members: what the picker picks from.
    members: Members,
    /// Every member, eligible or not, in the pool's order (not sorted).
    all: Members,
    /// The health of the members that have a health record (the others
    /// are healthy).
    health: Arc<Views>,
    /// Too few members are healthy: `members` is all of them.
    panic: bool,
    picker: Box<dyn Picker>,
    /// False only for the placeholder before discovery's first answer.
    ready: bool,
}

/// What the pool knows about its source's health, for stats and errors.
#[derive(Default)]
pub(crate) struct SourceStatus {
    updates: u64,
    rejected_updates: u64,
    errors: u64,
    last_update: Option<Instant>,
    last_error: Option<String>,
    /// The source has failed since its last good update.
    stale: bool,
    /// When the pool last warned that every endpoint fails its check.
    check_warned_at: Option<Instant>,
    /// The pool has said that discovery gave nothing within the ready
    /// timeout.
    ready_warned: bool,
}

impl Pool {
    /// Starts configuring a pool for `service`, fed by `source`.
    pub fn builder(service: impl Into<String>, source: impl Discover) -> PoolBuilder {
        PoolBuilder::new(service.into(), Box::new(source))
    }

    /// `endpoint` as the label of its series, or `None` when the pool is
    /// larger than its [metrics endpoint
    /// limit](PoolBuilder::metrics_endpoint_limit) (and nothing at all
    /// without the `metrics` feature).
    pub(crate) fn metrics_label<'a>(&self, endpoint: &'a Endpoint) -> Option<&'a Endpoint> {
        #[cfg(feature = "metrics")]
        {
            let size = self.shared.snapshot.load().all.len();
            crate::metrics::labelled(endpoint, size, self.shared.metrics_endpoint_limit)
        }
        #[cfg(not(feature = "metrics"))]
        {
            let _ = endpoint;
            None
        }
    }

    /// The logical service name.
    pub fn service(&self) -> &str {
        &self.shared.service
    }

    pub(crate) fn service_arc(&self) -> &Arc<str> {
        &self.shared.service
    }

    /// The balancer's name.
    pub fn balancer_name(&self) -> &'static str {
        self.shared.balancer.name()
    }

    /// True once discovery has produced its first endpoint set.
    pub fn is_ready(&self) -> bool {
        self.shared.snapshot.load().ready
    }

    /// Waits until discovery has produced its first endpoint set, at most
    /// the pool's ready timeout; then fails with [`Error::NotReady`].
    pub async fn ready(&self) -> Result<(), Error> {
        self.ensure_started();
        if self.is_ready() {
            return Ok(());
        }
        let mut ready = self.shared.ready.subscribe();
        let waited = self.shared.ready_timeout;
        match tokio::time::timeout(waited, ready.wait_for(|r| *r)).await {
            Ok(Ok(_)) => Ok(()),
            // The sender lives in `shared`, which we hold: it cannot close.
            Ok(Err(_)) | Err(_) => {
                let last_error = {
                    let mut status = self.shared.status();
                    if !std::mem::replace(&mut status.ready_warned, true) {
                        tracing::warn!(
                            service = %self.shared.service,
                            waited_ms = u64::try_from(waited.as_millis()).unwrap_or(u64::MAX),
                            last_error = status.last_error.as_deref().unwrap_or("none: it has not answered"),
                            "discovery gave no endpoints within the ready timeout; \
                             requests fail with NotReady until it does (said once)"
                        );
                    }
                    status.last_error.clone()
                };
                Err(Error::NotReady {
                    service: self.shared.service.clone(),
                    waited,
                    last_error,
                })
            }
        }
    }

    /// Chooses an endpoint now, without waiting for discovery.
    ///
    /// Fails with [`Error::NotReady`] before discovery's first answer and
    /// with [`Error::NoEndpoints`] when the set is empty.
    #[inline]
    pub fn pick(&self) -> Result<Picked, Error> {
        self.pick_with(&PickContext::new(&self.shared.service))
    }

    /// Chooses an endpoint for a request described by `ctx` (its path and
    /// headers for hashing balancers, endpoints to avoid).
    ///
    /// Whatever the balancer, an endpoint in `ctx.avoid` is returned only
    /// when every endpoint is avoided.
    pub fn pick_with(&self, ctx: &PickContext<'_>) -> Result<Picked, Error> {
        self.ensure_started();
        self.pick_from(&self.shared.snapshot.load(), ctx)
    }

    /// A handle for one task or thread that caches the pool's current
    /// endpoint set: its picks skip the shared snapshot load (an atomic
    /// check replaces a reference-count dance), which is most of the cost
    /// of a pick. The load-balancing layer keeps one per service clone.
    pub fn cached(&self) -> CachedPool {
        CachedPool::new(self.clone())
    }

    /// Every endpoint discovery knows, eligible or not, sorted by key.
    pub fn endpoints(&self) -> Vec<Endpoint> {
        sorted(
            self.shared
                .snapshot
                .load()
                .all
                .iter()
                .map(|m| m.endpoint().clone()),
        )
    }

    /// How many endpoints discovery knows, eligible or not: `endpoints().len()`
    /// without the copy.
    pub fn len(&self) -> usize {
        self.shared.snapshot.load().all.len()
    }

    /// True when the pool has no endpoints (or discovery has not answered).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The endpoints requests may go to now: not ejected, not failing
    /// health checks (or all of them, in panic mode).
    pub fn eligible_endpoints(&self) -> Vec<Endpoint> {
        sorted(
            self.shared
                .snapshot
                .load()
                .members
                .iter()
                .map(|m| m.endpoint().clone()),
        )
    }

    /// Every member with its live state, sorted by key.
    pub fn members(&self) -> Vec<Member> {
        let mut members: Vec<Member> = self.shared.snapshot.load().all.iter().cloned().collect();
        members.sort_unstable_by(|a, b| a.endpoint().key().cmp(b.endpoint().key()));
        members
    }

    /// True when too few endpoints are healthy and the pool balances over
    /// all of them (see [`PoolBuilder::panic_threshold`]).
    pub fn in_panic(&self) -> bool {
        self.shared.snapshot.load().panic
    }

    /// A serializable picture of the pool: endpoints with their load,
    /// counters and health, and the discovery source's health.
    pub fn stats(&self) -> PoolStats {
        stats::assemble(&self.shared)
    }
}

/// `endpoints` sorted by key: the pool keeps its members in the order
/// they joined (see [`Members`]), and its listings promise key order.
fn sorted(endpoints: impl Iterator<Item = Endpoint>) -> Vec<Endpoint> {
    let mut endpoints: Vec<Endpoint> = endpoints.collect();
    endpoints.sort_unstable_by(|a, b| a.key().cmp(b.key()));
    endpoints
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let snapshot = self.shared.snapshot.load();
        f.debug_struct("Pool")
            .field("service", &self.shared.service)
            .field("balancer", &self.shared.balancer)
            .field("ready", &snapshot.ready)
            .field("endpoints", &snapshot.members.len())
            .finish()
    }
}

impl Shared {
    /// The source status. Its critical sections cannot panic half-way, so
    /// a poisoned lock still guards consistent data: use it rather than
    /// spreading a panic to every caller.
    pub(crate) fn status(&self) -> MutexGuard<'_, SourceStatus> {
        self.status.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
