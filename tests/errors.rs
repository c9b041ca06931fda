//! Every failure the layer reports, against real instances: empty pools,
//! unknown hosts, bad configuration, a failing inner client; and the
//! in-flight accounting staying right through drops, failures and 5xx.

mod support;

use std::error::Error as StdError;
use std::io;
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::Empty;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::TokioExecutor;
use support::instances::{start_instances, stop_all, urls};
use support::pool::{endpoint_stats, total_in_flight};
use support::requests::send;
use support::{Client, bounded, reqwest_client, wait_until};
use tower::{ServiceBuilder, ServiceExt};
use tower_lb::discover::Fixed;
use tower_lb::{Endpoint, Error, LoadBalanceLayer, Pool, UnknownHost};

const URL: &str = "http://greet/api/greet?name=Alice";

fn client_with(layer: LoadBalanceLayer) -> Client {
    ServiceBuilder::new().layer(layer).service(reqwest_client())
}

fn client_for<I>(endpoints: I) -> Client
where
    I: IntoIterator,
    I::Item: tower_lb::IntoEndpoint,
{
    client_with(
        LoadBalanceLayer::builder()
            .service("greet", Fixed::new(endpoints).unwrap())
            .build()
            .unwrap(),
    )
}

/// A port on 127.0.0.1 with nothing listening, held for the whole test.
fn refused_url() -> String {
    support::retry::refusing_url()
}

/// The error's source chain, outermost first (the error itself excluded).
fn chain<'a>(error: &'a (dyn StdError + 'static)) -> Vec<&'a (dyn StdError + 'static)> {
    let mut causes = Vec::new();
    let mut next = error.source();
    while let Some(cause) = next {
        causes.push(cause);
        next = cause.source();
    }
    causes
}

#[tokio::test]
async fn an_empty_pool_fails_with_no_endpoints() {
    let client = client_for(Vec::<&str>::new());
    let error = bounded("a request", send(&client, URL)).await.unwrap_err();
    assert!(
        matches!(&error, Error::NoEndpoints { service } if &**service == "greet"),
        "{error:?}"
    );
    assert_eq!(error.service(), Some("greet"));
    assert_eq!(error.to_string(), "service `greet` has no endpoints");
    let stats = client.pool("greet").unwrap().stats();
    assert!(stats.ready && stats.endpoints.is_empty());
}

#[tokio::test]
async fn an_unknown_host_is_rejected_by_default() {
    let instances = start_instances(3).await;
    let client = client_for(urls(&instances));
    let error = bounded("a request", send(&client, "http://greeet/api/greet"))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, Error::UnknownService { service } if service == "greeet"),
        "{error:?}"
    );
    assert_eq!(error.service(), Some("greeet"));
    assert!(error.to_string().contains("`greeet`"), "{error}");
    // Nothing was sent anywhere, not even to the instance's real address.
    let direct = format!("{}/api/greet", instances[0].url());
    let error = bounded("a request", send(&client, &direct))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, Error::UnknownService { service } if service == "127.0.0.1"),
        "{error:?}"
    );
    assert_eq!(instances.iter().map(|i| i.hits()).sum::<u64>(), 0);

    // Service names are case-insensitive, like host names.
    let answer = bounded(
        "a request",
        send(&client, "http://GREET/api/greet?name=Alice"),
    )
    .await
    .unwrap();
    assert_eq!(answer.status, StatusCode::OK);
    stop_all(instances).await;
}

#[tokio::test]
async fn an_unknown_host_passes_through_when_configured() {
    let instances = start_instances(3).await;
    let layer = LoadBalanceLayer::builder()
        .service("greet", Fixed::new(urls(&instances[..2])).unwrap())
        .unknown_host(UnknownHost::PassThrough)
        .build()
        .unwrap();
    let client = client_with(layer);

    // Straight to the third instance's real address, unchanged.
    let direct = format!("{}/api/greet?name=Bob", instances[2].url());
    let answer = bounded("a request", send(&client, &direct)).await.unwrap();
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.instance.as_deref(), Some("greet-2"));
    assert_eq!(answer.body, r#"{"message":"Hello, Bob!"}"#);
    assert!(
        answer.endpoint.is_none(),
        "a pass-through request is not balanced"
    );
    assert_eq!(instances[2].hits(), 1);
    let pool = client.pool("greet").unwrap();
    assert_eq!(
        pool.stats()
            .endpoints
            .iter()
            .map(|e| e.requests)
            .sum::<u64>(),
        0
    );

    // Balanced requests still are.
    let answer = bounded("a request", send(&client, URL)).await.unwrap();
    assert!(answer.endpoint.is_some());
    assert_ne!(answer.instance.as_deref(), Some("greet-2"));

    // A pass-through failure is an inner error with no service named.
    let error = bounded("a request", send(&client, &refused_url()))
        .await
        .unwrap_err();
    assert!(
        matches!(
            &error,
            Error::Inner {
                service: None,
                endpoint: None,
                ..
            }
        ),
        "{error:?}"
    );
    assert_eq!(error.service(), None);
    assert!(error.inner().is_some());
    stop_all(instances).await;
}

#[tokio::test]
async fn a_request_without_a_host_is_rejected() {
    let layer = LoadBalanceLayer::builder()
        .service("greet", Fixed::new(["127.0.0.1:1"]).unwrap())
        .build()
        .unwrap();
    let hyper = HyperClient::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let client = ServiceBuilder::new().layer(layer).service(hyper);
    let request = http::Request::get("/api/greet").body(Empty::new()).unwrap();
    let error = bounded("a request", client.oneshot(request))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, Error::MissingHost { uri } if uri == "/api/greet"),
        "{error:?}"
    );
}

#[test]
fn invalid_service_names_are_config_errors() {
    for bad in [
        "",
        "greet:80",
        "a b",
        "http://greet",
        ".greet",
        "greet-",
        "gr/eet",
    ] {
        let error = LoadBalanceLayer::builder()
            .service(bad, Fixed::new(["127.0.0.1:5001"]).unwrap())
            .build()
            .unwrap_err();
        assert!(matches!(error, Error::Config(_)), "{bad:?}: {error:?}");
        assert!(error.to_string().contains(&format!("`{bad}`")), "{error}");
    }
    // A pool built on its own is checked too.
    let pool = Pool::builder("not a host", Fixed::new(["127.0.0.1:5001"]).unwrap()).build();
    let error = LoadBalanceLayer::builder().pool(pool).build().unwrap_err();
    assert!(matches!(error, Error::Config(_)), "{error:?}");
}

#[test]
fn duplicate_services_are_config_errors() {
    let fixed = || Fixed::new(["127.0.0.1:5001"]).unwrap();
    let cases = [
        LoadBalanceLayer::builder()
            .service("greet", fixed())
            .service("greet", fixed()),
        LoadBalanceLayer::builder()
            .service("greet", fixed())
            .service("GREET", fixed()),
        LoadBalanceLayer::builder()
            .service("greet", fixed())
            .pool(Pool::builder("greet", fixed()).build()),
    ];
    for builder in cases {
        let error = builder.build().unwrap_err();
        assert!(matches!(error, Error::Config(_)), "{error:?}");
        let message = error.to_string();
        assert!(
            message.contains("twice") && message.to_lowercase().contains("`greet`"),
            "{message}"
        );
        assert_eq!(error.service(), None);
    }
}

#[test]
fn invalid_endpoints_name_the_input() {
    let error = Fixed::new(["127.0.0.1:5001", "http://127.0.0.1:5002/api"]).unwrap_err();
    assert!(
        error.to_string().contains("http://127.0.0.1:5002/api"),
        "{error}"
    );
    let error = Endpoint::new("127.0.0.1:5001")
        .unwrap()
        .with_weight(0)
        .unwrap_err();
    assert!(
        error.to_string().contains("http://127.0.0.1:5001"),
        "{error}"
    );
}

#[tokio::test]
async fn an_inner_client_error_names_the_service_and_endpoint() {
    let refused = refused_url();
    let client = client_for([refused.as_str()]);
    let error = bounded("a request", send(&client, URL)).await.unwrap_err();

    let endpoint = Endpoint::new(&refused).unwrap();
    match &error {
        Error::Inner {
            service: Some(service),
            endpoint: Some(failed),
            ..
        } => {
            assert_eq!(&**service, "greet");
            assert!(failed.same_instance(&endpoint));
        }
        other => panic!("expected Inner with service and endpoint, got {other:?}"),
    }
    assert_eq!(error.service(), Some("greet"));
    let message = error.to_string();
    assert!(
        message.contains("`greet`") && message.contains(endpoint.key()),
        "{message}"
    );

    // The client's own error, and through it the I/O error underneath.
    let reqwest_error = error
        .inner()
        .and_then(|e| e.downcast_ref::<reqwest::Error>())
        .expect("the reqwest error is the inner error");
    assert!(reqwest_error.is_connect(), "{reqwest_error:?}");
    let causes = chain(&error);
    assert!(
        causes[0].downcast_ref::<reqwest::Error>().is_some(),
        "source() is the client's error"
    );
    let refused_io = causes
        .iter()
        .filter_map(|c| c.downcast_ref::<io::Error>())
        .find(|io| io.kind() == io::ErrorKind::ConnectionRefused);
    assert!(
        refused_io.is_some(),
        "no ConnectionRefused in the source chain: {:?}",
        causes.iter().map(|c| c.to_string()).collect::<Vec<_>>()
    );

    // Counted against the endpoint.
    let stats = endpoint_stats(client.pool("greet").unwrap(), &refused).unwrap();
    assert_eq!(
        (stats.requests, stats.failures, stats.in_flight),
        (1, 1, 0),
        "{stats:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_returns_to_zero_when_requests_are_dropped() {
    let instances = start_instances(3).await;
    for instance in &instances {
        instance.set_delay(Duration::from_secs(2));
    }
    let client = client_for(urls(&instances));
    let pool = client.pool("greet").unwrap().clone();

    // Aborted tasks.
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..6 {
        let client = client.clone();
        tasks.spawn(async move { send(&client, URL).await });
    }
    wait_until("six requests are in flight", || total_in_flight(&pool) == 6).await;
    assert!(pool.stats().endpoints.iter().all(|e| e.in_flight == 2));
    tasks.abort_all();
    bounded("the aborted tasks to finish", async {
        while let Some(joined) = tasks.join_next().await {
            assert!(joined.unwrap_err().is_cancelled());
        }
    })
    .await;
    wait_until("nothing is in flight", || total_in_flight(&pool) == 0).await;

    // Futures dropped in place, after they were in flight.
    let mut seen_in_flight = 0;
    for _ in 0..3 {
        let request = send(&client, URL);
        tokio::pin!(request);
        let polled = tokio::time::timeout(Duration::from_millis(50), &mut request).await;
        assert!(polled.is_err(), "answered despite the delay");
        seen_in_flight = seen_in_flight.max(total_in_flight(&pool));
    }
    assert_eq!(
        seen_in_flight, 1,
        "each request was in flight until dropped"
    );
    assert_eq!(total_in_flight(&pool), 0);

    // Dropped requests are neither requests nor failures.
    for e in pool.stats().endpoints {
        assert_eq!((e.in_flight, e.requests, e.failures), (0, 0, 0), "{e:?}");
    }
    stop_all(instances).await;
}

#[tokio::test]
async fn in_flight_returns_to_zero_after_failed_requests() {
    let (a, b) = (refused_url(), refused_url());
    let client = client_for([a.as_str(), b.as_str()]);
    let pool = client.pool("greet").unwrap().clone();
    for _ in 0..4 {
        let error = bounded("a request", send(&client, URL)).await.unwrap_err();
        assert!(matches!(error, Error::Inner { .. }), "{error:?}");
    }
    for e in pool.stats().endpoints {
        assert_eq!((e.in_flight, e.requests, e.failures), (0, 2, 2), "{e:?}");
    }
}

#[tokio::test]
async fn a_5xx_is_a_failure_and_a_404_is_not() {
    let instances = start_instances(3).await;
    let client = client_for(urls(&instances));
    let pool = client.pool("greet").unwrap().clone();
    let totals = || {
        let stats = pool.stats();
        let requests: u64 = stats.endpoints.iter().map(|e| e.requests).sum();
        let failures: u64 = stats.endpoints.iter().map(|e| e.failures).sum();
        let in_flight: usize = stats.endpoints.iter().map(|e| e.in_flight).sum();
        (requests, failures, in_flight)
    };

    for instance in &instances {
        instance.set_status(Some(503));
    }
    for _ in 0..3 {
        // A 5xx is an answer, not an error of the layer.
        let answer = bounded("a request", send(&client, URL)).await.unwrap();
        assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(answer.endpoint.is_some());
    }
    assert_eq!(totals(), (3, 3, 0));
    for e in pool.stats().endpoints {
        assert_eq!(e.failures, 1, "{e:?}");
    }

    for instance in &instances {
        instance.set_status(None);
    }
    for _ in 0..3 {
        let answer = bounded("a request", send(&client, "http://greet/nope"))
            .await
            .unwrap();
        assert_eq!(answer.status, StatusCode::NOT_FOUND);
    }
    assert_eq!(
        totals(),
        (6, 3, 0),
        "a 404 is the caller's mistake, not a failure"
    );

    let answer = bounded("a request", send(&client, URL)).await.unwrap();
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(totals(), (7, 3, 0));
    stop_all(instances).await;
}
