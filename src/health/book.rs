//! The pool driver's record of every endpoint's health, and the decisions
//! that need the whole pool in view: the ejection cap, panic mode.
//!
//! Sparse: an endpoint that is healthy and has never been ejected or
//! failed a check has no record at all, so the book costs nothing per
//! endpoint in a healthy pool and a membership change touches at most one
//! record (no pass over every key).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use crate::health::{HealthCheck, OutlierDetection};

/// Where an endpoint stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum HealthState {
    /// In rotation.
    Healthy,
    /// Out of rotation after failing requests, until its time is up.
    Ejected,
    /// Out of rotation after failing active health checks.
    Unhealthy,
}

/// One endpoint's health as last published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HealthView {
    pub(crate) state: HealthState,
    pub(crate) ejected_until: Option<Instant>,
    pub(crate) times_ejected: u32,
    pub(crate) failed_checks: u32,
    pub(crate) last_check_error: Option<String>,
}

#[derive(Debug, Clone)]
struct Record {
    ejected_until: Option<Instant>,
    times_ejected: u32,
    /// When the last ejection ended: the multiplier decays from then on.
    returned_at: Option<Instant>,
    checked_healthy: bool,
    /// New, started unhealthy, and not probed yet: one good probe admits it.
    awaiting_first_check: bool,
    passes: u32,
    failures: u32,
    last_check_error: Option<String>,
}

impl Record {
    /// A record for a new endpoint: healthy, or unhealthy until checked.
    fn new(start_healthy: bool) -> Self {
        Record {
            ejected_until: None,
            times_ejected: 0,
            returned_at: None,
            checked_healthy: start_healthy,
            awaiting_first_check: !start_healthy,
            passes: 0,
            failures: 0,
            last_check_error: None,
        }
    }

    /// True when the record says no more than having none: healthy, never
    /// ejected (so `returned_at` is never read), no failed check (and
    /// `passes` counts only towards a return from unhealthy).
    fn is_blank(&self) -> bool {
        self.ejected_until.is_none()
            && self.times_ejected == 0
            && self.checked_healthy
            && !self.awaiting_first_check
            && self.failures == 0
            && self.last_check_error.is_none()
    }
}

/// What changed, for the driver to act on.
#[derive(Debug, Default)]
pub(crate) struct Changes {
    /// The eligible set changed: publish a new snapshot.
    pub(crate) republish: bool,
    /// Endpoints back in rotation: reset their counters, ramp them up.
    pub(crate) returned: Vec<Box<str>>,
    /// Endpoints whose eligibility may have changed.
    pub(crate) touched: Vec<Box<str>>,
}

impl Changes {
    /// Adds `other`'s changes to these.
    pub(crate) fn merge(&mut self, other: Changes) {
        self.republish |= other.republish;
        self.returned.extend(other.returned);
        self.touched.extend(other.touched);
    }
}

/// The health views of every endpoint that has a record, as published for
/// stats, with the counts the pool's metrics and warnings need.
#[derive(Debug, Default)]
pub(crate) struct Views {
    views: HashMap<Box<str>, HealthView>,
    pub(crate) ejected: usize,
    pub(crate) unhealthy: usize,
}

impl Views {
    /// The view of `key`: healthy and blank when it has no record.
    pub(crate) fn of(&self, key: &str) -> HealthView {
        self.views.get(key).cloned().unwrap_or(HealthView {
            state: HealthState::Healthy,
            ejected_until: None,
            times_ejected: 0,
            failed_checks: 0,
            last_check_error: None,
        })
    }

    /// Some endpoint's last check error, for a warning.
    pub(crate) fn any_check_error(&self) -> Option<&str> {
        self.views
            .values()
            .find_map(|v| v.last_check_error.as_deref())
    }
}

pub(crate) struct HealthBook {
    service: std::sync::Arc<str>,
    outlier: OutlierDetection,
    check: Option<HealthCheck>,
    panic_threshold: f64,
    /// Only endpoints with something to remember (see the module docs).
    records: HashMap<Box<str>, Record>,
    /// How many endpoints the pool has, with a record or not.
    members: usize,
    /// The views last made, until a record changes.
    views: Option<Arc<Views>>,
    /// Above this many endpoints, ejections are counted without labels.
    metrics_endpoint_limit: usize,
}

impl HealthBook {
    pub(crate) fn new(
        service: std::sync::Arc<str>,
        outlier: OutlierDetection,
        check: Option<HealthCheck>,
        panic_threshold: f64,
    ) -> Self {
        Self {
            service,
            outlier,
            check,
            panic_threshold,
            records: HashMap::new(),
            members: 0,
            views: None,
            metrics_endpoint_limit: crate::metrics::DEFAULT_ENDPOINT_LIMIT,
        }
    }

    /// A new endpoint joins: it starts healthy, or unhealthy until checked
    /// when the health check says so. True when it is eligible.
    pub(crate) fn add(&mut self, key: &str) -> bool {
        self.members += 1;
        let start_healthy = !self.check.as_ref().is_some_and(|c| c.start_unhealthy);
        if !start_healthy {
            self.records.insert(key.into(), Record::new(false));
            self.views = None;
        }
        start_healthy
    }

    /// An endpoint leaves, and its record with it.
    pub(crate) fn remove(&mut self, key: &str) {
        self.members = self.members.saturating_sub(1);
        if self.records.remove(key).is_some() {
            self.views = None;
        }
    }

    /// Whether `key` may take requests (panic mode aside).
    pub(crate) fn is_eligible(&self, key: &str) -> bool {
        self.records
            .get(key)
            .is_none_or(|r| r.ejected_until.is_none() && r.checked_healthy)
    }

    /// Whether a pool with `eligible` of its `total` endpoints eligible is
    /// in panic: when fewer than the panic threshold's share are, all of
    /// them take requests, rather than crushing the few that remain
    /// (Envoy's rule).
    pub(crate) fn in_panic(&self, eligible: usize, total: usize) -> bool {
        total > 0 && (eligible as f64) < self.panic_threshold * total as f64
    }

    /// The views for stats, made again only after a record changed.
    pub(crate) fn views(&mut self) -> Arc<Views> {
        if let Some(views) = &self.views {
            return views.clone();
        }
        let mut made = Views::default();
        for (key, record) in &self.records {
            let view = view_of(record);
            match view.state {
                HealthState::Ejected => made.ejected += 1,
                HealthState::Unhealthy => made.unhealthy += 1,
                HealthState::Healthy => {}
            }
            made.views.insert(key.clone(), view);
        }
        let made = Arc::new(made);
        self.views = Some(made.clone());
        made
    }

    /// `key`'s record for an edit (a blank one made when it has none);
    /// [`settle_record`](Self::settle_record) after.
    fn record_mut(&mut self, key: &str) -> &mut Record {
        self.views = None;
        self.records
            .entry(key.into())
            .or_insert_with(|| Record::new(true))
    }

    /// Drops `key`'s record again when the edit left it blank.
    fn settle_record(&mut self, key: &str) {
        if self.records.get(key).is_some_and(Record::is_blank) {
            self.records.remove(key);
        }
    }

    /// Counts ejections with endpoint labels only up to `limit` endpoints.
    pub(crate) fn with_metrics_endpoint_limit(mut self, limit: usize) -> Self {
        self.metrics_endpoint_limit = limit;
        self
    }

    /// Requests to `key` crossed a failure threshold: eject it, unless the
    /// share of the pool already ejected forbids.
    /// `key` must be a member (the driver checks).
    pub(crate) fn on_failing(&mut self, key: &str, reason: &str, now: Instant) -> Changes {
        let total = self.members;
        let ejected = self
            .records
            .values()
            .filter(|r| r.ejected_until.is_some())
            .count();
        let cap = total * usize::from(self.outlier.max_ejected_percent) / 100;
        let outlier = self.outlier;
        if !outlier.enabled
            || self
                .records
                .get(key)
                .is_some_and(|r| r.ejected_until.is_some())
        {
            return Changes::default();
        }
        if ejected >= cap {
            tracing::warn!(
                service = %self.service,
                endpoint = key,
                reason,
                ejected,
                cap,
                "endpoint is failing but not ejected: the pool's ejection cap is reached"
            );
            return Changes::default();
        }
        let service = self.service.clone();
        let record = self.record_mut(key);
        // The multiplier decays by one for every base period spent back in
        // rotation since the last ejection.
        if let Some(returned) = record.returned_at {
            let behaved = now.saturating_duration_since(returned);
            let periods = behaved.as_nanos() / outlier.base_ejection_time.as_nanos().max(1);
            record.times_ejected = record
                .times_ejected
                .saturating_sub(periods.min(u32::MAX as u128) as u32);
        }
        record.times_ejected = record.times_ejected.saturating_add(1);
        let duration = outlier.ejection_time(record.times_ejected);
        // A huge ejection time means "until further notice", not a panic.
        record.ejected_until = Some(
            now.checked_add(duration)
                .unwrap_or_else(|| now + crate::time::FAR_FUTURE),
        );
        tracing::warn!(
            service = %service,
            endpoint = key,
            reason,
            times_ejected = record.times_ejected,
            ejected_for_s = duration.as_secs_f64(),
            "endpoint ejected"
        );
        let labelled = total <= self.metrics_endpoint_limit;
        crate::metrics::ejection(
            &self.service,
            crate::metrics::split_key(key).filter(|_| labelled),
        );
        Changes {
            republish: true,
            returned: Vec::new(),
            touched: vec![key.into()],
        }
    }

    /// One probe of `key` finished; `key` must be a member (the driver
    /// checks).
    pub(crate) fn on_probe(&mut self, key: &str, result: Result<(), String>) -> Changes {
        let Some((healthy_threshold, unhealthy_threshold)) = self
            .check
            .as_ref()
            .map(|c| (c.healthy_threshold, c.unhealthy_threshold))
        else {
            return Changes::default();
        };
        let service = self.service.clone();
        // A passing probe of an endpoint with no record changes nothing.
        if result.is_ok() && !self.records.contains_key(key) {
            return Changes::default();
        }
        let record = self.record_mut(key);
        let mut changes = Changes::default();
        match result {
            Ok(()) => {
                record.passes += 1;
                record.failures = 0;
                record.last_check_error = None;
                // A new endpoint waiting for its first check needs only one.
                let needed = if record.awaiting_first_check {
                    1
                } else {
                    healthy_threshold
                };
                record.awaiting_first_check = false;
                // An ejection rests on requests that failed a while ago; a
                // probe that passes now is fresher evidence, so it ends
                // the ejection early (when the checks had not also marked
                // the endpoint unhealthy: then the healthy threshold
                // below decides).
                if record.ejected_until.is_some() && record.checked_healthy {
                    record.ejected_until = None;
                    record.returned_at = Some(Instant::now());
                    tracing::info!(service = %service, endpoint = key, "ejected endpoint passed a health check: back in rotation");
                    changes.republish = true;
                    changes.returned.push(key.into());
                }
                if !record.checked_healthy && record.passes >= needed {
                    // Whatever ejection was running is moot now.
                    if record.ejected_until.take().is_some() {
                        record.returned_at = Some(Instant::now());
                    }
                    record.checked_healthy = true;
                    tracing::info!(service = %service, endpoint = key, "endpoint passed its health checks");
                    changes.republish = true;
                    changes.returned.push(key.into());
                }
            }
            Err(error) => {
                record.awaiting_first_check = false;
                record.failures += 1;
                record.passes = 0;
                if record.checked_healthy && record.failures >= unhealthy_threshold {
                    record.checked_healthy = false;
                    tracing::warn!(
                        service = %service,
                        endpoint = key,
                        error = %error,
                        failed_checks = record.failures,
                        "endpoint failed its health checks"
                    );
                    changes.republish = true;
                }
                record.last_check_error = Some(error);
            }
        }
        self.settle_record(key);
        if changes.republish {
            changes.touched.push(key.into());
        }
        changes
    }

    /// Ends the ejections that are due. An endpoint whose latest probe
    /// failed does not come back on the timer: it turns unhealthy instead,
    /// and returns when its probes pass.
    pub(crate) fn expire(&mut self, now: Instant) -> Changes {
        let mut changes = Changes::default();
        let checked = self.check.is_some();
        let mut blank = Vec::new();
        for (key, record) in &mut self.records {
            if record.ejected_until.is_some_and(|until| until <= now) {
                self.views = None;
                record.ejected_until = None;
                record.returned_at = Some(now);
                if checked && record.failures > 0 && record.checked_healthy {
                    record.checked_healthy = false;
                    record.passes = 0;
                    tracing::info!(service = %self.service, endpoint = &**key, "ejection over, but the endpoint fails its health checks: it stays out");
                    continue;
                }
                if !record.checked_healthy {
                    // Still out (unhealthy); nothing to republish.
                    continue;
                }
                tracing::info!(service = %self.service, endpoint = &**key, "endpoint back from ejection");
                changes.republish = true;
                changes.returned.push(key.clone());
                changes.touched.push(key.clone());
                if record.is_blank() {
                    blank.push(key.clone());
                }
            }
        }
        for key in blank {
            self.records.remove(&key);
        }
        changes
    }

    /// When the next ejection ends.
    pub(crate) fn next_expiry(&self) -> Option<Instant> {
        self.records.values().filter_map(|r| r.ejected_until).min()
    }

    #[cfg(test)]
    pub(crate) fn view(&self, key: &str) -> HealthView {
        self.records
            .get(key)
            .map_or_else(|| Views::default().of(key), view_of)
    }

    pub(crate) fn outlier(&self) -> &OutlierDetection {
        &self.outlier
    }
}

fn view_of(record: &Record) -> HealthView {
    let state = if record.ejected_until.is_some() {
        HealthState::Ejected
    } else if !record.checked_healthy {
        HealthState::Unhealthy
    } else {
        HealthState::Healthy
    };
    HealthView {
        state,
        ejected_until: record.ejected_until,
        times_ejected: record.times_ejected,
        failed_checks: record.failures,
        last_check_error: record.last_check_error.clone(),
    }
}

/// How long until `until`, for stats.
pub(crate) fn remaining(until: Option<Instant>) -> Option<Duration> {
    until.map(|u| u.saturating_duration_since(Instant::now()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unhealthy_endpoint_needs_the_healthy_threshold_to_return() {
        let check = HealthCheck::custom(|_| async { Ok::<(), std::io::Error>(()) })
            .unhealthy_threshold(1)
            .healthy_threshold(3);
        let mut book = HealthBook::new("svc".into(), OutlierDetection::new(), Some(check), 0.5);
        book.add("h:1");
        book.on_probe("h:1", Err("down".into()));
        assert_eq!(book.view("h:1").state, HealthState::Unhealthy);
        book.on_probe("h:1", Ok(()));
        book.on_probe("h:1", Ok(()));
        assert_eq!(book.view("h:1").state, HealthState::Unhealthy);
        book.on_probe("h:1", Ok(()));
        assert_eq!(book.view("h:1").state, HealthState::Healthy);
    }

    #[test]
    fn a_new_endpoint_started_unhealthy_needs_one_good_probe() {
        let check = HealthCheck::custom(|_| async { Ok::<(), std::io::Error>(()) })
            .healthy_threshold(3)
            .start_unhealthy(true);
        let mut book = HealthBook::new("svc".into(), OutlierDetection::new(), Some(check), 0.5);
        book.add("h:1");
        assert_eq!(book.view("h:1").state, HealthState::Unhealthy);
        book.on_probe("h:1", Ok(()));
        assert_eq!(book.view("h:1").state, HealthState::Healthy);
    }

    fn check() -> HealthCheck {
        HealthCheck::custom(|_| async { Ok::<(), std::io::Error>(()) })
    }

    #[tokio::test(start_paused = true)]
    async fn a_passing_probe_ends_an_ejection() {
        let mut book = HealthBook::new("svc".into(), OutlierDetection::new(), Some(check()), 0.5);
        book.add("h:1");
        book.add("h:2");
        assert!(book.on_failing("h:1", "test", Instant::now()).republish);
        assert_eq!(book.view("h:1").state, HealthState::Ejected);
        let changes = book.on_probe("h:1", Ok(()));
        assert!(changes.republish);
        assert_eq!(changes.returned, vec![Box::<str>::from("h:1")]);
        assert_eq!(book.view("h:1").state, HealthState::Healthy);
    }

    #[tokio::test(start_paused = true)]
    async fn an_ejected_endpoint_failing_its_probes_stays_out() {
        let mut book = HealthBook::new("svc".into(), OutlierDetection::new(), Some(check()), 0.5);
        book.add("h:1");
        book.add("h:2");
        book.on_failing("h:1", "test", Instant::now());
        // One failed probe: below the unhealthy threshold, but the latest.
        book.on_probe("h:1", Err("down".into()));
        tokio::time::advance(Duration::from_secs(31)).await;
        let changes = book.expire(Instant::now());
        assert!(changes.returned.is_empty());
        assert_eq!(book.view("h:1").state, HealthState::Unhealthy);
        assert_eq!(book.next_expiry(), None, "no timer left to spin on");
        // Back when the probes pass.
        book.on_probe("h:1", Ok(()));
        assert_eq!(book.view("h:1").state, HealthState::Unhealthy);
        let changes = book.on_probe("h:1", Ok(()));
        assert_eq!(changes.returned, vec![Box::<str>::from("h:1")]);
        assert_eq!(book.view("h:1").state, HealthState::Healthy);
    }

    #[test]
    fn an_endless_ejection_does_not_panic() {
        let outlier = OutlierDetection::new()
            .base_ejection_time(Duration::MAX)
            .max_ejection_time(Duration::MAX);
        let mut book = HealthBook::new("svc".into(), outlier, None, 0.5);
        book.add("h:1");
        book.add("h:2");
        assert!(book.on_failing("h:1", "test", Instant::now()).republish);
        assert_eq!(book.view("h:1").state, HealthState::Ejected);
    }
}
