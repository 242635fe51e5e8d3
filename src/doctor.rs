//! `crosscam doctor`: checks that this machine can run crosscam, and says how to fix what is not.
//!
//! Checks: GStreamer version and every element the camera pipelines (and the decoders crosscam's
//! media need) use; the ONNX Runtime library (path, version, CUDA); each model in the manifest
//! (file, checksum, loads, one inference with the manifest's shapes); the NVIDIA card (name,
//! driver, CUDA version from `nvidia-smi`), the GPU ONNX Runtime and CUDA/cuDNN libraries in
//! `.deps/`, which library was chosen and why, which execution providers it has and whether CUDA
//! starts; NVDEC (GStreamer's `nvh264dec`/`nvh265dec`); the data directory. A check is either required (its failure makes doctor exit non-zero) or informational.

use std::path::Path;

use serde::Serialize;

use crate::config::Config;
use crate::config::DevicePref;
use crate::models::{Manifest, smoke_run};
use crate::runtime::{self, SessionOptions, gpu};

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    pub detail: String,
    /// False for informational checks (e.g. no GPU): they never fail the run.
    pub required: bool,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub ok: bool,
    pub checks: Vec<Check>,
}

/// Elements crosscam needs besides those its camera pipelines create by name: decoders that `decodebin` picks
/// for the bundled media, and what the RTSP tests use to serve them.
const EXTRA_ELEMENTS: &[(&str, &str)] = &[
    (
        "avdec_h264",
        "H.264 decoding (RTSP cameras, vtest-h264.mp4): install gstreamer1.0-libav",
    ),
    (
        "avdec_msmpeg4",
        "MS-MPEG4v3 decoding (vtest.avi): install gstreamer1.0-libav",
    ),
    (
        "h264parse",
        "H.264 parsing: install gstreamer1.0-plugins-bad",
    ),
    (
        "rtph264depay",
        "RTSP H.264 depayloading: install gstreamer1.0-plugins-good",
    ),
    (
        "x264enc",
        "H.264 encoding for test cameras: install gstreamer1.0-plugins-ugly",
    ),
    ("qtdemux", "MP4 demuxing: install gstreamer1.0-plugins-good"),
    (
        "avidemux",
        "AVI demuxing: install gstreamer1.0-plugins-good",
    ),
];

fn check(name: &str, required: bool, r: Result<String, String>) -> Check {
    match r {
        Ok(detail) => Check {
            name: name.into(),
            ok: true,
            detail,
            required,
        },
        Err(detail) => Check {
            name: name.into(),
            ok: false,
            detail,
            required,
        },
    }
}

pub fn run(cfg: &Config) -> Report {
    let mut checks = Vec::new();
    checks.extend(gstreamer_checks());
    let card = gpu::card_info();
    checks.push(card_check(&card, cfg.runtime.device));
    checks.push(gpu_libraries_check(card.is_ok()));
    checks.extend(runtime_and_model_checks(cfg));
    checks.push(check(
        "data directory",
        true,
        data_dir_writable(&cfg.server.data_dir),
    ));
    let ok = checks.iter().all(|c| c.ok || !c.required);
    Report { ok, checks }
}

fn gstreamer_checks() -> Vec<Check> {
    let mut checks = Vec::new();
    if let Err(e) = gstreamer::init() {
        checks.push(check(
            "gstreamer",
            true,
            Err(format!(
                "cannot initialise GStreamer: {e}; run `make setup`"
            )),
        ));
        return checks;
    }
    let (major, minor, micro, _) = gstreamer::version();
    checks.push(check(
        "gstreamer",
        true,
        if (major, minor) >= (1, 22) {
            Ok(format!("GStreamer {major}.{minor}.{micro}"))
        } else {
            Err(format!("GStreamer {major}.{minor}.{micro} is older than 1.22; install Debian 12's packages (`make setup`)"))
        },
    ));
    let mut needed: Vec<(String, String)> = Vec::new();
    for kind in crate::ingest::pipeline::KINDS {
        for e in crate::ingest::pipeline::required_elements(kind) {
            if !needed.iter().any(|(n, _)| n == e) {
                needed.push((e.to_string(), format!("used by {kind} cameras")));
            }
        }
    }
    for (e, why) in EXTRA_ELEMENTS {
        if !needed.iter().any(|(n, _)| n == e) {
            needed.push((e.to_string(), why.to_string()));
        }
    }
    let missing: Vec<String> = needed
        .iter()
        .filter(|(e, _)| gstreamer::ElementFactory::find(e).is_none())
        .map(|(e, why)| format!("{e} ({why})"))
        .collect();
    checks.push(check(
        "gstreamer elements",
        true,
        if missing.is_empty() {
            Ok(format!("{} elements present", needed.len()))
        } else {
            Err(format!("missing: {}; run `make setup`", missing.join(", ")))
        },
    ));
    checks.push(check("nvdec", false, Ok(nvdec_detail())));
    checks
}

/// Whether GStreamer has NVIDIA's hardware decoders and whether `decodebin` would pick them.
fn nvdec_detail() -> String {
    use gstreamer::glib::translate::IntoGlib;
    use gstreamer::prelude::PluginFeatureExtManual;
    let rank = |e: &str| gstreamer::ElementFactory::find(e).map(|f| f.rank().into_glib());
    let mut parts = Vec::new();
    let mut absent = Vec::new();
    for (hw, sw) in [("nvh264dec", "avdec_h264"), ("nvh265dec", "avdec_h265")] {
        match rank(hw) {
            None => absent.push(hw),
            Some(r) => {
                let sw_rank = rank(sw).unwrap_or(0);
                parts.push(if r > sw_rank {
                    format!("{hw} present (rank {r} > {sw} {sw_rank}: decodebin decodes on the GPU)")
                } else {
                    format!(
                        "{hw} present but ranked {r} ≤ {sw} {sw_rank}: decodebin keeps the CPU decoder (GST_PLUGIN_FEATURE_RANK={hw}:MAX prefers it)"
                    )
                });
            }
        }
    }
    if !absent.is_empty() {
        let plugin = gstreamer::Registry::get().find_plugin("nvcodec").is_some();
        parts.push(format!(
            "{} not available ({}); decoding runs on the CPU (avdec_*)",
            absent.join(", "),
            if plugin {
                "the nvcodec plugin is installed but registered no decoders: it does so only where the NVIDIA driver and a card answer"
            } else {
                "the nvcodec plugin is not installed: install gstreamer1.0-plugins-bad"
            }
        ));
    }
    parts.join("; ")
}

/// The NVIDIA card as `nvidia-smi` reports it. Informational, except that `device = "cuda"`
/// without a card fails.
fn card_check(card: &Result<gpu::CardInfo, String>, device: DevicePref) -> Check {
    match card {
        Ok(info) => check(
            "gpu",
            false,
            Ok(format!(
                "{}; CUDA {} (the driver's highest)",
                info.cards
                    .iter()
                    .map(|(name, driver)| format!("{name}, driver {driver}"))
                    .collect::<Vec<_>>()
                    .join("; "),
                info.cuda_version.as_deref().unwrap_or("version not shown")
            )),
        ),
        Err(why) if device == DevicePref::Cuda => check(
            "gpu",
            true,
            Err(format!("{why}; runtime.device = \"cuda\" needs one")),
        ),
        Err(why) => check(
            "gpu",
            false,
            Ok(format!("{why}; inference runs on the CPU")),
        ),
    }
}

/// The GPU ONNX Runtime and CUDA/cuDNN libraries `make setup` installs on a machine with a card.
/// A warning when a card is there but they are not, or when they are incomplete.
fn gpu_libraries_check(card: bool) -> Check {
    let lib = gpu::gpu_library_path();
    let dir = gpu::cuda_dir();
    let all: Vec<&str> = gpu::cuda_libraries().collect();
    let present: Vec<&str> = all
        .iter()
        .copied()
        .filter(|l| dir.join(l).is_file())
        .collect();
    let missing: Vec<&str> = all
        .iter()
        .copied()
        .filter(|l| !present.contains(l))
        .collect();
    let ort = if lib.is_file() {
        let mb = std::fs::metadata(&lib).map(|m| m.len()).unwrap_or(0) as f64 / 1e6;
        format!("GPU ONNX Runtime {} ({mb:.1} MB)", lib.display())
    } else {
        format!("GPU ONNX Runtime not installed ({} missing)", lib.display())
    };
    let cuda = if missing.is_empty() {
        format!(
            "CUDA/cuDNN: all {} libraries in {} ({})",
            all.len(),
            dir.display(),
            all.join(", ")
        )
    } else if present.is_empty() {
        format!("CUDA/cuDNN: none in {}", dir.display())
    } else {
        format!(
            "CUDA/cuDNN: {} of {} in {}, missing {}",
            present.len(),
            all.len(),
            dir.display(),
            missing.join(", ")
        )
    };
    let complete = lib.is_file() && missing.is_empty();
    let none = !lib.is_file() && present.is_empty();
    let detail = format!("{ort}; {cuda}");
    check(
        "gpu libraries",
        false,
        if complete || (none && !card) {
            Ok(detail)
        } else if none {
            Err(format!(
                "{detail}; this machine has a card: run `make setup` to install them"
            ))
        } else {
            Err(format!("{detail}; incomplete: run `make setup` again"))
        },
    )
}

fn runtime_and_model_checks(cfg: &Config) -> Vec<Check> {
    let mut checks = Vec::new();
    let rt = match runtime::init(&cfg.runtime) {
        Ok(rt) => {
            let minor = rt
                .version
                .strip_prefix("1.")
                .and_then(|v| v.split('.').next())
                .and_then(|m| m.parse::<u32>().ok());
            let ok = minor.is_some_and(|m| m >= 24);
            checks.push(check(
                "onnxruntime",
                true,
                if ok {
                    Ok(format!(
                        "{} (version {}, CUDA provider {})",
                        rt.library.display(),
                        rt.version,
                        if rt.cuda_in_library {
                            "available"
                        } else {
                            "not in this build"
                        }
                    ))
                } else {
                    Err(format!(
                        "{} is version {}, crosscam needs ≥ 1.24; run `make setup`",
                        rt.library.display(),
                        rt.version
                    ))
                },
            ));
            checks.push(providers_check(rt, cfg.runtime.device));
            Some(rt)
        }
        Err(e) => {
            checks.push(check("onnxruntime", true, Err(e.to_string())));
            None
        }
    };
    let manifest = match Manifest::load(&cfg.models.manifest) {
        Ok(m) => m,
        Err(e) => {
            checks.push(check("model manifest", true, Err(e.to_string())));
            return checks;
        }
    };
    for m in &manifest.models {
        let name = format!("model {}", m.name);
        let r = (|| -> Result<String, String> {
            manifest.verify_file(m).map_err(|e| e.to_string())?;
            let rt = rt.ok_or("not loaded: ONNX Runtime is unavailable")?;
            let mut loaded = manifest
                .open(&m.name, rt, SessionOptions::default())
                .map_err(|e| e.to_string())?;
            let took = smoke_run(&mut loaded).map_err(|e| e.to_string())?;
            Ok(format!(
                "{} ({:?}, checksum ok, loads on {}, one run {:.0} ms)",
                loaded
                    .path
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy(),
                m.role,
                loaded.device,
                took.as_secs_f64() * 1e3
            ))
        })();
        checks.push(check(&name, true, r));
    }
    checks
}

/// Which library was chosen and why, its execution providers, and whether CUDA starts.
fn providers_check(rt: &runtime::Runtime, device: DevicePref) -> Check {
    let mut detail = format!(
        "{}; providers in this library: {}",
        rt.choice_reason,
        rt.providers_in_library().join(", ")
    );
    if !rt.cuda_preloaded.is_empty() {
        let (cudnn, cudart) = gpu::library_versions(&gpu::cuda_dir());
        detail.push_str(&format!(
            "; {} CUDA/cuDNN libraries preloaded (CUDA runtime {}, cuDNN {})",
            rt.cuda_preloaded.len(),
            cudart.as_deref().unwrap_or("version unknown"),
            cudnn.as_deref().unwrap_or("version unknown")
        ));
    }
    if !rt.cuda_in_library || device == DevicePref::Cpu {
        return check("execution providers", false, Ok(detail));
    }
    match rt.try_cuda() {
        Ok(()) => check(
            "execution providers",
            false,
            Ok(format!("{detail}; CUDA starts")),
        ),
        Err(e) => check(
            "execution providers",
            device == DevicePref::Cuda,
            Err(format!("{detail}; CUDA does not start: {e}")),
        ),
    }
}

fn data_dir_writable(dir: &Path) -> Result<String, String> {
    std::fs::create_dir_all(dir).map_err(|e| {
        format!(
            "cannot create {}: {e}; set server.data_dir to a writable place",
            dir.display()
        )
    })?;
    let probe = dir.join(".crosscam-doctor-probe");
    std::fs::write(&probe, b"ok").map_err(|e| {
        format!(
            "cannot write in {}: {e}; fix its permissions or set server.data_dir",
            dir.display()
        )
    })?;
    let _ = std::fs::remove_file(&probe);
    Ok(format!("{} is writable", dir.display()))
}

/// The report as a table for people.
pub fn render(r: &Report) -> String {
    let w = r.checks.iter().map(|c| c.name.len()).max().unwrap_or(10);
    let mut s = String::new();
    for c in &r.checks {
        let mark = match (c.ok, c.required) {
            (true, _) => "ok  ",
            (false, true) => "FAIL",
            (false, false) => "warn",
        };
        s.push_str(&format!("{mark}  {:<w$}  {}\n", c.name, c.detail));
    }
    s.push_str(if r.ok {
        "\nall required checks passed\n"
    } else {
        "\nsome required checks failed (see FAIL lines for the fix)\n"
    });
    s
}
