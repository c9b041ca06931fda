//! tower-http's client layers with tower-lb's, over hyper-util's client:
//! which go above the retry layer, which below, and why (see
//! `examples/support/stack.rs`).
//!
//! ```sh
//! cargo run --example tower_http_stack
//! ```
//!
//! Starts three greet instances on free ports of 127.0.0.1, sends a few
//! calls through the stack and prints who answered each, with its request
//! id.

#[path = "support/greet.rs"]
mod greet;
#[path = "support/stack.rs"]
mod stack;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use tower::ServiceExt;
use tower_lb::discover::Fixed;
use tower_lb::{Endpoint, LoadBalanceLayer};

#[tokio::main]
async fn main() -> Result<(), tower_lb::BoxError> {
    let mut instances = Vec::new();
    for name in ["greet-1", "greet-2", "greet-3"] {
        instances.push(greet::GreetServer::start(name).await?);
    }
    let urls: Vec<String> = instances.iter().map(greet::GreetServer::url).collect();
    let balancer = LoadBalanceLayer::builder()
        .service("greet", Fixed::new(&urls)?)
        .build()?;
    let client = stack::stack(balancer);

    for name in ["Alice", "Bob", "Carol"] {
        let request = http::Request::get(format!("http://greet/api/greet?name={name}"))
            .header("authorization", "Bearer not-for-logs")
            .body(Full::new(Bytes::new()))?;
        let response = client.clone().oneshot(request).await?;
        let id = response.headers()[stack::REQUEST_ID].to_str()?.to_owned();
        let endpoint = response
            .extensions()
            .get::<Endpoint>()
            .map(|e| e.key().to_owned())
            .unwrap_or_default();
        let body = response.into_body().collect().await?.to_bytes();
        println!(
            "request {id}: {} from {endpoint}",
            String::from_utf8_lossy(&body)
        );
    }
    for instance in instances {
        instance.stop().await;
    }
    Ok(())
}
