//! The server process: wires the stages and owns their life cycle.
//!
//! ```text
//! cameras (ingest) → analysis (detect + track) → reid (embed, describe) → link (gallery + store)
//!                                                                          └→ events
//! ```
//! One thread per stage, bounded channels between them; `crosscam serve` and `crosscam demo` run it.

pub mod analysis;
pub mod link;
pub mod stage;

use std::sync::Arc;

use serde::Serialize;

use crate::config::Config;
use crate::events::EventBus;
use crate::ingest::{CameraStatus, Ingest, StateListener};
use crate::reid::{Embedder, ReidStage};
use crate::runtime::{self, SessionOptions};
use crate::store::Store;

pub use analysis::{Analysis, AnalysisSnapshot, CameraTrackEvent};
pub use link::{Control, LinkSnapshot, LinkStage};

pub struct Server {
    pub ingest: Arc<Ingest>,
    control: crossbeam_channel::Sender<Control>,
    /// Every event of the process (camera states, tracklets, identities).
    pub events: EventBus,
    analysis: Analysis,
    reid: ReidStage,
    link: LinkStage,
    pub data_dir: std::path::PathBuf,
}

#[derive(Debug, Serialize)]
pub struct ServerStatus {
    pub cameras: Vec<CameraStatus>,
    pub analysis: AnalysisSnapshot,
    pub reid: crate::reid::service::ReidSnapshot,
    pub link: LinkSnapshot,
}

impl Server {
    /// Opens the store and the models, restores the gallery, starts every stage and every
    /// enabled camera of `cfg`. `listener` additionally hears every camera state change.
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
        let mut embedder = Embedder::open(
            &cfg.models.embedder,
            &manifest,
            rt,
            SessionOptions::default(),
        )
        .map_err(|e| anyhow::anyhow!("models.embedder = {:?}: {e:#}", cfg.models.embedder))?;
        let dim = match embedder.spec.dim {
            0 => embedder
                .embed_images(&[image::RgbImage::new(16, 32)])?
                .ncols(),
            d => d,
        };
        let store = Store::open(&cfg.server.data_dir)?;
        let run = store.begin_run()?;
        for c in &cfg.cameras {
            store.upsert_camera(
                &c.id,
                c.name.as_deref().unwrap_or(&c.id),
                &crate::ingest::camera::redact(&c.url),
            )?;
        }
        let model = cfg.models.embedder.clone();
        let mut cfg = cfg.clone();
        // an embedder given as a file has no calibration: the config's values or the defaults
        let calibration = manifest.get(&model).ok().and_then(|m| m.linking.as_ref());
        cfg.linking.calibrate(calibration);
        let cfg = &cfg;
        tracing::info!(
            threshold = cfg.linking.threshold,
            margin = cfg.linking.margin,
            merge_similarity = cfg.linking.merge_similarity,
            origin = ?cfg.linking.origin,
            embedder = %model,
            "linking values"
        );
        let linker = link::restore_gallery(cfg, &store, &model, dim)?;
        let events = EventBus::new(4096);
        let (ctrl_tx, ctrl_rx) = crossbeam_channel::unbounded();
        let control = ctrl_tx.clone();
        let user = listener;
        let listener: StateListener = Arc::new(move |camera: &str, state, detail: &str| {
            let _ = ctrl_tx.send(Control::CameraState {
                camera: camera.to_string(),
                state,
                detail: detail.to_string(),
            });
            if let Some(u) = &user {
                u(camera, state, detail);
            }
        });
        let ingest = Arc::new(Ingest::new(cfg, Some(listener))?);
        let (track_tx, track_rx) = crossbeam_channel::bounded(4096);
        let (reid_tx, reid_rx) = crossbeam_channel::bounded(4096);
        let analysis = Analysis::start(
            ingest.queue(),
            ingest.clone(),
            detector,
            cfg.track.clone(),
            track_tx,
        );
        let reid = ReidStage::start(embedder, cfg.reid.clone(), track_rx, reid_tx);
        let link = LinkStage::start(
            cfg,
            link::LinkParts {
                store,
                linker,
                bus: events.clone(),
                run,
                model,
            },
            reid_rx,
            ctrl_rx,
        );
        for c in &cfg.cameras {
            ingest.add(c.clone())?;
        }
        Ok(Server {
            ingest,
            control,
            events,
            analysis,
            reid,
            link,
            data_dir: cfg.server.data_dir.clone(),
        })
    }

    /// Makes the running cameras those of `cameras`: removes the cameras not listed, adds new
    /// ones and restarts only those whose settings changed (the others keep running).
    pub fn apply_cameras(&self, cameras: &[crate::config::CameraSettings]) -> anyhow::Result<()> {
        for c in cameras {
            let _ = self.control.send(Control::CameraConfigured {
                camera: c.id.clone(),
                name: c.name.clone().unwrap_or_else(|| c.id.clone()),
                url: crate::ingest::camera::redact(&c.url),
            });
        }
        self.ingest.apply(cameras)
    }

    pub fn status(&self) -> ServerStatus {
        ServerStatus {
            cameras: self.ingest.status(),
            analysis: self.analysis.metrics.snapshot(),
            reid: self.reid.metrics.snapshot(),
            link: self.link.metrics.snapshot(),
        }
    }

    /// Stops the cameras, then lets every stage finish what it holds (open tracklets end and
    /// are recorded) before returning.
    pub fn shutdown(mut self) {
        self.ingest.shutdown();
        self.analysis.stop();
        self.reid.finish();
        self.link.finish();
    }
}
