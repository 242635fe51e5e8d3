//! `crosscam model add` on a ResNet-50 in the shape torchreid exports (256×128 input, last
//! stride 1, 2048-d pooled features, BatchNorm folded into the convolutions — built by
//! `crosscam model build`, as PyTorch is not available here): the site manifest is created
//! extending the shipped one, the entry has the file's checksum, tensors, ImageNet
//! normalisation and MACs, linking values are calibrated on a dataset, and `crosscam eval`
//! runs the model by its new name. Refusals: not ONNX, a name taken, the shipped manifest.
//! A second test does the same with the graph PyTorch's torch.export-based ("dynamo") exporter
//! writes — weights in a separate `model.onnx.data` — and then prunes and re-tunes it.

mod fixtures;

use std::path::Path;
use std::process::{Command, Output};

use crosscam::eval::dataset::{DatasetInfo, MarketName, MarketWriter, Split};

fn crosscam(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_crosscam"))
        .args(args)
        .output()
        .expect("run crosscam")
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "crosscam failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `crosscam model add FILE --role embedder ARGS…`.
fn add_embedder(file: &Path, args: &[&str]) -> Output {
    let mut all = vec!["model", "add", file.to_str().unwrap(), "--role", "embedder"];
    all.extend_from_slice(args);
    crosscam(&all)
}

fn failed(out: &Output) -> String {
    assert!(!out.status.success(), "expected a refusal");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Four "people" cut from side-by-side regions of messi5.jpg, each seen by cameras 1 (query)
/// and 2 (gallery): mirrored and darker, or the same pixels (as the demo's two cameras of one
/// clip).
fn two_camera_dataset(root: &Path, mirrored: bool) {
    let img = image::open(crosscam::paths::media("messi5.jpg"))
        .expect("messi5.jpg from make setup")
        .to_rgb8();
    let regions = [
        (0, 0, 120, 300),
        (200, 20, 130, 310),
        (400, 10, 148, 330),
        (100, 150, 120, 180),
    ];
    let mut w = MarketWriter::create(root, false, 95).unwrap();
    for (p, (x, y, cw, ch)) in regions.into_iter().enumerate() {
        let crop = image::imageops::crop_imm(&img, x, y, cw, ch).to_image();
        // the other camera sees the person from the other side, a little darker
        let other = if mirrored {
            image::imageops::colorops::brighten(&image::imageops::flip_horizontal(&crop), -10)
        } else {
            crop.clone()
        };
        let name = |camid, frame| MarketName {
            pid: p as i32 + 1,
            camid,
            seq: 1,
            frame,
            index: 0,
        };
        w.write(Split::Query, &name(1, 10), &crop).unwrap();
        w.write(Split::Gallery, &name(2, 20), &other).unwrap();
    }
    w.finish(DatasetInfo {
        labels: "pseudo".into(),
        ..Default::default()
    })
    .unwrap();
}

#[test]
fn a_torchreid_style_resnet50_is_added_calibrated_and_evaluated_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let onnx = dir.path().join("osnet-or-r50-market.onnx");
    ok(&crosscam(&[
        "model",
        "build",
        "--arch",
        "resnet50",
        "--reid",
        "--head",
        "features",
        "--fuse-bn",
        "--random-stats",
        "--out",
        onnx.to_str().unwrap(),
    ]));
    let ds = dir.path().join("ds");
    two_camera_dataset(&ds, true);
    let same = dir.path().join("same");
    two_camera_dataset(&same, false);
    let data = dir.path().join("data");
    // random weights tell nobody apart: calibrating them is refused, and nothing is written
    let random = failed(&add_embedder(
        &onnx,
        &[
            "--name",
            "r50-market",
            "--data-dir",
            data.to_str().unwrap(),
            "--calibrate",
            ds.to_str().unwrap(),
        ],
    ));
    assert!(
        random.contains("no threshold separates the people"),
        "{random}"
    );
    assert!(!data.join("site-models/manifest.toml").exists());
    let out = ok(&add_embedder(
        &onnx,
        &[
            "--name",
            "r50-market",
            "--data-dir",
            data.to_str().unwrap(),
            "--licence",
            "MIT (test)",
            "--json",
        ],
    ));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["name"], "r50-market");
    assert_eq!(v["input"], serde_json::json!([-1, 3, 256, 128]));
    assert_eq!(v["output_dim"], 2048, "ResNet-50 pooled features");
    assert_eq!(v["created_manifest"], true);
    // ResNet-50 at 256x128 with last stride 1: about 6 GMACs (4.1 at 224x224, more for the
    // larger last stage)
    let gmacs = v["macs"].as_f64().unwrap() / 1e9;
    assert!((4.0..8.0).contains(&gmacs), "{gmacs} GMACs");
    let manifest = data.join("site-models/manifest.toml");
    assert_eq!(v["manifest"], manifest.to_str().unwrap());
    let copied = data.join("site-models/r50-market.onnx");
    assert_eq!(
        v["sha256"].as_str().unwrap(),
        crosscam::models::sha256_file(&copied).unwrap()
    );
    assert!(v["linking"].is_null(), "not calibrated: the defaults apply");

    // a trained network (crosscam's own ResNet-18 export) is calibrated on two cameras that
    // see the same pixels: a threshold that separates the people exists
    let trained = crosscam::paths::project_root().join("models/crosscam-resnet18-vtest.onnx");
    let out = ok(&add_embedder(
        &trained,
        &[
            "--name",
            "r18-site",
            "--data-dir",
            data.to_str().unwrap(),
            "--calibrate",
            same.to_str().unwrap(),
            "--json",
        ],
    ));
    let v2: serde_json::Value = serde_json::from_str(&out).unwrap();
    let l = &v2["linking"];
    let t = l["threshold"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&t), "{l}");
    assert!((l["merge_similarity"].as_f64().unwrap() - (t + 0.05).min(0.99)).abs() < 1e-6);
    assert_eq!(
        v2["input"],
        serde_json::json!([-1, 3, 128, 64]),
        "its own declared size"
    );

    // the site manifest: the new entry, and the shipped models through `extends`
    let m = crosscam::models::Manifest::load(&manifest).unwrap();
    assert_eq!(m.local_names(), ["r50-market", "r18-site"]);
    let e = m.get("r50-market").unwrap();
    assert_eq!(e.input.color, "RGB");
    assert_eq!(e.input.mean, [0.485, 0.456, 0.406]);
    assert_eq!(e.outputs[0].shape, [-1, 2048]);
    assert_eq!(e.licence, "MIT (test)");
    m.verify_file(e).unwrap();
    let shipped = m.get("nanodet-416").expect("shipped models stay available");
    m.verify_file(shipped).unwrap();

    // eval runs it by name from the site manifest
    let out = ok(&crosscam(&[
        "eval",
        "--model",
        "r50-market",
        "--manifest",
        manifest.to_str().unwrap(),
        "--dataset",
        ds.to_str().unwrap(),
        "--json",
    ]));
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["num_query"], 4, "{r}");

    // refusals: the same name again, a file that is not ONNX, the shipped manifest
    let again = failed(&add_embedder(
        &onnx,
        &["--name", "r50-market", "--data-dir", data.to_str().unwrap()],
    ));
    assert!(
        again.contains("already has a model named") && again.contains("--replace"),
        "{again}"
    );
    let text = dir.path().join("notes.onnx");
    std::fs::write(&text, "not a model").unwrap();
    let bad = failed(&add_embedder(
        &text,
        &["--data-dir", data.to_str().unwrap()],
    ));
    assert!(bad.contains("notes.onnx"), "{bad}");
    let shipped_path = crosscam::paths::project_root().join("models/manifest.toml");
    let before = std::fs::read(&shipped_path).unwrap();
    let refused = failed(&add_embedder(
        &onnx,
        &["--manifest", shipped_path.to_str().unwrap()],
    ));
    assert!(refused.contains("shipped manifest"), "{refused}");
    assert_eq!(
        std::fs::read(&shipped_path).unwrap(),
        before,
        "the shipped manifest is untouched"
    );
    // the site manifest is intact after the refusals
    assert_eq!(
        crosscam::models::Manifest::load(&manifest)
            .unwrap()
            .local_names(),
        ["r50-market", "r18-site"]
    );
}

/// The graph as PyTorch's torch.export-based exporter writes it (opset 18, `ReduceMean` over axes
/// [-2, -1] then `Reshape` to a constant `[-1, 2048]`, BatchNorm kept, weights in
/// `model.onnx.data` beside the graph): `model add` keeps one self-contained file with one
/// checksum, `eval` runs it by name, `prune` halves its MACs, and `retune` trains a narrower
/// network of the same layout (the full ResNet-50 at 256×128 takes too long to train on 2 cores
/// inside a test).
#[test]
fn a_torch_export_resnet50_with_external_weights_is_added_evaluated_pruned_and_retuned() {
    let dir = tempfile::tempdir().unwrap();
    let onnx = dir.path().join("r50-dynamo.onnx");
    let build = |out: &Path, extra: &[&str]| {
        let mut args = vec![
            "model",
            "build",
            "--arch",
            "resnet50",
            "--reid",
            "--head",
            "features",
            "--random-stats",
            "--exporter",
            "dynamo",
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        ok(&crosscam(&args));
    };
    build(&onnx, &[]);
    let data_file = dir.path().join("r50-dynamo.onnx.data");
    let (graph_len, data_len) = (
        std::fs::metadata(&onnx).unwrap().len(),
        std::fs::metadata(&data_file).unwrap().len(),
    );
    assert!(
        graph_len < 1_000_000 && data_len > 50_000_000,
        "weights beside the graph: {graph_len} + {data_len} bytes"
    );
    let src = crosscam::onnx::Model::load(&onnx).unwrap();
    assert_eq!(src.opset, 18);
    assert!(src.graph.nodes.iter().any(|n| n.op == "BatchNormalization"));

    let ds = dir.path().join("ds");
    two_camera_dataset(&ds, true);
    let data = dir.path().join("data");
    let out = ok(&add_embedder(
        &onnx,
        &[
            "--name",
            "r50-dynamo",
            "--data-dir",
            data.to_str().unwrap(),
            "--json",
        ],
    ));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["input"], serde_json::json!([-1, 3, 256, 128]));
    assert_eq!(v["output_dim"], 2048);
    let copied = data.join("site-models/r50-dynamo.onnx");
    assert!(
        std::fs::metadata(&copied).unwrap().len() > data_len,
        "the site's copy holds the weights"
    );
    assert!(!data.join("site-models/r50-dynamo.onnx.data").exists());
    let back = crosscam::onnx::Model::load(&copied).unwrap();
    let sig = |m: &crosscam::onnx::Model| -> Vec<(String, Vec<String>, Vec<String>)> {
        m.graph
            .nodes
            .iter()
            .map(|n| (n.op.clone(), n.inputs.clone(), n.outputs.clone()))
            .collect()
    };
    assert_eq!(sig(&back), sig(&src), "the same graph");
    assert!(
        back.graph.initializers == src.graph.initializers,
        "the same weights"
    );
    // the original's data file is no longer needed by anything the manifest names
    std::fs::remove_file(&data_file).unwrap();
    let manifest = data.join("site-models/manifest.toml");
    let m = crosscam::models::Manifest::load(&manifest).unwrap();
    m.verify_file(m.get("r50-dynamo").unwrap()).unwrap();

    let out = ok(&crosscam(&[
        "eval",
        "--model",
        "r50-dynamo",
        "--manifest",
        manifest.to_str().unwrap(),
        "--dataset",
        ds.to_str().unwrap(),
        "--json",
    ]));
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["num_query"], 4, "{r}");

    // pruned to half its MACs through the constant [-1, 2048] Reshape (the output width kept)
    let pruned = dir.path().join("r50-half.onnx");
    let out = ok(&crosscam(&[
        "prune",
        "--model",
        copied.to_str().unwrap(),
        "--out",
        pruned.to_str().unwrap(),
        "--criterion",
        "l1",
        "--target-macs",
        "0.5",
        "--json",
    ]));
    let p: serde_json::Value = serde_json::from_str(&out).unwrap();
    let frac = p["macs_fraction"].as_f64().unwrap();
    assert!((0.45..=0.55).contains(&frac), "MACs kept {frac}");
    let out = ok(&crosscam(&[
        "eval",
        "--model",
        pruned.to_str().unwrap(),
        "--dataset",
        ds.to_str().unwrap(),
        "--json",
    ]));
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["num_query"], 4, "{r}");

    // re-tuned on site crops: the same exporter's layout, a quarter of the width, 128×64
    let small = dir.path().join("r50-narrow-dynamo.onnx");
    build(&small, &["--width", "0.25", "--input", "3x128x64"]);
    assert!(dir.path().join("r50-narrow-dynamo.onnx.data").exists());
    let site = dir.path().join("site");
    fixtures::write_dataset(&site, 6, 4, 1);
    let tuned = dir.path().join("r50-narrow-tuned.onnx");
    let out = ok(&crosscam(&[
        "retune",
        "--model",
        small.to_str().unwrap(),
        "--dataset",
        site.to_str().unwrap(),
        "--out",
        tuned.to_str().unwrap(),
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
        "--json",
    ]));
    let t: serde_json::Value = serde_json::from_str(&out).unwrap();
    let frac = t["macs_after"].as_f64().unwrap() / t["macs_before"].as_f64().unwrap();
    assert!((frac - 0.5).abs() < 0.08, "MACs kept {frac}");
    let out = ok(&crosscam(&[
        "eval",
        "--model",
        tuned.to_str().unwrap(),
        "--dataset",
        site.to_str().unwrap(),
        "--json",
    ]));
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(r["num_query"].as_u64().unwrap() > 0, "{r}");
}
