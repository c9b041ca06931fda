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
//! [`SeededRng`] is one atomic add per draw. It keeps one sequence per
//! thread that draws from it (up to [`STRIPES`], each on cache lines of its
//! own), so threads drawing at once do not contend for one line: the first
//! thread to draw gets the seed's own sequence, whichever thread it is, and
//! a run that draws in the same order (a paused-clock test on one thread)
//! draws the same numbers in every process.

use std::cell::{Cell, RefCell};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::balance::stripe::{Padded, STRIPES};

/// wyrand's increment.
const STEP: u64 = 0xa076_1d64_78bd_642f;

thread_local! {
    static STATE: Cell<u64> = Cell::new(rand::random::<u64>() | 1);
    /// Its address tells this thread from the others (see [`SeededRng`]).
    static TOKEN: u8 = const { 0 };
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

/// One seeded sequence of random numbers per drawing thread, shared by
/// everything that draws from it (a pool's picks and background task, a
/// retry layer's jitter).
///
/// Stripe `k` belongs to the `k`-th thread that drew from it (stripe 0, the
/// seed's own sequence, to the first), so one thread's draws never depend
/// on which thread of the process it is; past [`STRIPES`] threads, a thread
/// shares the stripe its token falls on.
#[derive(Debug)]
pub(crate) struct SeededRng {
    /// The thread that draws from each stripe (its [`token`]), 0 = free.
    owners: [AtomicUsize; STRIPES],
    states: [Padded<AtomicU64>; STRIPES],
}

impl SeededRng {
    pub(crate) fn new(seed: u64) -> Self {
        Self {
            owners: std::array::from_fn(|_| AtomicUsize::new(0)),
            // Stripe 0 is the seed's sequence as it always was; the others
            // start far from it and from each other.
            states: std::array::from_fn(|k| {
                let state = if k == 0 {
                    seed
                } else {
                    mix(seed ^ mix(k as u64))
                };
                Padded(AtomicU64::new(state))
            }),
        }
    }

    /// The next value of this thread's sequence.
    #[inline]
    pub(crate) fn next_u64(&self) -> u64 {
        mix(self.states[self.stripe()]
            .0
            .fetch_add(STEP, Ordering::Relaxed)
            .wrapping_add(STEP))
    }

    /// This thread's stripe: the one it owns, else the first free one,
    /// claimed; with none free, the one its token falls on.
    #[inline]
    fn stripe(&self) -> usize {
        let me = token();
        for (k, owner) in self.owners.iter().enumerate() {
            let current = owner.load(Ordering::Relaxed);
            if current == me {
                return k;
            }
            if current == 0 {
                match owner.compare_exchange(0, me, Ordering::Relaxed, Ordering::Relaxed) {
                    Ok(_) => return k,
                    // Another thread claimed it first: it is theirs.
                    Err(_) => continue,
                }
            }
        }
        mix(me as u64) as usize % STRIPES
    }
}

/// A number that tells the calling thread from every other live thread
/// (the address of a thread-local), never 0.
#[inline]
fn token() -> usize {
    TOKEN.with(|t| t as *const u8 as usize)
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

    /// Five draws on this thread from `rng`, after another thread has
    /// drawn from it first (`first` draws), and then more while these run.
    fn second_after_first(rng: &SeededRng, first: usize) -> (Vec<u64>, Vec<u64>) {
        std::thread::scope(|s| {
            let (drawn, wait) = std::sync::mpsc::channel();
            let other = s.spawn(move || {
                let firsts: Vec<u64> = (0..first).map(|_| rng.next_u64()).collect();
                drawn.send(()).unwrap();
                for _ in 0..1000 {
                    rng.next_u64();
                }
                firsts
            });
            wait.recv().unwrap();
            let seconds = (0..5).map(|_| rng.next_u64()).collect();
            (other.join().unwrap(), seconds)
        })
    }

    #[test]
    fn the_first_thread_to_draw_gets_the_seeds_sequence_and_others_their_own() {
        let alone = SeededRng::new(11);
        let expected: Vec<u64> = (0..5).map(|_| alone.next_u64()).collect();
        // Another thread draws first: it gets the seed's own sequence, and
        // this one a sequence of its own, which the other thread's draws
        // (how many, and when) do not change.
        let (first, second) = second_after_first(&SeededRng::new(11), 5);
        assert_eq!(first, expected);
        assert_ne!(second, expected);
        let (_, again) = second_after_first(&SeededRng::new(11), 1);
        assert_eq!(again, second);
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
