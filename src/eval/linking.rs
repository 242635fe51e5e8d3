//! Scoring cross-camera identity linking against (pseudo) ground truth: over every pair of
//! tracklets from different cameras, "linked" (same identity) is compared with "same person"
//! (same ground-truth id). Precision, recall and F1 of the linked pairs, and the two trivial
//! baselines any linker must beat: every tracklet a new identity, and everyone one identity.

use std::collections::HashMap;

use serde::Serialize;

/// One tracklet as the linker labelled it and as the ground truth labels it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Labelled {
    pub camera: String,
    pub identity: i64,
    pub truth: u64,
}

#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct PairScores {
    /// Cross-camera pairs of the same person.
    pub true_pairs: u64,
    /// Cross-camera pairs given the same identity.
    pub linked_pairs: u64,
    /// Pairs both linked and of the same person.
    pub correct: u64,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct LinkReport {
    pub tracklets: usize,
    pub linker: PairScores,
    pub baseline_all_new: PairScores,
    pub baseline_one_person: PairScores,
}

fn scores(true_pairs: u64, linked_pairs: u64, correct: u64) -> PairScores {
    let precision = if linked_pairs == 0 {
        0.0
    } else {
        correct as f64 / linked_pairs as f64
    };
    let recall = if true_pairs == 0 {
        0.0
    } else {
        correct as f64 / true_pairs as f64
    };
    let f1 = if precision + recall == 0.0 {
        0.0
    } else {
        2.0 * precision * recall / (precision + recall)
    };
    PairScores {
        true_pairs,
        linked_pairs,
        correct,
        precision,
        recall,
        f1,
    }
}

pub fn evaluate(items: &[Labelled]) -> LinkReport {
    let (mut true_pairs, mut linked, mut correct, mut cross) = (0u64, 0u64, 0u64, 0u64);
    for i in 0..items.len() {
        for j in i + 1..items.len() {
            let (a, b) = (&items[i], &items[j]);
            if a.camera == b.camera {
                continue;
            }
            cross += 1;
            let same = a.truth == b.truth;
            let link = a.identity == b.identity;
            true_pairs += same as u64;
            linked += link as u64;
            correct += (same && link) as u64;
        }
    }
    LinkReport {
        tracklets: items.len(),
        linker: scores(true_pairs, linked, correct),
        baseline_all_new: scores(true_pairs, 0, 0),
        baseline_one_person: scores(true_pairs, cross, true_pairs),
    }
}

/// Majority vote: the ground-truth id a tracklet overlaps most often (None below `min_votes`).
pub fn majority(votes: &[u64], min_votes: usize) -> Option<u64> {
    let mut count: HashMap<u64, usize> = HashMap::new();
    for v in votes {
        *count.entry(*v).or_default() += 1;
    }
    count
        .into_iter()
        .filter(|(_, n)| *n >= min_votes)
        .max_by_key(|(id, n)| (*n, std::cmp::Reverse(*id)))
        .map(|(id, _)| id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(camera: &str, identity: i64, truth: u64) -> Labelled {
        Labelled {
            camera: camera.into(),
            identity,
            truth,
        }
    }

    #[test]
    fn pair_counts_and_baselines() {
        // person 1 in both cameras (linked), person 2 in both (missed), person 3 only in b,
        // and a wrong link of person 3 with person 2's a-tracklet
        let items = vec![
            l("a", 1, 1),
            l("b", 1, 1),
            l("a", 2, 2),
            l("b", 5, 2),
            l("b", 2, 3),
        ];
        let r = evaluate(&items);
        // cross pairs: 2 (a) × 3 (b) = 6; true: (1,1), (2,2) = 2; linked: (a1,b1), (a2,b2→id2) = 2
        assert_eq!(
            (r.linker.true_pairs, r.linker.linked_pairs, r.linker.correct),
            (2, 2, 1)
        );
        assert!((r.linker.f1 - 0.5).abs() < 1e-9);
        assert_eq!(r.baseline_all_new.f1, 0.0);
        assert!((r.baseline_one_person.precision - 2.0 / 6.0).abs() < 1e-9);
        assert_eq!(r.baseline_one_person.recall, 1.0);
        assert_eq!(majority(&[3, 3, 4, 3], 2), Some(3));
        assert_eq!(majority(&[3], 2), None);
    }
}
