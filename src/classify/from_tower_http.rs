//! tower-http's classifiers as a [`Classify`] (feature `tower-http`).

use std::error::Error as StdError;

use http::{HeaderMap, StatusCode};
use tower_http::classify::{
    ClassifiedResponse, ClassifyEos, ClassifyResponse, GrpcFailureClass, ServerErrorsFailureClass,
    StatusInRangeFailureClass,
};

use super::classifier::Classify;
use super::default::DefaultClassifier;
use super::rules::retryable_status;
use super::verdict::{FailureKind, Outcome, Retryable, Verdict};

/// Any of tower-http's response classifiers, deciding for the balancer and
/// the retry layer: `ServerErrorsAsFailures`, `StatusInRangeAsFailures`,
/// `GrpcErrorsAsFailures`, or your own whose failure class implements
/// [`FailureClassVerdict`].
///
/// What tower-http calls a failure counts against the endpoint; whether it
/// is worth another attempt comes from the failure class (a status: as
/// [`retryable_status`](super::retryable_status); gRPC `UNAVAILABLE` (14):
/// for idempotent requests). A classifier that waits for the end of the
/// stream (gRPC without a status in the head) decides on the trailers.
/// Transport errors keep the [`DefaultClassifier`]'s rules: tower-http
/// calls every one of them a failure and cannot tell a refused connection
/// from a reset.
///
/// Each response head is copied into an `http::Response<()>` for the
/// classifier to read (tower-http's classifiers take a whole response):
/// one header-map clone per attempt.
///
/// ```
/// use http::{HeaderMap, HeaderValue, StatusCode};
/// use tower_http::classify::GrpcErrorsAsFailures;
/// use tower_lb::classify::{Classify, Retryable, TowerHttp};
///
/// let grpc = TowerHttp::new(GrpcErrorsAsFailures::new());
/// let mut headers = HeaderMap::new();
/// headers.insert("grpc-status", HeaderValue::from_static("14"));
/// let verdict = grpc.classify_response(StatusCode::OK, &headers);
/// assert!(verdict.outcome.is_failure());
/// assert_eq!(verdict.retry, Retryable::IfIdempotent);
/// ```
#[derive(Debug, Clone)]
pub struct TowerHttp<C> {
    classifier: C,
}

impl<C> TowerHttp<C> {
    /// Wraps `classifier`.
    pub fn new(classifier: C) -> Self {
        Self { classifier }
    }
}

/// What one of tower-http's failure classes means for the endpoint and for
/// a retry. Implemented for the classes of tower-http's own classifiers;
/// implement it for the class of a classifier of your own.
pub trait FailureClassVerdict {
    /// The verdict for a response classified as this failure, answered
    /// with `status`.
    fn verdict(&self, status: StatusCode) -> Verdict;
}

impl FailureClassVerdict for ServerErrorsFailureClass {
    fn verdict(&self, status: StatusCode) -> Verdict {
        status_verdict(status)
    }
}

impl FailureClassVerdict for StatusInRangeFailureClass {
    fn verdict(&self, status: StatusCode) -> Verdict {
        status_verdict(status)
    }
}

impl FailureClassVerdict for GrpcFailureClass {
    fn verdict(&self, _status: StatusCode) -> Verdict {
        /// gRPC's UNAVAILABLE: the status its own retry guidance retries.
        const UNAVAILABLE: i32 = 14;
        let retry = match self {
            GrpcFailureClass::Code(code) if code.get() == UNAVAILABLE => Retryable::IfIdempotent,
            _ => Retryable::No,
        };
        Verdict::failure(FailureKind::Classified, retry)
    }
}

fn status_verdict(status: StatusCode) -> Verdict {
    Verdict::failure(FailureKind::Status(status), retryable_status(status))
}

/// A response with `status` and `headers` and no body, for tower-http.
fn head(status: StatusCode, headers: &HeaderMap) -> http::Response<()> {
    let mut response = http::Response::new(());
    *response.status_mut() = status;
    *response.headers_mut() = headers.clone();
    response
}

impl<C> Classify for TowerHttp<C>
where
    C: ClassifyResponse + Clone + std::fmt::Debug + Send + Sync + 'static,
    C::FailureClass: FailureClassVerdict,
{
    fn classify_response(&self, status: StatusCode, headers: &HeaderMap) -> Verdict {
        match self
            .classifier
            .clone()
            .classify_response(&head(status, headers))
        {
            ClassifiedResponse::Ready(Ok(())) => {
                // Not a failure, but a 429 still asks for another try.
                Verdict::new(Outcome::Success, retryable_status(status))
            }
            ClassifiedResponse::Ready(Err(class)) => class.verdict(status),
            // Decided at the end of the stream, in `classify_trailers`.
            ClassifiedResponse::RequiresEos(_) => Verdict::SUCCESS,
        }
    }

    fn classify_error(&self, error: &(dyn StdError + 'static)) -> Verdict {
        DefaultClassifier.classify_error(error)
    }

    fn classify_trailers(&self, status: StatusCode, trailers: &HeaderMap) -> Option<Verdict> {
        let response = head(status, &HeaderMap::new());
        match self.classifier.clone().classify_response(&response) {
            ClassifiedResponse::RequiresEos(eos) => Some(match eos.classify_eos(Some(trailers)) {
                Ok(()) => Verdict::SUCCESS,
                Err(class) => class.verdict(status),
            }),
            ClassifiedResponse::Ready(_) => None,
        }
    }
}
