//! A call's first attempt, sent at once and awaited without the general
//! retry loop: most calls make one attempt, and the loop's state is large
//! (moved and boxed whole). The loop is built only when the first attempt
//! is worth retrying, and takes over from the verdict on it.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use tower_service::Service;

use super::call::Call;
use super::not_replayable::NotReplayable;
use super::replayable::{Prepared, ReplayableRequest};
use super::send::Finish;
use crate::balance::Avoid;
use crate::request::BalancedResponse;
use crate::{BoxError, Error};

/// The general loop, once the first attempt is worth retrying.
type Rest<R> = Pin<Box<dyn Future<Output = Result<R, Error>> + Send + 'static>>;

pin_project! {
    /// A call of no hedge whose request was prepared at once: its first
    /// attempt in flight, then, if that is retried, the general loop.
    ///
    /// The call and the template are fields of their own, each written
    /// into the box once where it lies (one struct of both would be built
    /// beside the box and copied in whole, then out again).
    pub(super) struct First<S, Req, F, R, T> {
        // The first attempt, until it ends; dropped then, so that an
        // attempt cut short by its deadline is abandoned before a retry.
        #[pin]
        attempt: Option<Finish<F, R>>,
        // What the general loop needs if the first attempt is retried.
        call: Option<Call<S>>,
        template: Option<T>,
        replayable: Result<(), NotReplayable>,
        rest: Option<Rest<R>>,
        request: PhantomData<fn() -> Req>,
    }
}

impl<S, Req> First<S, Req, S::Future, S::Response, Req::Template>
where
    Req: ReplayableRequest,
    S: Service<Req::Sent> + Send + 'static,
    S::Response: BalancedResponse,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    /// The call's future, boxed, its first attempt sent from `call`
    /// (whose service `poll_ready` readied) with what `prepare_now` made
    /// of its request. The box is made first and the attempt sent into
    /// it: the attempt's future (the balancer's and the client's, large)
    /// is moved once, not through every function on its way.
    #[inline(always)]
    pub(super) fn start(
        call: Call<S>,
        prepared: Prepared<Req::Sent, Req::Template>,
    ) -> Pin<Box<Self>> {
        // Boxed empty, then filled where it lies.
        let mut this = Box::pin(Self {
            attempt: None,
            call: None,
            template: None,
            replayable: Ok(()),
            rest: None,
            request: PhantomData,
        });
        let fields = this.as_mut().project();
        *fields.call = Some(call);
        let first = match prepared {
            Prepared::Replayable(template) => {
                *fields.template = Some(template);
                None
            }
            Prepared::Once {
                request,
                view,
                reason,
            } => {
                *fields.template = Some(view);
                *fields.replayable = Err(reason);
                Some(request)
            }
        };
        this.as_mut().send(first);
        this
    }

    /// Sends the first attempt: `first` when the request could not be
    /// copied (it is sent as it is), else a copy of the template.
    #[inline(always)]
    fn send(self: Pin<&mut Self>, first: Option<Req::Sent>) {
        let mut this = self.project();
        let (Some(call), Some(template)) = (this.call.as_mut(), this.template.as_ref()) else {
            return;
        };
        let request = match first {
            Some(request) => Some(request),
            None => Req::replay(template),
        };
        let Some(request) = request else {
            let error = call.uncopyable();
            *this.call = None;
            *this.rest = Some(Box::pin(std::future::ready(Err(error))));
            return;
        };
        call.fresh = false;
        let sent = call.send_now(request, Avoid::new(), false);
        let attempt = sent.finish(call.service.name.clone(), call.config.buffer_responses);
        this.attempt.set(Some(attempt));
    }
}

impl<S, Req> Future for First<S, Req, S::Future, S::Response, Req::Template>
where
    Req: ReplayableRequest,
    S: Service<Req::Sent> + Send + 'static,
    S::Response: BalancedResponse,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    type Output = Result<S::Response, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if let Some(rest) = this.rest {
            return rest.as_mut().poll(cx);
        }
        let Some(attempt) = this.attempt.as_mut().as_pin_mut() else {
            // Polled after it finished: nothing more will come.
            return Poll::Pending;
        };
        let finished = ready!(attempt.poll(cx));
        this.attempt.set(None);
        // Judged where it is: the call's state is moved out of the box only
        // for the general loop.
        let (Some(call), Some(template)) = (this.call.as_mut(), this.template.as_ref()) else {
            return Poll::Pending;
        };
        let Some(reason) = call.judge(template, &finished) else {
            let result = call.mark(finished.result);
            *this.call = None;
            *this.template = None;
            return Poll::Ready(result);
        };
        let (Some(call), Some(template)) = (this.call.take(), this.template.take()) else {
            return Poll::Pending;
        };
        let replayable = *this.replayable;
        // Worth retrying: the general loop decides whether it may be, from
        // this verdict on.
        let mut rest: Rest<S::Response> = Box::pin(call.rounds::<Req>(
            template,
            None,
            replayable,
            None,
            Some((finished, reason)),
        ));
        let poll = rest.as_mut().poll(cx);
        *this.rest = Some(rest);
        poll
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::Pin;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    use http::StatusCode;
    use tower::{Service, ServiceExt};

    use crate::retry::{Attempts, ReplayBody, RetryLayer};
    use tower_layer::Layer;

    type Answer =
        Pin<Box<dyn Future<Output = Result<http::Response<String>, crate::BoxError>> + Send>>;

    /// A service whose attempt `n` (from 1) answers as `answer(n)` says:
    /// a status, or `None` to hang; `calls` counts the attempts, `dropped`
    /// the attempt futures dropped unfinished.
    fn service(
        answer: fn(u32) -> Option<StatusCode>,
        calls: Arc<AtomicU32>,
        dropped: Arc<AtomicU32>,
    ) -> impl Service<
        http::Request<ReplayBody<String>>,
        Response = http::Response<String>,
        Error = crate::BoxError,
        Future = Answer,
    > + Clone {
        tower::service_fn(move |_: http::Request<ReplayBody<String>>| {
            let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
            let dropped = dropped.clone();
            let fut: Answer = Box::pin(async move {
                struct Guard(Arc<AtomicU32>, bool);
                impl Drop for Guard {
                    fn drop(&mut self) {
                        if !self.1 {
                            self.0.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                }
                let mut guard = Guard(dropped, false);
                let status = match answer(n) {
                    Some(status) => status,
                    None => std::future::pending().await,
                };
                guard.1 = true;
                let mut response = http::Response::new(String::new());
                *response.status_mut() = status;
                Ok(response)
            });
            fut
        })
    }

    fn request() -> http::Request<String> {
        http::Request::get("http://greet/")
            .body(String::from("hello"))
            .unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn a_first_attempt_worth_retrying_falls_into_the_retry_loop() {
        let (calls, dropped) = (Arc::default(), Arc::default());
        let svc = service(
            |n| {
                Some(if n == 1 {
                    StatusCode::SERVICE_UNAVAILABLE
                } else {
                    StatusCode::OK
                })
            },
            Arc::clone(&calls),
            Arc::clone(&dropped),
        );
        let response = RetryLayer::new()
            .layer(svc)
            .oneshot(request())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let attempts = response.extensions().get::<Attempts>().unwrap();
        assert_eq!((attempts.count(), attempts.retries()), (2, 1));
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        assert_eq!(dropped.load(Ordering::SeqCst), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_first_attempt_past_its_timeout_is_abandoned_before_the_retry() {
        let (calls, dropped) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
        let svc = service(
            |n| (n > 1).then_some(StatusCode::OK),
            Arc::clone(&calls),
            Arc::clone(&dropped),
        );
        let layer = RetryLayer::builder()
            .attempt_timeout(Duration::from_secs(1))
            .build()
            .unwrap();
        let dropped_at_retry = Arc::clone(&dropped);
        let svc = tower::service_fn({
            let mut svc = svc;
            move |request: http::Request<ReplayBody<String>>| {
                // The second attempt starts after the first was dropped.
                let seen = dropped_at_retry.load(Ordering::SeqCst);
                let fut = svc.call(request);
                async move {
                    let response = fut.await?;
                    Ok::<_, crate::BoxError>((response, seen))
                }
            }
        })
        .map_response(|(mut response, seen): (http::Response<String>, u32)| {
            response.extensions_mut().insert(seen);
            response
        });
        let response = layer.layer(svc).oneshot(request()).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.extensions().get::<u32>(), Some(&1));
        assert_eq!(response.extensions().get::<Attempts>().unwrap().count(), 2);
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_dropped_mid_attempt_drops_the_attempt() {
        let (calls, dropped) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
        let svc = service(|_| None, Arc::clone(&calls), Arc::clone(&dropped));
        let mut retry = RetryLayer::new().layer(svc);
        let ready = ServiceExt::<http::Request<String>>::ready(&mut retry)
            .await
            .unwrap();
        let call = ready.call(request());
        let outcome = tokio::time::timeout(Duration::from_millis(10), call).await;
        assert!(outcome.is_err(), "the attempt hangs");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(dropped.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_call_is_made_outside_a_runtime() {
        // The first attempt is sent in `call`: nothing there needs the
        // runtime (its timer is set at its first poll).
        let (calls, dropped) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
        let svc = service(
            |_| Some(StatusCode::OK),
            Arc::clone(&calls),
            Arc::clone(&dropped),
        );
        let mut retry = RetryLayer::new().layer(svc);
        let call = Service::call(&mut retry, request());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        let response = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
            .block_on(call)
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
}
