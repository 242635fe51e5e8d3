//! The index the gallery uses: exact while small, HNSW once past `gallery.hnsw_above`
//! prototypes (or always one of them, by `gallery.index`).
//!
//! The switch happens inside the insert that crosses the threshold and builds the graph from the
//! exact index's vectors on the spot (about 45 s at 50k × 512 on 2 cores: the one-off price of
//! never missing a match while the site is small). It switches back to exact when removals
//! bring it under half the threshold, so it does not flap around the limit.

use std::path::Path;
use std::time::Instant;

use super::GalleryError;
use super::dumpfile::{self, Manifest};
use super::exact::ExactIndex;
use super::hnsw::{HnswIndex, HnswParams};
use super::index::{Filter, GalleryIndex, Hit, IndexKind};
use crate::config::{GallerySettings, IndexChoice};

/// What [`AutoIndex`] needs from `[gallery]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IndexSettings {
    pub choice: IndexChoice,
    pub hnsw_above: usize,
    pub hnsw: HnswParams,
}

impl From<&GallerySettings> for IndexSettings {
    fn from(g: &GallerySettings) -> Self {
        IndexSettings {
            choice: g.index,
            hnsw_above: g.hnsw_above,
            hnsw: HnswParams {
                m: g.hnsw_m,
                ef_construction: g.hnsw_ef_construction,
                ef_search: g.hnsw_ef_search,
                recent: g.recent_exact,
                rebuild_ratio: g.rebuild_tombstone_ratio,
            },
        }
    }
}

impl Default for IndexSettings {
    fn default() -> Self {
        IndexSettings::from(&GallerySettings::default())
    }
}

enum Inner {
    Exact(ExactIndex),
    Hnsw(Box<HnswIndex>),
}

pub struct AutoIndex {
    inner: Inner,
    settings: IndexSettings,
    dim: usize,
}

impl std::fmt::Debug for AutoIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AutoIndex")
            .field("kind", &self.kind())
            .field("live", &self.len())
            .finish()
    }
}

impl AutoIndex {
    pub fn new(dim: usize, settings: IndexSettings) -> AutoIndex {
        let inner = match settings.choice {
            IndexChoice::Hnsw => Inner::Hnsw(Box::new(HnswIndex::new(dim, settings.hnsw))),
            _ => Inner::Exact(ExactIndex::new(dim, settings.hnsw.rebuild_ratio)),
        };
        AutoIndex {
            inner,
            settings,
            dim,
        }
    }

    /// Builds from `(id, vector)` entries, choosing the kind by their number.
    pub fn build(
        dim: usize,
        settings: IndexSettings,
        entries: Vec<(u64, Vec<f32>)>,
    ) -> Result<AutoIndex, GalleryError> {
        let hnsw = match settings.choice {
            IndexChoice::Hnsw => true,
            IndexChoice::Exact => false,
            IndexChoice::Auto => entries.len() > settings.hnsw_above,
        };
        let inner = if hnsw {
            Inner::Hnsw(Box::new(HnswIndex::build(dim, settings.hnsw, entries)?))
        } else {
            let mut x = ExactIndex::new(dim, settings.hnsw.rebuild_ratio);
            for (id, v) in entries {
                x.insert(id, &v)?;
            }
            Inner::Exact(x)
        };
        Ok(AutoIndex {
            inner,
            settings,
            dim,
        })
    }

    /// Loads a dump written by [`GalleryIndex::dump`] (or the `.old` one left by a crash during
    /// a dump), converting it when `settings` now ask for the other kind.
    pub fn load(dir: &Path, settings: IndexSettings) -> Result<AutoIndex, GalleryError> {
        let dir = dumpfile::existing_dump(dir)
            .ok_or_else(|| GalleryError::dump(dir, "no index dump here"))?;
        let m = Manifest::read_verified(&dir)?;
        let inner = match m.kind {
            IndexKind::Exact => Inner::Exact(ExactIndex::load(&dir, settings.hnsw.rebuild_ratio)?),
            IndexKind::Hnsw => Inner::Hnsw(Box::new(HnswIndex::load(&dir, settings.hnsw)?)),
        };
        let mut x = AutoIndex {
            inner,
            settings,
            dim: m.dim,
        };
        let want = match settings.choice {
            IndexChoice::Exact => IndexKind::Exact,
            IndexChoice::Hnsw => IndexKind::Hnsw,
            IndexChoice::Auto => x.kind(),
        };
        if want != x.kind() {
            x.convert(want)?;
        }
        Ok(x)
    }

    pub fn settings(&self) -> &IndexSettings {
        &self.settings
    }

    fn as_dyn(&self) -> &dyn GalleryIndex {
        match &self.inner {
            Inner::Exact(x) => x,
            Inner::Hnsw(x) => x.as_ref(),
        }
    }

    fn as_dyn_mut(&mut self) -> &mut dyn GalleryIndex {
        match &mut self.inner {
            Inner::Exact(x) => x,
            Inner::Hnsw(x) => x.as_mut(),
        }
    }

    fn convert(&mut self, to: IndexKind) -> Result<(), GalleryError> {
        let t = Instant::now();
        let entries = self.live_vectors();
        let n = entries.len();
        self.inner = match to {
            IndexKind::Hnsw => Inner::Hnsw(Box::new(HnswIndex::build(
                self.dim,
                self.settings.hnsw,
                entries,
            )?)),
            IndexKind::Exact => {
                let mut x = ExactIndex::new(self.dim, self.settings.hnsw.rebuild_ratio);
                for (id, v) in entries {
                    x.insert(id, &v)?;
                }
                Inner::Exact(x)
            }
        };
        tracing::info!(
            entries = n,
            seconds = t.elapsed().as_secs_f64(),
            "gallery index is now {to}"
        );
        Ok(())
    }
}

impl GalleryIndex for AutoIndex {
    fn kind(&self) -> IndexKind {
        self.as_dyn().kind()
    }
    fn dim(&self) -> usize {
        self.dim
    }

    fn insert(&mut self, id: u64, vector: &[f32]) -> Result<(), GalleryError> {
        if self.settings.choice == IndexChoice::Auto
            && self.kind() == IndexKind::Exact
            && self.len() >= self.settings.hnsw_above
        {
            self.convert(IndexKind::Hnsw)?;
        }
        self.as_dyn_mut().insert(id, vector)
    }

    fn remove(&mut self, id: u64) -> bool {
        let removed = self.as_dyn_mut().remove(id);
        if removed
            && self.settings.choice == IndexChoice::Auto
            && self.kind() == IndexKind::Hnsw
            && self.len() < self.settings.hnsw_above / 2
        {
            // building an exact index from live vectors cannot fail on vectors it already held
            if let Err(e) = self.convert(IndexKind::Exact) {
                tracing::warn!("gallery index stays HNSW: {e}");
            }
        }
        removed
    }

    fn contains(&self, id: u64) -> bool {
        self.as_dyn().contains(id)
    }
    fn search(
        &self,
        query: &[f32],
        k: usize,
        filter: Option<Filter<'_>>,
    ) -> Result<Vec<Hit>, GalleryError> {
        self.as_dyn().search(query, k, filter)
    }
    fn scores(&self, query: &[f32]) -> Result<Option<Vec<Hit>>, GalleryError> {
        self.as_dyn().scores(query)
    }
    fn len(&self) -> usize {
        self.as_dyn().len()
    }
    fn stored(&self) -> usize {
        self.as_dyn().stored()
    }
    fn memory_bytes(&self) -> usize {
        self.as_dyn().memory_bytes()
    }
    fn rebuild(&mut self) {
        self.as_dyn_mut().rebuild()
    }
    fn live_vectors(&self) -> Vec<(u64, Vec<f32>)> {
        self.as_dyn().live_vectors()
    }
    fn dump(&self, dir: &Path) -> Result<(), GalleryError> {
        self.as_dyn().dump(dir)
    }
}

/// Dumps `index` into `dir` atomically (see [`dumpfile::replace_dir`]).
pub fn dump_index(index: &dyn GalleryIndex, dir: &Path) -> Result<(), GalleryError> {
    dumpfile::replace_dir(dir, |tmp| index.dump(tmp))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gallery::testdata::clustered;

    #[test]
    fn switches_to_hnsw_past_the_threshold_and_back_under_half() {
        let dim = 16;
        let v = clustered(300, dim, 10, 0.3, 5);
        let settings = IndexSettings {
            choice: IndexChoice::Auto,
            hnsw_above: 100,
            hnsw: HnswParams {
                rebuild_ratio: 0.9,
                ..HnswParams::default()
            },
        };
        let mut x = AutoIndex::new(dim, settings);
        for i in 0..100 {
            x.insert(i, &v[i as usize * dim..(i as usize + 1) * dim])
                .unwrap();
        }
        assert_eq!(x.kind(), IndexKind::Exact);
        x.insert(100, &v[100 * dim..101 * dim]).unwrap();
        assert_eq!(x.kind(), IndexKind::Hnsw);
        assert_eq!(x.len(), 101);
        let r = x.search(&v[5 * dim..6 * dim], 1, None).unwrap();
        assert_eq!(r[0].id, 5);
        for i in 0..60 {
            x.remove(i);
        }
        assert_eq!(x.kind(), IndexKind::Exact);
        assert_eq!(x.len(), 41);
        assert!(
            x.search(&v[..dim], 41, None)
                .unwrap()
                .iter()
                .all(|h| h.id >= 60)
        );
        // dump → load round trip keeps the kind and results
        let d = tempfile::tempdir().unwrap();
        dump_index(&x, &d.path().join("idx")).unwrap();
        let y = AutoIndex::load(&d.path().join("idx"), settings).unwrap();
        assert_eq!(y.kind(), IndexKind::Exact);
        assert_eq!(
            y.search(&v[70 * dim..71 * dim], 5, None).unwrap(),
            x.search(&v[70 * dim..71 * dim], 5, None).unwrap()
        );
        // settings that force HNSW convert the exact dump on load
        let forced = IndexSettings {
            choice: IndexChoice::Hnsw,
            ..settings
        };
        let z = AutoIndex::load(&d.path().join("idx"), forced).unwrap();
        assert_eq!((z.kind(), z.len()), (IndexKind::Hnsw, 41));
    }
}
