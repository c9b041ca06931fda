//! Latency-aware balancing under open-loop load, on tokio's paused clock,
//! with simulated backends behind the real `LoadBalance` layer: Linkerd's
//! "Beyond Round Robin" (2016) slow-backend scenario for Peak-EWMA, and
//! seeded runs that repeat exactly.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http_body_util::BodyExt;
use tokio::time::{Instant, MissedTickBehavior};
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_lb::balance::{Balancer, LeastRequest, PeakEwma, RoundRobin};
use tower_lb::discover::Fixed;
use tower_lb::retry::RetryLayer;
use tower_lb::stats::EndpointStats;
use tower_lb::{Error, LoadBalanceLayer, Pool, TrackedBody};

use support::simulated::{Answer, Backends};

/// What the callers of one open-loop run saw.
struct Run {
    sent: u64,
    answered: u64,
    /// Answered with a 2xx.
    succeeded: u64,
    hits: Vec<u64>,
    stats: Vec<EndpointStats>,
    real_time: std::time::Duration,
}

impl Run {
    fn success_rate(&self) -> f64 {
        self.succeeded as f64 / self.sent as f64
    }

    fn share(&self, i: usize) -> f64 {
        self.hits[i] as f64 / self.hits.iter().sum::<u64>() as f64
    }
}

fn get() -> http::Request<String> {
    http::Request::get("http://greet/api/greet")
        .body(String::new())
        .unwrap()
}

/// Sends `n` requests, one every `every`, each from its own task (open
/// loop: arrivals never wait for answers), each bounded by `caller_timeout`
/// including reading its body; returns what came back, once every call has
/// ended.
async fn open_loop<S>(
    client: S,
    pool: &Pool,
    backends: &Backends,
    n: u64,
    every: Duration,
    caller_timeout: Duration,
) -> Run
where
    S: Service<
            http::Request<String>,
            Response = http::Response<TrackedBody<String>>,
            Error = Error,
        > + Clone
        + Send
        + 'static,
    S::Future: Send,
{
    let real = std::time::Instant::now();
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let mut calls = Vec::with_capacity(n as usize);
    for _ in 0..n {
        ticks.tick().await;
        let client = client.clone();
        calls.push(tokio::spawn(async move {
            tokio::time::timeout(caller_timeout, async move {
                let Ok(response) = client.oneshot(get()).await else {
                    return false;
                };
                let ok = response.status().is_success();
                // Reading the body to its end ends the attempt.
                response.into_body().collect().await.is_ok() && ok
            })
            .await
        }));
    }
    let (mut answered, mut succeeded) = (0, 0);
    for call in calls {
        // `Err`: the caller's timeout.
        if let Ok(ok) = call.await.expect("the call's task finished") {
            answered += 1;
            succeeded += u64::from(ok);
        }
    }
    Run {
        sent: n,
        answered,
        succeeded,
        hits: backends.all_hits(),
        stats: pool.stats().endpoints,
        real_time: real.elapsed(),
    }
}

/// The stats of `url`.
fn stats_of<'a>(stats: &'a [EndpointStats], url: &str) -> &'a EndpointStats {
    stats
        .iter()
        .find(|e| e.endpoint == url)
        .unwrap_or_else(|| panic!("{url} in the pool's stats"))
}

/// Linkerd's "Beyond Round Robin" setup, scaled to a paused clock.
const BACKENDS: usize = 12;
const FAST: Duration = Duration::from_millis(167);
const SLOW: Duration = Duration::from_secs(2);
const RUN: Duration = Duration::from_secs(60);
const SLOW_FROM: Duration = Duration::from_secs(10);
const SLOW_UNTIL: Duration = Duration::from_secs(40);
/// One request a millisecond: 1,000 a second.
const EVERY: Duration = Duration::from_millis(1);
const CALLER_TIMEOUT: Duration = Duration::from_secs(1);
/// The backend that slows down.
const SLOW_ONE: usize = 7;

/// Runs the slow-backend scenario with `balancer` (defaults otherwise:
/// outlier detection, cancel timeout, the layer's timeout; no retries).
/// Returns the run and how many requests the slow backend got while slow.
async fn linkerd_2016(balancer: impl Balancer) -> (Run, u64) {
    let while_slow = Arc::new(AtomicU64::new(0));
    let counted = while_slow.clone();
    let backends = Backends::new(BACKENDS, 5000, move |i, _, at| {
        let slow = i == SLOW_ONE && at >= SLOW_FROM && at < SLOW_UNTIL;
        if slow {
            counted.fetch_add(1, Ordering::SeqCst);
        }
        Answer::ok_after(if slow { SLOW } else { FAST })
    });
    let layer = LoadBalanceLayer::builder()
        .service("greet", Fixed::new(backends.urls().to_vec()).unwrap())
        .balancer(balancer)
        .configure_pools(|pool| pool.seed(1))
        .build()
        .unwrap();
    let pool = layer.pool("greet").unwrap().clone();
    pool.ready().await.unwrap();
    let client = ServiceBuilder::new()
        .layer(layer)
        .service(backends.service::<String>());
    let n = (RUN.as_millis() / EVERY.as_millis()) as u64;
    let run = open_loop(client, &pool, &backends, n, EVERY, CALLER_TIMEOUT).await;
    (run, while_slow.load(Ordering::SeqCst))
}

fn report(name: &str, (run, while_slow): &(Run, u64), slow_url: &str) {
    let window = (SLOW_UNTIL - SLOW_FROM).as_millis() as f64 / EVERY.as_millis() as f64;
    eprintln!(
        "{name}: {} of {} answered within {CALLER_TIMEOUT:?}, {} succeeded: {:.3}%; \
         slow backend's share {:.3}% ({} requests, fair share {:.3}%); {:?} real time",
        run.answered,
        run.sent,
        run.succeeded,
        run.success_rate() * 100.0,
        run.share(SLOW_ONE) * 100.0,
        run.hits[SLOW_ONE],
        100.0 / BACKENDS as f64,
        run.real_time,
    );
    eprintln!(
        "{name}: the slow backend got {while_slow} requests while slow, {:.3}% of the \
         {window} sent from {SLOW_FROM:?} to {SLOW_UNTIL:?}",
        *while_slow as f64 / window * 100.0
    );
    eprintln!("{name}: hits per backend {:?}", run.hits);
    eprintln!(
        "{name}: slow backend's stats {:?}",
        stats_of(&run.stats, slow_url)
    );
}

#[tokio::test(start_paused = true)]
async fn peak_ewma_survives_linkerds_2016_slow_backend() {
    let start = Instant::now();
    let outcome = linkerd_2016(PeakEwma::new()).await;
    let slow_url = format!("http://127.0.0.1:{}", 5000 + SLOW_ONE);
    report("peak_ewma", &outcome, &slow_url);
    let (run, while_slow) = &outcome;
    // The whole run took its simulated minute plus the last answers.
    assert!(start.elapsed() >= RUN, "{:?}", start.elapsed());
    assert_eq!(run.hits.iter().sum::<u64>(), run.sent, "one attempt each");
    // The slow spell began: the slow backend met it.
    assert!(*while_slow > 0);
    if run.success_rate() < 0.999 {
        // For the report: round robin in the same scenario.
        let rr = linkerd_2016(RoundRobin::new()).await;
        report("round_robin", &rr, &slow_url);
    }
    assert!(
        run.success_rate() >= 0.999,
        "Peak-EWMA: {:.3}% success, the slow backend took {:.3}% of requests",
        run.success_rate() * 100.0,
        run.share(SLOW_ONE) * 100.0
    );
}

/// Five backends of different speeds; backend 2 answers 503 to every other
/// request it gets. 2,000 requests at 500 a second, retried with jittered
/// backoff; the pool picks with `balancer` (two random choices, by load or
/// by Peak-EWMA).
async fn seeded_run(
    seed: u64,
    balancer: impl Balancer,
) -> (Vec<u64>, Vec<(String, u64, u64)>, u64) {
    const LATENCY_MS: [u64; 5] = [5, 10, 20, 40, 80];
    let backends = Backends::new(5, 5000, |i, n, _| {
        let after = Duration::from_millis(LATENCY_MS[i]);
        match (i, n % 2) {
            (2, 1) => Answer::status_after(503, after),
            _ => Answer::ok_after(after),
        }
    });
    let pool = Pool::builder("greet", Fixed::new(backends.urls().to_vec()).unwrap())
        .balancer(balancer)
        .seed(seed)
        .build();
    let layer = LoadBalanceLayer::builder().pool(pool).build().unwrap();
    let pool = layer.pool("greet").unwrap().clone();
    pool.ready().await.unwrap();
    let client = ServiceBuilder::new()
        .layer(RetryLayer::builder().seed(seed).build().unwrap())
        .layer(layer)
        .service(backends.service());
    let run = open_loop(
        client,
        &pool,
        &backends,
        2_000,
        Duration::from_millis(2),
        Duration::from_secs(30),
    )
    .await;
    // Every call ended in a 200: each 503 was retried elsewhere.
    assert_eq!(run.succeeded, run.sent);
    let retries = run.hits.iter().sum::<u64>() - run.sent;
    let mut stats: Vec<_> = run
        .stats
        .iter()
        .map(|e| (e.endpoint.clone(), e.requests, e.failures))
        .collect();
    stats.sort();
    // The pool counted every attempt the backends saw, and each 503.
    for (i, (url, requests, failures)) in stats.iter().enumerate() {
        assert_eq!(url, &backends.urls()[i]);
        assert_eq!(*requests, run.hits[i], "{url}");
        assert_eq!(*failures, if i == 2 { run.hits[i] / 2 } else { 0 }, "{url}");
    }
    (run.hits, stats, retries)
}

#[tokio::test(start_paused = true)]
async fn seeded_runs_repeat_exactly() {
    seeded_runs_repeat_with(LeastRequest::new).await;
}

/// Peak-EWMA reads the clock on its picks: a seeded pool reads it exactly,
/// so the count of picks made before on the thread changes nothing.
#[tokio::test(start_paused = true)]
async fn seeded_peak_ewma_runs_repeat_exactly() {
    seeded_runs_repeat_with(PeakEwma::new).await;
}

async fn seeded_runs_repeat_with<B: Balancer>(balancer: impl Fn() -> B) {
    let real = std::time::Instant::now();
    let first = seeded_run(42, balancer()).await;
    let second = seeded_run(42, balancer()).await;
    let other = seeded_run(7, balancer()).await;
    eprintln!("seed 42: hits {:?}, {} retries", first.0, first.2);
    eprintln!("seed 42 again: hits {:?}, {} retries", second.0, second.2);
    eprintln!("seed 7: hits {:?}, {} retries", other.0, other.2);
    eprintln!(
        "seed 42 stats (endpoint, requests, failures): {:?}",
        first.1
    );
    eprintln!("three runs in {:?} real time", real.elapsed());
    // The scenario has something to repeat: retries happened, and every
    // backend took part.
    assert!(first.2 > 0, "some 503s were retried");
    assert!(first.0.iter().all(|&h| h > 0), "{:?}", first.0);
    assert_eq!(first.0, second.0, "hits per backend");
    assert_eq!(first.1, second.1, "pool stats per endpoint");
    assert_eq!(first.2, second.2, "retries");
    assert_ne!(first.0, other.0, "another seed picks otherwise");
}
