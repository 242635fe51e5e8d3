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

/// A store in `dir` with one ended tracklet of camera `cam` (its row id).
fn with_a_tracklet(dir: &Path) -> (Store, i64) {
    let s = Store::open(dir).unwrap();
    let run = s.begin_run().unwrap();
    let t = s
        .upsert_tracklet(run, &tracklet("cam", 1, 0, 1), 0.1, true)
        .unwrap();
    (s, t)
}

#[test]
fn crops_are_written_once_and_retained_by_budget() {
    let dir = tempfile::tempdir().unwrap();
    let (s, t) = with_a_tracklet(dir.path());
    assert_eq!(
        s.save_crops(t, "cam", &[crop(1), crop(2), crop(3)])
            .unwrap(),
        3
    );
    assert_eq!(s.save_crops(t, "cam", &[crop(3), crop(4)]).unwrap(), 1);
    let files = s.crops_of(t).unwrap();
    assert_eq!(files.len(), 4);
    // one pack, the crops one after the other, each a whole JPEG
    assert!(files.iter().all(|(d, _)| d.path == files[0].0.path));
    let mut end = 0;
    for (d, _) in &files {
        assert_eq!(d.offset, Some(end));
        end += d.len;
        assert_eq!(d.image().unwrap().width(), 32);
    }
    assert_eq!(std::fs::metadata(&files[0].0.path).unwrap().len(), end);
    let one = files[0].0.len;
    let rep = s
        .enforce_crop_retention(&CropRetention {
            max_age_ms: None,
            max_bytes: Some(2 * one + one / 2),
        })
        .unwrap();
    assert_eq!(rep.deleted, 2);
    let left = s.crops_of(t).unwrap();
    assert_eq!(left, files[2..], "the oldest go first");
    // the pack is still being written by this store: it stays, and takes more
    assert_eq!(rep.packs_deleted, 0);
    assert_eq!(s.save_crops(t, "cam", &[crop(5)]).unwrap(), 1);
    assert!(s.crops_of(t).unwrap().iter().all(|(d, _)| d.present()));
    let rep = s
        .enforce_crop_retention(&CropRetention {
            max_age_ms: Some(-1),
            max_bytes: None,
        })
        .unwrap();
    assert_eq!((rep.deleted, rep.remaining_bytes), (3, 0));
}

#[test]
fn retention_deletes_emptied_packs_and_moves_what_is_left_of_half_empty_ones() {
    let dir = tempfile::tempdir().unwrap();
    let (t, first) = {
        let (s, t) = with_a_tracklet(dir.path());
        s.save_crops(t, "cam", &(1..=6).map(crop).collect::<Vec<_>>())
            .unwrap();
        (t, s.crops_of(t).unwrap())
    };
    // the writing store is gone (its pack unlocked); a crash left bytes nobody names
    let packs = dir.path().join("crops/packs");
    let orphan = packs.join("0000000000001-00000000000000aa.pack");
    std::fs::write(&orphan, b"half a crop").unwrap();
    let s = Store::open(dir.path()).unwrap();
    let one = first[0].0.len;
    // four of six deleted: the pack is a third alive
    let rep = s
        .enforce_crop_retention(&CropRetention {
            max_age_ms: None,
            max_bytes: Some(2 * one + one / 2),
        })
        .unwrap();
    assert_eq!(rep.deleted, 4);
    assert_eq!(rep.crops_moved, 2);
    assert_eq!(rep.packs_deleted, 2, "the old pack and the orphan");
    assert!(!first[0].0.path.exists() && !orphan.exists());
    let left = s.crops_of(t).unwrap();
    assert_eq!(left.len(), 2);
    for ((now, _), (before, _)) in left.iter().zip(&first[4..]) {
        assert_ne!(now.path, before.path, "moved to this store's pack");
        assert_eq!(now.len, before.len);
        assert!(now.image().is_ok());
    }
    // the new pack is this store's: a second pass leaves it, all alive
    let rep = s
        .enforce_crop_retention(&CropRetention {
            max_age_ms: None,
            max_bytes: None,
        })
        .unwrap();
    assert_eq!((rep.deleted, rep.crops_moved, rep.packs_deleted), (0, 0, 0));
    assert_eq!(s.crops_of(t).unwrap(), left);
}

#[test]
fn another_process_never_deletes_a_pack_being_written() {
    let dir = tempfile::tempdir().unwrap();
    let (writer, t) = with_a_tracklet(dir.path());
    writer.save_crops(t, "cam", &[crop(1), crop(2)]).unwrap();
    // bytes appended, row not recorded yet (as the crop writer does between the two)
    let pending = writer.write_crop_files(t, "cam", &[crop(3)]).unwrap();
    let other = Store::open(dir.path()).unwrap();
    let rep = other
        .enforce_crop_retention(&CropRetention {
            max_age_ms: Some(-1),
            max_bytes: Some(0),
        })
        .unwrap();
    assert_eq!((rep.deleted, rep.packs_deleted), (2, 0));
    writer.insert_crop_rows(&pending).unwrap();
    let left = writer.crops_of(t).unwrap();
    assert_eq!(left.len(), 1);
    assert!(
        left[0].0.image().is_ok(),
        "the pack was kept: {}",
        left[0].0
    );
}

#[test]
fn crops_stored_as_files_by_an_older_version_are_read_and_retained() {
    let dir = tempfile::tempdir().unwrap();
    let (s, t) = with_a_tracklet(dir.path());
    let file = dir.path().join("crops/cam/1/00000001.jpg");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 90)
        .encode_image(crop(1).image.as_ref())
        .unwrap();
    std::fs::write(&file, &jpeg).unwrap();
    s.conn()
        .execute(
            "INSERT INTO crops (tracklet, seq, path, quality, bytes, created_ms) VALUES (?1, 1, ?2, 0.5, ?3, 0)",
            params![t, file.display().to_string(), jpeg.len() as i64],
        )
        .unwrap();
    let got = s.crops_of(t).unwrap();
    assert_eq!(got[0].0.offset, None);
    assert_eq!(got[0].0.read().unwrap(), jpeg);
    let id: i64 = s
        .conn()
        .query_row("SELECT id FROM crops", [], |r| r.get(0))
        .unwrap();
    assert_eq!(s.crop_data(id).unwrap(), Some(got[0].0.clone()));
    let rep = s
        .enforce_crop_retention(&CropRetention {
            max_age_ms: Some(-1),
            max_bytes: None,
        })
        .unwrap();
    assert_eq!(rep.deleted, 1);
    assert!(!file.exists());
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
    let (s, t) = with_a_tracklet(&data);
    s.save_crops(t, "cam", &[crop(1)]).unwrap();
    assert_eq!(mode(&data), 0o700);
    for f in ["crosscam.db", "crosscam.db-wal"] {
        assert_eq!(mode(&data.join(f)), 0o600, "{f}");
    }
    let files = s.crops_of(t).unwrap();
    assert_eq!(mode(&files[0].0.path), 0o600, "a crop pack");
    assert_eq!(
        mode(files[0].0.path.parent().unwrap()),
        0o700,
        "the packs' directory"
    );
    assert_eq!(mode(&data.join("crops")), 0o700, "the crops' directory");
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

/// The store's count of operators' changes (schema 6).
fn operator_changes(s: &Store) -> i64 {
    s.conn()
        .query_row("SELECT n FROM operator_changes", [], |r| r.get(0))
        .unwrap()
}

#[test]
fn operators_changes_are_counted_and_the_linkers_are_not() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    let n = || operator_changes(&s);
    let audit = |actor: &str| {
        s.conn()
            .execute(
                "INSERT INTO audit (kind, kept, other, actor, reason, created_ms) VALUES ('merge', 1, 2, ?1, '', 0)",
                params![actor],
            )
            .unwrap();
    };
    assert_eq!(n(), 0);
    audit("linker");
    assert_eq!(n(), 0, "the linker's merge is made again by a replay");
    audit("operator:alice");
    assert_eq!(n(), 1);
    s.conn()
        .execute(
            "INSERT INTO identities (id, created_ms, last_seen_ms) VALUES (7, 0, 0)",
            [],
        )
        .unwrap();
    s.conn()
        .execute("UPDATE identities SET last_seen_ms = 5 WHERE id = 7", [])
        .unwrap();
    assert_eq!(n(), 1, "the linker's own updates are not counted");
    s.conn()
        .execute("UPDATE identities SET label = 'Ann' WHERE id = 7", [])
        .unwrap();
    assert_eq!(n(), 2);
    s.conn()
        .execute(
            "INSERT INTO labels (kind, same, actor, note, created_ms) VALUES ('same', 1, 'bob', '', 0)",
            [],
        )
        .unwrap();
    s.conn().execute("DELETE FROM labels", []).unwrap();
    assert_eq!(n(), 4);
}

#[test]
fn cameras_changed_through_the_api_are_kept_counted_and_unreadable_rows_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    let n = || operator_changes(&s);
    let cam = |id: &str, url: &str| -> crate::config::CameraSettings {
        serde_json::from_value(serde_json::json!({"id": id, "url": url, "name": "Lobby"})).unwrap()
    };
    assert!(s.camera_changes().unwrap().is_empty());
    s.record_camera_change("lobby", Some(&cam("lobby", "test:ball")), None, "ann")
        .unwrap();
    s.record_camera_change("door", None, Some(&cam("door", "test:snow")), "bob")
        .unwrap();
    assert_eq!(n(), 2, "each change counts for the core's next snapshot");
    // a second change of one camera replaces the first
    s.record_camera_change("lobby", Some(&cam("lobby", "test:smpte")), None, "bob")
        .unwrap();
    assert_eq!(n(), 3);
    let kept = s.camera_changes().unwrap();
    assert_eq!(kept.len(), 2);
    let lobby = kept.iter().find(|c| c.id == "lobby").unwrap();
    assert_eq!(
        lobby.settings.as_ref().unwrap(),
        &cam("lobby", "test:smpte")
    );
    assert_eq!((lobby.config.as_ref(), lobby.actor.as_str()), (None, "bob"));
    let door = kept.iter().find(|c| c.id == "door").unwrap();
    assert_eq!(door.settings, None, "a removal");
    assert_eq!(door.config.as_ref().unwrap().url, "test:snow");
    // a row nobody can read (edited by hand) is skipped, the others still apply
    s.conn()
        .execute(
            "UPDATE camera_changes SET settings = '{\"id\": 3}' WHERE id = 'lobby'",
            [],
        )
        .unwrap();
    let kept = s.camera_changes().unwrap();
    assert_eq!(
        kept.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
        ["door"]
    );
    s.forget_camera_change("door").unwrap();
    s.forget_camera_change("lobby").unwrap();
    assert!(s.camera_changes().unwrap().is_empty());
    assert_eq!(n(), 6);
    // and they outlast the process
    s.record_camera_change("gate", Some(&cam("gate", "test:ball")), None, "ann")
        .unwrap();
    drop(s);
    let s = Store::open(dir.path()).unwrap();
    let kept = s.camera_changes().unwrap();
    assert_eq!(kept.len(), 1);
    assert_eq!(
        kept[0].settings.as_ref().unwrap(),
        &cam("gate", "test:ball")
    );
}
