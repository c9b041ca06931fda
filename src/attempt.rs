//! The contract between the retry layer and the balancer: what one attempt
//! carries down in its request, and what comes back up.
//!
//! The retry layer (or any layer of yours that makes attempts) puts an
//! [`AttemptContext`] in each attempt's request: its number, the endpoints
//! it should avoid, and its deadline. The load-balancing layer reads it
//! there, picks away from the avoided endpoints, holds the attempt in
//! flight as timed out if it is abandoned past its deadline, and writes
//! back into the context, which the layer above still holds (a clone
//! shares it), the endpoint it chose and then its classifier's
//! [`Verdict`] on the answer. So a hedge can avoid an attempt that has not
//! answered yet, a timed-out attempt is still known by its endpoint, and
//! the layer above judges an answer as the balancer did, with no extension
//! of the response to carry it.
//!
//! Nothing travels in a thread-local or a task-local: a layer between the
//! two that defers `call` to another task (tower's `Buffer`), limits
//! concurrency or wraps the body (tower-http's `TraceLayer`) changes
//! nothing. `http::Request`s carry the context in their extensions;
//! `reqwest::Request`, whose extensions are private, travels as a
//! [`WithExtensions`](crate::WithExtensions) through the layers.

use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use tokio::time::Instant;

use crate::Endpoint;
use crate::balance::Avoid;
use crate::classify::Verdict;
use crate::request::BalancedRequest;

/// What one attempt of a call tells the balancer, carried in the request.
///
/// Cheap to clone: clones share the slot for the endpoint the balancer
/// chose, so the layer that made the attempt keeps a clone and reads
/// [`endpoint`](Self::endpoint) while the attempt is in flight or after
/// it was abandoned.
///
/// ```
/// use std::time::Duration;
/// use tower_lb::{AttemptContext, Endpoint};
/// use tower_lb::balance::Avoid;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let mut avoid = Avoid::new();
/// avoid.insert(Endpoint::new("10.0.0.7:8080")?);
/// let context = AttemptContext::new(2)
///     .with_avoid(avoid)
///     .with_deadline(tokio::time::Instant::now() + Duration::from_secs(1));
/// let mut request = http::Request::get("http://greet/").body(())?;
/// request.extensions_mut().insert(context.clone());
/// // ... the balancer below picks, and says where it sent the attempt:
/// AttemptContext::of(&request).unwrap().record_endpoint(&Endpoint::new("10.0.0.8:8080")?);
/// assert_eq!(context.endpoint().map(Endpoint::key), Some("http://10.0.0.8:8080"));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct AttemptContext {
    // One allocation per attempt, whatever it carries: the context is
    // cloned into the request's extensions and kept by the layer above,
    // and a clone is then one reference count.
    inner: Arc<Inner>,
}

// Cloned only by a builder called on a shared context (`inner_mut`).
#[derive(Debug)]
struct Inner {
    number: u32,
    avoid: Avoid,
    deadline: Option<Instant>,
    sent_to: OnceLock<Endpoint>,
    // The latest, not the first: a layer between the two that sends the
    // request again (its clone shares this context) hands up the answer
    // judged last.
    verdict: Mutex<Option<Verdict>>,
    span: tracing::Span,
}

impl Clone for Inner {
    /// A copy with what was recorded so far, shared with nothing.
    fn clone(&self) -> Self {
        Self {
            number: self.number,
            avoid: self.avoid.clone(),
            deadline: self.deadline,
            sent_to: self.sent_to.clone(),
            verdict: Mutex::new(*self.verdict.lock().unwrap_or_else(PoisonError::into_inner)),
            span: self.span.clone(),
        }
    }
}

impl AttemptContext {
    /// The context of attempt `number` (1 for the first) of a call,
    /// avoiding nothing, without a deadline.
    pub fn new(number: u32) -> Self {
        Self::attempt(number, Avoid::new(), None, tracing::Span::none())
    }

    /// The context of attempt `number` with everything it carries, built
    /// at once.
    pub(crate) fn attempt(
        number: u32,
        avoid: Avoid,
        deadline: Option<Instant>,
        span: tracing::Span,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                number,
                avoid,
                deadline,
                sent_to: OnceLock::new(),
                verdict: Mutex::new(None),
                span,
            }),
        }
    }

    /// The context's own fields, to set. The builders are meant for a
    /// context not yet shared; on one that is, they set a copy (with the
    /// endpoint recorded so far), which the clones made before do not see.
    fn inner_mut(&mut self) -> &mut Inner {
        Arc::make_mut(&mut self.inner)
    }

    /// The attempt's `tracing` span: the balancer writes the endpoint it
    /// chose into its `server.address` and `server.port` fields (see
    /// [`retry`](crate::retry)'s spans).
    pub fn with_span(mut self, span: tracing::Span) -> Self {
        self.inner_mut().span = span;
        self
    }

    /// The attempt's span ([`Span::none`](tracing::Span::none) unless the
    /// layer above gave one).
    pub fn span(&self) -> &tracing::Span {
        &self.inner.span
    }

    /// Endpoints this attempt should not go to (those earlier attempts
    /// tried): the balancer picks elsewhere while anything else is
    /// eligible.
    pub fn with_avoid(mut self, avoid: Avoid) -> Self {
        self.inner_mut().avoid = avoid;
        self
    }

    /// When the attempt will be abandoned: dropped unfinished at or after
    /// it, the attempt counts as a timeout against its endpoint.
    pub fn with_deadline(mut self, deadline: Instant) -> Self {
        self.inner_mut().deadline = Some(deadline);
        self
    }

    /// The attempt's number, 1 for the first.
    pub fn number(&self) -> u32 {
        self.inner.number
    }

    /// The endpoints to avoid.
    pub fn avoid(&self) -> &Avoid {
        &self.inner.avoid
    }

    /// The attempt's deadline, if any.
    pub fn deadline(&self) -> Option<Instant> {
        self.inner.deadline
    }

    /// Says which endpoint the attempt was sent to: the balancer calls it
    /// once it has picked (a balancer of your own should too). The first
    /// call wins.
    pub fn record_endpoint(&self, endpoint: &Endpoint) {
        let inner = &*self.inner;
        if inner.sent_to.set(endpoint.clone()).is_ok() && !inner.span.is_disabled() {
            inner.span.record("server.address", endpoint.host());
            inner.span.record("server.port", endpoint.port());
        }
    }

    /// The endpoint the balancer sent the attempt to, once it has.
    pub fn endpoint(&self) -> Option<&Endpoint> {
        self.inner.sent_to.get()
    }

    /// Says how the balancer's classifier judged the attempt's answer (its
    /// response head, or its error): the balancer calls it when the answer
    /// comes (a balancer of your own should too). The latest call stands:
    /// a layer between that sent the request twice hands up the second
    /// answer. (A layer between that makes attempts of its own with
    /// contexts of its own, a second retry layer, gets them instead.)
    pub fn record_verdict(&self, verdict: Verdict) {
        *self.verdict_slot() = Some(verdict);
    }

    fn verdict_slot(&self) -> std::sync::MutexGuard<'_, Option<Verdict>> {
        // Nothing under the lock can panic: a poisoned one holds a value.
        self.inner
            .verdict
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The balancer's verdict on the attempt's answer, once it has come:
    /// what the retry layer reads to decide on another attempt.
    ///
    /// ```
    /// use tower_lb::AttemptContext;
    /// use tower_lb::classify::{FailureKind, Retryable, Verdict};
    ///
    /// let context = AttemptContext::new(1);
    /// assert_eq!(context.verdict(), None);
    /// let unavailable = Verdict::failure(
    ///     FailureKind::Status(http::StatusCode::SERVICE_UNAVAILABLE),
    ///     Retryable::IfIdempotent,
    /// );
    /// context.clone().record_verdict(unavailable);
    /// assert_eq!(context.verdict(), Some(unavailable));
    /// ```
    pub fn verdict(&self) -> Option<Verdict> {
        *self.verdict_slot()
    }

    /// The context carried by `request`, if any.
    pub fn of<R: BalancedRequest + ?Sized>(request: &R) -> Option<&AttemptContext> {
        request.extensions()?.get::<AttemptContext>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_share_the_endpoint_and_a_builder_on_a_shared_context_copies() {
        let endpoint = Endpoint::new("10.0.0.8:8080").unwrap();
        let context = AttemptContext::new(1);
        let kept = context.clone();
        context.record_endpoint(&endpoint);
        assert_eq!(kept.endpoint(), Some(&endpoint));
        let later = tokio::time::Instant::now();
        let copy = kept.clone().with_deadline(later);
        assert_eq!((copy.deadline(), kept.deadline()), (Some(later), None));
        assert_eq!(copy.endpoint(), Some(&endpoint));
        let other = Endpoint::new("10.0.0.9:8080").unwrap();
        copy.record_endpoint(&other);
        assert_eq!(copy.endpoint(), Some(&endpoint), "the first call wins");
    }

    #[test]
    fn clones_share_the_verdict_the_latest_stands_and_a_copy_keeps_its_own() {
        use crate::classify::{FailureKind, Retryable, Verdict};
        let unavailable = Verdict::failure(
            FailureKind::Status(http::StatusCode::SERVICE_UNAVAILABLE),
            Retryable::IfIdempotent,
        );
        let context = AttemptContext::new(1);
        let kept = context.clone();
        context.record_verdict(unavailable);
        assert_eq!(kept.verdict(), Some(unavailable));
        // Sent again by a layer between: the second answer's verdict.
        context.record_verdict(Verdict::SUCCESS);
        assert_eq!(kept.verdict(), Some(Verdict::SUCCESS));
        // A builder on the shared context copies it, verdict included,
        // and what the copy records stays its own.
        let copy = kept.clone().with_deadline(tokio::time::Instant::now());
        assert_eq!(copy.verdict(), Some(Verdict::SUCCESS));
        copy.record_verdict(unavailable);
        assert_eq!(kept.verdict(), Some(Verdict::SUCCESS));
    }
}
