use crate::balance::{Balancer, Change, Members, PickContext, Picker};

/// A uniformly random endpoint, ignoring weights and load.
///
/// Needs no shared state at all, so it scales across threads perfectly;
/// over many requests it spreads load as evenly as round robin, with more
/// short-term variance.
#[derive(Debug, Clone, Copy, Default)]
pub struct Random {
    _private: (),
}

impl Random {
    /// The random balancer.
    pub fn new() -> Self {
        Self::default()
    }
}

struct RandomPicker;

impl Balancer for Random {
    fn name(&self) -> &'static str {
        "random"
    }

    fn picker(&self, _members: &Members) -> Box<dyn Picker> {
        Box::new(RandomPicker)
    }
}

impl Picker for RandomPicker {
    #[inline]
    fn pick(&self, members: &Members, ctx: &PickContext<'_>) -> Option<usize> {
        (!members.is_empty()).then(|| ctx.random_below(members.len()))
    }

    fn update(&self, _members: &Members, _changes: &[Change]) -> Option<Box<dyn Picker>> {
        Some(Box::new(RandomPicker))
    }
}
