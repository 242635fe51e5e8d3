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
    /// Measure throughput.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Training throughput (images/s) and peak memory of a re-id ResNet: a few full training
    /// steps (augmentation, forward, cross-entropy + triplet, backward, Adam) on synthetic crops.
    Train(BenchTrainArgs),
}

#[derive(Args, Debug)]
pub struct BenchTrainArgs {
    /// resnet18, resnet34 or resnet50 (re-id variant: last stride 1, BNNeck).
    #[arg(long, default_value = "resnet18")]
    pub arch: String,
    /// Width multiplier applied to every layer (0.5 = half the channels).
    #[arg(long, default_value_t = 1.0)]
    pub width: f64,
    /// Width multiplier of the block-internal convs only (what pruning the free convs gives;
    /// 0.5 halves a ResNet-18's MACs).
    #[arg(long, default_value_t = 1.0)]
    pub inner_width: f64,
    /// Batch size (P identities × 4 crops).
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// Timed steps (after one untimed warm-up step).
    #[arg(long, default_value_t = 3)]
    pub steps: usize,
    /// Input size HxW.
    #[arg(long, default_value = "256x128")]
    pub input: String,
    /// Use burn's CUDA backend when built with the `cuda` feature and a GPU is visible.
    #[arg(long)]
    pub gpu: bool,
    /// Print the report as JSON.
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
        Command::Demo(a) => {
            let cfg = a.config.load()?;
            crate::demo::run(&cfg, a.seconds)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench(BenchCommand::Train(a)) => {
            let hw = crate::onnx::info::parse_input_size(&a.input).map_err(anyhow::Error::msg)?;
            let n = hw.len();
            let cfg = crate::train::bench::BenchConfig {
                arch: a.arch,
                width: a.width,
                inner_width: a.inner_width,
                batch: a.batch,
                steps: a.steps.max(1),
                input_hw: (hw[n - 2] as usize, hw[n - 1] as usize),
                want_gpu: a.gpu,
            };
            let report = crate::train::bench::run(&cfg)?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", crate::train::bench::render(&report));
            }
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
