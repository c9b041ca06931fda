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
#[derive(Clone, Default)]
pub struct Attempts {
    count: u32,
    hedges: u32,
    /// The endpoint of a call's only attempt, held without a vector: most
    /// calls make one, and an allocation per call is what this saves.
    first: Option<Endpoint>,
    /// Every endpoint, once there is more than one (`first` is then empty).
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
        match &self.first {
            Some(first) => std::slice::from_ref(first),
            None => &self.endpoints,
        }
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
        let Some(endpoint) = endpoint else {
            return;
        };
        if self.first.is_none() && self.endpoints.is_empty() {
            self.first = Some(endpoint);
            return;
        }
        if let Some(first) = self.first.take() {
            self.endpoints.reserve(2);
            self.endpoints.push(first);
        }
        self.endpoints.push(endpoint);
    }

    pub(crate) fn stop(&mut self, why: NotRetried) {
        self.not_retried = Some(why);
    }

    pub(crate) fn into_endpoints(self) -> Vec<Endpoint> {
        match self.first {
            Some(first) => vec![first],
            None => self.endpoints,
        }
    }
}

impl PartialEq for Attempts {
    fn eq(&self, other: &Self) -> bool {
        self.count == other.count
            && self.hedges == other.hedges
            && self.endpoints() == other.endpoints()
            && self.not_retried == other.not_retried
    }
}

impl Eq for Attempts {}

impl fmt::Debug for Attempts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Attempts")
            .field("count", &self.count)
            .field("hedges", &self.hedges)
            .field("endpoints", &self.endpoints())
            .field("not_retried", &self.not_retried)
            .finish()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_listed_in_order_whether_one_or_several() {
        let [a, b, c] =
            ["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"].map(|e| Endpoint::new(e).unwrap());
        let mut attempts = Attempts::default();
        attempts.record(None);
        assert!(attempts.endpoints().is_empty());
        attempts.record(Some(a.clone()));
        assert_eq!(attempts.endpoints(), std::slice::from_ref(&a));
        attempts.record(Some(b.clone()));
        attempts.record(Some(c.clone()));
        assert_eq!(attempts.endpoints(), [a.clone(), b.clone(), c.clone()]);
        assert_eq!(attempts.clone().into_endpoints(), vec![a.clone(), b, c]);
        let mut one = Attempts::default();
        one.record(Some(a.clone()));
        assert_eq!(one.into_endpoints(), vec![a]);
    }
}
