//! One `tracing` span per logical call and one per attempt inside it, with
//! OpenTelemetry's HTTP client field names, so that `tracing-opentelemetry`
//! users get a correct trace without code of their own.
//!
//! - `tower_lb.call` (target `tower_lb`): `http.request.method`, `url.full`
//!   (the logical URL, userinfo redacted), `tower_lb.service`, and on its
//!   end `http.response.status_code` or `error.type`, `tower_lb.attempts`.
//! - `tower_lb.attempt`, a child of the call's span: `http.request.resend_count`
//!   (0 for the first), `server.address` and `server.port` of the endpoint
//!   (written by the balancer, which gets the span in the attempt's
//!   [`AttemptContext`](crate::AttemptContext), so it is right whatever runs
//!   between the layers), and `http.response.status_code` or `error.type`.
//!
//! Spans are built only when a subscriber wants them; otherwise each costs
//! one check of its callsite's interest.

use tracing::Span;
use tracing::field::Empty;

use super::attempts::Attempts;

use crate::Error;
use crate::classify::{FailureKind, Outcome};
use crate::request::{BalancedRequest, BalancedResponse};

/// The span of one logical call for `request` to `service`.
pub(super) fn call_span(request: &dyn BalancedRequest, service: &str) -> Span {
    let span = tracing::info_span!(
        target: "tower_lb",
        "tower_lb.call",
        otel.kind = "client",
        http.request.method = %request.method(),
        url.full = Empty,
        tower_lb.service = %service,
        http.response.status_code = Empty,
        error.type = Empty,
        tower_lb.attempts = Empty,
    );
    if !span.is_disabled() {
        span.record(
            "url.full",
            crate::redact::userinfo(&request.target()).as_ref(),
        );
    }
    span
}

/// The span of attempt `number` (1 for the first) of the call in `parent`.
pub(super) fn attempt_span(parent: &Span, number: u32) -> Span {
    tracing::info_span!(
        target: "tower_lb",
        parent: parent,
        "tower_lb.attempt",
        otel.kind = "client",
        http.request.resend_count = number.saturating_sub(1),
        server.address = Empty,
        server.port = Empty,
        http.response.status_code = Empty,
        error.type = Empty,
    )
}

/// Writes how a call or an attempt ended into its span.
pub(super) fn record_outcome<R: BalancedResponse>(span: &Span, result: &Result<R, Error>) {
    if span.is_disabled() {
        return;
    }
    match result {
        Ok(response) => {
            span.record("http.response.status_code", response.status().as_u16());
        }
        Err(error) => {
            span.record("error.type", error_type(error));
        }
    }
}

/// What a call's future needs to trace the call: the call's span, which
/// its work runs in and which gets the call's outcome when it ends, and
/// what `tower_lb.call.duration` (feature `metrics`) is labelled with.
///
/// Kept beside the call's boxed future in
/// [`RetryFuture`](super::RetryFuture) rather than wrapped around it: the
/// call's state is large, and a wrapper would move it once more per call.
pub(crate) struct CallTrace {
    pub(crate) span: Span,
    service: std::sync::Arc<str>,
    method: http::Method,
    /// When the call started, read only for a metrics recorder.
    started: Option<tokio::time::Instant>,
}

impl CallTrace {
    pub(super) fn new(span: Span, service: std::sync::Arc<str>, method: http::Method) -> Self {
        Self {
            span,
            service,
            method,
            started: cfg!(feature = "metrics").then(tokio::time::Instant::now),
        }
    }

    /// Writes how the call ended into its span and its metrics.
    pub(crate) fn finish<R: BalancedResponse>(&self, result: &Result<R, Error>) {
        record_outcome(&self.span, result);
        let answer = match result {
            Ok(response) => Ok(response.status().as_u16()),
            Err(error) => Err(error_type(error)),
        };
        let seconds = || self.started.map_or(0.0, |t| t.elapsed().as_secs_f64());
        crate::metrics::call(&self.service, &self.method, answer, seconds);
        if !self.span.is_disabled() {
            let attempts = match result {
                Ok(response) => response.extensions().get::<Attempts>().map(Attempts::count),
                Err(error) => error.attempts(),
            };
            if let Some(attempts) = attempts {
                self.span.record("tower_lb.attempts", attempts);
            }
        }
    }
}

/// OpenTelemetry's `error.type` for an error: a low-cardinality name.
pub(crate) fn error_type(error: &Error) -> &'static str {
    match error.last_attempt() {
        Error::AttemptTimeout { .. } | Error::DeadlineExceeded { .. } => "timeout",
        Error::NoEndpoints { .. } => "no_endpoints",
        Error::NotReady { .. } => "not_ready",
        Error::UnknownService { .. } | Error::MissingHost { .. } => "unknown_service",
        Error::Inner { verdict, .. } => match verdict.map(|v| v.outcome) {
            Some(Outcome::Failure(kind)) => match kind {
                FailureKind::ConnectionRefused => "connection_refused",
                FailureKind::ConnectionReset => "connection_reset",
                FailureKind::Timeout => "timeout",
                FailureKind::Body => "body",
                _ => "transport",
            },
            _ => "transport",
        },
        _ => "_OTHER",
    }
}
