//! [`Pool`]: the live endpoint set of one logical service.
//!
//! A pool owns a discovery source and a balancer. A background task drives
//! the source; every update becomes a new immutable snapshot (the member
//! list and the balancer's picker for it), published with `arc-swap`, so a
//! pick reads the current snapshot without taking a lock.

mod clock;
mod driver;
mod load;
mod member;
mod picked;

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::watch;
use tokio::task::AbortHandle;
use tokio::time::Instant;

pub use load::{EndpointState, LoadTracking};
pub use member::Member;
pub use picked::Picked;

use crate::balance::{Balancer, PickContext, Picker, RoundRobin, rng};
use crate::discover::{BoxDiscover, Discover};
use crate::health::{
    DEFAULT_PANIC_THRESHOLD, HealthCheck, HealthView, OutlierDetection, remaining,
};
use crate::stats::{EndpointStats, PoolStats};
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

/// The source waits here until a tokio runtime is at hand to run it: before
/// the first pick, and again after the runtime it ran on shut down.
enum DriverSlot {
    Waiting(BoxDiscover),
    Running(AbortHandle),
    Taken,
}

/// One published endpoint set and the picker built for it.
pub(crate) struct Snapshot {
    /// The eligible members: what the picker picks from.
    members: Box<[Member]>,
    /// Every member, eligible or not, sorted by key.
    all: Box<[Member]>,
    /// The health of each of `all`, in the same order.
    health: Box<[HealthView]>,
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
}

impl Pool {
    /// Starts configuring a pool for `service`, fed by `source`.
    pub fn builder(service: impl Into<String>, source: impl Discover) -> PoolBuilder {
        PoolBuilder {
            service: service.into(),
            source: Box::new(source),
            balancer: None,
            ready_timeout: DEFAULT_READY_TIMEOUT,
            allow_empty: false,
            backoff: driver::Backoff::default(),
            outlier: OutlierDetection::default(),
            check: None,
            panic_threshold: DEFAULT_PANIC_THRESHOLD,
            slow_start: None,
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
            Ok(Err(_)) | Err(_) => Err(Error::NotReady {
                service: self.shared.service.clone(),
                waited,
                last_error: self.shared.status().last_error.clone(),
            }),
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
        CachedPool {
            pool: self.clone(),
            cache: arc_swap::Cache::new(self.shared.snapshot.clone()),
        }
    }

    /// The pick itself, from a snapshot already in hand.
    #[inline]
    fn pick_from(&self, snapshot: &Snapshot, ctx: &PickContext<'_>) -> Result<Picked, Error> {
        let members = &snapshot.members;
        let tracked;
        let ctx = match &self.shared.total_in_flight {
            Some(total) => {
                tracked = PickContext {
                    total_in_flight: Some(total.load(Ordering::Relaxed)),
                    ..*ctx
                };
                &tracked
            }
            None => ctx,
        };
        let Some(mut index) = snapshot
            .picker
            .pick(members, ctx)
            .filter(|&i| i < members.len())
        else {
            return Err(if snapshot.ready {
                self.no_endpoints()
            } else {
                Error::NotReady {
                    service: self.shared.service.clone(),
                    waited: Duration::ZERO,
                    last_error: None,
                }
            });
        };
        if let Some(window) = self.shared.slow_start {
            index = ramped(members, ctx, &*snapshot.picker, index, window);
        }
        if ctx.avoids_any() && ctx.avoids(members[index].endpoint()) {
            index = avoiding(members, ctx, &*snapshot.picker)
                .or_else(|| least_recently_avoided(members, ctx))
                .unwrap_or(index);
        }
        Ok(Picked::new(members[index].clone()))
    }

    fn no_endpoints(&self) -> Error {
        Error::NoEndpoints {
            service: self.shared.service.clone(),
        }
    }

    /// Every endpoint discovery knows, eligible or not, sorted by key.
    pub fn endpoints(&self) -> Vec<Endpoint> {
        let snapshot = self.shared.snapshot.load();
        snapshot.all.iter().map(|m| m.endpoint().clone()).collect()
    }

    /// The endpoints requests may go to now: not ejected, not failing
    /// health checks (or all of them, in panic mode).
    pub fn eligible_endpoints(&self) -> Vec<Endpoint> {
        let snapshot = self.shared.snapshot.load();
        snapshot
            .members
            .iter()
            .map(|m| m.endpoint().clone())
            .collect()
    }

    /// Every member with its live state, sorted by key.
    pub fn members(&self) -> Vec<Member> {
        self.shared.snapshot.load().all.to_vec()
    }

    /// True when too few endpoints are healthy and the pool balances over
    /// all of them (see [`PoolBuilder::panic_threshold`]).
    pub fn in_panic(&self) -> bool {
        self.shared.snapshot.load().panic
    }

    /// A serializable picture of the pool: endpoints with their load,
    /// counters and health, and the discovery source's health.
    pub fn stats(&self) -> PoolStats {
        let snapshot = self.shared.snapshot.load();
        let status = self.shared.status();
        let endpoints = snapshot
            .all
            .iter()
            .zip(snapshot.health.iter())
            .map(|(member, health)| {
                let mut stats = EndpointStats::of(member);
                stats.health = health.state;
                stats.ejected_for_secs = remaining(health.ejected_until).map(|d| d.as_secs_f64());
                stats.times_ejected = health.times_ejected;
                stats.failed_checks = health.failed_checks;
                stats.last_check_error = health.last_check_error.clone();
                stats
            })
            .collect();
        PoolStats {
            service: self.shared.service.to_string(),
            balancer: self.shared.balancer.name(),
            ready: snapshot.ready,
            eligible: snapshot.members.len(),
            panic: snapshot.panic,
            endpoints,
            discovery_updates: status.updates,
            discovery_rejected_updates: status.rejected_updates,
            discovery_errors: status.errors,
            discovery_stale: status.stale,
            discovery_last_error: status.last_error.clone(),
            seconds_since_update: status.last_update.map(|t| t.elapsed().as_secs_f64()),
        }
    }

    /// Starts the background task if it has not started and a tokio runtime
    /// is at hand. Building a pool outside a runtime is allowed; the task
    /// then starts on first use.
    #[inline]
    fn ensure_started(&self) {
        if !self.shared.started.load(Ordering::Acquire) {
            self.start_driver();
        }
    }

    #[cold]
    fn start_driver(&self) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let source = {
            let mut slot = self.shared.driver();
            match std::mem::replace(&mut *slot, DriverSlot::Taken) {
                DriverSlot::Waiting(source) => source,
                other => {
                    *slot = other;
                    return;
                }
            }
        };
        // Spawned without the lock: a runtime that is shutting down drops
        // the task at once, and the source's home parks it back in the slot.
        let weak = Arc::downgrade(&self.shared);
        let home = driver::SourceHome::new(weak.clone(), source);
        let task = runtime.spawn(driver::drive(weak, home, self.shared.driver_config.clone()));
        let mut slot = self.shared.driver();
        // Unless the task was dropped (and its source parked) already.
        if let DriverSlot::Taken = &*slot {
            *slot = DriverSlot::Running(task.abort_handle());
            self.shared.started.store(true, Ordering::Release);
        }
    }
}

/// Slow start, for any balancer: an endpoint `f` of the way through its
/// ramp keeps a pick with probability `f` (at least 10%, as Envoy's default
/// minimum weight); otherwise the picker is asked once more.
#[inline]
fn ramped(
    members: &[Member],
    ctx: &PickContext<'_>,
    picker: &dyn Picker,
    index: usize,
    window: Duration,
) -> usize {
    let state = members[index].state();
    let fraction = state.ramp_fraction(state.recent_now(), window).max(0.1);
    if fraction >= 1.0 || (rng::next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= fraction {
        return index;
    }
    picker
        .pick(members, ctx)
        .filter(|&i| i < members.len())
        .unwrap_or(index)
}

/// The safety net behind every balancer for [`PickContext::avoid`]: ask
/// the picker twice more (a load-aware picker then still weighs load),
/// then take the first eligible endpoint from a random start. `None` when
/// every endpoint is avoided.
#[cold]
fn avoiding(members: &[Member], ctx: &PickContext<'_>, picker: &dyn Picker) -> Option<usize> {
    for _ in 0..2 {
        if let Some(i) = picker.pick(members, ctx).filter(|&i| i < members.len())
            && !ctx.avoids(members[i].endpoint())
        {
            return Some(i);
        }
    }
    let start = crate::balance::rng::below(members.len());
    (0..members.len())
        .map(|step| (start + step) % members.len())
        .find(|&i| !ctx.avoids(members[i].endpoint()))
}

/// When every endpoint is avoided: the one avoided longest ago (the first
/// in the set's order that is still a member), so a call that outlives the
/// pool's size cycles through the endpoints instead of repeating the last.
#[cold]
fn least_recently_avoided(members: &[Member], ctx: &PickContext<'_>) -> Option<usize> {
    ctx.avoid?.iter().find_map(|avoided| {
        members
            .iter()
            .position(|m| m.endpoint().same_instance(avoided))
    })
}

/// A per-task handle to a [`Pool`] that caches its current endpoint set.
/// Made by [`Pool::cached`]; picks take `&mut self`.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use tower_lb::{Pool, discover::Fixed};
///
/// let pool = Pool::builder("greet", Fixed::new(["127.0.0.1:5001", "127.0.0.1:5002"])?).build();
/// pool.ready().await?;
/// let mut local = pool.cached();
/// let picked = local.pick()?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct CachedPool {
    pool: Pool,
    cache: arc_swap::Cache<Arc<ArcSwap<Snapshot>>, Arc<Snapshot>>,
}

impl CachedPool {
    /// [`Pool::pick`], through the cache.
    #[inline]
    pub fn pick(&mut self) -> Result<Picked, Error> {
        let ctx = PickContext::new(&self.pool.shared.service);
        self.pool.ensure_started();
        let snapshot = self.cache.load();
        self.pool.pick_from(snapshot, &ctx)
    }

    /// [`Pool::pick_with`], through the cache.
    #[inline]
    pub fn pick_with(&mut self, ctx: &PickContext<'_>) -> Result<Picked, Error> {
        self.pool.ensure_started();
        let snapshot = self.cache.load();
        self.pool.pick_from(snapshot, ctx)
    }

    /// The pool behind the cache.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }
}

impl fmt::Debug for CachedPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("CachedPool").field(&self.pool).finish()
    }
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

impl PoolBuilder {
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
    /// with [`Error::NotReady`] (default 5 s).
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

    /// Builds the pool. Its background task starts now when called inside
    /// a tokio runtime, otherwise on first use inside one.
    pub fn build(self) -> Pool {
        let balancer = self.balancer.unwrap_or_else(|| Arc::new(RoundRobin::new()));
        let tracking = balancer.load_tracking();
        let placeholder = Snapshot {
            picker: balancer.picker(&[]),
            members: Box::new([]),
            all: Box::new([]),
            health: Box::new([]),
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
                clock: Arc::default(),
                ready_timeout: self.ready_timeout,
                allow_empty: self.allow_empty,
                snapshot: Arc::new(ArcSwap::from_pointee(placeholder)),
                ready: watch::Sender::new(false),
                status: Mutex::new(SourceStatus::default()),
                started: AtomicBool::new(false),
                slow_start: self.slow_start,
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

impl Shared {
    /// Takes the source back from a background task that is being dropped
    /// with the pool still in use (its runtime shut down): the next pick,
    /// on whatever runtime it runs, starts the task again.
    pub(crate) fn park_source(&self, source: BoxDiscover) {
        *self.driver() = DriverSlot::Waiting(source);
        self.started.store(false, Ordering::Release);
    }

    /// The driver slot. Nothing panics while holding it, so a poisoned
    /// lock still guards a consistent slot.
    fn driver(&self) -> MutexGuard<'_, DriverSlot> {
        self.driver.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The source status. Its critical sections cannot panic half-way, so
    /// a poisoned lock still guards consistent data: use it rather than
    /// spreading a panic to every caller.
    pub(crate) fn status(&self) -> MutexGuard<'_, SourceStatus> {
        self.status.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // A poisoned lock still holds a valid slot; the task must stop anyway.
        let slot = match self.driver.get_mut() {
            Ok(slot) => slot,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let DriverSlot::Running(task) = slot {
            task.abort();
        }
    }
}
