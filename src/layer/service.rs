use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower_service::Service;

use crate::balance::{Avoid, PickContext};
use crate::layer::future::{Balanced, ResponseFuture};
use crate::layer::router::{Router, UnknownHost};
use crate::pool::CachedPool;
use crate::request::{BalancedRequest, BalancedResponse};
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
    pools: Vec<CachedPool>,
}

impl<S> LoadBalance<S> {
    pub(crate) fn new(inner: S, router: Arc<Router>) -> Self {
        let pools = router.pools().map(Pool::cached).collect();
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

impl<S, Req> Service<Req> for LoadBalance<S>
where
    Req: BalancedRequest,
    S: Service<Req> + Clone + Send + 'static,
    S::Response: BalancedResponse,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = Error;
    type Future = ResponseFuture<S::Future, S::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner
            .poll_ready(cx)
            .map_err(|e| Error::inner_from(None, None, e))
    }

    fn call(&mut self, request: Req) -> Self::Future {
        let index = match request.host() {
            Some(host) => self.router.index_of(host),
            None => None,
        };
        let Some(cached) = index.and_then(|i| self.pools.get_mut(i)) else {
            return match (self.router.unknown_host, request.host()) {
                (UnknownHost::PassThrough, _) => {
                    ResponseFuture::pass_through(self.inner.call(request))
                }
                (UnknownHost::Reject, Some(host)) => {
                    ResponseFuture::failed(Error::UnknownService {
                        service: host.to_string(),
                    })
                }
                (UnknownHost::Reject, None) => ResponseFuture::failed(Error::MissingHost {
                    uri: request.target(),
                }),
            };
        };
        match pick_for(cached, &request) {
            Ok(picked) => match Balanced::dispatch(&mut self.inner, request, cached.pool(), picked)
            {
                Ok(balanced) => ResponseFuture::balanced(balanced),
                Err(error) => ResponseFuture::failed(error),
            },
            Err(Error::NotReady { .. }) => {
                // Take the inner service that poll_ready readied; leave a clone.
                let clone = self.inner.clone();
                let mut inner = std::mem::replace(&mut self.inner, clone);
                let mut cached = cached.clone();
                // The pick happens later, outside the caller's scope: keep
                // the scoped avoid set (reqwest requests have no extensions).
                let scoped = Avoid::with_current(|avoid| avoid.cloned());
                ResponseFuture::waiting(async move {
                    cached.pool().ready().await?;
                    let picked = match scoped {
                        Some(avoid) => avoid.scope(|| pick_for(&mut cached, &request))?,
                        None => pick_for(&mut cached, &request)?,
                    };
                    Balanced::dispatch(&mut inner, request, cached.pool(), picked)?.await
                })
            }
            Err(error) => ResponseFuture::failed(error),
        }
    }
}

/// Picks for `request`: its path and headers for hashing balancers, and the
/// endpoints it should avoid (from its extensions) for retries.
fn pick_for<Req: BalancedRequest>(pool: &mut CachedPool, request: &Req) -> Result<Picked, Error> {
    let service = pool.pool().service_arc().clone();
    let ctx = PickContext::new(&service)
        .with_path(request.path())
        .with_headers(request.headers());
    match request.extensions().and_then(|e| e.get::<Avoid>()) {
        Some(avoid) => pool.pick_with(&ctx.with_avoid(avoid)),
        None => Avoid::with_current(|scoped| match scoped {
            Some(avoid) => pool.pick_with(&ctx.with_avoid(avoid)),
            None => pool.pick_with(&ctx),
        }),
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
