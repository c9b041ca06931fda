//! One call through the retry layer: attempts, hedge, backoff, verdicts.

use std::fmt;
use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;
use tower_service::Service;

use super::attempts::{Attempts, NotRetried};
use super::backoff::retry_after;
use super::budget::ServiceState;
use super::not_replayable::NotReplayable;
use super::policy::{AttemptOutcome, Reason, RetryMode};
use super::replayable::{Prepared, ReplayableRequest};
use super::{Config, observe};
use crate::balance::Avoid;
use crate::request::{BalancedRequest, BalancedResponse};
use crate::{BoxError, Endpoint, Error};

/// The response future of [`Retry`](super::Retry).
pub struct RetryFuture<R> {
    inner: Pin<Box<dyn Future<Output = Result<R, Error>> + Send + 'static>>,
    /// In effect while polling, for the balancer below (see `observe`).
    pub(crate) attempt_timeout: Option<Duration>,
}

impl<R> RetryFuture<R> {
    pub(crate) fn new(inner: impl Future<Output = Result<R, Error>> + Send + 'static) -> Self {
        Self {
            inner: Box::pin(inner),
            attempt_timeout: None,
        }
    }
}

impl<R> Future for RetryFuture<R> {
    type Output = Result<R, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let timeout = self.attempt_timeout;
        observe::with_attempt_timeout(timeout, || self.inner.as_mut().poll(cx))
    }
}

impl<R> fmt::Debug for RetryFuture<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryFuture").finish_non_exhaustive()
    }
}

/// The crate's error as it is, anything else as the client's.
fn into_error(error: impl Into<BoxError>) -> Error {
    match error.into().downcast::<Error>() {
        Ok(error) => *error,
        Err(source) => Error::Inner {
            service: None,
            endpoint: None,
            source,
        },
    }
}

/// One attempt, finished.
struct Finished<R> {
    result: Result<R, Error>,
    endpoint: Option<Endpoint>,
    /// The endpoint was recorded in the attempts when it was dispatched.
    recorded: bool,
    /// Measured when the service's latency is tracked (percentile hedging).
    latency: Option<Duration>,
}

/// Waits for an attempt, within the per-attempt timeout if there is one.
async fn attempt<F, R, E>(
    future: F,
    timeout: Option<Duration>,
    noted: Option<Endpoint>,
    service: &Arc<str>,
    measure: bool,
) -> Finished<R>
where
    F: Future<Output = Result<R, E>>,
    R: BalancedResponse,
    E: Into<BoxError>,
{
    let started = measure.then(Instant::now);
    let result = match timeout {
        None => future.await.map_err(into_error),
        Some(timeout) => match tokio::time::timeout(timeout, future).await {
            Ok(result) => result.map_err(into_error),
            Err(_) => Err(Error::AttemptTimeout {
                service: service.clone(),
                endpoint: noted.clone(),
                timeout,
            }),
        },
    };
    Finished::new(result, noted, started)
}

impl<R: BalancedResponse> Finished<R> {
    fn new(result: Result<R, Error>, noted: Option<Endpoint>, started: Option<Instant>) -> Self {
        let endpoint = match &result {
            Ok(response) => response.extensions().get::<Endpoint>().cloned(),
            Err(error) => error.endpoint().cloned(),
        };
        Finished {
            result,
            recorded: noted.is_some(),
            endpoint: endpoint.or(noted),
            latency: started.map(|s| s.elapsed()),
        }
    }
}

/// Readies the inner service (unless `call` already did) and sends
/// `request`, steering it away from `avoid`. Returns the response future
/// and the endpoint noted for it, if any.
async fn dispatch<S, R>(
    svc: &mut S,
    fresh: &mut bool,
    request: R,
    avoid: &Avoid,
) -> Result<(S::Future, Option<Endpoint>), Error>
where
    S: Service<R>,
    S::Error: Into<BoxError>,
    R: BalancedRequest,
{
    if !std::mem::take(fresh) {
        poll_fn(|cx| svc.poll_ready(cx)).await.map_err(into_error)?;
    }
    Ok(send(svc, request, avoid))
}

/// Sends `request` on a ready service, steering it away from `avoid`.
fn send<S, R>(svc: &mut S, mut request: R, avoid: &Avoid) -> (S::Future, Option<Endpoint>)
where
    S: Service<R>,
    R: BalancedRequest,
{
    if avoid.is_empty() {
        return observe::watch(|| svc.call(request));
    }
    if let Some(extensions) = request.extensions_mut() {
        let mut merged = extensions.get::<Avoid>().cloned().unwrap_or_default();
        for endpoint in avoid.iter() {
            merged.insert(endpoint.clone());
        }
        extensions.insert(merged);
        return observe::watch(|| svc.call(request));
    }
    let avoid = avoid.clone();
    observe::watch(|| avoid.scope(|| svc.call(request)))
}

/// Starts one call: the first attempt, and the retries and hedge the
/// configuration, the policy and the budget allow.
///
/// The work that needs no waiting is done here, before the future exists,
/// and the future is kept small: the common case (no timer configured,
/// the first attempt answers) runs in it; retries, hedges and timers run
/// in a boxed future of their own. A future is moved (boxed) whole, so its
/// size is paid on every call.
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
    service.track.deposit();
    let deadline = config.deadline.map(|d| Instant::now() + d);
    let idempotent = mode == RetryMode::Idempotent || config.policy.is_idempotent(request.method());
    let hedge = config.hedge.filter(|_| idempotent);
    let timed = deadline.is_some() || config.attempt_timeout.is_some();
    let mut driver = Driver {
        config: config.clone(),
        service,
        svc,
        fresh: true,
        deadline,
        idempotent,
        attempts: Attempts::default(),
        avoid: Avoid::new(),
        window: None,
    };
    if mode == RetryMode::Off || (config.max_attempts <= 1 && hedge.is_none()) {
        let request = request.once();
        if timed {
            return RetryFuture::new(driver.single_timed(request));
        }
        let (future, noted) = send(&mut driver.svc, request, &driver.avoid);
        driver.fresh = false;
        driver.attempts.sent(false);
        driver.attempts.record(noted.clone());
        return RetryFuture::new(async move {
            let finished = Finished::new(future.await.map_err(into_error), noted, None);
            if !finished.recorded {
                driver.attempts.record(finished.endpoint);
            }
            driver.done(finished.result)
        });
    }
    let prepare = Box::pin(request.prepare(config.replay_limit));
    RetryFuture::new(driver.first::<Req>(prepare, hedge, timed))
}

/// A prepared request: the template attempts are copied from (or the view
/// of a request sent once), the request to send once, and why not more.
type Split<Req> = (
    <Req as ReplayableRequest>::Template,
    Option<<Req as ReplayableRequest>::Sent>,
    Result<(), NotReplayable>,
);

fn split<Req: ReplayableRequest>(prepared: Prepared<Req::Sent, Req::Template>) -> Split<Req> {
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
struct Driver<S> {
    config: Arc<Config>,
    service: Arc<ServiceState>,
    svc: S,
    /// The inner service was readied by `poll_ready` and not yet called.
    fresh: bool,
    deadline: Option<Instant>,
    idempotent: bool,
    attempts: Attempts,
    avoid: Avoid,
    /// Once every endpoint has been tried: how many of the most recent to
    /// keep avoiding (all but one).
    window: Option<usize>,
}

impl<S> Driver<S> {
    /// The call once its request is prepared: the first attempt here, the
    /// rest in [`run`](Self::run), boxed.
    async fn first<Req>(
        mut self,
        prepare: Pin<
            Box<impl Future<Output = Result<Prepared<Req::Sent, Req::Template>, BoxError>>>,
        >,
        hedge: Option<super::Hedge>,
        timed: bool,
    ) -> Result<S::Response, Error>
    where
        Req: ReplayableRequest,
        S: Service<Req::Sent>,
        S::Response: BalancedResponse,
        S::Error: Into<BoxError>,
    {
        let (template, first, replayable) = match prepare.await {
            Ok(prepared) => split::<Req>(prepared),
            Err(source) => {
                return Err(Error::Body {
                    service: self.service.name.clone(),
                    source,
                });
            }
        };
        if timed || hedge.is_some() {
            // Boxed in its own statement: a temporary in an `.await`
            // expression would be kept in this future's state.
            let run = Box::pin(self.run::<Req>(template, first, replayable, hedge, None));
            return run.await;
        }
        let Some(request) = first.or_else(|| Req::replay(&template)) else {
            return Err(self.uncopyable());
        };
        let (future, noted) = send(&mut self.svc, request, &self.avoid);
        self.fresh = false;
        self.attempts.sent(false);
        self.attempts.record(noted.clone());
        let started = self.service.track.latency.is_some().then(Instant::now);
        let finished = Finished::new(future.await.map_err(into_error), noted, started);
        match self.judge(&template, &finished) {
            None => self.done(finished.result),
            Some(reason) => {
                let pending = Some((finished, reason));
                let run = Box::pin(self.run::<Req>(template, None, replayable, hedge, pending));
                run.await
            }
        }
    }

    /// Judges a finished attempt (see [`conclude`]).
    fn judge<R: BalancedResponse, T: BalancedRequest>(
        &mut self,
        template: &T,
        finished: &Finished<R>,
    ) -> Option<Reason> {
        conclude(
            &self.config,
            &self.service,
            self.idempotent,
            &mut self.attempts,
            &mut self.avoid,
            &mut self.window,
            template,
            finished,
        )
    }

    /// The request could not be copied for an attempt: not expected of
    /// the built-in request types.
    fn uncopyable(&self) -> Error {
        Error::Body {
            service: self.service.name.clone(),
            source: "the request could not be copied for another attempt".into(),
        }
    }

    /// The response marked with the attempts, or the error as it is.
    fn done<R: BalancedResponse>(self, result: Result<R, Error>) -> Result<R, Error> {
        let mut response = result?;
        response.extensions_mut().insert(self.attempts);
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
            NotRetried::Deadline => Error::DeadlineExceeded {
                service,
                deadline: self.config.deadline.unwrap_or_default(),
                attempts,
                endpoints: self.attempts.into_endpoints(),
                source: Some(Box::new(error)),
            },
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

    /// The deadline passed while an attempt was in flight.
    fn deadline_passed(self, last: Option<Error>) -> Error {
        tracing::debug!(
            target: "tower_lb::retry",
            service = %self.service.name,
            attempts = self.attempts.count(),
            "deadline passed during an attempt"
        );
        Error::DeadlineExceeded {
            service: self.service.name.clone(),
            deadline: self.config.deadline.unwrap_or_default(),
            attempts: self.attempts.count(),
            endpoints: self.attempts.into_endpoints(),
            source: last.map(Box::new),
        }
    }

    /// One attempt, no retry, within the timeout and deadline: for requests
    /// that opted out, and a layer configured for one attempt.
    async fn single_timed<R>(mut self, request: R) -> Result<S::Response, Error>
    where
        S: Service<R>,
        S::Response: BalancedResponse,
        S::Error: Into<BoxError>,
        R: BalancedRequest,
    {
        let (future, noted) =
            match dispatch(&mut self.svc, &mut self.fresh, request, &self.avoid).await {
                Ok(sent) => sent,
                Err(error) => return Err(error),
            };
        self.attempts.sent(false);
        self.attempts.record(noted.clone());
        let timeout = self.config.attempt_timeout;
        let finished = attempt(future, timeout, noted, &self.service.name, false);
        let finished = match self.deadline {
            None => finished.await,
            Some(deadline) => match tokio::time::timeout_at(deadline, finished).await {
                Ok(finished) => finished,
                Err(_) => return Err(self.deadline_passed(None)),
            },
        };
        if !finished.recorded {
            self.attempts.record(finished.endpoint);
        }
        self.done(finished.result)
    }

    /// The retry loop.
    async fn run<Req>(
        mut self,
        template: Req::Template,
        mut first: Option<Req::Sent>,
        replayable: Result<(), NotReplayable>,
        hedge: Option<super::Hedge>,
        mut pending: Option<(Finished<S::Response>, Reason)>,
    ) -> Result<S::Response, Error>
    where
        Req: ReplayableRequest,
        S: Service<Req::Sent>,
        S::Response: BalancedResponse,
        S::Error: Into<BoxError>,
    {
        let mut last_error: Option<Error> = None;
        loop {
            let (finished, reason) = match pending.take() {
                Some(pending) => pending,
                None => {
                    let Some(request) = first.take().or_else(|| Req::replay(&template)) else {
                        return Err(self.uncopyable());
                    };
                    // A hedge needs a copy, an attempt to spare, and none sent yet.
                    let hedge_delay = hedge
                        .filter(|_| {
                            replayable.is_ok()
                                && self.attempts.hedges() == 0
                                && self.attempts.count() + 2 <= self.config.max_attempts
                        })
                        .and_then(|h| h.delay(self.service.track.latency.as_ref()));
                    let deadline = self.deadline;
                    let round = self.round::<Req>(request, &template, hedge_delay);
                    let round = match deadline {
                        None => round.await,
                        Some(deadline) => match tokio::time::timeout_at(deadline, round).await {
                            Ok(round) => round,
                            Err(_) => return Err(self.deadline_passed(last_error)),
                        },
                    };
                    let (finished, reason) = round?;
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
            let mut wait = self.config.backoff.delay(self.attempts.retries() + 1);
            if let (None, Ok(response)) = (stop, &finished.result)
                && let Some(asked) = retry_after(response.headers(), SystemTime::now())
            {
                if asked > self.config.max_retry_after {
                    stop = Some(NotRetried::RetryAfterTooLong(asked));
                } else {
                    wait = wait.max(asked);
                }
            }
            if let (None, Some(deadline)) = (stop, self.deadline)
                && Instant::now() + wait >= deadline
            {
                stop = Some(NotRetried::Deadline);
            }
            if stop.is_none() && !self.service.track.withdraw() {
                stop = Some(NotRetried::BudgetExhausted);
            }
            if let Some(why) = stop {
                return self.give_up(finished.result, why);
            }
            tracing::debug!(
                target: "tower_lb::retry",
                service = %self.service.name,
                attempt = self.attempts.count(),
                endpoint = finished.endpoint.as_ref().map_or("unknown", Endpoint::key),
                reason = %reason,
                wait_ms = wait.as_secs_f64() * 1e3,
                "retrying"
            );
            if let Err(error) = finished.result {
                last_error = Some(error);
            }
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
        }
    }

    /// One round: an attempt, and its hedge if it is slow. Returns the
    /// outcome that decides what comes next, with the reason to retry it
    /// (`None`: return it).
    async fn round<Req>(
        &mut self,
        request: Req::Sent,
        template: &Req::Template,
        hedge_delay: Option<Duration>,
    ) -> Result<(Finished<S::Response>, Option<Reason>), Error>
    where
        Req: ReplayableRequest,
        S: Service<Req::Sent>,
        S::Response: BalancedResponse,
        S::Error: Into<BoxError>,
    {
        let timeout = self.config.attempt_timeout;
        let (future, noted) =
            dispatch(&mut self.svc, &mut self.fresh, request, &self.avoid).await?;
        self.attempts.sent(false);
        self.attempts.record(noted.clone());
        let Driver {
            config,
            service,
            svc,
            fresh,
            idempotent,
            attempts,
            avoid,
            window,
            ..
        } = self;
        let idempotent = *idempotent;
        macro_rules! judge {
            ($finished:expr) => {
                conclude(
                    config, service, idempotent, attempts, avoid, window, template, $finished,
                )
            };
        }
        let measure = service.track.latency.is_some();
        let primary = attempt(future, timeout, noted.clone(), &service.name, measure);
        let Some(delay) = hedge_delay else {
            let finished = primary.await;
            let reason = judge!(&finished);
            return Ok((finished, reason));
        };
        let mut primary = pin!(primary);
        tokio::select! {
            biased;
            finished = &mut primary => {
                let reason = judge!(&finished);
                return Ok((finished, reason));
            }
            () = tokio::time::sleep(delay) => {}
        }

        // Slow: hedge, if the budget allows, away from every endpoint tried.
        let copy = if service.track.withdraw() {
            Req::replay(template)
        } else {
            tracing::debug!(
                target: "tower_lb::retry",
                service = %service.name,
                "no hedge: the retry budget is spent"
            );
            None
        };
        let Some(copy) = copy else {
            let finished = primary.await;
            let reason = judge!(&finished);
            return Ok((finished, reason));
        };
        let mut hedge_avoid = avoid.clone();
        if let Some(endpoint) = &noted {
            hedge_avoid.insert(endpoint.clone());
        }
        attempts.sent(true);
        tracing::debug!(
            target: "tower_lb::retry",
            service = %service.name,
            attempt = attempts.count(),
            slow_endpoint = noted.as_ref().map_or("unknown", Endpoint::key),
            delay_ms = delay.as_secs_f64() * 1e3,
            "hedging"
        );
        let name = service.name.clone();
        let hedge = async move {
            let (future, noted) = dispatch(svc, fresh, copy, &hedge_avoid).await.ok()?;
            Some(attempt(future, timeout, noted, &name, measure).await)
        };
        let mut hedge = pin!(hedge);
        // The first good answer wins; the other attempt is dropped
        // (cancelled). When both fail, the later failure decides.
        let mut primary_done: Option<(Finished<S::Response>, Option<Reason>)> = None;
        let mut hedge_done = false;
        loop {
            tokio::select! {
                finished = &mut primary, if primary_done.is_none() => {
                    let reason = judge!(&finished);
                    if reason.is_none() || hedge_done {
                        return Ok((finished, reason));
                    }
                    primary_done = Some((finished, reason));
                }
                finished = &mut hedge, if !hedge_done => {
                    hedge_done = true;
                    let Some(finished) = finished else {
                        // The hedge could not be sent: the primary decides.
                        match primary_done.take() {
                            Some(done) => return Ok(done),
                            None => continue,
                        }
                    };
                    let reason = judge!(&finished);
                    if reason.is_none() || primary_done.is_some() {
                        return Ok((finished, reason));
                    }
                }
                else => break,
            }
        }
        // Not reached: every way out of both attempts returns above.
        primary_done.map(Ok).unwrap_or_else(|| {
            Err(Error::Config(
                "retry: a hedged round ended without an outcome".to_string(),
            ))
        })
    }
}

/// Records a finished attempt and judges it: the reason to retry, or
/// `None` to return it. A retry avoids the endpoint.
#[allow(clippy::too_many_arguments)]
fn conclude<R: BalancedResponse, T: BalancedRequest>(
    config: &Config,
    service: &ServiceState,
    idempotent: bool,
    attempts: &mut Attempts,
    avoid: &mut Avoid,
    window: &mut Option<usize>,
    template: &T,
    finished: &Finished<R>,
) -> Option<Reason> {
    if !finished.recorded {
        attempts.record(finished.endpoint.clone());
    }
    let outcome = match &finished.result {
        Ok(response) => {
            if let (Some(window), Some(latency)) = (&service.track.latency, finished.latency) {
                window.record(latency);
            }
            AttemptOutcome::Response {
                status: response.status(),
                headers: response.headers(),
            }
        }
        Err(error) => AttemptOutcome::Error(error),
    };
    let reason = config.policy.verdict(template, idempotent, &outcome);
    if let (Some(_), Some(endpoint)) = (reason, &finished.endpoint) {
        steer(attempts.endpoints(), avoid, window, endpoint);
    }
    reason
}

/// Updates the endpoints the next attempt avoids after one failed at
/// `endpoint` (already last in `tried`).
///
/// Every endpoint tried is avoided until the balancer sends an attempt to
/// an avoided one, which it does only when every endpoint is avoided:
/// then all `n` have been tried, and from there on the `n - 1` most recent
/// are avoided, so that attempts cycle through the endpoints, the least
/// recently tried first, and never repeat the last.
fn steer(tried: &[Endpoint], avoid: &mut Avoid, window: &mut Option<usize>, endpoint: &Endpoint) {
    if window.is_none() && avoid.contains(endpoint) {
        *window = Some(avoid.len().saturating_sub(1));
    }
    let Some(keep) = *window else {
        avoid.insert(endpoint.clone());
        return;
    };
    let mut recent = Avoid::new();
    for endpoint in tried.iter().rev() {
        if recent.len() >= keep {
            break;
        }
        recent.insert(endpoint.clone());
    }
    *avoid = recent;
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use super::*;
    use crate::retry::{ReplayBody, RetryLayer};

    /// The future is boxed and moved whole on every call: keep the common
    /// path's state small (the retry loop, hedging and timers are boxed
    /// apart).
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
        let size = std::mem::size_of_val(&*future.inner);
        assert!(size <= 1024, "{size} bytes");
    }

    #[test]
    fn steering_cycles_once_every_endpoint_was_tried() {
        let [a, b, c] =
            ["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"].map(|e| Endpoint::new(e).unwrap());
        let mut tried = Vec::new();
        let mut avoid = Avoid::new();
        let mut window = None;
        for endpoint in [&a, &b, &c] {
            tried.push(endpoint.clone());
            steer(&tried, &mut avoid, &mut window, endpoint);
        }
        assert_eq!(avoid.len(), 3);
        assert_eq!(window, None);
        // All avoided, so the balancer went back to `a`: all three exist.
        tried.push(a.clone());
        steer(&tried, &mut avoid, &mut window, &a);
        assert_eq!(window, Some(2));
        // The two most recent are avoided: only `b` is left.
        assert!(avoid.contains(&a) && avoid.contains(&c) && !avoid.contains(&b));
        tried.push(b.clone());
        steer(&tried, &mut avoid, &mut window, &b);
        assert!(avoid.contains(&a) && avoid.contains(&b) && !avoid.contains(&c));
    }
}
