//! `crosscam dataset build` on the real clip: detection + tracking over two alternating virtual
//! cameras (one with another colour response) gives a Market-1501 dataset with at least 20
//! pseudo-identities, and the bundled MobileNetV2 evaluates on it.

use std::process::Command;

#[test]
fn vtest_gives_twenty_pseudo_identities_over_two_virtual_cameras() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("vtest-ds");
    let o = Command::new(env!("CARGO_BIN_EXE_crosscam"))
        .args(["dataset", "build", "--video"])
        .arg(crosscam::paths::media("vtest.avi"))
        .arg("--out")
        .arg(&out)
        .args([
            "--cameras",
            "c1=0-5s,every=10s; c2=5-10s,every=10s,brightness=0.7,cast=1.1:1.0:0.9",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let c = &r["counts"];
    assert!(c["identities"].as_u64().unwrap() >= 20, "{r}");
    assert!(c["multi_camera_identities"].as_u64().unwrap() >= 5, "{r}");
    for split in ["train", "query", "gallery"] {
        assert_eq!(c[split]["cameras"], 2, "{split}: {r}");
    }
    let ds = crosscam::eval::Dataset::load(&out, None).unwrap();
    assert!(!ds.query.is_empty() && !ds.gallery.is_empty());
    let info: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("dataset.json")).unwrap()).unwrap();
    assert_eq!(info["labels"], "pseudo");

    let o = Command::new(env!("CARGO_BIN_EXE_crosscam"))
        .args([
            "eval",
            "--model",
            "mobilenetv2-imagenet",
            "--json",
            "--dataset",
        ])
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let e: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    eprintln!("MobileNetV2 on vtest: {e}");
    let (r1, map) = (e["rank1"].as_f64().unwrap(), e["mAP"].as_f64().unwrap());
    assert!((0.0..=1.0).contains(&r1) && map > 0.0 && map <= 1.0);
    assert_eq!(e["num_valid_query"], e["num_query"]);
}
