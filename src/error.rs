//! The crate's error type.

use std::sync::Arc;
use std::time::Duration;

use crate::Endpoint;
use crate::endpoint::EndpointError;

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
        /// The client's error, source chain intact.
        #[source]
        source: BoxError,
    },
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
            | Error::Route { service, .. } => Some(service),
            Error::UnknownService { service } => Some(service),
            Error::Inner { service, .. } => service.as_deref(),
            Error::MissingHost { .. } | Error::Config(_) => None,
        }
    }

    /// The inner client's error, when the client failed.
    ///
    /// ```
    /// # fn check(err: &tower_lb::Error) {
    /// if let Some(io) = err.inner().and_then(|e| e.downcast_ref::<std::io::Error>()) {
    ///     eprintln!("I/O failure: {io}");
    /// }
    /// # }
    /// ```
    pub fn inner(&self) -> Option<&(dyn std::error::Error + Send + Sync + 'static)> {
        match self {
            Error::Inner { source, .. } => Some(source.as_ref()),
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
            source: source.into(),
        }
    }
}

/// "outer: middle: inner", so one log line or stats field shows the root
/// cause of an error.
pub(crate) fn chain_message(error: &(dyn std::error::Error + 'static)) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}
