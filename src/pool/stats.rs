//! [`PoolStats`]: the serializable picture of a pool, for [`Pool::stats`].
//!
//! [`Pool::stats`]: crate::Pool::stats

use crate::health::{HealthState, HealthView, remaining};
use crate::pool::Shared;
use crate::stats::{EndpointStats, PoolStats};

/// Whether every endpoint is out for failing its active checks.
pub(crate) fn every_check_failing(health: &[HealthView]) -> bool {
    !health.is_empty() && health.iter().all(|h| h.state == HealthState::Unhealthy)
}

/// Assembles the pool's stats from its current snapshot and its source's
/// status.
pub(super) fn assemble(shared: &Shared) -> PoolStats {
    let snapshot = shared.snapshot.load();
    let status = shared.status();
    let endpoints = snapshot
        .all
        .iter()
        .zip(snapshot.health.iter())
        .map(|(member, health)| {
            let mut stats = EndpointStats::of(member);
            stats.health = health.state;
            stats.ejected_for_secs = remaining(health.ejected_until).map(|d| d.as_secs_f64());
            stats.times_ejected = health.times_ejected;
            stats.failed_checks = health.failed_checks;
            stats.last_check_error = health.last_check_error.clone();
            stats
        })
        .collect();
    PoolStats {
        every_check_failing: every_check_failing(&snapshot.health),
        service: shared.service.to_string(),
        balancer: shared.balancer.name(),
        ready: snapshot.ready,
        eligible: snapshot.members.len(),
        panic: snapshot.panic,
        endpoints,
        discovery_updates: status.updates,
        discovery_rejected_updates: status.rejected_updates,
        discovery_errors: status.errors,
        discovery_stale: status.stale,
        discovery_last_error: status.last_error.clone(),
        seconds_since_update: status.last_update.map(|t| t.elapsed().as_secs_f64()),
    }
}
