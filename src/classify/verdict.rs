//! The words a classifier answers in: what an attempt says about its
//! endpoint ([`Outcome`]), whether another attempt could help
//! ([`Retryable`]), and both together ([`Verdict`]).

use http::StatusCode;

/// What a finished request says about the endpoint that served it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// The endpoint did its job (2xx, 3xx, 4xx).
    Success,
    /// The endpoint failed, and how: it counts against the endpoint for
    /// load (Peak-EWMA's failure penalty) and for outlier detection.
    Failure(FailureKind),
    /// The attempt says nothing about the endpoint (the caller's own
    /// mistake, such as a request the client could not build): it leaves
    /// flight, and nothing is recorded.
    Neutral,
}

/// How an endpoint failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FailureKind {
    /// It answered with a failing status (a 5xx by default).
    Status(StatusCode),
    /// It answered, and a classifier called the answer a failure for a
    /// reason other than its status (a gRPC status in a header or trailer).
    Classified,
    /// The connection was refused: nothing listens there.
    ConnectionRefused,
    /// The connection was reset or aborted mid-way.
    ConnectionReset,
    /// Connecting or answering took too long, or the request was abandoned
    /// after longer than the pool's cancellation timeout.
    Timeout,
    /// The response body failed after the head had arrived.
    Body,
    /// Any other transport error.
    Other,
}

impl Outcome {
    /// True for [`Outcome::Failure`].
    pub fn is_failure(&self) -> bool {
        matches!(self, Outcome::Failure(_))
    }
}

/// Whether another attempt of a request could succeed, and for which
/// methods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Retryable {
    /// Another attempt would not help (a success, the caller's mistake, a
    /// configuration error), or it is not known to be safe.
    No,
    /// The request never reached the endpoint (refused, unreachable, DNS
    /// failure, connect timeout): any method may be sent again.
    NotSent,
    /// The endpoint failed after it may have processed the request (502,
    /// 503, 504, 429, a timeout, a reset): only an idempotent request may be
    /// sent again.
    IfIdempotent,
}

/// One classifier's verdict on one attempt: what it says about the
/// endpoint, and whether the caller may try again.
///
/// The load-balancing layer writes the verdict on every answer into the
/// attempt's [`AttemptContext`](crate::AttemptContext::verdict), when the
/// layer above that made the attempt gave it one, and puts it on every
/// client error ([`Error::verdict`](crate::Error::verdict)); the retry
/// layer above reads it from there, so both layers act on one judgement.
/// (A reqwest-middleware chain's answers carry it in their extensions.)
///
/// ```
/// use http::StatusCode;
/// use tower_lb::classify::{FailureKind, Outcome, Retryable, Verdict};
///
/// let unavailable = Verdict::failure(FailureKind::Status(StatusCode::SERVICE_UNAVAILABLE), Retryable::IfIdempotent);
/// assert!(unavailable.outcome.is_failure());
/// assert_eq!(Verdict::SUCCESS.retry, Retryable::No);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Verdict {
    /// What the attempt says about the endpoint.
    pub outcome: Outcome,
    /// Whether another attempt could succeed.
    pub retry: Retryable,
}

impl Verdict {
    /// The endpoint did its job; nothing to retry.
    pub const SUCCESS: Verdict = Verdict {
        outcome: Outcome::Success,
        retry: Retryable::No,
    };

    /// A verdict from its two halves.
    pub const fn new(outcome: Outcome, retry: Retryable) -> Self {
        Self { outcome, retry }
    }

    /// The endpoint failed as `kind`; `retry` says whether to try again.
    pub const fn failure(kind: FailureKind, retry: Retryable) -> Self {
        Self {
            outcome: Outcome::Failure(kind),
            retry,
        }
    }
}
