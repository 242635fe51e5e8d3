//! `crosscam bench tracking`: what detecting fewer frames (`[analysis] detect_every`,
//! `motion_gate`) costs the tracker. The video is tracked once per setting with the real detector
//! and tracker, exactly as `crosscam track --video` does; each run is scored with the CLEAR MOT and
//! identity metrics (MOTA, IDF1) against a MOTChallenge ground-truth file when one is given, else
//! against the every-frame run (then the numbers say how well a setting *agrees* with detecting
//! every frame, and the every-frame row scores 1 by construction).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::config::Config;
use crate::detect::gate::GateSettings;
use crate::eval::mot::{MotMetrics, Obj, evaluate};
use crate::track::mot::{self, MotRow};
use crate::track::offline::{self, OfflineOptions};

pub struct TrackingBenchOptions {
    pub video: PathBuf,
    /// MOTChallenge ground truth (`frame,id,x,y,w,h,…`, frames from 1 in the analysed sequence).
    pub gt: Option<PathBuf>,
    /// Analysed frames per second (None = every frame of the video).
    pub fps: Option<u32>,
    pub width: Option<u32>,
    /// Settings to compare, by name; the every-frame reference is added first.
    pub settings: Vec<(String, GateSettings)>,
    pub quiet: bool,
}

#[derive(Debug, Serialize)]
pub struct TrackingRow {
    pub name: String,
    pub detect_every: u32,
    pub motion_gate: bool,
    pub frames: u64,
    pub detected_frames: u64,
    /// Detected frames / frames.
    pub detector_share: f64,
    pub mota: f64,
    pub idf1: f64,
    pub idp: f64,
    pub idr: f64,
    pub id_switches: usize,
    pub hyp_ids: usize,
    /// IDF1 minus the every-frame run's IDF1 (against the same ground truth).
    pub idf1_delta: f64,
    pub mota_delta: f64,
    /// Wall seconds of the run (decoding, detection and tracking).
    pub seconds: f64,
}

#[derive(Debug, Serialize)]
pub struct TrackingBenchReport {
    pub video: String,
    /// "file: PATH" or "every-frame run".
    pub ground_truth: String,
    pub gt_ids: usize,
    pub rows: Vec<TrackingRow>,
}

/// Frame → objects, from MOTChallenge rows (rows with a negative id are skipped).
pub fn by_frame(rows: &[MotRow]) -> BTreeMap<u64, Vec<Obj>> {
    let mut m: BTreeMap<u64, Vec<Obj>> = BTreeMap::new();
    for r in rows.iter().filter(|r| r.id >= 0) {
        m.entry(r.frame).or_default().push(Obj {
            id: r.id as u64,
            bbox: r.bbox,
        });
    }
    m
}

/// The settings `crosscam bench tracking` compares by default: every 2nd and 3rd frame, the
/// motion gate, and both (motion values from `cfg`'s `[analysis]`).
pub fn default_settings(cfg: &Config) -> Vec<(String, GateSettings)> {
    let base = GateSettings {
        detect_every: 1,
        motion_gate: false,
        ..GateSettings::from(&cfg.analysis)
    };
    vec![
        (
            "detect_every=2".into(),
            GateSettings {
                detect_every: 2,
                ..base
            },
        ),
        (
            "detect_every=3".into(),
            GateSettings {
                detect_every: 3,
                ..base
            },
        ),
        (
            "motion_gate".into(),
            GateSettings {
                motion_gate: true,
                ..base
            },
        ),
        (
            "detect_every=2+motion_gate".into(),
            GateSettings {
                detect_every: 2,
                motion_gate: true,
                ..base
            },
        ),
    ]
}

pub fn tracking(cfg: &Config, o: &TrackingBenchOptions) -> anyhow::Result<TrackingBenchReport> {
    let rt = crate::runtime::init(&cfg.runtime)?;
    let manifest = crate::models::Manifest::load(&cfg.models.manifest)?;
    let mut detector = crate::detect::open(
        &manifest,
        &cfg.models.detector,
        rt,
        &cfg.detect,
        crate::runtime::SessionOptions::default(),
    )?;
    let mut runs = vec![("every frame".to_string(), GateSettings::default())];
    runs.extend(o.settings.iter().cloned());
    let mut results = Vec::new();
    for (i, (name, gate)) in runs.iter().enumerate() {
        if !o.quiet {
            eprintln!("bench tracking: run {}/{} ({name})", i + 1, runs.len());
        }
        let r = offline::run(
            &o.video,
            detector.as_mut(),
            OfflineOptions {
                fps: o.fps,
                width: o.width,
                camera: "bench".into(),
                track: cfg.track.clone(),
                gate: *gate,
                crops: false,
                quiet: o.quiet,
                ..OfflineOptions::default()
            },
        )?;
        results.push((name.clone(), *gate, r));
    }
    let (gt, ground_truth) = match &o.gt {
        Some(p) => (by_frame(&mot::read(p)?), format!("file: {}", p.display())),
        None => (
            by_frame(&results[0].2.tracks),
            "every-frame run".to_string(),
        ),
    };
    let scored: Vec<MotMetrics> = results
        .iter()
        .map(|(_, _, r)| evaluate(&gt, &by_frame(&r.tracks), 0.5))
        .collect();
    let (ref_idf1, ref_mota) = (scored[0].idf1, scored[0].mota);
    let rows = results
        .into_iter()
        .zip(&scored)
        .map(|((name, gate, r), m)| TrackingRow {
            name,
            detect_every: gate.detect_every,
            motion_gate: gate.motion_gate,
            frames: r.frames,
            detected_frames: r.detected_frames,
            detector_share: r.detected_frames as f64 / r.frames.max(1) as f64,
            mota: m.mota,
            idf1: m.idf1,
            idp: m.idp,
            idr: m.idr,
            id_switches: m.id_switches,
            hyp_ids: m.hyp_ids,
            idf1_delta: m.idf1 - ref_idf1,
            mota_delta: m.mota - ref_mota,
            seconds: r.elapsed.as_secs_f64(),
        })
        .collect();
    Ok(TrackingBenchReport {
        video: o.video.display().to_string(),
        ground_truth,
        gt_ids: scored[0].gt_ids,
        rows,
    })
}

pub fn render_tracking(r: &TrackingBenchReport) -> String {
    let mut s = format!(
        "{}: scored against {} ({} identities)\n{:<28} {:>7} {:>9} {:>7} {:>7} {:>8} {:>7} {:>9} {:>6} {:>7}\n",
        r.video,
        r.ground_truth,
        r.gt_ids,
        "setting",
        "frames",
        "detected",
        "MOTA",
        "IDF1",
        "ΔIDF1",
        "ΔMOTA",
        "switches",
        "ids",
        "secs"
    );
    for row in &r.rows {
        s.push_str(&format!(
            "{:<28} {:>7} {:>8.0}% {:>7.3} {:>7.3} {:>+8.3} {:>+7.3} {:>9} {:>6} {:>7.1}\n",
            row.name,
            row.frames,
            100.0 * row.detector_share,
            row.mota,
            row.idf1,
            row.idf1_delta,
            row.mota_delta,
            row.id_switches,
            row.hyp_ids,
            row.seconds
        ));
    }
    s
}

/// The default video of the tracking and pipeline benchmarks: the bundled clip, or its static
/// scene ([`super::scene`]) written once into `dir`.
pub fn scene_video(scene: &str, dir: &Path) -> anyhow::Result<PathBuf> {
    let clip = crate::paths::media("vtest-h264.mp4");
    match scene {
        "vtest" => Ok(clip),
        "static" => {
            std::fs::create_dir_all(dir)?;
            let out = dir.join("vtest-static.mp4");
            if !out.exists() {
                let tmp = dir.join(format!("vtest-static.{}.tmp.mp4", std::process::id()));
                super::scene::write_static_scene(&clip, &tmp, Default::default())?;
                std::fs::rename(&tmp, &out)?;
            }
            Ok(out)
        }
        other => anyhow::bail!("unknown scene '{other}': expected vtest or static"),
    }
}

/// The tracker alone on a MOTChallenge sequence: detections from a file or made from the ground
/// truth (boxes dropped and jittered, seeded), the sequence thinned to every `stride`-th frame
/// (a 25 fps sequence at stride 5 is the daemon's 5 analysed frames/s), then tracked with the
/// detector's output used on every frame and on every N-th only (`detect_every`; the tracker
/// predicts the rest). Scored against the ground truth.
pub struct DetectionBenchOptions {
    pub gt: PathBuf,
    pub detections: Option<PathBuf>,
    pub stride: u64,
    pub every: Vec<u32>,
    /// Made-up detections: share of ground-truth boxes dropped, jitter as a share of the box size.
    pub drop: f32,
    pub jitter: f32,
    pub seed: u64,
    /// Frames per second of the sequence after `stride` (for the tracker's clock: `track.lost_s`).
    pub fps: f64,
    /// Also run the motion gate (alone, and with each `every`) on frames drawn from the ground
    /// truth ([`draw_frame`]), with `[analysis]`'s motion settings.
    pub motion_gate: bool,
    /// A mostly still sequence: after every `walk` frames (after `stride`), the scene stands
    /// still for `still` frames (the last frame's truth and detections repeated, as a detector
    /// repeats itself on a frozen picture).
    pub freeze: Option<(u64, u64)>,
}

/// Repeats frames to make a mostly still sequence: after every `walk` frames, `still` copies of
/// the last one (rows renumbered; `walk` ≥ 1).
pub fn freeze_rows(rows: &[MotRow], walk: u64, still: u64) -> Vec<MotRow> {
    let walk = walk.max(1);
    // original frame f → the output frames showing it
    let out_frames = |f: u64| -> std::ops::RangeInclusive<u64> {
        let before = (f - 1) / walk; // freezes completed before frame f
        let first = f + before * still;
        if f.is_multiple_of(walk) {
            first..=first + still
        } else {
            first..=first
        }
    };
    let mut out: Vec<MotRow> = rows
        .iter()
        .flat_map(|r| out_frames(r.frame).map(move |frame| MotRow { frame, ..*r }))
        .collect();
    out.sort_by_key(|r| r.frame);
    out
}

/// A frame drawn from the ground truth for the motion gate: a still, textured background (a
/// grey checker of 16-pixel squares) with each person a box of their own colour, nearer people
/// (lower box bottoms) drawn last, and a little noise in 4×4 blocks (±5 grey levels, a new draw
/// every frame) as a camera's sensor and compression add it. Nothing moves unless people do.
pub fn draw_frame(w: u32, h: u32, objs: &[Obj], frame: u64, seed: u64) -> crate::frame::Frame {
    let (w, h) = (w.max(16), h.max(16));
    let mut data = vec![0u8; (w * h * 3) as usize];
    let mut rng = crate::dataset::rng::SplitMix64::new(seed ^ frame.wrapping_mul(0x9E37_79B9));
    let bw = w.div_ceil(4) as usize;
    let noise: Vec<i16> = (0..bw * h.div_ceil(4) as usize)
        .map(|_| (rng.next_f32() * 11.0) as i16 - 5)
        .collect();
    // the background, then each person's box over it, farthest first
    let mut px: Vec<[i16; 3]> = (0..h)
        .flat_map(|y| {
            (0..w).map(move |x| {
                [if ((x / 16) + (y / 16)) % 2 == 0 {
                    96
                } else {
                    128
                }; 3]
            })
        })
        .collect();
    let mut order: Vec<&Obj> = objs.iter().collect();
    order.sort_by(|a, b| a.bbox.y2.total_cmp(&b.bbox.y2));
    // the whole pixels x with x1 <= x < x2 (and likewise y), inside the frame
    let span = |a: f32, b: f32, n: u32| {
        let clamp = |v: f32| v.ceil().clamp(0.0, n as f32) as u32;
        clamp(a)..clamp(b)
    };
    for o in order {
        let b = &o.bbox;
        let colour = [
            (30 + o.id.wrapping_mul(97) % 190) as i16,
            (30 + o.id.wrapping_mul(57).wrapping_add(60) % 190) as i16,
            (30 + o.id.wrapping_mul(31).wrapping_add(120) % 190) as i16,
        ];
        for y in span(b.y1, b.y2, h) {
            for x in span(b.x1, b.x2, w) {
                px[(y * w + x) as usize] = colour;
            }
        }
    }
    for y in 0..h {
        for x in 0..w {
            let n = noise[(y / 4) as usize * bw + (x / 4) as usize];
            let i = (y * w + x) as usize;
            for c in 0..3 {
                data[i * 3 + c] = (px[i][c] + n).clamp(0, 255) as u8;
            }
        }
    }
    crate::frame::Frame::from_rgb(w, h, data)
}

pub fn tracking_detections(
    cfg: &Config,
    o: &DetectionBenchOptions,
) -> anyhow::Result<TrackingBenchReport> {
    anyhow::ensure!(o.stride >= 1, "--stride must be at least 1");
    anyhow::ensure!(
        o.fps.is_finite() && o.fps > 0.0,
        "--fps must be above 0 for a detection file"
    );
    let thin = |rows: Vec<MotRow>| -> Vec<MotRow> {
        rows.into_iter()
            .filter(|r| (r.frame - 1) % o.stride == 0)
            .map(|r| MotRow {
                frame: (r.frame - 1) / o.stride + 1,
                ..r
            })
            .collect()
    };
    let frozen = |rows: Vec<MotRow>| match o.freeze {
        Some((walk, still)) => freeze_rows(&rows, walk, still),
        None => rows,
    };
    let thinned_gt = thin(mot::read(&o.gt)?);
    let gt_rows = frozen(thinned_gt.clone());
    anyhow::ensure!(
        !gt_rows.is_empty(),
        "{}: no ground-truth boxes",
        o.gt.display()
    );
    let dets = match &o.detections {
        Some(p) => frozen(thin(mot::read(p)?)),
        None => {
            let mut rng = crate::dataset::rng::SplitMix64::new(o.seed);
            let mut out = Vec::new();
            // from the truth before any freeze: a frozen picture repeats its detections
            for r in &thinned_gt {
                if rng.next_f32() < o.drop {
                    continue;
                }
                {
                    let (w, h) = (r.bbox.width(), r.bbox.height());
                    let mut j = |s: f32| (rng.next_f32() * 2.0 - 1.0) * o.jitter * s;
                    let b = crate::frame::BBox::new(
                        r.bbox.x1 + j(w),
                        r.bbox.y1 + j(h),
                        r.bbox.x2 + j(w),
                        r.bbox.y2 + j(h),
                    );
                    let score = 0.5 + 0.45 * rng.next_f32();
                    out.push(MotRow {
                        frame: r.frame,
                        id: -1,
                        bbox: b,
                        score,
                    });
                }
            }
            frozen(out)
        }
    };
    let by = mot::detections_by_frame(&dets);
    let last = gt_rows.iter().map(|r| r.frame).max().unwrap_or(1);
    let (w, h) = gt_rows.iter().fold((1f32, 1f32), |(w, h), r| {
        (w.max(r.bbox.x2), h.max(r.bbox.y2))
    });
    let gt = by_frame(&gt_rows);
    let mut settings: Vec<(u32, bool)> = vec![(1, false)];
    settings.extend(o.every.iter().filter(|&&n| n > 1).map(|&n| (n, false)));
    if o.motion_gate {
        settings.push((1, true));
        settings.extend(o.every.iter().filter(|&&n| n > 1).map(|&n| (n, true)));
    }
    let mut rows = Vec::new();
    let mut reference: Option<(f64, f64)> = None;
    let empty = Vec::new();
    let none = Vec::new();
    let blank = crate::frame::Frame::from_rgb(1, 1, vec![0; 3]);
    let (fw, fh) = (w.ceil() as u32, h.ceil() as u32);
    for (n, motion) in settings {
        let t0 = std::time::Instant::now();
        let mut tr = crate::track::Tracker::new("bench", cfg.track.clone());
        let mut gate = crate::detect::gate::DetectGate::new(GateSettings {
            detect_every: n,
            motion_gate: motion,
            motion_threshold: cfg.analysis.motion_threshold,
            motion_max_skip: cfg.analysis.motion_max_skip.max(1),
        });
        let mut hyp: BTreeMap<u64, Vec<Obj>> = BTreeMap::new();
        let mut detected = 0;
        for f in 1..=last {
            let decision = if motion {
                gate.decide(&draw_frame(fw, fh, gt.get(&f).unwrap_or(&none), f, o.seed))
            } else {
                gate.decide(&blank)
            };
            match decision {
                crate::detect::gate::Decision::Detect => {
                    detected += 1;
                    let pts = std::time::Duration::from_secs_f64(f as f64 / o.fps);
                    tr.update(None, f - 1, pts, (w, h), by.get(&f).unwrap_or(&empty));
                }
                crate::detect::gate::Decision::Predict => tr.skip(true),
                crate::detect::gate::Decision::Hold => tr.skip(false),
            }
            hyp.insert(
                f,
                tr.active()
                    .iter()
                    .map(|a| Obj {
                        id: a.id,
                        bbox: a.bbox,
                    })
                    .collect(),
            );
        }
        let m = evaluate(&gt, &hyp, 0.5);
        let (ri, rm) = *reference.get_or_insert((m.idf1, m.mota));
        rows.push(TrackingRow {
            name: match (n, motion) {
                (1, false) => "every frame".into(),
                (1, true) => "motion_gate".into(),
                (n, false) => format!("detect_every={n}"),
                (n, true) => format!("detect_every={n}+motion_gate"),
            },
            detect_every: n,
            motion_gate: motion,
            frames: last,
            detected_frames: detected,
            detector_share: detected as f64 / last as f64,
            mota: m.mota,
            idf1: m.idf1,
            idp: m.idp,
            idr: m.idr,
            id_switches: m.id_switches,
            hyp_ids: m.hyp_ids,
            idf1_delta: m.idf1 - ri,
            mota_delta: m.mota - rm,
            seconds: t0.elapsed().as_secs_f64(),
        });
    }
    Ok(TrackingBenchReport {
        video: format!(
            "{} (every {} frame(s){}, detections {}{})",
            o.gt.display(),
            o.stride,
            o.freeze.map_or(String::new(), |(walk, still)| format!(
                ", still for {still} frames after every {walk}"
            )),
            match &o.detections {
                Some(p) => p.display().to_string(),
                None => format!(
                    "from the ground truth: {:.0} % dropped, ±{:.0} % jitter, seed {}",
                    100.0 * o.drop,
                    100.0 * o.jitter,
                    o.seed
                ),
            },
            if o.motion_gate {
                "; the motion gate sees frames drawn from the ground truth"
            } else {
                ""
            }
        ),
        ground_truth: format!("file: {}", o.gt.display()),
        gt_ids: evaluate(&gt, &gt, 0.5).gt_ids,
        rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::gate::{Decision, DetectGate};
    use crate::frame::BBox;

    fn row(frame: u64) -> MotRow {
        let x = 10.0 * frame as f32;
        MotRow {
            frame,
            id: 7,
            bbox: BBox::new(x, 10.0, x + 30.0, 100.0),
            score: 1.0,
        }
    }

    #[test]
    fn a_frozen_stretch_repeats_the_last_moving_frame() {
        let rows: Vec<MotRow> = (1..=4).map(row).collect();
        let out = freeze_rows(&rows, 2, 3);
        let frames: Vec<u64> = out.iter().map(|r| r.frame).collect();
        assert_eq!(frames, (1..=10).collect::<Vec<_>>());
        // which source frame each output frame shows: 1, 2 and three copies of it, 3, 4 and
        // three copies of it
        let shown: Vec<u64> = out.iter().map(|r| (r.bbox.x1 / 10.0) as u64).collect();
        assert_eq!(shown, [1, 2, 2, 2, 2, 3, 4, 4, 4, 4]);
        // a sequence that does not end a walk ends without a freeze
        assert_eq!(freeze_rows(&rows[..3], 2, 3).len(), 6);
    }

    #[test]
    fn the_motion_gate_holds_a_still_drawn_scene_and_sees_a_person_move() {
        let mut gate = DetectGate::new(GateSettings {
            detect_every: 1,
            motion_gate: true,
            motion_threshold: 0.002,
            motion_max_skip: 10,
        });
        let person = |x: f32| Obj {
            id: 3,
            bbox: BBox::new(x, 200.0, x + 30.0, 290.0),
        };
        let mut decisions = Vec::new();
        // walking: a person 90 px tall at 1.4 m/s, seen 5 times a second, moves ~15 px a frame
        for f in 1..=10u64 {
            let frame = draw_frame(640, 480, &[person(100.0 + 15.0 * f as f32)], f, 1);
            decisions.push(gate.decide(&frame));
        }
        assert!(
            decisions.iter().all(|d| *d == Decision::Detect),
            "{decisions:?}"
        );
        // creeping 4 px a frame: a frame may be held, but the motion adds up against the last
        // detected frame and is seen on the next
        let creep: Vec<Decision> = (11..=20u64)
            .map(|f| {
                gate.decide(&draw_frame(
                    640,
                    480,
                    &[person(250.0 + 4.0 * (f - 10) as f32)],
                    f,
                    1,
                ))
            })
            .collect();
        assert!(
            creep.windows(2).all(|w| w.contains(&Decision::Detect)),
            "two frames held in a row: {creep:?}"
        );
        // standing still for 25 frames: held, with a forced detection every 10th frame
        let still: Vec<Decision> = (21..=45u64)
            .map(|f| gate.decide(&draw_frame(640, 480, &[person(290.0)], f, 1)))
            .collect();
        let detected = still.iter().filter(|d| **d == Decision::Detect).count();
        assert_eq!(detected, 2, "{still:?}");
        assert!(still[..9].iter().all(|d| *d == Decision::Hold), "{still:?}");
    }

    #[test]
    fn the_motion_gate_is_scored_against_ground_truth_on_a_mostly_still_sequence() {
        let dir = tempfile::tempdir().unwrap();
        let seq = crate::bench::sequence::make(&crate::bench::sequence::SequenceOptions {
            frames: 250,
            ..Default::default()
        });
        crate::bench::sequence::write(&seq, dir.path()).unwrap();
        let cfg = Config::defaults().unwrap();
        let r = tracking_detections(
            &cfg,
            &DetectionBenchOptions {
                gt: dir.path().join("gt.txt"),
                detections: Some(dir.path().join("det.txt")),
                stride: 5,
                every: vec![2],
                drop: 0.0,
                jitter: 0.0,
                seed: 1,
                fps: 5.0,
                motion_gate: true,
                freeze: Some((10, 30)),
            },
        )
        .unwrap();
        let names: Vec<&str> = r.rows.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "every frame",
                "detect_every=2",
                "motion_gate",
                "detect_every=2+motion_gate"
            ]
        );
        // 50 moving frames and 5 stills of 30: 200 frames
        assert_eq!(r.rows[0].frames, 200);
        let gated = &r.rows[2];
        assert!(gated.motion_gate && gated.detect_every == 1);
        // the still stretches are held (a forced detection every 10th frame), the walks detected
        assert!(
            gated.detector_share < 0.45 && gated.detector_share > 0.25,
            "{}",
            gated.detector_share
        );
        // holding boxes of a frozen scene costs nothing against the truth
        assert!(gated.idf1_delta.abs() < 0.03, "{:?}", gated);
    }
}
