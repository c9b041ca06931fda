//! Retries that know the balancer.
//!
//! [`RetryLayer`] sits above the [`LoadBalanceLayer`](crate::LoadBalanceLayer):
//! every attempt is a fresh pick, and the endpoints already tried are
//! [avoided](crate::balance::Avoid), so a failure is retried elsewhere. It
//! hides failures from the caller whenever a healthy instance can answer,
//! without turning an outage into a retry storm:
//!
//! - [`Policy`]: what may be retried. A connection never made, for any
//!   method; 502, 503, 504, 429 and timeouts for idempotent methods only.
//!   A request can opt out or in ([`RetryMode`]).
//! - Attempts: at most 3 in all by default, each to a different endpoint
//!   while there is one.
//! - [`Backoff`]: exponential with full jitter (25 ms doubling up to 1 s),
//!   and the server's `Retry-After` (up to a cap, 5 s by default).
//! - [`RetryBudget`]: retries limited to 20% of a service's recent
//!   requests plus 10 per second; past it the last outcome is returned,
//!   marked as not retried.
//! - Body replay: `http::Request` bodies of known length up to 64 KiB are
//!   buffered ([`ReplayBody`]); larger or streaming bodies are sent once.
//!   `reqwest::Request`s are copied with `try_clone`.
//! - Time: a per-attempt timeout (5 s) and an overall deadline (15 s) by
//!   default, each turned off only by an explicit call; no retry starts
//!   after the deadline. An abandoned attempt counts as a timeout against
//!   its endpoint.
//! - [`Hedge`]: optionally, a second copy of a slow idempotent request to
//!   another endpoint; the first good answer wins.
//! - Every response carries [`Attempts`]; each retry and hedge is a
//!   `tracing` event (target `tower_lb::retry`) with its reason and endpoint.
//!
//! ```no_run
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use tower::{ServiceBuilder, ServiceExt};
//! use tower_lb::{LoadBalanceLayer, discover::Fixed};
//! use tower_lb::retry::{Attempts, RetryLayer};
//!
//! let lb = LoadBalanceLayer::builder()
//!     .service("greet", Fixed::new(["127.0.0.1:5001", "127.0.0.1:5002", "127.0.0.1:5003"])?)
//!     .build()?;
//! let retry = RetryLayer::builder()
//!     .attempt_timeout(Duration::from_secs(2))
//!     .deadline(Duration::from_secs(5))
//!     .build()?;
//! let client = ServiceBuilder::new()
//!     .layer(retry) // above the balancer: each attempt is a new pick
//!     .layer(lb)
//!     .service(reqwest::Client::new());
//!
//! let request = reqwest::Request::new(http::Method::GET, "http://greet/api/greet?name=Alice".parse()?);
//! let response = client.oneshot(request).await?;
//! let attempts = response.extensions().get::<Attempts>().map_or(1, Attempts::count);
//! println!("{} after {attempts} attempt(s)", response.text().await?);
//! # Ok(()) }
//! ```
//!
//! Over an `http::Request<B>` client (hyper-util's, or any tower service),
//! attempts carry a [`ReplayBody<B>`]: the inner client serves
//! `http::Request<ReplayBody<B>>`.

mod attempts;
pub(crate) mod backoff;
mod budget;
mod call;
mod first;
mod future;
mod hedge;
mod hedged;
pub(crate) mod not_replayable;
mod policy;
pub(crate) mod replay;
pub(crate) mod replayable;
mod send;
mod spans;
mod steer;
mod tokens;

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tower_layer::Layer;
use tower_service::Service;

pub use attempts::{Attempts, NotRetried};
pub use backoff::Backoff;
pub use budget::RetryBudget;
pub use future::RetryFuture;
pub use hedge::Hedge;
pub use not_replayable::NotReplayable;
pub use policy::{AttemptOutcome, Policy, RetryMode};
pub use replay::{Buffered, DEFAULT_REPLAY_LIMIT, ReplayBody};

use crate::balance::rng::SeededRng;
use crate::request::BalancedResponse;
use crate::{BoxError, Error};
use budget::Services;
use replayable::ReplayableRequest;

/// The default most attempts per call, the first included.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;

/// The default longest `Retry-After` honoured: 5 s.
pub const DEFAULT_MAX_RETRY_AFTER: Duration = Duration::from_secs(5);

/// The default longest a whole call may take, retries and waits included:
/// 15 s, Envoy's default route timeout.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(15);

/// The default longest one attempt may take before it is abandoned (and,
/// for an idempotent request, retried elsewhere): 5 s, a third of the
/// default deadline, so that the default three attempts fit in it.
pub const DEFAULT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

/// Everything a call needs, shared by every clone of the layer's services.
pub(crate) struct Config {
    pub(crate) policy: Policy,
    pub(crate) max_attempts: u32,
    pub(crate) backoff: Backoff,
    pub(crate) max_retry_after: Duration,
    pub(crate) attempt_timeout: Option<Duration>,
    pub(crate) deadline: Option<Duration>,
    pub(crate) replay_limit: usize,
    pub(crate) hedge: Option<Hedge>,
    pub(crate) services: Services,
    /// The seeded sequence of the backoff jitter, when seeded.
    pub(crate) rng: Option<Arc<SeededRng>>,
    /// Read response bodies up to this many bytes inside the attempt.
    pub(crate) buffer_responses: Option<usize>,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("policy", &self.policy)
            .field("max_attempts", &self.max_attempts)
            .field("backoff", &self.backoff)
            .field("max_retry_after", &self.max_retry_after)
            .field("attempt_timeout", &self.attempt_timeout)
            .field("deadline", &self.deadline)
            .field("replay_limit", &self.replay_limit)
            .field("hedge", &self.hedge)
            .field("services", &self.services)
            .field("seeded", &self.rng.is_some())
            .field("buffer_responses", &self.buffer_responses)
            .finish()
    }
}

/// A [`Layer`] that retries failed requests, each attempt a fresh pick
/// that avoids the endpoints already tried. Put it above the
/// [`LoadBalanceLayer`](crate::LoadBalanceLayer); see the
/// [module docs](self) for what it does.
///
/// Every service made from one layer (and every clone of them) shares its
/// retry budgets and latency statistics.
///
/// ```
/// use tower::ServiceBuilder;
/// use tower_lb::{LoadBalanceLayer, discover::Fixed, retry::RetryLayer};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let client = ServiceBuilder::new()
///     .layer(RetryLayer::new()) // the defaults
///     .layer(LoadBalanceLayer::builder().service("greet", Fixed::new(["127.0.0.1:5001"])?).build()?)
///     .service(reqwest::Client::new());
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct RetryLayer {
    config: Arc<Config>,
}

impl Default for RetryLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl RetryLayer {
    /// The layer with every default.
    pub fn new() -> Self {
        // The defaults are valid.
        Self::from_builder(RetryBuilder::default())
    }

    /// Starts configuring the layer.
    pub fn builder() -> RetryBuilder {
        RetryBuilder::default()
    }

    fn from_builder(b: RetryBuilder) -> Self {
        let services = Services::new(b.budget, b.hedge);
        Self {
            config: Arc::new(Config {
                policy: b.policy,
                max_attempts: b.max_attempts,
                backoff: b.backoff,
                max_retry_after: b.max_retry_after,
                attempt_timeout: b.attempt_timeout,
                deadline: b.deadline,
                replay_limit: b.replay_limit,
                hedge: b.hedge,
                services,
                rng: b.seed.map(|seed| Arc::new(SeededRng::new(seed))),
                buffer_responses: b.buffer_responses,
            }),
        }
    }
}

impl<S> Layer<S> for RetryLayer {
    type Service = Retry<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Retry {
            inner,
            config: self.config.clone(),
        }
    }
}

/// Configures a [`RetryLayer`]. Made by [`RetryLayer::builder`].
///
/// ```
/// use std::time::Duration;
/// use http::StatusCode;
/// use tower_lb::retry::{Backoff, Hedge, Policy, RetryBudget, RetryLayer};
///
/// let layer = RetryLayer::builder()
///     .max_attempts(4)
///     .backoff(Backoff::new(Duration::from_millis(10), Duration::from_millis(500)))
///     .max_retry_after(Duration::from_secs(2))
///     .budget(RetryBudget::new(Duration::from_secs(10), 10, 0.2))
///     .policy(Policy::new().retry_status(StatusCode::INTERNAL_SERVER_ERROR))
///     .attempt_timeout(Duration::from_millis(800))
///     .deadline(Duration::from_secs(3))
///     .replay_limit(16 * 1024)
///     .hedge(Hedge::percentile(95.0))
///     .build()?;
/// # Ok::<(), tower_lb::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct RetryBuilder {
    policy: Policy,
    max_attempts: u32,
    backoff: Backoff,
    max_retry_after: Duration,
    budget: RetryBudget,
    attempt_timeout: Option<Duration>,
    deadline: Option<Duration>,
    replay_limit: usize,
    hedge: Option<Hedge>,
    seed: Option<u64>,
    buffer_responses: Option<usize>,
}

impl Default for RetryBuilder {
    fn default() -> Self {
        Self {
            policy: Policy::default(),
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            backoff: Backoff::default(),
            max_retry_after: DEFAULT_MAX_RETRY_AFTER,
            budget: RetryBudget::default(),
            attempt_timeout: Some(DEFAULT_ATTEMPT_TIMEOUT),
            deadline: Some(DEFAULT_DEADLINE),
            replay_limit: DEFAULT_REPLAY_LIMIT,
            hedge: None,
            seed: None,
            buffer_responses: None,
        }
    }
}

impl RetryBuilder {
    /// What may be retried (default: [`Policy::default`]).
    pub fn policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    /// The most attempts per call, the first and any hedge included
    /// (default 3; 1 turns retries off).
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts;
        self
    }

    /// The wait between attempts (default: 25 ms doubling up to 1 s, full
    /// jitter).
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// The longest `Retry-After` honoured (default 5 s): an answer that
    /// asks for longer is returned, marked
    /// [`NotRetried::RetryAfterTooLong`].
    pub fn max_retry_after(mut self, max: Duration) -> Self {
        self.max_retry_after = max;
        self
    }

    /// The retry budget of each service (default: 20% of the last 10 s
    /// plus 10 per second).
    pub fn budget(mut self, budget: RetryBudget) -> Self {
        self.budget = budget;
        self
    }

    /// How long one attempt may take, to its response head, before it is
    /// abandoned and, for an idempotent request, retried (default
    /// [`DEFAULT_ATTEMPT_TIMEOUT`], 5 s). An abandoned attempt counts as a
    /// timeout against its endpoint (outlier detection, Peak-EWMA).
    ///
    /// The timer is shared with attempts due at nearly the same time, so
    /// an attempt is abandoned at most 1/64 of its wait late, and never
    /// more than 100 ms (plus tokio's rounding up to its next
    /// millisecond); the same holds for the call's
    /// [`deadline`](Self::deadline) where it ends an attempt.
    pub fn attempt_timeout(mut self, timeout: Duration) -> Self {
        self.attempt_timeout = Some(timeout);
        self
    }

    /// No per-attempt timeout: an attempt may take the whole deadline.
    pub fn without_attempt_timeout(mut self) -> Self {
        self.attempt_timeout = None;
        self
    }

    /// How long a whole call may take, retries and waits included, to its
    /// response head (default [`DEFAULT_DEADLINE`], 15 s). Past it the
    /// call fails with [`Error::DeadlineExceeded`]; a retry that could not
    /// start before it is not made.
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// No overall deadline: only for a caller that bounds every call
    /// itself. With no attempt timeout either, a call to an instance that
    /// never answers waits forever.
    pub fn without_deadline(mut self) -> Self {
        self.deadline = None;
        self
    }

    /// Reads every answer whose body declares at most `limit` bytes to its
    /// end inside the attempt, before handing it over (default: off). A
    /// body cut short (an instance that resets after its headers) is then
    /// a failed attempt, retried elsewhere for an idempotent request, where
    /// otherwise the caller would see the body error. The cost: the body
    /// is held in memory, the attempt's timeout covers reading it, and the
    /// caller gets nothing before the last byte. Bodies of unknown length
    /// (chunked, streaming) are never buffered. Supported for
    /// `reqwest::Response`; other response types are handed over as they
    /// are (see [`crate::BalancedResponse::buffer_body`]).
    ///
    /// ```
    /// use tower_lb::retry::RetryLayer;
    ///
    /// let layer = RetryLayer::builder().buffer_responses(64 * 1024).build()?;
    /// # Ok::<(), tower_lb::Error>(())
    /// ```
    pub fn buffer_responses(mut self, limit: usize) -> Self {
        self.buffer_responses = Some(limit);
        self
    }

    /// Seeds the backoff jitter, so that a run on a paused clock repeats
    /// exactly (default: a fresh random sequence). Seed the pools too
    /// ([`PoolBuilder::seed`](crate::PoolBuilder::seed)) for repeatable
    /// picks.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// The largest `http::Request` body buffered to be sent again
    /// (default 64 KiB); a larger one is sent once.
    pub fn replay_limit(mut self, bytes: usize) -> Self {
        self.replay_limit = bytes;
        self
    }

    /// Hedge slow idempotent requests (default: no hedging).
    pub fn hedge(mut self, hedge: Hedge) -> Self {
        self.hedge = Some(hedge);
        self
    }

    /// Builds the layer; [`Error::Config`] names a setting out of range.
    pub fn build(self) -> Result<RetryLayer, Error> {
        let invalid = |reason: String| Error::Config(format!("retry: {reason}"));
        if self.max_attempts == 0 {
            return Err(invalid("max_attempts must be at least 1".into()));
        }
        self.budget.check().map_err(invalid)?;
        if let Some(hedge) = &self.hedge {
            hedge.check().map_err(invalid)?;
        }
        for (name, value) in [
            ("attempt_timeout", self.attempt_timeout),
            ("deadline", self.deadline),
        ] {
            if value.is_some_and(|d| d.is_zero()) {
                return Err(invalid(format!("{name} must be above zero")));
            }
        }
        if self.max_attempts == 1 && self.hedge.is_none() {
            tracing::warn!(
                target: "tower_lb::retry",
                "retry layer built with max_attempts(1) and no hedge: it never retries"
            );
        } else if self.budget.never_allows() {
            tracing::warn!(
                target: "tower_lb::retry",
                "retry layer built with a budget of 0 per second and a ratio of 0: it never retries"
            );
        }
        Ok(RetryLayer::from_builder(self))
    }
}

/// The service made by [`RetryLayer`]: retries each request through the
/// inner (load-balancing) service.
///
/// The inner service must be `Clone`, as the load-balancing service and
/// HTTP clients are: a retry, or a hedge beside a slow attempt, goes
/// through a clone.
#[derive(Clone, Debug)]
pub struct Retry<S> {
    inner: S,
    config: Arc<Config>,
}

impl<S> Retry<S> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, unwrapped.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, Req> Service<Req> for Retry<S>
where
    Req: ReplayableRequest,
    S: Service<Req::Sent> + Clone + Send + 'static,
    S::Response: BalancedResponse,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = Error;
    type Future = RetryFuture<S::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(|e| {
            let e: BoxError = e.into();
            match e.downcast::<Error>() {
                Ok(e) => *e,
                Err(source) => Error::Inner {
                    service: None,
                    endpoint: None,
                    verdict: None,
                    source,
                },
            }
        })
    }

    fn call(&mut self, request: Req) -> Self::Future {
        // Take the service `poll_ready` readied; leave a clone.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let mode = RetryMode::of(&request);
        let service = request.host().map(|host| self.config.services.get(host));
        call::start(&self.config, inner, request, mode, service)
    }
}
