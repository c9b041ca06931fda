//! The cost of choosing an endpoint: one `Pool::pick()` plus dropping the
//! `Picked` it returns, i.e. snapshot load, the balancer's pick, and the
//! in-flight count +1/-1. That is the full per-request balancing overhead,
//! without any HTTP.
//!
//! Every balancer is measured at 10, 1,000 and 100,000 endpoints, with the
//! pool otherwise idle (nothing in flight). `FullScan` stops at the first
//! idle endpoint, so it is also measured with one request held in flight on
//! every endpoint (`/loaded`), its O(n) worst case. Two threads picking from
//! one pool at once measure contention on the shared counters.
//!
//! Run with `cargo bench --bench pick`.

use std::hint::black_box;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use tokio::runtime::Runtime;
use tower_lb::balance::{
    Balancer, LeastRequest, LeastRequestMode, Random, RoundRobin, WeightedRoundRobin,
};
use tower_lb::discover::Fixed;
use tower_lb::{Endpoint, Picked, Pool};

const SIZES: [usize; 3] = [10, 1_000, 100_000];

/// `n` endpoints `http://10.a.b.c:8080`; weighted 1..=4 in turn if asked.
fn endpoints(n: usize, weighted: bool) -> Vec<Endpoint> {
    (0..n)
        .map(|i| {
            let (a, b, c) = (i >> 16, (i >> 8) & 0xff, i & 0xff);
            let ep = Endpoint::new(&format!("http://10.{a}.{b}.{c}:8080")).unwrap();
            if weighted {
                ep.with_weight(1 + (i % 4) as u32).unwrap()
            } else {
                ep
            }
        })
        .collect()
}

fn pool(rt: &Runtime, endpoints: &[Endpoint], balancer: impl Balancer) -> Pool {
    let pool = rt.block_on(async {
        let pool = Pool::builder("bench", Fixed::new(endpoints).unwrap())
            .balancer(balancer)
            .ready_timeout(Duration::from_secs(60))
            .build();
        pool.ready().await.unwrap();
        pool
    });
    assert_eq!(pool.endpoints().len(), endpoints.len());
    pool
}

fn single_thread(c: &mut Criterion, rt: &Runtime) {
    let plain: Vec<Vec<Endpoint>> = SIZES.iter().map(|&n| endpoints(n, false)).collect();
    let weighted: Vec<Vec<Endpoint>> = SIZES.iter().map(|&n| endpoints(n, true)).collect();
    let full_scan = || LeastRequest::new().mode(LeastRequestMode::FullScan);
    // (group, balancer, whether its endpoints carry weights 1..=4)
    let cases: [(&str, Arc<dyn Balancer>, bool); 5] = [
        ("round_robin", Arc::new(RoundRobin::new()), false),
        ("random", Arc::new(Random::new()), false),
        (
            "weighted_round_robin",
            Arc::new(WeightedRoundRobin::new()),
            true,
        ),
        ("least_request_p2c", Arc::new(LeastRequest::new()), false),
        ("least_request_full_scan", Arc::new(full_scan()), false),
    ];
    for (name, balancer, weights) in cases {
        let sets = if weights { &weighted } else { &plain };
        let mut group = c.benchmark_group(format!("pick/{name}"));
        for set in sets {
            let pool = pool(rt, set, balancer.clone());
            group.bench_function(BenchmarkId::from_parameter(set.len()), |b| {
                b.iter(|| drop(black_box(pool.pick().unwrap())));
            });
        }
        group.finish();
    }

    // FullScan's worst case: no endpoint is idle, so every pick scans all.
    let mut group = c.benchmark_group("pick/least_request_full_scan/loaded");
    group.sample_size(10);
    for set in &plain {
        let pool = pool(rt, set, full_scan());
        // Full scan fills the least loaded first: exactly one per endpoint.
        let held: Vec<Picked> = (0..set.len()).map(|_| pool.pick().unwrap()).collect();
        assert!(pool.stats().endpoints.iter().all(|e| e.in_flight == 1));
        group.bench_function(BenchmarkId::from_parameter(set.len()), |b| {
            b.iter(|| drop(black_box(pool.pick().unwrap())));
        });
        drop(held);
    }
    group.finish();
}

/// Two threads pick from one pool at once; reports the slower thread's
/// time per pick.
fn two_threads(c: &mut Criterion, rt: &Runtime) {
    let set = endpoints(1_000, false);
    let pools = [
        ("round_robin", pool(rt, &set, RoundRobin::new())),
        ("least_request_p2c", pool(rt, &set, LeastRequest::new())),
    ];
    let mut group = c.benchmark_group("pick_2_threads");
    for (name, pool) in &pools {
        group.bench_function(BenchmarkId::new(*name, set.len()), |b| {
            b.iter_custom(|iters| {
                let barrier = Barrier::new(2);
                std::thread::scope(|s| {
                    let run = || {
                        barrier.wait();
                        let start = Instant::now();
                        for _ in 0..iters {
                            drop(black_box(pool.pick().unwrap()));
                        }
                        start.elapsed()
                    };
                    let other = s.spawn(run);
                    let mine = run();
                    mine.max(other.join().unwrap())
                })
            });
        });
    }
    group.finish();
}

fn benches(c: &mut Criterion) {
    // Pools run their discovery task on this runtime; picks need none.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    single_thread(c, &rt);
    two_threads(c, &rt);
}

criterion_group! {
    name = pick;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
        .sample_size(50);
    targets = benches
}
criterion_main!(pick);
