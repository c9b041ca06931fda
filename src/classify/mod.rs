//! One place decides what counts as a failure of the endpoint, and what
//! may be tried again: the [`Classify`] trait.
//!
//! The load-balancing layer asks its classifier about every attempt: the
//! response head when it arrives, the trailers when the body ends with
//! some, a client error, a body that fails half-way. The
//! [`Verdict`] says two things at once:
//!
//! - the [`Outcome`] for the endpoint: a failure counts against it for
//!   load (Peak-EWMA's failure penalty) and for outlier detection (its
//!   ejection), a success does not, a [`Outcome::Neutral`] answer records
//!   nothing;
//! - whether another attempt could help ([`Retryable`]): the
//!   [retry layer](crate::retry) reads the verdict from the attempt's
//!   [`AttemptContext`](crate::AttemptContext) or from the error, and its
//!   [`Policy`](crate::retry::Policy) adds what the classifier cannot know
//!   (is the method idempotent, may this request be retried at all).
//!
//! The [`DefaultClassifier`] keeps the crate's rules: a 5xx is the
//! endpoint's failure and 502, 503, 504 (and 429, which is not a failure)
//! are worth another attempt; a 404 is neither; a refused connection is
//! both, for any method; a reset or a timeout is both, for idempotent
//! methods; a body cut short is the endpoint's failure. Write your own for
//! other rules, or, with the `tower-http` feature, plug in any of
//! tower-http's classifiers through [`TowerHttp`]:
//! `ServerErrorsAsFailures`, `StatusInRangeAsFailures`,
//! `GrpcErrorsAsFailures` (an HTTP 200 with `grpc-status: 14` is then a
//! failure of the endpoint, and retried).
//!
//! ```
//! use std::error::Error as StdError;
//! use http::{HeaderMap, StatusCode};
//! use tower_lb::classify::{Classify, DefaultClassifier, FailureKind, Retryable, Verdict};
//!
//! /// Today's rules, but a 500 also counts as worth retrying.
//! #[derive(Debug)]
//! struct RetryInternalErrors;
//!
//! impl Classify for RetryInternalErrors {
//!     fn classify_response(&self, status: StatusCode, headers: &HeaderMap) -> Verdict {
//!         if status == StatusCode::INTERNAL_SERVER_ERROR {
//!             return Verdict::failure(FailureKind::Status(status), Retryable::IfIdempotent);
//!         }
//!         DefaultClassifier.classify_response(status, headers)
//!     }
//!
//!     fn classify_error(&self, error: &(dyn StdError + 'static)) -> Verdict {
//!         DefaultClassifier.classify_error(error)
//!     }
//! }
//!
//! let verdict = RetryInternalErrors.classify_response(StatusCode::INTERNAL_SERVER_ERROR, &HeaderMap::new());
//! assert_eq!(verdict.retry, Retryable::IfIdempotent);
//! ```

mod classifier;
mod default;
#[cfg(feature = "tower-http")]
mod from_tower_http;
mod rules;
mod verdict;

pub use classifier::Classify;
pub use default::DefaultClassifier;
#[cfg(feature = "tower-http")]
pub use from_tower_http::{FailureClassVerdict, TowerHttp};
pub use rules::{
    RETRYABLE_STATUSES, blames_endpoint, classify_error, classify_status, retryable_error,
    retryable_status,
};
pub use verdict::{FailureKind, Outcome, Retryable, Verdict};
