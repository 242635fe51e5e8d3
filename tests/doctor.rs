//! `crosscam doctor` on this machine (after `make setup`) and with its dependencies broken on
//! purpose: each broken thing is named, with a fix, and the exit status says it failed.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A config in `dir` using `manifest` and a data directory inside `dir`.
fn write_config(dir: &Path, manifest: &Path) -> PathBuf {
    let p = dir.join("doctor.toml");
    std::fs::write(
        &p,
        format!(
            "[server]\ndata_dir = \"data\"\n[models]\nmanifest = \"{}\"\n",
            manifest.display()
        ),
    )
    .unwrap();
    p
}

/// A copy of the model folder (manifest + every model file) that a test may break.
fn copy_models(dir: &Path) -> PathBuf {
    let m = dir.join("models");
    std::fs::create_dir_all(&m).unwrap();
    for e in std::fs::read_dir(root().join("models")).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if name == "manifest.toml" || name.ends_with(".onnx") {
            std::fs::copy(&p, m.join(&name)).unwrap();
        }
    }
    m.join("manifest.toml")
}

struct Run {
    ok: bool,
    json: serde_json::Value,
}

fn doctor(config: &Path, env: &[(&str, &str)], unset: &[&str]) -> Run {
    let mut c = Command::new(env!("CARGO_BIN_EXE_crosscam"));
    c.args(["doctor", "--json", "--config"]).arg(config);
    for (k, v) in env {
        c.env(k, v);
    }
    for k in unset {
        c.env_remove(k);
    }
    let out = c.output().expect("run crosscam doctor");
    let json = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "doctor --json printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    Run {
        ok: out.status.success(),
        json,
    }
}

fn check<'a>(r: &'a Run, name: &str) -> &'a serde_json::Value {
    r.json["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check named {name}: {}", r.json))
}

#[test]
fn doctor_passes_on_a_set_up_machine() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &root().join("models/manifest.toml"));
    let r = doctor(&cfg, &[], &["ORT_DYLIB_PATH"]);
    assert!(r.ok, "doctor failed after make setup: {:#}", r.json);
    for name in [
        "gstreamer",
        "gstreamer elements",
        "onnxruntime",
        "model nanodet-416",
        "model mobilenetv2-imagenet",
        "data directory",
        "gpu",
    ] {
        assert_eq!(check(&r, name)["ok"], true, "{name}: {}", check(&r, name));
    }
    let ort = check(&r, "onnxruntime")["detail"].as_str().unwrap();
    if ort.contains("onnxruntime-gpu") {
        // a machine with a card where `make setup` installed the GPU build (docs/gpu.md)
        assert!(
            ort.contains(crosscam::runtime::gpu::ORT_GPU_VERSION),
            "{ort}"
        );
    } else {
        assert!(ort.contains("1.32.0"), "{ort}");
    }
    assert!(
        dir.path().join("data").is_dir(),
        "doctor creates the data directory"
    );
}

#[test]
fn doctor_fails_clearly_without_onnxruntime() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &root().join("models/manifest.toml"));
    let empty = dir.path().join("no-deps");
    let r = doctor(
        &cfg,
        &[("CROSSCAM_DEPS_DIR", empty.to_str().unwrap())],
        &["ORT_DYLIB_PATH"],
    );
    assert!(!r.ok);
    let c = check(&r, "onnxruntime");
    assert_eq!(c["ok"], false);
    let d = c["detail"].as_str().unwrap();
    assert!(
        d.contains("not found") && d.contains("make setup") && d.contains("no-deps/onnxruntime"),
        "{d}"
    );
    // models cannot be loaded, and say why
    assert!(
        check(&r, "model nanodet-416")["detail"]
            .as_str()
            .unwrap()
            .contains("ONNX Runtime is unavailable")
    );
}

#[test]
fn doctor_fails_clearly_with_a_corrupt_onnxruntime() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &root().join("models/manifest.toml"));
    let lib = dir.path().join("libonnxruntime.so");
    std::fs::write(&lib, vec![0x7f; 4096]).unwrap();
    let r = doctor(&cfg, &[("ORT_DYLIB_PATH", lib.to_str().unwrap())], &[]);
    assert!(!r.ok);
    let d = check(&r, "onnxruntime")["detail"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        d.contains("cannot load") && d.contains(lib.to_str().unwrap()),
        "{d}"
    );
}

#[test]
fn doctor_names_a_corrupt_model_and_keeps_checking_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = copy_models(dir.path());
    let f = dir.path().join("models/nanodet-416.onnx");
    let mut bytes = std::fs::read(&f).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&f, bytes).unwrap();
    let r = doctor(
        &write_config(dir.path(), &manifest),
        &[],
        &["ORT_DYLIB_PATH"],
    );
    assert!(!r.ok);
    let d = check(&r, "model nanodet-416")["detail"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        d.contains("checksum mismatch") && d.contains("git checkout"),
        "{d}"
    );
    assert_eq!(check(&r, "model mobilenetv2-imagenet")["ok"], true);
}

#[test]
fn doctor_names_a_missing_model_file() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = copy_models(dir.path());
    std::fs::remove_file(dir.path().join("models/mobilenetv2-imagenet.onnx")).unwrap();
    let r = doctor(
        &write_config(dir.path(), &manifest),
        &[],
        &["ORT_DYLIB_PATH"],
    );
    assert!(!r.ok);
    let d = check(&r, "model mobilenetv2-imagenet")["detail"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        d.contains("is missing") && d.contains("models/recipes/mobilenetv2.py"),
        "{d}"
    );
}

#[test]
fn a_model_whose_shapes_differ_from_the_manifest_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = copy_models(dir.path());
    let text = std::fs::read_to_string(&manifest)
        .unwrap()
        .replace("shape = [-1, 3, 416, 416]", "shape = [-1, 3, 320, 320]");
    std::fs::write(&manifest, text).unwrap();
    let r = doctor(
        &write_config(dir.path(), &manifest),
        &[],
        &["ORT_DYLIB_PATH"],
    );
    assert!(!r.ok);
    let d = check(&r, "model nanodet-416")["detail"]
        .as_str()
        .unwrap()
        .to_string();
    // the bundled NanoDet's input height and width are dynamic, so the 320×320 input the
    // manifest now names runs; its outputs then have 40×40 cells at stride 8, not 52×52
    assert!(
        d.contains("output 'Identity:0' came out as [1,1600,80] but the manifest says [N,2704,80]")
            && d.contains("models/recipes/nanodet.py"),
        "{d}"
    );
}

#[test]
fn table_output_and_exit_status() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &root().join("models/manifest.toml"));
    let out = Command::new(env!("CARGO_BIN_EXE_crosscam"))
        .args(["doctor", "--config"])
        .arg(&cfg)
        .env("CROSSCAM_DEPS_DIR", dir.path().join("nothing"))
        .env_remove("ORT_DYLIB_PATH")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("FAIL  onnxruntime"), "{text}");
    assert!(text.contains("some required checks failed"), "{text}");
}

// ---- GPU lines, on a machine without a card -------------------------------------------------------

/// A PATH holding only a fake `nvidia-smi` (when given) and a deps folder whose CPU ONNX Runtime
/// is the real one, plus, when `gpu_files`, junk files where the GPU library and the CUDA
/// libraries go (they exist but cannot be loaded).
fn gpu_sandbox(dir: &Path, nvidia_smi: Option<&str>, gpu_files: bool) -> (PathBuf, PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    if let Some(body) = nvidia_smi {
        let p = bin.join("nvidia-smi");
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let deps = dir.join("deps");
    std::fs::create_dir_all(&deps).unwrap();
    std::os::unix::fs::symlink(root().join(".deps/onnxruntime"), deps.join("onnxruntime")).unwrap();
    if gpu_files {
        let ort = deps.join("onnxruntime-gpu");
        std::fs::create_dir_all(&ort).unwrap();
        std::fs::write(
            ort.join(format!(
                "libonnxruntime.so.{}",
                crosscam::runtime::gpu::ORT_GPU_VERSION
            )),
            b"not a library",
        )
        .unwrap();
        let cuda = deps.join("cuda/lib");
        std::fs::create_dir_all(&cuda).unwrap();
        for l in crosscam::runtime::gpu::cuda_libraries() {
            std::fs::write(cuda.join(l), b"not a library").unwrap();
        }
    }
    (bin, deps)
}

const FAKE_CARD: &str = r#"case "$1" in
  --query-gpu=*) echo "NVIDIA Fake 9000, 580.12.34";;
  "") echo "| NVIDIA-SMI 580.12.34    Driver Version: 580.12.34    CUDA Version: 13.0     |";;
  *) exit 1;;
esac"#;

fn detail<'a>(r: &'a Run, name: &str) -> &'a str {
    check(r, name)["detail"].as_str().unwrap()
}

fn with_device(cfg: &Path, device: &str) {
    let mut text = std::fs::read_to_string(cfg).unwrap();
    text.push_str(&format!("[runtime]\ndevice = \"{device}\"\n"));
    std::fs::write(cfg, text).unwrap();
}

#[test]
fn doctor_reports_no_card_and_no_gpu_libraries_honestly() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &root().join("models/manifest.toml"));
    let (bin, deps) = gpu_sandbox(dir.path(), None, false);
    let env = [
        ("PATH", bin.to_str().unwrap()),
        ("CROSSCAM_DEPS_DIR", deps.to_str().unwrap()),
    ];
    let r = doctor(&cfg, &env, &["ORT_DYLIB_PATH"]);
    assert!(r.ok, "{:#}", r.json);
    assert_eq!(check(&r, "gpu")["ok"], true);
    assert_eq!(check(&r, "gpu")["required"], false);
    assert!(
        detail(&r, "gpu").contains("no NVIDIA card (nvidia-smi not found)"),
        "{}",
        detail(&r, "gpu")
    );
    let libs = detail(&r, "gpu libraries");
    assert_eq!(check(&r, "gpu libraries")["ok"], true);
    assert!(
        libs.contains("GPU ONNX Runtime not installed") && libs.contains("CUDA/cuDNN: none in"),
        "{libs}"
    );
    let eps = detail(&r, "execution providers");
    assert!(
        eps.contains("CPU ONNX Runtime: the GPU ONNX Runtime is not installed")
            && eps.contains("providers in this library: CPU")
            && !eps.contains("CUDA starts"),
        "{eps}"
    );
    assert!(detail(&r, "onnxruntime").contains("1.32.0"));
    let nvdec = detail(&r, "nvdec");
    assert_eq!(check(&r, "nvdec")["ok"], true);
    if !Path::new("/proc/driver/nvidia/version").exists() {
        // without the NVIDIA driver GStreamer's nvcodec plugin registers no decoders
        assert!(
            nvdec.contains("nvh264dec, nvh265dec not available")
                && nvdec.contains("decoding runs on the CPU"),
            "{nvdec}"
        );
    }

    // runtime.device = "cuda" without a card: the card line and ONNX Runtime fail, with the reason
    with_device(&cfg, "cuda");
    let r = doctor(&cfg, &env, &["ORT_DYLIB_PATH"]);
    assert!(!r.ok);
    assert_eq!(check(&r, "gpu")["ok"], false);
    assert_eq!(check(&r, "gpu")["required"], true);
    let ort = detail(&r, "onnxruntime");
    assert!(
        ort.contains("CUDA was required") && ort.contains("GPU ONNX Runtime is not installed"),
        "{ort}"
    );
}

#[test]
fn doctor_with_a_card_but_no_gpu_libraries_says_to_run_setup() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &root().join("models/manifest.toml"));
    let (bin, deps) = gpu_sandbox(dir.path(), Some(FAKE_CARD), false);
    let env = [
        ("PATH", bin.to_str().unwrap()),
        ("CROSSCAM_DEPS_DIR", deps.to_str().unwrap()),
    ];
    let r = doctor(&cfg, &env, &["ORT_DYLIB_PATH"]);
    assert!(r.ok, "a warning only: {:#}", r.json);
    assert_eq!(
        detail(&r, "gpu"),
        "NVIDIA Fake 9000, driver 580.12.34; CUDA 13.0 (the driver's highest)"
    );
    let c = check(&r, "gpu libraries");
    assert_eq!(c["ok"], false);
    assert_eq!(c["required"], false);
    assert!(
        detail(&r, "gpu libraries").contains("this machine has a card: run `make setup`"),
        "{c}"
    );
}

#[test]
fn unloadable_cuda_libraries_fall_back_to_the_cpu_under_auto_and_fail_under_cuda() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &root().join("models/manifest.toml"));
    let (bin, deps) = gpu_sandbox(dir.path(), Some(FAKE_CARD), true);
    let env = [
        ("PATH", bin.to_str().unwrap()),
        ("CROSSCAM_DEPS_DIR", deps.to_str().unwrap()),
    ];
    let r = doctor(&cfg, &env, &["ORT_DYLIB_PATH"]);
    assert!(r.ok, "{:#}", r.json);
    assert_eq!(check(&r, "gpu libraries")["ok"], true);
    assert!(detail(&r, "gpu libraries").contains("CUDA/cuDNN: all 18 libraries"));
    let eps = detail(&r, "execution providers");
    assert!(
        eps.contains("CPU ONNX Runtime: the CUDA libraries failed to load")
            && eps.contains("libcudart.so.13"),
        "{eps}"
    );
    assert!(detail(&r, "onnxruntime").contains("1.32.0"));
    assert!(detail(&r, "model nanodet-416").contains("loads on CPU"));

    with_device(&cfg, "cuda");
    let r = doctor(&cfg, &env, &["ORT_DYLIB_PATH"]);
    assert!(!r.ok);
    let ort = detail(&r, "onnxruntime");
    assert!(
        ort.contains("CUDA was required") && ort.contains("the CUDA libraries failed to load"),
        "{ort}"
    );
}
