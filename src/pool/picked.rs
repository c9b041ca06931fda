//! The result of a pick: the chosen endpoint, counted in flight until done,
//! and the guard that records the request's life exactly once.

use std::time::Duration;

use tokio::time::Instant;

use crate::Endpoint;
use crate::classify::{FailureKind, Outcome};
use crate::pool::member::Member;

/// An endpoint chosen for one request, counted as in flight until this
/// value is finished with [`Picked::success`] / [`Picked::failure`] or
/// dropped.
///
/// Dropping it unfinished is a cancellation (a caller's timeout, a
/// `select!`, a dropped task): once the timer was started, the time waited
/// is a latency sample (a request that has waited 2 s for an answer tells
/// of a slow endpoint even though it never got one), and a wait past the
/// pool's [cancellation timeout](crate::PoolBuilder::cancel_timeout), or
/// past the [deadline](Self::set_deadline) of the layer that gave up on
/// it, counts as a timeout failure of the endpoint.
///
/// The load-balancing layer handles this for HTTP, and keeps the request
/// in flight until its response body ends; use it directly to balance
/// anything else:
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tower_lb::Error> {
/// use tower_lb::{Pool, discover::Fixed};
///
/// let pool = Pool::builder("db", Fixed::new(["10.0.0.7:5432", "10.0.0.8:5432"]).unwrap()).build();
/// pool.ready().await?;
/// let mut picked = pool.pick()?;
/// assert_eq!(pool.stats().endpoints.iter().map(|e| e.in_flight).sum::<usize>(), 1);
/// picked.start_timer();
/// // ... talk to picked.endpoint() ...
/// picked.success();
/// # Ok(()) }
/// ```
///
/// # What the balancers see
///
/// Over HTTP, the time to the response head is the latency sample
/// (Peak-EWMA's round trip, the stats' `latency_ms`): it measures the
/// endpoint, while the time to the last byte also measures the body's size
/// and how fast the caller reads it. The request stays in flight (the load
/// every least-request balancer and Peak-EWMA weigh) until the body ends,
/// fails or is dropped; the outcome is counted then, once, so a body cut
/// short is the endpoint's failure. The time to the last byte is kept apart,
/// for stats (`last_byte_ms`).
#[derive(Debug)]
#[must_use = "a pick counts as in flight until it is finished or dropped"]
pub struct Picked {
    member: Member,
    /// When the request was sent, once [`Picked::start_timer`] says so, in
    /// ns of the pool's clock: the latencies are then differences of two
    /// integers, where two `Instant`s would each be subtracted from a third
    /// to stamp the records as well (about 50 instructions a subtraction).
    started: Option<u64>,
    /// Dropped unfinished at or after this, the request timed out: a
    /// failure of the endpoint, not a caller giving up.
    deadline: Option<Instant>,
    /// Set once the response head has been seen and its latency recorded:
    /// whether the head already counted as a failure.
    head_failed: Option<bool>,
    /// When the head arrived, if it was timed (ns of the pool's clock).
    head_at: Option<u64>,
    /// The outcome has been recorded: drop only ends the flight.
    done: bool,
    /// The attempt's `http.client.active_requests` share (feature
    /// `metrics`; nothing otherwise), ended with the flight.
    active: Option<crate::metrics::Active>,
}

impl Picked {
    #[inline]
    pub(crate) fn new(member: Member) -> Self {
        member.state().start();
        Self {
            member,
            started: None,
            deadline: None,
            head_failed: None,
            head_at: None,
            done: false,
            active: None,
        }
    }

    /// Starts timing the request: call it when the request is sent, so the
    /// latency recorded on finishing is the endpoint's, not the caller's
    /// queueing. A pick is not timed until then: reading the clock costs as
    /// much as the pick itself, and a pick that is never sent needs none.
    pub fn start_timer(&mut self) {
        self.start_timer_at(Instant::now());
    }

    /// [`start_timer`](Self::start_timer) with a clock reading the caller
    /// already has.
    pub(crate) fn start_timer_at(&mut self, now: Instant) {
        self.started = Some(self.member.state().nanos_at(now));
    }

    /// The chosen endpoint.
    pub fn endpoint(&self) -> &Endpoint {
        self.member.endpoint()
    }

    /// Records a success, with its latency if the timer was started.
    pub fn success(self) {
        self.finish(false);
    }

    /// Records a failure, with its latency if the timer was started.
    pub fn failure(self) {
        self.finish(true);
    }

    /// Records the outcome; `failed` says which.
    pub fn finish(self, failed: bool) {
        let outcome = if failed {
            Outcome::Failure(FailureKind::Other)
        } else {
            Outcome::Success
        };
        self.complete(outcome);
    }

    /// Sets when an unfinished request counts as timed out: dropped at or
    /// after `deadline` without an outcome, it is recorded as a failure
    /// (outlier detection, Peak-EWMA), since a timeout above cut it short.
    pub fn set_deadline(&mut self, deadline: Instant) {
        self.deadline = Some(deadline);
    }

    /// The response head arrived: its latency goes to the estimates now,
    /// the outcome waits for the end of the body. `failed`: the head alone
    /// already says the endpoint failed (a 5xx).
    pub(crate) fn record_head(&mut self, failed: bool) {
        if self.head_failed.is_some() {
            return;
        }
        let state = self.member.state();
        match self.started {
            // One clock reading for the sample and the estimate's stamp.
            Some(started) => {
                let now_ns = state.stamp(Instant::now());
                self.head_at = Some(now_ns);
                let latency = since(started, now_ns);
                state.observe_latency_at(now_ns, Some(latency), failed);
            }
            None if failed => state.observe_latency(None, true),
            None => {}
        }
        self.head_failed = Some(failed);
    }

    /// The request is over (its body ended or failed, or it failed without
    /// a response): counts `outcome` once. A failure found after the head
    /// (a body cut short) adds the failure penalty to the estimates.
    pub(crate) fn complete(mut self, outcome: Outcome) {
        self.done = true;
        let state = self.member.state();
        let failed = match outcome {
            Outcome::Neutral => return,
            Outcome::Success => false,
            Outcome::Failure(_) => true,
        };
        // One clock reading for the elapsed time and every record.
        let now_ns = state.stamp(Instant::now());
        let elapsed = self.started.map(|started| since(started, now_ns));
        match self.head_failed {
            None => state.record_at(now_ns, elapsed, failed, self.member.endpoint().key()),
            Some(head_failed) => {
                state.count_at(now_ns, failed, self.member.endpoint().key());
                if failed && !head_failed {
                    state.observe_latency_at(now_ns, None, true);
                }
                if let Some(elapsed) = elapsed {
                    state.observe_last_byte(elapsed);
                }
            }
        }
    }

    /// Counts the pick in the active-requests gauge until its flight ends.
    pub(crate) fn set_active(&mut self, active: crate::metrics::Active) {
        self.active = Some(active);
    }

    /// Seconds since the timer started (0 if it did not).
    pub(crate) fn elapsed_secs(&self) -> f64 {
        self.started.map_or(0.0, |started| {
            let now_ns = self.member.state().nanos_at(Instant::now());
            since(started, now_ns).as_secs_f64()
        })
    }

    /// Whether a body dropped now, unfinished, was abandoned past the pool's
    /// [`abandoned_body_timeout`](crate::PoolBuilder::abandoned_body_timeout).
    pub(crate) fn body_abandoned_too_late(&self) -> bool {
        match (self.head_at, self.member.state().abandoned_body_timeout()) {
            (Some(head), Some(timeout)) => {
                let now_ns = self.member.state().nanos_at(Instant::now());
                since(head, now_ns) >= timeout
            }
            _ => false,
        }
    }

    /// Dropped before any outcome: a cancellation (see the type's docs).
    fn cancelled(&self) {
        let Some(started) = self.started else {
            return;
        };
        let now = Instant::now();
        let state = self.member.state();
        let now_ns = state.stamp(now);
        let waited = since(started, now_ns);
        let past_deadline = self.deadline.is_some_and(|d| now >= d);
        let timed_out = past_deadline || state.cancel_timeout().is_some_and(|t| waited >= t);
        match self.head_failed {
            // Before the head: the wait is the best sample there is.
            None => {
                state.observe_latency_at(now_ns, Some(waited), timed_out);
                if timed_out {
                    state.count_at(now_ns, true, self.member.endpoint().key());
                }
            }
            // After the head (a `Picked` finished by hand, never completed):
            // the head's verdict stands.
            Some(head_failed) => state.count_at(now_ns, head_failed, self.member.endpoint().key()),
        }
    }
}

/// The time from `start_ns` to `now_ns`, both of one pool's clock; none
/// if the clock went back (a reading of another runtime's paused clock).
/// A reading before the pool's epoch counts as the epoch itself, so a
/// request timed on a clock behind its pool's (a paused clock, in tests)
/// records no latency, and its cancellation and abandoned-body timeouts
/// do not trip.
fn since(start_ns: u64, now_ns: u64) -> Duration {
    Duration::from_nanos(now_ns.saturating_sub(start_ns))
}

impl Drop for Picked {
    fn drop(&mut self) {
        if !self.done {
            self.cancelled();
        }
        self.member.state().finish();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::Pool;
    use crate::discover::Fixed;

    async fn pool(cancel: Option<Duration>) -> Pool {
        let builder = Pool::builder("greet", Fixed::new(["127.0.0.1:1"]).unwrap());
        let builder = match cancel {
            Some(timeout) => builder.cancel_timeout(timeout),
            None => builder.without_cancel_timeout(),
        };
        let pool = builder.build();
        pool.ready().await.unwrap();
        pool
    }

    fn counts(pool: &Pool) -> (usize, u64, u64, Option<f64>) {
        let stats = pool.stats();
        let e = &stats.endpoints[0];
        (e.in_flight, e.requests, e.failures, e.latency_ms)
    }

    #[tokio::test(start_paused = true)]
    async fn a_short_cancellation_is_a_latency_sample_only() {
        let pool = pool(Some(Duration::from_secs(1))).await;
        let mut picked = pool.pick().unwrap();
        picked.start_timer();
        tokio::time::advance(Duration::from_millis(300)).await;
        drop(picked);
        let (in_flight, requests, failures, latency) = counts(&pool);
        assert_eq!((in_flight, requests, failures), (0, 0, 0));
        assert!(
            latency.is_some_and(|ms| (299.0..=301.0).contains(&ms)),
            "{latency:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_long_cancellation_is_a_timeout() {
        let pool = pool(Some(Duration::from_secs(1))).await;
        let mut picked = pool.pick().unwrap();
        picked.start_timer();
        tokio::time::advance(Duration::from_millis(1500)).await;
        drop(picked);
        let (in_flight, requests, failures, _) = counts(&pool);
        assert_eq!((in_flight, requests, failures), (0, 1, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn past_its_deadline_a_cancellation_is_a_timeout() {
        let pool = pool(None).await;
        let mut picked = pool.pick().unwrap();
        picked.start_timer();
        picked.set_deadline(tokio::time::Instant::now() + Duration::from_millis(100));
        tokio::time::advance(Duration::from_millis(100)).await;
        drop(picked);
        assert_eq!(counts(&pool).2, 1);
        // Without a deadline and with the timeout off, never.
        let mut picked = pool.pick().unwrap();
        picked.start_timer();
        tokio::time::advance(Duration::from_secs(60)).await;
        drop(picked);
        assert_eq!(counts(&pool).2, 1);
    }
}
