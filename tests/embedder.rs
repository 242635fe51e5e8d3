//! The embedder on the bundled MobileNetV2 and on a crosscam-written ResNet: specs are read from
//! the manifest or from the model, outputs are unit vectors, and batching does not change results.

use crosscam::config::RuntimeSettings;
use crosscam::frame::{BBox, Frame};
use crosscam::models::Manifest;
use crosscam::onnx::resnet::{Head, Init, ResNetSpec, Style, build};
use crosscam::reid::{Embedder, EmbedderSpec};
use crosscam::runtime::{self, SessionOptions};

fn messi() -> Frame {
    let img = image::open(crosscam::paths::media("messi5.jpg"))
        .expect("messi5.jpg from make setup")
        .to_rgb8();
    Frame::from_image(&img)
}

#[test]
fn manifest_embedder_gives_unit_vectors_independent_of_batching() {
    let rt = runtime::init(&RuntimeSettings::default()).unwrap();
    let manifest = Manifest::bundled().unwrap();
    let mut e = Embedder::from_manifest(
        &manifest,
        "mobilenetv2-imagenet",
        rt,
        SessionOptions::default(),
    )
    .unwrap();
    assert_eq!((e.spec.height, e.spec.width, e.spec.dim), (224, 224, 1280));
    let f = messi();
    let boxes = [
        BBox::new(200.0, 20.0, 330.0, 330.0),
        BBox::new(0.0, 0.0, 120.0, 300.0),
        BBox::new(400.0, 10.0, 548.0, 342.0),
    ];
    let crops: Vec<(&Frame, BBox)> = boxes.iter().map(|b| (&f, *b)).collect();
    let all = e.embed(&crops).unwrap();
    assert_eq!(all.shape(), &[3, 1280]);
    for (i, c) in crops.iter().enumerate() {
        let one = e.embed(std::slice::from_ref(c)).unwrap();
        let norm: f32 = one.row(0).iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4);
        let cos: f32 = one.row(0).iter().zip(all.row(i)).map(|(a, b)| a * b).sum();
        assert!(cos > 0.9999, "crop {i}: batch vs single cosine {cos}");
    }
    // different regions give different embeddings
    let cross: f32 = all.row(0).iter().zip(all.row(1)).map(|(a, b)| a * b).sum();
    assert!(cross < 0.99, "{cross}");
}

#[test]
fn file_embedder_reads_its_spec_from_the_model() {
    let rt = runtime::init(&RuntimeSettings::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("r.onnx");
    let mut spec = ResNetSpec::resnet18().for_reid().scaled(0.25);
    spec.input_hw = (64, 32);
    let mut m = build(&spec, Head::BnNeck, Style::default(), Init::RandomStats, 3);
    let mut es = EmbedderSpec::from_model(&m).unwrap();
    es.norm.mean = [0.5, 0.5, 0.5];
    es.norm.bgr = true;
    es.write_metadata(&mut m);
    m.save(&p).unwrap();
    let mut e = Embedder::from_file(&p, rt, SessionOptions::default()).unwrap();
    assert_eq!(
        (e.spec.height, e.spec.width, e.spec.dim),
        (64, 32, spec.output_dim())
    );
    assert_eq!(e.spec.norm.mean, [0.5, 0.5, 0.5]);
    assert!(e.spec.norm.bgr);
    let f = messi();
    let out = e
        .embed(&[(&f, BBox::new(10.0, 10.0, 100.0, 200.0))])
        .unwrap();
    assert_eq!(out.shape(), &[1, spec.output_dim()]);
}
