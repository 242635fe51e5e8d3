//! Getting the gallery back after a restart.
//!
//! Two sources, one result — a [`Linker`] that decides exactly like the one that stopped:
//!
//! - [`GallerySnapshot`]: the exact state (identities with their prototype vectors, sightings,
//!   per-camera state, merge evidence, operator splits, id counters). Serialisable; the store
//!   can keep it whole, or keep the [`Identity`] records one by one (each observation reports the
//!   identities it changed) and assemble the snapshot on start. [`Linker::restore`].
//! - The store's tracklets with their descriptors and identities ([`StoredTracklet`]), when no
//!   snapshot exists: prototypes are re-derived by replaying the tracklets in order through the
//!   same prototype rules. [`Linker::rebuild`]. Merge evidence is not kept there, and a growing
//!   tracklet whose intermediate descriptors once displaced another prototype can leave a
//!   slightly different prototype set: prefer snapshots.
//!
//! Either way the index is reloaded from its dump ([`Linker::dump_index`]) when one is given and
//! readable, then reconciled with the prototypes by id and vector — entries the dump lacks are
//! inserted, stale ones removed — so an old dump only costs the difference; without a usable
//! dump the index is built from the prototypes. An HNSW graph reloaded from a dump answers
//! exactly like the dumped one; a rebuilt graph may differ in rare near-ties of the approximate
//! search (candidates are always re-scored exactly).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::auto::{AutoIndex, IndexSettings, dump_index};
use super::identity::{Identity, LinkKind};
use super::index::{GalleryIndex, IndexKind};
use super::linker::Linker;
use super::vector::unit;
use super::{GalleryError, IdentityId, Observation, TimeMs};
use crate::config::{GallerySettings, IndexChoice, LinkingSettings};

pub const SNAPSHOT_FORMAT: u32 = 1;

/// The gallery's complete state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GallerySnapshot {
    pub format: u32,
    pub dim: usize,
    /// Next identity id (ids are never reused: after retirements this is above every live id).
    pub next_identity: u64,
    pub next_prototype: u64,
    pub identities: Vec<Identity>,
}

/// A stored tracklet and the identity it belongs to (for [`Linker::rebuild`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredTracklet {
    pub identity: IdentityId,
    pub camera: String,
    pub tracklet: u64,
    pub start_ms: TimeMs,
    pub end_ms: TimeMs,
    pub quality: f32,
    pub descriptor: Vec<f32>,
    pub link: LinkKind,
    pub similarity: f32,
}

/// How the index came back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "how", rename_all = "snake_case")]
pub enum IndexRestore {
    /// Loaded from the dump; `inserted`/`removed` entries reconciled it with the prototypes.
    Reloaded {
        kept: usize,
        inserted: usize,
        removed: usize,
    },
    /// Built from the prototypes (`reason`: why the dump was not used, if one was given).
    Rebuilt { reason: Option<String> },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RestoreReport {
    pub identities: usize,
    pub prototypes: usize,
    pub index_kind: IndexKind,
    pub index: IndexRestore,
    pub seconds: f64,
}

impl Linker {
    /// The complete state (see [`GallerySnapshot`]).
    pub fn snapshot(&self) -> GallerySnapshot {
        GallerySnapshot {
            format: SNAPSHOT_FORMAT,
            dim: self.dim,
            next_identity: self.next_identity,
            next_prototype: self.next_prototype,
            identities: self.identities.values().cloned().collect(),
        }
    }

    /// Writes the index to `dir` atomically (a crash mid-dump leaves the previous dump).
    pub fn dump_index(&self, dir: &Path) -> Result<(), GalleryError> {
        dump_index(&self.index, dir)
    }

    /// A gallery in the state of `snapshot`, with the index from `index_dump` when usable.
    pub fn restore(
        gallery: &GallerySettings,
        linking: &LinkingSettings,
        snapshot: GallerySnapshot,
        index_dump: Option<&Path>,
    ) -> Result<(Linker, RestoreReport), GalleryError> {
        let t = Instant::now();
        if snapshot.format != SNAPSHOT_FORMAT {
            return Err(GalleryError::Snapshot(format!(
                "format {} (this build reads {SNAPSHOT_FORMAT})",
                snapshot.format
            )));
        }
        let dim = snapshot.dim;
        let mut x = Linker::new(gallery, linking, dim)?;
        let mut next_identity = snapshot.next_identity.max(1);
        let mut next_prototype = snapshot.next_prototype.max(1);
        for mut ident in snapshot.identities {
            let id = ident.id;
            if x.identities.contains_key(&id) {
                return Err(GalleryError::Snapshot(format!(
                    "identity {id} appears twice"
                )));
            }
            if ident.prototypes.is_empty() {
                return Err(GalleryError::Snapshot(format!(
                    "identity {id} has no prototype"
                )));
            }
            for p in &mut ident.prototypes {
                p.vector = unit(&p.vector, dim).map_err(|e| {
                    GalleryError::Snapshot(format!("identity {id}, prototype {}: {e}", p.id))
                })?;
                if x.owner.insert(p.id, id).is_some() {
                    return Err(GalleryError::Snapshot(format!(
                        "prototype {} appears twice",
                        p.id
                    )));
                }
                next_prototype = next_prototype.max(p.id + 1);
            }
            for s in &mut ident.sightings {
                if !s.descriptor.is_empty() {
                    s.descriptor = unit(&s.descriptor, dim).map_err(|e| {
                        GalleryError::Snapshot(format!("identity {id}, tracklet {}: {e}", s.key()))
                    })?;
                }
                if let Some(other) = x.tracklets.insert(s.key(), id) {
                    return Err(GalleryError::Snapshot(format!(
                        "tracklet {} belongs to identities {other} and {id}",
                        s.key()
                    )));
                }
            }
            next_identity = next_identity.max(id.0 + 1);
            x.identities.insert(id, ident);
        }
        x.next_identity = next_identity;
        x.next_prototype = next_prototype;
        let index = x.install_index(index_dump)?;
        let report = x.report(index, t);
        Ok((x, report))
    }

    /// A gallery re-derived from the store's tracklets (see the module docs). `next_identity`:
    /// one above the largest identity id ever used (retired ones included); `cannot_link`: the
    /// pairs operators split.
    pub fn rebuild(
        gallery: &GallerySettings,
        linking: &LinkingSettings,
        dim: usize,
        mut tracklets: Vec<StoredTracklet>,
        next_identity: u64,
        cannot_link: &[(IdentityId, IdentityId)],
        index_dump: Option<&Path>,
    ) -> Result<(Linker, RestoreReport), GalleryError> {
        let t = Instant::now();
        // replay against a cheap exact index; the real one is installed at the end
        let replay = GallerySettings {
            index: IndexChoice::Exact,
            ..gallery.clone()
        };
        let mut x = Linker::new(&replay, linking, dim)?;
        tracklets.sort_by(|a, b| {
            (a.end_ms, a.start_ms, a.identity, &a.camera, a.tracklet)
                .cmp(&(b.end_ms, b.start_ms, b.identity, &b.camera, b.tracklet))
        });
        let mut seen = HashSet::new();
        for st in tracklets {
            let obs = Observation {
                camera: st.camera.clone(),
                tracklet: st.tracklet,
                start_ms: st.start_ms,
                end_ms: st.end_ms,
                descriptor: st.descriptor,
                quality: st.quality,
            };
            if !seen.insert(obs.key()) {
                return Err(GalleryError::Snapshot(format!(
                    "tracklet {} listed twice",
                    obs.key()
                )));
            }
            let q = unit(&obs.descriptor, dim)
                .map_err(|e| GalleryError::Snapshot(format!("tracklet {}: {e}", obs.key())))?;
            x.identities
                .entry(st.identity)
                .or_insert_with(|| Identity::new(st.identity, st.start_ms));
            x.attach(&obs, &q, st.identity, st.link, st.similarity)?;
        }
        for (a, b) in cannot_link {
            if !(x.identities.contains_key(a) && x.identities.contains_key(b)) {
                continue;
            }
            for (p, q) in [(a, b), (b, a)] {
                if let Some(i) = x.identities.get_mut(p) {
                    i.cannot_link.insert(*q);
                }
            }
        }
        // an identity made only of uncertain attachments has no appearance of its own
        let empty: Vec<IdentityId> = x
            .identities
            .values()
            .filter(|i| i.prototypes.is_empty())
            .map(|i| i.id)
            .collect();
        for id in empty {
            if let Some(i) = x.identities.remove(&id) {
                for s in &i.sightings {
                    x.tracklets.remove(&s.key());
                }
            }
        }
        x.next_identity = x
            .next_identity
            .max(next_identity)
            .max(x.identities.keys().last().map_or(1, |id| id.0 + 1));
        x.gallery = gallery.clone();
        x.index = AutoIndex::new(dim, IndexSettings::from(gallery));
        x.begin();
        let index = x.install_index(index_dump)?;
        let report = x.report(index, t);
        Ok((x, report))
    }

    fn report(&self, index: IndexRestore, t: Instant) -> RestoreReport {
        RestoreReport {
            identities: self.identities.len(),
            prototypes: self.owner.len(),
            index_kind: self.index.kind(),
            index,
            seconds: t.elapsed().as_secs_f64(),
        }
    }

    /// Loads and reconciles the dump, or builds the index from the prototypes.
    fn install_index(&mut self, index_dump: Option<&Path>) -> Result<IndexRestore, GalleryError> {
        let settings = IndexSettings::from(&self.gallery);
        let mut protos: Vec<(u64, &[f32])> = self
            .identities
            .values()
            .flat_map(|i| i.prototypes.iter().map(|p| (p.id, p.vector.as_slice())))
            .collect();
        protos.sort_by_key(|p| p.0);
        let mut reason = None;
        if let Some(dir) = index_dump {
            match AutoIndex::load(dir, settings) {
                Ok(idx) if idx.dim() == self.dim => {
                    let (index, kept, inserted, removed) = reconcile(idx, &protos)?;
                    self.index = index;
                    return Ok(IndexRestore::Reloaded {
                        kept,
                        inserted,
                        removed,
                    });
                }
                Ok(idx) => {
                    reason = Some(format!(
                        "the dump holds {}-d vectors, the gallery {}-d",
                        idx.dim(),
                        self.dim
                    ));
                }
                Err(e) => reason = Some(e.to_string()),
            }
            if let Some(r) = &reason {
                tracing::warn!("gallery index dump not used, rebuilding: {r}");
            }
        }
        let entries = protos.iter().map(|(id, v)| (*id, v.to_vec())).collect();
        self.index = AutoIndex::build(self.dim, settings, entries)?;
        Ok(IndexRestore::Rebuilt { reason })
    }
}

/// Makes `index` hold exactly `protos`: same ids with the same vectors.
fn reconcile(
    mut index: AutoIndex,
    protos: &[(u64, &[f32])],
) -> Result<(AutoIndex, usize, usize, usize), GalleryError> {
    let live: HashMap<u64, Vec<f32>> = index.live_vectors().into_iter().collect();
    let wanted: BTreeMap<u64, &[f32]> = protos.iter().copied().collect();
    let same = |a: &[f32], b: &[f32]| {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() <= 1e-6)
    };
    let (mut kept, mut inserted, mut removed) = (0, 0, 0);
    let mut stale: Vec<u64> = live
        .keys()
        .filter(|id| !wanted.contains_key(id))
        .copied()
        .collect();
    stale.sort_unstable();
    for id in stale {
        index.remove(id);
        removed += 1;
    }
    for (id, v) in wanted {
        match live.get(&id) {
            Some(have) if same(have, v) => kept += 1,
            Some(_) => {
                index.remove(id);
                index.insert(id, v)?;
                removed += 1;
                inserted += 1;
            }
            None => {
                index.insert(id, v)?;
                inserted += 1;
            }
        }
    }
    Ok((index, kept, inserted, removed))
}
