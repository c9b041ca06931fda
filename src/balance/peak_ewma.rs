use std::time::Duration;

use tokio::time::Instant;

use crate::balance::{Balancer, LoadTracking, Member, PickContext, Picker};

/// Peak-EWMA with two random choices: Finagle's and Linkerd's default.
///
/// Each endpoint's cost is its round-trip estimate times its requests in
/// flight plus one; of two random endpoints the cheaper wins. The estimate
/// is a moving average that jumps up at once on a slow answer (peak
/// sensitive) and drifts back down with fast answers and with time, so a
/// slow endpoint sheds load within one request and wins it back gradually.
///
/// Unlike tower's `PeakEwma`, failures are not cheap: a failed request
/// counts as at least the failure penalty (default 1 s), so an endpoint that
/// refuses connections or answers 503 in a millisecond looks expensive and
/// is left almost alone until its estimate decays enough to be tried again.
///
/// ```
/// use std::time::Duration;
/// use tower_lb::balance::PeakEwma;
///
/// let balancer = PeakEwma::new()
///     .decay(Duration::from_secs(5))
///     .default_rtt(Duration::from_millis(10))
///     .failure_penalty(Duration::from_millis(500));
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct PeakEwma {
    tracking: LoadTracking,
}

impl PeakEwma {
    /// Peak-EWMA with the defaults: decay 10 s, default round trip 30 ms,
    /// failure penalty 1 s.
    pub fn new() -> Self {
        Self::default()
    }

    /// How fast the estimate forgets (default 10 s).
    pub fn decay(mut self, decay: Duration) -> Self {
        self.tracking.decay = decay;
        self
    }

    /// The estimate for an endpoint with no history yet (default 30 ms).
    pub fn default_rtt(mut self, rtt: Duration) -> Self {
        self.tracking.default_rtt = rtt;
        self
    }

    /// The least round trip a failed request counts as (default 1 s).
    pub fn failure_penalty(mut self, penalty: Duration) -> Self {
        self.tracking.failure_penalty = penalty;
        self
    }
}

impl Balancer for PeakEwma {
    fn name(&self) -> &'static str {
        "peak_ewma"
    }

    fn picker(&self, _members: &[Member]) -> Box<dyn Picker> {
        Box::new(PeakEwmaPicker)
    }

    fn load_tracking(&self) -> LoadTracking {
        self.tracking
    }
}

struct PeakEwmaPicker;

/// How far past a fast-failing candidate the picker looks for a stand-in.
const MAX_SKIP: usize = 8;

impl Picker for PeakEwmaPicker {
    #[inline]
    fn pick(&self, members: &[Member], ctx: &PickContext<'_>) -> Option<usize> {
        let n = members.len();
        if n < 2 {
            return (n == 1).then_some(0);
        }
        let (a, b) = ctx.random_pair(n);
        let now = members[a].state().recent_now();
        // Plain P2C compares two endpoints; when both are bad (one slow, one
        // refusing connections) the slow one wins: in a pool of three, one
        // time in three. So a candidate still dominated by a failure penalty
        // stands aside for the next endpoint that is not, which keeps
        // fast-failing endpoints out of the comparison while they fail; they
        // rejoin as their penalty decays.
        let (a, rtt_a) = stand_in(members, a, b, now);
        let (b, rtt_b) = stand_in(members, b, a, now);
        let cost = |i: usize, rtt: f64| rtt * (members[i].state().in_flight() + 1) as f64;
        Some(if cost(b, rtt_b) < cost(a, rtt_a) {
            b
        } else {
            a
        })
    }
}

/// `candidate`, or when it is penalized the next endpoint after it that is
/// neither penalized nor `other` (at most `MAX_SKIP` away); with the
/// round-trip estimate of the one chosen, so each is computed once.
#[inline]
fn stand_in(members: &[Member], candidate: usize, other: usize, now: Instant) -> (usize, f64) {
    let state = members[candidate].state();
    let rtt = state.rtt_estimate_at(now);
    // Every endpoint of a pool shares its tracking settings.
    let penalized = |rtt: f64| state.is_penalized(rtt);
    if !penalized(rtt) {
        return (candidate, rtt);
    }
    let n = members.len();
    (1..n.min(MAX_SKIP + 1))
        .map(|step| (candidate + step) % n)
        .filter(|&i| i != other)
        .map(|i| (i, members[i].state().rtt_estimate_at(now)))
        .find(|&(_, rtt)| !penalized(rtt))
        .unwrap_or((candidate, rtt))
}
