//! The live model switch: the running daemon moves from one registry version of the embedder to
//! another without a restart, without losing or renumbering an identity, and without dropping a
//! tracklet.
//!
//! ```text
//! loading       the new version's file is checked (sha256) and opened in ONNX Runtime
//! re-embedding  every tracklet of a live identity is described again from its stored crops with
//!               the new model, into descriptor rows tagged with the new model (beside the
//!               serving ones: the serving gallery is untouched)
//! catching-up   tracklets recorded meanwhile (still linked by the old model) get theirs too
//! switching     the link stage pauses, describes the last few, rebuilds the gallery from the new
//!               descriptors (same identities, same ids), commits, and swaps model and gallery
//!               together; the re-id stage embeds with the new model from its next batch
//! ```
//!
//! **The commit is one atomic step**: `DATA/models/serving.json` (which version serves, and the
//! tag of its descriptors) is replaced by a rename, after the new descriptors are complete. A
//! daemon killed before that rename restarts with the old model and its complete gallery (the
//! new rows are ignored, and reused when the switch runs again); killed after it, with the new
//! model and its complete gallery. The registry (`registry.json`) says which version *should*
//! serve: when it names another version than `serving.json` (a promotion by `crosscam job
//! promote`, a job, or a switch cut short by a crash), the daemon switches to it in the
//! background.
//!
//! A failure (the file does not load, a crop store read or write fails, the disk is full) changes
//! nothing that serves: the old model keeps embedding and linking, the reason is in
//! `GET /api/v1/status` (`model_switch_last`), in a `model_switched` event and in the log.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::config::LinkingSettings;
use crate::events::{Event, EventBus};
use crate::jobs::registry::{ModelVersion, Registry, write_atomic};
use crate::models::{LinkCalibration, Manifest};
use crate::reid::Embedder;
use crate::runtime::{Runtime, SessionOptions};
use crate::store::{Store, now_ms};

/// Which version serves, in `DATA/models/`.
pub const SERVING_FILE: &str = "serving.json";
/// How the last switch ended, in `DATA/models/`.
pub const LAST_SWITCH_FILE: &str = "last-switch.json";

/// Crops embedded in one inference run while re-embedding.
const BATCH: usize = 32;
/// At most this many tracklets are left for the link stage to describe while it pauses.
const PAUSE_WORK: usize = 16;

/// The committed serving model (`DATA/models/serving.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServingRecord {
    pub version: String,
    pub sha256: String,
    /// The tag of its descriptors in the store.
    pub tag: String,
    pub since_ms: i64,
    /// sha256 of the file `[models] embedder` named at the last start: when the config names
    /// another file, the daemon registers it (if needed) and switches to it live.
    #[serde(default)]
    pub configured_sha256: String,
}

/// Reads `serving.json` (`None` before the first start with a registry).
pub fn read_serving(data_dir: &Path) -> Result<Option<ServingRecord>> {
    let p = Registry::dir_of(data_dir).join(SERVING_FILE);
    if !p.is_file() {
        return Ok(None);
    }
    let text =
        std::fs::read_to_string(&p).with_context(|| format!("cannot read {}", p.display()))?;
    Ok(Some(serde_json::from_str(&text).with_context(|| {
        format!("{} is not a serving-model record", p.display())
    })?))
}

/// Replaces `serving.json` atomically: the commit point of a switch.
pub fn write_serving(data_dir: &Path, r: &ServingRecord) -> Result<()> {
    let p = Registry::dir_of(data_dir).join(SERVING_FILE);
    write_atomic(&p, serde_json::to_string_pretty(r)?.as_bytes())
}

/// A model version opened for serving.
pub struct ServingEmbedder {
    pub version: ModelVersion,
    /// The tag of its descriptors ([`ModelVersion::tag`]).
    pub tag: String,
    /// Its file in the registry.
    pub file: PathBuf,
    /// When it started serving (ms since the epoch).
    pub since_ms: i64,
    /// Embedding dimension.
    pub dim: usize,
    /// The linking values for it: the config's where set, else its calibration, else the
    /// defaults.
    pub linking: LinkingSettings,
    pub embedder: Mutex<Embedder>,
}

impl ServingEmbedder {
    /// Embeds whole crops (L2-normalised rows).
    pub fn embed_images(&self, images: &[image::RgbImage]) -> Result<ndarray::Array2<f32>> {
        let mut e = self.embedder.lock().unwrap_or_else(|p| p.into_inner());
        e.embed_images(images)
    }
}

/// The model every stage embeds with now. Readers take a snapshot ([`SharedEmbedder::current`]);
/// a switch replaces it for the next reader.
pub struct SharedEmbedder {
    inner: RwLock<Arc<ServingEmbedder>>,
}

impl SharedEmbedder {
    pub fn new(e: ServingEmbedder) -> SharedEmbedder {
        SharedEmbedder {
            inner: RwLock::new(Arc::new(e)),
        }
    }

    pub fn current(&self) -> Arc<ServingEmbedder> {
        self.inner.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(crate) fn swap(&self, next: Arc<ServingEmbedder>) {
        *self.inner.write().unwrap_or_else(|p| p.into_inner()) = next;
    }
}

/// The manifest entry of an embedder file, found by checksum (a bundled model registered as a
/// version keeps its manifest pre-processing and calibration).
fn manifest_entry<'a>(
    manifest: &'a Manifest,
    sha256: &str,
) -> Option<&'a crate::models::ModelEntry> {
    manifest
        .models
        .iter()
        .find(|m| m.role == crate::models::Role::Embedder && m.sha256.eq_ignore_ascii_case(sha256))
}

/// Opens an embedder file and runs one crop through it: `Ok` means it serves (returns the
/// opened embedder, its dimension, and the manifest calibration if it is a bundled model).
pub fn validate_embedder(
    path: &Path,
    sha256: &str,
    manifest: &Manifest,
    rt: &Runtime,
) -> Result<(Embedder, usize, Option<LinkCalibration>)> {
    let entry = manifest_entry(manifest, sha256);
    let mut e = Embedder::from_file(path, rt, SessionOptions::default())?;
    if let Some(m) = entry {
        // the file is the manifest model (same checksum): its documented input size, colour
        // order and normalisation apply, whatever the file's own metadata says
        e.spec = crate::reid::EmbedderSpec::from_manifest(m);
    }
    let probe = e
        .embed_images(&[image::RgbImage::new(64, 128)])
        .with_context(|| format!("{} does not run on a test crop", path.display()))?;
    let dim = probe.ncols();
    anyhow::ensure!(
        probe.nrows() == 1 && dim > 0,
        "{} is not an embedder: one crop gave a {}×{} output",
        path.display(),
        probe.nrows(),
        dim
    );
    anyhow::ensure!(
        probe.iter().all(|v| v.is_finite()),
        "{} gives non-finite embeddings",
        path.display()
    );
    Ok((e, dim, entry.and_then(|m| m.linking.clone())))
}

/// Opens a registry version for serving: checksum, ONNX Runtime session, one test crop, linking
/// values from `base` (the config's `[linking]`) calibrated for it.
pub fn open_version(
    registry: &Registry,
    v: &ModelVersion,
    manifest: &Manifest,
    rt: &Runtime,
    base: &LinkingSettings,
) -> Result<ServingEmbedder> {
    registry.verify(v)?;
    let file = registry.path_of(v);
    let (embedder, dim, cal) = validate_embedder(&file, &v.sha256, manifest, rt)
        .with_context(|| format!("model version {} does not load", v.id))?;
    let mut linking = base.clone();
    linking.calibrate(v.linking.as_ref().or(cal.as_ref()));
    Ok(ServingEmbedder {
        version: v.clone(),
        tag: v.tag(),
        file,
        since_ms: now_ms(),
        dim,
        linking,
        embedder: Mutex::new(embedder),
    })
}

/// What the daemon serves when it starts: the version `serving.json` names, or on the first
/// start with a registry the configured embedder (registered as a version if needed; the
/// descriptors it stored under its name are adopted under the version's tag).
pub fn resolve_at_start(
    data_dir: &Path,
    configured: &str,
    manifest: &Manifest,
    rt: &Runtime,
    base: &LinkingSettings,
    store: &Store,
) -> Result<ServingEmbedder> {
    let initial = match manifest.get(configured) {
        Ok(m) => manifest.file_of(m),
        Err(_) => PathBuf::from(configured),
    };
    let mut reg = Registry::open_or_init(data_dir, &initial)?;
    let configured_sha = crate::jobs::registry::sha256_file(&initial)?;
    if let Some(mut rec) = read_serving(data_dir)? {
        match reg.get(&rec.version).cloned() {
            Some(v) if v.sha256 == rec.sha256 => {
                if rec.configured_sha256 != configured_sha {
                    if !rec.configured_sha256.is_empty() {
                        // the admin edited `[models] embedder`: make it current, the running
                        // daemon then switches to it live (the gallery is kept)
                        let want = match reg.versions().iter().find(|x| x.sha256 == configured_sha)
                        {
                            Some(x) => x.clone(),
                            None => {
                                let cal = manifest_entry(manifest, &configured_sha)
                                    .and_then(|m| m.linking.clone());
                                reg.register(
                                    &initial,
                                    &format!("configured: {}", initial.display()),
                                    cal,
                                )?
                            }
                        };
                        if want.id != v.id {
                            reg.set_current(&want.id)?;
                            info!(configured = %configured, version = %want.id, serving = %v.id, "[models] embedder changed: switching to it once the daemon runs");
                        }
                    }
                    rec.configured_sha256 = configured_sha.clone();
                    write_serving(data_dir, &rec)?;
                }
                let v = &v;
                let mut s = open_version(&reg, v, manifest, rt, base).with_context(|| {
                    format!(
                        "the serving model (version {} in {}) cannot be loaded; \
                         fix or restore the file, or remove {} to start from `[models] embedder` again",
                        rec.version,
                        reg.root().display(),
                        reg.root().join(SERVING_FILE).display()
                    )
                })?;
                s.since_ms = rec.since_ms;
                return Ok(s);
            }
            _ => warn!(
                version = %rec.version,
                "serving.json names a version the registry does not hold; starting from [models] embedder"
            ),
        }
    }
    let sha = configured_sha;
    let v = match reg.versions().iter().find(|v| v.sha256 == sha) {
        Some(v) => v.clone(),
        None => {
            let cal = manifest_entry(manifest, &sha).and_then(|m| m.linking.clone());
            let v = reg.register(&initial, &format!("configured: {}", initial.display()), cal)?;
            reg.set_current(&v.id)?;
            v
        }
    };
    let s = open_version(&reg, &v, manifest, rt, base)?;
    let adopted = store.adopt_descriptors(configured, &s.tag)?;
    write_serving(
        data_dir,
        &ServingRecord {
            version: v.id.clone(),
            sha256: v.sha256.clone(),
            tag: s.tag.clone(),
            since_ms: s.since_ms,
            configured_sha256: sha.clone(),
        },
    )?;
    info!(version = %v.id, adopted, "serving model recorded (DATA/models/serving.json)");
    Ok(s)
}

/// Describes `tracklets` again from their stored crops with `model` and stores the descriptors
/// under its tag. `progress(done_tracklets)` is called after every batch; `stop` ends early
/// with an error. Crops that cannot be read are skipped (a tracklet with none left keeps no
/// descriptor of this model); a store write that fails fails the whole run.
pub fn reembed(
    store: &Store,
    model: &ServingEmbedder,
    tracklets: &[i64],
    pause: Duration,
    stop: &dyn Fn() -> bool,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<ReembedCount> {
    let mut count = ReembedCount::default();
    let mut batch: Vec<(i64, Vec<(image::RgbImage, f32)>)> = Vec::new();
    let mut in_batch = 0usize;
    let flush = |batch: &mut Vec<(i64, Vec<(image::RgbImage, f32)>)>,
                 count: &mut ReembedCount|
     -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let images: Vec<image::RgbImage> = batch
            .iter()
            .flat_map(|(_, c)| c.iter().map(|(i, _)| i.clone()))
            .collect();
        let e = model
            .embed_images(&images)
            .with_context(|| format!("the model {} failed on stored crops", model.version.id))?;
        let mut rows = Vec::with_capacity(batch.len());
        let mut at = 0;
        for (t, crops) in batch.iter() {
            let embs: Vec<(&[f32], f32)> = crops
                .iter()
                .enumerate()
                .filter_map(|(k, (_, q))| e.row(at + k).to_slice().map(|r| (r, *q)))
                .collect();
            at += crops.len();
            if let Some(d) = crate::reid::service::weighted_descriptor(&embs) {
                rows.push((*t, d));
            }
        }
        store
            .save_descriptors(&model.tag, &rows)
            .with_context(|| format!("cannot store the descriptors of {}", model.version.id))?;
        count.tracklets += rows.len() as u64;
        count.crops += images.len() as u64;
        batch.clear();
        Ok(())
    };
    for (i, &t) in tracklets.iter().enumerate() {
        anyhow::ensure!(!stop(), "stopped before the switch committed");
        let mut crops = Vec::new();
        for (path, q) in store.crops_of(t)? {
            match path.image() {
                Ok(img) => crops.push((img.to_rgb8(), q)),
                Err(e) => {
                    count.unreadable_crops += 1;
                    warn!(tracklet = t, crop = %path, error = %e, "a stored crop cannot be read; re-embedding without it");
                }
            }
        }
        if crops.is_empty() {
            count.without_crops += 1;
            continue;
        }
        in_batch += crops.len();
        batch.push((t, crops));
        if in_batch >= BATCH {
            flush(&mut batch, &mut count)?;
            in_batch = 0;
            progress(i as u64 + 1, count.crops);
            if !pause.is_zero() {
                std::thread::sleep(pause);
            }
        }
    }
    flush(&mut batch, &mut count)?;
    progress(tracklets.len() as u64, count.crops);
    Ok(count)
}

/// How a switch re-embeds the gallery (`[models] reembed_pause_ms`, `reembed_nice`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Reembedding {
    /// Sleep after every batch.
    pub pause: Duration,
    /// Nice value of the re-embedding thread (0 = unchanged, 19 = the lowest priority).
    pub nice: i32,
}

/// Gives the calling thread (only it, and the threads it starts later) the nice value `nice`
/// (Linux keeps one per thread). Lowering one's own priority needs no privilege; a failure is
/// logged and the work goes on at the normal priority.
pub fn lower_thread_priority(nice: i32) {
    if nice <= 0 {
        return;
    }
    // SAFETY: gettid and setpriority take no pointers; PRIO_PROCESS with a thread id addresses
    // that one thread on Linux.
    let r = unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice)
    };
    if r != 0 {
        warn!(
            nice,
            error = %std::io::Error::last_os_error(),
            "cannot lower the re-embedding thread's priority; it runs at the cameras' priority"
        );
    }
}

/// What [`reembed`] did.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct ReembedCount {
    pub tracklets: u64,
    pub crops: u64,
    pub unreadable_crops: u64,
    /// Tracklets left without a descriptor of the new model (no readable crop).
    pub without_crops: u64,
}

/// A switch in progress, as `GET /api/v1/status` shows it (`model.switch`).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SwitchProgress {
    pub to: String,
    /// `loading`, `re-embedding`, `catching-up`, `switching`.
    pub phase: String,
    /// Tracklets re-embedded of `total` in this phase.
    pub done: u64,
    pub total: u64,
}

/// How a switch ended (`model_switch_last` in the status, `DATA/models/last-switch.json`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SwitchOutcome {
    pub from: String,
    pub to: String,
    /// `switched` or `failed`.
    pub outcome: String,
    /// Why it failed (empty when it switched).
    pub reason: String,
    /// What asked for it: `promote`, `rollback` (API, UI), `registry` (the registry changed:
    /// `crosscam job promote|rollback`, a job, or a switch resumed after a restart).
    pub trigger: String,
    pub started_ms: i64,
    pub ended_ms: i64,
    pub seconds: f64,
    /// Tracklets and crops embedded with the new model, and the rate.
    pub tracklets: u64,
    pub crops: u64,
    pub crops_per_s: f64,
    pub unreadable_crops: u64,
    /// Live identities in the gallery before and after (identities whose crops were all
    /// deleted by retention cannot be described by a new model and leave the gallery; they stay
    /// in the store).
    pub identities_before: u64,
    pub identities_after: u64,
}

/// What the link stage reports after swapping (see [`Switcher`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct SwapReport {
    pub identities_before: u64,
    pub identities_after: u64,
    pub count: ReembedCount,
}

/// What a caller asks for.
#[derive(Debug, Clone)]
pub enum SwitchRequest {
    /// `POST /api/v1/models/{id}/promote`: the version becomes current when the switch commits.
    Promote(String),
    /// `POST /api/v1/models/rollback`: `previous` becomes current when the switch commits.
    Rollback,
}

/// Why a switch was refused before it started.
#[derive(Debug, thiserror::Error)]
pub enum SwitchError {
    #[error("{0}")]
    Busy(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Internal(String),
}

/// How the registry follows a committed switch.
#[derive(Debug, Clone)]
enum RegistryChange {
    /// Make the target current (the old current becomes previous).
    MakeCurrent,
    /// The registry already names the target (it changed first); on failure put back these
    /// pointers (current, previous), so that the registry does not claim a model that failed.
    AlreadyCurrent { revert: (String, Option<String>) },
}

#[derive(Default)]
struct State {
    progress: Option<SwitchProgress>,
    last: Option<SwitchOutcome>,
    /// The registry's pointers while it agreed with the serving model.
    seen: Option<(String, Option<String>)>,
    /// A registry target that failed (version, sha256): not retried until the registry changes.
    failed: Option<(String, String)>,
}

/// Runs live switches for one server; see the module documentation.
pub struct Switcher {
    data_dir: PathBuf,
    manifest: Manifest,
    rt: &'static Runtime,
    base_linking: LinkingSettings,
    /// `[models] reembed_pause_ms`, `reembed_nice`.
    reembed: Reembedding,
    shared: Arc<SharedEmbedder>,
    control: crossbeam_channel::Sender<super::Control>,
    bus: EventBus,
    state: Mutex<State>,
    stop: AtomicBool,
    /// Whether this process links (it has a gallery to re-embed); an edge only embeds.
    gallery: bool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Switcher {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        data_dir: PathBuf,
        manifest: Manifest,
        rt: &'static Runtime,
        base_linking: LinkingSettings,
        reembed: Reembedding,
        shared: Arc<SharedEmbedder>,
        control: crossbeam_channel::Sender<super::Control>,
        bus: EventBus,
        gallery: bool,
    ) -> Arc<Switcher> {
        let last = std::fs::read_to_string(Registry::dir_of(&data_dir).join(LAST_SWITCH_FILE))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok());
        Arc::new(Switcher {
            data_dir,
            manifest,
            rt,
            base_linking,
            reembed,
            shared,
            control,
            bus,
            state: Mutex::new(State {
                last,
                ..State::default()
            }),
            stop: AtomicBool::new(false),
            gallery,
        })
    }

    /// The `model` object of `GET /api/v1/status`.
    pub fn model_json(&self) -> serde_json::Value {
        let cur = self.shared.current();
        let st = lock(&self.state);
        serde_json::json!({
            "version": cur.version.id,
            "file": cur.file.display().to_string(),
            "sha256": cur.version.sha256,
            "since_ms": cur.since_ms,
            "switch": st.progress,
        })
    }

    /// How the last switch ended (this run or an earlier one), if any.
    pub fn last(&self) -> Option<SwitchOutcome> {
        lock(&self.state).last.clone()
    }

    /// The switch in progress, if any.
    pub fn progress(&self) -> Option<SwitchProgress> {
        lock(&self.state).progress.clone()
    }

    /// Starts a switch in the background; answers its first progress (the 202 of the API).
    pub fn request(
        self: &Arc<Self>,
        req: SwitchRequest,
        user: &str,
    ) -> Result<SwitchProgress, SwitchError> {
        let reg =
            Registry::open(&self.data_dir).map_err(|e| SwitchError::Internal(format!("{e:#}")))?;
        let target = match &req {
            SwitchRequest::Promote(id) => reg
                .get(id)
                .cloned()
                .ok_or_else(|| SwitchError::NotFound(format!("no model version {id:?}")))?,
            SwitchRequest::Rollback => reg.previous().cloned().ok_or_else(|| {
                SwitchError::Refused("there is no previous model version to roll back to".into())
            })?,
        };
        let trigger = match req {
            SwitchRequest::Promote(_) => "promote",
            SwitchRequest::Rollback => "rollback",
        };
        info!(to = %target.id, user, trigger, "model switch requested");
        self.begin(target, RegistryChange::MakeCurrent, trigger)
    }

    fn begin(
        self: &Arc<Self>,
        target: ModelVersion,
        change: RegistryChange,
        trigger: &str,
    ) -> Result<SwitchProgress, SwitchError> {
        let from = self.shared.current();
        let progress = SwitchProgress {
            to: target.id.clone(),
            phase: "loading".into(),
            done: 0,
            total: 0,
        };
        {
            let mut st = lock(&self.state);
            if let Some(p) = &st.progress {
                return Err(SwitchError::Busy(format!(
                    "a switch to {} is in progress ({}); wait for it to end",
                    p.to, p.phase
                )));
            }
            if from.version.id == target.id && from.version.sha256 == target.sha256 {
                return Err(SwitchError::Refused(format!(
                    "model version {} is already serving",
                    target.id
                )));
            }
            st.progress = Some(progress.clone());
        }
        let me = self.clone();
        let trigger = trigger.to_string();
        let spawned = std::thread::Builder::new()
            .name("model-switch".into())
            .spawn(move || me.run(from, target, change, trigger));
        if let Err(e) = spawned {
            lock(&self.state).progress = None;
            return Err(SwitchError::Internal(format!(
                "cannot start the switch: {e}"
            )));
        }
        Ok(progress)
    }

    fn set_phase(&self, from: &str, phase: &str, done: u64, total: u64) {
        let to = {
            let mut st = lock(&self.state);
            let Some(p) = st.progress.as_mut() else {
                return;
            };
            p.phase = phase.to_string();
            p.done = done;
            p.total = total;
            p.to.clone()
        };
        self.bus.publish(Event::ModelSwitch {
            t_ms: now_ms(),
            from: from.to_string(),
            to,
            phase: phase.to_string(),
            done,
            total,
        });
    }

    fn run(
        self: Arc<Self>,
        from: Arc<ServingEmbedder>,
        target: ModelVersion,
        change: RegistryChange,
        trigger: String,
    ) {
        let started_ms = now_ms();
        let t0 = Instant::now();
        let span = tracing::info_span!("model_switch", from = %from.version.id, to = %target.id);
        let _g = span.enter();
        info!(trigger = %trigger, "model switch started");
        let result = self.switch(&from, &target, &change);
        let seconds = t0.elapsed().as_secs_f64();
        let (outcome, reason, report) = match &result {
            Ok(r) => ("switched", String::new(), *r),
            Err(e) => ("failed", format!("{e:#}"), SwapReport::default()),
        };
        let out = SwitchOutcome {
            from: from.version.id.clone(),
            to: target.id.clone(),
            outcome: outcome.into(),
            reason: reason.clone(),
            trigger,
            started_ms,
            ended_ms: now_ms(),
            seconds,
            tracklets: report.count.tracklets,
            crops: report.count.crops,
            crops_per_s: report.count.crops as f64 / seconds.max(1e-9),
            unreadable_crops: report.count.unreadable_crops,
            identities_before: report.identities_before,
            identities_after: report.identities_after,
        };
        match &result {
            Ok(_) => info!(
                seconds,
                tracklets = out.tracklets,
                crops = out.crops,
                crops_per_s = out.crops_per_s,
                identities_before = out.identities_before,
                identities_after = out.identities_after,
                "model switched: {} serves",
                target.id
            ),
            Err(_) => {
                warn!(reason = %reason, "model switch failed; {} keeps serving", from.version.id);
                if let RegistryChange::AlreadyCurrent { revert } = &change {
                    let undo = Registry::open(&self.data_dir).and_then(|mut r| {
                        if r.current().map(|c| c.id.as_str()) == Some(target.id.as_str()) {
                            r.set_pointers(&revert.0, revert.1.as_deref())
                        } else {
                            Ok(())
                        }
                    });
                    if let Err(e) = undo {
                        warn!(error = %e, "cannot put the registry's pointers back");
                    }
                }
            }
        }
        if let Ok(text) = serde_json::to_string_pretty(&out)
            && let Err(e) = write_atomic(
                &Registry::dir_of(&self.data_dir).join(LAST_SWITCH_FILE),
                text.as_bytes(),
            )
        {
            warn!(error = %e, "cannot record how the switch ended");
        }
        {
            let mut st = lock(&self.state);
            st.progress = None;
            if result.is_err() {
                st.failed = Some((target.id.clone(), target.sha256.clone()));
            }
            st.last = Some(out);
        }
        self.bus.publish(Event::ModelSwitched {
            t_ms: now_ms(),
            from: from.version.id.clone(),
            to: target.id.clone(),
            outcome: outcome.into(),
            reason,
            seconds,
        });
    }

    fn switch(
        &self,
        from: &ServingEmbedder,
        target: &ModelVersion,
        change: &RegistryChange,
    ) -> Result<SwapReport> {
        let reg = Registry::open(&self.data_dir)?;
        let next = Arc::new(open_version(
            &reg,
            target,
            &self.manifest,
            self.rt,
            &self.base_linking,
        )?);
        if !self.gallery {
            // an edge: nothing stored to describe again; the re-id stage embeds with the new
            // model from its next batch, and its observations say which model it is
            self.set_phase(&from.version.id, "switching", 0, 0);
            self.commit(target, &next.tag, next.since_ms, change)()?;
            self.shared.swap(next);
            return Ok(SwapReport::default());
        }
        // the gallery is described again by a thread of its own, at the configured low
        // priority, with a session of its own (its ONNX Runtime threads inherit the priority):
        // the serving sessions, the cameras and the link stage keep theirs
        let count = std::thread::scope(|scope| {
            std::thread::Builder::new()
                .name("model-reembed".into())
                .spawn_scoped(scope, || {
                    lower_thread_priority(self.reembed.nice);
                    self.reembed_gallery(&from.version.id, target)
                })
                .context("cannot start the re-embedding thread")?
                .join()
                .map_err(|_| anyhow::anyhow!("the re-embedding thread panicked"))?
        })?;
        let stop = || self.stop.load(Ordering::SeqCst);
        anyhow::ensure!(!stop(), "stopped before the switch committed");
        self.set_phase(&from.version.id, "switching", 0, 0);
        let commit = self.commit(target, &next.tag, next.since_ms, change);
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.control
            .send(super::Control::SwitchModel {
                next: next.clone(),
                commit,
                reply: tx,
            })
            .map_err(|_| anyhow::anyhow!("the link stage has stopped"))?;
        let mut report = rx
            .recv()
            .map_err(|_| anyhow::anyhow!("the link stage stopped before the switch committed"))?
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        add(&mut report.count, count);
        Ok(report)
    }

    /// Describes every tracklet of the gallery with `target` (a session opened here, so that
    /// its threads run at this thread's priority), then those recorded meanwhile, until few
    /// enough are left for the link stage to describe while it pauses.
    fn reembed_gallery(&self, from: &str, target: &ModelVersion) -> Result<ReembedCount> {
        let reg = Registry::open(&self.data_dir)?;
        let model = open_version(&reg, target, &self.manifest, self.rt, &self.base_linking)?;
        let store = Store::open(&self.data_dir)?;
        let stop = || self.stop.load(Ordering::SeqCst);
        let pause = self.reembed.pause;
        let t0 = Instant::now();
        let todo = store.reembed_todo(&model.tag)?;
        let total = todo.len() as u64;
        let mut last_event = Instant::now();
        self.set_phase(from, "re-embedding", 0, total);
        let mut count = reembed(&store, &model, &todo, pause, &stop, &mut |done, crops| {
            if last_event.elapsed() >= Duration::from_millis(500) || done == total {
                last_event = Instant::now();
                let rate = crops as f64 / t0.elapsed().as_secs_f64().max(1e-3);
                tracing::debug!(done, total, crops_per_s = rate, "re-embedding");
                self.set_phase(from, "re-embedding", done, total);
            }
        })?;
        // tracklets recorded meanwhile were linked (and described) by the old model: describe
        // them too, until few enough are left for the link stage to do while it pauses
        for _ in 0..5 {
            let todo = store.reembed_todo(&model.tag)?;
            if todo.len() <= PAUSE_WORK {
                break;
            }
            let n = todo.len() as u64;
            self.set_phase(from, "catching-up", 0, n);
            let c = reembed(&store, &model, &todo, pause, &stop, &mut |done, _| {
                self.set_phase(from, "catching-up", done, n)
            })?;
            add(&mut count, c);
        }
        Ok(count)
    }

    /// The commit point of a switch to `target`: the registry names it current (if the
    /// switch asked for that) and `serving.json` is replaced; a failed write puts the
    /// registry's pointers back.
    fn commit(
        &self,
        target: &ModelVersion,
        tag: &str,
        since: i64,
        change: &RegistryChange,
    ) -> Box<dyn FnOnce() -> Result<()> + Send> {
        let data_dir = self.data_dir.clone();
        let v = target.clone();
        let tag = tag.to_string();
        let change = change.clone();
        Box::new(move || {
            let mut reg = Registry::open(&data_dir)?;
            let pointers = (
                reg.current().map(|c| c.id.clone()),
                reg.previous().map(|p| p.id.clone()),
            );
            if let RegistryChange::MakeCurrent = change {
                reg.set_current(&v.id)?;
            }
            let configured_sha256 = read_serving(&data_dir)
                .ok()
                .flatten()
                .map(|r| r.configured_sha256)
                .unwrap_or_default();
            let written = write_serving(
                &data_dir,
                &ServingRecord {
                    version: v.id.clone(),
                    sha256: v.sha256.clone(),
                    tag,
                    since_ms: since,
                    configured_sha256,
                },
            );
            if written.is_err()
                && let (RegistryChange::MakeCurrent, (Some(cur), prev)) = (&change, &pointers)
            {
                // the registry must not name a model that does not serve
                let _ = reg.set_pointers(cur, prev.as_deref());
            }
            written
        })
    }

    /// Watches `registry.json`: when its current version is not the serving one (changed by
    /// `crosscam job promote|rollback`, a job, or left by a switch a crash interrupted), switches
    /// to it. Polls every second until [`Switcher::shutdown`].
    pub(super) fn watch_registry(self: &Arc<Self>) {
        let me = self.clone();
        let _ = std::thread::Builder::new()
            .name("model-registry".into())
            .spawn(move || {
                while !me.stop.load(Ordering::SeqCst) {
                    me.poll_registry();
                    std::thread::sleep(Duration::from_secs(1));
                }
            });
    }

    fn poll_registry(self: &Arc<Self>) {
        let Ok(reg) = Registry::open(&self.data_dir) else {
            return;
        };
        let Some(cur) = reg.current().cloned() else {
            return;
        };
        let prev = reg.previous().map(|p| p.id.clone());
        let serving = self.shared.current();
        let revert = {
            let mut st = lock(&self.state);
            if st.progress.is_some() {
                return;
            }
            if cur.id == serving.version.id {
                st.seen = Some((cur.id.clone(), prev));
                st.failed = None;
                return;
            }
            if st.failed.as_ref() == Some(&(cur.id.clone(), cur.sha256.clone())) {
                return;
            }
            st.seen
                .clone()
                .unwrap_or((serving.version.id.clone(), None))
        };
        info!(to = %cur.id, serving = %serving.version.id, "the registry names another model version: switching to it");
        if let Err(e) = self.begin(cur, RegistryChange::AlreadyCurrent { revert }, "registry") {
            warn!(error = %e, "cannot start the switch the registry asks for");
        }
    }

    /// Stops watching and makes a switch in progress give up before it commits.
    pub fn shutdown(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn add(a: &mut ReembedCount, b: ReembedCount) {
    a.tracklets += b.tracklets;
    a.crops += b.crops;
    a.unreadable_crops += b.unreadable_crops;
    a.without_crops += b.without_crops;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nice_of_this_thread() -> i32 {
        // SAFETY: no pointers; getpriority may return -1 legitimately, which errno tells apart
        unsafe {
            *libc::__errno_location() = 0;
            let n = libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t);
            assert_eq!(*libc::__errno_location(), 0, "getpriority failed");
            n
        }
    }

    #[test]
    fn the_reembedding_priority_is_lowered_for_its_thread_and_the_threads_it_starts_only() {
        let main = nice_of_this_thread();
        assert!(main < 19, "the test needs to run above the lowest priority");
        let (own, started) = std::thread::spawn(|| {
            lower_thread_priority(19);
            // ONNX Runtime's intra-op threads are started like this one, by the thread that
            // opens the session
            let started = std::thread::spawn(nice_of_this_thread).join().unwrap();
            (nice_of_this_thread(), started)
        })
        .join()
        .unwrap();
        assert_eq!((own, started), (19, 19));
        assert_eq!(nice_of_this_thread(), main, "the other threads keep theirs");
        let unchanged = std::thread::spawn(|| {
            lower_thread_priority(0);
            nice_of_this_thread()
        })
        .join()
        .unwrap();
        assert_eq!(unchanged, main);
    }
}
