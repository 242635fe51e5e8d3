//! The nearest-neighbour index behind the gallery: prototype vectors keyed by a `u64` id, searched
//! by cosine similarity (dot product of unit vectors).
//!
//! Two implementations: [`ExactIndex`](super::ExactIndex) (a contiguous matrix scanned in full —
//! never misses, the default for small galleries and the oracle in tests) and
//! [`HnswIndex`](super::HnswIndex) (hnsw_rs graph — sub-linear, approximate). [`AutoIndex`](super::AutoIndex)
//! switches from the first to the second as the gallery grows. The trait is the seam where a
//! shared vector store would plug in if the linker moved off one machine (not built: today one
//! process holds the whole gallery).

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::GalleryError;

/// One search result: an entry's id and its cosine similarity with the query.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Hit {
    pub id: u64,
    pub similarity: f32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IndexKind {
    Exact,
    Hnsw,
}

impl std::fmt::Display for IndexKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            IndexKind::Exact => "exact",
            IndexKind::Hnsw => "hnsw",
        })
    }
}

/// Extra condition on search results (`true` = keep). Deleted entries are always left out.
pub type Filter<'a> = &'a (dyn Fn(u64) -> bool + Sync);

/// A gallery index. Ids are chosen by the caller and never reused for another vector: a vector
/// is never updated in place (remove it and insert the new one under a new id), which is what
/// lets a reloaded dump be reconciled with the store by ids alone.
pub trait GalleryIndex: Send + Sync {
    fn kind(&self) -> IndexKind;
    fn dim(&self) -> usize;
    /// Adds `vector` (normalised here) under `id`. Errors: wrong dimension, NaN/zero vector,
    /// `id` already live.
    fn insert(&mut self, id: u64, vector: &[f32]) -> Result<(), GalleryError>;
    /// Deletes `id` (a tombstone until the next rebuild/compaction, which happens on its own
    /// once tombstones pass the configured ratio). Returns whether it was live.
    fn remove(&mut self, id: u64) -> bool;
    fn contains(&self, id: u64) -> bool;
    /// The `k` live entries most similar to `query` that pass `filter`, best first (ties: lower
    /// id first). Approximate for HNSW.
    fn search(
        &self,
        query: &[f32],
        k: usize,
        filter: Option<Filter<'_>>,
    ) -> Result<Vec<Hit>, GalleryError>;
    /// Every live entry with its similarity to `query` (normalised here), in no particular
    /// order, where the index gets them for the price of one search (an exact index scores every
    /// row anyway); `None` where it does not (HNSW). A caller that may need more than `k` hits
    /// takes them from this with [`top_of`] instead of searching again with a larger `k`.
    fn scores(&self, _query: &[f32]) -> Result<Option<Vec<Hit>>, GalleryError> {
        Ok(None)
    }
    /// Live entries.
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Live entries plus tombstones (what occupies memory).
    fn stored(&self) -> usize;
    /// Bytes held by the index (vectors, graph, id maps), computed from its sizes.
    fn memory_bytes(&self) -> usize;
    /// Drops tombstones now (rebuild / compaction) instead of waiting for the ratio.
    fn rebuild(&mut self);
    /// Live entries `(id, vector)` in insertion order.
    fn live_vectors(&self) -> Vec<(u64, Vec<f32>)>;
    /// Writes the index into the (empty, existing) directory `dir`; [`super::load_index`]
    /// reads it back.
    fn dump(&self, dir: &Path) -> Result<(), GalleryError>;
}

/// Orders hits best first: higher similarity, then lower id (so results are deterministic).
pub(crate) fn better(a: &Hit, b: &Hit) -> Ordering {
    b.similarity
        .total_cmp(&a.similarity)
        .then_with(|| a.id.cmp(&b.id))
}

/// Hit ordered so that the max-heap's top is the *worst* kept hit.
struct Worst(Hit);

impl PartialEq for Worst {
    fn eq(&self, o: &Self) -> bool {
        better(&self.0, &o.0) == Ordering::Equal
    }
}
impl Eq for Worst {}
impl PartialOrd for Worst {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Worst {
    fn cmp(&self, o: &Self) -> Ordering {
        better(&self.0, &o.0)
    }
}

/// Keeps the best `k` hits seen.
pub(crate) struct TopK {
    k: usize,
    heap: BinaryHeap<Worst>,
}

impl TopK {
    pub(crate) fn new(k: usize) -> TopK {
        TopK {
            k,
            heap: BinaryHeap::with_capacity(k + 1),
        }
    }

    /// Similarity a new hit must beat to enter (−∞ while not full).
    #[inline]
    pub(crate) fn floor(&self) -> f32 {
        if self.heap.len() < self.k {
            f32::NEG_INFINITY
        } else {
            self.heap
                .peek()
                .map_or(f32::NEG_INFINITY, |w| w.0.similarity)
        }
    }

    #[inline]
    pub(crate) fn push(&mut self, hit: Hit) {
        if self.k == 0 {
            return;
        }
        if self.heap.len() < self.k {
            self.heap.push(Worst(hit));
        } else if let Some(worst) = self.heap.peek()
            && better(&hit, &worst.0) == Ordering::Less
        {
            self.heap.pop();
            self.heap.push(Worst(hit));
        }
    }

    pub(crate) fn into_sorted(self) -> Vec<Hit> {
        let mut v: Vec<Hit> = self.heap.into_iter().map(|w| w.0).collect();
        v.sort_by(better);
        v
    }
}

/// The best `k` of `all`, best first, exactly as [`GalleryIndex::search`] orders them (ties:
/// lower id first); `all` is reordered.
pub(crate) fn top_of(all: &mut [Hit], k: usize) -> Vec<Hit> {
    if k == 0 {
        return Vec::new();
    }
    if k < all.len() {
        all.select_nth_unstable_by(k - 1, better);
    }
    let mut top = all[..k.min(all.len())].to_vec();
    top.sort_by(better);
    top
}

/// Merges result lists (same id in several: kept once), best `k` first.
pub(crate) fn merge_hits(lists: impl IntoIterator<Item = Vec<Hit>>, k: usize) -> Vec<Hit> {
    let mut all: Vec<Hit> = lists.into_iter().flatten().collect();
    all.sort_by(|a, b| a.id.cmp(&b.id).then_with(|| better(a, b)));
    all.dedup_by_key(|h| h.id);
    all.sort_by(better);
    all.truncate(k);
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topk_keeps_the_best_with_id_tiebreak() {
        let mut t = TopK::new(3);
        for (id, s) in [(5, 0.5), (1, 0.9), (2, 0.5), (3, 0.1), (4, 0.7), (0, 0.5)] {
            t.push(Hit { id, similarity: s });
        }
        let ids: Vec<u64> = t.into_sorted().iter().map(|h| h.id).collect();
        assert_eq!(ids, vec![1, 4, 0]);
    }

    #[test]
    fn merge_dedups() {
        let a = vec![
            Hit {
                id: 1,
                similarity: 0.9,
            },
            Hit {
                id: 2,
                similarity: 0.3,
            },
        ];
        let b = vec![
            Hit {
                id: 2,
                similarity: 0.3,
            },
            Hit {
                id: 3,
                similarity: 0.5,
            },
        ];
        let m = merge_hits([a, b], 10);
        assert_eq!(m.iter().map(|h| h.id).collect::<Vec<_>>(), vec![1, 3, 2]);
    }
}
