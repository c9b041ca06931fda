use crate::balance::weighted_random::AliasTable;
use crate::balance::{Balancer, Member, Members, PickContext, Picker};

/// Least request that honours weights: at equal latency an endpoint of
/// weight 2 carries about twice the load of one of weight 1.
///
/// Draws two candidates in proportion to weight (from an alias table, O(1))
/// and keeps the one with fewer requests in flight *per unit of weight*.
/// With no load at all the choice is simply weighted random; under load the
/// in-flight counts settle in proportion to the weights.
#[derive(Debug, Clone, Copy, Default)]
pub struct WeightedLeastRequest {
    _private: (),
}

impl WeightedLeastRequest {
    /// The weighted least-request balancer.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Balancer for WeightedLeastRequest {
    fn name(&self) -> &'static str {
        "weighted_least_request"
    }

    fn picker(&self, members: &Members) -> Box<dyn Picker> {
        Box::new(WeightedTwoChoices {
            draws: AliasTable::new(members.iter().map(Member::weight)),
        })
    }
}

struct WeightedTwoChoices {
    draws: AliasTable,
}

impl Picker for WeightedTwoChoices {
    #[inline]
    fn pick(&self, members: &Members, ctx: &PickContext<'_>) -> Option<usize> {
        let a = self.draws.sample(ctx)?;
        if members.len() == 1 {
            return Some(a);
        }
        // Two distinct candidates, as in unweighted P2C; a few redraws
        // suffice unless one weight dwarfs the rest, and then its neighbour
        // is as good a second opinion as any.
        let b = (0..8)
            .filter_map(|_| self.draws.sample(ctx))
            .find(|&b| b != a)
            .unwrap_or((a + 1) % members.len());
        let (ma, mb) = (&members[a], &members[b]);
        // in_flight_a / w_a < in_flight_b / w_b, without division.
        let load_a = ma.state().in_flight() as u64 * u64::from(mb.weight());
        let load_b = mb.state().in_flight() as u64 * u64::from(ma.weight());
        Some(if load_b < load_a { b } else { a })
    }
}
