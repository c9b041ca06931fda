//! The figures of a run, and the markdown table of a scenario.

use std::fmt::Write;
use std::time::Duration;

use super::catalog::Scenario;
use super::run::Outcome;

/// The figures of one run.
#[derive(Debug, Clone)]
pub struct Figures {
    pub name: String,
    pub calls: usize,
    /// Share of calls that succeeded, in percent.
    pub success: f64,
    /// Percentiles of successful calls, in ms: p50, p90, p99, p99.9.
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    /// Share of first attempts sent to the scenario's bad backends while
    /// they misbehave, in percent: over the whole run...
    pub bad_first: Option<f64>,
    /// ...and from the first time one of them left rotation on (tower-lb
    /// runs that ejected it only).
    pub bad_after_ejection: Option<f64>,
    /// Attempts beyond one per call, in percent of calls.
    pub extra: f64,
    /// The most any backend received of all attempts, as a multiple of its
    /// share of the capacity (1.0: exactly its share).
    pub max_over_share: Option<f64>,
    /// Every backend's share of all attempts, in percent.
    pub shares: Vec<f64>,
}

/// The `q`-quantile (0 to 1) of sorted `values`, nearest rank; 0 when empty.
pub fn quantile(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1].as_secs_f64() * 1e3
}

impl Figures {
    pub fn of(scenario: &Scenario, outcome: &Outcome) -> Self {
        let calls = outcome.calls.len();
        let mut ok: Vec<Duration> = outcome
            .calls
            .iter()
            .filter(|c| c.ok)
            .map(|c| c.took)
            .collect();
        ok.sort();
        let attempts: u64 = outcome.hits.iter().sum();
        let is_bad = |b: u16| scenario.bad.contains(&usize::from(b));
        // Counted while the bad backends misbehave only.
        let share_of_bad = |firsts: &[(Duration, u16)]| {
            let during: Vec<_> = firsts
                .iter()
                .filter(|&&(at, _)| (scenario.bad_when)(at))
                .collect();
            let bad = during.iter().filter(|&&&(_, b)| is_bad(b)).count();
            bad as f64 * 100.0 / during.len().max(1) as f64
        };
        let first_ejection = outcome
            .rotation
            .iter()
            .filter_map(|changes| changes.iter().find(|&&(_, healthy)| !healthy))
            .map(|&(at, _)| at)
            .min();
        let bad_after_ejection = first_ejection.map(|from| {
            let after: Vec<_> = outcome
                .firsts
                .iter()
                .copied()
                .filter(|&(at, _)| at >= from)
                .collect();
            share_of_bad(&after)
        });
        let shares: Vec<f64> = outcome
            .hits
            .iter()
            .map(|&h| h as f64 * 100.0 / attempts.max(1) as f64)
            .collect();
        let max_over_share = scenario.capacity_share.as_ref().map(|capacity| {
            shares
                .iter()
                .zip(capacity)
                .map(|(share, cap)| share / 100.0 / cap)
                .fold(0.0, f64::max)
        });
        Self {
            name: outcome.contender.name(),
            calls,
            success: ok.len() as f64 * 100.0 / calls.max(1) as f64,
            p50: quantile(&ok, 0.5),
            p90: quantile(&ok, 0.9),
            p99: quantile(&ok, 0.99),
            p999: quantile(&ok, 0.999),
            bad_first: (!scenario.bad.is_empty()).then(|| share_of_bad(&outcome.firsts)),
            bad_after_ejection,
            extra: attempts.saturating_sub(calls as u64) as f64 * 100.0 / calls.max(1) as f64,
            max_over_share,
            shares,
        }
    }
}

/// Milliseconds as the table shows them.
fn ms(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// The scenario's table in markdown, with its anchor above it.
pub fn table(scenario: &Scenario, figures: &[Figures]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "### {}\n", scenario.title);
    let _ = writeln!(out, "{}\n", scenario.setup);
    let _ = writeln!(out, "Published: {}\n", scenario.anchor);
    let bad = !scenario.bad.is_empty();
    let capacity = scenario.capacity_share.is_some();
    let mut header = String::from("| balancer | success | p50 ms | p90 ms | p99 ms | p99.9 ms |");
    let mut rule = String::from("|---|---:|---:|---:|---:|---:|");
    if bad {
        header.push_str(" first attempts to bad, while bad | after its 1st ejection |");
        rule.push_str("---:|---:|");
    }
    if capacity {
        header.push_str(" busiest / its capacity share |");
        rule.push_str("---:|");
    }
    header.push_str(" extra attempts |");
    rule.push_str("---:|");
    let _ = writeln!(out, "{header}\n{rule}");
    for f in figures {
        let _ = write!(
            out,
            "| {} | {:.3}% | {} | {} | {} | {} |",
            f.name,
            f.success,
            ms(f.p50),
            ms(f.p90),
            ms(f.p99),
            ms(f.p999)
        );
        if bad {
            let after = f
                .bad_after_ejection
                .map_or("–".to_string(), |v| format!("{v:.2}%"));
            let _ = write!(out, " {:.2}% | {after} |", f.bad_first.unwrap_or(0.0));
        }
        if capacity {
            let _ = write!(out, " {:.2} |", f.max_over_share.unwrap_or(0.0));
        }
        let _ = writeln!(out, " {:.2}% |", f.extra);
    }
    out
}
