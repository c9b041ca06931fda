//! Balancing as a reqwest-middleware [`Middleware`] (feature
//! `reqwest-middleware`).

use std::sync::Arc;

use http::Extensions;
use reqwest_middleware::{Middleware, Next};
use tokio::time::Instant;

use crate::attempt::AttemptContext;
use crate::balance::Avoid;
use crate::layer::send_with::balance_with;
use crate::request::WithExtensions;
use crate::{Endpoint, Error, LoadBalanceLayer};

/// The load-balancing layer as a link of a reqwest-middleware chain:
/// requests for `http://greet/...` are pointed at an endpoint of `greet`
/// and sent on down the chain, and the answer is followed to its last byte
/// as through the tower layer (outcome, latency, ejection).
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use tower_lb::{LoadBalanceLayer, client::LoadBalanceMiddleware, discover::Fixed};
///
/// let balancer = LoadBalanceLayer::builder()
///     .service("greet", Fixed::new(["127.0.0.1:5001", "127.0.0.1:5002"])?)
///     .build()?;
/// let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
///     // reqwest-retry's RetryTransientMiddleware would go here, above us
///     .with(LoadBalanceMiddleware::new(balancer))
///     .build();
/// let answer = client.get("http://greet/api/greet").send().await?;
/// # Ok(()) }
/// ```
///
/// # What it supports, and why
///
/// - **Balancing, health and stats**: all of it, as the tower layer.
/// - **Retries**: not its own. A middleware's `Next` borrows the rest of the
///   chain, so the crate's [`RetryLayer`](crate::retry::RetryLayer), which
///   owns the service it retries through, cannot sit here. Put a retry
///   middleware (reqwest-retry) *before* this one: each of its attempts
///   comes through here as a fresh pick, and since a chain passes the same
///   extensions to every attempt, this middleware notes there the endpoints
///   already tried ([`TriedEndpoints`]) and the next attempt avoids them.
///   The classifier's verdict is on every answer
///   ([`Verdict`](crate::classify::Verdict) in its extensions).
/// - **Timeouts**: each attempt is bounded by the layer's
///   [`timeout`](crate::LoadBalanceBuilder::timeout) (15 s by default).
/// - Middleware after this one in the chain sees the rewritten request,
///   addressed to the endpoint.
#[derive(Debug, Clone)]
pub struct LoadBalanceMiddleware {
    balancer: Arc<LoadBalanceLayer>,
}

impl LoadBalanceMiddleware {
    /// Balances with `balancer`'s services and settings.
    pub fn new(balancer: LoadBalanceLayer) -> Self {
        Self {
            balancer: Arc::new(balancer),
        }
    }

    /// The layer behind it: its pools and stats.
    pub fn balancer(&self) -> &LoadBalanceLayer {
        &self.balancer
    }
}

/// The endpoints earlier attempts of one call went to, kept in the
/// reqwest-middleware chain's extensions by [`LoadBalanceMiddleware`] so
/// that a retry middleware's next attempt is picked elsewhere.
#[derive(Debug, Clone, Default)]
pub struct TriedEndpoints(pub Vec<Endpoint>);

#[async_trait::async_trait]
impl Middleware for LoadBalanceMiddleware {
    async fn handle(
        &self,
        request: reqwest::Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        let router = self.balancer.router();
        let tried = extensions
            .get::<TriedEndpoints>()
            .cloned()
            .unwrap_or_default();
        let mut avoid = Avoid::new();
        for endpoint in &tried.0 {
            avoid.insert(endpoint.clone());
        }
        let number = u32::try_from(tried.0.len())
            .unwrap_or(u32::MAX)
            .saturating_add(1);
        let deadline = router.timeout.and_then(|t| Instant::now().checked_add(t));
        let mut context = AttemptContext::new(number).with_avoid(avoid);
        if let Some(deadline) = deadline {
            context = context.with_deadline(deadline);
        }
        let service: Arc<str> = request.url().host_str().unwrap_or_default().into();
        let mut carried = Extensions::new();
        carried.insert(context.clone());
        let request = WithExtensions::from_parts(request, carried);
        let chain = &mut *extensions;
        let balanced = balance_with(router, request, |request| next.run(request, chain));
        let result = match deadline {
            None => balanced.await,
            Some(deadline) => match tokio::time::timeout_at(deadline, balanced).await {
                Ok(result) => result,
                Err(_) => Err(Error::AttemptTimeout {
                    service,
                    endpoint: context.endpoint().cloned(),
                    timeout: router.timeout.unwrap_or_default(),
                }),
            },
        };
        // The chain's retry middleware has no attempt context to read: the
        // verdict rides in the answer, as these docs promise.
        let result = result.map(|mut response| {
            if let Some(verdict) = context.verdict() {
                response.extensions_mut().insert(verdict);
            }
            response
        });
        if let Some(endpoint) = context.endpoint() {
            let mut tried = tried;
            tried.0.push(endpoint.clone());
            extensions.insert(tried);
        }
        result.map_err(into_chain_error)
    }
}

/// The chain's own error as it was (a retry middleware above reads
/// reqwest's errors to decide), the crate's as a middleware error.
fn into_chain_error(error: Error) -> reqwest_middleware::Error {
    if let Error::Inner { source, .. } = error {
        return match source.downcast::<reqwest_middleware::Error>() {
            Ok(chain) => *chain,
            Err(other) => match other.downcast::<reqwest::Error>() {
                Ok(reqwest) => reqwest_middleware::Error::Reqwest(*reqwest),
                Err(other) => reqwest_middleware::Error::middleware(BoxedError(other)),
            },
        };
    }
    reqwest_middleware::Error::middleware(error)
}

/// A boxed error that is itself a `std::error::Error`.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
struct BoxedError(crate::BoxError);
