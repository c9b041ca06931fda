//! The same balancing over hyper-util's client: any `tower::Service` of
//! `http::Request`s can be wrapped, not only reqwest.
//!
//! Self-contained: starts three greet instances in-process, then calls
//! `http://greet/api/greet` through the balancer six times.
//!
//! ```text
//! cargo run --example hyper_client
//! ```

#[path = "support/greet.rs"]
mod greet;

use bytes::Bytes;
use greet::GreetServer;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_lb::balance::LeastRequest;
use tower_lb::discover::Fixed;
use tower_lb::{Endpoint, LoadBalanceLayer};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut instances = Vec::new();
    for name in ["greet-a", "greet-b", "greet-c"] {
        instances.push(GreetServer::start(name).await?);
    }
    let lb = LoadBalanceLayer::builder()
        .service("greet", Fixed::new(instances.iter().map(|i| i.addr()))?)
        .balancer(LeastRequest::new())
        .build()?;
    let hyper = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let mut client = ServiceBuilder::new().layer(lb).service(hyper);

    for name in ["Alice", "Bob", "Carol", "Dave", "Eve", "Frank"] {
        let request = http::Request::get(format!("http://greet/api/greet?name={name}"))
            .body(Empty::<Bytes>::new())?;
        let response = client.ready().await?.call(request).await?;
        let endpoint = response.extensions().get::<Endpoint>().cloned();
        let body = response.into_body().collect().await?.to_bytes();
        println!(
            "{}  <- {}",
            String::from_utf8_lossy(&body),
            endpoint.map(|e| e.to_string()).unwrap_or_default()
        );
    }
    for instance in instances {
        instance.stop().await;
    }
    Ok(())
}
