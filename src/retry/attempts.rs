//! What a call cost: the response extension the retry layer adds.

use std::fmt;
use std::time::Duration;

use super::not_replayable::NotReplayable;
use crate::Endpoint;

/// How a response came about: put in every response's extensions by the
/// retry layer.
///
/// ```no_run
/// # async fn run(response: reqwest::Response) {
/// use tower_lb::retry::Attempts;
///
/// if let Some(attempts) = response.extensions().get::<Attempts>() {
///     println!("{} attempt(s) via {:?}", attempts.count(), attempts.endpoints());
///     if let Some(why) = attempts.not_retried() {
///         println!("worth retrying, but {why}");
///     }
/// }
/// # }
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attempts {
    count: u32,
    hedges: u32,
    endpoints: Vec<Endpoint>,
    not_retried: Option<NotRetried>,
}

impl Attempts {
    /// Requests sent, hedges included (1: the first attempt answered).
    pub fn count(&self) -> u32 {
        self.count
    }

    /// Hedges among them.
    pub fn hedges(&self) -> u32 {
        self.hedges
    }

    /// Retries among them: attempts after the first that were not hedges.
    pub fn retries(&self) -> u32 {
        self.count.saturating_sub(1 + self.hedges)
    }

    /// The endpoints the attempts went to, in the order the attempts
    /// ended (or were abandoned: a hedge's loser, an attempt cut short by
    /// its timeout). The balancer writes each attempt's endpoint into its
    /// [`AttemptContext`](crate::AttemptContext) as it picks, so every
    /// attempt it dispatched is here; one that never reached a balancer
    /// (no endpoints) is not.
    pub fn endpoints(&self) -> &[Endpoint] {
        &self.endpoints
    }

    /// Set when the response is one the policy would have retried, with
    /// the reason it was not.
    pub fn not_retried(&self) -> Option<&NotRetried> {
        self.not_retried.as_ref()
    }

    pub(crate) fn sent(&mut self, hedge: bool) {
        self.count += 1;
        if hedge {
            self.hedges += 1;
        }
    }

    pub(crate) fn record(&mut self, endpoint: Option<Endpoint>) {
        if let Some(endpoint) = endpoint {
            self.endpoints.push(endpoint);
        }
    }

    pub(crate) fn stop(&mut self, why: NotRetried) {
        self.not_retried = Some(why);
    }

    pub(crate) fn into_endpoints(self) -> Vec<Endpoint> {
        self.endpoints
    }
}

/// Why an outcome the policy would retry was returned as it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum NotRetried {
    /// Every attempt allowed was made.
    AttemptsExhausted,
    /// The service's retry budget was spent.
    BudgetExhausted,
    /// The next attempt could not start before the deadline.
    Deadline,
    /// The request's body could not be sent again.
    NotReplayable(NotReplayable),
    /// The answer's `Retry-After` asked for a longer wait than allowed.
    RetryAfterTooLong(Duration),
}

impl fmt::Display for NotRetried {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NotRetried::AttemptsExhausted => f.write_str("every attempt allowed was made"),
            NotRetried::BudgetExhausted => f.write_str("the retry budget is spent"),
            NotRetried::Deadline => f.write_str("the deadline would pass before another attempt"),
            NotRetried::NotReplayable(reason) => reason.fmt(f),
            NotRetried::RetryAfterTooLong(wait) => {
                write!(f, "Retry-After asks for {wait:?}, longer than allowed")
            }
        }
    }
}
