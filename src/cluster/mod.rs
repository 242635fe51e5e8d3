//! Beyond one machine: edge and core roles over NATS JetStream (docs/scaling.md).
//!
//! ```text
//!  edge: cameras → analysis → reid ─┐                        ┌─ core: link (gallery + store), API, UI
//!                                   └→ JetStream (broker) ──→┘
//!        crosscam.<site>.obs.<camera>, crosscam.<site>.event.camera
//! ```
//! The stages are the same in every role; only the boundary between the re-id stage and the link
//! stage changes ([`crate::server::Boundary`]): a channel in one process, a JetStream stream
//! between an edge and a core.

pub mod assign;
pub mod core_link;
pub mod cpu;
pub mod edge;
pub mod failover;
pub mod models;
pub mod spool;
pub mod wire;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// `[cluster]`: where the broker is and which site this process belongs to.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSettings {
    /// The broker: `nats://host:port` (or `tls://host:port`); several, comma-separated, for a
    /// NATS cluster.
    pub nats: String,
    /// The site: a subject token (`crosscam.<site>.…`) and the stream's name (`CROSSCAM_<SITE>`).
    pub site: String,
    /// This process's name in messages, buckets and logs (an edge's or a core's; `name` is
    /// the same key); default: the host name. Two processes of a site need two names.
    #[serde(default, alias = "name")]
    pub edge: Option<String>,
    /// Most observations an edge keeps while the broker is unreachable; over it the oldest are
    /// dropped (and counted).
    #[serde(default = "default_buffer_max")]
    pub buffer_max: usize,
    /// How long the stream remembers message ids to drop re-published copies, seconds. An
    /// outage longer than this may let an edge re-publish an observation the stream already
    /// holds; the core still drops it.
    #[serde(default = "default_duplicate_window_s")]
    pub duplicate_window_s: u64,
    /// The core's durable consumer name (the active core consumes with it; a standby that
    /// takes over resumes it).
    #[serde(default = "default_consumer")]
    pub consumer: String,
    /// PEM file of the certificate authority that signed the broker's certificate (TLS).
    #[serde(default)]
    pub tls_ca: Option<PathBuf>,
    /// How long an edge's hold on a camera (its lease) and its heartbeat last without renewal,
    /// seconds: a dead edge's cameras move to live edges this long after its last renewal
    /// (plus a second for the next round and the camera's start). The first process that
    /// makes the site's buckets sets it for the site.
    #[serde(default = "default_lease_s")]
    pub lease_s: u64,
    /// Edge: disk for observations past `buffer_max` while the broker is unreachable, MiB
    /// (`DATA/cluster-spool`; 0: none, drop past `buffer_max`). What a stopping edge could not
    /// deliver waits there for its next start.
    #[serde(default = "default_buffer_disk_mb")]
    pub buffer_disk_mb: u64,
    /// Copies the broker keeps of the site's stream and buckets: 1 on one `nats-server`, 3 on a
    /// 3-node NATS cluster (any node may then fail). Set when they are made.
    #[serde(default = "default_replicas")]
    pub replicas: usize,
    /// Core: how often the active core stores a snapshot of its database in the site's object
    /// store, seconds (a standby that takes over starts from the newest one and replays the
    /// stream after it).
    #[serde(default = "default_snapshot_s")]
    pub snapshot_s: u64,
    /// Edge: its weight in the share of the site's cameras (relative: an edge with 2 takes
    /// twice the cameras of one with 1; e.g. its CPU cores, or cameras it keeps in real time).
    #[serde(default = "default_capacity")]
    pub capacity: f64,
    /// Core: observations older than this many hours leave the site's stream (0: kept until
    /// `stream_max_gib`, or for ever). The replay after a takeover needs what came since the
    /// last snapshot, and a core that was down longer than this loses what it had not taken.
    #[serde(default = "default_stream_max_age_hours")]
    pub stream_max_age_hours: f64,
    /// Core: the most disk the site's stream may use, GiB; over it the oldest observations
    /// leave (0: no bound by size).
    #[serde(default)]
    pub stream_max_gib: f64,
}

fn default_stream_max_age_hours() -> f64 {
    168.0
}

fn default_capacity() -> f64 {
    1.0
}

fn default_snapshot_s() -> u64 {
    60
}

fn default_replicas() -> usize {
    1
}

fn default_buffer_disk_mb() -> u64 {
    1024
}

fn default_lease_s() -> u64 {
    5
}

fn default_buffer_max() -> usize {
    20_000
}

fn default_duplicate_window_s() -> u64 {
    600
}

fn default_consumer() -> String {
    "core".into()
}

/// The environment variables the broker credentials come from (never the config file).
pub const ENV_USER: &str = "CROSSCAM_NATS_USER";
pub const ENV_PASSWORD: &str = "CROSSCAM_NATS_PASSWORD";
pub const ENV_TOKEN: &str = "CROSSCAM_NATS_TOKEN";
/// A user nkey's seed (`SU…`, 58 characters): the broker knows only its public key.
pub const ENV_NKEY: &str = "CROSSCAM_NATS_NKEY";
/// The path of a NATS credentials file (a user JWT and its nkey seed; decentralised accounts).
pub const ENV_CREDS: &str = "CROSSCAM_NATS_CREDS";

impl ClusterSettings {
    /// Checks the section: `Err((key, message))` names the key at fault.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        crate::config::secrets::check_id(&self.site).map_err(|m| {
            (
                "site",
                format!("{m} (the site is a NATS subject token and part of the stream's name)"),
            )
        })?;
        if let Some(e) = &self.edge {
            crate::config::secrets::check_id(e).map_err(|m| ("edge", m))?;
        }
        crate::config::secrets::check_id(&self.consumer).map_err(|m| ("consumer", m))?;
        for url in self.nats.split(',') {
            let url = url.trim();
            let rest = ["nats://", "tls://"]
                .iter()
                .find_map(|p| url.strip_prefix(p))
                .ok_or_else(|| {
                    (
                        "nats",
                        format!(
                            "expected nats://host:port or tls://host:port, found {}",
                            crate::config::secrets::clip(url, 80)
                        ),
                    )
                })?;
            if rest.is_empty() || rest.contains('@') || rest.contains('/') {
                return Err((
                    "nats",
                    format!(
                        "expected nats://host:port (credentials come from {ENV_USER} / {ENV_PASSWORD} or {ENV_TOKEN}, not the URL), found {}",
                        crate::config::secrets::clip(url, 80)
                    ),
                ));
            }
        }
        if self.buffer_max == 0 {
            return Err((
                "buffer_max",
                "expected at least 1 observation kept during a broker outage".into(),
            ));
        }
        if !(1..=86_400).contains(&self.duplicate_window_s) {
            return Err((
                "duplicate_window_s",
                format!(
                    "expected 1 to 86400 seconds, found {}",
                    self.duplicate_window_s
                ),
            ));
        }
        if self.buffer_disk_mb > 1 << 24 {
            return Err((
                "buffer_disk_mb",
                format!(
                    "expected 0 (no disk buffer) to 16777216 MiB, found {}",
                    self.buffer_disk_mb
                ),
            ));
        }
        if !(1..=5).contains(&self.replicas) {
            return Err((
                "replicas",
                format!(
                    "expected 1 to 5 copies (3 on a 3-node NATS cluster), found {}",
                    self.replicas
                ),
            ));
        }
        if !(2..=120).contains(&self.lease_s) {
            return Err((
                "lease_s",
                format!(
                    "expected 2 to 120 seconds (a dead edge's cameras move after this long), found {}",
                    self.lease_s
                ),
            ));
        }
        if !(self.capacity.is_finite() && self.capacity > 0.0 && self.capacity <= 10_000.0) {
            return Err((
                "capacity",
                format!(
                    "expected a weight above 0 and at most 10000 (e.g. the edge's CPU cores), found {}",
                    self.capacity
                ),
            ));
        }
        if !(5..=86_400).contains(&self.snapshot_s) {
            return Err((
                "snapshot_s",
                format!(
                    "expected 5 to 86400 seconds between the core's snapshots, found {}",
                    self.snapshot_s
                ),
            ));
        }
        if !(self.stream_max_age_hours == 0.0
            || (1.0..=87_600.0).contains(&self.stream_max_age_hours))
        {
            return Err((
                "stream_max_age_hours",
                format!(
                    "expected 0 (no age limit) or 1 to 87600 hours, found {}",
                    self.stream_max_age_hours
                ),
            ));
        }
        if !(self.stream_max_gib == 0.0 || (0.1..=1_048_576.0).contains(&self.stream_max_gib)) {
            return Err((
                "stream_max_gib",
                format!(
                    "expected 0 (no size limit) or 0.1 to 1048576 GiB, found {}",
                    self.stream_max_gib
                ),
            ));
        }
        if let Some(p) = &self.tls_ca
            && !p.is_file()
        {
            return Err((
                "tls_ca",
                format!("expected a PEM file, but {} does not exist", p.display()),
            ));
        }
        Ok(())
    }

    /// The stream of the site: `CROSSCAM_<SITE>` (upper case, `-` as `_`).
    pub fn stream(&self) -> String {
        format!("CROSSCAM_{}", self.site.to_uppercase().replace('-', "_"))
    }

    /// Every subject of the site.
    pub fn subjects(&self) -> String {
        format!("crosscam.{}.>", self.site)
    }

    pub fn obs_subject(&self, camera: &str) -> String {
        format!("crosscam.{}.obs.{camera}", self.site)
    }

    /// A key-value bucket of the site: `CROSSCAM_<SITE>_<WHAT>` (cameras, leases, edges).
    pub fn bucket(&self, what: &str) -> String {
        format!("{}_{what}", self.stream())
    }

    pub fn camera_event_subject(&self) -> String {
        format!("crosscam.{}.event.camera", self.site)
    }

    /// This process's name: `edge`, else the host name, else `edge`.
    pub fn edge_name(&self) -> String {
        self.edge.clone().unwrap_or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| {
                    h.trim()
                        .chars()
                        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
                        .take(64)
                        .collect::<String>()
                })
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "edge".into())
        })
    }

    /// Connects to the broker (retrying in the background until it answers; reconnecting for
    /// ever after), with the credentials of the environment.
    pub async fn connect(&self, name: &str) -> anyhow::Result<async_nats::Client> {
        let mut opts = async_nats::ConnectOptions::new()
            .name(format!("crosscam-{name}"))
            .retry_on_initial_connect()
            .max_reconnects(None)
            .connection_timeout(Duration::from_secs(5))
            .reconnect_delay_callback(|attempts| {
                Duration::from_millis((250 * attempts as u64).min(2_000))
            })
            .event_callback(|ev| async move {
                match ev {
                    async_nats::Event::Connected => tracing::info!("broker connected"),
                    async_nats::Event::Disconnected => tracing::warn!("broker disconnected"),
                    other => tracing::debug!(event = %other, "broker"),
                }
            });
        opts = with_credentials(opts, &|k: &str| std::env::var(k).ok())?;
        if let Some(ca) = &self.tls_ca {
            opts = opts.add_root_certificates(ca.clone()).require_tls(true);
        }
        if self.nats.split(',').any(|u| u.trim().starts_with("tls://")) {
            opts = opts.require_tls(true);
        }
        let addrs: Vec<async_nats::ServerAddr> = self
            .nats
            .split(',')
            .map(|u| u.trim().parse())
            .collect::<Result<_, _>>()
            .map_err(|e| anyhow::anyhow!("cluster.nats: {e}"))?;
        Ok(opts.connect(addrs).await?)
    }
}

/// Adds the broker credentials of the environment (`env`): a user and password, a token, a user
/// nkey seed or a credentials file — one of them, or none.
fn with_credentials(
    opts: async_nats::ConnectOptions,
    env: &dyn Fn(&str) -> Option<String>,
) -> anyhow::Result<async_nats::ConnectOptions> {
    let get = |k: &str| env(k).filter(|v| !v.is_empty());
    let (user, password, token, nkey, creds) = (
        get(ENV_USER),
        get(ENV_PASSWORD),
        get(ENV_TOKEN),
        get(ENV_NKEY),
        get(ENV_CREDS),
    );
    let given = [
        user.is_some() || password.is_some(),
        token.is_some(),
        nkey.is_some(),
        creds.is_some(),
    ]
    .iter()
    .filter(|g| **g)
    .count();
    if given > 1 {
        anyhow::bail!(
            "broker credentials: set one of {ENV_USER} + {ENV_PASSWORD}, {ENV_TOKEN}, {ENV_NKEY} or {ENV_CREDS}, not several"
        );
    }
    Ok(match (user, password, token, nkey, creds) {
        (Some(u), Some(p), ..) => opts.user_and_password(u, p),
        (Some(_), None, ..) | (None, Some(_), ..) => {
            anyhow::bail!("broker credentials: set both {ENV_USER} and {ENV_PASSWORD}")
        }
        (_, _, Some(t), ..) => opts.token(t),
        (_, _, _, Some(seed), _) => {
            if !(seed.starts_with("SU") && seed.len() == 58) {
                anyhow::bail!(
                    "{ENV_NKEY}: expected a user nkey seed (58 characters starting with SU, as `nsc` or `nk -gen user` print it)"
                );
            }
            opts.nkey(seed)
        }
        (_, _, _, _, Some(path)) => {
            let text = std::fs::read_to_string(&path).map_err(|e| {
                anyhow::anyhow!("{ENV_CREDS}: cannot read the credentials file {path}: {e}")
            })?;
            opts.credentials(&text).map_err(|e| {
                anyhow::anyhow!("{ENV_CREDS}: {path} is not a NATS credentials file: {e}")
            })?
        }
        _ => opts,
    })
}

/// Which part of the pipeline this process runs (`crosscam serve --role`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything in one process, no broker (the default; `[cluster]` is not used).
    #[default]
    Single,
    /// Cameras, detection, tracking and embedding; observations go to the broker.
    Edge,
    /// Linking, gallery, store, API and UI, fed from the broker; the config's cameras are
    /// placed on the edges (src/cluster/assign.rs).
    Core,
}

/// Counters of the broker boundary, for status and `/metrics`.
#[derive(Debug, Default)]
pub struct ClusterMetrics {
    /// Edge: messages the broker acknowledged (stored, or recognised as a duplicate).
    pub published: AtomicU64,
    /// Edge: acknowledged as duplicates by the broker (a re-publish after a lost ack).
    pub publish_duplicates: AtomicU64,
    /// Edge: failed publish attempts (broker down, timeouts); the message stays buffered.
    pub publish_errors: AtomicU64,
    /// Edge: messages waiting for the broker now (in memory and on disk).
    pub buffered: AtomicU64,
    /// Edge: of those, on disk, and their bytes.
    pub spooled: AtomicU64,
    pub spooled_bytes: AtomicU64,
    /// Edge: the most messages ever waiting at once.
    pub buffered_peak: AtomicU64,
    /// Edge: messages dropped, oldest first, because the buffer was full.
    pub dropped: AtomicU64,
    /// Edge: ended tracklets acknowledged by the broker, and those with a descriptor.
    pub ended_tracklets: AtomicU64,
    pub described_tracklets: AtomicU64,
    /// Whether the client is connected to the broker (1) or not (0).
    pub connected: AtomicU64,
    /// Core: messages taken from the stream.
    pub consumed: AtomicU64,
    /// Core: messages delivered more than once by the stream.
    pub redelivered: AtomicU64,
    /// Core: observations dropped because this one or a newer one of the tracklet was already
    /// stored.
    pub duplicates: AtomicU64,
    /// Core: messages that could not be read (acknowledged as terminated, never retried).
    pub malformed: AtomicU64,
    /// Core: messages acknowledged after they were stored.
    pub acked: AtomicU64,
    /// Core: messages in the stream not yet delivered to this core (the consumer's backlog, as
    /// the broker last reported it).
    pub backlog: AtomicU64,
    /// Core: what each edge has sent, by edge name.
    pub edges: std::sync::Mutex<std::collections::BTreeMap<String, EdgeSeen>>,
    /// Core: where each of the site's cameras runs, and the live edges' heartbeats (read
    /// from the site's buckets every second).
    pub placement: std::sync::Mutex<Vec<assign::Assignment>>,
    pub heartbeats: std::sync::Mutex<Vec<assign::Heartbeat>>,
    /// Edge: the cameras the site assigned to it now.
    pub assigned: std::sync::Mutex<Vec<String>>,
    /// Edge: open tracklets per camera (started, not yet ended), so that a camera is given
    /// back to the site at a quiet moment.
    pub open_tracklets: std::sync::Mutex<std::collections::BTreeMap<String, u64>>,
    /// Edge: cameras taken from the site, given back for balance, and lost to another edge
    /// (a lease this edge could not renew in time).
    pub taken: AtomicU64,
    pub released: AtomicU64,
    pub lost: AtomicU64,
    /// Edge: its measured speed (cameras that would fill its cores) and load (share of its
    /// cores busy), as in its heartbeat.
    pub measured: std::sync::Mutex<(Option<f64>, Option<f64>)>,
    /// Core: the latest observations' lag from the broker storing them to the core having
    /// stored them, ms (at most [`LAG_SAMPLES`]; `crosscam bench cluster` reads them).
    pub store_lag_ms: std::sync::Mutex<std::collections::VecDeque<u32>>,
}

/// How many lag samples a core keeps.
pub const LAG_SAMPLES: usize = 200_000;

impl ClusterMetrics {
    /// Notes the lag of one stored observation.
    pub fn stored_after(&self, lag_ms: i64) {
        let mut l = self.store_lag_ms.lock().unwrap_or_else(|e| e.into_inner());
        if l.len() >= LAG_SAMPLES {
            l.pop_front();
        }
        l.push_back(lag_ms.clamp(0, u32::MAX as i64) as u32);
    }

    /// Takes the lag samples kept so far.
    pub fn take_lags(&self) -> Vec<u32> {
        std::mem::take(&mut *self.store_lag_ms.lock().unwrap_or_else(|e| e.into_inner())).into()
    }
}

/// What a core has seen of one edge.
#[derive(Debug, Clone, Default, Serialize)]
pub struct EdgeSeen {
    pub edge: String,
    /// Cameras the edge has sent observations or camera states of.
    pub cameras: std::collections::BTreeSet<String>,
    /// Messages of this edge taken from the stream.
    pub messages: u64,
    /// When the last one was taken (ms since the Unix epoch).
    pub last_ms: i64,
    /// The model that described its last observation (`<version>:<sha256 prefix>`; the
    /// version is the edge's own numbering).
    pub model: String,
    /// Time from the broker storing the last message to this core taking it (ms): the lag.
    pub lag_ms: Option<i64>,
    /// Whether its heartbeat is current (it renewed it within the lease time).
    pub alive: bool,
    /// From its heartbeat: the cameras the site assigned to it, its own cameras, the
    /// observations waiting for the broker and those dropped over its bound, and when.
    pub assigned: Vec<String>,
    pub own: Vec<String>,
    pub buffered: Option<u64>,
    pub dropped: Option<u64>,
    pub heartbeat_ms: Option<i64>,
    /// Its configured weight in the share of the site's cameras (`cluster.capacity`).
    pub capacity: Option<f64>,
    /// Measured by the edge over the last 30 s: how many cameras would fill its machine's
    /// cores, and the share of them its process kept busy (0–1).
    pub speed: Option<f64>,
    pub load: Option<f64>,
}

impl ClusterMetrics {
    /// Notes a message of `edge` about `camera`, stored by the broker at `published_ms`.
    pub fn edge_seen(
        &self,
        edge: &str,
        camera: &str,
        published_ms: Option<i64>,
        model: Option<&str>,
    ) {
        let now = crate::store::now_ms();
        let mut edges = self.edges.lock().unwrap_or_else(|e| e.into_inner());
        let e = edges.entry(edge.to_string()).or_insert_with(|| EdgeSeen {
            edge: edge.to_string(),
            ..EdgeSeen::default()
        });
        if !camera.is_empty() {
            e.cameras.insert(camera.to_string());
        }
        e.messages += 1;
        e.last_ms = now;
        if let Some(m) = model.filter(|m| !m.is_empty()) {
            e.model = m.to_string();
        }
        e.lag_ms = published_ms.map(|p| (now - p).max(0));
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ClusterSnapshot {
    pub role: Role,
    pub site: String,
    pub name: String,
    pub connected: bool,
    pub published: u64,
    pub publish_duplicates: u64,
    pub publish_errors: u64,
    pub buffered: u64,
    /// Edge: of the buffered messages, those on disk, and their bytes.
    pub buffered_on_disk: u64,
    pub buffered_disk_bytes: u64,
    pub buffered_peak: u64,
    pub dropped: u64,
    pub ended_tracklets: u64,
    pub described_tracklets: u64,
    pub consumed: u64,
    pub redelivered: u64,
    pub duplicates: u64,
    pub malformed: u64,
    pub acked: u64,
    /// Core: messages in the stream not yet delivered to it.
    pub backlog: u64,
    /// Core: the edges it has heard from or that are alive, by name.
    pub edges: Vec<EdgeSeen>,
    /// Core: where each of the site's cameras runs (`edge` none while it waits for one).
    pub placement: Vec<assign::Assignment>,
    /// Edge: the cameras the site assigned to it now.
    pub assigned: Vec<String>,
    /// Edge: cameras taken from the site, given back for balance, lost to another edge.
    pub cameras_taken: u64,
    pub cameras_released: u64,
    pub leases_lost: u64,
    /// Edge: its measured speed and load (none until measured).
    pub speed: Option<f64>,
    pub load: Option<f64>,
    /// Core: its term as the site's active core (lease, replay, snapshots, standbys); none
    /// when it runs without the core lease (`crosscam bench cluster`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub core: Option<failover::CoreState>,
    /// Core: the model it told the edges to embed with; edge: the site's model as last read
    /// (src/cluster/models.rs), and why taking it failed, if it did.
    pub site_model: Option<models::SiteModel>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub site_model_error: Option<String>,
}

impl ClusterMetrics {
    pub fn snapshot(&self, role: Role, site: &str, name: &str) -> ClusterSnapshot {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        // copied out first: a guard taken inside the struct expression below would be held to
        // its end
        let measured = *self.measured.lock().unwrap_or_else(|e| e.into_inner());
        ClusterSnapshot {
            role,
            site: site.to_string(),
            name: name.to_string(),
            connected: l(&self.connected) == 1,
            published: l(&self.published),
            publish_duplicates: l(&self.publish_duplicates),
            publish_errors: l(&self.publish_errors),
            buffered: l(&self.buffered),
            buffered_on_disk: l(&self.spooled),
            buffered_disk_bytes: l(&self.spooled_bytes),
            buffered_peak: l(&self.buffered_peak),
            dropped: l(&self.dropped),
            ended_tracklets: l(&self.ended_tracklets),
            described_tracklets: l(&self.described_tracklets),
            consumed: l(&self.consumed),
            redelivered: l(&self.redelivered),
            duplicates: l(&self.duplicates),
            malformed: l(&self.malformed),
            acked: l(&self.acked),
            backlog: l(&self.backlog),
            edges: self.edges_seen(),
            placement: self
                .placement
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            assigned: self
                .assigned
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            cameras_taken: l(&self.taken),
            cameras_released: l(&self.released),
            leases_lost: l(&self.lost),
            speed: measured.0,
            load: measured.1,
            core: None,
            site_model: None,
            site_model_error: None,
        }
    }

    /// The edges a core heard from, with what their heartbeats say (an edge with a heartbeat
    /// and nothing sent yet is listed too).
    fn edges_seen(&self) -> Vec<EdgeSeen> {
        let mut edges = self.edges.lock().unwrap_or_else(|e| e.into_inner()).clone();
        for h in self
            .heartbeats
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let e = edges.entry(h.edge.clone()).or_insert_with(|| EdgeSeen {
                edge: h.edge.clone(),
                ..EdgeSeen::default()
            });
            e.alive = true;
            e.assigned = h.assigned.clone();
            e.own = h.own.clone();
            e.buffered = Some(h.buffered);
            e.dropped = Some(h.dropped);
            e.heartbeat_ms = Some(h.t_ms);
            e.capacity = Some(h.capacity);
            e.speed = h.speed;
            e.load = h.load;
        }
        edges.into_values().collect()
    }
}

/// A tokio runtime for one broker thread (the stages are plain threads): one worker keeps the
/// client's connection (pings, reconnects) going while the thread waits on its channels.
pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("nats-client")
        .enable_all()
        .build()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(site: &str, nats: &str) -> ClusterSettings {
        ClusterSettings {
            nats: nats.into(),
            site: site.into(),
            edge: None,
            buffer_max: 10,
            duplicate_window_s: 60,
            consumer: "core".into(),
            tls_ca: None,
            lease_s: 5,
            buffer_disk_mb: 0,
            replicas: 1,
            snapshot_s: 60,
            capacity: 1.0,
            stream_max_age_hours: 168.0,
            stream_max_gib: 0.0,
        }
    }

    #[test]
    fn site_names_are_subject_tokens() {
        assert!(
            settings("site-1_a", "nats://127.0.0.1:4222")
                .check()
                .is_ok()
        );
        for bad in ["a.b", "a*", "a>", "a b", "", "été"] {
            let (k, m) = settings(bad, "nats://127.0.0.1:4222").check().unwrap_err();
            assert_eq!(k, "site", "{bad:?}: {m}");
        }
        let (k, _) = settings("s", "http://x:1").check().unwrap_err();
        assert_eq!(k, "nats");
        let (k, m) = settings("s", "nats://u:p@x:1").check().unwrap_err();
        assert_eq!(k, "nats");
        assert!(m.contains(ENV_PASSWORD), "{m}");
        let s = settings("lab-2", "nats://a:1, nats://b:2");
        assert!(s.check().is_ok());
        assert_eq!(s.stream(), "CROSSCAM_LAB_2");
        assert_eq!(s.obs_subject("cam1"), "crosscam.lab-2.obs.cam1");
        assert_eq!(s.subjects(), "crosscam.lab-2.>");
    }

    #[test]
    fn broker_credentials_come_from_one_source_of_the_environment() {
        let with = |pairs: &[(&str, &str)]| {
            let pairs: Vec<(String, String)> = pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            with_credentials(async_nats::ConnectOptions::new(), &move |k: &str| {
                pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
            })
            .map(|_| ())
            .map_err(|e| e.to_string())
        };
        assert!(with(&[]).is_ok());
        assert!(with(&[(ENV_USER, "u"), (ENV_PASSWORD, "p")]).is_ok());
        assert!(with(&[(ENV_TOKEN, "t")]).is_ok());
        let seed = format!("SU{}", "A".repeat(56));
        assert!(with(&[(ENV_NKEY, &seed)]).is_ok());
        let e = with(&[(ENV_USER, "u")]).unwrap_err();
        assert!(e.contains(ENV_PASSWORD), "{e}");
        let e = with(&[(ENV_TOKEN, "t"), (ENV_NKEY, &seed)]).unwrap_err();
        assert!(e.contains("not several"), "{e}");
        let e = with(&[(ENV_NKEY, "UABC")]).unwrap_err();
        assert!(e.contains("user nkey seed"), "{e}");
        let e = with(&[(ENV_CREDS, "/nonexistent/x.creds")]).unwrap_err();
        assert!(e.contains("cannot read"), "{e}");
    }

    #[test]
    fn config_mistakes_in_cluster_name_the_key() {
        let parse = |t: &str| {
            crate::config::Config::parse(t, &crate::paths::project_root().join("site.toml"))
        };
        let e = parse("[cluster]\nnats = \"nats://127.0.0.1:4222\"\nsite = \"a.b\"\n").unwrap_err();
        assert_eq!((e.key.as_str(), e.line), ("cluster.site", Some(3)), "{e}");
        assert!(e.message.contains("subject token"), "{e}");
        let e = parse("[cluster]\nsite = \"a\"\n").unwrap_err();
        assert!(e.to_string().contains("nats"), "{e}");
        let e =
            parse("[cluster]\nnats = \"nats://h:1\"\nsite = \"a\"\nbuffer_max = 0\n").unwrap_err();
        assert_eq!(e.key, "cluster.buffer_max", "{e}");
        let e = parse("[cluster]\nnats = \"nats://h:1\"\nsite = \"a\"\nlease_s = 1\n").unwrap_err();
        assert_eq!(e.key, "cluster.lease_s", "{e}");
        let cfg = parse("[cluster]\nnats = \"nats://h:1\"\nsite = \"a\"\n").unwrap();
        let c = cfg.cluster.unwrap();
        assert_eq!((c.buffer_max, c.consumer.as_str()), (20_000, "core"));
        assert_eq!(c.lease_s, 5);
        assert_eq!((c.stream_max_age_hours, c.stream_max_gib), (168.0, 0.0));
        assert_eq!(c.bucket("LEASES"), "CROSSCAM_A_LEASES");
        for bad in [
            "stream_max_age_hours = 0.5",
            "stream_max_age_hours = -1",
            "stream_max_age_hours = nan",
            "stream_max_gib = 0.01",
            "stream_max_gib = inf",
        ] {
            let e = parse(&format!(
                "[cluster]\nnats = \"nats://h:1\"\nsite = \"a\"\n{bad}\n"
            ))
            .unwrap_err();
            let key = format!("cluster.{}", bad.split(' ').next().unwrap());
            assert_eq!(e.key, key, "{bad}: {e}");
        }
        let c = parse(
            "[cluster]\nnats = \"nats://h:1\"\nsite = \"a\"\nstream_max_age_hours = 0\nstream_max_gib = 50\n",
        )
        .unwrap()
        .cluster
        .unwrap();
        assert_eq!((c.stream_max_age_hours, c.stream_max_gib), (0.0, 50.0));
        assert!(parse("").unwrap().cluster.is_none());
    }
}
