//! Request bodies kept for replay: buffered up to a limit, or sent once.

use std::fmt;
use std::future::poll_fn;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::BoxError;
use crate::retry::not_replayable::NotReplayable;

/// The default most bytes of a request body buffered for replay: 64 KiB.
pub const DEFAULT_REPLAY_LIMIT: usize = 64 * 1024;

/// A request body held in memory so that every attempt can send it.
///
/// The body of the template an `http::Request<B>`'s attempts are copied
/// from (see [`ReplayableRequest`](crate::ReplayableRequest)). Cloning it
/// is cheap: the bytes are shared.
#[derive(Debug, Clone, Default)]
pub struct Buffered {
    data: Bytes,
    // Boxed: rare, and a request's template is moved around.
    trailers: Option<Box<HeaderMap>>,
}

impl Buffered {
    /// A buffered body of `data` with no trailers.
    ///
    /// ```
    /// use tower_lb::retry::Buffered;
    ///
    /// let body = Buffered::new("hello");
    /// assert_eq!(body.data(), "hello");
    /// ```
    pub fn new(data: impl Into<Bytes>) -> Self {
        Self {
            data: data.into(),
            trailers: None,
        }
    }

    /// The body's bytes.
    pub fn data(&self) -> &Bytes {
        &self.data
    }

    /// The body's trailers, if it had any.
    pub fn trailers(&self) -> Option<&HeaderMap> {
        self.trailers.as_deref()
    }
}

pin_project! {
    /// The body of every attempt the retry layer sends for an
    /// `http::Request<B>`: a copy of the buffered body, or, for a request
    /// sent once, the original body passed through.
    ///
    /// The inner client therefore serves `http::Request<ReplayBody<B>>`;
    /// with hyper-util, build it as `Client<_, ReplayBody<B>>`.
    ///
    /// ```
    /// use http_body::Body;
    /// use tower_lb::retry::{Buffered, ReplayBody};
    ///
    /// let body: ReplayBody<String> = ReplayBody::from(Buffered::new("hello"));
    /// assert_eq!(body.size_hint().exact(), Some(5));
    /// ```
    pub struct ReplayBody<B> {
        #[pin]
        inner: Inner<B>,
    }
}

pin_project! {
    #[project = InnerProj]
    enum Inner<B> {
        Buffered { data: Option<Bytes>, trailers: Option<Box<HeaderMap>> },
        Streaming { #[pin] body: B },
    }
}

impl<B> ReplayBody<B> {
    /// The original body, passed through untouched (a request sent once).
    pub fn streaming(body: B) -> Self {
        Self {
            inner: Inner::Streaming { body },
        }
    }

    /// True when this body is a buffered copy, false when it passes the
    /// original body through.
    pub fn is_buffered(&self) -> bool {
        matches!(self.inner, Inner::Buffered { .. })
    }
}

impl<B> From<Buffered> for ReplayBody<B> {
    fn from(buffered: Buffered) -> Self {
        Self {
            inner: Inner::Buffered {
                data: (!buffered.data.is_empty()).then_some(buffered.data),
                trailers: buffered.trailers,
            },
        }
    }
}

impl<B> fmt::Debug for ReplayBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.inner {
            Inner::Buffered { data, .. } => f
                .debug_struct("ReplayBody")
                .field("buffered", &data.as_ref().map_or(0, Bytes::len))
                .finish(),
            Inner::Streaming { .. } => f
                .debug_struct("ReplayBody")
                .field("streaming", &true)
                .finish(),
        }
    }
}

impl<B> Body for ReplayBody<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project().inner.project() {
            InnerProj::Buffered { data, trailers } => {
                if let Some(data) = data.take() {
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Poll::Ready(trailers.take().map(|t| Ok(Frame::trailers(*t))))
            }
            InnerProj::Streaming { body } => Poll::Ready(match ready!(body.poll_frame(cx)) {
                Some(Ok(frame)) => Some(Ok(frame.map_data(|mut d| d.copy_to_bytes(d.remaining())))),
                Some(Err(e)) => Some(Err(e.into())),
                None => None,
            }),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Buffered { data, trailers } => data.is_none() && trailers.is_none(),
            Inner::Streaming { body } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Buffered { data, .. } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            Inner::Streaming { body } => body.size_hint(),
        }
    }
}

/// What [`buffer`] made of a body: kept, or given back with the reason.
pub(crate) type Buffering<B> = Result<Buffered, (ReplayBody<B>, NotReplayable)>;

/// Reads `body` into memory when its exact length is known and at most
/// `limit`; otherwise gives it back untouched with the reason. Fails when
/// the body fails, or yields more than `limit` bytes despite its length.
pub(crate) async fn buffer<B>(body: B, limit: usize) -> Result<Buffering<B>, BoxError>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    let size = match body.size_hint().exact() {
        None => return Ok(Err((ReplayBody::streaming(body), NotReplayable::Streaming))),
        Some(size) if size > limit as u64 => {
            let reason = NotReplayable::TooLarge { limit, size };
            return Ok(Err((ReplayBody::streaming(body), reason)));
        }
        Some(size) => size,
    };
    let mut body = std::pin::pin!(body);
    let mut first: Option<Bytes> = None;
    let mut joined: Option<BytesMut> = None;
    let mut len = 0usize;
    let mut trailers: Option<Box<HeaderMap>> = None;
    while let Some(frame) = poll_fn(|cx| body.as_mut().poll_frame(cx)).await {
        let frame = match frame.map_err(Into::into)?.into_data() {
            Ok(mut data) => {
                let n = data.remaining();
                len = len.saturating_add(n);
                if len > limit {
                    return Err(format!(
                        "the request body declared {size} bytes but yielded more than {limit}"
                    )
                    .into());
                }
                let chunk = data.copy_to_bytes(n);
                match (&mut first, &mut joined) {
                    (None, None) => first = Some(chunk),
                    (Some(head), None) => {
                        let mut buf = BytesMut::with_capacity(size.max(len as u64) as usize);
                        buf.extend_from_slice(head);
                        buf.extend_from_slice(&chunk);
                        first = None;
                        joined = Some(buf);
                    }
                    (_, Some(buf)) => buf.extend_from_slice(&chunk),
                }
                continue;
            }
            Err(frame) => frame,
        };
        if let Ok(more) = frame.into_trailers() {
            match &mut trailers {
                Some(all) => all.extend(more),
                None => trailers = Some(Box::new(more)),
            }
        }
    }
    let data = match (first, joined) {
        (_, Some(buf)) => buf.freeze(),
        (Some(data), None) => data,
        (None, None) => Bytes::new(),
    };
    Ok(Ok(Buffered { data, trailers }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A body of several chunks with an exact length, then trailers.
    struct Chunks {
        chunks: Vec<&'static str>,
        trailers: bool,
    }

    impl Body for Chunks {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            if !self.chunks.is_empty() {
                let chunk = self.chunks.remove(0);
                return Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(chunk.as_bytes())))));
            }
            if std::mem::take(&mut self.trailers) {
                let mut t = HeaderMap::new();
                t.insert("x-sum", "1".parse().unwrap());
                return Poll::Ready(Some(Ok(Frame::trailers(t))));
            }
            Poll::Ready(None)
        }

        fn size_hint(&self) -> SizeHint {
            SizeHint::with_exact(self.chunks.iter().map(|c| c.len() as u64).sum())
        }
    }

    async fn read_all<B: Body<Data = Bytes>>(body: B) -> (Vec<u8>, Option<HeaderMap>)
    where
        B::Error: std::fmt::Debug,
    {
        let mut body = std::pin::pin!(body);
        let mut data = Vec::new();
        let mut trailers = None;
        while let Some(frame) = poll_fn(|cx| body.as_mut().poll_frame(cx)).await {
            match frame.unwrap().into_data() {
                Ok(d) => data.extend_from_slice(&d),
                Err(f) => trailers = f.into_trailers().ok(),
            }
        }
        (data, trailers)
    }

    #[tokio::test]
    async fn chunks_and_trailers_are_kept_and_replayed() {
        let body = Chunks {
            chunks: vec!["hel", "lo ", "world"],
            trailers: true,
        };
        let buffered = buffer(body, 64).await.unwrap().unwrap();
        assert_eq!(buffered.data(), "hello world");
        for _ in 0..2 {
            let replay: ReplayBody<Chunks> = ReplayBody::from(buffered.clone());
            assert_eq!(replay.size_hint().exact(), Some(11));
            let (data, trailers) = read_all(replay).await;
            assert_eq!(data, b"hello world");
            assert_eq!(trailers.unwrap()["x-sum"], "1");
        }
    }

    #[tokio::test]
    async fn too_large_and_streaming_bodies_pass_through_untouched() {
        let body = Chunks {
            chunks: vec!["0123456789"],
            trailers: false,
        };
        let (body, reason) = buffer(body, 4).await.unwrap().unwrap_err();
        assert_eq!(reason, NotReplayable::TooLarge { limit: 4, size: 10 });
        assert!(reason.to_string().contains("replay limit of 4 bytes"));
        assert!(!body.is_buffered());
        assert_eq!(read_all(body).await.0, b"0123456789");

        // No exact length: a stream.
        let stream = Chunks {
            chunks: vec!["x"],
            trailers: false,
        };
        let stream = Unsized(stream);
        let (_, reason) = buffer(stream, 1024).await.unwrap().unwrap_err();
        assert_eq!(reason, NotReplayable::Streaming);
    }

    struct Unsized(Chunks);

    impl Body for Unsized {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            Pin::new(&mut self.0).poll_frame(cx)
        }
    }

    #[tokio::test]
    async fn an_empty_body_is_replayable() {
        let buffered = buffer(String::new(), 8).await.unwrap().unwrap();
        let replay: ReplayBody<String> = ReplayBody::from(buffered);
        assert!(replay.is_end_stream());
    }
}
