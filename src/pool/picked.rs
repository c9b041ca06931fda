//! The result of a pick: the chosen endpoint, counted in flight until done.

use tokio::time::Instant;

use crate::Endpoint;
use crate::pool::member::Member;

/// An endpoint chosen for one request, counted as in flight until this
/// value is finished with [`Picked::success`] / [`Picked::failure`] or
/// dropped. Dropping counts the request out without recording an outcome,
/// as for a caller that gave up.
///
/// The load-balancing layer handles this for HTTP; use it directly to
/// balance anything else:
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
#[derive(Debug)]
#[must_use = "a pick counts as in flight until it is finished or dropped"]
pub struct Picked {
    member: Member,
    /// When the request was sent, once [`Picked::start_timer`] says so.
    started: Option<Instant>,
    /// Dropped unfinished at or after this, the request timed out: a
    /// failure of the endpoint, not a caller giving up.
    deadline: Option<Instant>,
}

impl Picked {
    pub(crate) fn new(member: Member) -> Self {
        member.state().start();
        Self {
            member,
            started: None,
            deadline: None,
        }
    }

    /// Starts timing the request: call it when the request is sent, so the
    /// latency recorded on finishing is the endpoint's, not the caller's
    /// queueing. A pick is not timed until then: reading the clock costs as
    /// much as the pick itself, and a pick that is never sent needs none.
    pub fn start_timer(&mut self) {
        self.started = Some(Instant::now());
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
    pub fn finish(mut self, failed: bool) {
        let latency = self.started.map(|t| t.elapsed());
        self.member.state().record(latency, failed);
        self.deadline = None;
        // Drop decrements the in-flight count.
    }

    /// Sets when an unfinished request counts as timed out: dropped at or
    /// after `deadline` without an outcome, it is recorded as a failure
    /// (outlier detection, Peak-EWMA), since a timeout above cut it short.
    pub fn set_deadline(&mut self, deadline: Instant) {
        self.deadline = Some(deadline);
    }
}

impl Drop for Picked {
    fn drop(&mut self) {
        if let Some(deadline) = self.deadline {
            let now = Instant::now();
            if now >= deadline {
                let latency = self.started.map(|t| now.saturating_duration_since(t));
                self.member.state().record(latency, true);
            }
        }
        self.member.state().finish();
    }
}
