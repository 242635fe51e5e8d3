//! The GPU part of `make setup`, without a GPU and without downloading anything:
//! - scripts/setup.sh in plan mode (`CROSSCAM_SETUP_PLAN=1`) decides from `nvidia-smi` (a fake one
//!   on PATH) and `CROSSCAM_GPU` whether the GPU requirement set is part of the plan, and runs no
//!   installer on the way;
//! - scripts/gpu_layout.py, fed small fake wheels with the real member paths, lays out exactly the
//!   files crosscam loads and refuses a wheel whose member path escapes its folder.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crosscam::runtime::gpu::{CUDA_PACKAGES, ORT_GPU_VERSION, cuda_libraries};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn script(dir: &Path, name: &str, body: &str) {
    let p = dir.join(name);
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn which(tool: &str) -> PathBuf {
    let out = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .unwrap();
    let p = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(!p.is_empty(), "{tool} not found");
    PathBuf::from(p)
}

/// A PATH of only: the tools the plan needs (dirname, grep, sed), recording stand-ins for every
/// installer setup could run (they leave a mark and fail), and `nvidia_smi` when given.
struct FakePath {
    dir: tempfile::TempDir,
}

impl FakePath {
    fn new(nvidia_smi: Option<&str>) -> FakePath {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        for t in ["dirname", "grep", "sed"] {
            std::os::unix::fs::symlink(which(t), bin.join(t)).unwrap();
        }
        let marks = dir.path().join("ran");
        for t in [
            "python3",
            "pip",
            "apt-get",
            "sudo",
            "dpkg-query",
            "npm",
            "curl",
            "gst-launch-1.0",
        ] {
            script(
                &bin,
                t,
                &format!("echo {t} \"$@\" >> '{}'\nexit 1", marks.display()),
            );
        }
        if let Some(body) = nvidia_smi {
            script(&bin, "nvidia-smi", body);
        }
        FakePath { dir }
    }

    fn plan(&self, gpu: Option<&str>) -> Output {
        let deps = self.dir.path().join("deps");
        let mut c = Command::new(which("bash"));
        c.arg(root().join("scripts/setup.sh"))
            .env_clear()
            .env("PATH", self.dir.path().join("bin"))
            .env("CROSSCAM_SETUP_PLAN", "1")
            .env("CROSSCAM_DEPS_DIR", &deps);
        if let Some(g) = gpu {
            c.env("CROSSCAM_GPU", g);
        }
        let out = c.output().unwrap();
        assert!(
            !self.dir.path().join("ran").exists(),
            "plan mode ran an installer: {}",
            std::fs::read_to_string(self.dir.path().join("ran")).unwrap()
        );
        assert!(!deps.exists(), "plan mode created {}", deps.display());
        out
    }
}

const CARD: &str =
    r#"case "$1" in -L) echo "GPU 0: NVIDIA Fake 9000 (UUID: GPU-00000000)";; *) exit 0;; esac"#;
const BROKEN: &str =
    "echo 'NVIDIA-SMI has failed because it could not communicate with the NVIDIA driver.'; exit 9";

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The non-comment lines of the requirements file.
fn requirement_lines() -> Vec<String> {
    std::fs::read_to_string(root().join("scripts/onnxruntime-gpu.requirements"))
        .unwrap()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect()
}

fn assert_gpu_plan(o: &Output) {
    assert!(o.status.success(), "{o:?}");
    let text = stdout(o);
    assert!(text.contains("plan: GPU: yes"), "{text}");
    let lines = requirement_lines();
    assert_eq!(lines.len(), CUDA_PACKAGES.len() + 1);
    for l in &lines {
        assert!(text.contains(&format!("plan:   {l}")), "{l} not in\n{text}");
    }
    assert!(text.contains(&format!("onnxruntime-gpu=={ORT_GPU_VERSION}")));
}

fn assert_no_gpu_plan(o: &Output, why: &str) {
    assert!(o.status.success(), "{o:?}");
    let text = stdout(o);
    assert!(text.contains("plan: GPU: no"), "{text}");
    assert!(text.contains(why), "expected {why:?} in\n{text}");
    assert!(!text.contains("onnxruntime-gpu"), "{text}");
    for (pkg, _) in CUDA_PACKAGES {
        assert!(!text.contains(pkg), "{pkg} in\n{text}");
    }
    assert!(!text.contains("--hash="), "{text}");
    // the CPU part is planned either way
    assert!(text.contains("onnxruntime==1.32.0 (CPU)"), "{text}");
}

#[test]
fn a_card_on_path_puts_the_gpu_set_in_the_plan() {
    let p = FakePath::new(Some(CARD));
    let o = p.plan(None);
    assert_gpu_plan(&o);
    assert!(stdout(&o).contains("NVIDIA Fake 9000"), "{}", stdout(&o));
}

#[test]
fn no_nvidia_smi_means_no_gpu_part() {
    let o = FakePath::new(None).plan(None);
    assert_no_gpu_plan(&o, "nvidia-smi not found");
}

#[test]
fn a_failing_nvidia_smi_means_no_gpu_part() {
    let o = FakePath::new(Some(BROKEN)).plan(None);
    assert_no_gpu_plan(&o, "nvidia-smi -L failed");
    // a card listing nothing counts as no card
    let o = FakePath::new(Some("exit 0")).plan(None);
    assert_no_gpu_plan(&o, "listed none");
}

#[test]
fn crosscam_gpu_forces_it_off_and_on() {
    let o = FakePath::new(Some(CARD)).plan(Some("0"));
    assert_no_gpu_plan(&o, "CROSSCAM_GPU=0");
    let o = FakePath::new(None).plan(Some("1"));
    assert_gpu_plan(&o);
    let o = FakePath::new(Some(CARD)).plan(Some("yes"));
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("CROSSCAM_GPU must be 0 or 1"));
}

// ---- the layout helper ---------------------------------------------------------------------------

/// Writes a zip at `path` with `members` (name, content) using Python's zipfile, which the layout
/// helper reads with too.
fn make_wheel(path: &Path, members: &[(String, String)]) {
    let spec = serde_json::to_string(members).unwrap();
    let out = Command::new("python3")
        .args([
            "-c",
            "import json, sys, zipfile\nz = zipfile.ZipFile(sys.argv[1], 'w')\nfor n, c in json.loads(sys.argv[2]): z.writestr(n, c)\nz.close()",
        ])
        .arg(path)
        .arg(spec)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

fn content(name: &str) -> String {
    format!("fake library {name}")
}

/// Fake wheels with the real member paths: the onnxruntime-gpu wheel and one per CUDA package,
/// each with files that must be skipped too.
fn fake_wheels(dir: &Path) -> Vec<PathBuf> {
    let mut wheels = Vec::new();
    let capi = "onnxruntime/capi/";
    let ort = dir.join(format!(
        "onnxruntime_gpu-{ORT_GPU_VERSION}-cp311-cp311-manylinux_2_28_x86_64.whl"
    ));
    let mut members: Vec<(String, String)> = [
        format!("libonnxruntime.so.{ORT_GPU_VERSION}"),
        "libonnxruntime_providers_shared.so".into(),
        "libonnxruntime_providers_cuda.so".into(),
        "libonnxruntime_providers_tensorrt.so".into(),
        "onnxruntime_pybind11_state.cpython-311-x86_64-linux-gnu.so".into(),
        "__init__.py".into(),
    ]
    .into_iter()
    .map(|n| (format!("{capi}{n}"), content(&n)))
    .collect();
    members.push((
        format!("onnxruntime_gpu-{ORT_GPU_VERSION}.dist-info/METADATA"),
        "Name: onnxruntime-gpu".into(),
    ));
    make_wheel(&ort, &members);
    wheels.push(ort);
    for (pkg, libs) in CUDA_PACKAGES {
        let sub = if pkg.contains("cudnn") {
            "cudnn"
        } else {
            "cu13"
        };
        let mut members: Vec<(String, String)> = libs
            .iter()
            .map(|l| (format!("nvidia/{sub}/lib/{l}"), content(l)))
            .collect();
        members.push((format!("nvidia/{sub}/include/x.h"), "header".into()));
        members.push((format!("nvidia/{sub}/__init__.py"), String::new()));
        if *pkg == "nvidia-cublas" {
            members.push(("nvidia/cu13/lib/libnvblas.so.13".into(), "extra".into()));
        }
        let w = dir.join(format!(
            "{}-1.0-py3-none-manylinux_2_27_x86_64.whl",
            pkg.replace('-', "_")
        ));
        make_wheel(&w, &members);
        wheels.push(w);
    }
    wheels
}

fn layout(out: &Path, wheels: &[PathBuf]) -> Output {
    Command::new("python3")
        .arg(root().join("scripts/gpu_layout.py"))
        .args(["--ort-version", ORT_GPU_VERSION, "--ort-out"])
        .arg(out.join("onnxruntime-gpu"))
        .arg("--cuda-out")
        .arg(out.join("cuda/lib"))
        .args(wheels)
        .output()
        .unwrap()
}

fn listing(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn layout_installs_exactly_the_loaded_files() {
    let t = tempfile::tempdir().unwrap();
    let wheels = fake_wheels(t.path());
    let deps = t.path().join("deps");
    let o = layout(&deps, &wheels);
    assert!(o.status.success(), "{o:?}");

    let ort = deps.join("onnxruntime-gpu");
    let core = format!("libonnxruntime.so.{ORT_GPU_VERSION}");
    let want: BTreeSet<String> = [
        core.as_str(),
        "libonnxruntime.so",
        "libonnxruntime_providers_shared.so",
        "libonnxruntime_providers_cuda.so",
        "libonnxruntime_providers_tensorrt.so",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(listing(&ort), want);
    assert_eq!(
        std::fs::read_link(ort.join("libonnxruntime.so")).unwrap(),
        PathBuf::from(&core)
    );
    for f in &want {
        if f != "libonnxruntime.so" {
            assert_eq!(std::fs::read_to_string(ort.join(f)).unwrap(), content(f));
        }
    }

    let cuda = deps.join("cuda/lib");
    let want: BTreeSet<String> = cuda_libraries().map(String::from).collect();
    assert_eq!(listing(&cuda), want, "flat, only the preloaded libraries");
    for l in cuda_libraries() {
        assert_eq!(std::fs::read_to_string(cuda.join(l)).unwrap(), content(l));
    }
    // nothing staged is left behind
    assert_eq!(
        listing(&deps),
        ["cuda", "onnxruntime-gpu"]
            .into_iter()
            .map(String::from)
            .collect()
    );
    assert_eq!(listing(&deps.join("cuda")), BTreeSet::from(["lib".into()]));

    // the helper's own list and its completeness check agree with the runtime's
    let req = Command::new("python3")
        .arg(root().join("scripts/gpu_layout.py"))
        .arg("--print-required")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8(req.stdout)
            .unwrap()
            .lines()
            .collect::<Vec<_>>(),
        cuda_libraries().collect::<Vec<_>>()
    );
    let check = |dir: &Path| {
        Command::new("python3")
            .arg(root().join("scripts/gpu_layout.py"))
            .arg("--check-cuda")
            .arg(dir)
            .output()
            .unwrap()
    };
    assert!(check(&cuda).status.success());
    std::fs::remove_file(cuda.join("libcudnn_ops.so.9")).unwrap();
    let o = check(&cuda);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("libcudnn_ops.so.9"));

    // running it again replaces the install
    let o = layout(&deps, &wheels);
    assert!(o.status.success(), "{o:?}");
    assert!(cuda.join("libcudnn_ops.so.9").is_file());
}

#[test]
fn layout_refuses_a_wheel_escaping_its_folder_and_writes_nothing() {
    for evil in ["../x", "nvidia/cu13/lib/../../../../x", "/tmp/x"] {
        let t = tempfile::tempdir().unwrap();
        let mut wheels = fake_wheels(t.path());
        let bad = t.path().join("nvidia_evil-1.0-py3-none-any.whl");
        make_wheel(
            &bad,
            &[
                ("nvidia/cu13/lib/libfoo.so.1".into(), "x".into()),
                (evil.into(), "escaped".into()),
            ],
        );
        wheels.insert(1, bad);
        let deps = t.path().join("deps");
        let o = layout(&deps, &wheels);
        assert!(!o.status.success(), "{evil}: {o:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("escapes the wheel's folder") && err.contains(evil),
            "{evil}: {err}"
        );
        assert!(!deps.exists(), "{evil}: something was written");
        assert!(!t.path().join("x").exists());
    }
}

#[test]
fn layout_names_missing_libraries_and_wrong_wheels() {
    let t = tempfile::tempdir().unwrap();
    let wheels = fake_wheels(t.path());
    let deps = t.path().join("deps");
    // without the cuDNN wheel
    let no_cudnn: Vec<PathBuf> = wheels
        .iter()
        .filter(|w| !w.to_string_lossy().contains("cudnn"))
        .cloned()
        .collect();
    let o = layout(&deps, &no_cudnn);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("missing from the wheels") && err.contains("libcudnn.so.9"),
        "{err}"
    );
    assert!(!deps.exists());
    // without the ONNX Runtime wheel
    let o = layout(&deps, &wheels[1..]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("no onnxruntime-gpu wheel"));
    // not a zip at all
    let junk = t.path().join("junk.whl");
    std::fs::write(&junk, b"not a zip").unwrap();
    let o = layout(&deps, &[junk]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("not a readable wheel"));
    assert!(!deps.exists());
}

// ---- scripts/gpu-check.sh on a machine without a card ----------------------------------------------

#[test]
fn gpu_check_stops_at_once_without_a_card() {
    for (smi, why) in [
        (None, "no NVIDIA card (nvidia-smi not found)"),
        (
            Some(BROKEN),
            "no NVIDIA card (nvidia-smi failed: NVIDIA-SMI has failed",
        ),
        (Some("exit 0"), "no NVIDIA card (nvidia-smi lists none)"),
    ] {
        let p = FakePath::new(smi);
        let out_dir = p.dir.path().join("out");
        let o = Command::new(which("bash"))
            .arg(root().join("scripts/gpu-check.sh"))
            .env_clear()
            .env("PATH", p.dir.path().join("bin"))
            .env("CROSSCAM_BIN", env!("CARGO_BIN_EXE_crosscam"))
            .env("GPU_CHECK_OUT", &out_dir)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(1), "{o:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("gpu-check: FAIL") && err.contains(why),
            "{why}: {err}"
        );
        assert!(
            stdout(&o).is_empty(),
            "printed before failing: {}",
            stdout(&o)
        );
        assert!(!out_dir.exists(), "made {}", out_dir.display());
    }
}

// ---- bench --device on a machine without the GPU build ---------------------------------------------

#[test]
fn bench_device_cuda_fails_with_the_reason_and_cpu_runs_on_the_cpu() {
    let t = tempfile::tempdir().unwrap();
    let deps = t.path().join("deps");
    std::fs::create_dir(&deps).unwrap();
    std::os::unix::fs::symlink(root().join(".deps/onnxruntime"), deps.join("onnxruntime")).unwrap();
    std::os::unix::fs::symlink(root().join(".deps/media"), deps.join("media")).unwrap();
    let model = root().join("models/crosscam-resnet18-vtest-half.onnx");
    let bench = |what: &[&str], device: &str| {
        Command::new(env!("CARGO_BIN_EXE_crosscam"))
            .arg("bench")
            .args(what)
            .args([
                "--device", device, "--rounds", "1", "--warmup", "0", "--json",
            ])
            .env("CROSSCAM_DEPS_DIR", &deps)
            .env_remove("ORT_DYLIB_PATH")
            .output()
            .unwrap()
    };
    let embed = ["embed", "--batch", "2", "--model", model.to_str().unwrap()];
    let detect = ["detect", "--model", "nanodet-416", "--batch", "1"];
    for what in [&embed[..], &detect[..]] {
        let o = bench(what, "cuda");
        assert!(!o.status.success(), "{what:?}: {o:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("CUDA was required (runtime.device = \"cuda\")")
                && err.contains("GPU ONNX Runtime is not installed"),
            "{what:?}: {err}"
        );
        let o = bench(what, "cpu");
        assert!(o.status.success(), "{what:?}: {o:?}");
        let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(j["device"], "CPU", "{what:?}: {j}");
    }
}
