//! Striped state: one shared value split over a few cache lines, a thread
//! on each, so that threads picking from one pool at once do not pass one
//! cache line back and forth between their cores on every pick.
//!
//! A thread's stripe is its number, given in the order threads first ask
//! for one: the first [`STRIPES`] threads of a process each have a stripe
//! of their own, and a thread keeps its stripe for life, so what one
//! thread draws or counts from a picker is a sequence of its own (a
//! seeded run on one thread repeats exactly). Nothing is carried from one
//! request or layer to another: the number says which thread this is.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Stripes per striped value: a power of two, as many as the worker
/// threads of a typical runtime. More threads than that share stripes,
/// which stays correct and is only slower.
pub(crate) const STRIPES: usize = 8;

/// A value alone on its cache lines: 128 bytes, as x86's and ARM's
/// prefetchers fetch lines in adjacent pairs.
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct Padded<T>(pub(crate) T);

/// The next thread number to give out.
static NEXT: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This thread's stripe, `usize::MAX` until it first asks.
    static STRIPE: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// This thread's stripe, in `0..STRIPES`.
#[inline]
pub(crate) fn index() -> usize {
    STRIPE.with(|stripe| {
        let i = stripe.get();
        if i < STRIPES {
            return i;
        }
        let i = NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES;
        stripe.set(i);
        i
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_keeps_its_stripe_and_two_threads_get_two() {
        let mine = index();
        assert!(mine < STRIPES);
        assert_eq!(index(), mine);
        let theirs = std::thread::spawn(index).join().unwrap();
        // Numbers are given in turn, so a thread started after this one
        // asked gets another stripe unless STRIPES - 1 threads asked in
        // between (other tests' threads): allow that, once in a while.
        let later = std::thread::spawn(index).join().unwrap();
        assert!(theirs != mine || later != mine, "{mine} {theirs} {later}");
    }
}
