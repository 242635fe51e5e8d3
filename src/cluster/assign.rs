//! Cameras defined once, run by whichever edges are alive.
//!
//! Three key-value buckets of the site (JetStream KV, history 1):
//! - `CROSSCAM_<SITE>_CAMERAS`: camera id → its settings (JSON), written by the core from its
//!   config and API ([`SiteCameras`]);
//! - `CROSSCAM_<SITE>_LEASES`: camera id → the edge running it ([`Lease`]); entries expire
//!   `lease_s` after their last write (the bucket's max age), so an edge renews its leases
//!   with compare-and-set on the revision it holds;
//! - `CROSSCAM_<SITE>_EDGES`: edge name → its [`Heartbeat`], expiring the same way.
//!
//! Each edge ([`Assigner`]) runs a round every second: heartbeat, renew its leases, then take
//! free cameras (create-if-absent) while it holds fewer than its share, or give one back while
//! it holds more than its share and a live edge below its own share is further from its exact
//! share by more than a camera and a half ([`gives_back`]). Shares are in proportion to the
//! edges' measured speeds ([`weights`]): each edge prices a camera in its own CPU time per
//! analysed frame (over 30 s) and says in its heartbeat how many cameras would fill its cores;
//! an edge not measured yet counts by its `cluster.capacity`. Rounded
//! up, so that the shares cover every camera. A dead edge's leases expire and live edges take its cameras; an edge that
//! comes back gets cameras as the others give them back — one per round, at a moment with no
//! open tracklet on that camera (after [`REBALANCE_WAIT`] the one with the fewest), never by
//! taking a camera another edge holds, and only to an edge that takes cameras already. A
//! starting edge takes nothing for its first lease time, so that edges starting together see
//! each other and share the cameras evenly. A lease the edge could not renew in time is taken back
//! if nobody else took it (a broker restart), and the camera stops if somebody did.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use futures_util::TryStreamExt;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::{ClusterMetrics, ClusterSettings};
use crate::config::CameraSettings;
use crate::server::cameras::CameraSet;
use crate::server::stage::StageThread;

/// One round of the assignment loop (edges) and of the core's view of it.
const ROUND: Duration = Duration::from_secs(1);
/// How long an edge over its share waits for a camera without open tracklets before it gives
/// back the one with the fewest.
pub const REBALANCE_WAIT: Duration = Duration::from_secs(30);
/// How long one request to the broker may take.
const REQUEST: Duration = Duration::from_secs(5);

/// An edge's hold on a camera: the value of its key in the leases bucket.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Lease {
    pub edge: String,
    /// The edge process's run (a restarted edge is a new holder).
    pub run: String,
    pub since_ms: i64,
}

/// An edge's heartbeat: the value of its key in the edges bucket.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Heartbeat {
    pub edge: String,
    pub run: String,
    /// The cameras the site assigned to it.
    pub assigned: Vec<String>,
    /// Its own cameras (its config's).
    pub own: Vec<String>,
    /// Whether it takes cameras yet (a starting edge waits for its first lease time).
    #[serde(default = "taking")]
    pub taking: bool,
    /// Observations waiting for the broker, and dropped over the bound.
    pub buffered: u64,
    pub dropped: u64,
    pub t_ms: i64,
    /// Its configured weight in the share of the site's cameras (`cluster.capacity`), used
    /// until its speed is measured.
    #[serde(default = "unit_capacity")]
    pub capacity: f64,
    /// Measured over the last [`LOAD_WINDOW`]: how many cameras would fill the machine's cores
    /// (cores ÷ (CPU time per analysed frame × a camera's analysis rate)); none until it has
    /// analysed enough frames.
    #[serde(default)]
    pub speed: Option<f64>,
    /// Measured: the share of the machine's cores its process kept busy (0–1).
    #[serde(default)]
    pub load: Option<f64>,
}

fn taking() -> bool {
    true
}

fn unit_capacity() -> f64 {
    1.0
}

/// The window over which an edge measures its load and speed.
pub const LOAD_WINDOW: Duration = Duration::from_secs(30);
/// How far apart (in cameras) two edges' distances from their exact shares must be before
/// one gives a camera to the other: more than one camera, so that the move does not invite
/// the move back, and a half more for measured speeds that wander.
const REBALANCE_MARGIN: f64 = 1.5;

/// Each live edge's weight in the share of the site's cameras, from `(capacity, speed)`: its
/// measured speed (cameras it would keep up with at full load) where known; otherwise its
/// configured capacity times the measured edges' mean speed per unit of capacity, so that an
/// edge not measured yet (just started, or without cameras so far) counts as a measured one of
/// the same capacity. Where no edge is measured, the capacities.
pub fn weights(edges: &[(f64, Option<f64>)]) -> Vec<f64> {
    let capacity = |c: f64| if c.is_finite() && c > 0.0 { c } else { 1.0 };
    let measured: Vec<(f64, f64)> = edges
        .iter()
        .filter_map(|&(c, s)| {
            s.filter(|s| s.is_finite() && *s > 0.0)
                .map(|s| (capacity(c), s))
        })
        .collect();
    let per_capacity = if measured.is_empty() {
        1.0
    } else {
        measured.iter().map(|(c, s)| s / c).sum::<f64>() / measured.len() as f64
    };
    edges
        .iter()
        .map(|&(c, s)| match s.filter(|s| s.is_finite() && *s > 0.0) {
            Some(s) => s,
            None => capacity(c) * per_capacity,
        })
        .collect()
}

/// Whether an edge holding `held` cameras with weight `mine` gives one back to a live,
/// taking edge `(held, weight)` among `others`, with `cameras` to share and `total` the
/// weights' sum: it holds more than its share (rounded up), the other fewer than its own, and
/// the two are further apart from their exact shares than [`REBALANCE_MARGIN`].
pub fn gives_back(
    cameras: usize,
    held: usize,
    mine: f64,
    others: &[(usize, f64)],
    total: f64,
) -> bool {
    if total <= 0.0 || held <= share(cameras, mine, total) {
        return false;
    }
    let exact = |w: f64| cameras as f64 * w / total;
    let over = held as f64 - exact(mine);
    others.iter().any(|&(h, w)| {
        h < share(cameras, w, total) && over - (h as f64 - exact(w)) > REBALANCE_MARGIN
    })
}

/// An edge process measured over [`LOAD_WINDOW`]: samples of its analysed frames and CPU time,
/// and the last speed measured (kept while the edge has no frames to measure it on).
#[derive(Default)]
pub(crate) struct LoadGauge {
    samples: std::collections::VecDeque<(Instant, u64, u64)>,
    speed: Option<f64>,
}

impl LoadGauge {
    /// Adds a sample of the frames analysed and the CPU nanoseconds the process used; returns
    /// (speed, load) for a machine of `cores` and `camera_fps`, a camera's analysis rate. A
    /// camera takes (CPU seconds ÷ frames) × `camera_fps` of a core: the speed is how many
    /// would fill `cores`, the load how much of them is in use.
    pub(crate) fn sample(
        &mut self,
        now: Instant,
        frames: u64,
        cpu_ns: u64,
        cores: f64,
        camera_fps: f64,
    ) -> (Option<f64>, Option<f64>) {
        self.samples.push_back((now, frames, cpu_ns));
        while self.samples.len() > 2 && now.duration_since(self.samples[1].0) >= LOAD_WINDOW {
            self.samples.pop_front();
        }
        let (t0, f0, b0) = self.samples[0];
        let wall = now.duration_since(t0).as_secs_f64();
        let (frames, cpu) = (
            frames.saturating_sub(f0) as f64,
            cpu_ns.saturating_sub(b0) as f64 / 1e9,
        );
        // enough work seen to price a frame: half a CPU second over 20 frames
        if cpu >= 0.5 && frames >= 20.0 && camera_fps > 0.0 && cores > 0.0 {
            self.speed = Some(cores * frames / cpu / camera_fps);
        }
        let load = (wall >= 5.0 && cores > 0.0).then(|| (cpu / wall / cores).clamp(0.0, 1.0));
        (self.speed, load)
    }
}

/// An edge's share of `cameras`: in proportion to its capacity among the live edges' (rounded
/// up, so that the shares cover every camera).
pub fn share(cameras: usize, mine: f64, total: f64) -> usize {
    if total <= 0.0 || mine <= 0.0 {
        return 0;
    }
    ((cameras as f64 * mine / total) - 1e-9).ceil().max(0.0) as usize
}

/// Where each of the site's cameras runs, as a core sees it.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Assignment {
    pub camera: String,
    /// The edge holding it; none while it waits for an edge.
    pub edge: Option<String>,
    /// Since when (ms since the Unix epoch).
    pub since_ms: Option<i64>,
}

/// The site's three buckets.
struct Buckets {
    cameras: kv::Store,
    /// The camera bucket's stream, asked afresh each round whether it changed (a key-value
    /// store's `status()` answers from what it cached when it was opened).
    cameras_stream: String,
    js: jetstream::Context,
    leases: kv::Store,
    edges: kv::Store,
    /// The leases' lifetime (the bucket's max age, which the first process set).
    lease: Duration,
}

pub(crate) async fn open_bucket(
    js: &jetstream::Context,
    name: String,
    max_age: Duration,
    description: &str,
    replicas: usize,
) -> anyhow::Result<kv::Store> {
    if let Ok(s) = js.get_key_value(&name).await {
        return Ok(s);
    }
    let made = js
        .create_key_value(kv::Config {
            bucket: name.clone(),
            description: description.into(),
            history: 1,
            max_age,
            num_replicas: replicas,
            ..Default::default()
        })
        .await;
    match made {
        Ok(s) => Ok(s),
        // another process made it at the same moment
        Err(e) => js
            .get_key_value(&name)
            .await
            .map_err(|_| anyhow::anyhow!("bucket {name}: {e}")),
    }
}

/// The object store `name`, made (file storage, `replicas` copies) when missing.
pub(crate) async fn open_object_store(
    js: &jetstream::Context,
    name: String,
    description: &str,
    replicas: usize,
) -> anyhow::Result<jetstream::object_store::ObjectStore> {
    if let Ok(o) = js.get_object_store(&name).await {
        return Ok(o);
    }
    let made = js
        .create_object_store(jetstream::object_store::Config {
            bucket: name.clone(),
            description: Some(description.into()),
            num_replicas: replicas,
            storage: jetstream::stream::StorageType::File,
            ..Default::default()
        })
        .await;
    match made {
        Ok(o) => Ok(o),
        // another process made it at the same moment
        Err(e) => js
            .get_object_store(&name)
            .await
            .map_err(|_| anyhow::anyhow!("object store {name}: {e}")),
    }
}

impl Buckets {
    async fn open(client: &async_nats::Client, s: &ClusterSettings) -> anyhow::Result<Buckets> {
        let js = jetstream::ContextBuilder::new()
            .timeout(REQUEST)
            .build(client.clone());
        let lease = Duration::from_secs(s.lease_s);
        let cameras = open_bucket(
            &js,
            s.bucket("CAMERAS"),
            Duration::ZERO,
            "crosscam: the site's cameras (id -> settings), written by the core",
            s.replicas,
        )
        .await?;
        let leases = open_bucket(
            &js,
            s.bucket("LEASES"),
            lease,
            "crosscam: which edge runs each camera (expiring)",
            s.replicas,
        )
        .await?;
        let edges = open_bucket(
            &js,
            s.bucket("EDGES"),
            lease,
            "crosscam: live edges' heartbeats (expiring)",
            s.replicas,
        )
        .await?;
        let lease = match leases.status().await?.info.config.max_age {
            d if d.is_zero() => lease,
            d => d,
        };
        Ok(Buckets {
            cameras,
            cameras_stream: format!("KV_{}", s.bucket("CAMERAS")),
            js,
            leases,
            edges,
            lease,
        })
    }
}

async fn keys(store: &kv::Store) -> anyhow::Result<Vec<String>> {
    Ok(store.keys().await?.try_collect().await?)
}

/// Every live entry of a bucket, parsed; entries that do not parse are skipped (and named).
async fn entries<T: serde::de::DeserializeOwned>(
    store: &kv::Store,
) -> anyhow::Result<BTreeMap<String, (T, u64)>> {
    let mut out = BTreeMap::new();
    for k in keys(store).await? {
        let Some(e) = store.entry(k.clone()).await? else {
            continue;
        };
        if !matches!(e.operation, kv::Operation::Put) {
            continue;
        }
        match serde_json::from_slice::<T>(&e.value) {
            Ok(v) => {
                out.insert(k, (v, e.revision));
            }
            Err(err) => {
                warn!(key = %crate::config::secrets::clip(&k, 80), error = %err, "a bucket entry that is not what crosscam writes; skipped")
            }
        }
    }
    Ok(out)
}

/// Sleeps one round in short steps; false once `stop` is raised.
fn wait_round(stop: &AtomicBool) -> bool {
    let until = Instant::now() + ROUND;
    while Instant::now() < until {
        if stop.load(Ordering::SeqCst) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    !stop.load(Ordering::SeqCst)
}

/// Runs `round` every second until `stop` is raised, with the site's buckets (opened by the
/// first round that reaches the broker). A failed round is logged as `failed` (at the first
/// failure and then at powers of two) and the next one tries again. Returns the buckets, if
/// they were opened.
fn every_round(
    rt: &tokio::runtime::Runtime,
    client: &async_nats::Client,
    settings: &ClusterSettings,
    stop: &AtomicBool,
    failed: &str,
    mut round: impl FnMut(&Buckets) -> anyhow::Result<()>,
) -> Option<Buckets> {
    let mut buckets = None;
    let mut failures = 0u32;
    loop {
        if buckets.is_none() {
            match rt.block_on(Buckets::open(client, settings)) {
                Ok(b) => buckets = Some(b),
                Err(e) => round_failed(&mut failures, failed, &e),
            }
        }
        if let Some(b) = &buckets {
            match round(b) {
                Ok(()) => failures = 0,
                Err(e) => round_failed(&mut failures, failed, &e),
            }
        }
        if !wait_round(stop) {
            return buckets;
        }
    }
}

fn round_failed(failures: &mut u32, what: &str, e: &anyhow::Error) {
    *failures += 1;
    if *failures == 1 || failures.is_power_of_two() {
        warn!(error = %format!("{e:#}"), failures = *failures, "{what}");
    }
}

// ---------------------------------------------------------------------------------------------
// core

/// The core's side: publishes the site's cameras to the camera bucket (the newest list wins;
/// kept trying while the broker is away) and reads back where each one runs.
pub struct SiteCameras {
    tx: crossbeam_channel::Sender<Vec<CameraSettings>>,
    thread: Mutex<Option<StageThread>>,
}

impl SiteCameras {
    pub fn start(
        settings: &ClusterSettings,
        metrics: Arc<ClusterMetrics>,
    ) -> anyhow::Result<SiteCameras> {
        let rt = super::runtime()?;
        let client = rt.block_on(settings.connect("core-cameras"))?;
        let (tx, rx) = crossbeam_channel::unbounded::<Vec<CameraSettings>>();
        let settings = settings.clone();
        let thread = StageThread::spawn("core-cameras", move |stop| {
            let mut desired: Option<Vec<CameraSettings>> = None;
            let mut published = false;
            every_round(
                &rt,
                &client,
                &settings,
                &stop,
                "core: cannot reach the site's camera buckets; trying again",
                |b| {
                    while let Ok(list) = rx.try_recv() {
                        desired = Some(list);
                        published = false;
                    }
                    rt.block_on(async {
                        if let Some(list) = desired.as_ref().filter(|_| !published) {
                            publish_definitions(b, list).await?;
                            published = true;
                        }
                        read_placement(b, desired.as_deref().unwrap_or(&[]), &metrics).await
                    })
                },
            );
            rt.shutdown_timeout(Duration::from_secs(2));
        });
        Ok(SiteCameras {
            tx,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Makes `cameras` the site's cameras (published on the thread's next round).
    pub fn publish(&self, cameras: Vec<CameraSettings>) {
        let _ = self.tx.send(cameras);
    }

    pub fn stop(&self) {
        if let Some(mut t) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take() {
            t.stop();
        }
    }
}

/// Writes every camera whose stored settings differ and deletes the cameras no longer listed.
async fn publish_definitions(b: &Buckets, list: &[CameraSettings]) -> anyhow::Result<()> {
    let stored = keys(&b.cameras).await?;
    let mut changed = 0;
    for c in list {
        let value = serde_json::to_vec(c)?;
        if b.cameras.get(c.id.clone()).await?.as_deref() != Some(value.as_slice()) {
            b.cameras.put(&c.id, Bytes::from(value)).await?;
            changed += 1;
        }
    }
    let mut removed = 0;
    for k in stored.iter().filter(|k| !list.iter().any(|c| &c.id == *k)) {
        b.cameras.delete(k).await?;
        removed += 1;
    }
    if changed + removed > 0 {
        info!(
            cameras = list.len(),
            changed, removed, "core: the site's cameras published for the edges"
        );
    }
    Ok(())
}

/// Reads the leases and heartbeats into `metrics` (the core's status).
async fn read_placement(
    b: &Buckets,
    list: &[CameraSettings],
    metrics: &ClusterMetrics,
) -> anyhow::Result<()> {
    let leases: BTreeMap<String, (Lease, u64)> = entries(&b.leases).await?;
    let beats: BTreeMap<String, (Heartbeat, u64)> = entries(&b.edges).await?;
    let placement = list
        .iter()
        .filter(|c| c.enabled)
        .map(|c| {
            let l = leases.get(&c.id).map(|(l, _)| l);
            Assignment {
                camera: c.id.clone(),
                edge: l.map(|l| l.edge.clone()),
                since_ms: l.map(|l| l.since_ms),
            }
        })
        .collect();
    *metrics.placement.lock().unwrap_or_else(|e| e.into_inner()) = placement;
    *metrics.heartbeats.lock().unwrap_or_else(|e| e.into_inner()) =
        beats.into_values().map(|(h, _)| h).collect();
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// edge

/// The edge's side: takes, renews and gives back cameras of the site.
pub struct Assigner {
    thread: StageThread,
}

/// A camera this edge holds.
struct Held {
    settings: CameraSettings,
    /// The revision of its lease this edge wrote last.
    revision: u64,
    renewed: Instant,
}

struct EdgeLoop {
    settings: ClusterSettings,
    name: String,
    run: String,
    cameras: Arc<CameraSet>,
    metrics: Arc<ClusterMetrics>,
    held: BTreeMap<String, Held>,
    /// The site's cameras as last read, and the camera bucket's last sequence then.
    defs: BTreeMap<String, CameraSettings>,
    defs_seq: Option<u64>,
    /// Definitions this edge refused (bad or unplayable here), by camera, with the settings
    /// refused: not taken again until they change.
    refused: BTreeMap<String, CameraSettings>,
    /// Since when this edge holds more than its share.
    over_since: Option<Instant>,
    /// When this edge's first round ran.
    started: Option<Instant>,
    /// The analysis stage's counters (frames analysed) and a camera's analysis rate, for
    /// this edge's measured load and speed.
    analysis: Arc<crate::server::analysis::AnalysisMetrics>,
    analysis_fps: f64,
    gauge: LoadGauge,
    cpu: super::cpu::CpuClock,
    /// Speed and load as last measured (sent with the heartbeat).
    measured: (Option<f64>, Option<f64>),
}

impl Assigner {
    /// Starts taking cameras of the site for this edge (`name`, `run`: the publishing
    /// thread's) into `cameras`.
    pub fn start(
        settings: &ClusterSettings,
        name: String,
        run: String,
        cameras: Arc<CameraSet>,
        metrics: Arc<ClusterMetrics>,
        analysis: Arc<crate::server::analysis::AnalysisMetrics>,
        analysis_fps: f64,
    ) -> anyhow::Result<Assigner> {
        let rt = super::runtime()?;
        let client = rt.block_on(settings.connect(&format!("{name}-assign")))?;
        let mut l = EdgeLoop {
            settings: settings.clone(),
            name,
            run,
            cameras,
            metrics,
            held: BTreeMap::new(),
            defs: BTreeMap::new(),
            defs_seq: None,
            refused: BTreeMap::new(),
            over_since: None,
            started: None,
            analysis,
            analysis_fps,
            gauge: LoadGauge::default(),
            cpu: super::cpu::CpuClock::default(),
            measured: (None, None),
        };
        let thread = StageThread::spawn("edge-assign", move |stop| {
            let settings = l.settings.clone();
            let buckets = every_round(
                &rt,
                &client,
                &settings,
                &stop,
                "edge: cannot reach the site's camera buckets; the cameras it runs keep running",
                |b| rt.block_on(l.round(b)),
            );
            // stop the cameras (their open tracklets end and are published), then let other
            // edges take them at once
            if let Err(e) = l.cameras.set_assigned(Vec::new()) {
                warn!(error = %format!("{e:#}"), "edge: stopping the assigned cameras");
            }
            if let Some(b) = &buckets {
                rt.block_on(async {
                    for (camera, h) in std::mem::take(&mut l.held) {
                        let _ = tokio::time::timeout(
                            REQUEST,
                            b.leases.delete_expect_revision(&camera, Some(h.revision)),
                        )
                        .await;
                    }
                    let _ = tokio::time::timeout(REQUEST, b.edges.delete(&l.name)).await;
                });
            }
            l.publish_held();
            rt.shutdown_timeout(Duration::from_secs(2));
        });
        Ok(Assigner { thread })
    }

    /// Stops its cameras, gives their leases back and ends.
    pub fn stop(&mut self) {
        self.thread.stop();
    }
}

impl EdgeLoop {
    fn lease_value(&self) -> Bytes {
        Bytes::from(
            serde_json::to_vec(&Lease {
                edge: self.name.clone(),
                run: self.run.clone(),
                since_ms: crate::store::now_ms(),
            })
            .expect("a lease serialises"),
        )
    }

    fn publish_held(&self) {
        *self
            .metrics
            .assigned
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = self.held.keys().cloned().collect();
    }

    async fn round(&mut self, b: &Buckets) -> anyhow::Result<()> {
        let before: Vec<(String, CameraSettings)> = self
            .held
            .iter()
            .map(|(k, h)| (k.clone(), h.settings.clone()))
            .collect();
        let result = self.round_inner(b).await;
        let after: Vec<(String, CameraSettings)> = self
            .held
            .iter()
            .map(|(k, h)| (k.clone(), h.settings.clone()))
            .collect();
        if before != after {
            let list: Vec<CameraSettings> = after.into_iter().map(|(_, s)| s).collect();
            if let Err(e) = self.cameras.set_assigned(list) {
                warn!(error = %format!("{e:#}"), "edge: cannot run the assigned cameras");
            }
            self.publish_held();
        }
        result
    }

    /// One round, then the heartbeat with what this edge holds after it.
    async fn round_inner(&mut self, b: &Buckets) -> anyhow::Result<()> {
        let r = self.assign(b).await;
        self.heartbeat(b).await?;
        r
    }

    async fn assign(&mut self, b: &Buckets) -> anyhow::Result<()> {
        self.read_definitions(b).await?;
        self.renew(b).await?;
        let own = self.cameras.own_ids();
        let wanted: Vec<String> = self
            .defs
            .iter()
            .filter(|(id, c)| c.enabled && !own.contains(*id))
            .map(|(id, _)| id.clone())
            .collect();
        let beats: BTreeMap<String, (Heartbeat, u64)> = entries(&b.edges).await?;
        // for its first lease time an edge only announces itself: edges starting together see
        // each other before they take cameras, and share them evenly from the start
        if self.started.is_none() {
            info!(edge = %self.name, lease_s = b.lease.as_secs_f64(), "edge: taking cameras of the site");
            self.started = Some(Instant::now());
        }
        if !self.taking(b) {
            return Ok(());
        }
        // shares in proportion to the live edges' measured speeds (before any is measured,
        // their capacities; all 1: cameras ÷ live edges)
        let others: Vec<&Heartbeat> = beats
            .values()
            .map(|(h, _)| h)
            .filter(|h| h.edge != self.name)
            .collect();
        let mut pairs: Vec<(f64, Option<f64>)> =
            others.iter().map(|h| (h.capacity, h.speed)).collect();
        pairs.push((self.settings.capacity, self.measured.0));
        let w = weights(&pairs);
        let total: f64 = w.iter().sum();
        let mine = w[w.len() - 1];
        let share = share(wanted.len(), mine, total);
        if self.held.len() < share {
            self.over_since = None;
            let leased: BTreeSet<String> = keys(&b.leases).await?.into_iter().collect();
            let mut free: Vec<&String> = wanted
                .iter()
                .filter(|id| !leased.contains(*id) && !self.held.contains_key(*id))
                .collect();
            // edges starting together try different cameras first
            free.sort_by_key(|id| spread(id, &self.name));
            for id in free {
                if self.held.len() >= share {
                    break;
                }
                self.take(b, id).await;
            }
        } else if gives_back(
            wanted.len(),
            self.held.len(),
            mine,
            // a live edge below its own share takes what this one gives back
            &others
                .iter()
                .zip(&w)
                .filter(|(h, _)| h.taking)
                .map(|(h, w)| (h.assigned.len(), *w))
                .collect::<Vec<_>>(),
            total,
        ) {
            let since = *self.over_since.get_or_insert_with(Instant::now);
            let open = self
                .metrics
                .open_tracklets
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            let opened = |id: &String| open.get(id.as_str()).copied().unwrap_or(0);
            let quiet = self.held.keys().find(|id| opened(id) == 0).cloned();
            let pick = quiet.clone().or_else(|| {
                (since.elapsed() >= REBALANCE_WAIT)
                    .then(|| self.held.keys().min_by_key(|id| opened(id)).cloned())
                    .flatten()
            });
            if let Some(id) = pick {
                let h = self.held.remove(&id).expect("held");
                // stop it first, then free it
                let list: Vec<CameraSettings> =
                    self.held.values().map(|h| h.settings.clone()).collect();
                self.cameras.set_assigned(list)?;
                self.publish_held();
                b.leases
                    .delete_expect_revision(&id, Some(h.revision))
                    .await?;
                self.metrics.released.fetch_add(1, Ordering::Relaxed);
                // still over its share: the next camera goes without another wait when none is
                // quiet (the wait is per rebalancing, not per camera)
                info!(camera = %id, held = self.held.len(), share, weight = mine, total_weight = total, open_tracklets = opened(&id),
                    reason = if quiet.is_some() { "no open tracklet" } else { "waited for a quiet moment too long" },
                    "edge: gave a camera back so that a less loaded edge takes it");
            }
        } else {
            self.over_since = None;
        }
        Ok(())
    }

    /// Whether this edge's first lease time is over (before, it only announces itself).
    fn taking(&self, b: &Buckets) -> bool {
        self.started.is_some_and(|t| t.elapsed() >= b.lease)
    }

    /// Measures this edge (its speed and load for the heartbeat).
    fn measure(&mut self) {
        let frames = self.analysis.frames.load(Ordering::Relaxed);
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        // a camera's analysis rate: the mean of the cameras it runs (their `fps`, else
        // `[analysis] fps`)
        let list = self.cameras.list();
        let fps = if list.is_empty() {
            self.analysis_fps
        } else {
            list.iter()
                .map(|c| c.fps.map_or(self.analysis_fps, f64::from))
                .sum::<f64>()
                / list.len() as f64
        };
        self.measured = self
            .gauge
            .sample(Instant::now(), frames, self.cpu.read(), cores, fps);
        *self
            .metrics
            .measured
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = self.measured;
    }

    async fn heartbeat(&mut self, b: &Buckets) -> anyhow::Result<()> {
        self.measure();
        let m = &self.metrics;
        let beat = Heartbeat {
            edge: self.name.clone(),
            run: self.run.clone(),
            assigned: self.held.keys().cloned().collect(),
            own: self.cameras.own_ids().into_iter().collect(),
            taking: self.taking(b),
            buffered: m.buffered.load(Ordering::Relaxed),
            dropped: m.dropped.load(Ordering::Relaxed),
            t_ms: crate::store::now_ms(),
            capacity: self.settings.capacity,
            speed: self.measured.0,
            load: self.measured.1,
        };
        b.edges
            .put(&self.name, Bytes::from(serde_json::to_vec(&beat)?))
            .await?;
        Ok(())
    }

    /// Reads the camera bucket again when it changed; a held camera whose definition went
    /// or was disabled is given back, one whose settings changed restarts with them.
    async fn read_definitions(&mut self, b: &Buckets) -> anyhow::Result<()> {
        // the stream's present last sequence (not the one cached when the bucket was opened:
        // cameras the core adds or changes while this edge runs must be seen)
        let seq =
            b.js.get_stream(&b.cameras_stream)
                .await?
                .cached_info()
                .state
                .last_sequence;
        if self.defs_seq != Some(seq) {
            let mut defs = BTreeMap::new();
            for (key, (c, _)) in entries::<CameraSettings>(&b.cameras).await? {
                if c.id != key {
                    warn!(key = %key, id = %crate::config::secrets::clip(&c.id, 80), "edge: a camera whose id differs from its key in the site's bucket; skipped");
                    continue;
                }
                defs.insert(key, c);
            }
            self.defs = defs;
            self.defs_seq = Some(seq);
            self.refused
                .retain(|id, c| self.defs.get(id).is_some_and(|d| d == c));
        }
        let gone: Vec<String> = self
            .held
            .keys()
            .filter(|id| !self.defs.get(*id).is_some_and(|c| c.enabled))
            .cloned()
            .collect();
        for id in gone {
            let h = self.held.remove(&id).expect("held");
            let _ = b.leases.delete_expect_revision(&id, Some(h.revision)).await;
            info!(camera = %id, "edge: the site removed or disabled the camera; stopped");
        }
        let changed: Vec<(String, CameraSettings)> = self
            .held
            .iter()
            .filter_map(|(id, h)| {
                let d = self.defs.get(id)?;
                (d != &h.settings).then(|| (id.clone(), d.clone()))
            })
            .collect();
        for (id, d) in changed {
            match self.cameras.check_assigned(&d) {
                Ok(()) => {
                    info!(camera = %id, "edge: the camera's settings changed at the core; restarting it");
                    self.held.get_mut(&id).expect("held").settings = d;
                }
                Err(why) => {
                    warn!(camera = %id, why = %why, "edge: the camera's new settings cannot run here; giving it back");
                    let h = self.held.remove(&id).expect("held");
                    let _ = b.leases.delete_expect_revision(&id, Some(h.revision)).await;
                    self.refused.insert(id, d);
                }
            }
        }
        Ok(())
    }

    /// Renews the leases older than a third of their lifetime. A lease that expired (the
    /// broker was away longer than its lifetime) is taken again if it is free; one another
    /// edge took meanwhile is given up and its camera stopped.
    async fn renew(&mut self, b: &Buckets) -> anyhow::Result<()> {
        let due: Vec<String> = self
            .held
            .iter()
            .filter(|(_, h)| h.renewed.elapsed() >= b.lease / 3)
            .map(|(id, _)| id.clone())
            .collect();
        for id in due {
            let rev = self.held[&id].revision;
            match b.leases.update(&id, self.lease_value(), rev).await {
                Ok(r) => {
                    let h = self.held.get_mut(&id).expect("held");
                    h.revision = r;
                    h.renewed = Instant::now();
                }
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                    match b.leases.create(&id, self.lease_value()).await {
                        Ok(r) => {
                            let h = self.held.get_mut(&id).expect("held");
                            h.revision = r;
                            h.renewed = Instant::now();
                            warn!(camera = %id, "edge: the camera's lease had expired (broker away?); nobody took it, so this edge keeps it");
                        }
                        Err(c) if c.kind() == kv::CreateErrorKind::AlreadyExists => {
                            self.held.remove(&id);
                            self.metrics.lost.fetch_add(1, Ordering::Relaxed);
                            warn!(camera = %id, "edge: another edge took the camera while this one could not renew its lease; stopping it here");
                        }
                        Err(c) => return Err(c.into()),
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Takes a free camera: checks that it can run here, then creates its lease (only one edge
    /// can).
    async fn take(&mut self, b: &Buckets, id: &str) {
        let Some(def) = self.defs.get(id).cloned() else {
            return;
        };
        if self.refused.get(id) == Some(&def) {
            return;
        }
        if let Err(why) = self.cameras.check_assigned(&def) {
            warn!(camera = %id, why = %why, "edge: the site's camera cannot run on this edge; leaving it to others");
            self.refused.insert(id.to_string(), def);
            return;
        }
        match b.leases.create(id, self.lease_value()).await {
            Ok(revision) => {
                self.metrics.taken.fetch_add(1, Ordering::Relaxed);
                info!(camera = %id, held = self.held.len() + 1, "edge: took a camera of the site");
                self.held.insert(
                    id.to_string(),
                    Held {
                        settings: def,
                        revision,
                        renewed: Instant::now(),
                    },
                );
            }
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {}
            Err(e) => warn!(camera = %id, error = %e, "edge: cannot take the camera"),
        }
    }
}

/// A stable order of cameras that differs between edges.
fn spread(camera: &str, edge: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (camera, edge).hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_follow_the_capacities_and_cover_every_camera() {
        assert_eq!(share(4, 1.0, 2.0), 2);
        assert_eq!(share(6, 1.0, 2.0), 3, "an exact share is not rounded up");
        assert_eq!((share(9, 2.0, 3.0), share(9, 1.0, 3.0)), (6, 3));
        // uneven: rounded up, so the shares cover every camera
        let (a, b) = (share(4, 2.0, 3.0), share(4, 1.0, 3.0));
        assert_eq!((a, b), (3, 2));
        assert!(a + b >= 4);
        assert_eq!(share(0, 1.0, 1.0), 0);
        assert_eq!(share(5, 0.0, 1.0), 0);
    }

    #[test]
    fn measured_speeds_weigh_the_shares_and_unmeasured_edges_count_by_capacity() {
        // nobody measured: the capacities
        assert_eq!(weights(&[(1.0, None), (2.0, None)]), vec![1.0, 2.0]);
        // one edge keeps up with 12 cameras, the other with 4: shares 3 : 1
        let w = weights(&[(1.0, Some(12.0)), (1.0, Some(4.0))]);
        assert_eq!(w, vec![12.0, 4.0]);
        let total: f64 = w.iter().sum();
        assert_eq!((share(8, w[0], total), share(8, w[1], total)), (6, 2));
        // a new edge (not measured) of capacity 2 counts as twice the measured mean per unit
        let w = weights(&[(1.0, Some(12.0)), (1.0, Some(4.0)), (2.0, None)]);
        assert_eq!(w, vec![12.0, 4.0, 16.0]);
        // nonsense in a heartbeat (another version, a hand-written entry) counts as unmeasured
        let w = weights(&[(f64::NAN, Some(f64::INFINITY)), (1.0, Some(6.0))]);
        assert_eq!(w, vec![6.0, 6.0]);
    }

    #[test]
    fn a_camera_goes_to_a_faster_edge_only_when_the_shares_are_a_camera_and_a_half_apart() {
        // equal edges, 4 cameras: one holding all gives back to the one with none, down to 2 : 2
        assert!(gives_back(4, 4, 1.0, &[(0, 1.0)], 2.0));
        assert!(gives_back(4, 3, 1.0, &[(1, 1.0)], 2.0));
        assert!(!gives_back(4, 2, 1.0, &[(2, 1.0)], 2.0));
        // 5 cameras: 3 : 2 is as even as it gets, and 2 : 3 must not swing back
        assert!(!gives_back(5, 3, 1.0, &[(2, 1.0)], 2.0));
        // speeds 3 : 1, 8 cameras: the slow edge gives back down to 2, the fast one takes up to 6
        assert!(gives_back(8, 4, 1.0, &[(4, 3.0)], 4.0));
        assert!(gives_back(8, 3, 1.0, &[(5, 3.0)], 4.0));
        assert!(!gives_back(8, 2, 1.0, &[(6, 3.0)], 4.0));
        assert!(!gives_back(8, 6, 3.0, &[(2, 1.0)], 4.0));
        // speeds that wander by 10 %: 2 : 2 stays
        assert!(!gives_back(4, 2, 1.1, &[(2, 0.9)], 2.0));
        assert!(!gives_back(4, 2, 0.9, &[(2, 1.1)], 2.0));
        // only to an edge below its own share
        assert!(!gives_back(4, 3, 1.0, &[(2, 1.0)], 2.0));
    }

    #[test]
    fn the_gauge_prices_a_camera_in_cpu_time_per_frame() {
        let mut g = LoadGauge::default();
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        assert_eq!(g.sample(t0, 0, 0, 2.0, 5.0), (None, None));
        // 10 s at 10 frames/s (2 cameras at 5 fps), 50 ms of CPU per frame on 2 cores: a
        // quarter of the machine, and at full load it would analyse 40 frames/s = 8 cameras
        let mut out = (None, None);
        for i in 1..=10u64 {
            out = g.sample(t0 + s * i as u32, 10 * i, 50_000_000 * 10 * i, 2.0, 5.0);
        }
        let (speed, load) = out;
        assert!((speed.unwrap() - 8.0).abs() < 1e-9, "{speed:?}");
        assert!((load.unwrap() - 0.25).abs() < 1e-9, "{load:?}");
        // the same cameras analysed at 1 fps each cost a fifth: five times the cameras fit
        let mut h = LoadGauge::default();
        for i in 0..=10u64 {
            out = h.sample(t0 + s * i as u32, 2 * i, 50_000_000 * 2 * i, 2.0, 1.0);
        }
        assert!((out.0.unwrap() - 40.0).abs() < 1e-9, "{out:?}");
        // no frames any more (its cameras went): the last speed is kept, the load falls
        for i in 11..=60u64 {
            out = g.sample(t0 + s * i as u32, 100, 50_000_000 * 100, 2.0, 5.0);
        }
        assert!((out.0.unwrap() - 8.0).abs() < 1e-9);
        assert_eq!(out.1, Some(0.0));
    }
}
