//! Metrics a dashboard can use: three greet instances, one failing for
//! its first two seconds, a client that balances and retries across them,
//! and a Prometheus exporter on a loopback port.
//!
//! ```sh
//! cargo run --example metrics --features metrics
//! ```
//!
//! It prints the scrape address, sends traffic for a few seconds, and
//! prints the series tower-lb wrote (`curl` the address meanwhile to see
//! them live).

#[path = "support/greet.rs"]
mod greet;
#[path = "support/monitoring.rs"]
mod monitoring;

#[tokio::main]
async fn main() -> Result<(), tower_lb::BoxError> {
    let demo = monitoring::start().await?;
    println!("scrape {}", demo.scrape_url);
    let mut ok = 0;
    for _ in 0..3 {
        ok += monitoring::traffic(&demo.client, 200).await;
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
    println!("{ok} of 600 calls succeeded");
    let scrape = reqwest::get(&demo.scrape_url).await?.text().await?;
    for line in scrape.lines() {
        let series = ["tower_lb_", "http_client_"];
        if !line.starts_with('#') && series.iter().any(|s| line.starts_with(s)) {
            println!("{line}");
        }
    }
    for instance in demo.instances {
        instance.stop().await;
    }
    Ok(())
}
