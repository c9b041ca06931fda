//! The crate's error type.

use std::sync::Arc;
use std::time::Duration;

use crate::Endpoint;
use crate::classify::{FailureKind, Retryable, Verdict};
use crate::endpoint::EndpointError;
use crate::retry::not_replayable::NotReplayable;

/// A boxed error, the currency of tower middleware and of discovery sources.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong between the caller and the instance.
///
/// Each variant names the logical service it concerns, so a log line says
/// which dependency failed without further context. Match on the variant to
/// react (fail over, shed load, alert); the inner client's own error stays
/// reachable through [`std::error::Error::source`] or [`Error::inner`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The service is known but its endpoint set is empty.
    #[error("service `{service}` has no endpoints")]
    NoEndpoints {
        /// The logical service.
        service: Arc<str>,
    },

    /// The request's host is not a configured service and unknown hosts
    /// are rejected ([`UnknownHost::Reject`](crate::UnknownHost::Reject)).
    #[error("unknown service `{service}`: no pool is configured for this host")]
    UnknownService {
        /// The host the request named.
        service: String,
    },

    /// The request's URI has no host to route by.
    #[error("request URI `{uri}` has no host to name a service")]
    MissingHost {
        /// The URI as given.
        uri: String,
    },

    /// Discovery had not produced the first endpoint set when the wait
    /// allowed for it ran out.
    #[error("service `{service}`: discovery gave no endpoints within {waited:?}{}", last_error.as_ref().map(|e| format!(" (last discovery error: {e})")).unwrap_or_default())]
    NotReady {
        /// The logical service.
        service: Arc<str>,
        /// How long the request waited.
        waited: Duration,
        /// The source's most recent error, if it has failed.
        last_error: Option<String>,
    },

    /// An endpoint given to the crate was invalid.
    #[error("service `{service}`: {source}")]
    InvalidEndpoint {
        /// The logical service.
        service: Arc<str>,
        /// What was wrong with it.
        #[source]
        source: EndpointError,
    },

    /// The request could not be rewritten to target the chosen endpoint.
    #[error("service `{service}`: cannot route request to {endpoint}: {reason}")]
    Route {
        /// The logical service.
        service: Arc<str>,
        /// The endpoint that was chosen.
        endpoint: Endpoint,
        /// Why rewriting failed.
        reason: String,
    },

    /// The request asked for `https` but the chosen endpoint speaks plain
    /// `http`: sending it would silently drop TLS. Opt into
    /// [`SchemePolicy::EndpointDecides`](crate::SchemePolicy::EndpointDecides)
    /// to let the endpoint's scheme win.
    #[error(
        "service `{service}`: the request asks for https but endpoint {endpoint} is plain http; not sent (see SchemePolicy)"
    )]
    InsecureEndpoint {
        /// The logical service.
        service: Arc<str>,
        /// The endpoint that was chosen.
        endpoint: Endpoint,
    },

    /// The layer was configured with something invalid.
    #[error("invalid configuration: {0}")]
    Config(String),

    /// The inner client failed. `service` and `endpoint` are absent for
    /// requests passed through without balancing.
    #[error("{}", inner_message(service.as_deref(), endpoint.as_ref()))]
    Inner {
        /// The logical service, when the request was balanced.
        service: Option<Arc<str>>,
        /// The endpoint the request was sent to, when balanced.
        endpoint: Option<Endpoint>,
        /// The balancer's classifier's verdict on the error, when balanced.
        verdict: Option<Verdict>,
        /// The client's error, source chain intact.
        #[source]
        source: BoxError,
    },

    /// One attempt took longer than its timeout: the retry layer's
    /// per-attempt timeout
    /// ([`RetryBuilder::attempt_timeout`](crate::retry::RetryBuilder::attempt_timeout)),
    /// or the balancer's own for a request no layer above bounds
    /// ([`LoadBalanceBuilder::timeout`](crate::LoadBalanceBuilder::timeout)).
    #[error("service `{service}`: attempt{} timed out after {timeout:?}", endpoint.as_ref().map(|e| format!(" to {e}")).unwrap_or_default())]
    AttemptTimeout {
        /// The logical service.
        service: Arc<str>,
        /// The endpoint the attempt went to, when known.
        endpoint: Option<Endpoint>,
        /// The per-attempt timeout.
        timeout: Duration,
    },

    /// The last attempt failed in a way worth retrying, but the service's
    /// retry budget was spent: retries are shed to keep an outage from
    /// becoming a retry storm. The last attempt's error is the source.
    #[error("service `{service}`: not retried: the retry budget is spent ({attempts} attempt{} made)", plural(*attempts))]
    BudgetExhausted {
        /// The logical service.
        service: Arc<str>,
        /// Attempts made, hedges included.
        attempts: u32,
        /// The last attempt's error.
        #[source]
        source: Box<Error>,
    },

    /// The call's overall deadline passed, during an attempt or before the
    /// next could start. The last attempt's error, if it failed with one,
    /// is the source.
    #[error("service `{service}`: deadline of {deadline:?} passed after {attempts} attempt{}{}", plural(*attempts), tried(endpoints))]
    DeadlineExceeded {
        /// The logical service.
        service: Arc<str>,
        /// The deadline, counted from the call.
        deadline: Duration,
        /// Attempts made, hedges included (the one cut short too).
        attempts: u32,
        /// The endpoints those attempts went to, where known.
        endpoints: Vec<Endpoint>,
        /// The last finished attempt's error, if it failed with one.
        #[source]
        source: Option<Box<Error>>,
    },

    /// Every attempt allowed failed in a way worth retrying. The last
    /// attempt's error is the source.
    #[error(
        "service `{service}`: all {attempts} attempts failed{}",
        tried(endpoints)
    )]
    RetriesExhausted {
        /// The logical service.
        service: Arc<str>,
        /// Attempts made, hedges included.
        attempts: u32,
        /// The endpoints those attempts went to, where known.
        endpoints: Vec<Endpoint>,
        /// The last attempt's error.
        #[source]
        source: Box<Error>,
    },

    /// The attempt failed in a way worth retrying, but its body could not
    /// be sent again (too large to buffer, or a stream). The attempt's
    /// error is the source.
    #[error("service `{service}`: not retried: {reason}")]
    BodyNotReplayable {
        /// The logical service.
        service: Arc<str>,
        /// Why the body could not be sent again.
        reason: NotReplayable,
        /// The attempt's error.
        #[source]
        source: Box<Error>,
    },

    /// The request could not be built (the client handle's
    /// [`RequestBuilder`](crate::client::RequestBuilder): a header value
    /// that is not valid, a URL that does not parse).
    #[error("the request could not be built")]
    Request {
        /// Why, as the HTTP client said.
        #[source]
        source: BoxError,
    },

    /// Reading the request body into memory, to be able to send it again,
    /// failed.
    #[error("service `{service}`: reading the request body failed")]
    Body {
        /// The logical service.
        service: Arc<str>,
        /// The body's error.
        #[source]
        source: BoxError,
    },
}

fn plural(n: u32) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn tried(endpoints: &[Endpoint]) -> String {
    if endpoints.is_empty() {
        return String::new();
    }
    let list: Vec<String> = endpoints.iter().map(ToString::to_string).collect();
    format!(" (tried {})", list.join(", "))
}

fn inner_message(service: Option<&str>, endpoint: Option<&Endpoint>) -> String {
    match (service, endpoint) {
        (Some(s), Some(e)) => format!("service `{s}`: request to {e} failed"),
        (Some(s), None) => format!("service `{s}`: the client failed"),
        _ => "request failed (not load balanced)".to_string(),
    }
}

impl Error {
    /// The logical service this error concerns, when there is one.
    pub fn service(&self) -> Option<&str> {
        match self {
            Error::NoEndpoints { service }
            | Error::NotReady { service, .. }
            | Error::InvalidEndpoint { service, .. }
            | Error::Route { service, .. }
            | Error::InsecureEndpoint { service, .. }
            | Error::AttemptTimeout { service, .. }
            | Error::BudgetExhausted { service, .. }
            | Error::DeadlineExceeded { service, .. }
            | Error::RetriesExhausted { service, .. }
            | Error::BodyNotReplayable { service, .. }
            | Error::Body { service, .. } => Some(service),
            Error::UnknownService { service } => Some(service),
            Error::Inner { service, .. } => service.as_deref(),
            Error::MissingHost { .. } | Error::Config(_) | Error::Request { .. } => None,
        }
    }

    /// The inner client's error, when the client failed: also through the
    /// retry layer's errors, for the last attempt.
    ///
    /// ```
    /// # fn check(err: &tower_lb::Error) {
    /// if let Some(io) = err.inner().and_then(|e| e.downcast_ref::<std::io::Error>()) {
    ///     eprintln!("I/O failure: {io}");
    /// }
    /// # }
    /// ```
    pub fn inner(&self) -> Option<&(dyn std::error::Error + Send + Sync + 'static)> {
        match self.last_attempt() {
            Error::Inner { source, .. } => Some(source.as_ref()),
            _ => None,
        }
    }

    /// The error of the last attempt behind a retry layer's verdict
    /// ([`BudgetExhausted`](Error::BudgetExhausted),
    /// [`RetriesExhausted`](Error::RetriesExhausted),
    /// [`BodyNotReplayable`](Error::BodyNotReplayable),
    /// [`DeadlineExceeded`](Error::DeadlineExceeded) after a failed
    /// attempt); `self` for any other error.
    ///
    /// ```
    /// # fn check(err: &tower_lb::Error) {
    /// if let tower_lb::Error::NoEndpoints { service } = err.last_attempt() {
    ///     eprintln!("{service} has no endpoints");
    /// }
    /// # }
    /// ```
    pub fn last_attempt(&self) -> &Error {
        let mut error = self;
        loop {
            error = match error {
                Error::BudgetExhausted { source, .. }
                | Error::RetriesExhausted { source, .. }
                | Error::BodyNotReplayable { source, .. }
                | Error::DeadlineExceeded {
                    source: Some(source),
                    ..
                } => source,
                _ => return error,
            };
        }
    }

    /// The endpoint the (last) attempt went to, when known.
    pub fn endpoint(&self) -> Option<&Endpoint> {
        match self.last_attempt() {
            Error::Inner { endpoint, .. } | Error::AttemptTimeout { endpoint, .. } => {
                endpoint.as_ref()
            }
            Error::Route { endpoint, .. } | Error::InsecureEndpoint { endpoint, .. } => {
                Some(endpoint)
            }
            _ => None,
        }
    }

    /// The classifier's verdict on the (last) attempt's failure: what the
    /// load-balancing layer judged a client error to be, or, for a timed-out
    /// attempt, a timeout worth retrying when idempotent. `None` for errors
    /// no attempt produced (no endpoints, bad configuration).
    pub fn verdict(&self) -> Option<Verdict> {
        match self.last_attempt() {
            Error::Inner { verdict, .. } => *verdict,
            Error::AttemptTimeout { .. } => Some(Verdict::failure(
                FailureKind::Timeout,
                Retryable::IfIdempotent,
            )),
            _ => None,
        }
    }

    /// How many attempts the retry layer made before giving up, for its
    /// own errors.
    pub fn attempts(&self) -> Option<u32> {
        match self {
            Error::BudgetExhausted { attempts, .. }
            | Error::DeadlineExceeded { attempts, .. }
            | Error::RetriesExhausted { attempts, .. } => Some(*attempts),
            _ => None,
        }
    }

    pub(crate) fn inner_from(
        service: Option<Arc<str>>,
        endpoint: Option<Endpoint>,
        source: impl Into<BoxError>,
    ) -> Self {
        Error::Inner {
            service,
            endpoint,
            verdict: None,
            source: source.into(),
        }
    }
}

/// `error`, then its source, its source's source, and so on.
pub(crate) fn chain<'a>(
    error: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(error), |e| e.source())
}

/// "outer: middle: inner", so one log line or stats field shows the root
/// cause of an error; any URL userinfo in it (a client's or a discovery
/// source's own message may quote one) replaced by `***`.
pub(crate) fn chain_message(error: &(dyn std::error::Error + 'static)) -> String {
    let message = chain(error)
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join(": ");
    crate::redact::userinfo(&message).into_owned()
}
