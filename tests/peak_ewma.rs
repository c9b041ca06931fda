//! Peak-EWMA against real loopback servers: one fast, one twenty times
//! slower, one refusing connections. Once warmed up, the slow one must get
//! under 10% of requests and the refusing one under 2%.

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use support::greet::GreetServer;
use tokio::sync::Semaphore;
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_lb::balance::PeakEwma;
use tower_lb::discover::Fixed;
use tower_lb::{Endpoint, Error, LoadBalanceLayer};

/// A loopback port with nothing listening, held for the whole test.
fn refusing_port() -> u16 {
    let url = support::retry::refusing_url();
    url.rsplit(':').next().unwrap().parse().unwrap()
}

/// Sends `count` requests, `concurrency` at a time, and counts them by the
/// endpoint that was picked, answered or not.
async fn send<S>(client: &S, count: usize, concurrency: usize) -> HashMap<String, usize>
where
    S: Service<reqwest::Request, Response = reqwest::Response, Error = Error>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
{
    let permits = Arc::new(Semaphore::new(concurrency));
    let mut tasks = Vec::new();
    for _ in 0..count {
        let permit = permits.clone().acquire_owned().await.unwrap();
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let _permit = permit;
            let url = "http://greet/api/greet?name=ewma".parse().unwrap();
            let request = reqwest::Request::new(http::Method::GET, url);
            match client.oneshot(request).await {
                Ok(response) => response
                    .extensions()
                    .get::<Endpoint>()
                    .unwrap()
                    .key()
                    .to_string(),
                Err(Error::Inner {
                    endpoint: Some(endpoint),
                    ..
                }) => endpoint.key().to_string(),
                Err(other) => panic!("unexpected error: {other}"),
            }
        }));
    }
    let mut counts = HashMap::new();
    for task in tasks {
        *counts.entry(task.await.unwrap()).or_default() += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peak_ewma_avoids_slow_and_refusing_endpoints() {
    let fast = GreetServer::start("fast").await.unwrap();
    let slow = GreetServer::start("slow").await.unwrap();
    fast.set_delay(Duration::from_millis(1));
    // Far apart, so that a loaded machine's scheduling delays (milliseconds)
    // cannot make the two look alike.
    slow.set_delay(Duration::from_millis(150));
    let refusing = format!("http://127.0.0.1:{}", refusing_port());

    let layer = LoadBalanceLayer::builder()
        .service(
            "greet",
            Fixed::new([fast.url(), slow.url(), refusing.clone()]).unwrap(),
        )
        .balancer(PeakEwma::new())
        .build()
        .unwrap();
    let client = ServiceBuilder::new()
        .layer(layer)
        .service(reqwest::Client::new());

    let measured = tokio::time::timeout(Duration::from_secs(60), async {
        send(&client, 100, 4).await; // warm-up: every endpoint gets a history
        send(&client, 1_000, 8).await
    })
    .await
    .expect("the run finishes within a minute");

    let share = |url: &str| {
        let key = Endpoint::new(url).unwrap().key().to_string();
        measured.get(&key).copied().unwrap_or(0) as f64 / 1_000.0
    };
    assert!(
        share(&slow.url()) < 0.20,
        "slow got {:.3}: {measured:?}",
        share(&slow.url())
    );
    assert!(
        share(&refusing) < 0.02,
        "refusing got {:.3}: {measured:?}",
        share(&refusing)
    );
    assert!(share(&fast.url()) > 0.78, "{measured:?}");
}
