//! [`NotReplayable`]: why a request could be sent only once.

use std::fmt;

/// Why a request could be sent only once.
///
/// A retry the policy wanted but the body prevented shows this reason: in
/// [`Attempts::not_retried`](crate::retry::Attempts::not_retried) on a
/// response, in [`Error::BodyNotReplayable`](crate::Error::BodyNotReplayable)
/// on a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum NotReplayable {
    /// The body is longer than the replay limit.
    TooLarge {
        /// The replay limit, in bytes.
        limit: usize,
        /// The body's declared length, in bytes.
        size: u64,
    },
    /// The body is a stream of unknown length (chunked, or a
    /// `reqwest::Body::wrap_stream`): it is never buffered.
    Streaming,
}

impl fmt::Display for NotReplayable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NotReplayable::TooLarge { limit, size } => write!(
                f,
                "the request body ({size} bytes) is larger than the replay limit of {limit} bytes"
            ),
            NotReplayable::Streaming => {
                f.write_str("the request body is a stream of unknown length")
            }
        }
    }
}
