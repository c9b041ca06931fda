//! The background task of a pool: drives the discovery source, applies its
//! updates to the member set and publishes snapshots.

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::time::Instant;

use crate::Endpoint;
use crate::balance::rng;
use crate::discover::{BoxDiscover, Discover, Update};
use crate::pool::{EndpointState, Member, Shared, Snapshot};

/// Retry delays for a failing source: exponential, capped, with jitter.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Backoff {
    base: Duration,
    cap: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new(Duration::from_millis(100), Duration::from_secs(30))
    }
}

impl Backoff {
    pub(crate) fn new(base: Duration, cap: Duration) -> Self {
        let base = base.max(Duration::from_millis(1));
        Self {
            base,
            cap: cap.max(base),
        }
    }

    /// The delay after `failures` consecutive failures (1 or more): a random
    /// point in the upper half of `base·2^(failures-1)`, capped. Half-jitter
    /// rather than full jitter: a discovery source is one caller, not a herd,
    /// and a near-zero delay would just hammer a broken registry.
    fn delay(&self, failures: u32) -> Duration {
        let exp = self
            .base
            .saturating_mul(1u32 << failures.saturating_sub(1).min(20))
            .min(self.cap);
        let half = exp / 2;
        let nanos = half.as_nanos().min(u128::from(u64::MAX)) as u64;
        half + Duration::from_nanos(if nanos == 0 {
            0
        } else {
            rng::next_u64() % nanos
        })
    }
}

/// Runs until the pool is dropped (its last handle aborts this task) or,
/// failing that, until the first update after the pool is gone.
pub(crate) async fn drive(pool: Weak<Shared>, mut source: BoxDiscover, backoff: Backoff) {
    let mut members: BTreeMap<Box<str>, Member> = BTreeMap::new();
    let mut failures = 0u32;
    loop {
        let result = source.next_update().await;
        let Some(shared) = pool.upgrade() else {
            return;
        };
        match result {
            Ok(update) => {
                failures = 0;
                shared.apply(&mut members, update);
            }
            Err(error) => {
                failures = failures.saturating_add(1);
                let delay = backoff.delay(failures);
                shared.record_error(&*error, failures, delay);
                drop(shared);
                tokio::time::sleep(delay).await;
            }
        }
    }
}

impl Shared {
    fn apply(&self, members: &mut BTreeMap<Box<str>, Member>, update: Update) {
        let before = members.len();
        match update {
            Update::Replace(endpoints) => {
                if endpoints.is_empty() && !members.is_empty() && !self.allow_empty {
                    tracing::warn!(
                        service = %self.service,
                        kept = members.len(),
                        "discovery replaced the endpoint set with an empty one; \
                         keeping the last good set (allow_empty is off)"
                    );
                    let mut status = self.status();
                    status.rejected_updates += 1;
                    return;
                }
                let mut next = BTreeMap::new();
                for endpoint in endpoints {
                    self.upsert(&mut next, members, endpoint);
                }
                *members = next;
            }
            Update::Insert(endpoints) => {
                let previous = members.clone();
                for endpoint in endpoints {
                    self.upsert(members, &previous, endpoint);
                }
            }
            Update::Remove(endpoints) => {
                for endpoint in endpoints {
                    members.remove(endpoint.key());
                }
            }
        }
        self.publish(members);
        let was_ready = {
            let mut status = self.status();
            status.updates += 1;
            status.last_update = Some(Instant::now());
            status.stale = false;
            status.updates > 1
        };
        tracing::debug!(
            service = %self.service,
            before,
            after = members.len(),
            "endpoint set updated"
        );
        if !was_ready {
            tracing::info!(service = %self.service, endpoints = members.len(), "pool ready");
        }
    }

    fn publish(&self, members: &BTreeMap<Box<str>, Member>) {
        let members: Box<[Member]> = members.values().cloned().collect();
        let picker = self.balancer.picker(&members);
        self.snapshot.store(Arc::new(Snapshot {
            members,
            picker,
            ready: true,
        }));
        self.ready.send_replace(true);
    }

    /// Puts `endpoint` into `into`, keeping the live state it had in `from`
    /// (same key) so in-flight counts and history survive the update.
    fn upsert(
        &self,
        into: &mut BTreeMap<Box<str>, Member>,
        from: &BTreeMap<Box<str>, Member>,
        endpoint: Endpoint,
    ) {
        let state = from
            .get(endpoint.key())
            .map(|m| m.shared_state().clone())
            .unwrap_or_else(|| {
                Arc::new(EndpointState::new(
                    self.tracking,
                    self.total_in_flight.clone(),
                ))
            });
        into.insert(endpoint.key().into(), Member::new(endpoint, state));
    }

    fn record_error(
        &self,
        error: &(dyn std::error::Error + 'static),
        failures: u32,
        retry_in: Duration,
    ) {
        let message = error_chain(error);
        tracing::warn!(
            service = %self.service,
            error = %message,
            consecutive_failures = failures,
            retry_in_ms = retry_in.as_millis() as u64,
            "discovery failed; keeping the last good endpoint set"
        );
        let mut status = self.status();
        status.errors += 1;
        status.stale = true;
        status.last_error = Some(message);
    }
}

/// "outer: middle: inner", so a log line shows the root cause.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_caps() {
        let b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let first = b.delay(1);
        assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
        let late = b.delay(30);
        assert!(late >= Duration::from_millis(500) && late <= Duration::from_secs(1));
    }
}
