//! Core failover: one active core per site, any number of standby cores.
//!
//! - **The lease.** Bucket `CROSSCAM_<SITE>_CORE` (JetStream KV, history 1, max age `lease_s`)
//!   holds key `active` = the active core ([`ActiveValue`]). A core that starts creates the key
//!   (create-if-absent: one winner); the revision it got is its **epoch**, the fencing token of
//!   its term. It renews the key by compare-and-set on the revision it holds every third of
//!   the lease time. A standby retries the create every second, so it wins once the key has
//!   expired (the active core died) or was deleted (the active core stopped).
//! - **The fence.** The active core only takes observations from the broker while its last
//!   renewal is younger than the lease time less a safety second ([`Fence::holds`]); the
//!   broker forgets the key only a full lease time after that renewal, so two cores never
//!   consume at once. A core that finds another core's revision on the key has lost its term
//!   and stops ([`Fence::lost`]; `crosscam serve` then exits with an error, for its supervisor
//!   to restart it as a standby). A core whose key expired while the broker was away, and
//!   that nobody took, takes it back and replays from its last snapshot point.
//! - **Snapshots.** Every `snapshot_s` the active core copies its database (`VACUUM INTO`)
//!   and puts it in the object store `CROSSCAM_<SITE>_SNAPSHOTS` as `gallery-<epoch>`, with
//!   the stream sequence below which every observation is stored in it (the durable consumer's
//!   acknowledgement floor, read before the copy). Older terms' snapshots are deleted after.
//!   Standbys download each new snapshot as it appears (`DATA/cluster-mirror.db`). What
//!   operators change (merges, splits, labels, identity names: the store counts them
//!   with triggers) is snapshotted sooner: 2 s after the change, and no sooner than a tenth of
//!   `snapshot_s` (2 to 10 s) after the last snapshot.
//! - **Taking over.** The new active core compares its own database (`DATA/cluster-core.json`
//!   says which term last wrote it and up to which sequence) with the newest snapshot: the
//!   newer term wins. A snapshot replaces the database (the old one is kept as
//!   `crosscam.db.replaced`). The link stage then replays the stream from the point after the
//!   chosen sequence to the stream's end at that moment (an ephemeral consumer; what is stored
//!   already is dropped by its message number), then resumes the site's durable consumer,
//!   which delivers again whatever the old core had not acknowledged.
//!
//! - **Crop pictures.** A snapshot has the crops' rows, not their JPEG files; the observations
//!   in the stream carry them. After a takeover from a snapshot the core reads the stream up to
//!   the end of its replay once more and writes the pictures its database names but its disk
//!   lacks ([`restore_crops`]), as far as the stream still holds them.
//!
//! What a snapshot does not carry: operator actions of the old core after its last snapshot
//! (merges, splits, labels, cameras changed through the API: each triggers a snapshot within
//! seconds), the credentials database.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, kv, object_store};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tracing::{error, info, warn};

use super::ClusterSettings;
use crate::server::stage::StageThread;
use crate::store::now_ms;

/// The key of the active core in the core bucket.
const ACTIVE: &str = "active";
/// Standbys' heartbeats: `standby.<name>`.
const STANDBY: &str = "standby.";
/// Snapshot objects: `gallery-<epoch>`.
const SNAPSHOT: &str = "gallery-";
/// Which term last wrote this data directory's database, and up to which stream sequence it
/// holds everything.
pub const MARKER: &str = "cluster-core.json";
/// A standby's copy of the newest snapshot, and what it is.
const MIRROR: &str = "cluster-mirror.db";
const MIRROR_POINT: &str = "cluster-mirror.json";
/// How long one request to the broker may take.
const REQUEST: Duration = Duration::from_secs(5);
/// The margin between the core's own idea of its lease and the broker's.
const SAFETY: Duration = Duration::from_secs(1);

/// The value of the `active` key.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ActiveValue {
    pub core: String,
    /// The core process's run (a restarted core is a new holder).
    pub run: String,
    pub since_ms: i64,
}

/// A point of the site's history: a database written in term `epoch` holds every observation
/// of the stream up to sequence `seq`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Point {
    pub epoch: u64,
    pub seq: u64,
    pub core: String,
    pub t_ms: i64,
    /// The data directory of the core that wrote it (its crops' paths start with it).
    #[serde(default)]
    pub data_dir: String,
    /// The snapshot's size (snapshots only).
    #[serde(default)]
    pub bytes: u64,
    /// The model that described the gallery (snapshots only): its file's sha256 and the tag of
    /// its descriptors in the database.
    #[serde(default)]
    pub model_sha256: String,
    #[serde(default)]
    pub model_tag: String,
}

impl Point {
    fn newer_than(&self, other: &Point) -> bool {
        (self.epoch, self.seq) > (other.epoch, other.seq)
    }

    fn metadata(&self) -> std::collections::HashMap<String, String> {
        [
            ("epoch", self.epoch.to_string()),
            ("seq", self.seq.to_string()),
            ("core", self.core.clone()),
            ("t_ms", self.t_ms.to_string()),
            ("data_dir", self.data_dir.clone()),
            ("model_sha256", self.model_sha256.clone()),
            ("model_tag", self.model_tag.clone()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    fn from_info(info: &object_store::ObjectInfo) -> Option<Point> {
        let m = &info.metadata;
        let epoch = info.name.strip_prefix(SNAPSHOT)?.parse().ok()?;
        Some(Point {
            epoch,
            seq: m.get("seq")?.parse().ok()?,
            core: m.get("core").cloned().unwrap_or_default(),
            t_ms: m.get("t_ms").and_then(|t| t.parse().ok()).unwrap_or(0),
            data_dir: m.get("data_dir").cloned().unwrap_or_default(),
            bytes: info.size as u64,
            model_sha256: m.get("model_sha256").cloned().unwrap_or_default(),
            model_tag: m.get("model_tag").cloned().unwrap_or_default(),
        })
    }
}

/// A standby's heartbeat in the core bucket.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StandbyValue {
    pub core: String,
    pub since_ms: i64,
    /// The snapshot it holds a copy of.
    pub mirrored: Option<Point>,
    pub t_ms: i64,
}

/// The replay of the stream after taking over.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Replay {
    /// First and last stream sequence replayed.
    pub from: u64,
    pub to: u64,
    /// Messages taken so far.
    pub done: u64,
    pub finished: bool,
}

/// The active core's term, for status (`pipeline.cluster.core`).
#[derive(Debug, Clone, Serialize, Default)]
pub struct CoreState {
    /// `active`, or `lost` once another core holds the lease.
    pub state: String,
    pub epoch: u64,
    pub since_ms: i64,
    /// What the database started from: `local` (this core's own) or `snapshot`.
    pub restored_from: String,
    /// The point the term started from (replay starts after its sequence).
    pub start: Option<Point>,
    pub replay: Option<Replay>,
    /// The last snapshot this core took, and failed attempts.
    pub snapshot: Option<Point>,
    pub snapshots_failed: u64,
    /// Standby cores' heartbeats.
    pub standbys: Vec<StandbyValue>,
    /// When the lease was last renewed.
    pub renewed_ms: i64,
    /// After a takeover from a snapshot: crop pictures written from the stream, and those
    /// still missing when it finished (the stream no longer held them).
    pub crops_restored: u64,
    pub crops_missing: u64,
    pub crops_done: bool,
}

fn clock() -> u64 {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// The active core's hold on the site: the consuming side asks it before every fetch.
#[derive(Debug, Default)]
pub struct Fence {
    /// Monotonic ms ([`clock`]) until which the lease certainly holds.
    valid_until: AtomicU64,
    /// A replay the consuming side is to run first: the first sequence.
    replay: Mutex<Option<u64>>,
    /// Whether the replay of the current term has finished (snapshots wait for it).
    replayed: AtomicBool,
    lost: Mutex<Option<String>>,
    pub state: Mutex<CoreState>,
}

impl Fence {
    /// Whether this core may take observations now.
    pub fn holds(&self) -> bool {
        clock() < self.valid_until.load(Ordering::SeqCst) && self.lost().is_none()
    }

    /// Why this core lost its term, once it has.
    pub fn lost(&self) -> Option<String> {
        self.lost.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn lose(&self, why: String) {
        self.valid_until.store(0, Ordering::SeqCst);
        self.state_mut().state = "lost".into();
        *self.lost.lock().unwrap_or_else(|e| e.into_inner()) = Some(why);
    }

    fn renewed(&self, at: u64, lease: Duration) {
        let until = at + lease.saturating_sub(SAFETY).as_millis() as u64;
        self.valid_until.store(until, Ordering::SeqCst);
        self.state_mut().renewed_ms = now_ms();
    }

    /// The replay to run before consuming, if any (taken once).
    pub fn take_replay(&self) -> Option<u64> {
        self.replay.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    fn ask_replay(&self, from: u64) {
        self.replayed.store(false, Ordering::SeqCst);
        *self.replay.lock().unwrap_or_else(|e| e.into_inner()) = Some(from);
    }

    /// The consuming side's report on the replay.
    pub fn replay_progress(&self, r: Replay) {
        if r.finished {
            self.replayed.store(true, Ordering::SeqCst);
        }
        self.state_mut().replay = Some(r);
    }

    pub fn state(&self) -> CoreState {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn state_mut(&self) -> std::sync::MutexGuard<'_, CoreState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The site's core bucket and snapshot store.
struct Site {
    kv: kv::Store,
    objects: object_store::ObjectStore,
    /// The consumer the acknowledgement floor is read from.
    stream: String,
    consumer: String,
    js: jetstream::Context,
    lease: Duration,
}

impl Site {
    async fn open(client: &async_nats::Client, s: &ClusterSettings) -> anyhow::Result<Site> {
        let js = jetstream::ContextBuilder::new()
            .timeout(REQUEST)
            .build(client.clone());
        let lease = Duration::from_secs(s.lease_s);
        let kv = super::assign::open_bucket(
            &js,
            s.bucket("CORE"),
            lease,
            "crosscam: the active core (expiring) and standby cores' heartbeats",
            s.replicas,
        )
        .await?;
        let name = s.bucket("SNAPSHOTS");
        let objects = super::assign::open_object_store(
            &js,
            name,
            "crosscam: the active core's gallery snapshots",
            s.replicas,
        )
        .await?;
        let lease = match kv.status().await?.info.config.max_age {
            d if d.is_zero() => lease,
            d => d,
        };
        Ok(Site {
            kv,
            objects,
            stream: s.stream(),
            consumer: s.consumer.clone(),
            js,
            lease,
        })
    }

    /// The newest snapshot of the site, if any.
    async fn newest(&self) -> anyhow::Result<Option<Point>> {
        let mut list = self.objects.list().await?;
        let mut best: Option<Point> = None;
        while let Some(info) = list.next().await {
            let info = info?;
            if info.deleted {
                continue;
            }
            if let Some(p) = Point::from_info(&info)
                && best.as_ref().is_none_or(|b| p.newer_than(b))
            {
                best = Some(p);
            }
        }
        Ok(best)
    }

    /// Downloads snapshot `p` to `to` (through a temporary file); checks the copy is a database.
    async fn download(&self, p: &Point, to: &Path) -> anyhow::Result<()> {
        let tmp = to.with_extension("part");
        let mut obj = self.objects.get(format!("{SNAPSHOT}{}", p.epoch)).await?;
        let mut f = tokio::fs::File::create(&tmp).await?;
        // the object store checks the content's SHA-256 digest at its end
        tokio::io::copy(&mut obj, &mut f).await?;
        f.sync_all().await?;
        drop(f);
        let check = tmp.clone();
        tokio::task::spawn_blocking(move || quick_check(&check)).await??;
        std::fs::rename(&tmp, to)?;
        Ok(())
    }
}

/// The durable consumer's acknowledgement floor: every message at or below it is stored (0
/// before the stream or the consumer exists).
async fn ack_floor(js: &jetstream::Context, stream: &str, consumer: &str) -> anyhow::Result<u64> {
    let stream = match js.get_stream(stream).await {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                jetstream::context::GetStreamErrorKind::JetStream(_)
            ) =>
        {
            return Ok(0);
        }
        Err(e) => return Err(e.into()),
    };
    match stream.consumer_info(consumer).await {
        Ok(i) => Ok(i.ack_floor.stream_sequence),
        Err(e) if e.to_string().contains("not found") => Ok(0),
        Err(e) => Err(e.into()),
    }
}

fn quick_check(path: &Path) -> anyhow::Result<()> {
    let c =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let r: String = c.query_row("PRAGMA quick_check", [], |r| r.get(0))?;
    anyhow::ensure!(r == "ok", "the snapshot is not a sound database: {r}");
    Ok(())
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Option<T> {
    let text = std::fs::read(path).ok()?;
    match serde_json::from_slice(&text) {
        Ok(v) => Some(v),
        Err(e) => {
            warn!(file = %path.display(), error = %e, "ignoring a file crosscam did not write");
            None
        }
    }
}

fn write_json<T: Serialize>(path: &Path, v: &T) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(v)?)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// Replaces the data directory's database with `snapshot` (keeping the old one as
/// `crosscam.db.replaced`) and points the crops' rows at this data directory.
fn restore(data_dir: &Path, snapshot: &Path, p: &Point) -> anyhow::Result<()> {
    let db = data_dir.join("crosscam.db");
    let old = data_dir.join("crosscam.db.replaced");
    for suffix in ["", "-wal", "-shm"] {
        let from = PathBuf::from(format!("{}{suffix}", db.display()));
        let to = PathBuf::from(format!("{}{suffix}", old.display()));
        let _ = std::fs::remove_file(&to);
        if from.exists() {
            std::fs::rename(&from, &to)?;
        }
    }
    std::fs::copy(snapshot, &db)?;
    // an index dumped by this directory's earlier gallery is not the snapshot's
    let _ = std::fs::remove_file(data_dir.join("gallery-index"));
    if !p.data_dir.is_empty() && Path::new(&p.data_dir) != data_dir {
        let c = rusqlite::Connection::open(&db)?;
        let (from, to) = (
            format!("{}/", p.data_dir),
            format!("{}/", data_dir.display()),
        );
        let n = c.execute(
            "UPDATE crops SET path = ?2 || substr(path, length(?1) + 1) WHERE substr(path, 1, length(?1)) = ?1",
            rusqlite::params![from, to],
        )?;
        info!(crops = n, from = %p.data_dir, "restored crops' rows now point into this data directory");
    }
    Ok(())
}

/// The active core's term: holds the lease, takes snapshots, lists the standbys.
pub struct ActiveCore {
    pub fence: Arc<Fence>,
    thread: StageThread,
}

impl ActiveCore {
    /// Waits (as a standby, mirroring snapshots) until this core holds the site's core lease,
    /// prepares the data directory (the newest snapshot replaces an older database) and
    /// starts renewing. None when `stop` was raised first.
    pub fn acquire(
        settings: &ClusterSettings,
        data_dir: &Path,
        stop: &AtomicBool,
    ) -> anyhow::Result<Option<ActiveCore>> {
        crate::store::Store::open(data_dir)?; // makes the directory, private, as the store does
        let rt = super::runtime()?;
        let name = settings.edge_name();
        let client = rt.block_on(settings.connect(&format!("core-{name}")))?;
        let run = format!("{:016x}", rand::random::<u64>());
        let value = ActiveValue {
            core: name.clone(),
            run,
            since_ms: now_ms(),
        };
        let Some((site, epoch, at)) =
            rt.block_on(standby(&client, settings, data_dir, &value, stop))?
        else {
            rt.shutdown_timeout(Duration::from_secs(1));
            return Ok(None);
        };
        let fence = Arc::new(Fence::default());
        fence.renewed(at, site.lease);
        let start = rt.block_on(take_over(&site, data_dir, epoch, &name))?;
        if start.1 == "snapshot" && !start.0.model_sha256.is_empty() {
            // serve the model that described the snapshot's gallery, under this registry's tag
            let tag = rt.block_on(super::models::adopt_snapshot_model(
                &client,
                settings,
                data_dir,
                &start.0.model_sha256,
                &start.0.model_tag,
                &start.0.core,
            ))?;
            info!(model = %tag, "core: serving the model of the snapshot's gallery");
        }
        {
            let mut st = fence.state_mut();
            st.state = "active".into();
            st.epoch = epoch;
            st.since_ms = now_ms();
            st.restored_from = start.1.into();
            st.start = Some(start.0.clone());
        }
        fence.ask_replay(start.0.seq + 1);
        info!(site = %settings.site, core = %name, epoch, from = start.1, replay_from = start.0.seq + 1, "core: active");
        let (f, dir, s) = (fence.clone(), data_dir.to_path_buf(), settings.clone());
        let thread = StageThread::spawn("core-lease", move |stop| {
            let term = Term {
                site,
                settings: s,
                value,
                revision: epoch,
                epoch,
                fence: f,
                data_dir: dir,
                stop,
            };
            rt.block_on(term.run());
            rt.shutdown_timeout(Duration::from_secs(2));
        });
        Ok(Some(ActiveCore { fence, thread }))
    }

    /// Ends the term: stops renewing and deletes the lease, so that a standby takes over at
    /// once. Call after the consuming side has stopped.
    pub fn stop(&mut self) {
        self.thread.stop();
    }
}

/// Waits until the create of the `active` key succeeds; meanwhile heartbeats as a standby and
/// mirrors the newest snapshot. Returns the site, the epoch and when the key was written.
async fn standby(
    client: &async_nats::Client,
    settings: &ClusterSettings,
    data_dir: &Path,
    value: &ActiveValue,
    stop: &AtomicBool,
) -> anyhow::Result<Option<(Site, u64, u64)>> {
    let mut site = None;
    let mut holder: Option<String> = None;
    let mut failures = 0u32;
    let mut last_mirror = Instant::now() - Duration::from_secs(60);
    let standby_key = format!("{STANDBY}{}", value.core);
    let body = bytes::Bytes::from(serde_json::to_vec(value)?);
    loop {
        if stop.load(Ordering::SeqCst) {
            if let Some(s) = &site {
                let s: &Site = s;
                let _ = s.kv.delete(&standby_key).await;
            }
            return Ok(None);
        }
        if site.is_none() {
            match Site::open(client, settings).await {
                Ok(s) => site = Some(s),
                Err(e) => {
                    failures += 1;
                    if failures == 1 || failures.is_power_of_two() {
                        warn!(error = %format!("{e:#}"), "core: cannot reach the site's core bucket yet; trying again");
                    }
                }
            }
        }
        if let Some(s) = &site {
            let at = clock();
            match s.kv.create(ACTIVE, body.clone()).await {
                Ok(rev) => {
                    let _ = s.kv.delete(&standby_key).await;
                    let s = site.take().expect("opened");
                    return Ok(Some((s, rev, at)));
                }
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                    let now = match s.kv.entry(ACTIVE).await {
                        Ok(Some(e)) => serde_json::from_slice::<ActiveValue>(&e.value)
                            .map(|v| v.core)
                            .unwrap_or_else(|_| "?".into()),
                        _ => "?".into(),
                    };
                    if holder.as_deref() != Some(&now) {
                        info!(active = %now, "core: standby; another core is active");
                        holder = Some(now);
                    }
                    if last_mirror.elapsed() >= Duration::from_secs(5) {
                        last_mirror = Instant::now();
                        if let Err(e) = mirror(s, data_dir).await {
                            warn!(error = %format!("{e:#}"), "core: standby cannot copy the newest snapshot; trying again");
                        }
                    }
                    let hb = StandbyValue {
                        core: value.core.clone(),
                        since_ms: value.since_ms,
                        mirrored: read_json(&data_dir.join(MIRROR_POINT)),
                        t_ms: now_ms(),
                    };
                    let _ =
                        s.kv.put(&standby_key, serde_json::to_vec(&hb)?.into())
                            .await;
                }
                Err(e) => {
                    failures += 1;
                    if failures == 1 || failures.is_power_of_two() {
                        warn!(error = %e, "core: cannot ask for the core lease; trying again");
                    }
                }
            }
        }
        for _ in 0..10 {
            if stop.load(Ordering::SeqCst) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Copies the newest snapshot to `DATA/cluster-mirror.db` when it is newer than the copy held.
async fn mirror(site: &Site, data_dir: &Path) -> anyhow::Result<Option<Point>> {
    let Some(newest) = site.newest().await? else {
        return Ok(None);
    };
    let held: Option<Point> = read_json(&data_dir.join(MIRROR_POINT));
    if held.as_ref() == Some(&newest) && data_dir.join(MIRROR).is_file() {
        return Ok(Some(newest));
    }
    site.download(&newest, &data_dir.join(MIRROR)).await?;
    write_json(&data_dir.join(MIRROR_POINT), &newest)?;
    info!(epoch = newest.epoch, seq = newest.seq, core = %newest.core, bytes = newest.bytes, "core: standby holds a copy of the newest snapshot");
    Ok(Some(newest))
}

/// Chooses what the term starts from: this data directory's database or the newest snapshot
/// (the newer term), restores a snapshot when it wins, and marks the database as the new
/// term's. Returns the starting point and `local` or `snapshot`.
async fn take_over(
    site: &Site,
    data_dir: &Path,
    epoch: u64,
    name: &str,
) -> anyhow::Result<(Point, &'static str)> {
    let local: Option<Point> = read_json(&data_dir.join(MARKER));
    let newest = site.newest().await?;
    let dir = data_dir.display().to_string();
    let snapshot_wins = match (&local, &newest) {
        (_, None) => false,
        (None, Some(_)) => true,
        (Some(l), Some(s)) => s.epoch > l.epoch,
    };
    let (start, from) = match (local, newest) {
        (_, Some(s)) if snapshot_wins => {
            let held: Option<Point> = read_json(&data_dir.join(MIRROR_POINT));
            let copy = data_dir.join(MIRROR);
            if held.as_ref() != Some(&s) || !copy.is_file() {
                site.download(&s, &copy).await?;
                write_json(&data_dir.join(MIRROR_POINT), &s)?;
            }
            restore(data_dir, &copy, &s)?;
            info!(epoch = s.epoch, seq = s.seq, core = %s.core, bytes = s.bytes, "core: the database is the newest snapshot");
            (s, "snapshot")
        }
        (Some(l), _) => (l, "local"),
        // the site's first core, or one whose database never had a term: replay everything
        (None, _) => (
            Point {
                epoch: 0,
                seq: 0,
                core: name.into(),
                t_ms: now_ms(),
                data_dir: dir.clone(),
                ..Point::default()
            },
            "local",
        ),
    };
    let marker = Point {
        epoch,
        seq: start.seq,
        core: name.into(),
        t_ms: now_ms(),
        data_dir: dir,
        ..Point::default()
    };
    write_json(&data_dir.join(MARKER), &marker)?;
    Ok((start, from))
}

struct Term {
    site: Site,
    settings: ClusterSettings,
    value: ActiveValue,
    revision: u64,
    epoch: u64,
    fence: Arc<Fence>,
    data_dir: PathBuf,
    stop: Arc<AtomicBool>,
}

/// What operators changed in the store so far (their merges and splits, labels, identity
/// names; counted by triggers of the store's schema), or None when it cannot be read.
fn operator_changes(db: &rusqlite::Connection) -> Option<i64> {
    db.query_row("SELECT n FROM operator_changes", [], |r| r.get(0))
        .ok()
}

/// After an operator's change, the snapshot that holds it is taken this long after it (changes
/// made together share one snapshot), and no sooner than a tenth of `snapshot_s` (2 to 10 s)
/// after the term's last snapshot.
const OPERATOR_SNAPSHOT_DELAY: Duration = Duration::from_secs(2);

impl Term {
    async fn run(mut self) {
        let renew_every = (self.site.lease / 3).max(Duration::from_millis(500));
        let snapshot_every = Duration::from_secs(self.settings.snapshot_s);
        let operator_spacing =
            (snapshot_every / 10).clamp(OPERATOR_SNAPSHOT_DELAY, Duration::from_secs(10));
        // when this term last started a snapshot (the first may follow a change at once; the
        // first scheduled one comes `snapshot_s` after the term's start)
        let term_start = Instant::now();
        let mut snapshot_started: Option<Instant> = None;
        let changes_db = rusqlite::Connection::open_with_flags(
            self.data_dir.join("crosscam.db"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .ok();
        let mut changes_seen = changes_db.as_ref().and_then(operator_changes);
        let mut last_changes_check = Instant::now();
        // an operator's change waiting for its snapshot: due at
        let mut operator_due: Option<Instant> = None;
        let mut last_renew = Instant::now();
        let mut last_standbys = Instant::now() - Duration::from_secs(10);
        let mut snapshot: Option<tokio::task::JoinHandle<anyhow::Result<Point>>> = None;
        let mut crops: Option<tokio::task::JoinHandle<anyhow::Result<()>>> = None;
        let mut crops_started = false;
        let mut failures = 0u32;
        while !self.stop.load(Ordering::SeqCst) {
            if self.fence.lost().is_some() {
                break;
            }
            if last_renew.elapsed() >= renew_every {
                last_renew = Instant::now();
                match self.renew().await {
                    Ok(()) => failures = 0,
                    Err(e) => {
                        failures += 1;
                        if failures == 1 || failures.is_power_of_two() {
                            warn!(error = %format!("{e:#}"), held = self.fence.holds(), "core: cannot renew the core lease; trying again");
                        }
                    }
                }
            }
            if last_standbys.elapsed() >= Duration::from_secs(2) {
                last_standbys = Instant::now();
                if let Ok(list) = self.standbys().await {
                    self.fence.state_mut().standbys = list;
                }
            }
            if let Some(h) = &snapshot
                && h.is_finished()
            {
                let h = snapshot.take().expect("checked");
                match h.await {
                    Ok(Ok(p)) => {
                        info!(
                            epoch = p.epoch,
                            seq = p.seq,
                            bytes = p.bytes,
                            "core: snapshot stored"
                        );
                        self.fence.state_mut().snapshot = Some(p);
                    }
                    Ok(Err(e)) => {
                        self.fence.state_mut().snapshots_failed += 1;
                        warn!(error = %format!("{e:#}"), "core: snapshot failed; the next one tries again");
                    }
                    Err(e) => warn!(error = %e, "core: snapshot task failed"),
                }
            }
            let restored = self.fence.state().restored_from == "snapshot";
            if restored
                && !crops_started
                && self.fence.replayed.load(Ordering::SeqCst)
                && let Some(start) = self.fence.state().start
            {
                // the copy may hold observations stored after its sequence was read: they are
                // in the replayed part of the stream (dropped there as stored already)
                let upto = self
                    .fence
                    .state()
                    .replay
                    .map_or(start.seq, |r| r.to.max(start.seq));
                crops_started = true;
                crops = Some(tokio::spawn(restore_crops(
                    self.site.js.clone(),
                    self.settings.clone(),
                    self.data_dir.clone(),
                    upto,
                    self.fence.clone(),
                    self.stop.clone(),
                )));
            }
            if let Some(h) = &crops
                && h.is_finished()
            {
                match crops.take().expect("checked").await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        warn!(error = %format!("{e:#}"), "core: cannot restore the crop pictures from the stream")
                    }
                    Err(e) => warn!(error = %e, "core: crop restore task failed"),
                }
            }
            if last_changes_check.elapsed() >= Duration::from_secs(1) {
                last_changes_check = Instant::now();
                let now = changes_db.as_ref().and_then(operator_changes);
                if now.is_some() && now != changes_seen {
                    changes_seen = now;
                    operator_due.get_or_insert(Instant::now() + OPERATOR_SNAPSHOT_DELAY);
                }
            }
            let operator_snapshot = operator_due.is_some_and(|t| Instant::now() >= t)
                && snapshot_started.is_none_or(|t| t.elapsed() >= operator_spacing);
            if snapshot.is_none()
                && (snapshot_started.unwrap_or(term_start).elapsed() >= snapshot_every
                    || operator_snapshot)
                && self.fence.holds()
                && self.fence.replayed.load(Ordering::SeqCst)
            {
                snapshot_started = Some(Instant::now());
                if operator_due.take().is_some() {
                    info!("core: snapshot after an operator's change");
                }
                snapshot = Some(tokio::spawn(take_snapshot(
                    self.site.objects.clone(),
                    self.site.js.clone(),
                    self.site.stream.clone(),
                    self.site.consumer.clone(),
                    self.fence.clone(),
                    self.data_dir.clone(),
                    Point {
                        epoch: self.epoch,
                        seq: 0,
                        core: self.value.core.clone(),
                        t_ms: 0,
                        data_dir: self.data_dir.display().to_string(),
                        ..Point::default()
                    },
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if let Some(h) = snapshot {
            let _ = h.await;
        }
        if let Some(h) = crops {
            let _ = h.await;
        }
        if self.fence.lost().is_none() {
            // the consuming side has stopped (the core stops it first): everything at or below
            // the acknowledgement floor is in this database, so that this core's next start
            // replays only what came after (once its own replay had finished)
            if self.fence.replayed.load(Ordering::SeqCst)
                && let Ok(floor) =
                    ack_floor(&self.site.js, &self.site.stream, &self.site.consumer).await
            {
                let marker = Point {
                    epoch: self.epoch,
                    seq: floor,
                    core: self.value.core.clone(),
                    t_ms: now_ms(),
                    data_dir: self.data_dir.display().to_string(),
                    ..Point::default()
                };
                let kept: Option<Point> = read_json(&self.data_dir.join(MARKER));
                if kept.is_none_or(|k| k.epoch < marker.epoch || k.seq <= marker.seq)
                    && let Err(e) = write_json(&self.data_dir.join(MARKER), &marker)
                {
                    warn!(error = %e, "core: cannot record how far this database holds the stream");
                }
            }
            // hand over at once: a standby's next create succeeds
            match self
                .site
                .kv
                .purge_expect_revision(ACTIVE, Some(self.revision))
                .await
            {
                Ok(()) => info!("core: lease given up"),
                Err(e) => warn!(error = %e, "core: cannot give up the lease; it expires by itself"),
            }
        }
    }

    async fn renew(&mut self) -> anyhow::Result<()> {
        let at = clock();
        let body = bytes::Bytes::from(serde_json::to_vec(&self.value)?);
        match self
            .site
            .kv
            .update(ACTIVE, body.clone(), self.revision)
            .await
        {
            Ok(rev) => {
                self.revision = rev;
                self.fence.renewed(at, self.site.lease);
                Ok(())
            }
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                // the key expired (the broker was away longer than the lease) or another core
                // holds it
                let holder = match self.site.kv.entry(ACTIVE).await? {
                    Some(e) if matches!(e.operation, kv::Operation::Put) => {
                        serde_json::from_slice::<ActiveValue>(&e.value).ok()
                    }
                    _ => None,
                };
                match holder {
                    Some(h) if h != self.value => {
                        let why = format!(
                            "core {} took the site's core lease (this core could not renew it within {} s)",
                            h.core,
                            self.site.lease.as_secs()
                        );
                        error!("core: {why}; stopping");
                        self.fence.lose(why);
                        Ok(())
                    }
                    _ => self.take_back(body).await,
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The key expired while nobody else took it: take it again (a new term) and replay from
    /// this core's last point, unless a newer term's snapshot exists (then this database is
    /// behind: stop).
    async fn take_back(&mut self, body: bytes::Bytes) -> anyhow::Result<()> {
        let at = clock();
        let rev = self.site.kv.create(ACTIVE, body).await?;
        let newest = self.site.newest().await?;
        if let Some(s) = newest.filter(|s| s.epoch > self.epoch) {
            let why = format!(
                "core {} held the site's core lease in the meantime (snapshot of term {}); this core's database is behind",
                s.core, s.epoch
            );
            error!("core: {why}; stopping");
            let _ = self.site.kv.purge_expect_revision(ACTIVE, Some(rev)).await;
            self.fence.lose(why);
            return Ok(());
        }
        let marker: Option<Point> = read_json(&self.data_dir.join(MARKER));
        let seq = marker.map_or(0, |m| m.seq);
        self.revision = rev;
        self.epoch = rev;
        let m = Point {
            epoch: rev,
            seq,
            core: self.value.core.clone(),
            t_ms: now_ms(),
            data_dir: self.data_dir.display().to_string(),
            ..Point::default()
        };
        write_json(&self.data_dir.join(MARKER), &m)?;
        self.fence.ask_replay(seq + 1);
        self.fence.renewed(at, self.site.lease);
        {
            let mut st = self.fence.state_mut();
            st.epoch = rev;
            st.start = Some(m);
        }
        warn!(
            epoch = rev,
            replay_from = seq + 1,
            "core: the core lease had expired (broker unreachable); taken back, replaying from the last snapshot point"
        );
        Ok(())
    }

    async fn standbys(&self) -> anyhow::Result<Vec<StandbyValue>> {
        let mut out = Vec::new();
        let keys: Vec<String> =
            futures_util::TryStreamExt::try_collect(self.site.kv.keys().await?).await?;
        for k in keys.into_iter().filter(|k| k.starts_with(STANDBY)) {
            if let Some(e) = self.site.kv.entry(k).await?
                && matches!(e.operation, kv::Operation::Put)
                && let Ok(v) = serde_json::from_slice::<StandbyValue>(&e.value)
            {
                out.push(v);
            }
        }
        Ok(out)
    }
}

/// The crop pictures the database names but the disk lacks, by remote tracklet (edge run,
/// camera, tracker id): crop number → where its bytes belong (a file, or a range of a pack:
/// the stream carries the same JPEG bytes the dead core stored). Only paths inside
/// `DATA/crops/` are considered (a snapshot is data from the broker, not a list of places to
/// write to).
type MissingCrops =
    std::collections::HashMap<(String, String, u64), Vec<(u64, crate::store::CropData)>>;

fn missing_crops(data_dir: &Path) -> anyhow::Result<(MissingCrops, u64)> {
    let root = data_dir.join("crops");
    let c = rusqlite::Connection::open_with_flags(
        data_dir.join("crosscam.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )?;
    c.busy_timeout(Duration::from_secs(10))?;
    let mut q = c.prepare(
        "SELECT e.token, t.camera, t.track_id, c.seq, c.path, c.pack_offset, c.bytes FROM crops c
         JOIN tracklets t ON t.id = c.tracklet JOIN edge_runs e ON e.run = t.run",
    )?;
    let rows = q.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, i64>(2)? as u64,
            r.get::<_, i64>(3)? as u64,
            crate::store::CropData::from_row(r, 4)?,
        ))
    })?;
    let mut out = MissingCrops::new();
    let mut n = 0;
    for row in rows {
        let (token, camera, track, seq, path) = row?;
        let inside = path.path.starts_with(&root)
            && path.path.strip_prefix(&root).is_ok_and(|rest| {
                rest.components()
                    .all(|c| matches!(c, std::path::Component::Normal(_)))
            });
        if !inside || path.present() {
            continue;
        }
        out.entry((token, camera, track))
            .or_default()
            .push((seq, path));
        n += 1;
    }
    Ok((out, n))
}

/// Writes the crop pictures the database names but the disk lacks from the observations of
/// the stream up to sequence `upto` (the end of the takeover's replay: anything the snapshot
/// holds was published before it; an ordered consumer; each observation carries its
/// tracklet's crops as JPEG).
async fn restore_crops(
    js: jetstream::Context,
    settings: ClusterSettings,
    data_dir: PathBuf,
    upto: u64,
    fence: Arc<Fence>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<()> {
    use prost::Message as _;
    let dir = data_dir.clone();
    let (mut missing, total) = tokio::task::spawn_blocking(move || missing_crops(&dir)).await??;
    let mut restored = 0u64;
    let report = |restored: u64, left: u64, done: bool| {
        let mut st = fence.state_mut();
        st.crops_restored = restored;
        st.crops_missing = left;
        st.crops_done = done;
    };
    report(0, total, total == 0);
    if total == 0 {
        return Ok(());
    }
    info!(
        crops = total,
        upto, "core: restoring crop pictures of the snapshot from the stream"
    );
    let mut stream = js.get_stream(settings.stream()).await?;
    let first = stream.info().await?.state.first_sequence.max(1);
    let mut left = total;
    if first <= upto {
        let consumer = stream
            .create_consumer(jetstream::consumer::pull::OrderedConfig {
                deliver_policy: jetstream::consumer::DeliverPolicy::ByStartSequence {
                    start_sequence: first,
                },
                filter_subject: format!("crosscam.{}.obs.>", settings.site),
                ..Default::default()
            })
            .await?;
        let mut messages = consumer.messages().await?;
        while left > 0 && !stop.load(Ordering::SeqCst) {
            let next = tokio::time::timeout(Duration::from_secs(5), messages.next()).await;
            let Ok(Some(Ok(msg))) = next else {
                break; // the end of the stream, or an error: what is left stays missing
            };
            let Ok(info) = msg.info() else { continue };
            if info.stream_sequence > upto {
                break;
            }
            let Ok(o) = super::wire::Observation::decode(msg.payload.as_ref()) else {
                continue;
            };
            let Some(want) = missing.get_mut(&(o.run.clone(), o.camera.clone(), o.track)) else {
                continue;
            };
            for c in &o.crops {
                if !c.jpeg.starts_with(&[0xff, 0xd8]) {
                    continue;
                }
                if let Some(i) = want
                    .iter()
                    .position(|(seq, d)| *seq == c.seq && d.len == c.jpeg.len() as u64)
                {
                    let (_, place) = want.swap_remove(i);
                    let bytes = c.jpeg.clone();
                    let written = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
                        if let Some(parent) = place.path.parent() {
                            crate::store::private::private_dir(parent)?;
                        }
                        match place.offset {
                            // its range of the pack, as the dead core wrote it
                            Some(offset) => {
                                use std::os::unix::fs::{FileExt, OpenOptionsExt};
                                std::fs::OpenOptions::new()
                                    .create(true)
                                    .write(true)
                                    .mode(crate::store::private::FILE_MODE)
                                    .open(&place.path)?
                                    .write_all_at(&bytes, offset)
                            }
                            None => {
                                let tmp = place.path.with_extension("jpg.part");
                                crate::store::private::write_private(&tmp, &bytes)?;
                                std::fs::rename(&tmp, &place.path)
                            }
                        }
                    })
                    .await?;
                    match written {
                        Ok(()) => restored += 1,
                        Err(e) => warn!(error = %e, "core: cannot write a restored crop picture"),
                    }
                    left -= 1;
                }
            }
            report(restored, left, false);
        }
    }
    report(restored, left, true);
    info!(
        restored,
        missing = left,
        "core: crop pictures of the snapshot restored from the stream"
    );
    Ok(())
}

/// Copies the database and stores the copy as this term's snapshot.
async fn take_snapshot(
    objects: object_store::ObjectStore,
    js: jetstream::Context,
    stream: String,
    consumer: String,
    fence: Arc<Fence>,
    data_dir: PathBuf,
    mut p: Point,
) -> anyhow::Result<Point> {
    // everything at or below the floor is stored (acknowledged after its commit) before the copy
    let site_floor = ack_floor(&js, &stream, &consumer).await?;
    // the model that described the gallery: the same before and after the copy
    let serving = || {
        crate::server::switch::read_serving(&data_dir)
            .ok()
            .flatten()
            .map(|r| (r.sha256, r.tag))
            .unwrap_or_default()
    };
    let model = serving();
    let tmp = data_dir.join("cluster-snapshot.db");
    let _ = std::fs::remove_file(&tmp);
    let (db, copy) = (data_dir.join("crosscam.db"), tmp.clone());
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let c = rusqlite::Connection::open_with_flags(
            &db,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE,
        )?;
        c.busy_timeout(Duration::from_secs(10))?;
        c.execute("VACUUM INTO ?1", [copy.display().to_string()])?;
        Ok(())
    })
    .await??;
    anyhow::ensure!(
        fence.holds(),
        "the core lease is not held now; snapshot not stored"
    );
    anyhow::ensure!(
        serving() == model,
        "a model switch committed during the copy; the next snapshot is taken after it"
    );
    (p.model_sha256, p.model_tag) = model;
    p.seq = site_floor;
    p.t_ms = now_ms();
    p.bytes = std::fs::metadata(&tmp)?.len();
    let mut f = tokio::fs::File::open(&tmp).await?;
    objects
        .put(
            object_store::ObjectMetadata {
                name: format!("{SNAPSHOT}{}", p.epoch),
                description: Some(format!(
                    "crosscam gallery of core {}, stream sequence {}",
                    p.core, p.seq
                )),
                metadata: p.metadata(),
                ..Default::default()
            },
            &mut f,
        )
        .await?;
    drop(f);
    let _ = std::fs::remove_file(&tmp);
    // this core's database holds at least as much
    write_json(&data_dir.join(MARKER), &p)?;
    // older terms' snapshots are superseded
    let mut list = objects.list().await?;
    let mut old = Vec::new();
    while let Some(info) = list.next().await {
        let info = info?;
        if let Some(q) = Point::from_info(&info)
            && q.epoch < p.epoch
            && !info.deleted
        {
            old.push(info.name);
        }
    }
    for name in old {
        let _ = objects.delete(&name).await;
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(epoch: u64, seq: u64) -> Point {
        Point {
            epoch,
            seq,
            core: "c".into(),
            t_ms: 0,
            data_dir: String::new(),
            ..Point::default()
        }
    }

    #[test]
    fn a_newer_term_wins_over_a_longer_history() {
        assert!(point(9, 10).newer_than(&point(5, 1000)));
        assert!(point(5, 11).newer_than(&point(5, 10)));
        assert!(!point(5, 10).newer_than(&point(5, 10)));
    }

    #[test]
    fn snapshot_metadata_round_trips_and_other_objects_are_ignored() {
        let p = Point {
            epoch: 42,
            seq: 7,
            core: "core-a".into(),
            t_ms: 5,
            data_dir: "/var/lib/crosscam".into(),
            model_sha256: "ab".repeat(32),
            model_tag: "v0002:abababababab".into(),
            ..Point::default()
        };
        let info = object_store::ObjectInfo {
            name: "gallery-42".into(),
            description: None,
            metadata: p.metadata(),
            headers: None,
            options: None,
            bucket: "B".into(),
            nuid: String::new(),
            size: 4096,
            chunks: 1,
            modified: None,
            digest: None,
            deleted: false,
        };
        let back = Point::from_info(&info).unwrap();
        assert_eq!(back, Point { bytes: 4096, ..p });
        let other = object_store::ObjectInfo {
            name: "notes.txt".into(),
            ..info
        };
        assert!(Point::from_info(&other).is_none());
    }

    #[test]
    fn restoring_a_snapshot_keeps_the_old_database_and_moves_crop_paths() {
        let dir = tempfile::tempdir().unwrap();
        let here = dir.path().join("data");
        let s = crate::store::Store::open(&here).unwrap();
        drop(s);
        // a snapshot from a core whose data directory was elsewhere
        let other = dir.path().join("other");
        drop(crate::store::Store::open(&other).unwrap());
        let snap = dir.path().join("snap.db");
        let c = rusqlite::Connection::open(other.join("crosscam.db")).unwrap();
        c.execute("VACUUM INTO ?1", [snap.display().to_string()])
            .unwrap();
        drop(c);
        // a crop row pointing into the other directory
        let c = rusqlite::Connection::open(&snap).unwrap();
        c.pragma_update(None, "foreign_keys", "OFF").unwrap();
        c.execute_batch(&format!(
            "INSERT INTO crops (tracklet, seq, path, quality, bytes, created_ms) VALUES (1, 0, '{}/crops/cam/1/00000000.jpg', 1.0, 10, 0);",
            other.display()
        ))
        .unwrap();
        drop(c);
        quick_check(&snap).unwrap();
        restore(
            &here,
            &snap,
            &Point {
                data_dir: other.display().to_string(),
                ..point(3, 10)
            },
        )
        .unwrap();
        assert!(here.join("crosscam.db.replaced").is_file());
        let c = rusqlite::Connection::open(here.join("crosscam.db")).unwrap();
        let path: String = c
            .query_row("SELECT path FROM crops", [], |r| r.get(0))
            .unwrap();
        assert_eq!(path, format!("{}/crops/cam/1/00000000.jpg", here.display()));
    }

    #[test]
    fn a_lost_fence_never_holds() {
        let f = Fence::default();
        assert!(!f.holds());
        f.renewed(clock(), Duration::from_secs(5));
        assert!(f.holds());
        f.renewed(clock(), Duration::from_millis(500)); // under the safety margin
        assert!(!f.holds());
        f.renewed(clock(), Duration::from_secs(5));
        f.lose("test".into());
        assert!(!f.holds());
        assert_eq!(f.state().state, "lost");
    }
}
