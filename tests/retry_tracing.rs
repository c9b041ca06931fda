//! Every retry and hedge is a `tracing` event that names the reason and
//! the endpoint. In a file of its own: a subscriber set for one thread
//! competes with other tests' threads for tracing's callsite cache.

mod support;

use std::time::Duration;

use http::StatusCode;
use tower::{ServiceBuilder, ServiceExt};
use tower_lb::retry::{Hedge, RetryLayer};

use support::captured::Captured;
use support::retry::{Instances, Reply, attempts_of, get};

/// Instance 0 of `n` stalls for a second; the others answer in 10 ms.
fn one_stalls(n: usize) -> Instances {
    Instances::new(n, |i, _, _| match i {
        0 => Reply::ok().after(Duration::from_secs(1)),
        _ => Reply::ok().after(Duration::from_millis(10)),
    })
}

#[tokio::test(start_paused = true)]
async fn every_retry_and_hedge_is_a_tracing_event_with_reason_and_endpoint() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    // A retry: the only instance answers 503 once.
    let instances = Instances::new(1, |_, n, _| match n {
        0 => Reply::status(503),
        _ => Reply::ok(),
    });
    let balancer = instances.balancer();
    balancer.pool("greet").unwrap().ready().await.unwrap();
    let client = ServiceBuilder::new()
        .layer(RetryLayer::new())
        .layer(balancer)
        .service(instances.service(false));
    let response = client.oneshot(get()).await.unwrap();
    assert_eq!(attempts_of(response.extensions()).retries(), 1);

    // A hedge: instance 0 of two stalls; round robin meets it within two calls.
    let instances = one_stalls(2);
    let retry = RetryLayer::builder()
        .hedge(Hedge::after(Duration::from_millis(100)))
        .build()
        .unwrap();
    let balancer = instances.balancer();
    balancer.pool("greet").unwrap().ready().await.unwrap();
    let hedged = ServiceBuilder::new()
        .layer(retry)
        .layer(balancer)
        .service(instances.service(true));
    for _ in 0..2 {
        let response = hedged.clone().oneshot(get()).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
    let log = captured.text();
    let retry = log
        .lines()
        .find(|l| l.contains("retrying"))
        .unwrap_or_else(|| panic!("no retry event in:\n{log}"));
    assert!(retry.contains("reason=status 503"), "{retry}");
    assert!(retry.contains("endpoint=\"http://127.0.0.1:1\""), "{retry}");
    assert!(retry.contains("service=greet"), "{retry}");
    assert!(retry.contains("tower_lb::retry:"), "{retry}");
    let hedge = log
        .lines()
        .find(|l| l.contains("hedging"))
        .unwrap_or_else(|| panic!("no hedge event in:\n{log}"));
    assert!(
        hedge.contains("slow_endpoint=\"http://127.0.0.1:1\""),
        "{hedge}"
    );
}
