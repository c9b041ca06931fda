//! A response body that keeps its attempt in flight until its last byte,
//! and records the attempt's outcome when it ends, fails or is dropped.

use std::error::Error as StdError;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use http::{HeaderMap, StatusCode};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::Picked;
use crate::classify::{Classify, FailureKind, Outcome, Verdict};
use crate::request::BalancedResponse;

/// The record of one attempt that its response body carries to the end:
/// the pick (in flight until then), the head's verdict, and the classifier
/// that may revise it on the trailers or a body error. Recorded exactly
/// once, when the body ends, fails or is dropped.
pub struct BodyGuard {
    picked: Option<Picked>,
    status: StatusCode,
    verdict: Verdict,
    classifier: Arc<dyn Classify>,
}

impl BodyGuard {
    pub(crate) fn new(
        picked: Picked,
        status: StatusCode,
        verdict: Verdict,
        classifier: Arc<dyn Classify>,
    ) -> Self {
        Self {
            picked: Some(picked),
            status,
            verdict,
            classifier,
        }
    }

    /// The body ended, with `trailers` if it had some.
    fn end(&mut self, trailers: Option<&HeaderMap>) {
        let Some(picked) = self.picked.take() else {
            return;
        };
        let verdict = trailers
            .and_then(|t| self.classifier.classify_trailers(self.status, t))
            .unwrap_or(self.verdict);
        picked.complete(verdict.outcome);
    }

    /// The body failed before its end.
    fn fail(&mut self, error: &(dyn StdError + 'static)) {
        if let Some(picked) = self.picked.take() {
            picked.complete(self.classifier.classify_body_error(error).outcome);
        }
    }
}

impl Drop for BodyGuard {
    fn drop(&mut self) {
        // The caller stopped reading: not the endpoint's doing, the head's
        // verdict stands, unless the pool counts a body abandoned that late
        // as the endpoint's timeout (one that trickles or stalls).
        if let Some(picked) = self.picked.take() {
            let outcome = if picked.body_abandoned_too_late() {
                Outcome::Failure(FailureKind::Timeout)
            } else {
                self.verdict.outcome
            };
            picked.complete(outcome);
        }
    }
}

impl fmt::Debug for BodyGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BodyGuard")
            .field("endpoint", &self.picked.as_ref().map(Picked::endpoint))
            .field("verdict", &self.verdict)
            .finish()
    }
}

pin_project! {
    /// The body of a response from a balanced `http::Response<B>`: the
    /// body as it was, and the attempt's record, which ends with it (see
    /// [`Picked`] for what is recorded when).
    pub struct TrackedBody<B> {
        #[pin]
        inner: B,
        guard: Option<BodyGuard>,
    }
}

impl<B> TrackedBody<B> {
    pub(crate) fn new(inner: B, guard: Option<BodyGuard>) -> Self {
        Self { inner, guard }
    }

    /// The body inside.
    pub fn get_ref(&self) -> &B {
        &self.inner
    }

    /// The body inside, unwrapped: from here on, the attempt counts as
    /// done.
    pub fn into_inner(self) -> B {
        self.inner
    }
}

/// A body error, as the classifier sees it: the body's own error type need
/// not be a `std::error::Error` (a boxed one is not), so its message is
/// what travels.
#[derive(Debug)]
struct BodyFailed(String);

impl fmt::Display for BodyFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the response body failed: {}", self.0)
    }
}

impl StdError for BodyFailed {}

impl<B> Body for TrackedBody<B>
where
    B: Body,
    B::Error: fmt::Display,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let mut inner = this.inner;
        let frame = ready!(inner.as_mut().poll_frame(cx));
        if let Some(guard) = this.guard {
            match &frame {
                None => guard.end(None),
                Some(Ok(frame)) if frame.is_trailers() => guard.end(frame.trailers_ref()),
                Some(Ok(_)) => {}
                Some(Err(error)) => guard.fail(&BodyFailed(error.to_string())),
            }
            // A body that knows it has ended may not be polled again.
            if frame.as_ref().is_some_and(|f| f.is_ok()) && inner.is_end_stream() {
                guard.end(None);
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B: fmt::Debug> fmt::Debug for TrackedBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrackedBody")
            .field("inner", &self.inner)
            .field("guard", &self.guard)
            .finish()
    }
}

/// A response type whose body the load-balancing layer can follow to its
/// end. Implemented for `http::Response<B>` (the body becomes a
/// [`TrackedBody<B>`]) and, with the `reqwest` feature, `reqwest::Response`
/// (which stays a `reqwest::Response`: its body is wrapped inside it, and
/// its URL, status, headers and extensions are kept).
pub trait TrackBody: BalancedResponse + Sized {
    /// The response handed to the caller.
    type Tracked: BalancedResponse;

    /// The response with `guard` riding in its body.
    fn track(self, guard: BodyGuard) -> Self::Tracked;

    /// The response as the caller's type, with nothing to record (a
    /// request passed through unbalanced).
    fn untracked(self) -> Self::Tracked;
}

impl<B> TrackBody for http::Response<B>
where
    B: Send + 'static,
{
    type Tracked = http::Response<TrackedBody<B>>;

    fn track(self, guard: BodyGuard) -> Self::Tracked {
        self.map(|body| TrackedBody::new(body, Some(guard)))
    }

    fn untracked(self) -> Self::Tracked {
        self.map(|body| TrackedBody::new(body, None))
    }
}

#[cfg(feature = "reqwest")]
impl TrackBody for reqwest::Response {
    type Tracked = reqwest::Response;

    fn track(self, guard: BodyGuard) -> Self::Tracked {
        use reqwest::ResponseBuilderExt;

        let url = self.url().clone();
        let (mut parts, body) = http::Response::<reqwest::Body>::from(self).into_parts();
        // The conversion drops the URL; reqwest's builder extension is the
        // public way to hand it back, into the builder's map. The builder
        // is lent the response's own map for it (hyper-util's connection
        // info is there already), so that no second map is made and
        // merged.
        let mut lender = http::response::Builder::new();
        if let Some(extensions) = lender.extensions_mut() {
            *extensions = std::mem::take(&mut parts.extensions);
        }
        let mut with_url = lender.url(url);
        if let Some(extensions) = with_url.extensions_mut() {
            parts.extensions = std::mem::take(extensions);
        }
        let body = reqwest::Body::wrap(TrackedBody::new(body, Some(guard)));
        reqwest::Response::from(http::Response::from_parts(parts, body))
    }

    fn untracked(self) -> Self::Tracked {
        self
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use bytes::Bytes;
    use http_body::Frame;

    use super::*;
    use crate::classify::DefaultClassifier;
    use crate::discover::Fixed;
    use crate::{Picked, Pool};

    /// A body of `frames`, then an error if `fails`.
    struct Scripted {
        frames: Vec<&'static str>,
        fails: bool,
    }

    impl Body for Scripted {
        type Data = Bytes;
        type Error = std::io::Error;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
            if !self.frames.is_empty() {
                let data = self.frames.remove(0);
                return Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(data.as_bytes())))));
            }
            if std::mem::take(&mut self.fails) {
                let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
                return Poll::Ready(Some(Err(reset)));
            }
            Poll::Ready(None)
        }
    }

    async fn picked() -> (Pool, Picked) {
        let pool = Pool::builder("greet", Fixed::new(["127.0.0.1:1"]).unwrap()).build();
        pool.ready().await.unwrap();
        let mut picked = pool.pick().unwrap();
        picked.start_timer();
        picked.record_head(false);
        (pool, picked)
    }

    fn guard(picked: Picked) -> BodyGuard {
        BodyGuard::new(
            picked,
            StatusCode::OK,
            Verdict::SUCCESS,
            Arc::new(DefaultClassifier),
        )
    }

    async fn drain<B: Body + Unpin>(mut body: B) -> Result<(), B::Error> {
        while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
        {
            frame?;
        }
        Ok(())
    }

    fn counts(pool: &Pool) -> (usize, u64, u64) {
        let stats = pool.stats();
        let e = &stats.endpoints[0];
        (e.in_flight, e.requests, e.failures)
    }

    #[tokio::test]
    async fn in_flight_until_the_last_byte_then_one_success() {
        let (pool, picked) = picked().await;
        let mut body = TrackedBody::new(
            Scripted {
                frames: vec!["a", "b"],
                fails: false,
            },
            Some(guard(picked)),
        );
        assert_eq!(counts(&pool), (1, 0, 0));
        let first = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
        assert!(first.is_some());
        assert_eq!(counts(&pool), (1, 0, 0), "still reading");
        drain(body).await.unwrap();
        assert_eq!(counts(&pool), (0, 1, 0));
    }

    #[tokio::test]
    async fn a_body_error_is_the_endpoints_failure() {
        let (pool, picked) = picked().await;
        let body = TrackedBody::new(
            Scripted {
                frames: vec!["a"],
                fails: true,
            },
            Some(guard(picked)),
        );
        assert!(drain(body).await.is_err());
        assert_eq!(counts(&pool), (0, 1, 1));
    }

    #[tokio::test]
    async fn a_dropped_body_keeps_the_heads_verdict() {
        let (pool, picked) = picked().await;
        let body = TrackedBody::new(
            Scripted {
                frames: vec!["a"],
                fails: true,
            },
            Some(guard(picked)),
        );
        drop(body);
        assert_eq!(counts(&pool), (0, 1, 0));
    }

    #[tokio::test]
    async fn an_untracked_body_records_nothing() {
        let body = TrackedBody::new(http_body_util::Full::new(Bytes::from_static(b"x")), None);
        let mapped: Result<(), Infallible> = drain(body).await;
        assert!(mapped.is_ok());
    }
}
