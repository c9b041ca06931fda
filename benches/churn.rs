//! Membership churn: what endpoint changes cost the pool, at 10 to 100,000
//! endpoints, for round robin, random, least request (P2C), Peak-EWMA and
//! Maglev; what a registry changing 10 times a second costs in CPU; how a
//! burst of updates is absorbed; and the memory per endpoint.
//!
//! - **One change at a time.** A pool fed by a `discover::Push` source is
//!   filled with `n` endpoints; then, `k` times, one endpoint is inserted
//!   and the clock stops when the pool holds it, then it is removed and the
//!   clock stops when it is gone. The mean of each is the cost of one
//!   change (the driver's work: roster, health book, snapshot, picker),
//!   with the task hand-offs around it. The bench polls `Pool::len` after
//!   yielding, on the same current-thread runtime as the pool's driver.
//! - **Burst.** `k` single inserts pushed back to back, then the time until
//!   the pool holds them all, over `k`: the driver drains what is queued
//!   before it publishes, so a burst costs one or a few publications.
//! - **Sustained.** 10,000 endpoints, one change every 100 ms (a remove and
//!   an insert in turn) for `CHURN_SUSTAINED_SECS` (default 10) seconds per
//!   balancer: the CPU time of the thread that runs the runtime (pool
//!   driver and bench alike; from `/proc/thread-self/schedstat`, in ns)
//!   over the wall time, in percent of one core.
//! - **Storm.** 100,000 single inserts pushed as fast as a thread can into
//!   a pool of 10,000 while a task on the pool's runtime ticks: the longest
//!   gap between two of its ticks says how long the driver held the thread
//!   (requests on that runtime share it).
//! - **Memory.** The resident memory the round-robin pool of `n` added per
//!   endpoint (RSS before the pool and after it holds its `n` endpoints,
//!   from `/proc/self/statm`; meaningful at large `n`, and alone in the
//!   process: run it with `CHURN_BENCH_SIZES=100000`).
//!
//! Run with `cargo bench --bench churn`; `CHURN_BENCH_SIZES=10,1000` picks
//! the sizes, `CHURN_PARTS=single,burst,sustained,storm` the parts (all by
//! default), `CHURN_BALANCERS=all` (or a list of names) adds the weighted
//! balancers, the hash ring and bounded-load Maglev to the five of the
//! default run.
//!
//! What the member set's layout costs a pick, where wall time is too noisy
//! to tell: `CHURN_PICK_COUNT=<balancer>:<n>:<picks>` fills a pool of `n`
//! and makes `picks` picks through a `CachedPool`, nothing else; run it
//! under `valgrind --tool=callgrind` at two pick counts, and the difference
//! in instructions over the difference in picks is the cost of one pick.

use std::time::{Duration, Instant};

use tower_lb::Pool;
use tower_lb::balance::{
    Balancer, BoundedLoad, ConsistentHash, HashKey, HashTable, LeastRequest, PeakEwma, PickContext,
    Random, RoundRobin, WeightedLeastRequest, WeightedRandom, WeightedRoundRobin,
};
use tower_lb::discover::{Push, PushHandle};

fn endpoint(i: usize) -> String {
    format!(
        "10.{}.{}.{}:80",
        (i >> 16) & 0xff,
        (i >> 8) & 0xff,
        i & 0xff
    )
}

/// Makes a fresh balancer of one kind.
type Make = Box<dyn Fn() -> Box<dyn Balancer>>;

/// Every balancer the bench knows, by name: the five of the default run,
/// then the weighted ones and the other hash tables.
fn all_balancers() -> Vec<(&'static str, Make)> {
    vec![
        ("round_robin", Box::new(|| Box::new(RoundRobin::new()))),
        ("random", Box::new(|| Box::new(Random::new()))),
        ("least_request", Box::new(|| Box::new(LeastRequest::new()))),
        ("peak_ewma", Box::new(|| Box::new(PeakEwma::new()))),
        (
            "maglev",
            Box::new(|| Box::new(ConsistentHash::new(HashKey::Path))),
        ),
        (
            "weighted_rr",
            Box::new(|| Box::new(WeightedRoundRobin::new())),
        ),
        (
            "weighted_random",
            Box::new(|| Box::new(WeightedRandom::new())),
        ),
        (
            "weighted_lr",
            Box::new(|| Box::new(WeightedLeastRequest::new())),
        ),
        (
            "ring_hash",
            Box::new(|| {
                Box::new(ConsistentHash::new(HashKey::Path).table(HashTable::Ring {
                    points_per_weight: 160,
                }))
            }),
        ),
        (
            "maglev_bounded",
            Box::new(|| {
                Box::new(ConsistentHash::new(HashKey::Path).bounded_load(BoundedLoad::new(1.25)))
            }),
        ),
    ]
}

/// The balancers of this run: `CHURN_BALANCERS` (`all`, or names from
/// [`all_balancers`], comma-separated), the first five by default. The
/// memory column of the single-change table is the first one's.
fn balancers() -> Vec<(&'static str, Make)> {
    let all = all_balancers();
    match std::env::var("CHURN_BALANCERS") {
        Ok(list) if list == "all" => all,
        Ok(list) => {
            let names: Vec<&str> = list.split(',').map(str::trim).collect();
            let known: Vec<&str> = all.iter().map(|(name, _)| *name).collect();
            if let Some(unknown) = names.iter().find(|n| !known.contains(n)) {
                panic!("CHURN_BALANCERS: no balancer `{unknown}`; one of {known:?} or `all`");
            }
            all.into_iter()
                .filter(|(name, _)| names.contains(name))
                .collect()
        }
        Err(_) => all.into_iter().take(5).collect(),
    }
}

/// The pool's endpoint count, without copying its endpoints.
fn len(pool: &Pool) -> usize {
    pool.len()
}

/// Yields until the pool holds `n` endpoints.
async fn wait_for(pool: &Pool, n: usize) {
    while len(pool) != n {
        tokio::task::yield_now().await;
    }
}

/// Resident set size in bytes (Linux), 0 where unknown.
fn rss() -> usize {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<usize>().ok())
        .map_or(0, |pages| pages * 4096)
}

/// CPU time this thread has used (Linux), in ns; 0 where unknown.
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// A pool of `n` endpoints, ready, and its push handle.
async fn filled(balancer: Box<dyn Balancer>, n: usize) -> (Pool, PushHandle) {
    let (source, handle) = Push::new();
    let pool = Pool::builder("churn", source)
        .balancer(std::sync::Arc::<dyn Balancer>::from(balancer))
        .build();
    handle.replace((0..n).map(endpoint)).unwrap();
    pool.ready().await.unwrap();
    wait_for(&pool, n).await;
    (pool, handle)
}

/// Mean time of one insert and of one remove into a pool of `n`, one
/// change at a time; and the bytes of RSS the pool added per endpoint.
async fn one_change(balancer: Box<dyn Balancer>, n: usize) -> (Duration, Duration, f64) {
    let before = rss();
    let (pool, handle) = filled(balancer, n).await;
    let per_endpoint = rss().saturating_sub(before) as f64 / n as f64;
    let k = (100_000 / n).clamp(10, 200);
    let (mut inserts, mut removes) = (Duration::ZERO, Duration::ZERO);
    for i in n..n + k {
        let started = Instant::now();
        handle.add(endpoint(i)).unwrap();
        wait_for(&pool, n + 1).await;
        inserts += started.elapsed();
        let started = Instant::now();
        handle.remove(endpoint(i)).unwrap();
        wait_for(&pool, n).await;
        removes += started.elapsed();
    }
    (inserts / k as u32, removes / k as u32, per_endpoint)
}

/// Mean time per insert of `k` pushed back to back.
async fn burst(balancer: Box<dyn Balancer>, n: usize) -> Duration {
    let (pool, handle) = filled(balancer, n).await;
    let k = (100_000 / n).clamp(10, 1_000);
    let started = Instant::now();
    for i in n..n + k {
        handle.add(endpoint(i)).unwrap();
    }
    wait_for(&pool, n + k).await;
    started.elapsed() / k as u32
}

/// Percent of one core used while 10,000 endpoints change 10 times a
/// second for `secs` seconds.
async fn sustained(balancer: Box<dyn Balancer>, secs: u64) -> f64 {
    let n = 10_000;
    let (pool, handle) = filled(balancer, n).await;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    tick.tick().await;
    let (cpu, wall) = (thread_cpu_ns(), Instant::now());
    let changes = secs * 10;
    for change in 0..changes as usize {
        tick.tick().await;
        // Remove the oldest endpoint, then add a new one, in turn.
        let i = change / 2;
        if change % 2 == 0 {
            handle.remove(endpoint(i)).unwrap();
        } else {
            handle.add(endpoint(n + i)).unwrap();
        }
    }
    // The last change applied, so its cost is in the figure.
    let expected = if changes % 2 == 1 { n - 1 } else { n };
    wait_for(&pool, expected).await;
    let cpu = thread_cpu_ns().saturating_sub(cpu) as f64;
    cpu / wall.elapsed().as_nanos() as f64 * 100.0
}

/// 100,000 inserts pushed at once into a pool of 10,000: how long until
/// the pool holds them, and the longest the runtime's thread went without
/// running another task meanwhile.
async fn storm(balancer: Box<dyn Balancer>) -> (Duration, Duration) {
    let n = 10_000;
    let k = 100_000;
    let (pool, handle) = filled(balancer, n).await;
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let ticker = tokio::spawn({
        let done = done.clone();
        async move {
            let mut longest = Duration::ZERO;
            let mut last = Instant::now();
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                tokio::task::yield_now().await;
                longest = longest.max(last.elapsed());
                last = Instant::now();
            }
            longest
        }
    });
    tokio::task::yield_now().await;
    let started = Instant::now();
    // The registry's side runs on a thread of its own, as it would.
    let producer = std::thread::spawn(move || {
        for i in n..n + k {
            handle.add(endpoint(i)).unwrap();
        }
        handle
    });
    wait_for(&pool, n + k).await;
    let took = started.elapsed();
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    drop(producer.join().unwrap());
    (took, ticker.await.unwrap())
}

/// `picks` picks from a pool of `n` (see the module docs).
async fn count_picks(balancer: Box<dyn Balancer>, n: usize, picks: usize) {
    let (pool, _handle) = filled(balancer, n).await;
    let paths: Vec<String> = (0..1024).map(|i| format!("/user/{i}")).collect();
    let mut cached = pool.cached();
    for i in 0..picks {
        let ctx = PickContext::new("churn").with_path(&paths[i & 1023]);
        drop(std::hint::black_box(cached.pick_with(&ctx).unwrap()));
    }
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    if let Ok(spec) = std::env::var("CHURN_PICK_COUNT") {
        let mut spec = spec.split(':');
        let name = spec.next().unwrap_or_default().to_string();
        let mut number =
            || -> usize { spec.next().and_then(|s| s.parse().ok()).expect("a number") };
        let (n, picks) = (number(), number());
        let make = all_balancers()
            .into_iter()
            .find(|(b, _)| *b == name)
            .expect("a balancer name")
            .1;
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(count_picks(make(), n, picks));
        return;
    }
    let sizes: Vec<usize> = std::env::var("CHURN_BENCH_SIZES")
        .unwrap_or_else(|_| "10,1000,10000,100000".into())
        .split(',')
        .map(|s| s.trim().parse().expect("a size"))
        .collect();
    let parts =
        std::env::var("CHURN_PARTS").unwrap_or_else(|_| "single,burst,sustained,storm".into());
    let secs: u64 = std::env::var("CHURN_SUSTAINED_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let names: Vec<&str> = balancers().iter().map(|(name, _)| *name).collect();
    let header = |title: &str| {
        println!("\n{title}");
        print!("{:>8}", "n");
        for name in &names {
            print!(" {name:>15}");
        }
    };
    if parts.contains("single") {
        header("µs per single change, one at a time (insert / remove)");
        println!(" {:>16}", "RSS B/endpoint");
        for &n in &sizes {
            rt.block_on(async {
                print!("{n:>8}");
                let mut bytes = 0.0;
                for (i, (_, make)) in balancers().iter().enumerate() {
                    let (insert, remove, rss) = one_change(make(), n).await;
                    if i == 0 {
                        bytes = rss;
                    }
                    let cell = format!(
                        "{:.1} / {:.1}",
                        insert.as_secs_f64() * 1e6,
                        remove.as_secs_f64() * 1e6
                    );
                    print!(" {cell:>15}");
                }
                println!(" {bytes:>16.0}");
            });
        }
    }
    if parts.contains("burst") {
        header("µs per insert, pushed back to back");
        println!();
        for &n in &sizes {
            rt.block_on(async {
                print!("{n:>8}");
                for (_, make) in balancers() {
                    let per = burst(make(), n).await;
                    print!(" {:>15.1}", per.as_secs_f64() * 1e6);
                }
                println!();
            });
        }
    }
    if parts.contains("sustained") {
        println!("\n10,000 endpoints changing 10 times a second for {secs} s: % of one core");
        for (name, make) in balancers() {
            let percent = rt.block_on(sustained(make(), secs));
            println!("{name:>15} {percent:>8.2}");
        }
    }
    if parts.contains("storm") {
        println!(
            "\n100,000 inserts at once into 10,000: time to apply, longest stall of the runtime"
        );
        for (name, make) in balancers() {
            let (took, stall) = rt.block_on(storm(make()));
            println!(
                "{name:>15} {:>10.1} ms {:>10.2} ms",
                took.as_secs_f64() * 1e3,
                stall.as_secs_f64() * 1e3
            );
        }
    }
}
