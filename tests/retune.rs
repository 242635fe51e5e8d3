//! `crosscam retune` and `crosscam train` end to end on a tiny synthetic dataset (64×32 networks,
//! a few dozen crops): the written models load in ONNX Runtime, `crosscam eval` accepts them, the
//! MACs target is met, and the JSON reports carry before/after scores.

mod fixtures;

use std::process::Command;

use crosscam::onnx::Model;
use crosscam::onnx::resnet::{Head, Init, ResNetSpec, Style, build};

fn crosscam(args: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_crosscam"))
        .args(args)
        .output()
        .expect("run crosscam");
    assert!(
        out.status.success(),
        "crosscam {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "crosscam {args:?}: not JSON ({e}):\n{}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

#[test]
fn a_pruned_and_retuned_model_is_valid_and_eval_accepts_it() {
    let dir = tempfile::tempdir().unwrap();
    let ds = dir.path().join("ds");
    fixtures::write_dataset(&ds, 6, 4, 1);
    let spec = ResNetSpec::resnet18()
        .for_reid()
        .scaled(0.125)
        .with_input(64, 32);
    let input = dir.path().join("in.onnx");
    build(&spec, Head::BnNeck, Style::default(), Init::RandomStats, 1)
        .save(&input)
        .unwrap();
    let out = dir.path().join("out.onnx");
    let r = crosscam(&[
        "retune",
        "--model",
        input.to_str().unwrap(),
        "--dataset",
        ds.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--scenario",
        "S4",
        "--target-macs",
        "0.5",
        "--budget",
        "1ep",
        "--batch",
        "4x2",
        "--min-channels",
        "2",
        "--round-to",
        "2",
        "--lr",
        "0.003",
        "--json",
    ]);
    let frac = r["macs_after"].as_f64().unwrap() / r["macs_before"].as_f64().unwrap();
    assert!((frac - 0.5).abs() < 0.08, "MACs kept {frac}");
    for k in ["before", "after"] {
        let m = r[k]["mAP"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&m), "{k}: {m}");
    }
    let phases = r["phases"].as_array().unwrap();
    assert_eq!(phases.len(), 1);
    assert!(phases[0]["steps"].as_u64().unwrap() >= 1);
    assert_eq!(r["feature_dim_after"], r["feature_dim_before"]);
    // a valid ONNX model that `crosscam eval` accepts
    let m = Model::load(&out).unwrap();
    assert!(m.metadata.iter().any(|(k, _)| k == "crosscam.retune"));
    let e = crosscam(&[
        "eval",
        "--model",
        out.to_str().unwrap(),
        "--dataset",
        ds.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(
        e["mAP"].as_f64().unwrap(),
        r["after"]["mAP"].as_f64().unwrap()
    );
    assert_eq!(e["model_macs"], r["macs_after"]);
}

#[test]
fn a_fresh_network_trains_and_s0_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let ds = dir.path().join("ds");
    fixtures::write_dataset(&ds, 5, 4, 2);
    let out = dir.path().join("fresh.onnx");
    let r = crosscam(&[
        "train",
        "--arch",
        "resnet18",
        "--width",
        "0.125",
        "--input",
        "64x32",
        "--dataset",
        ds.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--distill",
        "0ep",
        "--reid",
        "1ep",
        "--labels",
        "pseudo",
        "--batch",
        "4x2",
        "--json",
    ]);
    assert_eq!(r["feature_dim_after"], 64);
    assert!(r["after"]["mAP"].as_f64().is_some());
    // S0: the output is the input
    let s0 = dir.path().join("s0.onnx");
    let r = crosscam(&[
        "retune",
        "--model",
        out.to_str().unwrap(),
        "--dataset",
        ds.to_str().unwrap(),
        "--out",
        s0.to_str().unwrap(),
        "--scenario",
        "S0",
        "--json",
    ]);
    assert_eq!(r["before"], r["after"]);
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&s0).unwrap());
}
