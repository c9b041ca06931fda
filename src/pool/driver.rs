//! The background task of a pool: drives the discovery source, applies its
//! updates, keeps the health book and publishes snapshots.
//!
//! One task owns the member set and the health records, so no lock guards
//! them; everything that changes them arrives as a message: updates from
//! the source (pumped by a child task, so a slow source never delays an
//! ejection), failure reports from requests, probe results, and the timer
//! of the next ejection to end.

use std::collections::HashSet;
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
    Changes, HealthBook, HealthCheck, HealthEvent, MonitorShared, OutlierDetection, Views,
};
use crate::pool::load::{EndpointState, StateSettings};
use crate::pool::roster::{Roster, Upserted};
use crate::pool::{Shared, Snapshot};

/// At most this many queued updates (or health events) are applied before
/// one publication: a registry storm is coalesced into few snapshots, and
/// the driver still yields between batches.
const MAX_BATCH: usize = 1_024;

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
        let nanos = crate::time::saturating_nanos(half);
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
    let Some(makers) = pool
        .upgrade()
        .map(|shared| StateMakers::new(&shared, book.outlier(), &health_tx))
    else {
        return;
    };
    // Empty on the first start; on a restart (the runtime this task ran on
    // shut down), the set published before, so incremental updates apply to
    // it and endpoints keep their load history.
    let mut roster = shared_members(&pool, &mut book);
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
                // Everything the source has said by now, then one
                // publication: a burst costs one snapshot, not one each.
                let mut applied = false;
                let mut next = Some(event);
                let mut taken = 0;
                while let Some(event) = next.take() {
                    match event {
                        SourceEvent::Update(update) => {
                            applied |= shared.apply(&mut roster, &mut book, update, &makers);
                        }
                        SourceEvent::Failed { error, failures, retry_in } => {
                            shared.record_error(&*error, failures, retry_in);
                        }
                    }
                    taken += 1;
                    if taken < MAX_BATCH {
                        next = source_rx.try_recv().ok();
                    }
                }
                if applied {
                    shared.publish(&mut roster, &mut book);
                    members_changed.notify_one();
                }
            }
            event = health_rx.recv() => {
                let Some(event) = event else { return };
                let Some(shared) = pool.upgrade() else { return };
                let mut changes = Changes::default();
                let mut next = Some(event);
                let mut taken = 0;
                while let Some(event) = next.take() {
                    let more = match event {
                        // From an endpoint's monitor or a probe round that
                        // may have outlived its membership.
                        HealthEvent::Failing { key, .. } | HealthEvent::Probe { key, .. }
                            if !roster.contains(&key) => Changes::default(),
                        HealthEvent::Failing { key, reason, at } => book.on_failing(&key, &reason, at),
                        HealthEvent::Probe { key, result } => book.on_probe(&key, result),
                    };
                    changes.merge(more);
                    taken += 1;
                    if taken < MAX_BATCH {
                        next = health_rx.try_recv().ok();
                    }
                }
                shared.settle(&mut roster, &mut book, changes);
            }
            () = next_ejection_ends => {
                let Some(shared) = pool.upgrade() else { return };
                let changes = book.expire(Instant::now());
                shared.settle(&mut roster, &mut book, changes);
            }
        }
    }
}

/// The members of the pool's current snapshot, entered in `book` afresh.
fn shared_members(pool: &Weak<Shared>, book: &mut HealthBook) -> Roster {
    let mut roster = Roster::default();
    let Some(shared) = pool.upgrade() else {
        return roster;
    };
    let snapshot = shared.snapshot.load();
    for member in snapshot.all.iter() {
        if roster.adopt(member.clone()) {
            let eligible = book.add(member.endpoint().key());
            roster.set_eligible(member.endpoint().key(), eligible);
        }
    }
    roster
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
    /// Applies a source update to the roster and the health book; false
    /// when it was refused.
    fn apply(
        &self,
        roster: &mut Roster,
        book: &mut HealthBook,
        update: Update,
        makers: &StateMakers,
    ) -> bool {
        let before = roster.len();
        // Slow start is for endpoints that join a running pool, not for the
        // first set, where every endpoint would ramp together.
        let ramp = self.slow_start.is_some() && self.status().updates > 0;
        let factory = StateFactory { makers, ramp };
        let upsert = |roster: &mut Roster, book: &mut HealthBook, endpoint: Endpoint| {
            let key_joined = match roster.upsert(endpoint.clone(), |_| factory.new_state()) {
                Upserted::New => true,
                Upserted::Replaced | Upserted::Same => false,
            };
            if key_joined {
                let eligible = book.add(endpoint.key());
                roster.set_eligible(endpoint.key(), eligible);
            }
        };
        match update {
            Update::Replace(endpoints) => {
                if endpoints.is_empty() && !roster.is_empty() && !self.allow_empty {
                    tracing::warn!(
                        service = %self.service,
                        kept = roster.len(),
                        "discovery replaced the endpoint set with an empty one; \
                         keeping the last good set (allow_empty is off)"
                    );
                    self.status().rejected_updates += 1;
                    return false;
                }
                // The keys that stay; the others leave.
                let staying: HashSet<&str> = endpoints.iter().map(Endpoint::key).collect();
                let leaving: Vec<Endpoint> = roster
                    .members()
                    .filter(|m| !staying.contains(m.endpoint().key()))
                    .map(|m| m.endpoint().clone())
                    .collect();
                drop(staying);
                for endpoint in leaving {
                    roster.remove(endpoint.key());
                    book.remove(endpoint.key());
                }
                for endpoint in endpoints {
                    upsert(roster, book, endpoint);
                }
            }
            Update::Insert(endpoints) => {
                for endpoint in endpoints {
                    upsert(roster, book, endpoint);
                }
            }
            Update::Remove(endpoints) => {
                for endpoint in endpoints {
                    if roster.remove(endpoint.key()) {
                        book.remove(endpoint.key());
                    }
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
        tracing::debug!(service = %self.service, before, after = roster.len(), "endpoint set updated");
        if first {
            tracing::info!(service = %self.service, endpoints = roster.len(), "pool ready");
        }
        true
    }

    /// Acts on health changes: endpoints whose eligibility changed move in
    /// or out of the eligible list; returning endpoints start afresh (and
    /// ramp up, with slow start); any change of eligibility is published.
    fn settle(&self, roster: &mut Roster, book: &mut HealthBook, changes: Changes) {
        for key in &changes.touched {
            roster.set_eligible(key, book.is_eligible(key));
        }
        for key in &changes.returned {
            // Ejected again later in the same batch: not back after all.
            if !book.is_eligible(key) {
                continue;
            }
            if let Some(member) = roster.get(key) {
                member.state().reset_failures();
                if self.slow_start.is_some() {
                    member.state().begin_ramp();
                }
            }
        }
        if changes.republish {
            self.publish(roster, book);
        }
    }

    /// Publishes the eligible members (all of them in panic) and a picker
    /// for them: the current one updated when it can follow the edits,
    /// otherwise a new one.
    fn publish(&self, roster: &mut Roster, book: &mut HealthBook) {
        let previous = self.snapshot.load_full();
        let views = book.views();
        let published = roster.publish();
        let all = published.all;
        let panic = book.in_panic(published.eligible.len(), all.len());
        let was_panic = previous.panic;
        #[cfg(feature = "metrics")]
        crate::metrics::pool_state(
            &self.service,
            if panic {
                all.len()
            } else {
                published.eligible.len()
            },
            views.ejected,
            views.unhealthy,
            panic,
        );
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
        self.warn_if_every_check_fails(&views, all.len());
        let (members, changes) = if panic {
            (all.clone(), published.all_changes)
        } else {
            (published.eligible, published.eligible_changes)
        };
        let picker = rng::building_with(self.rng.as_ref(), || {
            let follows = previous.ready && panic == was_panic;
            match changes {
                Some(changes) if follows => previous
                    .picker
                    .update(&members, &changes)
                    .unwrap_or_else(|| self.balancer.picker(&members)),
                _ => self.balancer.picker(&members),
            }
        });
        self.snapshot.store(Arc::new(Snapshot {
            members,
            all,
            health: views,
            panic,
            picker,
            ready: true,
        }));
        self.ready.send_replace(true);
    }

    /// Says, loudly and at most once a minute, that every endpoint fails
    /// its health check: the likeliest cause is the check, not the service.
    fn warn_if_every_check_fails(&self, health: &Views, endpoints: usize) {
        if !super::stats::every_check_failing(health, endpoints) {
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
        let last_error = health.any_check_error().unwrap_or("none recorded");
        tracing::warn!(
            service = %self.service,
            check = %check,
            endpoints,
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
    makers: &'a StateMakers,
    ramp: bool,
}

/// What every endpoint state the driver makes shares: one copy per pool.
pub(crate) struct StateMakers {
    settings: Arc<StateSettings>,
}

impl StateMakers {
    fn new(
        shared: &Shared,
        outlier: &OutlierDetection,
        health: &UnboundedSender<HealthEvent>,
    ) -> Self {
        Self {
            settings: Arc::new(StateSettings::new(
                shared.clock.clone(),
                shared.tracking,
                shared.total_in_flight.clone(),
                shared.cancel_timeout,
                shared.abandoned_body_timeout,
                outlier
                    .enabled
                    .then(|| Arc::new(MonitorShared::new(*outlier, health.clone()))),
            )),
        }
    }
}

impl StateFactory<'_> {
    fn new_state(&self) -> EndpointState {
        let state = EndpointState::with_settings(self.makers.settings.clone());
        if self.ramp {
            state.begin_ramp();
        }
        state
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    use crate::Pool;
    use crate::balance::{Balancer, Members, PickContext, Picker};
    use crate::discover::Push;

    /// Round robin's picks, but every publication builds afresh and is
    /// counted.
    #[derive(Debug)]
    struct Counting(Arc<AtomicUsize>);

    struct First;

    impl Balancer for Counting {
        fn name(&self) -> &'static str {
            "counting"
        }
        fn picker(&self, _members: &Members) -> Box<dyn Picker> {
            self.0.fetch_add(1, Ordering::Relaxed);
            Box::new(First)
        }
    }

    impl Picker for First {
        fn pick(&self, members: &Members, _ctx: &PickContext<'_>) -> Option<usize> {
            (!members.is_empty()).then_some(0)
        }
    }

    /// A registry storm (1,000 single inserts queued at once) is applied
    /// in a few publications, not one per update.
    #[tokio::test]
    async fn queued_updates_are_coalesced_into_few_publications() {
        let builds = Arc::new(AtomicUsize::new(0));
        let (source, handle) = Push::new();
        let pool = Pool::builder("storm", source)
            .balancer(Counting(builds.clone()))
            .build();
        handle.replace(["10.0.0.1:80"]).unwrap();
        pool.ready().await.unwrap();
        let before = builds.load(Ordering::Relaxed);
        for i in 0..1_000 {
            handle
                .add(format!("10.1.{}.{}:80", i / 250, i % 250 + 1).as_str())
                .unwrap();
        }
        for _ in 0..1_000_000 {
            if pool.len() == 1_001 {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(pool.len(), 1_001);
        let publications = builds.load(Ordering::Relaxed) - before;
        assert!(
            (1..=50).contains(&publications),
            "{publications} publications for 1,000 queued updates"
        );
    }

    #[test]
    fn backoff_grows_and_caps() {
        let b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let first = b.delay(1, None);
        assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
        let late = b.delay(30, None);
        assert!(late >= Duration::from_millis(500) && late <= Duration::from_secs(1));
    }
}
