//! Re-id retrieval metrics under the Market-1501 protocol: CMC rank-k and mAP.
//!
//! For each query, the gallery is ranked by squared Euclidean distance (on L2-normalised features
//! that is `2 − 2·cos`, so the ranking is the cosine ranking). Then, as in the official Market-1501
//! evaluation and in torchreid / fast-reid:
//! - gallery items with the query's person id **and** the query's camera are ignored (a same-camera
//!   match says nothing about cross-camera re-identification);
//! - junk items (pid −1) are ignored;
//! - distractors (pid 0) stay in the ranking as negatives;
//! - a query whose pid is −1 or 0, or that has no valid match left, is **skipped**: it counts in
//!   neither CMC nor mAP, and the number of skipped queries is reported.
//!
//! CMC rank-k is the fraction of (non-skipped) queries whose first correct match is within the top
//! k; AP is the non-interpolated area under the precision–recall curve (mean of the precision at
//! each correct match, as torchreid and fast-reid compute it), and mAP its mean over queries.
//!
//! **Ties** are broken by gallery index: items are ordered by (distance, gallery index), a stable
//! sort. Results are therefore deterministic and independent of the number of threads.
//!
//! Cost: one matrix product per block of queries (bounded memory: `block × gallery` distances) and,
//! per query, no full sort: correct matches are sorted (usually a handful), and every other item is
//! placed among them by binary search — O(n log p) per query instead of O(n log n).

use ndarray::{Array2, ArrayView2, Axis, s};
use serde::Serialize;

use super::rerank::{RerankParams, Reranker};

/// Person id of junk images (ignored in the ranking).
pub const JUNK_PID: i32 = -1;
/// Person id of distractors (kept as negatives for every query).
pub const DISTRACTOR_PID: i32 = 0;

/// What the protocol needs to know about one image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Label {
    pub pid: i32,
    pub camid: u32,
}

impl Label {
    pub fn new(pid: i32, camid: u32) -> Label {
        Label { pid, camid }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("{what}: {rows} feature rows but {labels} labels")]
    LabelCount {
        what: &'static str,
        rows: usize,
        labels: usize,
    },
    #[error("query features have dimension {query}, gallery features {gallery}")]
    Dimension { query: usize, gallery: usize },
    #[error("{what} feature row {row} holds a NaN or infinite value")]
    NotFinite { what: &'static str, row: usize },
    #[error(
        "the distance matrix is {rows}×{cols} but there are {queries} queries and {gallery} gallery items"
    )]
    DistanceShape {
        rows: usize,
        cols: usize,
        queries: usize,
        gallery: usize,
    },
    #[error("distance ({row}, {col}) is NaN")]
    NanDistance { row: usize, col: usize },
    #[error("re-ranking: {0}")]
    Rerank(String),
}

/// How to evaluate.
#[derive(Debug, Clone)]
pub struct MetricOptions {
    /// CMC is reported for ranks 1..=max_rank.
    pub max_rank: usize,
    /// Queries per matrix product; memory is about `block × gallery × 4` bytes per thread.
    pub block: usize,
    /// Worker threads; 0 = one per core.
    pub threads: usize,
    /// k-reciprocal re-ranking (Zhong et al. 2017) of the distances before scoring.
    pub rerank: Option<RerankParams>,
}

pub const DEFAULT_MAX_RANK: usize = 50;
pub const DEFAULT_BLOCK: usize = 256;

impl Default for MetricOptions {
    fn default() -> Self {
        MetricOptions {
            max_rank: DEFAULT_MAX_RANK,
            block: DEFAULT_BLOCK,
            threads: 0,
            rerank: None,
        }
    }
}

/// Results of one evaluation. Rates are fractions in [0, 1].
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Metrics {
    /// `cmc[k-1]` = CMC at rank k, for k = 1..=max_rank (shorter when the gallery is smaller).
    pub cmc: Vec<f64>,
    #[serde(rename = "mAP")]
    pub map: f64,
    pub num_query: usize,
    pub num_gallery: usize,
    /// Queries scored (with at least one valid match).
    pub num_valid_query: usize,
    /// Queries without any valid match (or with pid −1 / 0): left out of CMC and mAP.
    pub num_skipped_query: usize,
}

impl Metrics {
    /// CMC at rank `k` (1-based); the last value when `k` exceeds the computed ranks, 0 when none.
    pub fn rank(&self, k: usize) -> f64 {
        if self.cmc.is_empty() || k == 0 {
            return 0.0;
        }
        self.cmc[(k - 1).min(self.cmc.len() - 1)]
    }
}

/// Score of one query: rank (0-based, among non-ignored items) of its first correct match, and AP.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QueryScore {
    pub first_match: usize,
    pub ap: f64,
}

/// Scores one query from its distances to every gallery item. `None` when the query is skipped
/// (pid −1 / 0, or no gallery item of its pid in another camera).
pub fn score_query(dist: &[f32], query: Label, gallery: &[Label]) -> Option<QueryScore> {
    debug_assert_eq!(dist.len(), gallery.len());
    if query.pid == JUNK_PID || query.pid == DISTRACTOR_PID {
        return None;
    }
    // correct matches: same pid, other camera
    let mut pos: Vec<(f32, usize)> = gallery
        .iter()
        .enumerate()
        .filter(|(_, g)| g.pid == query.pid && g.camid != query.camid)
        .map(|(i, _)| (dist[i], i))
        .collect();
    if pos.is_empty() {
        return None;
    }
    let key_cmp = |a: &(f32, usize), b: &(f32, usize)| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1));
    pos.sort_unstable_by(key_cmp);
    // before[k] = negatives ranked after exactly k correct matches (i.e. just before match k)
    let mut before = vec![0usize; pos.len() + 1];
    let (first, last) = (pos[0], pos[pos.len() - 1]);
    for (i, g) in gallery.iter().enumerate() {
        if g.pid == query.pid || g.pid == JUNK_PID {
            continue; // a correct match, an ignored same-camera match, or junk
        }
        let key = (dist[i], i);
        // most items rank after the last match (they change nothing) or before the first
        let k = if key_cmp(&key, &last).is_gt() {
            continue;
        } else if key_cmp(&key, &first).is_lt() {
            0
        } else {
            pos.partition_point(|p| key_cmp(p, &key).is_lt())
        };
        before[k] += 1;
    }
    let mut negatives = 0usize;
    let mut ap = 0.0;
    let mut first_match = 0;
    for (j, &b) in before.iter().take(pos.len()).enumerate() {
        negatives += b;
        let rank = j + negatives; // 0-based position of match j among non-ignored items
        if j == 0 {
            first_match = rank;
        }
        ap += (j + 1) as f64 / (rank + 1) as f64;
    }
    Some(QueryScore {
        first_match,
        ap: ap / pos.len() as f64,
    })
}

/// Combines per-query scores (in query order) into CMC and mAP.
pub fn summarize(scores: &[Option<QueryScore>], num_gallery: usize, max_rank: usize) -> Metrics {
    let ranks = max_rank.min(num_gallery);
    let mut hist = vec![0usize; ranks];
    let mut map = 0.0;
    let mut valid = 0;
    for s in scores.iter().flatten() {
        valid += 1;
        map += s.ap;
        if s.first_match < ranks {
            hist[s.first_match] += 1;
        }
    }
    let mut cmc = Vec::with_capacity(ranks);
    let mut acc = 0usize;
    for h in hist {
        acc += h;
        cmc.push(if valid > 0 {
            acc as f64 / valid as f64
        } else {
            0.0
        });
    }
    Metrics {
        cmc,
        map: if valid > 0 { map / valid as f64 } else { 0.0 },
        num_query: scores.len(),
        num_gallery,
        num_valid_query: valid,
        num_skipped_query: scores.len() - valid,
    }
}

/// Evaluates a precomputed distance matrix `[queries, gallery]` (smaller = more similar).
pub fn evaluate_distances(
    dist: ArrayView2<f32>,
    query: &[Label],
    gallery: &[Label],
    max_rank: usize,
) -> Result<Metrics, MetricsError> {
    let (r, c) = dist.dim();
    if r != query.len() || c != gallery.len() {
        return Err(MetricsError::DistanceShape {
            rows: r,
            cols: c,
            queries: query.len(),
            gallery: gallery.len(),
        });
    }
    let mut scores = Vec::with_capacity(r);
    let mut buf = Vec::with_capacity(c);
    for (qi, row) in dist.axis_iter(Axis(0)).enumerate() {
        buf.clear();
        buf.extend(row.iter().copied());
        if let Some(col) = buf.iter().position(|d| d.is_nan()) {
            return Err(MetricsError::NanDistance { row: qi, col });
        }
        scores.push(score_query(&buf, query[qi], gallery));
    }
    Ok(summarize(&scores, c, max_rank))
}

/// Squared Euclidean distances between rows of `a` and rows of `b` (`b_norms` = squared row norms
/// of `b`), clamped at 0 against rounding: one matrix product.
pub fn squared_distances(a: ArrayView2<f32>, b: ArrayView2<f32>, b_norms: &[f32]) -> Array2<f32> {
    let mut d = a.dot(&b.t());
    for (i, mut row) in d.axis_iter_mut(Axis(0)).enumerate() {
        let an: f32 = a.row(i).iter().map(|v| v * v).sum();
        for (v, bn) in row.iter_mut().zip(b_norms) {
            *v = (an + bn - 2.0 * *v).max(0.0);
        }
    }
    d
}

pub fn squared_norms(x: ArrayView2<f32>) -> Vec<f32> {
    x.rows()
        .into_iter()
        .map(|r| r.iter().map(|v| v * v).sum())
        .collect()
}

fn check_features(
    what: &'static str,
    x: ArrayView2<f32>,
    labels: &[Label],
) -> Result<(), MetricsError> {
    if x.nrows() != labels.len() {
        return Err(MetricsError::LabelCount {
            what,
            rows: x.nrows(),
            labels: labels.len(),
        });
    }
    for (row, r) in x.rows().into_iter().enumerate() {
        if r.iter().any(|v| !v.is_finite()) {
            return Err(MetricsError::NotFinite { what, row });
        }
    }
    Ok(())
}

/// Evaluates query features against gallery features (rows; L2-normalised for cosine ranking).
///
/// Queries are processed in blocks of `opts.block` (one matrix product each) spread over
/// `opts.threads` threads; each block's distances are scored and dropped, so memory stays at
/// `threads × block × gallery` floats however large the query set is (re-ranking adds its own
/// O((queries + gallery) · k1) neighbour tables).
pub fn evaluate(
    query: ArrayView2<f32>,
    gallery: ArrayView2<f32>,
    query_labels: &[Label],
    gallery_labels: &[Label],
    opts: &MetricOptions,
) -> Result<Metrics, MetricsError> {
    check_features("query", query, query_labels)?;
    check_features("gallery", gallery, gallery_labels)?;
    if query.ncols() != gallery.ncols() && query.nrows() > 0 && gallery.nrows() > 0 {
        return Err(MetricsError::Dimension {
            query: query.ncols(),
            gallery: gallery.ncols(),
        });
    }
    let nq = query.nrows();
    let threads = super::thread_count(opts.threads);
    let block = opts.block.max(1);
    let reranker = match &opts.rerank {
        Some(p) => Some(Reranker::new(query, gallery, p, threads)?),
        None => None,
    };
    let g_norms = squared_norms(gallery);
    let blocks: Vec<(usize, usize)> = (0..nq)
        .step_by(block)
        .map(|s| (s, (s + block).min(nq)))
        .collect();
    let score_block = |&(s, e): &(usize, usize)| -> Vec<Option<QueryScore>> {
        let d = match &reranker {
            Some(r) => r.distances(s..e),
            None => squared_distances(query.slice(s![s..e, ..]), gallery, &g_norms),
        };
        d.axis_iter(Axis(0))
            .enumerate()
            .map(|(i, row)| {
                let row = row.as_slice().expect("standard layout");
                score_query(row, query_labels[s + i], gallery_labels)
            })
            .collect()
    };
    let per_block = super::parallel_map(blocks.len(), threads, &|b| score_block(&blocks[b]));
    let scores: Vec<Option<QueryScore>> = per_block.into_iter().flatten().collect();
    Ok(summarize(&scores, gallery.nrows(), opts.max_rank))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    fn l(pid: i32, camid: u32) -> Label {
        Label::new(pid, camid)
    }

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-9, "{a} != {b}");
    }

    #[test]
    fn same_camera_matches_are_ignored() {
        // gallery ranked: g0 (same pid, same cam: ignored), g1 (other pid), g2 (match, cam 2)
        let s = score_query(&[0.1, 0.2, 0.3], l(1, 1), &[l(1, 1), l(2, 1), l(1, 2)]).unwrap();
        assert_eq!(s.first_match, 1);
        close(s.ap, 0.5);
        // the same pid in the same camera is not a match either: no valid match at all
        assert_eq!(score_query(&[0.1, 0.2], l(1, 1), &[l(1, 1), l(2, 2)]), None);
    }

    #[test]
    fn junk_is_ignored_and_distractors_count_as_negatives() {
        // order: junk, distractor, match
        let g = [l(-1, 2), l(0, 2), l(7, 3)];
        let s = score_query(&[0.1, 0.2, 0.3], l(7, 1), &g).unwrap();
        assert_eq!(s.first_match, 1, "junk skipped, the distractor ranks first");
        close(s.ap, 0.5);
        // junk and distractor queries are skipped
        assert_eq!(score_query(&[0.1, 0.2, 0.3], l(-1, 1), &g), None);
        assert_eq!(score_query(&[0.1, 0.2, 0.3], l(0, 1), &g), None);
    }

    #[test]
    fn average_precision_by_hand() {
        // ranking: M N M N M  → precisions at matches 1/1, 2/3, 3/5
        let g = [l(1, 2), l(2, 2), l(1, 3), l(3, 1), l(1, 2)];
        let s = score_query(&[0.0, 1.0, 2.0, 3.0, 4.0], l(1, 1), &g).unwrap();
        assert_eq!(s.first_match, 0);
        close(s.ap, (1.0 + 2.0 / 3.0 + 3.0 / 5.0) / 3.0);
        // shuffled gallery order, same distances per item: same result
        let g2 = [l(3, 1), l(1, 2), l(1, 3), l(2, 2), l(1, 2)];
        let s2 = score_query(&[3.0, 4.0, 2.0, 1.0, 0.0], l(1, 1), &g2).unwrap();
        close(s2.ap, s.ap);
    }

    #[test]
    fn ties_are_broken_by_gallery_index() {
        // all distances equal: order is g0, g1, g2
        let s = score_query(&[0.5, 0.5, 0.5], l(1, 1), &[l(2, 2), l(1, 2), l(3, 2)]).unwrap();
        assert_eq!(s.first_match, 1);
        close(s.ap, 0.5);
        let s = score_query(&[0.5, 0.5, 0.5], l(1, 1), &[l(1, 2), l(2, 2), l(3, 2)]).unwrap();
        assert_eq!(s.first_match, 0);
        close(s.ap, 1.0);
        // a negative tied with a match but listed later ranks after it
        let s = score_query(&[0.5, 0.2, 0.5], l(1, 1), &[l(1, 2), l(4, 4), l(5, 5)]).unwrap();
        assert_eq!(s.first_match, 1);
    }

    #[test]
    fn cmc_and_map_over_queries_with_a_skipped_one() {
        let gallery = [l(1, 2), l(2, 2), l(3, 1), l(0, 1), l(-1, 2)];
        let query = [l(1, 1), l(2, 1), l(3, 1), l(9, 1)];
        let dist = array![
            [0.1, 0.5, 0.6, 0.7, 0.0], // q1: match first (junk at 0.0 ignored) → rank 0, AP 1
            [0.3, 0.9, 0.5, 0.1, 0.2], // q2: distractor, g0, g2 before g1 → rank 3, AP 1/4
            [0.1, 0.2, 0.3, 0.4, 0.5], // q3: only pid 3 is in its own camera → skipped
            [0.1, 0.2, 0.3, 0.4, 0.5], // q9: not in the gallery → skipped
        ];
        let m = evaluate_distances(dist.view(), &query, &gallery, 50).unwrap();
        assert_eq!(m.num_query, 4);
        assert_eq!(m.num_valid_query, 2);
        assert_eq!(m.num_skipped_query, 2);
        assert_eq!(m.cmc.len(), 5, "max rank clipped to the gallery size");
        close(m.rank(1), 0.5);
        close(m.rank(3), 0.5);
        close(m.rank(4), 1.0);
        close(m.rank(10), 1.0);
        close(m.map, (1.0 + 0.25) / 2.0);
    }

    #[test]
    fn no_valid_query_gives_zeros_not_nan() {
        let m = evaluate_distances(array![[0.1f32]].view(), &[l(1, 1)], &[l(1, 1)], 10).unwrap();
        assert_eq!(m.num_valid_query, 0);
        assert_eq!(m.map, 0.0);
        assert_eq!(m.rank(1), 0.0);
    }

    #[test]
    fn nan_distances_and_mismatched_labels_are_errors() {
        let e = evaluate_distances(array![[f32::NAN]].view(), &[l(1, 1)], &[l(1, 2)], 10);
        assert!(matches!(
            e,
            Err(MetricsError::NanDistance { row: 0, col: 0 })
        ));
        let f = array![[1.0f32, 0.0]];
        let e = evaluate(
            f.view(),
            f.view(),
            &[],
            &[l(1, 1)],
            &MetricOptions::default(),
        );
        assert!(
            e.unwrap_err()
                .to_string()
                .contains("1 feature rows but 0 labels")
        );
    }

    fn unit_features(rows: &[[f32; 3]]) -> Array2<f32> {
        let mut a = Array2::from_shape_fn((rows.len(), 3), |(i, j)| rows[i][j]);
        crate::reid::l2_normalize_rows(&mut a);
        a
    }

    #[test]
    fn features_match_the_distance_path_for_any_block_and_thread_count() {
        // a pseudo-random set: 40 queries, 120 gallery items, 10 identities, 3 cameras
        let mut rng = crate::dataset::rng::SplitMix64::new(7);
        let mut feats = |n: usize, labels: &mut Vec<Label>| {
            let mut a = Array2::<f32>::zeros((n, 8));
            for i in 0..n {
                let pid = (rng.next_u64() % 10) as i32 + 1;
                let cam = (rng.next_u64() % 3) as u32 + 1;
                labels.push(l(pid, cam));
                for j in 0..8 {
                    let centre = if j == (pid as usize % 8) { 2.0 } else { 0.0 };
                    a[[i, j]] = centre + rng.next_f32() - 0.5;
                }
            }
            crate::reid::l2_normalize_rows(&mut a);
            a
        };
        let (mut ql, mut gl) = (Vec::new(), Vec::new());
        let q = feats(40, &mut ql);
        let g = feats(120, &mut gl);
        let d = squared_distances(q.view(), g.view(), &squared_norms(g.view()));
        let want = evaluate_distances(d.view(), &ql, &gl, 50).unwrap();
        assert!(want.num_valid_query > 30);
        for (block, threads) in [(1, 1), (7, 2), (256, 3), (16, 4)] {
            let opts = MetricOptions {
                block,
                threads,
                ..MetricOptions::default()
            };
            let got = evaluate(q.view(), g.view(), &ql, &gl, &opts).unwrap();
            assert_eq!(got, want, "block {block}, threads {threads}");
        }
    }

    #[test]
    fn identical_features_rank_first() {
        let g = unit_features(&[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]);
        let q = g.clone();
        let gl = [l(1, 2), l(2, 2), l(3, 2)];
        let ql = [l(1, 1), l(2, 1), l(3, 1)];
        let m = evaluate(q.view(), g.view(), &ql, &gl, &MetricOptions::default()).unwrap();
        assert_eq!((m.rank(1), m.map), (1.0, 1.0));
    }
}
