//! Clustering for pseudo-labels: k-reciprocal Jaccard distances (Zhong et al. 2017, in the form
//! SpCL / Cluster-Contrast use for unsupervised re-id) and DBSCAN on a precomputed distance matrix,
//! with optional cannot-link constraints (two tracklets seen at the same time in one camera are
//! never put into one cluster). Dense `n × n` matrices: meant for hundreds to a few thousand
//! tracklets, which is what one site's re-tuning job holds.

/// A dense square matrix, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct Square {
    pub n: usize,
    pub v: Vec<f32>,
}

impl Square {
    pub fn zeros(n: usize) -> Square {
        Square {
            n,
            v: vec![0.0; n * n],
        }
    }
    pub fn get(&self, i: usize, j: usize) -> f32 {
        self.v[i * self.n + j]
    }
    pub fn set(&mut self, i: usize, j: usize, x: f32) {
        self.v[i * self.n + j] = x;
    }
}

/// Squared Euclidean distances between L2-normalised rows (`2 − 2·cos`); `rows` is `n × d`.
pub fn cosine_distances(rows: &[f32], d: usize) -> Square {
    let n = rows.len() / d;
    let norm: Vec<Vec<f32>> = rows
        .chunks(d)
        .map(|r| {
            let l = r.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
            r.iter().map(|x| x / l).collect()
        })
        .collect();
    let mut m = Square::zeros(n);
    for i in 0..n {
        for j in i..n {
            let dot: f32 = norm[i].iter().zip(&norm[j]).map(|(a, b)| a * b).sum();
            let v = (2.0 - 2.0 * dot).max(0.0);
            m.set(i, j, v);
            m.set(j, i, v);
        }
    }
    m
}

/// Parameters of [`jaccard_distances`] (SpCL defaults: k1 = 30, k2 = 6).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct JaccardConfig {
    /// Neighbourhood size for k-reciprocal sets.
    pub k1: usize,
    /// Neighbours averaged in the local query expansion (1 = none).
    pub k2: usize,
}

impl Default for JaccardConfig {
    fn default() -> JaccardConfig {
        JaccardConfig { k1: 30, k2: 6 }
    }
}

/// k-reciprocal Jaccard distances from an original distance matrix (e.g. [`cosine_distances`]).
/// Each point's k-reciprocal set (neighbours that have it among theirs too) is expanded by the
/// sets of its members that overlap it by more than 2/3; the set is weighted by `softmax(−d)`,
/// averaged over the k2 nearest neighbours, and two points compare by the weighted Jaccard
/// distance `1 − Σmin/Σmax` of their weights. 0 for identical neighbourhoods, 1 for disjoint.
pub fn jaccard_distances(dist: &Square, cfg: JaccardConfig) -> Square {
    let n = dist.n;
    if n == 0 {
        return Square::zeros(0);
    }
    let k1 = cfg.k1.min(n - 1).max(1);
    let k2 = cfg.k2.clamp(1, n);
    // neighbours of each point by increasing distance (itself first)
    let rank: Vec<Vec<usize>> = (0..n)
        .map(|i| {
            let mut idx: Vec<usize> = (0..n).collect();
            idx.sort_by(|&a, &b| {
                let (da, db) = (dist.get(i, a), dist.get(i, b));
                da.total_cmp(&db)
                    .then((a != i).cmp(&(b != i)))
                    .then(a.cmp(&b))
            });
            idx
        })
        .collect();
    let reciprocal = |i: usize, k: usize| -> Vec<usize> {
        let k = (k + 1).min(n);
        rank[i][..k]
            .iter()
            .copied()
            .filter(|&j| rank[j][..k].contains(&i))
            .collect()
    };
    // numpy's `around` (ties to even), as the reference implementation rounds k1/2
    let half = (k1 as f64 / 2.0).round_ties_even() as usize;
    let r_full: Vec<Vec<usize>> = (0..n).map(|i| reciprocal(i, k1)).collect();
    let r_half: Vec<Vec<usize>> = (0..n).map(|i| reciprocal(i, half)).collect();
    let mut v = Square::zeros(n);
    for (i, ri) in r_full.iter().enumerate() {
        let mut set = ri.clone();
        for &c in ri {
            let cand = &r_half[c];
            let common = cand.iter().filter(|j| ri.contains(j)).count();
            if common as f64 > 2.0 / 3.0 * cand.len() as f64 {
                set.extend(cand.iter().copied());
            }
        }
        set.sort_unstable();
        set.dedup();
        // softmax(−d) over the expanded set
        let m = set
            .iter()
            .map(|&j| -dist.get(i, j))
            .fold(f32::NEG_INFINITY, f32::max);
        let w: Vec<f32> = set.iter().map(|&j| (-dist.get(i, j) - m).exp()).collect();
        let s: f32 = w.iter().sum();
        for (&j, wj) in set.iter().zip(w) {
            v.set(i, j, wj / s);
        }
    }
    if k2 > 1 {
        let mut qe = Square::zeros(n);
        for (i, ranked) in rank.iter().enumerate() {
            for &j in &ranked[..k2] {
                for c in 0..n {
                    qe.v[i * n + c] += v.get(j, c) / k2 as f32;
                }
            }
        }
        v = qe;
    }
    let mut out = Square::zeros(n);
    for i in 0..n {
        for j in i..n {
            let (mut mn, mut mx) = (0.0f32, 0.0f32);
            for c in 0..n {
                let (a, b) = (v.get(i, c), v.get(j, c));
                mn += a.min(b);
                mx += a.max(b);
            }
            let d = if mx > 0.0 { 1.0 - mn / mx } else { 1.0 };
            out.set(i, j, d);
            out.set(j, i, d);
        }
    }
    out
}

/// DBSCAN on a precomputed distance matrix: a point with at least `min_samples` points (itself
/// included) within `eps` is a core point; clusters are the core points reachable from each other
/// plus their neighbours. `cannot_link(i, j)` keeps `j` out of a cluster that holds an `i` it may
/// not join (the point is then left for another cluster or to noise). Labels: cluster ids from 0
/// in order of discovery, −1 for noise.
pub fn dbscan(
    dist: &Square,
    eps: f32,
    min_samples: usize,
    cannot_link: &dyn Fn(usize, usize) -> bool,
) -> Vec<i64> {
    let n = dist.n;
    let neighbours =
        |i: usize| -> Vec<usize> { (0..n).filter(|&j| dist.get(i, j) <= eps).collect() };
    let mut label = vec![-1i64; n];
    let mut visited = vec![false; n];
    let mut next = 0i64;
    for p in 0..n {
        if visited[p] || label[p] >= 0 {
            continue;
        }
        visited[p] = true;
        let nb = neighbours(p);
        if nb.len() < min_samples {
            continue;
        }
        let c = next;
        next += 1;
        label[p] = c;
        let mut members = vec![p];
        let mut queue: std::collections::VecDeque<usize> = nb.into_iter().collect();
        while let Some(q) = queue.pop_front() {
            if label[q] >= 0 || members.iter().any(|&m| cannot_link(m, q)) {
                continue;
            }
            label[q] = c;
            members.push(q);
            if !visited[q] {
                visited[q] = true;
                let nq = neighbours(q);
                if nq.len() >= min_samples {
                    queue.extend(nq);
                }
            }
        }
    }
    label
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::model::normal;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn euclid_1d(xs: &[f32]) -> Square {
        let mut m = Square::zeros(xs.len());
        for i in 0..xs.len() {
            for j in 0..xs.len() {
                m.set(i, j, (xs[i] - xs[j]).abs());
            }
        }
        m
    }

    #[test]
    fn dbscan_finds_dense_groups_border_points_and_noise() {
        let xs = [0.0, 0.1, 0.2, 0.3, 5.0, 5.1, 5.2, 9.0, 0.5];
        let l = dbscan(&euclid_1d(&xs), 0.25, 3, &|_, _| false);
        assert_eq!(l, vec![0, 0, 0, 0, 1, 1, 1, -1, 0]);
        // a cannot-link between the two ends of the chain splits it
        let l = dbscan(&euclid_1d(&xs), 0.25, 2, &|a, b| {
            (a.min(b), a.max(b)) == (0, 3)
        });
        assert_eq!(l[0], l[1]);
        assert_ne!(l[0], l[3]);
    }

    #[test]
    fn jaccard_distances_match_the_spcl_reference() {
        // expected: SpCL / Cluster-Contrast `compute_jaccard_distance` (numpy transliteration of
        // the reference, run once offline) on these 10 unit vectors with k1 = 4, k2 = 2
        let raw: [[f32; 3]; 10] = [
            [1.0, 0.1, 0.0],
            [0.9, 0.2, 0.1],
            [1.0, -0.1, 0.2],
            [0.1, 1.0, 0.0],
            [0.0, 0.9, 0.3],
            [0.2, 1.0, -0.2],
            [0.0, 0.1, 1.0],
            [0.3, 0.3, 0.9],
            [0.7, 0.7, 0.1],
            [-0.2, 0.1, 1.0],
        ];
        let rows: Vec<f32> = raw.iter().flatten().copied().collect();
        let want: [[f32; 10]; 10] = [
            [
                0.0, 0.0, 0.184632, 0.895571, 0.952486, 0.895571, 1.0, 1.0, 0.365989, 1.0,
            ],
            [
                0.0, 0.0, 0.184632, 0.895571, 0.952486, 0.895571, 1.0, 1.0, 0.365989, 1.0,
            ],
            [
                0.184632, 0.184632, 0.0, 0.953217, 0.953217, 0.953217, 1.0, 1.0, 0.491349, 1.0,
            ],
            [
                0.895571, 0.895571, 0.953217, 0.0, 0.223501, 0.0, 1.0, 0.963792, 0.776178, 1.0,
            ],
            [
                0.952486, 0.952486, 0.953217, 0.223501, 0.0, 0.223501, 0.964069, 0.925161,
                0.845676, 0.964069,
            ],
            [
                0.895571, 0.895571, 0.953217, 0.0, 0.223501, 0.0, 1.0, 0.963792, 0.776178, 1.0,
            ],
            [1.0, 1.0, 1.0, 1.0, 0.964069, 1.0, 0.0, 0.176286, 1.0, 0.0],
            [
                1.0, 1.0, 1.0, 0.963792, 0.925161, 0.963792, 0.176286, 0.0, 1.0, 0.176286,
            ],
            [
                0.365989, 0.365989, 0.491349, 0.776178, 0.845676, 0.776178, 1.0, 1.0, 0.0, 1.0,
            ],
            [1.0, 1.0, 1.0, 1.0, 0.964069, 1.0, 0.0, 0.176286, 1.0, 0.0],
        ];
        let got = jaccard_distances(&cosine_distances(&rows, 3), JaccardConfig { k1: 4, k2: 2 });
        for (i, row) in want.iter().enumerate() {
            for (j, &w) in row.iter().enumerate() {
                assert!(
                    (got.get(i, j) - w).abs() < 1e-5,
                    "({i},{j}): {} vs {w}",
                    got.get(i, j)
                );
            }
        }
    }

    #[test]
    fn jaccard_dbscan_recovers_synthetic_identities() {
        // 5 identities × 12 samples in 32-D: random unit centres, Gaussian noise
        let mut rng = StdRng::seed_from_u64(11);
        let (ids, per, d) = (5usize, 12usize, 32usize);
        let centres: Vec<Vec<f32>> = (0..ids)
            .map(|_| (0..d).map(|_| normal(&mut rng)).collect())
            .collect();
        let mut rows = Vec::new();
        let mut truth = Vec::new();
        for (id, c) in centres.iter().enumerate() {
            let l = c.iter().map(|x| x * x).sum::<f32>().sqrt();
            for _ in 0..per {
                rows.extend(c.iter().map(|x| x / l + 0.08 * normal(&mut rng)));
                truth.push(id);
            }
        }
        let dist = cosine_distances(&rows, d);
        let jac = jaccard_distances(&dist, JaccardConfig { k1: 10, k2: 4 });
        for i in 0..jac.n {
            assert!(jac.get(i, i).abs() < 1e-6);
        }
        let labels = dbscan(&jac, 0.6, 4, &|_, _| false);
        // same identity ⇔ same cluster, no noise
        for i in 0..labels.len() {
            assert!(labels[i] >= 0);
            for j in 0..labels.len() {
                assert_eq!(labels[i] == labels[j], truth[i] == truth[j], "{i} {j}");
            }
        }
        // the Jaccard distance separates identities more than the original one does
        let (mut within, mut across) = (0.0f32, f32::MAX);
        for i in 0..labels.len() {
            for j in 0..labels.len() {
                if truth[i] == truth[j] {
                    within = within.max(jac.get(i, j));
                } else {
                    across = across.min(jac.get(i, j));
                }
            }
        }
        assert!(within < across, "{within} vs {across}");
    }
}
