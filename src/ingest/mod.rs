//! Camera ingest: one GStreamer pipeline and one supervising thread per camera, frames sampled
//! and scaled before colour conversion, a bounded drop-oldest queue towards the analysis,
//! reconnection with back-off, a frame watchdog, and cameras added, changed and removed at run
//! time without touching the others.

pub mod camera;
pub mod pipeline;
pub mod process;
pub mod queue;
pub mod reader;
pub mod source;
pub mod state;
pub mod supervisor;
pub mod worker;

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

pub use camera::{Camera, StateListener};
pub use queue::{AnalysisQueue, CameraId};
pub use reader::VideoReader;
pub use state::{CameraState, CameraStatus, Counters};

use crate::config::{CameraSettings, Config, IngestSettings};

/// All cameras of the process.
pub struct Ingest {
    ingest: IngestSettings,
    fps: u32,
    width: Option<u32>,
    worker: std::path::PathBuf,
    queue: Arc<AnalysisQueue>,
    cameras: Mutex<BTreeMap<String, Camera>>,
    listener: Option<StateListener>,
}

impl Ingest {
    pub fn new(cfg: &Config, listener: Option<StateListener>) -> anyhow::Result<Ingest> {
        gstreamer::init()?;
        Ok(Ingest {
            ingest: cfg.ingest.clone(),
            fps: cfg.analysis.fps,
            width: (cfg.analysis.width > 0).then_some(cfg.analysis.width),
            worker: process::worker_exe()?,
            queue: AnalysisQueue::new(cfg.ingest.queue_depth),
            cameras: Mutex::new(BTreeMap::new()),
            listener,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Camera>> {
        self.cameras.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Checks a camera before it is started: a file camera's file must be a video (probed in a
    /// process of its own, so a file that crashes the decoder crashes only the probe).
    pub fn check(&self, c: &CameraSettings) -> Result<(), String> {
        let Ok(source::SourceUrl::File(path)) = source::SourceUrl::parse(&c.url) else {
            return Ok(());
        };
        process::probe_file(&self.worker, &path).map_err(|why| {
            format!(
                "camera {:?}: {} cannot be played by a file camera: {why}; give it a video file (MP4, AVI, MKV, …)",
                c.id,
                path.display()
            )
        })
    }

    pub fn queue(&self) -> Arc<AnalysisQueue> {
        self.queue.clone()
    }

    /// Starts a camera. Disabled cameras are registered as `stopped`.
    pub fn add(&self, c: CameraSettings) -> anyhow::Result<()> {
        let mut cams = self.lock();
        anyhow::ensure!(
            !cams.contains_key(&c.id),
            "camera {:?} already exists",
            c.id
        );
        let cam = Camera::start(camera::CameraContext {
            settings: c.clone(),
            ingest: self.ingest.clone(),
            fps: self.fps,
            width: self.width,
            worker: self.worker.clone(),
            queue: self.queue.clone(),
            listener: self.listener.clone(),
        });
        let mut cam = cam;
        if !c.enabled {
            cam.stop();
        }
        cams.insert(c.id.clone(), cam);
        Ok(())
    }

    /// Stops and forgets a camera; its waiting frames are discarded.
    pub fn remove(&self, id: &str) -> anyhow::Result<()> {
        let cam = self.lock().remove(id);
        let mut cam = cam.ok_or_else(|| anyhow::anyhow!("no camera {id:?}"))?;
        cam.stop();
        self.queue.remove_camera(id);
        Ok(())
    }

    /// Replaces a camera's settings (restarting only that camera, and only if they changed).
    pub fn update(&self, c: CameraSettings) -> anyhow::Result<()> {
        let same = self.lock().get(&c.id).is_some_and(|cam| cam.settings == c);
        if same {
            return Ok(());
        }
        if self.lock().contains_key(&c.id) {
            self.remove(&c.id)?;
        }
        self.add(c)
    }

    /// Makes the running cameras match `cameras`: removes, adds and updates as needed.
    pub fn apply(&self, cameras: &[CameraSettings]) -> anyhow::Result<()> {
        let current: Vec<String> = self.lock().keys().cloned().collect();
        for id in current
            .iter()
            .filter(|id| !cameras.iter().any(|c| &c.id == *id))
        {
            self.remove(id)?;
        }
        for c in cameras {
            self.update(c.clone())?;
        }
        Ok(())
    }

    pub fn status(&self) -> Vec<CameraStatus> {
        self.lock().values().map(Camera::status).collect()
    }

    pub fn camera_status(&self, id: &str) -> Option<CameraStatus> {
        self.lock().get(id).map(Camera::status)
    }

    /// Counts one analysed frame for `camera`, and whether the detector ran on it.
    pub fn mark_analysed(&self, camera: &str, detected: bool) {
        if let Some(c) = self.lock().get(camera) {
            c.counters.analysed.fetch_add(1, Ordering::Relaxed);
            if detected {
                c.counters.detected.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Stops every camera and closes the queue.
    pub fn shutdown(&self) {
        let cams: Vec<Camera> = std::mem::take(&mut *self.lock()).into_values().collect();
        for mut c in cams {
            c.stop();
        }
        self.queue.close();
    }
}

impl Drop for Ingest {
    fn drop(&mut self) {
        self.shutdown();
    }
}
