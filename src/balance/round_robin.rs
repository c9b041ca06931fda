use std::sync::atomic::{AtomicU32, Ordering};

use crate::balance::fastmod::FastMod;
use crate::balance::stripe::{self, Padded, STRIPES};
use crate::balance::{Balancer, Change, Members, PickContext, Picker, rng};

/// Each endpoint in turn, ignoring weights.
///
/// Every new endpoint set starts the rotation at a random position, so that
/// many clients started together do not all hit the first endpoint first.
///
/// A set of fewer than 64 endpoints has one cursor: every pick, from any
/// thread, takes the next endpoint, so concurrent requests spread exactly
/// evenly. From 64 endpoints on, threads picking at once turn one of eight
/// cursors, spaced evenly around the set, instead of all bumping one shared
/// counter. A thread's cursor is
/// fixed by the order threads first picked in the process (any pool), so
/// two threads can share one: then each still goes round, interleaved with
/// the other. Over the pool no endpoint is more than one pick per cursor
/// ahead of another.
///
/// ```
/// use tower_lb::balance::RoundRobin;
/// use tower_lb::{LoadBalanceLayer, discover::Fixed};
///
/// let layer = LoadBalanceLayer::builder()
///     .service("greet", Fixed::new(["127.0.0.1:5001", "127.0.0.1:5002"])?)
///     .balancer(RoundRobin::new())
///     .build()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct RoundRobin {
    _private: (),
}

impl RoundRobin {
    /// The round-robin balancer.
    pub fn new() -> Self {
        Self::default()
    }
}

/// The set size from which threads turn cursors of their own. Below it one
/// cursor keeps the rotation exact across threads: with three endpoints,
/// six requests from two threads go two to each, where two cursors could
/// send three to one (each cursor is even on its own, not with the other).
/// From 64 endpoints, a pick or two ahead on a few of them is noise, and
/// the shared cache line is what two threads would pay for.
const STRIPED_FROM: usize = 64;

struct RoundRobinPicker {
    /// One cursor per thread stripe, each on cache lines of its own: one
    /// shared cursor would be a cache line bounced between the cores on
    /// every pick (two threads picking paid 5x a lone thread's cost per
    /// pick). 32 bits, so the remainder needs no division: at the wrap,
    /// once in 4.3 billion picks of a stripe, its rotation jumps once (an
    /// endpoint may be picked twice running); the long-run spread is
    /// unaffected.
    cursors: Box<[Padded<AtomicU32>; STRIPES]>,
    /// Whether threads use their own stripes ([`STRIPED_FROM`]) or all the
    /// first cursor.
    striped: bool,
    /// The endpoint count it was built for.
    modulus: Option<FastMod>,
}

impl Balancer for RoundRobin {
    fn name(&self) -> &'static str {
        "round_robin"
    }

    fn picker(&self, members: &Members) -> Box<dyn Picker> {
        let n = members.len();
        let start = if n == 0 { 0 } else { rng::below(n) };
        // Stripe k starts k/STRIPES of the way round from the random start,
        // so threads that start together pick apart from each other.
        let cursors = Box::new(std::array::from_fn(|k| {
            let offset = (n as u128 * k as u128 / STRIPES as u128) as usize;
            let first = if n == 0 { 0 } else { (start + offset) % n };
            Padded(AtomicU32::new(first as u32))
        }));
        Box::new(RoundRobinPicker {
            cursors,
            striped: n >= STRIPED_FROM,
            modulus: FastMod::new(n),
        })
    }
}

impl RoundRobinPicker {
    /// The same rotation over a changed set: the cursor carries on, only
    /// the count it wraps at is new.
    fn follow(&self, members: &Members) -> Box<dyn Picker> {
        Box::new(RoundRobinPicker {
            cursors: Box::new(std::array::from_fn(|k| {
                Padded(AtomicU32::new(self.cursors[k].0.load(Ordering::Relaxed)))
            })),
            striped: members.len() >= STRIPED_FROM,
            modulus: FastMod::new(members.len()),
        })
    }
}

impl Picker for RoundRobinPicker {
    #[inline]
    fn pick(&self, members: &Members, _ctx: &PickContext<'_>) -> Option<usize> {
        if members.is_empty() {
            return None;
        }
        // Relaxed: the counter orders nothing but itself.
        let stripe = if self.striped { stripe::index() } else { 0 };
        let tick = self.cursors[stripe].0.fetch_add(1, Ordering::Relaxed);
        Some(match self.modulus {
            Some(m) if m.divisor() == members.len() => m.rem(tick),
            _ => tick as usize % members.len(),
        })
    }

    fn update(&self, members: &Members, _changes: &[Change]) -> Option<Box<dyn Picker>> {
        Some(self.follow(members))
    }
}
