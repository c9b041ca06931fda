//! [`PoolStats`]: the serializable picture of a pool, for [`Pool::stats`].
//!
//! [`Pool::stats`]: crate::Pool::stats

use crate::health::{Views, remaining};
use crate::pool::Shared;
use crate::stats::{EndpointStats, PoolStats};

/// Whether every one of `endpoints` is out for failing its active checks.
pub(crate) fn every_check_failing(health: &Views, endpoints: usize) -> bool {
    endpoints > 0 && health.unhealthy == endpoints
}

/// Assembles the pool's stats from its current snapshot and its source's
/// status.
pub(super) fn assemble(shared: &Shared) -> PoolStats {
    let snapshot = shared.snapshot.load();
    let status = shared.status();
    let mut members: Vec<_> = snapshot.all.iter().collect();
    members.sort_unstable_by(|a, b| a.endpoint().key().cmp(b.endpoint().key()));
    let endpoints = members
        .into_iter()
        .map(|member| {
            let health = snapshot.health.of(member.endpoint().key());
            let mut stats = EndpointStats::of(member);
            stats.health = health.state;
            stats.ejected_for_secs = remaining(health.ejected_until).map(|d| d.as_secs_f64());
            stats.times_ejected = health.times_ejected;
            stats.failed_checks = health.failed_checks;
            stats.last_check_error = health.last_check_error;
            stats
        })
        .collect();
    PoolStats {
        every_check_failing: every_check_failing(&snapshot.health, snapshot.all.len()),
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
