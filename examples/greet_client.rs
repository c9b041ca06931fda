//! Calls the greet service by its logical name through the balancer and
//! prints each answer and which instance gave it.
//!
//! Start a few instances, then the client:
//!
//! ```text
//! cargo run --example greet_server -- --port 5001 &
//! cargo run --example greet_server -- --port 5002 &
//! cargo run --example greet_server -- --port 5003 &
//! cargo run --example greet_client -- 127.0.0.1:5001 127.0.0.1:5002 127.0.0.1:5003
//! ```
//!
//! With no arguments it uses those three addresses.

#[path = "support/client.rs"]
mod client;

use std::time::Duration;

use tower::{Service, ServiceBuilder, ServiceExt};
use tower_lb::balance::RoundRobin;
use tower_lb::discover::Fixed;
use tower_lb::{Endpoint, LoadBalanceLayer};

#[tokio::main]
async fn main() {
    if let Err(error) = run().await {
        client::exit_with("greet_client", &*error);
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut addresses: Vec<String> = std::env::args().skip(1).collect();
    if addresses.is_empty() {
        addresses = ["127.0.0.1:5001", "127.0.0.1:5002", "127.0.0.1:5003"]
            .map(String::from)
            .to_vec();
    }
    let lb = LoadBalanceLayer::builder()
        .service("greet", Fixed::new(&addresses)?)
        .balancer(RoundRobin::new())
        .ready_timeout(Duration::from_secs(2))
        .build()?;
    let reqwest = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    let mut client = ServiceBuilder::new().layer(lb).service(reqwest);

    for name in ["Alice", "Bob", "Carol", "Dave", "Eve", "Frank"] {
        let url = format!("http://greet/api/greet?name={name}").parse()?;
        let request = reqwest::Request::new(http::Method::GET, url);
        // The layer serves several request types: name the one sent here.
        let ready = ServiceExt::<reqwest::Request>::ready(&mut client).await?;
        let response = ready.call(request).await?;
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
