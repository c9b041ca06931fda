//! How each balancer spreads real requests over real instances, through the
//! load-balancing layer wrapping reqwest's client and hyper-util's client.

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::TokioExecutor;
use support::greet::GreetServer;
use support::instances::{start_instances, stop_all, urls};
use support::requests::send;
use support::{Client, bounded, reqwest_client};
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_lb::balance::{
    Balancer, LeastRequest, LeastRequestMode, Random, RoundRobin, WeightedRoundRobin,
};
use tower_lb::discover::Fixed;
use tower_lb::{Endpoint, LoadBalanceLayer};

const URL: &str = "http://greet/api/greet?name=Alice";
const BODY: &str = r#"{"message":"Hello, Alice!"}"#;

/// The layer over reqwest for one `greet` service on `endpoints`.
fn client_for(endpoints: Vec<Endpoint>, balancer: impl Balancer) -> Client {
    let layer = LoadBalanceLayer::builder()
        .service("greet", Fixed::new(endpoints).unwrap())
        .balancer(balancer)
        .build()
        .unwrap();
    ServiceBuilder::new().layer(layer).service(reqwest_client())
}

fn endpoints(instances: &[GreetServer]) -> Vec<Endpoint> {
    urls(instances)
        .iter()
        .map(|u| Endpoint::new(u).unwrap())
        .collect()
}

/// Per-instance counts of `n` sequential requests, by `x-instance` header,
/// checking on the way that the `Endpoint` extension names the same
/// instance as the header. Returns the counts and the order of answers.
async fn sequential(
    client: &Client,
    instances: &[GreetServer],
    n: usize,
) -> (HashMap<String, usize>, Vec<String>) {
    let by_key: HashMap<String, String> = instances
        .iter()
        .map(|i| {
            (
                Endpoint::new(&i.url()).unwrap().key().to_owned(),
                i.name().to_owned(),
            )
        })
        .collect();
    let mut counts = HashMap::new();
    let mut order = Vec::with_capacity(n);
    for _ in 0..n {
        let answer = bounded("a sequential request", send(client, URL))
            .await
            .unwrap();
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.body, BODY);
        let instance = answer.instance.expect("x-instance header");
        let endpoint = answer
            .endpoint
            .expect("Endpoint in the response extensions");
        assert_eq!(
            by_key.get(endpoint.key()),
            Some(&instance),
            "extension and header disagree"
        );
        *counts.entry(instance.clone()).or_insert(0) += 1;
        order.push(instance);
    }
    (counts, order)
}

/// Checks each instance's share of `total` against `expected` (same order as
/// `instances`) within `tolerance` (a fraction, 0.02 = 2 percentage points).
fn assert_shares(
    counts: &HashMap<String, usize>,
    instances: &[GreetServer],
    expected: &[f64],
    tolerance: f64,
) {
    let total: usize = counts.values().sum();
    for (instance, want) in instances.iter().zip(expected) {
        let got = counts.get(instance.name()).copied().unwrap_or(0) as f64 / total as f64;
        assert!(
            (got - want).abs() <= tolerance,
            "{}: share {got:.4}, expected {want:.4} ± {tolerance} ({counts:?})",
            instance.name()
        );
        // The server agrees with what the client saw.
        assert_eq!(
            instance.hits() as usize,
            counts.get(instance.name()).copied().unwrap_or(0)
        );
    }
}

#[tokio::test]
async fn round_robin_is_exactly_even() {
    let instances = start_instances(3).await;
    let client = client_for(endpoints(&instances), RoundRobin::new());

    let k = 50;
    let (counts, order) = sequential(&client, &instances, 3 * k).await;
    for instance in &instances {
        assert_eq!(counts.get(instance.name()), Some(&k), "{counts:?}");
        assert_eq!(instance.hits(), k as u64);
    }
    // In turn: every three consecutive answers come from three instances.
    for window in order.windows(3) {
        assert!(
            window[0] != window[1] && window[1] != window[2] && window[0] != window[2],
            "{window:?}"
        );
    }

    let pool = client.pool("greet").unwrap();
    assert_eq!(pool.balancer_name(), "round_robin");
    for e in pool.stats().endpoints {
        assert_eq!(
            (e.requests, e.failures, e.in_flight),
            (k as u64, 0, 0),
            "{e:?}"
        );
    }
    stop_all(instances).await;
}

#[tokio::test]
async fn weighted_round_robin_follows_weights() {
    let instances = start_instances(3).await;
    let weights = [3u32, 2, 1];
    let eps = endpoints(&instances)
        .into_iter()
        .zip(weights)
        .map(|(e, w)| e.with_weight(w).unwrap())
        .collect();
    let client = client_for(eps, WeightedRoundRobin::new());

    let (counts, _) = sequential(&client, &instances, 3000).await;
    assert_shares(
        &counts,
        &instances,
        &[3.0 / 6.0, 2.0 / 6.0, 1.0 / 6.0],
        0.02,
    );
    let weights_in_stats: Vec<u32> = {
        let mut by_endpoint: Vec<_> = client.pool("greet").unwrap().stats().endpoints;
        by_endpoint.sort_by_key(|e| std::cmp::Reverse(e.weight));
        by_endpoint.iter().map(|e| e.weight).collect()
    };
    assert_eq!(weights_in_stats, [3, 2, 1]);
    stop_all(instances).await;
}

#[tokio::test]
async fn weighted_round_robin_interleaves() {
    let instances = start_instances(2).await;
    let heavy = Endpoint::new(&instances[0].url())
        .unwrap()
        .with_weight(3)
        .unwrap();
    let light = Endpoint::new(&instances[1].url()).unwrap();
    let client = client_for(vec![heavy, light], WeightedRoundRobin::new());

    let (counts, order) = sequential(&client, &instances, 400).await;
    assert_eq!(counts.get("greet-0"), Some(&300), "{counts:?}");
    assert_eq!(counts.get("greet-1"), Some(&100), "{counts:?}");
    // A A B A, never A A A B: every 4 consecutive picks hold exactly 3 heavy.
    for (i, window) in order.windows(4).enumerate() {
        let heavy = window.iter().filter(|n| *n == "greet-0").count();
        assert_eq!(heavy, 3, "picks {i}..{}: {window:?}", i + 4);
    }
    stop_all(instances).await;
}

#[tokio::test]
async fn random_spreads_evenly() {
    let instances = start_instances(3).await;
    let client = client_for(endpoints(&instances), Random::new());

    let (counts, _) = sequential(&client, &instances, 3000).await;
    // σ of one share is ~0.86 percentage points: 4 points is over 4.5σ.
    assert_shares(&counts, &instances, &[1.0 / 3.0; 3], 0.04);
    assert_eq!(client.pool("greet").unwrap().balancer_name(), "random");
    stop_all(instances).await;
}

/// Fires `total` requests, at most `concurrency` at a time, and returns the
/// per-instance counts. Every request must succeed.
async fn concurrent(client: &Client, total: usize, concurrency: usize) -> HashMap<String, usize> {
    let semaphore = Arc::new(tokio::sync::Semaphore::new(concurrency));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..total {
        let permit = semaphore.clone().acquire_owned().await.unwrap();
        let client = client.clone();
        tasks.spawn(async move {
            let answer = send(&client, URL).await;
            drop(permit);
            answer
        });
    }
    let mut counts = HashMap::new();
    bounded("the concurrent requests", async {
        while let Some(joined) = tasks.join_next().await {
            let answer = joined.unwrap().expect("a concurrent request failed");
            assert_eq!(answer.status, StatusCode::OK);
            *counts.entry(answer.instance.unwrap()).or_insert(0) += 1;
        }
    })
    .await;
    counts
}

async fn least_request_avoids_the_slow_instance(balancer: LeastRequest) {
    let instances = start_instances(3).await;
    instances[0].set_delay(Duration::from_millis(100));
    let client = client_for(endpoints(&instances), balancer);

    let counts = concurrent(&client, 300, 30).await;
    assert_eq!(counts.values().sum::<usize>(), 300);
    let slow = counts.get("greet-0").copied().unwrap_or(0);
    let fast_min = counts
        .get("greet-1")
        .copied()
        .unwrap_or(0)
        .min(counts.get("greet-2").copied().unwrap_or(0));
    // Even would be 100 each. A wide margin: on a loaded 2-core machine the
    // fast instances slow down too, and the gap narrows (seen: 45 vs 123).
    assert!(
        slow * 2 < fast_min,
        "the slow instance got {slow} requests, the fast ones at least {fast_min}: {counts:?}"
    );
    let pool = client.pool("greet").unwrap();
    assert_eq!(support::pool::total_in_flight(pool), 0);
    stop_all(instances).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_request_p2c_avoids_the_slow_instance() {
    least_request_avoids_the_slow_instance(LeastRequest::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_request_full_scan_avoids_the_slow_instance() {
    least_request_avoids_the_slow_instance(LeastRequest::new().mode(LeastRequestMode::FullScan))
        .await;
}

#[tokio::test]
async fn least_request_full_scan_spreads_sequential_requests() {
    let instances = start_instances(3).await;
    let client = client_for(
        endpoints(&instances),
        LeastRequest::new().mode(LeastRequestMode::FullScan),
    );
    assert_eq!(
        client.pool("greet").unwrap().balancer_name(),
        "least_request_full_scan"
    );

    // All idle at every pick: ties are broken at random, so all get some.
    let (counts, _) = sequential(&client, &instances, 300).await;
    for instance in &instances {
        let n = counts.get(instance.name()).copied().unwrap_or(0);
        // Expected 100 each, σ ≈ 8.2.
        assert!(n >= 60, "{}: {n} of 300 ({counts:?})", instance.name());
    }
    stop_all(instances).await;
}

#[tokio::test]
async fn the_layer_wraps_hyper_util_client() {
    let instances = start_instances(3).await;
    let layer = LoadBalanceLayer::builder()
        .service(
            "greet",
            Fixed::new(instances.iter().map(GreetServer::addr)).unwrap(),
        )
        .balancer(RoundRobin::new())
        .build()
        .unwrap();
    let hyper = HyperClient::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let mut client = ServiceBuilder::new().layer(layer.clone()).service(hyper);

    let mut seen = HashMap::new();
    for _ in 0..6 {
        let request = http::Request::get(URL).body(Empty::<Bytes>::new()).unwrap();
        let response = bounded("a hyper request", async {
            ServiceExt::<http::Request<Empty<Bytes>>>::ready(&mut client)
                .await?
                .call(request)
                .await
        })
        .await
        .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let instance = response.headers()["x-instance"]
            .to_str()
            .unwrap()
            .to_owned();
        let endpoint = response
            .extensions()
            .get::<Endpoint>()
            .cloned()
            .expect("Endpoint extension");
        let server = instances.iter().find(|i| i.name() == instance).unwrap();
        assert_eq!(endpoint, Endpoint::from_addr(server.addr()));
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], BODY.as_bytes());
        *seen.entry(instance).or_insert(0) += 1;
    }
    // Round robin: two each.
    for instance in &instances {
        assert_eq!(seen.get(instance.name()), Some(&2), "{seen:?}");
        assert_eq!(instance.hits(), 2);
    }
    assert_eq!(
        layer.stats()[0]
            .endpoints
            .iter()
            .map(|e| e.requests)
            .sum::<u64>(),
        6
    );

    // A request with a body goes through too (Full body type).
    let hyper =
        HyperClient::builder(TokioExecutor::new()).build_http::<http_body_util::Full<Bytes>>();
    let client = ServiceBuilder::new().layer(layer).service(hyper);
    let request = http::Request::get("http://GREET/api/greet?name=Bob")
        .body(http_body_util::Full::new(Bytes::new()))
        .unwrap();
    let response = bounded("a hyper request", client.oneshot(request))
        .await
        .unwrap();
    assert!(response.extensions().get::<Endpoint>().is_some());
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], br#"{"message":"Hello, Bob!"}"#);
    stop_all(instances).await;
}

/// The endpoint rides in the request to the layers beneath only when the
/// builder asks for it (`endpoint_in_requests`); the response carries it
/// either way. A layer between ours and hyper-util's client records what it
/// sees.
#[tokio::test]
async fn the_endpoint_reaches_inner_layers_only_when_asked() {
    let instances = start_instances(1).await;
    for on in [false, true] {
        let layer = LoadBalanceLayer::builder()
            .service(
                "greet",
                Fixed::new(instances.iter().map(GreetServer::addr)).unwrap(),
            )
            .endpoint_in_requests(on)
            .build()
            .unwrap();
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let hyper = HyperClient::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
        let noted = seen.clone();
        let client = ServiceBuilder::new()
            .layer(layer)
            .map_request(move |request: http::Request<Empty<Bytes>>| {
                let endpoint = request.extensions().get::<Endpoint>().cloned();
                noted.lock().unwrap().push(endpoint);
                request
            })
            .service(hyper);
        let request = http::Request::get(URL).body(Empty::<Bytes>::new()).unwrap();
        let response = bounded("a hyper request", client.oneshot(request))
            .await
            .unwrap();
        let answered = response.extensions().get::<Endpoint>().cloned();
        assert_eq!(answered, Some(Endpoint::from_addr(instances[0].addr())));
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen, vec![if on { answered } else { None }], "on: {on}");
    }
    stop_all(instances).await;
}
