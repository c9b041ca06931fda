use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use tower_service::Service;

use crate::classify::{blames_endpoint, classify_status};
use crate::pool::Picked;
use crate::request::{BalancedRequest, BalancedResponse};
use crate::{BoxError, Error, Pool};

type BoxFuture<R> = Pin<Box<dyn Future<Output = Result<R, Error>> + Send>>;

pin_project! {
    /// The response future of [`LoadBalance`](crate::LoadBalance).
    pub struct ResponseFuture<F, R> {
        #[pin]
        state: State<F, R>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, R> {
        Balanced { #[pin] inner: Balanced<F> },
        PassThrough { #[pin] inner: F },
        Waiting { inner: BoxFuture<R> },
        Failed { error: Option<Error> },
    }
}

impl<F, R> ResponseFuture<F, R> {
    pub(crate) fn balanced(inner: Balanced<F>) -> Self {
        Self {
            state: State::Balanced { inner },
        }
    }

    pub(crate) fn pass_through(inner: F) -> Self {
        Self {
            state: State::PassThrough { inner },
        }
    }

    pub(crate) fn waiting(inner: impl Future<Output = Result<R, Error>> + Send + 'static) -> Self {
        Self {
            state: State::Waiting {
                inner: Box::pin(inner),
            },
        }
    }

    pub(crate) fn failed(error: Error) -> Self {
        Self {
            state: State::Failed { error: Some(error) },
        }
    }
}

impl<F, R, E> Future for ResponseFuture<F, R>
where
    F: Future<Output = Result<R, E>>,
    R: BalancedResponse,
    E: Into<BoxError>,
{
    type Output = Result<R, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Balanced { inner } => inner.poll(cx),
            StateProj::PassThrough { inner } => {
                inner.poll(cx).map_err(|e| Error::inner_from(None, None, e))
            }
            StateProj::Waiting { inner } => inner.as_mut().poll(cx),
            StateProj::Failed { error } => Poll::Ready(Err(error
                .take()
                .expect("ResponseFuture polled after completion"))),
        }
    }
}

impl<F, R> fmt::Debug for ResponseFuture<F, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Balanced { inner } => {
                return f.debug_tuple("ResponseFuture").field(inner).finish();
            }
            State::PassThrough { .. } => "pass-through",
            State::Waiting { .. } => "waiting for discovery",
            State::Failed { .. } => "failed",
        };
        f.debug_tuple("ResponseFuture").field(&state).finish()
    }
}

pin_project! {
    /// A request sent to a picked endpoint: counted in flight until it
    /// completes or is dropped, its latency and outcome recorded.
    pub(crate) struct Balanced<F> {
        #[pin]
        inner: F,
        picked: Option<Picked>,
        service: Arc<str>,
    }
}

impl<F> Balanced<F> {
    /// Points `request` at the picked endpoint and sends it.
    pub(crate) fn dispatch<S, Req>(
        client: &mut S,
        mut request: Req,
        pool: &Pool,
        mut picked: Picked,
    ) -> Result<Self, Error>
    where
        S: Service<Req, Future = F>,
        Req: BalancedRequest,
    {
        let endpoint = picked.endpoint();
        if let Err(reason) = request.route_to(endpoint) {
            // The pick is dropped unrecorded: the endpoint did nothing wrong.
            return Err(Error::Route {
                service: pool.service_arc().clone(),
                endpoint: endpoint.clone(),
                reason,
            });
        }
        if let Some(extensions) = request.extensions_mut() {
            extensions.insert(endpoint.clone());
        }
        // A retry layer above learns where this attempt went before it
        // finishes, so a hedge or a retry after a timeout can avoid it.
        crate::retry::note_endpoint(endpoint);
        picked.start_timer();
        if let Some(timeout) = crate::retry::attempt_timeout() {
            // `start_timer` just read the clock; this reads it once more
            // only under a retry layer with an attempt timeout.
            if let Some(deadline) = tokio::time::Instant::now().checked_add(timeout) {
                picked.set_deadline(deadline);
            }
        }
        Ok(Self {
            inner: client.call(request),
            picked: Some(picked),
            service: pool.service_arc().clone(),
        })
    }
}

impl<F, R, E> Future for Balanced<F>
where
    F: Future<Output = Result<R, E>>,
    R: BalancedResponse,
    E: Into<BoxError>,
{
    type Output = Result<R, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        let picked = this
            .picked
            .take()
            .expect("Balanced polled after completion");
        let endpoint = picked.endpoint().clone();
        Poll::Ready(match result {
            Ok(mut response) => {
                picked.finish(classify_status(response.status()).is_failure());
                response.extensions_mut().insert(endpoint);
                Ok(response)
            }
            Err(error) => {
                let error: BoxError = error.into();
                if blames_endpoint(&*error) {
                    picked.failure();
                } else {
                    // Counted out of flight with no verdict on the endpoint.
                    drop(picked);
                }
                Err(Error::inner_from(
                    Some(this.service.clone()),
                    Some(endpoint),
                    error,
                ))
            }
        })
    }
}

impl<F> fmt::Debug for Balanced<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Balanced")
            .field("service", &self.service)
            .field("endpoint", &self.picked.as_ref().map(Picked::endpoint))
            .finish()
    }
}
