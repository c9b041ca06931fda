//! Metrics through the [`metrics`](https://docs.rs/metrics) facade
//! (feature `metrics`): plug in the Prometheus, OpenTelemetry or StatsD
//! exporter you already run. Install its recorder **before** building the
//! layers: an endpoint's gauges are registered when it joins its pool.
//!
//! Names follow OpenTelemetry's HTTP client semantic conventions where
//! they exist, and are prefixed `tower_lb.` where they do not. Every series
//! carries `tower_lb.service`, the logical service.
//!
//! | name | type | unit | labels |
//! |---|---|---|---|
//! | `http.client.request.duration` | histogram | s | service, `server.address`, `server.port`, `http.request.method`, `http.response.status_code` or `error.type`: one per attempt, to its response head |
//! | `tower_lb.call.duration` | histogram | s | service, `http.request.method`, `http.response.status_code` or `error.type`: one per logical call through the retry layer |
//! | `http.client.active_requests` | gauge | {request} | service, `server.address`, `server.port`: attempts in flight (to their last body byte) |
//! | `tower_lb.attempts` | counter | {attempt} | service, `tower_lb.attempt.kind` (`first`, `retry`, `hedge`) |
//! | `tower_lb.retries` | counter | {retry} | service, `tower_lb.retry.reason` |
//! | `tower_lb.retry.budget_refusals` | counter | {retry} | service: retries (and hedges) the budget refused |
//! | `tower_lb.ejections` | counter | {ejection} | service, `server.address`, `server.port` |
//! | `tower_lb.pool.endpoints` | gauge | {endpoint} | service, `tower_lb.endpoint.state` (`eligible`, `ejected`, `unhealthy`) |
//! | `tower_lb.pool.panic` | gauge | 1 | service: 1 while in panic mode |
//! | `tower_lb.discovery.updates` | counter | {update} | service |
//! | `tower_lb.discovery.errors` | counter | {error} | service |
//! | `tower_lb.discovery.staleness` | gauge | s | service: seconds since the last good update, while the source fails (0 when fresh) |
//!
//! `http.request.method` is one of the nine standard methods, or `_OTHER`
//! for any other (OpenTelemetry's rule: a method is not a free-form label).
//!
//! **Cardinality.** A pool of more than
//! [`PoolBuilder::metrics_endpoint_limit`](crate::PoolBuilder::metrics_endpoint_limit)
//! endpoints (64 by default) records its per-endpoint series without
//! `server.address` and `server.port`: one series per service rather than
//! one per instance, so that a registry of thousands of instances cannot
//! blow up the time-series database. The endpoint's address never carries
//! userinfo.
//!
//! Without the feature, every function here compiles to nothing.

/// The names of the series, as the table above lists them.
pub mod names {
    /// Per attempt, to the response head: seconds.
    pub const REQUEST_DURATION: &str = "http.client.request.duration";
    /// Per logical call through the retry layer: seconds.
    pub const CALL_DURATION: &str = "tower_lb.call.duration";
    /// Attempts in flight per endpoint.
    pub const ACTIVE_REQUESTS: &str = "http.client.active_requests";
    /// Attempts sent, by kind.
    pub const ATTEMPTS: &str = "tower_lb.attempts";
    /// Retries, by reason.
    pub const RETRIES: &str = "tower_lb.retries";
    /// Retries and hedges the budget refused.
    pub const BUDGET_REFUSALS: &str = "tower_lb.retry.budget_refusals";
    /// Ejections, per endpoint.
    pub const EJECTIONS: &str = "tower_lb.ejections";
    /// Endpoints of a pool, by state.
    pub const POOL_ENDPOINTS: &str = "tower_lb.pool.endpoints";
    /// 1 while a pool is in panic mode.
    pub const POOL_PANIC: &str = "tower_lb.pool.panic";
    /// Updates applied from a discovery source.
    pub const DISCOVERY_UPDATES: &str = "tower_lb.discovery.updates";
    /// Errors of a discovery source.
    pub const DISCOVERY_ERRORS: &str = "tower_lb.discovery.errors";
    /// Seconds since the last good discovery update, while failing.
    pub const DISCOVERY_STALENESS: &str = "tower_lb.discovery.staleness";

    /// The logical service.
    pub const SERVICE: &str = "tower_lb.service";
    /// The endpoint's host.
    pub const SERVER_ADDRESS: &str = "server.address";
    /// The endpoint's port.
    pub const SERVER_PORT: &str = "server.port";
    /// The request's method.
    pub const METHOD: &str = "http.request.method";
    /// The answer's status.
    pub const STATUS_CODE: &str = "http.response.status_code";
    /// What went wrong, when no status came back.
    pub const ERROR_TYPE: &str = "error.type";
    /// `first`, `retry` or `hedge`.
    pub const ATTEMPT_KIND: &str = "tower_lb.attempt.kind";
    /// Why a retry was made.
    pub const RETRY_REASON: &str = "tower_lb.retry.reason";
    /// `eligible`, `ejected` or `unhealthy`.
    pub const ENDPOINT_STATE: &str = "tower_lb.endpoint.state";
}

use crate::Endpoint;

/// `Ok(status)` when the attempt or call was answered, `Err(error.type)`
/// otherwise.
pub(crate) type Answer = Result<u16, &'static str>;

#[cfg(feature = "metrics")]
mod record {
    use std::sync::{Arc, OnceLock};

    use metrics::{Gauge, Label, SharedString, counter, gauge, histogram};

    use super::{Answer, names};
    use crate::Endpoint;

    // Label values are built once and shared (a reference count per
    // record) rather than formatted into new strings on every attempt:
    // the recorder, or the no-op one, is handed the labels either way. An
    // endpoint keeps its own (`Endpoint::metric_labels`).

    fn service(service: &str) -> Label {
        Label::new(names::SERVICE, service.to_owned())
    }

    fn endpoint_labels(labels: &mut Vec<Label>, endpoint: Option<&Endpoint>) {
        if let Some(endpoint) = endpoint {
            let values = endpoint.metric_labels();
            labels.push(Label::new(
                names::SERVER_ADDRESS,
                SharedString::from_shared(values.address.clone()),
            ));
            labels.push(Label::new(
                names::SERVER_PORT,
                SharedString::from_shared(values.port.clone()),
            ));
        }
    }

    /// The method as a label value: the standard ones without allocating.
    fn method_label(method: &http::Method) -> Label {
        let value = match *method {
            http::Method::GET => SharedString::const_str("GET"),
            http::Method::POST => SharedString::const_str("POST"),
            http::Method::PUT => SharedString::const_str("PUT"),
            http::Method::DELETE => SharedString::const_str("DELETE"),
            http::Method::HEAD => SharedString::const_str("HEAD"),
            http::Method::OPTIONS => SharedString::const_str("OPTIONS"),
            http::Method::PATCH => SharedString::const_str("PATCH"),
            http::Method::CONNECT => SharedString::const_str("CONNECT"),
            http::Method::TRACE => SharedString::const_str("TRACE"),
            // OpenTelemetry's convention for any other method.
            _ => SharedString::const_str("_OTHER"),
        };
        Label::new(names::METHOD, value)
    }

    /// The status codes 100 to 999 as label values, made once per process.
    fn status_value(status: u16) -> SharedString {
        static STATUSES: OnceLock<Box<[Arc<str>]>> = OnceLock::new();
        let table =
            STATUSES.get_or_init(|| (100..1000).map(|s: u16| s.to_string().into()).collect());
        match status
            .checked_sub(100)
            .and_then(|i| table.get(usize::from(i)))
        {
            Some(value) => SharedString::from_shared(value.clone()),
            None => SharedString::from_owned(status.to_string()),
        }
    }

    fn answer_label(labels: &mut Vec<Label>, answer: Answer) {
        labels.push(match answer {
            Ok(status) => Label::new(names::STATUS_CODE, status_value(status)),
            Err(error) => Label::new(names::ERROR_TYPE, error),
        });
    }

    pub(crate) fn attempt(
        svc: &str,
        endpoint: Option<&Endpoint>,
        method: &http::Method,
        answer: Answer,
        seconds: f64,
    ) {
        let mut labels = Vec::with_capacity(5);
        labels.extend([service(svc), method_label(method)]);
        endpoint_labels(&mut labels, endpoint);
        answer_label(&mut labels, answer);
        histogram!(names::REQUEST_DURATION, labels).record(seconds);
    }

    pub(crate) fn call(
        svc: &str,
        method: &http::Method,
        answer: Answer,
        seconds: impl FnOnce() -> f64,
    ) {
        let seconds = seconds();
        let mut labels = Vec::with_capacity(3);
        labels.extend([service(svc), method_label(method)]);
        answer_label(&mut labels, answer);
        histogram!(names::CALL_DURATION, labels).record(seconds);
    }

    /// Counts an attempt in flight until dropped.
    #[derive(Debug)]
    pub(crate) struct Active(Gauge);

    impl Active {
        pub(crate) fn start(svc: &str, endpoint: Option<&Endpoint>) -> Self {
            let mut labels = Vec::with_capacity(3);
            labels.push(service(svc));
            endpoint_labels(&mut labels, endpoint);
            let gauge = gauge!(names::ACTIVE_REQUESTS, labels);
            gauge.increment(1.0);
            Active(gauge)
        }
    }

    impl Drop for Active {
        fn drop(&mut self) {
            self.0.decrement(1.0);
        }
    }

    /// What an attempt's duration is recorded with, kept from its send.
    pub(crate) struct AttemptMeasure {
        endpoint: Option<Endpoint>,
        method: http::Method,
    }

    impl AttemptMeasure {
        pub(crate) fn start(
            svc: &str,
            endpoint: Option<&Endpoint>,
            method: &http::Method,
        ) -> (Self, Active) {
            let measure = Self {
                endpoint: endpoint.cloned(),
                method: method.clone(),
            };
            (measure, Active::start(svc, endpoint))
        }

        /// Records the attempt; `seconds` reads the clock, so it is called
        /// only here, with a recorder to feed.
        pub(crate) fn finish(self, svc: &str, answer: Answer, seconds: impl FnOnce() -> f64) {
            attempt(svc, self.endpoint.as_ref(), &self.method, answer, seconds());
        }
    }

    pub(crate) fn attempt_sent(svc: &str, kind: &'static str) {
        counter!(names::ATTEMPTS, names::SERVICE => svc.to_owned(), names::ATTEMPT_KIND => kind)
            .increment(1);
    }

    pub(crate) fn retry(svc: &str, reason: String) {
        counter!(names::RETRIES, names::SERVICE => svc.to_owned(), names::RETRY_REASON => reason)
            .increment(1);
    }

    pub(crate) fn budget_refusal(svc: &str) {
        counter!(names::BUDGET_REFUSALS, names::SERVICE => svc.to_owned()).increment(1);
    }

    pub(crate) fn ejection(svc: &str, endpoint: Option<(&str, &str)>) {
        let mut labels = vec![service(svc)];
        if let Some((host, port)) = endpoint {
            labels.push(Label::new(names::SERVER_ADDRESS, host.to_owned()));
            labels.push(Label::new(names::SERVER_PORT, port.to_owned()));
        }
        counter!(names::EJECTIONS, labels).increment(1);
    }

    pub(crate) fn pool_state(
        svc: &str,
        eligible: usize,
        ejected: usize,
        unhealthy: usize,
        panic: bool,
    ) {
        for (state, n) in [
            ("eligible", eligible),
            ("ejected", ejected),
            ("unhealthy", unhealthy),
        ] {
            gauge!(names::POOL_ENDPOINTS, names::SERVICE => svc.to_owned(), names::ENDPOINT_STATE => state)
                .set(n as f64);
        }
        gauge!(names::POOL_PANIC, names::SERVICE => svc.to_owned()).set(if panic {
            1.0
        } else {
            0.0
        });
    }

    pub(crate) fn discovery_update(svc: &str) {
        counter!(names::DISCOVERY_UPDATES, names::SERVICE => svc.to_owned()).increment(1);
        gauge!(names::DISCOVERY_STALENESS, names::SERVICE => svc.to_owned()).set(0.0);
    }

    pub(crate) fn discovery_error(svc: &str, stale_for: f64) {
        counter!(names::DISCOVERY_ERRORS, names::SERVICE => svc.to_owned()).increment(1);
        gauge!(names::DISCOVERY_STALENESS, names::SERVICE => svc.to_owned()).set(stale_for);
    }
}

#[cfg(not(feature = "metrics"))]
#[allow(dead_code)]
mod record {
    //! Without the feature: nothing, at no cost.

    use super::Answer;
    use crate::Endpoint;

    pub(crate) struct AttemptMeasure;
    impl AttemptMeasure {
        pub(crate) fn start(_: &str, _: Option<&Endpoint>, _: &http::Method) -> (Self, Active) {
            (AttemptMeasure, Active)
        }
        pub(crate) fn finish(self, _: &str, _: Answer, _: impl FnOnce() -> f64) {}
    }
    pub(crate) fn call(_: &str, _: &http::Method, _: Answer, _: impl FnOnce() -> f64) {}
    #[derive(Debug)]
    pub(crate) struct Active;
    impl Active {
        pub(crate) fn start(_: &str, _: Option<&Endpoint>) -> Self {
            Active
        }
    }
    pub(crate) fn attempt_sent(_: &str, _: &'static str) {}
    pub(crate) fn retry(_: &str, _: String) {}
    pub(crate) fn budget_refusal(_: &str) {}
    pub(crate) fn ejection(_: &str, _: Option<(&str, &str)>) {}
    pub(crate) fn pool_state(_: &str, _: usize, _: usize, _: usize, _: bool) {}
    pub(crate) fn discovery_update(_: &str) {}
    pub(crate) fn discovery_error(_: &str, _: f64) {}
}

pub(crate) use record::*;

/// The default most endpoints a pool may have and still label its series
/// by endpoint.
pub const DEFAULT_ENDPOINT_LIMIT: usize = 64;

/// `endpoint`, or `None` when a pool of `pool_size` endpoints is above
/// `limit` and its series go without endpoint labels.
#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
pub(crate) fn labelled(endpoint: &Endpoint, pool_size: usize, limit: usize) -> Option<&Endpoint> {
    (pool_size <= limit).then_some(endpoint)
}

/// OpenTelemetry's `error.type` for a failure the classifier judged.
pub(crate) fn failure_type(outcome: Option<crate::classify::Outcome>) -> &'static str {
    use crate::classify::{FailureKind, Outcome};
    match outcome {
        Some(Outcome::Failure(kind)) => match kind {
            FailureKind::ConnectionRefused => "connection_refused",
            FailureKind::ConnectionReset => "connection_reset",
            FailureKind::Timeout => "timeout",
            FailureKind::Body => "body",
            _ => "transport",
        },
        _ => "transport",
    }
}

/// The host and port of an endpoint key (`scheme://host:port`).
pub(crate) fn split_key(key: &str) -> Option<(&str, &str)> {
    let authority = key.split_once("://").map_or(key, |(_, rest)| rest);
    authority.rsplit_once(':')
}
