//! Where a job's crops come from: the server's store ([`StoreSource`]: the crops the daemon kept
//! of every tracklet) or a dataset folder's train split ([`DatasetSource`]).

use std::path::PathBuf;

use anyhow::Result;

use crate::train::Cancel;
use crate::train::site::{LabelPair, SiteData};

/// A site's tracklets (crops of one person each, with camera and time), with identity labels
/// where the source has them (an operator's confirmed matches; a labelled dataset).
pub trait CropSource {
    /// What the crops are, for reports.
    fn describe(&self) -> String;
    /// Collects the tracklets. Long: check `cancel`.
    fn collect(&mut self, cancel: &Cancel) -> Result<SiteData>;
}

/// The train split of a dataset folder (crosscam-built, Market-1501 layout, …).
pub struct DatasetSource {
    pub dir: PathBuf,
    /// Only these cameras (`c1`, …); all when empty.
    pub cameras: Vec<String>,
    /// Keep the dataset's identity labels (off: the crops are treated as unlabelled footage, as a
    /// site's own would be).
    pub labels: bool,
}

impl CropSource for DatasetSource {
    fn describe(&self) -> String {
        format!(
            "train split of {}{}{}",
            self.dir.display(),
            if self.cameras.is_empty() {
                String::new()
            } else {
                format!(", cameras {}", self.cameras.join(","))
            },
            if self.labels {
                ", with identity labels"
            } else {
                ", unlabelled"
            }
        )
    }

    fn collect(&mut self, cancel: &Cancel) -> Result<SiteData> {
        let (_, site) = crate::train::site::load_dataset(&self.dir)?;
        anyhow::ensure!(!cancel.is_cancelled(), "cancelled");
        let site = site.with_cameras(&self.cameras);
        Ok(if self.labels {
            site
        } else {
            site.without_labels()
        })
    }
}

/// The daemon's store: every ended tracklet with stored crops (a site's own footage, without
/// identity labels), and the operators' labels (same person / different people) about them.
pub struct StoreSource {
    pub data_dir: PathBuf,
    /// Only these cameras (ids as configured); all when empty.
    pub cameras: Vec<String>,
    /// Tracklets with fewer crops are left out.
    pub min_crops: usize,
}

impl CropSource for StoreSource {
    fn describe(&self) -> String {
        format!(
            "the store in {}{}, with operators' labels",
            self.data_dir.display(),
            if self.cameras.is_empty() {
                String::new()
            } else {
                format!(", cameras {}", self.cameras.join(","))
            }
        )
    }

    fn collect(&mut self, cancel: &Cancel) -> Result<SiteData> {
        use std::sync::Arc;
        use std::time::Duration;
        let store = crate::store::Store::open(&self.data_dir)?;
        let mut tracklets = Vec::new();
        let (mut missing, mut short) = (0usize, 0usize);
        for (id, camera, start_ms, end_ms) in store.tracklets_with_crops()? {
            anyhow::ensure!(!cancel.is_cancelled(), "cancelled");
            if !self.cameras.is_empty() && !self.cameras.contains(&camera) {
                continue;
            }
            let mut crops = Vec::new();
            for (path, _) in store.crops_of(id)? {
                match path.image() {
                    Ok(i) => crops.push(Arc::new(i.to_rgb8())),
                    // retention may delete files between the query and here
                    Err(_) => missing += 1,
                }
            }
            if crops.len() < self.min_crops.max(1) {
                short += 1;
                continue;
            }
            tracklets.push(crate::train::pseudo::TrackletCrops {
                camera,
                track: id as u64,
                start: Duration::from_millis(start_ms.max(0) as u64),
                end: Duration::from_millis(end_ms.max(0) as u64),
                crops,
            });
        }
        if missing > 0 || short > 0 {
            tracing::info!(
                missing_crop_files = missing,
                tracklets_with_too_few_crops = short,
                "store crops skipped"
            );
        }
        anyhow::ensure!(
            !tracklets.is_empty(),
            "the store in {} has no ended tracklets with crops{}: run the daemon on the site's \
             cameras first (crops are kept for store.crop_max_age_hours)",
            self.data_dir.display(),
            if self.cameras.is_empty() {
                String::new()
            } else {
                format!(" from cameras {}", self.cameras.join(","))
            }
        );
        // operators' labels: must-links and cannot-links for the clustering, and the gate's
        // evidence (their crops are exempt from retention, so their tracklets are here)
        let pairs: Vec<LabelPair> = store
            .labels()?
            .into_iter()
            .map(|l| LabelPair {
                label: l.id,
                a: l.a.iter().map(|&t| t as u64).collect(),
                b: l.b.iter().map(|&t| t as u64).collect(),
                same: l.same,
            })
            .collect();
        let n = tracklets.len();
        tracing::info!(
            tracklets = n,
            labels = pairs.len(),
            "collected the store's tracklets"
        );
        Ok(SiteData {
            tracklets,
            identities: vec![None; n],
            pairs,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::{crop, tracklet};

    #[test]
    fn the_store_gives_its_ended_tracklets_with_crops() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::Store::open(dir.path()).unwrap();
        let run = store.begin_run().unwrap();
        let mut rows = Vec::new();
        for (camera, id, ended, crops) in [
            ("a", 1, true, 5),  // kept
            ("a", 2, false, 5), // still open: left out
            ("b", 3, true, 2),  // too few crops
            ("b", 4, true, 4),  // kept
            ("c", 5, true, 0),  // no crops
        ] {
            let t = tracklet(camera, id, id as i64 * 1000, id as i64 * 1000 + 900);
            let row = store.upsert_tracklet(run, &t, 0.5, ended).unwrap();
            let cs: Vec<_> = (0..crops).map(crop).collect();
            store.save_crops(row, camera, &cs).unwrap();
            rows.push(row);
        }
        let mut src = StoreSource {
            data_dir: dir.path().to_path_buf(),
            cameras: vec![],
            min_crops: 4,
        };
        let site = src.collect(&Cancel::default()).unwrap();
        let got: Vec<(String, u64, usize)> = site
            .tracklets
            .iter()
            .map(|t| (t.camera.clone(), t.track, t.crops.len()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("a".to_string(), rows[0] as u64, 5),
                ("b".to_string(), rows[3] as u64, 4)
            ]
        );
        assert!(site.identities.iter().all(Option::is_none));
        // times are the wall clock, so that coexisting tracklets stay apart
        assert!(site.tracklets[0].end < site.tracklets[1].start);

        // operators' labels come with the tracklets, as tracklet ids and a verdict
        assert!(site.pairs.is_empty());
        store
            .add_label(&crate::store::NewLabel {
                kind: crate::store::LabelKind::Different,
                identity: Some(1),
                other: Some(2),
                tracklet: None,
                a: vec![rows[0]],
                b: vec![rows[3]],
                actor: "alice".into(),
                note: String::new(),
            })
            .unwrap();
        let site = src.collect(&Cancel::default()).unwrap();
        assert_eq!(site.pairs.len(), 1);
        assert_eq!(
            (
                site.pairs[0].a.clone(),
                site.pairs[0].b.clone(),
                site.pairs[0].same
            ),
            (vec![rows[0] as u64], vec![rows[3] as u64], false)
        );
        let c = site.constraints();
        assert_eq!(c.len(), 1);
        assert_eq!((c[0].a, c[0].b, c[0].same), (0, 1, false));

        src.cameras = vec!["c".into()];
        let e = src.collect(&Cancel::default()).unwrap_err().to_string();
        assert!(e.contains("no ended tracklets with crops"), "{e}");
    }
}
