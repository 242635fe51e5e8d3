//! Models reach every edge: the core publishes the embedder it serves, and edges follow.
//!
//! - The active core ([`ModelPublisher`]) checks every two seconds which model version serves
//!   (after a promotion or rollback: once its live switch has committed, src/server/switch.rs).
//!   A new one is put in the object store `CROSSCAM_<SITE>_MODELS` as `embedder-<sha256>` (once
//!   per file) and named in the key-value bucket `CROSSCAM_<SITE>_MODEL`, key `serving`
//!   ([`SiteModel`]: version, sha256, size, linking calibration).
//! - Each edge ([`ModelFollower`]) reads that key every two seconds. When it names another file
//!   than the edge serves, the edge downloads it (bounded size), checks its sha256 against the
//!   key, registers it in its own model registry (or finds it there) and makes it current; the
//!   edge's switcher then loads it, runs a test crop through it and swaps it in (an edge has no
//!   gallery to describe again). A file that does not load leaves the old model serving, and
//!   the reason in the edge's `model_switch_last`.
//! - Observations carry the model that described them; the core compares models by checksum
//!   and describes an observation of another model again from its crops, so the few sent
//!   between the core's switch and an edge's never meet the gallery of another model.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, kv, object_store};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt as _;
use tracing::{info, warn};

use super::ClusterSettings;
use crate::jobs::registry::{Registry, sha256_file};
use crate::server::stage::StageThread;
use crate::server::switch::SharedEmbedder;

/// The key of the site's serving model.
const SERVING: &str = "serving";
/// How often both sides look.
const ROUND: Duration = Duration::from_secs(2);
/// How long one request to the broker may take (a model upload takes longer: its chunks are
/// acknowledged one by one).
const REQUEST: Duration = Duration::from_secs(10);
/// The largest model file an edge downloads.
pub const MAX_MODEL_BYTES: u64 = 2 << 30;

/// The site's serving embedder, as the core published it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SiteModel {
    /// The core's registry version (edges register it under their own numbers).
    pub version: String,
    pub sha256: String,
    pub bytes: u64,
    /// Its linking calibration, if the core's registry had one.
    #[serde(default)]
    pub linking: Option<crate::models::LinkCalibration>,
    pub core: String,
    pub since_ms: i64,
}

impl SiteModel {
    fn object(&self) -> String {
        format!("embedder-{}", self.sha256)
    }
}

/// Whether two descriptor tags (`<version>:<first 12 hex digits of the sha256>`) name the same
/// file: versions are numbered per data directory, checksums are not.
pub fn same_model(a: &str, b: &str) -> bool {
    let sum = |t: &str| t.rsplit_once(':').map_or(t, |(_, s)| s).to_string();
    a == b || (a.contains(':') && b.contains(':') && sum(a) == sum(b))
}

pub(crate) struct Buckets {
    kv: kv::Store,
    objects: object_store::ObjectStore,
}

impl Buckets {
    pub(crate) async fn open(
        client: &async_nats::Client,
        s: &ClusterSettings,
    ) -> anyhow::Result<Buckets> {
        let js = jetstream::ContextBuilder::new()
            .timeout(REQUEST)
            .build(client.clone());
        let kv = super::assign::open_bucket(
            &js,
            s.bucket("MODEL"),
            Duration::ZERO,
            "crosscam: the site's serving embedder, written by the active core",
            s.replicas,
        )
        .await?;
        let name = s.bucket("MODELS");
        let objects = super::assign::open_object_store(
            &js,
            name,
            "crosscam: the site's embedder files by sha256",
            s.replicas,
        )
        .await?;
        Ok(Buckets { kv, objects })
    }
}

/// Runs `round` every [`ROUND`] with the site's model buckets (opened on the first round that
/// reaches the broker), logging failures at the first and at powers of two.
async fn every_round<F, Fut>(
    client: async_nats::Client,
    settings: ClusterSettings,
    stop: Arc<AtomicBool>,
    what: &str,
    mut round: F,
) where
    F: FnMut(Arc<Buckets>) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let mut buckets: Option<Arc<Buckets>> = None;
    let mut failures = 0u32;
    while !stop.load(Ordering::SeqCst) {
        if buckets.is_none() {
            match Buckets::open(&client, &settings).await {
                Ok(b) => buckets = Some(Arc::new(b)),
                Err(e) => {
                    failures += 1;
                    if failures == 1 || failures.is_power_of_two() {
                        warn!(error = %format!("{e:#}"), "{what}: cannot open the site's model buckets yet");
                    }
                }
            }
        }
        if let Some(b) = &buckets {
            match round(b.clone()).await {
                Ok(()) => failures = 0,
                Err(e) => {
                    failures += 1;
                    if failures == 1 || failures.is_power_of_two() {
                        warn!(error = %format!("{e:#}"), failures, "{what}: failed; trying again");
                    }
                }
            }
        }
        for _ in 0..(ROUND.as_millis() / 100) {
            if stop.load(Ordering::SeqCst) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The core's side.
pub struct ModelPublisher {
    thread: StageThread,
    /// The model last published.
    pub published: Arc<Mutex<Option<SiteModel>>>,
}

impl ModelPublisher {
    pub fn start(
        settings: &ClusterSettings,
        embedder: Arc<SharedEmbedder>,
    ) -> anyhow::Result<ModelPublisher> {
        let rt = super::runtime()?;
        let name = settings.edge_name();
        let client = rt.block_on(settings.connect(&format!("core-{name}-models")))?;
        let published = Arc::new(Mutex::new(None));
        let (s, p) = (settings.clone(), published.clone());
        let thread = StageThread::spawn("core-models", move |stop| {
            rt.block_on(every_round(
                client,
                s,
                stop,
                "core: publishing the serving model",
                move |b| {
                    let (embedder, p, name) = (embedder.clone(), p.clone(), name.clone());
                    async move { publish(&b, &embedder, &p, &name).await }
                },
            ));
            rt.shutdown_timeout(Duration::from_secs(2));
        });
        Ok(ModelPublisher { thread, published })
    }

    pub fn stop(&mut self) {
        self.thread.stop();
    }
}

async fn publish(
    b: &Buckets,
    embedder: &SharedEmbedder,
    published: &Mutex<Option<SiteModel>>,
    core: &str,
) -> anyhow::Result<()> {
    let cur = embedder.current();
    let done = published
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        .is_some_and(|p| p.sha256 == cur.version.sha256);
    if done {
        return Ok(());
    }
    let m = SiteModel {
        version: cur.version.id.clone(),
        sha256: cur.version.sha256.clone(),
        bytes: std::fs::metadata(&cur.file)?.len(),
        linking: cur.version.linking.clone(),
        core: core.to_string(),
        since_ms: cur.since_ms,
    };
    let present = b
        .objects
        .info(m.object())
        .await
        .is_ok_and(|i| !i.deleted && i.size as u64 == m.bytes);
    if !present {
        let mut f = tokio::fs::File::open(&cur.file).await?;
        b.objects
            .put(
                object_store::ObjectMetadata {
                    name: m.object(),
                    description: Some(format!("crosscam embedder, core version {}", m.version)),
                    ..Default::default()
                },
                &mut f,
            )
            .await?;
    }
    b.kv.put(SERVING, serde_json::to_vec(&m)?.into()).await?;
    info!(version = %m.version, sha256 = %m.sha256, bytes = m.bytes, uploaded = !present, "core: the site's edges are told to embed with this model");
    *published.lock().unwrap_or_else(|e| e.into_inner()) = Some(m);
    Ok(())
}

/// The edge's side.
pub struct ModelFollower {
    thread: StageThread,
    /// The site's model as last read, and how following it went.
    pub state: Arc<Mutex<FollowState>>,
}

/// What an edge knows of the site's model.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FollowState {
    pub site_model: Option<SiteModel>,
    /// Why the last attempt to take it failed, if it did.
    pub error: Option<String>,
    /// Site models taken into this edge's registry.
    pub taken: u64,
}

impl ModelFollower {
    pub fn start(settings: &ClusterSettings, data_dir: &Path) -> anyhow::Result<ModelFollower> {
        let rt = super::runtime()?;
        let name = settings.edge_name();
        let client = rt.block_on(settings.connect(&format!("{name}-models")))?;
        let state = Arc::new(Mutex::new(FollowState::default()));
        let (s, st, dir) = (settings.clone(), state.clone(), data_dir.to_path_buf());
        let thread = StageThread::spawn("edge-models", move |stop| {
            let handled: Arc<Mutex<Option<String>>> = Arc::default();
            rt.block_on(every_round(
                client,
                s,
                stop,
                "edge: following the site's model",
                move |b| {
                    let (st, dir, handled) = (st.clone(), dir.clone(), handled.clone());
                    async move {
                        let r = follow(&b, &dir, &st, &handled).await;
                        st.lock().unwrap_or_else(|e| e.into_inner()).error =
                            r.as_ref().err().map(|e| format!("{e:#}"));
                        r
                    }
                },
            ));
            rt.shutdown_timeout(Duration::from_secs(2));
        });
        Ok(ModelFollower { thread, state })
    }

    pub fn stop(&mut self) {
        self.thread.stop();
    }
}

async fn follow(
    b: &Buckets,
    data_dir: &Path,
    state: &Mutex<FollowState>,
    handled: &Mutex<Option<String>>,
) -> anyhow::Result<()> {
    let Some(entry) = b.kv.entry(SERVING).await? else {
        return Ok(()); // no core has published yet
    };
    if !matches!(entry.operation, kv::Operation::Put) {
        return Ok(());
    }
    let m: SiteModel = serde_json::from_slice(&entry.value)
        .map_err(|e| anyhow::anyhow!("the site's model entry is not what a core writes: {e}"))?;
    anyhow::ensure!(
        m.sha256.len() == 64 && m.sha256.bytes().all(|c| c.is_ascii_hexdigit()),
        "the site's model entry has no sha256"
    );
    state.lock().unwrap_or_else(|e| e.into_inner()).site_model = Some(m.clone());
    if handled.lock().unwrap_or_else(|e| e.into_inner()).as_deref() == Some(&m.sha256) {
        return Ok(());
    }
    let sha = m.sha256.to_ascii_lowercase();
    let reg = Registry::open(data_dir)?;
    if reg.current().is_some_and(|c| c.sha256 == sha) {
        *handled.lock().unwrap_or_else(|e| e.into_inner()) = Some(m.sha256.clone());
        return Ok(());
    }
    drop(reg);
    let v = local_version(b, data_dir, &m).await?;
    let (dir, id) = (data_dir.to_path_buf(), v.id.clone());
    tokio::task::spawn_blocking(move || Registry::open(&dir).and_then(|mut r| r.set_current(&id)))
        .await??;
    info!(version = %v.id, core_version = %m.version, sha256 = %m.sha256, "edge: the site's model is now current here; switching to it");
    state.lock().unwrap_or_else(|e| e.into_inner()).taken += 1;
    *handled.lock().unwrap_or_else(|e| e.into_inner()) = Some(m.sha256.clone());
    Ok(())
}

/// The version of this data directory's registry holding the site's model file `m`: found by
/// checksum, or downloaded from the site's object store and registered.
async fn local_version(
    b: &Buckets,
    data_dir: &Path,
    m: &SiteModel,
) -> anyhow::Result<crate::jobs::registry::ModelVersion> {
    let sha = m.sha256.to_ascii_lowercase();
    let known = Registry::open(data_dir)?
        .versions()
        .iter()
        .find(|v| v.sha256 == sha)
        .cloned();
    if let Some(v) = known {
        return Ok(v);
    }
    let file = download(b, m, data_dir).await?;
    let origin = format!("site model: core {} version {}", m.core, m.version);
    let (f, dir, cal) = (file.clone(), data_dir.to_path_buf(), m.linking.clone());
    let v = tokio::task::spawn_blocking(move || {
        Registry::open(&dir).and_then(|mut r| r.register(&f, &origin, cal))
    })
    .await?;
    let _ = std::fs::remove_file(&file);
    v
}

/// After a takeover from a snapshot (src/cluster/failover.rs): makes the model that described
/// the snapshot's gallery (`sha256`, its descriptors tagged `tag` there) the one this core
/// serves from its start — found in its registry or taken from the site's object store — and
/// gives the snapshot's descriptors this registry's tag for it, so that the gallery is whole.
pub(crate) async fn adopt_snapshot_model(
    client: &async_nats::Client,
    settings: &ClusterSettings,
    data_dir: &Path,
    sha256: &str,
    tag: &str,
    core: &str,
) -> anyhow::Result<String> {
    let b = Buckets::open(client, settings).await?;
    let site: Option<SiteModel> = match b.kv.entry(SERVING).await? {
        Some(e) if matches!(e.operation, kv::Operation::Put) => {
            serde_json::from_slice(&e.value).ok()
        }
        _ => None,
    };
    let m = match site.filter(|m| m.sha256.eq_ignore_ascii_case(sha256)) {
        Some(m) => m,
        None => SiteModel {
            version: tag.split(':').next().unwrap_or_default().to_string(),
            sha256: sha256.to_string(),
            bytes: 0,
            linking: None,
            core: core.to_string(),
            since_ms: crate::store::now_ms(),
        },
    };
    let v = local_version(&b, data_dir, &m).await?;
    let (dir, old) = (data_dir.to_path_buf(), tag.to_string());
    tokio::task::spawn_blocking(move || -> anyhow::Result<String> {
        let mut reg = Registry::open(&dir)?;
        if reg.current().map(|c| c.id.as_str()) != Some(v.id.as_str()) {
            reg.set_current(&v.id)?;
        }
        let new = v.tag();
        if new != old {
            let c = rusqlite::Connection::open(dir.join("crosscam.db"))?;
            c.execute(
                "INSERT OR IGNORE INTO descriptors (tracklet, model, dim, vector)
                 SELECT tracklet, ?2, dim, vector FROM descriptors WHERE model = ?1",
                rusqlite::params![old, new],
            )?;
        }
        let configured_sha256 = crate::server::switch::read_serving(&dir)
            .ok()
            .flatten()
            .map(|r| r.configured_sha256)
            .unwrap_or_default();
        crate::server::switch::write_serving(
            &dir,
            &crate::server::switch::ServingRecord {
                version: v.id.clone(),
                sha256: v.sha256.clone(),
                tag: new.clone(),
                since_ms: crate::store::now_ms(),
                configured_sha256,
            },
        )?;
        Ok(new)
    })
    .await?
}

/// Downloads the site's model file into the data directory and checks it against the entry.
async fn download(b: &Buckets, m: &SiteModel, data_dir: &Path) -> anyhow::Result<PathBuf> {
    let info = b.objects.info(m.object()).await.map_err(|e| {
        anyhow::anyhow!(
            "the site's model file {} is not in the object store: {e}",
            m.object()
        )
    })?;
    anyhow::ensure!(
        (info.size as u64) <= MAX_MODEL_BYTES,
        "the site's model file is {} bytes, over the {} an edge takes",
        info.size,
        MAX_MODEL_BYTES
    );
    let dir = Registry::dir_of(data_dir).join(crate::jobs::registry::STAGING_DIR);
    tokio::fs::create_dir_all(&dir).await?;
    let path = dir.join(format!("site-{}.onnx", &m.sha256[..16]));
    let mut obj = b.objects.get(m.object()).await?;
    let mut f = tokio::fs::File::create(&path).await?;
    let copied = tokio::io::copy(&mut (&mut obj).take(MAX_MODEL_BYTES + 1), &mut f).await;
    drop(f);
    let fail = |e: anyhow::Error| {
        let _ = std::fs::remove_file(&path);
        e
    };
    copied.map_err(|e| fail(e.into()))?;
    let p = path.clone();
    let sum = tokio::task::spawn_blocking(move || sha256_file(&p))
        .await?
        .map_err(fail)?;
    if !sum.eq_ignore_ascii_case(&m.sha256) {
        return Err(fail(anyhow::anyhow!(
            "the site's model file has sha256 {sum}, not the {} its entry names; not used",
            m.sha256
        )));
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn models_are_the_same_by_checksum_not_by_version_number() {
        assert!(same_model("v0001:0123456789ab", "v0003:0123456789ab"));
        assert!(!same_model("v0001:0123456789ab", "v0001:ba9876543210"));
        // names without a checksum (descriptors adopted from an old store) compare as names
        assert!(same_model(
            "crosscam-resnet18-vtest",
            "crosscam-resnet18-vtest"
        ));
        assert!(!same_model("a:x", "b"));
    }
}
