//! `crosscam prune`, `crosscam prune sweep`, `crosscam bench embed` and `crosscam model build` as
//! a site admin runs them: the report's fields, the MACs window on a real-size ResNet-50, clear
//! errors for unsupported graphs and missing inputs, calibration criteria, sweep outputs, and the
//! side-by-side benchmark.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crosscam::onnx::resnet::{Head, Init, ResNetSpec, Style, build};
use crosscam::onnx::{Attr, Dim, Graph, Model, Node, Tensor, ValueInfo};

fn crosscam(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_crosscam"))
        .args(args)
        .output()
        .expect("run crosscam")
}

fn ok_json(args: &[&str]) -> serde_json::Value {
    let out = crosscam(args);
    assert!(
        out.status.success(),
        "crosscam {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON on stdout")
}

fn fails(args: &[&str]) -> String {
    let out = crosscam(args);
    assert!(!out.status.success(), "crosscam {args:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn small_resnet(dir: &Path, name: &str, style: Style) -> PathBuf {
    let spec = ResNetSpec::resnet18()
        .for_reid()
        .scaled(0.25)
        .with_input(64, 32);
    let p = dir.join(name);
    build(&spec, Head::BnNeck, style, Init::RandomStats, 4)
        .save(&p)
        .unwrap();
    p
}

#[test]
fn cli_halves_resnet50_reid_macs_with_a_full_report() {
    let dir = tempfile::tempdir().unwrap();
    let (model, out, report) = (
        dir.path().join("r50.onnx"),
        dir.path().join("r50-half.onnx"),
        dir.path().join("r50-half.json"),
    );
    let b = crosscam(&[
        "model",
        "build",
        "--arch",
        "resnet50",
        "--reid",
        "--random-stats",
        "--out",
        s(&model),
    ]);
    assert!(b.status.success(), "{}", String::from_utf8_lossy(&b.stderr));
    let j = ok_json(&[
        "prune",
        "--model",
        s(&model),
        "--out",
        s(&out),
        "--criterion",
        "l2",
        "--target-macs",
        "0.5",
        "--report",
        s(&report),
        "--json",
    ]);
    for key in [
        "macs_before",
        "macs_after",
        "params_before",
        "params_after",
        "criterion",
        "strategy",
        "scope",
    ] {
        assert!(!j[key].is_null(), "report lacks {key}: {j}");
    }
    assert_eq!(j["criterion"], "l2");
    assert_eq!(j["strategy"], "one-shot");
    assert_eq!(j["scope"], "layer");
    let before = j["macs_before"].as_f64().unwrap();
    let frac = j["macs_after"].as_f64().unwrap() / before;
    assert!((before - 4.053e9).abs() / 4.053e9 < 0.005, "{before}");
    assert!((0.45..=0.55).contains(&frac), "MACs kept: {frac}");
    assert!(j["params_after"].as_u64() < j["params_before"].as_u64());
    let layers = j["layers"].as_array().unwrap();
    assert_eq!(
        layers.len(),
        53,
        "53 convs in a ResNet-50 without a classifier"
    );
    assert!(
        layers
            .iter()
            .all(|l| l["kept"].as_u64() <= l["total"].as_u64())
    );
    assert!(
        j["groups"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["coupled"] == true && g["kept"].as_u64() < g["total"].as_u64()),
        "coupled groups pruned"
    );
    assert_eq!(j["outputs_after"], serde_json::json!([["N", "2048"]]));
    // the report file holds the same, and model info agrees with it
    let file: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(file["macs_after"], j["macs_after"]);
    let info = ok_json(&["model", "info", "--json", "--model", s(&out)]);
    assert_eq!(info["macs"], j["macs_after"]);
    assert_eq!(info["params"], j["params_after"]);
    // and the embedder runs it
    let rt = crosscam::runtime::init(&crosscam::config::RuntimeSettings::default()).unwrap();
    let mut e = crosscam::reid::Embedder::from_file(&out, rt, Default::default()).unwrap();
    let img = image::RgbImage::from_fn(64, 128, |x, y| image::Rgb([x as u8 * 3, y as u8, 90]));
    let emb = e.embed_images(&[img]).unwrap();
    assert_eq!(emb.dim(), (1, 2048));
}

/// input → Conv "stem" → <op under test> → output
fn one_op_model(dir: &Path, name: &str, n: Node, extra: Vec<(&str, Tensor)>) -> PathBuf {
    let mut g = Graph::default();
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
    g.initializers
        .insert("w".into(), Tensor::f32(vec![4, 3, 3, 3], vec![0.1; 108]));
    g.nodes.push(
        Node::new("Conv", "stem", &["input", "w"], &["a"])
            .with_attr("pads", Attr::Ints(vec![1, 1, 1, 1])),
    );
    for (k, t) in extra {
        g.initializers.insert(k.into(), t);
    }
    let out = n.outputs[0].clone();
    g.nodes.push(n);
    g.outputs.push(ValueInfo {
        name: out,
        elem_type: 1,
        shape: None,
    });
    let m = Model {
        ir_version: 8,
        opset: 17,
        other_opsets: vec![],
        producer_name: "test".into(),
        producer_version: String::new(),
        metadata: vec![],
        graph: g,
    };
    let p = dir.join(name);
    m.save(&p).unwrap();
    p
}

#[test]
fn unsupported_ops_are_refused_by_node_and_op() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.onnx");
    let inorm = one_op_model(
        dir.path(),
        "inorm.onnx",
        Node::new(
            "InstanceNormalization",
            "head/odd_norm",
            &["a", "sc", "bi"],
            &["y"],
        ),
        vec![
            ("sc", Tensor::f32(vec![4], vec![1.0; 4])),
            ("bi", Tensor::f32(vec![4], vec![0.0; 4])),
        ],
    );
    let e = fails(&[
        "prune",
        "--model",
        s(&inorm),
        "--out",
        s(&out),
        "--criterion",
        "l1",
        "--ratio",
        "0.5",
    ]);
    assert!(
        e.contains("head/odd_norm") && e.contains("InstanceNormalization"),
        "{e}"
    );
    let grouped = one_op_model(
        dir.path(),
        "grouped.onnx",
        Node::new("Conv", "split_conv", &["a", "w2"], &["y"]).with_attr("group", Attr::Int(2)),
        vec![("w2", Tensor::f32(vec![8, 2, 1, 1], vec![0.5; 16]))],
    );
    let e = fails(&[
        "prune",
        "--model",
        s(&grouped),
        "--out",
        s(&out),
        "--criterion",
        "l1",
        "--ratio",
        "0.5",
    ]);
    assert!(
        e.contains("split_conv") && e.contains("Conv") && e.contains("group 2"),
        "{e}"
    );
    assert!(!out.exists(), "nothing is written on error");
}

#[test]
fn criteria_that_need_more_than_weights_say_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.onnx");
    let fused = small_resnet(
        dir.path(),
        "fused.onnx",
        Style {
            fuse_bn: true,
            ..Style::default()
        },
    );
    let run = |c: &str| {
        fails(&[
            "prune",
            "--model",
            s(&fused),
            "--out",
            s(&out),
            "--criterion",
            c,
            "--ratio",
            "0.3",
        ])
    };
    let e = run("taylor");
    assert!(e.contains("gradients"), "{e}");
    let e = run("apoz");
    assert!(e.contains("--calibration"), "{e}");
    let e = run("bn-scale");
    assert!(
        e.contains("BatchNormalization") && e.contains("folded"),
        "{e}"
    );
    let e = fails(&[
        "prune",
        "--model",
        s(&fused),
        "--out",
        s(&out),
        "--criterion",
        "l1",
        "--target-macs",
        "0.01",
    ]);
    assert!(e.contains("cannot reach 1.0%"), "{e}");
}

#[test]
fn activation_criteria_run_on_calibration_images() {
    let dir = tempfile::tempdir().unwrap();
    let calib = dir.path().join("crops");
    std::fs::create_dir(&calib).unwrap();
    for i in 0..5u32 {
        let img = image::RgbImage::from_fn(40 + i * 7, 90, |x, y| {
            image::Rgb([(x * 5 + i * 40) as u8, (y * 2) as u8, ((x + y) * i) as u8])
        });
        img.save(calib.join(format!("crop{i}.png"))).unwrap();
    }
    std::fs::write(calib.join("notes.txt"), "not an image").unwrap();
    let model = small_resnet(dir.path(), "m.onnx", Style::default());
    for (crit, strategy) in [("apoz", "one-shot"), ("mean-activation", "iterative")] {
        let out = dir.path().join(format!("{crit}.onnx"));
        let j = ok_json(&[
            "prune",
            "--model",
            s(&model),
            "--out",
            s(&out),
            "--criterion",
            crit,
            "--strategy",
            strategy,
            "--steps",
            "2",
            "--target-macs",
            "0.6",
            "--calibration",
            s(&calib),
            "--json",
        ]);
        assert_eq!(j["criterion"], crit);
        let f = j["macs_after"].as_f64().unwrap() / j["macs_before"].as_f64().unwrap();
        assert!((0.5..=0.65).contains(&f), "{crit}: {f}");
        assert_eq!(
            j["step_reports"].as_array().unwrap().len(),
            if strategy == "iterative" { 2 } else { 1 }
        );
        assert!(out.exists());
    }
}

#[test]
fn sweep_writes_a_table_and_a_picture() {
    let dir = tempfile::tempdir().unwrap();
    let model = small_resnet(dir.path(), "m.onnx", Style::default());
    let sweep = dir.path().join("sweep");
    let rows = ok_json(&[
        "prune",
        "sweep",
        "--model",
        s(&model),
        "--out-dir",
        s(&sweep),
        "--criteria",
        "l1,fpgm,bn-scale,random",
        "--ratios",
        "0,0.25,0.5",
        "--scope",
        "global",
        "--keep-models",
        "--json",
    ]);
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 12);
    for r in rows {
        if r["ratio"] == 0.0 {
            assert_eq!(r["macs_fraction"], 1.0);
        } else {
            assert!(r["macs_fraction"].as_f64().unwrap() < 1.0, "{r}");
        }
        assert!(Path::new(r["model"].as_str().unwrap()).exists());
    }
    let csv = std::fs::read_to_string(sweep.join("sweep.csv")).unwrap();
    assert_eq!(csv.lines().count(), 13);
    assert!(csv.starts_with("criterion,scope,ratio,kept_fraction,macs,"));
    let svg = std::fs::read_to_string(sweep.join("sweep.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("fpgm") && svg.contains("params vs kept"));
    // two panels × four criteria
    assert_eq!(svg.matches("<polyline").count(), 8);
    assert!(
        std::fs::read_to_string(sweep.join("sweep.md"))
            .unwrap()
            .contains("| bn-scale | global | 0.50 |")
    );
}

#[test]
fn bench_embed_times_models_side_by_side() {
    let dir = tempfile::tempdir().unwrap();
    let a = small_resnet(dir.path(), "a.onnx", Style::default());
    let b = dir.path().join("b.onnx");
    ok_json(&[
        "prune",
        "--model",
        s(&a),
        "--out",
        s(&b),
        "--criterion",
        "l1",
        "--ratio",
        "0.5",
        "--json",
    ]);
    let j = ok_json(&[
        "bench",
        "embed",
        "--model",
        s(&a),
        "--model",
        s(&b),
        "--batch",
        "2",
        "--rounds",
        "3",
        "--warmup",
        "1",
        "--json",
    ]);
    let rows = j["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["speedup"], 1.0);
    assert_eq!(j["batch"], 2);
    for r in rows {
        assert!(r["crops_per_s"].as_f64().unwrap() > 0.0);
        assert_eq!(r["input"], serde_json::json!([3, 64, 32]));
    }
    assert!(rows[1]["macs"].as_u64() < rows[0]["macs"].as_u64());
}
