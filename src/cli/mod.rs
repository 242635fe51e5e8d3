//! Command-line interface: argument definitions (clap) and dispatch into the library, one file
//! per group of subcommands. `main.rs` only parses and calls [`run`].

mod bench;
mod eval;
mod job;
mod prune;
mod quantize;
mod retune;
mod system;
mod user;
mod video;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};

use crate::config::Config;

pub use eval::DatasetBuildArgs;

#[derive(Parser, Debug)]
#[command(name = "crosscam", version, about = "Real-time cross-camera person re-identification server", long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Check that this machine can run crosscam (GStreamer, ONNX Runtime, models, GPU, data dir).
    Doctor(system::DoctorArgs),
    /// Inspect or build models.
    #[command(subcommand)]
    Model(system::ModelCommand),
    /// Run the server on a site config until Ctrl-C / SIGTERM.
    Serve(system::ServeArgs),
    /// Run the demo: the embedded default config (config/demo.toml) until Ctrl-C.
    Demo(system::DemoArgs),
    /// Draw the identity timeline of a data directory (one row per identity, bars per camera) as SVG.
    Timeline(system::TimelineArgs),
    /// Detect people in every frame of a video; write MOTChallenge detection lines.
    Detect(video::DetectArgs),
    /// Track people: on a MOTChallenge detection file (tracker only) or on a video (detector + tracker).
    Track(video::TrackArgs),
    /// Prune a re-id network (structured channel pruning), or sweep criteria and ratios.
    Prune(Box<prune::PruneCmd>),
    /// Quantise a model to int8 (ONNX QDQ: per-channel int8 weights, 8-bit activations),
    /// calibrated on the site's own crops or frames, checked against the float model on
    /// held-out data, and registered in a site manifest (docs/quantize.md).
    Quantize(Box<quantize::QuantizeArgs>),
    /// Prune and/or re-tune a re-id ResNet in one of the scenarios S0–S5 (docs/retuning.md),
    /// scored before and after on the dataset's held-out query/gallery sets.
    Retune(Box<retune::RetuneArgs>),
    /// Train a new re-id ResNet: distillation from a teacher, then re-id training on
    /// (pseudo-)identities.
    Train(Box<retune::TrainArgs>),
    /// Run a grid of scenarios × criteria × prune levels; write a table and figures.
    Study(job::StudyArgs),
    /// On-site jobs: re-tune and promote against the model registry; list it; roll back.
    #[command(subcommand)]
    Job(job::JobCommand),
    /// Evaluate a re-id model on a dataset (Market-1501 protocol: CMC rank-1/5/10 and mAP).
    Eval(eval::EvalArgs),
    /// Build re-id datasets from video, and inspect datasets.
    #[command(subcommand)]
    Dataset(eval::DatasetCommand),
    /// Users and API tokens of the web UI and API (the first admin is created here).
    #[command(subcommand)]
    User(user::UserCommand),
    /// Measure: embedding models side by side, decoding, the detector, the camera pipeline, the
    /// re-id metrics (results for docs/PERFORMANCE.md).
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Internal: one camera's pipeline in a process of its own (started by the daemon; speaks a
    /// binary protocol on standard input and output).
    #[command(hide = true)]
    CameraWorker(CameraWorkerArgs),
}

#[derive(Args, Debug)]
pub struct CameraWorkerArgs {
    /// Probe the file whose path comes on standard input instead of running a camera.
    #[arg(long)]
    pub probe: bool,
    /// The camera this process serves (shown by `ps`; the spec comes on standard input).
    #[arg(long)]
    pub camera: Option<String>,
}

#[derive(Args, Debug)]
pub struct ConfigArg {
    /// Config file (TOML). Default: built-in defaults (`crosscam demo`: config/demo.toml).
    #[arg(long, short = 'c', env = "CROSSCAM_CONFIG")]
    pub config: Option<PathBuf>,
}

impl ConfigArg {
    /// The given config file, or the built-in defaults (bundled models, no cameras).
    pub fn load(&self) -> Result<Config> {
        match &self.config {
            Some(path) => Ok(Config::load(path)?),
            None => Ok(Config::defaults()?),
        }
    }

    /// The given config file, or `default` (a file of the installation).
    pub fn load_or(&self, default: &str) -> Result<Config> {
        let path = self
            .config
            .clone()
            .unwrap_or_else(|| crate::paths::project_root().join(default));
        Ok(Config::load(&path)?)
    }
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Doctor(a) => system::doctor(a),
        Command::Model(m) => system::model(m),
        Command::Serve(a) => system::serve(a),
        Command::Demo(a) => system::demo(a),
        Command::Timeline(a) => system::timeline(a),
        Command::Detect(a) => video::detect(a),
        Command::Track(a) => video::track(a),
        Command::Prune(a) => prune::run(*a),
        Command::Quantize(a) => quantize::run(*a),
        Command::Retune(a) => retune::run_retune(*a),
        Command::Train(a) => retune::run_train(*a),
        Command::Study(a) => job::run_study(a),
        Command::Job(j) => job::run(j),
        Command::Eval(a) => eval::run_eval(a),
        Command::Dataset(d) => eval::dataset(d),
        Command::Bench(b) => bench::run(b),
        Command::User(u) => user::run(u),
        Command::CameraWorker(a) => {
            if a.probe {
                crate::ingest::worker::probe()?;
            } else {
                crate::ingest::worker::run()?;
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Sets up logging: `RUST_LOG` if set, else `default` (the config's `server.log`). Log lines go
/// to stderr (stdout is for results and the demo's narration), coloured only when stderr is a
/// terminal and `NO_COLOR` is not set (https://no-color.org).
pub fn init_logging(default: &str) {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_new(filter_directives(
        std::env::var("RUST_LOG").ok().as_deref(),
        default,
    ))
    .unwrap_or_else(|e| {
        eprintln!("RUST_LOG: {e}; logging at {default}");
        EnvFilter::new(filter_directives(None, default))
    });
    let ansi = use_colour(
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    );
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .with_target(false)
        .try_init();
}

/// A `--detect-every N` flag, checked like `[analysis] detect_every` in the config file.
pub(crate) fn detect_every_flag(n: u32) -> Result<u32> {
    crate::config::AnalysisSettings::check_detect_every(n)
        .map_err(|m| anyhow::anyhow!("--detect-every: {m}"))
}

/// `RUST_LOG` (or `default`) with the noisy libraries kept to warnings: ONNX Runtime logs every
/// graph transformation at info level, hnsw_rs every graph it builds, dumps or drops. A library
/// that `RUST_LOG` names itself keeps the level given there (`RUST_LOG=info,ort=debug`).
fn filter_directives(rust_log: Option<&str>, default: &str) -> String {
    let base = rust_log
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .unwrap_or(default);
    let mut out = base.to_string();
    for lib in ["ort", "hnsw_rs", "anndists"] {
        let named = base
            .split(',')
            .any(|d| d.trim().split(['=', ':', '[']).next() == Some(lib));
        if !named {
            out.push_str(&format!(",{lib}=warn"));
        }
    }
    out
}

/// Colour codes only on a terminal, and not when `NO_COLOR` is set to anything but "".
fn use_colour(terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn noisy_libraries_stay_at_warnings_unless_rust_log_names_them() {
        assert_eq!(
            filter_directives(None, "info"),
            "info,ort=warn,hnsw_rs=warn,anndists=warn"
        );
        // RUST_LOG=info used to let ONNX Runtime's graph optimiser through, line by line
        assert_eq!(
            filter_directives(Some("info"), "warn"),
            "info,ort=warn,hnsw_rs=warn,anndists=warn"
        );
        assert_eq!(
            filter_directives(Some("debug,ort=debug"), "info"),
            "debug,ort=debug,hnsw_rs=warn,anndists=warn"
        );
        assert_eq!(
            filter_directives(Some(" "), "info"),
            "info,ort=warn,hnsw_rs=warn,anndists=warn"
        );
        // a target that merely starts with a library's name is not that library
        assert_eq!(
            filter_directives(Some("info,ortho=debug"), "info"),
            "info,ortho=debug,ort=warn,hnsw_rs=warn,anndists=warn"
        );
    }

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(use_colour(true, None));
        assert!(use_colour(true, Some(OsStr::new(""))));
        assert!(!use_colour(true, Some(OsStr::new("1"))));
        assert!(
            !use_colour(false, None),
            "a file or pipe gets no escape codes"
        );
    }
}
