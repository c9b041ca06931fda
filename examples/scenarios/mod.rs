//! The latency-under-failure scenario suite: in-memory backends with a
//! capacity model behind the real layers, on tokio's paused clock, with
//! tower's own balancer beside ours. Shared by the program
//! (`examples/scenarios.rs`) and the tests that hold the targets
//! (`tests/scenarios.rs`).

pub mod backends;
pub mod catalog;
pub mod report;
pub mod run;

use catalog::Scenario;
use report::Figures;
use run::{Contender, Outcome};

/// Runs one contender of `scenario` on fresh backends.
pub async fn run_one(scenario: &Scenario, contender: Contender) -> (Outcome, Figures) {
    let backends = scenario.backends();
    let outcome = run::run(contender, &scenario.setup(&backends)).await;
    let figures = Figures::of(scenario, &outcome);
    (outcome, figures)
}
