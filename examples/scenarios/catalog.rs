//! The scenarios: backends, load, contenders, and the published figures
//! each one is measured against.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use rand::rngs::SmallRng;

use super::backends::{Arrival, Backends, Behavior, Probe, Script};
use super::run::{Algorithm, Arrivals, Contender, Retries, SEED, Setup};

/// How big a run is: the program's full size, or the tests' smaller one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Size {
    Full,
    Test,
}

/// One scenario.
pub struct Scenario {
    /// File name of its chart, and its name on the command line.
    pub key: &'static str,
    pub title: &'static str,
    /// The setup in a sentence, for the table.
    pub setup: String,
    /// The published figures it reproduces, with their source.
    pub anchor: &'static str,
    capacity: Vec<usize>,
    script: Arc<Script>,
    probe: Arc<Probe>,
    pub arrivals: Arrivals,
    pub caller_timeout: Duration,
    /// The backends that misbehave.
    pub bad: Vec<usize>,
    /// When they misbehave (arrival times); first attempts to them are
    /// counted in these times only.
    pub bad_when: fn(Duration) -> bool,
    /// Each backend's share of the total capacity (throughput), when the
    /// scenario checks for herding.
    pub capacity_share: Option<Vec<f64>>,
    pub contenders: Vec<Contender>,
    /// Recovery times of the bad backend, for the flapping scenario.
    pub recoveries: Vec<Duration>,
}

impl Scenario {
    /// Fresh backends for one run: every run meets the same ones.
    pub fn backends(&self) -> Backends {
        Backends::new(
            &self.capacity,
            SEED,
            self.script.clone(),
            self.probe.clone(),
        )
    }

    pub fn setup<'a>(&'a self, backends: &'a Backends) -> Setup<'a> {
        Setup {
            backends,
            arrivals: self.arrivals,
            caller_timeout: self.caller_timeout,
            watch: &self.bad,
        }
    }

    /// The run length, for charts.
    pub fn span(&self) -> Duration {
        match self.arrivals {
            Arrivals::Open { duration, .. } => duration,
            // Unknown beforehand; charts use the last call.
            Arrivals::Closed { .. } => Duration::ZERO,
        }
    }
}

/// Every scenario at `size`.
pub fn all(size: Size) -> Vec<Scenario> {
    vec![
        linkerd_2016(size),
        linkerd_2017(size),
        tower_76(size),
        refusing(size),
        black_hole(size),
        flapping(size),
        slow_but_healthy(size),
        load_dependent(size),
        hedging(size),
    ]
}

const fn lb(algorithm: Algorithm, retries: Retries) -> Contender {
    Contender::lb(algorithm, retries)
}

use Algorithm::{LeastRequest, PeakEwma, RoundRobin};

fn ms(v: f64) -> Duration {
    Duration::from_secs_f64(v.max(0.0) / 1e3)
}

/// A normal sample (Box–Muller), mean and deviation in ms, at least 0.
fn normal(rng: &mut SmallRng, mean: f64, sd: f64) -> Duration {
    let u1: f64 = rng.random_range(f64::EPSILON..1.0);
    let u2: f64 = rng.random();
    let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
    ms(mean + sd * z)
}

fn ok(time: Duration) -> Behavior {
    Behavior::Serve { time, status: 200 }
}

fn always_healthy() -> Arc<Probe> {
    Arc::new(|_, _| true)
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// Linkerd, "Beyond Round Robin: Load Balancing for Latency" (2016).
pub fn linkerd_2016(size: Size) -> Scenario {
    // The tests run it whole too: the ~20 calls lost when the backend
    // slows are a share of the published minute, not of a shorter run.
    let _ = size;
    let (run, from, until) = (secs(60), secs(15), secs(45));
    fn slow_then(at: Duration) -> bool {
        at >= secs(15) && at < secs(45)
    }
    const SLOW: usize = 3;
    Scenario {
        key: "linkerd_2016",
        title: "Linkerd 2016: one backend slows to 2 s",
        setup: format!(
            "11 backends at ~N(167 ms, 5 ms), capacity 100 each; one at 2 s from {}s to {}s; \
             1,000 requests/s (Poisson) for {} s; callers give up after 1 s.",
            from.as_secs(),
            until.as_secs(),
            run.as_secs()
        ),
        anchor: "Linkerd, \"Beyond Round Robin\" (2016): success ≈ 95% round robin, 99% least \
                 loaded, 99.9% Peak-EWMA.",
        capacity: vec![100; 11],
        script: Arc::new(move |rng, a: Arrival| {
            if a.backend == SLOW && slow_then(a.at) {
                ok(secs(2))
            } else {
                ok(normal(rng, 167.0, 5.0))
            }
        }),
        probe: always_healthy(),
        arrivals: Arrivals::Open {
            rate: 1000.0,
            duration: run,
        },
        caller_timeout: secs(1),
        bad: vec![SLOW],
        bad_when: slow_then,
        capacity_share: None,
        contenders: vec![
            lb(RoundRobin, Retries::None),
            lb(LeastRequest, Retries::None),
            lb(PeakEwma, Retries::None),
            lb(PeakEwma, Retries::Defaults),
            lb(PeakEwma, Retries::Hedge(95.0)),
            Contender::TowerPeakEwma,
            Contender::TowerPending,
        ],
        recoveries: Vec::new(),
    }
}

/// Linkerd, "Making Things Faster by Adding More Steps" (2017), with the
/// backends of its published setup (linkerd-examples, `add-steps`).
pub fn linkerd_2017(size: Size) -> Scenario {
    let run = match size {
        Size::Full => secs(60),
        Size::Test => secs(20),
    };
    const LATENCY_MS: [f64; 10] = [
        0.0, 10.0, 20.0, 40.0, 80.0, 160.0, 320.0, 640.0, 1000.0, 2000.0,
    ];
    // The two slowest also fail: 40% and 60% of their answers are errors.
    // 503 where the original answered 500: tower-lb's default classifier
    // retries 502-504 only, as Linkerd's `retryableRead5XX` retried every
    // 5xx of a read.
    const FAILURE: [f64; 10] = [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.4, 0.6];
    Scenario {
        key: "linkerd_2017",
        title: "Linkerd 2017: ten backends from 0 to 2 s, the slowest failing",
        setup: format!(
            "10 backends answering in 0, 10, 20, 40, 80, 160, 320, 640 ms, 1 s (40% 503s) \
             and 2 s (60% 503s), capacity 200 each; 500 requests/s for {} s; callers give up \
             after 20 s.",
            run.as_secs()
        ),
        anchor: "Linkerd, \"Making Things Faster by Adding More Steps\" (2017): EWMA + failure \
                 accrual + retries p50 42 ms, p95 604 ms, p99 734 ms, 100% success; round \
                 robin p99 2,100 ms, 88%.",
        capacity: vec![200; 10],
        script: Arc::new(move |rng, a: Arrival| {
            let time = ms(LATENCY_MS[a.backend]);
            let status = if rng.random_bool(FAILURE[a.backend]) {
                503
            } else {
                200
            };
            Behavior::Serve { time, status }
        }),
        probe: always_healthy(),
        arrivals: Arrivals::Open {
            rate: 500.0,
            duration: run,
        },
        caller_timeout: secs(20),
        bad: vec![8, 9],
        bad_when: |_| true,
        capacity_share: None,
        contenders: vec![
            lb(RoundRobin, Retries::None),
            lb(RoundRobin, Retries::Defaults),
            lb(PeakEwma, Retries::None),
            lb(PeakEwma, Retries::Defaults),
            Contender::TowerPeakEwma,
            Contender::TowerPending,
        ],
        recoveries: Vec::new(),
    }
}

/// tower's balancer benchmark (tower-rs/tower#76).
pub fn tower_76(size: Size) -> Scenario {
    let total = match size {
        Size::Full => 50_000,
        Size::Test => 20_000,
    };
    const MAX_MS: [f64; 10] = [
        1.0, 10.0, 10.0, 10.0, 10.0, 100.0, 100.0, 100.0, 100.0, 1000.0,
    ];
    Scenario {
        key: "tower_76",
        title: "tower#76: endpoints from 1 ms to 1 s",
        setup: format!(
            "10 endpoints answering uniformly within 1 ms, 4×10 ms, 4×100 ms and 1,000 ms, \
             capacity 50 each; {total} requests from 50 callers in a closed loop."
        ),
        anchor: "tower-rs/tower#76: p99/p999 P2C+PeakEWMA 96/105 ms, P2C+least-loaded \
                 98/857 ms, round robin 906/988 ms.",
        capacity: vec![50; 10],
        script: Arc::new(|rng, a: Arrival| ok(ms(rng.random_range(0.0..MAX_MS[a.backend])))),
        probe: always_healthy(),
        arrivals: Arrivals::Closed {
            concurrency: 50,
            total,
        },
        caller_timeout: secs(20),
        bad: vec![9],
        bad_when: |_| true,
        capacity_share: None,
        contenders: vec![
            lb(RoundRobin, Retries::None),
            lb(LeastRequest, Retries::None),
            lb(PeakEwma, Retries::None),
            Contender::TowerPeakEwma,
            Contender::TowerPending,
        ],
        recoveries: Vec::new(),
    }
}

/// The contenders of the scenarios with one broken backend of three.
fn broken_contenders() -> Vec<Contender> {
    vec![
        lb(RoundRobin, Retries::None),
        lb(RoundRobin, Retries::Defaults),
        lb(LeastRequest, Retries::Defaults),
        lb(PeakEwma, Retries::None),
        lb(PeakEwma, Retries::Defaults),
        Contender::TowerPeakEwma,
        Contender::TowerPending,
    ]
}

/// 300 requests/s to three backends at ~N(20 ms, 2 ms), one of them broken
/// as `broken` says.
fn one_broken(
    size: Size,
    key: &'static str,
    title: &'static str,
    what: &str,
    broken: Behavior,
) -> Scenario {
    let run = match size {
        Size::Full => secs(60),
        Size::Test => secs(20),
    };
    Scenario {
        key,
        title,
        setup: format!(
            "3 backends at ~N(20 ms, 2 ms), capacity 50 each; {what}; 300 requests/s for {} s; \
             callers give up after 20 s.",
            run.as_secs()
        ),
        anchor: "none published; the issue measured tower's p2c sending 66% of first attempts \
                 to a refusing instance.",
        capacity: vec![50; 3],
        script: Arc::new(move |rng, a: Arrival| {
            if a.backend == 2 {
                broken
            } else {
                ok(normal(rng, 20.0, 2.0))
            }
        }),
        probe: Arc::new(|i, _| i != 2),
        arrivals: Arrivals::Open {
            rate: 300.0,
            duration: run,
        },
        caller_timeout: secs(20),
        bad: vec![2],
        bad_when: |_| true,
        capacity_share: None,
        contenders: broken_contenders(),
        recoveries: Vec::new(),
    }
}

pub fn refusing(size: Size) -> Scenario {
    one_broken(
        size,
        "refusing",
        "A refusing instance",
        "one refuses every connection",
        Behavior::Refuse,
    )
}

pub fn black_hole(size: Size) -> Scenario {
    one_broken(
        size,
        "black_hole",
        "A black hole",
        "one accepts every request and never answers",
        Behavior::BlackHole,
    )
}

/// The interval of the flapping scenario's active checks.
pub const CHECK_EVERY: Duration = Duration::from_secs(1);

pub fn flapping(size: Size) -> Scenario {
    let run = match size {
        Size::Full => secs(60),
        Size::Test => secs(45),
    };
    // 10 s healthy, 10 s answering 503, and again.
    let failing = |at: Duration| (at.as_secs() / 10) % 2 == 1;
    let rate = match size {
        Size::Full => 300.0,
        Size::Test => 100.0,
    };
    Scenario {
        key: "flapping",
        title: "A flapping instance",
        setup: format!(
            "3 backends at ~N(20 ms, 2 ms), capacity 50 each; one answers 503 (and fails its \
             health checks) for 10 s of every 20, from 10 s on; {rate} requests/s for {} s; \
             callers give up after 20 s.",
            run.as_secs()
        ),
        anchor: "none published; the issue measured tower's p2c at 16.6% errors.",
        capacity: vec![50; 3],
        script: Arc::new(move |rng, a: Arrival| {
            let time = normal(rng, 20.0, 2.0);
            let status = if a.backend == 2 && failing(a.at) {
                503
            } else {
                200
            };
            Behavior::Serve { time, status }
        }),
        probe: Arc::new(move |i, at| !(i == 2 && failing(at))),
        arrivals: Arrivals::Open {
            rate,
            duration: run,
        },
        caller_timeout: secs(20),
        bad: vec![2],
        bad_when: |at| (at.as_secs() / 10) % 2 == 1,
        capacity_share: None,
        contenders: vec![
            lb(RoundRobin, Retries::Defaults),
            lb(PeakEwma, Retries::None),
            lb(PeakEwma, Retries::Defaults),
            Contender::Lb {
                algorithm: PeakEwma,
                retries: Retries::Defaults,
                checks: Some(CHECK_EVERY),
            },
            Contender::TowerPeakEwma,
            Contender::TowerPending,
        ],
        recoveries: (1..)
            .map(|k| secs(20 * k))
            .take_while(|&at| at < run)
            .collect(),
    }
}

/// Throughput shares of backends with `capacity` slots and mean service
/// times `mean_ms`.
fn throughput_shares(capacity: &[usize], mean_ms: &[f64]) -> Vec<f64> {
    let rates: Vec<f64> = capacity
        .iter()
        .zip(mean_ms)
        .map(|(&c, &m)| c as f64 / m)
        .collect();
    let total: f64 = rates.iter().sum();
    rates.iter().map(|r| r / total).collect()
}

fn herding_contenders() -> Vec<Contender> {
    vec![
        lb(RoundRobin, Retries::None),
        lb(LeastRequest, Retries::None),
        lb(PeakEwma, Retries::None),
        Contender::TowerPeakEwma,
        Contender::TowerPending,
    ]
}

pub fn slow_but_healthy(size: Size) -> Scenario {
    let run = match size {
        Size::Full => secs(60),
        Size::Test => secs(20),
    };
    let capacity = vec![10; 6];
    let means = [100.0, 100.0, 100.0, 600.0, 600.0, 600.0];
    let shares = throughput_shares(&capacity, &means);
    // 90% of what the six can serve: saturation, short of overload.
    let rate = 0.9
        * capacity
            .iter()
            .zip(&means)
            .map(|(&c, m)| c as f64 * 1e3 / m)
            .sum::<f64>();
    Scenario {
        key: "slow_but_healthy",
        title: "Slow but healthy",
        setup: format!(
            "3 backends at 100 ms and 3 at 600 ms (±10%), capacity 10 each; {rate:.0} \
             requests/s (90% of capacity) for {} s; callers give up after 20 s.",
            run.as_secs()
        ),
        anchor: "none published; the target is no backend above 110% of its capacity share.",
        capacity,
        script: Arc::new(move |rng, a: Arrival| {
            ok(ms(means[a.backend] * rng.random_range(0.9..1.1)))
        }),
        probe: always_healthy(),
        arrivals: Arrivals::Open {
            rate,
            duration: run,
        },
        caller_timeout: secs(20),
        bad: Vec::new(),
        bad_when: |_| true,
        capacity_share: Some(shares),
        contenders: herding_contenders(),
        recoveries: Vec::new(),
    }
}

pub fn load_dependent(size: Size) -> Scenario {
    let run = match size {
        Size::Full => secs(60),
        Size::Test => secs(20),
    };
    Scenario {
        key: "load_dependent",
        title: "Backends that slow down under load",
        setup: format!(
            "5 backends serving a request in 300 ms × (1 + requests already there / 20) \
             (±10%), no hard capacity: spread evenly, 250 requests/s take 1.2 s each; a herd \
             twice its share makes its target's queue grow without bound; {} s; callers give \
             up after 20 s.",
            run.as_secs()
        ),
        anchor: "none published; the target is no backend above 110% of an equal share.",
        capacity: vec![1000; 5],
        script: Arc::new(|rng, a: Arrival| {
            let base = 300.0 * rng.random_range(0.9..1.1);
            ok(ms(base * (1.0 + a.load as f64 / 20.0)))
        }),
        probe: always_healthy(),
        arrivals: Arrivals::Open {
            rate: 250.0,
            duration: run,
        },
        caller_timeout: secs(20),
        bad: Vec::new(),
        bad_when: |_| true,
        capacity_share: Some(vec![0.2; 5]),
        contenders: herding_contenders(),
        recoveries: Vec::new(),
    }
}

pub fn hedging(size: Size) -> Scenario {
    let run = match size {
        Size::Full => secs(60),
        Size::Test => secs(30),
    };
    Scenario {
        key: "hedging",
        title: "Hedging: 1% of requests take 1 s",
        setup: format!(
            "3 backends at ~N(10 ms, 1 ms), capacity 100 each; any request takes 1 s with \
             probability 1%; 300 requests/s for {} s; callers give up after 20 s.",
            run.as_secs()
        ),
        anchor: "Dean & Barroso, \"The Tail at Scale\" (2013): hedging after the 95th \
                 percentile cut p99.9 from 1,800 ms to 74 ms for 2% more requests.",
        capacity: vec![100; 3],
        script: Arc::new(|rng, _| {
            if rng.random_bool(0.01) {
                ok(secs(1))
            } else {
                ok(normal(rng, 10.0, 1.0))
            }
        }),
        probe: always_healthy(),
        arrivals: Arrivals::Open {
            rate: 300.0,
            duration: run,
        },
        caller_timeout: secs(20),
        bad: Vec::new(),
        bad_when: |_| true,
        capacity_share: None,
        contenders: vec![
            lb(PeakEwma, Retries::None),
            lb(PeakEwma, Retries::Defaults),
            lb(PeakEwma, Retries::Hedge(95.0)),
            Contender::TowerPeakEwma,
        ],
        recoveries: Vec::new(),
    }
}

/// The scenario named `key` at `size`.
pub fn by_key(key: &str, size: Size) -> Option<Scenario> {
    all(size).into_iter().find(|s| s.key == key)
}
