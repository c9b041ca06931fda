//! One attempt: sent with its context, awaited within its deadline.
//!
//! The one place an attempt is made. The context goes down in the request;
//! the endpoint comes back in the context (the balancer writes it there as
//! it picks), so an attempt still in flight or cut short is known by its
//! endpoint too.

use std::future::{Future, poll_fn};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tower_service::Service;
use tracing::Instrument;

use super::future::into_error;
use crate::attempt::AttemptContext;
use crate::balance::Avoid;
use crate::classify::{FailureKind, Retryable, Verdict};
use crate::request::{BalancedRequest, BalancedResponse};
use crate::{BoxError, Endpoint, Error};

/// An attempt sent and not yet finished.
pub(super) struct InFlight<F> {
    future: F,
    context: AttemptContext,
    sent: Instant,
    span: tracing::Span,
}

/// One attempt, finished (or cut short by its deadline).
pub(super) struct Finished<R> {
    pub(super) result: Result<R, Error>,
    /// Where it went, where known.
    pub(super) endpoint: Option<Endpoint>,
    /// Time to the answer, for the service's latency window.
    pub(super) latency: Duration,
}

/// Readies `svc` (unless `call` already did: `fresh`) and sends `request`
/// as attempt `number`, away from `avoid`, to be abandoned at `deadline`.
pub(super) async fn send<S, R>(
    svc: &mut S,
    fresh: &mut bool,
    mut request: R,
    number: u32,
    avoid: Avoid,
    deadline: Option<Instant>,
    call_span: &tracing::Span,
) -> Result<InFlight<S::Future>, Error>
where
    S: Service<R>,
    S::Error: Into<BoxError>,
    R: BalancedRequest,
{
    if !std::mem::take(fresh) {
        poll_fn(|cx| svc.poll_ready(cx)).await.map_err(into_error)?;
    }
    let span = super::spans::attempt_span(call_span, number);
    let mut context = AttemptContext::new(number)
        .with_avoid(avoid)
        .with_span(span.clone());
    if let Some(deadline) = deadline {
        context = context.with_deadline(deadline);
    }
    if let Some(extensions) = request.extensions_mut() {
        extensions.insert(context.clone());
    }
    let future = span.in_scope(|| svc.call(request));
    Ok(InFlight {
        future,
        context,
        sent: Instant::now(),
        span,
    })
}

impl<F> InFlight<F> {
    /// The attempt's context: a clone shares where the balancer sends it.
    pub(super) fn context(&self) -> AttemptContext {
        self.context.clone()
    }

    /// Waits for the answer, until the attempt's deadline; with `buffer`,
    /// reads a body of at most that many bytes to its end first, so that a
    /// body cut short is a failed attempt like any other.
    pub(super) async fn finish<R, E>(self, service: &Arc<str>, buffer: Option<usize>) -> Finished<R>
    where
        F: Future<Output = Result<R, E>>,
        R: BalancedResponse,
        E: Into<BoxError>,
    {
        let InFlight {
            future,
            context,
            sent,
            span,
        } = self;
        let answer = async {
            let response = future.await.map_err(into_error)?;
            let Some(limit) = buffer else {
                return Ok(response);
            };
            match response.buffer_body(limit) {
                Err(unbuffered) => Ok(unbuffered),
                Ok(buffering) => buffering.await.map_err(|source| Error::Inner {
                    service: Some(service.clone()),
                    endpoint: context.endpoint().cloned(),
                    // The rules' verdict on a body cut short; the balancer
                    // below has counted it against the endpoint already.
                    verdict: Some(Verdict::failure(FailureKind::Body, Retryable::IfIdempotent)),
                    source,
                }),
            }
        };
        // The attempt's work (the balancer's poll, the client's) runs in
        // its span.
        let answer = answer.instrument(span.clone());
        let result = match context.deadline() {
            None => answer.await,
            Some(deadline) => match tokio::time::timeout_at(deadline, answer).await {
                Ok(result) => result,
                Err(_) => Err(Error::AttemptTimeout {
                    service: service.clone(),
                    endpoint: context.endpoint().cloned(),
                    timeout: deadline.saturating_duration_since(sent),
                }),
            },
        };
        super::spans::record_outcome(&span, &result);
        let endpoint = context.endpoint().cloned().or_else(|| match &result {
            // A balancer that does not write the context may still say.
            Ok(response) => response.extensions().get::<Endpoint>().cloned(),
            Err(error) => error.endpoint().cloned(),
        });
        Finished {
            result,
            endpoint,
            latency: sent.elapsed(),
        }
    }
}
