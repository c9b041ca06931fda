//! One place decides what counts as a failure of the endpoint.
//!
//! A 5xx answer or a transport error (refused, reset, timed out) is the
//! endpoint's failure and counts against it; a 4xx is the caller's mistake
//! and does not. Balancers, stats and (later) ejection all read the same
//! verdict.

use std::error::Error as StdError;
use std::io;

use http::StatusCode;

/// What a finished request says about the endpoint that served it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// The endpoint did its job (2xx, 3xx, 4xx).
    Success,
    /// The endpoint failed, and how.
    Failure(FailureKind),
}

/// How an endpoint failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FailureKind {
    /// It answered with a 5xx status.
    Status(StatusCode),
    /// The connection was refused: nothing listens there.
    ConnectionRefused,
    /// The connection was reset or aborted mid-way.
    ConnectionReset,
    /// Connecting or answering took too long.
    Timeout,
    /// Any other transport error.
    Other,
}

impl Outcome {
    /// True for [`Outcome::Failure`].
    pub fn is_failure(&self) -> bool {
        matches!(self, Outcome::Failure(_))
    }
}

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
    let mut current = Some(error);
    while let Some(e) = current {
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
        current = e.source();
    }
    FailureKind::Other
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("client error")]
    struct Wrapper(#[source] io::Error);

    #[test]
    fn finds_the_io_error_in_the_chain() {
        let e = Wrapper(io::Error::from(io::ErrorKind::ConnectionRefused));
        assert_eq!(classify_error(&e), FailureKind::ConnectionRefused);
        let e = Wrapper(io::Error::other("x"));
        assert_eq!(classify_error(&e), FailureKind::Other);
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
