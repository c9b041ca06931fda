//! The task that runs a pool's active health checks.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::sync::mpsc::UnboundedSender;
use tokio::task::JoinSet;

use crate::Endpoint;
use crate::balance::rng::{self, SeededRng};
use crate::health::check::ProbeClient;
use crate::health::{HealthCheck, HealthEvent};

/// Probes every endpoint `endpoints` returns, each round concurrently, then
/// waits the interval (jittered ±10%) or until `changed` says the endpoint
/// set changed, so new endpoints are checked at once. Ends when `endpoints`
/// returns `None` (the pool is gone) or the driver stops listening.
pub(crate) async fn run(
    check: HealthCheck,
    endpoints: impl Fn() -> Option<Vec<Endpoint>>,
    changed: Arc<Notify>,
    events: UnboundedSender<HealthEvent>,
    seeded: Option<Arc<SeededRng>>,
) {
    let client = ProbeClient::for_check(&check);
    loop {
        let Some(round) = endpoints() else { return };
        let mut probes = JoinSet::new();
        for endpoint in round {
            let check = check.clone();
            let client = client.clone();
            probes.spawn(async move {
                let result = check.probe(&endpoint, &client).await;
                (endpoint, result)
            });
        }
        while let Some(done) = probes.join_next().await {
            let Ok((endpoint, result)) = done else {
                continue;
            };
            let event = HealthEvent::Probe {
                key: endpoint.key().into(),
                result,
            };
            if events.send(event).is_err() {
                return;
            }
        }
        tokio::select! {
            () = tokio::time::sleep(jittered(check.interval, seeded.as_deref())) => {}
            () = changed.notified() => {}
        }
    }
}

fn jittered(interval: Duration, seeded: Option<&SeededRng>) -> Duration {
    // A factor in [0.9, 1.1).
    let factor = 0.9 + 0.2 * rng::unit_from(seeded);
    Duration::try_from_secs_f64(interval.as_secs_f64() * factor).unwrap_or(interval)
}
