//! Health and retries together, against real servers: with one of three
//! instances dead, every request succeeds, and once the dead one is ejected
//! it sees no more attempts.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use support::instances::{start_instances, stop_all, urls};
use support::pool::endpoint_stats;
use support::requests::get_request;
use support::{bounded, reqwest_client};
use tower::{ServiceBuilder, ServiceExt};
use tower_lb::health::HealthState;
use tower_lb::retry::RetryLayer;
use tower_lb::{LoadBalanceLayer, Pool, discover::Fixed};

const REQUESTS: usize = 10_000;
const TASKS: usize = 16;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_gets_succeed_with_one_instance_dead() {
    let mut instances = start_instances(3).await;
    let dead = instances.remove(0);
    let dead_url = dead.url();
    dead.stop().await;

    let mut all = urls(&instances);
    all.push(dead_url.clone());
    let pool = Pool::builder("greet", Fixed::new(all).unwrap()).build();
    let lb = LoadBalanceLayer::builder()
        .pool(pool.clone())
        .build()
        .unwrap();
    let client = ServiceBuilder::new()
        .layer(RetryLayer::new())
        .layer(lb)
        .service(reqwest_client());

    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..TASKS {
        let client = client.clone();
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            let mut ok = 0;
            while next.fetch_add(1, Ordering::Relaxed) < REQUESTS {
                let response = client
                    .clone()
                    .oneshot(get_request("http://greet/api/greet?name=retry"))
                    .await
                    .expect("every request succeeds");
                assert_eq!(response.status(), 200);
                ok += 1;
            }
            ok
        }));
    }
    // Ten thousand calls take a few seconds, far longer on a loaded 2-core
    // machine: a bound against hanging, not a speed test.
    let mut ok = 0;
    let joined = tokio::time::timeout(std::time::Duration::from_secs(120), async {
        for task in tasks {
            ok += task.await.unwrap();
        }
    })
    .await;
    assert!(joined.is_ok(), "the load did not finish within 120 s");
    assert_eq!(ok, REQUESTS);

    let dead_stats = endpoint_stats(&pool, &dead_url).unwrap();
    assert_eq!(dead_stats.health, HealthState::Ejected);
    // Five failures eject it; requests already on their way when it was
    // ejected may add one each, at most one per task.
    assert!(
        dead_stats.failures <= (5 + TASKS) as u64,
        "the dead instance saw {} attempts",
        dead_stats.failures
    );
    let served: u64 = instances.iter().map(|i| i.hits()).sum();
    assert_eq!(
        served, REQUESTS as u64,
        "every request was answered once by a live instance"
    );
    stop_all(instances).await;
}

/// An attempt the retry layer cuts short with its attempt timeout is the
/// endpoint's failure: a stalled instance is ejected after five of them,
/// while every call still succeeds elsewhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attempts_cut_short_by_the_attempt_timeout_eject_a_stalled_instance() {
    let instances = start_instances(3).await;
    instances[0].set_delay(std::time::Duration::from_secs(30));
    let pool = Pool::builder("greet", Fixed::new(urls(&instances)).unwrap()).build();
    let lb = LoadBalanceLayer::builder()
        .pool(pool.clone())
        .build()
        .unwrap();
    let retry = RetryLayer::builder()
        .attempt_timeout(std::time::Duration::from_millis(100))
        .build()
        .unwrap();
    let client = ServiceBuilder::new()
        .layer(retry)
        .layer(lb)
        .service(reqwest_client());
    for _ in 0..60 {
        let response = bounded(
            "a call",
            client
                .clone()
                .oneshot(get_request("http://greet/api/greet?name=stall")),
        )
        .await
        .expect("every call succeeds on another instance");
        assert_eq!(response.status(), 200);
    }
    let stalled = endpoint_stats(&pool, &instances[0].url()).unwrap();
    assert_eq!(stalled.health, HealthState::Ejected, "{stalled:?}");
    assert_eq!(stalled.failures, 5, "five timeouts, then no more attempts");
    assert_eq!(stalled.in_flight, 0);
    stop_all(instances).await;
}
