//! One SVG chart per scenario: p99 latency and success per second of
//! arrivals, one line per contender.

use std::path::Path;
use std::time::Duration;

use plotters::prelude::*;

use crate::suite::catalog::Scenario;
use crate::suite::report::quantile;
use crate::suite::run::Outcome;

/// Line colors, one per contender in order (colorblind-safe set).
const COLORS: [RGBColor; 8] = [
    RGBColor(0, 114, 178),
    RGBColor(230, 159, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(86, 180, 233),
    RGBColor(213, 94, 0),
    RGBColor(120, 120, 120),
    RGBColor(0, 0, 0),
];

/// Per window of arrivals: (start in s, p99 of successes in ms, success %).
fn windows(outcome: &Outcome, window: Duration) -> Vec<(f64, f64, f64)> {
    let Some(last) = outcome.calls.iter().map(|c| c.at).max() else {
        return Vec::new();
    };
    let n = (last.as_secs_f64() / window.as_secs_f64()) as usize + 1;
    let mut buckets: Vec<(Vec<Duration>, usize)> = vec![(Vec::new(), 0); n];
    for call in &outcome.calls {
        let k = ((call.at.as_secs_f64() / window.as_secs_f64()) as usize).min(n - 1);
        buckets[k].1 += 1;
        if call.ok {
            buckets[k].0.push(call.took);
        }
    }
    buckets
        .into_iter()
        .enumerate()
        .filter(|(_, (_, calls))| *calls > 0)
        .map(|(k, (mut ok, calls))| {
            ok.sort();
            let p99 = quantile(&ok, 0.99).max(0.1);
            let success = ok.len() as f64 * 100.0 / calls as f64;
            (k as f64 * window.as_secs_f64(), p99, success)
        })
        .collect()
}

/// Writes `scenario`'s chart to `path`.
pub fn draw(
    scenario: &Scenario,
    outcomes: &[Outcome],
    path: &Path,
) -> Result<(), Box<dyn std::error::Error>> {
    let span = outcomes
        .iter()
        .flat_map(|o| o.calls.last().map(|c| c.at))
        .max()
        .unwrap_or(scenario.span())
        .as_secs_f64();
    // About 60 points a line, whatever the run's length.
    let window = Duration::from_secs_f64((span / 60.0).max(0.05));
    let series: Vec<_> = outcomes.iter().map(|o| windows(o, window)).collect();
    let top = series
        .iter()
        .flatten()
        .map(|&(_, p99, _)| p99)
        .fold(1.0, f64::max)
        * 1.5;
    let low = series
        .iter()
        .flatten()
        .map(|&(_, p99, _)| p99)
        .fold(f64::MAX, f64::min)
        .min(top / 10.0)
        * 0.7;
    let floor = series
        .iter()
        .flatten()
        .map(|&(_, _, s)| s)
        .fold(100.0, f64::min)
        .min(99.0)
        .floor();

    let root = SVGBackend::new(path, (900, 640)).into_drawing_area();
    root.fill(&WHITE)?;
    let (upper, lower) = root.split_vertically(400);
    let mut latency = ChartBuilder::on(&upper)
        .caption(
            format!("{}: p99 of successful calls", scenario.title),
            ("sans-serif", 18),
        )
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..span.max(0.1), (low..top).log_scale())?;
    latency
        .configure_mesh()
        .x_desc("arrival time (s)")
        .y_desc("ms (log)")
        .draw()?;
    for (k, (outcome, points)) in outcomes.iter().zip(&series).enumerate() {
        let color = COLORS[k % COLORS.len()];
        latency
            .draw_series(LineSeries::new(
                points.iter().map(|&(t, p99, _)| (t, p99)),
                color.stroke_width(2),
            ))?
            .label(outcome.contender.name())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], color.stroke_width(2)));
    }
    latency
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()?;

    let mut success = ChartBuilder::on(&lower)
        .caption("success per window", ("sans-serif", 16))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..span.max(0.1), floor..100.5)?;
    success
        .configure_mesh()
        .x_desc("arrival time (s)")
        .y_desc("%")
        .draw()?;
    for (k, points) in series.iter().enumerate() {
        let color = COLORS[k % COLORS.len()];
        success.draw_series(LineSeries::new(
            points.iter().map(|&(t, _, s)| (t, s)),
            color.stroke_width(2),
        ))?;
    }
    root.present()?;
    Ok(())
}
