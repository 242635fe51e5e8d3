//! `[analysis] detect_every` and `motion_gate` on real video with the real detector and tracker:
//! `crosscam track --video` detects half the frames with `--detect-every 2` and its tracks agree
//! with every-frame detection; on a mostly static scene the motion gate skips most frames yet
//! keeps the people; the daemon serves cameras with both, counts detected frames apart from
//! analysed ones and marks predicted boxes; bad values are config errors naming the key.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crosscam::bench::tracking::by_frame;
use crosscam::config::Config;
use crosscam::eval::mot::evaluate;
use crosscam::server::Server;
use crosscam::track::mot;

fn crosscam(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_crosscam"))
        .args(args)
        .output()
        .expect("run crosscam")
}

/// `crosscam track --video V --out OUT EXTRA… --json` → (summary, tracks).
fn track(video: &Path, out: &Path, extra: &[&str]) -> (serde_json::Value, Vec<mot::MotRow>) {
    let mut args = vec![
        "track",
        "--video",
        video.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--json",
    ];
    args.extend(extra);
    let o = crosscam(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    (s, mot::read(out).unwrap())
}

#[test]
fn every_second_frame_detected_tracks_agree_with_every_frame() {
    let dir = tempfile::tempdir().unwrap();
    let video = crosscam::paths::media("vtest.avi");
    let n = "300";
    let (s1, every) = track(&video, &dir.path().join("every.txt"), &["--max-frames", n]);
    let (s2, half) = track(
        &video,
        &dir.path().join("half.txt"),
        &["--max-frames", n, "--detect-every", "2"],
    );
    assert_eq!(s1["detected_frames"], 300);
    assert_eq!(s2["frames"], 300);
    assert_eq!(s2["detected_frames"], 150, "{s2}");
    // boxes on the frames in between come from the tracker: every frame has boxes
    let frames_with_boxes = |rows: &[mot::MotRow]| {
        rows.iter()
            .map(|r| r.frame)
            .collect::<std::collections::BTreeSet<_>>()
            .len()
    };
    assert!(
        frames_with_boxes(&half) as f64 >= 0.95 * frames_with_boxes(&every) as f64,
        "predicted frames lost their boxes: {} vs {} frames with boxes",
        frames_with_boxes(&half),
        frames_with_boxes(&every)
    );
    // scored against the every-frame tracks as ground truth
    let m = evaluate(&by_frame(&every), &by_frame(&half), 0.5);
    eprintln!("detect_every=2 vs every frame on 300 vtest frames: {m:?}");
    assert!(
        m.idf1 >= 0.85,
        "IDF1 against every-frame tracks {:.3}",
        m.idf1
    );
    assert!(
        m.mota >= 0.8,
        "MOTA against every-frame tracks {:.3}",
        m.mota
    );
}

#[test]
fn the_motion_gate_skips_a_frozen_scene_and_keeps_its_people() {
    let dir = tempfile::tempdir().unwrap();
    let video = dir.path().join("static.mp4");
    let secs = crosscam::bench::scene::write_static_scene(
        &crosscam::paths::media("vtest-h264.mp4"),
        &video,
        crosscam::bench::scene::StaticScene {
            walk_s: 4.0,
            freeze_s: 12.0,
            max_s: 32.0,
        },
    )
    .unwrap();
    assert!((secs - 32.0).abs() < 0.5, "static scene of {secs} s");
    let (s1, every) = track(&video, &dir.path().join("every.txt"), &[]);
    let (s2, gated) = track(&video, &dir.path().join("gated.txt"), &["--motion-gate"]);
    let (frames, detected) = (
        s2["frames"].as_u64().unwrap(),
        s2["detected_frames"].as_u64().unwrap(),
    );
    eprintln!("static scene: {frames} frames, {detected} detected with the motion gate");
    assert_eq!(s1["frames"], s2["frames"]);
    // three quarters of the clip is a frozen frame: detected are the moving quarter and a
    // forced detection every 10 frames of the frozen rest (≈ 0.25 + 0.75 / 10)
    assert!(
        (detected as f64) < 0.45 * frames as f64,
        "motion gate detected {detected} of {frames} frames"
    );
    assert!(
        (detected as f64) > 0.2 * frames as f64,
        "the walking stretches must be detected: {detected} of {frames}"
    );
    let m = evaluate(&by_frame(&every), &by_frame(&gated), 0.5);
    eprintln!("motion gate vs every frame on the static scene: {m:?}");
    assert!(
        m.idf1 >= 0.9,
        "IDF1 against every-frame tracks {:.3}",
        m.idf1
    );
}

#[test]
fn the_daemon_detects_every_second_frame_and_marks_predicted_boxes() {
    let root = env!("CARGO_MANIFEST_DIR");
    let data = tempfile::tempdir().unwrap();
    let video = crosscam::paths::media("vtest-h264.mp4");
    let text = format!(
        "[server]\ndata_dir = \"{}\"\n\
         [models]\nmanifest = \"{root}/models/manifest.toml\"\n\
         [analysis]\nfps = 5\nwidth = 640\ndetect_every = 2\nmotion_gate = true\n\
         [[cameras]]\nid = \"a\"\nurl = \"file://{}\"\nrealtime = true\nloop_file = true\n",
        data.path().display(),
        video.display()
    );
    let cfg = Config::parse(&text, Path::new(&format!("{root}/tests/schedule.toml"))).unwrap();
    let server = Server::start(&cfg, None).unwrap();
    let mut predicted_seen = false;
    let t0 = std::time::Instant::now();
    while t0.elapsed() < Duration::from_secs(12) {
        if let Some(v) = server.live.view("a") {
            predicted_seen |= v.boxes.iter().any(|b| b.predicted);
        }
        std::thread::sleep(Duration::from_millis(40));
    }
    let st = server.ingest.camera_status("a").unwrap();
    let status = server.status();
    server.shutdown();
    eprintln!("camera a: {st:?}; analysis {:?}", status.analysis);
    assert!(st.analysed >= 30, "{st:?}");
    // detect_every = 2: at most every second frame detected (the vtest street always moves)
    assert!(
        st.detected * 2 <= st.analysed + 1 && st.detected * 2 + 4 >= st.analysed,
        "detected {} of {} analysed frames",
        st.detected,
        st.analysed
    );
    assert_eq!(
        status.analysis.detected_frames
            + status.analysis.predicted_frames
            + status.analysis.held_frames,
        status.analysis.frames
    );
    assert!(status.analysis.tracklets_started > 0);
    assert!(predicted_seen, "no live box was ever marked predicted");
}

#[test]
fn bad_schedule_values_are_errors_naming_the_key() {
    let root = env!("CARGO_MANIFEST_DIR");
    for (key, value, expect) in [
        (
            "detect_every",
            "0",
            "expected to detect on every 1st to 30th frame",
        ),
        (
            "motion_threshold",
            "1.5",
            "expected a share of changed pixels",
        ),
        (
            "motion_max_skip",
            "0",
            "expected a forced detection every 1 to 300",
        ),
    ] {
        let text = format!(
            "[models]\nmanifest = \"{root}/models/manifest.toml\"\n[analysis]\n{key} = {value}\n"
        );
        let e = Config::parse(&text, Path::new("site.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains(&format!("analysis.{key}")), "{e}");
        assert!(e.contains(expect), "{e}");
    }
    let o = crosscam(&[
        "track",
        "--detections",
        "/nonexistent.txt",
        "--out",
        "/tmp/x.txt",
        "--detect-every",
        "2",
    ]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("need --video"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}
