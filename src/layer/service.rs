use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower_service::Service;

use crate::attempt::AttemptContext;
use crate::balance::{Avoid, PickContext, RequestHashKey};
use crate::layer::body::TrackBody;
use crate::layer::future::{Balanced, ResponseFuture};
use crate::layer::router::Router;
use crate::pool::CachedPool;
#[cfg(feature = "reqwest")]
use crate::request::WithExtensions;
use crate::request::{BalancedRequest, OutgoingRequest};
use crate::stats::PoolStats;
use crate::{BoxError, Error, Picked, Pool};

/// The service made by [`LoadBalanceLayer`](crate::LoadBalanceLayer): balances
/// each request across the endpoints of the service its host names.
///
/// The inner service must be `Clone` (HTTP clients are: reqwest's, hyper-
/// util's): a request that arrives before its pool's first discovery answer
/// waits on a ready clone of the inner service, so the caller's handle stays
/// usable meanwhile.
#[derive(Clone)]
pub struct LoadBalance<S> {
    inner: S,
    router: Arc<Router>,
    /// One cached view per pool, in the router's order: this clone's picks
    /// skip the shared snapshot load.
    pools: Pools,
}

/// The cached views of a [`LoadBalance`]'s pools. One pool is held without
/// a vector: the retry layer clones the service once per call, and a clone
/// then allocates nothing.
#[derive(Clone)]
enum Pools {
    One(CachedPool),
    Many(Vec<CachedPool>),
}

impl Pools {
    fn new(router: &Router) -> Self {
        let mut pools: Vec<CachedPool> = router.pools().map(Pool::cached).collect();
        match (pools.pop(), pools.is_empty()) {
            (Some(only), true) => Pools::One(only),
            (Some(last), false) => {
                pools.push(last);
                Pools::Many(pools)
            }
            (None, _) => Pools::Many(pools),
        }
    }

    /// The view of the pool at `index` of the router's pools.
    #[inline]
    fn get_mut(&mut self, index: usize) -> Option<&mut CachedPool> {
        match self {
            Pools::One(pool) => (index == 0).then_some(pool),
            Pools::Many(pools) => pools.get_mut(index),
        }
    }
}

impl<S> LoadBalance<S> {
    pub(crate) fn new(inner: S, router: Arc<Router>) -> Self {
        let pools = Pools::new(&router);
        Self {
            inner,
            router,
            pools,
        }
    }

    /// The pool serving `service`, if configured.
    pub fn pool(&self, service: &str) -> Option<&Pool> {
        self.router.get(service)
    }

    /// Stats for every pool.
    pub fn stats(&self) -> Vec<PoolStats> {
        self.router.pools().map(Pool::stats).collect()
    }

    /// The inner client.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S> LoadBalance<S> {
    /// Readies the inner client.
    fn ready_inner<R>(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>>
    where
        S: Service<R>,
        S::Error: Into<BoxError>,
    {
        self.inner
            .poll_ready(cx)
            .map_err(|e| Error::inner_from(None, None, e))
    }

    /// Routes, picks and sends one request: the `call` of every request
    /// type the layer serves.
    #[inline]
    fn balance<Req>(&mut self, request: Req) -> ResponseFuture<S::Future, S::Response>
    where
        Req: OutgoingRequest,
        S: Service<Req::Outgoing> + Clone + Send + 'static,
        S::Response: TrackBody,
        S::Error: Into<BoxError>,
        S::Future: Send + 'static,
    {
        let index = match request.host() {
            Some(host) => self.router.index_of(host),
            None => None,
        };
        let Some(cached) = index.and_then(|i| self.pools.get_mut(i)) else {
            return match self.router.unrouted(&request) {
                Ok(()) => ResponseFuture::pass_through(self.inner.call(request.into_outgoing())),
                Err(error) => ResponseFuture::failed(error),
            };
        };
        let router = &self.router;
        match pick_for(cached, &request) {
            Ok(picked) => {
                match Balanced::dispatch(&mut self.inner, request, cached.pool(), picked, router) {
                    Ok(balanced) => ResponseFuture::balanced(balanced),
                    Err(error) => ResponseFuture::failed(error),
                }
            }
            Err(Error::NotReady { .. }) => {
                // Take the inner service that poll_ready readied; leave a clone.
                let clone = self.inner.clone();
                let mut inner = std::mem::replace(&mut self.inner, clone);
                let mut cached = cached.clone();
                let router = router.clone();
                ResponseFuture::waiting(async move {
                    cached.pool().ready().await?;
                    let picked = pick_for(&mut cached, &request)?;
                    let pool = cached.pool();
                    Balanced::dispatch(&mut inner, request, pool, picked, &router)?.await
                })
            }
            Err(error) => ResponseFuture::failed(error),
        }
    }
}

/// One `Service` impl per request type, each naming the inner client's
/// request type outright (rather than one impl over a projection): with
/// hyper-util's client or any `http::Request` service inside, tower's
/// `client.ready().await?.call(request)` infers the request type as it does
/// for the client alone.
macro_rules! serve {
    ($(#[$doc:meta])* [$($generics:tt)*] $req:ty => $outgoing:ty) => {
        $(#[$doc])*
        impl<S, $($generics)*> Service<$req> for LoadBalance<S>
        where
            S: Service<$outgoing> + Clone + Send + 'static,
            S::Response: TrackBody,
            S::Error: Into<BoxError>,
            S::Future: Send + 'static,
        {
            type Response = <S::Response as TrackBody>::Tracked;
            type Error = Error;
            type Future = ResponseFuture<S::Future, S::Response>;

            fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
                self.ready_inner(cx)
            }

            fn call(&mut self, request: $req) -> Self::Future {
                self.balance(request)
            }
        }
    };
}

serve!(
    /// `http::Request`s, for hyper-util's client or any tower HTTP client.
    [B: Send + 'static] http::Request<B> => http::Request<B>
);
#[cfg(feature = "reqwest")]
serve!(
    /// `reqwest::Request`s, for a `reqwest::Client`.
    [] reqwest::Request => reqwest::Request
);
#[cfg(feature = "reqwest")]
serve!(
    /// `reqwest::Request`s with extensions of their own: what the retry
    /// layer sends (an [`AttemptContext`] rides in them). Over a
    /// `reqwest::Client` the layer serves both, so
    /// `client.ready().await?.call(request)` must name the type
    /// (`ServiceExt::<reqwest::Request>::ready(&mut client)`); `oneshot`
    /// infers it from the request.
    [] WithExtensions<reqwest::Request> => reqwest::Request
);

/// Picks for `request` through this clone's cached view of the pool.
fn pick_for<Req: BalancedRequest>(pool: &mut CachedPool, request: &Req) -> Result<Picked, Error> {
    let (service, pick) = pool.picker();
    pick_request(service, request, pick)
}

/// Picks with `pick` for `request`: its path and headers for hashing
/// balancers, its own hash key, and the endpoints it should avoid (from its
/// attempt context, or an [`Avoid`] of its own) for retries.
pub(crate) fn pick_request<Req: BalancedRequest>(
    service: &str,
    request: &Req,
    pick: impl FnOnce(&PickContext<'_>) -> Result<Picked, Error>,
) -> Result<Picked, Error> {
    let mut ctx = PickContext::new(service)
        .with_path(request.path())
        .with_headers(request.headers());
    if let Some(key) = request.extensions().and_then(|e| e.get::<RequestHashKey>()) {
        ctx = ctx.with_hash_key(key.0);
    }
    let avoid = match AttemptContext::of(request) {
        Some(context) => Some(context.avoid()),
        None => request.extensions().and_then(|e| e.get::<Avoid>()),
    };
    match avoid {
        Some(avoid) if !avoid.is_empty() => pick(&ctx.with_avoid(avoid)),
        _ => pick(&ctx),
    }
}

impl<S: fmt::Debug> fmt::Debug for LoadBalance<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadBalance")
            .field("inner", &self.inner)
            .field("router", &self.router)
            .finish()
    }
}
