//! The monitoring demo: greet instances (one failing for its first
//! seconds), a client that balances and retries across them, and a
//! Prometheus exporter serving `/metrics` on a loopback port. Shared by
//! `examples/metrics.rs` and its test.
//!
//! The recorder is installed before the layers are built: an endpoint's
//! series are registered as it joins its pool.

// Each includer uses only part of this module.
#![allow(dead_code)]

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tower_lb::discover::Fixed;
use tower_lb::retry::RetryLayer;
use tower_lb::{BoxError, Client, LoadBalanceLayer};

use super::greet::GreetServer;

/// What the demo runs.
pub struct Demo {
    /// `http://127.0.0.1:<port>/metrics`.
    pub scrape_url: String,
    /// The balanced, retried client.
    pub client: Client,
    /// The instances; the first fails with 503 for its first two seconds.
    pub instances: Vec<GreetServer>,
}

/// Installs the Prometheus recorder, starts three instances, the client and
/// the `/metrics` server.
pub async fn start() -> Result<Demo, BoxError> {
    let handle = PrometheusBuilder::new().install_recorder()?;
    let mut instances = Vec::new();
    for name in ["greet-1", "greet-2", "greet-3"] {
        instances.push(GreetServer::start(name).await?);
    }
    // The first instance fails part of the time: its first two seconds.
    let flaky = instances[0].control();
    flaky.set_status(Some(503));
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(2)).await;
        flaky.set_status(None);
    });
    let urls: Vec<String> = instances.iter().map(GreetServer::url).collect();
    let balancer = LoadBalanceLayer::builder()
        .service("greet", Fixed::new(&urls)?)
        .build()?;
    balancer.pool("greet").expect("configured").ready().await?;
    let client = Client::builder(reqwest::Client::new(), balancer)
        .retry(RetryLayer::new())
        .build();
    let scrape_url = serve(handle).await?;
    Ok(Demo {
        scrape_url,
        client,
        instances,
    })
}

/// Serves `handle`'s rendering on `/metrics` of a free loopback port; the
/// listener is held for the server's whole life.
async fn serve(handle: PrometheusHandle) -> Result<String, BoxError> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/metrics", listener.local_addr()?);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let handle = handle.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |_request| {
                    let body = handle.render();
                    async move { Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from(body)))) }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(url)
}

/// Sends `n` calls, 8 at a time; returns how many succeeded.
pub async fn traffic(client: &Client, n: usize) -> usize {
    let permits = std::sync::Arc::new(tokio::sync::Semaphore::new(8));
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..n {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        let client = client.clone();
        calls.spawn(async move {
            let _permit = permit;
            let response = client
                .get("http://greet/api/greet")
                .query(&[("name", format!("caller-{i}"))])
                .send()
                .await;
            match response {
                Ok(response) => response.bytes().await.is_ok(),
                Err(_) => false,
            }
        });
    }
    let mut ok = 0;
    while let Some(done) = calls.join_next().await {
        ok += usize::from(done.unwrap_or(false));
    }
    ok
}
