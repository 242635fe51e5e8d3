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
    /// Measure: decoding, the detector, the whole camera pipeline (results for docs/PERFORMANCE.md).
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
        Command::Bench(b) => {
            match b {
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
