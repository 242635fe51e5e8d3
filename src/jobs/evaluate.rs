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
    /// - Without labels (a site's raw footage), a `share` of the tracklets is held out — the
    ///   latest ones, the end of the window, and nothing from that time on is trained on: the first
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
            train.pairs = site.pairs.clone();
            return (train, set);
        }
        // tracklets: the last ones in time (the end of the window), those with ≥ 4 crops can
        // be split in time; every tracklet from the start of the held-out slice on leaves the
        // training data, so the candidate never saw that part of the footage
        let mut idx: Vec<usize> = (0..site.len())
            .filter(|&i| site.tracklets[i].crops.len() >= 4)
            .collect();
        idx.sort_by_key(|&i| std::cmp::Reverse((site.tracklets[i].start, i)));
        let n = ((site.len() as f64) * share).round() as usize;
        idx.truncate(n.min(idx.len()));
        let cutoff = idx.iter().map(|&i| site.tracklets[i].start).min();
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
            } else if cutoff.is_none_or(|c| t.start < c) {
                train.tracklets.push(t.clone());
                train.identities.push(site.identities[i]);
            }
        }
        train.pairs = site.pairs.clone();
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

/// A model's score on operators' labels it never trained on. Every number comes with the
/// count it was computed on; a number that cannot be computed (no different-people labels for
/// the AUC, no labelled identity with two tracklets for rank-1) is `None`, never a guess.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LabelScore {
    /// Pair verification: ROC AUC of "same person" labels against "different people" ones,
    /// each scored by the cosine similarity of the two sides' mean embeddings.
    pub auc: Option<f64>,
    /// True accept rate (share of same-person labels accepted) at the threshold that accepts at
    /// most `far` of the different-people labels.
    pub tar: Option<f64>,
    pub far: f64,
    /// Rank-1 over labelled identities (tracklets joined by same-person labels): for each
    /// tracklet of an identity with two or more, is its most similar other labelled tracklet
    /// one of the same identity?
    pub rank1: Option<f64>,
    pub same_pairs: usize,
    pub different_pairs: usize,
    pub rank1_queries: usize,
}

/// ROC AUC by the Mann–Whitney statistic (ties count half); `None` without both classes.
pub fn roc_auc(same: &[f32], different: &[f32]) -> Option<f64> {
    if same.is_empty() || different.is_empty() {
        return None;
    }
    let mut wins = 0.0f64;
    for &p in same {
        for &n in different {
            wins += if p > n {
                1.0
            } else if p == n {
                0.5
            } else {
                0.0
            };
        }
    }
    Some(wins / (same.len() * different.len()) as f64)
}

/// True accept rate at false accept rate ≤ `far`: the threshold is the smallest one that
/// accepts (score strictly above it) at most `far` of the different-people scores.
pub fn tar_at_far(same: &[f32], different: &[f32], far: f64) -> Option<f64> {
    if same.is_empty() || different.is_empty() {
        return None;
    }
    let mut d = different.to_vec();
    d.sort_by(|a, b| b.total_cmp(a));
    let allowed = (far * d.len() as f64).floor() as usize;
    let threshold = if allowed >= d.len() {
        f32::NEG_INFINITY
    } else {
        d[allowed]
    };
    Some(same.iter().filter(|&&x| x > threshold).count() as f64 / same.len() as f64)
}

/// At most this many crops of a tracklet are embedded for the gate (the best spread over it).
const GATE_CROPS_PER_TRACKLET: usize = 8;

/// Scores `model` on labelled pairs: `gate` holds the held-out labels and their tracklets
/// (see [`SiteData::hold_out_labels`]).
pub fn evaluate_labels(model: &Model, gate: &SiteData, far: f64) -> anyhow::Result<LabelScore> {
    let mut e = embedder_for(model)?;
    evaluate_labels_with(&mut e, gate, far)
}

/// [`evaluate_labels`] with an embedder already made.
pub fn evaluate_labels_with(
    e: &mut Embedder,
    gate: &SiteData,
    far: f64,
) -> anyhow::Result<LabelScore> {
    use std::collections::HashMap;
    // one unit mean embedding per tracklet
    let mut emb: HashMap<u64, Vec<f32>> = HashMap::new();
    for t in &gate.tracklets {
        if t.crops.is_empty() || emb.contains_key(&t.track) {
            continue;
        }
        let step = t.crops.len().div_ceil(GATE_CROPS_PER_TRACKLET).max(1);
        let imgs: Vec<RgbImage> = t
            .crops
            .iter()
            .step_by(step)
            .map(|c| (**c).clone())
            .collect();
        let f = e.embed_images(&imgs)?;
        let mut m = vec![0.0f32; f.ncols()];
        for row in f.rows() {
            let l = row.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
            for (s, v) in m.iter_mut().zip(row.iter()) {
                *s += v / l;
            }
        }
        emb.insert(t.track, unit(m));
    }
    let side = |ts: &[u64]| -> Option<Vec<f32>> {
        let vs: Vec<&Vec<f32>> = ts.iter().filter_map(|t| emb.get(t)).collect();
        let first = vs.first()?;
        let mut m = vec![0.0f32; first.len()];
        for v in &vs {
            for (s, x) in m.iter_mut().zip(v.iter()) {
                *s += x;
            }
        }
        Some(unit(m))
    };
    let (mut same, mut different) = (Vec::new(), Vec::new());
    for p in &gate.pairs {
        let (Some(a), Some(b)) = (side(&p.a), side(&p.b)) else {
            continue;
        };
        let s = dot(&a, &b);
        if p.same {
            same.push(s);
        } else {
            different.push(s);
        }
    }
    // labelled identities: tracklets joined by same-person labels (union–find)
    let mut parent: HashMap<u64, u64> = emb.keys().map(|&t| (t, t)).collect();
    fn find(p: &mut HashMap<u64, u64>, x: u64) -> u64 {
        let mut r = x;
        while p[&r] != r {
            r = p[&r];
        }
        let mut y = x;
        while p[&y] != r {
            let next = p[&y];
            p.insert(y, r);
            y = next;
        }
        r
    }
    for p in gate.pairs.iter().filter(|p| p.same) {
        for a in p.a.iter().filter(|t| emb.contains_key(t)) {
            for b in p.b.iter().filter(|t| emb.contains_key(t)) {
                let (ra, rb) = (find(&mut parent, *a), find(&mut parent, *b));
                if ra != rb {
                    parent.insert(ra.max(rb), ra.min(rb));
                }
            }
        }
    }
    let mut keys: Vec<u64> = emb.keys().copied().collect();
    keys.sort_unstable();
    let root: HashMap<u64, u64> = keys.iter().map(|&t| (t, find(&mut parent, t))).collect();
    let mut size: HashMap<u64, usize> = HashMap::new();
    for r in root.values() {
        *size.entry(*r).or_default() += 1;
    }
    let (mut hits, mut queries) = (0usize, 0usize);
    for &q in &keys {
        if size[&root[&q]] < 2 {
            continue;
        }
        let best = keys
            .iter()
            .filter(|&&g| g != q)
            .max_by(|&&x, &&y| dot(&emb[&q], &emb[&x]).total_cmp(&dot(&emb[&q], &emb[&y])));
        if let Some(&g) = best {
            queries += 1;
            if root[&g] == root[&q] {
                hits += 1;
            }
        }
    }
    Ok(LabelScore {
        auc: roc_auc(&same, &different),
        tar: tar_at_far(&same, &different, far),
        far,
        rank1: (queries > 0).then(|| hits as f64 / queries as f64),
        same_pairs: same.len(),
        different_pairs: different.len(),
        rank1_queries: queries,
    })
}

fn unit(mut v: Vec<f32>) -> Vec<f32> {
    let l = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.iter_mut().for_each(|x| *x /= l);
    v
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// How the gate judges a candidate on labels.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct GatePolicy {
    /// Fewer held-out labelled pairs than this: the evidence is weak and the job never
    /// promotes on its own (`[retune] min_label_pairs`).
    pub min_pairs: usize,
    /// The false accept rate TAR is read at.
    pub far: f64,
    /// How much lower than the serving model's a candidate's AUC, TAR and rank-1 may be.
    pub tolerance: f64,
}

impl Default for GatePolicy {
    fn default() -> GatePolicy {
        GatePolicy {
            min_pairs: 30,
            far: 0.1,
            tolerance: 0.02,
        }
    }
}

/// The gate's verdict on labels, with both models' numbers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LabelGate {
    pub serving: LabelScore,
    pub candidate: LabelScore,
    /// Held-out labelled pairs the numbers rest on.
    pub pairs: usize,
    pub min_pairs: usize,
    /// Fewer pairs than `min_pairs`: automatic promotion is off, an admin decides.
    pub weak: bool,
    /// The candidate is not worse than the serving model on any label number (beyond the
    /// tolerance). Meaningful for automatic promotion only when not `weak`.
    pub passed: bool,
    pub reason: String,
}

impl GatePolicy {
    pub fn judge(&self, serving: LabelScore, candidate: LabelScore) -> LabelGate {
        let pairs = candidate.same_pairs + candidate.different_pairs;
        let weak = pairs < self.min_pairs;
        let mut worse = Vec::new();
        let mut check = |name: &str, old: Option<f64>, new: Option<f64>, n: usize| {
            if let (Some(o), Some(c)) = (old, new)
                && c < o - self.tolerance
            {
                worse.push(format!(
                    "{name} {:.1}% → {:.1}% (n = {n})",
                    100.0 * o,
                    100.0 * c
                ));
            }
        };
        check("AUC", serving.auc, candidate.auc, pairs);
        check(
            &format!("TAR@FAR {:.0}%", 100.0 * self.far),
            serving.tar,
            candidate.tar,
            candidate.same_pairs,
        );
        check(
            "rank-1",
            serving.rank1,
            candidate.rank1,
            candidate.rank1_queries,
        );
        let measured = candidate.auc.is_some() || candidate.rank1.is_some();
        let passed = worse.is_empty() && measured;
        let reason = if !measured {
            "no labelled pairs to judge on: label links in the review queue".to_string()
        } else if !worse.is_empty() {
            format!("worse on labels: {}", worse.join(", "))
        } else {
            "as good or better on labels".to_string()
        };
        let reason = if weak {
            format!(
                "{reason}; weak evidence: {pairs} labelled pairs held out (< {}), automatic promotion is off: an admin decides",
                self.min_pairs
            )
        } else {
            reason
        };
        LabelGate {
            serving,
            candidate,
            pairs,
            min_pairs: self.min_pairs,
            weak,
            passed,
            reason,
        }
    }
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
    fn auc_and_tar_count_what_they_should() {
        // perfectly separated
        assert_eq!(roc_auc(&[0.9, 0.8], &[0.1, 0.2]), Some(1.0));
        // reversed
        assert_eq!(roc_auc(&[0.1], &[0.9, 0.8]), Some(0.0));
        // one tie counts half: (1 + 0.5) / 2
        assert_eq!(roc_auc(&[0.5], &[0.5, 0.1]), Some(0.75));
        assert_eq!(roc_auc(&[0.5], &[]), None);
        // 10 different-people scores 0.0..0.9; FAR 10 % lets the top one through: threshold 0.8
        let diff: Vec<f32> = (0..10).map(|i| i as f32 / 10.0).collect();
        assert_eq!(tar_at_far(&[0.85, 0.95, 0.5, 0.7], &diff, 0.1), Some(0.5));
        // FAR 0: above the largest
        assert_eq!(tar_at_far(&[0.85, 0.95], &diff, 0.0), Some(0.5));
    }

    #[test]
    fn the_gate_refuses_a_worse_candidate_and_calls_few_labels_weak() {
        let score = |auc: f64, n: usize| LabelScore {
            auc: Some(auc),
            tar: Some(auc),
            far: 0.1,
            rank1: Some(auc),
            same_pairs: n / 2,
            different_pairs: n - n / 2,
            rank1_queries: n,
        };
        let p = GatePolicy::default();
        let g = p.judge(score(0.9, 40), score(0.6, 40));
        assert!(!g.passed && !g.weak, "{}", g.reason);
        assert!(
            g.reason.contains("AUC 90.0% → 60.0% (n = 40)"),
            "{}",
            g.reason
        );
        let g = p.judge(score(0.9, 40), score(0.91, 40));
        assert!(g.passed && !g.weak, "{}", g.reason);
        let g = p.judge(score(0.9, 10), score(0.95, 10));
        assert!(g.passed && g.weak);
        assert!(
            g.reason.contains("weak evidence: 10 labelled pairs"),
            "{}",
            g.reason
        );
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
