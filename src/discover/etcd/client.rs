//! A small client for etcd's HTTP/JSON gateway: the handful of calls the
//! source and the registration need, with fail-over across endpoints.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::json;

use super::EtcdError;
use super::auth::{self, Auth};
use super::codec::{self, ErrorBody, WatchLine, b64};
use crate::Endpoint;
use crate::error::chain_message;

/// Watch lines longer than this are refused rather than buffered forever.
const MAX_LINE: usize = 64 * 1024 * 1024;

/// Where etcd is and how to reach it. Shared (cheaply cloned) by every
/// [`Etcd`](super::Etcd) source and [`Registration`](super::Registration)
/// made from it.
///
/// Requests go to the first endpoint that answers; a connection failure
/// moves on to the next, and the one that answered is tried first next time.
///
/// ```
/// use std::time::Duration;
/// use tower_lb::discover::etcd::EtcdConfig;
///
/// let etcd = EtcdConfig::new(["http://10.0.0.1:2379", "10.0.0.2:2379"])?
///     .request_timeout(Duration::from_secs(3));
/// assert_eq!(etcd.endpoints(), ["http://10.0.0.1:2379", "http://10.0.0.2:2379"]);
/// # Ok::<(), tower_lb::discover::etcd::EtcdError>(())
/// ```
#[derive(Clone)]
pub struct EtcdConfig {
    endpoints: Arc<[String]>,
    client: reqwest::Client,
    request_timeout: Duration,
    watch_idle_timeout: Duration,
    /// The endpoint that answered last; shared by clones.
    current: Arc<AtomicUsize>,
    /// etcd user credentials and their token, when auth is on.
    auth: Option<Auth>,
}

impl EtcdConfig {
    /// Client endpoints of one etcd cluster: `http://host:port`,
    /// `https://host:port` or a bare `host:port` (plain HTTP).
    ///
    /// Fails when the list is empty or an entry is not a valid address.
    /// HTTPS needs a TLS backend in your `reqwest` dependency (this crate
    /// enables none) and, for client certificates, your own client
    /// ([`client`](Self::client)).
    pub fn new<I>(endpoints: I) -> Result<Self, EtcdError>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        let endpoints = endpoints
            .into_iter()
            .map(|e| {
                let input = e.as_ref();
                Endpoint::new(input)
                    .map(|ep| ep.key().to_string())
                    .map_err(|source| EtcdError::InvalidEndpoint {
                        input: source.input().to_string(),
                        source,
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if endpoints.is_empty() {
            return Err(EtcdError::Config("no etcd endpoint given".into()));
        }
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            // A watch is one long response: keepalive probes notice a peer
            // that vanished without closing the connection.
            .tcp_keepalive(Duration::from_secs(15))
            .tcp_keepalive_interval(Duration::from_secs(5))
            .tcp_keepalive_retries(3)
            .build()
            .map_err(|e| EtcdError::Config(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            endpoints: endpoints.into(),
            client,
            request_timeout: Duration::from_secs(5),
            watch_idle_timeout: Duration::from_secs(15 * 60),
            current: Arc::new(AtomicUsize::new(0)),
            auth: None,
        })
    }

    /// Authenticates as an etcd user (etcd's `auth enable`): the user name
    /// and password are exchanged for a token (`/v3/auth/authenticate`)
    /// before the first call, the token is sent as the `Authorization`
    /// header of every call, and a token etcd rejects (expired, or
    /// forgotten in a restart) is replaced by a fresh one once per call.
    ///
    /// The password and the token are never printed: not in `Debug`, not
    /// in errors, not in logs. A wrong password fails with
    /// [`EtcdError::Auth`].
    ///
    /// ```
    /// use tower_lb::discover::etcd::EtcdConfig;
    ///
    /// let etcd = EtcdConfig::new(["http://10.0.0.1:2379"])?.credentials("app", "s3cret");
    /// assert!(!format!("{etcd:?}").contains("s3cret"));
    /// # Ok::<(), tower_lb::discover::etcd::EtcdError>(())
    /// ```
    pub fn credentials(mut self, user: impl AsRef<str>, password: impl AsRef<str>) -> Self {
        self.auth = Some(Auth::new(user.as_ref(), password.as_ref()));
        self
    }

    /// Uses this HTTP client (for TLS settings, client certificates,
    /// proxies). The default one has a 3 s connect timeout and TCP
    /// keepalive probes.
    pub fn client(mut self, client: reqwest::Client) -> Self {
        self.client = client;
        self
    }

    /// The time limit of one unary call (list, put, lease calls) and of
    /// opening a watch (default 5 s).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// A watch that has sent nothing for this long is closed and opened
    /// again from the last revision seen (default 15 min). Watches ask etcd
    /// for progress notifications, which it sends every 10 min by default
    /// (`--experimental-watch-progress-notify-interval`), so keep this above
    /// etcd's interval.
    pub fn watch_idle_timeout(mut self, timeout: Duration) -> Self {
        self.watch_idle_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    pub(crate) fn timeout(&self) -> Duration {
        self.request_timeout
    }

    /// The configured endpoints, normalized to `scheme://host:port`.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// POSTs `body` to `path` on the first endpoint that answers, with
    /// the user's token when credentials are set (authenticating first if
    /// there is none, and once more if etcd rejects it).
    async fn post(
        &self,
        path: &'static str,
        body: &serde_json::Value,
        timeout: Duration,
    ) -> Result<reqwest::Response, EtcdError> {
        let Some(auth) = &self.auth else {
            return self.post_once(path, body, timeout, None).await;
        };
        let token = self.token(auth).await?;
        match self.post_once(path, body, timeout, Some(&token)).await {
            Err(EtcdError::Status { code, message, .. })
                if auth::is_token_rejected(code, &message) =>
            {
                auth.forget(&token);
                let token = self.token(auth).await?;
                self.post_once(path, body, timeout, Some(&token)).await
            }
            other => other,
        }
    }

    /// The current token, authenticating when there is none.
    async fn token(&self, auth: &Auth) -> Result<http::HeaderValue, EtcdError> {
        if let Some(token) = auth.token() {
            return Ok(token);
        }
        let failed = |reason: String| EtcdError::Auth {
            user: auth.user().to_string(),
            reason,
        };
        const PATH: &str = "/v3/auth/authenticate";
        let response = self
            .post_once(PATH, &auth.request_body(), self.request_timeout, None)
            .await
            .map_err(|e| match e {
                EtcdError::Status { message, .. } => failed(message),
                other => failed(other.to_string()),
            })?;
        let bytes = tokio::time::timeout(self.request_timeout, response.bytes())
            .await
            .map_err(|_| failed(format!("no answer within {:?}", self.request_timeout)))?
            .map_err(|e| failed(Failure::Http(e).to_string()))?;
        let answer: codec::AuthenticateResponse = serde_json::from_slice(&bytes)
            .map_err(|e| failed(format!("unreadable answer: {e}")))?;
        if answer.token.is_empty() {
            return Err(failed(
                "etcd answered without a token (is auth enabled?)".into(),
            ));
        }
        auth.store(&answer.token)
            .ok_or_else(|| failed("etcd's token is not a valid header value".into()))
    }

    /// Forgets the token after etcd refused it somewhere other than a
    /// unary call's status (a canceled watch, a keepalive line), so that
    /// the next call authenticates again.
    pub(crate) fn token_rejected(&self, code: i32, message: &str) {
        if let Some(auth) = &self.auth
            && auth::is_token_rejected(code, message)
            && let Some(token) = auth.token()
        {
            tracing::debug!(
                user = auth.user(),
                "etcd rejected the auth token; authenticating again"
            );
            auth.forget(&token);
        }
    }

    /// [`post`](Self::post) without authentication handling.
    async fn post_once(
        &self,
        path: &'static str,
        body: &serde_json::Value,
        timeout: Duration,
        token: Option<&http::HeaderValue>,
    ) -> Result<reqwest::Response, EtcdError> {
        let body = body.to_string();
        let start = self.current.load(Ordering::Relaxed);
        let n = self.endpoints.len();
        let mut last_error = None;
        for i in 0..n {
            let index = (start + i) % n;
            let url = format!("{}{}", self.endpoints[index], path);
            let mut request = self
                .client
                .post(&url)
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(body.clone());
            if let Some(token) = token {
                // etcd wants the raw token, no `Bearer`.
                request = request.header(http::header::AUTHORIZATION, token.clone());
            }
            let request = request.send();
            // The watch has no overall timeout (it streams), so bound the
            // wait for its response head here rather than on the request.
            let sent = match tokio::time::timeout(timeout, request).await {
                Ok(sent) => sent,
                Err(_) => {
                    last_error = Some(Failure::Timeout(timeout));
                    continue;
                }
            };
            match sent {
                // A gateway that cannot reach its own etcd (stopping, cut
                // off) answers 502-504: another member may do better.
                Ok(response) if is_unavailable(response.status()) && i + 1 < n => {
                    last_error = Some(Failure::Unavailable(response.status()));
                }
                Ok(response) => {
                    self.current.store(index, Ordering::Relaxed);
                    return check_status(path, response).await;
                }
                Err(e) => last_error = Some(Failure::Http(e)),
            }
        }
        Err(EtcdError::Unreachable {
            endpoints: self.endpoints.join(", "),
            path,
            reason: last_error.map_or_else(|| "no endpoint".into(), |f| f.to_string()),
        })
    }

    /// A unary call: POST, read the whole answer, decode it.
    async fn call<T: DeserializeOwned>(
        &self,
        path: &'static str,
        body: serde_json::Value,
    ) -> Result<T, EtcdError> {
        let response = self.post(path, &body, self.request_timeout).await?;
        let bytes = tokio::time::timeout(self.request_timeout, response.bytes())
            .await
            .map_err(|_| EtcdError::Unreachable {
                endpoints: self.endpoints.join(", "),
                path,
                reason: format!("no complete answer within {:?}", self.request_timeout),
            })?
            .map_err(|e| EtcdError::Unreachable {
                endpoints: self.endpoints.join(", "),
                path,
                reason: Failure::Http(e).to_string(),
            })?;
        // Streamed calls (lease keepalive) answer with one JSON line.
        let first = bytes.split(|b| *b == b'\n').next().unwrap_or(&[]);
        serde_json::from_slice(first).map_err(|source| EtcdError::Decode { path, source })
    }

    /// Every key under `prefix`, and the store revision they were read at.
    pub(crate) async fn range_prefix(
        &self,
        prefix: &[u8],
    ) -> Result<codec::RangeResponse, EtcdError> {
        self.call(
            "/v3/kv/range",
            json!({"key": b64(prefix), "range_end": b64(codec::prefix_range_end(prefix))}),
        )
        .await
    }

    /// Opens a watch on `prefix` from `start_revision`.
    pub(crate) async fn watch_prefix(
        &self,
        prefix: &[u8],
        start_revision: i64,
    ) -> Result<WatchStream, EtcdError> {
        let body = json!({"create_request": {
            "key": b64(prefix),
            "range_end": b64(codec::prefix_range_end(prefix)),
            "start_revision": start_revision.to_string(),
            "progress_notify": true,
        }});
        let response = self.post("/v3/watch", &body, self.request_timeout).await?;
        Ok(WatchStream {
            response,
            buf: Vec::new(),
            eof: false,
            idle: self.watch_idle_timeout,
        })
    }

    /// Grants a lease; returns its ID.
    pub(crate) async fn lease_grant(&self, ttl: Duration) -> Result<i64, EtcdError> {
        let ttl = ttl.as_secs().max(1);
        let granted: codec::GrantResponse = self
            .call("/v3/lease/grant", json!({"TTL": ttl.to_string()}))
            .await?;
        if granted.id == 0 || !granted.error.is_empty() {
            return Err(EtcdError::Status {
                path: "/v3/lease/grant",
                status: 200,
                code: 0,
                message: format!("no lease granted ({})", granted.error),
            });
        }
        Ok(granted.id)
    }

    /// Refreshes a lease; `None` when it no longer exists.
    pub(crate) async fn lease_keepalive(&self, id: i64) -> Result<Option<i64>, EtcdError> {
        let line: codec::KeepAliveLine = self
            .call("/v3/lease/keepalive", json!({"ID": id.to_string()}))
            .await?;
        if let Some(error) = line.error {
            self.token_rejected(error.grpc_code, &error.message);
            return Err(EtcdError::Status {
                path: "/v3/lease/keepalive",
                status: 200,
                code: error.grpc_code,
                message: error.message,
            });
        }
        Ok(line.result.map(|r| r.ttl).filter(|ttl| *ttl > 0))
    }

    /// Revokes a lease, deleting its keys. A lease already gone is fine.
    pub(crate) async fn lease_revoke(&self, id: i64) -> Result<(), EtcdError> {
        match self
            .call::<serde_json::Value>("/v3/lease/revoke", json!({"ID": id.to_string()}))
            .await
        {
            Ok(_) => Ok(()),
            Err(EtcdError::Status { code: 5, .. }) => Ok(()), // NotFound
            Err(e) => Err(e),
        }
    }

    /// Puts `key` = `value`, attached to `lease` when not zero.
    pub(crate) async fn put(&self, key: &[u8], value: &[u8], lease: i64) -> Result<(), EtcdError> {
        let mut body = json!({"key": b64(key), "value": b64(value)});
        if lease != 0 {
            body["lease"] = json!(lease.to_string());
        }
        self.call::<serde_json::Value>("/v3/kv/put", body)
            .await
            .map(drop)
    }

    /// Deletes `key`.
    pub(crate) async fn delete(&self, key: &[u8]) -> Result<(), EtcdError> {
        self.call::<serde_json::Value>("/v3/kv/deleterange", json!({"key": b64(key)}))
            .await
            .map(drop)
    }
}

impl fmt::Debug for EtcdConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdConfig")
            .field("endpoints", &self.endpoints)
            .field("user", &self.auth.as_ref().map(Auth::user))
            .field("request_timeout", &self.request_timeout)
            .field("watch_idle_timeout", &self.watch_idle_timeout)
            .finish_non_exhaustive()
    }
}

fn is_unavailable(status: http::StatusCode) -> bool {
    matches!(status.as_u16(), 502..=504)
}

enum Failure {
    Http(reqwest::Error),
    Timeout(Duration),
    Unavailable(http::StatusCode),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Http(e) => {
                // reqwest's own message is terse; its causes say what happened.
                f.write_str(&chain_message(e))
            }
            Failure::Timeout(t) => write!(f, "no answer within {t:?}"),
            Failure::Unavailable(status) => write!(f, "answered {status}"),
        }
    }
}

/// Turns a non-2xx answer into [`EtcdError::Status`] with etcd's message.
async fn check_status(
    path: &'static str,
    response: reqwest::Response,
) -> Result<reqwest::Response, EtcdError> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let body = response.bytes().await.unwrap_or_default();
    let parsed: ErrorBody = serde_json::from_slice(&body).unwrap_or_default();
    let message = match (parsed.message.is_empty(), parsed.error.is_empty()) {
        (false, _) => parsed.message,
        (true, false) => parsed.error,
        (true, true) => String::from_utf8_lossy(&body[..body.len().min(200)])
            .trim()
            .to_string(),
    };
    Err(EtcdError::Status {
        path,
        status: status.as_u16(),
        code: parsed.code,
        message,
    })
}

/// The lines of one watch response stream.
pub(crate) struct WatchStream {
    response: reqwest::Response,
    buf: Vec<u8>,
    eof: bool,
    idle: Duration,
}

/// How a watch stream stopped giving lines.
#[derive(Debug)]
pub(crate) enum StreamEnd {
    /// The connection closed (etcd stopped, a proxy cut it).
    Closed,
    /// Nothing arrived for the idle timeout.
    Idle(Duration),
    /// The connection failed mid-stream.
    Broken(String),
    /// A line was not JSON of the expected shape, or far too long.
    Garbled(String),
}

impl fmt::Display for StreamEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StreamEnd::Closed => f.write_str("etcd closed the watch stream"),
            StreamEnd::Idle(t) => write!(
                f,
                "nothing received for {t:?} (not even a progress notification)"
            ),
            StreamEnd::Broken(e) => write!(f, "the watch connection failed: {e}"),
            StreamEnd::Garbled(e) => write!(f, "unreadable watch message: {e}"),
        }
    }
}

impl WatchStream {
    /// The next message; the final one may lack its newline.
    pub(crate) async fn next_line(&mut self) -> Result<WatchLine, StreamEnd> {
        loop {
            if let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=pos).collect();
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return parse_line(&line);
            }
            if self.eof {
                if self.buf.iter().all(u8::is_ascii_whitespace) {
                    return Err(StreamEnd::Closed);
                }
                let line = std::mem::take(&mut self.buf);
                return parse_line(&line);
            }
            match tokio::time::timeout(self.idle, self.response.chunk()).await {
                Err(_) => return Err(StreamEnd::Idle(self.idle)),
                Ok(Err(e)) => return Err(StreamEnd::Broken(Failure::Http(e).to_string())),
                Ok(Ok(None)) => self.eof = true,
                Ok(Ok(Some(chunk))) => {
                    self.buf.extend_from_slice(&chunk);
                    if self.buf.len() > MAX_LINE {
                        return Err(StreamEnd::Garbled(format!(
                            "a message longer than {MAX_LINE} bytes"
                        )));
                    }
                }
            }
        }
    }
}

fn parse_line(line: &[u8]) -> Result<WatchLine, StreamEnd> {
    serde_json::from_slice(line).map_err(|e| StreamEnd::Garbled(e.to_string()))
}
