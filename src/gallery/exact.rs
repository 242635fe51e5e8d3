//! Exact search: every vector in one contiguous row-major matrix, a query scores all rows.
//!
//! It never misses, so it is both the default for small galleries and the oracle that the HNSW
//! recall tests compare against. Deletion marks a row dead (a tombstone skipped by searches);
//! rows are compacted — order kept, so ties stay deterministic — once tombstones pass the
//! configured ratio. Large scans are split across threads; a batch of queries is one matrix
//! product (matrixmultiply picks AVX/FMA at run time).
//!
//! Where the CPU converts half precision in hardware (F16C), the index also keeps every vector
//! in half precision, and [`GalleryIndex::scores`] (the linker's ranking of candidate
//! identities, which then computes each candidate's similarity exactly from its own prototypes)
//! reads those: half the memory per scan, the scan being memory-bound at ~10 000 prototypes
//! (docs/PERFORMANCE.md, "One core's capacity"). Scores are then within about 1e-3 of exact;
//! [`GalleryIndex::search`] stays exact.

use std::collections::HashMap;
use std::path::Path;

use ndarray::{ArrayView2, Axis};

use super::GalleryError;
use super::dumpfile::{self, Manifest};
use super::index::{Filter, GalleryIndex, Hit, IndexKind, TopK, merge_hits};
use super::vector::{dot, dot_half, half_scan_available, to_half, unit};

/// Below this many multiply-adds a scan stays on the calling thread (spawning costs ~20 µs).
const PARALLEL_MACS: usize = 1 << 22;
const VECTORS: &str = "vectors.bin";

#[derive(Debug, Clone)]
pub struct ExactIndex {
    dim: usize,
    ids: Vec<u64>,
    data: Vec<f32>,
    /// `data` in half precision (empty where the CPU has no F16C: scores then read `data`).
    half: Vec<u16>,
    /// Whether `half` is kept.
    use_half: bool,
    live: Vec<bool>,
    slot: HashMap<u64, usize>,
    dead: usize,
    rebuild_ratio: f64,
    threads: usize,
}

impl ExactIndex {
    /// An empty index; `rebuild_ratio` = tombstone fraction that triggers compaction.
    pub fn new(dim: usize, rebuild_ratio: f64) -> ExactIndex {
        ExactIndex {
            dim,
            ids: Vec::new(),
            data: Vec::new(),
            half: Vec::new(),
            use_half: half_scan_available(),
            live: Vec::new(),
            slot: HashMap::new(),
            dead: 0,
            rebuild_ratio,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }

    /// Threads a large scan may use (default: one per core).
    pub fn with_threads(mut self, threads: usize) -> ExactIndex {
        self.threads = threads.max(1);
        self
    }

    /// The stored (unit) vector of a live entry.
    pub fn get(&self, id: u64) -> Option<&[f32]> {
        let s = *self.slot.get(&id)?;
        Some(&self.data[s * self.dim..(s + 1) * self.dim])
    }

    fn row(&self, s: usize) -> &[f32] {
        &self.data[s * self.dim..(s + 1) * self.dim]
    }

    /// Without the half-precision copy (scores read the full-precision rows, as on a CPU
    /// without F16C).
    pub fn without_half(mut self) -> ExactIndex {
        self.use_half = false;
        self.half = Vec::new();
        self
    }

    fn scan(
        &self,
        q: &[f32],
        rows: std::ops::Range<usize>,
        k: usize,
        f: Option<Filter<'_>>,
    ) -> Vec<Hit> {
        let mut top = TopK::new(k);
        for s in rows {
            if !self.live[s] {
                continue;
            }
            let sim = dot(q, self.row(s));
            if sim < top.floor() {
                continue;
            }
            let id = self.ids[s];
            if f.is_none_or(|f| f(id)) {
                top.push(Hit {
                    id,
                    similarity: sim,
                });
            }
        }
        top.into_sorted()
    }

    /// Threads a scan of every row uses: one per `PARALLEL_MACS` multiply-adds, at most
    /// `self.threads`.
    fn scan_threads(&self) -> usize {
        self.threads
            .min(self.ids.len() * self.dim / PARALLEL_MACS)
            .max(1)
    }

    /// Every live entry's similarity to `query`, scored by `threads` threads.
    fn scores_in(&self, query: &[f32], threads: usize) -> Result<Vec<Hit>, GalleryError> {
        let q = unit(query, self.dim)?;
        let n = self.ids.len();
        let d = self.dim;
        let score = |rows: std::ops::Range<usize>| -> Vec<Hit> {
            rows.filter(|&s| self.live[s])
                .map(|s| Hit {
                    id: self.ids[s],
                    similarity: if self.use_half {
                        dot_half(&q, &self.half[s * d..(s + 1) * d])
                    } else {
                        dot(&q, self.row(s))
                    },
                })
                .collect()
        };
        if threads <= 1 {
            return Ok(score(0..n));
        }
        Ok(in_parts(n, threads, score).concat())
    }

    /// Scores many queries at once with one matrix product (`queries` row-major, `m × dim`,
    /// each normalised here). Same results as calling [`GalleryIndex::search`] per query.
    pub fn search_batch(
        &self,
        queries: &[f32],
        k: usize,
        filter: Option<Filter<'_>>,
    ) -> Result<Vec<Vec<Hit>>, GalleryError> {
        if !queries.len().is_multiple_of(self.dim.max(1)) {
            return Err(GalleryError::Dimension {
                expected: self.dim,
                found: queries.len() % self.dim.max(1),
            });
        }
        let m = queries.len() / self.dim.max(1);
        let mut q = Vec::with_capacity(queries.len());
        for row in queries.chunks_exact(self.dim) {
            q.extend(unit(row, self.dim)?);
        }
        let n = self.ids.len();
        if n == 0 || m == 0 {
            return Ok(vec![Vec::new(); m]);
        }
        let qv = ArrayView2::from_shape((m, self.dim), &q)
            .map_err(|e| GalleryError::BadVector(shape_err(e)))?;
        let mut out = Vec::with_capacity(m);
        // blocks of rows keep the score matrix small (m × 16k floats)
        let mut tops: Vec<TopK> = (0..m).map(|_| TopK::new(k)).collect();
        for start in (0..n).step_by(16_384) {
            let end = (start + 16_384).min(n);
            let g = ArrayView2::from_shape(
                (end - start, self.dim),
                &self.data[start * self.dim..end * self.dim],
            )
            .map_err(|e| GalleryError::BadVector(shape_err(e)))?;
            let scores = qv.dot(&g.t());
            for (qi, row) in scores.axis_iter(Axis(0)).enumerate() {
                for (j, &sim) in row.iter().enumerate() {
                    let s = start + j;
                    if !self.live[s] || sim < tops[qi].floor() {
                        continue;
                    }
                    let id = self.ids[s];
                    if filter.is_none_or(|f| f(id)) {
                        tops[qi].push(Hit {
                            id,
                            similarity: sim,
                        });
                    }
                }
            }
        }
        out.extend(tops.into_iter().map(TopK::into_sorted));
        Ok(out)
    }

    fn compact(&mut self) {
        let d = self.dim;
        let mut w = 0;
        for r in 0..self.ids.len() {
            if self.live[r] {
                if w != r {
                    self.ids[w] = self.ids[r];
                    self.data.copy_within(r * d..(r + 1) * d, w * d);
                    if self.use_half {
                        self.half.copy_within(r * d..(r + 1) * d, w * d);
                    }
                }
                w += 1;
            }
        }
        self.ids.truncate(w);
        self.data.truncate(w * d);
        self.data.shrink_to_fit();
        if self.use_half {
            self.half.truncate(w * d);
            self.half.shrink_to_fit();
        }
        self.live = vec![true; w];
        self.slot = self
            .ids
            .iter()
            .enumerate()
            .map(|(s, &id)| (id, s))
            .collect();
        self.dead = 0;
    }

    /// Reads a dump written by [`GalleryIndex::dump`] (checksums verified first).
    pub fn load(dir: &Path, rebuild_ratio: f64) -> Result<ExactIndex, GalleryError> {
        let m = Manifest::read_verified(dir)?;
        if m.kind != IndexKind::Exact {
            return Err(GalleryError::dump(
                dir,
                format!("holds a {} index, not exact", m.kind),
            ));
        }
        let (dim, ids, data) = dumpfile::read_vectors(&dir.join(VECTORS))?;
        let mut x = ExactIndex::new(dim, rebuild_ratio);
        for (i, id) in ids.into_iter().enumerate() {
            x.insert(id, &data[i * dim..(i + 1) * dim])?;
        }
        Ok(x)
    }
}

fn shape_err(_: ndarray::ShapeError) -> &'static str {
    "internal shape error"
}

/// Runs `f` on rows `0..n` split into `threads` contiguous parts, one thread each; the parts'
/// results in row order (a part whose thread panicked gives `T::default()`).
fn in_parts<T: Send + Default>(
    n: usize,
    threads: usize,
    f: impl Fn(std::ops::Range<usize>) -> T + Sync,
) -> Vec<T> {
    let chunk = n.div_ceil(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let f = &f;
                s.spawn(move || f(t * chunk..((t + 1) * chunk).min(n)))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect()
    })
}

impl GalleryIndex for ExactIndex {
    fn kind(&self) -> IndexKind {
        IndexKind::Exact
    }
    fn dim(&self) -> usize {
        self.dim
    }

    fn insert(&mut self, id: u64, vector: &[f32]) -> Result<(), GalleryError> {
        let v = unit(vector, self.dim)?;
        if self.slot.contains_key(&id) {
            return Err(GalleryError::DuplicateId(id));
        }
        self.slot.insert(id, self.ids.len());
        self.ids.push(id);
        self.live.push(true);
        self.data.extend_from_slice(&v);
        if self.use_half {
            self.half.extend(to_half(&v));
        }
        Ok(())
    }

    fn remove(&mut self, id: u64) -> bool {
        let Some(s) = self.slot.remove(&id) else {
            return false;
        };
        self.live[s] = false;
        self.dead += 1;
        if self.dead as f64 > self.rebuild_ratio * self.ids.len() as f64 {
            self.compact();
        }
        true
    }

    fn contains(&self, id: u64) -> bool {
        self.slot.contains_key(&id)
    }

    fn search(
        &self,
        query: &[f32],
        k: usize,
        filter: Option<Filter<'_>>,
    ) -> Result<Vec<Hit>, GalleryError> {
        let q = unit(query, self.dim)?;
        let n = self.ids.len();
        let threads = self.scan_threads();
        if threads == 1 {
            return Ok(self.scan(&q, 0..n, k, filter));
        }
        let parts = in_parts(n, threads, |rows| self.scan(&q, rows, k, filter));
        Ok(merge_hits(parts, k))
    }

    fn scores(&self, query: &[f32]) -> Result<Option<Vec<Hit>>, GalleryError> {
        self.scores_in(query, self.scan_threads()).map(Some)
    }

    fn len(&self) -> usize {
        self.slot.len()
    }
    fn stored(&self) -> usize {
        self.ids.len()
    }

    fn memory_bytes(&self) -> usize {
        // vectors (their length: capacity never written is address space, not memory) + ids +
        // live flags + the id → slot map (≈ 1.14 × 16 bytes per entry, hashbrown)
        self.data.len() * 4
            + self.half.len() * 2
            + self.ids.capacity() * 8
            + self.live.capacity()
            + self.slot.capacity() * 17
    }

    fn rebuild(&mut self) {
        self.compact();
    }

    fn live_vectors(&self) -> Vec<(u64, Vec<f32>)> {
        (0..self.ids.len())
            .filter(|&s| self.live[s])
            .map(|s| (self.ids[s], self.row(s).to_vec()))
            .collect()
    }

    fn dump(&self, dir: &Path) -> Result<(), GalleryError> {
        let rows: Vec<usize> = (0..self.ids.len()).filter(|&s| self.live[s]).collect();
        dumpfile::write_vectors(
            &dir.join(VECTORS),
            self.dim,
            rows.iter().map(|&s| (self.ids[s], self.row(s))),
        )?;
        Manifest::new(
            dir,
            IndexKind::Exact,
            self.dim,
            rows.len(),
            &[VECTORS],
            serde_json::Value::Null,
        )?
        .write(dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gallery::testdata::clustered;

    #[test]
    fn finds_itself_and_respects_tombstones_and_filters() {
        let (v, dim) = (clustered(500, 32, 20, 0.3, 1), 32);
        let mut x = ExactIndex::new(dim, 0.25);
        for i in 0..500 {
            x.insert(i as u64 * 10, &v[i * dim..(i + 1) * dim]).unwrap();
        }
        assert!(matches!(
            x.insert(0, &v[..dim]),
            Err(GalleryError::DuplicateId(0))
        ));
        let q = &v[7 * dim..8 * dim];
        let r = x.search(q, 5, None).unwrap();
        assert_eq!(r[0].id, 70);
        assert!((r[0].similarity - 1.0).abs() < 1e-5);
        assert!(r.windows(2).all(|w| w[0].similarity >= w[1].similarity));
        assert!(x.remove(70));
        assert!(!x.remove(70));
        assert!(x.search(q, 50, None).unwrap().iter().all(|h| h.id != 70));
        let even = |id: u64| id.is_multiple_of(20);
        assert!(
            x.search(q, 50, Some(&even))
                .unwrap()
                .iter()
                .all(|h| h.id.is_multiple_of(20))
        );
        // removing past the ratio compacts; nothing removed ever comes back
        for i in 0..200 {
            x.remove(i as u64 * 10);
        }
        assert!(x.stored() < 500 - 100, "compacted: {}", x.stored());
        assert_eq!(x.len(), 300);
        for i in 0..20 {
            let r = x.search(&v[i * dim..(i + 1) * dim], 300, None).unwrap();
            assert_eq!(r.len(), 300);
            assert!(r.iter().all(|h| h.id >= 2000));
        }
    }

    #[test]
    fn batch_and_threaded_scans_match_the_single_scan() {
        let dim = 64;
        let v = clustered(3000, dim, 30, 0.3, 2);
        let mut x = ExactIndex::new(dim, 0.5).with_threads(1);
        for i in 0..3000 {
            x.insert(i as u64, &v[i * dim..(i + 1) * dim]).unwrap();
        }
        x.remove(5);
        let queries = &v[..10 * dim];
        let batch = x.search_batch(queries, 7, None).unwrap();
        let mut threaded = x.clone().with_threads(3);
        threaded.threads = 3;
        for (i, b) in batch.iter().enumerate() {
            let one = x.search(&queries[i * dim..(i + 1) * dim], 7, None).unwrap();
            let ids = |h: &[Hit]| h.iter().map(|h| h.id).collect::<Vec<_>>();
            assert_eq!(ids(b), ids(&one));
            // force the threaded path by scanning in 3 parts
            let parts: Vec<Vec<Hit>> = (0..3)
                .map(|t| {
                    threaded.scan(
                        &queries[i * dim..(i + 1) * dim],
                        t * 1000..(t + 1) * 1000,
                        7,
                        None,
                    )
                })
                .collect();
            assert_eq!(ids(&merge_hits(parts, 7)), ids(&one));
        }
    }

    #[test]
    fn the_top_of_all_scores_is_what_a_search_finds_for_every_k() {
        let dim = 32;
        // clustered vectors, each inserted twice, so that ties need the id order
        let v = clustered(400, dim, 8, 0.2, 5);
        // in full precision, exactly what a search finds
        let mut x = ExactIndex::new(dim, 0.9).with_threads(1).without_half();
        for i in 0..400 {
            x.insert(i as u64, &v[i * dim..(i + 1) * dim]).unwrap();
            x.insert(1000 + i as u64, &v[i * dim..(i + 1) * dim])
                .unwrap();
        }
        for id in [3, 17, 1003] {
            x.remove(id);
        }
        let q = &v[40 * dim..41 * dim];
        let mut all = x.scores(q).unwrap().unwrap();
        assert_eq!(all.len(), x.len(), "every live entry once, no tombstone");
        assert!(all.iter().all(|h| ![3, 17, 1003].contains(&h.id)));
        for k in [0, 1, 2, 7, 32, 128, 797, 5000] {
            let want: Vec<(u64, f32)> = x
                .search(q, k, None)
                .unwrap()
                .iter()
                .map(|h| (h.id, h.similarity))
                .collect();
            let got: Vec<(u64, f32)> = crate::gallery::index::top_of(&mut all, k)
                .iter()
                .map(|h| (h.id, h.similarity))
                .collect();
            assert_eq!(got, want, "k = {k}");
        }
        // scored by several threads: the same scores
        let mut parts = x.scores_in(q, 3).unwrap();
        let mut one = x.scores(q).unwrap().unwrap();
        parts.sort_by_key(|h| h.id);
        one.sort_by_key(|h| h.id);
        assert_eq!(parts, one);
    }

    #[test]
    fn half_precision_scores_are_within_a_thousandth_and_find_the_same_top() {
        if !half_scan_available() {
            return; // nothing else to test: scores read the full-precision rows
        }
        let dim = 128;
        let v = clustered(600, dim, 12, 0.3, 9);
        let mut full = ExactIndex::new(dim, 0.9).with_threads(1).without_half();
        let mut halved = ExactIndex::new(dim, 0.2).with_threads(1);
        for i in 0..600 {
            full.insert(i as u64, &v[i * dim..(i + 1) * dim]).unwrap();
            halved.insert(i as u64, &v[i * dim..(i + 1) * dim]).unwrap();
        }
        // enough tombstones to compact the half-precision rows with the others
        for id in (0..600).step_by(3) {
            full.remove(id);
            halved.remove(id);
        }
        assert!(halved.memory_bytes() > full.memory_bytes());
        for qi in [1, 50, 301] {
            let q = &v[qi * dim..(qi + 1) * dim];
            let mut exact = full.scores(q).unwrap().unwrap();
            let mut approx = halved.scores(q).unwrap().unwrap();
            exact.sort_by_key(|h| h.id);
            approx.sort_by_key(|h| h.id);
            assert_eq!(exact.len(), approx.len());
            for (e, a) in exact.iter().zip(&approx) {
                assert_eq!(e.id, a.id);
                assert!((e.similarity - a.similarity).abs() < 1e-3, "{e:?} {a:?}");
            }
            // the top 32 by half precision: each at most 2e-3 under the exact 32nd
            let want = crate::gallery::index::top_of(&mut exact, 32);
            let floor = want.last().unwrap().similarity - 2e-3;
            let got = crate::gallery::index::top_of(&mut approx, 32);
            let exact_of = |id: u64| {
                dot(
                    &crate::gallery::vector::unit(q, dim).unwrap(),
                    full.get(id).unwrap(),
                )
            };
            assert!(got.iter().all(|h| exact_of(h.id) >= floor));
            assert_eq!(got[0].id, want[0].id, "the query itself comes first");
            // searches stay exact
            assert_eq!(
                halved.search(q, 5, None).unwrap(),
                full.search(q, 5, None).unwrap()
            );
        }
    }

    #[test]
    fn dump_and_load_round_trip() {
        let dim = 16;
        let v = clustered(100, dim, 5, 0.3, 3);
        let mut x = ExactIndex::new(dim, 0.9);
        for i in 0..100 {
            x.insert(i as u64, &v[i * dim..(i + 1) * dim]).unwrap();
        }
        x.remove(3);
        let d = tempfile::tempdir().unwrap();
        x.dump(d.path()).unwrap();
        let y = ExactIndex::load(d.path(), 0.9).unwrap();
        assert_eq!(y.len(), 99);
        for i in 0..100 {
            let q = &v[i * dim..(i + 1) * dim];
            assert_eq!(
                x.search(q, 10, None).unwrap(),
                y.search(q, 10, None).unwrap()
            );
        }
    }
}
