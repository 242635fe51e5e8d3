//! Models timed side by side in one process: interleaved rounds (the order reversed every other
//! round, so neither model always runs first), untimed warm-up rounds, and per model the median,
//! min and max time and the median of the paired ratios against the first model. What `bench
//! embed` and `bench detect` share.

use anyhow::Result;

use crate::progress::Progress;

/// Runs `warmup + rounds` rounds over `n` models; `run(i)` runs model `i` once and returns the
/// time it measured (in the caller's unit). Returns the timed rounds' times per model.
pub(crate) fn interleaved(
    label: &str,
    n: usize,
    warmup: usize,
    rounds: usize,
    quiet: bool,
    mut run: impl FnMut(usize) -> Result<f64>,
) -> Result<Vec<Vec<f64>>> {
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); n];
    let mut progress = Progress::new(label, (warmup + rounds) as u64).quiet(quiet);
    for round in 0..warmup + rounds {
        let order: Vec<usize> = if round % 2 == 0 {
            (0..n).collect()
        } else {
            (0..n).rev().collect()
        };
        for i in order {
            let dt = run(i)?;
            if round >= warmup {
                times[i].push(dt);
            }
        }
        progress.inc(1);
    }
    progress.finish();
    Ok(times)
}

/// One model's times summarised.
pub(crate) struct Timing {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    /// Median over rounds of (first model's time / this model's time).
    pub speedup: f64,
}

/// Summarises the times [`interleaved`] returned, the first model as the reference.
pub(crate) fn summarise(times: &[Vec<f64>]) -> Vec<Timing> {
    times
        .iter()
        .map(|ti| {
            let mut t = ti.clone();
            t.sort_by(|a, b| a.total_cmp(b));
            let mut paired: Vec<f64> = times[0].iter().zip(ti).map(|(r, x)| r / x).collect();
            paired.sort_by(|a, b| a.total_cmp(b));
            Timing {
                median: median_of(&t),
                min: t.first().copied().unwrap_or(f64::NAN),
                max: t.last().copied().unwrap_or(f64::NAN),
                speedup: median_of(&paired),
            }
        })
        .collect()
}

/// The median of sorted values (NaN when empty).
fn median_of(t: &[f64]) -> f64 {
    match t.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => t[n / 2],
        n => 0.5 * (t[n / 2 - 1] + t[n / 2]),
    }
}
