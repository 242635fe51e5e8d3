//! `crosscam bench linking`: how much an operator can trust the identities the linker makes,
//! measured end to end on recorded cameras with ground truth.
//!
//! Two *virtual cameras* are cut from one clip: each a time window of it, the second seen
//! through another view (mirrored, another crop and scale of the scene) and another camera's
//! optics and colours (brightness, contrast, colour cast, blur). Each camera is detected and
//! tracked on its own, the tracklets — their growing snapshots every `update_every` frames and
//! their final state, as the daemon's tracker reports them — are described by the embedder exactly
//! as the daemon's re-id stage does (quality-weighted mean of unit crop embeddings, the same
//! `reid.min_boxes` / `reid.min_crops`), and fed, in the order of their wall-clock times, to the
//! daemon's own [`Linker`] with the config's `[gallery]` and `[linking]`.
//!
//! Ground truth is the continuous clip tracked by the same detector and tracker (one person keeps
//! one id across the cut, since the clip is not cut there) — pseudo ground truth — or a
//! MOTChallenge ground-truth file of the clip given with `--gt`. A tracklet's person is the
//! ground-truth id its boxes, mapped back to the clip's pixels, overlap most (IoU ≥ 0.5, majority
//! of its boxes).
//!
//! Scores, per clip offset (the run-to-run spread comes from several offsets):
//! - global IDF1 / IDP / IDR as multi-camera tracking scores it (AI City Challenge MTMC): every
//!   ground-truth box visible in a camera against every box of a linked tracklet, per camera and
//!   frame at IoU ≥ 0.5, identities matched one-to-one across all cameras;
//! - precision / recall / F1 of cross-camera tracklet pairs given the same identity;
//! - identities per person, people per identity, and wrong merges (people too many in an
//!   identity), counted apart.
//!
//! Uncertain links are scored as *not* linked: they are provisional, waiting for more evidence
//! or an operator, and are counted in `uncertain`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::config::Config;
use crate::dataset::transform::{Transform, rescale};
use crate::eval::linking::{IdentityScores, Labelled, evaluate, identity_scores, majority};
use crate::eval::mot::{self as motm, Obj};
use crate::frame::{BBox, Frame};
use crate::gallery::{self, GalleryEvent, IdentityId, Linker};
use crate::progress::Progress;
use crate::reid::Embedder;
use crate::reid::service::weighted_descriptor;
use crate::track::Tracklet;
use crate::track::offline::{self, OfflineOptions};

/// Wall clock of the benchmark's first frame (any fixed epoch time works).
const WALL0_MS: i64 = 1_700_000_000_000;

/// How a virtual camera sees the clip's frames: mirrored or not, then a crop of the frame
/// (fractions cut off each side) scaled back to the full frame size, then a [`Transform`]
/// (colour, blur). Boxes map both ways between the camera's and the clip's pixels.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct View {
    pub mirror: bool,
    /// Fractions of the (mirrored) frame cut off: left, top, right, bottom.
    pub cut: [f32; 4],
    pub transform: Transform,
}

impl Default for View {
    fn default() -> Self {
        View {
            mirror: false,
            cut: [0.0; 4],
            transform: Transform::default(),
        }
    }
}

impl View {
    fn is_identity(&self) -> bool {
        !self.mirror && self.cut == [0.0; 4] && self.transform.is_identity()
    }

    /// The crop rectangle in mirrored-frame pixels: x, y, width, height.
    fn rect(&self, w: f32, h: f32) -> (f32, f32, f32, f32) {
        let [l, t, r, b] = self.cut;
        (l * w, t * h, (1.0 - l - r) * w, (1.0 - t - b) * h)
    }

    /// The frame as this camera sees it (same size, time and sequence number).
    pub fn apply(&self, f: &Frame) -> Frame {
        if self.is_identity() {
            return f.clone();
        }
        let mut img = f.to_image();
        if self.mirror {
            img = image::imageops::flip_horizontal(&img);
        }
        if self.cut != [0.0; 4] {
            let (x, y, cw, ch) = self.rect(f.width as f32, f.height as f32);
            let sub = image::imageops::crop_imm(
                &img,
                x.round() as u32,
                y.round() as u32,
                (cw.round() as u32).max(1),
                (ch.round() as u32).max(1),
            )
            .to_image();
            img = rescale(&sub, f.width, f.height);
        }
        let img = self.transform.apply(&img);
        let mut out = Frame::from_image(&img);
        out.pts = f.pts;
        out.seq = f.seq;
        out.wall_ms = f.wall_ms;
        out
    }

    /// A box of this camera's frame (`w × h`) in the clip's pixels.
    pub fn to_source(&self, b: &BBox, w: f32, h: f32) -> BBox {
        let (x, y, cw, ch) = self.rect(w, h);
        let (sx, sy) = (cw / w, ch / h);
        let (x1, x2) = (x + b.x1 * sx, x + b.x2 * sx);
        let (y1, y2) = (y + b.y1 * sy, y + b.y2 * sy);
        if self.mirror {
            BBox::new(w - x2, y1, w - x1, y2)
        } else {
            BBox::new(x1, y1, x2, y2)
        }
    }

    /// A box of the clip in this camera's frame, clipped to it; `None` when less than half of
    /// it is in view.
    pub fn from_source(&self, b: &BBox, w: f32, h: f32) -> Option<BBox> {
        let (x, y, cw, ch) = self.rect(w, h);
        let (mx1, mx2) = if self.mirror {
            (w - b.x2, w - b.x1)
        } else {
            (b.x1, b.x2)
        };
        let (sx, sy) = (w / cw, h / ch);
        let full = BBox::new(
            (mx1 - x) * sx,
            (b.y1 - y) * sy,
            (mx2 - x) * sx,
            (b.y2 - y) * sy,
        );
        let seen = full.clip(w, h);
        (full.area() > 0.0 && seen.area() >= 0.5 * full.area()).then_some(seen)
    }
}

/// One virtual camera: a window of the clip, when its first frame is seen (wall clock, relative
/// to the benchmark's start) and its view.
#[derive(Debug, Clone, Serialize)]
pub struct CameraPlan {
    pub name: String,
    pub start_s: f64,
    pub seconds: f64,
    pub wall_start_s: f64,
    pub view: View,
}

/// The camera pairs the benchmark knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum PairKind {
    /// Camera `a` sees 40 s of the clip as recorded; camera `b`, once `a` has finished, the
    /// clip from 20 s to 60 s: the people of the shared 20 s come back into another camera,
    /// mirrored, zoomed into a corner (≈ 1.3×), darker, bluer, flatter and blurred — another
    /// view and another camera.
    VtestHard,
    /// The demo's two cameras (`crosscam demo`) for 45 s: `entrance` as recorded and `plaza` 30 s
    /// ahead in the clip at the same wall time, mirrored, zoomed in 15 % off-centre, darker and
    /// warmer. Whoever crosses the plaza in its first 15 s turns up at the entrance 30 s later.
    Demo,
}

impl PairKind {
    /// The two cameras for a clip offset of `offset_s` seconds.
    pub fn cameras(self, offset_s: f64) -> [CameraPlan; 2] {
        match self {
            PairKind::VtestHard => [
                CameraPlan {
                    name: "a".into(),
                    start_s: offset_s,
                    seconds: 40.0,
                    wall_start_s: 0.0,
                    view: View::default(),
                },
                CameraPlan {
                    name: "b".into(),
                    start_s: offset_s + 20.0,
                    seconds: 40.0,
                    wall_start_s: 40.0,
                    view: View {
                        mirror: true,
                        cut: [0.22, 0.0, 0.0, 0.2],
                        transform: Transform {
                            brightness: 0.72,
                            contrast: 0.85,
                            cast: [0.88, 1.0, 1.15],
                            blur: 1.5,
                            scale: 1.0,
                        },
                    },
                },
            ],
            PairKind::Demo => [
                CameraPlan {
                    name: "entrance".into(),
                    start_s: offset_s,
                    seconds: 45.0,
                    wall_start_s: 0.0,
                    view: View::default(),
                },
                CameraPlan {
                    name: "plaza".into(),
                    start_s: offset_s + 30.0,
                    seconds: 45.0,
                    wall_start_s: 0.0,
                    view: View {
                        mirror: true,
                        // the demo's `videocrop left=40 right=75 top=30 bottom=56` of 768×576
                        cut: [40.0 / 768.0, 30.0 / 576.0, 75.0 / 768.0, 56.0 / 576.0],
                        transform: Transform {
                            brightness: 0.9,
                            contrast: 1.1,
                            cast: [1.06, 1.0, 0.9],
                            blur: 0.0,
                            scale: 1.0,
                        },
                    },
                },
            ],
        }
    }

    /// Clip seconds the pair needs after the offset.
    pub fn span_s(self) -> f64 {
        match self {
            PairKind::VtestHard => 60.0,
            PairKind::Demo => 75.0,
        }
    }
}

pub struct LinkingBenchOptions {
    pub video: PathBuf,
    pub pair: PairKind,
    /// Clip offsets (seconds): one run each; their spread is the run-to-run spread.
    pub offsets: Vec<f64>,
    /// MOTChallenge ground truth of the clip (frames from 1 at `gt_fps`, boxes in the clip's
    /// own pixels); `None` = pseudo ground truth from tracking the continuous clip.
    pub gt: Option<PathBuf>,
    pub gt_fps: f64,
    pub fps: u32,
    pub width: u32,
    /// Link thresholds of the precision–recall curve.
    pub thresholds: Vec<f32>,
    /// Write the first run's described observations, with their ground-truth person, here
    /// (JSON lines, [`Recorded`]): a fixture to replay the linker on without video or models.
    pub record: Option<PathBuf>,
    pub quiet: bool,
}

/// One described tracklet snapshot as the linker saw it, with its ground-truth person.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Recorded {
    pub camera: String,
    pub tracklet: u64,
    pub start_ms: i64,
    pub end_ms: i64,
    pub quality: f32,
    pub truth: Option<u64>,
    pub descriptor: Vec<f32>,
}

/// Replays recorded observations through a fresh daemon [`Linker`] and scores the final
/// identities of the tracklets with a ground-truth person (uncertain links stand alone). Also
/// returns those tracklets, labelled, in (camera, tracklet) order.
pub fn replay_recorded(
    gallery: &crate::config::GallerySettings,
    linking: &crate::config::LinkingSettings,
    recorded: &[Recorded],
) -> Result<(
    IdentityScores,
    crate::eval::linking::PairScores,
    Vec<Labelled>,
)> {
    let dim = recorded.first().map_or(0, |r| r.descriptor.len());
    let mut linker = Linker::new(gallery, linking, dim)?;
    let mut last: BTreeMap<(String, u64), (Decided, Option<u64>)> = BTreeMap::new();
    let mut merged: HashMap<IdentityId, IdentityId> = HashMap::new();
    for r in recorded {
        let out = linker.observe(&gallery::Observation {
            camera: r.camera.clone(),
            tracklet: r.tracklet,
            start_ms: r.start_ms,
            end_ms: r.end_ms,
            descriptor: r.descriptor.clone(),
            quality: r.quality,
        })?;
        for e in &out.events {
            if let GalleryEvent::IdentityMerged(m) = e {
                merged.insert(m.absorbed, m.kept);
            }
        }
        let d = Decided {
            identity: out.decision.identity(),
            uncertain: matches!(out.decision, gallery::Decision::Uncertain { .. }),
        };
        last.insert((r.camera.clone(), r.tracklet), (d, r.truth));
    }
    let mut items = Vec::new();
    for (lone, ((camera, _), (d, truth))) in last.into_iter().enumerate() {
        let Some(truth) = truth else { continue };
        let mut id = d.identity;
        while let Some(&next) = merged.get(&id) {
            id = next;
        }
        items.push(Labelled {
            camera,
            identity: if d.uncertain {
                -(lone as i64) - 1
            } else {
                id.0 as i64
            },
            truth,
        });
    }
    Ok((identity_scores(&items), evaluate(&items).linker, items))
}

fn record(path: &Path, gt: &Truth, cams: &[CameraRun], observations: &[Obs]) -> Result<()> {
    use std::io::Write;
    let truth: HashMap<(usize, u64), u64> = cams
        .iter()
        .enumerate()
        .flat_map(|(ci, cam)| {
            cam.tracklets
                .iter()
                .filter_map(move |t| truth_of(gt, cam, t).map(|p| ((ci, t.id), p)))
        })
        .collect();
    let mut f = std::io::BufWriter::new(
        std::fs::File::create(path)
            .with_context(|| format!("cannot write --record {}", path.display()))?,
    );
    for o in observations {
        let r = Recorded {
            camera: o.obs.camera.clone(),
            tracklet: o.obs.tracklet,
            start_ms: o.obs.start_ms - WALL0_MS,
            end_ms: o.obs.end_ms - WALL0_MS,
            quality: o.obs.quality,
            truth: truth.get(&(o.camera, o.obs.tracklet)).copied(),
            // 4 decimals keep similarities to ±0.001 and the fixture small
            descriptor: o
                .obs
                .descriptor
                .iter()
                .map(|v| (v * 1e4).round() / 1e4)
                .collect(),
        };
        writeln!(f, "{}", serde_json::to_string(&r)?)?;
    }
    f.flush()?;
    Ok(())
}

/// The scores of one run (or their mean over runs).
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct LinkScores {
    pub idf1: f64,
    pub idp: f64,
    pub idr: f64,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub wrong_merges: f64,
    pub ids_per_person: f64,
    pub people_per_id: f64,
    /// Tracklets with a descriptor and a ground-truth person (the scored ones).
    pub tracklets: f64,
    pub persons: f64,
    pub identities: f64,
    /// Cross-camera pairs of one person.
    pub true_pairs: f64,
    /// Cross-camera pairs given one identity.
    pub linked_pairs: f64,
    /// Scored tracklets whose last decision was `uncertain`.
    pub uncertain: f64,
    /// Automatic merges the linker made.
    pub merges: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct CurvePoint {
    pub threshold: f32,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub idf1: f64,
    pub wrong_merges: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct LinkRun {
    pub offset_s: f64,
    pub cameras: Vec<CameraPlan>,
    /// Cosine similarity of final tracklet descriptors across the two cameras.
    pub similarity: Similarity,
    pub scores: LinkScores,
    pub curve: Vec<CurvePoint>,
}

/// How alike the embedder makes tracklets across the cameras: the scale the link threshold
/// lives on.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Similarity {
    pub same_person_pairs: usize,
    pub same_person_median: f64,
    pub same_person_min: f64,
    pub different_pairs: usize,
    pub different_median: f64,
    pub different_p99: f64,
}

fn similarity(gt: &Truth, cams: &[CameraRun], observations: &[Obs]) -> Similarity {
    // the last (most complete) descriptor of each tracklet
    let mut last: HashMap<(usize, u64), &[f32]> = HashMap::new();
    for o in observations {
        last.insert((o.camera, o.obs.tracklet), &o.obs.descriptor);
    }
    let mut labelled: Vec<(usize, u64, &[f32])> = Vec::new();
    for (ci, cam) in cams.iter().enumerate() {
        for t in &cam.tracklets {
            if let (Some(d), Some(p)) = (last.get(&(ci, t.id)), truth_of(gt, cam, t)) {
                labelled.push((ci, p, d));
            }
        }
    }
    let (mut same, mut diff) = (Vec::new(), Vec::new());
    for i in 0..labelled.len() {
        for j in i + 1..labelled.len() {
            let (a, b) = (&labelled[i], &labelled[j]);
            if a.0 == b.0 {
                continue;
            }
            let s: f32 = a.2.iter().zip(b.2.iter()).map(|(x, y)| x * y).sum();
            if a.1 == b.1 {
                same.push(s as f64)
            } else {
                diff.push(s as f64)
            }
        }
    }
    let q = |v: &mut Vec<f64>, p: f64| {
        if v.is_empty() {
            return 0.0;
        }
        v.sort_by(f64::total_cmp);
        v[((v.len() - 1) as f64 * p).round() as usize]
    };
    Similarity {
        same_person_pairs: same.len(),
        same_person_median: q(&mut same, 0.5),
        same_person_min: q(&mut same, 0.0),
        different_pairs: diff.len(),
        different_median: q(&mut diff, 0.5),
        different_p99: q(&mut diff, 0.99),
    }
}

/// Minimum, maximum and sample standard deviation of a score over the runs.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Spread {
    pub min: f64,
    pub max: f64,
    pub std: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct LinkingBenchReport {
    pub pair: PairKind,
    pub embedder: String,
    pub video: String,
    pub ground_truth: String,
    pub threshold: f32,
    pub margin: f32,
    pub merge_similarity: f32,
    pub runs: Vec<LinkRun>,
    /// Means over the runs (wrong merges: the total over the runs).
    pub idf1: f64,
    pub idp: f64,
    pub idr: f64,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub wrong_merges: f64,
    pub ids_per_person: f64,
    pub people_per_id: f64,
    pub mean: LinkScores,
    pub spread: BTreeMap<String, Spread>,
    /// Mean over runs of each threshold's scores.
    pub curve: Vec<CurvePoint>,
}

/// Ground truth: per clip time (ms), the people's boxes in the clip's pixels (at the analysis
/// width).
type Truth = BTreeMap<i64, Vec<(u64, BBox)>>;

/// The nearest ground-truth time within 120 ms of `t` (frames sampled at another phase).
fn nearest(gt: &Truth, t: i64) -> Option<i64> {
    let lo = gt.range(t - 120..=t).next_back().map(|(k, _)| *k);
    let hi = gt.range(t..=t + 120).next().map(|(k, _)| *k);
    match (lo, hi) {
        (Some(a), Some(b)) => Some(if t - a <= b - t { a } else { b }),
        (a, b) => a.or(b),
    }
}

fn pseudo_truth(
    cfg: &Config,
    detector: &mut dyn crate::detect::Detector,
    video: &Path,
    opts: &LinkingBenchOptions,
) -> Result<(Truth, (u32, u32))> {
    let run = offline::run(
        video,
        detector,
        OfflineOptions {
            fps: Some(opts.fps),
            width: Some(opts.width),
            crops: false,
            quiet: opts.quiet,
            camera: "ground-truth".into(),
            track: cfg.track.clone(),
            ..OfflineOptions::default()
        },
    )?;
    let mut gt = Truth::new();
    for t in &run.tracklets {
        for b in &t.boxes {
            gt.entry(b.pts.as_millis() as i64)
                .or_default()
                .push((t.id, b.bbox));
        }
    }
    Ok((gt, run.size))
}

/// A MOTChallenge ground-truth file (`frame,id,x,y,w,h,…`), scaled to the analysis size.
fn file_truth(path: &Path, fps: f64, scale: f32) -> Result<Truth> {
    let rows = crate::track::mot::read(path)
        .with_context(|| format!("--gt {}: not a MOTChallenge file", path.display()))?;
    anyhow::ensure!(!rows.is_empty(), "--gt {}: no rows", path.display());
    let mut gt = Truth::new();
    for r in rows {
        anyhow::ensure!(
            r.id >= 0,
            "--gt {}: frame {} has id {}; ground truth needs person ids ≥ 0",
            path.display(),
            r.frame,
            r.id
        );
        let t = ((r.frame.max(1) - 1) as f64 / fps * 1000.0).round() as i64;
        let b = r.bbox;
        gt.entry(t).or_default().push((
            r.id as u64,
            BBox::new(b.x1 * scale, b.y1 * scale, b.x2 * scale, b.y2 * scale),
        ));
    }
    Ok(gt)
}

/// The ground-truth person of a camera's tracklet: the one most of its boxes (mapped back to
/// the clip's pixels) overlap at IoU ≥ 0.5, if at least half of its boxes (and 2) agree.
fn truth_of(gt: &Truth, cam: &CameraRun, t: &Tracklet) -> Option<u64> {
    let (w, h) = (cam.size.0 as f32, cam.size.1 as f32);
    let votes: Vec<u64> = t
        .boxes
        .iter()
        .filter_map(|b| {
            let ms = b.pts.as_millis() as i64;
            let src = cam.plan.view.to_source(&b.bbox, w, h);
            gt.get(&nearest(gt, ms)?)?
                .iter()
                .map(|(id, g)| (g.iou(&src), *id))
                .max_by(|a, b| a.0.total_cmp(&b.0))
                .filter(|(iou, _)| *iou >= 0.5)
                .map(|(_, id)| id)
        })
        .collect();
    majority(&votes, t.boxes.len().div_ceil(2).max(2))
}

/// One observation for the linker: a tracklet snapshot, described.
struct Obs {
    camera: usize,
    obs: gallery::Observation,
}

/// What one camera's tracking gave: its final tracklets and the described observations.
struct CameraRun {
    plan: CameraPlan,
    tracklets: Vec<Tracklet>,
    size: (u32, u32),
}

fn wall_ms(plan: &CameraPlan, pts: Duration) -> i64 {
    WALL0_MS + ((plan.wall_start_s + pts.as_secs_f64() - plan.start_s) * 1000.0).round() as i64
}

/// Runs the benchmark: every offset, the default threshold and the curve.
pub fn linking(cfg: &Config, opts: &LinkingBenchOptions) -> Result<LinkingBenchReport> {
    anyhow::ensure!(!opts.offsets.is_empty(), "--offsets: give at least one");
    for &o in &opts.offsets {
        anyhow::ensure!(
            o.is_finite() && o >= 0.0,
            "--offsets: {o} is not a clip time in seconds ≥ 0"
        );
    }
    anyhow::ensure!(
        opts.fps >= 1 && opts.width >= 64,
        "--fps must be ≥ 1 and --width ≥ 64"
    );
    let rt = crate::runtime::init(&cfg.runtime)?;
    let manifest = crate::models::Manifest::load(&cfg.models.manifest)?;
    let mut detector = crate::detect::open(
        &manifest,
        &cfg.models.detector,
        rt,
        &cfg.detect,
        Default::default(),
    )?;
    let mut embedder = Embedder::open(
        &cfg.models.embedder,
        &manifest,
        rt,
        crate::runtime::SessionOptions::default(),
    )?;
    // the daemon's linking values: the config's, else the embedder's calibration
    let mut linking = cfg.linking.clone();
    linking.calibrate(
        manifest
            .get(&cfg.models.embedder)
            .ok()
            .and_then(|m| m.linking.as_ref()),
    );

    let (gt, size) = pseudo_truth(cfg, detector.as_mut(), &opts.video, opts)?;
    let clip_s = gt.keys().next_back().copied().unwrap_or(0) as f64 / 1000.0;
    let (gt, gt_name) = match &opts.gt {
        None => (
            gt,
            "pseudo: the continuous clip tracked by the same detector and tracker".to_string(),
        ),
        Some(p) => {
            // the file's boxes are in the clip's own pixels; the analysis scales to --width
            let src = crate::ingest::VideoReader::open(&opts.video, Some(1), None)?
                .next()
                .context("the video has no frames")??;
            let scale = size.0 as f32 / src.width.max(1) as f32;
            (
                file_truth(p, opts.gt_fps, scale)?,
                format!("MOTChallenge file {}", p.display()),
            )
        }
    };
    for &o in &opts.offsets {
        anyhow::ensure!(
            o + opts.pair.span_s() <= clip_s + 1.0,
            "--offsets: {o} s + the pair's {} s runs past the clip's end ({clip_s:.1} s)",
            opts.pair.span_s()
        );
    }

    let mut runs = Vec::new();
    let mut progress = Progress::new("bench linking", opts.offsets.len() as u64).quiet(opts.quiet);
    for &offset in &opts.offsets {
        let mut cams = Vec::new();
        for plan in opts.pair.cameras(offset) {
            let view = plan.view;
            let run = offline::run(
                &opts.video,
                detector.as_mut(),
                OfflineOptions {
                    fps: Some(opts.fps),
                    width: Some(opts.width),
                    window: Some((
                        Duration::from_secs_f64(plan.start_s),
                        Duration::from_secs_f64(plan.start_s + plan.seconds),
                    )),
                    transform: Some(Box::new(move |f: &Frame| view.apply(f))),
                    camera: plan.name.clone(),
                    track: cfg.track.clone(),
                    // the daemon's detection schedule, so that its effect on linking is measured
                    gate: (&cfg.analysis).into(),
                    crops: true,
                    updates: true,
                    quiet: true,
                    max_frames: None,
                },
            )?;
            let mut snapshots = run.updates;
            snapshots.extend(run.tracklets.iter().cloned());
            cams.push((
                CameraRun {
                    plan,
                    tracklets: run.tracklets,
                    size: run.size,
                },
                snapshots,
            ));
        }
        let observations = describe(&mut embedder, cfg, &cams)?;
        let cams: Vec<CameraRun> = cams.into_iter().map(|(c, _)| c).collect();
        if let Some(p) = &opts.record
            && runs.is_empty()
        {
            record(p, &gt, &cams, &observations)?;
        }
        let score_at = |l: &crate::config::LinkingSettings| -> Result<LinkScores> {
            let decided = replay(cfg, l, embedder.spec.dim, &observations)?;
            Ok(score(&gt, &cams, &decided))
        };
        let scores = score_at(&linking)?;
        let mut curve = Vec::new();
        for &t in &opts.thresholds {
            let mut l = linking.clone();
            // the merge bar keeps its distance above the link threshold
            l.merge_similarity = t + (linking.merge_similarity - linking.threshold);
            l.threshold = t;
            let s = score_at(&l)?;
            curve.push(CurvePoint {
                threshold: t,
                precision: s.precision,
                recall: s.recall,
                f1: s.f1,
                idf1: s.idf1,
                wrong_merges: s.wrong_merges,
            });
        }
        runs.push(LinkRun {
            offset_s: offset,
            similarity: similarity(&gt, &cams, &observations),
            cameras: cams.iter().map(|c| c.plan.clone()).collect(),
            scores,
            curve,
        });
        progress.inc(1);
    }
    progress.finish();
    Ok(report(opts, cfg, &linking, gt_name, runs))
}

/// Embeds every snapshot's crops (each crop once) and makes the daemon's descriptors.
fn describe(
    embedder: &mut Embedder,
    cfg: &Config,
    cams: &[(CameraRun, Vec<Tracklet>)],
) -> Result<Vec<Obs>> {
    let mut cache: HashMap<(usize, u64, u64), Vec<f32>> = HashMap::new();
    let mut out = Vec::new();
    let s = &cfg.reid;
    for (ci, (cam, snaps)) in cams.iter().enumerate() {
        let mut todo: Vec<((usize, u64, u64), std::sync::Arc<image::RgbImage>)> = Vec::new();
        for t in snaps
            .iter()
            .filter(|t| t.boxes.len() >= s.min_boxes && t.crops.len() >= s.min_crops)
        {
            for c in &t.crops {
                let k = (ci, t.id, c.seq);
                if !cache.contains_key(&k) && !todo.iter().any(|(x, _)| *x == k) {
                    todo.push((k, c.image.clone()));
                }
            }
        }
        for chunk in todo.chunks(s.max_batch.max(1)) {
            let images: Vec<image::RgbImage> = chunk.iter().map(|(_, i)| (**i).clone()).collect();
            let e = embedder.embed_images(&images)?;
            for ((k, _), row) in chunk.iter().zip(e.rows()) {
                cache.insert(*k, row.to_vec());
            }
        }
        for t in snaps
            .iter()
            .filter(|t| t.boxes.len() >= s.min_boxes && t.crops.len() >= s.min_crops)
        {
            let embs: Vec<(&[f32], f32)> = t
                .crops
                .iter()
                .filter_map(|c| {
                    cache
                        .get(&(ci, t.id, c.seq))
                        .map(|e| (e.as_slice(), c.quality))
                })
                .collect();
            let Some(d) = weighted_descriptor(&embs) else {
                continue;
            };
            let quality = t.crops.iter().map(|c| c.quality).sum::<f32>() / t.crops.len() as f32;
            let (Some(first), Some(last)) = (t.boxes.first(), t.boxes.last()) else {
                continue;
            };
            out.push(Obs {
                camera: ci,
                obs: gallery::Observation {
                    camera: cam.plan.name.clone(),
                    tracklet: t.id,
                    start_ms: wall_ms(&cam.plan, first.pts),
                    end_ms: wall_ms(&cam.plan, last.pts),
                    descriptor: d,
                    quality,
                },
            });
        }
    }
    // the order the daemon would see them in: by wall time of the last box, a tracklet's
    // snapshots in growing order
    out.sort_by(|a, b| {
        (a.obs.end_ms, a.camera, a.obs.tracklet).cmp(&(b.obs.end_ms, b.camera, b.obs.tracklet))
    });
    Ok(out)
}

/// A tracklet's final identity after the replay, and whether that link is uncertain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Decided {
    pub identity: IdentityId,
    pub uncertain: bool,
}

pub(crate) struct Replay {
    pub decided: HashMap<(usize, u64), Decided>,
    pub merges: usize,
}

/// Feeds the observations to a fresh daemon [`Linker`] and follows every tracklet to its final
/// identity through the linker's merges.
fn replay(
    cfg: &Config,
    linking: &crate::config::LinkingSettings,
    dim: usize,
    observations: &[Obs],
) -> Result<Replay> {
    let mut linker = Linker::new(&cfg.gallery, linking, dim)?;
    let mut decided: HashMap<(usize, u64), Decided> = HashMap::new();
    let mut merged: HashMap<IdentityId, IdentityId> = HashMap::new();
    let mut merges = 0;
    for o in observations {
        let out = linker.observe(&o.obs)?;
        let uncertain = matches!(out.decision, gallery::Decision::Uncertain { .. });
        decided.insert(
            (o.camera, o.obs.tracklet),
            Decided {
                identity: out.decision.identity(),
                uncertain,
            },
        );
        for e in &out.events {
            if let GalleryEvent::IdentityMerged(m) = e {
                merged.insert(m.absorbed, m.kept);
                merges += 1;
            }
        }
    }
    for d in decided.values_mut() {
        let mut id = d.identity;
        // merges form chains (a → b → c); ids only ever merge into another id once
        for _ in 0..=merged.len() {
            match merged.get(&id) {
                Some(&next) => id = next,
                None => break,
            }
        }
        d.identity = id;
    }
    Ok(Replay { decided, merges })
}

/// Scores one replay against the ground truth.
fn score(gt: &Truth, cams: &[CameraRun], r: &Replay) -> LinkScores {
    let mut items = Vec::new();
    let mut uncertain = 0usize;
    // global identities of the scored boxes: uncertain tracklets stand alone
    let mut hyp: BTreeMap<u64, Vec<Obj>> = BTreeMap::new();
    let mut truth_boxes: BTreeMap<u64, Vec<Obj>> = BTreeMap::new();
    let mut lone = 0i64;
    let frame_key = |ci: usize, t: i64| ci as u64 * 100_000_000 + t.max(0) as u64;
    for (ci, cam) in cams.iter().enumerate() {
        let (w, h) = (cam.size.0 as f32, cam.size.1 as f32);
        // ground truth visible in this camera, in its pixels
        let from = (cam.plan.start_s * 1000.0).round() as i64;
        let to = ((cam.plan.start_s + cam.plan.seconds) * 1000.0).round() as i64;
        for (&t, people) in gt.range(from..to) {
            let objs: Vec<Obj> = people
                .iter()
                .filter_map(|(id, b)| {
                    cam.plan
                        .view
                        .from_source(b, w, h)
                        .map(|bbox| Obj { id: *id, bbox })
                })
                .collect();
            truth_boxes.insert(frame_key(ci, t), objs);
        }
        for t in &cam.tracklets {
            let Some(d) = r.decided.get(&(ci, t.id)) else {
                continue;
            };
            let identity = if d.uncertain {
                lone -= 1;
                lone
            } else {
                d.identity.0 as i64
            };
            for b in &t.boxes {
                let ms = b.pts.as_millis() as i64;
                let key = nearest(gt, ms).unwrap_or(ms);
                hyp.entry(frame_key(ci, key)).or_default().push(Obj {
                    // identities are ≥ 0 and lone ones < 0: keep both apart as u64
                    id: identity as u64,
                    bbox: b.bbox,
                });
            }
            if let Some(truth) = truth_of(gt, cam, t) {
                uncertain += d.uncertain as usize;
                items.push(Labelled {
                    camera: cam.plan.name.clone(),
                    identity,
                    truth,
                });
            }
        }
    }
    let pairs = evaluate(&items).linker;
    let ids: IdentityScores = identity_scores(&items);
    let m = motm::evaluate(&truth_boxes, &hyp, 0.5);
    LinkScores {
        idf1: m.idf1,
        idp: m.idp,
        idr: m.idr,
        precision: pairs.precision,
        recall: pairs.recall,
        f1: pairs.f1,
        wrong_merges: ids.wrong_merges as f64,
        ids_per_person: ids.ids_per_person,
        people_per_id: ids.people_per_id,
        tracklets: items.len() as f64,
        persons: ids.persons as f64,
        identities: ids.identities as f64,
        true_pairs: pairs.true_pairs as f64,
        linked_pairs: pairs.linked_pairs as f64,
        uncertain: uncertain as f64,
        merges: r.merges as f64,
    }
}

/// Reads one score out of [`LinkScores`].
type Score = fn(&LinkScores) -> f64;

fn spread(v: &[f64]) -> Spread {
    let n = v.len().max(1) as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = if v.len() > 1 {
        v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    Spread {
        min: v.iter().copied().fold(f64::INFINITY, f64::min),
        max: v.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        std: var.sqrt(),
    }
}

fn report(
    opts: &LinkingBenchOptions,
    cfg: &Config,
    linking: &crate::config::LinkingSettings,
    ground_truth: String,
    runs: Vec<LinkRun>,
) -> LinkingBenchReport {
    let n = runs.len().max(1) as f64;
    let field =
        |f: fn(&LinkScores) -> f64| -> Vec<f64> { runs.iter().map(|r| f(&r.scores)).collect() };
    let mean_of = |f: fn(&LinkScores) -> f64| field(f).iter().sum::<f64>() / n;
    let mean = LinkScores {
        idf1: mean_of(|s| s.idf1),
        idp: mean_of(|s| s.idp),
        idr: mean_of(|s| s.idr),
        precision: mean_of(|s| s.precision),
        recall: mean_of(|s| s.recall),
        f1: mean_of(|s| s.f1),
        wrong_merges: mean_of(|s| s.wrong_merges),
        ids_per_person: mean_of(|s| s.ids_per_person),
        people_per_id: mean_of(|s| s.people_per_id),
        tracklets: mean_of(|s| s.tracklets),
        persons: mean_of(|s| s.persons),
        identities: mean_of(|s| s.identities),
        true_pairs: mean_of(|s| s.true_pairs),
        linked_pairs: mean_of(|s| s.linked_pairs),
        uncertain: mean_of(|s| s.uncertain),
        merges: mean_of(|s| s.merges),
    };
    let mut sp = BTreeMap::new();
    let named: [(&str, Score); 8] = [
        ("idf1", |s| s.idf1),
        ("idp", |s| s.idp),
        ("idr", |s| s.idr),
        ("precision", |s| s.precision),
        ("recall", |s| s.recall),
        ("f1", |s| s.f1),
        ("wrong_merges", |s| s.wrong_merges),
        ("ids_per_person", |s| s.ids_per_person),
    ];
    for (k, f) in named {
        sp.insert(k.to_string(), spread(&field(f)));
    }
    let curve = opts
        .thresholds
        .iter()
        .enumerate()
        .map(|(i, &t)| {
            let at =
                |f: fn(&CurvePoint) -> f64| runs.iter().map(|r| f(&r.curve[i])).sum::<f64>() / n;
            CurvePoint {
                threshold: t,
                precision: at(|c| c.precision),
                recall: at(|c| c.recall),
                f1: at(|c| c.f1),
                idf1: at(|c| c.idf1),
                wrong_merges: at(|c| c.wrong_merges),
            }
        })
        .collect();
    LinkingBenchReport {
        pair: opts.pair,
        embedder: cfg.models.embedder.clone(),
        video: opts.video.display().to_string(),
        ground_truth,
        threshold: linking.threshold,
        margin: linking.margin,
        merge_similarity: linking.merge_similarity,
        idf1: mean.idf1,
        idp: mean.idp,
        idr: mean.idr,
        precision: mean.precision,
        recall: mean.recall,
        f1: mean.f1,
        wrong_merges: runs.iter().map(|r| r.scores.wrong_merges).sum(),
        ids_per_person: mean.ids_per_person,
        people_per_id: mean.people_per_id,
        mean,
        spread: sp,
        curve,
        runs,
    }
}

/// The report as a table.
pub fn render_linking(r: &LinkingBenchReport) -> String {
    let mut s = format!(
        "bench linking: pair {:?}, embedder {}, threshold {:.3} (margin {:.3}, merge {:.3})\nground truth: {}\n\n",
        r.pair, r.embedder, r.threshold, r.margin, r.merge_similarity, r.ground_truth
    );
    s.push_str("| offset s | tracklets | people | identities | IDF1 | IDP | IDR | pair P | pair R | pair F1 | wrong merges | ids/person | people/id | uncertain | auto merges |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    let row = |label: String, x: &LinkScores| {
        format!(
            "| {label} | {:.1} | {:.1} | {:.1} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.1} | {:.2} | {:.2} | {:.1} | {:.1} |\n",
            x.tracklets,
            x.persons,
            x.identities,
            x.idf1,
            x.idp,
            x.idr,
            x.precision,
            x.recall,
            x.f1,
            x.wrong_merges,
            x.ids_per_person,
            x.people_per_id,
            x.uncertain,
            x.merges
        )
    };
    for run in &r.runs {
        s.push_str(&row(format!("{}", run.offset_s), &run.scores));
    }
    s.push_str(&row("**mean**".into(), &r.mean));
    s.push_str(&format!(
        "\nspread over {} runs (min–max, sd): IDF1 {:.3}–{:.3} ({:.3}), pair precision {:.3}–{:.3}, pair F1 {:.3}–{:.3}; wrong merges in all runs: {}\n",
        r.runs.len(),
        r.spread["idf1"].min,
        r.spread["idf1"].max,
        r.spread["idf1"].std,
        r.spread["precision"].min,
        r.spread["precision"].max,
        r.spread["f1"].min,
        r.spread["f1"].max,
        r.wrong_merges
    ));
    s
}

/// The precision–recall curve over the link threshold, one line per run and their mean.
pub fn curve_svg(r: &LinkingBenchReport) -> String {
    use crate::plot::{Chart, Legend, Series};
    let mut c = Chart::new(format!(
        "cross-camera pairs, {:?}, {} (threshold {:.2}–{:.2})",
        r.pair,
        r.embedder,
        r.curve.first().map_or(0.0, |p| p.threshold),
        r.curve.last().map_or(0.0, |p| p.threshold)
    ))
    .x_label("recall")
    .y_label("precision")
    .x_range(0.0, 1.0)
    .y_range(0.0, 1.0)
    .legend(Legend::TopRight);
    for run in &r.runs {
        c.push(
            Series::line(
                format!("offset {} s", run.offset_s),
                run.curve.iter().map(|p| (p.recall, p.precision)).collect(),
            )
            .dashed(),
        );
    }
    c.push(
        Series::line(
            "mean",
            r.curve.iter().map(|p| (p.recall, p.precision)).collect(),
        )
        .markers(),
    );
    c.push(
        Series::scatter(
            format!("default threshold {:.2}", r.threshold),
            vec![(r.recall, r.precision)],
        )
        .color("#d62728"),
    );
    c.to_svg()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn views_map_boxes_both_ways() {
        let v = PairKind::VtestHard.cameras(0.0)[1].view;
        let (w, h) = (640.0, 480.0);
        let b = BBox::new(300.0, 100.0, 340.0, 200.0);
        let src = v.to_source(&b, w, h);
        let back = v.from_source(&src, w, h).unwrap();
        assert!(back.iou(&b) > 0.999, "{b:?} → {src:?} → {back:?}");
        // mirrored after cutting 22 % off the left and 20 % off the bottom: x = 640 − (140.8 +
        // 0.78·x'), y = 0.8·y'
        let want = BBox::new(
            640.0 - (140.8 + 0.78 * 340.0),
            80.0,
            640.0 - (140.8 + 0.78 * 300.0),
            160.0,
        );
        assert!(src.iou(&want) > 0.999, "{src:?} vs {want:?}");
        // a box of the cut-off corner is not in view
        assert!(
            v.from_source(&BBox::new(5.0, 440.0, 30.0, 478.0), w, h)
                .is_none()
        );
        let plain = View::default();
        assert_eq!(plain.to_source(&b, w, h), b);
    }

    #[test]
    fn the_view_transform_moves_pixels_where_the_box_map_says() {
        // one bright pixel block in the source shows up where from_source puts it
        let (w, h) = (64u32, 48u32);
        let mut img = image::RgbImage::new(w, h);
        for y in 10..20 {
            for x in 40..50 {
                img.put_pixel(x, y, image::Rgb([255, 255, 255]));
            }
        }
        let v = View {
            mirror: true,
            cut: [0.25, 0.0, 0.0, 0.25],
            transform: Transform::default(),
        };
        let out = v.apply(&Frame::from_image(&img));
        let b = v
            .from_source(&BBox::new(40.0, 10.0, 50.0, 20.0), w as f32, h as f32)
            .unwrap();
        let (cx, cy) = b.center();
        assert!(out.pixel(cx as u32, cy as u32)[0] > 200, "{b:?}");
        assert!(out.pixel(2, 2)[0] < 50);
    }
}
