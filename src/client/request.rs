//! [`RequestBuilder`]: reqwest's request builder, sent through the layers.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use http::{Extensions, Version};
use serde::Serialize;

use super::Client;
use crate::Error;
use crate::balance::RequestHashKey;
use crate::request::WithExtensions;
use crate::retry::RetryMode;

/// A request being built, as with `reqwest::RequestBuilder`, and sent
/// through the client's balancer and retries by [`send`](Self::send).
///
/// Every method of reqwest's builder that shapes a request is here with
/// the same signature; on top, the per-request choices of this crate:
/// [`retry_mode`](Self::retry_mode) (or [`idempotent`](Self::idempotent),
/// [`no_retry`](Self::no_retry)), a consistent-hash key
/// ([`hash_key`](Self::hash_key)) and any [`extension`](Self::extension).
#[must_use = "a request builder does nothing until it is sent"]
pub struct RequestBuilder {
    client: Client,
    builder: reqwest::RequestBuilder,
    extensions: Extensions,
    // `query`, `json` and `form` are done here rather than by reqwest's
    // methods of those names: those need reqwest's `query`, `json` and
    // `form` features, and turning them on would recompile the user's own
    // reqwest. The query pairs are appended when the request is built (a
    // `reqwest::RequestBuilder` cannot change its URL), the body is set at
    // once, and the content type is set at build time unless a header
    // already names one, as reqwest does.
    query: String,
    content_type: Option<HeaderValue>,
    error: Option<EncodeError>,
}

/// A value given to [`RequestBuilder::query`], [`json`](RequestBuilder::json)
/// or [`form`](RequestBuilder::form) that could not be encoded: the source
/// of the [`Error::Request`] that [`build`](RequestBuilder::build) and
/// [`send`](RequestBuilder::send) return.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the request's {part} could not be encoded: {source}")]
pub struct EncodeError {
    /// `"query"`, `"json body"` or `"form body"`.
    pub part: &'static str,
    /// The encoder's error (shared, so that a
    /// [`try_clone`](RequestBuilder::try_clone)d builder fails alike).
    #[source]
    pub source: Arc<dyn std::error::Error + Send + Sync + 'static>,
}

impl RequestBuilder {
    pub(super) fn new(client: Client, builder: reqwest::RequestBuilder) -> Self {
        Self {
            client,
            builder,
            extensions: Extensions::new(),
            query: String::new(),
            content_type: None,
            error: None,
        }
    }

    /// Keeps the first error of a builder method, for [`build`](Self::build).
    fn fail(
        mut self,
        part: &'static str,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        if self.error.is_none() {
            self.error = Some(EncodeError {
                part,
                source: Arc::new(source),
            });
        }
        self
    }

    /// Adds a header.
    pub fn header<K, V>(mut self, key: K, value: V) -> Self
    where
        HeaderName: TryFrom<K>,
        <HeaderName as TryFrom<K>>::Error: Into<http::Error>,
        HeaderValue: TryFrom<V>,
        <HeaderValue as TryFrom<V>>::Error: Into<http::Error>,
    {
        self.builder = self.builder.header(key, value);
        self
    }

    /// Adds headers (replacing those of the same names).
    pub fn headers(mut self, headers: HeaderMap) -> Self {
        self.builder = self.builder.headers(headers);
        self
    }

    /// Adds `query` to the URL's query string: a struct, a map or a
    /// sequence of `(key, value)` pairs, URL-encoded as reqwest's own
    /// `query` does.
    ///
    /// A value that does not serialize to pairs makes [`build`](Self::build)
    /// and [`send`](Self::send) fail with [`Error::Request`] (an
    /// [`EncodeError`]); so do `json` and `form`.
    pub fn query<T: Serialize + ?Sized>(mut self, query: &T) -> Self {
        match super::urlencoded::encode(query) {
            Ok(pairs) if pairs.is_empty() => self,
            Ok(pairs) => {
                if !self.query.is_empty() {
                    self.query.push('&');
                }
                self.query.push_str(&pairs);
                self
            }
            Err(error) => self.fail("query", error),
        }
    }

    /// Sends `json` as the body, with `Content-Type: application/json`
    /// unless a header sets another.
    pub fn json<T: Serialize + ?Sized>(mut self, json: &T) -> Self {
        match serde_json::to_vec(json) {
            Ok(body) => {
                self.builder = self.builder.body(body);
                self.content_type = Some(HeaderValue::from_static("application/json"));
                self
            }
            Err(error) => self.fail("json body", error),
        }
    }

    /// Sends `form` as a URL-encoded form body, with `Content-Type:
    /// application/x-www-form-urlencoded` unless a header sets another.
    pub fn form<T: Serialize + ?Sized>(mut self, form: &T) -> Self {
        match super::urlencoded::encode(form) {
            Ok(body) => {
                self.builder = self.builder.body(body);
                self.content_type = Some(HeaderValue::from_static(
                    "application/x-www-form-urlencoded",
                ));
                self
            }
            Err(error) => self.fail("form body", error),
        }
    }

    /// Sets the body. A body in memory can be retried; a stream is sent
    /// once.
    pub fn body<T: Into<reqwest::Body>>(mut self, body: T) -> Self {
        self.builder = self.builder.body(body);
        self
    }

    /// HTTP bearer authentication (the header is marked sensitive).
    pub fn bearer_auth<T: fmt::Display>(mut self, token: T) -> Self {
        self.builder = self.builder.bearer_auth(token);
        self
    }

    /// HTTP basic authentication (the header is marked sensitive).
    pub fn basic_auth<U: fmt::Display, P: fmt::Display>(
        mut self,
        username: U,
        password: Option<P>,
    ) -> Self {
        self.builder = self.builder.basic_auth(username, password);
        self
    }

    /// reqwest's own timeout for this request: from the start of each
    /// attempt until its body has been read to the end.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.builder = self.builder.timeout(timeout);
        self
    }

    /// The HTTP version to use.
    pub fn version(mut self, version: Version) -> Self {
        self.builder = self.builder.version(version);
        self
    }

    /// This request's own say over its retries (see [`RetryMode`]).
    pub fn retry_mode(self, mode: RetryMode) -> Self {
        self.extension(mode)
    }

    /// Retries and hedges this request as if its method were idempotent
    /// (a `POST` with an idempotency key, say).
    pub fn idempotent(self) -> Self {
        self.retry_mode(RetryMode::Idempotent)
    }

    /// Sends this request once: no retry, no hedge.
    pub fn no_retry(self) -> Self {
        self.retry_mode(RetryMode::Off)
    }

    /// Routes this request by `key` on a
    /// [`ConsistentHash`](crate::balance::ConsistentHash) pool, whatever
    /// key source the balancer was configured with.
    pub fn hash_key(self, key: impl AsRef<[u8]>) -> Self {
        self.extension(RequestHashKey::of(key))
    }

    /// Puts `value` in the request's extensions, for the layers to read.
    pub fn extension<T: Clone + Send + Sync + 'static>(mut self, value: T) -> Self {
        self.extensions.insert(value);
        self
    }

    /// The request as it would be sent, with its extensions; fails with
    /// [`Error::Request`] when reqwest cannot build it (a bad header, a
    /// URL that does not parse).
    pub fn build(self) -> Result<WithExtensions<reqwest::Request>, Error> {
        if let Some(error) = self.error {
            return Err(Error::Request {
                source: Box::new(error),
            });
        }
        let mut request = self.builder.build().map_err(|source| Error::Request {
            source: source.into(),
        })?;
        if !self.query.is_empty() {
            let url = request.url_mut();
            let query = match url.query() {
                Some(existing) if !existing.is_empty() => format!("{existing}&{}", self.query),
                _ => self.query,
            };
            url.set_query(Some(&query));
        }
        if let Some(content_type) = self.content_type {
            request
                .headers_mut()
                .entry(CONTENT_TYPE)
                .or_insert(content_type);
        }
        Ok(WithExtensions::from_parts(request, self.extensions))
    }

    /// Sends the request through the balancer (and the retry layer, if
    /// the client has one).
    pub async fn send(self) -> Result<reqwest::Response, Error> {
        let client = self.client.clone();
        let request = self.build()?;
        client.execute_with(request).await
    }

    /// A copy of this builder, when its body can be copied.
    pub fn try_clone(&self) -> Option<Self> {
        Some(Self {
            client: self.client.clone(),
            builder: self.builder.try_clone()?,
            extensions: self.extensions.clone(),
            query: self.query.clone(),
            content_type: self.content_type.clone(),
            error: self.error.clone(),
        })
    }
}

impl fmt::Debug for RequestBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestBuilder")
            .field("builder", &self.builder)
            .finish_non_exhaustive()
    }
}
