//! Crash test: `crosscam serve` is killed with SIGKILL while it links people, then started
//! again on the same data directory. The database must open and pass SQLite's integrity check,
//! every identity and sighting written before the kill must still be there, and the people seen
//! again after the restart must be linked to the identities made before it (the gallery is
//! rebuilt from the store, not started empty).

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{cut_clip, wait_for};
use crosscam::store::{Decision, SightingRow, Store};

fn write_config(dir: &Path, clip: &Path) -> PathBuf {
    let root = env!("CARGO_MANIFEST_DIR");
    let text = format!(
        "[server]\ndata_dir = \"{data}\"\n\
         [models]\nmanifest = \"{root}/models/manifest.toml\"\nembedder = \"mobilenetv2-imagenet\"\n\
         [analysis]\nfps = 5\nwidth = 640\n\
         [api]\nlisten = \"127.0.0.1:0\"\n\
         [[cameras]]\nid = \"a\"\nurl = \"file://{clip}\"\n",
        data = dir.join("data").display(),
        clip = clip.display(),
    );
    let p = dir.join("crash.toml");
    std::fs::write(&p, text).unwrap();
    p
}

fn serve(config: &Path, dir: &Path, run: usize) -> common::KillOnDrop {
    common::KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_crosscam"))
            .args(["serve", "--config"])
            .arg(config)
            .arg("--events")
            .arg(dir.join(format!("events-{run}.jsonl")))
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join(format!("serve-{run}.log"))).unwrap())
            .spawn()
            .expect("cannot start crosscam serve"),
    )
}

/// The store as another process sees it while the server writes (WAL: readers don't block).
fn sightings(data: &Path) -> Vec<SightingRow> {
    if !data.join("crosscam.db").exists() {
        return Vec::new();
    }
    Store::open(data)
        .and_then(|s| s.sightings())
        .unwrap_or_default()
}

fn log(dir: &Path, run: usize) -> String {
    std::fs::read_to_string(dir.join(format!("serve-{run}.log"))).unwrap_or_default()
}

#[test]
fn sigkill_loses_nothing_and_the_gallery_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let clip = dir.join("a.mp4");
    cut_clip(
        &crosscam::paths::media("vtest-h264.mp4"),
        0.0,
        40.0,
        None,
        &clip,
    );
    let config = write_config(dir, &clip);
    let data = dir.join("data");

    // run 1: until a few people have identities, then SIGKILL mid-run
    let mut child = serve(&config, dir, 1);
    let enough = wait_for(Duration::from_secs(90), || {
        let s = sightings(&data);
        let ids: BTreeSet<i64> = s.iter().map(|s| s.identity).collect();
        s.len() >= 6 && ids.len() >= 3
    });
    assert!(
        enough.is_some(),
        "the server linked too little before the kill: {:?}\n{}",
        sightings(&data).len(),
        log(dir, 1)
    );
    assert!(
        child.try_wait().unwrap().is_none(),
        "the server stopped by itself"
    );
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    assert!(!status.success(), "the kill did not kill: {status:?}");

    // the database opens, is intact, and holds what was written
    let conn = rusqlite::Connection::open(data.join("crosscam.db")).unwrap();
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    drop(conn);
    let store = Store::open(&data).unwrap();
    let before = store.sightings().unwrap();
    let identities_before: BTreeSet<i64> = store
        .identities(true)
        .unwrap()
        .iter()
        .map(|i| i.id)
        .collect();
    drop(store);
    assert!(before.len() >= 6);
    for s in &before {
        assert!(
            identities_before.contains(&s.identity),
            "sighting of tracklet {} points at a missing identity {}",
            s.tracklet,
            s.identity
        );
    }
    let killed_at = crosscam::store::now_ms();

    // run 2: the same camera plays the clip again — the same people come back
    let mut child = serve(&config, dir, 2);
    let linked_to_old = |s: &SightingRow| {
        s.created_ms > killed_at
            && matches!(s.decision, Decision::Linked | Decision::Uncertain)
            && identities_before.contains(&s.identity)
    };
    let relinked = wait_for(Duration::from_secs(90), || {
        sightings(&data).iter().filter(|s| linked_to_old(s)).count() >= 3
    });
    // stop gracefully (SIGTERM): cameras stop, the store is flushed, the gallery dumped
    let status = child.terminate(30);
    let text = log(dir, 2);
    assert!(
        text.contains("gallery restored"),
        "the restart did not rebuild the gallery from the store:\n{text}"
    );
    let after = sightings(&data);
    assert!(
        relinked.is_some(),
        "after the restart, fewer than 3 new sightings linked to identities made before the \
         kill ({} new sightings, {} linked to old identities)\n{text}",
        after.iter().filter(|s| s.created_ms > killed_at).count(),
        after.iter().filter(|s| linked_to_old(s)).count()
    );
    assert!(
        status.is_some_and(|s| s.success()),
        "SIGTERM did not stop the server cleanly: {status:?}\n{text}"
    );

    // nothing written before the kill was lost (identities may have merged since)
    let store = Store::open(&data).unwrap();
    let now: std::collections::BTreeMap<i64, crosscam::store::IdentityRow> = store
        .identities(true)
        .unwrap()
        .into_iter()
        .map(|i| (i.id, i))
        .collect();
    for id in &identities_before {
        assert!(now.contains_key(id), "identity {id} vanished");
    }
    for s in &before {
        let row = after
            .iter()
            .find(|a| a.tracklet == s.tracklet)
            .unwrap_or_else(|| panic!("the sighting of tracklet {} vanished", s.tracklet));
        let mut id = row.identity;
        while let Some(next) = now.get(&id).and_then(|i| i.merged_into) {
            id = next;
        }
        let mut was = s.identity;
        while let Some(next) = now.get(&was).and_then(|i| i.merged_into) {
            was = next;
        }
        assert_eq!(
            id, was,
            "tracklet {} moved to another person without a merge",
            s.tracklet
        );
    }
}
