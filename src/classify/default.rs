//! The crate's own rules as a [`Classify`].

use std::error::Error as StdError;

use http::{HeaderMap, StatusCode};

use super::classifier::Classify;
use super::rules::{
    blames_endpoint, classify_error, classify_status, retryable_error, retryable_status,
};
use super::verdict::{Outcome, Verdict};

/// The rules the crate ships with (see the [module docs](super)):
///
/// | attempt | endpoint | retry |
/// |---|---|---|
/// | 2xx, 3xx, 4xx but 429 | success | no |
/// | 429 | success | idempotent methods |
/// | 500, 501, 505.. | failure | no |
/// | 502, 503, 504 | failure | idempotent methods |
/// | refused, unreachable, DNS failure | failure | any method |
/// | reset, timeout | failure | idempotent methods |
/// | a request the client could not build | neutral | no |
/// | a body cut short | failure | idempotent methods (when buffered) |
///
/// ```
/// use http::{HeaderMap, StatusCode};
/// use tower_lb::classify::{Classify, DefaultClassifier, Outcome, Retryable};
///
/// let v = DefaultClassifier.classify_response(StatusCode::NOT_FOUND, &HeaderMap::new());
/// assert_eq!((v.outcome, v.retry), (Outcome::Success, Retryable::No));
/// let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
/// assert_eq!(DefaultClassifier.classify_error(&refused).retry, Retryable::NotSent);
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultClassifier;

impl Classify for DefaultClassifier {
    #[inline]
    fn classify_response(&self, status: StatusCode, _headers: &HeaderMap) -> Verdict {
        Verdict::new(classify_status(status), retryable_status(status))
    }

    fn classify_error(&self, error: &(dyn StdError + 'static)) -> Verdict {
        let outcome = if blames_endpoint(error) {
            Outcome::Failure(classify_error(error))
        } else {
            Outcome::Neutral
        };
        Verdict::new(outcome, retryable_error(error))
    }
}
