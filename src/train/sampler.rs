//! P×K identity sampling (Hermans et al. 2017; torchreid's `RandomIdentitySampler`): every batch
//! holds P identities with K samples each, so the batch-hard triplet loss finds positives and
//! negatives in every batch. An epoch visits each identity's samples once, in chunks of K
//! (identities with fewer than K samples are topped up by drawing again from their own); the
//! chunks are shuffled and packed P at a time, never two chunks of one identity in a batch.
//! Fully determined by the seed.

use std::collections::BTreeMap;

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PkConfig {
    /// Identities per batch.
    pub p: usize,
    /// Samples per identity.
    pub k: usize,
}

impl PkConfig {
    pub fn batch_size(&self) -> usize {
        self.p * self.k
    }
}

/// The batches (sample indices, P×K each) of one epoch over `labels` (label of each sample).
/// Identities whose chunks cannot fill a last batch of P distinct identities are dropped for this
/// epoch (a different seed drops others). Empty when fewer than P identities exist.
pub fn pk_epoch(labels: &[usize], cfg: PkConfig, seed: u64) -> Vec<Vec<usize>> {
    assert!(cfg.p > 0 && cfg.k > 0, "P and K must be positive");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut by_id: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (i, &l) in labels.iter().enumerate() {
        by_id.entry(l).or_default().push(i);
    }
    // each identity's samples in shuffled chunks of K
    let mut chunks: BTreeMap<usize, Vec<Vec<usize>>> = BTreeMap::new();
    for (&id, idx) in &by_id {
        let mut idx = idx.clone();
        if idx.len() < cfg.k {
            let extra: Vec<usize> = (0..cfg.k - idx.len())
                .map(|_| *idx.choose(&mut rng).expect("non-empty"))
                .collect();
            idx.extend(extra);
        }
        idx.shuffle(&mut rng);
        let c: Vec<Vec<usize>> = idx
            .chunks(cfg.k)
            .filter(|c| c.len() == cfg.k)
            .map(<[usize]>::to_vec)
            .collect();
        chunks.insert(id, c);
    }
    // draw P distinct identities at a time while at least P have chunks left
    let mut batches = Vec::new();
    loop {
        let mut avail: Vec<usize> = chunks
            .iter()
            .filter(|(_, c)| !c.is_empty())
            .map(|(&id, _)| id)
            .collect();
        if avail.len() < cfg.p {
            break;
        }
        avail.shuffle(&mut rng);
        let mut batch = Vec::with_capacity(cfg.batch_size());
        for id in avail.into_iter().take(cfg.p) {
            batch.extend(chunks.get_mut(&id).and_then(Vec::pop).expect("available"));
        }
        batches.push(batch);
    }
    batches
}

/// Per-epoch seeds derived from one run seed, so that an epoch's batches do not depend on what
/// ran before (resuming from a checkpoint mid-run gives the same batches).
pub fn epoch_seed(run_seed: u64, epoch: u64) -> u64 {
    splitmix(run_seed ^ splitmix(epoch.wrapping_add(0x5045_4b53)))
}

/// SplitMix64: a good 64-bit mix for deriving seeds.
pub fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn batches_hold_p_identities_of_k_samples_and_are_seeded() {
        // 10 identities with 1..=10 samples each
        let labels: Vec<usize> = (0..10).flat_map(|id| vec![id; id + 1]).collect();
        let cfg = PkConfig { p: 4, k: 3 };
        let a = pk_epoch(&labels, cfg, 7);
        assert!(!a.is_empty());
        for b in &a {
            assert_eq!(b.len(), 12);
            let ids: Vec<usize> = b.iter().map(|&i| labels[i]).collect();
            let distinct: HashSet<usize> = ids.iter().copied().collect();
            assert_eq!(distinct.len(), 4);
            for id in distinct {
                assert_eq!(ids.iter().filter(|&&x| x == id).count(), 3);
            }
        }
        assert_eq!(a, pk_epoch(&labels, cfg, 7));
        assert_ne!(a, pk_epoch(&labels, cfg, 8));
        // samples of identities with ≥ K samples are not repeated within an epoch
        let used: Vec<usize> = a
            .iter()
            .flatten()
            .copied()
            .filter(|&i| labels[i] >= 2)
            .collect();
        assert_eq!(used.len(), used.iter().collect::<HashSet<_>>().len());
        assert!(pk_epoch(&[0, 0, 1, 1], PkConfig { p: 3, k: 2 }, 1).is_empty());
        assert_ne!(epoch_seed(1, 0), epoch_seed(1, 1));
    }
}
