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
use super::policy::{AttemptOutcome, Reason, RetryMode};
use super::{Config, observe};
use crate::balance::Avoid;
use crate::request::{BalancedRequest, BalancedResponse, Prepared, ReplayableRequest};
use crate::{BoxError, Endpoint, Error};

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
    latency: Duration,
}

/// Waits for an attempt, within the per-attempt timeout if there is one.
async fn attempt<F, R, E>(
    future: F,
    timeout: Option<Duration>,
    noted: Option<Endpoint>,
    service: &Arc<str>,
) -> Finished<R>
where
    F: Future<Output = Result<R, E>>,
    R: BalancedResponse,
    E: Into<BoxError>,
{
    let started = Instant::now();
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
    let endpoint = match &result {
        Ok(response) => response.extensions().get::<Endpoint>().cloned(),
        Err(error) => error.endpoint().cloned(),
    };
    Finished {
        result,
        recorded: noted.is_some(),
        endpoint: endpoint.or(noted),
        latency: started.elapsed(),
    }
}

/// Readies the inner service (unless `call` already did) and sends
/// `request`, steering it away from `avoid`. Returns the response future
/// and the endpoint noted for it, if any.
async fn dispatch<S, R>(
    svc: &mut S,
    fresh: &mut bool,
    mut request: R,
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
    if avoid.is_empty() {
        return Ok(observe::watch(|| svc.call(request)));
    }
    if let Some(extensions) = request.extensions_mut() {
        let mut merged = extensions.get::<Avoid>().cloned().unwrap_or_default();
        for endpoint in avoid.iter() {
            merged.insert(endpoint.clone());
        }
        extensions.insert(merged);
        return Ok(observe::watch(|| svc.call(request)));
    }
    let avoid = avoid.clone();
    Ok(observe::watch(|| avoid.scope(|| svc.call(request))))
}

/// Runs one call: the first attempt, and the retries and hedge the
/// configuration, the policy and the budget allow.
pub(crate) async fn run<S, Req>(
    config: Arc<Config>,
    mut svc: S,
    request: Req,
    mode: RetryMode,
    service: Option<Arc<ServiceState>>,
) -> Result<S::Response, Error>
where
    Req: ReplayableRequest,
    S: Service<Req::Sent>,
    S::Response: BalancedResponse,
    S::Error: Into<BoxError>,
{
    let Some(service) = service else {
        // No host to name a service: nothing to balance or budget. The
        // inner service decides what to make of it.
        let mut response = svc.call(request.once()).await.map_err(into_error)?;
        let mut attempts = Attempts::default();
        attempts.sent(false);
        response.extensions_mut().insert(attempts);
        return Ok(response);
    };
    service.track.deposit();
    let deadline = config.deadline.map(|d| Instant::now() + d);
    let idempotent = mode == RetryMode::Idempotent || config.policy.is_idempotent(request.method());
    let hedge = config.hedge.filter(|_| idempotent);
    let driver = Driver {
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
        return driver.single(request.once()).await;
    }
    let prepared = match request.prepare(config.replay_limit).await {
        Ok(prepared) => prepared,
        Err(source) => {
            return Err(Error::Body {
                service: driver.service.name.clone(),
                source,
            });
        }
    };
    driver.run::<Req>(prepared, hedge).await
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

    /// One attempt, no retry: for requests that opted out, and a layer
    /// configured for one attempt.
    async fn single<R>(mut self, request: R) -> Result<S::Response, Error>
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
        let finished = attempt(future, timeout, noted, &self.service.name);
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
        prepared: Prepared<Req::Sent, Req::Template>,
        hedge: Option<super::Hedge>,
    ) -> Result<S::Response, Error>
    where
        Req: ReplayableRequest,
        S: Service<Req::Sent>,
        S::Response: BalancedResponse,
        S::Error: Into<BoxError>,
    {
        let (template, mut first, replayable) = match prepared {
            Prepared::Replayable(template) => (template, None, Ok(())),
            Prepared::Once {
                request,
                view,
                reason,
            } => (view, Some(request), Err(reason)),
        };
        let mut last_error: Option<Error> = None;
        loop {
            let request = match first.take().or_else(|| Req::replay(&template)) {
                Some(request) => request,
                None => {
                    return Err(Error::Body {
                        service: self.service.name.clone(),
                        source: "the request could not be copied for another attempt".into(),
                    });
                }
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

            // Worth retrying: may we?
            let mut stop = match replayable {
                Err(why) => Some(NotRetried::NotReplayable(why)),
                Ok(()) if self.attempts.count() >= self.config.max_attempts => {
                    Some(NotRetried::AttemptsExhausted)
                }
                Ok(()) => None,
            };
            let mut wait = self.config.backoff.delay(self.attempts.retries() + 1);
            if let (None, Ok(response)) = (stop, &finished.result) {
                if let Some(asked) = retry_after(response.headers(), SystemTime::now()) {
                    if asked > self.config.max_retry_after {
                        stop = Some(NotRetried::RetryAfterTooLong(asked));
                    } else {
                        wait = wait.max(asked);
                    }
                }
            }
            if let (None, Some(deadline)) = (stop, self.deadline) {
                if Instant::now() + wait >= deadline {
                    stop = Some(NotRetried::Deadline);
                }
            }
            if stop.is_none() && !self.service.track.withdraw() {
                stop = Some(NotRetried::BudgetExhausted);
            }
            if let Some(why) = stop {
                return self.give_up(finished.result, why);
            }
            tracing::debug!(
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
        let primary = attempt(future, timeout, noted.clone(), &service.name);
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
            tracing::debug!(service = %service.name, "no hedge: the retry budget is spent");
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
            service = %service.name,
            attempt = attempts.count(),
            slow_endpoint = noted.as_ref().map_or("unknown", Endpoint::key),
            delay_ms = delay.as_secs_f64() * 1e3,
            "hedging"
        );
        let name = service.name.clone();
        let hedge = async move {
            let (future, noted) = dispatch(svc, fresh, copy, &hedge_avoid).await.ok()?;
            Some(attempt(future, timeout, noted, &name).await)
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
            if let Some(latency) = &service.track.latency {
                latency.record(finished.latency);
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
