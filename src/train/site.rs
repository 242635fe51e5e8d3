//! Training crops of a site, as the re-tuning scenarios use them: tracklets (the crops of one
//! tracklet are one person; tracklets alive together in one camera are two people), each with an
//! identity label when one is known.
//!
//! From a dataset folder, the **train split only** is read ([`SiteData::from_dataset`]): a
//! crosscam-built dataset's `dataset.json` gives each identity's tracklets (camera, start, end),
//! so every crop is put back into the tracklet it was cut from; other datasets (Market-1501 and
//! the like) have no tracklets, so the crops of one identity in one camera stand for one tracklet.
//! Identity labels are the dataset's person ids — pseudo-identities for crosscam-built datasets
//! (tracklets of virtual cameras linked by position and time), real ones for public datasets.
//! Which scenario may use them is the scenario's business (`train::scenario`): on-site re-tuning
//! (S4) never does.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use image::RgbImage;

use super::TrainError;
use super::pseudo::TrackletCrops;
use crate::eval::dataset::{Dataset, Item};

/// Tracklets with optional identity labels.
#[derive(Clone, Debug, Default)]
pub struct SiteData {
    pub tracklets: Vec<TrackletCrops>,
    /// The identity of each tracklet, when known (`None` on unlabelled footage).
    pub identities: Vec<Option<i64>>,
    /// Operators' labels about these tracklets (a store's; none from a dataset folder).
    pub pairs: Vec<LabelPair>,
}

/// An operator's label as re-tuning and the promotion gate read it: two sets of tracklets (by
/// [`TrackletCrops::track`], the store's tracklet id) and whether they are one person.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LabelPair {
    /// The store's label id (the deterministic gate / training split hashes it).
    pub label: i64,
    pub a: Vec<u64>,
    pub b: Vec<u64>,
    pub same: bool,
}

/// Whether a label is held out for the promotion gate (never trained on). Deterministic: a
/// hash of the label id (splitmix64) against `share`, so that a label keeps its side from one
/// job to the next and new labels fall on either side in proportion.
pub fn gate_holds_out(label: i64, share: f64) -> bool {
    let mut z = (label as u64).wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    ((z >> 11) as f64 / (1u64 << 53) as f64) < share
}

/// Cap on the tracklet pairs one label expands into (two large identities would give
/// thousands of redundant must-links).
const MAX_PAIRS_PER_LABEL: usize = 64;

/// The camera name crosscam gives camera number `id` of a dataset (`c1`, `c2`, …).
pub fn camera_name(id: u32) -> String {
    format!("c{id}")
}

/// Camera arguments as the dataset reader names cameras: `1` → `c1`, `c1` stays.
pub fn camera_names_of(v: &[String]) -> Vec<String> {
    v.iter()
        .map(|c| {
            let c = c.trim();
            if !c.is_empty() && c.chars().all(|ch| ch.is_ascii_digit()) {
                format!("c{c}")
            } else {
                c.to_string()
            }
        })
        .collect()
}

impl SiteData {
    /// Tracklets without identity labels.
    pub fn unlabelled(tracklets: Vec<TrackletCrops>) -> SiteData {
        let n = tracklets.len();
        SiteData {
            tracklets,
            identities: vec![None; n],
            pairs: Vec::new(),
        }
    }

    /// The train split of `ds` (images decoded into memory; persons with id ≤ 0 are skipped).
    pub fn from_dataset(ds: &Dataset) -> Result<SiteData, TrainError> {
        let items: Vec<&Item> = ds.train.iter().filter(|i| i.pid > 0).collect();
        if items.is_empty() {
            return Err(TrainError::Invalid(format!(
                "the dataset {} has no training images (bounding_box_train/ is empty or missing)",
                ds.root.display()
            )));
        }
        // (pid, camera, tracklet index within that pid and camera) → crops
        type Key = (i32, u32, usize);
        // crops and their time span (seconds)
        type Group = (Vec<Arc<RgbImage>>, Option<(f64, f64)>);
        let mut groups: BTreeMap<Key, Group> = BTreeMap::new();
        let fps = ds
            .info
            .as_ref()
            .and_then(|i| i.sources.first())
            .and_then(|s| s.fps)
            .filter(|f| *f > 0.0)
            .unwrap_or(25.0);
        for it in items {
            let img = image::open(&it.path)
                .map_err(|e| {
                    TrainError::Invalid(format!("cannot read image {}: {e}", it.path.display()))
                })?
                .to_rgb8();
            // a crop's moment: its frame (sequences kept apart), in seconds
            let t = it.frame.map(|f| {
                let seq = it.seq.unwrap_or(1).saturating_sub(1) as f64;
                seq * 1e6 + f as f64 / fps
            });
            let track = tracklet_of(ds, it, t);
            let e = groups.entry((it.pid, it.camid, track)).or_default();
            e.0.push(Arc::new(img));
            if let Some(t) = t {
                let t = t.max(0.0);
                e.1 = Some(match e.1 {
                    Some((a, b)) => (a.min(t), b.max(t)),
                    None => (t, t),
                });
            }
        }
        let mut out = SiteData::default();
        for (k, ((pid, cam, _), (crops, span))) in groups.into_iter().enumerate() {
            // without times, give each tracklet a moment of its own (no coexistence is claimed)
            let (start, end) = match span {
                Some((a, b)) => (Duration::from_secs_f64(a), Duration::from_secs_f64(b)),
                None => {
                    let t = Duration::from_secs(1_000_000_000 + 100 * k as u64);
                    (t, t)
                }
            };
            out.tracklets.push(TrackletCrops {
                camera: camera_name(cam),
                track: k as u64,
                start,
                end,
                crops,
            });
            out.identities.push(Some(pid as i64));
        }
        Ok(out)
    }

    pub fn len(&self) -> usize {
        self.tracklets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tracklets.is_empty()
    }

    /// Crops in all tracklets.
    pub fn crops(&self) -> usize {
        self.tracklets.iter().map(|t| t.crops.len()).sum()
    }

    /// Cameras, sorted.
    pub fn cameras(&self) -> Vec<String> {
        let mut c: Vec<String> = self.tracklets.iter().map(|t| t.camera.clone()).collect();
        c.sort();
        c.dedup();
        c
    }

    /// Distinct known identities.
    pub fn identity_count(&self) -> usize {
        let mut ids: Vec<i64> = self.identities.iter().flatten().copied().collect();
        ids.sort_unstable();
        ids.dedup();
        ids.len()
    }

    /// Only the tracklets of these cameras (all when `cameras` is empty).
    pub fn with_cameras(&self, cameras: &[String]) -> SiteData {
        if cameras.is_empty() {
            return self.clone();
        }
        let keep: Vec<usize> = (0..self.len())
            .filter(|&i| cameras.contains(&self.tracklets[i].camera))
            .collect();
        SiteData {
            tracklets: keep.iter().map(|&i| self.tracklets[i].clone()).collect(),
            identities: keep.iter().map(|&i| self.identities[i]).collect(),
            pairs: self.pairs.clone(),
        }
    }

    /// The labels as clustering constraints between tracklet indices (labels about tracklets
    /// not present here are skipped).
    pub fn constraints(&self) -> Vec<super::pseudo::Constraint> {
        let mut index: std::collections::HashMap<u64, usize> = Default::default();
        for (i, t) in self.tracklets.iter().enumerate() {
            index.entry(t.track).or_insert(i);
        }
        let mut out = Vec::new();
        for p in &self.pairs {
            let a: Vec<usize> = p.a.iter().filter_map(|t| index.get(t).copied()).collect();
            let b: Vec<usize> = p.b.iter().filter_map(|t| index.get(t).copied()).collect();
            out.extend(
                a.iter()
                    .flat_map(|&i| b.iter().map(move |&j| (i, j)))
                    .filter(|(i, j)| i != j)
                    .take(MAX_PAIRS_PER_LABEL)
                    .map(|(a, b)| super::pseudo::Constraint { a, b, same: p.same }),
            );
        }
        out
    }

    /// Splits off the labels the promotion gate holds out (see [`gate_holds_out`]): returns the
    /// training data — without those labels and without every tracklet they name, so the
    /// candidate never sees their crops — and the held-out labels with their tracklets.
    pub fn hold_out_labels(&self, share: f64) -> (SiteData, SiteData) {
        let (held, kept): (Vec<LabelPair>, Vec<LabelPair>) = self
            .pairs
            .iter()
            .cloned()
            .partition(|p| gate_holds_out(p.label, share));
        let named: std::collections::HashSet<u64> = held
            .iter()
            .flat_map(|p| p.a.iter().chain(&p.b).copied())
            .collect();
        let mut train = SiteData {
            pairs: kept,
            ..SiteData::default()
        };
        let mut gate = SiteData {
            pairs: held,
            ..SiteData::default()
        };
        for (t, id) in self.tracklets.iter().zip(&self.identities) {
            let to = if named.contains(&t.track) {
                &mut gate
            } else {
                &mut train
            };
            to.tracklets.push(t.clone());
            to.identities.push(*id);
        }
        (train, gate)
    }

    /// The same tracklets without identity labels (what a site knows).
    pub fn without_labels(&self) -> SiteData {
        SiteData::unlabelled(self.tracklets.clone())
    }

    /// Every crop with its tracklet index as label.
    pub fn by_tracklet(&self) -> (Vec<RgbImage>, Vec<i64>) {
        let mut imgs = Vec::new();
        let mut labels = Vec::new();
        for (k, t) in self.tracklets.iter().enumerate() {
            for c in &t.crops {
                imgs.push((**c).clone());
                labels.push(k as i64);
            }
        }
        (imgs, labels)
    }

    /// The crops of labelled tracklets with their identity label.
    pub fn by_identity(&self) -> (Vec<RgbImage>, Vec<i64>) {
        let mut imgs = Vec::new();
        let mut labels = Vec::new();
        for (t, id) in self.tracklets.iter().zip(&self.identities) {
            if let Some(id) = id {
                for c in &t.crops {
                    imgs.push((**c).clone());
                    labels.push(*id);
                }
            }
        }
        (imgs, labels)
    }

    /// Up to `n` crops spread over the tracklets (calibration images).
    pub fn sample_crops(&self, n: usize) -> Vec<RgbImage> {
        let all: Vec<&Arc<RgbImage>> = self.tracklets.iter().flat_map(|t| &t.crops).collect();
        if all.is_empty() || n == 0 {
            return Vec::new();
        }
        let step = (all.len() as f64 / n as f64).max(1.0);
        (0..n.min(all.len()))
            .map(|i| (**all[(i as f64 * step) as usize]).clone())
            .collect()
    }
}

/// Which of its identity's tracklets in its camera an item belongs to (index among them, by
/// start time): the one whose span holds the item's moment, else the nearest; 0 without info.
fn tracklet_of(ds: &Dataset, it: &Item, t: Option<f64>) -> usize {
    let (Some(info), Some(t)) = (&ds.info, t) else {
        return 0;
    };
    let Some(id) = info.identities.iter().find(|i| i.pid == it.pid) else {
        return 0;
    };
    let mut spans: Vec<(f64, f64)> = id
        .tracklets
        .iter()
        .filter(|tr| tr.camera == it.camid)
        .map(|tr| (tr.start_s, tr.end_s))
        .collect();
    spans.sort_by(|a, b| a.0.total_cmp(&b.0));
    let dist = |&(s, e): &(f64, f64)| {
        if t < s {
            s - t
        } else if t > e {
            t - e
        } else {
            0.0
        }
    };
    spans
        .iter()
        .enumerate()
        .min_by(|a, b| dist(a.1).total_cmp(&dist(b.1)))
        .map(|(k, _)| k)
        .unwrap_or(0)
}

/// Reads a dataset folder's train split.
pub fn load_dataset(dir: &Path) -> Result<(Dataset, SiteData), TrainError> {
    let ds = Dataset::load(dir, None)
        .map_err(|e| TrainError::Invalid(format!("cannot read the dataset: {e}")))?;
    let site = SiteData::from_dataset(&ds)?;
    Ok((ds, site))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(cam: &str, n: usize) -> TrackletCrops {
        TrackletCrops {
            camera: cam.into(),
            track: 0,
            start: Duration::ZERO,
            end: Duration::ZERO,
            crops: (0..n).map(|_| Arc::new(RgbImage::new(4, 8))).collect(),
        }
    }

    #[test]
    fn camera_filters_and_label_views() {
        let s = SiteData {
            tracklets: vec![t("c1", 2), t("c2", 3), t("c1", 1)],
            identities: vec![Some(5), None, Some(7)],
            pairs: vec![],
        };
        assert_eq!(s.crops(), 6);
        assert_eq!(s.cameras(), vec!["c1".to_string(), "c2".to_string()]);
        assert_eq!(s.identity_count(), 2);
        let c1 = s.with_cameras(&["c1".into()]);
        assert_eq!(c1.len(), 2);
        assert_eq!(c1.identities, vec![Some(5), Some(7)]);
        assert_eq!(s.by_tracklet().1, vec![0, 0, 1, 1, 1, 2]);
        assert_eq!(s.by_identity().1, vec![5, 5, 7]);
        assert_eq!(s.without_labels().identity_count(), 0);
        assert_eq!(s.sample_crops(4).len(), 4);
        assert_eq!(s.sample_crops(10).len(), 6);
    }
}
