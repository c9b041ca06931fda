//! Consistent hashing: requests with the same key go to the same endpoint,
//! and a change of endpoints moves as few keys as possible.

mod hasher;
mod maglev;
mod ring;
mod slots;

use ring::Ring;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use http::{HeaderMap, HeaderName, HeaderValue};

pub use hasher::hash_bytes;

use crate::balance::{
    Balancer, Change, LeastRequest, LoadTracking, Member, Members, PickContext, Picker,
};

/// Where a request's hash key comes from.
#[derive(Clone)]
#[non_exhaustive]
pub enum HashKey {
    /// The value of this header (a request without it has no key).
    Header(HeaderName),
    /// The request's path.
    Path,
    /// Anything computed from the request; `None` means no key. Any `u64`
    /// will do (a user id as it is, or [`hash_bytes`] of some bytes): it is
    /// mixed again before it is placed.
    Custom(KeyFn),
}

/// A user function from a request to its hash key.
pub type KeyFn = Arc<dyn Fn(&PickContext<'_>) -> Option<u64> + Send + Sync>;

impl HashKey {
    /// The value of header `name`.
    pub fn header(name: HeaderName) -> Self {
        HashKey::Header(name)
    }

    /// A key computed by `f` from the request.
    ///
    /// ```
    /// use tower_lb::balance::{HashKey, hash_bytes};
    ///
    /// // The first path segment: /tenants/acme/orders -> "tenants"... or the tenant:
    /// let by_tenant = HashKey::custom(|ctx| {
    ///     let tenant = ctx.path?.split('/').nth(2)?;
    ///     Some(hash_bytes(tenant.as_bytes()))
    /// });
    /// ```
    pub fn custom(f: impl Fn(&PickContext<'_>) -> Option<u64> + Send + Sync + 'static) -> Self {
        HashKey::Custom(Arc::new(f))
    }

    /// The request's key: the one it carries itself
    /// ([`RequestHashKey`](crate::balance::RequestHashKey)), else the
    /// configured source's.
    #[inline]
    fn hash(&self, ctx: &PickContext<'_>) -> Option<u64> {
        if let Some(key) = ctx.hash_key {
            return Some(key);
        }
        match self {
            HashKey::Header(name) => header(ctx.headers?, name).map(|v| hash_bytes(v.as_bytes())),
            HashKey::Path => ctx.path.map(|p| hash_bytes(p.as_bytes())),
            // Placement uses the high bits: a raw small integer must be
            // spread over all 64 first.
            HashKey::Custom(f) => f(ctx).map(hasher::mix),
        }
    }
}

/// Up to this many headers, a request's key header is found by comparing
/// names in turn rather than by `HeaderMap::get`, which hashes the name and
/// probes (about 180 instructions, more than the rest of a Maglev pick):
/// comparing a name with a different one mostly stops at its kind or its
/// length.
const SCAN_HEADERS: usize = 16;

/// The first value of header `name`, as `HeaderMap::get` gives it.
#[inline]
fn header<'h>(headers: &'h HeaderMap, name: &HeaderName) -> Option<&'h HeaderValue> {
    if headers.len() <= SCAN_HEADERS {
        headers
            .iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value)
    } else {
        headers.get(name)
    }
}

impl fmt::Debug for HashKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HashKey::Header(name) => f.debug_tuple("Header").field(name).finish(),
            HashKey::Path => f.write_str("Path"),
            HashKey::Custom(_) => f.write_str("Custom(..)"),
        }
    }
}

/// Which consistent-hash structure maps keys to endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum HashTable {
    /// A Maglev lookup table (the default): O(1) lookups, near-perfect
    /// balance, minimal disruption.
    Maglev,
    /// A hash ring with this many points per unit of weight (Ketama uses
    /// 160): O(log n) lookups.
    Ring {
        /// Points per unit of weight.
        points_per_weight: u32,
    },
}

/// No endpoint may carry more than `factor` times the mean load
/// (Mirrokni et al., "Consistent Hashing with Bounded Loads"): a key whose
/// endpoint is full goes to the next one in the table. Weights scale each
/// endpoint's share of the bound.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BoundedLoad {
    factor: f64,
}

impl BoundedLoad {
    /// The default factor, 1.25, as in the paper's evaluation and Envoy.
    pub const DEFAULT_FACTOR: f64 = 1.25;

    /// A bound of `factor` times the mean load. A factor below 1 could leave
    /// no endpoint eligible and is raised to 1; a non-finite one is replaced
    /// by the default.
    pub fn new(factor: f64) -> Self {
        let factor = if factor.is_finite() {
            factor.max(1.0)
        } else {
            Self::DEFAULT_FACTOR
        };
        Self { factor }
    }

    /// The factor in use.
    pub fn factor(&self) -> f64 {
        self.factor
    }
}

impl Default for BoundedLoad {
    fn default() -> Self {
        Self::new(Self::DEFAULT_FACTOR)
    }
}

/// Consistent hashing on a key taken from the request.
///
/// Requests with the same key go to the same endpoint while it is there
/// (cache affinity, sticky sessions); adding or removing one of `n`
/// endpoints moves about `1/n` of the keys. A request without a key goes to
/// the fallback balancer (default: [`LeastRequest`]).
///
/// ```
/// use http::{HeaderMap, HeaderName, HeaderValue};
/// use tower_lb::balance::{BoundedLoad, ConsistentHash, HashKey, HashTable, RoundRobin};
///
/// // Maglev on the x-user-id header, no endpoint above 1.25x the mean load.
/// let by_user = ConsistentHash::new(HashKey::header(HeaderName::from_static("x-user-id")))
///     .bounded_load(BoundedLoad::default());
///
/// // A ring on the path, round robin for requests without one.
/// let by_path = ConsistentHash::new(HashKey::Path)
///     .table(HashTable::Ring { points_per_weight: 160 })
///     .fallback(RoundRobin::new());
/// ```
#[derive(Debug, Clone)]
pub struct ConsistentHash {
    key: HashKey,
    table: HashTable,
    bound: Option<BoundedLoad>,
    fallback: Arc<dyn Balancer>,
    /// Said once: a request came without a key (a header it never sends
    /// would otherwise turn hashing into the fallback, silently).
    keyless_told: Arc<AtomicBool>,
}

impl ConsistentHash {
    /// Maglev on `key`, unbounded, least request for keyless requests.
    pub fn new(key: HashKey) -> Self {
        Self {
            key,
            table: HashTable::Maglev,
            bound: None,
            fallback: Arc::new(LeastRequest::new()),
            keyless_told: Arc::default(),
        }
    }

    /// The structure that maps keys to endpoints (default Maglev).
    pub fn table(mut self, table: HashTable) -> Self {
        self.table = table;
        self
    }

    /// Bounds every endpoint's load (default: unbounded).
    pub fn bounded_load(mut self, bound: BoundedLoad) -> Self {
        self.bound = Some(bound);
        self
    }

    /// The balancer for requests without a key.
    pub fn fallback(mut self, balancer: impl Balancer) -> Self {
        self.fallback = Arc::new(balancer);
        self
    }
}

impl Balancer for ConsistentHash {
    fn name(&self) -> &'static str {
        match (self.table, self.bound.is_some()) {
            (HashTable::Maglev, false) => "maglev",
            (HashTable::Maglev, true) => "maglev_bounded",
            (HashTable::Ring { .. }, false) => "ring_hash",
            (HashTable::Ring { .. }, true) => "ring_hash_bounded",
        }
    }

    fn picker(&self, members: &Members) -> Box<dyn Picker> {
        let (lookup, counts) = match self.table {
            HashTable::Maglev => {
                let table = maglev::build(members);
                (Lookup::Maglev(table.slots), table.counts)
            }
            HashTable::Ring { points_per_weight } => (
                Lookup::Ring {
                    ring: Ring::build(members, points_per_weight),
                    members: members.clone(),
                },
                Box::default(),
            ),
        };
        Box::new(HashPicker {
            key: self.key.clone(),
            lookup,
            maglev_counts: counts,
            bound: self.bound,
            total_weight: members.iter().map(|m| u64::from(m.weight())).sum(),
            fallback: self.fallback.picker(members),
            fallback_balancer: self.fallback.clone(),
            keyless_told: self.keyless_told.clone(),
        })
    }

    fn load_tracking(&self) -> LoadTracking {
        LoadTracking {
            total_in_flight: self.bound.is_some(),
            ..self.fallback.load_tracking()
        }
    }
}

enum Lookup {
    Maglev(slots::Slots),
    Ring {
        ring: Ring,
        /// The member list the ring was made for: an update finds the
        /// points of a member that left by its key and weight here.
        members: Members,
    },
}

impl Lookup {
    fn len(&self) -> usize {
        match self {
            Lookup::Maglev(t) => t.len(),
            Lookup::Ring { ring, .. } => ring.len(),
        }
    }

    /// Where Maglev's `hash` lands: the high half of `hash · len`, uniform
    /// over the table like `hash % len`, without a 64-bit division on
    /// every pick.
    #[inline]
    fn maglev_slot(table: &slots::Slots, hash: u64) -> usize {
        ((u128::from(hash) * table.len() as u128) >> 64) as usize
    }

    /// The member that owns `hash`. The table must not be empty.
    #[inline]
    fn home(&self, hash: u64) -> usize {
        match self {
            Lookup::Maglev(t) => t[Self::maglev_slot(t, hash)] as usize,
            Lookup::Ring { ring, .. } => ring.member_at(ring.position(hash)),
        }
    }

    /// The owners of every position from `hash`'s on, once round the
    /// table: the same walk for the same key. The table must not be empty.
    fn walk(&self, hash: u64) -> impl Iterator<Item = usize> + '_ {
        let (maglev, ring) = match self {
            Lookup::Maglev(t) => {
                let (start, len) = (Self::maglev_slot(t, hash), t.len());
                let walk = (0..len).map(move |step| {
                    // Both are below `len`: one subtraction wraps.
                    let i = start + step;
                    t[if i >= len { i - len } else { i }] as usize
                });
                (Some(walk), None)
            }
            Lookup::Ring { ring, .. } => (None, Some(ring.walk(ring.position(hash)))),
        };
        maglev
            .into_iter()
            .flatten()
            .chain(ring.into_iter().flatten())
    }
}

struct HashPicker {
    key: HashKey,
    lookup: Lookup,
    /// Maglev: how many slots each member owns (empty for a ring).
    maglev_counts: Box<[u32]>,
    bound: Option<BoundedLoad>,
    total_weight: u64,
    fallback: Box<dyn Picker>,
    /// What builds `fallback` afresh when it cannot follow a change.
    fallback_balancer: Arc<dyn Balancer>,
    keyless_told: Arc<AtomicBool>,
}

impl HashPicker {
    /// The first request without a key says so, once per balancer.
    #[cold]
    fn tell_keyless(&self, ctx: &PickContext<'_>) {
        if self.keyless_told.load(Ordering::Relaxed)
            || self.keyless_told.swap(true, Ordering::Relaxed)
        {
            return;
        }
        tracing::warn!(
            service = %ctx.service,
            key = ?self.key,
            "consistent hashing: a request carries no hash key; requests without one \
             go to the fallback balancer (said once)"
        );
    }

    /// The most requests `member` may carry with one more request in the
    /// pool: `ceil(factor · (total + 1) · weight / total_weight)`.
    fn capacity(&self, factor: f64, total: usize, member: &Member) -> usize {
        let share = f64::from(member.weight()) / self.total_weight.max(1) as f64;
        (factor * (total + 1) as f64 * share).ceil() as usize
    }
}

impl Picker for HashPicker {
    /// Maglev follows a change (see `maglev::update`), and so does a ring
    /// (see `Ring::update`).
    fn update(&self, members: &Members, changes: &[Change]) -> Option<Box<dyn Picker>> {
        let (lookup, maglev_counts, total_weight) = match &self.lookup {
            Lookup::Maglev(slots) => {
                let total_weight = members.iter().map(|m| u64::from(m.weight())).sum();
                let table =
                    maglev::update(slots, &self.maglev_counts, members, changes, total_weight)?;
                (Lookup::Maglev(table.slots), table.counts, total_weight)
            }
            Lookup::Ring { ring, members: old } => {
                // The ring keeps its total: summing it here would read
                // every member on every change.
                let ring = ring.update(old, members, changes)?;
                let total_weight = ring.total_weight();
                let lookup = Lookup::Ring {
                    ring,
                    members: members.clone(),
                };
                (lookup, Box::default(), total_weight)
            }
        };
        let fallback = self
            .fallback
            .update(members, changes)
            .unwrap_or_else(|| self.fallback_balancer.picker(members));
        Some(Box::new(HashPicker {
            key: self.key.clone(),
            lookup,
            maglev_counts,
            bound: self.bound,
            total_weight,
            fallback,
            fallback_balancer: self.fallback_balancer.clone(),
            keyless_told: self.keyless_told.clone(),
        }))
    }

    fn pick(&self, members: &Members, ctx: &PickContext<'_>) -> Option<usize> {
        if members.is_empty() || self.lookup.len() == 0 {
            return None;
        }
        let Some(hash) = self.key.hash(ctx) else {
            self.tell_keyless(ctx);
            return self.fallback.pick(members, ctx);
        };
        let home = self.lookup.home(hash);
        if self.bound.is_none() && !ctx.avoids_any() {
            return Some(home);
        }
        // Walk on from the key's position to the first eligible endpoint:
        // the same walk for the same key, so overflow is consistent too.
        let total = match ctx.total_in_flight {
            Some(total) => total,
            None => members.iter().map(|m| m.state().in_flight()).sum(),
        };
        let fits = |i: usize| {
            self.bound.is_none_or(|b| {
                members[i].state().in_flight() < self.capacity(b.factor, total, &members[i])
            })
        };
        let mut first_allowed = None;
        for i in self.lookup.walk(hash) {
            if ctx.avoids(members[i].endpoint()) {
                continue;
            }
            if fits(i) {
                return Some(i);
            }
            first_allowed.get_or_insert(i);
        }
        // Everything is avoided or full: the bound yields before the avoid
        // set does, and the key's own endpoint is the last resort.
        Some(first_allowed.unwrap_or(home))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Scanned (few headers) or looked up (many), the key header's value is
    /// the one `HeaderMap::get` gives: the first, when it repeats.
    #[test]
    fn the_key_header_is_found_among_few_and_many() {
        let name = HeaderName::from_static("x-user");
        for others in [0, 3, SCAN_HEADERS, 40] {
            let mut headers = HeaderMap::new();
            for i in 0..others {
                let other = HeaderName::try_from(format!("x-other-{i}")).unwrap();
                headers.insert(other, HeaderValue::from_static("other"));
            }
            assert_eq!(header(&headers, &name), None, "{others} others");
            headers.append(&name, HeaderValue::from_static("first"));
            headers.append(&name, HeaderValue::from_static("second"));
            headers.insert(http::header::ACCEPT, HeaderValue::from_static("*/*"));
            assert_eq!(header(&headers, &name), headers.get(&name), "{others}");
            assert_eq!(header(&headers, &name).unwrap(), "first", "{others}");
        }
    }
}
