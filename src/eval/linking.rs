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

/// How clean the identities are, tracklet by tracklet (each tracklet counted once, by its
/// ground-truth person): fragmentation (identities per person), purity (people per identity)
/// and wrong merges. A wrong merge is one person too many in an identity: an identity holding
/// tracklets of three people counts two. That is the error an operator cannot see without
/// opening the identity, so it is counted apart from pair precision.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct IdentityScores {
    /// Ground-truth people with at least one scored tracklet.
    pub persons: usize,
    /// Identities holding at least one scored tracklet.
    pub identities: usize,
    /// Mean over people of the identities their tracklets were given (1 = never split).
    pub ids_per_person: f64,
    /// Mean over identities of the people their tracklets belong to (1 = pure).
    pub people_per_id: f64,
    /// Σ over identities of (people in it − 1).
    pub wrong_merges: u64,
}

pub fn identity_scores(items: &[Labelled]) -> IdentityScores {
    use std::collections::{BTreeMap, BTreeSet};
    let mut ids_of: BTreeMap<u64, BTreeSet<i64>> = BTreeMap::new();
    let mut people_of: BTreeMap<i64, BTreeSet<u64>> = BTreeMap::new();
    for it in items {
        ids_of.entry(it.truth).or_default().insert(it.identity);
        people_of.entry(it.identity).or_default().insert(it.truth);
    }
    let mean = |v: Vec<usize>| {
        if v.is_empty() {
            0.0
        } else {
            v.iter().sum::<usize>() as f64 / v.len() as f64
        }
    };
    IdentityScores {
        persons: ids_of.len(),
        identities: people_of.len(),
        ids_per_person: mean(ids_of.values().map(|s| s.len()).collect()),
        people_per_id: mean(people_of.values().map(|s| s.len()).collect()),
        wrong_merges: people_of.values().map(|s| s.len() as u64 - 1).sum(),
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
        // identity 2 holds persons 2 and 3: one wrong merge; person 2 has identities 2 and 5
        let s = identity_scores(&items);
        assert_eq!((s.persons, s.identities, s.wrong_merges), (3, 3, 1));
        assert!((s.ids_per_person - 4.0 / 3.0).abs() < 1e-9);
        assert!((s.people_per_id - 4.0 / 3.0).abs() < 1e-9);
        assert_eq!(majority(&[3], 2), None);
    }
}
