//! The analysis stage: takes frames from the camera queue in batches across cameras, runs the
//! person detector once per batch on the frames each camera's [`DetectGate`] picks (every frame
//! by default; every N-th with `[analysis] detect_every`, only moving ones with `motion_gate`),
//! and feeds each camera's tracker (detections, or a predicted/held frame). Tracker events go out on a
//! channel to the re-id stage. One dedicated OS thread; a slow detector makes the camera queues
//! drop their oldest frames instead of building up latency.

use super::stage::StageThread;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use tracing::{debug, info_span, warn};

use crate::config::TrackSettings;
use crate::detect::Detector;
use crate::detect::gate::{Decision, DetectGate, GateSettings};
use crate::ingest::{AnalysisQueue, CameraId, Ingest};
use crate::track::{TrackEvent, Tracker};

/// Stage metrics (monotonic counters).
#[derive(Debug)]
pub struct AnalysisMetrics {
    /// Detector time per batch (seconds).
    pub detect_hist: super::histogram::Histogram,
    /// Frames per detector batch.
    pub batch_hist: super::histogram::Histogram,
    pub batches: AtomicU64,
    /// Frames analysed (detected, predicted or held).
    pub frames: AtomicU64,
    /// Frames the detector ran on.
    pub detected_frames: AtomicU64,
    /// Frames skipped by `detect_every` (boxes predicted by the tracker).
    pub predicted_frames: AtomicU64,
    /// Frames skipped by `motion_gate` (nothing moved; boxes held).
    pub held_frames: AtomicU64,
    pub detections: AtomicU64,
    /// Nanoseconds spent in the detector.
    pub detect_ns: AtomicU64,
    /// Nanoseconds spent in the trackers.
    pub track_ns: AtomicU64,
    pub detector_errors: AtomicU64,
    pub tracklets_started: AtomicU64,
    pub tracklets_ended: AtomicU64,
}

#[derive(Debug, Clone, Serialize)]
pub struct AnalysisSnapshot {
    pub batches: u64,
    pub frames: u64,
    pub detected_frames: u64,
    pub predicted_frames: u64,
    pub held_frames: u64,
    pub detections: u64,
    pub mean_batch: f64,
    pub detect_ms_per_frame: f64,
    pub track_ms_per_frame: f64,
    pub detector_errors: u64,
    pub tracklets_started: u64,
    pub tracklets_ended: u64,
}

impl Default for AnalysisMetrics {
    fn default() -> Self {
        AnalysisMetrics {
            detect_hist: super::histogram::Histogram::latency(),
            batch_hist: super::histogram::Histogram::batch(),
            batches: AtomicU64::new(0),
            frames: AtomicU64::new(0),
            detected_frames: AtomicU64::new(0),
            predicted_frames: AtomicU64::new(0),
            held_frames: AtomicU64::new(0),
            detections: AtomicU64::new(0),
            detect_ns: AtomicU64::new(0),
            track_ns: AtomicU64::new(0),
            detector_errors: AtomicU64::new(0),
            tracklets_started: AtomicU64::new(0),
            tracklets_ended: AtomicU64::new(0),
        }
    }
}

impl AnalysisMetrics {
    pub fn snapshot(&self) -> AnalysisSnapshot {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let frames = l(&self.frames).max(1) as f64;
        AnalysisSnapshot {
            batches: l(&self.batches),
            frames: l(&self.frames),
            detected_frames: l(&self.detected_frames),
            predicted_frames: l(&self.predicted_frames),
            held_frames: l(&self.held_frames),
            detections: l(&self.detections),
            mean_batch: l(&self.detected_frames) as f64 / l(&self.batches).max(1) as f64,
            detect_ms_per_frame: l(&self.detect_ns) as f64
                / 1e6
                / l(&self.detected_frames).max(1) as f64,
            track_ms_per_frame: l(&self.track_ns) as f64 / 1e6 / frames,
            detector_errors: l(&self.detector_errors),
            tracklets_started: l(&self.tracklets_started),
            tracklets_ended: l(&self.tracklets_ended),
        }
    }
}

/// A tracker event with the camera it belongs to.
#[derive(Debug, Clone)]
pub struct CameraTrackEvent {
    pub camera: CameraId,
    pub event: TrackEvent,
}

pub struct Analysis {
    pub metrics: Arc<AnalysisMetrics>,
    thread: StageThread,
}

/// Trackers idle this long (camera removed or dead) are flushed: their tracklets end.
const IDLE_FLUSH: Duration = Duration::from_secs(30);

impl Analysis {
    pub fn start(
        queue: Arc<AnalysisQueue>,
        ingest: Arc<Ingest>,
        mut detector: Box<dyn Detector>,
        track: TrackSettings,
        gate: GateSettings,
        events: crossbeam_channel::Sender<CameraTrackEvent>,
        live: Arc<super::Live>,
    ) -> Analysis {
        let metrics = Arc::new(AnalysisMetrics::default());
        let m = metrics.clone();
        let thread = StageThread::spawn("analysis", move |s| {
            let mut trackers: HashMap<CameraId, (Tracker, DetectGate, Instant)> = HashMap::new();
            let send = |camera: &CameraId, ev: TrackEvent, m: &AnalysisMetrics| {
                match &ev {
                    TrackEvent::Started(t) => {
                        m.tracklets_started.fetch_add(1, Ordering::Relaxed);
                        info_span!("camera", id = %camera)
                            .in_scope(|| debug!(track = t.id, "tracklet started"));
                    }
                    TrackEvent::Ended(t) => {
                        m.tracklets_ended.fetch_add(1, Ordering::Relaxed);
                        info_span!("camera", id = %camera).in_scope(|| {
                            debug!(
                                track = t.id,
                                boxes = t.len(),
                                secs = t.duration().as_secs_f64(),
                                "tracklet ended"
                            )
                        });
                    }
                    TrackEvent::Updated(_) => {}
                }
                let _ = events.try_send(CameraTrackEvent {
                    camera: camera.clone(),
                    event: ev,
                });
            };
            while !s.load(Ordering::SeqCst) {
                let batch = queue.pop_batch(detector.max_batch(), Duration::from_millis(200));
                if batch.is_empty() {
                    if queue.is_closed() {
                        break;
                    }
                } else {
                    // each camera's gate decides, in frame order, which frames the detector sees
                    let decisions: Vec<Decision> = batch
                        .iter()
                        .map(|(camera, frame)| {
                            let (_, g, _) = trackers.entry(camera.clone()).or_insert_with(|| {
                                (
                                    Tracker::new(camera, track.clone()),
                                    DetectGate::new(gate),
                                    Instant::now(),
                                )
                            });
                            g.decide(frame)
                        })
                        .collect();
                    let frames: Vec<&crate::frame::Frame> = batch
                        .iter()
                        .zip(&decisions)
                        .filter(|(_, d)| **d == Decision::Detect)
                        .map(|((_, f), _)| f)
                        .collect();
                    let mut dets = if frames.is_empty() {
                        Vec::new()
                    } else {
                        let t0 = Instant::now();
                        let dets = match detector.detect(&frames) {
                            Ok(d) => d,
                            Err(e) => {
                                m.detector_errors.fetch_add(1, Ordering::Relaxed);
                                warn!(error = %e, "detector failed on a batch; frames skipped");
                                continue;
                            }
                        };
                        m.detect_ns
                            .fetch_add(t0.elapsed().as_nanos() as u64, Ordering::Relaxed);
                        m.detect_hist.observe_duration(t0.elapsed());
                        m.batch_hist.observe(frames.len() as f64);
                        m.batches.fetch_add(1, Ordering::Relaxed);
                        m.detected_frames
                            .fetch_add(frames.len() as u64, Ordering::Relaxed);
                        dets
                    }
                    .into_iter();
                    m.frames.fetch_add(batch.len() as u64, Ordering::Relaxed);
                    let t1 = Instant::now();
                    for ((camera, frame), decision) in batch.iter().zip(decisions) {
                        let detected = decision == Decision::Detect;
                        ingest.mark_analysed(camera, detected);
                        let (tr, _, seen) = trackers
                            .get_mut(camera)
                            .expect("every camera of the batch has a tracker");
                        *seen = Instant::now();
                        match decision {
                            Decision::Detect => {
                                let d = dets.next().unwrap_or_default();
                                m.detections.fetch_add(d.len() as u64, Ordering::Relaxed);
                                let size = (frame.width as f32, frame.height as f32);
                                for ev in tr.update(Some(frame), frame.seq, frame.pts, size, &d) {
                                    send(camera, ev, &m);
                                }
                            }
                            Decision::Predict => {
                                m.predicted_frames.fetch_add(1, Ordering::Relaxed);
                                tr.skip(true);
                            }
                            Decision::Hold => {
                                m.held_frames.fetch_add(1, Ordering::Relaxed);
                                tr.skip(false);
                            }
                        }
                        let boxes = tr
                            .active()
                            .iter()
                            .map(|b| super::LiveBox {
                                track: b.id,
                                bbox: [b.bbox.x1, b.bbox.y1, b.bbox.x2, b.bbox.y2],
                                score: b.score,
                                identity: None,
                                predicted: b.predicted,
                            })
                            .collect();
                        live.set_view(camera, frame, boxes);
                    }
                    m.track_ns
                        .fetch_add(t1.elapsed().as_nanos() as u64, Ordering::Relaxed);
                }
                let idle: Vec<CameraId> = trackers
                    .iter()
                    .filter(|(_, (_, _, seen))| seen.elapsed() > IDLE_FLUSH)
                    .map(|(c, _)| c.clone())
                    .collect();
                for c in idle {
                    if let Some((mut tr, _, _)) = trackers.remove(&c) {
                        for ev in tr.flush() {
                            send(&c, ev, &m);
                        }
                    }
                }
            }
            for (c, (mut tr, _, _)) in trackers {
                for ev in tr.flush() {
                    send(&c, ev, &m);
                }
            }
        });
        Analysis { metrics, thread }
    }

    pub fn stop(&mut self) {
        self.thread.stop();
    }
}
