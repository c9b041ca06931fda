//! tower-lb as a reqwest-middleware link, beside other middleware: a
//! retry middleware above it (reqwest-retry), one written here below it,
//! real greet instances and a dead one on 127.0.0.1.
#![cfg(feature = "reqwest-middleware")]

mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::Extensions;
use reqwest_middleware::{ClientBuilder, Middleware, Next};
use reqwest_retry::RetryTransientMiddleware;
use reqwest_retry::policies::ExponentialBackoff;
use serde::Deserialize;
use support::bounded;
use support::instances::{start_instances, stop_all, urls};
use support::retry::refusing_url;
use tower_lb::balance::Random;
use tower_lb::classify::Verdict;
use tower_lb::client::{LoadBalanceMiddleware, TriedEndpoints};
use tower_lb::discover::Fixed;
use tower_lb::health::OutlierDetection;
use tower_lb::{Endpoint, LoadBalanceLayer};

#[derive(Debug, Deserialize)]
struct Greeting {
    message: String,
}

/// Written here, placed after the balancer: records the URL each attempt
/// goes out with, and tags it with a header.
#[derive(Clone, Default)]
struct Recorder {
    seen: Arc<Mutex<Vec<String>>>,
}

#[async_trait::async_trait]
impl Middleware for Recorder {
    async fn handle(
        &self,
        mut request: reqwest::Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        self.seen.lock().unwrap().push(request.url().to_string());
        request
            .headers_mut()
            .insert("x-recorded", http::HeaderValue::from_static("1"));
        next.run(request, extensions).await
    }
}

#[tokio::test]
async fn balances_and_avoids_tried_endpoints_under_a_retry_middleware() {
    let instances = start_instances(2).await;
    let dead = refusing_url();
    let mut endpoints = urls(&instances);
    endpoints.push(dead.clone());
    let balancer = LoadBalanceLayer::builder()
        .service("greet", Fixed::new(endpoints).unwrap())
        // Random picks, seeded: without the tried endpoints avoided, a
        // retry would go back to the dead instance one time in three.
        .balancer(Random::new())
        .configure_pools(|pool| pool.outlier_detection(OutlierDetection::disabled()).seed(3))
        .build()
        .unwrap();
    let lb = LoadBalanceMiddleware::new(balancer);
    let recorder = Recorder::default();
    let retry = ExponentialBackoff::builder()
        .retry_bounds(Duration::from_millis(1), Duration::from_millis(5))
        .build_with_max_retries(2);
    let client = ClientBuilder::new(support::reqwest_client())
        .with(RetryTransientMiddleware::new_with_policy(retry))
        .with(lb.clone())
        .with(recorder.clone())
        .build();

    let mut answered = BTreeMap::new();
    for i in 0..30 {
        let response = bounded(
            "a call through the chain",
            client
                .get(format!("http://greet/api/greet?name=c{i}"))
                .send(),
        )
        .await
        .expect("the dead instance is retried around");
        let endpoint = response.extensions().get::<Endpoint>().cloned().unwrap();
        assert_ne!(endpoint.key(), dead, "answered by the dead instance?");
        // The classifier's verdict rides in every answer of the chain.
        assert_eq!(
            response.extensions().get::<Verdict>(),
            Some(&Verdict::SUCCESS)
        );
        *answered.entry(endpoint.key().to_string()).or_insert(0) += 1;
        let greeting: Greeting = response.json().await.unwrap();
        assert_eq!(greeting.message, format!("Hello, c{i}!"));
    }
    // Both live instances served; the recorder below saw every attempt,
    // addressed to an endpoint rather than to `greet`.
    assert_eq!(answered.len(), 2, "{answered:?}");
    let seen = recorder.seen.lock().unwrap().clone();
    assert!(
        seen.len() > 30,
        "retries went through it too: {}",
        seen.len()
    );
    assert!(
        seen.iter().all(|url| url.starts_with("http://127.0.0.1:")),
        "{seen:?}"
    );
    let to_dead = seen.iter().filter(|url| url.starts_with(&dead)).count();
    assert_eq!(seen.len(), 30 + to_dead, "one retry per refusal");
    // The balancer counted the refusals against the dead endpoint.
    let stats = lb.balancer().pool("greet").unwrap().stats();
    let dead_stats = stats.endpoints.iter().find(|e| e.endpoint == dead).unwrap();
    assert_eq!(dead_stats.failures as usize, to_dead, "{stats:?}");
    assert!(
        stats.endpoints.iter().all(|e| e.in_flight == 0),
        "{stats:?}"
    );
    stop_all(instances).await;
}

#[tokio::test]
async fn each_attempt_is_noted_for_the_next() {
    let instances = start_instances(1).await;
    let balancer = LoadBalanceLayer::builder()
        .service("greet", Fixed::new(urls(&instances)).unwrap())
        .build()
        .unwrap();
    /// Reads what the balancer noted, after the call comes back up.
    #[derive(Clone, Default)]
    struct Notes(Arc<Mutex<Option<TriedEndpoints>>>);
    #[async_trait::async_trait]
    impl Middleware for Notes {
        async fn handle(
            &self,
            request: reqwest::Request,
            extensions: &mut Extensions,
            next: Next<'_>,
        ) -> reqwest_middleware::Result<reqwest::Response> {
            let result = next.run(request, extensions).await;
            *self.0.lock().unwrap() = extensions.get::<TriedEndpoints>().cloned();
            result
        }
    }
    let notes = Notes::default();
    let client = ClientBuilder::new(support::reqwest_client())
        .with(notes.clone())
        .with(LoadBalanceMiddleware::new(balancer))
        .build();
    let response = client.get("http://greet/api/greet").send().await.unwrap();
    assert!(response.status().is_success());
    let tried = notes.0.lock().unwrap().clone().expect("noted");
    assert_eq!(tried.0.len(), 1);
    assert_eq!(tried.0[0].key(), instances[0].url());
    stop_all(instances).await;
}
