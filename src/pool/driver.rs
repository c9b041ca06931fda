//! The background task of a pool: drives the discovery source, applies its
//! updates, keeps the health book and publishes snapshots.
//!
//! One task owns the member set and the health records, so no lock guards
//! them; everything that changes them arrives as a message: updates from
//! the source (pumped by a child task, so a slow source never delays an
//! ejection), failure reports from requests, probe results, and the timer
//! of the next ejection to end.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::sync::mpsc::{self, UnboundedSender};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::BoxError;
use crate::Endpoint;
use crate::balance::rng::{self, SeededRng};
use crate::discover::{BoxDiscover, Discover, Update};
use crate::error::chain_message;
use crate::health::{
    Changes, HealthBook, HealthCheck, HealthEvent, HealthView, OutlierDetection, PassiveMonitor,
};
use crate::pool::load::EndpointState;
use crate::pool::member::Member;
use crate::pool::{Shared, Snapshot};

/// How often, at most, the pool repeats that every endpoint fails its
/// health check.
const CHECK_WARNING_EVERY: Duration = Duration::from_secs(60);

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
    fn delay(&self, failures: u32, seeded: Option<&SeededRng>) -> Duration {
        let exp = self
            .base
            .saturating_mul(1u32 << failures.saturating_sub(1).min(20))
            .min(self.cap);
        let half = exp / 2;
        let nanos = half.as_nanos().min(u128::from(u64::MAX)) as u64;
        half + Duration::from_nanos(if nanos == 0 {
            0
        } else {
            rng::next_from(seeded) % nanos
        })
    }
}

/// Everything the driver needs besides the pool itself.
#[derive(Clone)]
pub(crate) struct DriverConfig {
    pub(crate) backoff: Backoff,
    pub(crate) outlier: OutlierDetection,
    pub(crate) check: Option<HealthCheck>,
    pub(crate) panic_threshold: f64,
}

enum SourceEvent {
    Update(Update),
    Failed {
        error: BoxError,
        failures: u32,
        retry_in: Duration,
    },
}

/// Aborts a child task when the driver stops (or is aborted itself).
struct Child(JoinHandle<()>);

impl Drop for Child {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs until the pool is dropped: its last handle aborts this task, and
/// the child tasks go with it.
pub(crate) async fn drive(pool: Weak<Shared>, home: SourceHome, config: DriverConfig) {
    let (source_tx, mut source_rx) = mpsc::unbounded_channel();
    let (health_tx, mut health_rx) = mpsc::unbounded_channel();
    let seeded = pool.upgrade().and_then(|shared| shared.rng.clone());
    let _pump = Child(tokio::spawn(pump(
        home,
        config.backoff,
        seeded.clone(),
        source_tx,
    )));
    let members_changed = Arc::new(Notify::new());
    let _prober = config.check.clone().map(|check| {
        let weak = pool.clone();
        let endpoints = move || weak.upgrade().map(|shared| shared.all_endpoints());
        Child(tokio::spawn(crate::health::run_checks(
            check,
            endpoints,
            members_changed.clone(),
            health_tx.clone(),
            seeded.clone(),
        )))
    });
    let Some(service) = pool.upgrade().map(|s| s.service.clone()) else {
        return;
    };
    let limit = pool
        .upgrade()
        .map_or(crate::metrics::DEFAULT_ENDPOINT_LIMIT, |s| {
            s.metrics_endpoint_limit
        });
    let mut book = HealthBook::new(
        service,
        config.outlier,
        config.check,
        config.panic_threshold,
    )
    .with_metrics_endpoint_limit(limit);
    // Empty on the first start; on a restart (the runtime this task ran on
    // shut down), the set published before, so incremental updates apply to
    // it and endpoints keep their load history.
    let mut members: BTreeMap<Box<str>, Member> = shared_members(&pool);
    if !members.is_empty() {
        book.track(members.keys().map(|k| &**k));
    }
    // The pump only stops by panicking (a source bug): health must go on,
    // or ejections would never end.
    let mut source_gone = false;
    loop {
        let expiry = book.next_expiry();
        let next_ejection_ends = async {
            match expiry {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            event = source_rx.recv(), if !source_gone => {
                let Some(shared) = pool.upgrade() else { return };
                let Some(event) = event else {
                    source_gone = true;
                    let panicked = std::io::Error::other(
                        "the discovery source panicked; the endpoint set is frozen",
                    );
                    shared.record_error(&panicked, 1, Duration::ZERO);
                    continue;
                };
                match event {
                    SourceEvent::Update(update) => {
                        if shared.apply(&mut members, update, &health_tx, book.outlier()) {
                            book.track(members.keys().map(|k| &**k));
                            shared.publish(&members, &book);
                            members_changed.notify_one();
                        }
                    }
                    SourceEvent::Failed { error, failures, retry_in } => {
                        shared.record_error(&*error, failures, retry_in);
                    }
                }
            }
            event = health_rx.recv() => {
                let Some(event) = event else { return };
                let Some(shared) = pool.upgrade() else { return };
                let changes = match event {
                    HealthEvent::Failing { key, reason, at } => book.on_failing(&key, &reason, at),
                    HealthEvent::Probe { key, result } => book.on_probe(&key, result),
                };
                shared.settle(&members, &book, changes);
            }
            () = next_ejection_ends => {
                let Some(shared) = pool.upgrade() else { return };
                let changes = book.expire(Instant::now());
                shared.settle(&members, &book, changes);
            }
        }
    }
}

/// The members of the pool's current snapshot, by key.
fn shared_members(pool: &Weak<Shared>) -> BTreeMap<Box<str>, Member> {
    pool.upgrade().map_or_else(BTreeMap::new, |shared| {
        shared
            .snapshot
            .load()
            .all
            .iter()
            .map(|m| (m.endpoint().key().into(), m.clone()))
            .collect()
    })
}

/// Owns the discovery source from the moment the driver is spawned, and
/// gives it back to the pool if it is dropped while the pool lives on: a
/// runtime that shuts down drops its tasks (even ones that never ran), and
/// a client kept across runtimes (one per test, say) must not be left with
/// a frozen endpoint set. Health state does not survive: ejections in
/// force end with the task.
pub(crate) struct SourceHome {
    pool: Weak<Shared>,
    source: Option<BoxDiscover>,
    /// Set while the source is being polled: still set when the home is
    /// dropped, the source panicked, and is not trusted with another start.
    polling: AtomicBool,
}

impl SourceHome {
    pub(crate) fn new(pool: Weak<Shared>, source: BoxDiscover) -> Self {
        Self {
            pool,
            source: Some(source),
            polling: AtomicBool::new(false),
        }
    }
}

impl Drop for SourceHome {
    fn drop(&mut self) {
        if self.polling.load(Ordering::Relaxed) {
            return;
        }
        if let (Some(shared), Some(source)) = (self.pool.upgrade(), self.source.take()) {
            shared.park_source(source);
        }
    }
}

/// Calls the source in a loop and forwards what it says; after an error,
/// waits out the backoff before calling again.
async fn pump(
    mut home: SourceHome,
    backoff: Backoff,
    seeded: Option<Arc<SeededRng>>,
    events: UnboundedSender<SourceEvent>,
) {
    let SourceHome {
        source, polling, ..
    } = &mut home;
    let Some(source) = source.as_mut() else {
        return;
    };
    let mut failures = 0u32;
    loop {
        let mut next = std::pin::pin!(source.next_update());
        let next = std::future::poll_fn(|cx| {
            polling.store(true, Ordering::Relaxed);
            let poll = next.as_mut().poll(cx);
            // Not reached when the poll panics.
            polling.store(false, Ordering::Relaxed);
            poll
        });
        match next.await {
            Ok(update) => {
                failures = 0;
                if events.send(SourceEvent::Update(update)).is_err() {
                    return;
                }
            }
            Err(error) => {
                failures = failures.saturating_add(1);
                let retry_in = backoff.delay(failures, seeded.as_deref());
                let event = SourceEvent::Failed {
                    error,
                    failures,
                    retry_in,
                };
                if events.send(event).is_err() {
                    return;
                }
                tokio::time::sleep(retry_in).await;
            }
        }
    }
}

impl Shared {
    /// Applies a source update to `members`; false when it was refused.
    fn apply(
        &self,
        members: &mut BTreeMap<Box<str>, Member>,
        update: Update,
        health: &UnboundedSender<HealthEvent>,
        outlier: &OutlierDetection,
    ) -> bool {
        let before = members.len();
        // Slow start is for endpoints that join a running pool, not for the
        // first set, where every endpoint would ramp together.
        let ramp = self.slow_start.is_some() && self.status().updates > 0;
        let factory = StateFactory {
            shared: self,
            health,
            outlier,
            ramp,
        };
        match update {
            Update::Replace(endpoints) => {
                if endpoints.is_empty() && !members.is_empty() && !self.allow_empty {
                    tracing::warn!(
                        service = %self.service,
                        kept = members.len(),
                        "discovery replaced the endpoint set with an empty one; \
                         keeping the last good set (allow_empty is off)"
                    );
                    self.status().rejected_updates += 1;
                    return false;
                }
                let mut next = BTreeMap::new();
                for endpoint in endpoints {
                    factory.upsert(&mut next, members, endpoint);
                }
                *members = next;
            }
            Update::Insert(endpoints) => {
                let previous = members.clone();
                for endpoint in endpoints {
                    factory.upsert(members, &previous, endpoint);
                }
            }
            Update::Remove(endpoints) => {
                for endpoint in endpoints {
                    members.remove(endpoint.key());
                }
            }
        }
        let first = {
            let mut status = self.status();
            status.updates += 1;
            crate::metrics::discovery_update(&self.service);
            status.last_update = Some(Instant::now());
            status.stale = false;
            status.updates == 1
        };
        tracing::debug!(service = %self.service, before, after = members.len(), "endpoint set updated");
        if first {
            tracing::info!(service = %self.service, endpoints = members.len(), "pool ready");
        }
        true
    }

    /// Acts on health changes: returning endpoints start afresh (and ramp
    /// up, with slow start); any change of eligibility is published.
    fn settle(&self, members: &BTreeMap<Box<str>, Member>, book: &HealthBook, changes: Changes) {
        for key in &changes.returned {
            if let Some(member) = members.get(key) {
                member.state().reset_failures();
                if self.slow_start.is_some() {
                    member.state().begin_ramp();
                }
            }
        }
        if changes.republish {
            self.publish(members, book);
        }
    }

    /// Publishes the eligible members (all of them in panic) and a new
    /// picker for them.
    fn publish(&self, members: &BTreeMap<Box<str>, Member>, book: &HealthBook) {
        let all: Box<[Member]> = members.values().cloned().collect();
        let (eligible, panic) = book.eligible(&all);
        let was_panic = self.snapshot.load().panic;
        let states = |state| {
            all.iter()
                .filter(|m| book.view(m.endpoint().key()).state == state)
                .count()
        };
        #[cfg(feature = "metrics")]
        crate::metrics::pool_state(
            &self.service,
            eligible.len(),
            states(crate::health::HealthState::Ejected),
            states(crate::health::HealthState::Unhealthy),
            panic,
        );
        #[cfg(not(feature = "metrics"))]
        let _ = states;
        if panic != was_panic {
            if panic {
                tracing::warn!(
                    service = %self.service,
                    endpoints = all.len(),
                    "too few endpoints are healthy: panic mode, balancing over all of them"
                );
            } else {
                tracing::info!(service = %self.service, "enough endpoints are healthy again: panic mode over");
            }
        }
        let health: Box<[_]> = all.iter().map(|m| book.view(m.endpoint().key())).collect();
        self.warn_if_every_check_fails(&health);
        let eligible: Box<[Member]> = eligible.into();
        let picker = rng::building_with(self.rng.as_ref(), || self.balancer.picker(&eligible));
        self.snapshot.store(Arc::new(Snapshot {
            members: eligible,
            all,
            health,
            panic,
            picker,
            ready: true,
        }));
        self.ready.send_replace(true);
    }

    /// Says, loudly and at most once a minute, that every endpoint fails
    /// its health check: the likeliest cause is the check, not the service.
    fn warn_if_every_check_fails(&self, health: &[HealthView]) {
        if !super::stats::every_check_failing(health) {
            return;
        }
        let now = Instant::now();
        {
            let mut status = self.status();
            if status
                .check_warned_at
                .is_some_and(|at| now.saturating_duration_since(at) < CHECK_WARNING_EVERY)
            {
                return;
            }
            status.check_warned_at = Some(now);
        }
        let check = self
            .driver_config
            .check
            .as_ref()
            .map_or_else(|| "its health check".to_string(), HealthCheck::describe);
        let last_error = health
            .iter()
            .find_map(|h| h.last_check_error.as_deref())
            .unwrap_or("none recorded");
        tracing::warn!(
            service = %self.service,
            check = %check,
            endpoints = health.len(),
            last_error = %last_error,
            "every endpoint fails the health check; does the service serve it? \
             Balancing over all of them (panic mode)"
        );
    }

    fn record_error(
        &self,
        error: &(dyn std::error::Error + 'static),
        failures: u32,
        retry_in: Duration,
    ) {
        let message = chain_message(error);
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
        let stale_for = status
            .last_update
            .map_or(0.0, |t| t.elapsed().as_secs_f64());
        crate::metrics::discovery_error(&self.service, stale_for);
        status.last_error = Some(message);
    }

    fn all_endpoints(&self) -> Vec<Endpoint> {
        self.snapshot
            .load()
            .all
            .iter()
            .map(|m| m.endpoint().clone())
            .collect()
    }
}

/// Makes the live state of endpoints that join the pool.
struct StateFactory<'a> {
    shared: &'a Shared,
    health: &'a UnboundedSender<HealthEvent>,
    outlier: &'a OutlierDetection,
    ramp: bool,
}

impl StateFactory<'_> {
    /// Puts `endpoint` into `into`, keeping the live state it had in `from`
    /// (same key) so in-flight counts and history survive the update.
    fn upsert(
        &self,
        into: &mut BTreeMap<Box<str>, Member>,
        from: &BTreeMap<Box<str>, Member>,
        endpoint: Endpoint,
    ) {
        let state = match from.get(endpoint.key()) {
            Some(member) => member.shared_state().clone(),
            None => Arc::new(self.new_state(&endpoint)),
        };
        into.insert(endpoint.key().into(), Member::new(endpoint, state));
    }

    fn new_state(&self, endpoint: &Endpoint) -> EndpointState {
        let passive = self
            .outlier
            .enabled
            .then(|| PassiveMonitor::new(*self.outlier, endpoint.key(), self.health.clone()));
        let state = EndpointState::new(
            self.shared.tracking,
            self.shared.total_in_flight.clone(),
            passive,
            self.shared.clock.clone(),
            self.shared.cancel_timeout,
        )
        .with_abandoned_body_timeout(self.shared.abandoned_body_timeout);
        if self.ramp {
            state.begin_ramp();
        }
        state
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_caps() {
        let b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let first = b.delay(1, None);
        assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
        let late = b.delay(30, None);
        assert!(late >= Duration::from_millis(500) && late <= Duration::from_secs(1));
    }
}
