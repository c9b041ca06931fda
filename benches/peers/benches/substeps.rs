//! Where a tower-lb pick's time goes, at 100 endpoints: the primitives a
//! pick is made of, each balancer's `Picker::pick` alone (no pool), and the
//! pool's own cost around a picker that does nothing (`First`).
//!
//! Run with `cargo bench --bench substeps`.

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderName, HeaderValue};
use tower_lb::balance::{
    Balancer, ConsistentHash, HashKey, LeastRequest, Members, PeakEwma, PickContext, Picker,
    Random, RoundRobin, WeightedRoundRobin, hash_bytes,
};
use tower_lb::discover::Fixed;
use tower_lb::{Endpoint, Pool};

const N: usize = 100;

/// Always the first endpoint: a pick through the pool with this balancer
/// costs the pool's machinery and nothing else.
#[derive(Debug)]
struct First;

impl Balancer for First {
    fn name(&self) -> &'static str {
        "first"
    }
    fn picker(&self, _members: &Members) -> Box<dyn Picker> {
        Box::new(First)
    }
}

impl Picker for First {
    fn pick(&self, members: &Members, _ctx: &PickContext<'_>) -> Option<usize> {
        (!members.is_empty()).then_some(0)
    }
}

fn pool(rt: &tokio::runtime::Runtime, weighted: bool, balancer: impl Balancer) -> Pool {
    pool_of(rt, N, weighted, balancer)
}

fn pool_of(
    rt: &tokio::runtime::Runtime,
    n: usize,
    weighted: bool,
    balancer: impl Balancer,
) -> Pool {
    let endpoints: Vec<Endpoint> = (0..n)
        .map(|i| {
            let (a, b, c) = ((i >> 16) & 0xff, (i >> 8) & 0xff, i & 0xff);
            let ep = Endpoint::new(&format!("http://10.{a}.{b}.{c}:8080")).unwrap();
            if weighted {
                ep.with_weight(1 + (i % 4) as u32).unwrap()
            } else {
                ep
            }
        })
        .collect();
    rt.block_on(async {
        let pool = Pool::builder("svc", Fixed::new(endpoints).unwrap())
            .balancer(balancer)
            .build();
        pool.ready().await.unwrap();
        pool
    })
}

fn x_user() -> HeaderName {
    HeaderName::from_static("x-user")
}

fn primitives(c: &mut Criterion) {
    let mut g = c.benchmark_group("primitive");
    g.bench_function("std_instant_now", |b| {
        b.iter(|| black_box(std::time::Instant::now()))
    });
    g.bench_function("tokio_instant_now", |b| {
        b.iter(|| black_box(tokio::time::Instant::now()))
    });
    let counter = AtomicUsize::new(0);
    g.bench_function("atomic_fetch_add", |b| {
        b.iter(|| black_box(&counter).fetch_add(1, Ordering::Relaxed))
    });
    let arc = Arc::new(5u64);
    g.bench_function("arc_clone_drop", |b| {
        b.iter(|| drop(black_box(Arc::clone(black_box(&arc)))))
    });
    let swap = arc_swap::ArcSwap::from_pointee(5u64);
    g.bench_function("arc_swap_load", |b| {
        b.iter(|| **black_box(&swap).load() + 1)
    });
    let mut headers = HeaderMap::new();
    headers.insert(x_user(), HeaderValue::from_static("user-1234"));
    let name = x_user();
    g.bench_function("header_map_get", |b| {
        b.iter(|| black_box(black_box(&headers).get(&name)).is_some())
    });
    g.bench_function("hash_bytes_9", |b| {
        b.iter(|| hash_bytes(black_box(b"user-1234")))
    });
    g.finish();
}

fn tower_lb_parts(c: &mut Criterion, rt: &tokio::runtime::Runtime) {
    let mut g = c.benchmark_group("tower-lb-100");

    // The pool around a picker that does nothing.
    let first = pool(rt, false, First);
    g.bench_function("pool_pick_first", |b| {
        b.iter(|| drop(black_box(first.pick().unwrap())))
    });
    let mut cached = first.cached();
    g.bench_function("cached_pick_first", |b| {
        b.iter(|| drop(black_box(cached.pick().unwrap())))
    });

    let keyed: Vec<HeaderMap> = (0..4096)
        .map(|i| {
            let mut h = HeaderMap::new();
            h.insert(
                x_user(),
                HeaderValue::from_str(&format!("user-{i}")).unwrap(),
            );
            h
        })
        .collect();
    let cases: Vec<(&str, Arc<dyn Balancer>, bool)> = vec![
        ("round_robin", Arc::new(RoundRobin::new()), false),
        ("random", Arc::new(Random::new()), false),
        ("least_request_p2c", Arc::new(LeastRequest::new()), false),
        ("peak_ewma", Arc::new(PeakEwma::new()), false),
        (
            "weighted_round_robin",
            Arc::new(WeightedRoundRobin::new()),
            true,
        ),
        (
            "maglev",
            Arc::new(ConsistentHash::new(HashKey::header(x_user()))),
            false,
        ),
    ];
    for (name, balancer, weighted) in cases {
        let members: Members = pool(rt, weighted, balancer.clone()).members().into();
        let picker = balancer.picker(&members);
        // The picker alone.
        g.bench_function(format!("picker_only/{name}"), |b| {
            let mut i = 0;
            b.iter(|| {
                let ctx = PickContext::new("svc").with_headers(&keyed[i % 4096]);
                i += 1;
                black_box(picker.pick(&members, black_box(&ctx)))
            })
        });
    }
    g.finish();

    // At 100,000 endpoints: the same picks, whole and picker alone, to
    // show how much of the growth is memory (endpoints' state no longer in
    // cache) rather than the algorithm.
    let mut g = c.benchmark_group("tower-lb-100000");
    let cases: Vec<(&str, Arc<dyn Balancer>)> = vec![
        ("first", Arc::new(First)),
        ("round_robin", Arc::new(RoundRobin::new())),
        ("random", Arc::new(Random::new())),
        ("least_request_p2c", Arc::new(LeastRequest::new())),
    ];
    for (name, balancer) in cases {
        let pool = pool_of(rt, 100_000, false, balancer.clone());
        g.bench_function(format!("pool_pick/{name}"), |b| {
            b.iter(|| drop(black_box(pool.pick().unwrap())))
        });
        let mut cached = pool.cached();
        g.bench_function(format!("cached_pick/{name}"), |b| {
            b.iter(|| drop(black_box(cached.pick().unwrap())))
        });
        let members: Members = pool.members().into();
        let picker = balancer.picker(&members);
        g.bench_function(format!("picker_only/{name}"), |b| {
            b.iter(|| black_box(picker.pick(&members, black_box(&PickContext::new("svc")))))
        });
    }
    g.finish();
}

/// reqwest-lb's policy alone, on a prebuilt slice (what `LoadBalancer::
/// choose` calls after cloning its whole URL list): O(n) too, as it sums
/// the weights and walks to the index on every choice.
fn reqwest_lb_policy(c: &mut Criterion) {
    use reqwest::Url;
    use reqwest_lb::{LoadBalancerPolicy, LoadBalancerPolicyTrait, Statistic, Weighted};

    let mut g = c.benchmark_group("reqwest-lb-policy-only");
    for n in [3, 100] {
        let urls: Vec<Weighted<Url>> = (0..n)
            .map(|i| Weighted::new(Url::parse(&format!("http://10.0.0.{i}:8080")).unwrap(), 1))
            .collect();
        let policy = LoadBalancerPolicy::<Url>::RoundRobin;
        let mut extensions = http::Extensions::new();
        let mut count = 0u64;
        g.bench_function(format!("round_robin/{n}"), |b| {
            b.iter(|| {
                count += 1;
                extensions.insert(Statistic { count });
                black_box(policy.choose(black_box(&urls), &mut extensions))
            })
        });
        g.bench_function(format!("clone_urls/{n}"), |b| {
            b.iter(|| drop(black_box(black_box(&urls).clone())))
        });
    }
    g.finish();
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    primitives(c);
    tower_lb_parts(c, &rt);
    reqwest_lb_policy(c);
}

criterion_group! {
    name = substeps;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30);
    targets = benches
}
criterion_main!(substeps);
