//! Membership churn: what one endpoint change costs the pool, at 10 to
//! 100,000 endpoints, for round robin, Peak-EWMA and Maglev.
//!
//! A pool fed by a `discover::Push` source is filled with `n` endpoints;
//! then `k` single `Insert`s are pushed back to back and the time until the
//! pool lists all of them, over `k`, is the cost of one change (the
//! driver's work: member map, health book, snapshot, picker). `k` shrinks
//! as `n` grows (1,000 changes at 10 endpoints, 3 at 100,000). Wall-clock,
//! one thread (the pool's driver runs on the bench's current-thread
//! runtime); the pool is polled every millisecond, which bounds what the
//! figure can resolve at small `n`.
//!
//! Beside them, the resident memory the round-robin pool added per
//! endpoint (RSS before the pool and after it holds its `n` endpoints,
//! from `/proc/self/statm`; meaningful at large `n`).
//!
//! Run with `cargo bench --bench churn`; `CHURN_BENCH_SIZES=10,1000` picks
//! the sizes.

use std::time::{Duration, Instant};

use tower_lb::Pool;
use tower_lb::balance::{Balancer, ConsistentHash, HashKey, PeakEwma, RoundRobin};
use tower_lb::discover::Push;

fn endpoint(i: usize) -> String {
    format!(
        "10.{}.{}.{}:80",
        (i >> 16) & 0xff,
        (i >> 8) & 0xff,
        i & 0xff
    )
}

async fn wait_for(pool: &Pool, len: usize) {
    while pool.endpoints().len() != len {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Resident set size in bytes (Linux), 0 where unknown.
fn rss() -> usize {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<usize>().ok())
        .map_or(0, |pages| pages * 4096)
}

/// Mean time per single insert into a pool of `n`, and the bytes of RSS
/// the pool of `n` added per endpoint.
async fn one_change(balancer: impl Balancer, n: usize) -> (Duration, f64) {
    let before = rss();
    let (source, handle) = Push::new();
    let pool = Pool::builder("churn", source).balancer(balancer).build();
    handle.replace((0..n).map(endpoint)).unwrap();
    pool.ready().await.unwrap();
    wait_for(&pool, n).await;
    let per_endpoint = rss().saturating_sub(before) as f64 / n as f64;
    let k = (100_000 / n).clamp(3, 1_000);
    let started = Instant::now();
    for i in n..n + k {
        handle.add(endpoint(i)).unwrap();
    }
    wait_for(&pool, n + k).await;
    (started.elapsed() / k as u32, per_endpoint)
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let sizes: Vec<usize> = std::env::var("CHURN_BENCH_SIZES")
        .unwrap_or_else(|_| "10,1000,10000,100000".into())
        .split(',')
        .map(|s| s.trim().parse().expect("a size"))
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    println!("µs per single Insert (pushed back to back)");
    println!(
        "{:>8} {:>12} {:>12} {:>12} {:>16}",
        "n", "round_robin", "peak_ewma", "maglev", "RSS B/endpoint"
    );
    for n in sizes {
        rt.block_on(async {
            let (rr, bytes) = one_change(RoundRobin::new(), n).await;
            let (ewma, _) = one_change(PeakEwma::new(), n).await;
            let (maglev, _) = one_change(ConsistentHash::new(HashKey::Path), n).await;
            println!(
                "{n:>8} {:>12.1} {:>12.1} {:>12.1} {bytes:>16.0}",
                rr.as_secs_f64() * 1e6,
                ewma.as_secs_f64() * 1e6,
                maglev.as_secs_f64() * 1e6
            );
        });
    }
}
