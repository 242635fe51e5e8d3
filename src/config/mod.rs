//! crosscam's configuration: one TOML file, typed, validated before anything starts.
//!
//! Every mistake is reported with the file, the line, the key path (`cameras[1].url`) and what was
//! expected: unknown keys (typos), wrong types, missing required keys, files that do not exist,
//! environment variables that are not set. Relative paths are resolved against the directory of
//! the config file, so a config works from any working directory.

mod gallery;
mod locate;
pub mod secrets;

use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use gallery::{GallerySettings, IndexChoice, LinkingOrigin, LinkingSettings, PairSettings};
pub use locate::{KeyPath, Seg};

/// A configuration error, already phrased for the person who wrote the file.
#[derive(Debug, thiserror::Error)]
#[error("{file}{line}: {key}{message}", line = self.line.map(|l| format!(":{l}")).unwrap_or_default(), key = if self.key.is_empty() { String::new() } else { format!("`{}`: ", self.key) })]
pub struct ConfigError {
    pub file: String,
    pub line: Option<usize>,
    /// Dotted key path, e.g. `cameras[1].url`; empty for whole-file errors.
    pub key: String,
    pub message: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerSettings,
    #[serde(default)]
    pub runtime: RuntimeSettings,
    #[serde(default)]
    pub models: ModelSettings,
    #[serde(default)]
    pub analysis: AnalysisSettings,
    #[serde(default)]
    pub ingest: IngestSettings,
    #[serde(default)]
    pub detect: DetectSettings,
    #[serde(default)]
    pub track: TrackSettings,
    #[serde(default)]
    pub reid: crate::reid::ReidSettings,
    #[serde(default)]
    pub store: StoreSettings,
    #[serde(default)]
    pub gallery: GallerySettings,
    #[serde(default)]
    pub linking: LinkingSettings,
    #[serde(default)]
    pub api: ApiSettings,
    #[serde(default)]
    pub retune: RetuneSettings,
    #[serde(default)]
    pub cameras: Vec<CameraSettings>,
    /// Where events go besides the API: MQTT brokers and webhooks (src/outputs).
    #[serde(default)]
    pub outputs: Vec<crate::outputs::OutputSettings>,
    /// The broker and the site for `crosscam serve --role edge|core` (docs/scaling.md); unused
    /// by a single process.
    #[serde(default)]
    pub cluster: Option<crate::cluster::ClusterSettings>,
    /// Where the file was read from (not a key).
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSettings {
    /// Data directory: SQLite store, crops, gallery dumps, logs.
    pub data_dir: PathBuf,
    /// Log filter (`tracing` env-filter syntax); `RUST_LOG` overrides it.
    pub log: String,
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            data_dir: PathBuf::from("data"),
            log: "info".into(),
        }
    }
}

/// The HTTP API and web UI (`[api]`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiSettings {
    /// Serve the API and the web UI.
    pub enabled: bool,
    /// Address and port to listen on (`0.0.0.0:8080` for every interface).
    pub listen: String,
    /// PEM certificate chain and private key: serve HTTPS (both or neither).
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Largest JSON request body, KiB.
    pub max_body_kib: usize,
    /// Largest image upload (search by image), KiB.
    pub max_image_kib: usize,
    /// Largest decoded picture (search by image), pixels; checked from the header before decoding.
    pub max_image_pixels: u64,
    /// Failed logins allowed per minute for one user name from one client address.
    pub login_attempts_per_minute: u32,
    /// Failed logins allowed per minute for one user name from all addresses together (a slower
    /// backstop against guessing from many addresses).
    pub login_attempts_per_user_per_minute: u32,
    /// Per-user limits of the expensive endpoints, requests per minute (a bucket holding ten
    /// seconds' worth, at least one, allows short bursts): live snapshots (JPEG),
    pub snapshots_per_minute: u32,
    /// searches by image,
    pub searches_per_minute: u32,
    /// and rendered exports (timeline pictures).
    pub exports_per_minute: u32,
    /// How long a login session lasts, hours.
    pub session_hours: u64,
    /// Events buffered per WebSocket client; a client further behind is told how many it lost.
    pub ws_buffer: usize,
}

impl Default for ApiSettings {
    fn default() -> Self {
        ApiSettings {
            enabled: true,
            listen: "127.0.0.1:8080".into(),
            tls_cert: None,
            tls_key: None,
            max_body_kib: 64,
            max_image_kib: 8192,
            max_image_pixels: 16_000_000,
            login_attempts_per_minute: 5,
            login_attempts_per_user_per_minute: 30,
            snapshots_per_minute: 1200,
            searches_per_minute: 30,
            exports_per_minute: 60,
            session_hours: 12,
            ws_buffer: 4096,
        }
    }
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, Default, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum DevicePref {
    /// CUDA when the loaded ONNX Runtime has it and it starts; CPU otherwise.
    #[default]
    Auto,
    Cpu,
    /// CUDA or fail.
    Cuda,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeSettings {
    /// Path of `libonnxruntime.so`; unset = `ORT_DYLIB_PATH`, then the project's `.deps/`.
    pub onnxruntime: Option<PathBuf>,
    pub device: DevicePref,
    /// Intra-op threads per inference session; 0 = one per core.
    pub threads: usize,
    /// Whether ONNX Runtime's intra-op threads spin-wait for work between runs (ONNX Runtime's
    /// own default). Off by default here: the daemon's other stages and the camera processes
    /// share the same cores, and a spinning thread takes CPU time they need.
    pub spin: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelSettings {
    /// The model manifest (see models/README.md).
    pub manifest: PathBuf,
    /// Manifest name of the person detector.
    pub detector: String,
    /// Manifest name of the re-id embedder.
    pub embedder: String,
    /// Pause (ms) after every batch of crops a live model switch re-embeds: on a small machine
    /// it leaves CPU to the cameras, at the cost of a longer switch (0 = none; at most 10000).
    pub reembed_pause_ms: u64,
    /// The Linux nice value (0–19) of the thread that re-embeds the gallery during a live model
    /// switch, and of its ONNX Runtime threads. At 10 (the default) it takes the CPU time the
    /// cameras, the detector and the link stage leave, and about a tenth of a core when they use
    /// all of it (so a switch always ends); 19 yields almost entirely (a switch on a saturated
    /// machine then barely moves); 0 = the same priority as they have.
    pub reembed_nice: i32,
}

impl Default for ModelSettings {
    fn default() -> Self {
        ModelSettings {
            manifest: crate::paths::project_root().join("models/manifest.toml"),
            detector: "nanodet-416".into(),
            embedder: "crosscam-resnet18-vtest".into(),
            reembed_pause_ms: 0,
            reembed_nice: 10,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnalysisSettings {
    /// Frames per second analysed per camera (the rest are dropped before colour conversion).
    pub fps: u32,
    /// Width frames are scaled to before analysis (height keeps the aspect ratio); 0 = as is.
    pub width: u32,
    /// Run the person detector on every N-th analysed frame of a camera; the tracker predicts
    /// the boxes of the frames in between (they are marked predicted). 1 = every frame.
    pub detect_every: u32,
    /// Skip detection on frames where nothing moved (a difference of small grey frames against
    /// the last detected frame); the tracker holds its boxes still on those frames.
    pub motion_gate: bool,
    /// Share of the small grey frame's pixels that must change (by more than
    /// [`MOTION_PIXEL_DELTA`](crate::detect::gate::MOTION_PIXEL_DELTA) grey levels) for a frame to
    /// count as moving.
    pub motion_threshold: f32,
    /// With `motion_gate`: detect at least on every this-many-th analysed frame, motion or not.
    pub motion_max_skip: u32,
}

impl ModelSettings {
    /// The range of `reembed_nice`, checked alike for the config file and `bench switch --nice`.
    pub fn check_reembed_nice(n: i32) -> Result<i32, String> {
        if (0..=19).contains(&n) {
            Ok(n)
        } else {
            Err(format!(
                "expected a nice value from 0 (the cameras' priority) to 19 (the lowest), found {n}"
            ))
        }
    }
}

impl AnalysisSettings {
    /// The range of `detect_every`, checked alike for the config file and the `--detect-every`
    /// flags: the message says what is expected and what was found.
    pub fn check_detect_every(n: u32) -> Result<u32, String> {
        if (1..=30).contains(&n) {
            Ok(n)
        } else {
            Err(format!(
                "expected to detect on every 1st to 30th frame (1 = every frame), found {n}"
            ))
        }
    }
}

impl Default for AnalysisSettings {
    fn default() -> Self {
        AnalysisSettings {
            fps: 5,
            width: 0,
            detect_every: 1,
            motion_gate: false,
            motion_threshold: 0.002,
            motion_max_skip: 10,
        }
    }
}

/// How cameras are watched and reconnected (all times in milliseconds).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestSettings {
    /// First reconnection delay after a camera fails; doubles on each failure (with ±20% jitter).
    pub reconnect_initial_ms: u64,
    /// Longest reconnection delay.
    pub reconnect_max_ms: u64,
    /// Delay before retrying a camera that refused the credentials or does not have the stream.
    pub auth_retry_ms: u64,
    /// A live camera that delivers no frame for this long is `stalled` and gets reconnected.
    pub stall_timeout_ms: u64,
    /// A camera that has not delivered its first frame after this long is reconnected.
    pub connect_timeout_ms: u64,
    /// RTSP jitter-buffer latency.
    pub rtsp_latency_ms: u64,
    /// Frames waiting for analysis per camera; when full the oldest is dropped (and counted).
    pub queue_depth: usize,
    /// Threads of each camera's software video decoder (libav's `max-threads`); 0 lets libav
    /// choose (one per core, plus one). With many cameras on few cores, 1 saves the threads'
    /// hand-offs; one high-resolution camera may need more.
    pub decoder_threads: u32,
    /// Folders whose videos `file:` cameras added through the API may play (relative to the
    /// config file). Empty: the API cannot add file cameras (the config file still can).
    pub media_dirs: Vec<PathBuf>,
    /// Environment variables that cameras' `username_env` / `password_env` may name start with
    /// this prefix (any other name is refused)…
    pub credential_env_prefix: String,
    /// …or are listed here.
    pub credential_env_allow: Vec<String>,
}

impl IngestSettings {
    /// Which environment variables cameras may name for their credentials.
    pub fn env_policy(&self) -> secrets::EnvPolicy {
        secrets::EnvPolicy {
            prefix: self.credential_env_prefix.clone(),
            allow: self.credential_env_allow.clone(),
        }
    }
}

impl Default for IngestSettings {
    fn default() -> Self {
        IngestSettings {
            reconnect_initial_ms: 500,
            reconnect_max_ms: 10_000,
            auth_retry_ms: 30_000,
            stall_timeout_ms: 2_500,
            connect_timeout_ms: 15_000,
            rtsp_latency_ms: 200,
            queue_depth: 2,
            decoder_threads: 0,
            media_dirs: Vec::new(),
            credential_env_prefix: secrets::DEFAULT_ENV_PREFIX.into(),
            credential_env_allow: Vec::new(),
        }
    }
}

/// `[retune]`: how re-tuning jobs are judged on operators' labels (docs/retuning.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetuneSettings {
    /// Fewer held-out labelled pairs than this: the evidence is weak, and a job never promotes
    /// on its own (an admin promotes explicitly, seeing the numbers).
    pub min_label_pairs: usize,
    /// Share of the labels held out for the gate (never trained on), 0–1.
    pub label_holdout: f64,
    /// The false accept rate the gate reads the true accept rate at, above 0 and below 1.
    pub label_far: f64,
    /// How much lower than the serving model's a candidate's AUC, TAR and rank-1 on labels
    /// may be (fractions: 0.02 = 2 points).
    pub label_tolerance: f64,
    /// When the daemon re-tunes on its own: `off`, `daily HH:MM` (local time) or `every 6h`.
    pub schedule: String,
    /// A scheduled job starts only when at least this many crops were stored since the last job.
    pub min_new_crops: u64,
    /// Scenario, budget, MACs target and held-out share of scheduled jobs (as `POST
    /// /api/v1/jobs` takes them).
    pub scenario: String,
    pub budget: String,
    pub target_macs: f64,
    pub holdout: f64,
}

impl Default for RetuneSettings {
    fn default() -> Self {
        RetuneSettings {
            min_label_pairs: 30,
            label_holdout: 0.5,
            label_far: 0.1,
            label_tolerance: 0.02,
            schedule: "off".into(),
            min_new_crops: 1000,
            scenario: "S4".into(),
            budget: "30m".into(),
            target_macs: 1.0,
            holdout: 0.25,
        }
    }
}

impl RetuneSettings {
    /// The schedule, and the job a due time starts; an error names the key.
    pub fn scheduled(
        &self,
    ) -> Result<
        (
            crate::jobs::schedule::Schedule,
            crate::api::jobs::JobRequest,
        ),
        String,
    > {
        let schedule = self
            .schedule
            .parse()
            .map_err(|e| format!("[retune] schedule: {e}"))?;
        let req = crate::api::jobs::JobRequest {
            scenario: self.scenario.clone(),
            budget: self.budget.clone(),
            target_macs: self.target_macs,
            cameras: Vec::new(),
            holdout: self.holdout,
        };
        req.check()
            .map_err(|e| format!("[retune] {}", e.replacen('`', "", 2)))?;
        Ok((schedule, req))
    }

    /// The gate these settings make; an error names the key and the range it needs.
    pub fn gate(&self) -> Result<crate::jobs::evaluate::GatePolicy, String> {
        if !(0.0..=1.0).contains(&self.label_holdout) {
            return Err(format!(
                "[retune] label_holdout must be from 0 to 1, found {}",
                self.label_holdout
            ));
        }
        if !(self.label_far > 0.0 && self.label_far < 1.0) {
            return Err(format!(
                "[retune] label_far must be above 0 and below 1, found {}",
                self.label_far
            ));
        }
        if !(0.0..=1.0).contains(&self.label_tolerance) {
            return Err(format!(
                "[retune] label_tolerance must be from 0 to 1, found {}",
                self.label_tolerance
            ));
        }
        Ok(crate::jobs::evaluate::GatePolicy {
            min_pairs: self.min_label_pairs,
            far: self.label_far,
            tolerance: self.label_tolerance,
        })
    }
}

/// What the store keeps.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSettings {
    /// Person crops older than this many hours are deleted (0 = kept until the disk budget).
    pub crop_max_age_hours: f64,
    /// Crops may use at most this many MiB; the oldest go first (0 = no budget).
    pub crop_max_mib: u64,
}

impl Default for StoreSettings {
    fn default() -> Self {
        StoreSettings {
            crop_max_age_hours: 24.0 * 30.0,
            crop_max_mib: 2048,
        }
    }
}

impl StoreSettings {
    pub fn retention(&self) -> crate::store::CropRetention {
        crate::store::CropRetention {
            max_age_ms: (self.crop_max_age_hours > 0.0)
                .then_some((self.crop_max_age_hours * 3.6e6) as i64),
            max_bytes: (self.crop_max_mib > 0).then(|| self.crop_max_mib * 1024 * 1024),
        }
    }
}

/// Person detection.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DetectSettings {
    /// Minimum person score kept (the tracker still uses scores down to `track.low_score`).
    pub score_threshold: f32,
    /// Non-maximum suppression IoU.
    pub nms_iou: f32,
    /// Most frames (from different cameras) run through the detector at once.
    pub max_batch: usize,
    /// How a frame is placed into the detector's input (see [`DetectInput`]).
    pub input: DetectInput,
    /// The input's long side in pixels (a multiple of 32); unset: the model's own size (416 for
    /// NanoDet). Another size needs a model whose input height and width are dynamic.
    pub size: Option<u32>,
}

impl DetectSettings {
    /// The range of `size`, checked alike for the config file and `bench detect --size`.
    pub fn check_size(n: u32) -> Result<u32, String> {
        if (64..=1280).contains(&n) && n.is_multiple_of(32) {
            Ok(n)
        } else {
            Err(format!(
                "expected the detector input's long side in pixels, a multiple of 32 from 64 to 1280, found {n}"
            ))
        }
    }
}

impl Default for DetectSettings {
    fn default() -> Self {
        DetectSettings {
            score_threshold: 0.1,
            nms_iou: 0.5,
            max_batch: 4,
            input: DetectInput::Square,
            size: None,
        }
    }
}

/// How a frame is placed into the detector's input.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, Default, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum DetectInput {
    /// The frame scaled so that its long side is the model's size, the short side padded only up
    /// to the next multiple of the model's largest stride (a 4:3 frame runs at 416×320, a 16:9
    /// one at 416×256 instead of 416×416). Needs a model whose input height and width are
    /// dynamic; with a fixed-size model it is the same as `square`. 1.3× faster on the bare
    /// detector; opt-in until the tracking and linking tests tuned on `square` are re-validated.
    Fit,
    /// The frame letterboxed into the model's square input (grey bars): the default.
    #[default]
    Square,
}

impl std::fmt::Display for DetectInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DetectInput::Fit => "fit",
            DetectInput::Square => "square",
        })
    }
}

/// Per-camera ByteTrack-style tracking.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrackSettings {
    /// Detections at or above this score are "high" (first association, can start tracks).
    pub high_score: f32,
    /// Detections between this and `high_score` are "low" (second association only).
    pub low_score: f32,
    /// Minimum score of a detection that starts a new track.
    pub new_track_score: f32,
    /// Minimum IoU for associating a detection with a track (first association).
    pub match_iou: f32,
    /// Consecutive matched frames before a track is confirmed (birth).
    pub min_hits: u32,
    /// Seconds a lost track (no detection matched) is kept for re-association before it ends
    /// (death). In seconds, so that it means the same at any analysis frame rate.
    pub lost_s: f32,
    /// Instead of `lost_s`: consecutive missed analysed frames after which a track ends (the
    /// older, frame-counted setting; unset by default).
    pub max_misses: Option<u32>,
    /// Crops kept per tracklet (the best by quality).
    pub crops_per_tracklet: usize,
    /// A crop is not kept when more than this fraction of its box is covered by another
    /// detection: it shows two people, and its embedding mixes them (1 = keep every crop).
    pub crop_max_overlap: f32,
}

impl Default for TrackSettings {
    fn default() -> Self {
        TrackSettings {
            high_score: 0.45,
            low_score: 0.1,
            new_track_score: 0.5,
            match_iou: 0.2,
            min_hits: 2,
            lost_s: 3.0,
            max_misses: None,
            crops_per_tracklet: 8,
            crop_max_overlap: 1.0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum RtspTransport {
    #[default]
    Auto,
    Tcp,
    Udp,
}

/// Serialized (JSON) as the value of a camera in the site's camera bucket, for edges
/// (src/cluster/assign.rs).
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct CameraSettings {
    /// Short unique id used in logs, the store and the API (letters, digits, `-`, `_`).
    pub id: String,
    /// `rtsp://host/path`, `file:///path/clip.mp4` (or a relative `file:clip.mp4`),
    /// `test:<videotestsrc pattern>`, or `v4l2:///dev/video0`.
    pub url: String,
    /// Human-readable name.
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default = "yes")]
    pub enabled: bool,
    /// RTSP user name, given directly or through an environment variable (`username_env`).
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub username_env: Option<String>,
    /// RTSP password: through an environment variable only (`password_env`), never in the file.
    /// Config file only, and only variables the `[ingest]` credential policy allows.
    #[serde(default)]
    pub password_env: Option<String>,
    /// A credential (user name and password) an admin registered by name in the credential store
    /// (`PUT /api/v1/credentials/{name}`); the only way for cameras added through the API.
    #[serde(default)]
    pub credential: Option<String>,
    #[serde(default)]
    pub transport: RtspTransport,
    /// Analysis rate override for this camera (whole frames per second).
    #[serde(default)]
    pub fps: Option<u32>,
    /// Files: play at the clip's own frame rate (true) or as fast as the analysis keeps up (false).
    #[serde(default = "yes")]
    pub realtime: bool,
    /// Files: start again at the end instead of stopping.
    #[serde(default)]
    pub loop_file: bool,
    /// Files: start this many seconds into the clip (looping starts again from the beginning).
    #[serde(default)]
    pub start_s: Option<f64>,
}

fn yes() -> bool {
    true
}

impl Config {
    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.display().to_string(),
            line: None,
            key: String::new(),
            message: format!("cannot read the config file: {e}"),
        })?;
        Config::parse(&text, path)
    }

    /// The built-in defaults: bundled models and manifest, no cameras, data in `<root>/data`.
    pub fn defaults() -> Result<Config, ConfigError> {
        Config::parse("", &crate::paths::project_root().join("crosscam.toml"))
    }

    /// Parses and validates `text` as if read from `path` (relative paths resolve against its directory).
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let mut cfg: Config = parse_toml(text, &file)?;
        // relative paths resolve once, against the config's directory made absolute: a path
        // like `config/../data` must mean the same from every working directory and in every
        // place it is handed to (symbolic links, child processes, the API)
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let base = parent.canonicalize().unwrap_or_else(|_| {
            std::env::current_dir()
                .map(|d| d.join(&parent))
                .unwrap_or(parent)
        });
        cfg.source = Some(match path.file_name() {
            Some(name) => base.join(name),
            None => path.to_path_buf(),
        });
        cfg.resolve_paths(&base);
        cfg.validate(text, &file)?;
        Ok(cfg)
    }

    fn resolve_paths(&mut self, base: &Path) {
        let abs = |p: &mut PathBuf| {
            if p.is_relative() && !p.as_os_str().is_empty() {
                *p = base.join(&*p);
            }
        };
        abs(&mut self.server.data_dir);
        abs(&mut self.models.manifest);
        if let Some(p) = self.api.tls_cert.as_mut() {
            abs(p);
        }
        if let Some(p) = self.api.tls_key.as_mut() {
            abs(p);
        }
        if let Some(p) = self.runtime.onnxruntime.as_mut() {
            abs(p);
        }
        if let Some(p) = self.cluster.as_mut().and_then(|c| c.tls_ca.as_mut()) {
            abs(p);
        }
        for d in &mut self.ingest.media_dirs {
            abs(d);
        }
        for c in &mut self.cameras {
            // `file:relative/path` → absolute file URL against the config's directory
            c.resolve(base);
        }
    }

    fn validate(&self, text: &str, file: &str) -> Result<(), ConfigError> {
        let err = |key: KeyPath, message: String| ConfigError {
            file: file.to_string(),
            line: key.line_in(text),
            key: key.to_string(),
            message,
        };
        if let Err(m) = self.retune.gate().and(self.retune.scheduled().map(|_| ())) {
            // "[retune] <key>…": point at that key
            let field = m
                .strip_prefix("[retune] ")
                .and_then(|r| r.split([':', ' ']).next())
                .unwrap_or("schedule")
                .to_string();
            return Err(err(KeyPath::new().key("retune").key(&field), m));
        }
        if let Some(p) = &self.runtime.onnxruntime
            && !p.is_file()
        {
            return Err(err(
                KeyPath::new().key("runtime").key("onnxruntime"),
                format!(
                    "expected the path of libonnxruntime.so, but {} does not exist (run `make setup`, or remove the key to use the bundled library)",
                    p.display()
                ),
            ));
        }
        if !self.models.manifest.is_file() {
            return Err(err(
                KeyPath::new().key("models").key("manifest"),
                format!(
                    "expected a model manifest file, but {} does not exist",
                    self.models.manifest.display()
                ),
            ));
        }
        if self.models.reembed_pause_ms > 10_000 {
            return Err(err(
                KeyPath::new().key("models").key("reembed_pause_ms"),
                format!(
                    "expected a pause from 0 to 10000 ms between re-embedding batches, found {}",
                    self.models.reembed_pause_ms
                ),
            ));
        }
        if let Err(m) = ModelSettings::check_reembed_nice(self.models.reembed_nice) {
            return Err(err(KeyPath::new().key("models").key("reembed_nice"), m));
        }
        if !(1..=60).contains(&self.analysis.fps) {
            return Err(err(
                KeyPath::new().key("analysis").key("fps"),
                format!(
                    "expected a whole frame rate from 1 to 60, found {}",
                    self.analysis.fps
                ),
            ));
        }
        if !(1..=100).contains(&self.track.min_hits) {
            return Err(err(
                KeyPath::new().key("track").key("min_hits"),
                format!(
                    "expected 1 to 100 matched frames, found {}",
                    self.track.min_hits
                ),
            ));
        }
        if !(self.track.lost_s.is_finite() && self.track.lost_s > 0.0 && self.track.lost_s <= 600.0)
        {
            return Err(err(
                KeyPath::new().key("track").key("lost_s"),
                format!(
                    "expected seconds above 0 and at most 600, found {}",
                    self.track.lost_s
                ),
            ));
        }
        if let Some(m) = self.track.max_misses
            && !(1..=10_000).contains(&m)
        {
            return Err(err(
                KeyPath::new().key("track").key("max_misses"),
                format!("expected 1 to 10000 frames (or leave it out and set lost_s), found {m}"),
            ));
        }
        if !(0.0..=1.0).contains(&self.track.crop_max_overlap) {
            return Err(err(
                KeyPath::new().key("track").key("crop_max_overlap"),
                format!(
                    "expected a fraction of the crop from 0 to 1 (1 keeps every crop), found {}",
                    self.track.crop_max_overlap
                ),
            ));
        }
        self.gallery.validate().map_err(|(k, m)| err(k, m))?;
        let camera_ids: Vec<&str> = self.cameras.iter().map(|c| c.id.as_str()).collect();
        self.linking
            .validate(&camera_ids)
            .map_err(|(k, m)| err(k, m))?;
        let api = |k: &str| KeyPath::new().key("api").key(k);
        if self.api.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(err(
                api("listen"),
                format!(
                    "expected an address and port such as \"127.0.0.1:8080\", found {:?}",
                    self.api.listen
                ),
            ));
        }
        match (&self.api.tls_cert, &self.api.tls_key) {
            (Some(_), None) | (None, Some(_)) => {
                return Err(err(
                    api(if self.api.tls_cert.is_some() {
                        "tls_key"
                    } else {
                        "tls_cert"
                    }),
                    "HTTPS needs both tls_cert and tls_key (PEM files); give both or neither"
                        .into(),
                ));
            }
            (Some(c), Some(k)) => {
                for (key, p) in [("tls_cert", c), ("tls_key", k)] {
                    if !p.is_file() {
                        return Err(err(
                            api(key),
                            format!("expected a PEM file, but {} does not exist", p.display()),
                        ));
                    }
                }
            }
            (None, None) => {}
        }
        // (key, value, lowest, highest)
        let ranges: [(&str, u64, u64, u64); 10] = [
            ("max_body_kib", self.api.max_body_kib as u64, 1, 1 << 20),
            ("max_image_kib", self.api.max_image_kib as u64, 1, 1 << 20),
            ("max_image_pixels", self.api.max_image_pixels, 1, 1 << 30),
            ("ws_buffer", self.api.ws_buffer as u64, 1, 1 << 20),
            ("session_hours", self.api.session_hours, 1, 24 * 366),
            (
                "login_attempts_per_minute",
                self.api.login_attempts_per_minute as u64,
                1,
                1000,
            ),
            (
                "login_attempts_per_user_per_minute",
                self.api.login_attempts_per_user_per_minute as u64,
                1,
                100_000,
            ),
            (
                "snapshots_per_minute",
                self.api.snapshots_per_minute as u64,
                1,
                1_000_000,
            ),
            (
                "searches_per_minute",
                self.api.searches_per_minute as u64,
                1,
                1_000_000,
            ),
            (
                "exports_per_minute",
                self.api.exports_per_minute as u64,
                1,
                1_000_000,
            ),
        ];
        for (key, v, lo, hi) in ranges {
            if !(lo..=hi).contains(&v) {
                return Err(err(
                    api(key),
                    format!("expected a number from {lo} to {hi}, found {v}"),
                ));
            }
        }
        if self.ingest.decoder_threads > 64 {
            return Err(err(
                KeyPath::new().key("ingest").key("decoder_threads"),
                format!(
                    "expected decoder threads from 0 (libav's choice) to 64, found {}",
                    self.ingest.decoder_threads
                ),
            ));
        }
        if let Some(Err(m)) = self.detect.size.map(DetectSettings::check_size) {
            return Err(err(KeyPath::new().key("detect").key("size"), m));
        }
        if let Err(m) = AnalysisSettings::check_detect_every(self.analysis.detect_every) {
            return Err(err(KeyPath::new().key("analysis").key("detect_every"), m));
        }
        if !(self.analysis.motion_threshold.is_finite()
            && (0.0..=1.0).contains(&self.analysis.motion_threshold))
        {
            return Err(err(
                KeyPath::new().key("analysis").key("motion_threshold"),
                format!(
                    "expected a share of changed pixels from 0 to 1 (e.g. 0.002), found {}",
                    self.analysis.motion_threshold
                ),
            ));
        }
        if !(1..=300).contains(&self.analysis.motion_max_skip) {
            return Err(err(
                KeyPath::new().key("analysis").key("motion_max_skip"),
                format!(
                    "expected a forced detection every 1 to 300 frames, found {}",
                    self.analysis.motion_max_skip
                ),
            ));
        }
        if self.analysis.width > 7680 {
            return Err(err(
                KeyPath::new().key("analysis").key("width"),
                format!(
                    "expected a width from 0 (as is) to 7680 pixels, found {}",
                    self.analysis.width
                ),
            ));
        }
        let ingest = |k: &str| KeyPath::new().key("ingest").key(k);
        if !(1..=1000).contains(&self.ingest.queue_depth) {
            return Err(err(
                ingest("queue_depth"),
                format!(
                    "expected a number from 1 to 1000, found {}",
                    self.ingest.queue_depth
                ),
            ));
        }
        let p = &self.ingest.credential_env_prefix;
        if !p.is_empty()
            && (p.len() < 4
                || !p
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
        {
            return Err(err(
                ingest("credential_env_prefix"),
                format!(
                    "expected a prefix of at least 4 upper-case letters, digits or '_' (such as \"CROSSCAM_CAM_\"), or \"\" for none, found {}",
                    secrets::clip(p, 64)
                ),
            ));
        }
        for (i, v) in self.ingest.credential_env_allow.iter().enumerate() {
            if v.is_empty() || !v.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(err(
                    ingest("credential_env_allow").index(i),
                    format!(
                        "expected an environment variable name, found {}",
                        secrets::clip(v, 64)
                    ),
                ));
            }
        }
        let mut names = std::collections::HashSet::new();
        for (i, o) in self.outputs.iter().enumerate() {
            let at = |k: &str| KeyPath::new().key("outputs").index(i).key(k);
            o.check().map_err(|(k, m)| err(at(k), m))?;
            if !names.insert(o.name_at(i)) {
                return Err(err(
                    at("name"),
                    format!(
                        "output name {:?} is used twice; names must be unique",
                        o.name_at(i)
                    ),
                ));
            }
        }
        if let Some(c) = &self.cluster {
            c.check()
                .map_err(|(k, m)| err(KeyPath::new().key("cluster").key(k), m))?;
        }
        let policy = self.ingest.env_policy();
        let mut seen = std::collections::HashSet::new();
        for (i, c) in self.cameras.iter().enumerate() {
            let at = |k: &str| KeyPath::new().key("cameras").index(i).key(k);
            c.check(&policy).map_err(|(k, m)| err(at(k), m))?;
            if !seen.insert(c.id.as_str()) {
                return Err(err(
                    at("id"),
                    format!("camera id {:?} is used twice; ids must be unique", c.id),
                ));
            }
        }
        Ok(())
    }
}

impl CameraSettings {
    /// Checks one camera on its own (ids unique across cameras are checked by the caller), with
    /// `policy` deciding which environment variables its credentials may come from:
    /// `Err((key, message))` names the key at fault. Every camera, from the config or the API,
    /// is checked here.
    pub fn check(&self, policy: &secrets::EnvPolicy) -> Result<(), (&'static str, String)> {
        secrets::check_id(&self.id).map_err(|m| ("id", m))?;
        secrets::check_text(&self.url, secrets::MAX_TEXT_CHARS).map_err(|m| ("url", m))?;
        for (k, v) in [("name", &self.name), ("username", &self.username)] {
            if let Some(v) = v {
                secrets::check_text(v, secrets::MAX_NAME_CHARS).map_err(|m| (k, m))?;
            }
        }
        crate::ingest::source::SourceUrl::parse(&self.url).map_err(|m| ("url", m))?;
        if let Some(rest) = self.url.strip_prefix("file://")
            && !Path::new(rest).is_file()
        {
            return Err((
                "url",
                format!("expected a video file, but {rest} does not exist"),
            ));
        }
        if let Some(name) = &self.credential {
            secrets::check_id(name).map_err(|m| ("credential", m))?;
            if self.username_env.is_some() || self.password_env.is_some() {
                return Err((
                    "credential",
                    "give either a registered credential or username_env / password_env, not both"
                        .into(),
                ));
            }
        }
        for (k, var) in [
            ("username_env", &self.username_env),
            ("password_env", &self.password_env),
        ] {
            if let Some(var) = var {
                if !policy.allows(var) {
                    return Err((k, policy.refusal(k, var)));
                }
                if std::env::var_os(var).is_none() {
                    return Err((
                        k,
                        format!(
                            "the environment variable {var} is not set; export it before starting crosscam"
                        ),
                    ));
                }
            }
        }
        if let Some(f) = self.fps
            && !(1..=60).contains(&f)
        {
            return Err((
                "fps",
                format!("expected a whole frame rate from 1 to 60, found {f}"),
            ));
        }
        if let Some(t) = self.start_s {
            if !(t.is_finite() && (0.0..=MAX_START_S).contains(&t)) {
                return Err((
                    "start_s",
                    format!("expected seconds from 0 to {MAX_START_S} (24 h), found {t}"),
                ));
            }
            if !self.url.starts_with("file:") {
                return Err((
                    "start_s",
                    "start_s is for file cameras only (a live camera cannot be started \
                     in the past or the future)"
                        .into(),
                ));
            }
        }
        Ok(())
    }

    /// Makes a relative `file:` URL absolute against `base` (the config file's directory).
    pub fn resolve(&mut self, base: &Path) {
        if let Some(rest) = self.url.strip_prefix("file:")
            && !rest.starts_with("//")
        {
            self.url = format!("file://{}", base.join(rest).display());
        }
    }

    /// The user name and password, read now: from the registered credential the camera names,
    /// else from the environment variables it names (only those the installed policy allows),
    /// else the plain user name. The one place the ingest asks for a camera's credentials.
    pub fn credentials(&self) -> (Option<String>, Option<String>) {
        let reg = secrets::registry();
        if let Some(name) = &self.credential {
            let found = reg.store.as_ref().and_then(|s| s.credential(name));
            return match found {
                Some(c) => (
                    c.username.or_else(|| self.username.clone()),
                    Some(c.password),
                ),
                None => {
                    tracing::warn!(
                        camera = %self.id,
                        credential = %secrets::clip(name, secrets::MAX_ID_CHARS),
                        "the camera's credential is not registered; connecting without a password"
                    );
                    (self.username.clone(), None)
                }
            };
        }
        let user = self
            .username_env
            .as_ref()
            .and_then(|v| reg.policy.read(v))
            .or_else(|| self.username.clone());
        let pass = self.password_env.as_ref().and_then(|v| reg.policy.read(v));
        (user, pass)
    }
}

/// Latest start position of a file camera, seconds (24 h).
pub const MAX_START_S: f64 = 86_400.0;

/// Deserializes TOML text into `T`, reporting errors with line and key path. Used for every
/// TOML file crosscam reads (configs, the model manifest, study definitions).
pub fn parse_toml<T: serde::de::DeserializeOwned>(
    text: &str,
    file: &str,
) -> Result<T, ConfigError> {
    let de = toml::Deserializer::parse(text)
        .map_err(|e| toml_error(file, text, &KeyPath::default(), &e))?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        let key = KeyPath::from_serde_path(e.path());
        toml_error(file, text, &key, e.inner())
    })
}

/// Turns a toml/serde error into a `ConfigError` with line and key path.
fn toml_error(file: &str, text: &str, key: &KeyPath, e: &toml::de::Error) -> ConfigError {
    let line = e
        .span()
        .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1)
        .or_else(|| key.line_in(text));
    let mut message = e.message().trim().to_string();
    if let Some(rest) = message.strip_prefix("unknown field ") {
        message = format!("unknown key {rest} (a typo?)");
    }
    ConfigError {
        file: file.to_string(),
        line,
        key: key.to_string(),
        message,
    }
}

#[cfg(test)]
mod tests;
