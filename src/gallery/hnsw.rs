//! Approximate search with hnsw_rs: `Hnsw<f32, DistDot>` on unit vectors (the `simdeez_f`
//! feature picks AVX2 at run time).
//!
//! hnsw_rs cannot delete, so removal is a tombstone that `search_filter` skips, and the graph is
//! rebuilt from its live points once tombstones pass the configured ratio (at 50% deleted a
//! filtered query was 7× slower: 9.7 ms against 1.36 ms p50, 100k × 512 clustered vectors on a
//! 2-core x86-64, measured when hnsw_rs was chosen). Graph node ids are our own dense numbers
//! (`data id`), mapped to the caller's ids, so a rebuild renumbers freely.
//!
//! Recently inserted points are also kept in a small exact index searched beside the graph:
//! hnsw_rs missed late-inserted outliers in a search for themselves 6–12% of the time, and a
//! person seen a minute ago is exactly who the linker must not miss.
//!
//! **Reloading a dump.** `HnswIo::load_hnsw*` returns an `Hnsw<'b>` that borrows the `HnswIo`
//! (it may hold the memory map of the data file). Rather than rebuilding the graph on every start
//! (94 s at 100k × 512 on 2 cores), [`Graph`] owns both: the `HnswIo` lives in a heap box whose
//! address never changes, the graph is dropped before it, and nothing else can reach it. That is
//! the only `unsafe` here. Loading uses `load_hnsw_with_dist` (no memory map: the points own
//! their vectors, and a later dump may overwrite the files), after the dump's checksums are
//! verified, because hnsw_rs asserts (panics) on malformed files; a panic is still caught.

use std::collections::{HashMap, VecDeque};
use std::mem::ManuallyDrop;
use std::path::Path;

use hnsw_rs::prelude::{AnnT, DistDot, FilterT, Hnsw, HnswIo};
use serde::{Deserialize, Serialize};

use super::GalleryError;
use super::dumpfile::{self, Manifest};
use super::exact::ExactIndex;
use super::index::{Filter, GalleryIndex, Hit, IndexKind, merge_hits};
use super::vector::unit;

/// hnsw_rs's own limit on layers.
const MAX_LAYERS: usize = 16;
/// Below this many points a (re)build inserts serially (threads cost more than they save).
const PARALLEL_BUILD: usize = 2048;
const BASENAME: &str = "graph";
const IDS: &str = "ids.bin";
const RECENT: &str = "recent.bin";

/// HNSW parameters (see `[gallery]` in docs/configuration.md).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct HnswParams {
    /// Links per node.
    pub m: usize,
    pub ef_construction: usize,
    pub ef_search: usize,
    /// Most recent inserts also searched exactly (0 = off).
    pub recent: usize,
    /// Tombstone fraction that triggers a rebuild.
    pub rebuild_ratio: f64,
}

impl Default for HnswParams {
    fn default() -> Self {
        HnswParams {
            m: 16,
            ef_construction: 200,
            ef_search: 64,
            recent: 4096,
            rebuild_ratio: 0.25,
        }
    }
}

/// An hnsw_rs graph and, when it was reloaded from a dump, the `HnswIo` it borrows.
struct Graph {
    hnsw: ManuallyDrop<Hnsw<'static, f32, DistDot>>,
    /// `Box::into_raw` of the loader, freed in `Drop` after `hnsw`; null for a graph built here.
    io: *mut HnswIo,
}

// SAFETY: `io` is an owned `Box<HnswIo>` in raw form (HnswIo holds paths, options, an optional
// read-only memory map and an `Arc<AtomicUsize>`: all `Send + Sync`); it is only read through
// the graph, which hnsw_rs shares across its own rayon threads.
unsafe impl Send for Graph {}
unsafe impl Sync for Graph {}

impl Graph {
    fn empty(params: &HnswParams, capacity: usize) -> Graph {
        let hnsw = Hnsw::<f32, DistDot>::new(
            params.m,
            capacity.max(1024),
            MAX_LAYERS,
            params.ef_construction,
            DistDot,
        );
        Graph {
            hnsw: ManuallyDrop::new(hnsw),
            io: std::ptr::null_mut(),
        }
    }

    fn load(dir: &Path) -> Result<Graph, GalleryError> {
        let io = Box::into_raw(Box::new(HnswIo::new(dir, BASENAME)));
        // SAFETY: `io` points to a live HnswIo that stays at this address, unmoved and unaliased
        // by anything but the graph, until `Drop` frees it after dropping the graph (or below,
        // when loading fails and no graph exists). The unbounded lifetime of `&*io` is therefore
        // valid for as long as the returned graph can be used.
        let loader: &'static HnswIo = unsafe { &*io };
        let loaded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            loader.load_hnsw_with_dist::<f32, DistDot>(DistDot)
        }));
        match loaded {
            Ok(Ok(mut hnsw)) => {
                // `load_hnsw*` turns these on; a graph built here has them off, and inserts
                // after a reload must behave like inserts before it.
                hnsw.set_extend_candidates(false);
                hnsw.set_keeping_pruned(false);
                Ok(Graph {
                    hnsw: ManuallyDrop::new(hnsw),
                    io,
                })
            }
            other => {
                // SAFETY: no graph borrows the loader on this path.
                drop(unsafe { Box::from_raw(io) });
                let why = match other {
                    Ok(Err(e)) => e.to_string(),
                    _ => "hnsw_rs panicked while reading it".into(),
                };
                Err(GalleryError::dump(
                    dir,
                    format!("cannot reload the HNSW graph: {why}"),
                ))
            }
        }
    }

    fn get(&self) -> &Hnsw<'static, f32, DistDot> {
        &self.hnsw
    }
}

impl Drop for Graph {
    fn drop(&mut self) {
        // SAFETY: the graph is dropped exactly once, here, before the loader it may borrow.
        unsafe { ManuallyDrop::drop(&mut self.hnsw) };
        if !self.io.is_null() {
            // SAFETY: `io` came from `Box::into_raw` in `load` and is freed only here.
            drop(unsafe { Box::from_raw(self.io) });
        }
    }
}

pub struct HnswIndex {
    params: HnswParams,
    dim: usize,
    graph: Graph,
    /// Graph data id → caller's id.
    ext: Vec<u64>,
    /// Graph data id → not deleted.
    live: Vec<bool>,
    /// Caller's id → graph data id, live entries only.
    by_ext: HashMap<u64, usize>,
    dead: usize,
    /// Copies of the most recent inserts, searched exactly beside the graph.
    recent: ExactIndex,
    recent_order: VecDeque<u64>,
    rebuilds: u64,
}

impl std::fmt::Debug for HnswIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HnswIndex")
            .field("params", &self.params)
            .field("dim", &self.dim)
            .field("live", &self.by_ext.len())
            .field("stored", &self.ext.len())
            .finish()
    }
}

impl HnswIndex {
    pub fn new(dim: usize, params: HnswParams) -> HnswIndex {
        HnswIndex {
            params,
            dim,
            graph: Graph::empty(&params, 1024),
            ext: Vec::new(),
            live: Vec::new(),
            by_ext: HashMap::new(),
            dead: 0,
            recent: ExactIndex::new(dim, 0.5).with_threads(1),
            recent_order: VecDeque::new(),
            rebuilds: 0,
        }
    }

    /// Builds an index from `(id, vector)` entries in one go (in parallel when large). The last
    /// `params.recent` entries also go into the exact side index.
    pub fn build(
        dim: usize,
        params: HnswParams,
        entries: Vec<(u64, Vec<f32>)>,
    ) -> Result<HnswIndex, GalleryError> {
        let mut x = HnswIndex::new(dim, params);
        let mut seen = std::collections::HashSet::with_capacity(entries.len());
        let mut unit_entries = Vec::with_capacity(entries.len());
        for (id, v) in entries {
            if !seen.insert(id) {
                return Err(GalleryError::DuplicateId(id));
            }
            unit_entries.push((id, unit(&v, dim)?));
        }
        x.graph = Graph::empty(&params, unit_entries.len());
        x.fill_graph(&unit_entries);
        let from = unit_entries.len().saturating_sub(params.recent);
        for (id, v) in &unit_entries[from..] {
            x.remember_recent(*id, v)?;
        }
        Ok(x)
    }

    pub fn params(&self) -> &HnswParams {
        &self.params
    }

    /// Sets the search candidate list (ef) from now on.
    pub fn set_ef_search(&mut self, ef: usize) {
        self.params.ef_search = ef.max(1);
    }

    /// How many times the graph was rebuilt to drop tombstones.
    pub fn rebuilds(&self) -> u64 {
        self.rebuilds
    }

    /// Inserts unit vectors with fresh data ids after the current ones.
    fn fill_graph(&mut self, entries: &[(u64, Vec<f32>)]) {
        let base = self.ext.len();
        for (i, (id, _)) in entries.iter().enumerate() {
            self.ext.push(*id);
            self.live.push(true);
            self.by_ext.insert(*id, base + i);
        }
        let g = self.graph.get();
        if entries.len() >= PARALLEL_BUILD {
            let batch: Vec<(&[f32], usize)> = entries
                .iter()
                .enumerate()
                .map(|(i, (_, v))| (v.as_slice(), base + i))
                .collect();
            g.parallel_insert_slice(&batch);
        } else {
            for (i, (_, v)) in entries.iter().enumerate() {
                g.insert_slice((v, base + i));
            }
        }
    }

    fn remember_recent(&mut self, id: u64, v: &[f32]) -> Result<(), GalleryError> {
        if self.params.recent == 0 {
            return Ok(());
        }
        self.recent.insert(id, v)?;
        self.recent_order.push_back(id);
        while self.recent_order.len() > self.params.recent {
            if let Some(old) = self.recent_order.pop_front() {
                self.recent.remove(old);
            }
        }
        Ok(())
    }

    fn graph_search(&self, q: &[f32], k: usize, filter: Option<Filter<'_>>) -> Vec<Hit> {
        if self.by_ext.is_empty() || k == 0 {
            return Vec::new();
        }
        let g = self.graph.get();
        let keep = |d: &usize| {
            self.live.get(*d).copied().unwrap_or(false) && filter.is_none_or(|f| f(self.ext[*d]))
        };
        let mut ef = self.params.ef_search.max(k);
        loop {
            // ask for ef results: hnsw_rs filters only its final candidate list, so asking for
            // k alone would return fewer than k live hits
            let found = if self.dead == 0 && filter.is_none() {
                g.search(q, ef, ef)
            } else {
                g.search_filter(q, ef, ef, Some(&keep as &dyn FilterT))
            };
            let hits: Vec<Hit> = found
                .into_iter()
                .filter(|n| keep(&n.d_id))
                .map(|n| Hit {
                    id: self.ext[n.d_id],
                    similarity: 1.0 - n.distance,
                })
                .collect();
            // too few live hits while more exist (many tombstones or a selective filter):
            // widen the search, up to scanning everything
            if hits.len() >= k.min(self.by_ext.len()) || ef >= self.ext.len() {
                let mut hits = hits;
                hits.sort_by(super::index::better);
                hits.truncate(k);
                return hits;
            }
            ef = (ef * 4).min(self.ext.len());
        }
    }

    /// Reads a dump written by [`GalleryIndex::dump`]; `ef_search`, `recent` and
    /// `rebuild_ratio` come from `params` (they are not part of the graph), `m` and
    /// `ef_construction` from the dump.
    pub fn load(dir: &Path, params: HnswParams) -> Result<HnswIndex, GalleryError> {
        let m = Manifest::read_verified(dir)?;
        if m.kind != IndexKind::Hnsw {
            return Err(GalleryError::dump(
                dir,
                format!("holds a {} index, not hnsw", m.kind),
            ));
        }
        let saved: HnswParams = serde_json::from_value(m.params.clone())
            .map_err(|e| GalleryError::dump(dir, format!("bad parameters: {e}")))?;
        let params = HnswParams {
            m: saved.m,
            ef_construction: saved.ef_construction,
            ..params
        };
        let (dim, ext, flags) = dumpfile::read_vectors(&dir.join(IDS))?;
        if dim != 1 {
            return Err(GalleryError::dump(dir.join(IDS), "not an id file"));
        }
        if m.dim == 0 {
            return Err(GalleryError::dump(dir, "dimension 0"));
        }
        let live: Vec<bool> = flags.iter().map(|f| *f != 0.0).collect();
        let graph = if ext.is_empty() {
            Graph::empty(&params, 1024)
        } else {
            let g = Graph::load(dir)?;
            if g.get().get_nb_point() != ext.len() {
                return Err(GalleryError::dump(
                    dir,
                    format!(
                        "graph has {} points, id file {}",
                        g.get().get_nb_point(),
                        ext.len()
                    ),
                ));
            }
            g
        };
        let (rdim, rids, rdata) = dumpfile::read_vectors(&dir.join(RECENT))?;
        let mut x = HnswIndex {
            params,
            dim: m.dim,
            graph,
            by_ext: ext
                .iter()
                .zip(&live)
                .enumerate()
                .filter(|(_, (_, l))| **l)
                .map(|(d, (id, _))| (*id, d))
                .collect(),
            dead: live.iter().filter(|l| !**l).count(),
            ext,
            live,
            recent: ExactIndex::new(m.dim, 0.5).with_threads(1),
            recent_order: VecDeque::new(),
            rebuilds: 0,
        };
        if !rids.is_empty() && rdim != m.dim {
            return Err(GalleryError::dump(dir.join(RECENT), "wrong dimension"));
        }
        for (i, id) in rids.into_iter().enumerate() {
            if x.by_ext.contains_key(&id) {
                x.remember_recent(id, &rdata[i * m.dim..(i + 1) * m.dim])?;
            }
        }
        Ok(x)
    }
}

impl GalleryIndex for HnswIndex {
    fn kind(&self) -> IndexKind {
        IndexKind::Hnsw
    }
    fn dim(&self) -> usize {
        self.dim
    }

    fn insert(&mut self, id: u64, vector: &[f32]) -> Result<(), GalleryError> {
        let v = unit(vector, self.dim)?;
        if self.by_ext.contains_key(&id) {
            return Err(GalleryError::DuplicateId(id));
        }
        self.remember_recent(id, &v)?;
        self.fill_graph(&[(id, v)]);
        Ok(())
    }

    fn remove(&mut self, id: u64) -> bool {
        let Some(d) = self.by_ext.remove(&id) else {
            return false;
        };
        self.live[d] = false;
        self.dead += 1;
        self.recent.remove(id);
        if self.dead as f64 > self.params.rebuild_ratio * self.ext.len() as f64 {
            self.rebuild();
        }
        true
    }

    fn contains(&self, id: u64) -> bool {
        self.by_ext.contains_key(&id)
    }

    fn search(
        &self,
        query: &[f32],
        k: usize,
        filter: Option<Filter<'_>>,
    ) -> Result<Vec<Hit>, GalleryError> {
        let q = unit(query, self.dim)?;
        let graph = self.graph_search(&q, k, filter);
        if self.recent.is_empty() {
            return Ok(graph);
        }
        let recent = self.recent.search(&q, k, filter)?;
        Ok(merge_hits([graph, recent], k))
    }

    fn len(&self) -> usize {
        self.by_ext.len()
    }
    fn stored(&self) -> usize {
        self.ext.len()
    }

    /// Walks the whole graph (O(n)): meant for statistics and benchmarks, not every query.
    fn memory_bytes(&self) -> usize {
        let g = self.graph.get();
        let mut bytes = 0usize;
        for p in g.get_point_indexation() {
            let links: usize = p.get_neighborhood_id().iter().map(Vec::len).sum();
            // point + its Arc, the vector, the 16 per-layer lists, and per link an Arc'd
            // (pointer, distance) pair plus the list slot
            bytes += std::mem::size_of::<hnsw_rs::hnsw::Point<'static, f32>>()
                + 16
                + self.dim * 4
                + 32
                + MAX_LAYERS * 24
                + links * (8 + 16 + 16);
        }
        bytes + self.ext.capacity() * 9 + self.by_ext.capacity() * 17 + self.recent.memory_bytes()
    }

    fn rebuild(&mut self) {
        let mut entries: Vec<(usize, Vec<f32>)> = self
            .graph
            .get()
            .get_point_indexation()
            .into_iter()
            .filter(|p| self.live.get(p.get_origin_id()).copied().unwrap_or(false))
            .map(|p| (p.get_origin_id(), p.get_v().to_vec()))
            .collect();
        entries.sort_by_key(|(d, _)| *d);
        let entries: Vec<(u64, Vec<f32>)> =
            entries.into_iter().map(|(d, v)| (self.ext[d], v)).collect();
        self.graph = Graph::empty(&self.params, entries.len());
        self.ext.clear();
        self.live.clear();
        self.by_ext.clear();
        self.dead = 0;
        self.fill_graph(&entries);
        self.rebuilds += 1;
        tracing::debug!(
            entries = entries.len(),
            "HNSW graph rebuilt without tombstones"
        );
    }

    fn live_vectors(&self) -> Vec<(u64, Vec<f32>)> {
        let mut entries: Vec<(usize, Vec<f32>)> = self
            .graph
            .get()
            .get_point_indexation()
            .into_iter()
            .filter(|p| self.live.get(p.get_origin_id()).copied().unwrap_or(false))
            .map(|p| (p.get_origin_id(), p.get_v().to_vec()))
            .collect();
        entries.sort_by_key(|(d, _)| *d);
        entries.into_iter().map(|(d, v)| (self.ext[d], v)).collect()
    }

    fn dump(&self, dir: &Path) -> Result<(), GalleryError> {
        let mut files = vec![IDS, RECENT];
        if !self.ext.is_empty() {
            let g = self.graph.get();
            let name = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                g.file_dump(dir, BASENAME)
            }))
            .map_err(|_| GalleryError::dump(dir, "hnsw_rs panicked while writing the graph"))?
            .map_err(|e| GalleryError::dump(dir, format!("cannot write the graph: {e}")))?;
            if name != BASENAME {
                return Err(GalleryError::dump(
                    dir,
                    format!("hnsw_rs wrote {name}, not {BASENAME}"),
                ));
            }
            files.extend(["graph.hnsw.graph", "graph.hnsw.data"]);
        }
        // ids as a one-column "vector" file: (caller id, live flag)
        let flags: Vec<[f32; 1]> = self
            .live
            .iter()
            .map(|l| [f32::from(u8::from(*l))])
            .collect();
        dumpfile::write_vectors(
            &dir.join(IDS),
            1,
            self.ext.iter().zip(&flags).map(|(id, f)| (*id, &f[..])),
        )?;
        let recent: Vec<(u64, Vec<f32>)> = self.recent.live_vectors();
        dumpfile::write_vectors(
            &dir.join(RECENT),
            self.dim,
            recent.iter().map(|(id, v)| (*id, v.as_slice())),
        )?;
        let params = serde_json::to_value(self.params)
            .map_err(|e| GalleryError::dump(dir, e.to_string()))?;
        Manifest::new(dir, IndexKind::Hnsw, self.dim, self.len(), &files, params)?.write(dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gallery::testdata::clustered;

    fn small(n: usize, dim: usize, recent: usize) -> (HnswIndex, Vec<f32>) {
        let v = clustered(n, dim, 40, 0.4, 11);
        let params = HnswParams {
            recent,
            rebuild_ratio: 0.3,
            ..HnswParams::default()
        };
        let mut x = HnswIndex::new(dim, params);
        for i in 0..n {
            x.insert(1000 + i as u64, &v[i * dim..(i + 1) * dim])
                .unwrap();
        }
        (x, v)
    }

    #[test]
    fn tombstones_are_never_returned_before_or_after_a_rebuild() {
        let dim = 32;
        let (mut x, v) = small(1500, dim, 64);
        assert!(matches!(
            x.insert(1000, &v[..dim]),
            Err(GalleryError::DuplicateId(1000))
        ));
        // remove every third point, just under the rebuild ratio
        let removed: Vec<u64> = (0..400).map(|i| 1000 + 3 * i as u64).collect();
        for id in &removed {
            assert!(x.remove(*id));
        }
        assert_eq!(x.rebuilds(), 0);
        let check = |x: &HnswIndex| {
            for i in 0..300 {
                let r = x.search(&v[i * dim..(i + 1) * dim], 20, None).unwrap();
                assert_eq!(r.len(), 20);
                assert!(
                    r.iter().all(|h| !removed.contains(&h.id)),
                    "tombstone returned"
                );
            }
        };
        check(&x);
        // past the ratio: rebuilt, still nothing removed comes back
        for i in 400..500 {
            x.remove(1000 + 3 * i as u64);
        }
        let removed: Vec<u64> = (0..500).map(|i| 1000 + 3 * i as u64).collect();
        assert!(x.rebuilds() >= 1);
        assert_eq!(x.len(), 1000);
        assert_eq!(x.stored(), 1049, "rebuilt at 451 tombstones, 49 since");
        for i in 0..300 {
            let r = x.search(&v[i * dim..(i + 1) * dim], 20, None).unwrap();
            assert!(r.iter().all(|h| !removed.contains(&h.id)));
        }
        check(&x);
    }

    #[test]
    fn filters_and_tiny_indexes_work() {
        let dim = 8;
        let mut x = HnswIndex::new(dim, HnswParams::default());
        assert!(x.search(&[1.0; 8], 5, None).unwrap().is_empty());
        x.insert(1, &[1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
            .unwrap();
        x.insert(2, &[0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
            .unwrap();
        let r = x
            .search(&[1.0, 0.1, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0], 5, None)
            .unwrap();
        assert_eq!(r.iter().map(|h| h.id).collect::<Vec<_>>(), vec![1, 2]);
        let not_one = |id: u64| id != 1;
        let r = x
            .search(&[1.0, 0.1, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0], 5, Some(&not_one))
            .unwrap();
        assert_eq!(r.iter().map(|h| h.id).collect::<Vec<_>>(), vec![2]);
        assert!(x.search(&[1.0; 3], 1, None).is_err());
        assert!(x.insert(3, &[0.0; 8]).is_err());
    }

    #[test]
    fn dump_and_reload_give_the_same_results_and_keep_working() {
        let dim = 24;
        let (mut x, v) = small(900, dim, 32);
        for i in 0..50 {
            x.remove(1000 + 7 * i as u64);
        }
        let d = tempfile::tempdir().unwrap();
        x.dump(d.path()).unwrap();
        let mut y = HnswIndex::load(d.path(), *x.params()).unwrap();
        assert_eq!((y.len(), y.stored()), (x.len(), x.stored()));
        for i in 0..200 {
            let q = &v[i * dim..(i + 1) * dim];
            assert_eq!(
                x.search(q, 10, None).unwrap(),
                y.search(q, 10, None).unwrap()
            );
        }
        // the reloaded index accepts inserts and removals
        y.insert(5, &v[..dim]).unwrap();
        assert!(y.remove(1001));
        let r = y.search(&v[..dim], 3, None).unwrap();
        assert!(r.iter().any(|h| h.id == 5));
        assert!(
            y.search(&v[dim..2 * dim], 50, None)
                .unwrap()
                .iter()
                .all(|h| h.id != 1001)
        );
        // a damaged dump is refused, not a panic
        let data = d.path().join("graph.hnsw.data");
        let mut bytes = std::fs::read(&data).unwrap();
        bytes.truncate(bytes.len() / 2);
        std::fs::write(&data, bytes).unwrap();
        assert!(HnswIndex::load(d.path(), *x.params()).is_err());
    }
}
