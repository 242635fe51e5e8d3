//! `crosscam quantize`: int8 QDQ models that load, run and agree with their float models on real
//! data the calibration did not see (people of the bundled clip for the embedder, frames for the
//! detector), clear refusals for what cannot be quantised, and pruned / externally stored models.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crosscam::frame::Frame;
use crosscam::onnx::{Attr, Dim, Model, Node, Tensor, ValueInfo};
use serde_json::Value;

fn crosscam(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_crosscam"))
        .args(args)
        .output()
        .unwrap()
}

fn json_of(o: &Output) -> Value {
    assert!(
        o.status.success(),
        "exit {:?}: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn vtest() -> PathBuf {
    crosscam::paths::media("vtest.avi")
}

/// Person crops the shipped detector finds from 50 s into the clip on (the calibration of
/// these tests reads the first seconds only).
fn held_out_crops(n: usize) -> Vec<image::RgbImage> {
    let rt = crosscam::runtime::init(&Default::default()).unwrap();
    let manifest = crosscam::models::Manifest::bundled().unwrap();
    let mut det = crosscam::detect::open(
        &manifest,
        "nanodet-416",
        rt,
        &Default::default(),
        Default::default(),
    )
    .unwrap();
    let reader = crosscam::ingest::reader::VideoReader::open_from(
        &vtest(),
        Some(1),
        Some(640),
        std::time::Duration::from_secs(50),
    )
    .unwrap();
    let mut crops = Vec::new();
    for f in reader {
        let f: Frame = f.unwrap();
        for d in det.detect(&[&f]).unwrap().remove(0) {
            if d.score >= 0.5 && d.bbox.height() >= 48.0 {
                crops.push(f.crop(&d.bbox));
            }
        }
        if crops.len() >= n {
            break;
        }
    }
    crops.truncate(n);
    assert_eq!(crops.len(), n, "the clip has people from 50 s on");
    crops
}

/// Cosine of each pair of rows (the embedder's rows are L2-normalised).
fn cosines(float: &Path, int8: &Path, crops: &[image::RgbImage]) -> Vec<f32> {
    let rt = crosscam::runtime::init(&Default::default()).unwrap();
    let mut a = crosscam::reid::Embedder::from_file(float, rt, Default::default()).unwrap();
    let mut b = crosscam::reid::Embedder::from_file(int8, rt, Default::default()).unwrap();
    let ea = a.embed_images(crops).unwrap();
    let eb = b.embed_images(crops).unwrap();
    ea.rows()
        .into_iter()
        .zip(eb.rows())
        .map(|(x, y)| x.dot(&y))
        .collect()
}

#[test]
fn quantised_embedder_matches_float_on_people_it_was_not_calibrated_on() {
    let dir = tempfile::tempdir().unwrap();
    let float = crosscam::paths::project_root().join("models/crosscam-resnet18-vtest.onnx");
    let out = dir.path().join("r18-int8.onnx");
    let r = json_of(&crosscam(&[
        "quantize",
        "--model",
        "crosscam-resnet18-vtest",
        "--out",
        s(&out),
        "--video",
        s(&vtest()),
        "--samples",
        "64",
        "--json",
    ]));
    // every conv is int8, every Relu absorbed into the quantisation before it; the BNNeck's
    // BatchNormalization (the output) stays float, and says why
    assert_eq!(r["quantized_ops"]["Conv"], 20, "{r}");
    assert_eq!(r["removed_activations"], 17, "{r}");
    assert_eq!(r["calibration_samples"], 64, "{r}");
    let float_nodes = r["float_nodes"].as_array().unwrap();
    assert_eq!(float_nodes.len(), 1, "{r}");
    assert_eq!(float_nodes[0]["op"], "BatchNormalization");
    assert!(
        float_nodes[0]["reason"]
            .as_str()
            .unwrap()
            .contains("no int8 kernel")
    );
    assert!(r["check"].is_null());
    // int8 weights: the file is about a quarter of the float one
    let (fb, qb) = (
        std::fs::metadata(&float).unwrap().len(),
        std::fs::metadata(&out).unwrap().len(),
    );
    assert!(qb * 3 < fb, "float {fb} bytes, int8 {qb} bytes");
    let m = Model::load(&out).unwrap();
    let meta = |k: &str| {
        m.metadata
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(meta("crosscam.quantized").as_deref(), Some("int8-qdq"));
    assert_eq!(
        meta("crosscam.quantized_from_sha256"),
        Some(crosscam::models::sha256_file(&float).unwrap())
    );
    let dq = m
        .graph
        .nodes
        .iter()
        .filter(|n| n.op == "DequantizeLinear" && n.attr_i("axis").is_some())
        .count();
    assert!(dq >= 40, "per-channel weights and int32 biases: {dq}");

    let crops = held_out_crops(24);
    let cos = cosines(&float, &out, &crops);
    let mean = cos.iter().sum::<f32>() / cos.len() as f32;
    let min = cos.iter().copied().fold(1.0f32, f32::min);
    eprintln!("int8 vs float embeddings on 24 held-out crops: mean cosine {mean:.4}, min {min:.4}");
    assert!(mean >= 0.99 && min >= 0.97, "mean {mean}, min {min}");
}

#[test]
fn quantised_detector_finds_the_float_boxes_on_held_out_frames() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("nanodet-int8.onnx");
    let data = dir.path().join("data");
    // no recall may be lost: the model is registered only when every float box is found again
    let o = crosscam(&[
        "quantize",
        "--model",
        "nanodet-416",
        "--out",
        s(&out),
        "--video",
        s(&vtest()),
        "--samples",
        "16",
        "--check",
        s(&vtest()),
        "--check-frames",
        "16",
        "--max-recall-drop",
        "0",
        "--data-dir",
        s(&data),
        "--name",
        "nanodet-int8",
        "--json",
    ]);
    let r: Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&o.stderr)));
    assert_eq!(r["quantized_ops"]["Conv"], 34, "{r}");
    assert_eq!(r["folded_pads"], 28, "{r}");
    let c = &r["check"];
    eprintln!("detector check: {c}");
    assert_eq!(c["kind"], "detector");
    assert_eq!(c["samples"], 16);
    assert!(
        c["held_out"]
            .as_str()
            .unwrap()
            .contains("16 calibration frames"),
        "{c}"
    );
    let recall = c["box_recall"].as_f64().unwrap();
    assert!(c["float_boxes"].as_u64().unwrap() >= 50, "{c}");
    assert!(recall >= 95.0, "{c}");
    assert!(c["box_precision"].as_f64().unwrap() >= 95.0, "{c}");
    assert!(c["mean_cosine"].as_f64().unwrap() >= 0.99, "{c}");
    // the verdict follows the tolerance: exit 3 and no manifest entry when recall was lost
    let manifest = data.join("site-models/manifest.toml");
    assert!(out.exists(), "the file is written either way");
    let meta = Model::load(&out).unwrap().metadata;
    let verdict = meta
        .iter()
        .find(|(k, _)| k == "crosscam.quantize_check")
        .map(|(_, v)| v.clone())
        .unwrap();
    if recall < 100.0 {
        assert_eq!(o.status.code(), Some(3), "{c}");
        assert_eq!(c["passed"], false);
        assert!(r["registered"].is_null() && !manifest.exists(), "{r}");
        assert!(verdict.starts_with("FAILED"), "{verdict}");
    } else {
        assert!(o.status.success());
        assert_eq!(r["registered"]["name"], "nanodet-int8");
        assert!(verdict.starts_with("passed"), "{verdict}");
    }
}

/// A one-input model `[N,3,8,8]` → `[N,4]` of `nodes` at `opset`.
fn tiny_model(opset: i64, conv: bool) -> Model {
    let mut g = crosscam::onnx::Graph {
        name: "tiny".into(),
        ..Default::default()
    };
    g.inputs.push(ValueInfo {
        name: "input".into(),
        elem_type: 1,
        shape: Some(vec![
            Dim::Named("N".into()),
            Dim::Fixed(3),
            Dim::Fixed(8),
            Dim::Fixed(8),
        ]),
    });
    let x = if conv {
        g.initializers
            .insert("w".into(), Tensor::f32(vec![4, 3, 3, 3], vec![0.1; 108]));
        g.nodes.push(
            Node::new("Conv", "conv", &["input", "w"], &["c"])
                .with_attr("pads", Attr::Ints(vec![1, 1, 1, 1])),
        );
        "c"
    } else {
        g.nodes.push(Node::new("Relu", "relu", &["input"], &["c"]));
        "c"
    };
    g.nodes
        .push(Node::new("GlobalAveragePool", "gap", &[x], &["p"]));
    g.nodes
        .push(Node::new("Flatten", "flat", &["p"], &["features"]));
    g.outputs.push(ValueInfo {
        name: "features".into(),
        elem_type: 1,
        shape: Some(vec![
            Dim::Named("N".into()),
            Dim::Fixed(if conv { 4 } else { 3 }),
        ]),
    });
    Model {
        ir_version: 8,
        opset,
        other_opsets: vec![],
        producer_name: "test".into(),
        producer_version: String::new(),
        metadata: vec![],
        graph: g,
    }
}

#[test]
fn models_that_cannot_be_quantised_get_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let crops = dir.path().join("crops");
    std::fs::create_dir_all(&crops).unwrap();
    image::RgbImage::from_pixel(64, 128, image::Rgb([90, 60, 40]))
        .save(crops.join("a.png"))
        .unwrap();
    let run = |model: &Path, out: &Path| {
        let o = crosscam(&[
            "quantize",
            "--model",
            s(model),
            "--out",
            s(out),
            "--images",
            s(&crops),
        ]);
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(!o.status.success(), "{err}");
        assert!(!err.contains("panicked"), "{err}");
        assert!(!out.exists(), "nothing written on refusal: {err}");
        err
    };
    let out = dir.path().join("out.onnx");

    let no_conv = dir.path().join("no-conv.onnx");
    tiny_model(17, false).save(&no_conv).unwrap();
    let err = run(&no_conv, &out);
    assert!(
        err.contains("no-conv.onnx") && err.contains("nothing to quantise"),
        "{err}"
    );

    let old = dir.path().join("opset11.onnx");
    tiny_model(11, true).save(&old).unwrap();
    let err = run(&old, &out);
    assert!(
        err.contains("opset11.onnx") && err.contains("opset 11") && err.contains("13"),
        "{err}"
    );

    let bad = dir.path().join("garbage.onnx");
    std::fs::write(&bad, b"this is not a protobuf \xff\xff\xff\xff").unwrap();
    let err = run(&bad, &out);
    assert!(
        err.contains("garbage.onnx") && err.contains("not a readable ONNX model"),
        "{err}"
    );

    // the same file in and out is refused (also through another spelling of the path)
    let good = dir.path().join("tiny.onnx");
    tiny_model(17, true).save(&good).unwrap();
    let before = std::fs::read(&good).unwrap();
    let other_spelling = dir.path().join("crops/../tiny.onnx");
    let o = crosscam(&[
        "quantize",
        "--model",
        s(&good),
        "--out",
        s(&other_spelling),
        "--images",
        s(&crops),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("is the input model"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(&good).unwrap(),
        before,
        "the input is untouched"
    );

    // and the tiny conv model itself quantises: one Conv, the pool after it too
    let r = json_of(&crosscam(&[
        "quantize",
        "--model",
        s(&good),
        "--out",
        s(&out),
        "--images",
        s(&crops),
        "--json",
    ]));
    assert_eq!(r["quantized_ops"]["Conv"], 1, "{r}");
    assert!(out.exists());
}

#[test]
fn a_pruned_model_in_external_data_quantises_and_registers_in_the_site_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let float = crosscam::paths::project_root().join("models/crosscam-resnet18-vtest.onnx");
    let pruned = dir.path().join("half.onnx");
    let o = crosscam(&[
        "prune",
        "--model",
        s(&float),
        "--out",
        s(&pruned),
        "--criterion",
        "l1",
        "--target-macs",
        "0.5",
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // as PyTorch's torch.export-based exporter writes it: weights in half-ext.onnx.data
    let export = dir.path().join("export");
    std::fs::create_dir_all(&export).unwrap();
    let ext = export.join("half-ext.onnx");
    Model::load(&pruned)
        .unwrap()
        .save_with_external_data(&ext, 1024)
        .unwrap();
    assert!(export.join("half-ext.onnx.data").exists());

    let ext_sha = crosscam::models::sha256_file(&ext).unwrap();
    let data = dir.path().join("data");
    let out = dir.path().join("half-int8.onnx");
    let r = json_of(&crosscam(&[
        "quantize",
        "--model",
        s(&ext),
        "--out",
        s(&out),
        "--video",
        s(&vtest()),
        "--samples",
        "48",
        "--data-dir",
        s(&data),
        "--name",
        "half-int8",
        "--json",
    ]));
    assert_eq!(r["quantized_ops"]["Conv"], 20, "{r}");
    assert_eq!(r["registered"]["name"], "half-int8", "{r}");
    // the int8 file is self-contained: the export folder can go
    std::fs::remove_dir_all(&export).unwrap();
    let manifest =
        crosscam::models::Manifest::load(&data.join("site-models/manifest.toml")).unwrap();
    let e = manifest.get("half-int8").unwrap();
    assert_eq!(e.quantized.as_deref(), Some("int8-qdq"));
    assert_eq!(e.source_sha256.as_ref(), Some(&ext_sha));
    assert_eq!(e.input.shape, vec![-1, 3, 128, 64]);
    assert_eq!(
        manifest.verify_file(e).unwrap(),
        std::fs::canonicalize(&out).unwrap()
    );

    // the output of `crosscam prune` before re-tuning describes everyone alike (its float
    // embeddings are nearly collinear), so agreement is measured on the shipped pruned and
    // re-tuned model, made by the same pruner
    let half = crosscam::paths::project_root().join("models/crosscam-resnet18-vtest-half.onnx");
    let half_int8 = dir.path().join("shipped-half-int8.onnx");
    json_of(&crosscam(&[
        "quantize",
        "--model",
        s(&half),
        "--out",
        s(&half_int8),
        "--video",
        s(&vtest()),
        "--samples",
        "64",
        "--json",
    ]));
    let crops = held_out_crops(16);
    let cos = cosines(&half, &half_int8, &crops);
    let mean = cos.iter().sum::<f32>() / cos.len() as f32;
    let min = cos.iter().copied().fold(1.0f32, f32::min);
    eprintln!(
        "pruned int8 vs pruned float on 16 held-out crops: mean cosine {mean:.4}, min {min:.4}"
    );
    assert!(mean >= 0.97 && min >= 0.94, "{cos:?}");
}
