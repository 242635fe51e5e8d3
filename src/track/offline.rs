//! Detection and tracking over a whole video file, every frame in order (no drops): what
//! `crosscam detect`, `crosscam track --video` and the dataset builder run.

use std::path::Path;
use std::time::Duration;

use super::mot::MotRow;
use super::{TrackEvent, Tracker, Tracklet};
use crate::config::TrackSettings;
use crate::detect::Detector;
use crate::detect::gate::{Decision, DetectGate, GateSettings};
use crate::frame::Frame;
use crate::ingest::VideoReader;
use crate::progress::Progress;

/// A transformation applied to each frame before detection (virtual cameras).
pub type FrameTransform = Box<dyn Fn(&Frame) -> Frame + Send + Sync>;

pub struct OfflineOptions {
    /// Keep this many frames per second of video (None = all).
    pub fps: Option<u32>,
    /// Scale frames to this width first (None = source size).
    pub width: Option<u32>,
    /// Only frames whose time is within [start, end) are processed.
    pub window: Option<(Duration, Duration)>,
    /// Stop after this many frames.
    pub max_frames: Option<u64>,
    pub transform: Option<FrameTransform>,
    pub camera: String,
    pub track: TrackSettings,
    /// Which frames the detector sees (`[analysis] detect_every`, `motion_gate`); the tracker
    /// predicts or holds the others. Default: every frame.
    pub gate: GateSettings,
    /// Keep crops in the tracklets (false: boxes only).
    pub crops: bool,
    /// Keep the tracker's periodic snapshots of growing tracklets (`TrackEvent::Updated`) in
    /// [`OfflineRun::updates`]: what the daemon's re-id stage describes while a person is still
    /// in view, so an offline replay can feed the linker the same sequence.
    pub updates: bool,
    pub quiet: bool,
}

impl Default for OfflineOptions {
    fn default() -> Self {
        OfflineOptions {
            fps: None,
            width: None,
            window: None,
            max_frames: None,
            transform: None,
            camera: "video".into(),
            track: TrackSettings::default(),
            gate: GateSettings::default(),
            crops: true,
            updates: false,
            quiet: false,
        }
    }
}

pub struct OfflineRun {
    /// Detections, frames numbered from 1 (MOTChallenge det format, id −1).
    pub detections: Vec<MotRow>,
    /// Confirmed track boxes per frame (MOTChallenge tracks).
    pub tracks: Vec<MotRow>,
    /// Every tracklet, ended at the last frame at the latest.
    pub tracklets: Vec<Tracklet>,
    /// Snapshots of growing tracklets, in the order the tracker reported them (empty unless
    /// [`OfflineOptions::updates`]).
    pub updates: Vec<Tracklet>,
    pub frames: u64,
    /// Frames the detector ran on (all of them unless [`OfflineOptions::gate`] skips some).
    pub detected_frames: u64,
    /// Frame size after scaling.
    pub size: (u32, u32),
    /// Stream times of the first and last processed frames.
    pub first_pts: Duration,
    pub last_pts: Duration,
    pub elapsed: Duration,
}

impl OfflineRun {
    /// Processed frames per second of video, from the frames' timestamps.
    pub fn source_fps(&self) -> f64 {
        let span = self.last_pts.saturating_sub(self.first_pts).as_secs_f64();
        if self.frames < 2 || span <= 0.0 {
            25.0
        } else {
            (self.frames - 1) as f64 / span
        }
    }
}

/// Runs `detector` and a tracker over `video`.
pub fn run(
    video: &Path,
    detector: &mut dyn Detector,
    mut opts: OfflineOptions,
) -> anyhow::Result<OfflineRun> {
    let start_at = opts.window.map(|(a, _)| a).unwrap_or_default();
    let reader = VideoReader::open_from(video, opts.fps, opts.width, start_at)?;
    if !opts.crops {
        opts.track.crops_per_tracklet = 0;
    }
    let mut tracker = Tracker::new(&opts.camera, opts.track.clone());
    let mut out = OfflineRun {
        detections: vec![],
        tracks: vec![],
        tracklets: vec![],
        updates: vec![],
        frames: 0,
        detected_frames: 0,
        size: (0, 0),
        first_pts: Duration::ZERO,
        last_pts: Duration::ZERO,
        elapsed: Duration::ZERO,
    };
    let mut progress = Progress::new(&format!("tracking {}", video.display()), 0).quiet(opts.quiet);
    let batch = detector.max_batch().max(1);
    let mut gate = DetectGate::new(opts.gate);
    let mut pending: Vec<(Frame, Decision)> = Vec::with_capacity(batch);
    let start = std::time::Instant::now();
    for f in reader.take(opts.max_frames.unwrap_or(u64::MAX) as usize) {
        let f = f?;
        if let Some((a, b)) = opts.window {
            if f.pts < a {
                continue;
            }
            if f.pts >= b {
                break;
            }
        }
        let f = match &opts.transform {
            Some(t) => Frame {
                seq: f.seq,
                pts: f.pts,
                wall_ms: f.wall_ms,
                ..t(&f)
            },
            None => f,
        };
        let decision = gate.decide(&f);
        pending.push((f, decision));
        if pending
            .iter()
            .filter(|(_, d)| *d == Decision::Detect)
            .count()
            == batch
        {
            progress.inc(pending.len() as u64);
            process(&mut pending, detector, &mut tracker, &mut out, opts.updates)?;
        }
    }
    progress.inc(pending.len() as u64);
    process(&mut pending, detector, &mut tracker, &mut out, opts.updates)?;
    for ev in tracker.flush() {
        if let TrackEvent::Ended(t) = ev {
            out.tracklets.push(t);
        }
    }
    out.tracklets.sort_by_key(|t| (t.start, t.id));
    out.elapsed = start.elapsed();
    progress.finish();
    Ok(out)
}

fn process(
    pending: &mut Vec<(Frame, Decision)>,
    detector: &mut dyn Detector,
    tracker: &mut Tracker,
    out: &mut OfflineRun,
    updates: bool,
) -> anyhow::Result<()> {
    if pending.is_empty() {
        return Ok(());
    }
    let refs: Vec<&Frame> = pending
        .iter()
        .filter(|(_, d)| *d == Decision::Detect)
        .map(|(f, _)| f)
        .collect();
    let mut dets = if refs.is_empty() {
        Vec::new()
    } else {
        detector.detect(&refs)?
    }
    .into_iter();
    for (f, decision) in pending.iter() {
        if out.frames == 0 {
            out.first_pts = f.pts;
        }
        out.frames += 1;
        out.last_pts = f.pts;
        out.size = (f.width, f.height);
        let frame_no = out.frames;
        match decision {
            Decision::Detect => {
                out.detected_frames += 1;
                let d = dets.next().unwrap_or_default();
                out.detections.extend(d.iter().map(|x| MotRow {
                    frame: frame_no,
                    id: -1,
                    bbox: x.bbox,
                    score: x.score,
                }));
                let size = (f.width as f32, f.height as f32);
                for ev in tracker.update(Some(f), f.seq, f.pts, size, &d) {
                    match ev {
                        TrackEvent::Ended(t) => out.tracklets.push(t),
                        TrackEvent::Updated(t) if updates => out.updates.push(t),
                        _ => {}
                    }
                }
            }
            Decision::Predict => tracker.skip(true),
            Decision::Hold => tracker.skip(false),
        }
        out.tracks.extend(tracker.active().iter().map(|a| MotRow {
            frame: frame_no,
            id: a.id as i64,
            bbox: a.bbox,
            score: a.score,
        }));
    }
    pending.clear();
    Ok(())
}
