//! ONNX Runtime as crosscam loads it: found without user action, CPU decided and reported, and the
//! graphs crosscam's writer produces load and compute the same thing in every exporter style.

use crosscam::config::RuntimeSettings;
use crosscam::onnx::resnet::{Head, Init, ResNetSpec, Style, Tail, build};
use crosscam::runtime::{self, Device, SessionOptions};
use ndarray::Array4;

fn run(bytes: &[u8], x: &Array4<f32>) -> Vec<f32> {
    let rt = runtime::init(&RuntimeSettings::default())
        .expect("ONNX Runtime from .deps (run make setup)");
    let (mut s, dev) = rt
        .session_from_bytes(bytes, SessionOptions::default())
        .expect("session");
    if !rt.cuda_in_library {
        assert_eq!(dev, Device::Cpu);
    }
    let input = ort::value::TensorRef::from_array_view(x).unwrap();
    let out = s.run(ort::inputs!["input" => input]).unwrap();
    let (_, data) = out[0].try_extract_tensor::<f32>().unwrap();
    data.to_vec()
}

#[test]
fn runtime_is_found_in_deps_without_configuration() {
    // SAFETY: this test binary never reads ORT_DYLIB_PATH concurrently with this write
    unsafe { std::env::remove_var("ORT_DYLIB_PATH") };
    let path = runtime::locate_library(&RuntimeSettings::default()).expect("library in .deps");
    assert!(
        path.to_string_lossy().contains(".deps/onnxruntime"),
        "{}",
        path.display()
    );
    let rt = runtime::init(&RuntimeSettings::default()).unwrap();
    if rt.library.to_string_lossy().contains("onnxruntime-gpu") {
        // a machine with a card where `make setup` installed the GPU build (docs/gpu.md)
        assert_eq!(rt.version, runtime::gpu::ORT_GPU_VERSION);
        assert!(!rt.cuda_preloaded.is_empty(), "{}", rt.choice_reason);
    } else {
        assert_eq!(rt.version, runtime::ORT_VERSION, "{}", rt.choice_reason);
    }
}

#[test]
fn exporter_styles_compute_the_same_network() {
    let mut spec = ResNetSpec::resnet18().for_reid().scaled(0.25);
    spec.input_hw = (64, 32);
    let x = Array4::from_shape_fn((2, 3, 64, 32), |(n, c, h, w)| {
        ((n * 7 + c * 5 + h * 3 + w) % 17) as f32 / 17.0 - 0.5
    });
    let reference = run(
        &build(&spec, Head::BnNeck, Style::default(), Init::RandomStats, 9).to_bytes(),
        &x,
    );
    assert_eq!(reference.len(), 2 * spec.output_dim());
    for style in [
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
            fuse_bn: true,
        },
    ] {
        let got = run(
            &build(&spec, Head::BnNeck, style, Init::RandomStats, 9).to_bytes(),
            &x,
        );
        let scale = reference.iter().fold(0f32, |m, v| m.max(v.abs()));
        let err = reference
            .iter()
            .zip(&got)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(
            err <= 1e-4 * scale,
            "{style:?}: max difference {err} (scale {scale})"
        );
    }
}
