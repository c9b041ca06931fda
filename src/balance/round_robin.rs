use std::sync::atomic::{AtomicU32, Ordering};

use crate::balance::fastmod::FastMod;
use crate::balance::{Balancer, Change, Members, PickContext, Picker, rng};

/// Each endpoint in turn, ignoring weights.
///
/// Every new endpoint set starts the rotation at a random position, so that
/// many clients started together do not all hit the first endpoint first.
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

struct RoundRobinPicker {
    /// 32 bits, so the remainder needs no division: at the wrap, once in
    /// 4.3 billion picks, the rotation jumps once (an endpoint may be
    /// picked twice running); the long-run spread is unaffected.
    next: AtomicU32,
    /// The endpoint count it was built for.
    modulus: Option<FastMod>,
}

impl Balancer for RoundRobin {
    fn name(&self) -> &'static str {
        "round_robin"
    }

    fn picker(&self, members: &Members) -> Box<dyn Picker> {
        let start = if members.is_empty() {
            0
        } else {
            rng::below(members.len())
        };
        Box::new(RoundRobinPicker {
            next: AtomicU32::new(start as u32),
            modulus: FastMod::new(members.len()),
        })
    }
}

impl RoundRobinPicker {
    /// The same rotation over a changed set: the cursor carries on, only
    /// the count it wraps at is new.
    fn follow(&self, members: &Members) -> Box<dyn Picker> {
        Box::new(RoundRobinPicker {
            next: AtomicU32::new(self.next.load(Ordering::Relaxed)),
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
        let tick = self.next.fetch_add(1, Ordering::Relaxed);
        Some(match self.modulus {
            Some(m) if m.divisor() == members.len() => m.rem(tick),
            _ => tick as usize % members.len(),
        })
    }

    fn update(&self, members: &Members, _changes: &[Change]) -> Option<Box<dyn Picker>> {
        Some(self.follow(members))
    }
}
