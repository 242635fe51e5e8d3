//! The detector + tracker side of `crosscam dataset build`: runs person detection and tracking
//! over each virtual camera's time windows of a video (with its image transform applied to every
//! frame first), one fresh tracker per window.

use std::path::Path;
use std::time::Duration;

use super::{CameraTracklets, TrackletSource, VirtualCamera};
use crate::config::TrackSettings;
use crate::detect::Detector;
use crate::eval::dataset::SourceInfo;
use crate::ingest::VideoReader;
use crate::progress::Progress;
use crate::track::offline::{self, OfflineOptions};

pub struct DetectorSource {
    pub detector: Box<dyn Detector>,
    pub track: TrackSettings,
    /// Frames analysed per second of video (None: every frame).
    pub fps: Option<u32>,
}

impl TrackletSource for DetectorSource {
    fn probe(&mut self, video: &Path) -> anyhow::Result<SourceInfo> {
        // count frames on a tiny decode (no detector): exact frame count and duration
        let mut frames = 0u64;
        let mut last = Duration::ZERO;
        for f in VideoReader::open(video, None, Some(64))? {
            last = f?.pts;
            frames += 1;
        }
        anyhow::ensure!(frames > 0, "{} has no video frames", video.display());
        let fps = if frames > 1 {
            (frames - 1) as f64 / last.as_secs_f64().max(1e-9)
        } else {
            1.0
        };
        Ok(SourceInfo {
            path: video.display().to_string(),
            fps: Some(fps),
            frames: Some(frames),
            duration_s: Some(last.as_secs_f64() + 1.0 / fps),
        })
    }

    fn track(
        &mut self,
        video: &Path,
        source: &SourceInfo,
        camera: &VirtualCamera,
        crops_per_track: usize,
        progress: &mut Progress,
    ) -> anyhow::Result<CameraTracklets> {
        let duration = Duration::from_secs_f64(source.duration_s.unwrap_or(f64::MAX / 4.0));
        let mut tracklets = Vec::new();
        let mut frame_size = (0, 0);
        let mut next_id = 1;
        for w in camera.segments(duration) {
            let transform = camera.transform;
            let opts = OfflineOptions {
                fps: self.fps,
                window: Some((w.start, w.end.unwrap_or(duration))),
                transform: if transform.is_identity() {
                    None
                } else {
                    Some(Box::new(move |f: &crate::frame::Frame| {
                        transform.apply_frame(f)
                    }))
                },
                camera: camera.name.clone(),
                track: TrackSettings {
                    crops_per_tracklet: crops_per_track,
                    ..self.track.clone()
                },
                crops: true,
                quiet: true,
                ..OfflineOptions::default()
            };
            let run = offline::run(video, self.detector.as_mut(), opts)?;
            progress.inc(run.frames);
            if run.frames > 0 {
                frame_size = run.size;
            }
            // ids restart with each tracker: keep them unique within the camera; frame numbers
            // restart with each window: make them the frame index in the source video
            let fps = source.fps.unwrap_or(25.0);
            let index = |pts: Duration| (pts.as_secs_f64() * fps).round() as u64;
            for mut t in run.tracklets {
                t.id = next_id;
                next_id += 1;
                for b in &mut t.boxes {
                    b.seq = index(b.pts);
                }
                for c in &mut t.crops {
                    c.seq = index(c.pts);
                }
                tracklets.push(t);
            }
        }
        Ok(CameraTracklets {
            camera: camera.clone(),
            frame_size,
            tracklets,
        })
    }
}
