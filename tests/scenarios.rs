//! The latency-under-failure targets of the scenario suite
//! (`examples/scenarios.rs`), held at a smaller size than the program runs:
//! in-memory backends with a capacity model behind the real layers, on
//! tokio's paused clock, with fixed seeds, so every figure is exact and
//! repeats. tower 0.5's own p2c runs beside ours where a target compares.

// The program uses parts the tests do not (and the other way round).
#[allow(dead_code)]
#[path = "../examples/scenarios/mod.rs"]
mod suite;

use suite::catalog::{self, CHECK_EVERY, Scenario, Size};
use suite::report::Figures;
use suite::run::{Algorithm, Contender, Outcome, Retries, WATCH_EVERY};

const PEAK_EWMA: Contender = Contender::lb(Algorithm::PeakEwma, Retries::None);
const PEAK_EWMA_RETRIES: Contender = Contender::lb(Algorithm::PeakEwma, Retries::Defaults);
const LEAST_REQUEST_RETRIES: Contender = Contender::lb(Algorithm::LeastRequest, Retries::Defaults);

async fn run(scenario: &Scenario, contender: Contender) -> (Outcome, Figures) {
    let (outcome, figures) = suite::run_one(scenario, contender).await;
    eprintln!("{}: {figures:?}", scenario.key);
    (outcome, figures)
}

#[tokio::test(start_paused = true)]
async fn linkerd_2016_peak_ewma_survives_a_slow_backend() {
    let scenario = catalog::linkerd_2016(Size::Test);
    let (_, alone) = run(&scenario, PEAK_EWMA).await;
    assert!(alone.success >= 99.95, "{alone:?}");
    let (_, retried) = run(&scenario, PEAK_EWMA_RETRIES).await;
    assert!(retried.success >= 99.95, "{retried:?}");
}

#[tokio::test(start_paused = true)]
async fn linkerd_2017_recommended_configuration() {
    let scenario = catalog::linkerd_2017(Size::Test);
    let (_, f) = run(&scenario, PEAK_EWMA_RETRIES).await;
    assert_eq!(f.success, 100.0, "{f:?}");
    assert!(f.p99 <= 734.0, "{f:?}");
}

#[tokio::test(start_paused = true)]
async fn tower_76_peak_ewma_tail() {
    let scenario = catalog::tower_76(Size::Test);
    let (_, ours) = run(&scenario, PEAK_EWMA).await;
    let (_, tower) = run(&scenario, Contender::TowerPeakEwma).await;
    assert_eq!(ours.success, 100.0);
    assert!(ours.p99 <= 96.0 && ours.p999 <= 105.0, "{ours:?}");
    assert!(ours.p99 <= tower.p99, "ours {ours:?}, tower {tower:?}");
    assert!(ours.p999 <= tower.p999, "ours {ours:?}, tower {tower:?}");
}

/// Under 1% of first attempts to the broken backend once it was first
/// ejected (over the whole run when it never was), and no caller-visible
/// error with retries.
async fn broken_backend_is_shunned(scenario: Scenario) {
    for contender in [PEAK_EWMA_RETRIES, LEAST_REQUEST_RETRIES] {
        let (_, f) = run(&scenario, contender).await;
        assert_eq!(f.success, 100.0, "{f:?}");
        let share = f.bad_after_ejection.or(f.bad_first).unwrap();
        assert!(share < 1.0, "{f:?}");
    }
    // Without retries the failures show: the scenario has teeth.
    let (_, bare) = run(
        &scenario,
        Contender::lb(Algorithm::RoundRobin, Retries::None),
    )
    .await;
    assert!(bare.success < 100.0, "{bare:?}");
}

#[tokio::test(start_paused = true)]
async fn a_refusing_instance_is_shunned() {
    broken_backend_is_shunned(catalog::refusing(Size::Test)).await;
}

#[tokio::test(start_paused = true)]
async fn a_black_hole_is_shunned() {
    broken_backend_is_shunned(catalog::black_hole(Size::Test)).await;
}

#[tokio::test(start_paused = true)]
async fn a_flapping_instance_costs_nothing_with_retries() {
    let scenario = catalog::flapping(Size::Test);
    let (_, f) = run(&scenario, PEAK_EWMA_RETRIES).await;
    assert_eq!(f.success, 100.0, "{f:?}");
    let checked = Contender::Lb {
        algorithm: Algorithm::PeakEwma,
        retries: Retries::Defaults,
        checks: Some(CHECK_EVERY),
    };
    let (outcome, f) = run(&scenario, checked).await;
    assert_eq!(f.success, 100.0, "{f:?}");
    let rotation = &outcome.rotation[0];
    eprintln!("rotation of the flapping backend: {rotation:?}");
    assert!(!scenario.recoveries.is_empty());
    // Within one check interval (and its 10% jitter) of each recovery,
    // give or take a reading of the stats.
    let allowed = CHECK_EVERY.mul_f64(1.1) + WATCH_EVERY;
    for &recovered in &scenario.recoveries {
        let out_at_recovery = rotation
            .iter()
            .rev()
            .find(|&&(at, _)| at <= recovered)
            .is_some_and(|&(_, healthy)| !healthy);
        assert!(
            out_at_recovery,
            "out of rotation when it recovered at {recovered:?}"
        );
        let back = rotation
            .iter()
            .find(|&&(at, healthy)| healthy && at > recovered)
            .map(|&(at, _)| at - recovered);
        assert!(
            back.is_some_and(|b| b <= allowed),
            "recovered at {recovered:?}, back after {back:?}"
        );
    }
}

/// No backend above 110% of its capacity share, and a p99 no worse than
/// tower's p2c Peak-EWMA.
async fn no_herding(scenario: Scenario) {
    let (_, ours) = run(&scenario, PEAK_EWMA).await;
    let (_, tower) = run(&scenario, Contender::TowerPeakEwma).await;
    assert!(ours.max_over_share.unwrap() <= 1.1, "{ours:?}");
    assert!(ours.p99 <= tower.p99, "ours {ours:?}, tower {tower:?}");
}

#[tokio::test(start_paused = true)]
async fn slow_but_healthy_backends_are_not_herded_around() {
    no_herding(catalog::slow_but_healthy(Size::Test)).await;
}

#[tokio::test(start_paused = true)]
async fn an_instance_slower_under_load_gets_less() {
    no_herding(catalog::load_dependent(Size::Test)).await;
}

#[tokio::test(start_paused = true)]
async fn hedging_cuts_the_tail_tenfold() {
    let scenario = catalog::hedging(Size::Test);
    let (_, plain) = run(&scenario, PEAK_EWMA).await;
    let (_, hedged) = run(
        &scenario,
        Contender::lb(Algorithm::PeakEwma, Retries::Hedge(95.0)),
    )
    .await;
    assert_eq!(hedged.success, 100.0);
    assert!(
        hedged.p999 * 10.0 <= plain.p999,
        "plain {plain:?}, hedged {hedged:?}"
    );
    assert!(hedged.extra <= 5.0, "{hedged:?}");
}

#[tokio::test(start_paused = true)]
async fn a_scenario_repeats_exactly() {
    let scenario = catalog::refusing(Size::Test);
    let (first, _) = run(&scenario, PEAK_EWMA_RETRIES).await;
    let (second, _) = run(&scenario, PEAK_EWMA_RETRIES).await;
    let (tower_a, _) = run(&scenario, Contender::TowerPeakEwma).await;
    let (tower_b, _) = run(&scenario, Contender::TowerPeakEwma).await;
    let key = |o: &Outcome| {
        (
            o.hits.clone(),
            o.firsts.clone(),
            o.calls
                .iter()
                .map(|c| (c.at, c.took, c.ok))
                .collect::<Vec<_>>(),
        )
    };
    assert_eq!(key(&first), key(&second));
    assert_eq!(key(&tower_a), key(&tower_b));
    // The seed is what keeps it: the tail of latencies is not constant.
    assert!(first.calls.iter().any(|c| c.took != first.calls[0].took));
}
