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
    /// Detect people in every frame of a video; write MOTChallenge detection lines.
    Detect(DetectArgs),
    /// Track people: on a MOTChallenge detection file (tracker only) or on a video (detector + tracker).
    Track(TrackArgs),
    /// Prune a re-id network (structured channel pruning), or sweep criteria and ratios.
    Prune(Box<PruneCmd>),
    /// Measure: embedding models side by side, decoding, the detector, the camera pipeline
    /// (results for docs/PERFORMANCE.md).
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Decode + colour-convert throughput of one camera pipeline (all frames vs sampled).
    Decode(BenchDecodeArgs),
    /// Bare detector time per frame at given batch sizes.
    Detect(BenchDetectArgs),
    /// Cameras → tracklets end to end: plumbing overhead and the most real-time cameras.
    Pipeline(BenchPipelineArgs),
    /// Time embedding models side by side in one run (interleaved rounds) and print crops/s and
    /// the speed-up relative to the first model.
    Embed(BenchEmbedArgs),
}

#[derive(Args, Debug)]
pub struct BenchDecodeArgs {
    /// Video file (default: the bundled vtest-h264.mp4).
    #[arg(long)]
    pub video: Option<PathBuf>,
    #[arg(long, default_value_t = 5)]
    pub fps: u32,
    #[arg(long, default_value_t = 640)]
    pub width: u32,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct BenchDetectArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Batch sizes to measure.
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 4])]
    pub batch: Vec<usize>,
    /// Seconds per batch size.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    #[arg(long, default_value_t = 640)]
    pub width: u32,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct BenchPipelineArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Analysed frames per second per camera.
    #[arg(long, default_value_t = 5)]
    pub fps: u32,
    #[arg(long, default_value_t = 640)]
    pub width: u32,
    /// Measured seconds per run (after a warm-up).
    #[arg(long, default_value_t = 15.0)]
    pub seconds: f64,
    /// Stop the real-time search at this many cameras.
    #[arg(long, default_value_t = 8)]
    pub max_cameras: usize,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct DetectArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// The video file.
    #[arg(long)]
    pub video: PathBuf,
    /// Output file: `frame,-1,x,y,w,h,score,-1,-1,-1` per detection, frames from 1.
    #[arg(long)]
    pub out: PathBuf,
    /// Minimum score written (default: detect.score_threshold of the config).
    #[arg(long)]
    pub threshold: Option<f32>,
    /// Stop after this many frames.
    #[arg(long)]
    pub max_frames: Option<u64>,
}

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("input").required(true).args(["video", "detections"])))]
pub struct TrackArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// A video: run the detector and the tracker.
    #[arg(long)]
    pub video: Option<PathBuf>,
    /// A MOTChallenge detection file: run the tracker only.
    #[arg(long)]
    pub detections: Option<PathBuf>,
    /// Frame rate of the detection file's video (for time-based statistics).
    #[arg(long, default_value_t = 10.0)]
    pub fps: f64,
    /// Output file: `frame,id,x,y,w,h,score,-1,-1,-1` per tracked box.
    #[arg(long)]
    pub out: PathBuf,
    /// With --video: write each tracklet's best crops to DIR/<id>/<frame>.jpg.
    #[arg(long)]
    pub crops: Option<PathBuf>,
    /// With --video: stop after this many frames.
    #[arg(long)]
    pub max_frames: Option<u64>,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
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
    /// Write a freshly initialised torchvision-style ResNet as ONNX (a starting point for
    /// training, a smaller comparator network, or a model to benchmark and prune).
    Build(ModelBuildArgs),
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
    /// Where to write the model.
    #[arg(long)]
    pub out: PathBuf,
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
    let style = Style {
        fuse_bn: a.fuse_bn,
        ..Style::default()
    };
    build(&spec, head, style, init, a.seed)
        .save(&a.out)
        .with_context(|| format!("cannot write {}", a.out.display()))?;
    println!("written: {}", a.out.display());
    Ok(ExitCode::SUCCESS)
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
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct PruneCmd {
    #[command(subcommand)]
    pub sub: Option<PruneSub>,
    #[command(flatten)]
    pub args: PruneArgs,
}

#[derive(Subcommand, Debug)]
pub enum PruneSub {
    /// Prune with several criteria and ratios; write a table (CSV, Markdown) and a picture (SVG)
    /// of MACs and parameters against the kept fraction of channels.
    Sweep(SweepArgs),
}

/// Settings shared by `prune` and `prune sweep`.
#[derive(Args, Debug)]
pub struct PruneCommonArgs {
    /// `layer`: the same ratio in every group; `global`: one ranking across groups (scores
    /// L2-normalised per group).
    #[arg(long, value_enum, default_value_t = crate::prune::Scope::Layer)]
    pub scope: crate::prune::Scope,
    /// Folder of sample images (person crops; jpg/png) for `apoz` and `mean-activation`.
    #[arg(long)]
    pub calibration: Option<PathBuf>,
    /// At most this many calibration images are used.
    #[arg(long, default_value_t = 64)]
    pub calibration_images: usize,
    /// Every group keeps at least this many channels.
    #[arg(long, default_value_t = crate::prune::strategy::DEFAULT_MIN_CHANNELS)]
    pub min_channels: usize,
    /// Kept widths are rounded to a multiple of this (1 = no rounding).
    #[arg(long, default_value_t = crate::prune::strategy::DEFAULT_MULTIPLE)]
    pub round_to: usize,
    /// Input size CxHxW when the model's is dynamic (also the size MACs are counted for).
    #[arg(long)]
    pub input: Option<String>,
    /// Also prune the channels of the model's output (changes the embedding dimension).
    #[arg(long)]
    pub prune_output: bool,
    /// Seed of the `random` criterion.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

impl PruneCommonArgs {
    fn analyze(&self) -> Result<crate::prune::AnalyzeOptions> {
        Ok(crate::prune::AnalyzeOptions {
            input_chw: self
                .input
                .as_deref()
                .map(crate::onnx::info::parse_input_size)
                .transpose()
                .map_err(anyhow::Error::msg)?,
            prune_outputs: self.prune_output,
        })
    }
    fn widths(&self) -> crate::prune::WidthPolicy {
        crate::prune::WidthPolicy {
            min_channels: self.min_channels,
            multiple: self.round_to,
        }
    }
}

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["target_macs", "ratio"])))]
pub struct PruneArgs {
    /// The ONNX model to prune.
    #[arg(long, required = true)]
    pub model: Option<PathBuf>,
    /// Where to write the pruned ONNX model.
    #[arg(long, required = true)]
    pub out: Option<PathBuf>,
    /// Channel importance criterion.
    #[arg(long, value_enum, required = true)]
    pub criterion: Option<crate::prune::Criterion>,
    /// Reach the target at once, or in --steps steps (re-scoring after each).
    #[arg(long, value_enum, default_value_t = crate::prune::StrategyKind::OneShot)]
    pub strategy: crate::prune::StrategyKind,
    /// Steps of the iterative strategy.
    #[arg(long, default_value_t = crate::prune::DEFAULT_STEPS)]
    pub steps: usize,
    /// Keep this fraction of the original MACs (e.g. 0.5 halves the cost).
    #[arg(long)]
    pub target_macs: Option<f64>,
    /// Remove this fraction of the prunable channels.
    #[arg(long)]
    pub ratio: Option<f64>,
    #[command(flatten)]
    pub common: PruneCommonArgs,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Print the report as JSON on stdout (no progress lines).
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct SweepArgs {
    /// The ONNX model to prune.
    #[arg(long)]
    pub model: PathBuf,
    /// Folder for sweep.csv, sweep.md, sweep.svg (and the models with --keep-models).
    #[arg(long)]
    pub out_dir: PathBuf,
    /// Criteria to compare (comma-separated).
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [
        crate::prune::Criterion::L1,
        crate::prune::Criterion::L2,
        crate::prune::Criterion::Fpgm,
        crate::prune::Criterion::Random,
    ])]
    pub criteria: Vec<crate::prune::Criterion>,
    /// Channel ratios to remove (comma-separated; default 0,0.1,…,0.8).
    #[arg(long, value_delimiter = ',')]
    pub ratios: Vec<f64>,
    #[command(flatten)]
    pub common: PruneCommonArgs,
    /// Write every pruned model into the folder (to evaluate them).
    #[arg(long)]
    pub keep_models: bool,
    /// Print the rows as JSON on stdout (no progress lines).
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct BenchEmbedArgs {
    /// An embedding ONNX model; repeat for each model to compare (the first is the reference).
    #[arg(long = "model", required = true)]
    pub models: Vec<PathBuf>,
    /// Crops per batch.
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    /// Timed rounds (each runs every model once, alternating the order).
    #[arg(long, default_value_t = 20)]
    pub rounds: usize,
    /// Untimed warm-up rounds.
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// Intra-op threads per session (0 = one per core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

fn run_prune(cmd: PruneCmd) -> Result<ExitCode> {
    use crate::prune::{self, NoRetune, PruneOptions, Target, criteria};
    if let Some(PruneSub::Sweep(a)) = cmd.sub {
        let opts = prune::sweep::SweepOptions {
            criteria: a.criteria.clone(),
            ratios: if a.ratios.is_empty() {
                prune::sweep::default_ratios()
            } else {
                a.ratios.clone()
            },
            scope: a.common.scope,
            widths: a.common.widths(),
            analyze: a.common.analyze()?,
            calibration: a.common.calibration.clone(),
            calibration_images: a.common.calibration_images,
            seed: a.common.seed,
            keep_models: a.keep_models,
            quiet: a.json,
        };
        if let Some(bad) = opts.ratios.iter().find(|r| !(0.0..1.0).contains(*r)) {
            anyhow::bail!("--ratios must lie in [0, 1), found {bad}");
        }
        std::fs::create_dir_all(&a.out_dir)
            .with_context(|| format!("cannot create {}", a.out_dir.display()))?;
        let model = crate::onnx::Model::load(&a.model)?;
        let rows = prune::sweep::sweep(&model, &opts, &a.out_dir)
            .with_context(|| format!("cannot sweep {}", a.model.display()))?;
        let title = format!(
            "{} ({} scope)",
            a.model
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default(),
            opts.scope.as_str()
        );
        let files = prune::sweep::write_outputs(&rows, &a.out_dir, &title)
            .with_context(|| format!("cannot write into {}", a.out_dir.display()))?;
        if a.json {
            println!("{}", serde_json::to_string_pretty(&rows)?);
        } else {
            print!("{}", prune::sweep::to_markdown(&rows));
            for f in files {
                println!("written: {}", f.display());
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let a = cmd.args;
    let (Some(model), Some(out), Some(criterion)) = (a.model, a.out, a.criterion) else {
        anyhow::bail!("--model, --out and --criterion are required");
    };
    let target = match (a.target_macs, a.ratio) {
        (Some(f), None) => Target::Macs(f),
        (None, Some(r)) => Target::Ratio(r),
        _ => anyhow::bail!("give exactly one of --target-macs and --ratio"),
    };
    let opts = PruneOptions {
        strategy: a.strategy,
        steps: a.steps,
        scope: a.common.scope,
        target,
        widths: a.common.widths(),
        analyze: a.common.analyze()?,
        quiet: a.json,
    };
    let mut scorer = criteria::builtin(
        criterion,
        a.common.calibration.as_deref(),
        a.common.calibration_images,
        a.common.seed,
        a.json,
    )?;
    let report = prune::prune_file(&model, &out, &opts, scorer.as_mut(), &mut NoRetune)
        .with_context(|| format!("cannot prune {}", model.display()))?;
    if let Some(p) = &a.report {
        std::fs::write(p, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("cannot write the report to {}", p.display()))?;
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", prune::report::render(&report));
    }
    Ok(ExitCode::SUCCESS)
}

fn run_bench(cmd: BenchCommand) -> Result<ExitCode> {
    match cmd {
        BenchCommand::Decode(a) => {
            let v = a
                .video
                .unwrap_or_else(|| crate::paths::media("vtest-h264.mp4"));
            let r = crate::bench::decode(&v, a.fps, a.width)?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                println!(
                    "{}: decode + RGB at width {}: all frames {:.0} frames/s; sampled to {} fps: {:.0} frames/s = {:.1}x real time",
                    r.video,
                    r.width,
                    r.all_frames_fps,
                    r.analysis_fps,
                    r.sampled_fps,
                    r.sampled_speed
                );
            }
        }
        BenchCommand::Detect(a) => {
            let cfg = a.config.load()?;
            let frames = crate::bench::sample_frames(16, a.width)?;
            let mut rs = Vec::new();
            for &b in &a.batch {
                let r = crate::bench::detect(&cfg, b, a.seconds, &frames)?;
                if !a.json {
                    println!(
                        "{} batch {}: {:.1} ms/frame ({:.1} frames/s, {} frames)",
                        r.model, r.batch, r.ms_per_frame, r.frames_per_second, r.frames
                    );
                }
                rs.push(r);
            }
            if a.json {
                println!("{}", serde_json::to_string_pretty(&rs)?);
            }
        }
        BenchCommand::Pipeline(a) => {
            let cfg = a.config.load()?;
            let r = crate::bench::pipeline(&cfg, a.fps, a.width, a.seconds, a.max_cameras)?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                println!(
                    "bare detector (batch {}): {:.1} frames/s; pipeline saturated with {} cameras: {:.1} frames/s (mean batch {:.2}) => plumbing ratio {:.3}",
                    r.bare_detector.batch,
                    r.bare_detector.frames_per_second,
                    r.saturated.cameras,
                    r.saturated.total_fps,
                    r.saturated.mean_batch,
                    r.plumbing_ratio
                );
                for c in &r.runs {
                    println!(
                        "{} cameras at {} fps: slowest {:.2} fps, mean {:.2}, dropped {:.1}%, {}",
                        c.cameras,
                        r.analysis_fps,
                        c.min_camera_fps,
                        c.mean_camera_fps,
                        c.drop_rate * 100.0,
                        if c.real_time {
                            "real time"
                        } else {
                            "NOT real time"
                        }
                    );
                }
                println!("most cameras in real time: {}", r.max_real_time_cameras);
            }
        }
        BenchCommand::Embed(a) => {
            let rt = crate::runtime::init(&crate::config::RuntimeSettings::default())?;
            let opts = crate::bench::EmbedBenchOptions {
                batch: a.batch,
                rounds: a.rounds,
                warmup: a.warmup,
                threads: a.threads,
                quiet: a.json,
            };
            let r = crate::bench::embed(rt, &a.models, &opts)?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                print!("{}", crate::bench::render(&r));
            }
        }
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
        Command::Detect(a) => {
            let cfg = a.config.load()?;
            let n =
                crate::offline::detect(&cfg, &a.video, &a.out, a.threshold, a.max_frames, false)?;
            eprintln!("{n} detections written to {}", a.out.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Track(a) => {
            let cfg = a.config.load()?;
            let summary = match (&a.video, &a.detections) {
                (Some(v), _) => crate::offline::track_video(
                    &cfg,
                    v,
                    &a.out,
                    a.crops.as_deref(),
                    a.max_frames,
                    a.json,
                )?,
                (None, Some(d)) => {
                    anyhow::ensure!(
                        a.crops.is_none(),
                        "--crops needs --video (a detection file has no pixels)"
                    );
                    crate::offline::track_detections(&cfg, d, &a.out, a.fps)?
                }
                (None, None) => unreachable!("clap requires one input"),
            };
            if a.json {
                println!("{}", serde_json::to_string_pretty(&summary)?);
            } else {
                print!("{}", crate::offline::render(&summary));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo(a) => {
            let cfg = a.config.load()?;
            crate::demo::run(&cfg, a.seconds)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Model(ModelCommand::Build(a)) => run_model_build(a),
        Command::Prune(a) => run_prune(*a),
        Command::Bench(a) => run_bench(a),
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
