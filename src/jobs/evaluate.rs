//! Scoring a model on held-out data, the way serving would use it: the ONNX model in ONNX Runtime
//! through [`crate::reid::Embedder`], Market-1501 protocol (rank-k, mAP).
//!
//! Two kinds of held-out data: a dataset folder's query and gallery sets ([`evaluate_dataset`]),
//! and an in-memory [`EvalSet`] that the job runner carves out of a site's tracklets
//! ([`EvalSet::hold_out`]).

use std::sync::Arc;

use image::RgbImage;
use ndarray::Array2;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use crate::eval::dataset::Dataset;
use crate::eval::metrics::{Label, MetricOptions, evaluate};
use crate::eval::model::{ModelEvalOptions, evaluate_model};
use crate::onnx::Model;
use crate::reid::Embedder;
use crate::runtime::SessionOptions;
use crate::train::pseudo::TrackletCrops;
use crate::train::site::SiteData;

/// The numbers a re-tuning decision looks at. Rates are fractions in [0, 1].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Score {
    pub rank1: f64,
    pub rank5: f64,
    #[serde(rename = "mAP")]
    pub map: f64,
    /// Queries scored (with a valid match).
    pub queries: usize,
    pub gallery: usize,
    /// Multiply-accumulates of one embedding (the model's input size).
    pub macs: u64,
    pub params: u64,
}

/// An embedder for an in-memory model (CPU or the runtime's device).
pub fn embedder_for(model: &Model) -> anyhow::Result<Embedder> {
    let rt = crate::runtime::init(&crate::config::RuntimeSettings::default())?;
    Embedder::from_model(model, rt, SessionOptions::default())
}

/// Scores `model` on a dataset's query and gallery sets.
pub fn evaluate_dataset(
    model: &Model,
    name: &str,
    ds: &Dataset,
    quiet: bool,
) -> anyhow::Result<Score> {
    let (macs, params) = crate::train::scenario::model_cost(model)?;
    let mut e = embedder_for(model)?;
    let r = evaluate_model(
        &mut e,
        name,
        Some(macs),
        ds,
        &ModelEvalOptions {
            quiet,
            ..ModelEvalOptions::default()
        },
    )?;
    Ok(Score {
        rank1: r.rank1,
        rank5: r.rank5,
        map: r.map,
        queries: r.num_valid_query,
        gallery: r.num_gallery,
        macs,
        params,
    })
}

/// Held-out query and gallery crops with their labels.
#[derive(Clone, Debug, Default)]
pub struct EvalSet {
    pub query: Vec<(Arc<RgbImage>, Label)>,
    pub gallery: Vec<(Arc<RgbImage>, Label)>,
    /// `identities` (held-out people seen by several cameras) or `tracklets` (the proxy for
    /// unlabelled footage, see [`EvalSet::hold_out`]).
    pub kind: String,
}

impl EvalSet {
    /// Splits a site's tracklets into training data and a held-out evaluation set.
    ///
    /// - With identity labels, a `share` of the identities seen by two cameras or more is held
    ///   out (all their tracklets leave the training data): per identity and camera, up to 2
    ///   crops spread over its tracklets are queries, the others gallery. Scored across cameras,
    ///   as Market-1501 (a query's own camera is ignored for its identity).
    /// - Without labels (a site's raw footage), a `share` of the tracklets is held out: the first
    ///   half of each tracklet's crops (in time) are its queries, the second half its gallery,
    ///   filed under two pseudo-cameras so that the protocol counts them. This measures whether
    ///   a model finds the same person a few seconds later among the other held-out people; two
    ///   held-out tracklets of one person count as a miss (label noise the proxy accepts).
    pub fn hold_out(site: &SiteData, share: f64, seed: u64) -> (SiteData, EvalSet) {
        let mut rng = StdRng::seed_from_u64(seed ^ 0x686f_6c64);
        let share = share.clamp(0.0, 0.9);
        // identities seen by ≥ 2 cameras
        let mut multi: Vec<i64> = Vec::new();
        {
            let mut cams: std::collections::BTreeMap<i64, Vec<&str>> = Default::default();
            for (t, id) in site.tracklets.iter().zip(&site.identities) {
                if let Some(id) = id {
                    let e = cams.entry(*id).or_default();
                    if !e.contains(&t.camera.as_str()) {
                        e.push(&t.camera);
                    }
                }
            }
            multi.extend(
                cams.into_iter()
                    .filter(|(_, c)| c.len() >= 2)
                    .map(|(i, _)| i),
            );
        }
        let n_ids = ((multi.len() as f64) * share).round() as usize;
        if n_ids >= 2 {
            multi.shuffle(&mut rng);
            let held: Vec<i64> = multi[..n_ids].to_vec();
            let mut train = SiteData::default();
            let mut set = EvalSet {
                kind: "identities".into(),
                ..EvalSet::default()
            };
            let cam_no = |c: &str| -> u32 {
                c.trim_start_matches('c').parse().unwrap_or_else(|_| {
                    c.bytes()
                        .fold(7u32, |a, b| a.wrapping_mul(31).wrapping_add(b as u32))
                        % 10_000
                        + 100
                })
            };
            for (pid_index, &id) in held.iter().enumerate() {
                let pid = pid_index as i32 + 1;
                let tracks: Vec<&TrackletCrops> = site
                    .tracklets
                    .iter()
                    .zip(&site.identities)
                    .filter(|(_, i)| **i == Some(id))
                    .map(|(t, _)| t)
                    .collect();
                let mut cams: Vec<&str> = tracks.iter().map(|t| t.camera.as_str()).collect();
                cams.sort();
                cams.dedup();
                for cam in cams {
                    let crops: Vec<&Arc<RgbImage>> = tracks
                        .iter()
                        .filter(|t| t.camera == cam)
                        .flat_map(|t| &t.crops)
                        .collect();
                    let label = Label::new(pid, cam_no(cam));
                    let nq = crops.len().clamp(1, 2);
                    let step = crops.len() / nq;
                    for (k, c) in crops.iter().enumerate() {
                        if k % step.max(1) == 0 && k / step.max(1) < nq {
                            set.query.push(((*c).clone(), label));
                        } else {
                            set.gallery.push(((*c).clone(), label));
                        }
                    }
                }
            }
            for (t, id) in site.tracklets.iter().zip(&site.identities) {
                if !id.is_some_and(|i| held.contains(&i)) {
                    train.tracklets.push(t.clone());
                    train.identities.push(*id);
                }
            }
            return (train, set);
        }
        // tracklets: those with ≥ 4 crops can be split in time
        let mut idx: Vec<usize> = (0..site.len())
            .filter(|&i| site.tracklets[i].crops.len() >= 4)
            .collect();
        idx.shuffle(&mut rng);
        let n = ((site.len() as f64) * share).round() as usize;
        idx.truncate(n.min(idx.len()));
        let mut set = EvalSet {
            kind: "tracklets".into(),
            ..EvalSet::default()
        };
        let mut train = SiteData::default();
        for i in 0..site.len() {
            let t = &site.tracklets[i];
            if let Some(pos) = idx.iter().position(|&j| j == i) {
                let pid = pos as i32 + 1;
                let half = t.crops.len() / 2;
                for (k, c) in t.crops.iter().enumerate() {
                    if k < half {
                        set.query.push((c.clone(), Label::new(pid, 1)));
                    } else {
                        set.gallery.push((c.clone(), Label::new(pid, 2)));
                    }
                }
            } else {
                train.tracklets.push(t.clone());
                train.identities.push(site.identities[i]);
            }
        }
        (train, set)
    }

    pub fn is_empty(&self) -> bool {
        self.query.is_empty() || self.gallery.is_empty()
    }
}

fn embed_all(e: &mut Embedder, items: &[(Arc<RgbImage>, Label)]) -> anyhow::Result<Array2<f32>> {
    let mut rows: Vec<f32> = Vec::new();
    let mut dim = 0;
    for chunk in items.chunks(32) {
        let imgs: Vec<RgbImage> = chunk.iter().map(|(i, _)| (**i).clone()).collect();
        let f = e.embed_images(&imgs)?;
        dim = f.ncols();
        rows.extend(f.iter());
    }
    Ok(Array2::from_shape_vec((items.len(), dim), rows)?)
}

/// Scores `model` on an in-memory held-out set.
pub fn evaluate_set(model: &Model, set: &EvalSet) -> anyhow::Result<Score> {
    anyhow::ensure!(!set.is_empty(), "the held-out set is empty");
    let (macs, params) = crate::train::scenario::model_cost(model)?;
    let mut e = embedder_for(model)?;
    let q = embed_all(&mut e, &set.query)?;
    let g = embed_all(&mut e, &set.gallery)?;
    let ql: Vec<Label> = set.query.iter().map(|(_, l)| *l).collect();
    let gl: Vec<Label> = set.gallery.iter().map(|(_, l)| *l).collect();
    let m = evaluate(q.view(), g.view(), &ql, &gl, &MetricOptions::default())?;
    Ok(Score {
        rank1: m.rank(1),
        rank5: m.rank(5),
        map: m.map,
        queries: m.num_valid_query,
        gallery: m.num_gallery,
        macs,
        params,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn tr(cam: &str, n: usize, t0: u64) -> TrackletCrops {
        TrackletCrops {
            camera: cam.into(),
            track: t0,
            start: Duration::from_secs(t0),
            end: Duration::from_secs(t0 + 2),
            crops: (0..n).map(|_| Arc::new(RgbImage::new(4, 8))).collect(),
        }
    }

    #[test]
    fn identities_are_held_out_whole_and_queries_have_cross_camera_matches() {
        let mut s = SiteData::default();
        for id in 0..10 {
            s.tracklets.push(tr("c1", 5, id * 10));
            s.identities.push(Some(id as i64));
            s.tracklets.push(tr("c2", 4, id * 10 + 5));
            s.identities.push(Some(id as i64));
        }
        let (train, set) = EvalSet::hold_out(&s, 0.3, 1);
        assert_eq!(set.kind, "identities");
        assert_eq!(train.identity_count(), 7);
        assert_eq!(train.len(), 14);
        // 3 identities × 2 cameras × 2 queries
        assert_eq!(set.query.len(), 12);
        assert_eq!(set.query.len() + set.gallery.len(), 27);
        for (_, q) in &set.query {
            assert!(
                set.gallery
                    .iter()
                    .any(|(_, g)| g.pid == q.pid && g.camid != q.camid)
            );
        }
    }

    #[test]
    fn unlabelled_tracklets_are_split_in_time() {
        let s = SiteData::unlabelled((0..10).map(|i| tr("c1", 6, i * 10)).collect());
        let (train, set) = EvalSet::hold_out(&s, 0.2, 1);
        assert_eq!(set.kind, "tracklets");
        assert_eq!(train.len(), 8);
        assert_eq!((set.query.len(), set.gallery.len()), (6, 6));
        assert!(set.query.iter().all(|(_, l)| l.camid == 1));
    }
}
