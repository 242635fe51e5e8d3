//! `crosscam dataset build --from-store DATA`: a daemon's stored crops and its operators'
//! labels as a dataset folder, for training or inspection elsewhere.
//!
//! Layout: `bounding_box_train/PPPP_cCs1_TTTTTT_KK.jpg` (Market-1501 names: `PPPP` the gallery
//! identity the tracklet is linked to, renumbered from 1 — a pseudo-identity nobody checked;
//! `C` the camera's place in the sorted camera ids; `TTTTTT` the store's tracklet id; `KK` the
//! crop), and `labels.json`: the cameras, every exported tracklet (store id, camera, identity,
//! times, crop files) and every label as two sets of tracklet ids with the verdict
//! (`same`: must-link; otherwise cannot-link), who gave it and when.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use serde_json::json;

use crate::store::Store;

/// What an export wrote.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct StoreExport {
    pub tracklets: usize,
    pub crops: usize,
    pub identities: usize,
    pub same_pairs: usize,
    pub cannot_links: usize,
    /// Crop files the store lists but retention already deleted.
    pub missing_crops: usize,
}

/// Exports the store in `data_dir` to `out` (refused when `out` already holds an export,
/// unless `force`).
pub fn export(data_dir: &Path, out: &Path, force: bool) -> Result<StoreExport> {
    anyhow::ensure!(
        data_dir.join("crosscam.db").exists(),
        "{} holds no crosscam store (crosscam.db): give the daemon's data directory",
        data_dir.display()
    );
    let store = Store::open(data_dir)?;
    let train = out.join("bounding_box_train");
    if out.join("labels.json").exists() && !force {
        anyhow::bail!(
            "{} already holds an export (labels.json): pass --force to replace it",
            out.display()
        );
    }
    if train.exists() {
        std::fs::remove_dir_all(&train)
            .with_context(|| format!("cannot clear {}", train.display()))?;
    }
    std::fs::create_dir_all(&train)
        .with_context(|| format!("cannot create {}", train.display()))?;
    let rows = store.tracklets_with_crops()?;
    let mut cameras: Vec<String> = rows.iter().map(|r| r.1.clone()).collect();
    cameras.sort();
    cameras.dedup();
    let mut pids: BTreeMap<i64, usize> = BTreeMap::new();
    let mut rep = StoreExport::default();
    let mut tracklets = Vec::new();
    for (id, camera, start_ms, end_ms) in rows {
        let identity = store.identity_of(id)?;
        // an unlinked tracklet is a person of its own
        let key = identity.unwrap_or(-id);
        let next = pids.len() + 1;
        let pid = *pids.entry(key).or_insert(next);
        let cam = cameras.iter().position(|c| *c == camera).unwrap_or(0) + 1;
        let mut files = Vec::new();
        for (k, (path, _)) in store.crops_of(id)?.into_iter().enumerate() {
            let name = format!("{pid:04}_c{cam}s1_{id:06}_{k:02}.jpg");
            match path.read() {
                Ok(bytes) => {
                    let to = train.join(&name);
                    // pictures of people: readable by the daemon's user only, as in the store
                    crate::store::private::write_private(&to, &bytes)
                        .with_context(|| format!("cannot write {}", to.display()))?;
                    files.push(name);
                }
                // retention may delete a crop between the query and here
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::NotFound | std::io::ErrorKind::UnexpectedEof
                    ) =>
                {
                    rep.missing_crops += 1
                }
                Err(e) => {
                    return Err(e).with_context(|| format!("cannot read the crop {path}"));
                }
            }
        }
        rep.crops += files.len();
        rep.tracklets += 1;
        tracklets.push(json!({
            "id": id, "camera": camera, "identity": identity, "pid": pid,
            "start_ms": start_ms, "end_ms": end_ms, "crops": files,
        }));
    }
    rep.identities = pids.len();
    let labels = store.labels()?;
    rep.same_pairs = labels.iter().filter(|l| l.same).count();
    rep.cannot_links = labels.len() - rep.same_pairs;
    let doc = json!({
        "format": "crosscam-store-export/1",
        "note": "pid and identity are the gallery's pseudo-identities, never checked by a person; the labels are operators' answers: same = must-link, otherwise cannot-link, between the tracklet ids of sides a and b",
        "source": data_dir.display().to_string(),
        "cameras": cameras.iter().enumerate().map(|(i, c)| json!({"c": i + 1, "camera": c})).collect::<Vec<_>>(),
        "tracklets": tracklets,
        "labels": labels,
        "counts": &rep,
    });
    crate::jobs::registry::write_atomic(
        &out.join("labels.json"),
        serde_json::to_string_pretty(&doc)?.as_bytes(),
    )?;
    Ok(rep)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::{crop, tracklet};
    use crate::store::{Decision, LabelKind, NewLabel};

    #[test]
    fn crops_and_labels_are_exported_as_pairs_and_cannot_links() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let mut s = Store::open(&data).unwrap();
        let run = s.begin_run().unwrap();
        let mut rows = Vec::new();
        for (cam, k, identity) in [("b", 1, 5), ("a", 2, 5), ("a", 3, 6)] {
            let row = s
                .upsert_tracklet(
                    run,
                    &tracklet(cam, k, k as i64 * 1000, k as i64 * 1000 + 500),
                    0.5,
                    true,
                )
                .unwrap();
            s.save_crops(row, cam, &[crop(0), crop(1)]).unwrap();
            s.record_sighting(row, identity, Some(0.9), None, Decision::Linked, "m", 0)
                .unwrap();
            rows.push(row);
        }
        for (kind, a, b) in [
            (LabelKind::Same, rows[0], rows[1]),
            (LabelKind::Different, rows[1], rows[2]),
        ] {
            s.add_label(&NewLabel {
                kind,
                identity: None,
                other: None,
                tracklet: None,
                a: vec![a],
                b: vec![b],
                actor: "alice".into(),
                note: String::new(),
            })
            .unwrap();
        }
        drop(s);
        let out = dir.path().join("out");
        let rep = export(&data, &out, false).unwrap();
        assert_eq!((rep.tracklets, rep.crops, rep.identities), (3, 6, 2));
        assert_eq!((rep.same_pairs, rep.cannot_links), (1, 1));
        let mut names: Vec<String> = std::fs::read_dir(out.join("bounding_box_train"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        // identity 5 is pid 1 in cameras b (c2) and a (c1); identity 6 is pid 2
        assert_eq!(names[0], format!("0001_c1s1_{:06}_00.jpg", rows[1]));
        assert!(names.contains(&format!("0001_c2s1_{:06}_01.jpg", rows[0])));
        assert!(names.contains(&format!("0002_c1s1_{:06}_00.jpg", rows[2])));
        let doc: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("labels.json")).unwrap())
                .unwrap();
        let l = doc["labels"].as_array().unwrap();
        assert_eq!(l.len(), 2);
        assert_eq!(
            (l[0]["same"].clone(), l[0]["a"].clone()),
            (json!(true), json!([rows[0]]))
        );
        assert_eq!(
            (l[1]["same"].clone(), l[1]["b"].clone()),
            (json!(false), json!([rows[2]]))
        );
        assert_eq!(l[0]["user"], "alice");
        // a second export needs --force
        assert!(
            export(&data, &out, false)
                .unwrap_err()
                .to_string()
                .contains("--force")
        );
        assert!(export(&data, &out, true).is_ok());
        // not a data directory
        let e = export(&out, &dir.path().join("x"), false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no crosscam store"), "{e}");
    }
}
