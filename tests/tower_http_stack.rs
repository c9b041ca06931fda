//! tower-http's client layers above the retry layer, the balancer below:
//! each acts, against real instances on 127.0.0.1.

#[path = "../examples/support/stack.rs"]
mod stack;

use std::convert::Infallible;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tower::ServiceExt;
use tower_lb::discover::Fixed;
use tower_lb::health::OutlierDetection;
use tower_lb::retry::Attempts;
use tower_lb::{Endpoint, LoadBalanceLayer};

/// An instance that fails its first `fail_first` requests with a 503;
/// then `/old` redirects to `http://greet/new` and `/new` answers with what
/// it saw of the request.
async fn instance(fail_first: u64) -> (String, Arc<AtomicU64>) {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let hits = Arc::new(AtomicU64::new(0));
    let counter = hits.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request: http::Request<_>| {
                    let mut response = http::Response::new(Full::new(Bytes::from("new")));
                    if counter.fetch_add(1, Ordering::SeqCst) < fail_first {
                        *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                    } else if request.uri().path() == "/old" {
                        *response.status_mut() = StatusCode::FOUND;
                        response
                            .headers_mut()
                            .insert("location", HeaderValue::from_static("http://greet/new"));
                    }
                    for (seen, name) in [
                        ("x-saw-request-id", "x-request-id"),
                        ("x-saw-accept-encoding", "accept-encoding"),
                    ] {
                        if let Some(value) = request.headers().get(name) {
                            response.headers_mut().insert(seen, value.clone());
                        }
                    }
                    async move { Ok::<_, Infallible>(response) }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (url, hits)
}

#[tokio::test]
async fn each_layer_acts_in_its_place() {
    // One instance fails its first request: the retry below the redirect
    // layer takes care of it.
    let (flaky, _) = instance(1).await;
    let (steady, _) = instance(0).await;
    let balancer = LoadBalanceLayer::builder()
        .service(
            "greet",
            Fixed::new([flaky.clone(), steady.clone()]).unwrap(),
        )
        .configure_pools(|pool| pool.outlier_detection(OutlierDetection::disabled()))
        .build()
        .unwrap();
    let client = stack::stack(balancer.clone());

    for _ in 0..4 {
        let request = http::Request::get("http://greet/old")
            .header("authorization", "Bearer secret")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let response = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            client.clone().oneshot(request),
        )
        .await
        .expect("bounded")
        .expect("the call succeeds");
        // FollowRedirect followed `/old` to `http://greet/new`, balanced again.
        assert_eq!(response.status(), StatusCode::OK);
        let endpoint = response
            .extensions()
            .get::<Endpoint>()
            .unwrap()
            .key()
            .to_owned();
        assert!(endpoint == flaky || endpoint == steady, "{endpoint}");
        // One request id for the call, seen by the instance and handed back.
        let id = response.headers()[stack::REQUEST_ID].clone();
        assert_eq!(response.headers()["x-saw-request-id"], id);
        // Decompression asked for compressed bodies.
        assert!(
            response.headers()["x-saw-accept-encoding"]
                .to_str()
                .unwrap()
                .contains("gzip")
        );
        // The retry layer marked the answer (that of the redirect's target:
        // the redirect's own answer is consumed by FollowRedirect).
        assert!(response.extensions().get::<Attempts>().is_some());
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"new");
    }
    let stats = balancer.pool("greet").unwrap().stats();
    assert!(
        stats.endpoints.iter().all(|e| e.in_flight == 0),
        "{stats:?}"
    );
    // Two balanced requests per call (the redirect and its target), plus the
    // retry of the one 503, which no caller saw.
    let requests: u64 = stats.endpoints.iter().map(|e| e.requests).sum();
    assert_eq!(requests, 4 * 2 + 1, "{stats:?}");
    let failures: u64 = stats.endpoints.iter().map(|e| e.failures).sum();
    assert_eq!(failures, 1, "{stats:?}");
}
