//! Tests of the in-process greet backend used by examples, tests and benches.

mod support;

use std::io::ErrorKind;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::StatusCode;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use support::greet::GreetServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// GET `url` and return status, `x-instance` header and body.
async fn get(client: &HttpClient, url: &str) -> (StatusCode, Option<String>, String) {
    let response = client.get(url.parse().unwrap()).await.unwrap();
    let status = response.status();
    let instance = response
        .headers()
        .get("x-instance")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, instance, String::from_utf8(body.to_vec()).unwrap())
}

#[tokio::test]
async fn greet_answers_json_with_instance_header() {
    let server = GreetServer::start("greet-a").await.unwrap();
    assert_eq!(server.name(), "greet-a");
    assert_eq!(
        server.url(),
        format!("http://127.0.0.1:{}", server.addr().port())
    );

    let response = client()
        .get(
            format!("{}/api/greet?name=Alice", server.url())
                .parse()
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/json");
    assert_eq!(response.headers()["x-instance"], "greet-a");
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], br#"{"message":"Hello, Alice!"}"#);

    let client = client();
    let url = server.url();
    let (status, instance, body) = get(&client, &format!("{url}/api/greet")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(instance.as_deref(), Some("greet-a"));
    assert_eq!(body, r#"{"message":"Hello, World!"}"#);

    // Percent-encoding is decoded and JSON escaping is applied.
    let (_, _, body) = get(&client, &format!("{url}/api/greet?name=%22Bob%22%20J")).await;
    assert_eq!(body, r#"{"message":"Hello, \"Bob\" J!"}"#);

    let (status, _, body) = get(&client, &format!("{url}/health")).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "ok"));

    let (status, instance, _) = get(&client, &format!("{url}/nope")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(instance.as_deref(), Some("greet-a"));

    assert_eq!(server.hits(), 5);
    server.stop().await;
}

#[tokio::test]
async fn forced_status_applies_to_every_route_until_cleared() {
    let server = GreetServer::start("greet-b").await.unwrap();
    let client = client();
    let url = server.url();

    server.set_status(Some(503));
    for path in ["/api/greet?name=Alice", "/health", "/nope"] {
        let (status, instance, _) = get(&client, &format!("{url}{path}")).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{path}");
        assert_eq!(instance.as_deref(), Some("greet-b"));
    }

    // Changed from another task through the cloneable control handle.
    let control = server.control();
    tokio::spawn(async move { control.set_status(None) })
        .await
        .unwrap();
    let (status, _, _) = get(&client, &format!("{url}/health")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(server.hits(), 4);
}

#[tokio::test]
async fn delay_is_applied_before_answering() {
    let server = GreetServer::start("greet-c").await.unwrap();
    let client = client();
    let url = format!("{}/health", server.url());
    // Warm up so connection setup is not part of the measurement.
    get(&client, &url).await;

    // Wide: an answer without the delay must come in under it even on a
    // loaded machine.
    let delay = Duration::from_millis(500);
    server.set_delay(delay);
    let started = Instant::now();
    let (status, _, _) = get(&client, &url).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        started.elapsed() >= delay,
        "answered after {:?}",
        started.elapsed()
    );

    server.set_delay(Duration::ZERO);
    let started = Instant::now();
    get(&client, &url).await;
    assert!(
        started.elapsed() < delay,
        "delay not cleared: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn stop_refuses_new_connections_and_closes_keep_alive_ones() {
    let server = GreetServer::start("greet-d").await.unwrap();
    let addr = server.addr();

    // An HTTP/1.1 keep-alive connection with one request answered on it.
    let mut conn = TcpStream::connect(addr).await.unwrap();
    conn.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut response = Vec::new();
    while !response.ends_with(b"\r\n\r\nok") {
        let mut buf = [0; 1024];
        let n = conn.read(&mut buf).await.unwrap();
        assert_ne!(
            n,
            0,
            "closed early: {:?}",
            String::from_utf8_lossy(&response)
        );
        response.extend_from_slice(&buf[..n]);
    }
    assert!(response.starts_with(b"HTTP/1.1 200 OK\r\n"));

    server.stop().await;

    // The idle keep-alive connection is closed (EOF or reset), not left open.
    let mut buf = [0; 64];
    let read = tokio::time::timeout(Duration::from_secs(1), conn.read(&mut buf))
        .await
        .expect("keep-alive connection still open after stop");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");

    let err = TcpStream::connect(addr).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused);
}

#[tokio::test]
async fn drop_stops_the_server() {
    let server = GreetServer::start("greet-e").await.unwrap();
    let addr = server.addr();
    drop(server);

    // Drop can only abort, so the port closes shortly after, not instantly.
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match TcpStream::connect(addr).await {
            Err(err) if err.kind() == ErrorKind::ConnectionRefused => break,
            _ if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(10)).await,
            other => panic!("still accepting after drop: {other:?}"),
        }
    }
}
