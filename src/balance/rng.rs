//! A per-thread random number generator for picks.
//!
//! Picks need a few random bits in nanoseconds, from many threads at once.
//! `rand::rng()` is a cryptographic generator behind a reference-counted
//! handle; here a plain wyrand step in a thread-local `Cell` costs about a
//! nanosecond and shares nothing between threads. Quality is ample for
//! spreading load; nothing here needs to be unpredictable.

use std::cell::Cell;

thread_local! {
    static STATE: Cell<u64> = Cell::new(rand::random::<u64>() | 1);
}

/// A uniformly distributed 64-bit value.
#[inline]
pub(crate) fn next_u64() -> u64 {
    STATE.with(|s| {
        let x = s.get().wrapping_add(0xa076_1d64_78bd_642f);
        s.set(x);
        let t = u128::from(x) * u128::from(x ^ 0xe703_7ed1_a0b4_28db);
        ((t >> 64) as u64) ^ (t as u64)
    })
}

/// A value in `0..n`; `n` must be non-zero. Lemire's multiply-shift: no
/// division, and a bias below 2^-32 for any realistic `n`.
#[inline]
pub(crate) fn below(n: usize) -> usize {
    debug_assert!(n > 0);
    ((u128::from(next_u64()) * n as u128) >> 64) as usize
}

/// Two distinct values in `0..n`; `n` must be at least 2.
#[inline]
pub(crate) fn two_distinct(n: usize) -> (usize, usize) {
    debug_assert!(n >= 2);
    let a = below(n);
    // Draw from the n-1 other slots so the pair is never the same endpoint.
    let b = (a + 1 + below(n - 1)) % n;
    (a, b)
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
    fn two_distinct_never_repeats() {
        for _ in 0..10_000 {
            let (a, b) = two_distinct(3);
            assert_ne!(a, b);
            assert!(a < 3 && b < 3);
        }
    }
}
