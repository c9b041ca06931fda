//! The load-balancing service's response future, and one balanced
//! attempt's future.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::time::Instant;
use tower_service::Service;

use crate::attempt::AttemptContext;
use crate::classify::Classify;
use crate::layer::body::{BodyGuard, TrackBody};
use crate::layer::router::{Router, SchemePolicy};
use crate::pool::Picked;
use crate::request::{BalancedResponse, OutgoingRequest};
use crate::time::Alarm;
use crate::{BoxError, Error, Pool};

type BoxFuture<R> = Pin<Box<dyn Future<Output = Result<R, Error>> + Send>>;

pin_project! {
    /// The response future of [`LoadBalance`](crate::LoadBalance).
    pub struct ResponseFuture<F, R: TrackBody> {
        #[pin]
        state: State<F, R>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, R: TrackBody> {
        Balanced { #[pin] inner: Balanced<F> },
        PassThrough { #[pin] inner: F },
        Waiting { inner: BoxFuture<R::Tracked> },
        Failed { error: Option<Error> },
    }
}

impl<F, R: TrackBody> ResponseFuture<F, R> {
    #[inline]
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

    pub(crate) fn waiting(
        inner: impl Future<Output = Result<R::Tracked, Error>> + Send + 'static,
    ) -> Self {
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
    R: TrackBody,
    E: Into<BoxError>,
{
    type Output = Result<R::Tracked, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Balanced { inner } => inner.poll(cx),
            StateProj::PassThrough { inner } => inner
                .poll(cx)
                .map_ok(TrackBody::untracked)
                .map_err(|e| Error::inner_from(None, None, e)),
            StateProj::Waiting { inner } => inner.as_mut().poll(cx),
            StateProj::Failed { error } => Poll::Ready(Err(error.take().unwrap_or_else(|| {
                Error::Config("ResponseFuture polled after completion".into())
            }))),
        }
    }
}

impl<F, R: TrackBody> fmt::Debug for ResponseFuture<F, R> {
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

/// What a balanced attempt holds until its response head or error.
struct Live {
    picked: Picked,
    service: Arc<str>,
    classifier: Arc<dyn Classify>,
    measure: crate::metrics::AttemptMeasure,
    /// The context of an attempt made by a layer above, which gets the
    /// classifier's verdict on the answer.
    context: Option<AttemptContext>,
}

pin_project! {
    /// A request sent to a picked endpoint: counted in flight until its
    /// response body ends (or it fails, or is dropped), its latency and
    /// outcome recorded once.
    pub(crate) struct Balanced<F> {
        #[pin]
        inner: F,
        live: Option<Live>,
        // The balancer's own deadline, for a request that came without an
        // `AttemptContext`: no layer above bounds it, so this one does.
        timer: Alarm,
        // What the timeout error reports.
        timeout: Duration,
    }
}

impl<F> Balanced<F> {
    /// Points `request` at the picked endpoint and sends it.
    ///
    /// A request carrying an [`AttemptContext`] learns the endpoint, and
    /// its deadline marks when an abandoned attempt counts as timed out;
    /// the layer that set it enforces it. A request without one is bounded
    /// by `timeout`, here.
    #[inline]
    pub(crate) fn dispatch<S, Req>(
        client: &mut S,
        mut request: Req,
        pool: &Pool,
        mut picked: Picked,
        router: &Router,
    ) -> Result<Self, Error>
    where
        S: Service<Req::Outgoing, Future = F>,
        Req: OutgoingRequest,
    {
        let (classifier, timeout) = (&router.classifier, router.timeout);
        // Borrowed, not counted: the pick is changed only once the
        // endpoint has been read for everything below.
        let endpoint = picked.endpoint();
        if router.scheme_policy == SchemePolicy::NoDowngrade
            && request.scheme() == Some("https")
            && *endpoint.scheme() == http::uri::Scheme::HTTP
        {
            // Unrecorded, like a failed rewrite: the endpoint did nothing wrong.
            return Err(Error::InsecureEndpoint {
                service: pool.service_arc().clone(),
                endpoint: endpoint.clone(),
            });
        }
        if let Err(reason) = request.route_to(endpoint) {
            // The pick is dropped untimed, unrecorded: the endpoint did
            // nothing wrong.
            return Err(Error::Route {
                service: pool.service_arc().clone(),
                endpoint: endpoint.clone(),
                reason,
            });
        }
        let mut timer = Alarm::Off;
        let mut now = None;
        let mut attempt = None;
        let deadline = match AttemptContext::of(&request) {
            Some(context) => {
                context.record_endpoint(endpoint);
                let deadline = context.deadline();
                attempt = Some(context.clone());
                deadline
            }
            None => {
                // One clock reading for the deadline and the timer's start.
                let read = *now.insert(Instant::now());
                let deadline = timeout.and_then(|t| read.checked_add(t));
                if let (Some(deadline), Some(timeout)) = (deadline, timeout) {
                    timer = Alarm::at(deadline, timeout);
                }
                deadline
            }
        };
        let (measure, active) = crate::metrics::AttemptMeasure::start(
            pool.service(),
            pool.metrics_label(endpoint),
            request.method(),
        );
        if router.endpoint_in_requests
            && let Some(extensions) = request.extensions_mut()
        {
            extensions.insert(endpoint.clone());
        }
        if let Some(deadline) = deadline {
            picked.set_deadline(deadline);
        }
        picked.set_active(active);
        match now {
            Some(now) => picked.start_timer_at(now),
            None => picked.start_timer(),
        }
        Ok(Self {
            inner: client.call(request.into_outgoing()),
            live: Some(Live {
                picked,
                service: pool.service_arc().clone(),
                classifier: classifier.clone(),
                measure,
                context: attempt,
            }),
            timer,
            timeout: timeout.unwrap_or_default(),
        })
    }
}

impl<F, R, E> Future for Balanced<F>
where
    F: Future<Output = Result<R, E>>,
    R: TrackBody,
    E: Into<BoxError>,
{
    type Output = Result<R::Tracked, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = match this.inner.poll(cx) {
            Poll::Ready(result) => {
                // Out of its group now, not when the future is dropped.
                *this.timer = Alarm::Off;
                result
            }
            Poll::Pending => {
                ready!(this.timer.poll_due(cx));
                let Some(live) = this.live.take() else {
                    return Poll::Pending;
                };
                let endpoint = live.picked.endpoint().clone();
                // Dropped past its deadline: recorded as a timeout.
                // Read before the pick is dropped, only with metrics to feed.
                let picked = &live.picked;
                live.measure
                    .finish(&live.service, Err("timeout"), || picked.elapsed_secs());
                drop(live.picked);
                return Poll::Ready(Err(Error::AttemptTimeout {
                    service: live.service,
                    endpoint: Some(endpoint),
                    timeout: *this.timeout,
                }));
            }
        };
        let Some(Live {
            mut picked,
            service,
            classifier,
            measure,
            context,
        }) = this.live.take()
        else {
            return Poll::Ready(Err(Error::Config(
                "balanced future polled after completion".into(),
            )));
        };
        let endpoint = picked.endpoint().clone();
        Poll::Ready(match result {
            Ok(response) => {
                let status = response.status();
                let verdict = classifier.classify_response(status, response.headers());
                if let Some(context) = &context {
                    context.record_verdict(verdict);
                }
                picked.record_head(verdict.outcome.is_failure());
                measure.finish(&service, Ok(status.as_u16()), || picked.elapsed_secs());
                // Noted after tracking: a `reqwest::Response` is taken
                // apart and rebuilt to wrap its body, and its extension map
                // is then the one that holds the URL, with room for this.
                // (The verdict goes to the layer above in the attempt's
                // context, not here: a fourth entry would grow reqwest's
                // map, and a caller without such a layer has no use for it.)
                let mut tracked =
                    response.track(BodyGuard::new(picked, status, verdict, classifier));
                tracked.extensions_mut().insert(endpoint);
                Ok(tracked)
            }
            Err(error) => {
                let error: BoxError = error.into();
                let verdict = classifier.classify_error(&*error);
                if let Some(context) = &context {
                    context.record_verdict(verdict);
                }
                let answer = Err(crate::metrics::failure_type(Some(verdict.outcome)));
                measure.finish(&service, answer, || picked.elapsed_secs());
                picked.complete(verdict.outcome);
                Err(Error::Inner {
                    service: Some(service),
                    endpoint: Some(endpoint),
                    verdict: Some(verdict),
                    source: error,
                })
            }
        })
    }
}

impl<F> fmt::Debug for Balanced<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Balanced")
            .field("service", &self.live.as_ref().map(|l| &l.service))
            .field("endpoint", &self.live.as_ref().map(|l| l.picked.endpoint()))
            .finish()
    }
}
