//! One attempt: sent with its context, awaited within its deadline.
//!
//! The one place an attempt is made. The context goes down in the request;
//! the endpoint comes back in the context (the balancer writes it there as
//! it picks), so an attempt still in flight or cut short is known by its
//! endpoint too.

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use tokio::time::Instant;
use tower_service::Service;

use super::future::into_error;
use crate::attempt::AttemptContext;
use crate::balance::Avoid;
use crate::classify::{FailureKind, Retryable, Verdict};
use crate::request::{BalancedRequest, BalancedResponse, BufferFuture};
use crate::time::Alarm;
use crate::{BoxError, Endpoint, Error};

/// An attempt sent and not yet finished.
pub(super) struct InFlight<F> {
    future: F,
    // Its span is the attempt's.
    context: AttemptContext,
    sent: Instant,
}

/// One attempt, finished (or cut short by its deadline).
pub(super) struct Finished<R> {
    pub(super) result: Result<R, Error>,
    /// Where it went, where known.
    pub(super) endpoint: Option<Endpoint>,
    /// The balancer's verdict on the answer, as it wrote it in the
    /// attempt's context.
    pub(super) verdict: Option<Verdict>,
    /// When it was sent: the service's latency window (when there is one)
    /// takes the time to the answer from it, read then.
    pub(super) sent: Instant,
}

/// Sends `request` as attempt `number` through `svc` (readied by the
/// caller), away from `avoid`, to be abandoned at `deadline`; `sent` is
/// the clock's reading now.
///
/// Not an `async fn`: the request and the attempt would be moved through
/// one more future's state on every call.
#[inline(always)]
pub(super) fn send<S, R>(
    svc: &mut S,
    mut request: R,
    number: u32,
    avoid: Avoid,
    deadline: Option<Instant>,
    sent: Instant,
    call_span: &tracing::Span,
) -> InFlight<S::Future>
where
    S: Service<R>,
    R: BalancedRequest,
{
    let span = super::spans::attempt_span(call_span, number);
    let context = AttemptContext::attempt(number, avoid, deadline, span);
    if let Some(extensions) = request.extensions_mut() {
        extensions.insert(context.clone());
    }
    // Entered rather than `in_scope`: a closure would move the request
    // once more.
    let entered = context.span().enter();
    let future = svc.call(request);
    drop(entered);
    InFlight {
        future,
        context,
        sent,
    }
}

/// Readies `svc` for another attempt.
pub(super) async fn ready<S, R>(svc: &mut S) -> Result<(), Error>
where
    S: Service<R>,
    S::Error: Into<BoxError>,
{
    poll_fn(|cx| svc.poll_ready(cx)).await.map_err(into_error)
}

impl<F> InFlight<F> {
    /// The attempt's context: a clone shares where the balancer sends it.
    pub(super) fn context(&self) -> AttemptContext {
        self.context.clone()
    }

    /// Waits for the answer, until the attempt's deadline; with `buffer`,
    /// reads a body of at most that many bytes to its end first, so that a
    /// body cut short is a failed attempt like any other.
    #[inline(always)]
    pub(super) fn finish<R>(self, service: Arc<str>, buffer: Option<usize>) -> Finish<F, R> {
        let InFlight {
            future,
            context,
            sent,
        } = self;
        // Set only once the attempt is not answered at its first poll: an
        // answer at once needs no timer, and the first attempt is built in
        // the service's `call`, which may run outside the runtime.
        let timer = match context.deadline() {
            Some(deadline) => Alarm::until(deadline),
            None => Alarm::Off,
        };
        Finish {
            future,
            timer,
            buffering: None,
            context,
            sent,
            service,
            buffer,
            done: false,
        }
    }
}

pin_project! {
    /// An attempt awaited: its answer within its deadline, its body read
    /// first when the layer buffers responses. Written by hand rather than
    /// as an `async fn` around `timeout_at` and `instrument`: each of those
    /// would move the attempt's future once more per call.
    pub(super) struct Finish<F, R> {
        #[pin]
        future: F,
        timer: Alarm,
        // The response's body being read (`buffer`), once the head is in.
        buffering: Option<BufferFuture<R>>,
        // Its span is the attempt's.
        context: AttemptContext,
        sent: Instant,
        // Owned, not borrowed from the call: the first attempt's future is
        // held beside the call's state (`first.rs`).
        service: Arc<str>,
        buffer: Option<usize>,
        done: bool,
    }
}

impl<F, R, E> Future for Finish<F, R>
where
    F: Future<Output = Result<R, E>>,
    R: BalancedResponse,
    E: Into<BoxError>,
{
    type Output = Finished<R>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Finished<R>> {
        let mut this = self.project();
        if *this.done {
            // Polled after it finished: nothing more will come.
            return Poll::Pending;
        }
        // The attempt's work (the balancer's poll, the client's) runs in
        // its span.
        let entered = this.context.span().enter();
        let answer = loop {
            if let Some(buffering) = this.buffering {
                match buffering.as_mut().poll(cx) {
                    Poll::Ready(Ok(response)) => break Some(Ok(response)),
                    Poll::Ready(Err(source)) => {
                        break Some(Err(Error::Inner {
                            service: Some(this.service.clone()),
                            endpoint: this.context.endpoint().cloned(),
                            // The rules' verdict on a body cut short; the
                            // balancer below has counted it against the
                            // endpoint already.
                            verdict: Some(Verdict::failure(
                                FailureKind::Body,
                                Retryable::IfIdempotent,
                            )),
                            source,
                        }));
                    }
                    Poll::Pending => break None,
                }
            }
            match this.future.as_mut().poll(cx) {
                Poll::Ready(Ok(response)) => match *this.buffer {
                    None => break Some(Ok(response)),
                    Some(limit) => match response.buffer_body(limit) {
                        Err(unbuffered) => break Some(Ok(unbuffered)),
                        // Polled on the loop's next turn.
                        Ok(buffering) => *this.buffering = Some(buffering),
                    },
                },
                Poll::Ready(Err(error)) => break Some(Err(into_error(error))),
                Poll::Pending => break None,
            }
        };
        drop(entered);
        let result = match answer {
            Some(result) => result,
            None => {
                ready!(this.timer.poll_due(cx));
                let deadline = this.context.deadline().unwrap_or(*this.sent);
                Err(Error::AttemptTimeout {
                    service: this.service.clone(),
                    endpoint: this.context.endpoint().cloned(),
                    timeout: deadline.saturating_duration_since(*this.sent),
                })
            }
        };
        *this.done = true;
        *this.buffering = None;
        // Out of its group now, not when the future is dropped.
        *this.timer = Alarm::Off;
        super::spans::record_outcome(this.context.span(), &result);
        let endpoint = this.context.endpoint().cloned().or_else(|| match &result {
            // A balancer that does not write the context may still say.
            Ok(response) => response.extensions().get::<Endpoint>().cloned(),
            Err(error) => error.endpoint().cloned(),
        });
        Poll::Ready(Finished {
            result,
            endpoint,
            verdict: this.context.verdict(),
            sent: *this.sent,
        })
    }
}
