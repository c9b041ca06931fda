use std::time::Duration;

use tokio::time::Instant;

use crate::balance::{Balancer, Change, Estimate, LoadTracking, Members, PickContext, Picker};

/// Peak-EWMA over random choices, after Finagle's and Linkerd's.
///
/// Each endpoint's cost is its round-trip estimate times its requests in
/// flight plus one; of two random endpoints the cheaper wins, and when it
/// is busy (requests in flight) a third random one is weighed too. Two
/// alone, as in Finagle, let a group of slow endpoints take every request
/// whose two choices both fall among them, however long their queues grow. The estimate
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

    fn picker(&self, _members: &Members) -> Box<dyn Picker> {
        Box::new(PeakEwmaPicker)
    }

    fn load_tracking(&self) -> LoadTracking {
        self.tracking
    }
}

struct PeakEwmaPicker;

/// How many fresh random draws may replace a penalized candidate.
const MAX_REDRAWS: usize = 4;

impl Picker for PeakEwmaPicker {
    #[inline]
    fn pick(&self, members: &Members, ctx: &PickContext<'_>) -> Option<usize> {
        let n = members.len();
        if n < 2 {
            return (n == 1).then_some(0);
        }
        let (a, b) = ctx.random_pair(n);
        let now = members[a].state().recent_now();
        // Plain P2C compares two endpoints; when both are bad (one slow, one
        // refusing connections) the slow one wins: in a pool of three, one
        // time in three. So a candidate whose latest answer was a failure
        // still dominating its estimate stands aside for a fresh random
        // draw. A fresh draw, not a neighbour: the neighbour in member
        // order of every failing endpoint would win its traffic (herding).
        let (a, ea) = stand_in(members, a, b, now, ctx);
        let (b, eb) = stand_in(members, b, a, now, ctx);
        let (winner, best) = better(members, (a, ea), (b, eb));
        // An idle winner is as good as a pick gets: the third look is for
        // a winner with a queue.
        if n < 3 || members[winner].state().in_flight() == 0 {
            return Some(winner);
        }
        // A third choice. With two, a set of slow endpoints gets every pick
        // whose pair falls inside it, however long their queues: with 3 of
        // 6 endpoints slow, a fifth of all requests, whatever their
        // capacity. A third candidate drawn afresh makes that 1 in 20 and
        // costs one more read of an endpoint's state.
        let c = ctx.random_below(n);
        if c == a || c == b {
            return Some(winner);
        }
        let (c, ec) = stand_in(members, c, winner, now, ctx);
        Some(better(members, (winner, best), (c, ec)).0)
    }

    fn update(&self, _members: &Members, _changes: &[Change]) -> Option<Box<dyn Picker>> {
        Some(Box::new(PeakEwmaPicker))
    }
}

/// The cheaper of two candidates (the first on a tie), with its estimate.
/// An endpoint with no answer yet is compared on equal terms, by its
/// requests in flight alone: against a default guess it would lose to
/// every fast endpoint forever and never get the request that would show
/// it is fast too (cold-start starvation).
#[inline]
fn better(
    members: &Members,
    (a, ea): (usize, Estimate),
    (b, eb): (usize, Estimate),
) -> (usize, Estimate) {
    let (rtt_a, rtt_b) = match (ea.sampled, eb.sampled) {
        (true, false) => (ea.rtt, ea.rtt),
        (false, true) => (eb.rtt, eb.rtt),
        _ => (ea.rtt, eb.rtt),
    };
    let cost = |i: usize, rtt: f64| rtt * (members[i].state().in_flight() + 1) as f64;
    if cost(b, rtt_b) < cost(a, rtt_a) {
        (b, eb)
    } else {
        (a, ea)
    }
}

/// `candidate`, or when it is penalized a random endpoint that is neither
/// penalized nor `other` (at most `MAX_REDRAWS` tries; the candidate when
/// none is found); with the estimate of the one chosen, so each is read
/// once. Each try draws among the endpoints that are neither, so in a pool
/// of three the one left is always found.
#[inline]
fn stand_in(
    members: &Members,
    candidate: usize,
    other: usize,
    now: Instant,
    ctx: &PickContext<'_>,
) -> (usize, Estimate) {
    let estimate = members[candidate].state().estimate_at(now);
    if !estimate.penalized {
        return (candidate, estimate);
    }
    let n = members.len();
    // The endpoints to skip, in ascending order (one when they coincide).
    let (low, high) = (candidate.min(other), candidate.max(other));
    let skipped = if low == high { 1 } else { 2 };
    if n <= skipped {
        return (candidate, estimate);
    }
    for _ in 0..MAX_REDRAWS {
        // A draw among the others, shifted past the skipped indices.
        let mut i = ctx.random_below(n - skipped);
        if i >= low {
            i += 1;
        }
        if skipped == 2 && i >= high {
            i += 1;
        }
        let e = members[i].state().estimate_at(now);
        if !e.penalized {
            return (i, e);
        }
    }
    (candidate, estimate)
}
