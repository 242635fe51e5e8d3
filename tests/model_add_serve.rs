//! A model brought in with `crosscam model add` serves in the daemon: crosscam's trained
//! ResNet-18 is written as PyTorch's torch.export-based exporter writes a model (the weights in a
//! separate `model.onnx.data`), added to the site's manifest (the export folder is deleted
//! afterwards: the site's copy holds its weights), named by `[models] embedder` with `[models]
//! manifest` pointing at the site manifest, and `crosscam serve` on two cameras of the bundled
//! clip embeds with it — the status names its checksum — and links a person across the cameras.
//! (Trained torchreid or fast-reid weights cannot be fetched here; crosscam's own trained network
//! stands in for them, so that a link means something.)

mod common;

use std::process::Command;

use common::daemon::{Daemon, add_user, clip_camera};
use serde_json::Value;

#[test]
fn a_model_added_to_the_site_manifest_serves_and_links_across_cameras() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let export_dir = dir.path().join("export");
    std::fs::create_dir_all(&export_dir).unwrap();
    let export = export_dir.join("r18-site.onnx");
    let trained = crosscam::paths::project_root().join("models/crosscam-resnet18-vtest.onnx");
    crosscam::onnx::Model::load(&trained)
        .unwrap()
        .save_with_external_data(&export, 1024)
        .unwrap();
    assert!(export_dir.join("r18-site.onnx.data").exists());

    let out = Command::new(common::daemon::bin())
        .args(["model", "add"])
        .arg(&export)
        .args(["--role", "embedder", "--name", "r18-site", "--data-dir"])
        .arg(&data)
        .args(["--licence", "MIT (crosscam's own weights)", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "model add: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let added: Value = serde_json::from_slice(&out.stdout).unwrap();
    std::fs::remove_dir_all(&export_dir).unwrap();

    let manifest = data.join("site-models/manifest.toml");
    let config = dir.path().join("site.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\ndata_dir = \"{}\"\nlog = \"info\"\n\n[models]\nmanifest = \"{}\"\ndetector = \"nanodet-416\"\nembedder = \"r18-site\"\n\n[analysis]\nfps = 5\nwidth = 640\n\n[api]\nlisten = \"127.0.0.1:0\"\n\n{}{}",
            data.display(),
            manifest.display(),
            clip_camera("a", 0.0),
            clip_camera("b", 20.0)
        ),
    )
    .unwrap();
    add_user(&config, "admin", "admin");
    let d = Daemon::spawn(dir, config);
    let admin = d.login("admin");

    let (_, st) = d.get("/api/v1/status", Some(&admin));
    assert_eq!(
        st["model"]["sha256"], added["sha256"],
        "the daemon serves the added model: {}",
        st["model"]
    );
    let linked: Value = d.wait_for(240, "a person linked across cameras a and b", || {
        let (_, ids) = d.get("/api/v1/identities?limit=1000", Some(&admin));
        ids["identities"]
            .as_array()?
            .iter()
            .find(|i| {
                let cams: Vec<&str> = i["cameras"]
                    .as_array()
                    .map(|c| c.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                cams.contains(&"a") && cams.contains(&"b")
            })
            .cloned()
    });
    eprintln!("linked across cameras: {linked}");
    let (_, st) = d.get("/api/v1/status", Some(&admin));
    assert_eq!(st["model"]["sha256"], added["sha256"]);
}
