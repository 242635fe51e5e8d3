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
            let n = crate::offline::detect(&cfg, &a.video, &a.out, a.threshold, false)?;
            eprintln!("{n} detections written to {}", a.out.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Track(a) => {
            let cfg = a.config.load()?;
            let summary = match (&a.video, &a.detections) {
                (Some(v), _) => {
                    crate::offline::track_video(&cfg, v, &a.out, a.crops.as_deref(), a.json)?
                }
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
