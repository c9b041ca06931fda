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
