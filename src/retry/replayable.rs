//! Requests the retry layer can send more than once.
//!
//! The retry layer needs one thing more from a request than the
//! load-balancing layer: to send it again. [`ReplayableRequest`] turns a request into something it can copy per
//! attempt: `http::Request<B>` bodies are buffered (up to a limit) into a
//! [`ReplayBody`], `reqwest::Request`s use `try_clone`.

use std::any::Any;
use std::future::Future;

use bytes::Bytes;

use crate::BoxError;
use crate::request::BalancedRequest;
#[cfg(feature = "reqwest")]
use crate::request::WithExtensions;
use crate::retry::not_replayable::NotReplayable;
use crate::retry::replay::{Buffered, ReplayBody};

/// A request the retry layer can send more than once.
///
/// [`prepare`](Self::prepare) runs once per call, before the first attempt:
/// it makes a [`template`](Self::Template) that every attempt is copied
/// from, or, when the body cannot be kept, gives the request back to be
/// sent once with the reason. Implemented for `http::Request<B>` (the body
/// is buffered when its exact length is known and within the limit; every
/// attempt carries a [`ReplayBody`]) and `reqwest::Request` (in-memory
/// bodies, through `try_clone`; the limit does not apply, the body is
/// already in memory).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tower_lb::BoxError> {
/// use bytes::Bytes;
/// use tower_lb::{Prepared, ReplayableRequest};
///
/// let request = http::Request::post("http://greet/api").body(String::from("hello"))?;
/// match request.prepare(64 * 1024).await? {
///     Prepared::Replayable(template) => {
///         let first = <http::Request<String>>::replay(&template).expect("copies");
///         assert_eq!(first.uri(), "http://greet/api");
///     }
///     Prepared::Once { reason, .. } => panic!("not replayable: {reason}"),
/// }
/// # Ok(()) }
/// ```
pub trait ReplayableRequest: BalancedRequest + Sized {
    /// What each attempt sends to the inner service.
    type Sent: BalancedRequest;

    /// What the attempts are copied from. It is also the view of the
    /// request a retry policy's closure sees.
    type Template: BalancedRequest + Sync;

    /// Makes the template, reading a body of known length up to `limit`
    /// bytes. Fails only when reading the body fails.
    fn prepare(
        self,
        limit: usize,
    ) -> impl Future<Output = Result<Prepared<Self::Sent, Self::Template>, BoxError>> + Send;

    /// [`prepare`](Self::prepare) without waiting, when there is nothing to
    /// read (no body, or one already in memory): what `prepare` would make,
    /// or the request back (`Err`) for `prepare` to read. The retry layer
    /// tries it first, which spares a call the boxed future `prepare` is
    /// awaited in. The default gives the request back.
    fn prepare_now(self, limit: usize) -> Result<Prepared<Self::Sent, Self::Template>, Self> {
        let _ = limit;
        Err(self)
    }

    /// A copy of the template, ready to send; `None` when it cannot be
    /// copied after all.
    fn replay(template: &Self::Template) -> Option<Self::Sent>;

    /// The request as it is, for a call that makes one attempt only.
    fn once(self) -> Self::Sent;
}

/// What [`ReplayableRequest::prepare`] made of a request.
#[derive(Debug)]
pub enum Prepared<Sent, Template> {
    /// Every attempt is copied from this template.
    Replayable(Template),
    /// The request can be sent once only.
    Once {
        /// The request, to send as it is.
        request: Sent,
        /// The request without its body, for retry policies to look at.
        view: Template,
        /// Why it cannot be sent again.
        reason: NotReplayable,
    },
}

impl<B> ReplayableRequest for http::Request<B>
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Sent = http::Request<ReplayBody<B>>;
    type Template = http::Request<Buffered>;

    async fn prepare(self, limit: usize) -> Result<Prepared<Self::Sent, Self::Template>, BoxError> {
        let (parts, body) = self.into_parts();
        match crate::retry::replay::buffer(body, limit).await? {
            Ok(buffered) => Ok(Prepared::Replayable(http::Request::from_parts(
                parts, buffered,
            ))),
            Err((body, reason)) => {
                let view = view_of(&parts);
                Ok(Prepared::Once {
                    request: http::Request::from_parts(parts, body),
                    view,
                    reason,
                })
            }
        }
    }

    fn prepare_now(mut self, limit: usize) -> Result<Prepared<Self::Sent, Self::Template>, Self> {
        // A body that has ended has nothing to buffer, nor trailers; one
        // of the owned in-memory types is its bytes.
        let data = if self.body().is_end_stream() {
            Bytes::new()
        } else {
            match in_memory(self.body_mut(), limit) {
                Some(data) => data,
                None => return Err(self),
            }
        };
        let (parts, _) = self.into_parts();
        Ok(Prepared::Replayable(http::Request::from_parts(
            parts,
            Buffered::new(data),
        )))
    }

    fn replay(template: &Self::Template) -> Option<Self::Sent> {
        let mut request = http::Request::new(ReplayBody::from(template.body().clone()));
        *request.method_mut() = template.method().clone();
        *request.uri_mut() = template.uri().clone();
        *request.version_mut() = template.version();
        *request.headers_mut() = template.headers().clone();
        *request.extensions_mut() = template.extensions().clone();
        Some(request)
    }

    fn once(self) -> Self::Sent {
        self.map(ReplayBody::streaming)
    }
}

/// The bytes of `body` when it is a `String` (the in-memory body type
/// `http-body` itself implements) of at most `limit` bytes, taken out of
/// it: what buffering it would make, without the boxed future that reading
/// a body of any type is awaited in. `None` leaves it untouched.
fn in_memory<B: 'static>(body: &mut B, limit: usize) -> Option<Bytes> {
    let any: &mut dyn Any = body;
    let text = any.downcast_mut::<String>()?;
    (text.len() <= limit).then(|| Bytes::from(std::mem::take(text)))
}

/// The request's head with an empty body.
fn view_of(parts: &http::request::Parts) -> http::Request<Buffered> {
    let mut view = http::Request::new(Buffered::default());
    *view.method_mut() = parts.method.clone();
    *view.uri_mut() = parts.uri.clone();
    *view.version_mut() = parts.version;
    *view.headers_mut() = parts.headers.clone();
    *view.extensions_mut() = parts.extensions.clone();
    view
}

/// `reqwest::Request`s keep their extensions private: every attempt goes
/// down as a [`WithExtensions`], which carries the attempt's context; the
/// load-balancing layer hands the request inside to the client.
#[cfg(feature = "reqwest")]
impl ReplayableRequest for reqwest::Request {
    type Sent = WithExtensions<reqwest::Request>;
    type Template = WithExtensions<reqwest::Request>;

    fn prepare(
        self,
        limit: usize,
    ) -> impl Future<Output = Result<Prepared<Self::Sent, Self::Template>, BoxError>> + Send {
        WithExtensions::new(self).prepare(limit)
    }

    fn prepare_now(self, limit: usize) -> Result<Prepared<Self::Sent, Self::Template>, Self> {
        WithExtensions::new(self)
            .prepare_now(limit)
            .map_err(|request| request.into_parts().0)
    }

    fn replay(template: &Self::Template) -> Option<Self::Sent> {
        WithExtensions::replay(template)
    }

    fn once(self) -> Self::Sent {
        WithExtensions::new(self)
    }
}

/// A `reqwest::Request` with extensions of its own (a
/// [`RetryMode`](crate::retry::RetryMode), say): copied per attempt with
/// `try_clone`, extensions and all.
#[cfg(feature = "reqwest")]
impl ReplayableRequest for WithExtensions<reqwest::Request> {
    type Sent = WithExtensions<reqwest::Request>;
    type Template = WithExtensions<reqwest::Request>;

    async fn prepare(
        self,
        _limit: usize,
    ) -> Result<Prepared<Self::Sent, Self::Template>, BoxError> {
        Ok(prepared(self))
    }

    fn prepare_now(self, _limit: usize) -> Result<Prepared<Self::Sent, Self::Template>, Self> {
        Ok(prepared(self))
    }

    fn replay(template: &Self::Template) -> Option<Self::Sent> {
        let request = template.request().try_clone()?;
        Some(WithExtensions::from_parts(
            request,
            template.extensions().clone(),
        ))
    }

    fn once(self) -> Self::Sent {
        self
    }
}

/// What a `reqwest::Request` makes, at once: the request itself when its
/// body is in memory (it clones), sent once otherwise.
#[cfg(feature = "reqwest")]
fn prepared(
    this: WithExtensions<reqwest::Request>,
) -> Prepared<WithExtensions<reqwest::Request>, WithExtensions<reqwest::Request>> {
    // A body in memory clones; a stream does not. The limit does not
    // apply: the body is in memory already.
    let request = this.request();
    if request.body().is_none_or(|body| body.as_bytes().is_some()) {
        return Prepared::Replayable(this);
    }
    let mut view = reqwest::Request::new(request.method().clone(), request.url().clone());
    *view.headers_mut() = request.headers().clone();
    *view.version_mut() = request.version();
    *view.timeout_mut() = request.timeout().copied();
    let view = WithExtensions::from_parts(view, this.extensions().clone());
    Prepared::Once {
        request: this,
        view,
        reason: NotReplayable::Streaming,
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::{Empty, Full};

    use super::*;

    #[test]
    fn a_request_with_an_ended_body_is_prepared_at_once() {
        let request = http::Request::get("http://greet/a")
            .header("accept", "text/plain")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let Ok(Prepared::Replayable(template)) = request.prepare_now(1024) else {
            panic!("an ended body has nothing to read");
        };
        assert_eq!(template.uri(), "http://greet/a");
        assert_eq!(template.headers()["accept"], "text/plain");
        assert!(template.body().data().is_empty());
    }

    #[test]
    fn a_string_body_is_prepared_at_once_within_the_limit() {
        let request = http::Request::post("http://greet/a")
            .header("accept", "text/plain")
            .body(String::from("hello"))
            .unwrap();
        let Ok(Prepared::Replayable(template)) = request.prepare_now(5) else {
            panic!("a string is in memory");
        };
        assert_eq!(template.body().data(), "hello");
        assert_eq!(template.headers()["accept"], "text/plain");
        // Past the limit: left for `prepare`, which sends it once.
        let request = http::Request::post("http://greet/a")
            .body(String::from("hello"))
            .unwrap();
        let Err(request) = request.prepare_now(4) else {
            panic!("over the limit");
        };
        assert_eq!(request.body(), "hello");
    }

    #[test]
    fn a_request_with_a_body_to_read_is_given_back() {
        let request = http::Request::post("http://greet/a")
            .body(Full::new(Bytes::from_static(b"hello")))
            .unwrap();
        let Err(request) = request.prepare_now(1024) else {
            panic!("a body to read is prepared by `prepare`");
        };
        assert_eq!(request.method(), http::Method::POST);
    }

    #[cfg(feature = "reqwest")]
    #[test]
    fn a_reqwest_request_is_prepared_at_once() {
        let mut request =
            reqwest::Request::new(http::Method::POST, "http://greet/a".parse().unwrap());
        *request.body_mut() = Some("hello".into());
        let Ok(Prepared::Replayable(template)) = request.prepare_now(1024) else {
            panic!("a body in memory clones");
        };
        let copy = <reqwest::Request as ReplayableRequest>::replay(&template).unwrap();
        assert_eq!(
            copy.request().body().and_then(|b| b.as_bytes()),
            Some(&b"hello"[..])
        );
    }
}
