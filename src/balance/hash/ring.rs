//! A hash ring (Karger et al., as in Ketama): each endpoint owns many points
//! on a 64-bit circle; a key belongs to the first point at or after its hash.
//!
//! The ring's sorted `(point, member index)` pairs sit in shared chunks of
//! a few hundred, so that a change of one endpoint edits the chunks its
//! points fall in (and the table of chunks) instead of sorting every point
//! again: at 10,000 endpoints of 160 points each, a rebuild sorts 1.6
//! million points for every change, which a registry changing ten times a
//! second turned into two thirds of a core.

use std::sync::Arc;

use crate::balance::hash::hasher::hash_seeded;
use crate::balance::{Change, Member, Members};

/// Above this many points in all, points per weight unit are scaled down,
/// so a ring of 100,000 endpoints stays a few tens of megabytes.
const MAX_POINTS: u64 = 1 << 22;

/// Points per chunk as built; a chunk that grows to twice this splits. An
/// edit copies the chunks it touches (4 KiB each) and the chunk table
/// (one pointer and one point per chunk).
const CHUNK: usize = 256;

/// A point and the slot of the member that owns it.
type Point = (u64, u32);

/// A slot no member holds.
const FREE: u32 = u32::MAX;

/// The ring: sorted points in chunks, and how it was sized.
#[derive(Clone)]
pub(crate) struct Ring {
    /// Non-empty chunks in point order, each sorted.
    chunks: Vec<Arc<Vec<Point>>>,
    /// Each slot's member index ([`FREE`] for none). Points name a member
    /// by a slot that stays its own while it is in the set, so that a
    /// member moved in the list (the last one, into a leaver's place)
    /// changes one entry here and none of its points.
    index_of: Vec<u32>,
    /// Each member's slot, by its index.
    slot_of: Vec<u32>,
    /// Slots given up, to be used again.
    free: Vec<u32>,
    /// The first point of each chunk, for the search.
    firsts: Vec<Point>,
    len: usize,
    /// The members' weights summed, kept through updates: summing them
    /// again would read every member.
    total_weight: u64,
    points_per_weight: u32,
    /// Built over [`MAX_POINTS`], every endpoint's share of points depends
    /// on the total weight: such a ring is rebuilt, never edited.
    scaled: bool,
}

/// Where a hash lands: a chunk and a place in it.
#[derive(Clone, Copy)]
pub(crate) struct Position {
    chunk: usize,
    offset: usize,
}

impl Ring {
    /// The ring of `members`, `points_per_weight` points per unit of weight.
    pub(crate) fn build(members: &Members, points_per_weight: u32) -> Self {
        let points_per_weight = points_per_weight.max(1);
        let total_weight: u64 = members.iter().map(|m| u64::from(m.weight())).sum();
        let wanted = u64::from(points_per_weight).saturating_mul(total_weight);
        let scaled = wanted > MAX_POINTS;
        // Within the budget every unit of weight gets its points; over it,
        // each endpoint gets its share of the budget (at least one point),
        // so memory stays bounded whatever weights discovery reports.
        let points_of = |weight: u64| -> u64 {
            if scaled {
                ((u128::from(weight) * u128::from(MAX_POINTS)) / u128::from(total_weight)).max(1)
                    as u64
            } else {
                u64::from(points_per_weight) * weight
            }
        };
        let capacity = wanted.min(MAX_POINTS + members.len() as u64);
        let mut points = Vec::with_capacity(capacity as usize);
        for (i, member) in members.iter().enumerate() {
            let key = member.endpoint().key().as_bytes();
            for replica in 0..points_of(u64::from(member.weight())) {
                points.push((hash_seeded(replica, key), i as u32));
            }
        }
        points.sort_unstable();
        let len = points.len();
        let chunks: Vec<Arc<Vec<Point>>> =
            points.chunks(CHUNK).map(|c| Arc::new(c.to_vec())).collect();
        let firsts = chunks.iter().map(|c| c[0]).collect();
        // A fresh ring's slots are the members' indices.
        let slots: Vec<u32> = (0..members.len() as u32).collect();
        Self {
            chunks,
            index_of: slots.clone(),
            slot_of: slots,
            free: Vec::new(),
            firsts,
            len,
            total_weight,
            points_per_weight,
            scaled,
        }
    }

    /// The weights of the members it was made for, summed.
    pub(crate) fn total_weight(&self) -> u64 {
        self.total_weight
    }

    /// How many points the ring holds.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The first point at or after `hash`, wrapping. The ring must not be
    /// empty.
    #[inline]
    pub(crate) fn position(&self, hash: u64) -> Position {
        // Chunks before `after` start below `hash`: the point is in the
        // last of them, or is the first of the next chunk.
        let after = self.firsts.partition_point(|&(p, _)| p < hash);
        if let Some(chunk) = after.checked_sub(1) {
            let offset = self.chunks[chunk].partition_point(|&(p, _)| p < hash);
            if offset < self.chunks[chunk].len() {
                return Position { chunk, offset };
            }
        }
        Position {
            chunk: if after < self.chunks.len() { after } else { 0 },
            offset: 0,
        }
    }

    /// The member owning the point at `at`.
    #[inline]
    pub(crate) fn member_at(&self, at: Position) -> usize {
        self.index_of[self.chunks[at.chunk][at.offset].1 as usize] as usize
    }

    /// The members owning every point from `at` on, once round the ring.
    pub(crate) fn walk(&self, at: Position) -> impl Iterator<Item = usize> + '_ {
        let first = &self.chunks[at.chunk];
        first[at.offset..]
            .iter()
            .chain(self.chunks[at.chunk + 1..].iter().flat_map(|c| c.iter()))
            .chain(self.chunks[..at.chunk].iter().flat_map(|c| c.iter()))
            .chain(first[..at.offset].iter())
            .map(|&(_, slot)| self.index_of[slot as usize] as usize)
    }

    /// The ring after `changes` took the member list from `old` to `new`,
    /// edited in place: the points of members that left go, those of
    /// members that joined come; a member moved in the list keeps its slot
    /// and its points. `None` when a rebuild is the better course or the
    /// only correct one: a ring scaled to its point budget, a batch that
    /// edits the points of more than a quarter of the set, a change log
    /// that does not match the lists.
    pub(crate) fn update(&self, old: &Members, new: &Members, changes: &[Change]) -> Option<Self> {
        if self.scaled || self.slot_of.len() != old.len() {
            return None;
        }
        let mut ring = self.clone();
        // Slots whose points must be put in at the end (members that joined
        // or were replaced in this batch), and the old members whose points
        // must go (by their index in `old`, through this ring's slots).
        let mut fresh = vec![false; ring.index_of.len()];
        let mut gone = Vec::new();
        for change in changes {
            match *change {
                Change::Added { index } => {
                    if index != ring.slot_of.len() {
                        return None;
                    }
                    let slot = match ring.free.pop() {
                        Some(slot) => slot,
                        None => {
                            ring.index_of.push(FREE);
                            fresh.push(false);
                            u32::try_from(ring.index_of.len() - 1).ok()?
                        }
                    };
                    ring.index_of[slot as usize] = u32::try_from(index).ok()?;
                    ring.slot_of.push(slot);
                    fresh[slot as usize] = true;
                }
                Change::Removed { index, last } => {
                    if last.checked_add(1) != Some(ring.slot_of.len()) || index > last {
                        return None;
                    }
                    let slot = ring.slot_of.swap_remove(index);
                    if let Some(&moved) = ring.slot_of.get(index) {
                        ring.index_of[moved as usize] = u32::try_from(index).ok()?;
                    }
                    ring.index_of[slot as usize] = FREE;
                    ring.free.push(slot);
                    if !std::mem::take(&mut fresh[slot as usize]) {
                        gone.push((slot, *self.index_of.get(slot as usize)? as usize));
                    }
                }
                Change::Replaced { index } => {
                    let slot = *ring.slot_of.get(index)?;
                    if !std::mem::replace(&mut fresh[slot as usize], true) {
                        gone.push((slot, *self.index_of.get(slot as usize)? as usize));
                    }
                }
            }
        }
        if ring.slot_of.len() != new.len() {
            return None;
        }
        let joined: Vec<u32> = (0..fresh.len() as u32)
            .filter(|&slot| fresh[slot as usize])
            .collect();
        // Past a quarter of the set, sorting afresh is as cheap, and leaves
        // no run of shrunken chunks behind.
        if joined.len().saturating_add(gone.len()) > new.len() / 4 + 1 {
            return None;
        }
        // The new total from the old, by the members that left and joined.
        let mut total_weight = self.total_weight;
        for &(_, j) in &gone {
            total_weight = total_weight.saturating_sub(u64::from(old.get(j)?.weight()));
        }
        for &slot in &joined {
            let member = new.get(ring.index_of[slot as usize] as usize)?;
            total_weight = total_weight.saturating_add(u64::from(member.weight()));
        }
        if u64::from(self.points_per_weight).saturating_mul(total_weight) > MAX_POINTS {
            return None;
        }
        ring.total_weight = total_weight;
        // Out before in: a slot given up and taken again in this batch
        // loses its old member's points before it gets the new one's.
        for &(slot, j) in &gone {
            for point in ring.points_of(old.get(j)?) {
                ring.remove((point, slot))?;
            }
        }
        for &slot in &joined {
            let member = new.get(ring.index_of[slot as usize] as usize)?;
            for point in ring.points_of(member) {
                ring.insert((point, slot));
            }
        }
        Some(ring)
    }

    /// The points `member` owns on an unscaled ring.
    fn points_of(&self, member: &Member) -> Vec<u64> {
        let key = member.endpoint().key().as_bytes();
        let count = u64::from(self.points_per_weight) * u64::from(member.weight());
        (0..count)
            .map(|replica| hash_seeded(replica, key))
            .collect()
    }

    /// The chunk where `point` belongs: the last starting at or below it.
    fn chunk_for(&self, point: Point) -> usize {
        self.firsts
            .partition_point(|&f| f <= point)
            .saturating_sub(1)
    }

    /// Removes `point`; `None` if it is not there.
    fn remove(&mut self, point: Point) -> Option<()> {
        let c = self.chunk_for(point);
        let chunk = chunk_mut(&mut self.chunks, c)?;
        let at = chunk.binary_search(&point).ok()?;
        chunk.remove(at);
        self.len -= 1;
        match chunk.first() {
            Some(&first) => self.firsts[c] = first,
            None => {
                self.chunks.remove(c);
                self.firsts.remove(c);
            }
        }
        Some(())
    }

    /// Inserts `point`, splitting a chunk that grows to twice its size.
    fn insert(&mut self, point: Point) {
        if self.chunks.is_empty() {
            self.chunks.push(Arc::new(vec![point]));
            self.firsts.push(point);
            self.len = 1;
            return;
        }
        let c = self.chunk_for(point);
        let Some(chunk) = chunk_mut(&mut self.chunks, c) else {
            return;
        };
        let at = chunk.binary_search(&point).unwrap_or_else(|at| at);
        chunk.insert(at, point);
        self.firsts[c] = chunk[0];
        self.len += 1;
        if chunk.len() >= 2 * CHUNK {
            let upper = chunk.split_off(CHUNK);
            let first = upper[0];
            self.chunks.insert(c + 1, Arc::new(upper));
            self.firsts.insert(c + 1, first);
        }
    }
}

/// Chunk `c` for editing: a chunk still shared with the ring this one
/// was cloned from is copied first, with room to grow (a copy of
/// exactly its length would be reallocated by the first insert).
fn chunk_mut(chunks: &mut [Arc<Vec<Point>>], c: usize) -> Option<&mut Vec<Point>> {
    let slot = chunks.get_mut(c)?;
    if Arc::get_mut(slot).is_none() {
        let mut copy = Vec::with_capacity(slot.len() + CHUNK / 4);
        copy.extend_from_slice(slot);
        *slot = Arc::new(copy);
    }
    Some(Arc::make_mut(slot))
}

#[cfg(test)]
mod tests {
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};

    use super::*;
    use crate::Endpoint;
    use crate::pool::load::EndpointState;
    use crate::pool::members::MemberList;

    const POINTS_PER_WEIGHT: u32 = 40;

    fn member(id: usize, weight: u32) -> Member {
        let endpoint = Endpoint::new(&format!("10.1.{}.{}:80", id / 200, id % 200 + 1))
            .unwrap()
            .with_weight(weight)
            .unwrap();
        Member::new(endpoint, EndpointState::detached())
    }

    /// The ring's points with the member index that owns each.
    fn flat(ring: &Ring) -> Vec<Point> {
        ring.chunks
            .iter()
            .flat_map(|c| c.iter().map(|&(p, slot)| (p, ring.index_of[slot as usize])))
            .collect()
    }

    /// Non-empty sorted chunks in order, `firsts` and `len` in step.
    fn assert_well_formed(ring: &Ring) {
        assert_eq!(ring.chunks.len(), ring.firsts.len());
        for (chunk, first) in ring.chunks.iter().zip(&ring.firsts) {
            assert!(!chunk.is_empty() && chunk.len() < 2 * CHUNK);
            assert_eq!(chunk[0], *first);
        }
        let points: Vec<Point> = ring.chunks.iter().flat_map(|c| c.iter().copied()).collect();
        assert!(points.windows(2).all(|w| w[0] < w[1]), "sorted, no repeats");
        assert_eq!(points.len(), ring.len());
        // Slots and indices agree both ways; points name only held slots.
        for (i, &slot) in ring.slot_of.iter().enumerate() {
            assert_eq!(ring.index_of[slot as usize] as usize, i);
        }
        let held = ring.index_of.iter().filter(|&&i| i != FREE).count();
        assert_eq!(held, ring.slot_of.len());
        assert!(
            points
                .iter()
                .all(|&(_, slot)| ring.index_of[slot as usize] != FREE)
        );
    }

    /// Random histories of batches (joins, swap-removals, weight changes,
    /// the set emptied on the way): the ring followed through each batch,
    /// or rebuilt where it declines, is the ring a fresh build of the same
    /// list makes, point for point, and lands and walks alike.
    #[test]
    fn a_followed_ring_is_the_fresh_build_of_its_list() {
        let mut rng = SmallRng::seed_from_u64(15);
        let mut followed = 0;
        for _history in 0..20 {
            let mut list = MemberList::default();
            let mut present: Vec<usize> = Vec::new();
            let mut next_id = 0;
            for _ in 0..rng.random_range(0..24) {
                list.push(member(next_id, rng.random_range(1..=3)));
                present.push(next_id);
                next_id += 1;
            }
            let (mut members, _) = list.publish();
            let mut ring = Ring::build(&members, POINTS_PER_WEIGHT);
            for _batch in 0..15 {
                for _ in 0..rng.random_range(1..=4) {
                    match rng.random_range(0..4) {
                        0 | 1 => {
                            list.push(member(next_id, rng.random_range(1..=3)));
                            present.push(next_id);
                            next_id += 1;
                        }
                        2 if !present.is_empty() => {
                            let i = rng.random_range(0..present.len());
                            list.swap_remove(i);
                            present.swap_remove(i);
                        }
                        3 if !present.is_empty() => {
                            let i = rng.random_range(0..present.len());
                            list.replace(i, member(present[i], rng.random_range(1..=3)));
                        }
                        _ => {}
                    }
                }
                let (now, changes) = list.publish();
                let updated = changes.and_then(|changes| ring.update(&members, &now, &changes));
                followed += usize::from(updated.is_some());
                ring = updated.unwrap_or_else(|| Ring::build(&now, POINTS_PER_WEIGHT));
                let fresh = Ring::build(&now, POINTS_PER_WEIGHT);
                assert_well_formed(&ring);
                assert_eq!(flat(&ring), flat(&fresh));
                assert_eq!(ring.total_weight(), fresh.total_weight());
                if ring.len() > 0 {
                    for _ in 0..20 {
                        let hash = rng.random::<u64>();
                        let (a, b) = (ring.position(hash), fresh.position(hash));
                        assert_eq!(ring.member_at(a), fresh.member_at(b));
                        assert!(ring.walk(a).eq(fresh.walk(b)));
                        assert_eq!(ring.walk(a).count(), ring.len());
                    }
                }
                members = now;
            }
        }
        // Most batches are followed, not rebuilt: the test is of `update`.
        assert!(followed > 150, "{followed} of 300 batches followed");
    }

    /// A change log that does not fit the lists (a hand-made one, say) is
    /// declined, not trusted: no panic, no arithmetic overflow.
    #[test]
    fn a_change_log_that_does_not_fit_is_declined() {
        let mut list = MemberList::default();
        list.push(member(0, 1));
        list.push(member(1, 1));
        let (members, _) = list.publish();
        let ring = Ring::build(&members, POINTS_PER_WEIGHT);
        for changes in [
            vec![Change::Removed {
                index: 0,
                last: usize::MAX,
            }],
            vec![Change::Added { index: 7 }],
            vec![Change::Replaced { index: 9 }],
            vec![Change::Removed { index: 5, last: 1 }],
        ] {
            assert!(
                ring.update(&members, &members, &changes).is_none(),
                "{changes:?}"
            );
        }
    }
}
