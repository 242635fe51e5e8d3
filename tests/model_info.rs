//! `crosscam model info` against torchvision's reference figures (docs/models.md), on
//! torchvision-style ResNet graphs written by crosscam's own ONNX writer (no PyTorch needed), and
//! ONNX Runtime loading them.

use std::process::Command;

use crosscam::onnx::resnet::{Head, Init, ResNetSpec, Style, Tail, build};

fn info_json(path: &std::path::Path, extra: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_crosscam"))
        .args(["model", "info", "--json", "--model"])
        .arg(path)
        .args(extra)
        .output()
        .expect("run crosscam");
    assert!(
        out.status.success(),
        "model info failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("model info --json prints JSON")
}

fn assert_close(what: &str, got: f64, want: f64, tol: f64) {
    assert!(
        ((got - want) / want).abs() <= tol,
        "{what}: got {got}, reference {want} (±{}%)",
        tol * 100.0
    );
}

#[test]
fn resnet50_reid_matches_reference_macs_and_params() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("r50.onnx");
    build(
        &ResNetSpec::resnet50().for_reid(),
        Head::Features,
        Style::default(),
        Init::RandomStats,
        1,
    )
    .save(&p)
    .unwrap();
    let j = info_json(&p, &[]);
    assert_close(
        "ResNet-50 256x128 last stride 1 MACs",
        j["macs"].as_f64().unwrap(),
        4.053e9,
        0.005,
    );
    assert_close(
        "ResNet-50 params",
        j["params"].as_f64().unwrap(),
        23.51e6,
        0.005,
    );
    assert_eq!(
        j["inputs"][0]["shape"],
        serde_json::json!(["N", "3", "256", "128"])
    );
    assert_eq!(j["outputs"][0]["shape"], serde_json::json!(["N", "2048"]));
    // last stride 2 (torchreid's default) via an explicit input size: same graph, other MACs
    let p2 = dir.path().join("r50s2.onnx");
    let mut spec = ResNetSpec::resnet50().for_reid();
    spec.last_stride = 2;
    build(
        &spec,
        Head::Features,
        Style::default(),
        Init::RandomStats,
        1,
    )
    .save(&p2)
    .unwrap();
    assert_close(
        "ResNet-50 last stride 2 MACs",
        info_json(&p2, &[])["macs"].as_f64().unwrap(),
        2.669e9,
        0.005,
    );
}

#[test]
fn resnet18_and_imagenet_heads_match_reference() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("r18.onnx");
    build(
        &ResNetSpec::resnet18().for_reid(),
        Head::Features,
        Style::default(),
        Init::RandomStats,
        2,
    )
    .save(&p)
    .unwrap();
    let j = info_json(&p, &[]);
    assert_close(
        "ResNet-18 256x128 s1 MACs",
        j["macs"].as_f64().unwrap(),
        1.990e9,
        0.005,
    );
    assert_close(
        "ResNet-18 params",
        j["params"].as_f64().unwrap(),
        11.18e6,
        0.005,
    );
    // --input overrides the declared size: a quarter of the pixels, a quarter of the MACs
    let quarter = info_json(&p, &["--input", "3x128x64"]);
    assert_eq!(quarter["counted_for"], serde_json::json!([1, 3, 128, 64]));
    assert_close(
        "ResNet-18 at 3x128x64",
        quarter["macs"].as_f64().unwrap(),
        1.990e9 / 4.0,
        0.005,
    );

    let p = dir.path().join("r18fc.onnx");
    let cls = Head::Classifier { classes: 1000 };
    build(
        &ResNetSpec::resnet18(),
        cls,
        Style::default(),
        Init::RandomStats,
        3,
    )
    .save(&p)
    .unwrap();
    let j = info_json(&p, &[]);
    assert_close(
        "ResNet-18 224 fc1000 MACs",
        j["macs"].as_f64().unwrap(),
        1.814e9,
        0.005,
    );
    assert_close(
        "ResNet-18 224 fc1000 params",
        j["params"].as_f64().unwrap(),
        11.69e6,
        0.005,
    );

    let p = dir.path().join("r50fc.onnx");
    build(
        &ResNetSpec::resnet50(),
        cls,
        Style::default(),
        Init::RandomStats,
        4,
    )
    .save(&p)
    .unwrap();
    let j = info_json(&p, &[]);
    assert_close(
        "ResNet-50 224 fc1000 MACs",
        j["macs"].as_f64().unwrap(),
        4.089e9,
        0.005,
    );
    assert_close(
        "ResNet-50 224 fc1000 params",
        j["params"].as_f64().unwrap(),
        25.56e6,
        0.005,
    );
}

#[test]
fn exporter_styles_give_the_same_macs() {
    // BN folded into conv biases, ReduceMean tails, shape chains, opset 18 axes-as-input: the MAC
    // count is a property of the network, not of how it was exported
    let dir = tempfile::tempdir().unwrap();
    let spec = ResNetSpec::resnet18().for_reid();
    let mut seen = Vec::new();
    for (i, style) in [
        Style::default(),
        Style {
            fuse_bn: true,
            ..Style::default()
        },
        Style {
            tail: Tail::ReduceMean,
            opset: 13,
            ..Style::default()
        },
        Style {
            tail: Tail::ReduceMeanShapeChain,
            opset: 18,
            identity_weights: true,
            ..Style::default()
        },
    ]
    .into_iter()
    .enumerate()
    {
        let p = dir.path().join(format!("s{i}.onnx"));
        build(&spec, Head::BnNeck, style, Init::RandomStats, 5)
            .save(&p)
            .unwrap();
        let j = info_json(&p, &[]);
        assert_eq!(j["macs_complete"], true, "style {style:?}: {j}");
        seen.push(j["macs"].as_u64().unwrap());
    }
    assert!(seen.windows(2).all(|w| w[0] == w[1]), "{seen:?}");
}

#[test]
fn bundled_models_are_described() {
    let root = env!("CARGO_MANIFEST_DIR");
    let j = info_json(
        std::path::Path::new(&format!("{root}/models/mobilenetv2-imagenet.onnx")),
        &[],
    );
    // torchvision's MobileNetV2 trunk: 0.30 GMACs at 224x224, 2.2 M parameters without the classifier
    assert_close(
        "MobileNetV2 MACs",
        j["macs"].as_f64().unwrap(),
        0.300e9,
        0.01,
    );
    assert_close(
        "MobileNetV2 params",
        j["params"].as_f64().unwrap(),
        2.22e6,
        0.01,
    );
    let j = info_json(
        std::path::Path::new(&format!("{root}/models/nanodet-416.onnx")),
        &[],
    );
    assert_eq!(j["macs_complete"], true, "{j}");
    assert_eq!(j["opset"], 13);
}

#[test]
fn a_non_onnx_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("junk.onnx");
    std::fs::write(&p, b"this is not a protobuf").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_crosscam"))
        .args(["model", "info", "--model"])
        .arg(&p)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("junk.onnx") && err.contains("not a valid ONNX"),
        "{err}"
    );
}
