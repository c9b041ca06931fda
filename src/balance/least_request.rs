use crate::balance::{Balancer, Change, Members, PickContext, Picker};

/// The endpoint with the fewest requests in flight from this client.
///
/// By default it draws two distinct endpoints at random and takes the less
/// loaded ("power of two choices"): O(1) per pick, and, as Mitzenmacher
/// showed, nearly as good as knowing every load while avoiding the herd
/// that an exact minimum causes when many clients see the same numbers.
/// [`LeastRequestMode::FullScan`] looks at every endpoint instead: exact,
/// but O(n); meant for small pools.
///
/// ```
/// use tower_lb::balance::{LeastRequest, LeastRequestMode};
///
/// let p2c = LeastRequest::new();
/// let exact = LeastRequest::new().mode(LeastRequestMode::FullScan);
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct LeastRequest {
    mode: LeastRequestMode,
}

/// How [`LeastRequest`] compares endpoints.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum LeastRequestMode {
    /// The less loaded of two random endpoints (the default).
    #[default]
    PowerOfTwoChoices,
    /// The least loaded of all endpoints; ties go to a random one of them.
    FullScan,
}

impl LeastRequest {
    /// Least request with two random choices.
    pub fn new() -> Self {
        Self::default()
    }

    /// Chooses how endpoints are compared.
    pub fn mode(mut self, mode: LeastRequestMode) -> Self {
        self.mode = mode;
        self
    }
}

struct TwoChoices;
struct FullScan;

impl Balancer for LeastRequest {
    fn name(&self) -> &'static str {
        match self.mode {
            LeastRequestMode::PowerOfTwoChoices => "least_request",
            LeastRequestMode::FullScan => "least_request_full_scan",
        }
    }

    fn picker(&self, _members: &Members) -> Box<dyn Picker> {
        match self.mode {
            LeastRequestMode::PowerOfTwoChoices => Box::new(TwoChoices),
            LeastRequestMode::FullScan => Box::new(FullScan),
        }
    }
}

impl Picker for TwoChoices {
    #[inline]
    fn pick(&self, members: &Members, ctx: &PickContext<'_>) -> Option<usize> {
        match members.len() {
            0 => None,
            1 => Some(0),
            n => {
                let (a, b) = ctx.random_pair(n);
                let (la, lb) = (
                    members[a].state().in_flight(),
                    members[b].state().in_flight(),
                );
                // Ties keep `a`, itself a random choice, so ties spread evenly.
                Some(if lb < la { b } else { a })
            }
        }
    }

    fn update(&self, _members: &Members, _changes: &[Change]) -> Option<Box<dyn Picker>> {
        Some(Box::new(TwoChoices))
    }
}

impl Picker for FullScan {
    fn pick(&self, members: &Members, ctx: &PickContext<'_>) -> Option<usize> {
        let n = members.len();
        if n == 0 {
            return None;
        }
        // Starting the scan at a random place and keeping the first minimum
        // breaks ties at random without a second pass.
        let start = ctx.random_below(n);
        let mut best = start;
        let mut best_load = members[start].state().in_flight();
        for step in 1..n {
            if best_load == 0 {
                break;
            }
            let i = (start + step) % n;
            let load = members[i].state().in_flight();
            if load < best_load {
                best = i;
                best_load = load;
            }
        }
        Some(best)
    }

    fn update(&self, _members: &Members, _changes: &[Change]) -> Option<Box<dyn Picker>> {
        Some(Box::new(FullScan))
    }
}
