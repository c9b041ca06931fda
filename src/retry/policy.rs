//! What may be retried: the policy, and a request's own say.

use std::fmt;
use std::sync::Arc;

use http::{HeaderMap, Method, StatusCode};

use crate::classify::Retryable;
use crate::{BalancedRequest, Error};

/// What one attempt produced, as a retry policy sees it.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum AttemptOutcome<'a> {
    /// The endpoint answered.
    Response {
        /// The answer's status.
        status: StatusCode,
        /// The answer's headers.
        headers: &'a HeaderMap,
    },
    /// The attempt failed without an answer.
    Error(&'a Error),
}

impl AttemptOutcome<'_> {
    /// The status, when the endpoint answered.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            AttemptOutcome::Response { status, .. } => Some(*status),
            AttemptOutcome::Error(_) => None,
        }
    }

    /// The error, when the attempt failed without an answer.
    pub fn error(&self) -> Option<&Error> {
        match self {
            AttemptOutcome::Response { .. } => None,
            AttemptOutcome::Error(error) => Some(error),
        }
    }
}

type Predicate = dyn Fn(&dyn BalancedRequest, &AttemptOutcome<'_>) -> Option<bool> + Send + Sync;

/// What the retry layer may try again.
///
/// Whether an outcome is worth another attempt is the classifier's verdict
/// ([`classify`](crate::classify)), which the load-balancing layer below
/// writes into each attempt's [`AttemptContext`](crate::AttemptContext)
/// and puts on every error; the policy adds what a classifier cannot know.
/// By default:
/// - a connection never established (refused, unreachable, DNS failure,
///   connect timeout: [`Retryable::NotSent`]): retried for any method,
///   nothing was sent;
/// - what the classifier calls [`Retryable::IfIdempotent`] (by default 502,
///   503, 504, 429, a per-attempt timeout, a reset or timed-out
///   connection): retried for idempotent methods only (GET, HEAD, OPTIONS,
///   PUT, DELETE, TRACE);
/// - anything else is returned as it is.
///
/// Add statuses or methods, take statuses away, or decide per request and
/// outcome with a closure:
///
/// ```
/// use http::{Method, StatusCode};
/// use tower_lb::retry::{AttemptOutcome, Policy};
///
/// let policy = Policy::new()
///     .retry_status(StatusCode::INTERNAL_SERVER_ERROR)
///     .idempotent(Method::PATCH)
///     // A POST that carries an idempotency key may be retried like a PUT;
///     // None leaves the decision to the rules above.
///     .retry_if(|request, outcome| {
///         let keyed = request.headers().contains_key("idempotency-key");
///         (keyed && outcome.status() == Some(StatusCode::SERVICE_UNAVAILABLE)).then_some(true)
///     });
/// assert!(policy.is_idempotent(&Method::PATCH));
/// assert!(!policy.is_idempotent(&Method::POST));
/// ```
#[derive(Clone)]
pub struct Policy {
    idempotent: Vec<Method>,
    /// Retried when idempotent, whatever the classifier said.
    also: Vec<StatusCode>,
    /// Never retried, whatever the classifier said.
    never: Vec<StatusCode>,
    predicate: Option<Arc<Predicate>>,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            idempotent: vec![
                Method::GET,
                Method::HEAD,
                Method::OPTIONS,
                Method::PUT,
                Method::DELETE,
                Method::TRACE,
            ],
            also: Vec::new(),
            never: Vec::new(),
            predicate: None,
        }
    }
}

impl Policy {
    /// The default policy.
    pub fn new() -> Self {
        Self::default()
    }

    /// Also retries answers with `status` (for idempotent requests),
    /// whatever the classifier says.
    pub fn retry_status(mut self, status: StatusCode) -> Self {
        self.never.retain(|s| *s != status);
        if !self.also.contains(&status) {
            self.also.push(status);
        }
        self
    }

    /// Never retries answers with `status` (e.g. 429, to leave rate limits
    /// to the caller), whatever the classifier says.
    pub fn no_retry_status(mut self, status: StatusCode) -> Self {
        self.also.retain(|s| *s != status);
        if !self.never.contains(&status) {
            self.never.push(status);
        }
        self
    }

    /// Treats `method` as idempotent: its requests are retried after they
    /// may have been processed, and may be hedged.
    pub fn idempotent(mut self, method: Method) -> Self {
        if !self.idempotent.contains(&method) {
            self.idempotent.push(method);
        }
        self
    }

    /// Decides per request and outcome: `Some(true)` retries, `Some(false)`
    /// does not, `None` leaves it to the rules. The request is seen as it
    /// was given (its body aside), before any attempt rewrote it. The
    /// attempt limit, budget, body replay and deadline still apply.
    pub fn retry_if<F>(mut self, predicate: F) -> Self
    where
        F: Fn(&dyn BalancedRequest, &AttemptOutcome<'_>) -> Option<bool> + Send + Sync + 'static,
    {
        self.predicate = Some(Arc::new(predicate));
        self
    }

    /// True when requests with `method` count as idempotent.
    pub fn is_idempotent(&self, method: &Method) -> bool {
        self.idempotent.iter().any(|m| m == method)
    }

    /// Why the outcome is worth another attempt, or `None` when it is not;
    /// `retryable` is the classifier's verdict on it.
    pub(crate) fn verdict(
        &self,
        request: &dyn BalancedRequest,
        idempotent: bool,
        outcome: &AttemptOutcome<'_>,
        retryable: Retryable,
    ) -> Option<Reason> {
        if let Some(predicate) = &self.predicate {
            match predicate(request, outcome) {
                Some(true) => return Some(Reason::Policy),
                Some(false) => return None,
                None => {}
            }
        }
        match outcome {
            AttemptOutcome::Response { status, .. } => {
                if self.never.contains(status) {
                    return None;
                }
                let retryable = if self.also.contains(status) {
                    Retryable::IfIdempotent
                } else {
                    retryable
                };
                match retryable {
                    Retryable::NotSent => Some(Reason::Status(*status)),
                    Retryable::IfIdempotent if idempotent => Some(Reason::Status(*status)),
                    _ => None,
                }
            }
            AttemptOutcome::Error(error) => match retryable {
                Retryable::NotSent => Some(Reason::NotSent),
                Retryable::IfIdempotent if idempotent => Some(match error {
                    Error::AttemptTimeout { .. } => Reason::Timeout,
                    _ => Reason::Transport,
                }),
                _ => None,
            },
        }
    }
}

impl fmt::Debug for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Policy")
            .field("idempotent", &self.idempotent)
            .field("retry_status", &self.also)
            .field("no_retry_status", &self.never)
            .field("retry_if", &self.predicate.is_some())
            .finish()
    }
}

/// Why an attempt is retried, for logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reason {
    Status(StatusCode),
    NotSent,
    Transport,
    Timeout,
    Policy,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Status(status) => write!(f, "status {}", status.as_u16()),
            Reason::NotSent => f.write_str("connection not established"),
            Reason::Transport => f.write_str("transport error"),
            Reason::Timeout => f.write_str("attempt timed out"),
            Reason::Policy => f.write_str("retry policy"),
        }
    }
}

/// A request's own say over its retries, overriding the policy.
///
/// Put it in an `http::Request`'s extensions; for a `reqwest::Request`
/// (whose extensions are private), in those of a
/// [`WithExtensions`](crate::WithExtensions) around it.
///
/// ```
/// use tower_lb::retry::RetryMode;
///
/// // A POST with an idempotency key: retry it like a PUT.
/// let mut request = http::Request::post("http://orders/api/orders")
///     .header("idempotency-key", "5f2c")
///     .body(String::from("{}"))?;
/// request.extensions_mut().insert(RetryMode::Idempotent);
/// # Ok::<(), http::Error>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum RetryMode {
    /// As the policy says.
    #[default]
    Policy,
    /// One attempt only: no retries, no hedging.
    Off,
    /// Retried and hedged as if its method were idempotent.
    Idempotent,
}

impl RetryMode {
    /// The mode for `request`: its extension, else [`RetryMode::Policy`].
    pub(crate) fn of(request: &dyn BalancedRequest) -> RetryMode {
        request
            .extensions()
            .and_then(|e| e.get::<RetryMode>())
            .copied()
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::{Classify, DefaultClassifier};

    /// The policy's verdict on top of the default classifier's.
    fn judge(
        policy: &Policy,
        request: &dyn BalancedRequest,
        idempotent: bool,
        outcome: &AttemptOutcome<'_>,
    ) -> Option<Reason> {
        let retryable = match outcome {
            AttemptOutcome::Response { status, headers } => {
                DefaultClassifier.classify_response(*status, headers).retry
            }
            AttemptOutcome::Error(error) => DefaultClassifier.classify_error(*error).retry,
        };
        policy.verdict(request, idempotent, outcome, retryable)
    }

    fn response(status: u16) -> (StatusCode, HeaderMap) {
        (StatusCode::from_u16(status).unwrap(), HeaderMap::new())
    }

    #[test]
    fn statuses_need_idempotence_and_refusals_do_not() {
        let policy = Policy::new();
        let request = http::Request::post("http://greet/").body(()).unwrap();
        let (status, headers) = response(503);
        let outcome = AttemptOutcome::Response {
            status,
            headers: &headers,
        };
        assert_eq!(judge(&policy, &request, false, &outcome), None);
        assert_eq!(
            judge(&policy, &request, true, &outcome),
            Some(Reason::Status(status))
        );
        let (status, headers) = response(500);
        let outcome = AttemptOutcome::Response {
            status,
            headers: &headers,
        };
        assert_eq!(judge(&policy, &request, true, &outcome), None);

        let refused = Error::inner_from(
            Some("greet".into()),
            None,
            std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
        );
        let outcome = AttemptOutcome::Error(&refused);
        assert_eq!(
            judge(&policy, &request, false, &outcome),
            Some(Reason::NotSent)
        );
        let reset = Error::inner_from(
            Some("greet".into()),
            None,
            std::io::Error::from(std::io::ErrorKind::ConnectionReset),
        );
        let outcome = AttemptOutcome::Error(&reset);
        assert_eq!(judge(&policy, &request, false, &outcome), None);
        assert_eq!(
            judge(&policy, &request, true, &outcome),
            Some(Reason::Transport)
        );
    }

    #[test]
    fn the_closure_decides_first() {
        let policy = Policy::new()
            .retry_status(StatusCode::INTERNAL_SERVER_ERROR)
            .no_retry_status(StatusCode::TOO_MANY_REQUESTS)
            .retry_if(|request, _| (request.path() == "/never").then_some(false));
        let (status, headers) = response(500);
        let outcome = AttemptOutcome::Response {
            status,
            headers: &headers,
        };
        let ok = http::Request::get("http://greet/x").body(()).unwrap();
        let never = http::Request::get("http://greet/never").body(()).unwrap();
        assert!(judge(&policy, &ok, true, &outcome).is_some());
        assert!(judge(&policy, &never, true, &outcome).is_none());
        let (status, headers) = response(429);
        let outcome = AttemptOutcome::Response {
            status,
            headers: &headers,
        };
        assert!(judge(&policy, &ok, true, &outcome).is_none());
    }

    #[test]
    fn mode_from_the_extension() {
        let mut request = http::Request::get("http://greet/").body(()).unwrap();
        assert_eq!(RetryMode::of(&request), RetryMode::Policy);
        request.extensions_mut().insert(RetryMode::Idempotent);
        assert_eq!(RetryMode::of(&request), RetryMode::Idempotent);
    }
}
