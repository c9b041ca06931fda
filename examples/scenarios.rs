//! The latency-under-failure scenario suite.
//!
//! Runs every scenario on tokio's paused clock with a fixed seed, tower-lb's
//! balancers beside tower 0.5's `p2c::Balance` on the same arrivals,
//! prints one markdown table per scenario and writes one SVG chart per
//! scenario into `docs/scenarios/`.
//!
//! ```text
//! cargo run --release --example scenarios            # all of them
//! cargo run --release --example scenarios -- flapping tower_76
//! ```
//!
//! Nothing here measures the machine: simulated time is exact, so the
//! figures are the same on every run and every computer.

// The tests use parts the program does not.
#[allow(dead_code)]
#[path = "scenarios/mod.rs"]
mod suite;

#[path = "scenarios/chart.rs"]
mod chart;

use std::path::Path;

use suite::catalog::{self, Size};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let wanted: Vec<String> = std::env::args().skip(1).collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()?;
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/scenarios");
    std::fs::create_dir_all(&out)?;
    for scenario in catalog::all(Size::Full) {
        if !wanted.is_empty() && !wanted.iter().any(|w| w == scenario.key) {
            continue;
        }
        let real = std::time::Instant::now();
        let mut outcomes = Vec::new();
        let mut figures = Vec::new();
        for &contender in &scenario.contenders {
            let (outcome, f) = runtime.block_on(suite::run_one(&scenario, contender));
            eprintln!("{}: shares of attempts {:.2?}", f.name, f.shares);
            if !outcome.rotation.is_empty() {
                eprintln!(
                    "{}: in rotation (bad backends) {:?}",
                    f.name, outcome.rotation
                );
            }
            outcomes.push(outcome);
            figures.push(f);
        }
        println!("{}", suite::report::table(&scenario, &figures));
        println!(
            "![{}](docs/scenarios/{}.svg)\n",
            scenario.title, scenario.key
        );
        let path = out.join(format!("{}.svg", scenario.key));
        chart::draw(&scenario, &outcomes, &path)?;
        eprintln!(
            "{}: {} runs in {:.1?} real time, chart in {}",
            scenario.key,
            outcomes.len(),
            real.elapsed(),
            path.display()
        );
    }
    Ok(())
}
