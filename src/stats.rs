//! Serializable pictures of pools and endpoints, for dashboards and logs.

use serde::Serialize;

use crate::health::HealthState;
use crate::pool::member::Member;

/// One pool at one moment. Serializes to JSON with `serde_json`.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct PoolStats {
    /// The logical service.
    pub service: String,
    /// The balancer's name.
    pub balancer: &'static str,
    /// Whether discovery has produced a first endpoint set.
    pub ready: bool,
    /// How many endpoints requests may go to now.
    pub eligible: usize,
    /// Too few endpoints are healthy: the pool balances over all of them.
    pub panic: bool,
    /// Every endpoint fails its active health check: most often the check
    /// itself is wrong (a path the service does not serve), since a whole
    /// service rarely fails at once. The pool is then in panic mode.
    pub every_check_failing: bool,
    /// The current endpoints with their load and counters, sorted by key.
    pub endpoints: Vec<EndpointStats>,
    /// Updates applied from the discovery source.
    pub discovery_updates: u64,
    /// Updates refused because they would have emptied the pool.
    pub discovery_rejected_updates: u64,
    /// Errors returned by the discovery source.
    pub discovery_errors: u64,
    /// True when the source has failed since its last good update: the
    /// endpoints are the last known good set and may be out of date.
    pub discovery_stale: bool,
    /// The source's most recent error, with its causes.
    pub discovery_last_error: Option<String>,
    /// Seconds since the last applied update.
    pub seconds_since_update: Option<f64>,
}

/// One endpoint of a pool at one moment.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct EndpointStats {
    /// `scheme://host:port`.
    pub endpoint: String,
    /// Its weight.
    pub weight: u32,
    /// Its zone, if any.
    pub zone: Option<String>,
    /// Requests in flight now.
    pub in_flight: usize,
    /// Requests finished.
    pub requests: u64,
    /// Requests finished as failures.
    pub failures: u64,
    /// Time-decayed average time to the response head, in milliseconds
    /// (a cancelled request's wait counts too): what Peak-EWMA weighs.
    pub latency_ms: Option<f64>,
    /// Average time to the last byte of the response body, in
    /// milliseconds.
    pub last_byte_ms: Option<f64>,
    /// In rotation, ejected, or failing health checks.
    pub health: HealthState,
    /// Seconds left of the current ejection.
    pub ejected_for_secs: Option<f64>,
    /// How many times it has been ejected (decays while it behaves).
    pub times_ejected: u32,
    /// Health checks failed in a row.
    pub failed_checks: u32,
    /// Why the last health check failed, while it is failing.
    pub last_check_error: Option<String>,
}

impl EndpointStats {
    pub(crate) fn of(member: &Member) -> Self {
        let state = member.state();
        Self {
            endpoint: member.endpoint().key().to_string(),
            weight: member.weight(),
            zone: member.endpoint().zone().map(str::to_string),
            in_flight: state.in_flight(),
            requests: state.requests(),
            failures: state.failures(),
            latency_ms: state.latency().map(|d| d.as_secs_f64() * 1e3),
            last_byte_ms: state.last_byte_latency().map(|d| d.as_secs_f64() * 1e3),
            health: HealthState::Healthy,
            ejected_for_secs: None,
            times_ejected: 0,
            failed_checks: 0,
            last_check_error: None,
        }
    }
}
