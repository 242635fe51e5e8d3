//! `crosscam bench detect --model A --model B …`: detector models side by side in one run, as
//! `bench embed` does for embedders. Every round runs each model once on the same batch of real
//! letterboxed frames, alternating the order between rounds; reported are the median time per
//! frame, frames/s, and each model's speed relative to the first (median of the per-round ratios,
//! and ratio of the medians). Only the ONNX Runtime run is timed (pre- and post-processing are
//! the same for every model of a family).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::frame::{Frame, Normalize};
use crate::models::{Manifest, ModelEntry};
use crate::runtime::{Runtime, SessionOptions};

#[derive(Clone, Debug)]
pub struct DetectBenchOptions {
    pub batch: usize,
    pub rounds: usize,
    pub warmup: usize,
    pub threads: usize,
    pub quiet: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct DetectBenchRow {
    pub model: String,
    pub file: String,
    pub quantized: Option<String>,
    pub median_ms_per_frame: f64,
    pub min_ms_per_frame: f64,
    pub max_ms_per_frame: f64,
    pub frames_per_s: f64,
    /// Median over rounds of (first model's time / this model's time).
    pub speedup: f64,
    pub speedup_of_medians: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct DetectBenchReport {
    pub device: String,
    pub batch: usize,
    pub rounds: usize,
    pub warmup: usize,
    pub threads: usize,
    pub frames: String,
    pub rows: Vec<DetectBenchRow>,
}

/// A model argument: a manifest name, or a file (its entry found by checksum, else the first
/// model's entry for pre-processing).
fn resolve(
    arg: &str,
    manifest: &Manifest,
    first: Option<&ModelEntry>,
) -> Result<(PathBuf, ModelEntry)> {
    if let Ok(e) = manifest.get(arg) {
        return Ok((manifest.verify_file(e)?, e.clone()));
    }
    let p = PathBuf::from(arg);
    anyhow::ensure!(
        p.is_file(),
        "--model {arg}: no such file and no model of that name in {}",
        manifest.path.display()
    );
    let sha = crate::models::sha256_file(&p).with_context(|| format!("cannot read {arg}"))?;
    let entry = match manifest
        .models
        .iter()
        .find(|m| m.sha256.eq_ignore_ascii_case(&sha))
    {
        Some(e) => e.clone(),
        None => {
            // a quantised file outside the manifest: the model it was made from says how to
            // prepare its input
            let model = crate::onnx::Model::load(&p)?;
            let from = model
                .metadata
                .iter()
                .find(|(k, _)| k == crate::quantize::META_SOURCE_SHA256)
                .map(|(_, v)| v.clone());
            match from.and_then(|s| {
                manifest
                    .models
                    .iter()
                    .find(|m| m.sha256.eq_ignore_ascii_case(&s))
            }) {
                Some(e) => e.clone(),
                None => first.cloned().ok_or_else(|| {
                    anyhow::anyhow!(
                        "{arg} is not in {}; give the float detector first (by name) so its pre-processing is used",
                        manifest.path.display()
                    )
                })?,
            }
        }
    };
    anyhow::ensure!(
        entry.role == crate::models::Role::Detector,
        "--model {arg}: '{}' is an embedder; use crosscam bench embed",
        entry.name
    );
    Ok((p, entry))
}

/// Times detector `models` side by side on `frames`.
pub fn detect_models(
    rt: &Runtime,
    manifest: &Manifest,
    models: &[String],
    frames: &[Frame],
    opts: &DetectBenchOptions,
) -> Result<DetectBenchReport> {
    anyhow::ensure!(!models.is_empty(), "give at least one --model");
    anyhow::ensure!(opts.batch > 0, "--batch must be at least 1");
    let sopts = SessionOptions {
        threads: opts.threads,
        cpu_only: false,
    };
    let mut sessions = Vec::new();
    let mut entries: Vec<(PathBuf, ModelEntry)> = Vec::new();
    let mut device = String::new();
    for m in models {
        let (path, entry) = resolve(m, manifest, entries.first().map(|e| &e.1))?;
        let (s, d) = rt
            .session(&path, sopts)
            .with_context(|| format!("cannot open {}", path.display()))?;
        device = d.to_string();
        sessions.push(s);
        entries.push((path, entry));
    }
    let batch_frames: Vec<&Frame> = (0..opts.batch).map(|i| &frames[i % frames.len()]).collect();
    let inputs: Vec<ndarray::Array4<f32>> = entries
        .iter()
        .map(|(_, e)| {
            let norm = Normalize {
                mean: e.input.mean,
                std: e.input.std,
                bgr: e.input.color.eq_ignore_ascii_case("BGR"),
            };
            crate::detect::nanodet::letterbox_batch(&batch_frames, e.input.hw().0, &norm).0
        })
        .collect();
    let times = super::rounds::interleaved(
        "bench detect rounds",
        models.len(),
        opts.warmup,
        opts.rounds,
        opts.quiet,
        |i| {
            let name = entries[i].1.input.name.clone();
            let x = ort::value::TensorRef::from_array_view(&inputs[i])?;
            let t = Instant::now();
            let out = sessions[i].run(ort::inputs![name.as_str() => x])?;
            let dt = t.elapsed().as_secs_f64() * 1e3 / opts.batch as f64;
            drop(out);
            Ok(dt)
        },
    )?;
    let timings = super::rounds::summarise(&times);
    let mut rows = Vec::new();
    for ((i, m), timing) in models.iter().enumerate().zip(&timings) {
        let quantized = crate::onnx::Model::load(&entries[i].0).ok().and_then(|m| {
            m.metadata
                .iter()
                .find(|(k, _)| k == crate::quantize::META_QUANTIZED)
                .map(|(_, v)| v.clone())
        });
        rows.push(DetectBenchRow {
            model: m.clone(),
            file: entries[i].0.display().to_string(),
            quantized,
            median_ms_per_frame: timing.median,
            min_ms_per_frame: timing.min,
            max_ms_per_frame: timing.max,
            frames_per_s: 1e3 / timing.median,
            speedup: timing.speedup,
            speedup_of_medians: 1.0,
        });
    }
    let base = rows[0].frames_per_s;
    for r in &mut rows {
        r.speedup_of_medians = r.frames_per_s / base;
    }
    Ok(DetectBenchReport {
        device,
        batch: opts.batch,
        rounds: opts.rounds,
        warmup: opts.warmup,
        threads: opts.threads,
        frames: format!(
            "{} frames of vtest.avi (5 fps samples, width 640)",
            frames.len()
        ),
        rows,
    })
}

pub fn render_detect(r: &DetectBenchReport) -> String {
    let mut s = format!(
        "device {}  batch {}  {} timed rounds (+{} warm-up), models interleaved; {}\n\n",
        r.device, r.batch, r.rounds, r.warmup, r.frames
    );
    s.push_str(
        "model                                     median ms/frame   min     max   frames/s   speed-up (paired / of medians)\n",
    );
    for row in &r.rows {
        let name = std::path::Path::new(&row.model)
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_else(|| row.model.clone());
        s.push_str(&format!(
            "{:<42} {:>14.1}  {:>6.1}  {:>6.1}  {:>8.1}   {:>6.2}x / {:.2}x\n",
            name,
            row.median_ms_per_frame,
            row.min_ms_per_frame,
            row.max_ms_per_frame,
            row.frames_per_s,
            row.speedup,
            row.speedup_of_medians
        ));
    }
    s
}
