//! A hash ring (Karger et al., as in Ketama): each endpoint owns many points
//! on a 64-bit circle; a key belongs to the first point at or after its hash.

use crate::balance::Members;
use crate::balance::hash::hasher::hash_seeded;

/// Above this many points in all, points per weight unit are scaled down,
/// so a ring of 100,000 endpoints stays a few tens of megabytes.
const MAX_POINTS: u64 = 1 << 22;

/// Sorted `(point, member index)` pairs.
pub(crate) fn build(members: &Members, points_per_weight: u32) -> Box<[(u64, u32)]> {
    let total_weight: u64 = members.iter().map(|m| u64::from(m.weight())).sum();
    if total_weight == 0 {
        return Box::new([]);
    }
    let wanted = u64::from(points_per_weight.max(1)).saturating_mul(total_weight);
    // Within the budget every unit of weight gets its points; over it, each
    // endpoint gets its share of the budget (at least one point), so memory
    // stays bounded whatever weights discovery reports.
    let points_of = |weight: u64| -> u64 {
        if wanted <= MAX_POINTS {
            u64::from(points_per_weight.max(1)) * weight
        } else {
            ((u128::from(weight) * u128::from(MAX_POINTS)) / u128::from(total_weight)).max(1) as u64
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
    points.into_boxed_slice()
}

/// The position of the first point at or after `hash`, wrapping.
#[inline]
pub(crate) fn position(points: &[(u64, u32)], hash: u64) -> usize {
    let i = points.partition_point(|&(p, _)| p < hash);
    if i == points.len() { 0 } else { i }
}
