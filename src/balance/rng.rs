//! Random numbers for picks, jitter and spreads: per thread by default,
//! from one seeded sequence when asked.
//!
//! Picks need a few random bits in nanoseconds, from many threads at once.
//! `rand::rng()` is a cryptographic generator behind a reference-counted
//! handle; here a plain wyrand step in a thread-local `Cell` costs about a
//! nanosecond and shares nothing between threads. Quality is ample for
//! spreading load; nothing here needs to be unpredictable.
//!
//! wyrand's state only ever advances by a constant, so a shared
//! [`SeededRng`] is one atomic add: every draw gets its own step of one
//! sequence, and a run that draws in the same order (a paused-clock test on
//! one thread) draws the same numbers.

use std::cell::{Cell, RefCell};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// wyrand's increment.
const STEP: u64 = 0xa076_1d64_78bd_642f;

thread_local! {
    static STATE: Cell<u64> = Cell::new(rand::random::<u64>() | 1);
    /// Set while a seeded pool builds a picker (see [`building_with`]).
    static BUILDING: RefCell<Option<Arc<SeededRng>>> = const { RefCell::new(None) };
}

/// Runs `build` (a [`Balancer::picker`](super::Balancer::picker) call, which
/// has no context to draw from) so that its draws from [`next_u64`] and
/// [`below`] come from `seeded`: a seeded pool's round-robin starting point
/// is then part of its sequence too. Synchronous and confined to the pool
/// that calls it; nothing crosses a layer.
pub(crate) fn building_with<R>(seeded: Option<&Arc<SeededRng>>, build: impl FnOnce() -> R) -> R {
    let Some(seeded) = seeded else {
        return build();
    };
    struct Restore(Option<Arc<SeededRng>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let outer = self.0.take();
            BUILDING.with(|b| *b.borrow_mut() = outer);
        }
    }
    let outer = BUILDING.with(|b| b.borrow_mut().replace(seeded.clone()));
    let _restore = Restore(outer);
    build()
}

/// One seeded sequence of random numbers, shared by everything that draws
/// from it (a pool's picks and background task, a retry layer's jitter).
#[derive(Debug)]
pub(crate) struct SeededRng {
    state: AtomicU64,
}

impl SeededRng {
    pub(crate) fn new(seed: u64) -> Self {
        Self {
            state: AtomicU64::new(seed),
        }
    }

    /// The next value of the sequence.
    #[inline]
    pub(crate) fn next_u64(&self) -> u64 {
        mix(self
            .state
            .fetch_add(STEP, Ordering::Relaxed)
            .wrapping_add(STEP))
    }
}

#[inline]
fn mix(x: u64) -> u64 {
    let t = u128::from(x) * u128::from(x ^ 0xe703_7ed1_a0b4_28db);
    ((t >> 64) as u64) ^ (t as u64)
}

/// A uniformly distributed 64-bit value, from this thread's generator (or
/// the seeded sequence of the picker being built, see [`building_with`]).
#[inline]
pub(crate) fn next_u64() -> u64 {
    if let Some(value) = BUILDING.with(|b| b.borrow().as_ref().map(|rng| rng.next_u64())) {
        return value;
    }
    thread_next()
}

/// This thread's generator alone: the pick path.
#[inline]
fn thread_next() -> u64 {
    STATE.with(|s| {
        let x = s.get().wrapping_add(STEP);
        s.set(x);
        mix(x)
    })
}

/// A uniformly distributed 64-bit value from `seeded`, or from this
/// thread's generator without one.
#[inline]
pub(crate) fn next_from(seeded: Option<&SeededRng>) -> u64 {
    match seeded {
        Some(rng) => rng.next_u64(),
        None => thread_next(),
    }
}

/// A value in `0..n` from `seeded` (or this thread); `n` must be non-zero.
#[inline]
pub(crate) fn below_from(seeded: Option<&SeededRng>, n: usize) -> usize {
    debug_assert!(n > 0);
    ((u128::from(next_from(seeded)) * n as u128) >> 64) as usize
}

/// A value in `[0, 1)` from `seeded` (or this thread).
#[inline]
pub(crate) fn unit_from(seeded: Option<&SeededRng>) -> f64 {
    (next_from(seeded) >> 11) as f64 / (1u64 << 53) as f64
}

/// A value in `0..n`; `n` must be non-zero. Lemire's multiply-shift: no
/// division, and a bias below 2^-32 for any realistic `n`.
#[inline]
pub(crate) fn below(n: usize) -> usize {
    debug_assert!(n > 0);
    ((u128::from(next_u64()) * n as u128) >> 64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn below_covers_the_range_evenly() {
        let mut counts = [0u32; 7];
        for _ in 0..70_000 {
            counts[below(7)] += 1;
        }
        for c in counts {
            assert!((9_000..11_000).contains(&c), "{counts:?}");
        }
    }

    #[test]
    fn one_seed_one_sequence() {
        let a = SeededRng::new(7);
        let b = SeededRng::new(7);
        let first: Vec<u64> = (0..5).map(|_| a.next_u64()).collect();
        let second: Vec<u64> = (0..5).map(|_| b.next_u64()).collect();
        assert_eq!(first, second);
        assert_ne!(first[0], first[1]);
        assert_ne!(first[0], SeededRng::new(8).next_u64());
    }

    #[test]
    fn pairs_are_distinct() {
        let ctx = crate::balance::PickContext::new("greet");
        for _ in 0..10_000 {
            let (a, b) = ctx.random_pair(3);
            assert_ne!(a, b);
            assert!(a < 3 && b < 3);
        }
    }
}
