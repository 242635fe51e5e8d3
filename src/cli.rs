//! Command-line interface: argument definitions (clap) and dispatch into the library.
//! `main.rs` only parses and calls [`run`].

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};

use crate::config::Config;

#[derive(Parser, Debug)]
#[command(name = "crosscam", version, about = "Real-time cross-camera person re-identification server", long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Check that this machine can run crosscam (GStreamer, ONNX Runtime, models, GPU, data dir).
    Doctor(DoctorArgs),
    /// Inspect models.
    #[command(subcommand)]
    Model(ModelCommand),
    /// Run the demo: the embedded default config (config/demo.toml) until Ctrl-C.
    Demo(DemoArgs),
    /// Evaluate a re-id model on a dataset (Market-1501 protocol: CMC rank-1/5/10 and mAP).
    Eval(EvalArgs),
    /// Build re-id datasets from video, and inspect datasets.
    #[command(subcommand)]
    Dataset(DatasetCommand),
    /// Benchmarks (results go to docs/PERFORMANCE.md).
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Args, Debug)]
pub struct ConfigArg {
    /// Config file (TOML). Default: config/demo.toml of the crosscam installation.
    #[arg(long, short = 'c', env = "CROSSCAM_CONFIG")]
    pub config: Option<PathBuf>,
}

impl ConfigArg {
    pub fn load(&self) -> Result<Config> {
        let path = self
            .config
            .clone()
            .unwrap_or_else(|| crate::paths::project_root().join("config/demo.toml"));
        Ok(Config::load(&path)?)
    }
}

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
}

#[derive(Args, Debug)]
pub struct ModelInfoArgs {
    /// The ONNX file.
    #[arg(long)]
    pub model: PathBuf,
    /// Input size to count MACs for, CxHxW (default: the model's declared size; batch is 1).
    #[arg(long)]
    pub input: Option<String>,
    /// Print JSON (`macs`, `params`, `inputs`, `outputs`, …).
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct DemoArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Stop after this many seconds (default: run until Ctrl-C).
    #[arg(long)]
    pub seconds: Option<f64>,
}

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// The embedding model: an ONNX file ([N,3,H,W] → [N,D]) or a manifest name
    /// (e.g. mobilenetv2-imagenet).
    #[arg(long)]
    pub model: String,
    /// The dataset folder (Market-1501, DukeMTMC-reID, MSMT17 or CUHK03-NP layout).
    #[arg(long)]
    pub dataset: PathBuf,
    /// Dataset layout: auto, market1501, dukemtmc-reid, msmt17, cuhk03-np,
    /// cuhk03-np-detected, cuhk03-np-labeled.
    #[arg(long, default_value = "auto")]
    pub format: String,
    /// Print one JSON object (rank1, rank5, rank10, mAP as fractions, num_query, num_gallery,
    /// num_skipped_query, model_macs, …) instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Also write query.npy, gallery.npy (float32 [n, D], L2-normalised) and query.csv,
    /// gallery.csv (path,pid,camid) into this folder.
    #[arg(long)]
    pub save_features: Option<PathBuf>,
    /// Apply k-reciprocal re-ranking (Zhong et al. 2017) before scoring.
    #[arg(long)]
    pub rerank: bool,
    /// Re-ranking k1 (size of the k-reciprocal neighbourhood).
    #[arg(long, default_value_t = 20)]
    pub rerank_k1: usize,
    /// Re-ranking k2 (neighbours averaged by local query expansion).
    #[arg(long, default_value_t = 6)]
    pub rerank_k2: usize,
    /// Re-ranking lambda (weight of the original distance).
    #[arg(long, default_value_t = 0.3)]
    pub rerank_lambda: f32,
    /// Images per inference batch.
    #[arg(long, default_value_t = crate::eval::model::DEFAULT_BATCH)]
    pub batch: usize,
}

#[derive(Subcommand, Debug)]
pub enum DatasetCommand {
    /// Make a re-id dataset (Market-1501 layout, pseudo-identities from tracklets) from video.
    Build(DatasetBuildArgs),
    /// Detect a dataset's layout and count its images, identities and cameras per split.
    Info(DatasetInfoArgs),
}

#[derive(Args, Debug)]
pub struct DatasetBuildArgs {
    /// Input video; repeat for several. Without --cameras each video is one camera.
    #[arg(long = "video", required = true)]
    pub videos: Vec<PathBuf>,
    /// Output folder: bounding_box_train/, query/, bounding_box_test/ and dataset.json go here.
    #[arg(long)]
    pub out: PathBuf,
    /// Virtual cameras: "NAME=START-END[,KEY=VALUE...];..." (keys: video, every, until,
    /// brightness, contrast, cast=R:G:B, blur, scale), e.g.
    /// "c1=0-40s;c2=40-80s,brightness=0.7,blur=1.5", or a TOML file. See docs/evaluation.md.
    #[arg(long)]
    pub cameras: Option<String>,
    /// Clean boxes (inside the frame, not overlapped, tall enough) a tracklet needs.
    #[arg(long, default_value_t = crate::dataset::filter::DEFAULT_MIN_TRACK_LEN)]
    pub min_track_len: usize,
    /// Boxes lower than this many pixels are not used.
    #[arg(long, default_value_t = 32.0)]
    pub min_box_height: f64,
    /// IoU above which two tracklets' boxes in one frame overlap.
    #[arg(long, default_value_t = 0.3)]
    pub overlap_iou: f64,
    /// Tracklets with a larger share of overlapped boxes are dropped.
    #[arg(long, default_value_t = 0.3)]
    pub max_overlapped: f64,
    /// Share of identities in the test set (query + gallery); train and test never share one.
    #[arg(long, default_value_t = 0.5)]
    pub test_fraction: f64,
    /// Crops kept per identity and camera, spread evenly over time.
    #[arg(long, default_value_t = 10)]
    pub crops_per_camera: usize,
    /// Query crops per test identity and camera.
    #[arg(long, default_value_t = 1)]
    pub queries_per_camera: usize,
    /// Gallery crops of another camera closer than this (seconds) to a query are left out.
    #[arg(long, default_value_t = 2.0)]
    pub query_gap: f64,
    /// Smallest box IoU for linking tracklets of two virtual cameras as one person.
    #[arg(long, default_value_t = 0.5)]
    pub link_iou: f64,
    /// Longest pause (seconds) between tracklets of two cameras that are linked.
    #[arg(long, default_value_t = 0.5)]
    pub link_gap: f64,
    /// Crops the tracker keeps per tracklet (the builder samples from them).
    #[arg(long, default_value_t = 32)]
    pub track_crops: usize,
    /// Person detector (manifest name or ONNX file).
    #[arg(long, default_value = "nanodet-416")]
    pub detector: String,
    /// Frames analysed per second of video (default: every frame).
    #[arg(long)]
    pub fps: Option<f64>,
    /// Seed of the train/test split.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// JPEG quality of the crops.
    #[arg(long, default_value_t = 95)]
    pub jpeg_quality: u8,
    /// Replace the splits and dataset.json of a dataset already in --out.
    #[arg(long)]
    pub force: bool,
    /// Print the build report as JSON.
    #[arg(long)]
    pub json: bool,
}

impl DatasetBuildArgs {
    /// The builder's options from the flags.
    pub fn options(&self) -> crate::dataset::BuildOptions {
        use crate::dataset::build::{LinkOptions, SplitOptions};
        let d = crate::dataset::BuildOptions::default();
        crate::dataset::BuildOptions {
            filter: crate::dataset::FilterOptions {
                min_len: self.min_track_len,
                min_height: self.min_box_height,
                overlap_iou: self.overlap_iou,
                max_overlapped: self.max_overlapped,
                ..d.filter
            },
            link: LinkOptions {
                iou: self.link_iou,
                max_gap_s: self.link_gap,
                ..d.link
            },
            split: SplitOptions {
                test_fraction: self.test_fraction,
                max_crops_per_camera: self.crops_per_camera,
                queries_per_camera: self.queries_per_camera,
                query_gap_s: self.query_gap,
                seed: self.seed,
            },
            jpeg_quality: self.jpeg_quality,
            replace: self.force,
        }
    }

    /// The whole request: checked cameras and options.
    pub fn request(&self) -> Result<crate::dataset::BuildRequest> {
        anyhow::ensure!(
            (0.0..=1.0).contains(&self.test_fraction),
            "--test-fraction must lie in [0, 1], got {}",
            self.test_fraction
        );
        anyhow::ensure!(
            self.crops_per_camera > 0,
            "--crops-per-camera must be at least 1"
        );
        for v in &self.videos {
            anyhow::ensure!(v.is_file(), "--video {}: no such file", v.display());
        }
        let cameras =
            crate::dataset::cameras::from_arg(self.cameras.as_deref(), self.videos.len())?;
        Ok(crate::dataset::BuildRequest {
            videos: self.videos.clone(),
            cameras,
            out: self.out.clone(),
            options: self.options(),
            crops_per_track: self.track_crops.max(self.crops_per_camera),
            quiet: self.json,
        })
    }
}

#[derive(Args, Debug)]
pub struct DatasetInfoArgs {
    /// The dataset folder.
    #[arg(long)]
    pub dataset: PathBuf,
    /// Dataset layout (see `crosscam eval --help`).
    #[arg(long, default_value = "auto")]
    pub format: String,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Time the re-id metrics alone (CMC + mAP, no model) on random features.
    Eval(BenchEvalArgs),
}

#[derive(Args, Debug)]
pub struct BenchEvalArgs {
    #[arg(long, default_value_t = 3000)]
    pub query: usize,
    #[arg(long, default_value_t = 15000)]
    pub gallery: usize,
    #[arg(long, default_value_t = 512)]
    pub dim: usize,
    /// Per-dimension noise around the identity centres (1 = easy, 3 = hard at 512-d).
    #[arg(long, default_value_t = 3.0)]
    pub noise: f32,
    /// Timed runs (the best is reported as best_seconds).
    #[arg(long, default_value_t = 3)]
    pub repeat: usize,
    /// Worker threads (0 = one per core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Queries per matrix product.
    #[arg(long, default_value_t = crate::eval::metrics::DEFAULT_BLOCK)]
    pub block: usize,
    /// Include k-reciprocal re-ranking (default parameters).
    #[arg(long)]
    pub rerank: bool,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long)]
    pub json: bool,
}

/// Runs `crosscam eval`.
fn run_eval(a: EvalArgs) -> Result<ExitCode> {
    use crate::eval::{Dataset, Format, MetricOptions, RerankParams, model};
    let format = Format::parse(&a.format)?;
    let ds = Dataset::load(&a.dataset, format)?;
    let rt = crate::runtime::init(&crate::config::RuntimeSettings::default())?;
    let manifest = crate::models::Manifest::bundled()?;
    let mut embedder = crate::reid::Embedder::open(
        &a.model,
        &manifest,
        rt,
        crate::runtime::SessionOptions::default(),
    )
    .with_context(|| format!("cannot open the model {}", a.model))?;
    let model_path = match manifest.get(&a.model) {
        Ok(entry) => manifest.file_of(entry),
        Err(_) => PathBuf::from(&a.model),
    };
    let input = [3, embedder.spec.height as i64, embedder.spec.width as i64];
    let model_macs = match crate::onnx::info::model_info(&model_path, Some(&input)) {
        Ok(i) if i.macs_complete => Some(i.macs),
        Ok(i) => {
            tracing::warn!(
                "the MACs of {} are incomplete ({}): model_macs is left empty",
                model_path.display(),
                i.shape_gap.unwrap_or_default()
            );
            None
        }
        Err(e) => {
            tracing::warn!("cannot count the MACs of {}: {e}", model_path.display());
            None
        }
    };
    let opts = model::ModelEvalOptions {
        batch: a.batch,
        metrics: MetricOptions {
            rerank: a.rerank.then_some(RerankParams {
                k1: a.rerank_k1,
                k2: a.rerank_k2,
                lambda: a.rerank_lambda,
            }),
            ..MetricOptions::default()
        },
        save_features: a.save_features.clone(),
        quiet: a.json,
    };
    let report = model::evaluate_model(&mut embedder, &a.model, model_macs, &ds, &opts)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", model::render(&report));
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `crosscam dataset build` with `source` doing detection + tracking.
pub fn run_dataset_build(
    a: &DatasetBuildArgs,
    source: &mut dyn crate::dataset::TrackletSource,
) -> Result<ExitCode> {
    let req = a.request()?;
    let report = crate::dataset::build_dataset(&req, source)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", crate::dataset::build::render(&report));
    }
    Ok(ExitCode::SUCCESS)
}

fn run_dataset_info(a: DatasetInfoArgs) -> Result<ExitCode> {
    use crate::eval::dataset::{Dataset, Format, Split, SplitCounts};
    let ds = Dataset::load(&a.dataset, Format::parse(&a.format)?)?;
    let counts: Vec<(Split, SplitCounts)> = Split::ALL
        .iter()
        .map(|&s| (s, SplitCounts::of(ds.items(s))))
        .collect();
    if a.json {
        let mut v = serde_json::json!({
            "dataset": ds.root.display().to_string(),
            "format": ds.format.name(),
            "pseudo_labels": ds.pseudo_labels(),
        });
        for (s, c) in &counts {
            v[serde_json::to_value(s)?.as_str().unwrap_or("split")] = serde_json::to_value(c)?;
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!(
            "{} ({}{})",
            ds.root.display(),
            ds.format,
            if ds.pseudo_labels() {
                ", pseudo-labels"
            } else {
                ""
            }
        );
        println!("split     images  identities  cameras  from");
        for (s, c) in &counts {
            println!(
                "{:<8} {:>7} {:>11} {:>8}  {}",
                format!("{s:?}").to_lowercase(),
                c.images,
                c.ids,
                c.cameras,
                ds.source(*s).display()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn run_bench_eval(a: BenchEvalArgs) -> Result<ExitCode> {
    let opts = crate::eval::MetricOptions {
        threads: a.threads,
        block: a.block,
        rerank: a.rerank.then(crate::eval::RerankParams::default),
        ..Default::default()
    };
    let r = crate::eval::bench::run(a.query, a.gallery, a.dim, a.noise, a.repeat, &opts, a.seed)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        println!(
            "metrics of {} queries x {} gallery, {}-d{}: best {:.2} s of {} runs ({}), {} threads, blocks of {} (rank-1 {:.3}, mAP {:.3})",
            r.num_query,
            r.num_gallery,
            r.dim,
            if r.rerank { ", re-ranked" } else { "" },
            r.best_seconds,
            r.seconds.len(),
            r.seconds
                .iter()
                .map(|s| format!("{s:.2}"))
                .collect::<Vec<_>>()
                .join(", "),
            r.threads,
            r.block,
            r.rank1,
            r.map
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Doctor(a) => {
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
        Command::Model(ModelCommand::Info(a)) => {
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
        Command::Demo(a) => {
            let cfg = a.config.load()?;
            crate::demo::run(&cfg, a.seconds)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Eval(a) => run_eval(a),
        Command::Dataset(DatasetCommand::Build(a)) => {
            // check the flags and cameras before saying what is missing
            a.request()?;
            // TODO(tracker): `run_dataset_build(&a, &mut source)` with `source` a
            // crate::dataset::TrackletSource running the detector + tracker.
            anyhow::bail!(
                "crosscam dataset build needs the detector + tracker, which are not wired in yet"
            )
        }
        Command::Dataset(DatasetCommand::Info(a)) => run_dataset_info(a),
        Command::Bench(BenchCommand::Eval(a)) => run_bench_eval(a),
    }
}

/// Sets up logging: `RUST_LOG` if set, else `default` (the config's `server.log`).
pub fn init_logging(default: &str) {
    use tracing_subscriber::EnvFilter;
    // ONNX Runtime logs every graph transformation at info level: keep it to warnings
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("{default},ort=warn")));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}
