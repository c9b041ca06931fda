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

use http::header::{AUTHORIZATION, HOST};
use http::uri::{PathAndQuery, Uri};
use http::{Extensions, HeaderMap, HeaderValue, Method, StatusCode};

use crate::{BoxError, Endpoint, redact};

/// An HTTP request that can be balanced.
pub trait BalancedRequest: Send + 'static {
    /// The host named by the request's URI, if any: the logical service.
    fn host(&self) -> Option<&str>;

    /// The request's target, for error messages (userinfo, if any,
    /// replaced by `***`).
    fn target(&self) -> String;

    /// The scheme the request asks for (`"http"`, `"https"`), when its URI
    /// has one. The load-balancing layer refuses to send an `https` request
    /// to a plain `http` endpoint unless told otherwise
    /// ([`SchemePolicy`](crate::SchemePolicy)). The default, `None`,
    /// opts a custom request type out of that check.
    fn scheme(&self) -> Option<&str> {
        None
    }

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

    fn scheme(&self) -> Option<&str> {
        self.request.scheme()
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
        self.uri().authority().map(|a| host_of(a.as_str()))
    }

    fn target(&self) -> String {
        redact::userinfo(&self.uri().to_string()).into_owned()
    }

    fn scheme(&self) -> Option<&str> {
        self.uri().scheme_str()
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
        if let Some((user, password)) = self
            .uri()
            .authority()
            .and_then(|a| split_userinfo(a.as_str()))
        {
            let user = percent_decoded(user);
            let password = password.map(percent_decoded);
            basic_auth_from_userinfo(self.headers_mut(), &user, password.as_deref());
        }
        redact::mark_sensitive(self.headers_mut());
        // The endpoint's authority replaces the request's, userinfo and all.
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
        redact::userinfo(self.url().as_str()).into_owned()
    }

    fn scheme(&self) -> Option<&str> {
        Some(self.url().scheme())
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
        if !self.url().username().is_empty() || self.url().password().is_some() {
            let user = percent_decoded(self.url().username());
            let password = self.url().password().map(percent_decoded);
            basic_auth_from_userinfo(self.headers_mut(), &user, password.as_deref());
            // A routed request carries no userinfo: reqwest's own error
            // messages quote the URL.
            let _ = self.url_mut().set_username("");
            let _ = self.url_mut().set_password(None);
        }
        redact::mark_sensitive(self.headers_mut());
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

/// `user[:password]` of an authority with userinfo.
fn split_userinfo(authority: &str) -> Option<(&str, Option<&str>)> {
    // Nearly every authority has none: a byte scan answers that for less
    // than a reverse string search.
    if !authority.as_bytes().contains(&b'@') {
        return None;
    }
    let (userinfo, _) = authority.rsplit_once('@')?;
    Some(match userinfo.split_once(':') {
        Some((user, password)) => (user, Some(password)),
        None => (userinfo, None),
    })
}

fn percent_decoded(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && let (Some(hi), Some(lo)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            )
        {
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Userinfo in a request's URL means HTTP Basic credentials (what curl and
/// reqwest's builder make of it): moved into an `Authorization` header,
/// unless the caller set one, so that the URL that travels on carries none.
fn basic_auth_from_userinfo(headers: &mut HeaderMap, user: &str, password: Option<&str>) {
    if headers.contains_key(AUTHORIZATION) {
        return;
    }
    let credentials = format!("{user}:{}", password.unwrap_or(""));
    let value = format!("Basic {}", base64_standard(credentials.as_bytes()));
    if let Ok(mut value) = HeaderValue::from_str(&value) {
        value.set_sensitive(true);
        headers.insert(AUTHORIZATION, value);
    }
}

/// RFC 4648 base64 with padding, for one header value.
fn base64_standard(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> shift) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The host in a URI's authority (validated by `http` when it parsed the
/// URI): what `Authority::host` gives, in one pass over the bytes rather
/// than its two string splits. Every call through both layers reads the
/// host twice (the retry layer for its budget, the balancer for its
/// route), which made `Authority::host` about 1% of a hyper-util call.
fn host_of(authority: &str) -> &str {
    let bytes = authority.as_bytes();
    // Nearly every authority is `host` or `host:port`: one forward pass
    // finds its end unless it holds userinfo or an IPv6 literal.
    let mut colon = None;
    let mut plain = true;
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'@' | b'[' => {
                plain = false;
                break;
            }
            b':' if colon.is_none() => colon = Some(i),
            _ => {}
        }
    }
    if plain {
        return authority
            .get(..colon.unwrap_or(bytes.len()))
            .unwrap_or(authority);
    }
    // Userinfo ends at the last `@`.
    let start = bytes
        .iter()
        .rposition(|&b| b == b'@')
        .map_or(0, |at| at + 1);
    let rest = &bytes[start..];
    let end = if rest.first() == Some(&b'[') {
        // An IPv6 literal, brackets included.
        rest.iter()
            .position(|&b| b == b']')
            .map_or(rest.len(), |i| i + 1)
    } else {
        rest.iter().position(|&b| b == b':').unwrap_or(rest.len())
    };
    authority.get(start..start + end).unwrap_or(authority)
}

#[cfg(test)]
mod tests {
    #[test]
    fn host_of_agrees_with_http() {
        for uri in [
            "http://greet/api",
            "http://greet:8080/api",
            "http://user:pw@greet:8080/",
            "http://a@b@greet/",
            "http://[::1]:8080/",
            "http://user@[fe80::1%25eth0]/",
            "http://10.0.0.7/",
            "https://Greet.Example.com",
            "http://greet:/",
        ] {
            let uri: http::Uri = uri.parse().unwrap();
            let authority = uri.authority().unwrap();
            assert_eq!(
                super::host_of(authority.as_str()),
                authority.host(),
                "{uri}"
            );
        }
    }
    use super::*;

    #[test]
    fn base64_matches_rfc_4648() {
        for (input, want) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("user:pass", "dXNlcjpwYXNz"),
        ] {
            assert_eq!(base64_standard(input.as_bytes()), want);
        }
    }

    #[test]
    fn userinfo_becomes_basic_auth_and_leaves_the_uri() {
        let mut req = http::Request::get("http://app:canary%21@greet/api")
            .body(())
            .unwrap();
        req.route_to(&Endpoint::new("http://10.0.0.7:1").unwrap())
            .unwrap();
        assert_eq!(req.uri(), "http://10.0.0.7:1/api");
        let auth = &req.headers()[AUTHORIZATION];
        assert_eq!(auth, &format!("Basic {}", base64_standard(b"app:canary!")));
        assert!(auth.is_sensitive());
        assert!(!format!("{req:?}").contains("canary"));
    }

    #[cfg(feature = "reqwest")]
    #[test]
    fn reqwest_userinfo_becomes_basic_auth_and_leaves_the_url() {
        let url = "http://app:canary@greet/api".parse().unwrap();
        let mut req = reqwest::Request::new(http::Method::GET, url);
        req.route_to(&Endpoint::new("http://10.0.0.7:1").unwrap())
            .unwrap();
        assert_eq!(req.url().as_str(), "http://10.0.0.7:1/api");
        assert!(req.headers()[AUTHORIZATION].is_sensitive());
        assert!(!format!("{req:?}").contains("canary"));
    }

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
