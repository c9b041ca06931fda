use crate::balance::{Balancer, Member, Members, PickContext, Picker};

/// A random endpoint, chosen in proportion to weight.
///
/// Picks from an alias table (Vose's method) built once per endpoint set:
/// one uniform draw of a column and one biased coin, O(1) whatever the
/// number of endpoints and the spread of weights.
///
/// ```
/// use tower_lb::balance::WeightedRandom;
/// use tower_lb::{Endpoint, Pool, discover::Fixed};
///
/// let pool = Pool::builder("greet", Fixed::new([
///     Endpoint::new("127.0.0.1:5001")?.with_weight(3)?,
///     Endpoint::new("127.0.0.1:5002")?,
/// ])?)
/// .balancer(WeightedRandom::new())
/// .build();
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct WeightedRandom {
    _private: (),
}

impl WeightedRandom {
    /// The weighted random balancer.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Balancer for WeightedRandom {
    fn name(&self) -> &'static str {
        "weighted_random"
    }

    fn picker(&self, members: &Members) -> Box<dyn Picker> {
        Box::new(AliasTable::new(members.iter().map(Member::weight)))
    }
}

/// Column `i` keeps itself with probability `keep[i] / 2^32` and otherwise
/// gives way to `alias[i]`.
pub(crate) struct AliasTable {
    keep: Box<[u32]>,
    alias: Box<[u32]>,
}

impl AliasTable {
    pub(crate) fn new(weights: impl Iterator<Item = u32>) -> Self {
        let weights: Vec<f64> = weights.map(f64::from).collect();
        let n = weights.len();
        let total: f64 = weights.iter().sum();
        let mut keep = vec![u32::MAX; n];
        let mut alias: Vec<u32> = (0..n as u32).collect();
        if n == 0 || total <= 0.0 {
            return Self {
                keep: keep.into(),
                alias: alias.into(),
            };
        }
        // Scale so the mean column holds exactly 1.
        let mut scaled: Vec<f64> = weights.iter().map(|w| w * n as f64 / total).collect();
        let (mut small, mut large): (Vec<usize>, Vec<usize>) =
            (0..n).partition(|&i| scaled[i] < 1.0);
        while let (Some(s), Some(&l)) = (small.pop(), large.last()) {
            keep[s] = (scaled[s] * f64::from(u32::MAX)) as u32;
            alias[s] = l as u32;
            scaled[l] -= 1.0 - scaled[s];
            if scaled[l] < 1.0 {
                large.pop();
                small.push(l);
            }
        }
        // Whatever remains is full up to rounding: it keeps itself.
        Self {
            keep: keep.into(),
            alias: alias.into(),
        }
    }

    #[inline]
    pub(crate) fn sample(&self, ctx: &PickContext<'_>) -> Option<usize> {
        if self.keep.is_empty() {
            return None;
        }
        let column = ctx.random_below(self.keep.len());
        let coin = ctx.random_u64() as u32;
        Some(if coin < self.keep[column] {
            column
        } else {
            self.alias[column] as usize
        })
    }
}

impl Picker for AliasTable {
    #[inline]
    fn pick(&self, members: &Members, ctx: &PickContext<'_>) -> Option<usize> {
        debug_assert_eq!(members.len(), self.keep.len());
        self.sample(ctx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frequencies_follow_weights() {
        let weights = [1u32, 2, 3, 10, 4];
        let table = AliasTable::new(weights.iter().copied());
        let mut counts = [0u32; 5];
        let draws = 1_000_000;
        for _ in 0..draws {
            counts[table.sample(&PickContext::new("t")).unwrap()] += 1;
        }
        let total: u32 = weights.iter().sum();
        for (i, &w) in weights.iter().enumerate() {
            let expected = f64::from(w) / f64::from(total);
            let seen = f64::from(counts[i]) / f64::from(draws);
            assert!((seen - expected).abs() < 0.002, "{i}: {seen} vs {expected}");
        }
    }
}
