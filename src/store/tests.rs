use super::*;

pub(crate) fn crop(seq: u64) -> crate::track::Crop {
    let img = image::RgbImage::from_fn(32, 64, |x, y| {
        image::Rgb([(x * 8) as u8, (y * 4) as u8, 100])
    });
    crate::track::Crop {
        seq,
        pts: std::time::Duration::from_millis(seq * 100),
        bbox: crate::frame::BBox::new(0.0, 0.0, 32.0, 64.0),
        quality: 0.5,
        image: std::sync::Arc::new(img),
        jpeg: None,
    }
}

pub(crate) fn tracklet(
    camera: &str,
    id: u64,
    start_ms: i64,
    end_ms: i64,
) -> crate::track::Tracklet {
    let b = |ms: i64| crate::track::TrackedBox {
        seq: ms as u64 / 100,
        pts: std::time::Duration::from_millis(ms as u64),
        bbox: crate::frame::BBox::new(1.0, 2.0, 30.0, 80.0),
        score: 0.9,
        wall_ms: 1_700_000_000_000 + ms,
    };
    crate::track::Tracklet {
        camera: camera.into(),
        id,
        start: std::time::Duration::from_millis(start_ms as u64),
        end: std::time::Duration::from_millis(end_ms as u64),
        boxes: vec![b(start_ms), b(end_ms)],
        crops: vec![],
    }
}

#[test]
fn sightings_merges_and_splits_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::open(dir.path()).unwrap();
    let run = s.begin_run().unwrap();
    s.upsert_camera("a", "A", "rtsp://x").unwrap();
    let t1 = s
        .upsert_tracklet(run, &tracklet("a", 1, 1000, 2000), 0.7, false)
        .unwrap();
    // upsert keeps the row and updates it (boxes included)
    assert_eq!(
        s.upsert_tracklet(run, &tracklet("a", 1, 1000, 3000), 0.8, true)
            .unwrap(),
        t1
    );
    let t2 = s
        .upsert_tracklet(run, &tracklet("a", 2, 5000, 6000), 0.6, true)
        .unwrap();
    let boxes = s.tracklet_boxes().unwrap();
    assert_eq!(
        boxes[0].2,
        vec![
            (1000, crate::frame::BBox::new(1.0, 2.0, 30.0, 80.0)),
            (3000, crate::frame::BBox::new(1.0, 2.0, 30.0, 80.0))
        ]
    );
    s.save_descriptor(t1, "m", &[0.6, 0.8]).unwrap();
    s.save_descriptor(t2, "m", &[1.0, 0.0]).unwrap();
    s.record_sighting(t1, 1, None, None, Decision::New, "m", 3000)
        .unwrap();
    s.record_sighting(t2, 2, None, None, Decision::New, "m", 6000)
        .unwrap();
    let live = s.live_tracklets("m").unwrap();
    assert_eq!(
        live[0].start_ms, 1_700_000_001_000,
        "wall-clock times are stored"
    );
    assert_eq!(s.max_identity().unwrap(), 2);
    s.merge_identities(1, 2, "linker", "repeated mutual best match", Some(0.83))
        .unwrap();
    let ids = s.identities(false).unwrap();
    assert_eq!(ids.len(), 1);
    assert_eq!(
        (ids[0].id, ids[0].sightings, ids[0].last_seen_ms),
        (1, 2, 6000)
    );
    let live = s.live_tracklets("m").unwrap();
    assert_eq!(live.len(), 2);
    assert!(live.iter().all(|t| t.identity == 1));
    assert_eq!(live[0].descriptor, vec![0.6, 0.8]);
    s.split_identity(1, 3, &[t2], "operator:alice", "two people")
        .unwrap();
    assert_eq!(s.identity_of(t2).unwrap(), Some(3));
    let audit = s.audit().unwrap();
    assert_eq!(
        audit.iter().map(|a| a.kind.as_str()).collect::<Vec<_>>(),
        vec!["merge", "split"]
    );
    assert!(
        s.split_identity(1, 4, &[t2], "op", "wrong").is_err(),
        "t2 is no longer identity 1's"
    );
}

#[test]
fn reopening_keeps_everything_and_refuses_newer_schemas() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut s = Store::open(dir.path()).unwrap();
        let run = s.begin_run().unwrap();
        let t = s
            .upsert_tracklet(run, &tracklet("a", 1, 0, 1), 0.1, true)
            .unwrap();
        s.record_sighting(t, 7, Some(0.9), Some(0.2), Decision::Linked, "m", 1)
            .unwrap();
    }
    let s = Store::open(dir.path()).unwrap();
    assert_eq!(s.sightings().unwrap().len(), 1);
    assert_eq!(s.sightings().unwrap()[0].decision, Decision::Linked);
    assert_eq!(s.begin_run().unwrap(), 2);
    s.conn().pragma_update(None, "user_version", 99).unwrap();
    drop(s);
    let e = Store::open(dir.path()).err().unwrap().to_string();
    assert!(e.contains("newer crosscam"), "{e}");
}

#[test]
fn crops_are_written_once_and_retained_by_budget() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    let run = s.begin_run().unwrap();
    let t = s
        .upsert_tracklet(run, &tracklet("cam", 1, 0, 1), 0.1, true)
        .unwrap();
    assert_eq!(
        s.save_crops(t, "cam", &[crop(1), crop(2), crop(3)])
            .unwrap(),
        3
    );
    assert_eq!(s.save_crops(t, "cam", &[crop(3), crop(4)]).unwrap(), 1);
    let files = s.crops_of(t).unwrap();
    assert_eq!(files.len(), 4);
    assert!(files.iter().all(|(p, _)| p.is_file()));
    let one = std::fs::metadata(&files[0].0).unwrap().len();
    let rep = s
        .enforce_crop_retention(&CropRetention {
            max_age_ms: None,
            max_bytes: Some(2 * one + one / 2),
        })
        .unwrap();
    assert_eq!(rep.deleted, 2);
    let left = s.crops_of(t).unwrap();
    assert_eq!(left.len(), 2);
    assert!(
        !files[0].0.exists() && !files[1].0.exists(),
        "the oldest go first"
    );
    let rep = s
        .enforce_crop_retention(&CropRetention {
            max_age_ms: Some(-1),
            max_bytes: None,
        })
        .unwrap();
    assert_eq!((rep.deleted, rep.remaining_bytes), (2, 0));
}

#[test]
fn a_version_1_database_is_migrated_in_place() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut c = rusqlite::Connection::open(dir.path().join("crosscam.db")).unwrap();
        let tx = c.transaction().unwrap();
        tx.execute_batch(super::schema::MIGRATIONS_FOR_TESTS[0])
            .unwrap();
        tx.pragma_update(None, "user_version", 1).unwrap();
        tx.execute("INSERT INTO runs (started_ms) VALUES (1)", [])
            .unwrap();
        tx.commit().unwrap();
    }
    let s = Store::open(dir.path()).unwrap();
    let v: i64 = s
        .conn()
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(v, super::schema::VERSION);
    assert_eq!(s.begin_run().unwrap(), 2, "rows of version 1 survive");
    s.upsert_tracklet(2, &tracklet("a", 1, 0, 100), 0.5, true)
        .unwrap();
    assert_eq!(s.tracklet_boxes().unwrap()[0].2.len(), 2);
}

#[test]
fn the_data_directory_its_database_and_crops_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let s = Store::open(&data).unwrap();
    let run = s.begin_run().unwrap();
    let t = s
        .upsert_tracklet(run, &tracklet("cam", 1, 0, 1), 0.1, true)
        .unwrap();
    s.save_crops(t, "cam", &[crop(1)]).unwrap();
    assert_eq!(mode(&data), 0o700);
    for f in ["crosscam.db", "crosscam.db-wal"] {
        assert_eq!(mode(&data.join(f)), 0o600, "{f}");
    }
    let files = s.crops_of(t).unwrap();
    assert_eq!(mode(&files[0].0), 0o600, "a crop");
    assert_eq!(
        mode(files[0].0.parent().unwrap()),
        0o700,
        "a crop directory"
    );
    drop(s);
    // an older data directory, open to everyone, is tightened when opened
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(
        data.join("crosscam.db"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let _s = Store::open(&data).unwrap();
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&data.join("crosscam.db")), 0o600);
}
