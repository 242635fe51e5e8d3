//! The daemon serves int8 models made with `crosscam quantize`: the bundled embedder and
//! detector are quantised on frames of the clip and registered in the site manifest, the site
//! config names them (`[models] detector` / `embedder`), and `crosscam serve` on a camera of the
//! clip detects people with the int8 detector and embeds their crops with the int8 embedder —
//! the status names the int8 embedder's checksum.

mod common;

use std::process::Command;

use common::daemon::{Daemon, add_user, clip_camera};
use serde_json::Value;

fn quantize(model: &str, out: &std::path::Path, data: &std::path::Path, name: &str) -> Value {
    let o = Command::new(common::daemon::bin())
        .args(["quantize", "--model", model, "--out"])
        .arg(out)
        .arg("--video")
        .arg(crosscam::paths::media("vtest.avi"))
        .args(["--samples", "16", "--name", name, "--data-dir"])
        .arg(data)
        .arg("--json")
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "quantize {model}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn the_daemon_serves_an_int8_detector_and_embedder_from_the_site_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let models = dir.path().join("int8");
    std::fs::create_dir_all(&models).unwrap();
    let emb = quantize(
        "crosscam-resnet18-vtest",
        &models.join("r18-int8.onnx"),
        &data,
        "r18-int8",
    );
    quantize(
        "nanodet-416",
        &models.join("nanodet-int8.onnx"),
        &data,
        "nanodet-int8",
    );
    let manifest = data.join("site-models/manifest.toml");
    let config = dir.path().join("site.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\ndata_dir = \"{}\"\nlog = \"info\"\n\n[models]\nmanifest = \"{}\"\ndetector = \"nanodet-int8\"\nembedder = \"r18-int8\"\n\n[analysis]\nfps = 5\nwidth = 640\n\n[api]\nlisten = \"127.0.0.1:0\"\n\n{}",
            data.display(),
            manifest.display(),
            clip_camera("a", 0.0),
        ),
    )
    .unwrap();
    add_user(&config, "admin", "admin");
    let d = Daemon::spawn(dir, config);
    let admin = d.login("admin");
    let (_, st) = d.get("/api/v1/status", Some(&admin));
    assert_eq!(
        st["model"]["sha256"], emb["sha256"],
        "the daemon serves the int8 embedder: {}",
        st["model"]
    );
    let p = d.wait_for(40, "people detected and their crops embedded", || {
        let (_, st) = d.get("/api/v1/status", Some(&admin));
        let p = st["pipeline"].clone();
        (p["analysis"]["detections"].as_u64()? >= 20 && p["reid"]["crops"].as_u64()? >= 10)
            .then_some(p)
    });
    eprintln!("pipeline on int8 models: {p}");
    assert_eq!(p["analysis"]["detector_errors"], 0, "{p}");
    assert_eq!(p["reid"]["errors"], 0, "{p}");
}
