//! The [`Classify`] trait.

use std::error::Error as StdError;
use std::fmt;

use http::{HeaderMap, StatusCode};

use super::verdict::{FailureKind, Retryable, Verdict};

/// Decides, for one attempt, whether it counts against its endpoint and
/// whether it is worth another attempt.
///
/// Called by the load-balancing layer, on the request path: keep it cheap
/// (the default reads the status, or walks an error's source chain).
pub trait Classify: fmt::Debug + Send + Sync + 'static {
    /// The verdict on a response head.
    fn classify_response(&self, status: StatusCode, headers: &HeaderMap) -> Verdict;

    /// The verdict on a request that failed without a response (the
    /// client's error, source chain intact).
    fn classify_error(&self, error: &(dyn StdError + 'static)) -> Verdict;

    /// A second look when the body ends with trailers (gRPC puts its
    /// status there): `Some` replaces the head's verdict for the endpoint,
    /// `None` (the default) keeps it. A response already handed to the
    /// caller cannot be retried, so only the outcome matters here.
    fn classify_trailers(&self, status: StatusCode, trailers: &HeaderMap) -> Option<Verdict> {
        let _ = (status, trailers);
        None
    }

    /// The verdict on a response body that failed before its end (default:
    /// the endpoint's failure, [`FailureKind::Body`]; worth another attempt
    /// for an idempotent request, where the retry layer buffers bodies).
    fn classify_body_error(&self, error: &(dyn StdError + 'static)) -> Verdict {
        let _ = error;
        Verdict::failure(FailureKind::Body, Retryable::IfIdempotent)
    }
}

impl<C: Classify + ?Sized> Classify for std::sync::Arc<C> {
    fn classify_response(&self, status: StatusCode, headers: &HeaderMap) -> Verdict {
        (**self).classify_response(status, headers)
    }

    fn classify_error(&self, error: &(dyn StdError + 'static)) -> Verdict {
        (**self).classify_error(error)
    }

    fn classify_trailers(&self, status: StatusCode, trailers: &HeaderMap) -> Option<Verdict> {
        (**self).classify_trailers(status, trailers)
    }

    fn classify_body_error(&self, error: &(dyn StdError + 'static)) -> Verdict {
        (**self).classify_body_error(error)
    }
}
