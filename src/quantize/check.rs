//! The check every quantised model gets: the float and the int8 model side by side on data the
//! calibration did not use.
//!
//! - Embedder: rank-1 and mAP of both on a re-id dataset's query and gallery sets (the Market-1501
//!   protocol of `crosscam eval`), and the cosine between each image's float and int8 embedding.
//! - Detector: the int8 model's person boxes against the float model's on held-out frames: recall
//!   (float boxes found again at IoU ≥ 0.5) and precision (int8 boxes that match a float box),
//!   both at the tracker's score for starting tracks, and the cosine between the raw outputs.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;

use super::{CalibData, CalibSource, Target};
use crate::config::DetectSettings;
use crate::eval::dataset::Item;
use crate::eval::metrics::Label;
use crate::frame::Frame;
use crate::onnx::Model;
use crate::progress::Progress;
use crate::reid::Embedder;
use crate::runtime::{Runtime, SessionOptions};
use crate::track::Detection;

#[derive(Debug, Clone)]
pub struct CheckOptions {
    /// Most mAP points the int8 embedder may lose.
    pub max_map_drop: f64,
    /// Most box-recall points the int8 detector may lose.
    pub max_recall_drop: f64,
    /// Held-out frames for a detector.
    pub frames: usize,
    /// Scores of the boxes compared (the tracker's `high_score`).
    pub score: f32,
    pub fps: u32,
    pub width: u32,
    pub quiet: bool,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            max_map_drop: 1.0,
            max_recall_drop: 2.0,
            frames: 60,
            score: 0.45,
            fps: 2,
            width: 640,
            quiet: false,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct EmbedderScores {
    pub rank1: f64,
    #[serde(rename = "mAP")]
    pub map: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    /// `embedder` (rank-1 / mAP) or `detector` (box recall / precision).
    pub kind: String,
    pub data: String,
    /// How the check data is kept apart from the calibration data.
    pub held_out: String,
    pub samples: usize,
    /// Embedders: scores of each model (fractions).
    pub float: Option<EmbedderScores>,
    pub int8: Option<EmbedderScores>,
    /// Embedders: mAP points lost (float − int8, ×100).
    pub map_drop: Option<f64>,
    pub rank1_drop: Option<f64>,
    /// Detectors: int8 boxes against the float model's, in % (100 = every float box found).
    pub box_recall: Option<f64>,
    pub box_precision: Option<f64>,
    /// 100 − box_recall.
    pub recall_drop: Option<f64>,
    pub float_boxes: Option<usize>,
    pub int8_boxes: Option<usize>,
    pub score: Option<f32>,
    pub mean_cosine: f64,
    pub min_cosine: f64,
    pub tolerance: String,
    pub passed: bool,
    /// Reasons for care that do not fail the check.
    pub warnings: Vec<String>,
}

/// Mean cosine between float and int8 embeddings below which they must not be mixed.
pub const MIN_MIXABLE_COSINE: f64 = 0.98;

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (mut ab, mut aa, mut bb) = (0f64, 0f64, 0f64);
    for (&x, &y) in a.iter().zip(b) {
        ab += x as f64 * y as f64;
        aa += x as f64 * x as f64;
        bb += y as f64 * y as f64;
    }
    if aa == 0.0 && bb == 0.0 {
        1.0
    } else {
        ab / (aa.sqrt() * bb.sqrt()).max(1e-30)
    }
}

/// Runs the check of `quantized` (the int8 form of `target`) on `data` (a dataset for an
/// embedder; a video or a folder of frames for a detector).
pub fn check(
    target: &Target,
    quantized: &Model,
    calib: &CalibData,
    calib_source: &CalibSource,
    data: &Path,
    opts: &CheckOptions,
    rt: &Runtime,
) -> Result<CheckReport> {
    match target.role {
        crate::models::Role::Embedder => check_embedder(target, quantized, calib, data, opts, rt),
        crate::models::Role::Detector => {
            check_detector(target, quantized, calib, calib_source, data, opts, rt)
        }
    }
}

fn check_embedder(
    target: &Target,
    quantized: &Model,
    calib: &CalibData,
    dataset: &Path,
    opts: &CheckOptions,
    rt: &Runtime,
) -> Result<CheckReport> {
    let ds = crate::eval::Dataset::load(dataset, None).with_context(|| {
        format!(
            "--check {}: an embedder is checked on a re-id dataset (query/ and bounding_box_test/)",
            dataset.display()
        )
    })?;
    anyhow::ensure!(
        !ds.query.is_empty() && !ds.gallery.is_empty(),
        "--check {}: the dataset has no query or gallery images",
        dataset.display()
    );
    // held out: no check image may have been a calibration crop
    let canon = |p: &PathBuf| std::fs::canonicalize(p).unwrap_or_else(|_| p.clone());
    let used: HashSet<PathBuf> = calib.files.iter().map(canon).collect();
    let overlap = ds
        .query
        .iter()
        .chain(&ds.gallery)
        .filter(|i| used.contains(&canon(&i.path)))
        .count();
    anyhow::ensure!(
        overlap == 0,
        "--check {}: {overlap} of its query/gallery images were calibration crops; calibrate on other images (a dataset's train split: --dataset DIR) so the check is held out",
        dataset.display()
    );
    let spec = target.embedder.clone().expect("embedder spec");
    let mut float = Embedder::from_model(&target.model, rt, SessionOptions::default())?;
    float.spec = spec.clone();
    let mut int8 = Embedder::from_model(quantized, rt, SessionOptions::default())
        .context("ONNX Runtime cannot run the quantised model")?;
    int8.spec = spec;
    let total = 2 * (ds.query.len() + ds.gallery.len()) as u64;
    let mut progress = Progress::new("checking", total).quiet(opts.quiet);
    let batch = crate::eval::model::DEFAULT_BATCH;
    let mut feats = Vec::new();
    for e in [&mut float, &mut int8] {
        let q = crate::eval::model::embed_items(e, &ds.query, batch, &mut progress)?;
        let g = crate::eval::model::embed_items(e, &ds.gallery, batch, &mut progress)?;
        feats.push((q, g));
    }
    progress.finish();
    let ql: Vec<Label> = ds.query.iter().map(Item::label).collect();
    let gl: Vec<Label> = ds.gallery.iter().map(Item::label).collect();
    let mopts = crate::eval::MetricOptions::default();
    let mut scores = Vec::new();
    for (q, g) in &feats {
        let m = crate::eval::metrics::evaluate(q.view(), g.view(), &ql, &gl, &mopts)?;
        scores.push(EmbedderScores {
            rank1: m.rank(1),
            map: m.map,
        });
    }
    let mut cos = Vec::new();
    for (a, b) in [(&feats[0].0, &feats[1].0), (&feats[0].1, &feats[1].1)] {
        for (ra, rb) in a.rows().into_iter().zip(b.rows()) {
            cos.push(cosine(
                ra.as_slice().unwrap_or(&[]),
                rb.as_slice().unwrap_or(&[]),
            ));
        }
    }
    let map_drop = (scores[0].map - scores[1].map) * 100.0;
    let rank1_drop = (scores[0].rank1 - scores[1].rank1) * 100.0;
    let passed = map_drop <= opts.max_map_drop + 1e-9;
    let mean_cosine = cos.iter().sum::<f64>() / cos.len().max(1) as f64;
    let mut warnings = Vec::new();
    if mean_cosine < MIN_MIXABLE_COSINE {
        warnings.push(format!(
            "the int8 embeddings point elsewhere than the float ones (mean cosine {mean_cosine:.3} < {MIN_MIXABLE_COSINE}): \
             they rank people alike but must not be compared with float embeddings — promote it as a new model \
             (the gallery is re-embedded) and re-measure the linking thresholds; or use --method percentile or minmax"
        ));
    }
    Ok(CheckReport {
        kind: "embedder".into(),
        data: format!(
            "{}: {} queries, {} gallery images",
            dataset.display(),
            ds.query.len(),
            ds.gallery.len()
        ),
        held_out: if calib.files.is_empty() {
            "the calibration crops came from a video or a store, not from this dataset's files; if the dataset was built from the same footage, the same people may be in both (calibrate on the dataset's train split, --dataset DIR, for a strictly held-out check)".into()
        } else {
            format!(
                "none of the {} calibration crops is among the {} check images",
                calib.files.len(),
                ds.query.len() + ds.gallery.len()
            )
        },
        samples: ds.query.len() + ds.gallery.len(),
        float: Some(scores[0].clone()),
        int8: Some(scores[1].clone()),
        map_drop: Some(map_drop),
        rank1_drop: Some(rank1_drop),
        box_recall: None,
        box_precision: None,
        recall_drop: None,
        float_boxes: None,
        int8_boxes: None,
        score: None,
        mean_cosine,
        min_cosine: cos.iter().copied().fold(f64::INFINITY, f64::min),
        tolerance: format!("mAP drop ≤ {} points", opts.max_map_drop),
        passed,
        warnings,
    })
}

/// Greedy matching at IoU ≥ 0.5 (highest scores first): how many `reference` boxes a `found`
/// box matches.
pub fn matched_boxes(reference: &[Detection], found: &[Detection], iou: f32) -> usize {
    let mut used = vec![false; found.len()];
    let mut order: Vec<usize> = (0..reference.len()).collect();
    order.sort_by(|&a, &b| reference[b].score.total_cmp(&reference[a].score));
    let mut m = 0;
    for r in order {
        let best = found
            .iter()
            .enumerate()
            .filter(|(j, _)| !used[*j])
            .map(|(j, f)| (j, reference[r].bbox.iou(&f.bbox)))
            .filter(|(_, v)| *v >= iou)
            .max_by(|a, b| a.1.total_cmp(&b.1));
        if let Some((j, _)) = best {
            used[j] = true;
            m += 1;
        }
    }
    m
}

fn check_detector(
    target: &Target,
    quantized: &Model,
    calib: &CalibData,
    calib_source: &CalibSource,
    data: &Path,
    opts: &CheckOptions,
    rt: &Runtime,
) -> Result<CheckReport> {
    let entry = target.entry.clone().expect("detector entry");
    let same_video = matches!(calib_source, CalibSource::Video(v)
        if std::fs::canonicalize(v).ok() == std::fs::canonicalize(data).ok());
    let (frames, held_out): (Vec<Frame>, String) = if data.is_dir() {
        let used: HashSet<PathBuf> = calib
            .files
            .iter()
            .map(|p| std::fs::canonicalize(p).unwrap_or_else(|_| p.clone()))
            .collect();
        let files: Vec<PathBuf> = super::image_files(data)?
            .into_iter()
            .filter(|p| !used.contains(&std::fs::canonicalize(p).unwrap_or_else(|_| p.clone())))
            .collect();
        let files = super::spread(&files, opts.frames);
        let mut f = Vec::new();
        for p in &files {
            let img = image::open(p)
                .with_context(|| format!("cannot read image {}", p.display()))?
                .to_rgb8();
            f.push(Frame::from_image(&img));
        }
        (
            f,
            format!(
                "images of {} that were not calibration images",
                data.display()
            ),
        )
    } else {
        let skip: &[u64] = if same_video { &calib.frames } else { &[] };
        let f = super::video_frames(data, opts.fps, opts.width, opts.frames, skip)?;
        let held = if same_video {
            let clash = f.iter().filter(|x| calib.frames.contains(&x.seq)).count();
            anyhow::ensure!(clash == 0, "check frames overlap calibration frames");
            format!(
                "the same video: the {} calibration frames (sampled frames {}..={}) are skipped; check frames are sampled frames {}..={}",
                calib.frames.len(),
                calib.frames.first().copied().unwrap_or(0),
                calib.frames.last().copied().unwrap_or(0),
                f.first().map(|x| x.seq).unwrap_or(0),
                f.last().map(|x| x.seq).unwrap_or(0)
            )
        } else {
            "another video than the calibration's".into()
        };
        (f, held)
    };
    anyhow::ensure!(
        !frames.is_empty(),
        "--check {}: no held-out frames left (the calibration used them all); give more --check-frames room: fewer --samples, or another video",
        data.display()
    );
    let settings = DetectSettings {
        score_threshold: opts.score,
        ..DetectSettings::default()
    };
    let (fs, _) = rt.session_from_bytes(&target.model.to_bytes(), SessionOptions::default())?;
    let (qs, _) = rt
        .session_from_bytes(&quantized.to_bytes(), SessionOptions::default())
        .context("ONNX Runtime cannot run the quantised model")?;
    let mut float = crate::detect::nanodet::NanoDet::with_session(fs, &entry, &settings)?;
    let mut int8 = crate::detect::nanodet::NanoDet::with_session(qs, &entry, &settings)?;
    let mut progress = Progress::new("checking", frames.len() as u64).quiet(opts.quiet);
    let (mut nf, mut ni, mut matched) = (0usize, 0usize, 0usize);
    let mut cos = Vec::new();
    for f in &frames {
        let (fd, fr) = float.detect_raw(&[f], true)?;
        let (qd, qr) = int8.detect_raw(&[f], true)?;
        nf += fd[0].len();
        ni += qd[0].len();
        matched += matched_boxes(&fd[0], &qd[0], 0.5);
        cos.push(cosine(&fr[0], &qr[0]));
        progress.inc(1);
    }
    progress.finish();
    let recall = if nf == 0 {
        100.0
    } else {
        100.0 * matched as f64 / nf as f64
    };
    let precision = if ni == 0 {
        100.0
    } else {
        100.0 * matched as f64 / ni as f64
    };
    let recall_drop = 100.0 - recall;
    Ok(CheckReport {
        kind: "detector".into(),
        data: format!("{} ({} frames)", data.display(), frames.len()),
        held_out,
        samples: frames.len(),
        float: None,
        int8: None,
        map_drop: None,
        rank1_drop: None,
        box_recall: Some(recall),
        box_precision: Some(precision),
        recall_drop: Some(recall_drop),
        float_boxes: Some(nf),
        int8_boxes: Some(ni),
        score: Some(opts.score),
        mean_cosine: cos.iter().sum::<f64>() / cos.len().max(1) as f64,
        min_cosine: cos.iter().copied().fold(f64::INFINITY, f64::min),
        tolerance: format!(
            "box recall against the float model's boxes ≥ {} % (drop ≤ {} points)",
            100.0 - opts.max_recall_drop,
            opts.max_recall_drop
        ),
        passed: recall_drop <= opts.max_recall_drop + 1e-9,
        warnings: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::BBox;

    fn det(x: f32, s: f32) -> Detection {
        Detection {
            bbox: BBox::new(x, 0.0, x + 10.0, 20.0),
            score: s,
        }
    }

    #[test]
    fn boxes_match_once_at_iou_half() {
        let r = [det(0.0, 0.9), det(100.0, 0.8)];
        // one near the first box, one far from everything, a duplicate of the first
        let f = [det(1.0, 0.9), det(50.0, 0.5), det(0.5, 0.4)];
        assert_eq!(matched_boxes(&r, &f, 0.5), 1);
        assert_eq!(matched_boxes(&r, &r, 0.5), 2);
        assert_eq!(matched_boxes(&r, &[], 0.5), 0);
    }

    #[test]
    fn cosine_of_equal_and_opposite() {
        assert!((cosine(&[1.0, 2.0], &[2.0, 4.0]) - 1.0).abs() < 1e-12);
        assert!((cosine(&[1.0, 0.0], &[-1.0, 0.0]) + 1.0).abs() < 1e-12);
    }
}
