use std::cmp::Ordering as CmpOrdering;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::balance::fastmod::FastMod;
use crate::balance::{Balancer, Members, PickContext, Picker, rng};

/// Round robin in proportion to weight, smoothly interleaved.
///
/// Against a weight-1 endpoint, a weight-3 endpoint gets 3 of every 4 picks,
/// spread out (`A A B A`), not in a burst (`A A A B`): the order is that of
/// earliest-deadline-first scheduling, where an endpoint of weight `w` is due
/// at `(k + ½) / w` for its `k`-th pick. That order is computed once per
/// endpoint set into a schedule, so a pick is one atomic add and one load.
///
/// Weights are reduced by their greatest common divisor first. When the
/// reduced weights still sum to more than about a million, a schedule would
/// cost too much memory; picks then walk a low-discrepancy sequence (the
/// golden-ratio sequence) over the cumulative weights, which keeps the
/// proportions exact in the long run and the spread even, at O(log n) a pick.
///
/// ```
/// use tower_lb::balance::WeightedRoundRobin;
/// use tower_lb::{Endpoint, LoadBalanceLayer, discover::Fixed};
///
/// let layer = LoadBalanceLayer::builder()
///     .service("greet", Fixed::new([
///         Endpoint::new("127.0.0.1:5001")?.with_weight(3)?,
///         Endpoint::new("127.0.0.1:5002")?,
///     ])?)
///     .balancer(WeightedRoundRobin::new())
///     .build()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct WeightedRoundRobin {
    _private: (),
}

impl WeightedRoundRobin {
    /// The weighted round-robin balancer.
    pub fn new() -> Self {
        Self::default()
    }
}

/// Above this many slots the schedule gives way to the sequence walk
/// (4 MiB of `u32`s).
const MAX_SCHEDULE: u64 = 1 << 20;

enum Table {
    Schedule(Box<[u32]>),
    Cumulative { bounds: Box<[u64]>, total: u64 },
}

struct WeightedRoundRobinPicker {
    table: Table,
    next: AtomicUsize,
    /// The schedule's length, for a remainder without division (of the
    /// tick's low 32 bits: once in 4.3 billion picks the order jumps).
    schedule_len: Option<FastMod>,
}

impl Balancer for WeightedRoundRobin {
    fn name(&self) -> &'static str {
        "weighted_round_robin"
    }

    fn picker(&self, members: &Members) -> Box<dyn Picker> {
        let weights: Vec<u64> = members.iter().map(|m| u64::from(m.weight())).collect();
        let divisor = weights.iter().copied().fold(0, gcd).max(1);
        let weights: Vec<u64> = weights.iter().map(|w| w / divisor).collect();
        let total: u64 = weights.iter().sum();
        let table = if total <= MAX_SCHEDULE {
            Table::Schedule(schedule(&weights))
        } else {
            let bounds = weights
                .iter()
                .scan(0u64, |acc, w| {
                    *acc += w;
                    Some(*acc)
                })
                .collect();
            Table::Cumulative { bounds, total }
        };
        let start = match &table {
            Table::Schedule(s) if !s.is_empty() => rng::below(s.len()),
            _ => rng::next_u64() as usize,
        };
        let schedule_len = match &table {
            Table::Schedule(slots) => FastMod::new(slots.len()),
            Table::Cumulative { .. } => None,
        };
        Box::new(WeightedRoundRobinPicker {
            table,
            next: AtomicUsize::new(start),
            schedule_len,
        })
    }
}

impl Picker for WeightedRoundRobinPicker {
    #[inline]
    fn pick(&self, members: &Members, _ctx: &PickContext<'_>) -> Option<usize> {
        if members.is_empty() {
            return None;
        }
        let tick = self.next.fetch_add(1, Ordering::Relaxed);
        match &self.table {
            Table::Schedule(slots) => {
                let i = match self.schedule_len {
                    Some(len) => len.rem(tick as u32),
                    None => tick % slots.len(),
                };
                Some(slots[i] as usize)
            }
            Table::Cumulative { bounds, total } => {
                // Fractional part of tick·φ, as a 64-bit fixed-point number:
                // successive values fill [0, 1) as evenly as any sequence can.
                let fraction = (tick as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
                let position = ((u128::from(fraction) * u128::from(*total)) >> 64) as u64;
                Some(bounds.partition_point(|&b| b <= position))
            }
        }
    }
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// One deadline in the earliest-deadline-first order: endpoint `index`'s
/// pick number `round` is due at `(2·round + 1) / (2·weight)`.
#[derive(PartialEq, Eq)]
struct Due {
    round: u64,
    weight: u64,
    index: u32,
}

impl Ord for Due {
    fn cmp(&self, other: &Self) -> CmpOrdering {
        // Compare the fractions exactly by cross-multiplying. `BinaryHeap` is
        // a max-heap, so the earliest deadline must compare greatest; among
        // equal deadlines the lower index goes first, for a stable order.
        let mine = u128::from(2 * self.round + 1) * u128::from(other.weight);
        let theirs = u128::from(2 * other.round + 1) * u128::from(self.weight);
        theirs.cmp(&mine).then(other.index.cmp(&self.index))
    }
}

impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}

/// The full cycle of picks for these (reduced) weights: endpoint `i`
/// appears `weights[i]` times, interleaved.
fn schedule(weights: &[u64]) -> Box<[u32]> {
    let total: u64 = weights.iter().sum();
    if weights.iter().all(|&w| w == 1) {
        return (0..weights.len() as u32).collect();
    }
    let mut heap: BinaryHeap<Due> = weights
        .iter()
        .enumerate()
        .map(|(i, &weight)| Due {
            round: 0,
            weight,
            index: i as u32,
        })
        .collect();
    let mut slots = Vec::with_capacity(total as usize);
    while slots.len() < total as usize {
        let Some(mut due) = heap.pop() else { break };
        slots.push(due.index);
        due.round += 1;
        if due.round < due.weight {
            heap.push(due);
        }
    }
    slots.into_boxed_slice()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_to_one_is_interleaved() {
        assert_eq!(&*schedule(&[3, 1]), &[0, 0, 1, 0]);
    }

    #[test]
    fn schedule_honours_every_weight() {
        let weights = [5, 1, 3, 2];
        let slots = schedule(&weights);
        for (i, w) in weights.iter().enumerate() {
            assert_eq!(
                slots.iter().filter(|&&s| s as usize == i).count() as u64,
                *w
            );
        }
        // No endpoint is picked twice in a row when that can be avoided.
        let heavy_runs = slots
            .windows(3)
            .filter(|w| w[0] == w[1] && w[1] == w[2])
            .count();
        assert_eq!(heavy_runs, 0, "{slots:?}");
    }

    #[test]
    fn gcd_reduces_weights() {
        assert_eq!([100, 300].iter().copied().fold(0, gcd), 100);
    }
}
