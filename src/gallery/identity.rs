//! An identity: one person across the site, as the gallery knows them — a few appearance
//! prototypes, the recent tracklets that formed it, and where and when it was last seen.
//!
//! The whole struct is serialisable: it is the unit the store persists (one record per
//! identity) and what [`super::GallerySnapshot`] is made of, so a restarted server holds exactly
//! the same state.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::vector::dot;
use super::{IdentityId, TimeMs, TrackletKey};

/// One appearance vector of an identity, from one tracklet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prototype {
    /// Index id; never reused for another vector.
    pub id: u64,
    /// Unit vector.
    pub vector: Vec<f32>,
    pub camera: String,
    pub tracklet: u64,
    /// End of the tracklet when the vector was taken.
    pub time_ms: TimeMs,
    pub quality: f32,
}

/// How a tracklet came to belong to its identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkKind {
    /// It opened the identity.
    New,
    /// Matched confidently.
    Linked,
    /// Attached to the best match, whose margin over the runner-up was small: provisional.
    Uncertain,
    /// Placed by an operator (split).
    Operator,
}

impl LinkKind {
    /// Confident links count for space–time checks and feed prototypes; uncertain ones do not.
    pub fn is_certain(self) -> bool {
        !matches!(self, LinkKind::Uncertain)
    }
}

/// A tracklet of the identity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sighting {
    pub camera: String,
    pub tracklet: u64,
    pub start_ms: TimeMs,
    pub end_ms: TimeMs,
    /// Latest descriptor (unit vector), used by splits and to rebuild prototypes. Empty while
    /// the identity holds a prototype of this tracklet with the same vector (no second copy):
    /// read it with [`Identity::descriptor_of`].
    pub descriptor: Vec<f32>,
    pub quality: f32,
    pub link: LinkKind,
    /// Similarity with the identity when linked (1 for the tracklet that opened it).
    pub similarity: f32,
}

impl Sighting {
    pub fn key(&self) -> TrackletKey {
        TrackletKey::new(&self.camera, self.tracklet)
    }
    pub fn is(&self, key: &TrackletKey) -> bool {
        self.tracklet == key.tracklet && self.camera == key.camera
    }
}

/// Where an identity was last seen in one camera.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CameraSeen {
    pub first_ms: TimeMs,
    pub last_tracklet: u64,
    /// Interval of the most recent tracklet in this camera.
    pub last_start_ms: TimeMs,
    pub last_end_ms: TimeMs,
    pub tracklets: u64,
}

/// Evidence that two identities are one person: distinct tracklets that matched both well.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    pub tracklets: BTreeSet<TrackletKey>,
    /// Lowest of the two similarities, best over the evidence tracklets.
    pub similarity: f32,
    pub last_ms: TimeMs,
    /// When each evidence tracklet was seen (start, end), to tell one person seen again from
    /// several look-alikes seen at once.
    #[serde(default)]
    pub spans: std::collections::BTreeMap<TrackletKey, (TimeMs, TimeMs)>,
}

impl Evidence {
    /// Two evidence tracklets alive at the same time in one camera (by more than `tol_ms`):
    /// they are two people who both look like both identities — look-alikes, not proof that
    /// the identities are one person.
    pub fn simultaneous(&self, tol_ms: TimeMs) -> Option<(&TrackletKey, &TrackletKey)> {
        let v: Vec<(&TrackletKey, &(TimeMs, TimeMs))> = self.spans.iter().collect();
        for (i, (ka, a)) in v.iter().enumerate() {
            for (kb, b) in &v[i + 1..] {
                if ka.camera == kb.camera && a.1.min(b.1) - a.0.max(b.0) > tol_ms {
                    return Some((ka, kb));
                }
            }
        }
        None
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Identity {
    pub id: IdentityId,
    pub created_ms: TimeMs,
    /// End of the latest confident sighting (retention counts from here).
    pub last_seen_ms: TimeMs,
    pub prototypes: Vec<Prototype>,
    pub cameras: BTreeMap<String, CameraSeen>,
    /// The most recent tracklets (capped by `gallery.tracklets_per_identity`), by start time.
    pub sightings: Vec<Sighting>,
    /// Tracklets ever confidently linked (the list above forgets old ones).
    pub tracklets_total: u64,
    /// Merge evidence with identities of a higher id (kept on the lower id of the pair).
    #[serde(default)]
    pub evidence: BTreeMap<IdentityId, Evidence>,
    /// Identities an operator split from this one: never merged automatically.
    #[serde(default)]
    pub cannot_link: BTreeSet<IdentityId>,
}

impl Identity {
    /// Sorts the sightings by start and keeps at most `cap` (at least one): the ones that ended
    /// earliest are forgotten first. Returns the forgotten tracklets.
    pub(crate) fn sort_and_cap_sightings(&mut self, cap: usize) -> Vec<TrackletKey> {
        self.sightings.sort_by(|a, b| {
            a.start_ms
                .cmp(&b.start_ms)
                .then_with(|| a.key().cmp(&b.key()))
        });
        let mut forgotten = Vec::new();
        while self.sightings.len() > cap.max(1) {
            let oldest = self
                .sightings
                .iter()
                .enumerate()
                .min_by(|a, b| {
                    a.1.end_ms
                        .cmp(&b.1.end_ms)
                        .then_with(|| a.1.key().cmp(&b.1.key()))
                })
                .map(|(i, _)| i)
                .unwrap_or(0);
            forgotten.push(self.sightings.remove(oldest).key());
        }
        forgotten
    }

    pub fn new(id: IdentityId, created_ms: TimeMs) -> Identity {
        Identity {
            id,
            created_ms,
            last_seen_ms: created_ms,
            prototypes: Vec::new(),
            cameras: BTreeMap::new(),
            sightings: Vec::new(),
            tracklets_total: 0,
            evidence: BTreeMap::new(),
            cannot_link: BTreeSet::new(),
        }
    }

    /// Best similarity of `q` with a prototype not taken from `except`, and that prototype.
    pub fn best_match(&self, q: &[f32], except: Option<&TrackletKey>) -> Option<(f32, &Prototype)> {
        self.prototypes
            .iter()
            .filter(|p| except.is_none_or(|k| !(p.tracklet == k.tracklet && p.camera == k.camera)))
            .map(|p| (dot(q, &p.vector), p))
            .max_by(|a, b| a.0.total_cmp(&b.0).then_with(|| b.1.id.cmp(&a.1.id)))
    }

    /// The latest descriptor of a remembered tracklet.
    pub fn descriptor_of(&self, key: &TrackletKey) -> Option<&[f32]> {
        let s = self.sighting(key)?;
        if !s.descriptor.is_empty() {
            return Some(&s.descriptor);
        }
        self.prototypes
            .iter()
            .find(|p| p.tracklet == key.tracklet && p.camera == key.camera)
            .map(|p| p.vector.as_slice())
    }

    /// Keeps one copy of each vector: a sighting whose prototype holds the same vector drops
    /// its own copy, and gets it back when that prototype is `dropped`.
    pub fn settle_descriptors(&mut self, dropped: Vec<Prototype>) {
        for p in dropped {
            if let Some(s) = self.sightings.iter_mut().find(|s| {
                s.tracklet == p.tracklet && s.camera == p.camera && s.descriptor.is_empty()
            }) {
                s.descriptor = p.vector;
            }
        }
        let protos = &self.prototypes;
        for s in &mut self.sightings {
            if !s.descriptor.is_empty()
                && protos.iter().any(|p| {
                    p.tracklet == s.tracklet && p.camera == s.camera && p.vector == s.descriptor
                })
            {
                s.descriptor = Vec::new();
            }
        }
    }

    /// Bytes held by this record (vectors, strings, list slots), computed from its sizes.
    pub fn memory_bytes(&self) -> usize {
        use std::mem::size_of;
        let protos: usize = self
            .prototypes
            .iter()
            .map(|p| p.vector.capacity() * 4 + p.camera.capacity())
            .sum::<usize>()
            + self.prototypes.capacity() * size_of::<Prototype>();
        let sightings: usize = self
            .sightings
            .iter()
            .map(|s| s.descriptor.capacity() * 4 + s.camera.capacity())
            .sum::<usize>()
            + self.sightings.capacity() * size_of::<Sighting>();
        // B-tree nodes: about one key + value per entry plus a third for node overhead
        let cameras: usize = self
            .cameras
            .keys()
            .map(|k| k.capacity() + (size_of::<String>() + size_of::<CameraSeen>()) * 4 / 3)
            .sum();
        let evidence: usize = self
            .evidence
            .values()
            .map(|e| {
                64 + e
                    .tracklets
                    .iter()
                    .map(|k| k.camera.capacity() + 48)
                    .sum::<usize>()
            })
            .sum();
        size_of::<Identity>()
            + protos
            + sightings
            + cameras
            + evidence
            + self.cannot_link.len() * 16
    }

    pub fn sighting(&self, key: &TrackletKey) -> Option<&Sighting> {
        self.sightings.iter().find(|s| s.is(key))
    }

    /// Confident sightings other than `key`'s.
    pub fn certain_sightings<'a>(
        &'a self,
        except: Option<&'a TrackletKey>,
    ) -> impl Iterator<Item = &'a Sighting> + 'a {
        self.sightings
            .iter()
            .filter(move |s| s.link.is_certain() && except.is_none_or(|k| !s.is(k)))
    }

    /// Records (or replaces) a sighting; returns the keys of sightings forgotten to stay within
    /// `cap` (the oldest by end time).
    pub fn record_sighting(&mut self, s: Sighting, cap: usize) -> Vec<TrackletKey> {
        let certain = s.link.is_certain();
        let is_new = match self
            .sightings
            .iter_mut()
            .find(|x| x.tracklet == s.tracklet && x.camera == s.camera)
        {
            Some(x) => {
                let was_certain = x.link.is_certain();
                *x = s.clone();
                !was_certain && certain
            }
            None => {
                self.sightings.push(s.clone());
                certain
            }
        };
        if is_new {
            self.tracklets_total += 1;
        }
        if certain {
            self.note_seen(&s.camera, s.tracklet, s.start_ms, s.end_ms);
        }
        self.sort_and_cap_sightings(cap)
    }

    /// Removes a sighting (re-decided elsewhere or split off).
    pub fn take_sighting(&mut self, key: &TrackletKey) -> Option<Sighting> {
        let i = self.sightings.iter().position(|s| s.is(key))?;
        Some(self.sightings.remove(i))
    }

    fn note_seen(&mut self, camera: &str, tracklet: u64, start: TimeMs, end: TimeMs) {
        self.last_seen_ms = self.last_seen_ms.max(end);
        self.created_ms = self.created_ms.min(start);
        let c = self
            .cameras
            .entry(camera.to_string())
            .or_insert(CameraSeen {
                first_ms: start,
                last_tracklet: tracklet,
                last_start_ms: start,
                last_end_ms: end,
                tracklets: 0,
            });
        c.first_ms = c.first_ms.min(start);
        if c.last_tracklet != tracklet || c.tracklets == 0 {
            c.tracklets += 1;
        }
        if end >= c.last_end_ms || c.last_tracklet == tracklet {
            c.last_tracklet = tracklet;
            c.last_start_ms = start;
            c.last_end_ms = end;
        }
    }

    /// Recomputes `cameras`, `last_seen_ms` from the remembered sightings (after a split).
    pub fn recompute_seen(&mut self) {
        self.cameras.clear();
        let sightings = std::mem::take(&mut self.sightings);
        if let Some(first) = sightings
            .iter()
            .filter(|s| s.link.is_certain())
            .map(|s| s.start_ms)
            .min()
        {
            self.created_ms = first;
            self.last_seen_ms = first;
        }
        for s in sightings.iter().filter(|s| s.link.is_certain()) {
            self.note_seen(&s.camera, s.tracklet, s.start_ms, s.end_ms);
        }
        self.sightings = sightings;
    }
}

/// Adds `p` to `protos` keeping at most `cap`: when over, drops first a prototype below
/// `min_quality` (an identity's first prototype is admitted whatever its quality), else the one
/// most similar to the others (ties: the older, then the lower id), so that the set covers
/// different views. Returns the prototypes dropped — possibly `p` itself when it adds nothing.
pub fn add_prototype(
    protos: &mut Vec<Prototype>,
    p: Prototype,
    cap: usize,
    min_quality: f32,
) -> Vec<Prototype> {
    protos.push(p);
    let mut dropped = Vec::new();
    while protos.len() > cap.max(1) {
        let weak = protos
            .iter()
            .enumerate()
            .filter(|(_, p)| p.quality < min_quality)
            .min_by(|a, b| {
                a.1.quality
                    .total_cmp(&b.1.quality)
                    .then_with(|| a.1.id.cmp(&b.1.id))
            })
            .map(|(i, _)| i);
        let victim = weak.unwrap_or_else(|| most_redundant(protos));
        dropped.push(protos.remove(victim));
    }
    dropped
}

/// Index of the prototype with the highest similarity to any other.
fn most_redundant(protos: &[Prototype]) -> usize {
    let mut best = (f32::NEG_INFINITY, 0usize);
    for (i, p) in protos.iter().enumerate() {
        let r = protos
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, q)| dot(&p.vector, &q.vector))
            .fold(f32::NEG_INFINITY, f32::max);
        let older = |a: &Prototype, b: &Prototype| (a.time_ms, a.id) < (b.time_ms, b.id);
        if r > best.0 || (r == best.0 && older(p, &protos[best.1])) {
            best = (r, i);
        }
    }
    best.1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proto(id: u64, v: [f32; 2], q: f32) -> Prototype {
        let n = (v[0] * v[0] + v[1] * v[1]).sqrt();
        Prototype {
            id,
            vector: vec![v[0] / n, v[1] / n],
            camera: "a".into(),
            tracklet: id,
            time_ms: id as i64,
            quality: q,
        }
    }

    #[test]
    fn prototypes_stay_diverse_and_weak_ones_go_first() {
        let mut ps = Vec::new();
        assert!(add_prototype(&mut ps, proto(1, [1.0, 0.0], 0.1), 3, 0.3).is_empty());
        add_prototype(&mut ps, proto(2, [0.0, 1.0], 0.9), 3, 0.3);
        add_prototype(&mut ps, proto(3, [1.0, 1.0], 0.9), 3, 0.3);
        // full: the low-quality first prototype goes first
        let ids = |d: Vec<Prototype>| d.into_iter().map(|p| p.id).collect::<Vec<_>>();
        assert_eq!(
            ids(add_prototype(&mut ps, proto(4, [1.0, 0.05], 0.9), 3, 0.3)),
            vec![1]
        );
        // a near-duplicate of 4: one of the two (the older) is dropped, the spread survives
        let d = add_prototype(&mut ps, proto(5, [1.0, 0.06], 0.9), 3, 0.3);
        assert_eq!(ids(d), vec![4]);
        let ids: Vec<u64> = ps.iter().map(|p| p.id).collect();
        assert_eq!(ids, vec![2, 3, 5]);
    }

    #[test]
    fn sightings_are_capped_and_camera_state_kept() {
        let mut id = Identity::new(IdentityId(1), 100);
        for t in 0..5u64 {
            let forgotten = id.record_sighting(
                Sighting {
                    camera: if t % 2 == 0 { "a".into() } else { "b".into() },
                    tracklet: t,
                    start_ms: 100 * t as i64,
                    end_ms: 100 * t as i64 + 50,
                    descriptor: vec![1.0, 0.0],
                    quality: 1.0,
                    link: LinkKind::Linked,
                    similarity: 0.9,
                },
                3,
            );
            if t >= 3 {
                assert_eq!(forgotten.len(), 1);
            }
        }
        assert_eq!(id.sightings.len(), 3);
        assert_eq!(id.tracklets_total, 5);
        assert_eq!(id.last_seen_ms, 450);
        assert_eq!(id.cameras["a"].last_tracklet, 4);
        assert_eq!(id.cameras["a"].tracklets, 3);
        assert_eq!(id.cameras["b"].last_end_ms, 350);
    }
}
