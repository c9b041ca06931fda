//! The result of a pick: the chosen endpoint, counted in flight until done.

use tokio::time::Instant;

use crate::Endpoint;
use crate::pool::Member;

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
/// let picked = pool.pick()?;
/// assert_eq!(pool.stats().endpoints.iter().map(|e| e.in_flight).sum::<usize>(), 1);
/// // ... talk to picked.endpoint() ...
/// picked.success();
/// # Ok(()) }
/// ```
#[derive(Debug)]
#[must_use = "a pick counts as in flight until it is finished or dropped"]
pub struct Picked {
    member: Member,
    started: Instant,
}

impl Picked {
    /// `now` is the pick's own clock reading, shared with the picker.
    pub(crate) fn new(member: Member, now: Instant) -> Self {
        member.state().start();
        Self {
            member,
            started: now,
        }
    }

    /// The chosen endpoint.
    pub fn endpoint(&self) -> &Endpoint {
        self.member.endpoint()
    }

    /// Records a success with the time since the pick as its latency.
    pub fn success(self) {
        self.finish(false);
    }

    /// Records a failure with the time since the pick as its latency.
    pub fn failure(self) {
        self.finish(true);
    }

    /// Records the outcome; `failed` says which.
    pub fn finish(self, failed: bool) {
        self.member.state().record(self.started.elapsed(), failed);
        // Drop decrements the in-flight count.
    }
}

impl Drop for Picked {
    fn drop(&mut self) {
        self.member.state().finish();
    }
}
