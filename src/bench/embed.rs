//! `crosscam bench`: speed measurements that are fair under a noisy, shared machine.
//!
//! `bench embed` times several embedding models side by side in one process: every round runs each
//! model once on the same batch, alternating the order between rounds (A B, B A, …), so that load
//! from other processes, frequency changes and cache effects fall on all models alike. Reported:
//! median batch time, crops per second, and each model's speed relative to the first — the median
//! of the per-round time ratios (runs seconds apart share the machine's load), and the ratio of
//! the medians.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use ndarray::Array4;
use serde::Serialize;

use crate::reid::Embedder;
use crate::runtime::{Runtime, SessionOptions};

#[derive(Clone, Debug)]
pub struct EmbedBenchOptions {
    pub batch: usize,
    /// Timed rounds (each runs every model once).
    pub rounds: usize,
    /// Untimed rounds first (session warm-up, memory arenas).
    pub warmup: usize,
    /// Intra-op threads per session; 0 = the runtime default (one per core).
    pub threads: usize,
    pub quiet: bool,
}

impl Default for EmbedBenchOptions {
    fn default() -> EmbedBenchOptions {
        EmbedBenchOptions {
            batch: 16,
            rounds: 20,
            warmup: 2,
            threads: 0,
            quiet: false,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct EmbedBenchRow {
    pub model: String,
    /// C, H, W of the model input.
    pub input: [usize; 3],
    /// Output dimension.
    pub dim: usize,
    /// MACs per crop (conv + linear layers), when they can be counted.
    pub macs: Option<u64>,
    pub median_ms: f64,
    pub min_ms: f64,
    pub max_ms: f64,
    pub crops_per_s: f64,
    /// Speed relative to the first model: the median over rounds of (first model's time / this
    /// model's time) within the same round. Pairing runs that were made seconds apart cancels
    /// most of the load noise of a shared machine.
    pub speedup: f64,
    /// Speed relative to the first model from the medians alone (crops/s ratio).
    pub speedup_of_medians: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct EmbedBenchReport {
    pub device: String,
    pub batch: usize,
    pub rounds: usize,
    pub warmup: usize,
    pub threads: usize,
    pub rows: Vec<EmbedBenchRow>,
}

/// Times `models` side by side (see the module docs).
pub fn embed(
    rt: &Runtime,
    models: &[PathBuf],
    opts: &EmbedBenchOptions,
) -> Result<EmbedBenchReport> {
    anyhow::ensure!(!models.is_empty(), "give at least one --model");
    anyhow::ensure!(opts.batch > 0, "--batch must be at least 1");
    let sopts = SessionOptions {
        threads: opts.threads,
        cpu_only: false,
    };
    let mut embedders = Vec::new();
    for m in models {
        let e = Embedder::from_file(m, rt, sopts)
            .with_context(|| format!("cannot open {}", m.display()))?;
        embedders.push(e);
    }
    // one input batch per distinct input size, deterministic pseudo-random values
    let inputs: Vec<Array4<f32>> = embedders
        .iter()
        .map(|e| {
            let mut state = 0x2545_f491_4f6c_dd1du64;
            Array4::from_shape_fn((opts.batch, 3, e.spec.height, e.spec.width), |_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 40) as f32 / (1u64 << 24) as f32 * 4.0 - 2.0
            })
        })
        .collect();
    let times = super::rounds::interleaved(
        "bench embed rounds",
        models.len(),
        opts.warmup,
        opts.rounds,
        opts.quiet,
        |i| {
            let t = Instant::now();
            let out = embedders[i].run(&inputs[i])?;
            let dt = t.elapsed().as_secs_f64() * 1e3;
            anyhow::ensure!(
                out.nrows() == opts.batch,
                "{}: wrong batch in output",
                models[i].display()
            );
            Ok(dt)
        },
    )?;
    let timings = super::rounds::summarise(&times);
    let mut rows: Vec<EmbedBenchRow> = Vec::new();
    for ((i, m), timing) in models.iter().enumerate().zip(&timings) {
        let median = timing.median;
        let crops = opts.batch as f64 / (median / 1e3);
        let macs = crate::onnx::info::model_info(m, None)
            .ok()
            .filter(|i| i.macs_complete)
            .map(|i| i.macs);
        let e = &embedders[i];
        rows.push(EmbedBenchRow {
            model: m.display().to_string(),
            input: [3, e.spec.height, e.spec.width],
            dim: e.spec.dim,
            macs,
            median_ms: median,
            min_ms: timing.min,
            max_ms: timing.max,
            crops_per_s: crops,
            speedup: timing.speedup,
            speedup_of_medians: 1.0,
        });
    }
    let base = rows[0].crops_per_s;
    for r in &mut rows {
        r.speedup_of_medians = r.crops_per_s / base;
    }
    Ok(EmbedBenchReport {
        device: embedders[0].device.to_string(),
        batch: opts.batch,
        rounds: opts.rounds,
        warmup: opts.warmup,
        threads: opts.threads,
        rows,
    })
}

pub fn render(r: &EmbedBenchReport) -> String {
    let mut s = format!(
        "device {}  batch {}  {} timed rounds (+{} warm-up), models interleaved\n\n",
        r.device, r.batch, r.rounds, r.warmup
    );
    s.push_str(
        "model                                       GMACs   median ms   min ms   max ms    crops/s   speed-up (paired / of medians)\n",
    );
    for row in &r.rows {
        let name = std::path::Path::new(&row.model)
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_else(|| row.model.clone());
        s.push_str(&format!(
            "{:<42} {:>6}  {:>10.1}  {:>7.1}  {:>7.1}  {:>9.1}   {:>6.2}x / {:.2}x\n",
            name,
            row.macs
                .map(|m| format!("{:.3}", m as f64 / 1e9))
                .unwrap_or_else(|| "?".into()),
            row.median_ms,
            row.min_ms,
            row.max_ms,
            row.crops_per_s,
            row.speedup,
            row.speedup_of_medians
        ));
    }
    s
}
