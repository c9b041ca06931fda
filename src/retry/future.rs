//! The retry layer's response future.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use super::spans::CallTrace;
use crate::request::BalancedResponse;
use crate::{BoxError, Error};

/// The response future of [`Retry`](super::Retry).
pub struct RetryFuture<R> {
    inner: Pin<Box<dyn Future<Output = Result<R, Error>> + Send + 'static>>,
    /// The call's span and metrics, when the call has a service.
    trace: Option<Traced<R>>,
}

/// A call's trace, and how to write the call's outcome into it (a function
/// of the response type, which the future's own impl does not bound).
struct Traced<R> {
    trace: CallTrace,
    finish: fn(&CallTrace, &Result<R, Error>),
}

impl<R> RetryFuture<R> {
    /// A call without a trace (no service to name).
    pub(crate) fn new(inner: impl Future<Output = Result<R, Error>> + Send + 'static) -> Self {
        Self {
            inner: Box::pin(inner),
            trace: None,
        }
    }

    /// A call run in `trace`'s span, which gets its outcome.
    #[inline(always)]
    pub(crate) fn traced(
        inner: impl Future<Output = Result<R, Error>> + Send + 'static,
        trace: CallTrace,
    ) -> Self
    where
        R: BalancedResponse,
    {
        Self {
            inner: Box::pin(inner),
            trace: Some(Traced {
                trace,
                finish: CallTrace::finish::<R>,
            }),
        }
    }

    /// A call already boxed (it was sent from inside its box), run in
    /// `trace`'s span, which gets its outcome.
    #[inline(always)]
    pub(crate) fn traced_boxed(
        inner: Pin<Box<dyn Future<Output = Result<R, Error>> + Send + 'static>>,
        trace: CallTrace,
    ) -> Self
    where
        R: BalancedResponse,
    {
        Self {
            inner,
            trace: Some(Traced {
                trace,
                finish: CallTrace::finish::<R>,
            }),
        }
    }

    /// The size of the call's state, for the test that keeps it small.
    #[cfg(test)]
    pub(crate) fn state_size(&self) -> usize {
        std::mem::size_of_val(&*self.inner)
    }
}

impl<R> Future for RetryFuture<R> {
    type Output = Result<R, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let Some(traced) = &this.trace else {
            return this.inner.as_mut().poll(cx);
        };
        let result = {
            let _entered = traced.trace.span.enter();
            ready!(this.inner.as_mut().poll(cx))
        };
        (traced.finish)(&traced.trace, &result);
        Poll::Ready(result)
    }
}

impl<R> fmt::Debug for RetryFuture<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryFuture").finish_non_exhaustive()
    }
}

/// The crate's error as it is, anything else as the client's.
pub(super) fn into_error(error: impl Into<BoxError>) -> Error {
    match error.into().downcast::<Error>() {
        Ok(error) => *error,
        Err(source) => Error::Inner {
            service: None,
            endpoint: None,
            verdict: None,
            source,
        },
    }
}
