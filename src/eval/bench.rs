//! `crosscam bench eval`: times the metric computation alone (no model) on random features with
//! the size of a real benchmark (Market-1501 has 3,368 queries and 15,913 gallery images).

use std::time::Instant;

use ndarray::Array2;
use serde::Serialize;

use super::metrics::{Label, MetricOptions, evaluate};
use crate::dataset::rng::SplitMix64;

/// Random L2-normalised features around `ids` identity centres (noise `noise` per dimension
/// relative to the centre's), with cameras 1..=`cams`.
pub fn synthetic(
    n: usize,
    dim: usize,
    ids: usize,
    cams: u32,
    noise: f32,
    rng: &mut SplitMix64,
    centres: &Array2<f32>,
) -> (Array2<f32>, Vec<Label>) {
    let mut x = Array2::<f32>::zeros((n, dim));
    let mut labels = Vec::with_capacity(n);
    for i in 0..n {
        let pid = rng.below(ids.max(1));
        labels.push(Label::new(
            pid as i32 + 1,
            rng.below(cams.max(1) as usize) as u32 + 1,
        ));
        for j in 0..dim {
            x[[i, j]] = centres[[pid, j]] + noise * rng.normal();
        }
    }
    crate::reid::l2_normalize_rows(&mut x);
    (x, labels)
}

#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub num_query: usize,
    pub num_gallery: usize,
    pub dim: usize,
    pub noise: f32,
    pub threads: usize,
    pub block: usize,
    pub rerank: bool,
    /// Wall-clock seconds of each run of the evaluation (metrics only).
    pub seconds: Vec<f64>,
    pub best_seconds: f64,
    pub rank1: f64,
    #[serde(rename = "mAP")]
    pub map: f64,
}

/// Generates the features once and times `repeat` evaluations. `noise` is the per-dimension
/// noise relative to the identity centres: 1 gives an easy set (rank-1 ≈ 1), 3 a hard one in
/// 512 dimensions, where correct matches sit deep in the ranking as with real models.
pub fn run(
    num_query: usize,
    num_gallery: usize,
    dim: usize,
    noise: f32,
    repeat: usize,
    opts: &MetricOptions,
    seed: u64,
) -> Result<BenchReport, super::metrics::MetricsError> {
    let mut rng = SplitMix64::new(seed);
    let ids = (num_gallery / 20).max(1);
    let centres = Array2::from_shape_fn((ids, dim), |_| rng.normal());
    let (q, ql) = synthetic(num_query, dim, ids, 6, noise, &mut rng, &centres);
    let (g, gl) = synthetic(num_gallery, dim, ids, 6, noise, &mut rng, &centres);
    let mut seconds = Vec::new();
    let mut last = None;
    for _ in 0..repeat.max(1) {
        let t = Instant::now();
        last = Some(evaluate(q.view(), g.view(), &ql, &gl, opts)?);
        seconds.push(t.elapsed().as_secs_f64());
    }
    let m = last.expect("at least one run");
    Ok(BenchReport {
        num_query,
        num_gallery,
        dim,
        noise,
        threads: super::thread_count(opts.threads),
        block: opts.block,
        rerank: opts.rerank.is_some(),
        best_seconds: seconds.iter().copied().fold(f64::INFINITY, f64::min),
        seconds,
        rank1: m.rank(1),
        map: m.map,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_bench_runs_and_scores_clustered_features_well() {
        let r = run(50, 300, 32, 1.0, 1, &MetricOptions::default(), 1).unwrap();
        assert_eq!(r.seconds.len(), 1);
        assert!(r.rank1 > 0.9, "{r:?}");
    }
}
