//! The linking stage: the one thread that owns the store and the gallery. It records every
//! tracklet (boxes, crops, descriptor), asks the [`Linker`] which identity each described
//! tracklet is, writes the decision and whatever the linker did (new identities, merges,
//! retirements) to the store in order, and publishes the matching events. On start the gallery is
//! rebuilt from the store (using the last index dump when it still fits), so nothing linked before
//! a crash or a restart is lost and new sightings link to the old identities.

use super::stage::StageThread;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use tracing::{info, info_span, warn};

use crate::config::Config;
use crate::events::{Event, EventBus};
use crate::gallery::{self, GalleryEvent, IdentityId, LinkKind, Linker};
use crate::ingest::CameraState;
use crate::reid::{Observation, ReidOutput};
use crate::store::{Decision, Store, now_ms};

/// What the link stage takes in: an output of a re-id stage, of this process or of an edge
/// (through the broker, [`crate::cluster`]).
pub struct Inbound {
    pub output: ReidOutput,
    /// Set for outputs of an edge: its run and the message's number within the tracklet, by
    /// which copies and older snapshots of a tracklet already stored are dropped.
    pub origin: Option<crate::cluster::wire::Origin>,
    /// Called once the output is dealt with (the broker's acknowledgement).
    pub done: Option<Box<dyn FnOnce(Outcome) + Send>>,
}

impl From<ReidOutput> for Inbound {
    fn from(output: ReidOutput) -> Inbound {
        Inbound {
            output,
            origin: None,
            done: None,
        }
    }
}

/// What became of an [`Inbound`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Recorded in the store (and linked).
    Stored,
    /// This message, or a later one of the same tracklet, was stored before: dropped.
    Duplicate,
    /// The store failed; it may succeed when delivered again.
    Failed,
}

/// Messages the link stage takes besides tracklets.
pub enum Control {
    CameraState {
        camera: String,
        state: CameraState,
        detail: String,
    },
    /// A camera was added or changed at run time: record it (URL redacted) in the store.
    CameraConfigured {
        camera: String,
        name: String,
        url: String,
    },
    /// Operator merge: `absorb` becomes part of `keep`.
    Merge {
        keep: i64,
        absorb: i64,
        operator: String,
        reason: String,
        reply: Reply<()>,
    },
    /// Operator split: `tracklets` (store row ids) of `identity` move to a new identity.
    Split {
        identity: i64,
        tracklets: Vec<i64>,
        operator: String,
        reason: String,
        reply: Reply<i64>,
    },
    /// An operator's `different` label: the gallery never merges `a` and `b` on its own. The
    /// reply says whether both were live identities.
    MarkDifferent { a: i64, b: i64, reply: Reply<bool> },
    /// Search by person: the `k` identities most similar to `descriptor`.
    Search {
        descriptor: Vec<f32>,
        k: usize,
        reply: Reply<Vec<(i64, f32)>>,
    },
    /// A live model switch is ready (src/server/switch.rs): describe the last tracklets with
    /// `next`, rebuild the gallery from its descriptors, run `commit` (the atomic step), then
    /// serve `next` and the new gallery. Nothing changes when any step before the swap fails.
    SwitchModel {
        next: Arc<super::switch::ServingEmbedder>,
        commit: Box<dyn FnOnce() -> anyhow::Result<()> + Send>,
        reply: Reply<super::switch::SwapReport>,
    },
}

/// Where the link stage answers a [`Control`] request.
pub type Reply<T> = crossbeam_channel::Sender<Result<T, ControlError>>;

/// Why the link stage refused a request.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ControlError {
    /// The request names something that does not exist (404 in the API).
    #[error("{0}")]
    NotFound(String),
    /// The request cannot be carried out as asked (409/422 in the API).
    #[error("{0}")]
    Refused(String),
    /// The store or gallery failed (500 in the API).
    #[error("{0}")]
    Internal(String),
}

impl From<gallery::GalleryError> for ControlError {
    fn from(e: gallery::GalleryError) -> Self {
        match e {
            gallery::GalleryError::UnknownIdentity(_) => ControlError::NotFound(e.to_string()),
            gallery::GalleryError::Refused(_)
            | gallery::GalleryError::Dimension { .. }
            | gallery::GalleryError::BadVector(_) => ControlError::Refused(e.to_string()),
            other => ControlError::Internal(other.to_string()),
        }
    }
}

#[derive(Debug)]
pub struct LinkMetrics {
    /// Time to link and record one observation (seconds).
    pub link_hist: super::histogram::Histogram,
    /// Frame-to-identity latency of decisions on live tracklets (seconds).
    pub latency_hist: super::histogram::Histogram,
    pub observations: AtomicU64,
    pub created: AtomicU64,
    pub linked: AtomicU64,
    pub uncertain: AtomicU64,
    pub merged: AtomicU64,
    pub errors: AtomicU64,
    /// Observations described by another model than the serving one (an edge that has not
    /// switched yet, or queued across a switch), described again from their crops.
    pub redescribed: AtomicU64,
    /// The crop writer's counters, and the jobs waiting for it.
    pub crop_writer: std::sync::OnceLock<Arc<super::crop_writer::CropWriterMetrics>>,
    pub crop_queue: AtomicU64,
    pub link_ns: AtomicU64,
    /// Live identities in the gallery (after the last change).
    pub gallery_identities: AtomicU64,
    /// Prototype vectors in the gallery.
    pub gallery_prototypes: AtomicU64,
    /// Frame-to-identity latency of the last decision (ms): wall time of the tracklet's last box
    /// to the moment its identity event was published.
    pub last_latency_ms: AtomicU64,
    /// The last `LATENCY_WINDOW` frame-to-identity latencies (ms), for percentiles.
    pub latencies: std::sync::Mutex<std::collections::VecDeque<u32>>,
}

impl Default for LinkMetrics {
    fn default() -> Self {
        LinkMetrics {
            link_hist: super::histogram::Histogram::latency(),
            latency_hist: super::histogram::Histogram::latency(),
            observations: AtomicU64::new(0),
            created: AtomicU64::new(0),
            linked: AtomicU64::new(0),
            uncertain: AtomicU64::new(0),
            merged: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            redescribed: AtomicU64::new(0),
            crop_writer: Default::default(),
            crop_queue: AtomicU64::new(0),
            link_ns: AtomicU64::new(0),
            gallery_identities: AtomicU64::new(0),
            gallery_prototypes: AtomicU64::new(0),
            last_latency_ms: AtomicU64::new(0),
            latencies: Default::default(),
        }
    }
}

/// Latencies kept for the percentiles.
const LATENCY_WINDOW: usize = 4096;

impl LinkMetrics {
    fn record_latency(&self, ms: u64) {
        self.latency_hist.observe(ms as f64 / 1e3);
        self.last_latency_ms.store(ms, Ordering::Relaxed);
        let mut w = self.latencies.lock().unwrap_or_else(|e| e.into_inner());
        if w.len() == LATENCY_WINDOW {
            w.pop_front();
        }
        w.push_back(ms.min(u32::MAX as u64) as u32);
    }

    /// Percentiles 50 and 99 of the recent latencies (ms), and how many there are.
    fn latency_percentiles(&self) -> (u64, u64, usize) {
        let mut v: Vec<u32> = self
            .latencies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .copied()
            .collect();
        if v.is_empty() {
            return (0, 0, 0);
        }
        v.sort_unstable();
        let at = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize] as u64;
        (at(0.5), at(0.99), v.len())
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct LinkSnapshot {
    pub observations: u64,
    pub created: u64,
    pub linked: u64,
    pub uncertain: u64,
    pub merged: u64,
    pub errors: u64,
    pub redescribed: u64,
    /// Crop pictures stored, outputs whose crops could not be stored, and outputs waiting for
    /// the crop writer.
    pub crops_written: u64,
    pub crop_errors: u64,
    pub crop_queue: u64,
    pub gallery_identities: u64,
    pub gallery_prototypes: u64,
    pub ms_per_observation: f64,
    pub last_latency_ms: u64,
    /// Frame-to-identity latency percentiles over the last decisions on live tracklets (ms).
    pub latency_p50_ms: u64,
    pub latency_p99_ms: u64,
    pub latency_samples: usize,
}

impl LinkMetrics {
    pub fn snapshot(&self) -> LinkSnapshot {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let (p50, p99, n) = self.latency_percentiles();
        LinkSnapshot {
            observations: l(&self.observations),
            created: l(&self.created),
            linked: l(&self.linked),
            uncertain: l(&self.uncertain),
            merged: l(&self.merged),
            errors: l(&self.errors),
            redescribed: l(&self.redescribed),
            crops_written: self.crop_writer.get().map_or(0, |c| l(&c.written)),
            crop_errors: self.crop_writer.get().map_or(0, |c| l(&c.errors)),
            crop_queue: l(&self.crop_queue),
            gallery_identities: l(&self.gallery_identities),
            gallery_prototypes: l(&self.gallery_prototypes),
            ms_per_observation: l(&self.link_ns) as f64 / 1e6 / l(&self.observations).max(1) as f64,
            last_latency_ms: l(&self.last_latency_ms),
            latency_p50_ms: p50,
            latency_p99_ms: p99,
            latency_samples: n,
        }
    }
}

pub struct LinkStage {
    pub metrics: Arc<LinkMetrics>,
    thread: StageThread,
}

fn decision_of(k: LinkKind) -> Decision {
    match k {
        LinkKind::New => Decision::New,
        LinkKind::Linked => Decision::Linked,
        LinkKind::Uncertain => Decision::Uncertain,
        LinkKind::Operator => Decision::Operator,
    }
}

fn kind_of(d: Decision) -> LinkKind {
    match d {
        Decision::New => LinkKind::New,
        Decision::Linked => LinkKind::Linked,
        Decision::Uncertain => LinkKind::Uncertain,
        Decision::Operator => LinkKind::Operator,
    }
}

/// The gallery as the store remembers it: rebuilt from every live identity's tracklets.
pub fn restore_gallery(
    cfg: &Config,
    store: &Store,
    model: &str,
    dim: usize,
) -> anyhow::Result<Linker> {
    let dump = store.data_dir().join("gallery-index");
    rebuild_gallery(
        &cfg.gallery,
        &cfg.linking,
        store,
        model,
        dim,
        dump.exists().then_some(dump.as_path()),
    )
}

/// The gallery of model `model` (its descriptors' tag): every live identity's tracklets that
/// have a descriptor of that model, replayed in order; identity ids are the store's.
pub fn rebuild_gallery(
    gallery_settings: &crate::config::GallerySettings,
    linking: &crate::config::LinkingSettings,
    store: &Store,
    model: &str,
    dim: usize,
    dump: Option<&std::path::Path>,
) -> anyhow::Result<Linker> {
    let sightings: std::collections::HashMap<i64, crate::store::SightingRow> = store
        .sightings()?
        .into_iter()
        .map(|s| (s.tracklet, s))
        .collect();
    let tracklets: Vec<gallery::StoredTracklet> = store
        .live_tracklets(model)?
        .into_iter()
        .filter(|t| t.descriptor.len() == dim)
        .map(|t| {
            let s = sightings.get(&t.tracklet);
            gallery::StoredTracklet {
                identity: IdentityId(t.identity as u64),
                camera: t.camera,
                tracklet: t.tracklet as u64,
                start_ms: t.start_ms,
                end_ms: t.end_ms,
                quality: t.quality,
                descriptor: t.descriptor,
                link: s.map_or(LinkKind::Linked, |s| kind_of(s.decision)),
                similarity: s.and_then(|s| s.similarity).unwrap_or(1.0),
            }
        })
        .collect();
    let mut cannot_link: Vec<(IdentityId, IdentityId)> = store
        .audit()?
        .into_iter()
        .filter(|a| a.kind == "split")
        .map(|a| (IdentityId(a.kept as u64), IdentityId(a.other as u64)))
        .collect();
    // identities an operator labelled as two people
    cannot_link.extend(
        store
            .different_identities()?
            .into_iter()
            .map(|(a, b)| (IdentityId(a as u64), IdentityId(b as u64))),
    );
    let n = tracklets.len();
    let (linker, report) = Linker::rebuild(
        gallery_settings,
        linking,
        dim,
        tracklets,
        store.max_identity()? as u64 + 1,
        &cannot_link,
        dump,
    )?;
    info!(tracklets = n, identities = report.identities, prototypes = report.prototypes, index = ?report.index, secs = report.seconds, model, "gallery restored from the store");
    Ok(linker)
}

/// What the link stage owns: the store, the gallery's linker, the event bus, and the run and
/// model its sightings are recorded under.
pub struct LinkParts {
    pub store: Store,
    pub linker: Linker,
    pub bus: EventBus,
    /// The store's run id of this daemon start.
    pub run: i64,
    /// The embedder's name, recorded with every descriptor.
    pub model: String,
    /// Identity labels of live tracks (for the API's snapshots).
    pub live: Arc<super::Live>,
    /// The serving embedder (a live switch replaces it; observations of the old one are
    /// described again with it).
    pub embedder: Arc<super::switch::SharedEmbedder>,
}

struct Ctx {
    /// The store's run of each edge run seen (src/store/cluster.rs).
    edge_runs: std::collections::HashMap<String, i64>,
    /// Stores crop pictures beside this thread.
    crops: super::crop_writer::CropWriter,
    /// Crops of the output being recorded: (tracklet row, camera, crops).
    pending_crops: Vec<(i64, String, Vec<crate::track::Crop>)>,
    store: Store,
    linker: Linker,
    bus: EventBus,
    run: i64,
    model: String,
    metrics: Arc<LinkMetrics>,
    live: Arc<super::Live>,
    embedder: Arc<super::switch::SharedEmbedder>,
    gallery: crate::config::GallerySettings,
}

impl Ctx {
    fn gallery_gauges(&self) {
        let (identities, prototypes) = self.linker.counts();
        self.metrics
            .gallery_identities
            .store(identities as u64, Ordering::Relaxed);
        self.metrics
            .gallery_prototypes
            .store(prototypes as u64, Ordering::Relaxed);
        self.metrics
            .crop_queue
            .store(self.crops.depth() as u64, Ordering::Relaxed);
    }

    fn operator(&self, operator: &str, reason: &str) -> gallery::OperatorRequest {
        gallery::OperatorRequest {
            operator: operator.to_string(),
            reason: if reason.is_empty() {
                "operator decision".into()
            } else {
                reason.to_string()
            },
            t_ms: now_ms(),
        }
    }

    fn merge(
        &mut self,
        keep: i64,
        absorb: i64,
        operator: &str,
        reason: &str,
    ) -> Result<(), ControlError> {
        if keep == absorb {
            return Err(ControlError::Refused(
                "an identity cannot be merged into itself".into(),
            ));
        }
        let req = self.operator(operator, reason);
        let fx = self
            .linker
            .merge(IdentityId(keep as u64), IdentityId(absorb as u64), &req)?;
        self.apply(&fx.events, now_ms())
            .map_err(|e| ControlError::Internal(format!("{e:#}")))?;
        self.live.relabel(absorb, keep);
        self.gallery_gauges();
        Ok(())
    }

    fn split(
        &mut self,
        identity: i64,
        tracklets: &[i64],
        operator: &str,
        reason: &str,
    ) -> Result<i64, ControlError> {
        let mut keys = Vec::with_capacity(tracklets.len());
        for &t in tracklets {
            let camera = self
                .store
                .tracklet_camera(t)
                .map_err(|e| ControlError::Internal(e.to_string()))?
                .ok_or_else(|| ControlError::NotFound(format!("no tracklet {t}")))?;
            keys.push(gallery::TrackletKey::new(&camera, t as u64));
        }
        let req = self.operator(operator, reason);
        let fx = self
            .linker
            .split(IdentityId(identity as u64), &keys, &req)?;
        let to = fx
            .events
            .iter()
            .find_map(|e| match e {
                GalleryEvent::IdentitySplit(s) => Some(s.to.0 as i64),
                _ => None,
            })
            .ok_or_else(|| ControlError::Internal("the split created no identity".into()))?;
        self.apply(&fx.events, now_ms())
            .map_err(|e| ControlError::Internal(format!("{e:#}")))?;
        self.gallery_gauges();
        Ok(to)
    }
    /// Commits a live model switch (see [`Control::SwitchModel`]).
    fn switch_model(
        &mut self,
        next: Arc<super::switch::ServingEmbedder>,
        commit: Box<dyn FnOnce() -> anyhow::Result<()> + Send>,
    ) -> Result<super::switch::SwapReport, ControlError> {
        let internal = |e: anyhow::Error| ControlError::Internal(format!("{e:#}"));
        let todo = self
            .store
            .reembed_todo(&next.tag)
            .map_err(|e| internal(e.into()))?;
        let count = super::switch::reembed(
            &self.store,
            &next,
            &todo,
            std::time::Duration::ZERO,
            &|| false,
            &mut |_, _| {},
        )
        .map_err(internal)?;
        let identities_before = self.linker.stats().identities as u64;
        let linker = rebuild_gallery(
            &self.gallery,
            &next.linking,
            &self.store,
            &next.tag,
            next.dim,
            None,
        )
        .map_err(|e| internal(e.context("cannot rebuild the gallery with the new model")))?;
        commit().map_err(|e| internal(e.context("cannot commit the switch")))?;
        self.linker = linker;
        self.model = next.tag.clone();
        self.embedder.swap(next);
        self.gallery_gauges();
        if let Err(e) = self
            .linker
            .dump_index(&self.store.data_dir().join("gallery-index"))
        {
            warn!(error = %e, "cannot dump the gallery index");
        }
        Ok(super::switch::SwapReport {
            identities_before,
            identities_after: self.linker.stats().identities as u64,
            count,
        })
    }

    /// The descriptor of an observation described by a model that no longer serves (it was
    /// queued while a switch committed): computed again from its crops with the serving model.
    fn redescribe(&self, o: &Observation) -> anyhow::Result<Option<Vec<f32>>> {
        let cur = self.embedder.current();
        // an edge's crops arrive as JPEG and are decoded only here; one that does not decode
        // is left out
        let (images, qualities): (Vec<image::RgbImage>, Vec<f32>) = o
            .tracklet
            .crops
            .iter()
            .filter_map(|c| {
                crate::cluster::wire::crop_image(c)
                    .map_err(|e| warn!(camera = %o.camera, crop = c.seq, error = %e, "a crop that does not decode is left out of the descriptor"))
                    .ok()
                    .map(|i| (i, c.quality))
            })
            .unzip();
        if images.is_empty() {
            return Ok(None);
        }
        let e = cur.embed_images(&images)?;
        let embs: Vec<(&[f32], f32)> = qualities
            .iter()
            .enumerate()
            .filter_map(|(k, q)| e.row(k).to_slice().map(|r| (r, *q)))
            .collect();
        Ok(crate::reid::service::weighted_descriptor(&embs))
    }

    /// Writes and publishes what the gallery did.
    fn apply(&mut self, events: &[GalleryEvent], seen_ms: i64) -> anyhow::Result<()> {
        for e in events {
            match e {
                GalleryEvent::IdentityCreated {
                    t_ms,
                    identity,
                    camera,
                    tracklet,
                } => {
                    self.store.create_identity(identity.0 as i64, *t_ms)?;
                    self.metrics.created.fetch_add(1, Ordering::Relaxed);
                    self.bus.publish(Event::IdentityCreated {
                        t_ms: now_ms(),
                        identity: identity.0 as i64,
                        camera: camera.clone(),
                        tracklet: *tracklet as i64,
                    });
                }
                GalleryEvent::IdentityLinked {
                    identity,
                    camera,
                    tracklet,
                    decision,
                    similarity,
                    margin,
                    ..
                } => {
                    let d = decision_of(*decision);
                    self.store.record_sighting(
                        *tracklet as i64,
                        identity.0 as i64,
                        Some(*similarity),
                        *margin,
                        d,
                        &self.model,
                        seen_ms,
                    )?;
                    match d {
                        Decision::Linked => self.metrics.linked.fetch_add(1, Ordering::Relaxed),
                        Decision::Uncertain => {
                            self.metrics.uncertain.fetch_add(1, Ordering::Relaxed)
                        }
                        _ => 0,
                    };
                    if d != Decision::New {
                        self.bus.publish(Event::IdentityLinked {
                            t_ms: now_ms(),
                            identity: identity.0 as i64,
                            camera: camera.clone(),
                            tracklet: *tracklet as i64,
                            similarity: *similarity,
                            margin: margin.unwrap_or(1.0),
                            uncertain: d == Decision::Uncertain,
                        });
                    }
                }
                GalleryEvent::IdentityMerged(m) => {
                    self.store.merge_identities(
                        m.kept.0 as i64,
                        m.absorbed.0 as i64,
                        &m.actor.to_string(),
                        &m.reason,
                        Some(m.similarity),
                    )?;
                    self.metrics.merged.fetch_add(1, Ordering::Relaxed);
                    self.bus.publish(Event::IdentityMerged {
                        t_ms: now_ms(),
                        kept: m.kept.0 as i64,
                        absorbed: m.absorbed.0 as i64,
                        reason: m.reason.clone(),
                    });
                }
                GalleryEvent::IdentitySplit(s) => {
                    let tracklets: Vec<i64> =
                        s.tracklets.iter().map(|k| k.tracklet as i64).collect();
                    self.store.split_identity(
                        s.from.0 as i64,
                        s.to.0 as i64,
                        &tracklets,
                        &s.actor.to_string(),
                        &s.reason,
                    )?;
                    self.bus.publish(Event::IdentitySplit {
                        t_ms: now_ms(),
                        from: s.from.0 as i64,
                        to: s.to.0 as i64,
                        tracklets,
                    });
                }
                GalleryEvent::IdentityRetired { t_ms, identity, .. } => {
                    self.store.retire_identity(identity.0 as i64, *t_ms)?;
                    self.bus.publish(Event::IdentityRetired {
                        t_ms: now_ms(),
                        identity: identity.0 as i64,
                    });
                }
            }
        }
        Ok(())
    }

    /// Records an output of a re-id stage; one of an edge at most once (by its origin).
    fn inbound(&mut self, inb: Inbound) {
        let Inbound {
            output,
            origin,
            done,
        } = inb;
        let camera = match &output {
            ReidOutput::Started { camera, .. } => camera.clone(),
            ReidOutput::Observed(o) => o.camera.clone(),
        };
        let outcome = match origin {
            None => match self.output(output, self.run, true) {
                Ok(()) => Outcome::Stored,
                Err(e) => {
                    self.metrics.errors.fetch_add(1, Ordering::Relaxed);
                    info_span!("camera", id = %camera)
                        .in_scope(|| warn!(error = %e, "cannot record a tracklet"));
                    Outcome::Failed
                }
            },
            Some(origin) => match self.remote(output, &origin) {
                Ok(o) => o,
                Err(e) => {
                    self.metrics.errors.fetch_add(1, Ordering::Relaxed);
                    info_span!("camera", id = %camera, edge = %origin.edge).in_scope(
                        || warn!(error = %e, "cannot record a tracklet of an edge; it is delivered again"),
                    );
                    Outcome::Failed
                }
            },
        };
        let crops = std::mem::take(&mut self.pending_crops);
        if crops.is_empty() {
            if let Some(done) = done {
                done(outcome);
            }
        } else {
            self.crops.send(super::crop_writer::Job {
                crops,
                done,
                outcome,
            });
        }
    }

    /// An edge's output: dropped when it or a later message of its tracklet is stored already.
    fn remote(
        &mut self,
        output: ReidOutput,
        origin: &crate::cluster::wire::Origin,
    ) -> anyhow::Result<Outcome> {
        let run = match self.edge_runs.get(&origin.run) {
            Some(r) => *r,
            None => {
                let r = self.store.edge_run(&origin.run, &origin.edge)?;
                self.edge_runs.insert(origin.run.clone(), r);
                r
            }
        };
        let (camera, track) = match &output {
            ReidOutput::Started { camera, tracklet } => (camera.clone(), tracklet.id),
            ReidOutput::Observed(o) => (o.camera.clone(), o.tracklet.id),
        };
        if self
            .store
            .edge_seq(run, &camera, track)?
            .is_some_and(|last| origin.seq <= last)
        {
            // a copy delivered again (after a crash, perhaps before the crop writer stored
            // what it carries): store the pictures its tracklet lacks, nothing else
            if let ReidOutput::Observed(o) = &output
                && !o.tracklet.crops.is_empty()
                && let Some(row) = self.store.tracklet_row(run, &camera, track)?
            {
                self.pending_crops
                    .push((row, camera.to_string(), o.tracklet.crops.clone()));
            }
            return Ok(Outcome::Duplicate);
        }
        self.output(output, run, false)?;
        self.store.set_edge_seq(run, &camera, track, origin.seq)?;
        Ok(Outcome::Stored)
    }

    /// Records one output under the store's run `run`; `local`: of this process's cameras
    /// (their live views get identity labels).
    fn output(&mut self, output: ReidOutput, run: i64, local: bool) -> anyhow::Result<()> {
        match output {
            ReidOutput::Started { camera, tracklet } => {
                self.bus.publish(Event::TrackletStarted {
                    t_ms: now_ms(),
                    camera: camera.to_string(),
                    track: tracklet.id,
                });
                Ok(())
            }
            ReidOutput::Observed(o) => self.observed(o, run, local),
        }
    }

    fn observed(&mut self, o: Observation, run: i64, local: bool) -> anyhow::Result<()> {
        let t = &o.tracklet;
        let row = self.store.upsert_tracklet(run, t, o.quality, o.ended)?;
        if !t.crops.is_empty() {
            // stored by the crop writer, before this output counts as done
            self.pending_crops
                .push((row, o.camera.to_string(), t.crops.clone()));
        }
        let (start_ms, end_ms) = match t.wall_span_ms() {
            (0, _) => (t.start.as_millis() as i64, t.end.as_millis() as i64),
            w => w,
        };
        let descriptor = match &o.descriptor {
            Some(_) if !crate::cluster::models::same_model(&o.model, &self.model) => {
                self.metrics.redescribed.fetch_add(1, Ordering::Relaxed);
                self.redescribe(&o)?
            }
            d => d.clone(),
        };
        if let Some(d) = &descriptor {
            let t0 = Instant::now();
            self.store.save_descriptor(row, &self.model, d)?;
            // another model's descriptor of this tracklet is now older than its crops
            self.store.drop_other_descriptors(row, &self.model)?;
            let outcome = self.linker.observe(&gallery::Observation {
                camera: o.camera.to_string(),
                tracklet: row as u64,
                start_ms,
                end_ms,
                descriptor: d.to_vec(),
                quality: o.quality,
            })?;
            self.apply(&outcome.events, end_ms)?;
            if !o.ended && local {
                self.live
                    .set_label(&o.camera, t.id, outcome.decision.identity().0 as i64);
            }
            self.gallery_gauges();
            self.metrics.observations.fetch_add(1, Ordering::Relaxed);
            self.metrics
                .link_ns
                .fetch_add(t0.elapsed().as_nanos() as u64, Ordering::Relaxed);
            self.metrics.link_hist.observe_duration(t0.elapsed());
            // latency of decisions on live tracklets: their last box is the frame just seen. An
            // ended tracklet is decided after the tracker gave it up (`track.lost_s` seconds
            // later), which is the tracker's patience, not the pipeline's latency.
            if end_ms > 1_000_000_000_000 && !o.ended {
                self.metrics
                    .record_latency((now_ms() - end_ms).max(0) as u64);
            }
        }
        if o.ended {
            if local {
                self.live.clear_label(&o.camera, t.id);
            }
            self.bus.publish(Event::TrackletEnded {
                t_ms: now_ms(),
                camera: o.camera.to_string(),
                track: t.id,
                tracklet: row,
                start_ms,
                end_ms,
                boxes: t.boxes.len(),
            });
        }
        Ok(())
    }
}

/// How often the gallery retires old identities, crops are trimmed and the index is dumped.
const MAINTENANCE: Duration = Duration::from_secs(60);

impl LinkStage {
    pub fn start(
        cfg: &Config,
        parts: LinkParts,
        input: crossbeam_channel::Receiver<Inbound>,
        control: crossbeam_channel::Receiver<Control>,
    ) -> anyhow::Result<LinkStage> {
        let metrics = Arc::new(LinkMetrics::default());
        let m = metrics.clone();
        let retention = cfg.store.retention();
        let gallery = cfg.gallery.clone();
        let writer = super::crop_writer::CropWriter::start(parts.store.data_dir())?;
        m.crop_writer.set(writer.metrics.clone()).ok();
        let thread = StageThread::spawn("link", move |s| {
            let LinkParts {
                store,
                linker,
                bus,
                run,
                model,
                live,
                embedder,
            } = parts;
            let mut ctx = Ctx {
                edge_runs: Default::default(),
                crops: writer,
                pending_crops: Vec::new(),
                store,
                linker,
                bus,
                run,
                model,
                metrics: m,
                live,
                embedder,
                gallery,
            };
            ctx.gallery_gauges();
            let mut last_maintenance = Instant::now();
            loop {
                crossbeam_channel::select! {
                    recv(input) -> msg => match msg {
                        Ok(inb) => ctx.inbound(inb),
                        Err(_) => break,
                    },
                    recv(control) -> msg => match msg {
                        Ok(Control::CameraState { camera, state, detail }) => {
                            if let Err(e) = ctx.store.camera_state(&camera, &state.to_string(), &detail) {
                                warn!(error = %e, "cannot record a camera state");
                            }
                            ctx.bus.publish(Event::CameraState { t_ms: now_ms(), camera, state, detail });
                        }
                        Ok(Control::CameraConfigured { camera, name, url }) => {
                            if let Err(e) = ctx.store.upsert_camera(&camera, &name, &url) {
                                warn!(error = %e, camera = %camera, "cannot record a camera");
                            }
                        }
                        Ok(Control::Merge { keep, absorb, operator, reason, reply }) => {
                            let _ = reply.send(ctx.merge(keep, absorb, &operator, &reason));
                        }
                        Ok(Control::Split { identity, tracklets, operator, reason, reply }) => {
                            let _ = reply.send(ctx.split(identity, &tracklets, &operator, &reason));
                        }
                        Ok(Control::SwitchModel { next, commit, reply }) => {
                            let r = ctx.switch_model(next, commit);
                            if let Err(e) = &r {
                                warn!(error = %e, "the model switch did not commit; the old model keeps serving");
                            }
                            let _ = reply.send(r);
                        }
                        Ok(Control::MarkDifferent { a, b, reply }) => {
                            let _ = reply.send(Ok(ctx.linker.mark_different(IdentityId(a as u64), IdentityId(b as u64))));
                        }
                        Ok(Control::Search { descriptor, k, reply }) => {
                            let r = ctx.linker.search(&descriptor, k).map(|c| {
                                c.into_iter().map(|c| (c.identity.0 as i64, c.similarity)).collect()
                            });
                            let _ = reply.send(r.map_err(ControlError::from));
                        }
                        Err(_) => {}
                    },
                    default(Duration::from_millis(200)) => {
                        if s.load(Ordering::SeqCst) {
                            break;
                        }
                    }
                }
                if last_maintenance.elapsed() >= MAINTENANCE {
                    last_maintenance = Instant::now();
                    let fx = ctx.linker.maintain(now_ms());
                    if let Err(e) = ctx.apply(&fx.events, now_ms()) {
                        warn!(error = %e, "cannot record gallery maintenance");
                    }
                    ctx.gallery_gauges();
                    match ctx.store.enforce_crop_retention(&retention) {
                        Ok(r) if r.deleted > 0 => info!(
                            deleted = r.deleted,
                            freed_bytes = r.freed_bytes,
                            "crop retention"
                        ),
                        Ok(_) => {}
                        Err(e) => warn!(error = %e, "crop retention failed"),
                    }
                    if let Err(e) = ctx
                        .linker
                        .dump_index(&ctx.store.data_dir().join("gallery-index"))
                    {
                        warn!(error = %e, "cannot dump the gallery index");
                    }
                }
            }
            if let Err(e) = ctx
                .linker
                .dump_index(&ctx.store.data_dir().join("gallery-index"))
            {
                warn!(error = %e, "cannot dump the gallery index");
            }
        });
        Ok(LinkStage { metrics, thread })
    }

    /// Waits for the stage to end on its own (its input closed: every tracklet recorded).
    pub fn finish(&mut self) {
        self.thread.finish();
    }

    pub fn stop(&mut self) {
        self.thread.stop();
    }
}
