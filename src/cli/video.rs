//! The offline video tools: `crosscam detect`, `crosscam track`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

use super::ConfigArg;

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
    /// With --video: run the detector on every N-th frame only, the tracker predicts the others
    /// (overrides `[analysis] detect_every`).
    #[arg(long, value_name = "N")]
    pub detect_every: Option<u32>,
    /// With --video: skip detection on frames where nothing moved (overrides
    /// `[analysis] motion_gate`; forced detection every `[analysis] motion_max_skip` frames).
    #[arg(long)]
    pub motion_gate: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `crosscam detect`.
pub fn detect(a: DetectArgs) -> Result<ExitCode> {
    let cfg = a.config.load()?;
    let n = crate::offline::detect(&cfg, &a.video, &a.out, a.threshold, a.max_frames, false)?;
    eprintln!("{n} detections written to {}", a.out.display());
    Ok(ExitCode::SUCCESS)
}

/// `crosscam track`.
pub fn track(a: TrackArgs) -> Result<ExitCode> {
    let mut cfg = a.config.load()?;
    if let Some(n) = a.detect_every {
        cfg.analysis.detect_every = super::detect_every_flag(n)?;
    }
    cfg.analysis.motion_gate |= a.motion_gate;
    anyhow::ensure!(
        a.video.is_some() || (a.detect_every.is_none() && !a.motion_gate),
        "--detect-every and --motion-gate need --video (a detection file has a detection for every frame)"
    );
    let summary = match (&a.video, &a.detections) {
        (Some(v), _) => {
            crate::offline::track_video(&cfg, v, &a.out, a.crops.as_deref(), a.max_frames, a.json)?
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
