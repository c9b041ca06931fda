use std::time::Duration;

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
        // The time, read once for the whole pick and only if a candidate's
        // estimate decays with it: an endpoint with no sample yet needs no
        // clock.
        let mut now = None;
        // Plain P2C compares two endpoints; when both are bad (one slow, one
        // refusing connections) the slow one wins: in a pool of three, one
        // time in three. So a candidate whose latest answer was a failure
        // still dominating its estimate stands aside for a fresh random
        // draw. A fresh draw, not a neighbour: the neighbour in member
        // order of every failing endpoint would win its traffic (herding).
        let first = stand_in(members, a, b, &mut now, ctx);
        let second = stand_in(members, b, a, &mut now, ctx);
        let winner = better(first, second);
        // An idle winner is as good as a pick gets: the third look is for
        // a winner with a queue.
        if n < 3 || winner.in_flight == 0 {
            return Some(winner.index);
        }
        // A third choice. With two, a set of slow endpoints gets every pick
        // whose pair falls inside it, however long their queues: with 3 of
        // 6 endpoints slow, a fifth of all requests, whatever their
        // capacity. A third candidate drawn afresh makes that 1 in 20 and
        // costs one more read of an endpoint's state.
        let c = ctx.random_below(n);
        if c == first.index || c == second.index {
            return Some(winner.index);
        }
        let third = stand_in(members, c, winner.index, &mut now, ctx);
        Some(better(winner, third).index)
    }

    fn update(&self, _members: &Members, _changes: &[Change]) -> Option<Box<dyn Picker>> {
        Some(Box::new(PeakEwmaPicker))
    }
}

/// One endpoint weighed for a pick: its estimate and load, each read once.
#[derive(Clone, Copy)]
struct Candidate {
    index: usize,
    estimate: Estimate,
    in_flight: usize,
}

impl Candidate {
    #[inline(always)]
    fn read(members: &Members, index: usize, now: &mut Option<u64>) -> Self {
        let state = members[index].state();
        Self {
            index,
            estimate: state.estimate_recent(now),
            in_flight: state.in_flight(),
        }
    }
}

/// The cheaper of two candidates (the first on a tie). An endpoint with no
/// answer yet is compared on equal terms, by its requests in flight alone:
/// against a default guess it would lose to every fast endpoint forever and
/// never get the request that would show it is fast too (cold-start
/// starvation).
#[inline(always)]
fn better(a: Candidate, b: Candidate) -> Candidate {
    let (rtt_a, rtt_b) = match (a.estimate.sampled, b.estimate.sampled) {
        (true, false) => (a.estimate.rtt, a.estimate.rtt),
        (false, true) => (b.estimate.rtt, b.estimate.rtt),
        _ => (a.estimate.rtt, b.estimate.rtt),
    };
    let cost = |rtt: f64, in_flight: usize| rtt * (in_flight + 1) as f64;
    if cost(rtt_b, b.in_flight) < cost(rtt_a, a.in_flight) {
        b
    } else {
        a
    }
}

/// `candidate`, or when it is penalized a random endpoint that is neither
/// penalized nor `other` ([`redraw`]), each endpoint's state read once.
/// Inlined whole: as calls, this and [`Candidate::read`] cost more
/// instructions than the reads themselves.
#[inline(always)]
fn stand_in(
    members: &Members,
    candidate: usize,
    other: usize,
    now: &mut Option<u64>,
    ctx: &PickContext<'_>,
) -> Candidate {
    let chosen = Candidate::read(members, candidate, now);
    if !chosen.estimate.penalized {
        return chosen;
    }
    redraw(members, chosen, other, now, ctx)
}

/// A random endpoint that is neither penalized nor `other` in place of the
/// penalized `chosen` (at most `MAX_REDRAWS` tries; `chosen` when none is
/// found). Each try draws among the endpoints that are neither, so in a
/// pool of three the one left is always found.
#[cold]
#[inline(never)]
fn redraw(
    members: &Members,
    chosen: Candidate,
    other: usize,
    now: &mut Option<u64>,
    ctx: &PickContext<'_>,
) -> Candidate {
    let candidate = chosen.index;
    let n = members.len();
    // The endpoints to skip, in ascending order (one when they coincide).
    let (low, high) = (candidate.min(other), candidate.max(other));
    let skipped = if low == high { 1 } else { 2 };
    if n <= skipped {
        return chosen;
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
        let e = Candidate::read(members, i, now);
        if !e.estimate.penalized {
            return e;
        }
    }
    chosen
}
