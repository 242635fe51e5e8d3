//! `crosscam detect` and `crosscam track` on vtest.avi, writing MOTChallenge files; tracking
//! stability on the whole clip; clear errors for missing and corrupt videos.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::Command;

use crosscam::track::mot;

fn crosscam(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_crosscam"))
        .args(args)
        .output()
        .expect("run crosscam")
}

fn vtest() -> String {
    crosscam::paths::media("vtest.avi").display().to_string()
}

#[test]
fn detect_writes_motchallenge_lines_and_track_reads_them() {
    let dir = tempfile::tempdir().unwrap();
    let det = dir.path().join("det.txt");
    let out = crosscam(&[
        "detect",
        "--video",
        &vtest(),
        "--out",
        det.to_str().unwrap(),
        "--max-frames",
        "120",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows = mot::read(&det).unwrap();
    let frames: std::collections::BTreeSet<u64> = rows.iter().map(|r| r.frame).collect();
    assert_eq!(
        (*frames.first().unwrap(), *frames.last().unwrap()),
        (1, 120),
        "frames are numbered from 1"
    );
    assert!(rows.iter().all(|r| r.id == -1));
    assert!(
        rows.iter().all(|r| r.bbox.x1 >= 0.0
            && r.bbox.y1 >= 0.0
            && r.bbox.x2 <= 768.0
            && r.bbox.y2 <= 576.0)
    );
    // frame 101 is the 100th after the first: at least 5 people
    assert!(
        rows.iter()
            .filter(|r| r.frame == 101 && r.score >= 0.3)
            .count()
            >= 5
    );
    let text = std::fs::read_to_string(&det).unwrap();
    assert!(text.lines().next().unwrap().ends_with(",-1,-1,-1"));

    let tracks = dir.path().join("tracks.txt");
    let out = crosscam(&[
        "track",
        "--detections",
        det.to_str().unwrap(),
        "--out",
        tracks.to_str().unwrap(),
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["frames"], 120);
    let rows = mot::read(&tracks).unwrap();
    assert!(rows.iter().all(|r| r.id >= 1));
    // one box per id per frame
    let mut seen = std::collections::HashSet::new();
    assert!(rows.iter().all(|r| seen.insert((r.frame, r.id))));
}

#[test]
fn tracking_the_whole_clip_is_stable_and_writes_crops() {
    let dir = tempfile::tempdir().unwrap();
    let tracks = dir.path().join("tracks.txt");
    let crops = dir.path().join("crops");
    let out = crosscam(&[
        "track",
        "--video",
        &vtest(),
        "--out",
        tracks.to_str().unwrap(),
        "--crops",
        crops.to_str().unwrap(),
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    eprintln!("vtest.avi tracking summary: {s}");
    assert_eq!(s["frames"], 795);
    assert!(
        (s["video_seconds"].as_f64().unwrap() - 79.5).abs() < 1.0,
        "{s}"
    );
    // a few people at a time walk through: tracks must not shatter into many short ids
    assert!(s["ids_per_minute"].as_f64().unwrap() < 40.0, "{s}");
    assert!(s["mean_track_seconds"].as_f64().unwrap() > 5.0, "{s}");
    // every id's boxes are in one contiguous-ish stretch of frames (no id reuse)
    let rows = mot::read(&tracks).unwrap();
    let mut spans: HashMap<i64, (u64, u64, usize)> = HashMap::new();
    for r in &rows {
        let e = spans.entry(r.id).or_insert((r.frame, r.frame, 0));
        e.0 = e.0.min(r.frame);
        e.1 = e.1.max(r.frame);
        e.2 += 1;
    }
    for (id, (a, b, n)) in &spans {
        assert!(
            *n as f64 >= 0.5 * (b - a + 1) as f64,
            "track {id} is present in only {n} of frames {a}..{b}"
        );
    }
    // crops: one folder per tracklet, at most 8 jpgs each, decodable
    let dirs: BTreeMap<String, usize> = std::fs::read_dir(&crops)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read_dir(e.path()).unwrap().count(),
            )
        })
        .collect();
    assert_eq!(dirs.len(), s["tracklets"].as_u64().unwrap() as usize);
    assert!(dirs.values().all(|&n| (1..=8).contains(&n)), "{dirs:?}");
    let first = dirs.keys().next().unwrap();
    let jpg = std::fs::read_dir(crops.join(first))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    assert!(image::open(&jpg).is_ok());
}

#[test]
fn missing_and_corrupt_videos_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("d.txt");
    let out = crosscam(&[
        "detect",
        "--video",
        "/nonexistent/clip.avi",
        "--out",
        out_path.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("/nonexistent/clip.avi") && err.contains("does not exist"),
        "{err}"
    );

    // a real AVI cut in the middle, then garbage
    let corrupt = dir.path().join("corrupt.avi");
    let mut bytes = std::fs::read(Path::new(&vtest())).unwrap();
    bytes.truncate(200_000);
    bytes.extend(std::iter::repeat_n(0x5a, 100_000));
    std::fs::write(&corrupt, &bytes).unwrap();
    let out = crosscam(&[
        "detect",
        "--video",
        corrupt.to_str().unwrap(),
        "--out",
        out_path.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    // either a clean error naming the file, or the readable frames processed: never a crash
    assert!(out.status.code().is_some(), "no crash: {err}");
    if !out.status.success() {
        assert!(
            err.contains("corrupt.avi") || err.contains("decoding failed"),
            "{err}"
        );
    }
    let junk = dir.path().join("junk.mp4");
    std::fs::write(&junk, vec![0u8; 50_000]).unwrap();
    let out = crosscam(&[
        "detect",
        "--video",
        junk.to_str().unwrap(),
        "--out",
        out_path.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("junk.mp4"), "{err}");
}
