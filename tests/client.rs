//! The client handle, used as reqwest is: `get(..).query(..).send()`,
//! `.json()` on the answer, against real greet instances on 127.0.0.1.

mod support;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use support::bounded;
use support::greet::INSTANCE_HEADER;
use support::instances::{start_instances, stop_all, urls};
use support::retry::refusing_url;
use tower_lb::balance::{ConsistentHash, HashKey, RoundRobin};
use tower_lb::discover::Fixed;
use tower_lb::health::OutlierDetection;
use tower_lb::retry::{Attempts, RetryLayer};
use tower_lb::{Client, Endpoint, Error, LoadBalanceLayer, UnknownHost};

#[derive(Debug, Deserialize)]
struct Greeting {
    message: String,
}

#[derive(Serialize)]
struct Name<'a> {
    name: &'a str,
}

fn assert_send_sync<T: Send + Sync + Clone>() {}

#[tokio::test]
async fn reqwests_own_api_through_the_balancer() {
    assert_send_sync::<Client>();
    let instances = start_instances(3).await;
    let balancer = LoadBalanceLayer::builder()
        .service("greet", Fixed::new(urls(&instances)).unwrap())
        .balancer(RoundRobin::new())
        .build()
        .unwrap();
    let client = Client::new(support::reqwest_client(), balancer);

    // Exactly as with plain reqwest.
    let greeting: Greeting = bounded("a GET", async {
        client
            .get("http://greet/api/greet")
            .query(&[("name", "Alice")])
            .send()
            .await?
            .json()
            .await
            .map_err(|e| Error::Request { source: e.into() })
    })
    .await
    .unwrap();
    assert_eq!(greeting.message, "Hello, Alice!");

    // A JSON body, and who answered.
    let mut answered = BTreeMap::new();
    for _ in 0..6 {
        let response = bounded(
            "a POST",
            client
                .post("http://greet/api/greet")
                .json(&Name { name: "Bob" })
                .header("x-request", "1")
                .send(),
        )
        .await
        .unwrap();
        let instance = response.headers()[INSTANCE_HEADER]
            .to_str()
            .unwrap()
            .to_owned();
        let endpoint = response.extensions().get::<Endpoint>().cloned().unwrap();
        // Rebuilt to follow its body, the response keeps what reqwest
        // and hyper-util put in it: the URL it came from, the peer.
        assert_eq!(
            response.url().as_str(),
            format!("{}/api/greet", endpoint.key())
        );
        assert_eq!(
            response.remote_addr().map(|a| a.port()),
            Some(endpoint.port())
        );
        let greeting: Greeting = response.json().await.unwrap();
        assert_eq!(greeting.message, "Hello, Bob!");
        *answered.entry(instance).or_insert(0) += 1;
        assert!(urls(&instances).contains(&endpoint.key().to_string()));
    }
    // Round robin: two each.
    assert_eq!(answered.values().copied().collect::<Vec<_>>(), [2, 2, 2]);
    stop_all(instances).await;
}

#[tokio::test]
async fn a_dead_instance_is_retried_elsewhere() {
    let instances = start_instances(2).await;
    let mut endpoints = urls(&instances);
    endpoints.push(refusing_url());
    let balancer = LoadBalanceLayer::builder()
        .service("greet", Fixed::new(endpoints).unwrap())
        .balancer(RoundRobin::new())
        .configure_pools(|pool| pool.outlier_detection(OutlierDetection::disabled()))
        .build()
        .unwrap();
    let client = Client::builder(support::reqwest_client(), balancer)
        .retry(RetryLayer::new())
        .build();

    let mut retried = 0;
    for i in 0..30 {
        let response = bounded(
            "a GET with a dead instance",
            client
                .get("http://greet/api/greet")
                .query(&[("name", format!("caller-{i}"))])
                .send(),
        )
        .await
        .expect("retried onto a live instance");
        let attempts = response.extensions().get::<Attempts>().cloned().unwrap();
        retried += attempts.retries();
        let greeting: Greeting = response.json().await.unwrap();
        assert_eq!(greeting.message, format!("Hello, caller-{i}!"));
    }
    // One call in three first went to the dead instance.
    assert!(retried >= 5, "{retried} retries");

    // A request that opts out of retries sees the refusal.
    let mut refused = 0;
    for _ in 0..6 {
        match client.get("http://greet/api/greet").no_retry().send().await {
            Err(error) => {
                assert!(error.endpoint().is_some(), "{error}");
                refused += 1;
            }
            Ok(response) => {
                let attempts = response.extensions().get::<Attempts>().unwrap();
                assert_eq!(attempts.count(), 1);
            }
        }
    }
    assert_eq!(
        refused, 2,
        "round robin: two of six went to the dead instance"
    );
    stop_all(instances).await;
}

#[tokio::test]
async fn a_hash_key_per_request_pins_the_instance() {
    let instances = start_instances(3).await;
    let balancer = LoadBalanceLayer::builder()
        .service("greet", Fixed::new(urls(&instances)).unwrap())
        .balancer(ConsistentHash::new(HashKey::Path))
        .build()
        .unwrap();
    let client = Client::new(support::reqwest_client(), balancer);
    for user in ["ann", "bo", "cy", "di"] {
        let mut seen = std::collections::BTreeSet::new();
        for i in 0..5 {
            // Different paths (the configured key), one request key: always
            // the same instance.
            let response = client
                .get(format!("http://greet/items/{i}"))
                .hash_key(user)
                .send()
                .await
                .unwrap();
            seen.insert(
                response
                    .extensions()
                    .get::<Endpoint>()
                    .unwrap()
                    .key()
                    .to_string(),
            );
        }
        assert_eq!(seen.len(), 1, "{user}: {seen:?}");
    }
    stop_all(instances).await;
}

#[tokio::test]
async fn unknown_hosts_follow_the_balancers_setting() {
    let instances = start_instances(1).await;
    let direct = instances[0].url();
    let reject = Client::new(
        support::reqwest_client(),
        LoadBalanceLayer::builder()
            .service("greet", Fixed::new(urls(&instances)).unwrap())
            .build()
            .unwrap(),
    );
    let error = reject
        .get(format!("{direct}/api/greet"))
        .send()
        .await
        .unwrap_err();
    assert!(matches!(error, Error::UnknownService { .. }), "{error}");

    let pass = Client::new(
        support::reqwest_client(),
        LoadBalanceLayer::builder()
            .service("greet", Fixed::new(urls(&instances)).unwrap())
            .unknown_host(UnknownHost::PassThrough)
            .build()
            .unwrap(),
    );
    let greeting: Greeting = pass
        .get(format!("{direct}/api/greet?name=Direct"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(greeting.message, "Hello, Direct!");

    // A request reqwest cannot build is a typed error, sent nowhere.
    let error = pass
        .get("http://greet/")
        .header("x-bad", "line\nbreak")
        .send()
        .await
        .unwrap_err();
    assert!(matches!(error, Error::Request { .. }), "{error}");
    stop_all(instances).await;
}

/// `query`, `json` and `form` are encoded by the handle itself (reqwest's
/// features of those names stay off, so a user's reqwest is not rebuilt):
/// the request comes out as reqwest's own methods would make it.
#[tokio::test]
async fn the_builder_encodes_query_json_and_form_as_reqwest_does() {
    let balancer = LoadBalanceLayer::builder()
        .service("greet", Fixed::new(["http://127.0.0.1:9"]).unwrap())
        .build()
        .unwrap();
    let client = Client::new(reqwest::Client::new(), balancer);
    let body_of = |request: &reqwest::Request| {
        request
            .body()
            .and_then(reqwest::Body::as_bytes)
            .map(|b| String::from_utf8(b.to_vec()).unwrap())
    };

    // Pairs are appended to a query the URL already has, in call order,
    // percent-encoded.
    let (request, _) = client
        .get("http://greet/api/greet?lang=en")
        .query(&[("name", "Alice & Bob")])
        .query(&[("n", 2)])
        .build()
        .unwrap()
        .into_parts();
    assert_eq!(
        request.url().as_str(),
        "http://greet/api/greet?lang=en&name=Alice+%26+Bob&n=2"
    );

    let (request, _) = client
        .post("http://greet/api/greet")
        .json(&Name { name: "Bob" })
        .build()
        .unwrap()
        .into_parts();
    assert_eq!(request.headers()["content-type"], "application/json");
    assert_eq!(body_of(&request).as_deref(), Some(r#"{"name":"Bob"}"#));

    // A content type the caller set is kept.
    let (request, _) = client
        .post("http://greet/api/greet")
        .header("content-type", "application/vnd.greet+json")
        .json(&Name { name: "Bob" })
        .build()
        .unwrap()
        .into_parts();
    assert_eq!(
        request.headers().get_all("content-type").iter().count(),
        1,
        "one content type"
    );
    assert_eq!(
        request.headers()["content-type"],
        "application/vnd.greet+json"
    );

    let (request, _) = client
        .post("http://greet/api/greet")
        .form(&[("name", "Bob"), ("city", "São Paulo")])
        .build()
        .unwrap()
        .into_parts();
    assert_eq!(
        request.headers()["content-type"],
        "application/x-www-form-urlencoded"
    );
    assert_eq!(
        body_of(&request).as_deref(),
        Some("name=Bob&city=S%C3%A3o+Paulo")
    );

    // What cannot be encoded fails the build with a typed error naming
    // the part, and a copy of the builder fails the same way.
    let nested = client
        .get("http://greet/api/greet")
        .query(&[("name", vec!["a", "b"])]);
    let copy = nested.try_clone().unwrap();
    for builder in [nested, copy] {
        let error = builder.build().unwrap_err();
        let Error::Request { source } = &error else {
            panic!("expected Error::Request, got {error:?}");
        };
        let encode = source
            .downcast_ref::<tower_lb::client::EncodeError>()
            .expect("an EncodeError");
        assert_eq!(encode.part, "query");
        assert!(error.to_string().contains("could not be built"));
    }
}
