//! The retry–balancer contract holds whatever sits between the two layers,
//! and one classifier judges for both: real instances on 127.0.0.1,
//! hyper-util's client, tower's `Buffer` and `ConcurrencyLimit` and
//! tower-http's `TraceLayer` in the middle.

mod support;

use std::collections::HashSet;
use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::server::conn::http1;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::bounded;
use support::instances::{start_instances, stop_all, urls};
use tokio::net::TcpListener;
use tower::{ServiceBuilder, ServiceExt};
#[cfg(feature = "tower-http")]
use tower_http::classify::GrpcErrorsAsFailures;
use tower_http::trace::TraceLayer;
use tower_lb::balance::Random;
#[cfg(feature = "tower-http")]
use tower_lb::classify::TowerHttp;
use tower_lb::classify::{FailureKind, Retryable, Verdict};
use tower_lb::discover::Fixed;
use tower_lb::health::OutlierDetection;
use tower_lb::retry::{Attempts, ReplayBody, RetryLayer};
use tower_lb::{AttemptContext, Endpoint, LoadBalanceLayer, Pool};

const URL: &str = "http://greet/api/greet?name=Alice";

/// Two of three instances answer 503 for good. Between the retry layer and
/// the balancer: a `Buffer` (which calls the balancer from its own task),
/// a `ConcurrencyLimit` and a `TraceLayer`. Random picks, seeded: were the
/// tried endpoints not avoided, about 30% of calls (2/3 cubed) would spend
/// their three attempts on failing instances.
#[tokio::test]
async fn retries_avoid_tried_endpoints_through_buffer_limit_and_trace() {
    let instances = start_instances(3).await;
    instances[0].set_status(Some(503));
    instances[1].set_status(Some(503));
    let healthy = Endpoint::new(&instances[2].url()).unwrap();
    let pool = Pool::builder("greet", Fixed::new(urls(&instances)).unwrap())
        .balancer(Random::new())
        .outlier_detection(OutlierDetection::disabled())
        .seed(7)
        .build();
    let lb = LoadBalanceLayer::builder().pool(pool).build().unwrap();
    let retry = RetryLayer::builder()
        .max_attempts(3)
        .seed(7)
        .build()
        .unwrap();
    let hyper = HyperClient::builder(TokioExecutor::new()).build_http::<ReplayBody<Empty<Bytes>>>();
    let client = ServiceBuilder::new()
        .layer(retry)
        .buffer(64)
        .concurrency_limit(8)
        .layer(TraceLayer::new_for_http())
        .layer(lb.clone())
        .service(hyper);

    for _ in 0..60 {
        let request = http::Request::get(URL).body(Empty::<Bytes>::new()).unwrap();
        let response = bounded("a call through the stack", client.clone().oneshot(request))
            .await
            .expect("the call succeeds");
        assert_eq!(response.status(), StatusCode::OK);
        let attempts = response
            .extensions()
            .get::<Attempts>()
            .cloned()
            .expect("the retry layer marks every response");
        let tried = attempts.endpoints();
        assert_eq!(tried.len() as u32, attempts.count(), "{attempts:?}");
        let distinct: HashSet<&str> = tried.iter().map(Endpoint::key).collect();
        assert_eq!(
            distinct.len(),
            tried.len(),
            "an endpoint tried twice: {attempts:?}"
        );
        assert!(
            tried.last().is_some_and(|e| e.same_instance(&healthy)),
            "{attempts:?}"
        );
        assert_eq!(
            response.extensions().get::<Endpoint>().map(Endpoint::key),
            Some(healthy.key())
        );
        response.into_body().collect().await.unwrap();
    }
    // Every attempt was recorded, none is left in flight.
    let stats = lb.pool("greet").unwrap().stats();
    assert!(
        stats.endpoints.iter().all(|e| e.in_flight == 0),
        "{stats:?}"
    );
    let failures: u64 = stats.endpoints.iter().map(|e| e.failures).sum();
    assert_eq!(failures, instances[0].hits() + instances[1].hits());
    stop_all(instances).await;
}

/// A layer of the caller's own that makes attempts gives each an
/// `AttemptContext`: the balancer writes into it where the attempt went and
/// its classifier's verdict on the answer, which the response itself does
/// not carry.
#[tokio::test]
async fn the_verdict_on_an_attempt_comes_back_in_its_context() {
    let instances = start_instances(1).await;
    let lb = LoadBalanceLayer::builder()
        .service("greet", Fixed::new(urls(&instances)).unwrap())
        .configure_pools(|pool| pool.outlier_detection(OutlierDetection::disabled()))
        .build()
        .unwrap();
    let hyper = HyperClient::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let client = ServiceBuilder::new().layer(lb).service(hyper);
    for (status, expected) in [
        (
            Some(503),
            Verdict::failure(
                FailureKind::Status(StatusCode::SERVICE_UNAVAILABLE),
                Retryable::IfIdempotent,
            ),
        ),
        (None, Verdict::SUCCESS),
    ] {
        instances[0].set_status(status);
        let context = AttemptContext::new(1);
        let mut request = http::Request::get(URL).body(Empty::<Bytes>::new()).unwrap();
        request.extensions_mut().insert(context.clone());
        let response = bounded("an attempt", client.clone().oneshot(request))
            .await
            .expect("an answer");
        assert_eq!(context.verdict(), Some(expected), "{status:?}");
        assert_eq!(
            context.endpoint().map(Endpoint::key),
            Some(instances[0].url().as_str())
        );
        assert!(response.extensions().get::<Verdict>().is_none());
        response.into_body().collect().await.unwrap();
    }
    stop_all(instances).await;
}

#[cfg_attr(not(feature = "tower-http"), allow(dead_code))]
/// The retry layer's defaults over `lb` over hyper-util's client.
fn retried_hyper(
    lb: &LoadBalanceLayer,
) -> impl tower::Service<
    http::Request<Empty<Bytes>>,
    Response = http::Response<tower_lb::TrackedBody<hyper::body::Incoming>>,
    Error = tower_lb::Error,
    Future: Send,
> + Clone {
    let hyper = HyperClient::builder(TokioExecutor::new()).build_http::<ReplayBody<Empty<Bytes>>>();
    ServiceBuilder::new()
        .layer(RetryLayer::new())
        .layer(lb.clone())
        .service(hyper)
}

/// A gRPC-style instance that says `grpc-status: 14` (UNAVAILABLE) in an
/// HTTP 200, or `0` (OK); counts what it served.
struct GrpcInstance {
    addr: SocketAddr,
    hits: Arc<AtomicU64>,
}

#[cfg_attr(not(feature = "tower-http"), allow(dead_code))]
impl GrpcInstance {
    async fn start(grpc_status: &'static str) -> GrpcInstance {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicU64::new(0));
        let counter = hits.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let counter = counter.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |_request| {
                        counter.fetch_add(1, Ordering::SeqCst);
                        let mut response = http::Response::new(Full::new(Bytes::new()));
                        let headers = response.headers_mut();
                        headers
                            .insert("content-type", HeaderValue::from_static("application/grpc"));
                        headers.insert("grpc-status", HeaderValue::from_static(grpc_status));
                        async move { Ok::<_, Infallible>(response) }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        GrpcInstance { addr, hits }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn hits(&self) -> u64 {
        self.hits.load(Ordering::SeqCst)
    }
}

#[cfg(feature = "tower-http")]
/// tower-http's gRPC classifier decides for both layers: an HTTP 200 with
/// `grpc-status: 14` is retried on another instance and counts against the
/// one that said it, until it is ejected.
#[tokio::test]
async fn grpc_unavailable_is_retried_and_ejected() {
    let broken = GrpcInstance::start("14").await;
    let fine = [
        GrpcInstance::start("0").await,
        GrpcInstance::start("0").await,
    ];
    let endpoints = [broken.url(), fine[0].url(), fine[1].url()];
    let pool = Pool::builder("greet", Fixed::new(endpoints).unwrap())
        .outlier_detection(OutlierDetection::new().consecutive_failures(3))
        .build();
    let lb = LoadBalanceLayer::builder()
        .pool(pool)
        .classifier(TowerHttp::new(GrpcErrorsAsFailures::new()))
        .build()
        .unwrap();
    let client = retried_hyper(&lb);

    for _ in 0..30 {
        let request = http::Request::get("http://greet/grpc.Greeter/SayHello")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let response = bounded("a gRPC-style call", client.clone().oneshot(request))
            .await
            .expect("a call succeeds on a fine instance");
        assert_eq!(response.headers()["grpc-status"], "0");
        response.into_body().collect().await.unwrap();
    }
    assert!(broken.hits() >= 1, "the broken instance was tried");
    assert!(
        broken.hits() <= 3,
        "ejected after 3 failures: {} hits",
        broken.hits()
    );
    let pool = lb.pool("greet").unwrap();
    let broken_key = Endpoint::new(&broken.url()).unwrap();
    assert!(
        !pool.eligible_endpoints().contains(&broken_key),
        "{:?}",
        pool.stats()
    );
    let stats = pool.stats();
    let entry = stats
        .endpoints
        .iter()
        .find(|e| e.endpoint == broken_key.key())
        .unwrap();
    assert_eq!(entry.failures, broken.hits(), "{entry:?}");
    assert_eq!(entry.times_ejected, 1, "{entry:?}");
    assert!(fine.iter().map(GrpcInstance::hits).sum::<u64>() >= 30);
}

/// The default classifier does not know gRPC: the same answers are
/// successes, never retried, never ejected.
#[tokio::test]
async fn without_the_grpc_classifier_a_200_is_a_success() {
    let broken = GrpcInstance::start("14").await;
    let lb = LoadBalanceLayer::builder()
        .service("greet", Fixed::new([broken.url()]).unwrap())
        .build()
        .unwrap();
    let client = retried_hyper(&lb);
    for _ in 0..6 {
        let request = http::Request::get("http://greet/x")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let response = bounded("a call", client.clone().oneshot(request))
            .await
            .unwrap();
        assert_eq!(
            response.extensions().get::<Attempts>().map(Attempts::count),
            Some(1)
        );
        response.into_body().collect().await.unwrap();
    }
    let stats = lb.pool("greet").unwrap().stats();
    assert_eq!(stats.endpoints[0].failures, 0, "{stats:?}");
    assert_eq!(stats.endpoints[0].requests, 6, "{stats:?}");
}
