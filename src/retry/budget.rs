//! The retry budget: retries as a share of recent requests, per service,
//! shared by every clone of the client.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::time::Instant;

use super::hedge::{Hedge, LatencyWindow};
use super::tokens::Tokens;

/// How many retries (and hedges) a service may spend: a share of its
/// recent requests plus a small floor, over a sliding window, with the
/// rules of Finagle's and tower's `TpsBudget`.
///
/// Each logical service (request host) has its own budget, shared by
/// every clone of the client, so an outage of one service spends only its
/// own. When a budget is spent, attempts that failed are returned as they
/// are, marked as not retried ([`Error::BudgetExhausted`](crate::Error::BudgetExhausted),
/// or [`NotRetried::BudgetExhausted`](crate::retry::NotRetried::BudgetExhausted)
/// on a response).
///
/// The default is Finagle's and tower's: retries up to 20% of the requests
/// of the last 10 seconds, plus 10 per second.
///
/// ```
/// use std::time::Duration;
/// use tower_lb::retry::{RetryBudget, RetryLayer};
///
/// let layer = RetryLayer::builder()
///     .budget(RetryBudget::new(Duration::from_secs(10), 5, 0.1))
///     .build()?;
/// # Ok::<(), tower_lb::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryBudget {
    ttl: Duration,
    min_per_sec: u32,
    ratio: f32,
    unlimited: bool,
}

impl Default for RetryBudget {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(10),
            min_per_sec: 10,
            ratio: 0.2,
            unlimited: false,
        }
    }
}

impl RetryBudget {
    /// Retries up to `ratio` (0.2 = 20%, at most 1000) of the requests in
    /// the last `ttl` (1 to 60 s), plus `min_per_sec` per second. Checked
    /// when the layer is built.
    pub fn new(ttl: Duration, min_per_sec: u32, ratio: f32) -> Self {
        Self {
            ttl,
            min_per_sec,
            ratio,
            unlimited: false,
        }
    }

    /// No budget: every retry the policy and the attempt limit allow is
    /// made. For tests and for callers that bound retries otherwise.
    pub fn unlimited() -> Self {
        Self {
            unlimited: true,
            ..Self::default()
        }
    }

    /// Why the settings are out of range, if they are.
    /// True when this budget can never pay for a retry.
    pub(crate) fn never_allows(&self) -> bool {
        !self.unlimited && self.min_per_sec == 0 && self.ratio <= 0.0
    }

    pub(crate) fn check(&self) -> Result<(), String> {
        if self.unlimited {
            return Ok(());
        }
        if !(Duration::from_secs(1)..=Duration::from_secs(60)).contains(&self.ttl) {
            return Err(format!(
                "retry budget window {:?} is outside 1 s to 60 s",
                self.ttl
            ));
        }
        if !(0.0..=1000.0).contains(&self.ratio) {
            return Err(format!(
                "retry budget ratio {} is outside 0 to 1000",
                self.ratio
            ));
        }
        if self.min_per_sec >= i32::MAX as u32 {
            return Err(format!(
                "retry budget floor {} per second is too large",
                self.min_per_sec
            ));
        }
        Ok(())
    }

    fn make(&self) -> Option<Tokens> {
        (!self.unlimited).then(|| Tokens::new(self.ttl, self.min_per_sec, self.ratio))
    }
}

/// What the retry layer keeps per service: its budget, and its recent
/// latency when hedging by percentile.
#[derive(Debug)]
pub(crate) struct Track {
    budget: Option<Tokens>,
    pub(crate) latency: Option<LatencyWindow>,
}

impl Track {
    /// Counts a call made at `now`.
    #[inline]
    pub(crate) fn deposit(&self, now: Instant) {
        if let Some(budget) = &self.budget {
            budget.deposit(now);
        }
    }

    /// Takes a token for a retry or a hedge; false when the budget is spent.
    pub(crate) fn withdraw(&self) -> bool {
        self.budget
            .as_ref()
            .is_none_or(|budget| budget.withdraw(Instant::now()))
    }
}

/// One service as the retry layer knows it.
#[derive(Debug)]
pub(crate) struct ServiceState {
    pub(crate) name: Arc<str>,
    pub(crate) track: Arc<Track>,
}

/// Past this many services, new hosts share one budget (a client that
/// passes arbitrary hosts through must not grow without bound).
const MAX_SERVICES: usize = 1024;

/// FNV-1a: service names are short, known to the client's owner, and
/// hashed on every call; SipHash's flooding resistance buys nothing here.
#[derive(Default)]
struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut hash = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for &b in bytes {
            hash = (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = hash;
    }
}

type ServiceMap = HashMap<Box<str>, Arc<ServiceState>, BuildHasherDefault<Fnv>>;

/// Slots of the cache in front of the map (see [`Services::get`]).
const RECENT: usize = 8;

/// The services seen so far, read without a lock.
pub(crate) struct Services {
    budget: RetryBudget,
    hedge: Option<Hedge>,
    map: ArcSwap<ServiceMap>,
    overflow: Arc<Track>,
    /// A direct-mapped cache in front of the map, shared by every clone of
    /// the layer's services (a client is cloned per call, so a cache per
    /// clone would start empty every time): each slot is set once, by the
    /// first service that maps to it, and then read with one atomic load,
    /// where the map costs a guarded load, a hash and a probe.
    recent: [OnceLock<Arc<ServiceState>>; RECENT],
}

impl Services {
    pub(crate) fn new(budget: RetryBudget, hedge: Option<Hedge>) -> Self {
        let overflow = Arc::new(Self::track(&budget, hedge.as_ref()));
        Self {
            budget,
            hedge,
            map: ArcSwap::from_pointee(ServiceMap::default()),
            overflow,
            recent: Default::default(),
        }
    }

    fn track(budget: &RetryBudget, hedge: Option<&Hedge>) -> Track {
        Track {
            budget: budget.make(),
            latency: hedge.and_then(Hedge::latency_window),
        }
    }

    /// The state of the service named by `host` (case-insensitive).
    #[inline]
    pub(crate) fn get(&self, host: &str) -> Arc<ServiceState> {
        let slot = &self.recent[recent_slot(host)];
        if let Some(state) = slot.get()
            && (*state.name == *host || state.name.eq_ignore_ascii_case(host))
        {
            return state.clone();
        }
        let state = self.lookup(host);
        // Taken by the first service to map here; a later one goes on
        // through the map.
        let _ = slot.set(state.clone());
        state
    }

    #[cold]
    fn lookup(&self, host: &str) -> Arc<ServiceState> {
        if host.bytes().any(|b| b.is_ascii_uppercase()) {
            return self.get_lower(&host.to_ascii_lowercase());
        }
        self.get_lower(host)
    }

    fn get_lower(&self, host: &str) -> Arc<ServiceState> {
        if let Some(state) = self.map.load().get(host) {
            return state.clone();
        }
        self.insert(host)
    }

    #[cold]
    fn insert(&self, host: &str) -> Arc<ServiceState> {
        let mut found = None;
        self.map.rcu(|map| {
            if let Some(state) = map.get(host) {
                found = Some(state.clone());
                return map.clone();
            }
            let mut map = ServiceMap::clone(map);
            if map.len() >= MAX_SERVICES {
                found = None;
                return Arc::new(map);
            }
            let state = Arc::new(ServiceState {
                name: host.into(),
                track: Arc::new(Self::track(&self.budget, self.hedge.as_ref())),
            });
            found = Some(state.clone());
            map.insert(host.into(), state);
            Arc::new(map)
        });
        found.unwrap_or_else(|| {
            Arc::new(ServiceState {
                name: host.into(),
                track: self.overflow.clone(),
            })
        })
    }
}

/// The cache slot of `host`: from its length and last byte (case folded),
/// which tell apart the few names a client calls at no cost of hashing.
fn recent_slot(host: &str) -> usize {
    let last = host.as_bytes().last().map_or(0, u8::to_ascii_lowercase);
    (host.len() ^ usize::from(last)) % RECENT
}

impl fmt::Debug for Services {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Services")
            .field("budget", &self.budget)
            .field("services", &self.map.load().len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_budget_per_service_shared_by_lookups() {
        let services = Services::new(RetryBudget::new(Duration::from_secs(1), 0, 0.5), None);
        let a = services.get("greet");
        let b = services.get("GREET");
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(&*a.name, "greet");
        // No floor: two calls pay for one retry.
        assert!(!a.track.withdraw());
        a.track.deposit(Instant::now());
        a.track.deposit(Instant::now());
        assert!(b.track.withdraw());
        assert!(!b.track.withdraw());
        // Another service has its own.
        let other = services.get("users");
        other.track.deposit(Instant::now());
        other.track.deposit(Instant::now());
        assert!(other.track.withdraw());
    }

    #[test]
    fn services_sharing_a_cache_slot_keep_their_own_state() {
        let services = Services::new(RetryBudget::unlimited(), None);
        // Same length and last byte: the same slot.
        let (a, b) = ("greet", "grxat");
        assert_eq!(recent_slot(a), recent_slot(b));
        let first = services.get(a);
        let second = services.get(b);
        assert_eq!((&*first.name, &*second.name), ("greet", "grxat"));
        assert!(Arc::ptr_eq(&first, &services.get("GREET")));
        assert!(Arc::ptr_eq(&second, &services.get("grxat")));
        assert!(!Arc::ptr_eq(&first.track, &second.track));
    }

    #[test]
    fn settings_are_checked() {
        assert!(RetryBudget::default().check().is_ok());
        assert!(RetryBudget::unlimited().check().is_ok());
        assert!(RetryBudget::new(Duration::ZERO, 1, 0.2).check().is_err());
        assert!(
            RetryBudget::new(Duration::from_secs(10), 1, -0.1)
                .check()
                .is_err()
        );
        assert!(
            RetryBudget::new(Duration::from_secs(10), 1, f32::NAN)
                .check()
                .is_err()
        );
        assert!(
            RetryBudget::new(Duration::from_secs(10), u32::MAX, 0.2)
                .check()
                .is_err()
        );
    }

    #[test]
    fn hosts_past_the_cap_share_one_budget() {
        let services = Services::new(RetryBudget::unlimited(), None);
        for i in 0..MAX_SERVICES {
            services.get(&format!("s{i}"));
        }
        let a = services.get("late-1");
        let b = services.get("late-2");
        assert!(Arc::ptr_eq(&a.track, &b.track));
        assert_eq!(&*b.name, "late-2");
    }
}
