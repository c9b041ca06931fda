//! Calls the greet service by its logical name through the balancer and
//! prints each answer and which instance gave it.
//!
//! Start a few instances, then the client:
//!
//! ```text
//! cargo run --example greet_server -- --port 7001 &
//! cargo run --example greet_server -- --port 7002 &
//! cargo run --example greet_server -- --port 7003 &
//! cargo run --example greet_client -- 127.0.0.1:7001 127.0.0.1:7002 127.0.0.1:7003
//! ```
//!
//! With no arguments it uses those three addresses.

#[path = "support/client.rs"]
mod client;

use std::time::Duration;

use tower_lb::balance::RoundRobin;
use tower_lb::discover::Fixed;
use tower_lb::retry::RetryLayer;
use tower_lb::{Client, Endpoint, LoadBalanceLayer};

#[tokio::main]
async fn main() {
    if let Err(error) = run().await {
        client::exit_with("greet_client", &*error);
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut addresses: Vec<String> = std::env::args().skip(1).collect();
    if addresses.is_empty() {
        addresses = ["127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003"]
            .map(String::from)
            .to_vec();
    }
    let lb = LoadBalanceLayer::builder()
        .service("greet", Fixed::new(&addresses)?)
        .balancer(RoundRobin::new())
        .ready_timeout(Duration::from_secs(2))
        .build()?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    // reqwest's own API, through the balancer and the retry layer.
    let client = Client::builder(http, lb).retry(RetryLayer::new()).build();

    for name in ["Alice", "Bob", "Carol", "Dave", "Eve", "Frank"] {
        let response = client
            .get("http://greet/api/greet")
            .query(&[("name", name)])
            .send()
            .await?;
        let endpoint = response
            .extensions()
            .get::<Endpoint>()
            .map(|e| e.key().to_string())
            .unwrap_or_default();
        let instance = client::instance_of(&response);
        let body = response.text().await?;
        println!("{body}  <- {instance} at {endpoint}");
    }
    Ok(())
}
