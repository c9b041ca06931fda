//! Client-side load balancing for HTTP microservices, as tower layers.
//!
//! Each service that calls another picks the instance itself: a
//! [discovery source](discover) says which instances exist, a
//! [balancer](balance) chooses one per request, and the
//! [`LoadBalanceLayer`] rewrites the request to go there. It wraps the
//! HTTP client you already have: `reqwest::Client`, hyper-util's client, or
//! any `tower::Service` of `http::Request`s. Call `http://greet/...` by the
//! service's name; the layer does the rest.
//!
//! ```no_run
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use tower::{ServiceBuilder, ServiceExt};
//! use tower_lb::{Endpoint, LoadBalanceLayer, balance::RoundRobin, discover::Fixed};
//!
//! let lb = LoadBalanceLayer::builder()
//!     .service("greet", Fixed::new(["http://127.0.0.1:5001", "http://127.0.0.1:5002"])?)
//!     .balancer(RoundRobin::new())
//!     .build()?;
//! let client = ServiceBuilder::new().layer(lb).service(reqwest::Client::new());
//!
//! let request = reqwest::Request::new(http::Method::GET, "http://greet/api/greet?name=Alice".parse()?);
//! let response = client.oneshot(request).await?;
//! let answered_by = response.extensions().get::<Endpoint>().cloned();
//! println!("{} from {answered_by:?}", response.text().await?);
//! # Ok(()) }
//! ```
//!
//! # Parts
//!
//! - [`Endpoint`]: one instance, parsed and validated once.
//! - [`discover`]: the [`Discover`](discover::Discover) trait and the
//!   built-in sources.
//! - [`Pool`]: the live endpoint set of one service, updated in the
//!   background, read without locks.
//! - [`balance`]: the [`Balancer`](balance::Balancer) trait and the
//!   algorithms.
//! - [`LoadBalanceLayer`] / [`LoadBalance`]: the tower middleware.
//! - [`retry`]: [`RetryLayer`] / [`Retry`], retries above the balancer:
//!   policy, backoff, budget, body replay, deadlines, hedging.
//! - [`AttemptContext`]: what the retry layer tells the balancer about each
//!   attempt, carried in the request (never in a thread-local), and
//!   [`WithExtensions`] for request types whose extensions are private.
//! - [`classify`]: one [`Classify`](classify::Classify)r decides what counts
//!   against an endpoint and what is worth another attempt.
//!
//! # What every attempt is held to
//!
//! The balancer follows an attempt to the last byte of its response body
//! ([`TrackedBody`]): it is load until then, and a body cut short is the
//! endpoint's failure. A request dropped before its answer (a caller's own
//! timeout) leaves its wait as a latency sample and, after the pool's
//! [cancellation timeout](PoolBuilder::cancel_timeout), counts as a
//! timeout. Nothing waits forever by default: the retry layer's deadline
//! (15 s) and attempt timeout (5 s), and the balancer's own timeout (15 s)
//! for requests no layer above bounds.
//! - [`Error`]: one typed error, naming the service, for every failure.
//!
//! # Features
//!
//! - `reqwest` (default): balance `reqwest::Request`s through a
//!   `reqwest::Client`; HTTP health probes.
//! - `dns`: [`discover::Dns`](discover) over hickory-resolver (needs Rust 1.88).
//! - `etcd`: `discover::etcd`, watch a key prefix and register under a lease.
//! - `file`: `discover::JsonFile`, a watched JSON file of endpoints.
//! - `metrics`: the series listed in [`metrics`], through the `metrics`
//!   facade.
//! - `reqwest-middleware`: `client::LoadBalanceMiddleware`, balancing as a
//!   link of a reqwest-middleware chain.
//! - `tower-http`: [`classify::TowerHttp`](classify), tower-http's response
//!   classifiers (`ServerErrorsAsFailures`, `GrpcErrorsAsFailures`, ...) as
//!   the classifier.

#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod attempt;
pub mod balance;
pub mod classify;
#[cfg(feature = "reqwest")]
pub mod client;
pub mod discover;
mod endpoint;
mod error;
pub mod health;
mod layer;
pub mod metrics;
mod pool;
mod redact;
mod request;
pub mod retry;
pub mod stats;
mod time;

#[cfg(test)]
mod proptests;

pub use attempt::AttemptContext;
#[cfg(feature = "reqwest")]
pub use client::Client;
pub use endpoint::{Endpoint, EndpointError, EndpointErrorKind, IntoEndpoint};
pub use error::{BoxError, Error};
pub use layer::{
    BodyGuard, DEFAULT_TIMEOUT, LoadBalance, LoadBalanceBuilder, LoadBalanceLayer, ResponseFuture,
    SchemePolicy, TrackBody, TrackedBody, UnknownHost,
};
pub use pool::{
    CachedPool, DEFAULT_CANCEL_TIMEOUT, DEFAULT_READY_TIMEOUT, Picked, Pool, PoolBuilder,
};
pub use request::{
    BalancedRequest, BalancedResponse, BufferFuture, OutgoingRequest, WithExtensions,
};
pub use retry::replayable::{Prepared, ReplayableRequest};
pub use retry::{Retry, RetryLayer};

/// The README's Rust blocks, compiled (and those not marked `no_run`, run)
/// by `cargo test --all-features`, so that the README cannot drift from the
/// API.
#[cfg(all(doctest, feature = "etcd", feature = "reqwest-middleware"))]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
