//! The linking policy: which identity is this tracklet?
//!
//! For a new tracklet the linker fetches the nearest prototypes from the index, groups them by
//! identity and re-scores each candidate identity exactly (best prototype; an approximate index
//! only chooses *which* identities are looked at). Identities that the space–time rules rule out
//! are dropped. Then, among the rest, by similarity:
//!
//! - the best identity at or above its threshold (the pair of the tracklet's camera and the camera
//!   of the matching prototype; `linking.threshold` unless a pair overrides it) is the match;
//! - it must beat the most similar *other* feasible identity by `linking.margin`, else the link is
//!   **uncertain**: the tracklet is attached to the match provisionally (reported, stored, but it
//!   neither adds a prototype nor counts in space–time checks) and decided again when it grows;
//! - no match → a **new** identity (open set).
//!
//! A growing tracklet seen again (same camera, tracklet id and start time) keeps a confident link
//! and refreshes its prototype. If it opened its identity and nothing else joined it since, it is
//! decided again against the others, and when it now clearly matches an existing identity its
//! young identity is merged into that one. Tracklets whose two best identities both match above
//! `linking.merge_similarity` are merge evidence for that pair (operations.rs).
//!
//! Everything is deterministic: ordered maps, ties broken by id, so a restored gallery decides
//! exactly like the original.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use super::auto::{AutoIndex, IndexSettings};
use super::events::{Candidate, Decision, GalleryEvent, Observation, Outcome};
use super::identity::{Identity, LinkKind, Prototype, Sighting, add_prototype};
use super::index::{GalleryIndex, IndexKind};
use super::rules::{Rules, Span};
use super::vector::unit;
use super::{GalleryError, IdentityId, TimeMs, TrackletKey};
use crate::config::{Config, GallerySettings, LinkingSettings};

/// What an operation did, for the store and the event stream.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Effects {
    pub events: Vec<crate::gallery::GalleryEvent>,
    /// Identities whose record changed (write them to the store), in id order.
    pub changed: Vec<IdentityId>,
    /// Identities that no longer exist (merged away or retired), in id order.
    pub removed: Vec<IdentityId>,
}

/// Counts for logs, metrics and the benchmark.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GalleryStats {
    pub identities: usize,
    pub prototypes: usize,
    pub sightings: usize,
    pub index: IndexKind,
    pub index_live: usize,
    pub index_stored: usize,
}

/// Bytes held by the gallery, computed from its sizes (allocator overhead not included).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GalleryMemory {
    /// The index (vectors, graph links, id maps).
    pub index: usize,
    /// Identity records: prototype vectors, remembered tracklets, per-camera state.
    pub identities: usize,
    /// Prototype → identity and tracklet → identity maps.
    pub maps: usize,
    pub per_identity: f64,
}

/// A feasible candidate identity, exactly scored.
#[derive(Debug, Clone)]
pub(crate) struct Scored {
    pub identity: IdentityId,
    pub similarity: f32,
    pub threshold: f32,
}

pub(crate) enum Plan {
    New,
    Link {
        best: Scored,
        margin: Option<f32>,
    },
    Uncertain {
        best: Scored,
        runner_up: Option<Scored>,
    },
}

pub struct Linker {
    pub(crate) gallery: GallerySettings,
    pub(crate) linking: LinkingSettings,
    pub(crate) rules: Rules,
    pub(crate) dim: usize,
    pub(crate) index: AutoIndex,
    pub(crate) identities: BTreeMap<IdentityId, Identity>,
    /// Prototype id → identity.
    pub(crate) owner: HashMap<u64, IdentityId>,
    /// Remembered tracklets → identity.
    pub(crate) tracklets: HashMap<TrackletKey, IdentityId>,
    pub(crate) next_identity: u64,
    pub(crate) next_prototype: u64,
    /// Effects of the operation in progress.
    pub(crate) fx: Effects,
    changed: BTreeSet<IdentityId>,
    removed: BTreeSet<IdentityId>,
}

impl std::fmt::Debug for Linker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Linker")
            .field("identities", &self.identities.len())
            .field("index", &self.index)
            .finish()
    }
}

impl Linker {
    /// An empty gallery of `dim`-dimensional descriptors.
    pub fn new(
        gallery: &GallerySettings,
        linking: &LinkingSettings,
        dim: usize,
    ) -> Result<Linker, GalleryError> {
        if dim == 0 {
            return Err(GalleryError::BadVector("descriptors of dimension 0"));
        }
        Ok(Linker {
            gallery: gallery.clone(),
            linking: linking.clone(),
            rules: Rules::new(linking),
            dim,
            index: AutoIndex::new(dim, IndexSettings::from(gallery)),
            identities: BTreeMap::new(),
            owner: HashMap::new(),
            tracklets: HashMap::new(),
            next_identity: 1,
            next_prototype: 1,
            fx: Effects::default(),
            changed: BTreeSet::new(),
            removed: BTreeSet::new(),
        })
    }

    /// An empty gallery with the `[gallery]` and `[linking]` settings of `cfg`.
    pub fn from_config(cfg: &Config, dim: usize) -> Result<Linker, GalleryError> {
        Linker::new(&cfg.gallery, &cfg.linking, dim)
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The settings this gallery runs with.
    pub fn settings(&self) -> (&GallerySettings, &LinkingSettings) {
        (&self.gallery, &self.linking)
    }

    pub fn identity(&self, id: IdentityId) -> Option<&Identity> {
        self.identities.get(&id)
    }

    /// All identities in id order.
    pub fn identities(&self) -> impl Iterator<Item = &Identity> {
        self.identities.values()
    }

    /// The identity a remembered tracklet belongs to.
    pub fn identity_of(&self, key: &TrackletKey) -> Option<IdentityId> {
        self.tracklets.get(key).copied()
    }

    /// Identities and prototypes, without walking the identities (the link stage's gauges,
    /// after every observation).
    pub fn counts(&self) -> (usize, usize) {
        (self.identities.len(), self.owner.len())
    }

    /// Every statistic, some of them walking all identities.
    pub fn stats(&self) -> GalleryStats {
        GalleryStats {
            identities: self.identities.len(),
            prototypes: self.owner.len(),
            sightings: self.identities.values().map(|i| i.sightings.len()).sum(),
            index: self.index.kind(),
            index_live: self.index.len(),
            index_stored: self.index.stored(),
        }
    }

    /// Memory use, computed (walks the whole HNSW graph: for statistics, not every query).
    pub fn memory(&self) -> GalleryMemory {
        let index = self.index.memory_bytes();
        let identities = self
            .identities
            .values()
            .map(Identity::memory_bytes)
            .sum::<usize>()
            + self.identities.len() * 48;
        let maps = self.owner.capacity() * 17
            + self.tracklets.capacity() * (std::mem::size_of::<TrackletKey>() + 9)
            + self
                .tracklets
                .keys()
                .map(|k| k.camera.capacity())
                .sum::<usize>();
        GalleryMemory {
            index,
            identities,
            maps,
            per_identity: (index + identities + maps) as f64 / self.identities.len().max(1) as f64,
        }
    }

    /// The index (for statistics and benchmarks).
    pub fn index(&self) -> &AutoIndex {
        &self.index
    }

    /// Search by person: the `k` identities most similar to `descriptor` (best prototype), no
    /// space–time rules, best first.
    pub fn search(&self, descriptor: &[f32], k: usize) -> Result<Vec<Candidate>, GalleryError> {
        let q = unit(descriptor, self.dim)?;
        let mut fetch = self.gallery.candidates.max(k);
        loop {
            let hits = self.index.search(&q, fetch, None)?;
            let ids: BTreeSet<IdentityId> = hits
                .iter()
                .filter_map(|h| self.owner.get(&h.id).copied())
                .collect();
            let mut out: Vec<Candidate> = ids
                .into_iter()
                .filter_map(|id| {
                    let (s, _) = self.identities.get(&id)?.best_match(&q, None)?;
                    Some(Candidate {
                        identity: id,
                        similarity: s,
                    })
                })
                .collect();
            if out.len() >= k || hits.len() < fetch {
                out.sort_by(|a, b| {
                    b.similarity
                        .total_cmp(&a.similarity)
                        .then(a.identity.cmp(&b.identity))
                });
                out.truncate(k);
                return Ok(out);
            }
            fetch *= 4;
        }
    }

    /// Decides which identity `obs` belongs to, and updates the gallery accordingly.
    pub fn observe(&mut self, obs: &Observation) -> Result<Outcome, GalleryError> {
        self.begin();
        let bad = |m: &str| GalleryError::BadObservation {
            camera: obs.camera.clone(),
            tracklet: obs.tracklet,
            message: m.to_string(),
        };
        if obs.end_ms < obs.start_ms {
            return Err(bad("it ends before it starts"));
        }
        if !obs.quality.is_finite() {
            return Err(bad("its quality is not a number"));
        }
        let q = unit(&obs.descriptor, self.dim).map_err(|e| bad(&e.to_string()))?;
        let key = obs.key();
        if let Some(&id) = self.tracklets.get(&key) {
            let known = self
                .identities
                .get(&id)
                .and_then(|i| i.sighting(&key))
                .filter(|s| (s.start_ms - obs.start_ms).abs() <= self.rules.tolerance_ms)
                .map(|s| s.link);
            if let Some(link) = known {
                let decision = self.reobserve(obs, &q, id, link)?;
                return Ok(self.finish(decision, true));
            }
            // the tracker reused the id for someone else (a restarted camera): a new tracklet;
            // the old one is forgotten so that a key names one tracklet
            self.tracklets.remove(&key);
            if let Some(old) = self.identities.get_mut(&id) {
                old.take_sighting(&key);
                self.touch(id);
            }
        }
        let decision = self.decide_fresh(obs, &q, None)?;
        Ok(self.finish(decision, false))
    }

    pub(crate) fn begin(&mut self) {
        self.fx = Effects::default();
        self.changed.clear();
        self.removed.clear();
    }

    pub(crate) fn touch(&mut self, id: IdentityId) {
        self.changed.insert(id);
    }

    pub(crate) fn gone(&mut self, id: IdentityId) {
        self.removed.insert(id);
    }

    pub(crate) fn take_effects(&mut self) -> Effects {
        let mut fx = std::mem::take(&mut self.fx);
        let removed = std::mem::take(&mut self.removed);
        fx.changed = std::mem::take(&mut self.changed)
            .into_iter()
            .filter(|id| !removed.contains(id) && self.identities.contains_key(id))
            .collect();
        fx.removed = removed.into_iter().collect();
        fx
    }

    fn finish(&mut self, decision: Decision, reobserved: bool) -> Outcome {
        let fx = self.take_effects();
        Outcome {
            decision,
            reobserved,
            events: fx.events,
            changed: fx.changed,
            removed: fx.removed,
        }
    }

    fn span<'a>(obs: &'a Observation) -> Span<'a> {
        Span {
            camera: &obs.camera,
            tracklet: obs.tracklet,
            start_ms: obs.start_ms,
            end_ms: obs.end_ms,
        }
    }

    /// Feasible identities other than `exclude`, exactly scored, best first. Prototypes of
    /// `except` (the tracklet itself) do not count.
    pub(crate) fn rank(
        &self,
        q: &[f32],
        span: Span<'_>,
        exclude: Option<IdentityId>,
        except: Option<&TrackletKey>,
    ) -> Result<Vec<Scored>, GalleryError> {
        let total = self.index.len();
        let mut k = self.gallery.candidates;
        // an exact index scores every prototype in one pass: a larger k takes more of those
        // scores instead of scanning the gallery again
        let mut scores = self.index.scores(q)?;
        loop {
            let hits = match scores.as_mut() {
                Some(all) => super::index::top_of(all, k),
                None => self.index.search(q, k, None)?,
            };
            let ids: BTreeSet<IdentityId> = hits
                .iter()
                .filter_map(|h| self.owner.get(&h.id).copied())
                .filter(|id| Some(*id) != exclude)
                .collect();
            let mut ranked = Vec::new();
            for id in ids {
                let Some(ident) = self.identities.get(&id) else {
                    continue;
                };
                let Some((similarity, p)) = ident.best_match(q, except) else {
                    continue;
                };
                if let Err(why) = self
                    .rules
                    .check(span, ident.certain_sightings(except).map(Span::from))
                {
                    tracing::trace!(identity = %id, similarity, "ruled out: {why}");
                    continue;
                }
                ranked.push(Scored {
                    identity: id,
                    similarity,
                    threshold: self.rules.threshold(span.camera, &p.camera),
                });
            }
            ranked.sort_by(|a, b| {
                b.similarity
                    .total_cmp(&a.similarity)
                    .then(a.identity.cmp(&b.identity))
            });
            // An identity with no prototype among the k nearest is less similar than every one
            // listed, so the top two feasible identities are final once two are found.
            if ranked.len() >= 2 || hits.len() < k || k >= total {
                return Ok(ranked);
            }
            k = (k * 4).min(total.max(1));
        }
    }

    /// Threshold, then margin over the most similar other feasible identity.
    pub(crate) fn plan(&self, ranked: &[Scored]) -> Plan {
        let Some(bi) = ranked.iter().position(|s| s.similarity >= s.threshold) else {
            return Plan::New;
        };
        let best = ranked[bi].clone();
        let runner_up = ranked
            .iter()
            .enumerate()
            .find(|(i, _)| *i != bi)
            .map(|(_, s)| s.clone());
        // weak evidence: barely over the threshold, the link waits (decided again as it grows)
        let weak = best.similarity < best.threshold + self.rules.uncertain_band;
        match runner_up {
            None if weak => Plan::Uncertain {
                best,
                runner_up: None,
            },
            None => Plan::Link { best, margin: None },
            Some(r) => {
                let margin = best.similarity - r.similarity;
                if margin >= self.rules.margin && !weak {
                    Plan::Link {
                        best,
                        margin: Some(margin),
                    }
                } else {
                    Plan::Uncertain {
                        best,
                        runner_up: Some(r),
                    }
                }
            }
        }
    }

    /// Decides a tracklet the gallery does not hold (new, or uncertain being decided again).
    fn decide_fresh(
        &mut self,
        obs: &Observation,
        q: &[f32],
        previous: Option<(IdentityId, LinkKind)>,
    ) -> Result<Decision, GalleryError> {
        let key = obs.key();
        let span = Self::span(obs);
        let mut ranked = self.rank(q, span, None, None)?;
        // both best identities match well: evidence that they are one person
        if ranked.len() >= 2
            && self.note_evidence(&ranked[0], &ranked[1], &key, obs.start_ms, obs.end_ms)
        {
            ranked = self.rank(q, span, None, None)?;
        }
        let decision = match self.plan(&ranked) {
            Plan::New => {
                let id = self.create_identity(obs, q)?;
                self.fx.events.push(GalleryEvent::IdentityCreated {
                    t_ms: obs.end_ms,
                    identity: id,
                    camera: obs.camera.clone(),
                    tracklet: obs.tracklet,
                });
                self.fx.events.push(GalleryEvent::IdentityLinked {
                    t_ms: obs.end_ms,
                    identity: id,
                    camera: obs.camera.clone(),
                    tracklet: obs.tracklet,
                    decision: LinkKind::New,
                    similarity: 1.0,
                    margin: None,
                    runner_up: None,
                    previous: previous.map(|p| p.0),
                });
                Decision::New { identity: id }
            }
            Plan::Link { best, margin } => {
                self.attach(obs, q, best.identity, LinkKind::Linked, best.similarity)?;
                if previous != Some((best.identity, LinkKind::Linked)) {
                    self.fx.events.push(GalleryEvent::IdentityLinked {
                        t_ms: obs.end_ms,
                        identity: best.identity,
                        camera: obs.camera.clone(),
                        tracklet: obs.tracklet,
                        decision: LinkKind::Linked,
                        similarity: best.similarity,
                        margin,
                        runner_up: None,
                        previous: previous.map(|p| p.0).filter(|p| *p != best.identity),
                    });
                }
                Decision::Linked {
                    identity: best.identity,
                    similarity: best.similarity,
                    margin,
                }
            }
            Plan::Uncertain { best, runner_up } => {
                self.attach(obs, q, best.identity, LinkKind::Uncertain, best.similarity)?;
                let runner_up = runner_up.map(|r| Candidate {
                    identity: r.identity,
                    similarity: r.similarity,
                });
                if previous != Some((best.identity, LinkKind::Uncertain)) {
                    self.fx.events.push(GalleryEvent::IdentityLinked {
                        t_ms: obs.end_ms,
                        identity: best.identity,
                        camera: obs.camera.clone(),
                        tracklet: obs.tracklet,
                        decision: LinkKind::Uncertain,
                        similarity: best.similarity,
                        margin: runner_up.map(|r| best.similarity - r.similarity),
                        runner_up,
                        previous: previous.map(|p| p.0).filter(|p| *p != best.identity),
                    });
                }
                Decision::Uncertain {
                    identity: best.identity,
                    similarity: best.similarity,
                    runner_up,
                }
            }
        };
        Ok(decision)
    }

    /// A growing tracklet seen again (see the module docs).
    fn reobserve(
        &mut self,
        obs: &Observation,
        q: &[f32],
        id: IdentityId,
        link: LinkKind,
    ) -> Result<Decision, GalleryError> {
        let key = obs.key();
        let span = Self::span(obs);
        if link == LinkKind::Uncertain {
            if let Some(ident) = self.identities.get_mut(&id) {
                ident.take_sighting(&key);
            }
            self.tracklets.remove(&key);
            self.touch(id);
            return self.decide_fresh(obs, q, Some((id, link)));
        }
        let solo = link == LinkKind::New
            && self
                .identities
                .get(&id)
                .is_some_and(|i| i.certain_sightings(Some(&key)).next().is_none());
        let others = self.rank(q, span, Some(id), None)?;
        if solo {
            // an operator's split (cannot-link) is never undone by a growing tracklet
            let plan = match self.plan(&others) {
                Plan::Link { best, .. }
                    if self
                        .identities
                        .get(&id)
                        .is_some_and(|i| i.cannot_link.contains(&best.identity)) =>
                {
                    None
                }
                p => Some(p),
            };
            if let Some(Plan::Link { best, margin }) = plan {
                // the tracklet that opened `id`, now better described, is someone known
                let reason = format!(
                    "tracklet {key} opened identity {id}; grown, it matches identity {} (similarity {:.3})",
                    best.identity, best.similarity
                );
                self.merge_into(
                    best.identity,
                    id,
                    super::Actor::Linker,
                    reason,
                    Vec::new(),
                    Vec::new(),
                    obs.end_ms,
                )?;
                self.attach(obs, q, best.identity, LinkKind::Linked, best.similarity)?;
                self.fx.events.push(GalleryEvent::IdentityLinked {
                    t_ms: obs.end_ms,
                    identity: best.identity,
                    camera: obs.camera.clone(),
                    tracklet: obs.tracklet,
                    decision: LinkKind::Linked,
                    similarity: best.similarity,
                    margin,
                    runner_up: None,
                    previous: Some(id),
                });
                return Ok(Decision::Linked {
                    identity: best.identity,
                    similarity: best.similarity,
                    margin,
                });
            }
            self.attach(obs, q, id, LinkKind::New, 1.0)?;
            return Ok(Decision::New { identity: id });
        }
        let own = self
            .identities
            .get(&id)
            .and_then(|i| i.best_match(q, Some(&key)))
            .map(|(s, _)| s);
        let similarity = own.unwrap_or(1.0);
        self.attach(obs, q, id, link, similarity)?;
        if let (Some(s), Some(other)) = (own, others.first()) {
            let me = Scored {
                identity: id,
                similarity: s,
                threshold: 0.0,
            };
            let other = other.clone();
            self.note_evidence(&me, &other, &key, obs.start_ms, obs.end_ms);
        }
        if !self.identities.contains_key(&id) {
            // merged away on that evidence: report the surviving identity
            if let Some(&now) = self.tracklets.get(&key) {
                return Ok(Decision::Linked {
                    identity: now,
                    similarity,
                    margin: None,
                });
            }
        }
        let margin = own.zip(others.first()).map(|(s, o)| s - o.similarity);
        Ok(match link {
            LinkKind::New => Decision::New { identity: id },
            _ => Decision::Linked {
                identity: id,
                similarity,
                margin,
            },
        })
    }

    fn create_identity(
        &mut self,
        obs: &Observation,
        q: &[f32],
    ) -> Result<IdentityId, GalleryError> {
        let id = IdentityId(self.next_identity);
        self.next_identity += 1;
        self.identities.insert(id, Identity::new(id, obs.start_ms));
        self.attach(obs, q, id, LinkKind::New, 1.0)?;
        Ok(id)
    }

    /// Records the tracklet as a sighting of `id` and, for confident links of good enough
    /// quality, refreshes its prototype.
    pub(crate) fn attach(
        &mut self,
        obs: &Observation,
        q: &[f32],
        id: IdentityId,
        link: LinkKind,
        similarity: f32,
    ) -> Result<(), GalleryError> {
        let key = obs.key();
        let cap = self.gallery.tracklets_per_identity;
        let Some(ident) = self.identities.get_mut(&id) else {
            return Err(GalleryError::UnknownIdentity(id));
        };
        let forgotten = ident.record_sighting(
            Sighting {
                camera: obs.camera.clone(),
                tracklet: obs.tracklet,
                start_ms: obs.start_ms,
                end_ms: obs.end_ms,
                descriptor: q.to_vec(),
                quality: obs.quality,
                link,
                similarity,
            },
            cap,
        );
        for k in forgotten {
            if self.tracklets.get(&k) == Some(&id) {
                self.tracklets.remove(&k);
            }
        }
        self.tracklets.insert(key.clone(), id);
        self.touch(id);
        let mut dropped = Vec::new();
        if link.is_certain() {
            dropped = self.refresh_prototype(id, &key, q, obs.end_ms, obs.quality)?;
        }
        if let Some(ident) = self.identities.get_mut(&id) {
            ident.settle_descriptors(dropped);
        }
        Ok(())
    }

    /// Replaces the tracklet's prototype with `q` (a growing tracklet's newer descriptor), or
    /// adds one — when the quality is good enough, or the identity has none yet, or it is no
    /// worse than the one it replaces. Returns the prototypes of other tracklets it dropped.
    pub(crate) fn refresh_prototype(
        &mut self,
        id: IdentityId,
        key: &TrackletKey,
        q: &[f32],
        time_ms: TimeMs,
        quality: f32,
    ) -> Result<Vec<Prototype>, GalleryError> {
        let min_q = self.gallery.min_prototype_quality;
        let cap = self.gallery.prototypes_per_identity;
        let Some(ident) = self.identities.get_mut(&id) else {
            return Err(GalleryError::UnknownIdentity(id));
        };
        let own = ident
            .prototypes
            .iter()
            .position(|p| p.tracklet == key.tracklet && p.camera == key.camera);
        let wanted = quality >= min_q
            || ident.prototypes.is_empty()
            || own.is_some_and(|i| ident.prototypes[i].quality <= quality);
        if !wanted {
            return Ok(Vec::new());
        }
        let mut drop = Vec::new();
        if let Some(i) = own {
            drop.push(ident.prototypes.remove(i).id);
        }
        let pid = self.next_prototype;
        self.next_prototype += 1;
        let others = add_prototype(
            &mut ident.prototypes,
            Prototype {
                id: pid,
                vector: q.to_vec(),
                camera: key.camera.clone(),
                tracklet: key.tracklet,
                time_ms,
                quality,
            },
            cap,
            min_q,
        );
        drop.extend(others.iter().map(|p| p.id));
        for d in &drop {
            if *d != pid {
                self.index.remove(*d);
                self.owner.remove(d);
            }
        }
        if !drop.contains(&pid) {
            self.index.insert(pid, q)?;
            self.owner.insert(pid, id);
        }
        Ok(others.into_iter().filter(|p| p.id != pid).collect())
    }
}
