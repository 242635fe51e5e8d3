//! Changes to identities beyond one tracklet: merges (on evidence, or by an operator), splits
//! (by an operator), and retirement of identities unseen for the retention time. Each returns
//! the events it caused, with an audit record for merges and splits.
//!
//! **Automatic merges.** A tracklet whose two best feasible identities both match at or above
//! `linking.merge_similarity` is evidence that the two are one person (typically the same person
//! opened two identities, e.g. before and after a change of lighting). The pair is merged once
//! `linking.merge_evidence` distinct tracklets gave such evidence, and only if: no operator split
//! them apart, no space–time rule separates their confident sightings, their closest prototypes
//! are at least `merge_similarity` alike, each is the other's most similar identity, and no two
//! evidence tracklets were seen at the same time in one camera (two people who both resemble
//! both identities are look-alikes, not one person seen twice). The older identity (lower id) is
//! kept.

use std::collections::BTreeSet;

use super::events::{Actor, GalleryEvent, MergeRecord, OperatorRequest, SplitRecord};
use super::identity::{Evidence, Identity, LinkKind, Prototype, Sighting, add_prototype};
use super::index::GalleryIndex;
use super::linker::{Effects, Linker, Scored};
use super::rules::Span;
use super::vector::dot;
use super::{GalleryError, IdentityId, TimeMs, TrackletKey};

impl Linker {
    /// Records that `key` matched both `a` and `b` well (if it did), and merges them when the
    /// evidence suffices. Returns whether a merge happened.
    pub(crate) fn note_evidence(
        &mut self,
        a: &Scored,
        b: &Scored,
        key: &TrackletKey,
        start_ms: TimeMs,
        t_ms: TimeMs,
    ) -> bool {
        let floor = self.rules.merge_similarity;
        if self.rules.merge_evidence == 0
            || a.similarity < floor
            || b.similarity < floor
            || a.identity == b.identity
        {
            return false;
        }
        let (lo, hi) = if a.identity < b.identity {
            (a.identity, b.identity)
        } else {
            (b.identity, a.identity)
        };
        let sim = a.similarity.min(b.similarity);
        let Some(ident) = self.identities.get_mut(&lo) else {
            return false;
        };
        if ident.cannot_link.contains(&hi) {
            return false;
        }
        let ev = ident.evidence.entry(hi).or_insert_with(|| Evidence {
            tracklets: BTreeSet::new(),
            similarity: sim,
            last_ms: t_ms,
            spans: Default::default(),
        });
        ev.tracklets.insert(key.clone());
        ev.spans.insert(key.clone(), (start_ms, t_ms));
        ev.similarity = ev.similarity.max(sim);
        ev.last_ms = ev.last_ms.max(t_ms);
        let count = ev.tracklets.len();
        self.touch(lo);
        if count < self.rules.merge_evidence as usize {
            return false;
        }
        match self.try_auto_merge(lo, hi, t_ms) {
            Ok(merged) => merged,
            Err(e) => {
                tracing::warn!("automatic merge of {lo} and {hi} failed: {e}");
                false
            }
        }
    }

    fn try_auto_merge(
        &mut self,
        lo: IdentityId,
        hi: IdentityId,
        t_ms: TimeMs,
    ) -> Result<bool, GalleryError> {
        if !self.conflicts_between(lo, hi).is_empty() {
            return Ok(false);
        }
        let tol = self.rules.tolerance_ms;
        if let Some((a, b)) = self
            .identities
            .get(&lo)
            .and_then(|i| i.evidence.get(&hi))
            .and_then(|e| e.simultaneous(tol))
        {
            tracing::debug!(%lo, %hi, "no automatic merge: evidence tracklets {a} and {b} were seen at the same time in one camera (look-alikes)");
            return Ok(false);
        }
        let cross = self.cross_similarity(lo, hi);
        if cross < self.rules.merge_similarity {
            return Ok(false);
        }
        if self.nearest_other(lo)? != Some(hi) || self.nearest_other(hi)? != Some(lo) {
            return Ok(false);
        }
        let evidence: Vec<TrackletKey> = self
            .identities
            .get(&lo)
            .and_then(|i| i.evidence.get(&hi))
            .map(|e| e.tracklets.iter().cloned().collect())
            .unwrap_or_default();
        let reason = format!(
            "{} tracklets matched both identities at ≥ {:.3}; closest prototypes {cross:.3}",
            evidence.len(),
            self.rules.merge_similarity
        );
        self.merge_into(lo, hi, Actor::Linker, reason, evidence, Vec::new(), t_ms)?;
        Ok(true)
    }

    /// Best similarity between a prototype of `a` and one of `b`.
    pub(crate) fn cross_similarity(&self, a: IdentityId, b: IdentityId) -> f32 {
        let (Some(a), Some(b)) = (self.identities.get(&a), self.identities.get(&b)) else {
            return f32::NEG_INFINITY;
        };
        a.prototypes
            .iter()
            .flat_map(|p| b.prototypes.iter().map(move |q| dot(&p.vector, &q.vector)))
            .fold(f32::NEG_INFINITY, f32::max)
    }

    /// The identity most similar to `id` (best prototype pair), space–time ignored.
    fn nearest_other(&self, id: IdentityId) -> Result<Option<IdentityId>, GalleryError> {
        let Some(ident) = self.identities.get(&id) else {
            return Ok(None);
        };
        let mut best: Option<(f32, IdentityId)> = None;
        for p in &ident.prototypes {
            let hits = self
                .index
                .search(&p.vector, self.gallery.candidates, None)?;
            let others: BTreeSet<IdentityId> = hits
                .iter()
                .filter_map(|h| self.owner.get(&h.id).copied())
                .filter(|o| *o != id)
                .collect();
            for o in others {
                if let Some((s, _)) = self
                    .identities
                    .get(&o)
                    .and_then(|i| i.best_match(&p.vector, None))
                {
                    let better = match best {
                        None => true,
                        Some((bs, bid)) => s > bs || (s == bs && o < bid),
                    };
                    if better {
                        best = Some((s, o));
                    }
                }
            }
        }
        Ok(best.map(|b| b.1))
    }

    /// Space–time rules broken if `a` and `b` were one person (both directions).
    pub(crate) fn conflicts_between(&self, a: IdentityId, b: IdentityId) -> Vec<String> {
        let (Some(ia), Some(ib)) = (self.identities.get(&a), self.identities.get(&b)) else {
            return Vec::new();
        };
        let mut out = BTreeSet::new();
        if ia.cannot_link.contains(&b) {
            out.insert(super::Conflict::CannotLink.to_string());
        }
        for (x, y) in [(ia, ib), (ib, ia)] {
            for s in x.certain_sightings(None) {
                if let Err(c) = self
                    .rules
                    .check(Span::from(s), y.certain_sightings(None).map(Span::from))
                {
                    out.insert(format!("{}: {c}", s.key()));
                }
            }
        }
        out.into_iter().collect()
    }

    /// Moves everything of `absorbed` into `kept` and records the merge.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn merge_into(
        &mut self,
        kept: IdentityId,
        absorbed: IdentityId,
        actor: Actor,
        reason: String,
        evidence: Vec<TrackletKey>,
        conflicts: Vec<String>,
        t_ms: TimeMs,
    ) -> Result<MergeRecord, GalleryError> {
        if kept == absorbed {
            return Err(GalleryError::Refused(format!(
                "cannot merge identity {kept} with itself"
            )));
        }
        if !self.identities.contains_key(&kept) {
            return Err(GalleryError::UnknownIdentity(kept));
        }
        let similarity = self.cross_similarity(kept, absorbed);
        let abs = self
            .identities
            .remove(&absorbed)
            .ok_or(GalleryError::UnknownIdentity(absorbed))?;
        let cap = self.gallery.prototypes_per_identity;
        let min_q = self.gallery.min_prototype_quality;
        let tcap = self.gallery.tracklets_per_identity;
        // evidence and operator splits that involved `absorbed` now concern `kept`
        let mut moved_evidence: Vec<(IdentityId, Evidence)> = abs.evidence.into_iter().collect();
        let mut touched = Vec::new();
        for (oid, other) in self.identities.iter_mut() {
            if let Some(e) = other.evidence.remove(&absorbed) {
                moved_evidence.push((*oid, e));
                touched.push(*oid);
            }
            if other.cannot_link.remove(&absorbed) {
                touched.push(*oid);
                if *oid != kept {
                    other.cannot_link.insert(kept);
                }
            }
        }
        for t in touched {
            self.touch(t);
        }
        for c in &abs.cannot_link {
            if let Some(k) = self.identities.get_mut(&kept)
                && *c != kept
            {
                k.cannot_link.insert(*c);
            }
        }
        for (other, e) in moved_evidence {
            if other == kept || other == absorbed {
                continue;
            }
            let (lo, hi) = if kept < other {
                (kept, other)
            } else {
                (other, kept)
            };
            if let Some(i) = self.identities.get_mut(&lo) {
                let slot = i.evidence.entry(hi).or_insert_with(|| Evidence {
                    tracklets: BTreeSet::new(),
                    similarity: e.similarity,
                    last_ms: e.last_ms,
                    spans: Default::default(),
                });
                slot.tracklets.extend(e.tracklets);
                slot.spans.extend(e.spans);
                slot.similarity = slot.similarity.max(e.similarity);
                slot.last_ms = slot.last_ms.max(e.last_ms);
                self.touch(lo);
            }
        }
        let Some(k) = self.identities.get_mut(&kept) else {
            return Err(GalleryError::UnknownIdentity(kept));
        };
        k.evidence.remove(&absorbed);
        // prototypes: pooled, then thinned to the cap (most redundant first)
        let mut dropped = Vec::new();
        for p in abs.prototypes {
            self.owner.insert(p.id, kept);
            dropped.extend(add_prototype(&mut k.prototypes, p, cap, min_q));
        }
        // sightings and per-camera state
        for s in &abs.sightings {
            self.tracklets.insert(s.key(), kept);
        }
        k.sightings.extend(abs.sightings);
        let forgotten = k.sort_and_cap_sightings(tcap);
        for (cam, c) in abs.cameras {
            match k.cameras.get_mut(&cam) {
                Some(e) => {
                    e.first_ms = e.first_ms.min(c.first_ms);
                    if c.last_end_ms > e.last_end_ms {
                        e.last_tracklet = c.last_tracklet;
                        e.last_start_ms = c.last_start_ms;
                        e.last_end_ms = c.last_end_ms;
                    }
                    e.tracklets += c.tracklets;
                }
                None => {
                    k.cameras.insert(cam, c);
                }
            }
        }
        k.created_ms = k.created_ms.min(abs.created_ms);
        k.last_seen_ms = k.last_seen_ms.max(abs.last_seen_ms);
        k.tracklets_total += abs.tracklets_total;
        k.cannot_link.remove(&absorbed);
        for key in forgotten {
            if self.tracklets.get(&key) == Some(&kept) {
                self.tracklets.remove(&key);
            }
        }
        for d in &dropped {
            self.index.remove(d.id);
            self.owner.remove(&d.id);
        }
        if let Some(k) = self.identities.get_mut(&kept) {
            k.settle_descriptors(dropped);
        }
        self.touch(kept);
        self.gone(absorbed);
        let record = MergeRecord {
            kept,
            absorbed,
            actor,
            reason,
            similarity,
            evidence,
            conflicts,
            t_ms,
        };
        tracing::info!(kept = %kept, absorbed = %absorbed, actor = %record.actor, "identities merged: {}", record.reason);
        self.fx
            .events
            .push(GalleryEvent::IdentityMerged(record.clone()));
        Ok(record)
    }

    /// Operator merge: `b` becomes part of `a` (which keeps its id). Space–time conflicts do not
    /// stop an operator; they are listed in the audit record.
    pub fn merge(
        &mut self,
        a: IdentityId,
        b: IdentityId,
        request: &OperatorRequest,
    ) -> Result<Effects, GalleryError> {
        self.begin();
        for id in [a, b] {
            if !self.identities.contains_key(&id) {
                return Err(GalleryError::UnknownIdentity(id));
            }
        }
        let conflicts = self.conflicts_between(a, b);
        for (x, y) in [(a, b), (b, a)] {
            if let Some(i) = self.identities.get_mut(&x) {
                i.cannot_link.remove(&y);
            }
        }
        self.merge_into(
            a,
            b,
            Actor::Operator(request.operator.clone()),
            request.reason.clone(),
            Vec::new(),
            conflicts,
            request.t_ms,
        )?;
        Ok(self.take_effects())
    }

    /// Operator split: `tracklets` of `identity` move to a new identity, which the linker will
    /// never merge back on its own. Their prototypes move with them; an identity left without
    /// any gets new ones from its remembered tracklets' descriptors. Refused (nothing changed)
    /// when a tracklet is not one the identity remembers, or either side would have no
    /// appearance left.
    pub fn split(
        &mut self,
        identity: IdentityId,
        tracklets: &[TrackletKey],
        request: &OperatorRequest,
    ) -> Result<Effects, GalleryError> {
        self.begin();
        let Some(ident) = self.identities.get(&identity) else {
            return Err(GalleryError::UnknownIdentity(identity));
        };
        let set: BTreeSet<TrackletKey> = tracklets.iter().cloned().collect();
        if set.is_empty() {
            return Err(GalleryError::Refused("no tracklets to split off".into()));
        }
        let from_set =
            |camera: &str, tracklet: u64| set.contains(&TrackletKey::new(camera, tracklet));
        let unknown: Vec<String> = set
            .iter()
            .filter(|k| {
                ident.sighting(k).is_none()
                    && !ident
                        .prototypes
                        .iter()
                        .any(|p| p.tracklet == k.tracklet && p.camera == k.camera)
            })
            .map(|k| k.to_string())
            .collect();
        if !unknown.is_empty() {
            return Err(GalleryError::Refused(format!(
                "identity {identity} does not remember tracklet(s) {} (the gallery keeps the last {} per identity)",
                unknown.join(", "),
                self.gallery.tracklets_per_identity
            )));
        }
        let (moving, staying): (Vec<Prototype>, Vec<Prototype>) = ident
            .prototypes
            .iter()
            .cloned()
            .partition(|p| from_set(&p.camera, p.tracklet));
        let (moving_s, staying_s): (Vec<Sighting>, Vec<Sighting>) = ident
            .sightings
            .iter()
            .cloned()
            .partition(|s| from_set(&s.camera, s.tracklet));
        let has_appearance = |protos: &[Prototype], sightings: &[Sighting]| {
            !protos.is_empty() || sightings.iter().any(|s| !s.descriptor.is_empty())
        };
        if !has_appearance(&staying, &staying_s) {
            return Err(GalleryError::Refused(format!(
                "splitting these tracklets would leave identity {identity} with no appearance; split the others off instead"
            )));
        }
        if !has_appearance(&moving, &moving_s) {
            return Err(GalleryError::Refused(
                "the tracklets to split off have no appearance".into(),
            ));
        }
        let new_id = IdentityId(self.next_identity);
        self.next_identity += 1;
        let mut fresh = Identity::new(new_id, request.t_ms);
        let moved_certain = moving_s.iter().filter(|s| s.link.is_certain()).count() as u64;
        fresh.sightings = moving_s
            .into_iter()
            .map(|s| Sighting {
                link: LinkKind::Operator,
                ..s
            })
            .collect();
        fresh.tracklets_total = fresh.sightings.len() as u64;
        fresh.recompute_seen();
        fresh.cannot_link.insert(identity);
        let mut to_insert: Vec<(IdentityId, Prototype)> = Vec::new();
        fresh.prototypes = if moving.is_empty() {
            let ps = self.prototypes_from(&fresh.sightings);
            to_insert.extend(ps.iter().map(|p| (new_id, p.clone())));
            ps
        } else {
            moving
        };
        for p in &fresh.prototypes {
            self.owner.insert(p.id, new_id);
        }
        let staying = if staying.is_empty() {
            let ps = self.prototypes_from(&staying_s);
            to_insert.extend(ps.iter().map(|p| (identity, p.clone())));
            ps
        } else {
            staying
        };
        for s in &fresh.sightings {
            self.tracklets.insert(s.key(), new_id);
        }
        let Some(old) = self.identities.get_mut(&identity) else {
            return Err(GalleryError::UnknownIdentity(identity));
        };
        old.prototypes = staying;
        old.sightings = staying_s;
        old.tracklets_total = old.tracklets_total.saturating_sub(moved_certain);
        old.recompute_seen();
        old.cannot_link.insert(new_id);
        old.evidence.remove(&new_id);
        self.identities.insert(new_id, fresh);
        for (owner, p) in to_insert {
            self.index.insert(p.id, &p.vector)?;
            self.owner.insert(p.id, owner);
        }
        self.touch(identity);
        self.touch(new_id);
        let record = SplitRecord {
            from: identity,
            to: new_id,
            tracklets: set.into_iter().collect(),
            actor: Actor::Operator(request.operator.clone()),
            reason: request.reason.clone(),
            t_ms: request.t_ms,
        };
        tracing::info!(from = %identity, to = %new_id, "identity split: {}", record.reason);
        self.fx.events.push(GalleryEvent::IdentitySplit(record));
        Ok(self.take_effects())
    }

    /// Fresh prototypes (new ids, not yet in the index) from sightings' descriptors, best
    /// quality first, thinned like any prototype set.
    fn prototypes_from(&mut self, sightings: &[Sighting]) -> Vec<Prototype> {
        let mut by_quality: Vec<&Sighting> = sightings.iter().collect();
        by_quality.sort_by(|a, b| {
            b.quality
                .total_cmp(&a.quality)
                .then_with(|| a.key().cmp(&b.key()))
        });
        let mut out = Vec::new();
        // a sighting's descriptor is empty only while its own prototype exists, and prototypes
        // move with their tracklets: on a side left without any, all descriptors are there
        for s in by_quality.into_iter().filter(|s| !s.descriptor.is_empty()) {
            let p = Prototype {
                id: self.next_prototype,
                vector: s.descriptor.clone(),
                camera: s.camera.clone(),
                tracklet: s.tracklet,
                time_ms: s.end_ms,
                quality: s.quality,
            };
            self.next_prototype += 1;
            add_prototype(
                &mut out,
                p,
                self.gallery.prototypes_per_identity,
                self.gallery.min_prototype_quality,
            );
        }
        out
    }

    /// An operator said `a` and `b` are two people (a `different` label): the linker never
    /// merges them on its own, whatever evidence accumulates; an operator still can. Returns
    /// false when either is not a live identity (a retired one has nothing left to protect).
    pub fn mark_different(&mut self, a: IdentityId, b: IdentityId) -> bool {
        if a == b || !(self.identities.contains_key(&a) && self.identities.contains_key(&b)) {
            return false;
        }
        for (x, y) in [(a, b), (b, a)] {
            if let Some(i) = self.identities.get_mut(&x) {
                i.cannot_link.insert(y);
                i.evidence.remove(&y);
            }
            self.touch(x);
        }
        true
    }

    /// Housekeeping, to call periodically (e.g. every minute) with the wall-clock time: retires
    /// identities unseen for `gallery.retention_hours`.
    pub fn maintain(&mut self, now_ms: TimeMs) -> Effects {
        self.begin();
        if self.gallery.retention_hours > 0.0 {
            let cutoff = now_ms - (self.gallery.retention_hours * 3_600_000.0) as TimeMs;
            let old: Vec<IdentityId> = self
                .identities
                .values()
                .filter(|i| i.last_seen_ms < cutoff)
                .map(|i| i.id)
                .collect();
            for id in old {
                self.retire(id, now_ms);
            }
        }
        self.take_effects()
    }

    fn retire(&mut self, id: IdentityId, now_ms: TimeMs) {
        let Some(ident) = self.identities.remove(&id) else {
            return;
        };
        for p in &ident.prototypes {
            self.index.remove(p.id);
            self.owner.remove(&p.id);
        }
        for s in &ident.sightings {
            if self.tracklets.get(&s.key()) == Some(&id) {
                self.tracklets.remove(&s.key());
            }
        }
        let mut touched = Vec::new();
        for (oid, other) in self.identities.iter_mut() {
            let a = other.evidence.remove(&id).is_some();
            let b = other.cannot_link.remove(&id);
            if a || b {
                touched.push(*oid);
            }
        }
        for t in touched {
            self.touch(t);
        }
        self.gone(id);
        self.fx.events.push(GalleryEvent::IdentityRetired {
            t_ms: now_ms,
            identity: id,
            last_seen_ms: ident.last_seen_ms,
        });
    }
}
