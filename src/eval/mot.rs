//! Multi-object tracking metrics (CLEAR MOT and identity metrics) for scoring the tracker against
//! ground truth: per frame, ground-truth and hypothesis boxes are matched optimally at IoU ≥ 0.5
//! (keeping last frame's pairs when still valid, as CLEAR MOT prescribes).

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;

use crate::frame::BBox;
use crate::track::assign::assign;

#[derive(Debug, Clone, Copy)]
pub struct Obj {
    pub id: u64,
    pub bbox: BBox,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct MotMetrics {
    pub frames: usize,
    pub gt: usize,
    pub matches: usize,
    pub false_positives: usize,
    pub misses: usize,
    /// A ground-truth identity matched to a different track than the last time it was matched.
    pub id_switches: usize,
    /// A ground-truth trajectory's match interrupted and later resumed.
    pub fragmentations: usize,
    pub mota: f64,
    pub idf1: f64,
    /// Identity precision: IDTP / hypothesis boxes.
    pub idp: f64,
    /// Identity recall: IDTP / ground-truth boxes.
    pub idr: f64,
    /// Distinct track ids in the hypothesis.
    pub hyp_ids: usize,
    pub gt_ids: usize,
}

/// Scores `hyp` against `gt`, both per frame (frames missing from one side count as empty).
pub fn evaluate(
    gt: &BTreeMap<u64, Vec<Obj>>,
    hyp: &BTreeMap<u64, Vec<Obj>>,
    min_iou: f32,
) -> MotMetrics {
    let frames: HashSet<u64> = gt.keys().chain(hyp.keys()).copied().collect();
    let mut frames: Vec<u64> = frames.into_iter().collect();
    frames.sort_unstable();
    let mut m = MotMetrics {
        frames: frames.len(),
        ..Default::default()
    };
    let mut last_match: HashMap<u64, u64> = HashMap::new(); // gt id -> hyp id
    let mut was_matched: HashMap<u64, bool> = HashMap::new(); // gt id -> matched in its previous frame
    let mut pair_frames: HashMap<(u64, u64), usize> = HashMap::new();
    let mut gt_count: HashMap<u64, usize> = HashMap::new();
    let mut hyp_count: HashMap<u64, usize> = HashMap::new();
    let empty = Vec::new();
    for f in frames {
        let g = gt.get(&f).unwrap_or(&empty);
        let h = hyp.get(&f).unwrap_or(&empty);
        m.gt += g.len();
        for o in g {
            *gt_count.entry(o.id).or_default() += 1;
        }
        for o in h {
            *hyp_count.entry(o.id).or_default() += 1;
        }
        let mut cost = vec![1.0f32; g.len() * h.len()];
        for (i, a) in g.iter().enumerate() {
            for (j, b) in h.iter().enumerate() {
                let iou = a.bbox.iou(&b.bbox);
                // keep last frame's correspondences when still valid (CLEAR MOT)
                let bonus = if last_match.get(&a.id) == Some(&b.id) {
                    1.0
                } else {
                    0.0
                };
                cost[i * h.len() + j] = if iou >= min_iou {
                    1.0 - iou - bonus
                } else {
                    10.0
                };
            }
        }
        let (pairs, _, _) = assign(&cost, g.len(), h.len(), 1.0 - min_iou);
        let matched_gt: HashSet<u64> = pairs.iter().map(|&(i, _)| g[i].id).collect();
        for &(i, j) in &pairs {
            let (gid, hid) = (g[i].id, h[j].id);
            m.matches += 1;
            if let Some(&prev) = last_match.get(&gid)
                && prev != hid
            {
                m.id_switches += 1;
            }
            if was_matched.get(&gid) == Some(&false) && last_match.contains_key(&gid) {
                m.fragmentations += 1;
            }
            last_match.insert(gid, hid);
            *pair_frames.entry((gid, hid)).or_default() += 1;
        }
        for o in g {
            was_matched.insert(o.id, matched_gt.contains(&o.id));
        }
        m.misses += g.len() - pairs.len();
        m.false_positives += h.len() - pairs.len();
    }
    m.mota = if m.gt == 0 {
        0.0
    } else {
        1.0 - (m.misses + m.false_positives + m.id_switches) as f64 / m.gt as f64
    };
    // IDF1: one-to-one identity assignment maximising frames where the pair matches
    let gids: Vec<u64> = gt_count.keys().copied().collect();
    let hids: Vec<u64> = hyp_count.keys().copied().collect();
    let mut cost = vec![0f32; gids.len() * hids.len()];
    for (i, g) in gids.iter().enumerate() {
        for (j, h) in hids.iter().enumerate() {
            cost[i * hids.len() + j] = -(pair_frames.get(&(*g, *h)).copied().unwrap_or(0) as f32);
        }
    }
    let (pairs, _, _) = assign(&cost, gids.len(), hids.len(), 0.0);
    let idtp: usize = pairs
        .iter()
        .map(|&(i, j)| pair_frames.get(&(gids[i], hids[j])).copied().unwrap_or(0))
        .sum();
    let total_gt: usize = gt_count.values().sum();
    let total_hyp: usize = hyp_count.values().sum();
    m.idf1 = if total_gt + total_hyp == 0 {
        0.0
    } else {
        2.0 * idtp as f64 / (total_gt + total_hyp) as f64
    };
    m.idp = if total_hyp == 0 {
        0.0
    } else {
        idtp as f64 / total_hyp as f64
    };
    m.idr = if total_gt == 0 {
        0.0
    } else {
        idtp as f64 / total_gt as f64
    };
    m.gt_ids = gids.len();
    m.hyp_ids = hids.len();
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(objs: &[(u64, f32)]) -> Vec<Obj> {
        objs.iter()
            .map(|&(id, x)| Obj {
                id,
                bbox: BBox::new(x, 0.0, x + 10.0, 20.0),
            })
            .collect()
    }

    #[test]
    fn perfect_tracking_scores_one() {
        let gt: BTreeMap<u64, Vec<Obj>> = (1..=5)
            .map(|f| (f, frame(&[(1, f as f32), (2, 50.0)])))
            .collect();
        let m = evaluate(&gt, &gt, 0.5);
        assert_eq!((m.matches, m.id_switches, m.fragmentations), (10, 0, 0));
        assert!((m.mota - 1.0).abs() < 1e-9 && (m.idf1 - 1.0).abs() < 1e-9);
    }

    #[test]
    fn a_swap_counts_two_switches_and_a_gap_one_fragmentation() {
        let gt: BTreeMap<u64, Vec<Obj>> = (1..=4)
            .map(|f| (f, frame(&[(1, 0.0), (2, 50.0)])))
            .collect();
        let mut hyp = gt.clone();
        // frames 3-4: the hypothesis swaps the two ids
        for f in 3..=4 {
            hyp.insert(f, frame(&[(2, 0.0), (1, 50.0)]));
        }
        let m = evaluate(&gt, &hyp, 0.5);
        assert_eq!(m.id_switches, 2);
        assert!((m.mota - 0.75).abs() < 1e-9);
        assert!((m.idf1 - 0.5).abs() < 1e-9);
        assert!((m.idp - 0.5).abs() < 1e-9 && (m.idr - 0.5).abs() < 1e-9);
        let mut gap = gt.clone();
        gap.insert(2, frame(&[(2, 50.0)]));
        let m = evaluate(&gt, &gap, 0.5);
        assert_eq!((m.fragmentations, m.misses, m.id_switches), (1, 1, 0));
    }
}
