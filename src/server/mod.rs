//! The server process: wires the stages and owns their life cycle.
//!
//! ```text
//! cameras (ingest) → analysis (detect + track) → reid (embed, describe) → link (gallery + store)
//!                                                                          └→ events
//! ```
//! One thread per stage, bounded channels between them; `crosscam serve` and `crosscam demo` run it.

pub mod analysis;
pub mod histogram;
pub mod link;
pub mod live;
pub mod stage;

use std::sync::Arc;

use serde::Serialize;

use crate::config::{CameraSettings, Config};
use crate::events::EventBus;
use crate::ingest::{CameraStatus, Ingest, StateListener};
use crate::reid::{Embedder, ReidStage};
use crate::runtime::{self, SessionOptions};
use crate::store::Store;

pub use analysis::{Analysis, AnalysisSnapshot, CameraTrackEvent};
pub use link::{Control, ControlError, LinkSnapshot, LinkStage, Reply};
pub use live::{Live, LiveBox, LiveView};

pub struct Server {
    pub ingest: Arc<Ingest>,
    control: crossbeam_channel::Sender<Control>,
    /// Every event of the process (camera states, tracklets, identities).
    pub events: EventBus,
    /// MQTT brokers and webhooks fed from `events` (`[[outputs]]`).
    outputs: std::sync::Mutex<crate::outputs::Outputs>,
    analysis: Analysis,
    reid: ReidStage,
    link: LinkStage,
    pub data_dir: std::path::PathBuf,
    /// Latest frame and boxes per camera, with identity labels.
    pub live: Arc<Live>,
    /// The cameras as configured now (config file, its edits, and API changes).
    cameras: std::sync::Mutex<Vec<CameraSettings>>,
    /// Where `file:` cameras added through the API may play from.
    media_dirs: Vec<std::path::PathBuf>,
    /// The embedder's name (recorded with descriptors).
    pub model: String,
    /// The linking values in force (the config's, else the embedder's calibration): the API's
    /// search grades its matches by them.
    pub linking: crate::config::LinkingSettings,
    /// Receiving ends kept only to read the queue depths between the stages.
    track_q: crossbeam_channel::Receiver<CameraTrackEvent>,
    reid_q: crossbeam_channel::Receiver<crate::reid::ReidOutput>,
}

#[derive(Debug, Serialize)]
pub struct ServerStatus {
    pub cameras: Vec<CameraStatus>,
    pub analysis: AnalysisSnapshot,
    pub reid: crate::reid::service::ReidSnapshot,
    pub link: LinkSnapshot,
}

#[derive(Debug, Clone, Serialize)]
pub struct QueueDepths {
    /// Frames waiting per camera.
    pub frames: Vec<(String, usize)>,
    pub tracker_events: usize,
    pub observations: usize,
}

/// Shared handles on the stages' counters.
#[derive(Clone)]
pub struct StageMetrics {
    pub analysis: Arc<analysis::AnalysisMetrics>,
    pub reid: Arc<crate::reid::service::ReidMetrics>,
    pub link: Arc<link::LinkMetrics>,
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
        // where cameras' credentials come from when they connect: the config's environment
        // policy and the data directory's registered credentials
        let credentials = Arc::new(crate::store::credentials::CredentialStore::open(
            &cfg.server.data_dir,
        )?);
        for c in &cfg.cameras {
            if let Some(name) = &c.credential
                && !credentials.exists(name)?
            {
                tracing::warn!(
                    camera = %c.id,
                    credential = %name,
                    "the camera names a credential that is not registered (PUT /api/v1/credentials/{{name}}); it connects without a password"
                );
            }
        }
        crate::config::secrets::install(crate::config::secrets::Registry {
            policy: cfg.ingest.env_policy(),
            store: Some(credentials),
        });
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
        let events = EventBus::new(cfg.api.ws_buffer);
        // subscribed before any stage runs, so the outputs see every event
        let outputs = crate::outputs::Outputs::start(&cfg.outputs, &cfg.server.data_dir, &events)?;
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
        let live = Arc::new(Live::default());
        let (track_tx, track_rx) = crossbeam_channel::bounded(4096);
        let (reid_tx, reid_rx) = crossbeam_channel::bounded(4096);
        let analysis = Analysis::start(
            ingest.queue(),
            ingest.clone(),
            detector,
            cfg.track.clone(),
            track_tx,
            live.clone(),
        );
        let (track_rx_depth, reid_rx_depth) = (track_rx.clone(), reid_rx.clone());
        let reid = ReidStage::start(embedder, cfg.reid.clone(), track_rx, reid_tx);
        let link = LinkStage::start(
            cfg,
            link::LinkParts {
                store,
                linker,
                bus: events.clone(),
                run,
                model: model.clone(),
                live: live.clone(),
            },
            reid_rx,
            ctrl_rx,
        );
        for c in &cfg.cameras {
            ingest.check(c).map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        for c in &cfg.cameras {
            ingest.add(c.clone())?;
        }
        Ok(Server {
            ingest,
            control,
            events,
            outputs: std::sync::Mutex::new(outputs),
            analysis,
            reid,
            link,
            data_dir: cfg.server.data_dir.clone(),
            live,
            cameras: std::sync::Mutex::new(cfg.cameras.clone()),
            media_dirs: cfg.ingest.media_dirs.clone(),
            model,
            linking: cfg.linking.clone(),
            track_q: track_rx_depth,
            reid_q: reid_rx_depth,
        })
    }

    /// Checks a camera that comes through the API: `file:` cameras only inside `[ingest]
    /// media_dirs`.
    pub fn check_api_source(&self, c: &CameraSettings) -> Result<(), String> {
        crate::ingest::source::check_media_dir(&c.url, &self.media_dirs)
    }

    /// A sender of control requests to the link stage (merge, split, search).
    pub fn control(&self) -> crossbeam_channel::Sender<Control> {
        self.control.clone()
    }

    /// The cameras as configured now.
    pub fn cameras(&self) -> Vec<CameraSettings> {
        self.cameras
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Adds a camera, or changes the one with the same id (restarting it); `Ok(true)` when it
    /// was added.
    pub fn put_camera(&self, c: CameraSettings) -> anyhow::Result<bool> {
        let mut cams = self.cameras.lock().unwrap_or_else(|e| e.into_inner());
        let mut next = cams.clone();
        let added = match next.iter_mut().find(|x| x.id == c.id) {
            Some(x) => {
                *x = c;
                false
            }
            None => {
                next.push(c);
                true
            }
        };
        self.apply_locked(&mut cams, next)?;
        Ok(added)
    }

    /// Stops and removes a camera; `Ok(false)` when there is none with that id.
    pub fn remove_camera(&self, id: &str) -> anyhow::Result<bool> {
        let mut cams = self.cameras.lock().unwrap_or_else(|e| e.into_inner());
        if !cams.iter().any(|c| c.id == id) {
            return Ok(false);
        }
        let next: Vec<CameraSettings> = cams.iter().filter(|c| c.id != id).cloned().collect();
        self.apply_locked(&mut cams, next)?;
        Ok(true)
    }

    /// Makes `next` the running cameras (`current` is the locked list): records new and changed
    /// cameras in the store, applies them to the ingest, forgets the live views of removed ones.
    fn apply_locked(
        &self,
        current: &mut Vec<CameraSettings>,
        next: Vec<CameraSettings>,
    ) -> anyhow::Result<()> {
        // every new or changed camera is checked before anything changes
        for c in next.iter().filter(|c| !current.contains(c)) {
            self.ingest.check(c).map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        for c in &next {
            if !current.contains(c) {
                let _ = self.control.send(Control::CameraConfigured {
                    camera: c.id.clone(),
                    name: c.name.clone().unwrap_or_else(|| c.id.clone()),
                    url: crate::ingest::camera::redact(&c.url),
                });
            }
        }
        self.ingest.apply(&next)?;
        for gone in current
            .iter()
            .filter(|c| !next.iter().any(|n| n.id == c.id))
        {
            self.live.forget(&gone.id);
        }
        *current = next;
        Ok(())
    }

    /// Makes the running cameras those of `cameras`: removes the cameras not listed, adds new
    /// ones and restarts only those whose settings changed (the others keep running).
    pub fn apply_cameras(&self, cameras: &[CameraSettings]) -> anyhow::Result<()> {
        let mut cams = self.cameras.lock().unwrap_or_else(|e| e.into_inner());
        self.apply_locked(&mut cams, cameras.to_vec())
    }

    /// The stages' metrics, for `/metrics`.
    pub fn metrics(&self) -> StageMetrics {
        StageMetrics {
            analysis: self.analysis.metrics.clone(),
            reid: self.reid.metrics.clone(),
            link: self.link.metrics.clone(),
        }
    }

    /// Items waiting between the stages: per-camera frames before analysis, tracker events
    /// before re-id, observations before linking.
    pub fn queue_depths(&self) -> QueueDepths {
        QueueDepths {
            frames: self
                .ingest
                .queue()
                .depths()
                .into_iter()
                .map(|(c, d)| (c.to_string(), d))
                .collect(),
            tracker_events: self.track_q.len(),
            observations: self.reid_q.len(),
        }
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
        // what is still queued stays on disk for the next start
        self.outputs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .stop();
    }

    /// Each output's receiver state and counters.
    pub fn outputs_status(&self) -> Vec<crate::outputs::OutputStatus> {
        self.outputs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .status()
    }
}
