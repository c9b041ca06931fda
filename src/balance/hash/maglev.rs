//! Maglev lookup tables (Eisenbud et al., NSDI 2016).
//!
//! Each endpoint walks its own permutation of the table's slots and claims
//! the next free one in turn until the table is full. Every endpoint ends up
//! with an almost equal share of slots (in proportion to weight here), and
//! removing one endpoint frees only its own slots, so only the keys that
//! hashed to it move.

use crate::balance::hash::hasher::hash_seeded;
use crate::balance::hash::slots::{Slots, SlotsMut};
use crate::balance::{Change, Member, Members};

/// The smallest table is a prime at least this large...
const MIN_SIZE: u64 = 65_537;
/// ...and at least this many slots per endpoint, which keeps each
/// endpoint's share within about a percent of fair.
const SLOTS_PER_ENDPOINT: u64 = 20;
/// An incremental update copies the table and scans it once per removal;
/// above this many slots scanned in one update, rebuilding is as cheap.
const MAX_UPDATE_SCAN: u64 = 1 << 24;
/// How far along the table a freed slot looks for an owner below its
/// share before it settles for the first owner it met.
const MAX_WALK: usize = 64;

/// The table's size for `n` endpoints: the first prime at or above
/// `MIN_SIZE · 2^k` that gives every endpoint `SLOTS_PER_ENDPOINT` slots.
/// A function of `n` alone (every client of the same set agrees) that
/// changes only when `n` crosses a power of two of the minimum, so a
/// single change almost never resizes (and so remaps) the whole table.
pub(crate) fn size_for(n: usize) -> u64 {
    let wanted = SLOTS_PER_ENDPOINT.saturating_mul(n as u64);
    let mut base = MIN_SIZE;
    while base < wanted && base < u64::from(u32::MAX) / 2 {
        base *= 2;
    }
    next_prime(base)
}

/// A Maglev table and how many slots each member owns (the counts are what
/// an incremental update needs to keep the shares fair).
pub(crate) struct Table {
    pub(crate) slots: Slots,
    pub(crate) counts: Box<[u32]>,
}

impl Table {
    pub(crate) fn empty() -> Self {
        Self {
            slots: Slots::default(),
            counts: Box::new([]),
        }
    }
}

/// Where `key`'s walk of a table of `size` starts, and its stride.
fn permutation(key: &str, size: u64) -> (u64, u64) {
    let key = key.as_bytes();
    let offset = hash_seeded(0x6d61_676c, key) % size;
    let skip = hash_seeded(0x736b_6970, key) % (size - 1) + 1;
    (offset, skip)
}

/// Builds the table: slot -> index into `members`. Empty for no members.
///
/// The endpoints take their turns in key order, so that every client with
/// the same set builds the same table, whatever order the set came in.
pub(crate) fn build(members: &Members) -> Table {
    let n = members.len();
    if n == 0 {
        return Table::empty();
    }
    let size = size_for(n);
    let mut order: Vec<u32> = (0..n as u32).collect();
    order.sort_unstable_by(|&a, &b| {
        members[a as usize]
            .endpoint()
            .key()
            .cmp(members[b as usize].endpoint().key())
    });
    let mut table = vec![u32::MAX; size as usize];
    let mut counts = vec![0u32; n];
    // Read in the fill's order, not through each member on every turn.
    let weights: Vec<u32> = order
        .iter()
        .map(|&i| members[i as usize].weight())
        .collect();
    // Each endpoint's next slot to try, and its stride.
    let mut walks: Vec<(u64, u64)> = order
        .iter()
        .map(|&i| permutation(members[i as usize].endpoint().key(), size))
        .collect();
    let max_weight = weights.iter().copied().max().unwrap_or(1).max(1);
    // Turns are shared out by weight: an endpoint of half the heaviest
    // weight claims a slot every other round.
    let mut credit = vec![0f64; n];
    let mut filled = 0u64;
    'fill: loop {
        for (turn, &i) in order.iter().enumerate() {
            credit[turn] += f64::from(weights[turn]) / f64::from(max_weight);
            while credit[turn] >= 1.0 {
                credit[turn] -= 1.0;
                let (next, skip) = &mut walks[turn];
                // `skip` is coprime with the prime `size`, so the walk visits
                // every slot and finds a free one while any remains.
                loop {
                    let slot = *next as usize;
                    *next += *skip;
                    if *next >= size {
                        *next -= size;
                    }
                    if table[slot] == u32::MAX {
                        table[slot] = i;
                        counts[i as usize] += 1;
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
    Table {
        slots: Slots::from_vec(table),
        counts: counts.into_boxed_slice(),
    }
}

/// `table` after `changes` to the set it was built for (now `members`), or
/// `None` when rebuilding is the better course: the size for the new count
/// differs, a weight changed, the removals would scan too much, the set was
/// emptied on the way (a whole set replaced), the set grows by more than a
/// quarter (the new members' rounded-down shares would leave the old ones
/// well above theirs), or a freed slot finds no owner below its share
/// nearby (a heavy endpoint left).
///
/// Only the slots of an endpoint that leaves change owner, and a new
/// endpoint takes only as many slots as its fair share, each from an owner
/// above its own: Maglev's minimal disruption, kept without a rebuild. The
/// result depends on the order of the changes, so a client that followed
/// them and one that built afresh from the same set agree on all but the
/// slots the changes moved (about one in `n` per change); each full rebuild
/// (a batch, a resize) brings them back to the same table.
pub(crate) fn update(
    slots: &Slots,
    counts: &[u32],
    members: &Members,
    changes: &[Change],
    total_weight: u64,
) -> Option<Table> {
    let size = slots.len() as u64;
    if members.is_empty() || size == 0 || size_for(members.len()) != size {
        return None;
    }
    let removals = changes
        .iter()
        .filter(|c| matches!(c, Change::Removed { .. }))
        .count() as u64;
    if removals.saturating_mul(size) > MAX_UPDATE_SCAN {
        return None;
    }
    let additions = changes
        .iter()
        .filter(|c| matches!(c, Change::Added { .. }))
        .count();
    if additions > counts.len() / 4 + 1 {
        return None;
    }
    let mut edit = slots.edit();
    let mut counts = counts.to_vec();
    // Members added in this update, by their index as it moves: they claim
    // their slots at the end, under the index and key they end up with (an
    // index seen mid-update may hold another member by the end).
    let mut fresh = vec![false; counts.len()];
    for change in changes {
        match *change {
            Change::Added { index } => {
                if index != counts.len() {
                    return None;
                }
                counts.push(0);
                fresh.push(true);
            }
            Change::Removed { index, last } => {
                // `last == 0`: the set is empty for a moment, no member is
                // left to take the freed slots.
                if last.checked_add(1) != Some(counts.len()) || index > last || last == 0 {
                    return None;
                }
                if !release(&mut edit, &mut counts, members, index, last, total_weight) {
                    return None;
                }
                fresh.swap_remove(index);
            }
            Change::Replaced { .. } => return None,
        }
    }
    if counts.len() != members.len() {
        return None;
    }
    for (index, _) in fresh.iter().enumerate().filter(|(_, f)| **f) {
        let member = members.get(index)?;
        claim(&mut edit, &mut counts, members, index, member, total_weight);
    }
    Some(Table {
        slots: edit.freeze(),
        counts: counts.into_boxed_slice(),
    })
}

/// The most slots `weight` of `total` may own in a table of `size`:
/// rounded up, so the shares always cover the table.
fn quota(size: u64, weight: u32, total: u64) -> u64 {
    (u128::from(size) * u128::from(weight)).div_ceil(u128::from(total.max(1))) as u64
}

/// The new member at `index` walks its own permutation and takes slots
/// from owners above their (rounded-down) share until it has its own.
fn claim(
    slots: &mut SlotsMut,
    counts: &mut [u32],
    members: &Members,
    index: usize,
    member: &Member,
    total_weight: u64,
) {
    let size = slots.len() as u64;
    let share = |weight: u32| {
        (u128::from(size) * u128::from(weight) / u128::from(total_weight.max(1))) as u64
    };
    let target = share(member.weight()).max(1);
    let (mut next, skip) = permutation(member.endpoint().key(), size);
    for _ in 0..size {
        if u64::from(counts[index]) >= target {
            break;
        }
        let slot = next as usize;
        next += skip;
        if next >= size {
            next -= size;
        }
        let owner = slots.get(slot) as usize;
        if owner == index || owner >= counts.len() {
            continue;
        }
        let owner_weight = members.get(owner).map_or(1, Member::weight);
        if u64::from(counts[owner]) > share(owner_weight) {
            slots.set(slot, index as u32);
            counts[owner] -= 1;
            counts[index] += 1;
        }
    }
}

/// The member at `index` left and the one at `last` moved there: its slots
/// are relabelled, and each freed slot goes to the owner of the next slot
/// along the table that is below its share. `false` when some freed slot
/// finds none within `MAX_WALK` slots: the caller rebuilds rather than
/// overload an owner.
fn release(
    slots: &mut SlotsMut,
    counts: &mut Vec<u32>,
    members: &Members,
    index: usize,
    last: usize,
    total_weight: u64,
) -> bool {
    let (gone, moved) = (index as u32, last as u32);
    let mut freed = Vec::with_capacity(counts[index] as usize);
    for (slot, owner) in slots.owned_by(gone, moved) {
        if owner == gone {
            slots.set(slot, u32::MAX);
            freed.push(slot);
        } else {
            slots.set(slot, gone);
        }
    }
    counts.swap_remove(index);
    let size = slots.len();
    // The shares are rounded up, so the table has barely a slot of slack,
    // and in a table smaller than the set some members own no slot at all
    // (the walk never meets them): a freed slot that meets no owner below
    // its share goes to the least loaded owner it met, one above its share
    // at most; only when it met none (a run of freed slots) is every
    // member looked at, a scan bounded so that a large pool rebuilds
    // rather than scan for long.
    let mut scans_left = MAX_UPDATE_SCAN / (counts.len() as u64).max(1);
    let weight = |index: usize| u64::from(members.get(index).map_or(1, Member::weight));
    // Fewer slots for its weight: counts[a] / w(a) < counts[b] / w(b).
    let lighter = |counts: &[u32], a: usize, b: usize| {
        u128::from(counts[a]) * u128::from(weight(b))
            < u128::from(counts[b]) * u128::from(weight(a))
    };
    for start in freed {
        let mut below_share = None;
        let mut least_met: Option<usize> = None;
        for step in 1..size.min(MAX_WALK) {
            let slot = if start + step >= size {
                start + step - size
            } else {
                start + step
            };
            let owner = slots.get(slot) as usize;
            if owner >= counts.len() {
                continue;
            }
            if u64::from(counts[owner]) < quota(size as u64, weight(owner) as u32, total_weight) {
                below_share = Some(owner);
                break;
            }
            if least_met.is_none_or(|least| lighter(counts, owner, least)) {
                least_met = Some(owner);
            }
        }
        let owner = match below_share.or(least_met) {
            Some(owner) => owner,
            None if scans_left > 0 => {
                scans_left -= 1;
                match least_loaded(counts, members) {
                    Some(owner) => owner,
                    None => return false,
                }
            }
            None => return false,
        };
        slots.set(start, owner as u32);
        counts[owner] += 1;
    }
    true
}

/// The member with the fewest slots for its weight (the first on a tie):
/// the one furthest below its share, or, while members added later in the
/// same batch have not claimed theirs yet, the one least above it.
fn least_loaded(counts: &[u32], members: &Members) -> Option<usize> {
    let weight = |index: usize| u64::from(members.get(index).map_or(1, Member::weight));
    (0..counts.len()).min_by(|&a, &b| {
        // counts[a] / weight(a) against counts[b] / weight(b), in integers.
        let left = u128::from(counts[a]) * u128::from(weight(b));
        let right = u128::from(counts[b]) * u128::from(weight(a));
        left.cmp(&right).then(a.cmp(&b))
    })
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
