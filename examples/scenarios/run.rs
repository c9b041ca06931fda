//! One run: one contender (a balancer stack) against one scenario's
//! backends and arrivals, and what its callers saw.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::BodyExt;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;
use tower::balance::p2c::Balance;
use tower::buffer::Buffer;
use tower::discover::ServiceList;
use tower::load::{CompleteOnResponse, PeakEwmaDiscover, PendingRequestsDiscover};
use tower::{Layer, ServiceExt};
use tower_lb::balance::{Balancer, LeastRequest, PeakEwma, RoundRobin};
use tower_lb::discover::Fixed;
use tower_lb::health::{HealthCheck, HealthState};
use tower_lb::retry::{Hedge, RetryLayer};
use tower_lb::{LoadBalanceLayer, Pool};

use super::backends::{Backends, BoxFuture};

/// The seed of every run: balancers' choices, retries' jitter, backends'
/// latencies, arrivals.
pub const SEED: u64 = 13;

/// How requests arrive.
#[derive(Debug, Clone, Copy)]
pub enum Arrivals {
    /// Open loop: a Poisson process at `rate` a second for `duration`;
    /// arrivals never wait for answers.
    Open { rate: f64, duration: Duration },
    /// Closed loop: `concurrency` callers, each sending its next request
    /// when the last one ends, `total` requests in all.
    Closed { concurrency: usize, total: usize },
}

/// tower-lb's balancer of a contender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    RoundRobin,
    LeastRequest,
    PeakEwma,
}

/// What sits above the load-balancing layer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Retries {
    None,
    /// `RetryLayer` with its defaults (seeded).
    Defaults,
    /// The defaults plus `Hedge::percentile(p)`.
    Hedge(f64),
}

/// A balancer stack under test.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Contender {
    /// tower-lb with the pool's defaults (outlier detection on).
    Lb {
        algorithm: Algorithm,
        retries: Retries,
        /// Active health checks on this interval (healthy threshold 1).
        checks: Option<Duration>,
    },
    /// tower 0.5's `p2c::Balance` over `PeakEwmaDiscover` (default round
    /// trip 30 ms, decay 10 s: the same as tower-lb's Peak-EWMA).
    TowerPeakEwma,
    /// tower 0.5's `p2c::Balance` over `PendingRequestsDiscover`.
    TowerPending,
}

impl Contender {
    /// tower-lb with `algorithm` and `retries`, no active checks.
    pub const fn lb(algorithm: Algorithm, retries: Retries) -> Self {
        Self::Lb {
            algorithm,
            retries,
            checks: None,
        }
    }

    pub fn name(&self) -> String {
        match self {
            Self::Lb {
                algorithm,
                retries,
                checks,
            } => {
                let mut name = match algorithm {
                    Algorithm::RoundRobin => "tower-lb RoundRobin",
                    Algorithm::LeastRequest => "tower-lb LeastRequest",
                    Algorithm::PeakEwma => "tower-lb PeakEwma",
                }
                .to_string();
                match retries {
                    Retries::None => {}
                    Retries::Defaults => name.push_str(" + retries"),
                    Retries::Hedge(p) => name.push_str(&format!(" + hedge p{p}")),
                }
                if let Some(every) = checks {
                    name.push_str(&format!(" + checks {}s", every.as_secs_f64()));
                }
                name
            }
            Self::TowerPeakEwma => "tower p2c PeakEwma".into(),
            Self::TowerPending => "tower p2c PendingRequests".into(),
        }
    }
}

/// One call as its caller saw it.
#[derive(Debug, Clone, Copy)]
pub struct Call {
    /// When it was sent, since the start of the run.
    pub at: Duration,
    /// How long until it ended (answer, error or the caller's timeout).
    pub took: Duration,
    /// A 2xx with its body read to the end, within the caller's timeout.
    pub ok: bool,
}

/// What one run produced.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub contender: Contender,
    pub calls: Vec<Call>,
    /// Attempts each backend received.
    pub hits: Vec<u64>,
    /// (time, backend) of every first attempt.
    pub firsts: Vec<(Duration, u16)>,
    /// When each watched backend left and rejoined rotation: (time, in
    /// rotation), sampled every `WATCH_EVERY`; tower-lb only.
    pub rotation: Vec<Vec<(Duration, bool)>>,
}

/// How often the pool's stats are read for `Outcome::rotation`.
pub const WATCH_EVERY: Duration = Duration::from_millis(50);

/// What a scenario gives a run.
pub struct Setup<'a> {
    pub backends: &'a Backends,
    pub arrivals: Arrivals,
    /// Each call is abandoned after this long.
    pub caller_timeout: Duration,
    /// Backends whose rotation is watched.
    pub watch: &'a [usize],
}

type Caller = Arc<dyn Fn() -> BoxFuture<bool> + Send + Sync>;

/// Runs `contender` through `setup`; must run on a paused clock.
pub async fn run(contender: Contender, setup: &Setup<'_>) -> Outcome {
    let backends = setup.backends;
    let (caller, pool) = stack(contender, backends).await;
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = pool.map(|pool| {
        let watch = setup.watch.to_vec();
        let urls: Vec<String> = watch.iter().map(|&i| backends.urls()[i].clone()).collect();
        let stop = stop.clone();
        let start = Instant::now();
        tokio::spawn(async move {
            let mut rotation: Vec<Vec<(Duration, bool)>> = vec![Vec::new(); watch.len()];
            while !stop.load(Ordering::Relaxed) {
                let stats = pool.stats();
                for (k, url) in urls.iter().enumerate() {
                    let healthy = stats
                        .endpoints
                        .iter()
                        .find(|e| &e.endpoint == url)
                        .is_some_and(|e| e.health == HealthState::Healthy);
                    if rotation[k].last().is_none_or(|&(_, was)| was != healthy) {
                        rotation[k].push((start.elapsed(), healthy));
                    }
                }
                tokio::time::sleep(WATCH_EVERY).await;
            }
            rotation
        })
    });
    let calls = drive(caller, setup.arrivals, setup.caller_timeout).await;
    stop.store(true, Ordering::Relaxed);
    let rotation = match watcher {
        Some(task) => task.await.unwrap_or_default(),
        None => Vec::new(),
    };
    Outcome {
        contender,
        calls,
        hits: backends.hits(),
        firsts: backends.firsts(),
        rotation,
    }
}

fn get() -> http::Request<String> {
    http::Request::get("http://svc/work")
        .body(String::new())
        .expect("a valid request")
}

/// The contender's stack over `backends`, as a caller, and its pool.
async fn stack(contender: Contender, backends: &Backends) -> (Caller, Option<Pool>) {
    match contender {
        Contender::Lb {
            algorithm,
            retries,
            checks,
        } => {
            let balancer: Arc<dyn Balancer> = match algorithm {
                Algorithm::RoundRobin => Arc::new(RoundRobin::new()),
                Algorithm::LeastRequest => Arc::new(LeastRequest::new()),
                Algorithm::PeakEwma => Arc::new(PeakEwma::new()),
            };
            let probed = backends.clone();
            let check = checks.map(|every| {
                HealthCheck::custom(move |endpoint: tower_lb::Endpoint| {
                    let healthy = probed
                        .by_port(endpoint.port())
                        .is_some_and(|i| probed.probe(i));
                    async move {
                        if healthy {
                            Ok(())
                        } else {
                            Err(io::Error::other("probe failed"))
                        }
                    }
                })
                .interval(every)
                .healthy_threshold(1)
            });
            let layer = LoadBalanceLayer::builder()
                .service(
                    "svc",
                    Fixed::new(backends.urls().to_vec()).expect("valid urls"),
                )
                .balancer(balancer)
                .configure_pools(move |pool| {
                    let pool = pool.seed(SEED);
                    match check.clone() {
                        Some(check) => pool.health_check(check),
                        None => pool,
                    }
                })
                .build()
                .expect("a valid layer");
            let pool = layer.pool("svc").expect("the pool").clone();
            pool.ready().await.expect("the pool is ready");
            let caller: Caller = match retries {
                Retries::None => caller_of(layer.layer(backends.service())),
                Retries::Defaults | Retries::Hedge(_) => {
                    let mut retry = RetryLayer::builder().seed(SEED);
                    if let Retries::Hedge(p) = retries {
                        retry = retry.hedge(Hedge::percentile(p));
                    }
                    let retry = retry.build().expect("a valid retry layer");
                    caller_of(retry.layer(layer.layer(backends.service())))
                }
            };
            (caller, Some(pool))
        }
        Contender::TowerPeakEwma => {
            let list = ServiceList::new(
                (0..backends.len())
                    .map(|i| backends.endpoint(i))
                    .collect::<Vec<_>>(),
            );
            let discover = PeakEwmaDiscover::new(
                list,
                Duration::from_millis(30),
                Duration::from_secs(10),
                CompleteOnResponse::default(),
            );
            let balance = Balance::from_rng(discover, TowerRng(SmallRng::seed_from_u64(SEED)));
            (caller_of(Buffer::new(balance, 1 << 20)), None)
        }
        Contender::TowerPending => {
            let list = ServiceList::new(
                (0..backends.len())
                    .map(|i| backends.endpoint(i))
                    .collect::<Vec<_>>(),
            );
            let discover = PendingRequestsDiscover::new(list, CompleteOnResponse::default());
            let balance = Balance::from_rng(discover, TowerRng(SmallRng::seed_from_u64(SEED)));
            (caller_of(Buffer::new(balance, 1 << 20)), None)
        }
    }
}

/// tower's own random-number trait over a seeded generator, so tower's
/// runs repeat exactly too.
struct TowerRng(SmallRng);

impl tower::util::rng::Rng for TowerRng {
    fn next_u64(&mut self) -> u64 {
        self.0.random()
    }
}

/// One call through `service`: true on a 2xx whose body ends cleanly.
fn caller_of<S, B>(service: S) -> Caller
where
    S: tower::Service<http::Request<String>, Response = http::Response<B>>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send,
    S::Error: Send,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
{
    Arc::new(move || {
        let service = service.clone();
        Box::pin(async move {
            let Ok(response) = service.oneshot(get()).await else {
                return false;
            };
            let ok = response.status().is_success();
            // Reading the body to its end ends the attempt.
            response.into_body().collect().await.is_ok() && ok
        })
    })
}

/// Sends the arrivals through `caller`; returns every call once all ended.
async fn drive(caller: Caller, arrivals: Arrivals, caller_timeout: Duration) -> Vec<Call> {
    let start = Instant::now();
    let one = move |caller: Caller| async move {
        let at = start.elapsed();
        let ok = tokio::time::timeout(caller_timeout, caller())
            .await
            .unwrap_or(false);
        Call {
            at,
            took: start.elapsed() - at,
            ok,
        }
    };
    match arrivals {
        Arrivals::Open { rate, duration } => {
            let mut rng = SmallRng::seed_from_u64(SEED);
            let mut next = Duration::ZERO;
            let mut tasks = Vec::new();
            while next < duration {
                tokio::time::sleep_until(start + next).await;
                tasks.push(tokio::spawn(one(caller.clone())));
                // Exponential gaps: a Poisson process.
                let u: f64 = rng.random_range(f64::EPSILON..1.0);
                next += Duration::from_secs_f64(-u.ln() / rate);
            }
            let mut calls = Vec::with_capacity(tasks.len());
            for task in tasks {
                calls.push(task.await.expect("a call's task ends"));
            }
            calls
        }
        Arrivals::Closed { concurrency, total } => {
            let sent = Arc::new(AtomicUsize::new(0));
            let calls = Arc::new(Mutex::new(Vec::with_capacity(total)));
            let workers: Vec<_> = (0..concurrency)
                .map(|_| {
                    let (sent, calls, caller) = (sent.clone(), calls.clone(), caller.clone());
                    tokio::spawn(async move {
                        while sent.fetch_add(1, Ordering::Relaxed) < total {
                            let call = one(caller.clone()).await;
                            calls.lock().unwrap().push(call);
                        }
                    })
                })
                .collect();
            for worker in workers {
                worker.await.expect("a caller's task ends");
            }
            let mut calls = std::mem::take(&mut *calls.lock().unwrap());
            calls.sort_by_key(|c| c.at);
            calls
        }
    }
}
