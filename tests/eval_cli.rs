//! `crosscam eval` end to end on a tiny Market-1501-layout dataset cut from messi5.jpg, with the
//! bundled MobileNetV2: JSON fields, the skipped-query count, the few-queries warning, saved
//! features, re-ranking, and errors for folders that are not datasets.

use std::path::Path;
use std::process::{Command, Output};

use crosscam::eval::dataset::{DatasetInfo, MarketName, MarketWriter, Split};
use crosscam::eval::npy;

fn crosscam(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_crosscam"))
        .args(args)
        .output()
        .expect("run crosscam")
}

fn json_of(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "crosscam failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("--json prints JSON")
}

/// 4 people = 4 regions of messi5.jpg. Query: each person in camera 1; gallery: the identical
/// crop in camera 2, plus a distractor, a junk image and a same-camera copy of person 1.
/// A fifth query (pid 9) has no gallery match.
fn tiny_dataset(root: &Path) {
    let img = image::open(crosscam::paths::media("messi5.jpg"))
        .expect("messi5.jpg from make setup")
        .to_rgb8();
    let regions = [
        (0, 0, 120, 300),
        (200, 20, 130, 310),
        (400, 10, 148, 330),
        (100, 150, 120, 180),
        (300, 200, 100, 140),
        (20, 40, 90, 200),
    ];
    let crop = |i: usize| {
        let (x, y, w, h) = regions[i];
        image::imageops::crop_imm(&img, x, y, w, h).to_image()
    };
    let mut w = MarketWriter::create(root, false, 95).unwrap();
    let name = |pid, camid, frame| MarketName {
        pid,
        camid,
        seq: 1,
        frame,
        index: 0,
    };
    for p in 0..4 {
        let pid = p as i32 + 1;
        w.write(Split::Query, &name(pid, 1, 10), &crop(p)).unwrap();
        w.write(Split::Gallery, &name(pid, 2, 20), &crop(p))
            .unwrap();
        w.write(Split::Train, &name(pid + 10, 1, 5), &crop(p))
            .unwrap();
    }
    w.write(Split::Query, &name(9, 1, 30), &crop(5)).unwrap();
    w.write(Split::Gallery, &name(1, 1, 40), &crop(0)).unwrap(); // same camera: ignored
    w.write(Split::Gallery, &name(0, 3, 50), &crop(4)).unwrap(); // distractor
    w.write(Split::Gallery, &name(-1, 3, 60), &crop(5)).unwrap(); // junk
    w.finish(DatasetInfo {
        labels: "pseudo".into(),
        ..Default::default()
    })
    .unwrap();
}

#[test]
fn eval_reports_metrics_saves_features_and_reranks() {
    let dir = tempfile::tempdir().unwrap();
    let ds = dir.path().join("tiny");
    tiny_dataset(&ds);
    let feats = dir.path().join("feats");
    let ds_arg = ds.to_str().unwrap();
    let out = crosscam(&[
        "eval",
        "--model",
        "mobilenetv2-imagenet",
        "--dataset",
        ds_arg,
        "--json",
        "--batch",
        "3",
        "--save-features",
        feats.to_str().unwrap(),
    ]);
    let j = json_of(&out);
    assert_eq!(j["num_query"], 5);
    assert_eq!(j["num_gallery"], 7);
    assert_eq!(j["num_skipped_query"], 1, "pid 9 has no gallery match");
    assert_eq!(j["num_valid_query"], 4);
    // identical query and gallery images: the match is at distance 0
    assert_eq!(j["rank1"], 1.0);
    assert_eq!(j["rank5"], 1.0);
    assert_eq!(j["rank10"], 1.0);
    assert_eq!(j["mAP"], 1.0);
    let macs = j["model_macs"].as_u64().expect("model_macs");
    assert!((macs as f64 / 1e9 - 0.299).abs() < 0.01, "{macs}");
    assert_eq!(j["feature_dim"], 1280);
    assert_eq!(j["format"], "market1501");
    assert_eq!(j["pseudo_labels"], true);
    assert!(j["rerank"].is_null());
    // 4 scored queries: too few to compare models, and the report says so
    let few = j["warnings"]
        .as_array()
        .expect("warnings")
        .iter()
        .find(|w| w["code"] == "few_queries")
        .expect("a few_queries warning");
    assert_eq!(few["value"], 4.0);
    assert!(String::from_utf8_lossy(&out.stderr).contains("warning: only 4 queries scored"));
    assert!(
        out.stderr.is_empty() || !String::from_utf8_lossy(&out.stderr).contains("embedding "),
        "--json runs print no progress"
    );

    // saved features: unit rows in dataset order, and CSVs that name them
    let q = npy::read_f32(&feats.join("query.npy")).unwrap();
    let g = npy::read_f32(&feats.join("gallery.npy")).unwrap();
    assert_eq!((q.shape(), g.shape()), (&[5, 1280][..], &[7, 1280][..]));
    for r in q.rows().into_iter().chain(g.rows()) {
        let n: f32 = r.iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((n - 1.0).abs() < 1e-4, "{n}");
    }
    let csv = std::fs::read_to_string(feats.join("gallery.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "path,pid,camid");
    assert_eq!(lines.len(), 8);
    assert!(
        lines[1].ends_with("bounding_box_test/-1_c3s1_000060_00.jpg,-1,3"),
        "{}",
        lines[1]
    );
    let qcsv = std::fs::read_to_string(feats.join("query.csv")).unwrap();
    assert!(qcsv.lines().nth(1).unwrap().ends_with(",1,1"));
    // the row of query 1 equals the row of its identical gallery copy
    let cos: f32 = q.row(0).dot(&g.row(3));
    assert!(
        cos > 0.9999,
        "query 1 vs its gallery copy (rows 0 and 3): {cos}"
    );

    // re-ranking keeps exact duplicates first and reports its parameters
    let j = json_of(&crosscam(&[
        "eval",
        "--model",
        "mobilenetv2-imagenet",
        "--dataset",
        ds_arg,
        "--json",
        "--rerank",
        "--rerank-k1",
        "3",
        "--rerank-k2",
        "2",
    ]));
    assert_eq!(j["rank1"], 1.0);
    assert_eq!(j["rerank"]["k1"], 3);

    // the table form
    let out = crosscam(&[
        "eval",
        "--model",
        "mobilenetv2-imagenet",
        "--dataset",
        ds_arg,
    ]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("rank-1") && text.contains("100.0%"), "{text}");
    assert!(text.contains("1 skipped"), "{text}");
    assert!(text.contains("warning: only 4 queries scored"), "{text}");

    // dataset info
    let j = json_of(&crosscam(&[
        "dataset",
        "info",
        "--dataset",
        ds_arg,
        "--json",
    ]));
    assert_eq!(j["format"], "market1501");
    assert_eq!(j["query"]["images"], 5);
    assert_eq!(j["gallery"]["ids"], 4);
    assert_eq!(j["train"]["ids"], 4);
}

#[test]
fn eval_refuses_folders_that_are_not_datasets() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("readme.txt"), "hi").unwrap();
    let out = crosscam(&[
        "eval",
        "--model",
        "mobilenetv2-imagenet",
        "--dataset",
        dir.path().to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not a re-id dataset folder"), "{err}");
    assert!(err.contains("readme.txt"), "{err}");

    // a dataset with a gallery but no query folder
    let g = dir.path().join("bounding_box_test");
    std::fs::create_dir(&g).unwrap();
    image::RgbImage::new(4, 8)
        .save(g.join("0001_c1s1_000001_00.jpg"))
        .unwrap();
    let out = crosscam(&[
        "eval",
        "--model",
        "mobilenetv2-imagenet",
        "--dataset",
        dir.path().to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no query images") && err.contains("query"),
        "{err}"
    );

    let out = crosscam(&[
        "eval",
        "--model",
        "mobilenetv2-imagenet",
        "--dataset",
        dir.path().to_str().unwrap(),
        "--format",
        "viper",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown dataset format 'viper'"), "{err}");
}
