//! `crosscam doctor`: checks that this machine can run crosscam, and says how to fix what is not.
//!
//! Checks: GStreamer version and every element the camera pipelines (and the decoders crosscam's
//! media need) use; the ONNX Runtime library (path, version, CUDA); each model in the manifest
//! (file, checksum, loads, one inference with the manifest's shapes); GPU visibility; the data
//! directory. A check is either required (its failure makes doctor exit non-zero) or informational.

use std::path::Path;

use serde::Serialize;

use crate::config::Config;
use crate::models::{Manifest, smoke_run};
use crate::runtime::{self, SessionOptions};

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
    checks.extend(runtime_and_model_checks(cfg));
    checks.push(check(
        "gpu",
        false,
        Ok(match runtime::gpu_visible() {
            Some(v) => format!("NVIDIA driver visible: {v}"),
            None => "no NVIDIA GPU visible; inference runs on the CPU".into(),
        }),
    ));
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
    checks
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
