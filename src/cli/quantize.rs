//! `crosscam quantize`: static int8 (QDQ) quantisation of a model, calibrated on site data,
//! checked against the float model, registered in a site manifest.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;
use serde::Serialize;

use crate::quantize::{self, ActType, CalibSource, Method, QdqOptions, QuantizeOptions, Target};

/// Exit status when the check finds the int8 model past the tolerances.
pub const EXIT_CHECK_FAILED: u8 = 3;

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("calibration").required(true).args(["images", "dataset", "video", "store"])))]
pub struct QuantizeArgs {
    /// The float model: an ONNX file or a manifest name (e.g. crosscam-resnet18-vtest,
    /// nanodet-416). Weights in external data (`model.onnx.data`) are read too.
    #[arg(long)]
    pub model: String,
    /// Where to write the int8 model (never the input; written whole or not at all).
    #[arg(long)]
    pub out: PathBuf,
    /// Calibrate on the images in this folder (person crops for an embedder, whole frames for a
    /// detector).
    #[arg(long)]
    pub images: Option<PathBuf>,
    /// Calibrate on a re-id dataset's train split (embedders; the check uses query + gallery).
    #[arg(long)]
    pub dataset: Option<PathBuf>,
    /// Calibrate on frames of a video (detector), or on the people the shipped detector finds
    /// in it (embedder).
    #[arg(long)]
    pub video: Option<PathBuf>,
    /// Calibrate on the person crops stored by a daemon (its data directory).
    #[arg(long, value_name = "DATA_DIR")]
    pub store: Option<PathBuf>,
    /// How activation ranges are chosen from the calibration data.
    #[arg(long, value_enum, default_value_t = Method::Percentile)]
    pub method: Method,
    /// Percentile of |x| kept by --method percentile.
    #[arg(long, default_value_t = 99.999)]
    pub percentile: f64,
    /// Calibration samples: crops (embedder, default 256) or frames (detector, default 48).
    #[arg(long)]
    pub samples: Option<usize>,
    /// Video frames per second sampled for calibration and for the detector check.
    #[arg(long, default_value_t = 2)]
    pub fps: u32,
    /// Activation type: uint8 (what ONNX Runtime's x86 kernels prefer) or int8.
    #[arg(long, value_enum, default_value_t = ActType::Uint8)]
    pub activations: ActType,
    /// Weights in 7 bits: avoids 16-bit overflow in the int8 kernels of CPUs without VNNI
    /// (costs a little precision elsewhere).
    #[arg(long)]
    pub reduce_range: bool,
    /// Op types to keep in float (comma-separated, e.g. Add,Concat).
    #[arg(long, value_delimiter = ',')]
    pub float_ops: Vec<String>,
    /// Compare int8 with float on held-out data: a re-id dataset (embedder: rank-1, mAP on
    /// query/gallery) or a video / folder of frames (detector: box recall and precision).
    #[arg(long, value_name = "DATASET_OR_VIDEO")]
    pub check: Option<PathBuf>,
    /// Refuse (exit 3, not registered) when the int8 embedder loses more mAP points than this.
    #[arg(long, default_value_t = 1.0)]
    pub max_map_drop: f64,
    /// Refuse (exit 3, not registered) when the int8 detector loses more box-recall points.
    #[arg(long, default_value_t = 2.0)]
    pub max_recall_drop: f64,
    /// Held-out frames of the detector check.
    #[arg(long, default_value_t = 60)]
    pub check_frames: usize,
    /// The manifest that names --model, and (with --name) receives the int8 entry. Default for
    /// reading: the shipped manifest.
    #[arg(long)]
    pub manifest: Option<PathBuf>,
    /// Register the int8 model in the site manifest DATA/site-models/manifest.toml.
    #[arg(long, alias = "data")]
    pub data_dir: Option<PathBuf>,
    /// Name of the manifest entry (default: the --out file's stem). Registering needs
    /// --manifest or --data-dir.
    #[arg(long)]
    pub name: Option<String>,
    /// Take the pre-processing (role, input size, normalisation) of this manifest model, for a
    /// file the manifest does not list (e.g. a re-exported detector).
    #[arg(long)]
    pub like: Option<String>,
    /// Replace a manifest entry of the same name.
    #[arg(long)]
    pub replace: bool,
    /// Print one JSON object (quantisation report, check, written file, manifest entry).
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct Output {
    out: String,
    sha256: String,
    bytes: u64,
    #[serde(flatten)]
    report: quantize::QuantizeReport,
    check: Option<quantize::check::CheckReport>,
    registered: Option<Registered>,
    passed: bool,
}

#[derive(Serialize)]
struct Registered {
    manifest: String,
    name: String,
}

pub fn run(a: QuantizeArgs) -> Result<ExitCode> {
    let source = match (&a.images, &a.dataset, &a.video, &a.store) {
        (Some(p), ..) => CalibSource::Images(p.clone()),
        (_, Some(p), ..) => CalibSource::Dataset(p.clone()),
        (_, _, Some(p), _) => CalibSource::Video(p.clone()),
        (.., Some(p)) => CalibSource::Store(p.clone()),
        _ => anyhow::bail!("give one of --images, --dataset, --video, --store"),
    };
    anyhow::ensure!(
        a.percentile > 50.0 && a.percentile <= 100.0,
        "--percentile must lie in (50, 100], found {}",
        a.percentile
    );
    anyhow::ensure!(
        a.max_map_drop >= 0.0 && a.max_recall_drop >= 0.0,
        "--max-map-drop and --max-recall-drop must not be negative"
    );
    let manifest = match &a.manifest {
        Some(m) if m.exists() => crate::models::Manifest::load(m)?,
        _ => crate::models::Manifest::bundled()?,
    };
    let target = Target::resolve(&a.model, &manifest, a.like.as_deref())?;
    quantize::check_out_path(&target.path, &a.out)?;
    let register_to = match (&a.manifest, &a.data_dir) {
        (_, Some(d)) => Some(d.join("site-models").join("manifest.toml")),
        (Some(m), None) => Some(m.clone()),
        (None, None) => None,
    };
    if let Some(m) = &register_to {
        let shipped = crate::paths::project_root().join("models/manifest.toml");
        anyhow::ensure!(
            std::fs::canonicalize(m).ok() != std::fs::canonicalize(&shipped).ok(),
            "{} is the shipped manifest, which crosscam never writes; register in the site's own with --data-dir DATA (or --manifest SITE_MANIFEST)",
            m.display()
        );
    }
    let name = a.name.clone().unwrap_or_else(|| {
        a.out
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "model-int8".into())
    });
    let rt = crate::runtime::init(&crate::config::RuntimeSettings::default())?;
    let opts = QuantizeOptions {
        method: a.method,
        percentile: a.percentile,
        samples: a.samples.unwrap_or(match target.role {
            crate::models::Role::Embedder => 256,
            crate::models::Role::Detector => 48,
        }),
        fps: a.fps.max(1),
        width: 640,
        qdq: QdqOptions {
            activations: a.activations,
            reduce_range: a.reduce_range,
            float_ops: a.float_ops.iter().cloned().collect(),
        },
        quiet: a.json,
    };
    // a model that cannot be quantised is refused before any data is read
    quantize::prepare(&target, &opts.qdq)?;
    let data = quantize::calibration_data(&target, &source, &opts, rt)?;
    let (mut q, report) = quantize::quantize(&target, &data, &opts, rt)?;
    let check = match &a.check {
        None => None,
        Some(c) => Some(quantize::check::check(
            &target,
            &q,
            &data,
            &source,
            c,
            &quantize::check::CheckOptions {
                max_map_drop: a.max_map_drop,
                max_recall_drop: a.max_recall_drop,
                frames: a.check_frames.max(1),
                fps: opts.fps,
                width: opts.width,
                quiet: a.json,
                ..Default::default()
            },
            rt,
        )?),
    };
    let passed = check.as_ref().is_none_or(|c| c.passed);
    if let Some(c) = &check {
        q.set_metadata(
            quantize::META_CHECK,
            &format!(
                "{}: {}",
                if c.passed { "passed" } else { "FAILED" },
                check_line(c)
            ),
        );
    }
    q.save(&a.out)
        .with_context(|| format!("cannot write {}", a.out.display()))?;
    let sha256 = crate::models::sha256_file(&a.out)?;
    let bytes = std::fs::metadata(&a.out).map(|m| m.len()).unwrap_or(0);
    let mut registered = None;
    if passed && let Some(m) = &register_to {
        let recipe = format!(
            "crosscam quantize --model {} --out {} ({})",
            a.model,
            a.out.display(),
            report.calibration
        );
        quantize::register(m, &name, &a.out, &target, a.replace, &recipe)?;
        registered = Some(Registered {
            manifest: m.display().to_string(),
            name: name.clone(),
        });
    }
    let out = Output {
        out: a.out.display().to_string(),
        sha256,
        bytes,
        report,
        check,
        registered,
        passed,
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print!("{}", render(&out, register_to.is_some()));
    }
    Ok(if passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_CHECK_FAILED)
    })
}

fn check_line(c: &quantize::check::CheckReport) -> String {
    match (&c.float, &c.int8, c.box_recall) {
        (Some(f), Some(i), _) => format!(
            "rank-1 {:.1} % → {:.1} %, mAP {:.1} % → {:.1} % ({:+.2} points), mean cosine {:.4}",
            f.rank1 * 100.0,
            i.rank1 * 100.0,
            f.map * 100.0,
            i.map * 100.0,
            -c.map_drop.unwrap_or(0.0),
            c.mean_cosine
        ),
        (_, _, Some(r)) => format!(
            "box recall {:.1} %, precision {:.1} % against the float boxes (score ≥ {}), mean output cosine {:.4}",
            r,
            c.box_precision.unwrap_or(0.0),
            c.score.unwrap_or(0.0),
            c.mean_cosine
        ),
        _ => String::new(),
    }
}

fn render(o: &Output, register: bool) -> String {
    let r = &o.report;
    let mut s = format!(
        "{} → {} ({:.1} MB, sha256 {})\n  calibration: {} ({}{}), {:.1} s\n  quantised: {} nodes ({}), {} Relu/Clip absorbed, {} Pad folded; activations {:?}{}\n",
        r.model,
        o.out,
        o.bytes as f64 / 1e6,
        o.sha256,
        r.calibration,
        r.method.as_str(),
        r.percentile.map(|p| format!(" {p}")).unwrap_or_default(),
        r.calibration_seconds,
        r.quantized_nodes,
        r.quantized_ops
            .iter()
            .map(|(k, v)| format!("{k}×{v}"))
            .collect::<Vec<_>>()
            .join(" "),
        r.removed_activations,
        r.folded_pads,
        r.activations,
        if r.reduce_range {
            ", 7-bit weights"
        } else {
            ""
        }
    );
    if r.float_nodes.is_empty() {
        s.push_str("  left in float: none\n");
    } else {
        s.push_str(&format!("  left in float: {} nodes\n", r.float_nodes.len()));
        for f in &r.float_nodes {
            s.push_str(&format!("    {} ({}): {}\n", f.node, f.op, f.reason));
        }
    }
    if let Some(c) = &o.check {
        s.push_str(&format!(
            "  check on {}\n    held out: {}\n    {}\n    {} ({})\n",
            c.data,
            c.held_out,
            check_line(c),
            if c.passed { "passed" } else { "FAILED" },
            c.tolerance
        ));
        for w in &c.warnings {
            s.push_str(&format!("    warning: {w}\n"));
        }
    } else {
        s.push_str(
            "  not checked: give --check DATASET (embedder) or --check VIDEO (detector) to compare with the float model\n",
        );
    }
    match (&o.registered, o.passed, register) {
        (Some(reg), _, _) => s.push_str(&format!(
            "registered as {:?} in {}\nnext: in the site config set\n  [models]\n  manifest = {:?}\n  {} = {:?}\n",
            reg.name,
            reg.manifest,
            reg.manifest,
            match r.role {
                crate::models::Role::Embedder => "embedder",
                crate::models::Role::Detector => "detector",
            },
            reg.name
        )),
        (None, false, _) => s.push_str(
            "NOT registered: the int8 model is past the tolerance (the file is written for inspection, marked FAILED in its metadata); try --method entropy or minmax, more --samples, --reduce-range, or --float-ops for sensitive layers\n",
        ),
        (None, true, false) => s.push_str(
            "not registered: give --data-dir DATA (or --manifest FILE) and --name NAME to add it to a site manifest\n",
        ),
        (None, true, true) => {}
    }
    s
}
