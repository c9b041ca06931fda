//! Maglev lookup tables (Eisenbud et al., NSDI 2016).
//!
//! Each endpoint walks its own permutation of the table's slots and claims
//! the next free one in turn until the table is full. Every endpoint ends up
//! with an almost equal share of slots (in proportion to weight here), and
//! removing one endpoint frees only its own slots, so only the keys that
//! hashed to it move.

use crate::balance::Member;
use crate::balance::hash::hasher::hash_seeded;

/// The table size is a prime at least this large...
const MIN_SIZE: u64 = 65_537;
/// ...and at least this many slots per endpoint, which keeps each
/// endpoint's share within about a percent of fair.
const SLOTS_PER_ENDPOINT: u64 = 20;

/// Builds the table: slot -> index into `members`. Empty for no members.
pub(crate) fn build(members: &[Member]) -> Box<[u32]> {
    let n = members.len();
    if n == 0 {
        return Box::new([]);
    }
    let size = next_prime(MIN_SIZE.max(SLOTS_PER_ENDPOINT * n as u64));
    let mut table = vec![u32::MAX; size as usize];
    let permutations: Vec<(u64, u64)> = members
        .iter()
        .map(|m| {
            let key = m.endpoint().key().as_bytes();
            let offset = hash_seeded(0x6d61_676c, key) % size;
            let skip = hash_seeded(0x736b_6970, key) % (size - 1) + 1;
            (offset, skip)
        })
        .collect();
    let max_weight = members.iter().map(Member::weight).max().unwrap_or(1);
    let mut next = vec![0u64; n];
    // Turns are shared out by weight: an endpoint of half the heaviest
    // weight claims a slot every other round.
    let mut credit = vec![0f64; n];
    let mut filled = 0u64;
    'fill: loop {
        for i in 0..n {
            credit[i] += f64::from(members[i].weight()) / f64::from(max_weight);
            while credit[i] >= 1.0 {
                credit[i] -= 1.0;
                let (offset, skip) = permutations[i];
                // `skip` is coprime with the prime `size`, so the walk visits
                // every slot and finds a free one while any remains.
                loop {
                    let slot = ((offset + next[i] * skip) % size) as usize;
                    next[i] += 1;
                    if table[slot] == u32::MAX {
                        table[slot] = i as u32;
                        filled += 1;
                        break;
                    }
                }
                if filled == size {
                    break 'fill;
                }
            }
        }
    }
    table.into_boxed_slice()
}

fn next_prime(mut n: u64) -> u64 {
    while !is_prime(n) {
        n += 1;
    }
    n
}

fn is_prime(n: u64) -> bool {
    if n < 4 {
        return n >= 2;
    }
    if n.is_multiple_of(2) {
        return false;
    }
    let mut d = 3;
    while d * d <= n {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 2;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn primes() {
        assert_eq!(next_prime(65_537), 65_537);
        assert_eq!(next_prime(20), 23);
        assert!(!is_prime(65_535));
    }
}
