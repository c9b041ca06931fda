//! Side by side, in one run: the cost of choosing one endpoint in tower-lb
//! and in three other Rust load-balancing libraries, at 3, 100, 10,000 and
//! 100,000 endpoints, single-threaded (see README.md for what each
//! measurement covers).
//!
//! Benchmark ids are `<library>/<algorithm>/<endpoints>`; `report.py`
//! turns criterion's estimates into the README's table.

use std::convert::Infallible;
use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::sync::{Arc, Barrier};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group};
use http::{HeaderMap, HeaderName, HeaderValue};
use tokio::runtime::Runtime;
use tower::Service;
use tower_lb::balance::{
    Balancer, ConsistentHash, HashKey, LeastRequest, PeakEwma, PickContext, Random, RoundRobin,
    WeightedRoundRobin,
};
use tower_lb::discover::Fixed;
use tower_lb::{Endpoint, Pool};

const ALL_SIZES: [usize; 4] = [3, 100, 10_000, 100_000];

/// The endpoint counts to measure: all of them, or those listed in
/// `PEERS_BENCH_SIZES` (comma-separated, e.g. `100` for the ratios alone,
/// which spares building the 100,000-endpoint sets).
fn sizes() -> Vec<usize> {
    match std::env::var("PEERS_BENCH_SIZES") {
        Ok(list) => list
            .split(',')
            .filter_map(|n| n.trim().parse().ok())
            .collect(),
        Err(_) => ALL_SIZES.to_vec(),
    }
}

/// How many distinct hash keys the keyed benchmarks cycle through.
const KEYS: usize = 4096;

/// Endpoint `i` of a set: `10.a.b.c:8080`, the same addresses for every
/// library.
fn addr(i: usize) -> String {
    let (a, b, c) = ((i >> 16) & 0xff, (i >> 8) & 0xff, i & 0xff);
    format!("10.{a}.{b}.{c}:8080")
}

/// The keys of keyed picks: `user-0` .. `user-4095`.
fn keys() -> Vec<String> {
    (0..KEYS).map(|i| format!("user-{i}")).collect()
}

/// Polls a future once with a no-op waker: every future measured here is
/// ready at once, so no runtime is involved in the measurement.
#[inline]
fn poll_once<F: Future>(fut: F) -> Poll<F::Output> {
    let mut cx = Context::from_waker(Waker::noop());
    pin!(fut).poll(&mut cx)
}

// --- tower-lb --------------------------------------------------------------

fn tower_lb_endpoints(n: usize, weighted: bool) -> Vec<Endpoint> {
    (0..n)
        .map(|i| {
            let ep = Endpoint::new(&format!("http://{}", addr(i))).unwrap();
            if weighted {
                ep.with_weight(1 + (i % 4) as u32).unwrap()
            } else {
                ep
            }
        })
        .collect()
}

fn tower_lb_pool(rt: &Runtime, n: usize, weighted: bool, balancer: impl Balancer) -> Pool {
    let endpoints = tower_lb_endpoints(n, weighted);
    let pool = rt.block_on(async {
        let pool = Pool::builder("svc", Fixed::new(endpoints).unwrap())
            .balancer(balancer)
            .ready_timeout(Duration::from_secs(120))
            .build();
        pool.ready().await.unwrap();
        pool
    });
    assert_eq!(pool.endpoints().len(), n);
    pool
}

fn x_user() -> HeaderName {
    HeaderName::from_static("x-user")
}

/// How a benchmark picks: `Pool::pick` on the shared handle, or
/// `CachedPool::pick` on a per-thread handle (the load-balancing layer's
/// path: each service clone caches the pool's snapshot).
#[derive(Clone, Copy)]
enum Path {
    Shared,
    Cached,
}

impl Path {
    fn library(self) -> &'static str {
        match self {
            Path::Shared => "tower-lb",
            Path::Cached => "tower-lb-cached",
        }
    }
}

/// One pick and the drop of its `Picked`, `iters` times (two-thread runs).
fn picks(pool: &Pool, path: Path, iters: u64) -> Duration {
    let mut cached = pool.cached();
    let start = Instant::now();
    for _ in 0..iters {
        let picked = match path {
            Path::Shared => pool.pick(),
            Path::Cached => cached.pick(),
        };
        drop(black_box(picked.unwrap()));
    }
    start.elapsed()
}

fn tower_lb(c: &mut Criterion, rt: &Runtime, path: Path) {
    // (algorithm, balancer, whether endpoints carry weights 1..=4)
    let cases: Vec<(&str, fn() -> Arc<dyn Balancer>, bool)> = vec![
        ("round_robin", || Arc::new(RoundRobin::new()), false),
        ("random", || Arc::new(Random::new()), false),
        ("least_request_p2c", || Arc::new(LeastRequest::new()), false),
        ("peak_ewma", || Arc::new(PeakEwma::new()), false),
        (
            "weighted_round_robin",
            || Arc::new(WeightedRoundRobin::new()),
            true,
        ),
        (
            "maglev",
            || Arc::new(ConsistentHash::new(HashKey::header(x_user()))),
            false,
        ),
        (
            "maglev_path",
            || Arc::new(ConsistentHash::new(HashKey::Path)),
            false,
        ),
    ];
    // Maglev is keyed by the x-user header, cycling through KEYS values.
    let headers: Vec<HeaderMap> = keys()
        .into_iter()
        .map(|k| {
            let mut h = HeaderMap::new();
            h.insert(x_user(), HeaderValue::from_str(&k).unwrap());
            h
        })
        .collect();
    let paths = keys();
    for (name, make, weighted) in cases {
        if name == "maglev_path" {
            maglev_by_path(c, rt, path, make, &paths);
            continue;
        }
        let keyed = (name == "maglev").then_some(&headers[..]);
        let mut group = c.benchmark_group(format!("{}/{name}", path.library()));
        for n in sizes() {
            let pool = tower_lb_pool(rt, n, weighted, make());
            let mut cached = pool.cached();
            let mut i = 0;
            group.bench_function(BenchmarkId::from_parameter(n), |b| match (path, keyed) {
                (Path::Shared, None) => b.iter(|| drop(black_box(pool.pick().unwrap()))),
                (Path::Cached, None) => b.iter(|| drop(black_box(cached.pick().unwrap()))),
                (Path::Shared, Some(headers)) => b.iter(|| {
                    let ctx = PickContext::new("svc").with_headers(&headers[i % KEYS]);
                    i += 1;
                    drop(black_box(pool.pick_with(black_box(&ctx)).unwrap()))
                }),
                (Path::Cached, Some(headers)) => b.iter(|| {
                    let ctx = PickContext::new("svc").with_headers(&headers[i % KEYS]);
                    i += 1;
                    drop(black_box(cached.pick_with(black_box(&ctx)).unwrap()))
                }),
            });
        }
        group.finish();
    }
}

/// Maglev keyed by the request path, handed over as a string: the same
/// work as pingora's `select(key)`, which takes the key's bytes (the
/// `maglev` rows add a header lookup, 15-20 ns, to that).
fn maglev_by_path(
    c: &mut Criterion,
    rt: &Runtime,
    path: Path,
    make: fn() -> Arc<dyn Balancer>,
    paths: &[String],
) {
    let mut group = c.benchmark_group(format!("{}/maglev_path", path.library()));
    for n in sizes() {
        let pool = tower_lb_pool(rt, n, false, make());
        let mut cached = pool.cached();
        let mut i = 0;
        group.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter(|| {
                let ctx = PickContext::new("svc").with_path(&paths[i % KEYS]);
                i += 1;
                let picked = match path {
                    Path::Shared => pool.pick_with(black_box(&ctx)),
                    Path::Cached => cached.pick_with(black_box(&ctx)),
                };
                drop(black_box(picked.unwrap()))
            });
        });
    }
    group.finish();
}

/// Two threads pick from one pool at once, 100 endpoints; reports the
/// slower thread's time divided by its own number of picks.
fn tower_lb_two_threads(c: &mut Criterion, rt: &Runtime, path: Path) {
    let n = 100;
    let pools = [
        (
            "round_robin",
            tower_lb_pool(rt, n, false, RoundRobin::new()),
        ),
        (
            "least_request_p2c",
            tower_lb_pool(rt, n, false, LeastRequest::new()),
        ),
        ("peak_ewma", tower_lb_pool(rt, n, false, PeakEwma::new())),
    ];
    let mut group = c.benchmark_group(format!("{}-2-threads", path.library()));
    for (name, pool) in &pools {
        group.bench_function(BenchmarkId::new(*name, n), |b| {
            b.iter_custom(|iters| {
                let barrier = Barrier::new(2);
                std::thread::scope(|s| {
                    let run = || {
                        barrier.wait();
                        picks(pool, path, iters)
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

// --- tower 0.5 p2c ---------------------------------------------------------

/// One balancer step: `poll_ready` (must be ready at once), `call`, and the
/// response future polled to completion, which ends the request for the
/// load metric. All with a no-op waker: no runtime.
#[inline]
fn tower_step<S>(balance: &mut S, req: u32)
where
    S: Service<u32>,
    S::Error: std::fmt::Debug,
{
    let mut cx = Context::from_waker(Waker::noop());
    match balance.poll_ready(&mut cx) {
        Poll::Ready(Ok(())) => {}
        _ => panic!("balancer not ready"),
    }
    let fut = balance.call(req);
    match poll_once(fut) {
        Poll::Ready(Ok(resp)) => drop(black_box(resp)),
        _ => panic!("response not ready"),
    }
}

fn tower_p2c(c: &mut Criterion) {
    use tower::load::{CompleteOnResponse, PeakEwma, PendingRequests};

    let inner = || tower::service_fn(|req: u32| std::future::ready(Ok::<u32, Infallible>(req)));

    tower_balance(c, "tower/p2c_pending_requests", || {
        PendingRequests::new(inner(), CompleteOnResponse::default())
    });
    tower_balance(c, "tower/p2c_peak_ewma", || {
        PeakEwma::new(
            inner(),
            Duration::from_millis(30),
            10e9, // decay, ns
            CompleteOnResponse::default(),
        )
    });
}

/// One group: tower's p2c over `n` services made by `make`, for each size.
fn tower_balance<S>(c: &mut Criterion, name: &str, make: impl Fn() -> S)
where
    S: Service<u32, Error = Infallible> + tower::load::Load,
    S::Metric: std::fmt::Debug + PartialOrd,
{
    use tower::balance::p2c::Balance;
    use tower::discover::ServiceList;

    let mut group = c.benchmark_group(name);
    for n in sizes() {
        let services: Vec<S> = (0..n).map(|_| make()).collect();
        let mut balance = Balance::new(ServiceList::new(services));
        // The first poll_ready takes every service from discovery.
        tower_step(&mut balance, 0);
        group.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter(|| tower_step(&mut balance, black_box(1)));
        });
    }
    group.finish();
}

// --- pingora-load-balancing ------------------------------------------------

fn pingora(c: &mut Criterion) {
    use pingora_load_balancing::LoadBalancer;
    use pingora_load_balancing::selection::consistent::KetamaHashing;
    use pingora_load_balancing::selection::{BackendIter, BackendSelection, Random, RoundRobin};

    /// As pingora's own examples do.
    const MAX_ITERATIONS: usize = 256;

    fn lb<S>(n: usize) -> LoadBalancer<S>
    where
        S: BackendSelection + 'static,
        S::Iter: BackendIter,
    {
        let lb = LoadBalancer::<S>::try_from_iter((0..n).map(addr)).unwrap();
        assert_eq!(lb.backends().get_backend().len(), n);
        lb
    }

    // pingora's weighted selection (round robin, random) asserts at most
    // 2^16 backends: it stops at 10,000 here.
    let weighted_sizes = sizes().into_iter().filter(|&n| n <= 1 << 16);

    let mut group = c.benchmark_group("pingora/round_robin");
    for n in weighted_sizes.clone() {
        let lb = lb::<RoundRobin>(n);
        group.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter(|| black_box(lb.select(black_box(b""), MAX_ITERATIONS).unwrap()));
        });
    }
    group.finish();

    let mut group = c.benchmark_group("pingora/random");
    for n in weighted_sizes {
        let lb = lb::<Random>(n);
        group.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter(|| black_box(lb.select(black_box(b""), MAX_ITERATIONS).unwrap()));
        });
    }
    group.finish();

    let keys = keys();
    let mut group = c.benchmark_group("pingora/ketama");
    for n in sizes() {
        let lb = lb::<KetamaHashing>(n);
        group.bench_function(BenchmarkId::from_parameter(n), |b| {
            let mut i = 0;
            b.iter(|| {
                let key = keys[i % KEYS].as_bytes();
                i += 1;
                black_box(lb.select(black_box(key), MAX_ITERATIONS).unwrap())
            });
        });
    }
    group.finish();
}

// --- reqwest-lb -------------------------------------------------------------

fn reqwest_lb(c: &mut Criterion) {
    use reqwest::Url;
    use reqwest_lb::{LoadBalancer, LoadBalancerPolicy, LoadBalancerTrait};

    for (name, policy) in [
        ("round_robin", LoadBalancerPolicy::<Url>::RoundRobin),
        ("random", LoadBalancerPolicy::<Url>::Random),
    ] {
        let mut group = c.benchmark_group(format!("reqwest-lb/{name}"));
        for n in sizes() {
            if n >= 100_000 {
                // Every choice clones the whole list: ~ms per pick here.
                group.sample_size(10);
            }
            let urls: Vec<Url> = (0..n)
                .map(|i| Url::parse(&format!("http://{}", addr(i))).unwrap())
                .collect();
            let lb = LoadBalancer::new(urls, policy.clone());
            // The middleware gets a fresh Extensions per request; reusing
            // one here spares reqwest-lb that allocation.
            let mut extensions = http::Extensions::new();
            group.bench_function(BenchmarkId::from_parameter(n), |b| {
                b.iter(|| match poll_once(lb.choose(&mut extensions)) {
                    Poll::Ready(Ok(Some(url))) => drop(black_box(url)),
                    _ => panic!("reqwest-lb chose nothing"),
                });
            });
        }
        group.finish();
    }
}

fn benches(c: &mut Criterion) {
    // Only to wait for each pool's first discovery answer: a current-thread
    // runtime runs nothing between block_on calls, so no background thread
    // competes with the measured picks (which need no runtime).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    tower_lb(c, &rt, Path::Shared);
    tower_lb(c, &rt, Path::Cached);
    tower_p2c(c);
    pingora(c);
    reqwest_lb(c);
    tower_lb_two_threads(c, &rt, Path::Shared);
    tower_lb_two_threads(c, &rt, Path::Cached);
}

criterion_group! {
    name = peers;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30);
    targets = benches
}

/// `PEERS_BENCH_COUNT=<row>:<picks>`: no criterion, only `picks` picks of
/// one row at 100 endpoints, for instruction counts (a single thread's work
/// does not depend on what else the machine runs):
///
/// ```sh
/// for row in tower-lb-cached/peak_ewma pingora/random; do
///   for picks in 20000 120000; do
///     PEERS_BENCH_COUNT=$row:$picks valgrind --tool=callgrind \
///       --callgrind-out-file=/tmp/cg.$picks target/release/deps/peers-*
///   done   # (Ir at 120,000 - Ir at 20,000) / 100,000 = Ir per pick
/// done
/// ```
///
/// Rows: `tower-lb[-cached]/{round_robin,random,least_request_p2c,
/// peak_ewma,maglev,maglev_path}`, `tower/p2c_pending_requests`,
/// `tower/p2c_peak_ewma`, `pingora/{random,round_robin,ketama}`.
fn count_mode(spec: &str) {
    let (row, picks) = spec
        .rsplit_once(':')
        .expect("PEERS_BENCH_COUNT=<row>:<picks>");
    let picks: usize = picks.parse().expect("a number of picks");
    let n = 100;
    let keys = keys();
    let headers: Vec<HeaderMap> = keys
        .iter()
        .map(|k| {
            let mut h = HeaderMap::new();
            h.insert(x_user(), HeaderValue::from_str(k).unwrap());
            h
        })
        .collect();
    let (library, algorithm) = row.split_once('/').expect("<library>/<algorithm>");
    match library {
        "tower-lb" | "tower-lb-cached" => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let balancer: Arc<dyn Balancer> = match algorithm {
                "round_robin" => Arc::new(RoundRobin::new()),
                "random" => Arc::new(Random::new()),
                "least_request_p2c" => Arc::new(LeastRequest::new()),
                "peak_ewma" => Arc::new(PeakEwma::new()),
                "maglev" => Arc::new(ConsistentHash::new(HashKey::header(x_user()))),
                "maglev_path" => Arc::new(ConsistentHash::new(HashKey::Path)),
                other => panic!("no row {other}"),
            };
            let pool = tower_lb_pool(&rt, n, false, balancer);
            let mut cached = pool.cached();
            let shared = library == "tower-lb";
            for i in 0..picks {
                let ctx = PickContext::new("svc");
                let ctx = match algorithm {
                    "maglev" => ctx.with_headers(&headers[i % KEYS]),
                    "maglev_path" => ctx.with_path(&keys[i % KEYS]),
                    _ => ctx,
                };
                let picked = if shared {
                    pool.pick_with(black_box(&ctx))
                } else {
                    cached.pick_with(black_box(&ctx))
                };
                drop(black_box(picked.unwrap()));
            }
        }
        "tower" => {
            use tower::balance::p2c::Balance;
            use tower::discover::ServiceList;
            use tower::load::{CompleteOnResponse, PeakEwma, PendingRequests};
            let inner =
                || tower::service_fn(|req: u32| std::future::ready(Ok::<u32, Infallible>(req)));
            match algorithm {
                "p2c_pending_requests" => {
                    let services: Vec<_> = (0..n)
                        .map(|_| PendingRequests::new(inner(), CompleteOnResponse::default()))
                        .collect();
                    let mut balance = Balance::new(ServiceList::new(services));
                    for _ in 0..=picks {
                        tower_step(&mut balance, black_box(1));
                    }
                }
                "p2c_peak_ewma" => {
                    let services: Vec<_> = (0..n)
                        .map(|_| {
                            PeakEwma::new(
                                inner(),
                                Duration::from_millis(30),
                                10e9,
                                CompleteOnResponse::default(),
                            )
                        })
                        .collect();
                    let mut balance = Balance::new(ServiceList::new(services));
                    for _ in 0..=picks {
                        tower_step(&mut balance, black_box(1));
                    }
                }
                other => panic!("no row {other}"),
            }
        }
        "pingora" => {
            use pingora_load_balancing::LoadBalancer;
            use pingora_load_balancing::selection::consistent::KetamaHashing;
            use pingora_load_balancing::selection::{Random, RoundRobin};
            match algorithm {
                "random" => {
                    let lb = LoadBalancer::<Random>::try_from_iter((0..n).map(addr)).unwrap();
                    for _ in 0..picks {
                        black_box(lb.select(black_box(b""), 256).unwrap());
                    }
                }
                "round_robin" => {
                    let lb = LoadBalancer::<RoundRobin>::try_from_iter((0..n).map(addr)).unwrap();
                    for _ in 0..picks {
                        black_box(lb.select(black_box(b""), 256).unwrap());
                    }
                }
                "ketama" => {
                    let lb =
                        LoadBalancer::<KetamaHashing>::try_from_iter((0..n).map(addr)).unwrap();
                    for i in 0..picks {
                        black_box(
                            lb.select(black_box(keys[i % KEYS].as_bytes()), 256)
                                .unwrap(),
                        );
                    }
                }
                other => panic!("no row {other}"),
            }
        }
        other => panic!("no library {other}"),
    }
}

fn main() {
    if let Ok(spec) = std::env::var("PEERS_BENCH_COUNT") {
        count_mode(&spec);
        return;
    }
    peers();
    Criterion::default().configure_from_args().final_summary();
}
