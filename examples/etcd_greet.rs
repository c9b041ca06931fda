//! Discovery through etcd: three greet instances register themselves under
//! `greet/` with a lease, a client discovers them and balances across them;
//! then one instance deregisters and the client stops calling it.
//!
//! Needs an etcd (v3.4 or later) on 127.0.0.1:2379, for example:
//!
//! ```text
//! apt-get install -y etcd-server            # or any etcd release
//! etcd --data-dir /tmp/etcd-demo &
//! cargo run --example etcd_greet --features etcd
//! ```
//!
//! Another etcd: `cargo run --example etcd_greet --features etcd -- http://10.0.0.5:2379`
//! (or set `ETCD_ENDPOINTS`, comma-separated). Add `RUST_LOG=tower_lb=debug`
//! to see the watch at work. While it runs, `etcdctl get --prefix greet/`
//! shows the registrations in etcd's Go naming format.

#[path = "support/client.rs"]
mod client;
#[path = "support/greet.rs"]
mod greet;

use std::collections::BTreeMap;
use std::time::Duration;

use greet::GreetServer;
use tower::{ServiceBuilder, ServiceExt};
use tower_lb::discover::etcd::{Etcd, EtcdConfig, Registration};
use tower_lb::{LoadBalance, LoadBalanceLayer};

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "tower_lb=info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    if let Err(error) = run().await {
        client::exit_with("etcd_greet", &*error);
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let endpoints: Vec<String> = match std::env::args().nth(1) {
        Some(arg) => vec![arg],
        None => std::env::var("ETCD_ENDPOINTS")
            .unwrap_or_else(|_| "http://127.0.0.1:2379".into())
            .split(',')
            .map(str::to_string)
            .collect(),
    };
    let etcd = EtcdConfig::new(&endpoints)?;

    // Three instances, each announcing itself as a real service would.
    let mut instances = Vec::new();
    for name in ["greet-a", "greet-b", "greet-c"] {
        let server = GreetServer::start(name).await?;
        let registration = Registration::builder(etcd.clone(), "greet", server.addr())?
            .ttl(Duration::from_secs(5))
            .metadata("instance", name)
            .register()
            .await?;
        println!(
            "{name} listening on {} registered as `{}`",
            server.url(),
            registration.key()
        );
        instances.push((server, registration));
    }

    // The client only knows the name "greet" and where etcd is.
    let lb = LoadBalanceLayer::builder()
        .service("greet", Etcd::new(etcd, "greet")?)
        .build()?;
    let pool = lb.pool("greet").expect("configured above").clone();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    let mut client = ServiceBuilder::new().layer(lb).service(http);

    pool.ready().await?;
    // Registrations left by an earlier run expire with their leases; wait
    // until the watch shows exactly our three.
    wait_for(&pool, 3).await?;
    println!("\ndiscovered: {:?}", keys(&pool));
    println!("9 requests: {:?}", send(&mut client, 9).await?);

    let (leaving, registration) = instances.remove(1);
    registration.deregister().await?;
    wait_for(&pool, 2).await?;
    println!(
        "\n{} deregistered; discovered: {:?}",
        leaving.name(),
        keys(&pool)
    );
    println!("6 requests: {:?}", send(&mut client, 6).await?);
    leaving.stop().await;

    for (server, registration) in instances {
        registration.deregister().await?;
        server.stop().await;
    }
    Ok(())
}

fn keys(pool: &tower_lb::Pool) -> Vec<String> {
    pool.endpoints()
        .iter()
        .map(|e| e.key().to_string())
        .collect()
}

async fn wait_for(pool: &tower_lb::Pool, n: usize) -> Result<(), String> {
    for _ in 0..200 {
        if pool.endpoints().len() == n {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(format!(
        "expected {n} instances under greet/ in etcd, found {:?} (a stale registration expires with its lease)",
        keys(pool)
    ))
}

/// Sends `n` requests to `http://greet/`; counts answers per instance.
async fn send(
    client: &mut LoadBalance<reqwest::Client>,
    n: usize,
) -> Result<BTreeMap<String, usize>, Box<dyn std::error::Error>> {
    let mut counts = BTreeMap::new();
    for i in 0..n {
        let url = format!("http://greet/api/greet?name=user{i}").parse()?;
        let request = reqwest::Request::new(http::Method::GET, url);
        let response = client.clone().oneshot(request).await?;
        let instance = client::instance_of(&response);
        *counts.entry(instance).or_insert(0) += 1;
    }
    Ok(counts)
}
