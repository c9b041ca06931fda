//! The retry layer's response future.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::{BoxError, Error};

/// The response future of [`Retry`](super::Retry).
pub struct RetryFuture<R> {
    inner: Pin<Box<dyn Future<Output = Result<R, Error>> + Send + 'static>>,
}

impl<R> RetryFuture<R> {
    pub(crate) fn new(inner: impl Future<Output = Result<R, Error>> + Send + 'static) -> Self {
        Self {
            inner: Box::pin(inner),
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
        self.inner.as_mut().poll(cx)
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
