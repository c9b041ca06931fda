//! One call through the retry layer: the attempts, the verdict on each,
//! and whether another may follow.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;
use tower_service::Service;

use super::Config;
use super::attempts::{Attempts, NotRetried};
use super::backoff::retry_after;
use super::budget::ServiceState;
use super::first::First;
use super::future::{RetryFuture, into_error};
use super::hedge::Hedge;
use super::not_replayable::NotReplayable;
use super::policy::{AttemptOutcome, Reason, RetryMode};
use super::replayable::{Prepared, ReplayableRequest};
use super::send::{Finished, send};
use super::spans;
use super::steer::steer;
use crate::balance::Avoid;
use crate::classify::{Classify, DefaultClassifier, Retryable, Verdict};
use crate::request::{BalancedRequest, BalancedResponse};
use crate::{BoxError, Endpoint, Error};

/// Starts one call: the first attempt, and the retries and hedge the
/// configuration, the policy and the budget allow.
// Inlined into `Retry::call`, its only caller: the request is not copied
// into a frame of its own.
#[inline(always)]
pub(crate) fn start<S, Req>(
    config: &Arc<Config>,
    mut svc: S,
    request: Req,
    mode: RetryMode,
    service: Option<Arc<ServiceState>>,
) -> RetryFuture<S::Response>
where
    Req: ReplayableRequest,
    S: Service<Req::Sent> + Send + 'static,
    S::Response: BalancedResponse,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    let Some(service) = service else {
        // No host to name a service: nothing to balance or budget. The
        // inner service decides what to make of it.
        let future = svc.call(request.once());
        return RetryFuture::new(async move {
            let mut response = future.await.map_err(into_error)?;
            let mut attempts = Attempts::default();
            attempts.sent(false);
            response.extensions_mut().insert(attempts);
            Ok(response)
        });
    };
    let now = Instant::now();
    service.track.deposit(now);
    let span = spans::call_span(&request, &service.name);
    let (name, method) = (service.name.clone(), request.method().clone());
    let idempotent = mode == RetryMode::Idempotent || config.policy.is_idempotent(request.method());
    let hedge = config.hedge.filter(|_| idempotent);
    let once = mode == RetryMode::Off || (config.max_attempts <= 1 && hedge.is_none());
    let call = Call {
        // A deadline past the clock's range is no deadline.
        deadline: config.deadline.and_then(|d| now.checked_add(d)),
        started: Some(now),
        config: config.clone(),
        service,
        svc,
        fresh: true,
        idempotent,
        attempts: Attempts::default(),
        avoid: Avoid::new(),
        window: None,
        span: span.clone(),
    };
    let trace = spans::CallTrace::new(span, name, method);
    if once {
        return RetryFuture::traced(call.once(request.once()), trace);
    }
    let limit = config.replay_limit;
    let prepared = match request.prepare_now(limit) {
        Ok(prepared) => prepared,
        Err(request) => {
            // A body to read: most are in memory already (a `String`, a
            // `Full`), and one poll reads them. Polled here with a waker
            // that does nothing; the call's future polls it again, with
            // the task's waker, if it is not done (boxed: a buffering
            // body's future is large). A body whose poll needs a tokio
            // runtime (a timer in a stream) therefore needs `call` made
            // inside one; an in-memory body does not.
            let mut preparing = Box::pin(request.prepare(limit));
            let polled = trace.span.in_scope(|| {
                let mut cx = Context::from_waker(Waker::noop());
                preparing.as_mut().poll(&mut cx)
            });
            match polled {
                Poll::Ready(Ok(prepared)) => prepared,
                Poll::Ready(Err(source)) => {
                    let error = call.body_error(source);
                    return RetryFuture::traced(std::future::ready(Err(error)), trace);
                }
                Poll::Pending => {
                    return RetryFuture::traced(call.run::<Req, _>(preparing, hedge), trace);
                }
            }
        }
    };
    if hedge.is_some() {
        let (template, first, replayable) = split(prepared);
        return RetryFuture::traced(
            call.rounds::<Req>(template, first, replayable, hedge, None),
            trace,
        );
    }
    // No hedge: the first attempt is sent now, and the general loop is
    // built only if it is worth retrying.
    RetryFuture::traced_boxed(First::<S, Req, _, _, _>::start(call, prepared), trace)
}

/// What the attempts are copied from, the request for the first when it
/// cannot be copied, and whether it can be.
#[allow(clippy::type_complexity)]
pub(super) fn split<Sent, Template>(
    prepared: Prepared<Sent, Template>,
) -> (Template, Option<Sent>, Result<(), NotReplayable>) {
    match prepared {
        Prepared::Replayable(template) => (template, None, Ok(())),
        Prepared::Once {
            request,
            view,
            reason,
        } => (view, Some(request), Err(reason)),
    }
}

/// The state of one call.
pub(super) struct Call<S> {
    pub(super) config: Arc<Config>,
    pub(super) service: Arc<ServiceState>,
    pub(super) svc: S,
    /// The inner service was readied by `poll_ready` and not yet called.
    pub(super) fresh: bool,
    /// The call's deadline.
    pub(super) deadline: Option<Instant>,
    /// When the call started, until its first attempt takes it as its own
    /// start: the first attempt is sent at once, and one clock reading
    /// serves both.
    pub(super) started: Option<Instant>,
    pub(super) idempotent: bool,
    pub(super) attempts: Attempts,
    /// The endpoints the next attempt avoids.
    pub(super) avoid: Avoid,
    /// Once every endpoint has been tried: how many of the most recent to
    /// keep avoiding (all but one).
    pub(super) window: Option<usize>,
    /// The call's span, the parent of its attempts'.
    pub(super) span: tracing::Span,
}

impl<S> Call<S> {
    /// When an attempt sent `now` is abandoned: its own timeout, or the
    /// call's deadline if that comes first.
    pub(super) fn attempt_deadline(&self, now: Instant) -> Option<Instant> {
        let own = self.config.attempt_timeout.and_then(|t| now.checked_add(t));
        match (own, self.deadline) {
            (Some(own), Some(call)) => Some(own.min(call)),
            (own, call) => own.or(call),
        }
    }

    /// Sends `request` as the next attempt, away from `avoid`, and counts
    /// it.
    pub(super) async fn send<R>(
        &mut self,
        request: R,
        avoid: Avoid,
        hedge: bool,
    ) -> Result<super::send::InFlight<S::Future>, Error>
    where
        S: Service<R>,
        S::Error: Into<BoxError>,
        R: BalancedRequest,
    {
        self.ready::<R>().await?;
        Ok(self.send_now(request, avoid, hedge))
    }

    /// Readies the inner service for the next attempt; the first goes
    /// through the service `call` readied.
    pub(super) async fn ready<R>(&mut self) -> Result<(), Error>
    where
        S: Service<R>,
        S::Error: Into<BoxError>,
    {
        if std::mem::take(&mut self.fresh) {
            return Ok(());
        }
        super::send::ready::<S, R>(&mut self.svc).await
    }

    /// [`send`](Self::send) through a service already readied: a plain
    /// function, so that the hot path moves the request through no future
    /// of its own.
    // Inlined, as are `send`, `InFlight::finish`, `First::start` and
    // `RetryFuture::traced`: the attempt's future is returned by value
    // through each, and inlined it is copied fewer times on its way into
    // the call's box.
    #[inline(always)]
    pub(super) fn send_now<R>(
        &mut self,
        request: R,
        avoid: Avoid,
        hedge: bool,
    ) -> super::send::InFlight<S::Future>
    where
        S: Service<R>,
        R: BalancedRequest,
    {
        let number = self.attempts.count().saturating_add(1);
        // One clock reading for the deadline and the attempt's start.
        let now = self.started.take().unwrap_or_else(Instant::now);
        let deadline = self.attempt_deadline(now);
        let sent = send(
            &mut self.svc,
            request,
            number,
            avoid,
            deadline,
            now,
            &self.span,
        );
        self.attempts.sent(hedge);
        let kind = match (hedge, number) {
            (true, _) => "hedge",
            (false, 1) => "first",
            (false, _) => "retry",
        };
        crate::metrics::attempt_sent(&self.service.name, kind);
        sent
    }

    /// A call of one attempt: opted out of retries, or a layer configured
    /// for one.
    async fn once<R>(mut self, request: R) -> Result<S::Response, Error>
    where
        S: Service<R>,
        S::Response: BalancedResponse,
        S::Error: Into<BoxError>,
        R: BalancedRequest,
    {
        if !self.fresh {
            self.ready::<R>().await?;
        }
        self.fresh = false;
        let sent = self.send_now(request, Avoid::new(), false);
        let finished = sent
            .finish(self.service.name.clone(), self.config.buffer_responses)
            .await;
        self.attempts.record(finished.endpoint);
        if finished.result.is_err() && self.deadline_passed() {
            return Err(self.past_deadline(finished.result.err()));
        }
        self.done(finished.result)
    }

    /// The retry loop, once the request's body is read.
    async fn run<Req, P>(
        mut self,
        preparing: Pin<Box<P>>,
        hedge: Option<Hedge>,
    ) -> Result<S::Response, Error>
    where
        Req: ReplayableRequest,
        P: Future<Output = Result<Prepared<Req::Sent, Req::Template>, BoxError>>,
        S: Service<Req::Sent>,
        S::Response: BalancedResponse,
        S::Error: Into<BoxError>,
    {
        // Reading the body takes time: the first attempt reads the clock
        // again.
        self.started = None;
        let (template, first, replayable) = match preparing.await {
            Ok(prepared) => split(prepared),
            Err(source) => return Err(self.body_error(source)),
        };
        self.rounds::<Req>(template, first, replayable, hedge, None)
            .await
    }

    /// The request's body could not be read.
    fn body_error(&self, source: BoxError) -> Error {
        Error::Body {
            service: self.service.name.clone(),
            source,
        }
    }

    /// The retry loop from the first attempt on, or, with `judged`, from
    /// the verdict on a first attempt already made (by [`First`], which
    /// falls into this loop when that attempt is worth retrying).
    ///
    /// [`First`]: super::first::First
    pub(super) async fn rounds<Req>(
        mut self,
        template: Req::Template,
        mut first: Option<Req::Sent>,
        replayable: Result<(), NotReplayable>,
        hedge: Option<Hedge>,
        mut judged: Option<(Finished<S::Response>, Reason)>,
    ) -> Result<S::Response, Error>
    where
        Req: ReplayableRequest,
        S: Service<Req::Sent>,
        S::Response: BalancedResponse,
        S::Error: Into<BoxError>,
    {
        loop {
            let (finished, reason) = match judged.take() {
                Some(judged) => judged,
                None => {
                    let Some(request) = first.take().or_else(|| Req::replay(&template)) else {
                        return Err(self.uncopyable());
                    };
                    // A hedge needs a copy, an attempt to spare, and none sent yet.
                    let hedge_delay = hedge
                        .filter(|_| {
                            replayable.is_ok()
                                && self.attempts.hedges() == 0
                                && self.attempts.count().saturating_add(2)
                                    <= self.config.max_attempts
                        })
                        .and_then(|h| h.delay(self.service.track.latency.as_ref()));
                    let (finished, reason) = match hedge_delay {
                        None => {
                            if !self.fresh {
                                self.ready::<Req::Sent>().await?;
                            }
                            self.fresh = false;
                            let avoid = self.avoid.clone();
                            let sent = self.send_now(request, avoid, false);
                            let finished = sent
                                .finish(self.service.name.clone(), self.config.buffer_responses)
                                .await;
                            let reason = self.judge(&template, &finished);
                            (finished, reason)
                        }
                        Some(delay) => {
                            let round = Box::pin(self.hedged::<Req>(request, &template, delay));
                            round.await?
                        }
                    };
                    let Some(reason) = reason else {
                        return self.done(finished.result);
                    };
                    (finished, reason)
                }
            };

            // Worth retrying: may we?
            let mut stop = match replayable {
                Err(why) => Some(NotRetried::NotReplayable(why)),
                Ok(()) if self.attempts.count() >= self.config.max_attempts => {
                    Some(NotRetried::AttemptsExhausted)
                }
                Ok(()) => None,
            };
            let retry = self.attempts.retries().saturating_add(1);
            let mut wait = self
                .config
                .backoff
                .delay_from(retry, self.config.rng.as_deref());
            if let (None, Ok(response)) = (stop, &finished.result)
                && let Some(asked) = retry_after(response.headers(), SystemTime::now())
            {
                if asked > self.config.max_retry_after {
                    stop = Some(NotRetried::RetryAfterTooLong(asked));
                } else {
                    wait = wait.max(asked);
                }
            }
            if stop.is_none() && !self.starts_in_time(wait) {
                stop = Some(NotRetried::Deadline);
            }
            if stop.is_none() && !self.service.track.withdraw() {
                stop = Some(NotRetried::BudgetExhausted);
                crate::metrics::budget_refusal(&self.service.name);
            }
            if let Some(why) = stop {
                return self.give_up(finished.result, why);
            }
            crate::metrics::retry(&self.service.name, reason.to_string());
            tracing::debug!(
                target: "tower_lb::retry",
                service = %self.service.name,
                attempt = self.attempts.count(),
                endpoint = finished.endpoint.as_ref().map_or("unknown", Endpoint::key),
                reason = %reason,
                wait_ms = wait.as_secs_f64() * 1e3,
                "retrying"
            );
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
        }
    }

    /// Whether an attempt started after `wait` would start before the
    /// call's deadline.
    fn starts_in_time(&self, wait: Duration) -> bool {
        let Some(deadline) = self.deadline else {
            return true;
        };
        Instant::now()
            .checked_add(wait)
            .is_some_and(|start| start < deadline)
    }

    fn deadline_passed(&self) -> bool {
        self.deadline.is_some_and(|d| Instant::now() >= d)
    }

    /// Records a finished attempt and judges it: the reason to retry, or
    /// `None` to return it. A retry avoids the endpoint.
    pub(super) fn judge<T: BalancedRequest, R: BalancedResponse>(
        &mut self,
        template: &T,
        finished: &Finished<R>,
    ) -> Option<Reason> {
        self.attempts.record(finished.endpoint.clone());
        let outcome = match &finished.result {
            Ok(response) => {
                if let Some(window) = &self.service.track.latency {
                    window.record(finished.sent.elapsed());
                }
                AttemptOutcome::Response {
                    status: response.status(),
                    headers: response.headers(),
                }
            }
            Err(error) => AttemptOutcome::Error(error),
        };
        let retryable = retryable(finished);
        let reason = self
            .config
            .policy
            .verdict(template, self.idempotent, &outcome, retryable);
        if let (Some(_), Some(endpoint)) = (reason, &finished.endpoint) {
            steer(
                self.attempts.endpoints(),
                &mut self.avoid,
                &mut self.window,
                endpoint,
            );
        }
        reason
    }

    /// The request could not be copied for an attempt: not expected of
    /// the built-in request types.
    pub(super) fn uncopyable(&self) -> Error {
        Error::Body {
            service: self.service.name.clone(),
            source: "the request could not be copied for another attempt".into(),
        }
    }

    /// The response marked with the attempts, or the error as it is.
    pub(super) fn done<R: BalancedResponse>(
        mut self,
        result: Result<R, Error>,
    ) -> Result<R, Error> {
        self.mark(result)
    }

    /// [`done`](Self::done) with the call left in place, its attempts
    /// taken.
    pub(super) fn mark<R: BalancedResponse>(
        &mut self,
        result: Result<R, Error>,
    ) -> Result<R, Error> {
        let mut response = result?;
        response
            .extensions_mut()
            .insert(std::mem::take(&mut self.attempts));
        Ok(response)
    }

    /// The last outcome, marked with why it was not retried.
    fn give_up<R: BalancedResponse>(
        mut self,
        result: Result<R, Error>,
        why: NotRetried,
    ) -> Result<R, Error> {
        tracing::debug!(
            target: "tower_lb::retry",
            service = %self.service.name,
            attempts = self.attempts.count(),
            reason = %why,
            "not retried"
        );
        let error = match result {
            Ok(response) => {
                self.attempts.stop(why);
                return self.done(Ok(response));
            }
            Err(error) => error,
        };
        let service = self.service.name.clone();
        let attempts = self.attempts.count();
        Err(match why {
            NotRetried::BudgetExhausted => Error::BudgetExhausted {
                service,
                attempts,
                source: Box::new(error),
            },
            NotRetried::Deadline => return Err(self.past_deadline(Some(error))),
            NotRetried::NotReplayable(reason) => Error::BodyNotReplayable {
                service,
                reason,
                source: Box::new(error),
            },
            NotRetried::AttemptsExhausted if attempts > 1 => Error::RetriesExhausted {
                service,
                attempts,
                endpoints: self.attempts.into_endpoints(),
                source: Box::new(error),
            },
            _ => error,
        })
    }

    /// The deadline passed, during an attempt or before the next could
    /// start; `last` is the last attempt's error.
    fn past_deadline(self, last: Option<Error>) -> Error {
        tracing::debug!(
            target: "tower_lb::retry",
            service = %self.service.name,
            attempts = self.attempts.count(),
            "deadline passed"
        );
        Error::DeadlineExceeded {
            service: self.service.name.clone(),
            deadline: self.config.deadline.unwrap_or_default(),
            attempts: self.attempts.count(),
            endpoints: self.attempts.into_endpoints(),
            source: last.map(Box::new),
        }
    }
}

/// Whether the attempt's outcome is worth another, as the balancer's
/// classifier judged it (its verdict comes back in the attempt's context,
/// or rides in the error; a balancer of the caller's own may put it in the
/// response); the default rules for an outcome that carries none.
fn retryable<R: BalancedResponse>(finished: &Finished<R>) -> Retryable {
    let verdict = match &finished.result {
        Ok(response) => finished
            .verdict
            .or_else(|| response.extensions().get::<Verdict>().copied())
            .unwrap_or_else(|| {
                DefaultClassifier.classify_response(response.status(), response.headers())
            }),
        // The error's own verdict first: a body read inside the attempt
        // and cut short fails after a head the balancer judged good. Then
        // the context's, for an error a layer between wrapped.
        Err(error) => error
            .verdict()
            .or(finished.verdict)
            .unwrap_or_else(|| DefaultClassifier.classify_error(error)),
    };
    verdict.retry
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use super::*;
    use crate::retry::{ReplayBody, RetryLayer};

    /// The future is boxed and moved whole on every call: keep its state
    /// small (a hedged round and the body's buffering are boxed apart).
    /// The attempt's timer lives in it, since every call has one by
    /// default, and the call's span and metrics labels; 2,360 bytes when
    /// this bound was last raised.
    #[test]
    fn the_call_future_stays_small() {
        let svc = tower::service_fn(|_: http::Request<ReplayBody<String>>| {
            std::future::ready(Ok::<_, Infallible>(http::Response::new(String::new())))
        });
        let layer = RetryLayer::new();
        let request = http::Request::get("http://greet/")
            .body(String::new())
            .unwrap();
        let service = Some(layer.config.services.get("greet"));
        let future = start(&layer.config, svc, request, RetryMode::Policy, service);
        let size = future.state_size();
        assert!(size <= 2432, "{size} bytes");
    }
}
