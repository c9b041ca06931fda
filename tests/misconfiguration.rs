//! Misconfigurations that would otherwise fail quietly say so, once: a
//! health check every endpoint fails, a discovery source that never
//! answers, a hash key no request carries, a retry layer that can never
//! retry. One test, one thread: a subscriber set for one thread competes
//! with other tests' threads for tracing's callsite cache.

mod support;

use std::time::Duration;

use support::captured::Captured;
use support::greet::GreetServer;
use support::wait_until;
use tower_lb::balance::{ConsistentHash, HashKey, PickContext};
use tower_lb::discover::{Discover, Fixed, Update};
use tower_lb::health::HealthCheck;
use tower_lb::retry::RetryLayer;
use tower_lb::{BoxError, Error, Pool};

/// A registry that never answers.
struct Silent;

impl Discover for Silent {
    async fn next_update(&mut self) -> Result<Update, BoxError> {
        std::future::pending().await
    }
}

#[tokio::test]
async fn quiet_misconfigurations_are_said_once() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_max_level(tracing::Level::INFO)
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    // A health check on a path the service does not serve.
    let instances = [
        GreetServer::start("a").await.unwrap(),
        GreetServer::start("b").await.unwrap(),
    ];
    let urls: Vec<String> = instances.iter().map(GreetServer::url).collect();
    let pool = Pool::builder("orders", Fixed::new(urls).unwrap())
        .health_check(
            HealthCheck::http("/no-such-path")
                .interval(Duration::from_millis(20))
                .unhealthy_threshold(1),
        )
        .build();
    pool.ready().await.unwrap();
    wait_until("every endpoint fails its check", || {
        pool.stats().every_check_failing
    })
    .await;
    // More rounds of failing probes: still said once (a minute apart).
    // Every request the instances see is a probe here.
    let probed = instances[0].hits();
    wait_until("more probes", || instances[0].hits() >= probed + 3).await;
    let warning = "every endpoint fails the health check";
    assert_eq!(captured.count(warning), 1, "{}", captured.text());
    let line = captured
        .text()
        .lines()
        .find(|l| l.contains(warning))
        .unwrap()
        .to_owned();
    assert!(line.contains("orders"), "{line}");
    assert!(line.contains("GET /no-such-path"), "{line}");
    assert!(line.contains("404"), "{line}");
    assert!(pool.in_panic(), "balancing over all of them");

    // A source that never answers.
    let silent = Pool::builder("billing", Silent)
        .ready_timeout(Duration::from_millis(50))
        .build();
    for _ in 0..2 {
        let error = silent.ready().await.unwrap_err();
        assert!(matches!(error, Error::NotReady { .. }), "{error}");
    }
    let warning = "discovery gave no endpoints within the ready timeout";
    assert_eq!(captured.count(warning), 1, "{}", captured.text());
    assert!(captured.text().contains("billing"));

    // A hash key header that no request carries.
    let hashed = Pool::builder("carts", Fixed::new(["127.0.0.1:1", "127.0.0.1:2"]).unwrap())
        .balancer(ConsistentHash::new(HashKey::header(
            http::HeaderName::from_static("x-user-id"),
        )))
        .build();
    hashed.ready().await.unwrap();
    let headers = http::HeaderMap::new();
    for _ in 0..10 {
        let ctx = PickContext::new("carts").with_headers(&headers);
        drop(hashed.pick_with(&ctx).unwrap());
    }
    let warning = "a request carries no hash key";
    assert_eq!(captured.count(warning), 1, "{}", captured.text());
    assert!(captured.text().contains("x-user-id"));

    // A retry layer that can never retry.
    RetryLayer::builder().max_attempts(1).build().unwrap();
    assert_eq!(captured.count("it never retries"), 1, "{}", captured.text());
}
