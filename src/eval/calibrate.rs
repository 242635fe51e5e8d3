//! Linking calibration: how similar an embedder makes one person seen by two cameras, and two
//! different people, at the level the linker works at — one descriptor per tracklet (the mean of
//! its crops' unit embeddings, re-normalised). From a dataset's query and gallery sets, crops are
//! grouped into tracklets by (person, camera, sequence); every pair of tracklets from different
//! cameras is "same" or "different"; the threshold that best separates them (pair F1) is the
//! embedder's suggested `linking.threshold` (models/manifest.toml, `[model.linking]`).

use std::collections::BTreeMap;

use ndarray::{Array2, ArrayView2};
use serde::Serialize;

use super::Item;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LinkCalibrationReport {
    /// Tracklets (person, camera, sequence) with at least one crop.
    pub tracklets: usize,
    pub same_pairs: usize,
    pub different_pairs: usize,
    /// Percentiles 10, 50, 90 of same-person cross-camera similarities.
    pub same: [f32; 3],
    /// Percentiles 50, 90, 99 of different-people cross-camera similarities.
    pub different: [f32; 3],
    /// The threshold (0.01 steps) with the best pair F1, and that F1.
    pub threshold: f32,
    pub f1: f64,
    /// Precision and recall of the pairs at `threshold`.
    pub precision: f64,
    pub recall: f64,
}

fn percentile(sorted: &[f32], p: f64) -> f32 {
    if sorted.is_empty() {
        return f32::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p / 100.0).round() as usize;
    sorted[i]
}

/// Calibrates from crops `items` and their unit embeddings `features` (rows in item order).
/// `None` when no person is seen by two cameras.
pub fn calibrate(items: &[&Item], features: ArrayView2<f32>) -> Option<LinkCalibrationReport> {
    let mut groups: BTreeMap<(i32, u32, u32), Vec<usize>> = BTreeMap::new();
    for (i, it) in items.iter().enumerate() {
        if it.pid > 0 {
            groups
                .entry((it.pid, it.camid, it.seq.unwrap_or(0)))
                .or_default()
                .push(i);
        }
    }
    let keys: Vec<_> = groups.keys().copied().collect();
    let dim = features.ncols();
    let mut desc = Array2::<f32>::zeros((keys.len(), dim));
    for (k, rows) in groups.values().enumerate() {
        let mut row = desc.row_mut(k);
        for &r in rows {
            row += &features.row(r);
        }
        let n = row.dot(&row).sqrt().max(1e-12);
        row /= n;
    }
    let sims = desc.dot(&desc.t());
    let (mut same, mut diff) = (Vec::new(), Vec::new());
    for i in 0..keys.len() {
        for j in i + 1..keys.len() {
            if keys[i].1 == keys[j].1 {
                continue;
            }
            if keys[i].0 == keys[j].0 {
                same.push(sims[[i, j]]);
            } else {
                diff.push(sims[[i, j]]);
            }
        }
    }
    if same.is_empty() {
        return None;
    }
    same.sort_by(f32::total_cmp);
    diff.sort_by(f32::total_cmp);
    let above = |v: &[f32], t: f32| v.len() - v.partition_point(|&s| s < t);
    let mut best = (f64::MIN, 0.0f32, 0.0, 0.0);
    for step in -100..=100 {
        let t = step as f32 / 100.0;
        let tp = above(&same, t) as f64;
        let fp = above(&diff, t) as f64;
        let precision = if tp + fp > 0.0 { tp / (tp + fp) } else { 0.0 };
        let recall = tp / same.len() as f64;
        let f1 = if precision + recall > 0.0 {
            2.0 * precision * recall / (precision + recall)
        } else {
            0.0
        };
        if f1 > best.0 {
            best = (f1, t, precision, recall);
        }
    }
    Some(LinkCalibrationReport {
        tracklets: keys.len(),
        same_pairs: same.len(),
        different_pairs: diff.len(),
        same: [10.0, 50.0, 90.0].map(|p| percentile(&same, p)),
        different: [50.0, 90.0, 99.0].map(|p| percentile(&diff, p)),
        threshold: best.1,
        f1: best.0,
        precision: best.2,
        recall: best.3,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn item(pid: i32, camid: u32, seq: u32) -> Item {
        Item {
            path: PathBuf::from("x.jpg"),
            pid,
            camid,
            seq: Some(seq),
            frame: None,
        }
    }

    #[test]
    fn separable_people_get_a_threshold_between_them() {
        // persons 1 and 2 each seen by cameras 1 and 2: same-person cosine 0.8, different 0
        let items = [item(1, 1, 1), item(1, 2, 1), item(2, 1, 1), item(2, 2, 1)];
        let f = ndarray::array![
            [1.0f32, 0.0, 0.0, 0.0],
            [0.8, 0.6, 0.0, 0.0],
            [0.0, 0.0, 1.0, 0.0],
            [0.0, 0.0, 0.8, 0.6],
        ];
        let refs: Vec<&Item> = items.iter().collect();
        let r = calibrate(&refs, f.view()).unwrap();
        assert_eq!((r.tracklets, r.same_pairs, r.different_pairs), (4, 2, 2));
        assert!((r.same[1] - 0.8).abs() < 1e-6);
        assert!(r.different[2].abs() < 1e-6);
        assert!(r.threshold > 0.0 && r.threshold <= 0.8, "{r:?}");
        assert_eq!(r.f1, 1.0);
    }

    #[test]
    fn crops_of_one_tracklet_are_averaged_and_junk_ignored() {
        let items = [
            item(1, 1, 1),
            item(1, 1, 1),
            item(1, 2, 1),
            item(-1, 2, 1),
            item(0, 1, 1),
        ];
        let f = ndarray::array![
            [1.0f32, 0.0],
            [0.0, 1.0],
            [0.70710677, 0.70710677],
            [1.0, 0.0],
            [0.0, 1.0],
        ];
        let refs: Vec<&Item> = items.iter().collect();
        let r = calibrate(&refs, f.view()).unwrap();
        assert_eq!((r.tracklets, r.same_pairs, r.different_pairs), (2, 1, 0));
        assert!((r.same[1] - 1.0).abs() < 1e-5, "{r:?}");
    }

    #[test]
    fn nobody_in_two_cameras_gives_nothing() {
        let items = [item(1, 1, 1), item(2, 2, 1)];
        let f = ndarray::array![[1.0f32, 0.0], [0.0, 1.0]];
        let refs: Vec<&Item> = items.iter().collect();
        assert!(calibrate(&refs, f.view()).is_none());
    }
}
