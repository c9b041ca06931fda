//! The one request/response abstraction the layers are written against.
//!
//! The load-balancing layer needs little from a request: its host (to find
//! the service), a way to point it at the chosen endpoint, and somewhere to
//! note that endpoint. [`BalancedRequest`] says exactly that, and is
//! implemented for `http::Request<B>` (hyper, hyper-util, any tower HTTP
//! client) and, with the `reqwest` feature, `reqwest::Request`; likewise
//! [`BalancedResponse`] for the responses. Every layer is written once.
//!
//! The retry layer needs one thing more, to send a request again:
//! [`ReplayableRequest`](crate::ReplayableRequest), beside the replay body.

use std::future::Future;
use std::pin::Pin;

use http::header::HOST;
use http::uri::{PathAndQuery, Uri};
use http::{Extensions, HeaderMap, Method, StatusCode};

use crate::{BoxError, Endpoint};

/// An HTTP request that can be balanced.
pub trait BalancedRequest: Send + 'static {
    /// The host named by the request's URI, if any: the logical service.
    fn host(&self) -> Option<&str>;

    /// The request's target, for error messages.
    fn target(&self) -> String;

    /// The request's path, for balancers that hash it.
    fn path(&self) -> &str;

    /// The request's headers.
    fn headers(&self) -> &HeaderMap;

    /// The request's method, for retry policies (idempotent or not).
    fn method(&self) -> &Method;

    /// Points the request at `endpoint`: scheme, host and port replaced;
    /// path and query kept; the `Host` header set to match. On failure the
    /// reason is returned and the request must not be sent.
    fn route_to(&mut self, endpoint: &Endpoint) -> Result<(), String>;

    /// The request's extensions, when the type has public ones.
    fn extensions(&self) -> Option<&Extensions>;

    /// The request's extensions, mutably, when the type has public ones.
    fn extensions_mut(&mut self) -> Option<&mut Extensions>;
}

/// An HTTP response produced by a balanced request.
pub trait BalancedResponse: Send + 'static {
    /// The status code, for outcome classification.
    fn status(&self) -> StatusCode;

    /// The response's headers, for retry policies (`Retry-After`).
    fn headers(&self) -> &HeaderMap;

    /// The response's extensions: the answering endpoint, the attempts.
    fn extensions(&self) -> &Extensions;

    /// The response's extensions, where the answering endpoint is noted.
    fn extensions_mut(&mut self) -> &mut Extensions;

    /// This response with its body read into memory, for a retry layer
    /// that retries bodies cut short
    /// ([`RetryBuilder::buffer_responses`](crate::retry::RetryBuilder::buffer_responses)):
    /// a future of the response with the whole body in it, or the
    /// response back (`Err`) when it is not buffered: a body of unknown
    /// length or longer than `limit` bytes, or a response type that cannot
    /// hold a buffered body (the default). `reqwest::Response` buffers.
    fn buffer_body(self, limit: usize) -> Result<BufferFuture<Self>, Self>
    where
        Self: Sized,
    {
        let _ = limit;
        Err(self)
    }
}

/// A response whose body is being read into memory (see
/// [`BalancedResponse::buffer_body`]).
pub type BufferFuture<R> = Pin<Box<dyn Future<Output = Result<R, BoxError>> + Send>>;

/// A balanced request as the inner client takes it: the request itself for
/// `http::Request<B>` and `reqwest::Request`, the request inside for a
/// [`WithExtensions`].
pub trait OutgoingRequest: BalancedRequest + Sized {
    /// What the inner client is called with.
    type Outgoing;

    /// The request to hand to the inner client.
    fn into_outgoing(self) -> Self::Outgoing;
}

/// A request with extensions of its own, for request types that keep
/// theirs private (`reqwest::Request`): how an
/// [`AttemptContext`](crate::AttemptContext), a
/// [`RetryMode`](crate::retry::RetryMode) or an
/// [`Avoid`](crate::balance::Avoid) travels with a `reqwest::Request`
/// through the layers.
///
/// The retry layer sends every attempt of a `reqwest::Request` down as a
/// `WithExtensions<reqwest::Request>`, and the load-balancing layer unwraps
/// it before calling the client: a layer in between sees this type.
/// Send one yourself to give a single request its own say:
///
/// ```
/// use tower_lb::WithExtensions;
/// use tower_lb::retry::RetryMode;
///
/// let request = reqwest::Request::new(http::Method::GET, "http://greet/api/greet".parse()?);
/// let mut request = WithExtensions::new(request);
/// request.extensions_mut().insert(RetryMode::Off);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Default)]
pub struct WithExtensions<R> {
    request: R,
    extensions: Extensions,
}

impl<R> WithExtensions<R> {
    /// `request`, with empty extensions.
    pub fn new(request: R) -> Self {
        Self {
            request,
            extensions: Extensions::new(),
        }
    }

    /// `request` with `extensions`.
    pub fn from_parts(request: R, extensions: Extensions) -> Self {
        Self {
            request,
            extensions,
        }
    }

    /// The request.
    pub fn request(&self) -> &R {
        &self.request
    }

    /// The request, mutably.
    pub fn request_mut(&mut self) -> &mut R {
        &mut self.request
    }

    /// The extensions.
    pub fn extensions(&self) -> &Extensions {
        &self.extensions
    }

    /// The extensions, mutably.
    pub fn extensions_mut(&mut self) -> &mut Extensions {
        &mut self.extensions
    }

    /// The request and its extensions, apart.
    pub fn into_parts(self) -> (R, Extensions) {
        (self.request, self.extensions)
    }
}

impl<R: BalancedRequest> BalancedRequest for WithExtensions<R> {
    #[inline]
    fn host(&self) -> Option<&str> {
        self.request.host()
    }

    fn target(&self) -> String {
        self.request.target()
    }

    fn path(&self) -> &str {
        self.request.path()
    }

    fn headers(&self) -> &HeaderMap {
        self.request.headers()
    }

    fn method(&self) -> &Method {
        self.request.method()
    }

    fn route_to(&mut self, endpoint: &Endpoint) -> Result<(), String> {
        self.request.route_to(endpoint)
    }

    fn extensions(&self) -> Option<&Extensions> {
        Some(&self.extensions)
    }

    fn extensions_mut(&mut self) -> Option<&mut Extensions> {
        Some(&mut self.extensions)
    }
}

impl<R: OutgoingRequest> OutgoingRequest for WithExtensions<R> {
    type Outgoing = R::Outgoing;

    fn into_outgoing(self) -> Self::Outgoing {
        self.request.into_outgoing()
    }
}

impl<B: Send + 'static> OutgoingRequest for http::Request<B> {
    type Outgoing = Self;

    #[inline]
    fn into_outgoing(self) -> Self {
        self
    }
}

#[cfg(feature = "reqwest")]
impl OutgoingRequest for reqwest::Request {
    type Outgoing = Self;

    #[inline]
    fn into_outgoing(self) -> Self {
        self
    }
}

impl<B: Send + 'static> BalancedRequest for http::Request<B> {
    #[inline]
    fn host(&self) -> Option<&str> {
        self.uri().host()
    }

    fn target(&self) -> String {
        self.uri().to_string()
    }

    fn path(&self) -> &str {
        self.uri().path()
    }

    fn headers(&self) -> &HeaderMap {
        self.headers()
    }

    fn method(&self) -> &Method {
        self.method()
    }

    fn route_to(&mut self, endpoint: &Endpoint) -> Result<(), String> {
        let mut parts = std::mem::take(self.uri_mut()).into_parts();
        parts.scheme = Some(endpoint.scheme().clone());
        parts.authority = Some(endpoint.authority().clone());
        if parts.path_and_query.is_none() {
            parts.path_and_query = Some(PathAndQuery::from_static("/"));
        }
        *self.uri_mut() = Uri::from_parts(parts).map_err(|e| e.to_string())?;
        // Always set: a caller may have set `Host: users` itself, and a bare
        // hyper connection would send no Host at all.
        self.headers_mut()
            .insert(HOST, endpoint.host_header().clone());
        Ok(())
    }

    fn extensions(&self) -> Option<&Extensions> {
        Some(self.extensions())
    }

    fn extensions_mut(&mut self) -> Option<&mut Extensions> {
        Some(self.extensions_mut())
    }
}

impl<B: Send + 'static> BalancedResponse for http::Response<B> {
    fn status(&self) -> StatusCode {
        self.status()
    }

    fn headers(&self) -> &HeaderMap {
        self.headers()
    }

    fn extensions(&self) -> &Extensions {
        self.extensions()
    }

    fn extensions_mut(&mut self) -> &mut Extensions {
        self.extensions_mut()
    }
}

#[cfg(feature = "reqwest")]
impl BalancedRequest for reqwest::Request {
    #[inline]
    fn host(&self) -> Option<&str> {
        self.url().host_str()
    }

    fn target(&self) -> String {
        self.url().to_string()
    }

    fn path(&self) -> &str {
        self.url().path()
    }

    fn headers(&self) -> &HeaderMap {
        self.headers()
    }

    fn method(&self) -> &Method {
        self.method()
    }

    fn route_to(&mut self, endpoint: &Endpoint) -> Result<(), String> {
        let url = self.url_mut();
        // Each part is set only when it differs: every setter re-serializes
        // the URL, and `set_host` parses the host again (IDNA and all).
        if url.scheme() != endpoint.scheme().as_str() {
            url.set_scheme(endpoint.scheme().as_str())
                .map_err(|()| format!("cannot set scheme `{}`", endpoint.scheme()))?;
        }
        match endpoint.ip() {
            Some(ip) => url
                .set_ip_host(ip)
                .map_err(|()| format!("cannot set host `{}`", endpoint.host()))?,
            None => url
                .set_host(Some(endpoint.host()))
                .map_err(|e| e.to_string())?,
        }
        if url.port_or_known_default() != Some(endpoint.port()) {
            url.set_port(Some(endpoint.port()))
                .map_err(|()| format!("cannot set port {}", endpoint.port()))?;
        }
        // reqwest derives Host from the URL unless the caller set one; only
        // a caller-set Host needs replacing.
        if self.headers().contains_key(HOST) {
            self.headers_mut()
                .insert(HOST, endpoint.host_header().clone());
        }
        Ok(())
    }

    fn extensions(&self) -> Option<&Extensions> {
        // reqwest 0.13 keeps a request's extensions private.
        None
    }

    fn extensions_mut(&mut self) -> Option<&mut Extensions> {
        None
    }
}

#[cfg(feature = "reqwest")]
impl BalancedResponse for reqwest::Response {
    fn buffer_body(self, limit: usize) -> Result<BufferFuture<Self>, Self> {
        if self.content_length().is_none_or(|len| len > limit as u64) {
            return Err(self);
        }
        Ok(Box::pin(async move {
            use reqwest::ResponseBuilderExt;

            let mut head = http::Response::builder()
                .status(self.status())
                .version(self.version())
                .url(self.url().clone());
            if let Some(headers) = head.headers_mut() {
                *headers = self.headers().clone();
            }
            if let Some(extensions) = head.extensions_mut() {
                extensions.extend(self.extensions().clone());
            }
            let body = self.bytes().await?;
            Ok(reqwest::Response::from(head.body(body)?))
        }))
    }

    fn status(&self) -> StatusCode {
        self.status()
    }

    fn headers(&self) -> &HeaderMap {
        self.headers()
    }

    fn extensions(&self) -> &Extensions {
        self.extensions()
    }

    fn extensions_mut(&mut self) -> &mut Extensions {
        self.extensions_mut()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_request_keeps_path_and_query_and_sets_host() {
        let mut req = http::Request::get("http://greet/api/greet?name=Alice")
            .header(HOST, "greet")
            .body(())
            .unwrap();
        let ep = Endpoint::new("https://10.0.0.7:8443").unwrap();
        req.route_to(&ep).unwrap();
        assert_eq!(req.uri(), "https://10.0.0.7:8443/api/greet?name=Alice");
        assert_eq!(req.headers()[HOST], "10.0.0.7:8443");
    }

    #[cfg(feature = "reqwest")]
    #[test]
    fn reqwest_request_is_rewritten() {
        let url = "http://greet/api/greet?name=Alice".parse().unwrap();
        let mut req = reqwest::Request::new(http::Method::GET, url);
        let ep = Endpoint::new("http://[::1]:5001").unwrap();
        req.route_to(&ep).unwrap();
        assert_eq!(req.url().as_str(), "http://[::1]:5001/api/greet?name=Alice");
    }

    /// Scheme, host and port are each set only when they differ: every
    /// combination still lands on the endpoint, default ports implied.
    #[cfg(feature = "reqwest")]
    #[test]
    fn reqwest_request_is_rewritten_part_by_part() {
        let cases = [
            (
                "http://greet/a?b=c",
                "https://10.0.0.7:8443",
                "https://10.0.0.7:8443/a?b=c",
            ),
            (
                "http://greet:8080/a",
                "http://10.0.0.7:80",
                "http://10.0.0.7/a",
            ),
            ("https://greet/a", "http://10.0.0.7", "http://10.0.0.7/a"),
            ("http://greet/a", "https://10.0.0.7", "https://10.0.0.7/a"),
            (
                "http://greet:443/a",
                "https://10.0.0.7",
                "https://10.0.0.7/a",
            ),
            (
                "http://greet/a",
                "http://Users.Example:7001",
                "http://users.example:7001/a",
            ),
            (
                "http://10.0.0.7:5001/a",
                "http://10.0.0.7:5001",
                "http://10.0.0.7:5001/a",
            ),
        ];
        for (from, to, want) in cases {
            let mut req = reqwest::Request::new(http::Method::GET, from.parse().unwrap());
            req.route_to(&Endpoint::new(to).unwrap()).unwrap();
            assert_eq!(req.url().as_str(), want, "{from} -> {to}");
        }
    }
}
