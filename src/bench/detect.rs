//! `crosscam bench detect --model A --model B …`: detector models side by side in one run, as
//! `bench embed` does for embedders. Every round runs each model once on the same batch of real
//! letterboxed frames, alternating the order between rounds; reported are the median time per
//! frame, frames/s, and each model's speed relative to the first (median of the per-round ratios,
//! and ratio of the medians). Only the ONNX Runtime run is timed (pre- and post-processing are
//! the same for every model of a family).
//!
//! With several `--input` placements (`square`, `fit`) or `--size`s, each model runs once per
//! placement and size in the same rounds, and every variant after the first is scored against the
//! first (the first model, placement and size): the share of the reference's person boxes
//! (score ≥ 0.3) it finds at IoU ≥ 0.5, and the share of its own boxes that match (box recall and
//! precision) on the benchmark's frames.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::config::{DetectInput, DetectSettings};
use crate::frame::Frame;
use crate::models::{Manifest, ModelEntry};
use crate::runtime::{Runtime, SessionOptions};

#[derive(Clone, Debug)]
pub struct DetectBenchOptions {
    pub batch: usize,
    pub rounds: usize,
    pub warmup: usize,
    pub threads: usize,
    pub quiet: bool,
    /// Placements of the frame in the input, each timed (default: square).
    pub inputs: Vec<DetectInput>,
    /// Input long sides, each timed (`None`: the model's own size).
    pub sizes: Vec<Option<u32>>,
}

#[derive(Clone, Debug, Serialize)]
pub struct DetectBenchRow {
    pub model: String,
    pub file: String,
    pub quantized: Option<String>,
    /// `square` or `fit`, and the input's width × height.
    pub input: String,
    pub input_size: [usize; 2],
    /// Against the first variant: box recall and precision (%), and the boxes.
    pub agreement: Option<BoxAgreement>,
    pub median_ms_per_frame: f64,
    pub min_ms_per_frame: f64,
    pub max_ms_per_frame: f64,
    pub frames_per_s: f64,
    /// Median over rounds of (first model's time / this model's time).
    pub speedup: f64,
    pub speedup_of_medians: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct BoxAgreement {
    pub recall: f64,
    pub precision: f64,
    pub reference_boxes: usize,
    pub boxes: usize,
    pub frames: usize,
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
    check: &[Frame],
    opts: &DetectBenchOptions,
) -> Result<DetectBenchReport> {
    anyhow::ensure!(!models.is_empty(), "give at least one --model");
    anyhow::ensure!(opts.batch > 0, "--batch must be at least 1");
    let sopts = SessionOptions {
        threads: opts.threads,
        cpu_only: false,
    };
    let inputs: Vec<DetectInput> = if opts.inputs.is_empty() {
        vec![DetectInput::Square]
    } else {
        opts.inputs.clone()
    };
    let mut entries: Vec<(PathBuf, ModelEntry)> = Vec::new();
    let mut device = String::new();
    for m in models {
        let (path, entry) = resolve(m, manifest, entries.first().map(|e| &e.1))?;
        entries.push((path, entry));
    }
    let batch_frames: Vec<&Frame> = (0..opts.batch).map(|i| &frames[i % frames.len()]).collect();
    let sizes: Vec<Option<u32>> = if opts.sizes.is_empty() {
        vec![None]
    } else {
        opts.sizes.clone()
    };
    // one timed variant per model, placement and size: its session and its prepared input
    struct Variant {
        model: usize,
        settings: DetectSettings,
        session: ort::session::Session,
        x: ndarray::Array4<f32>,
    }
    let mut variants = Vec::new();
    for (mi, (path, e)) in entries.iter().enumerate() {
        for &input in &inputs {
            for &size in &sizes {
                let (session, d) = rt
                    .session(path, sopts)
                    .with_context(|| format!("cannot open {}", path.display()))?;
                device = d.to_string();
                let settings = DetectSettings {
                    input,
                    size,
                    max_batch: opts.batch,
                    ..DetectSettings::default()
                };
                let det = crate::detect::nanodet::NanoDet::with_session(session, e, &settings)?;
                anyhow::ensure!(
                    input == DetectInput::Square || det.fits(),
                    "--input fit: the input size of {} is fixed, so frames are letterboxed to a square either way; fit needs a model whose input height and width are dynamic",
                    path.display()
                );
                let x = det.preprocess(&batch_frames).0;
                variants.push(Variant {
                    model: mi,
                    settings,
                    session: det.into_session(),
                    x,
                });
            }
        }
    }
    let times = super::rounds::interleaved(
        "bench detect rounds",
        variants.len(),
        opts.warmup,
        opts.rounds,
        opts.quiet,
        |i| {
            let v = &mut variants[i];
            let name = entries[v.model].1.input.name.clone();
            let x = ort::value::TensorRef::from_array_view(&v.x)?;
            let t = Instant::now();
            let out = v.session.run(ort::inputs![name.as_str() => x])?;
            let dt = t.elapsed().as_secs_f64() * 1e3 / opts.batch as f64;
            drop(out);
            Ok(dt)
        },
    )?;
    let timings = super::rounds::summarise(&times);
    // the first variant's people on the check frames, found once, against which every other
    // variant's are scored
    let reference = match variants.first() {
        Some(first) if variants.len() > 1 => {
            let (path, entry) = &entries[first.model];
            Some(people(rt, (path, entry, &first.settings), check)?)
        }
        _ => None,
    };
    let mut rows = Vec::new();
    for (v, timing) in variants.iter().zip(&timings) {
        let (path, entry) = &entries[v.model];
        let quantized = crate::onnx::Model::load(path).ok().and_then(|m| {
            m.metadata
                .iter()
                .find(|(k, _)| k == crate::quantize::META_QUANTIZED)
                .map(|(_, val)| val.clone())
        });
        let agreement = match &reference {
            Some(r) if !rows.is_empty() => Some(agreement(
                r,
                &people(rt, (path, entry, &v.settings), check)?,
            )),
            _ => None,
        };
        rows.push(DetectBenchRow {
            model: models[v.model].clone(),
            file: path.display().to_string(),
            quantized,
            input: v.settings.input.to_string(),
            input_size: [v.x.shape()[3], v.x.shape()[2]],
            agreement,
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
            "timed on {} frames of vtest.avi (5 fps samples, width {}); boxes compared on {} frames spread over the clip",
            frames.len(),
            frames.first().map_or(0, |f| f.width),
            check.len()
        ),
        rows,
    })
}

/// A detector variant: its file, its manifest entry and its settings.
type VariantRef<'a> = (&'a std::path::Path, &'a ModelEntry, &'a DetectSettings);

/// The person boxes (score ≥ 0.3) variant `v` finds on each of `frames`, one frame at a time.
fn people(
    rt: &Runtime,
    (path, entry, settings): VariantRef<'_>,
    frames: &[Frame],
) -> Result<Vec<Vec<crate::track::Detection>>> {
    let (s, _) = rt.session(path, SessionOptions::default())?;
    let settings = DetectSettings {
        max_batch: 1,
        ..settings.clone()
    };
    let mut det = crate::detect::nanodet::NanoDet::with_session(s, entry, &settings)?;
    frames
        .iter()
        .map(|f| {
            let mut d = det.detect_raw(&[f], false)?.0.remove(0);
            d.retain(|x| x.score >= 0.3);
            Ok(d)
        })
        .collect()
}

/// Boxes `found` against `reference`, frame by frame, matched at IoU ≥ 0.5.
fn agreement(
    reference: &[Vec<crate::track::Detection>],
    found: &[Vec<crate::track::Detection>],
) -> BoxAgreement {
    let (mut matched, mut na, mut nb) = (0, 0, 0);
    for (ra, rb) in reference.iter().zip(found) {
        matched += crate::quantize::check::matched_boxes(ra, rb, 0.5);
        na += ra.len();
        nb += rb.len();
    }
    let pct = |m: usize, n: usize| {
        if n == 0 {
            100.0
        } else {
            100.0 * m as f64 / n as f64
        }
    };
    BoxAgreement {
        recall: pct(matched, na),
        precision: pct(matched, nb),
        reference_boxes: na,
        boxes: nb,
        frames: reference.len(),
    }
}

pub fn render_detect(r: &DetectBenchReport) -> String {
    let mut s = format!(
        "device {}  batch {}  {} timed rounds (+{} warm-up), models interleaved; {}\n\n",
        r.device, r.batch, r.rounds, r.warmup, r.frames
    );
    s.push_str(
        "model                          input            median ms/frame   min     max   frames/s   speed-up (paired / of medians)   boxes vs first row (recall / precision)\n",
    );
    for row in &r.rows {
        let name = std::path::Path::new(&row.model)
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_else(|| row.model.clone());
        let agreement = row.agreement.as_ref().map_or(String::new(), |a| {
            format!(
                "{:.1} % / {:.1} % ({} / {} boxes, {} frames)",
                a.recall, a.precision, a.reference_boxes, a.boxes, a.frames
            )
        });
        s.push_str(&format!(
            "{:<30} {:<16} {:>14.1}  {:>6.1}  {:>6.1}  {:>8.1}   {:>6.2}x / {:.2}x   {}\n",
            name,
            format!("{} {}×{}", row.input, row.input_size[0], row.input_size[1]),
            row.median_ms_per_frame,
            row.min_ms_per_frame,
            row.max_ms_per_frame,
            row.frames_per_s,
            row.speedup,
            row.speedup_of_medians,
            agreement
        ));
    }
    s
}
