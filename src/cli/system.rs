//! `crosscam doctor`, `crosscam model …`, `crosscam demo`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};

use super::ConfigArg;

#[derive(Args, Debug)]
pub struct DoctorArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Print one JSON object `{ok, checks: [{name, ok, detail, required}]}` instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum ModelCommand {
    /// Input/output tensors, opset, op counts, parameters and MACs of an ONNX model.
    Info(ModelInfoArgs),
    /// Write a freshly initialised torchvision-style ResNet as ONNX (a starting point for
    /// training, a smaller comparator network, or a model to benchmark and prune).
    Build(ModelBuildArgs),
    /// Add an ONNX re-id embedder trained elsewhere (torchreid, fast-reid, BoxMOT exports) to
    /// the site's own manifest: tensors found, normalisation inferred (torchreid/fast-reid
    /// defaults: RGB, ImageNet mean/std, 256x128), sha256 and MACs computed, a test run in ONNX
    /// Runtime, optionally the linking values calibrated on a dataset.
    Add(ModelAddArgs),
}

#[derive(Args, Debug)]
pub struct ModelAddArgs {
    /// The ONNX file.
    pub file: PathBuf,
    /// `embedder` (crops → embeddings) or `detector`.
    #[arg(long, value_parser = ["embedder", "detector"])]
    pub role: String,
    /// The name `[models] embedder` will use (default: the file's name).
    #[arg(long)]
    pub name: Option<String>,
    /// The site manifest to add to; created (extending the shipped one) when missing. Default:
    /// DATA/site-models/manifest.toml.
    #[arg(long)]
    pub manifest: Option<PathBuf>,
    #[command(flatten)]
    pub config: super::ConfigArg,
    /// Data directory (default: the config's `server.data_dir`).
    #[arg(long, alias = "data")]
    pub data_dir: Option<PathBuf>,
    /// Channel order the model was trained on: RGB (torchreid, fast-reid) or BGR.
    #[arg(long)]
    pub color: Option<String>,
    /// Per-channel mean of pixels scaled to [0, 1] (default 0.485,0.456,0.406).
    #[arg(long, value_parser = crate::models::add::parse_triple)]
    pub mean: Option<[f32; 3]>,
    /// Per-channel standard deviation (default 0.229,0.224,0.225).
    #[arg(long, value_parser = crate::models::add::parse_triple)]
    pub std: Option<[f32; 3]>,
    /// Licence of the weights (recorded in the manifest).
    #[arg(long)]
    pub licence: Option<String>,
    /// Where the weights come from (recorded in the manifest).
    #[arg(long)]
    pub source: Option<String>,
    /// Measure the linking values (threshold, margin, merge_similarity) on this dataset, as
    /// `crosscam eval` does.
    #[arg(long)]
    pub calibrate: Option<PathBuf>,
    /// Replace a model of the same name in the site manifest.
    #[arg(long)]
    pub replace: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct ModelInfoArgs {
    /// The ONNX file.
    #[arg(long)]
    pub model: PathBuf,
    /// Input size to count MACs for, CxHxW (default: the model's declared size; where that is
    /// dynamic, the nominal size of the bundled manifest's entry for the same file; batch is 1).
    #[arg(long)]
    pub input: Option<String>,
    /// Print JSON (`macs`, `params`, `inputs`, `outputs`, …).
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct ModelBuildArgs {
    /// resnet18, resnet34 or resnet50.
    #[arg(long)]
    pub arch: String,
    /// Re-id layout: 256x128 input, last stride 1.
    #[arg(long)]
    pub reid: bool,
    /// Input size CxHxW (overrides the default 224x224, or 256x128 with --reid).
    #[arg(long)]
    pub input: Option<String>,
    /// `features` (pooled), `bnneck` (pooled + BatchNorm) or `classifier:N` (N classes).
    #[arg(long, default_value = "bnneck")]
    pub head: String,
    /// Multiply every width by this (rounded to multiples of 8).
    #[arg(long, default_value_t = 1.0)]
    pub width: f64,
    /// Fold BatchNorm into the conv biases (as PyTorch's exporter does in eval mode).
    #[arg(long)]
    pub fuse_bn: bool,
    /// Random BatchNorm statistics instead of the identity (for tests and benchmarks).
    #[arg(long)]
    pub random_stats: bool,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Write the graph as this PyTorch exporter would: `legacy` (torch.onnx, opset 17,
    /// GlobalAveragePool + Flatten, weights inside the file) or `dynamo` (torch.export-based,
    /// opset 18, ReduceMean over axes [-2, -1] + Reshape to a constant [-1, C], weights in
    /// `<out>.data` next to the model).
    #[arg(long, default_value = "legacy", value_parser = ["legacy", "dynamo"])]
    pub exporter: String,
    /// Where to write the model.
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Args, Debug)]
pub struct DemoArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Stop after this many seconds (default: run until Ctrl-C).
    #[arg(long)]
    pub seconds: Option<f64>,
    /// Keep the people, crops and jobs of earlier demo runs (default: every run starts clean).
    #[arg(long)]
    pub keep: bool,
}

/// `crosscam doctor`.
pub fn doctor(a: DoctorArgs) -> Result<ExitCode> {
    let cfg = a.config.load()?;
    let report = crate::doctor::run(&cfg);
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", crate::doctor::render(&report));
    }
    Ok(if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `crosscam model …`.
pub fn model(cmd: ModelCommand) -> Result<ExitCode> {
    match cmd {
        ModelCommand::Info(a) => model_info(a),
        ModelCommand::Build(a) => run_model_build(a),
        ModelCommand::Add(a) => model_add(a),
    }
}

fn model_add(a: ModelAddArgs) -> Result<ExitCode> {
    let manifest = match &a.manifest {
        Some(m) => m.clone(),
        None => {
            let data = match (&a.data_dir, &a.config.config) {
                (Some(d), _) => d.clone(),
                (None, Some(c)) => super::user::data_dir_of_config(c)?,
                (None, None) => crate::config::ServerSettings::default().data_dir,
            };
            data.join("site-models").join("manifest.toml")
        }
    };
    let role = if a.role == "detector" {
        crate::models::Role::Detector
    } else {
        crate::models::Role::Embedder
    };
    let rt = crate::runtime::init(&a.config.load()?.runtime)?;
    let added = crate::models::add::add(
        &crate::models::add::AddOptions {
            file: a.file.clone(),
            role,
            name: a.name.clone(),
            manifest,
            color: a.color.clone(),
            mean: a.mean,
            std: a.std,
            licence: a.licence.clone(),
            source: a.source.clone(),
            calibrate: a.calibrate.clone(),
            replace: a.replace,
        },
        rt,
    )?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&added)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "added {:?} to {}{}\n  input {:?} ({}), output {} dimensions\n  {:.2} GMACs, {:.1} M parameters, sha256 {}",
        added.name,
        added.manifest.display(),
        if added.created_manifest {
            " (new; it extends the shipped manifest)"
        } else {
            ""
        },
        added.input,
        added.normalisation_from,
        added.output_dim,
        added.macs as f64 / 1e9,
        added.params as f64 / 1e6,
        added.sha256
    );
    match &added.linking {
        Some(l) => println!(
            "  linking: threshold {:.2}, margin {:.2}, merge_similarity {:.2} ({})",
            l.threshold, l.margin, l.merge_similarity, l.measured
        ),
        None => println!(
            "  linking: not calibrated — the defaults apply until you run again with --calibrate DATASET --replace"
        ),
    }
    println!(
        "next: in the site config set\n  [models]\n  manifest = {:?}\n  embedder = {:?}\nthen `crosscam eval --model {} --dataset …` compares it with the current embedder",
        added.manifest.display().to_string(),
        added.name,
        added.file.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn model_info(a: ModelInfoArgs) -> Result<ExitCode> {
    let input = a
        .input
        .as_deref()
        .map(crate::onnx::info::parse_input_size)
        .transpose()
        .map_err(anyhow::Error::msg)?;
    let info = crate::onnx::info::model_info(&a.model, input.as_deref())
        .with_context(|| format!("cannot describe {}", a.model.display()))?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&info)?);
    } else {
        print!("{}", crate::onnx::info::render(&info));
    }
    Ok(ExitCode::SUCCESS)
}

/// `crosscam demo`.
pub fn demo(a: DemoArgs) -> Result<ExitCode> {
    let cfg = a.config.load_or("config/demo.toml")?;
    // the config's cameras at rtsp://127.0.0.1:PORT/NAME are served here, each starting 30 s
    // further into the clip than the one before
    let mut port = None;
    let mut virtual_cams = Vec::new();
    for (i, c) in cfg.cameras.iter().enumerate() {
        if let Some(rest) = c.url.strip_prefix("rtsp://127.0.0.1:")
            && let Some((p, name)) = rest.split_once('/')
            && let Ok(p) = p.parse::<u16>()
        {
            anyhow::ensure!(
                port.is_none_or(|q| q == p),
                "the demo's virtual cameras share one port; cameras[{i}] uses {p}"
            );
            port = Some(p);
            virtual_cams.push((name.to_string(), 30.0 * i as f64));
        }
    }
    if !a.keep {
        let removed = crate::demo::start_clean(&cfg.server.data_dir)?;
        if removed > 0 {
            println!(
                "demo: starting clean (the {removed} people of the last run in {} are gone; --keep keeps them)",
                cfg.server.data_dir.display()
            );
        }
    }
    let _cams = match port {
        Some(p) => Some(crate::virtual_cameras::VirtualCameras::start(
            &crate::paths::media("vtest.avi"),
            &cfg.server.data_dir.join("virtual-cameras"),
            p,
            &virtual_cams,
        )?),
        None => None,
    };
    println!("{}", crate::demo::DEMO_NOTE);
    let banner = if cfg.api.enabled {
        Some(demo_users(&cfg)?)
    } else {
        None
    };
    crate::demo::run(
        &cfg,
        crate::demo::RunOptions {
            events: None,
            seconds: a.seconds,
            narrate: true,
            banner,
            role: crate::cluster::Role::Single,
        },
    )?;
    Ok(ExitCode::SUCCESS)
}

/// The demo's logins: `demo` (admin) and `viewer` (operator), with a new password each start
/// (or CROSSCAM_DEMO_PASSWORD). Returns the lines to print.
fn demo_users(cfg: &crate::config::Config) -> Result<String> {
    use crate::api::auth::{AuthDb, AuthError, Role};
    let pw = match std::env::var("CROSSCAM_DEMO_PASSWORD") {
        Ok(p) => p,
        Err(_) => {
            use rand::Rng;
            let mut r = rand::rng();
            (0..12)
                .map(|_| {
                    let c = b"abcdefghjkmnpqrstuvwxyz23456789"[r.random_range(0..31)];
                    c as char
                })
                .collect()
        }
    };
    let db = AuthDb::open(&cfg.server.data_dir)?;
    for (name, role) in [("demo", Role::Admin), ("viewer", Role::Operator)] {
        match db.add_user(name, role, &pw) {
            Ok(()) => {}
            Err(AuthError::Exists(_)) => db.set_password(name, &pw)?,
            Err(e) => return Err(e.into()),
        }
    }
    let scheme = if cfg.api.tls_cert.is_some() {
        "https"
    } else {
        "http"
    };
    Ok(format!(
        "\n  open {scheme}://{}/ and sign in as  demo / {pw}  (admin)  or  viewer / {pw}  (operator)\n",
        cfg.api.listen
    ))
}

fn run_model_build(a: ModelBuildArgs) -> Result<ExitCode> {
    use crate::onnx::resnet::{Head, Init, ResNetSpec, Style, build};
    let mut spec = ResNetSpec::by_name(&a.arch)
        .with_context(|| format!("unknown --arch {:?} (resnet18, resnet34, resnet50)", a.arch))?;
    if a.reid {
        spec = spec.for_reid();
    }
    if let Some(i) = &a.input {
        let chw = crate::onnx::info::parse_input_size(i).map_err(anyhow::Error::msg)?;
        anyhow::ensure!(
            chw[0] == 3,
            "a ResNet takes 3 input channels, not {}",
            chw[0]
        );
        spec = spec.with_input(chw[1] as usize, chw[2] as usize);
    }
    anyhow::ensure!(
        a.width > 0.0 && a.width.is_finite(),
        "--width must be positive"
    );
    if a.width != 1.0 {
        spec = spec.scaled(a.width);
    }
    let head = match a.head.as_str() {
        "features" => Head::Features,
        "bnneck" => Head::BnNeck,
        h => match h.strip_prefix("classifier:").map(str::parse::<usize>) {
            Some(Ok(classes)) if classes > 0 => Head::Classifier { classes },
            _ => anyhow::bail!("--head must be features, bnneck or classifier:N, not {h:?}"),
        },
    };
    let init = if a.random_stats {
        Init::RandomStats
    } else {
        Init::Training
    };
    let dynamo = a.exporter == "dynamo";
    let style = if dynamo {
        Style {
            fuse_bn: a.fuse_bn,
            tail: crate::onnx::resnet::Tail::ReduceMeanReshapeConst,
            opset: 18,
            identity_weights: false,
        }
    } else {
        Style {
            fuse_bn: a.fuse_bn,
            ..Style::default()
        }
    };
    let model = build(&spec, head, style, init, a.seed);
    if dynamo {
        model.save_with_external_data(&a.out, 1024)
    } else {
        model.save(&a.out)
    }
    .with_context(|| format!("cannot write {}", a.out.display()))?;
    println!("written: {}", a.out.display());
    Ok(ExitCode::SUCCESS)
}

#[derive(Args, Debug)]
pub struct TimelineArgs {
    /// The server's data directory (holding crosscam.db; the config's `server.data_dir`).
    #[arg(long = "data-dir", alias = "data", value_name = "DATA_DIR")]
    pub data_dir: PathBuf,
    /// The SVG file to write.
    #[arg(long)]
    pub out: PathBuf,
    /// Only identities seen by at least this many cameras.
    #[arg(long, default_value_t = 1)]
    pub min_cameras: usize,
    /// At most this many identities (the earliest first); the number left out is printed.
    #[arg(long, alias = "limit", default_value_t = 60)]
    pub max_rows: usize,
    /// Every identity, however many (overrides --max-rows).
    #[arg(long)]
    pub all: bool,
}

/// `crosscam timeline`: the identity timeline of a data directory as a picture.
pub fn timeline(a: TimelineArgs) -> Result<ExitCode> {
    anyhow::ensure!(
        a.data_dir.join("crosscam.db").is_file(),
        "{} holds no crosscam.db: give the server's data directory (server.data_dir)",
        a.data_dir.display()
    );
    let store = crate::store::Store::open(&a.data_dir)?;
    let sightings = store.sightings()?;
    // colours by the cameras the store recorded (as the daemon's pictures and web UI do by the
    // cameras it runs); times in UTC
    let cams = store.cameras()?;
    let opts = crate::report::TimelineOptions {
        min_cameras: a.min_cameras,
        max_rows: if a.all { usize::MAX } else { a.max_rows },
        cameras: cams.iter().map(|c| c.id.clone()).collect(),
        names: cams.into_iter().map(|c| (c.id, c.name)).collect(),
        utc_offset_min: 0,
    };
    let identities = crate::report::timeline_identities(&sightings, opts.min_cameras);
    let shown = identities.min(opts.max_rows);
    let title = if shown < identities {
        format!(
            "crosscam identities: the first {shown} of {identities} ({} sightings)",
            sightings.len()
        )
    } else {
        format!("crosscam identities ({} sightings)", sightings.len())
    };
    std::fs::write(
        &a.out,
        crate::report::timeline_svg(&sightings, &opts, &title),
    )
    .with_context(|| format!("cannot write {}", a.out.display()))?;
    eprintln!(
        "wrote {}: {shown} identit{}",
        a.out.display(),
        if shown == 1 { "y" } else { "ies" }
    );
    if let Some(note) = left_out_note(identities, shown, a.min_cameras) {
        eprintln!("{note}");
    }
    Ok(ExitCode::SUCCESS)
}

/// What the timeline left out, and how to draw it (None when every identity is drawn).
fn left_out_note(identities: usize, shown: usize, min_cameras: usize) -> Option<String> {
    (shown < identities).then(|| {
        format!(
            "{} more identit{}{} left out (only the earliest {shown} are drawn): \
             --max-rows N draws more, --all draws every one",
            identities - shown,
            if identities - shown == 1 { "y" } else { "ies" },
            if min_cameras > 1 {
                format!(" seen by at least {min_cameras} cameras")
            } else {
                String::new()
            },
        )
    })
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// The site config (TOML; see config/site.example.toml).
    #[arg(long, short = 'c', env = "CROSSCAM_CONFIG")]
    pub config: PathBuf,
    /// Write every event (camera states, tracklets, identities) as a JSON line to FILE, or `-`
    /// for stdout.
    #[arg(long)]
    pub events: Option<PathBuf>,
    /// Stop after this many seconds (default: until Ctrl-C / SIGTERM).
    #[arg(long)]
    pub seconds: Option<f64>,
    /// Which part of the pipeline to run: `single` (everything, no broker), `edge` (cameras to
    /// embeddings, published to the broker) or `core` (linking, store, API and UI, fed by the
    /// broker); edge and core need `[cluster]` in the config (docs/scaling.md).
    #[arg(long, value_enum, default_value_t = crate::cluster::Role::Single)]
    pub role: crate::cluster::Role,
}

/// `crosscam serve`.
pub fn serve(a: ServeArgs) -> Result<ExitCode> {
    let cfg = crate::config::Config::load(&a.config)?;
    crate::demo::run(
        &cfg,
        crate::demo::RunOptions {
            events: a.events.as_deref(),
            seconds: a.seconds,
            narrate: false,
            banner: None,
            role: a.role,
        },
    )?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_timeline_says_how_many_identities_it_left_out() {
        assert_eq!(left_out_note(60, 60, 1), None);
        assert_eq!(left_out_note(12, 12, 1), None);
        let note = left_out_note(143, 60, 1).unwrap();
        assert!(note.starts_with("83 more identities left out"), "{note}");
        assert!(
            note.contains("--all") && note.contains("--max-rows"),
            "{note}"
        );
        let note = left_out_note(61, 60, 2).unwrap();
        assert!(
            note.starts_with("1 more identity seen by at least 2 cameras left out"),
            "{note}"
        );
    }
}
