//! Which ONNX Runtime library to load, and the CUDA libraries it needs.
//!
//! `make setup` on a machine with an NVIDIA card installs the GPU build of ONNX Runtime into
//! `.deps/onnxruntime-gpu/` and the CUDA/cuDNN libraries its CUDA provider needs into
//! `.deps/cuda/lib/` (scripts/gpu_layout.py). [`choose_library`] decides, from what exists, the
//! `[runtime] device` setting and whether `nvidia-smi` finds a card, which library to load and
//! why; [`preload_cuda`] loads the CUDA libraries by full path before ONNX Runtime, so its CUDA
//! provider finds them without `LD_LIBRARY_PATH`. The decision is a pure function, tested
//! without a GPU.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::RuntimeError;
use crate::config::{DevicePref, RuntimeSettings};

/// The GPU ONNX Runtime version `make setup` installs on a machine with a card.
pub const ORT_GPU_VERSION: &str = "1.31.1";

/// The PyPI wheel of each CUDA/cuDNN library crosscam preloads, in a dependency-friendly order
/// (the order does not have to be exact: [`preload_cuda`] retries what failed). Must name the
/// same packages as scripts/onnxruntime-gpu.requirements and the same files as
/// scripts/gpu_layout.py (both checked by tests).
pub const CUDA_PACKAGES: &[(&str, &[&str])] = &[
    ("nvidia-cuda-runtime", &["libcudart.so.13"]),
    ("nvidia-nvjitlink", &["libnvJitLink.so.13"]),
    (
        "nvidia-cuda-nvrtc",
        &["libnvrtc.so.13", "libnvrtc-builtins.so.13.0"],
    ),
    ("nvidia-cublas", &["libcublasLt.so.13", "libcublas.so.13"]),
    ("nvidia-curand", &["libcurand.so.10"]),
    ("nvidia-cufft", &["libcufft.so.12"]),
    (
        "nvidia-cudnn-cu13",
        &[
            "libcudnn.so.9",
            "libcudnn_graph.so.9",
            "libcudnn_ops.so.9",
            "libcudnn_heuristic.so.9",
            "libcudnn_cnn.so.9",
            "libcudnn_adv.so.9",
            "libcudnn_engines_precompiled.so.9",
            "libcudnn_engines_runtime_compiled.so.9",
            "libcudnn_engines_tensor_ir.so.9",
            "libcudnn_ext.so.9",
        ],
    ),
];

/// Every CUDA/cuDNN file name in [`CUDA_PACKAGES`], in order.
pub fn cuda_libraries() -> impl Iterator<Item = &'static str> {
    CUDA_PACKAGES
        .iter()
        .flat_map(|(_, libs)| libs.iter().copied())
}

/// `.deps/onnxruntime-gpu/libonnxruntime.so.<ORT_GPU_VERSION>`.
pub fn gpu_library_path() -> PathBuf {
    crate::paths::deps_dir()
        .join("onnxruntime-gpu")
        .join(format!("libonnxruntime.so.{ORT_GPU_VERSION}"))
}

/// `.deps/cuda/lib`.
pub fn cuda_dir() -> PathBuf {
    crate::paths::deps_dir().join("cuda").join("lib")
}

/// What exists on this machine, as far as the library choice is concerned.
#[derive(Debug, Clone, Default)]
pub struct Probe {
    /// A library named by `runtime.onnxruntime` or `ORT_DYLIB_PATH` that exists, with where it
    /// was named.
    pub explicit: Option<(PathBuf, &'static str)>,
    /// Every CPU library path looked at (for the not-found message).
    pub cpu_candidates: Vec<PathBuf>,
    /// The first of them that exists.
    pub cpu_library: Option<PathBuf>,
    pub gpu_library: PathBuf,
    pub gpu_library_present: bool,
    pub cuda_dir: PathBuf,
    /// CUDA/cuDNN file names missing from `cuda_dir`.
    pub cuda_missing: Vec<&'static str>,
}

impl Probe {
    /// Looks at the files (no loading, no `nvidia-smi`).
    pub fn of_machine(settings: &RuntimeSettings) -> Probe {
        let mut explicit = None;
        if let Some(p) = settings.onnxruntime.as_ref().filter(|p| p.is_file()) {
            explicit = Some((p.clone(), "runtime.onnxruntime"));
        } else if let Some(p) = std::env::var_os("ORT_DYLIB_PATH")
            .map(PathBuf::from)
            .filter(|p| p.is_file())
        {
            explicit = Some((p, "ORT_DYLIB_PATH"));
        }
        let cpu_candidates = super::library_candidates(settings);
        let cpu_library = cpu_candidates.iter().find(|p| p.is_file()).cloned();
        let gpu_library = gpu_library_path();
        let cuda_dir = cuda_dir();
        Probe {
            explicit,
            cpu_candidates,
            cpu_library,
            gpu_library_present: gpu_library.is_file(),
            gpu_library,
            cuda_missing: cuda_libraries()
                .filter(|l| !cuda_dir.join(l).is_file())
                .collect(),
            cuda_dir,
        }
    }
}

/// The library to load, whether to preload the CUDA libraries first, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    pub library: PathBuf,
    /// Preload the CUDA/cuDNN libraries from `Probe::cuda_dir` before loading `library`.
    pub preload_cuda: bool,
    pub reason: String,
}

/// Decides which ONNX Runtime library to load.
///
/// - a library named by `runtime.onnxruntime` / `ORT_DYLIB_PATH` is used as is (the CUDA
///   libraries are preloaded for it when the device is not `cpu`, they are all installed and a
///   card answers);
/// - `device = cpu`: the CPU library;
/// - `auto` / `cuda`: the GPU library with the CUDA libraries when both are installed and
///   `card()` (`nvidia-smi`) finds a card; otherwise `auto` takes the CPU library and says why,
///   and `cuda` fails with that reason.
///
/// `card` is called only when everything else is in place for CUDA.
pub fn choose_library(
    p: &Probe,
    device: DevicePref,
    card: impl FnOnce() -> Result<String, String>,
) -> Result<Choice, RuntimeError> {
    if let Some((lib, source)) = &p.explicit {
        let preload = device != DevicePref::Cpu && p.cuda_missing.is_empty() && card().is_ok();
        return Ok(Choice {
            library: lib.clone(),
            preload_cuda: preload,
            reason: format!(
                "set by {source}{}",
                if preload {
                    format!("; CUDA libraries from {}", p.cuda_dir.display())
                } else {
                    String::new()
                }
            ),
        });
    }
    let why_not = if device == DevicePref::Cpu {
        "runtime.device = \"cpu\"".to_string()
    } else if !p.gpu_library_present {
        format!(
            "the GPU ONNX Runtime is not installed ({} is missing; `make setup` installs it on a machine with an NVIDIA card, `CROSSCAM_GPU=1 make setup` anywhere)",
            p.gpu_library.display()
        )
    } else if !p.cuda_missing.is_empty() {
        format!(
            "CUDA libraries missing in {}: {} (run `make setup` again)",
            p.cuda_dir.display(),
            p.cuda_missing.join(", ")
        )
    } else {
        match card() {
            Ok(name) => {
                return Ok(Choice {
                    library: p.gpu_library.clone(),
                    preload_cuda: true,
                    reason: format!(
                        "NVIDIA card {name}; GPU ONNX Runtime {ORT_GPU_VERSION} with CUDA libraries from {}",
                        p.cuda_dir.display()
                    ),
                });
            }
            Err(e) => e,
        }
    };
    if device == DevicePref::Cuda {
        return Err(RuntimeError::CudaRequired(why_not));
    }
    cpu_choice(p, why_not)
}

/// The CPU library, with `why` CUDA is not used.
pub fn cpu_choice(p: &Probe, why: String) -> Result<Choice, RuntimeError> {
    let library = p
        .cpu_library
        .clone()
        .ok_or_else(|| RuntimeError::NotFound(p.cpu_candidates.clone()))?;
    Ok(Choice {
        library,
        preload_cuda: false,
        reason: format!("CPU ONNX Runtime: {why}"),
    })
}

/// Loads every CUDA/cuDNN library from `dir` by full path and keeps it loaded, so ONNX Runtime's
/// CUDA provider (and cuDNN's own lazy loads) find them by name. Libraries are loaded in passes:
/// one whose dependency is not loaded yet is retried after the others. Returns the loaded paths.
pub fn preload_cuda(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let mut pending: Vec<PathBuf> = cuda_libraries().map(|l| dir.join(l)).collect();
    let mut loaded = Vec::new();
    loop {
        let before = loaded.len();
        let mut failed = Vec::new();
        for p in pending {
            // SAFETY: loading runs the library's initialisers; these are NVIDIA's CUDA/cuDNN
            // libraries that `make setup` installed from hash-pinned wheels. The handle is leaked
            // on purpose: the library must stay loaded for ONNX Runtime to find it by name.
            match unsafe { libloading::Library::new(&p) } {
                Ok(lib) => {
                    std::mem::forget(lib);
                    loaded.push(p)
                }
                Err(e) => failed.push((p, e.to_string())),
            }
        }
        if failed.is_empty() {
            tracing::info!(dir = %dir.display(), libraries = loaded.len(), "CUDA libraries preloaded");
            return Ok(loaded);
        }
        if loaded.len() == before {
            let (p, e) = &failed[0];
            return Err(format!("cannot load {}: {e}", p.display()));
        }
        pending = failed.into_iter().map(|(p, _)| p).collect();
    }
}

/// Runs `nvidia-smi` with `args` (10 s at most); its standard output, or why there is none.
pub fn nvidia_smi(args: &[&str]) -> Result<String, String> {
    let mut child = Command::new("nvidia-smi")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                "no NVIDIA card (nvidia-smi not found)".to_string()
            } else {
                format!("no NVIDIA card (cannot run nvidia-smi: {e})")
            }
        })?;
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if start.elapsed() > Duration::from_secs(10) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err("no answer from nvidia-smi within 10 s (driver hung?)".into());
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(format!("nvidia-smi: {e}")),
        }
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("nvidia-smi: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let first = err
            .lines()
            .chain(stdout.lines())
            .find(|l| !l.trim().is_empty())
            .unwrap_or("no message")
            .trim()
            .to_string();
        return Err(format!(
            "no NVIDIA card (nvidia-smi failed, {}: {first})",
            out.status
        ));
    }
    if stdout.is_empty() {
        return Err("no NVIDIA card (nvidia-smi lists none)".into());
    }
    Ok(stdout)
}

/// The card(s) `nvidia-smi` reports.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CardInfo {
    /// `name, driver_version` per card, as `nvidia-smi --query-gpu` prints them.
    pub cards: Vec<(String, String)>,
    /// The highest CUDA version the driver supports (the `nvidia-smi` header), when shown.
    pub cuda_version: Option<String>,
}

/// Parses `nvidia-smi --query-gpu=name,driver_version --format=csv,noheader` output.
pub fn parse_query(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| match l.rsplit_once(',') {
            Some((name, driver)) => (name.trim().to_string(), driver.trim().to_string()),
            None => (l.trim().to_string(), String::new()),
        })
        .collect()
}

/// The `CUDA Version: X.Y` of `nvidia-smi`'s header.
pub fn parse_cuda_version(header: &str) -> Option<String> {
    let rest = header.split("CUDA Version:").nth(1)?;
    let v = rest
        .split(|c: char| c.is_whitespace() || c == '|')
        .find(|s| !s.is_empty())?;
    Some(v.to_string())
}

/// Asks `nvidia-smi` for the cards, their driver and the CUDA version.
pub fn card_info() -> Result<CardInfo, String> {
    let q = nvidia_smi(&["--query-gpu=name,driver_version", "--format=csv,noheader"])?;
    let cards = parse_query(&q);
    if cards.is_empty() {
        return Err("no NVIDIA card (nvidia-smi lists none)".into());
    }
    let cuda_version = nvidia_smi(&[]).ok().and_then(|h| parse_cuda_version(&h));
    Ok(CardInfo {
        cards,
        cuda_version,
    })
}

/// cuDNN's and the CUDA runtime's versions (`cudnnGetVersion`, `cudaRuntimeGetVersion`) from the
/// preloaded libraries in `dir`, as `9.28.1` / `13.0`; `None` where a library or symbol is missing.
pub fn library_versions(dir: &Path) -> (Option<String>, Option<String>) {
    // SAFETY: both functions take no pointers we do not own and have had these C signatures
    // since cuDNN 7 and CUDA 2; the libraries were loaded already (same handles).
    unsafe {
        let cudnn = libloading::Library::new(dir.join("libcudnn.so.9"))
            .ok()
            .and_then(|l| {
                let f: libloading::Symbol<unsafe extern "C" fn() -> usize> =
                    l.get(b"cudnnGetVersion").ok()?;
                let v = f();
                Some(format!("{}.{}.{}", v / 10000, (v % 10000) / 100, v % 100))
            });
        let cudart = libloading::Library::new(dir.join("libcudart.so.13"))
            .ok()
            .and_then(|l| {
                let f: libloading::Symbol<unsafe extern "C" fn(*mut i32) -> i32> =
                    l.get(b"cudaRuntimeGetVersion").ok()?;
                let mut v = 0i32;
                (f(&mut v) == 0).then(|| format!("{}.{}", v / 1000, (v % 1000) / 10))
            });
        (cudnn, cudart)
    }
}

/// The first card's name (for [`choose_library`]).
pub fn card_name() -> Result<String, String> {
    let q = nvidia_smi(&["--query-gpu=name,driver_version", "--format=csv,noheader"])?;
    parse_query(&q)
        .into_iter()
        .next()
        .map(|(name, driver)| format!("{name} (driver {driver})"))
        .ok_or_else(|| "no NVIDIA card (nvidia-smi lists none)".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    fn probe() -> Probe {
        Probe {
            explicit: None,
            cpu_candidates: vec![PathBuf::from("/d/onnxruntime/libonnxruntime.so.1.32.0")],
            cpu_library: Some(PathBuf::from("/d/onnxruntime/libonnxruntime.so.1.32.0")),
            gpu_library: PathBuf::from("/d/onnxruntime-gpu/libonnxruntime.so.1.31.1"),
            gpu_library_present: true,
            cuda_dir: PathBuf::from("/d/cuda/lib"),
            cuda_missing: vec![],
        }
    }
    const CPU: &str = "/d/onnxruntime/libonnxruntime.so.1.32.0";
    const GPU: &str = "/d/onnxruntime-gpu/libonnxruntime.so.1.31.1";

    fn card_ok() -> Result<String, String> {
        Ok("NVIDIA H100 (driver 580.1)".into())
    }
    fn no_card() -> Result<String, String> {
        Err("no NVIDIA card (nvidia-smi not found)".into())
    }

    #[test]
    fn everything_installed_and_a_card_loads_the_gpu_library_with_cuda() {
        for d in [DevicePref::Auto, DevicePref::Cuda] {
            let c = choose_library(&probe(), d, card_ok).unwrap();
            assert_eq!(c.library, PathBuf::from(GPU));
            assert!(c.preload_cuda);
            assert!(
                c.reason.contains("NVIDIA H100") && c.reason.contains("1.31.1"),
                "{}",
                c.reason
            );
        }
    }

    #[test]
    fn cpu_setting_never_asks_for_a_card() {
        let asked = Cell::new(false);
        let c = choose_library(&probe(), DevicePref::Cpu, || {
            asked.set(true);
            card_ok()
        })
        .unwrap();
        assert_eq!(c.library, PathBuf::from(CPU));
        assert!(!c.preload_cuda);
        assert!(!asked.get(), "nvidia-smi must not run for device = cpu");
        assert!(
            c.reason.contains("runtime.device = \"cpu\""),
            "{}",
            c.reason
        );
    }

    #[test]
    fn no_card_auto_falls_back_and_cuda_fails_with_the_reason() {
        let c = choose_library(&probe(), DevicePref::Auto, no_card).unwrap();
        assert_eq!(c.library, PathBuf::from(CPU));
        assert!(!c.preload_cuda);
        assert!(c.reason.contains("nvidia-smi not found"), "{}", c.reason);
        let e = choose_library(&probe(), DevicePref::Cuda, no_card).unwrap_err();
        assert!(matches!(e, RuntimeError::CudaRequired(_)));
        assert!(e.to_string().contains("nvidia-smi not found"), "{e}");
    }

    #[test]
    fn gpu_library_missing_is_named_and_no_card_probe_runs() {
        let mut p = probe();
        p.gpu_library_present = false;
        let asked = Cell::new(false);
        let c = choose_library(&p, DevicePref::Auto, || {
            asked.set(true);
            card_ok()
        })
        .unwrap();
        assert_eq!(c.library, PathBuf::from(CPU));
        assert!(c.reason.contains(GPU) && c.reason.contains("make setup"));
        assert!(!asked.get());
        let e = choose_library(&p, DevicePref::Cuda, card_ok).unwrap_err();
        assert!(
            e.to_string().contains("GPU ONNX Runtime is not installed"),
            "{e}"
        );
    }

    #[test]
    fn missing_cuda_libraries_are_listed() {
        let mut p = probe();
        p.cuda_missing = vec!["libcudnn.so.9", "libcublas.so.13"];
        let c = choose_library(&p, DevicePref::Auto, card_ok).unwrap();
        assert_eq!(c.library, PathBuf::from(CPU));
        assert!(
            c.reason.contains("libcudnn.so.9, libcublas.so.13") && c.reason.contains("/d/cuda/lib"),
            "{}",
            c.reason
        );
        let e = choose_library(&p, DevicePref::Cuda, card_ok).unwrap_err();
        assert!(e.to_string().contains("libcudnn.so.9"), "{e}");
    }

    #[test]
    fn auto_without_any_cpu_library_is_not_found() {
        let mut p = probe();
        p.gpu_library_present = false;
        p.cpu_library = None;
        let e = choose_library(&p, DevicePref::Auto, card_ok).unwrap_err();
        assert!(matches!(e, RuntimeError::NotFound(ref c) if c == &p.cpu_candidates));
    }

    #[test]
    fn an_explicit_library_wins_and_gets_cuda_only_with_a_card() {
        let mut p = probe();
        p.explicit = Some((
            PathBuf::from("/opt/ort/libonnxruntime.so"),
            "ORT_DYLIB_PATH",
        ));
        let c = choose_library(&p, DevicePref::Auto, card_ok).unwrap();
        assert_eq!(c.library, PathBuf::from("/opt/ort/libonnxruntime.so"));
        assert!(c.preload_cuda && c.reason.contains("ORT_DYLIB_PATH"));
        let c = choose_library(&p, DevicePref::Auto, no_card).unwrap();
        assert!(!c.preload_cuda);
        let c = choose_library(&p, DevicePref::Cpu, card_ok).unwrap();
        assert!(!c.preload_cuda);
        p.cuda_missing = vec!["libcudart.so.13"];
        assert!(
            !choose_library(&p, DevicePref::Cuda, card_ok)
                .unwrap()
                .preload_cuda
        );
    }

    #[test]
    fn nvidia_smi_output_is_parsed() {
        assert_eq!(
            parse_query("NVIDIA H100 80GB HBM3, 580.65.06\nTesla T4, 580.65.06\n"),
            vec![
                ("NVIDIA H100 80GB HBM3".to_string(), "580.65.06".to_string()),
                ("Tesla T4".to_string(), "580.65.06".to_string())
            ]
        );
        let header =
            "| NVIDIA-SMI 580.65.06   Driver Version: 580.65.06   CUDA Version: 13.0     |";
        assert_eq!(parse_cuda_version(header).as_deref(), Some("13.0"));
        assert_eq!(parse_cuda_version("no header"), None);
    }

    #[test]
    fn requirements_pin_every_wheel_and_name_exactly_the_preloaded_packages() {
        let text = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/onnxruntime-gpu.requirements"),
        )
        .unwrap();
        let mut names = Vec::new();
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (spec, hash) = line
                .split_once(" --hash=sha256:")
                .unwrap_or_else(|| panic!("not hash-pinned: {line}"));
            assert!(
                hash.len() == 64 && hash.chars().all(|c| c.is_ascii_hexdigit()),
                "bad sha256 in {line}"
            );
            let (name, version) = spec
                .split_once("==")
                .unwrap_or_else(|| panic!("not an exact version: {line}"));
            assert!(!version.is_empty() && !version.contains(['*', ' ', ',']));
            names.push(name.to_string());
        }
        let ort = names.iter().filter(|n| *n == "onnxruntime-gpu").count();
        assert_eq!(ort, 1, "exactly one onnxruntime-gpu line");
        assert!(text.contains(&format!("onnxruntime-gpu=={ORT_GPU_VERSION} ")));
        let mut cuda: Vec<&str> = names
            .iter()
            .map(String::as_str)
            .filter(|n| *n != "onnxruntime-gpu")
            .collect();
        cuda.sort();
        let mut want: Vec<&str> = CUDA_PACKAGES.iter().map(|(p, _)| *p).collect();
        want.sort();
        assert_eq!(cuda, want);
    }
}
