//! The load-balancing layer: routes each request by its host to a pool,
//! picks an endpoint and sends the request there.

mod body;
mod future;
mod router;
#[cfg_attr(not(feature = "reqwest-middleware"), allow(dead_code))]
pub(crate) mod send_with;
mod service;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tower_layer::Layer;

pub use body::{BodyGuard, TrackBody, TrackedBody};
pub use future::ResponseFuture;
pub use router::{SchemePolicy, UnknownHost};
pub use service::LoadBalance;

use crate::balance::{Balancer, RoundRobin};
use crate::classify::{Classify, DefaultClassifier};
use crate::discover::Discover;
use crate::pool::{DEFAULT_READY_TIMEOUT, PoolBuilder};
use crate::stats::PoolStats;
use crate::{Error, Pool};
use router::Router;

/// How long a request that no layer above bounds may wait for its
/// response head, by default: 15 s, Envoy's default route timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);

/// A [`Layer`] that balances requests to logical services across their
/// endpoints.
///
/// A request for `http://greet/api/greet` goes to the pool named `greet`,
/// is pointed at the endpoint its balancer picks (path and query kept) and
/// is sent by the inner client. The response carries the [`Endpoint`] that
/// answered in its extensions. The classifier's [`Verdict`] on it goes to
/// the layer above that made the attempt, in the request's
/// [`AttemptContext`](crate::AttemptContext), when there is one (the retry
/// layer).
///
/// The attempt stays in flight, for the balancer, until its response body
/// ends, fails or is dropped, and its outcome is recorded then (a body cut
/// short is the endpoint's failure): `http::Response<B>` comes back as
/// `http::Response<`[`TrackedBody<B>`]`>`, a `reqwest::Response` as a
/// `reqwest::Response` whose body is followed the same way.
///
/// Unless a layer above gives the request an
/// [`AttemptContext`](crate::AttemptContext) with its own deadline (the
/// retry layer does), the layer bounds the wait for the response head by
/// its [`timeout`](LoadBalanceBuilder::timeout), [`DEFAULT_TIMEOUT`] unless
/// set: nothing waits forever by default.
///
/// [`Verdict`]: crate::classify::Verdict
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use tower::{ServiceBuilder, ServiceExt};
/// use tower_lb::{Endpoint, LoadBalanceLayer, UnknownHost, balance::LeastRequest, discover::Fixed};
///
/// let lb = LoadBalanceLayer::builder()
///     .service("greet", Fixed::new(["127.0.0.1:5001", "127.0.0.1:5002"])?)
///     .service("users", Fixed::new(["127.0.0.1:6001"])?)
///     .balancer(LeastRequest::new())
///     .unknown_host(UnknownHost::PassThrough)
///     .build()?;
/// let client = ServiceBuilder::new().layer(lb).service(reqwest::Client::new());
///
/// let request = reqwest::Request::new(http::Method::GET, "http://greet/api/greet?name=Alice".parse()?);
/// # if false {
/// let response = client.oneshot(request).await?;
/// println!("answered by {:?}", response.extensions().get::<Endpoint>());
/// # }
/// # Ok(()) }
/// ```
///
/// [`Endpoint`]: crate::Endpoint
#[derive(Clone)]
pub struct LoadBalanceLayer {
    router: Arc<Router>,
}

impl LoadBalanceLayer {
    /// Starts configuring the layer.
    pub fn builder() -> LoadBalanceBuilder {
        LoadBalanceBuilder {
            services: Vec::new(),
            configure: None,
            balancer: None,
            ready_timeout: DEFAULT_READY_TIMEOUT,
            unknown_host: UnknownHost::default(),
            scheme_policy: SchemePolicy::default(),
            endpoint_in_requests: false,
            classifier: Arc::new(DefaultClassifier),
            timeout: Some(DEFAULT_TIMEOUT),
        }
    }

    /// The pool serving `service`, if configured.
    pub fn pool(&self, service: &str) -> Option<&Pool> {
        self.router.get(service)
    }

    /// Every pool, in the order configured.
    pub fn pools(&self) -> impl Iterator<Item = &Pool> {
        self.router.pools()
    }

    /// Stats for every pool.
    pub fn stats(&self) -> Vec<PoolStats> {
        self.router.pools().map(Pool::stats).collect()
    }

    /// The routes, for integrations that balance without a tower service.
    #[cfg_attr(not(feature = "reqwest-middleware"), allow(dead_code))]
    pub(crate) fn router(&self) -> &Router {
        &self.router
    }
}

impl<S> Layer<S> for LoadBalanceLayer {
    type Service = LoadBalance<S>;

    fn layer(&self, inner: S) -> Self::Service {
        LoadBalance::new(inner, self.router.clone())
    }
}

impl fmt::Debug for LoadBalanceLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadBalanceLayer")
            .field("router", &self.router)
            .finish()
    }
}

/// Configures a [`LoadBalanceLayer`]. Made by [`LoadBalanceLayer::builder`].
pub struct LoadBalanceBuilder {
    services: Vec<ServiceSpec>,
    configure: Option<ConfigurePool>,
    balancer: Option<Arc<dyn Balancer>>,
    ready_timeout: Duration,
    unknown_host: UnknownHost,
    classifier: Arc<dyn Classify>,
    timeout: Option<Duration>,
    scheme_policy: SchemePolicy,
    endpoint_in_requests: bool,
}

type ConfigurePool = Box<dyn Fn(PoolBuilder) -> PoolBuilder + Send + Sync>;

enum ServiceSpec {
    Source(String, Box<PoolBuilder>),
    Built(Pool),
}

impl LoadBalanceBuilder {
    /// Adds a logical service fed by a discovery source. It uses the
    /// builder's balancer and ready timeout, whichever order they are set in.
    pub fn service(mut self, name: impl Into<String>, source: impl Discover) -> Self {
        let name = name.into();
        let pool = Pool::builder(name.clone(), source);
        self.services
            .push(ServiceSpec::Source(name, Box::new(pool)));
        self
    }

    /// Adds a pool configured on its own (its own balancer, timeouts), for
    /// a service that needs settings the others do not.
    ///
    /// ```
    /// use tower_lb::{LoadBalanceLayer, Pool, balance::{LeastRequest, WeightedRoundRobin}, discover::Fixed};
    ///
    /// let users = Pool::builder("users", Fixed::new(["127.0.0.1:6001"])?)
    ///     .balancer(LeastRequest::new())
    ///     .build();
    /// let layer = LoadBalanceLayer::builder()
    ///     .service("greet", Fixed::new(["127.0.0.1:5001"])?)
    ///     .pool(users)
    ///     .balancer(WeightedRoundRobin::new()) // for greet only
    ///     .build()?;
    /// assert_eq!(layer.pool("users").unwrap().balancer_name(), "least_request");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn pool(mut self, pool: Pool) -> Self {
        self.services.push(ServiceSpec::Built(pool));
        self
    }

    /// The balancer for services added with [`service`](Self::service)
    /// (default: [`RoundRobin`]).
    pub fn balancer(mut self, balancer: impl Balancer) -> Self {
        self.balancer = Some(Arc::new(balancer));
        self
    }

    /// How long a request waits for a service's first discovery answer
    /// (default 5 s), for services added with [`service`](Self::service).
    pub fn ready_timeout(mut self, timeout: Duration) -> Self {
        self.ready_timeout = timeout;
        self
    }

    /// Applies `configure` to the pool of every service added with
    /// [`service`](Self::service): health checks, outlier detection, slow
    /// start, anything [`PoolBuilder`] offers. It runs last, so it may also
    /// override the builder-wide balancer.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_lb::{LoadBalanceLayer, discover::Fixed};
    /// use tower_lb::health::{HealthCheck, OutlierDetection};
    ///
    /// let layer = LoadBalanceLayer::builder()
    ///     .service("greet", Fixed::new(["127.0.0.1:5001", "127.0.0.1:5002"])?)
    ///     .service("users", Fixed::new(["127.0.0.1:6001", "127.0.0.1:6002"])?)
    ///     .configure_pools(|pool| {
    ///         pool.health_check(HealthCheck::http("/health"))
    ///             .outlier_detection(OutlierDetection::new().consecutive_failures(3))
    ///             .slow_start(Duration::from_secs(30))
    ///     })
    ///     .build()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn configure_pools(
        mut self,
        configure: impl Fn(PoolBuilder) -> PoolBuilder + Send + Sync + 'static,
    ) -> Self {
        self.configure = Some(Box::new(configure));
        self
    }

    /// What to do with a request whose host is not a configured service
    /// (default: [`UnknownHost::Reject`]).
    pub fn unknown_host(mut self, policy: UnknownHost) -> Self {
        self.unknown_host = policy;
        self
    }

    /// Whether an `https` request may go to a plain `http` endpoint
    /// (default [`SchemePolicy::NoDowngrade`]: it fails with
    /// [`Error::InsecureEndpoint`]).
    pub fn scheme_policy(mut self, policy: SchemePolicy) -> Self {
        self.scheme_policy = policy;
        self
    }

    /// Also put the chosen [`Endpoint`](crate::Endpoint) in each
    /// `http::Request`'s extensions, for a layer between this one and the
    /// client that wants more than the request's URI tells (the endpoint's
    /// zone, metadata or weight). Off by default: the request's first
    /// extension allocates a map (about 1,100 instructions, 4% of a plain
    /// hyper-util call), and the URI already names the endpoint's address.
    /// Responses always carry the endpoint.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::convert::Infallible;
    ///
    /// use tower::{ServiceBuilder, ServiceExt};
    /// use tower_lb::{Endpoint, LoadBalanceLayer, discover::Fixed};
    ///
    /// let lb = LoadBalanceLayer::builder()
    ///     .service("greet", Fixed::new(["127.0.0.1:5001"])?)
    ///     .endpoint_in_requests(true)
    ///     .build()?;
    /// lb.pool("greet").unwrap().ready().await?;
    /// // An inner layer (here the client itself) reads it.
    /// let client = ServiceBuilder::new().layer(lb).service_fn(|request: http::Request<String>| async move {
    ///     let endpoint = request.extensions().get::<Endpoint>().map(Endpoint::key);
    ///     Ok::<_, Infallible>(http::Response::new(format!("{endpoint:?}")))
    /// });
    /// let response = client.oneshot(http::Request::get("http://greet/").body(String::new())?).await?;
    /// assert_eq!(response.extensions().get::<Endpoint>().map(Endpoint::key), Some("http://127.0.0.1:5001"));
    /// # Ok(()) }
    /// ```
    pub fn endpoint_in_requests(mut self, on: bool) -> Self {
        self.endpoint_in_requests = on;
        self
    }

    /// What counts as the endpoint's failure and what is worth another
    /// attempt, for every service (default: [`DefaultClassifier`]). The
    /// verdict travels up in the response or the error, so a retry layer
    /// above acts on the same judgement; see [`classify`](crate::classify).
    ///
    /// ```
    /// use tower_lb::{LoadBalanceLayer, classify::DefaultClassifier, discover::Fixed};
    ///
    /// let layer = LoadBalanceLayer::builder()
    ///     .service("greet", Fixed::new(["127.0.0.1:5001"])?)
    ///     .classifier(DefaultClassifier)
    ///     .build()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn classifier(mut self, classifier: impl Classify) -> Self {
        self.classifier = Arc::new(classifier);
        self
    }

    /// How long a request may wait for its response head when no layer
    /// above set its deadline (default [`DEFAULT_TIMEOUT`], 15 s). Past
    /// it the request fails with [`Error::AttemptTimeout`] and counts as a
    /// timeout against its endpoint. A request from the retry layer
    /// carries its own deadline and is bounded there instead.
    ///
    /// The timer is shared with requests due at nearly the same time, so
    /// the request fails at most 1/64 of `timeout` late, and never more
    /// than 100 ms (plus tokio's rounding up to its next millisecond); a
    /// `timeout` under 64 ms keeps a timer of its own.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// No bound on requests that carry no deadline of their own: only for
    /// a caller that bounds every request itself (its own
    /// `tokio::time::timeout`, reqwest's `timeout`).
    pub fn without_timeout(mut self) -> Self {
        self.timeout = None;
        self
    }

    /// Builds the layer and starts discovery for every service (at once
    /// inside a tokio runtime, otherwise on first use).
    ///
    /// Fails with [`Error::Config`] when a service name is not a valid host
    /// name or appears twice.
    pub fn build(self) -> Result<LoadBalanceLayer, Error> {
        let default_balancer = self.balancer.unwrap_or_else(|| Arc::new(RoundRobin::new()));
        if self.timeout.is_some_and(|t| t.is_zero()) {
            return Err(Error::Config(
                "load balancer: timeout must be above zero (without_timeout() turns it off)".into(),
            ));
        }
        let mut router = Router::new(self.unknown_host, self.classifier, self.timeout);
        router.scheme_policy = self.scheme_policy;
        router.endpoint_in_requests = self.endpoint_in_requests;
        for spec in self.services {
            let pool = match spec {
                ServiceSpec::Built(pool) => pool,
                ServiceSpec::Source(name, builder) => {
                    router::validate_name(&name)?;
                    let mut builder = (*builder).ready_timeout(self.ready_timeout);
                    if !builder.has_balancer() {
                        builder = builder.balancer_arc(default_balancer.clone());
                    }
                    if let Some(configure) = &self.configure {
                        builder = configure(builder);
                    }
                    builder.build()
                }
            };
            router.insert(pool)?;
        }
        Ok(LoadBalanceLayer {
            router: Arc::new(router),
        })
    }
}

impl fmt::Debug for LoadBalanceBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadBalanceBuilder")
            .field("services", &self.services.len())
            .field("balancer", &self.balancer)
            .field("ready_timeout", &self.ready_timeout)
            .field("unknown_host", &self.unknown_host)
            .field("classifier", &self.classifier)
            .field("timeout", &self.timeout)
            .finish()
    }
}
