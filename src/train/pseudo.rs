//! Pseudo-identities for unlabeled target footage, from the free supervision a surveillance server
//! has: the crops of one tracklet are one person; two tracklets alive at the same time in one
//! camera are two people; across cameras (and across time in one camera) tracklets are grouped by
//! DBSCAN on k-reciprocal Jaccard distances of their mean embeddings, with the cannot-links above
//! enforced. Tracklets DBSCAN leaves as noise stay identities of their own (a tracklet is still
//! one person). The trainer re-clusters with the current network every few epochs.

use std::sync::Arc;
use std::time::Duration;

use burn::tensor::Tensor;
use image::RgbImage;

use super::augment;
use super::cluster::{JaccardConfig, Square, cosine_distances, dbscan, jaccard_distances};
use super::model::{ReidModel, tensor_vec};
use crate::frame::Normalize;
use crate::track::tracklet::Tracklet;

/// One tracklet's crops and where/when it was seen.
#[derive(Clone, Debug)]
pub struct TrackletCrops {
    pub camera: String,
    pub track: u64,
    pub start: Duration,
    pub end: Duration,
    pub crops: Vec<Arc<RgbImage>>,
}

impl TrackletCrops {
    pub fn from_tracklet(t: &Tracklet) -> TrackletCrops {
        TrackletCrops {
            camera: t.camera.clone(),
            track: t.id,
            start: t.start,
            end: t.end,
            crops: t.crops.iter().map(|c| c.image.clone()).collect(),
        }
    }

    /// Same camera and alive at the same time: certainly two different people.
    pub fn coexists_with(&self, o: &TrackletCrops) -> bool {
        self.camera == o.camera && self.start <= o.end && o.start <= self.end
    }
}

#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PseudoConfig {
    pub jaccard: JaccardConfig,
    /// DBSCAN radius on the Jaccard distance (SpCL: 0.6).
    pub eps: f32,
    /// DBSCAN core size in tracklets (itself included).
    pub min_samples: usize,
    /// Re-cluster every this many epochs (≥ 1).
    pub refresh_every: u64,
}

impl Default for PseudoConfig {
    fn default() -> PseudoConfig {
        PseudoConfig {
            jaccard: JaccardConfig { k1: 20, k2: 6 },
            eps: 0.6,
            min_samples: 2,
            refresh_every: 1,
        }
    }
}

/// The outcome of one clustering.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PseudoLabels {
    /// Identity of each tracklet (dense, from 0).
    pub tracklet: Vec<i64>,
    /// Identities holding more than one tracklet.
    pub clusters: usize,
    /// Tracklets left on their own.
    pub singletons: usize,
}

impl PseudoLabels {
    /// Every tracklet its own identity.
    pub fn per_tracklet(n: usize) -> PseudoLabels {
        PseudoLabels {
            tracklet: (0..n as i64).collect(),
            clusters: 0,
            singletons: n,
        }
    }

    pub fn identities(&self) -> usize {
        self.tracklet
            .iter()
            .max()
            .map(|&m| m as usize + 1)
            .unwrap_or(0)
    }

    /// One label per crop, in the order [`crop_index`] lists the crops.
    pub fn per_crop(&self, tracklets: &[TrackletCrops]) -> Vec<i64> {
        tracklets
            .iter()
            .zip(&self.tracklet)
            .flat_map(|(t, &l)| std::iter::repeat_n(l, t.crops.len()))
            .collect()
    }
}

/// `(tracklet, crop)` for every crop, tracklet by tracklet.
pub fn crop_index(tracklets: &[TrackletCrops]) -> Vec<(usize, usize)> {
    tracklets
        .iter()
        .enumerate()
        .flat_map(|(t, tr)| (0..tr.crops.len()).map(move |c| (t, c)))
        .collect()
}

/// An operator's verdict on two tracklets (indices into the tracklets being clustered):
/// the same person (must-link) or two people (cannot-link).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Constraint {
    pub a: usize,
    pub b: usize,
    pub same: bool,
}

/// Clusters tracklets given their features (`n × d`, one row per tracklet).
pub fn cluster_tracklets(
    features: &[f32],
    d: usize,
    tracklets: &[TrackletCrops],
    cfg: &PseudoConfig,
) -> PseudoLabels {
    cluster_tracklets_with(features, d, tracklets, cfg, &[])
}

/// [`cluster_tracklets`] with operators' labels as constraints. A cannot-link is treated like
/// two tracklets alive together in one camera: the largest distance, and DBSCAN never puts
/// them in one cluster. A must-link joins, after DBSCAN, the clusters (or lone tracklets) of its
/// two ends — unless that would put two tracklets of a cannot-link (or coexisting ones)
/// together: a human's "different" or the camera's certainty wins over a "same" that
/// contradicts it.
pub fn cluster_tracklets_with(
    features: &[f32],
    d: usize,
    tracklets: &[TrackletCrops],
    cfg: &PseudoConfig,
    constraints: &[Constraint],
) -> PseudoLabels {
    let n = tracklets.len();
    assert_eq!(features.len(), n * d, "one feature row per tracklet");
    let valid = |c: &&Constraint| c.a < n && c.b < n && c.a != c.b;
    let cannot: std::collections::HashSet<(usize, usize)> = constraints
        .iter()
        .filter(valid)
        .filter(|c| !c.same)
        .flat_map(|c| [(c.a, c.b), (c.b, c.a)])
        .collect();
    let conflict = |i: usize, j: usize| {
        i != j && (tracklets[i].coexists_with(&tracklets[j]) || cannot.contains(&(i, j)))
    };
    // must-links are applied after DBSCAN, to whole clusters: pulling two tracklets together
    // before it would distort the k-reciprocal neighbourhoods and tear both out of their clusters
    let mut dist: Square = cosine_distances(features, d);
    for i in 0..n {
        for j in 0..n {
            if conflict(i, j) {
                dist.set(i, j, 4.0); // the largest squared distance of unit vectors
            }
        }
    }
    let jac = jaccard_distances(&dist, cfg.jaccard);
    let raw = dbscan(&jac, cfg.eps, cfg.min_samples.max(1), &conflict);
    // every tracklet a group: DBSCAN's clusters, then one per noise tracklet
    let first_noise = raw.iter().copied().max().map(|m| m + 1).unwrap_or(0).max(0);
    let mut next = first_noise;
    let mut group: Vec<i64> = raw
        .iter()
        .map(|&l| {
            if l >= 0 {
                l
            } else {
                next += 1;
                next - 1
            }
        })
        .collect();
    for c in constraints.iter().filter(valid).filter(|c| c.same) {
        let (ga, gb) = (group[c.a], group[c.b]);
        if ga == gb {
            continue;
        }
        let ma: Vec<usize> = (0..n).filter(|&i| group[i] == ga).collect();
        let mb: Vec<usize> = (0..n).filter(|&i| group[i] == gb).collect();
        let clash = ma.iter().any(|&i| mb.iter().any(|&j| conflict(i, j)));
        if clash {
            tracing::debug!(
                a = c.a,
                b = c.b,
                "a must-link contradicts a cannot-link; kept apart"
            );
            continue;
        }
        let (keep, gone) = (ga.min(gb), ga.max(gb));
        group
            .iter_mut()
            .filter(|g| **g == gone)
            .for_each(|g| *g = keep);
    }
    // dense labels: groups of several tracklets first, then the lone ones, in order of label
    let mut sizes: std::collections::BTreeMap<i64, usize> = Default::default();
    for &g in &group {
        *sizes.entry(g).or_default() += 1;
    }
    let mut dense: std::collections::HashMap<i64, i64> = Default::default();
    for (&g, _) in sizes.iter().filter(|(_, s)| **s > 1) {
        let k = dense.len() as i64;
        dense.insert(g, k);
    }
    for (&g, _) in sizes.iter().filter(|(_, s)| **s == 1) {
        let k = dense.len() as i64;
        dense.insert(g, k);
    }
    PseudoLabels {
        tracklet: group.iter().map(|g| dense[g]).collect(),
        clusters: sizes.values().filter(|&&s| s > 1).count(),
        singletons: sizes.values().filter(|&&s| s == 1).count(),
    }
}

/// Mean L2-normalised embedding of each tracklet's crops with `model` in inference mode
/// (`n × feature_dim`, rows normalised again).
pub fn tracklet_features(
    model: &ReidModel,
    tracklets: &[TrackletCrops],
    norm: &Normalize,
    batch: usize,
) -> Vec<f32> {
    let (h, w) = model.layout.input_hw;
    let d = model.layout.feature_dim();
    let eval = model.eval_net();
    let device = model.device().inner();
    let index = crop_index(tracklets);
    let mut sums = vec![0.0f32; tracklets.len() * d];
    let per = 3 * h * w;
    for chunk in index.chunks(batch.max(1)) {
        let mut x = vec![0.0f32; chunk.len() * per];
        for (k, &(t, c)) in chunk.iter().enumerate() {
            let img = augment::resize(&tracklets[t].crops[c], h as u32, w as u32);
            augment::to_planes(&img, norm, &mut x[k * per..(k + 1) * per]);
        }
        let xt = Tensor::<4>::from_data(
            burn::tensor::TensorData::new(x, [chunk.len(), 3, h, w]),
            &device,
        );
        let e = tensor_vec(eval.forward(xt).embedding);
        for (k, &(t, _)) in chunk.iter().enumerate() {
            let row = &e[k * d..(k + 1) * d];
            let l = row.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
            for (s, v) in sums[t * d..(t + 1) * d].iter_mut().zip(row) {
                *s += v / l;
            }
        }
    }
    for row in sums.chunks_mut(d) {
        let l = row.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
        row.iter_mut().for_each(|v| *v /= l);
    }
    sums
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::model::normal;
    use rand::SeedableRng;

    fn tracklet(camera: &str, track: u64, start: u64, end: u64) -> TrackletCrops {
        TrackletCrops {
            camera: camera.into(),
            track,
            start: Duration::from_secs(start),
            end: Duration::from_secs(end),
            crops: (0..3).map(|_| Arc::new(RgbImage::new(2, 4))).collect(),
        }
    }

    #[test]
    fn clusters_across_cameras_respect_coexistence() {
        // 3 people; person p appears in cameras a, b, c at different times. Tracklets 0 and 1 are
        // in camera a at the same time but their features are nearly identical (a hard case):
        // they must still end up apart.
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let d = 16;
        let centres: Vec<Vec<f32>> = (0..3)
            .map(|_| (0..d).map(|_| normal(&mut rng)).collect())
            .collect();
        let mut tracklets = Vec::new();
        let mut truth = Vec::new();
        let mut feats = Vec::new();
        for (p, c) in centres.iter().enumerate() {
            for (k, cam) in ["a", "b", "c", "d"].iter().enumerate() {
                let t0 = (p * 100 + k * 10) as u64;
                tracklets.push(tracklet(cam, (p * 4 + k) as u64, t0, t0 + 5));
                truth.push(p);
                feats.extend(c.iter().map(|x| x + 0.05 * normal(&mut rng)));
            }
        }
        // a twin of person 0 in camera a, alive with tracklet 0
        tracklets.push(tracklet("a", 99, 2, 4));
        truth.push(9);
        feats.extend(centres[0].iter().map(|x| x + 0.05 * normal(&mut rng)));
        let cfg = PseudoConfig {
            jaccard: JaccardConfig { k1: 4, k2: 2 },
            ..PseudoConfig::default()
        };
        let l = cluster_tracklets(&feats, d, &tracklets, &cfg);
        assert_ne!(
            l.tracklet[0], l.tracklet[12],
            "coexisting tracklets were merged"
        );
        for i in 0..12 {
            for j in 0..12 {
                assert_eq!(
                    l.tracklet[i] == l.tracklet[j],
                    truth[i] == truth[j],
                    "{i} {j}"
                );
            }
        }
        assert_eq!(l.clusters, 3);
        assert_eq!(l.identities(), 4);
        assert_eq!(l.per_crop(&tracklets).len(), 13 * 3);
    }

    /// Three people, four tracklets each in four cameras, with features that cluster them
    /// cleanly (the set-up of `clusters_across_cameras_respect_coexistence`).
    fn three_people() -> (Vec<TrackletCrops>, Vec<f32>, usize, PseudoConfig) {
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let d = 16;
        let centres: Vec<Vec<f32>> = (0..3)
            .map(|_| (0..d).map(|_| normal(&mut rng)).collect())
            .collect();
        let mut tracklets = Vec::new();
        let mut feats = Vec::new();
        for (p, c) in centres.iter().enumerate() {
            for (k, cam) in ["a", "b", "c", "d"].iter().enumerate() {
                let t0 = (p * 100 + k * 10) as u64;
                tracklets.push(tracklet(cam, (p * 4 + k) as u64, t0, t0 + 5));
                feats.extend(c.iter().map(|x| x + 0.05 * normal(&mut rng)));
            }
        }
        let cfg = PseudoConfig {
            jaccard: JaccardConfig { k1: 4, k2: 2 },
            ..PseudoConfig::default()
        };
        (tracklets, feats, d, cfg)
    }

    #[test]
    fn a_cannot_link_keeps_two_clusters_apart() {
        let (tracklets, feats, d, cfg) = three_people();
        // without labels: tracklets 0 and 1 (person 0, cameras a and b) are one cluster
        let free = cluster_tracklets(&feats, d, &tracklets, &cfg);
        assert_eq!(free.tracklet[0], free.tracklet[1]);
        let cannot = [Constraint {
            a: 0,
            b: 1,
            same: false,
        }];
        let l = cluster_tracklets_with(&feats, d, &tracklets, &cfg, &cannot);
        assert_ne!(l.tracklet[0], l.tracklet[1], "a cannot-link was merged");
        // and the other people are untouched
        for p in [4, 8] {
            assert!((p..p + 4).all(|i| l.tracklet[i] == l.tracklet[p]));
            assert_ne!(l.tracklet[p], l.tracklet[0]);
        }
    }

    #[test]
    fn a_must_link_joins_two_clusters() {
        let (tracklets, feats, d, cfg) = three_people();
        let free = cluster_tracklets(&feats, d, &tracklets, &cfg);
        assert_ne!(free.tracklet[0], free.tracklet[4], "{:?}", free.tracklet);
        assert_eq!(free.identities(), 3, "{:?}", free.tracklet);
        // an operator says person 0's tracklet 0 and person 1's tracklet 4 are one person
        let must = [Constraint {
            a: 0,
            b: 4,
            same: true,
        }];
        let l = cluster_tracklets_with(&feats, d, &tracklets, &cfg, &must);
        assert!(
            (0..8).all(|i| l.tracklet[i] == l.tracklet[0]),
            "{:?}",
            l.tracklet
        );
        // person 2 stays apart
        assert!((8..12).all(|i| l.tracklet[i] == l.tracklet[8] && l.tracklet[i] != l.tracklet[0]));
        assert_eq!((l.clusters, l.singletons, l.identities()), (2, 0, 2));
        // a must-link that contradicts a cannot-link does not join
        let both = [
            must[0],
            Constraint {
                a: 4,
                b: 1,
                same: false,
            },
        ];
        let l = cluster_tracklets_with(&feats, d, &tracklets, &cfg, &both);
        assert_ne!(l.tracklet[0], l.tracklet[4]);
    }
}
