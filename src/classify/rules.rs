//! Today's rules, as functions: what a status or an error says about the
//! endpoint, and whether another attempt could help. The
//! [`DefaultClassifier`](super::DefaultClassifier) is made of them; a
//! classifier of your own can call them for the cases it does not change.

use std::error::Error as StdError;
use std::io;

use http::StatusCode;

use super::verdict::{FailureKind, Outcome, Retryable};
use crate::error::chain;

/// The verdict on a response status: 5xx fails, anything else succeeds.
///
/// ```
/// use http::StatusCode;
/// use tower_lb::classify::{classify_status, Outcome};
///
/// assert!(classify_status(StatusCode::SERVICE_UNAVAILABLE).is_failure());
/// assert_eq!(classify_status(StatusCode::NOT_FOUND), Outcome::Success);
/// ```
pub fn classify_status(status: StatusCode) -> Outcome {
    if status.is_server_error() {
        Outcome::Failure(FailureKind::Status(status))
    } else {
        Outcome::Success
    }
}

/// The kind of a client error, found by walking its source chain for an
/// I/O error (reqwest and hyper-util both keep the `io::Error` there).
pub fn classify_error(error: &(dyn StdError + 'static)) -> FailureKind {
    for e in chain(error) {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            return match io.kind() {
                io::ErrorKind::ConnectionRefused => FailureKind::ConnectionRefused,
                io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionAborted
                | io::ErrorKind::BrokenPipe
                | io::ErrorKind::UnexpectedEof => FailureKind::ConnectionReset,
                io::ErrorKind::TimedOut => FailureKind::Timeout,
                _ => FailureKind::Other,
            };
        }
        if e.downcast_ref::<tokio::time::error::Elapsed>().is_some() {
            return FailureKind::Timeout;
        }
    }
    FailureKind::Other
}

/// Whether a client error is the endpoint's failure, to be counted against
/// it (by balancers, stats and outlier detection). It is, unless the error
/// is the caller's own: a request the client could not even build (reqwest's
/// `is_builder` with no URL to blame, e.g. a header value it rejects).
/// Ejecting a healthy instance because one caller sends malformed requests
/// would take capacity away from everyone else. A builder error about the
/// URL (a scheme the client refuses, as with `https_only`) is about the
/// endpoint's address, and counts against it.
///
/// ```
/// use std::io;
/// use tower_lb::classify::blames_endpoint;
///
/// assert!(blames_endpoint(&io::Error::from(io::ErrorKind::ConnectionRefused)));
/// ```
pub fn blames_endpoint(error: &(dyn StdError + 'static)) -> bool {
    #[cfg(feature = "reqwest")]
    for e in chain(error) {
        if let Some(reqwest) = e.downcast_ref::<reqwest::Error>() {
            return !reqwest.is_builder() || reqwest.url().is_some();
        }
    }
    let _ = error;
    true
}

/// The statuses another endpoint, or a later attempt, may answer better:
/// 429 Too Many Requests, 502 Bad Gateway, 503 Service Unavailable and
/// 504 Gateway Timeout.
pub const RETRYABLE_STATUSES: [StatusCode; 4] = [
    StatusCode::TOO_MANY_REQUESTS,
    StatusCode::BAD_GATEWAY,
    StatusCode::SERVICE_UNAVAILABLE,
    StatusCode::GATEWAY_TIMEOUT,
];

/// Whether a response with `status` is worth another attempt.
///
/// ```
/// use http::StatusCode;
/// use tower_lb::classify::{retryable_status, Retryable};
///
/// assert_eq!(retryable_status(StatusCode::SERVICE_UNAVAILABLE), Retryable::IfIdempotent);
/// assert_eq!(retryable_status(StatusCode::INTERNAL_SERVER_ERROR), Retryable::No);
/// assert_eq!(retryable_status(StatusCode::NOT_FOUND), Retryable::No);
/// ```
pub fn retryable_status(status: StatusCode) -> Retryable {
    if RETRYABLE_STATUSES.contains(&status) {
        Retryable::IfIdempotent
    } else {
        Retryable::No
    }
}

/// Whether a failed attempt is worth another, found by walking the error's
/// source chain: this crate's own errors, reqwest's (`is_connect`,
/// `is_timeout`), I/O errors by kind, hyper-util's connect errors, and a
/// connection hyper saw closed before the answer.
///
/// ```
/// use std::io;
/// use tower_lb::classify::{retryable_error, Retryable};
///
/// let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
/// assert_eq!(retryable_error(&refused), Retryable::NotSent);
/// let reset = io::Error::from(io::ErrorKind::ConnectionReset);
/// assert_eq!(retryable_error(&reset), Retryable::IfIdempotent);
/// ```
pub fn retryable_error(error: &(dyn StdError + 'static)) -> Retryable {
    for e in chain(error) {
        if let Some(own) = e.downcast_ref::<crate::Error>() {
            match own {
                // The client's error is further down the chain.
                crate::Error::Inner { .. } => continue,
                crate::Error::AttemptTimeout { .. } => return Retryable::IfIdempotent,
                // No endpoint, bad configuration, or a retry layer's verdict.
                _ => return Retryable::No,
            }
        }
        #[cfg(feature = "reqwest")]
        if let Some(reqwest) = e.downcast_ref::<reqwest::Error>() {
            if reqwest.is_connect() {
                return Retryable::NotSent;
            }
            if reqwest.is_timeout() {
                return Retryable::IfIdempotent;
            }
        }
        if let Some(io) = e.downcast_ref::<io::Error>() {
            return match io.kind() {
                io::ErrorKind::ConnectionRefused
                | io::ErrorKind::AddrNotAvailable
                | io::ErrorKind::NetworkUnreachable
                | io::ErrorKind::HostUnreachable => Retryable::NotSent,
                io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionAborted
                | io::ErrorKind::BrokenPipe
                | io::ErrorKind::UnexpectedEof
                | io::ErrorKind::TimedOut => Retryable::IfIdempotent,
                _ => Retryable::No,
            };
        }
        if e.downcast_ref::<tokio::time::error::Elapsed>().is_some() {
            return Retryable::IfIdempotent;
        }
        if let Some(verdict) = by_message(e) {
            return verdict;
        }
    }
    Retryable::No
}

/// hyper and hyper-util errors, recognised by their messages: the crate
/// does not depend on them, and their kinds are private.
#[cold]
fn by_message(error: &(dyn StdError + 'static)) -> Option<Retryable> {
    let message = error.to_string();
    // hyper_util::client::legacy::Error of kind Connect: DNS, TCP connect
    // (refused, timed out), or TLS handshake; nothing was sent.
    if message == "client error (Connect)" {
        return Some(Retryable::NotSent);
    }
    // hyper: the server closed a (kept-alive) connection before answering.
    if message.starts_with("connection closed before message completed") {
        return Some(Retryable::IfIdempotent);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("client error")]
    struct Wrapper(#[source] io::Error);

    #[cfg(feature = "reqwest")]
    #[test]
    fn a_request_the_client_cannot_build_is_the_callers_fault() {
        let builder = reqwest::Client::new()
            .get("http://127.0.0.1:1/")
            .header("x-bad", "line\nbreak")
            .build()
            .unwrap_err();
        assert!(builder.is_builder());
        assert!(!blames_endpoint(&builder));
        assert!(!blames_endpoint(&crate::Error::inner_from(
            None, None, builder
        )));
        assert!(blames_endpoint(&Wrapper(io::Error::from(
            io::ErrorKind::ConnectionReset
        ))));
    }

    #[cfg(feature = "reqwest")]
    #[tokio::test]
    async fn a_url_the_client_refuses_is_the_endpoints_fault() {
        // https_only against a discovered http:// endpoint: a builder error,
        // but about the endpoint's address.
        let client = reqwest::Client::builder().https_only(true).build().unwrap();
        let error = client.get("http://127.0.0.1:1/").send().await.unwrap_err();
        assert!(error.is_builder() && error.url().is_some(), "{error:?}");
        assert!(blames_endpoint(&error));
    }

    #[test]
    fn finds_the_io_error_in_the_chain() {
        let e = Wrapper(io::Error::from(io::ErrorKind::ConnectionRefused));
        assert_eq!(classify_error(&e), FailureKind::ConnectionRefused);
        let e = Wrapper(io::Error::other("x"));
        assert_eq!(classify_error(&e), FailureKind::Other);
    }

    #[test]
    fn retryable_errors_through_the_chain() {
        let e = Wrapper(io::Error::from(io::ErrorKind::ConnectionRefused));
        assert_eq!(retryable_error(&e), Retryable::NotSent);
        let e = Wrapper(io::Error::from(io::ErrorKind::TimedOut));
        assert_eq!(retryable_error(&e), Retryable::IfIdempotent);
        let e = Wrapper(io::Error::other("x"));
        assert_eq!(retryable_error(&e), Retryable::No);
        let e = crate::Error::NoEndpoints {
            service: "greet".into(),
        };
        assert_eq!(retryable_error(&e), Retryable::No);
        let e = crate::Error::inner_from(
            Some("greet".into()),
            None,
            io::Error::from(io::ErrorKind::ConnectionRefused),
        );
        assert_eq!(retryable_error(&e), Retryable::NotSent);
    }

    #[derive(Debug, thiserror::Error)]
    #[error("client error (Connect)")]
    struct HyperUtilLike(#[source] io::Error);

    #[test]
    fn hyper_util_connect_errors_were_never_sent() {
        // A DNS failure carries an I/O error of no telling kind.
        let e = HyperUtilLike(io::Error::other("failed to lookup address"));
        assert_eq!(retryable_error(&e), Retryable::NotSent);
    }

    #[test]
    fn only_5xx_fails() {
        assert_eq!(classify_status(StatusCode::OK), Outcome::Success);
        assert_eq!(
            classify_status(StatusCode::TOO_MANY_REQUESTS),
            Outcome::Success
        );
        assert_eq!(
            classify_status(StatusCode::BAD_GATEWAY),
            Outcome::Failure(FailureKind::Status(StatusCode::BAD_GATEWAY))
        );
    }
}
