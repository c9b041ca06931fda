//! The tour: starts four greet instances in this process, one of them
//! slow, and sends the same traffic through each balancer, then prints how
//! each spread the requests and what latency the callers saw.
//!
//! ```text
//! cargo run --example demo
//! ```
//!
//! Needs nothing but cargo: the instances listen on 127.0.0.1 ports chosen
//! by the OS.

#[path = "support/client.rs"]
mod client;
#[path = "support/greet.rs"]
mod greet;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use greet::GreetServer;
use tokio::sync::Semaphore;
use tower::{ServiceBuilder, ServiceExt};
use tower_lb::balance::{
    Balancer, LeastRequest, LeastRequestMode, PeakEwma, Random, RoundRobin, WeightedLeastRequest,
    WeightedRandom, WeightedRoundRobin,
};
use tower_lb::discover::Fixed;
use tower_lb::{Endpoint, LoadBalanceLayer};

const REQUESTS: usize = 400;
const CONCURRENCY: usize = 16;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut instances = Vec::new();
    for name in ["greet-1", "greet-2", "greet-3", "greet-4"] {
        instances.push(GreetServer::start(name).await?);
    }
    // One instance is ten times slower, as a busy or degraded host would be:
    // load-aware balancers should notice, the others cannot.
    instances[0].set_delay(Duration::from_millis(20));
    for i in &instances[1..] {
        i.set_delay(Duration::from_millis(2));
    }
    // Weights for the weighted balancer: the slow one gets the least.
    let weights = [1, 2, 2, 3];
    let endpoints: Vec<Endpoint> = instances
        .iter()
        .zip(weights)
        .map(|(i, w)| Endpoint::from_addr(i.addr()).with_weight(w))
        .collect::<Result<_, _>>()?;

    println!(
        "{REQUESTS} requests per balancer, {CONCURRENCY} at a time, to 4 instances \
         (greet-1 answers in 20 ms, the others in 2 ms; weights {weights:?})\n"
    );
    println!(
        "{:<24} {:>8} {:>8} {:>8} {:>8}   {:>8} {:>8} {:>8} {:>7}",
        "balancer",
        "greet-1",
        "greet-2",
        "greet-3",
        "greet-4",
        "mean ms",
        "p50 ms",
        "p99 ms",
        "errors"
    );
    let balancers: Vec<Box<dyn Fn() -> LoadBalanceLayer>> = vec![
        layer_with(&endpoints, RoundRobin::new()),
        layer_with(&endpoints, Random::new()),
        layer_with(&endpoints, WeightedRoundRobin::new()),
        layer_with(&endpoints, WeightedRandom::new()),
        layer_with(&endpoints, LeastRequest::new()),
        layer_with(
            &endpoints,
            LeastRequest::new().mode(LeastRequestMode::FullScan),
        ),
        layer_with(&endpoints, WeightedLeastRequest::new()),
        layer_with(&endpoints, PeakEwma::new()),
    ];
    for make_layer in balancers {
        let layer = make_layer();
        let name = layer
            .pool("greet")
            .map(|p| p.balancer_name())
            .unwrap_or("?");
        let run = run(layer.clone()).await;
        let share = |instance: &str| run.by_instance.get(instance).copied().unwrap_or(0);
        println!(
            "{:<24} {:>8} {:>8} {:>8} {:>8}   {:>8.1} {:>8.1} {:>8.1} {:>7}",
            name,
            share("greet-1"),
            share("greet-2"),
            share("greet-3"),
            share("greet-4"),
            run.mean(),
            run.percentile(0.50),
            run.percentile(0.99),
            run.errors,
        );
    }
    println!(
        "\nRound robin and random spread evenly and so wait on the slow instance; \
         least request sends it less because its requests stay in flight longer, \
         and Peak-EWMA, which also weighs each instance's measured latency, least."
    );
    for instance in instances {
        instance.stop().await;
    }
    Ok(())
}

fn layer_with<B: Balancer + Clone>(
    endpoints: &[Endpoint],
    balancer: B,
) -> Box<dyn Fn() -> LoadBalanceLayer> {
    let endpoints = endpoints.to_vec();
    Box::new(move || {
        LoadBalanceLayer::builder()
            .service(
                "greet",
                Fixed::new(endpoints.clone()).expect("endpoints are valid"),
            )
            .balancer(balancer.clone())
            .build()
            .expect("the configuration is valid")
    })
}

struct Run {
    by_instance: BTreeMap<String, usize>,
    latencies: Vec<Duration>,
    errors: usize,
}

impl Run {
    fn mean(&self) -> f64 {
        let total: Duration = self.latencies.iter().sum();
        total.as_secs_f64() * 1e3 / self.latencies.len().max(1) as f64
    }

    fn percentile(&self, q: f64) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        let i = ((self.latencies.len() - 1) as f64 * q).round() as usize;
        self.latencies[i].as_secs_f64() * 1e3
    }
}

/// Sends `REQUESTS` requests through the layer over one reqwest client,
/// `CONCURRENCY` at a time, and tallies who answered.
async fn run(layer: LoadBalanceLayer) -> Run {
    let client = ServiceBuilder::new()
        .layer(layer)
        .service(reqwest::Client::new());
    let permits = Arc::new(Semaphore::new(CONCURRENCY));
    let mut tasks = Vec::with_capacity(REQUESTS);
    for i in 0..REQUESTS {
        let permit = permits.clone().acquire_owned().await.expect("never closed");
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let _permit = permit;
            let url = format!("http://greet/api/greet?name=caller-{i}");
            let request = reqwest::Request::new(http::Method::GET, url.parse().expect("valid URL"));
            let started = Instant::now();
            let response = client.oneshot(request).await?;
            let instance = client::instance_of(&response);
            response.bytes().await.map_err(tower_lb::BoxError::from)?;
            Ok::<_, tower_lb::BoxError>((instance, started.elapsed()))
        }));
    }
    let mut run = Run {
        by_instance: BTreeMap::new(),
        latencies: Vec::with_capacity(REQUESTS),
        errors: 0,
    };
    for task in tasks {
        match task.await {
            Ok(Ok((instance, latency))) => {
                *run.by_instance.entry(instance).or_default() += 1;
                run.latencies.push(latency);
            }
            Ok(Err(error)) => {
                run.errors += 1;
                eprintln!("request failed: {error}");
            }
            Err(join) => {
                run.errors += 1;
                eprintln!("task failed: {join}");
            }
        }
    }
    run.latencies.sort();
    run
}
