//! The offline tools: `crosscam detect` and `crosscam track` on video files and MOTChallenge
//! detection files, with a summary of what the tracker did (IDs per minute, track lengths).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use crate::config::Config;
use crate::runtime::{self, SessionOptions};
use crate::track::mot::{self, MotRow};
use crate::track::offline::{self as run_offline, OfflineOptions};
use crate::track::{TrackEvent, Tracker, Tracklet};

#[derive(Debug, Serialize)]
pub struct TrackSummary {
    pub frames: u64,
    /// Frames the detector ran on (fewer than `frames` with `[analysis] detect_every` or
    /// `motion_gate`).
    pub detected_frames: u64,
    pub detections: usize,
    pub tracklets: usize,
    /// New identities per minute of video (lower = more stable tracking).
    pub ids_per_minute: f64,
    pub mean_track_frames: f64,
    pub mean_track_seconds: f64,
    pub video_seconds: f64,
    /// Frames processed per second of wall time.
    pub fps: f64,
}

fn summarize(
    frames: u64,
    fps: f64,
    detections: usize,
    tracklets: &[Tracklet],
    elapsed: Duration,
) -> TrackSummary {
    let video_seconds = frames as f64 / fps.max(1e-9);
    let n = tracklets.len().max(1) as f64;
    TrackSummary {
        frames,
        detected_frames: frames,
        detections,
        tracklets: tracklets.len(),
        ids_per_minute: tracklets.len() as f64 / (video_seconds / 60.0).max(1e-9),
        mean_track_frames: tracklets.iter().map(|t| t.len() as f64).sum::<f64>() / n,
        mean_track_seconds: tracklets
            .iter()
            .map(|t| t.duration().as_secs_f64())
            .sum::<f64>()
            / n,
        video_seconds,
        fps: frames as f64 / elapsed.as_secs_f64().max(1e-9),
    }
}

fn open_detector(
    cfg: &Config,
    threshold: Option<f32>,
) -> anyhow::Result<Box<dyn crate::detect::Detector>> {
    let rt = runtime::init(&cfg.runtime)?;
    let manifest = crate::models::Manifest::load(&cfg.models.manifest)?;
    let mut ds = cfg.detect.clone();
    if let Some(t) = threshold {
        ds.score_threshold = t;
    }
    crate::detect::open(
        &manifest,
        &cfg.models.detector,
        rt,
        &ds,
        SessionOptions::default(),
    )
}

/// `crosscam detect --video FILE --out det.txt`.
pub fn detect(
    cfg: &Config,
    video: &Path,
    out: &Path,
    threshold: Option<f32>,
    max_frames: Option<u64>,
    quiet: bool,
) -> anyhow::Result<usize> {
    let mut det = open_detector(cfg, threshold)?;
    let opts = OfflineOptions {
        crops: false,
        quiet,
        max_frames,
        ..OfflineOptions::default()
    };
    let r = run_offline::run(video, det.as_mut(), opts)?;
    mot::write(out, &r.detections)?;
    Ok(r.detections.len())
}

/// `crosscam track --video FILE --out tracks.txt [--crops DIR]`; the detector runs on the frames
/// `cfg.analysis` picks (`detect_every`, `motion_gate`).
pub fn track_video(
    cfg: &Config,
    video: &Path,
    out: &Path,
    crops: Option<&Path>,
    max_frames: Option<u64>,
    quiet: bool,
) -> anyhow::Result<TrackSummary> {
    let mut det = open_detector(cfg, None)?;
    let camera = video
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "video".into());
    let opts = OfflineOptions {
        crops: crops.is_some(),
        quiet,
        camera,
        max_frames,
        track: cfg.track.clone(),
        gate: (&cfg.analysis).into(),
        ..OfflineOptions::default()
    };
    let r = run_offline::run(video, det.as_mut(), opts)?;
    mot::write(out, &r.tracks)?;
    if let Some(dir) = crops {
        write_crops(dir, &r.tracklets)?;
    }
    Ok(TrackSummary {
        detected_frames: r.detected_frames,
        ..summarize(
            r.frames,
            r.source_fps(),
            r.detections.len(),
            &r.tracklets,
            r.elapsed,
        )
    })
}

/// `crosscam track --detections det.txt --out tracks.txt` (tracker only).
pub fn track_detections(
    cfg: &Config,
    dets: &Path,
    out: &Path,
    fps: f64,
) -> anyhow::Result<TrackSummary> {
    let rows = mot::read(dets)?;
    let by_frame = mot::detections_by_frame(&rows);
    let (w, h) = rows.iter().fold((1f32, 1f32), |(w, h), r| {
        (w.max(r.bbox.x2), h.max(r.bbox.y2))
    });
    let mut tracker = Tracker::new("detections", cfg.track.clone());
    let mut tracks = Vec::new();
    let mut tracklets = Vec::new();
    let start = std::time::Instant::now();
    for (&frame, d) in &by_frame {
        let pts = Duration::from_secs_f64((frame - 1) as f64 / fps);
        for ev in tracker.update(None, frame - 1, pts, (w, h), d) {
            if let TrackEvent::Ended(t) = ev {
                tracklets.push(t);
            }
        }
        tracks.extend(tracker.active().iter().map(|a| MotRow {
            frame,
            id: a.id as i64,
            bbox: a.bbox,
            score: a.score,
        }));
    }
    tracklets.extend(tracker.flush().into_iter().filter_map(|e| match e {
        TrackEvent::Ended(t) => Some(t),
        _ => None,
    }));
    mot::write(out, &tracks)?;
    Ok(summarize(
        by_frame.len() as u64,
        fps,
        rows.len(),
        &tracklets,
        start.elapsed(),
    ))
}

/// Writes each tracklet's crops as `DIR/<id>/<frame>.jpg` (frames from 1).
pub fn write_crops(dir: &Path, tracklets: &[Tracklet]) -> anyhow::Result<()> {
    for t in tracklets {
        let d: PathBuf = dir.join(format!("{:05}", t.id));
        std::fs::create_dir_all(&d)
            .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", d.display()))?;
        for c in &t.crops {
            let p = d.join(format!("{:06}.jpg", c.seq + 1));
            c.image
                .save(&p)
                .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", p.display()))?;
        }
    }
    Ok(())
}

pub fn render(s: &TrackSummary) -> String {
    format!(
        "{} frames ({:.1} s of video{}) at {:.1} frames/s; {} detections; {} tracklets ({:.1} new ids per minute), mean length {:.1} frames / {:.1} s\n",
        s.frames,
        s.video_seconds,
        if s.detected_frames < s.frames {
            format!("; detector on {} of them", s.detected_frames)
        } else {
            String::new()
        },
        s.fps,
        s.detections,
        s.tracklets,
        s.ids_per_minute,
        s.mean_track_frames,
        s.mean_track_seconds
    )
}
