//! One request balanced around a sending function instead of an inner
//! service: for integrations whose "next step" is not a tower service
//! (reqwest-middleware's `Next`, which borrows its chain).

use std::future::Future;
use std::task::{Context, Poll};

use tower_service::Service;

use crate::layer::body::TrackBody;
use crate::layer::future::Balanced;
use crate::layer::router::Router;
use crate::layer::service::pick_request;
use crate::request::OutgoingRequest;
use crate::{BoxError, Error};

/// Balances `request` as the layer's service does (route by host, wait for
/// the pool's first endpoints, pick, rewrite, follow the answer to its last
/// byte) and sends it with `send`.
pub(crate) async fn balance_with<Req, F, Fut, R, E>(
    router: &Router,
    request: Req,
    send: F,
) -> Result<R::Tracked, Error>
where
    Req: OutgoingRequest,
    F: FnOnce(Req::Outgoing) -> Fut,
    Fut: Future<Output = Result<R, E>>,
    R: TrackBody,
    E: Into<BoxError>,
{
    let mut once = SendOnce(Some(send));
    let pool = request
        .host()
        .and_then(|host| router.index_of(host))
        .and_then(|index| router.pool_at(index));
    let Some(pool) = pool else {
        router.unrouted(&request)?;
        let send = once.0.take().ok_or_else(used_twice)?;
        return match send(request.into_outgoing()).await {
            Ok(response) => Ok(response.untracked()),
            Err(error) => Err(Error::inner_from(None, None, error)),
        };
    };
    pool.ready().await?;
    let picked = pick_request(pool.service(), &request, |ctx| pool.pick_with(ctx))?;
    Balanced::dispatch(&mut once, request, pool, picked, router)?.await
}

fn used_twice() -> Error {
    Error::Config("a request was sent twice by one balanced call".into())
}

/// A sending function as a service that is called once.
struct SendOnce<F>(Option<F>);

impl<F, Fut, Req, R, E> Service<Req> for SendOnce<F>
where
    F: FnOnce(Req) -> Fut,
    Fut: Future<Output = Result<R, E>>,
    E: Into<BoxError>,
{
    type Response = R;
    type Error = BoxError;
    type Future = SendOnceFuture<Fut>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Req) -> Self::Future {
        match self.0.take() {
            Some(send) => SendOnceFuture::Sending {
                future: send(request),
            },
            None => SendOnceFuture::Spent,
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of a [`SendOnce`] call.
    #[project = SendOnceProj]
    enum SendOnceFuture<Fut> {
        Sending { #[pin] future: Fut },
        Spent,
    }
}

impl<Fut, R, E> Future for SendOnceFuture<Fut>
where
    Fut: Future<Output = Result<R, E>>,
    E: Into<BoxError>,
{
    type Output = Result<R, BoxError>;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            SendOnceProj::Sending { future } => future.poll(cx).map_err(Into::into),
            SendOnceProj::Spent => Poll::Ready(Err(used_twice().into())),
        }
    }
}
