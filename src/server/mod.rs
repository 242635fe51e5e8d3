//! The server process: wires the stages and owns their life cycle.
//!
//! ```text
//! cameras (ingest) → analysis (detect + track) → reid (embed, describe) → link (gallery + store)
//!                                                                          └→ events
//! ```
//! One thread per stage, bounded channels between them; `crosscam serve` and `crosscam demo` run it.
//! With `--role edge` or `--role core` the boundary between reid and link is a NATS JetStream
//! stream instead of a channel ([`Boundary`], src/cluster): the stages are the same.

pub mod analysis;
pub mod cameras;
pub mod crop_writer;
pub mod histogram;
pub mod link;
pub mod live;
pub mod stage;
pub mod switch;

use std::sync::Arc;

use serde::Serialize;

use crate::cluster::{ClusterSettings, Role};
use crate::config::{CameraSettings, Config};
use crate::events::EventBus;
use crate::ingest::{CameraStatus, Ingest, StateListener};
use crate::reid::ReidStage;
use crate::runtime::{self, SessionOptions};
use crate::store::Store;

pub use analysis::{Analysis, AnalysisSnapshot, CameraTrackEvent};
pub use link::{Control, ControlError, Inbound, LinkSnapshot, LinkStage, Outcome, Reply};
pub use live::{Live, LiveBox, LiveView};

/// The file a running daemon keeps its process id in (`DATA/daemon.pid`): `crosscam job
/// promote|rollback` tell from it whether a daemon will switch live.
pub const PID_FILE: &str = "daemon.pid";

/// The process id of a daemon serving `data_dir` now, if any (a file left by a killed daemon
/// names a process that no longer exists).
pub fn running_daemon(data_dir: &std::path::Path) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(data_dir.join(PID_FILE))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    std::path::Path::new(&format!("/proc/{pid}"))
        .exists()
        .then_some(pid)
}

pub struct Server {
    pub ingest: Arc<Ingest>,
    control: crossbeam_channel::Sender<Control>,
    /// Every event of the process (camera states, tracklets, identities).
    pub events: EventBus,
    /// MQTT brokers and webhooks fed from `events` (`[[outputs]]`).
    outputs: std::sync::Mutex<crate::outputs::Outputs>,
    analysis: Analysis,
    reid: ReidStage,
    /// The link stage (none on an edge).
    link: Option<LinkStage>,
    link_metrics: Arc<link::LinkMetrics>,
    /// Where the re-id stage's outputs go.
    boundary: Boundary,
    pub data_dir: std::path::PathBuf,
    /// Latest frame and boxes per camera, with identity labels.
    pub live: Arc<Live>,
    /// The cameras as configured now (config file, its edits, API changes, and on an edge
    /// the site's assignments), run here or (on a core) placed on the edges.
    cameras: Arc<cameras::CameraSet>,
    /// The serving embedder: a registry version, replaced by a live switch.
    pub embedder: Arc<switch::SharedEmbedder>,
    /// Live model switches (promote, rollback, registry changes).
    pub switcher: Arc<switch::Switcher>,
    /// Receiving ends kept only to read the queue depths between the stages.
    track_q: crossbeam_channel::Receiver<CameraTrackEvent>,
    reid_q: Box<dyn Fn() -> usize + Send + Sync>,
}

/// The boundary between the re-id stage and the link stage.
pub enum Boundary {
    /// One process: a channel.
    InProcess,
    /// An edge: the re-id stage's outputs go to the broker; no link stage here.
    Edge {
        link: crate::cluster::edge::EdgeLink,
        settings: ClusterSettings,
        /// Takes cameras of the site for this edge.
        assign: Option<crate::cluster::assign::Assigner>,
        /// Follows the model the site's core serves.
        models: crate::cluster::models::ModelFollower,
    },
    /// A core: the broker feeds the link stage; the core's cameras are placed on the edges.
    Core {
        link: crate::cluster::core_link::CoreLink,
        settings: ClusterSettings,
        /// The site's core lease this core consumes behind (`crosscam serve --role core`).
        fence: Option<Arc<crate::cluster::failover::Fence>>,
        /// Tells the edges which model serves.
        models: crate::cluster::models::ModelPublisher,
    },
}

#[derive(Debug, Serialize)]
pub struct ServerStatus {
    pub cameras: Vec<CameraStatus>,
    pub analysis: AnalysisSnapshot,
    pub reid: crate::reid::service::ReidSnapshot,
    pub link: LinkSnapshot,
    /// The broker boundary (edge and core roles only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<crate::cluster::ClusterSnapshot>,
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
        Server::start_role(cfg, listener, Role::Single)
    }

    /// As [`Server::start`], in one of the roles of `crosscam serve --role` (edge and core
    /// need the config's `[cluster]` section).
    pub fn start_role(
        cfg: &Config,
        listener: Option<StateListener>,
        role: Role,
    ) -> anyhow::Result<Server> {
        Server::start_with(cfg, listener, role, None)
    }

    /// As [`Server::start_role`]; a core consumes behind `fence` (the site's core lease,
    /// src/cluster/failover.rs), replaying first what the fence asks for.
    pub fn start_with(
        cfg: &Config,
        listener: Option<StateListener>,
        role: Role,
        fence: Option<Arc<crate::cluster::failover::Fence>>,
    ) -> anyhow::Result<Server> {
        let cluster = match role {
            Role::Single => None,
            _ => Some(cfg.cluster.clone().ok_or_else(|| {
                anyhow::anyhow!(
                    "--role {} needs a [cluster] section in the config (nats = \"nats://host:port\", site = \"name\"); see docs/scaling.md",
                    serde_json::to_value(role).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default()
                )
            })?),
        };
        if role == Role::Single && cfg.cluster.is_some() {
            tracing::warn!(
                "the config has a [cluster] section but this process runs everything itself (no --role edge or core): the broker is not used"
            );
        }
        let rt = runtime::init(&cfg.runtime)?;
        let manifest = crate::models::Manifest::load(&cfg.models.manifest)?;
        let detector = crate::detect::open(
            &manifest,
            &cfg.models.detector,
            rt,
            &cfg.detect,
            SessionOptions::default(),
        )?;
        let store = Store::open(&cfg.server.data_dir)?;
        if let Err(e) = std::fs::write(
            cfg.server.data_dir.join(PID_FILE),
            std::process::id().to_string(),
        ) {
            tracing::warn!(error = %e, "cannot write {PID_FILE}");
        }
        // the serving model is a version of the data directory's model registry (the configured
        // embedder on the first start); DATA/models/serving.json says which
        let serving = switch::resolve_at_start(
            &cfg.server.data_dir,
            &cfg.models.embedder,
            &manifest,
            rt,
            &cfg.linking,
            &store,
        )
        .map_err(|e| anyhow::anyhow!("models.embedder = {:?}: {e:#}", cfg.models.embedder))?;
        let dim = serving.dim;
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
        let model = serving.tag.clone();
        let base_linking = cfg.linking.clone();
        let mut cfg = cfg.clone();
        // the config's values, else the serving version's calibration, else the defaults
        cfg.linking = serving.linking.clone();
        let cfg = &cfg;
        tracing::info!(
            threshold = cfg.linking.threshold,
            margin = cfg.linking.margin,
            merge_similarity = cfg.linking.merge_similarity,
            origin = ?cfg.linking.origin,
            embedder = %model,
            version = %serving.version.id,
            "linking values"
        );
        let embedder = Arc::new(switch::SharedEmbedder::new(serving));
        let linker = link::restore_gallery(cfg, &store, &model, dim)?;
        let events = EventBus::new(cfg.api.ws_buffer);
        // subscribed before any stage runs, so the outputs see every event
        let outputs = crate::outputs::Outputs::start(&cfg.outputs, &cfg.server.data_dir, &events)?;
        let (ctrl_tx, ctrl_rx) = crossbeam_channel::unbounded();
        let control = ctrl_tx.clone();
        let switcher = switch::Switcher::new(
            cfg.server.data_dir.clone(),
            manifest.clone(),
            rt,
            base_linking,
            switch::Reembedding {
                pause: std::time::Duration::from_millis(cfg.models.reembed_pause_ms),
                nice: cfg.models.reembed_nice,
            },
            embedder.clone(),
            ctrl_tx.clone(),
            events.clone(),
            role != Role::Edge,
        );
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
        let (reid_tx, reid_rx) = crossbeam_channel::bounded::<Inbound>(4096);
        let analysis = Analysis::start(
            ingest.queue(),
            ingest.clone(),
            detector,
            cfg.track.clone(),
            (&cfg.analysis).into(),
            track_tx,
            live.clone(),
        );
        let track_rx_depth = track_rx.clone();
        #[allow(clippy::type_complexity)]
        let (reid, link, mut boundary, reid_q, placement): (
            _,
            _,
            _,
            Box<dyn Fn() -> usize + Send + Sync>,
            _,
        ) = match (role, cluster) {
            (Role::Edge, Some(settings)) => {
                let (pub_tx, pub_rx) = crossbeam_channel::bounded(4096);
                let depth = pub_rx.clone();
                let reid = ReidStage::start(embedder.clone(), cfg.reid.clone(), track_rx, pub_tx);
                let names = cfg
                    .cameras
                    .iter()
                    .map(|c| {
                        (
                            c.id.clone(),
                            (
                                c.name.clone().unwrap_or_else(|| c.id.clone()),
                                crate::ingest::camera::redact(&c.url),
                            ),
                        )
                    })
                    .collect();
                let edge = crate::cluster::edge::EdgeLink::start(
                    &settings,
                    pub_rx,
                    ctrl_rx,
                    names,
                    &cfg.server.data_dir,
                )?;
                let models =
                    crate::cluster::models::ModelFollower::start(&settings, &cfg.server.data_dir)?;
                // the store and the gallery stay unused: an edge does not link
                drop((store, linker));
                (
                    reid,
                    None,
                    Boundary::Edge {
                        link: edge,
                        settings,
                        assign: None,
                        models,
                    },
                    Box::new(move || depth.len()) as Box<dyn Fn() -> usize + Send + Sync>,
                    cameras::Placement::Local,
                )
            }
            (role, cluster) => {
                let depth = reid_rx.clone();
                let boundary = match (role, cluster) {
                    (Role::Core, Some(settings)) => Boundary::Core {
                        link: crate::cluster::core_link::CoreLink::start(
                            &settings,
                            reid_tx.clone(),
                            control.clone(),
                            fence.clone(),
                        )?,
                        models: crate::cluster::models::ModelPublisher::start(
                            &settings,
                            embedder.clone(),
                        )?,
                        settings,
                        fence,
                    },
                    _ => Boundary::InProcess,
                };
                let placement = match &boundary {
                    Boundary::Core { link, settings, .. } => cameras::Placement::Site(
                        crate::cluster::assign::SiteCameras::start(settings, link.metrics.clone())?,
                    ),
                    _ => cameras::Placement::Local,
                };
                let reid = ReidStage::start(embedder.clone(), cfg.reid.clone(), track_rx, reid_tx);
                let link = LinkStage::start(
                    cfg,
                    link::LinkParts {
                        store,
                        linker,
                        bus: events.clone(),
                        run,
                        model: model.clone(),
                        live: live.clone(),
                        embedder: embedder.clone(),
                    },
                    reid_rx,
                    ctrl_rx,
                )?;
                (
                    reid,
                    Some(link),
                    boundary,
                    Box::new(move || depth.len()) as Box<dyn Fn() -> usize + Send + Sync>,
                    placement,
                )
            }
        };
        let link_metrics = link
            .as_ref()
            .map_or_else(Default::default, |l: &LinkStage| l.metrics.clone());
        let cameras = Arc::new(cameras::CameraSet::new(
            ingest.clone(),
            control.clone(),
            live.clone(),
            cfg.ingest.media_dirs.clone(),
            cfg.ingest.env_policy(),
            placement,
            // the API's camera changes, kept across restarts (a connection of its own: the
            // link stage owns the first)
            Some(Store::open(&cfg.server.data_dir)?),
        ));
        // runs the config's cameras here, or (a core) publishes them for the edges
        cameras.apply(&cfg.cameras)?;
        if let Boundary::Edge {
            link,
            settings,
            assign,
            ..
        } = &mut boundary
        {
            *assign = Some(crate::cluster::assign::Assigner::start(
                settings,
                link.name.clone(),
                link.run.clone(),
                cameras.clone(),
                link.metrics.clone(),
                analysis.metrics.clone(),
                f64::from(cfg.analysis.fps),
            )?);
        }
        // a registry that names another version than the serving one (a promotion while the
        // daemon was down, a switch a crash interrupted) is followed from now on
        switcher.watch_registry();
        Ok(Server {
            ingest,
            control,
            events,
            outputs: std::sync::Mutex::new(outputs),
            analysis,
            reid,
            link,
            link_metrics,
            boundary,
            data_dir: cfg.server.data_dir.clone(),
            live,
            cameras,
            embedder,
            switcher: switcher.clone(),
            track_q: track_rx_depth,
            reid_q,
        })
    }

    /// The descriptor tag of the serving model (`v0002:1a2b3c4d5e6f`).
    pub fn model(&self) -> String {
        self.embedder.current().tag.clone()
    }

    /// The linking values in force for the serving model (the config's, else its calibration,
    /// else the defaults): the API's search grades its matches by them.
    pub fn linking(&self) -> crate::config::LinkingSettings {
        self.embedder.current().linking.clone()
    }

    /// Checks a camera that comes through the API: `file:` cameras only inside `[ingest]
    /// media_dirs`.
    pub fn check_api_source(&self, c: &CameraSettings) -> Result<(), String> {
        self.cameras.check_api_source(c)
    }

    /// A sender of control requests to the link stage (merge, split, search).
    pub fn control(&self) -> crossbeam_channel::Sender<Control> {
        self.control.clone()
    }

    /// The cameras as configured now.
    pub fn cameras(&self) -> Vec<CameraSettings> {
        self.cameras.list()
    }

    /// Adds a camera, or changes the one with the same id (restarting it); `Ok(true)` when it
    /// was added. `actor` made the change through the API: it is kept for the next start.
    pub fn put_camera(&self, c: CameraSettings, actor: &str) -> anyhow::Result<bool> {
        self.cameras.put(c, actor)
    }

    /// Where a camera's settings come from: `config`, `api` or `site` ([`cameras::CameraSet::origin`]).
    pub fn camera_origin(&self, id: &str) -> &'static str {
        self.cameras.origin(id)
    }

    /// Whether the site's core assigned this camera to this edge (it is changed there).
    pub fn camera_assigned(&self, id: &str) -> bool {
        self.cameras.is_assigned(id)
    }

    /// Stops and removes a camera; `Ok(false)` when there is none with that id. `actor` removed it through the API: it stays removed at the next start.
    pub fn remove_camera(&self, id: &str, actor: &str) -> anyhow::Result<bool> {
        self.cameras.remove(id, actor)
    }

    /// Makes the running cameras those of `cameras`: removes the cameras not listed, adds new
    /// ones and restarts only those whose settings changed (the others keep running).
    pub fn apply_cameras(&self, cameras: &[CameraSettings]) -> anyhow::Result<()> {
        self.cameras.apply(cameras)
    }

    /// The stages' metrics, for `/metrics`.
    pub fn metrics(&self) -> StageMetrics {
        StageMetrics {
            analysis: self.analysis.metrics.clone(),
            reid: self.reid.metrics.clone(),
            link: self.link_metrics.clone(),
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
            observations: (self.reid_q)(),
        }
    }

    pub fn status(&self) -> ServerStatus {
        ServerStatus {
            cameras: self.ingest.status(),
            analysis: self.analysis.metrics.snapshot(),
            reid: self.reid.metrics.snapshot(),
            link: self.link_metrics.snapshot(),
            cluster: self.cluster(),
        }
    }

    /// The role this process serves in.
    pub fn role(&self) -> Role {
        match &self.boundary {
            Boundary::InProcess => Role::Single,
            Boundary::Edge { .. } => Role::Edge,
            Boundary::Core { .. } => Role::Core,
        }
    }

    /// The broker boundary's counters (edge and core roles only).
    pub fn cluster(&self) -> Option<crate::cluster::ClusterSnapshot> {
        match &self.boundary {
            Boundary::InProcess => None,
            Boundary::Edge {
                link,
                settings,
                models,
                ..
            } => {
                let mut s = link
                    .metrics
                    .snapshot(Role::Edge, &settings.site, &link.name);
                let f = models
                    .state
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone();
                s.site_model = f.site_model;
                s.site_model_error = f.error;
                Some(s)
            }
            Boundary::Core {
                link,
                settings,
                fence,
                models,
            } => {
                let mut s = link
                    .metrics
                    .snapshot(Role::Core, &settings.site, &link.name);
                s.core = fence.as_ref().map(|f| f.state());
                s.site_model = models
                    .published
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone();
                Some(s)
            }
        }
    }

    /// Core: takes the lag samples of the observations stored so far (ms from the broker
    /// storing each to the core having stored it); empty in other roles.
    pub fn take_cluster_lags(&self) -> Vec<u32> {
        match &self.boundary {
            Boundary::Core { link, .. } => link.metrics.take_lags(),
            _ => Vec::new(),
        }
    }

    /// Stops the cameras, then lets every stage finish what it holds (open tracklets end and
    /// are recorded) before returning.
    pub fn shutdown(mut self) {
        self.switcher.shutdown();
        // an edge stops the site's cameras and gives them back at once; a core stops placing
        if let Boundary::Edge {
            assign: Some(a), ..
        } = &mut self.boundary
        {
            a.stop();
        }
        self.cameras.shutdown();
        self.ingest.shutdown();
        self.analysis.stop();
        self.reid.finish();
        match &mut self.boundary {
            // delivers what the edge holds to the broker (for a while, if it is unreachable)
            Boundary::Edge { link, models, .. } => {
                models.stop();
                link.finish()
            }
            // stops taking from the broker: the link stage's input closes once the re-id stage
            // of local cameras has finished too
            Boundary::Core { link, models, .. } => {
                models.stop();
                link.stop()
            }
            Boundary::InProcess => {}
        }
        if let Some(l) = &mut self.link {
            l.finish();
        }
        let pid_file = self.data_dir.join(PID_FILE);
        if std::fs::read_to_string(&pid_file)
            .is_ok_and(|p| p.trim() == std::process::id().to_string())
        {
            let _ = std::fs::remove_file(pid_file);
        }
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
