//! The server process: wires the stages (cameras → analysis (detect + track) → …) and owns
//! their life cycle. One `Server` per process; `crosscam demo` and `crosscam serve` run it.

pub mod analysis;

use std::sync::Arc;

use serde::Serialize;

use crate::config::Config;
use crate::ingest::{CameraStatus, Ingest, StateListener};
use crate::runtime::{self, SessionOptions};

pub use analysis::{Analysis, AnalysisSnapshot, CameraTrackEvent};

pub struct Server {
    pub ingest: Arc<Ingest>,
    analysis: Analysis,
    /// Tracker events (tracklet started / updated / ended) from every camera.
    pub track_events: crossbeam_channel::Receiver<CameraTrackEvent>,
}

#[derive(Debug, Serialize)]
pub struct ServerStatus {
    pub cameras: Vec<CameraStatus>,
    pub analysis: AnalysisSnapshot,
}

impl Server {
    /// Loads the models, starts the analysis and every enabled camera of `cfg`.
    pub fn start(cfg: &Config, listener: Option<StateListener>) -> anyhow::Result<Server> {
        let rt = runtime::init(&cfg.runtime)?;
        let manifest = crate::models::Manifest::load(&cfg.models.manifest)?;
        let detector = crate::detect::open(
            &manifest,
            &cfg.models.detector,
            rt,
            &cfg.detect,
            SessionOptions::default(),
        )?;
        let ingest = Arc::new(Ingest::new(cfg, listener)?);
        let (tx, rx) = crossbeam_channel::bounded(4096);
        let analysis = Analysis::start(
            ingest.queue(),
            ingest.clone(),
            detector,
            cfg.track.clone(),
            tx,
        );
        for c in &cfg.cameras {
            ingest.add(c.clone())?;
        }
        Ok(Server {
            ingest,
            analysis,
            track_events: rx,
        })
    }

    pub fn status(&self) -> ServerStatus {
        ServerStatus {
            cameras: self.ingest.status(),
            analysis: self.analysis.metrics.snapshot(),
        }
    }

    pub fn shutdown(mut self) {
        self.ingest.shutdown();
        self.analysis.stop();
    }
}
