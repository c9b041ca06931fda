//! A client handle that keeps reqwest's API: `client.get(url).send()`
//! through the balancer (and the retry layer, when wanted).
//!
//! The handle encodes `query`, `json` and `form` itself and turns on no
//! reqwest feature, so your reqwest builds as you configured it; reading a
//! response with `response.json()` takes reqwest's own `json` feature, in
//! your Cargo.toml (`reqwest = { version = "0.13", features = ["json"] }`).
//!
//! ```no_run
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use tower_lb::{Client, LoadBalanceLayer, discover::Fixed, retry::RetryLayer};
//!
//! #[derive(serde::Deserialize)]
//! struct Greeting {
//!     message: String,
//! }
//!
//! let balancer = LoadBalanceLayer::builder()
//!     .service("greet", Fixed::new(["127.0.0.1:5001", "127.0.0.1:5002"])?)
//!     .build()?;
//! let client = Client::builder(reqwest::Client::new(), balancer)
//!     .retry(RetryLayer::new())
//!     .build();
//!
//! let greeting: Greeting = client
//!     .get("http://greet/api/greet")
//!     .query(&[("name", "Alice")])
//!     .send()
//!     .await?
//!     .json()
//!     .await?;
//! println!("{}", greeting.message);
//! # Ok(()) }
//! ```

#[cfg(feature = "reqwest-middleware")]
mod middleware;
mod request;
mod urlencoded;

use std::fmt;
use std::sync::Arc;

use std::future::poll_fn;

use http::Method;
use tower_service::Service;

#[cfg(feature = "reqwest-middleware")]
pub use middleware::{LoadBalanceMiddleware, TriedEndpoints};
pub use request::{EncodeError, RequestBuilder};

use crate::request::WithExtensions;
use crate::retry::{Retry, RetryLayer};
use crate::stats::PoolStats;
use crate::{Error, LoadBalance, LoadBalanceLayer, Pool};
use tower_layer::Layer;

/// A `reqwest::Client` behind the load-balancing layer (and the retry
/// layer, when given one), with reqwest's own request-building API.
///
/// Cheap to clone (clones share everything), `Send + Sync`. Requests for a
/// host that names no service follow the balancer's
/// [`UnknownHost`](crate::UnknownHost) setting: rejected by default, or
/// sent as they are. See the [module docs](self) for an example.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    stack: Arc<Stack>,
}

/// The layers the requests go through.
#[derive(Clone)]
enum Stack {
    Balanced(LoadBalance<reqwest::Client>),
    Retried(Retry<LoadBalance<reqwest::Client>>),
}

impl Stack {
    /// Sends one request through a copy of the layers: each call readies
    /// and calls its own copy, as tower's `oneshot` does.
    async fn send(
        &self,
        request: WithExtensions<reqwest::Request>,
    ) -> Result<reqwest::Response, Error> {
        match self {
            Stack::Balanced(balanced) => oneshot(balanced.clone(), request).await,
            Stack::Retried(retried) => oneshot(retried.clone(), request).await,
        }
    }

    fn balancer(&self) -> &LoadBalance<reqwest::Client> {
        match self {
            Stack::Balanced(balanced) => balanced,
            Stack::Retried(retried) => retried.get_ref(),
        }
    }
}

/// Readies `service`, then calls it with `request`.
async fn oneshot<S>(
    mut service: S,
    request: WithExtensions<reqwest::Request>,
) -> Result<reqwest::Response, Error>
where
    S: Service<WithExtensions<reqwest::Request>, Response = reqwest::Response, Error = Error>,
{
    poll_fn(|cx| service.poll_ready(cx)).await?;
    service.call(request).await
}

/// Configures a [`Client`]. Made by [`Client::builder`].
pub struct ClientBuilder {
    http: reqwest::Client,
    balancer: LoadBalanceLayer,
    retry: Option<RetryLayer>,
}

impl Client {
    /// A client that balances with `balancer` and sends with `http`, with
    /// no retries (see [`Client::builder`] for them).
    pub fn new(http: reqwest::Client, balancer: LoadBalanceLayer) -> Self {
        Self::builder(http, balancer).build()
    }

    /// Starts configuring a client over `http`, balanced by `balancer`.
    pub fn builder(http: reqwest::Client, balancer: LoadBalanceLayer) -> ClientBuilder {
        ClientBuilder {
            http,
            balancer,
            retry: None,
        }
    }

    /// A `GET` request to `url`.
    pub fn get<U: reqwest::IntoUrl>(&self, url: U) -> RequestBuilder {
        self.request(Method::GET, url)
    }

    /// A `POST` request to `url`.
    pub fn post<U: reqwest::IntoUrl>(&self, url: U) -> RequestBuilder {
        self.request(Method::POST, url)
    }

    /// A `PUT` request to `url`.
    pub fn put<U: reqwest::IntoUrl>(&self, url: U) -> RequestBuilder {
        self.request(Method::PUT, url)
    }

    /// A `PATCH` request to `url`.
    pub fn patch<U: reqwest::IntoUrl>(&self, url: U) -> RequestBuilder {
        self.request(Method::PATCH, url)
    }

    /// A `DELETE` request to `url`.
    pub fn delete<U: reqwest::IntoUrl>(&self, url: U) -> RequestBuilder {
        self.request(Method::DELETE, url)
    }

    /// A `HEAD` request to `url`.
    pub fn head<U: reqwest::IntoUrl>(&self, url: U) -> RequestBuilder {
        self.request(Method::HEAD, url)
    }

    /// A request with `method` to `url`.
    pub fn request<U: reqwest::IntoUrl>(&self, method: Method, url: U) -> RequestBuilder {
        RequestBuilder::new(self.clone(), self.http.request(method, url))
    }

    /// Sends a request built elsewhere (`reqwest::Request::new`, or a
    /// `reqwest::RequestBuilder`'s `build`).
    pub async fn execute(&self, request: reqwest::Request) -> Result<reqwest::Response, Error> {
        self.stack.send(WithExtensions::new(request)).await
    }

    /// Sends a request that carries extensions of its own (a
    /// [`RetryMode`](crate::retry::RetryMode), a
    /// [`RequestHashKey`](crate::balance::RequestHashKey)).
    pub async fn execute_with(
        &self,
        request: WithExtensions<reqwest::Request>,
    ) -> Result<reqwest::Response, Error> {
        self.stack.send(request).await
    }

    /// The pool serving `service`, if configured.
    pub fn pool(&self, service: &str) -> Option<&Pool> {
        self.stack.balancer().pool(service)
    }

    /// Stats for every pool.
    pub fn stats(&self) -> Vec<PoolStats> {
        self.stack.balancer().stats()
    }

    /// The `reqwest::Client` the requests are sent with.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }
}

impl ClientBuilder {
    /// Retries through `retry` (default: none): every attempt a fresh pick
    /// that avoids the endpoints already tried.
    pub fn retry(mut self, retry: RetryLayer) -> Self {
        self.retry = Some(retry);
        self
    }

    /// Builds the client.
    pub fn build(self) -> Client {
        let balanced = self.balancer.layer(self.http.clone());
        let stack = match self.retry {
            Some(retry) => Stack::Retried(retry.layer(balanced)),
            None => Stack::Balanced(balanced),
        };
        Client {
            http: self.http,
            stack: Arc::new(stack),
        }
    }
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let retries = matches!(*self.stack, Stack::Retried(_));
        f.debug_struct("Client")
            .field("balancer", self.stack.balancer())
            .field("retries", &retries)
            .finish()
    }
}

impl fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("balancer", &self.balancer)
            .field("retry", &self.retry)
            .finish()
    }
}
