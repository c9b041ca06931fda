//! Helpers shared by the integration tests: real greet instances on
//! 127.0.0.1, a reqwest client, one-request helpers and bounded waits.
//!
//! Every test file includes the greet server itself
//! (`#[path = "../examples/support/greet.rs"] mod greet;`) next to this
//! module.

// Each test file uses only some of these helpers.
#![allow(dead_code)]

use std::future::Future;
use std::time::Duration;

use http::{Method, StatusCode};
use tower::{Service, ServiceExt};
use tower_lb::stats::EndpointStats;
use tower_lb::{Endpoint, Error, LoadBalance, Pool};

use crate::greet::GreetServer;

/// The balanced reqwest client every test builds.
pub type Client = LoadBalance<reqwest::Client>;

/// An upper bound for any single wait in a test: generous, but a hung test
/// fails instead of hanging the suite.
pub const WAIT: Duration = Duration::from_secs(5);

/// Starts `n` greet instances named `greet-0`, `greet-1`, ...
pub async fn start_instances(n: usize) -> Vec<GreetServer> {
    let mut instances = Vec::with_capacity(n);
    for i in 0..n {
        instances.push(
            GreetServer::start(&format!("greet-{i}"))
                .await
                .expect("start a greet instance"),
        );
    }
    instances
}

/// The instances' base URLs (`http://127.0.0.1:port`).
pub fn urls(instances: &[GreetServer]) -> Vec<String> {
    instances.iter().map(GreetServer::url).collect()
}

/// Stops every instance.
pub async fn stop_all(instances: Vec<GreetServer>) {
    for instance in instances {
        instance.stop().await;
    }
}

/// A plain reqwest client for 127.0.0.1 (no proxy, whatever the environment says).
pub fn reqwest_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("build a reqwest client")
}

/// `GET url` as a `reqwest::Request`.
pub fn get_request(url: &str) -> reqwest::Request {
    reqwest::Request::new(Method::GET, url.parse().expect("a valid URL"))
}

/// What one balanced request produced.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: StatusCode,
    /// The `x-instance` header: who answered.
    pub instance: Option<String>,
    /// The endpoint the layer noted in the response's extensions.
    pub endpoint: Option<Endpoint>,
    pub body: String,
}

/// Sends `GET url` through `client` and reads the whole answer.
pub async fn send(client: &Client, url: &str) -> Result<Answer, Error> {
    let response = client.clone().oneshot(get_request(url)).await?;
    Ok(read_answer(response).await)
}

/// Like [`send`], on a `&mut` service: `ready` then `call`.
pub async fn send_mut(client: &mut Client, url: &str) -> Result<Answer, Error> {
    let response = client.ready().await?.call(get_request(url)).await?;
    Ok(read_answer(response).await)
}

async fn read_answer(response: reqwest::Response) -> Answer {
    let status = response.status();
    let instance = response
        .headers()
        .get("x-instance")
        .map(|v| v.to_str().expect("an ASCII instance name").to_owned());
    let endpoint = response.extensions().get::<Endpoint>().cloned();
    let body = response.text().await.expect("read the body");
    Answer {
        status,
        instance,
        endpoint,
        body,
    }
}

/// Polls `condition` every few milliseconds until it holds; panics with
/// `what` if it does not within [`WAIT`].
pub async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let waited = tokio::time::timeout(WAIT, async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await;
    assert!(
        waited.is_ok(),
        "timed out after {WAIT:?} waiting until {what}"
    );
}

/// Awaits `future`, panicking with `what` if it takes longer than [`WAIT`].
pub async fn bounded<T>(what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(WAIT, future).await {
        Ok(value) => value,
        Err(_) => panic!("timed out after {WAIT:?}: {what}"),
    }
}

/// The stats of `endpoint` (matched by key) in `pool`, if it is a member.
pub fn endpoint_stats(pool: &Pool, endpoint: &str) -> Option<EndpointStats> {
    let key = Endpoint::new(endpoint)
        .expect("a valid endpoint")
        .key()
        .to_owned();
    pool.stats()
        .endpoints
        .into_iter()
        .find(|e| e.endpoint == key)
}

/// Requests in flight in `pool`, over all its endpoints.
pub fn total_in_flight(pool: &Pool) -> usize {
    pool.stats().endpoints.iter().map(|e| e.in_flight).sum()
}

/// True when `pool`'s current set contains `url` (matched by key).
pub fn pool_has(pool: &Pool, url: &str) -> bool {
    let key = Endpoint::new(url).expect("a valid endpoint");
    pool.endpoints().iter().any(|e| e.same_instance(&key))
}
