//! Balancers: how one endpoint is chosen per request.
//!
//! A [`Balancer`] is a pool's choice of algorithm. It builds a [`Picker`]
//! for an endpoint set ([`Members`]): the place to precompute tables, so
//! that a pick itself is O(1) and takes no lock. When the set changes by a
//! few endpoints, the pool first asks the current picker to follow the
//! change ([`Picker::update`]), and builds a new one only when it declines:
//! a change of one endpoint in a pool of 100,000 then costs what the
//! picker's own update costs, not a rebuild. Built in:
//!
//! | balancer | picks | cost of a pick |
//! |---|---|---|
//! | [`RoundRobin`] | each endpoint in turn | O(1), one atomic add |
//! | [`Random`] | uniformly at random | O(1) |
//! | [`WeightedRoundRobin`] | in turn, in proportion to weight, interleaved | O(1) (a precomputed schedule) |
//! | [`LeastRequest`] | fewest requests in flight: the better of two random choices, or an exact scan | O(1) / O(n) |
//!
//! Write your own by implementing both traits:
//!
//! ```
//! use tower_lb::balance::{Balancer, Members, PickContext, Picker};
//!
//! /// Always the first endpoint: a primary with standbys.
//! #[derive(Debug)]
//! struct First;
//!
//! impl Balancer for First {
//!     fn name(&self) -> &'static str { "first" }
//!     fn picker(&self, _members: &Members) -> Box<dyn Picker> { Box::new(First) }
//! }
//!
//! impl Picker for First {
//!     fn pick(&self, members: &Members, _ctx: &PickContext<'_>) -> Option<usize> {
//!         (!members.is_empty()).then_some(0)
//!     }
//! }
//! ```
//!
//! `members` are in the pool's order, not sorted: the order members
//! joined in, where one that leaves is replaced by the last
//! ([`Change::Removed`]). Two pools given the same endpoints in different
//! updates may order them differently; a balancer whose choices must agree
//! across clients (consistent hashing) orders by endpoint key itself.

mod avoid;
mod fastmod;
mod hash;
mod least_request;
mod peak_ewma;
mod random;
pub(crate) mod rng;
mod round_robin;
pub(crate) mod stripe;
mod weighted_least_request;
mod weighted_random;
mod weighted_round_robin;

use std::fmt;

use http::HeaderMap;

pub use avoid::Avoid;
pub use hash::{BoundedLoad, ConsistentHash, HashKey, HashTable, KeyFn, hash_bytes};
pub use least_request::{LeastRequest, LeastRequestMode};
pub use peak_ewma::PeakEwma;
pub use random::Random;
pub use round_robin::RoundRobin;
pub use weighted_least_request::WeightedLeastRequest;
pub use weighted_random::WeightedRandom;
pub use weighted_round_robin::WeightedRoundRobin;

pub use crate::pool::load::{EndpointState, Estimate, LoadTracking};
pub use crate::pool::member::Member;
pub use crate::pool::members::{Change, Iter as MembersIter, Members};

/// A load-balancing algorithm, configured once per pool.
///
/// The pool calls [`Balancer::picker`] when its endpoint set changes and
/// the current picker cannot [follow the change](Picker::update), off the
/// request path, and uses the returned [`Picker`] for every request until
/// the next change.
pub trait Balancer: fmt::Debug + Send + Sync + 'static {
    /// A short name for stats and logs, such as `"round_robin"`.
    fn name(&self) -> &'static str;

    /// Builds the picker for this endpoint set. `members` is in the pool's
    /// order (see the [module docs](self): not sorted by key) and never
    /// changes for the picker's lifetime; it may be empty.
    fn picker(&self, members: &Members) -> Box<dyn Picker>;

    /// What the pool should measure for this balancer (latency decay,
    /// default round trip, failure penalty, a pool-wide in-flight count).
    /// The defaults suit balancers that read only in-flight counts.
    fn load_tracking(&self) -> LoadTracking {
        LoadTracking::default()
    }
}

/// Chooses one endpoint for one request. Built by a [`Balancer`] for one
/// endpoint set; called concurrently from many tasks.
pub trait Picker: Send + Sync + 'static {
    /// The index into `members` (the same set the picker was built or
    /// updated for) of the endpoint to use, or `None` when there is none to
    /// pick.
    fn pick(&self, members: &Members, ctx: &PickContext<'_>) -> Option<usize>;

    /// The picker for `members`, the set this picker was made for after
    /// `changes` (in the order they were made), made from this one, or
    /// `None` to have the balancer build one afresh with
    /// [`Balancer::picker`] (the default). A picker whose state does not
    /// depend on the set returns a copy of itself; one with a table updates
    /// a copy of it, for a cost that grows with the change rather than the
    /// set. `changes` is empty when the set is the same, republished for
    /// another reason (an ineligible endpoint came or went); after a large
    /// batch (or a switch of the whole set, as into panic mode) the pool
    /// rebuilds without asking.
    ///
    /// On the picker rather than the balancer: the picker knows its own
    /// type and table, so reading the old table needs no downcast.
    fn update(&self, members: &Members, changes: &[Change]) -> Option<Box<dyn Picker>> {
        let _ = (members, changes);
        None
    }
}

/// A request's own hash key, for [`ConsistentHash`]: put it in the
/// request's extensions (or give it to the client handle's
/// [`hash_key`](crate::client::RequestBuilder::hash_key)) to route by a key
/// that is in no header, such as a user id. It takes precedence over the
/// balancer's configured [`HashKey`].
///
/// ```
/// use tower_lb::balance::RequestHashKey;
///
/// let mut request = http::Request::get("http://carts/api/cart").body(())?;
/// request.extensions_mut().insert(RequestHashKey::of(b"user-42"));
/// assert_eq!(RequestHashKey::of(b"user-42"), RequestHashKey::of(b"user-42"));
/// # Ok::<(), http::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RequestHashKey(pub u64);

impl RequestHashKey {
    /// The key of `bytes`, hashed with [`hash_bytes`] (stable across
    /// processes and versions, so every client places a key alike).
    pub fn of(bytes: impl AsRef<[u8]>) -> Self {
        Self(hash_bytes(bytes.as_ref()))
    }
}

/// What a picker may know about the request being balanced.
///
/// `#[non_exhaustive]`: build it with [`PickContext::new`] and the `with_*`
/// methods, so that adding fields breaks no one.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct PickContext<'a> {
    /// The logical service the request is for.
    pub service: &'a str,
    /// The request's path, when there is a request.
    pub path: Option<&'a str>,
    /// The request's headers, when there is a request.
    pub headers: Option<&'a HeaderMap>,
    /// Endpoints this request should not go to, if any.
    pub avoid: Option<&'a Avoid>,
    /// Requests in flight across the pool, filled in by the pool when the
    /// balancer asked for it ([`LoadTracking::total_in_flight`]).
    pub total_in_flight: Option<usize>,
    /// A hash key the request carries itself ([`RequestHashKey`]): it
    /// takes precedence over a [`ConsistentHash`]'s configured key source.
    pub hash_key: Option<u64>,
    /// The pool's seeded sequence, when it has one (see
    /// [`PoolBuilder::seed`](crate::PoolBuilder::seed)).
    pub(crate) rng: Option<&'a rng::SeededRng>,
}

impl<'a> PickContext<'a> {
    /// A context for a request to `service`, knowing nothing else.
    pub fn new(service: &'a str) -> Self {
        Self {
            service,
            path: None,
            headers: None,
            avoid: None,
            total_in_flight: None,
            hash_key: None,
            rng: None,
        }
    }

    /// Adds a hash key the request carries itself.
    pub fn with_hash_key(mut self, key: u64) -> Self {
        self.hash_key = Some(key);
        self
    }

    /// Adds the request's path.
    pub fn with_path(mut self, path: &'a str) -> Self {
        self.path = Some(path);
        self
    }

    /// Adds the request's headers.
    pub fn with_headers(mut self, headers: &'a HeaderMap) -> Self {
        self.headers = Some(headers);
        self
    }

    /// Adds endpoints to avoid.
    pub fn with_avoid(mut self, avoid: &'a Avoid) -> Self {
        self.avoid = Some(avoid);
        self
    }

    /// True when `endpoint` is to be avoided for this request.
    #[inline]
    pub fn avoids(&self, endpoint: &crate::Endpoint) -> bool {
        self.avoid.is_some_and(|a| a.contains(endpoint))
    }

    /// True when some endpoint is to be avoided.
    #[inline]
    pub fn avoids_any(&self) -> bool {
        self.avoid.is_some_and(|a| !a.is_empty())
    }

    /// A random 64-bit value for this pick: from the pool's seeded
    /// sequence when the pool was given a seed (so a run repeats exactly),
    /// otherwise from a fast per-thread generator. A picker of your own
    /// should draw from here too.
    #[inline]
    pub fn random_u64(&self) -> u64 {
        rng::next_from(self.rng)
    }

    /// A random index in `0..n`; `n` must be above zero.
    #[inline]
    pub fn random_below(&self, n: usize) -> usize {
        rng::below_from(self.rng, n)
    }

    /// Two distinct random indices in `0..n`, for `n` of at least 2; for
    /// `n` of 1, `(0, 0)`; for 0 (no index exists), `(0, 0)` as well, so
    /// check for an empty set first.
    #[inline]
    pub fn random_pair(&self, n: usize) -> (usize, usize) {
        if n < 2 {
            return (0, 0);
        }
        let a = self.random_below(n);
        // Draw from the n-1 other slots so the pair is never the same
        // endpoint. The sum is below 2n: one subtraction wraps it, where a
        // `%` would be a division on every pick.
        let b = a + 1 + self.random_below(n.saturating_sub(1));
        let b = if b >= n { b - n } else { b };
        (a, b)
    }
}

impl<B: Balancer + ?Sized> Balancer for std::sync::Arc<B> {
    fn name(&self) -> &'static str {
        (**self).name()
    }

    fn picker(&self, members: &Members) -> Box<dyn Picker> {
        (**self).picker(members)
    }

    fn load_tracking(&self) -> LoadTracking {
        (**self).load_tracking()
    }
}

#[cfg(test)]
mod tests;
