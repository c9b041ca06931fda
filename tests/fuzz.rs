//! Settings at their extremes and hostile input through the public API:
//! each must give an answer or a typed error, never a panic. Property tests
//! run a bounded number of cases with a fixed seed.
//!
//! Regression tests for what a mutation fuzzer found: `Retry-After:
//! 18446744073709551615` with `max_retry_after(Duration::MAX)` and a
//! deadline; `deadline(Duration::MAX)`; an etcd watch at revision
//! `i64::MAX`.

mod support;

use std::convert::Infallible;
use std::time::Duration;

use http::StatusCode;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestRunner};
use support::retry::{Instances, Reply, get};
use tower::{ServiceBuilder, ServiceExt};
use tower_lb::balance::{
    Balancer, ConsistentHash, HashKey, HashTable, LeastRequest, PeakEwma, Random, RoundRobin,
    WeightedLeastRequest, WeightedRandom, WeightedRoundRobin,
};
use tower_lb::discover::Fixed;
use tower_lb::health::{HealthCheck, OutlierDetection};
use tower_lb::retry::{Backoff, Hedge, RetryBudget, RetryLayer};
use tower_lb::{Endpoint, Error, LoadBalanceLayer, Pool};

fn runner(cases: u32) -> TestRunner {
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        rng_seed: RngSeed::Fixed(0x6675_7a7a),
        ..Config::default()
    })
}

#[tokio::test(start_paused = true)]
async fn a_huge_retry_after_with_no_cap_and_a_deadline_is_a_typed_error() {
    let instances = Instances::new(1, |_, _, _| {
        Reply::status(503).header("retry-after", u64::MAX.to_string())
    });
    let client = ServiceBuilder::new()
        .layer(
            RetryLayer::builder()
                .max_retry_after(Duration::MAX)
                .deadline(Duration::from_secs(1))
                .build()
                .unwrap(),
        )
        .layer(instances.balancer())
        .service(instances.service(false));
    let outcome = client.oneshot(get()).await;
    match outcome {
        // The wait cannot fit in the deadline: the 503 comes back, or a
        // typed error says why it was not retried.
        Ok(response) => assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE),
        Err(error) => assert!(error.service() == Some("greet"), "{error}"),
    }
    assert_eq!(instances.total_hits(), 1);
}

#[tokio::test(start_paused = true)]
async fn the_longest_durations_are_valid_settings() {
    let instances = Instances::new(2, |i, n, _| match (i, n) {
        (0, 0) => Reply::status(503).header("retry-after", "18446744073709551615"),
        _ => Reply::ok(),
    });
    let retry = RetryLayer::builder()
        .deadline(Duration::MAX)
        .attempt_timeout(Duration::MAX)
        .max_retry_after(Duration::from_millis(1))
        .backoff(Backoff::new(Duration::MAX, Duration::MAX))
        .hedge(Hedge::after(Duration::MAX))
        .build()
        .unwrap();
    let pool = Pool::builder("greet", Fixed::new(instances.urls().to_vec()).unwrap())
        .outlier_detection(
            OutlierDetection::new()
                .consecutive_failures(1)
                .base_ejection_time(Duration::MAX)
                .max_ejection_time(Duration::MAX),
        )
        .cancel_timeout(Duration::MAX)
        .ready_timeout(Duration::MAX)
        .discovery_backoff(Duration::MAX, Duration::MAX)
        .slow_start(Duration::MAX)
        .build();
    let lb = LoadBalanceLayer::builder()
        .pool(pool)
        .timeout(Duration::MAX)
        .ready_timeout(Duration::MAX)
        .build()
        .unwrap();
    let client = ServiceBuilder::new()
        .layer(retry)
        .layer(lb)
        .service(instances.service(false));
    for _ in 0..6 {
        // The 503's Retry-After is past the cap: given back as is.
        let response = client.clone().oneshot(get()).await.unwrap();
        assert!(matches!(response.status().as_u16(), 200 | 503));
    }
    assert!(instances.total_hits() >= 6);
}

#[test]
fn zero_and_out_of_range_settings_are_config_errors() {
    let zero = Duration::ZERO;
    for built in [
        RetryLayer::builder().deadline(zero).build(),
        RetryLayer::builder().attempt_timeout(zero).build(),
        RetryLayer::builder().max_attempts(0).build(),
        RetryLayer::builder()
            .budget(RetryBudget::new(Duration::MAX, u32::MAX, f32::INFINITY))
            .build(),
    ] {
        assert!(matches!(built, Err(Error::Config(_))), "{built:?}");
    }
    let lb = LoadBalanceLayer::builder()
        .service("greet", Fixed::new(["127.0.0.1:1"]).unwrap())
        .timeout(zero)
        .build();
    assert!(matches!(lb, Err(Error::Config(_))));
    let floor = RetryLayer::builder()
        .budget(RetryBudget::new(
            Duration::from_secs(60),
            u32::MAX / 2,
            1000.0,
        ))
        .build();
    assert!(matches!(floor, Err(Error::Config(_))), "{floor:?}");
    // Accepted extremes, not errors.
    RetryLayer::builder()
        .max_attempts(u32::MAX)
        .budget(RetryBudget::new(Duration::from_secs(60), 1000, 1000.0))
        .build()
        .unwrap();
    HealthCheck::http("/health")
        .interval(Duration::MAX)
        .timeout(Duration::MAX);
    HealthCheck::http("/health").interval(zero).timeout(zero);
}

fn balancers() -> Vec<Box<dyn Fn() -> Box<dyn BalancerBox>>> {
    vec![
        Box::new(|| Box::new(RoundRobin::new())),
        Box::new(|| Box::new(Random::new())),
        Box::new(|| Box::new(LeastRequest::new())),
        Box::new(|| Box::new(PeakEwma::new())),
        Box::new(|| Box::new(WeightedRoundRobin::new())),
        Box::new(|| Box::new(WeightedRandom::new())),
        Box::new(|| Box::new(WeightedLeastRequest::new())),
        Box::new(|| Box::new(ConsistentHash::new(HashKey::Path))),
        Box::new(|| {
            Box::new(ConsistentHash::new(HashKey::Path).table(HashTable::Ring {
                points_per_weight: u32::MAX,
            }))
        }),
    ]
}

/// A balancer that can be put into a pool builder from a box.
trait BalancerBox {
    fn into_pool(self: Box<Self>, endpoints: Vec<Endpoint>) -> Pool;
}

impl<B: Balancer> BalancerBox for B {
    fn into_pool(self: Box<Self>, endpoints: Vec<Endpoint>) -> Pool {
        Pool::builder("greet", Fixed::new(endpoints).unwrap())
            .balancer(*self)
            .seed(7)
            .build()
    }
}

#[tokio::test(start_paused = true)]
async fn every_balancer_picks_among_u32_max_weights() {
    let endpoints: Vec<Endpoint> = [u32::MAX, u32::MAX, 1, u32::MAX - 1]
        .into_iter()
        .enumerate()
        .map(|(i, w)| {
            Endpoint::new(&format!("127.0.0.1:{}", i + 1))
                .unwrap()
                .with_weight(w)
                .unwrap()
        })
        .collect();
    for make in balancers() {
        let pool = make().into_pool(endpoints.clone());
        let lb = LoadBalanceLayer::builder().pool(pool).build().unwrap();
        let client = ServiceBuilder::new().layer(lb).service(tower::service_fn(
            |_request: http::Request<String>| async {
                Ok::<_, Infallible>(http::Response::new(String::new()))
            },
        ));
        for i in 0..50 {
            let request = http::Request::get(format!("http://greet/{i}"))
                .body(String::new())
                .unwrap();
            let response = client.clone().oneshot(request).await.unwrap();
            assert!(response.extensions().get::<Endpoint>().is_some());
        }
    }
}

/// URIs a caller might send: configured and unknown hosts, odd ports,
/// userinfo, paths and queries of any characters a URI allows.
fn uri() -> impl Strategy<Value = String> {
    let scheme = prop::sample::select(vec!["http://", "https://", "HTTP://", ""]);
    let userinfo = prop::sample::select(vec!["", "u:p@", "@", "a%40b:c@"]);
    let host = prop::sample::select(vec![
        "greet", "GREET", "other", "greet.", "[::1]", "10.0.0.1",
    ]);
    let port = prop::sample::select(vec!["", ":80", ":0", ":65535", ":99999"]);
    let path = "[-a-zA-Z0-9/._~%!$&'()*+,;=:@?#]{0,24}";
    (scheme, userinfo, host, port, path)
        .prop_map(|(s, u, h, p, path)| format!("{s}{u}{h}{p}/{path}"))
}

#[test]
fn request_uris_through_the_layer_answer_or_fail_typed() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let lb = runtime.block_on(async {
        LoadBalanceLayer::builder()
            .service("greet", Fixed::new(["127.0.0.1:1", "127.0.0.1:2"]).unwrap())
            .build()
            .unwrap()
    });
    let client = ServiceBuilder::new().layer(lb).service(tower::service_fn(
        |request: http::Request<String>| async move {
            // What the client is handed has no userinfo.
            let authority = request.uri().authority().map(|a| a.as_str().to_owned());
            assert!(!authority.unwrap_or_default().contains('@'), "{request:?}");
            Ok::<_, Infallible>(http::Response::new(String::new()))
        },
    ));
    runner(600)
        .run(&uri(), |uri| {
            let Ok(request) = http::Request::get(&uri).body(String::new()) else {
                return Ok(()); // not a URI `http` accepts: never reaches us
            };
            let outcome = runtime.block_on(client.clone().oneshot(request));
            match outcome {
                Ok(response) => prop_assert!(response.extensions().get::<Endpoint>().is_some()),
                Err(
                    Error::UnknownService { .. }
                    | Error::MissingHost { .. }
                    | Error::InsecureEndpoint { .. },
                ) => {}
                Err(other) => prop_assert!(false, "{uri}: unexpected {other:?}"),
            }
            Ok(())
        })
        .unwrap();
}

/// etcd's JSON gateway as a hostile one might speak it: every revision at
/// `i64::MAX`. (A real etcd cannot reach that revision; this small server
/// on loopback stands in for it.) Records the watch requests' bodies.
#[cfg(feature = "etcd")]
mod max_revision_gateway {
    use std::sync::{Arc, Mutex};

    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use hyper::server::conn::http1;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    use tokio::net::TcpListener;

    const MAX: i64 = i64::MAX;

    pub async fn start() -> (String, Arc<Mutex<Vec<String>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let watches = Arc::new(Mutex::new(Vec::new()));
        let seen = watches.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let seen = seen.clone();
                tokio::spawn(async move {
                    let service = service_fn(
                        move |request: http::Request<hyper::body::Incoming>| {
                            let seen = seen.clone();
                            async move {
                                let path = request.uri().path().to_owned();
                                let body = request.into_body().collect().await.unwrap().to_bytes();
                                let answer = match path.as_str() {
                                    "/v3/kv/range" => format!(
                                        r#"{{"header":{{"revision":"{MAX}"}},"kvs":[{{"key":"Z3JlZXQvYQ==","value":"eyJBZGRyIjoiMTI3LjAuMC4xOjUwMDEifQ==","mod_revision":"{MAX}"}}],"count":"1"}}"#
                                    ),
                                    "/v3/watch" => {
                                        seen.lock()
                                            .unwrap()
                                            .push(String::from_utf8_lossy(&body).into_owned());
                                        format!(
                                            "{{\"result\":{{\"header\":{{\"revision\":\"{MAX}\"}},\"created\":true}}}}\n\
                                         {{\"result\":{{\"header\":{{\"revision\":\"{MAX}\"}},\"events\":[{{\"kv\":{{\"key\":\"Z3JlZXQvYg==\",\"value\":\"eyJBZGRyIjoiMTI3LjAuMC4xOjUwMDIifQ==\",\"mod_revision\":\"{MAX}\"}}}}]}}}}\n"
                                        )
                                    }
                                    _ => "{}".to_string(),
                                };
                                Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                                    Bytes::from(answer),
                                )))
                            }
                        },
                    );
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
        (url, watches)
    }
}

#[cfg(feature = "etcd")]
#[tokio::test]
async fn an_etcd_watch_at_revision_i64_max_does_not_overflow() {
    use tower_lb::discover::etcd::{Etcd, EtcdConfig};
    use tower_lb::discover::{Discover, Update};

    let (url, watches) = max_revision_gateway::start().await;
    let config = EtcdConfig::new([url])
        .unwrap()
        .request_timeout(Duration::from_secs(2));
    let mut source = Etcd::new(config, "greet").unwrap();
    let mut seen = Vec::new();
    // The listing, the watched PUT, then the stream's end (a typed error),
    // then the watch opened again from the last revision.
    for _ in 0..4 {
        match support::bounded("an etcd update", source.next_update()).await {
            Ok(Update::Replace(set)) | Ok(Update::Insert(set)) => {
                seen.extend(set.iter().map(|e| e.key().to_string()))
            }
            Ok(other) => panic!("unexpected {other:?}"),
            Err(error) => assert!(error.to_string().contains("greet/"), "{error}"),
        }
    }
    assert!(
        seen.contains(&"http://127.0.0.1:5001".to_string()),
        "{seen:?}"
    );
    assert!(
        seen.contains(&"http://127.0.0.1:5002".to_string()),
        "{seen:?}"
    );
    let watches = watches.lock().unwrap().clone();
    assert!(watches.len() >= 2, "{watches:?}");
    for body in watches {
        // From revision i64::MAX + 1, saturated: i64::MAX.
        assert!(
            body.contains(&format!("\"start_revision\":\"{}\"", i64::MAX)),
            "{body}"
        );
    }
}
