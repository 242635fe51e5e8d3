//! `crosscam bench …`: the measurements behind docs/PERFORMANCE.md.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Subcommand};

use super::ConfigArg;

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Decode + colour-convert throughput of one camera pipeline (all frames vs sampled).
    Decode(BenchDecodeArgs),
    /// Bare detector time per frame at given batch sizes; with --model (repeated), detector
    /// models side by side in one run (interleaved rounds) with the speed-up relative to the
    /// first (e.g. fp32 vs int8).
    Detect(BenchDetectArgs),
    /// Cameras → tracklets end to end: plumbing overhead and the most real-time cameras.
    Pipeline(BenchPipelineArgs),
    /// What detecting fewer frames costs the tracker: the video tracked with every frame
    /// detected, every 2nd and 3rd, with the motion gate, and both; MOTA / IDF1 of each against
    /// a MOTChallenge ground truth (--gt) or the every-frame run, and the share of frames detected.
    Tracking(BenchTrackingArgs),
    /// Time embedding models side by side in one run (interleaved rounds) and print crops/s and
    /// the speed-up relative to the first model.
    Embed(BenchEmbedArgs),
    /// Time the re-id metrics alone (CMC + mAP, no model) on random features.
    Eval(BenchEvalArgs),
    /// Training throughput (images/s) and peak memory of a re-id ResNet: a few full training
    /// steps (augmentation, forward, cross-entropy + triplet, backward, Adam) on synthetic crops.
    Train(BenchTrainArgs),
    /// Identity gallery search: exact vs HNSW query latency (p50/p99), build time and recall at
    /// several sizes, and memory per identity, on seeded synthetic re-id-like features.
    Gallery(BenchGalleryArgs),
    /// The API under load: camera rates without and with N WebSocket clients on the event
    /// stream (each must receive every event), then wrk on a few endpoints (p50/p99).
    Api(BenchApiArgs),
    /// Do outputs slow the pipeline? Camera rates with a webhook receiver alternately up and down (and an MQTT broker that is never there)
    Outputs(BenchOutputsArgs),
    /// How many cameras' worth of observations one core links in real time: a real
    /// nats-server and a real core on 127.0.0.1, synthetic edges publishing N cameras'
    /// observations (boxes, JPEG crops, descriptors) per step; observations/s, lag from the
    /// broker to the core's store (p50/p99), the broker's and the core's CPU per observation.
    Cluster(BenchClusterArgs),
    /// The live model switch under load: two real-time cameras, a store of N crops (real crops
    /// of real tracklets, copied), promote a second embedder; switch time, re-embedding crops/s,
    /// and the cameras' frame rates before and during the switch.
    Switch(BenchSwitchArgs),
    /// Cross-camera identity quality end to end: two virtual cameras of a clip (another view,
    /// colours and blur), tracked and described as the daemon does, linked by the daemon's
    /// linker, scored against ground truth: global IDF1 (IDP, IDR), cross-camera pair
    /// precision / recall / F1, wrong merges, identities per person and people per identity,
    /// per clip offset, and a precision–recall curve over the link threshold (SVG).
    Linking(BenchLinkingArgs),
    /// Write a made-up MOTChallenge sequence with known trajectories and a detector's typical
    /// mistakes (misses, jitter, occlusion with lower scores, false positives): `gt.txt` and
    /// `det.txt`, to compare trackers on (`bench tracking --gt … --detections …`).
    MotSequence(BenchMotSequenceArgs),
}

#[derive(Args, Debug)]
pub struct BenchMotSequenceArgs {
    /// Directory for gt.txt and det.txt (created).
    #[arg(long)]
    pub out: PathBuf,
    /// Instead of made-up walkers: this MOTChallenge ground truth (its trajectories are copied
    /// to gt.txt) with the made-up detector's mistakes in det.txt.
    #[arg(long)]
    pub from_gt: Option<PathBuf>,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    #[arg(long, default_value_t = 750)]
    pub frames: u32,
    #[arg(long, default_value_t = 25.0)]
    pub fps: f32,
    /// People walking through (some in pairs).
    #[arg(long, default_value_t = 18)]
    pub people: u32,
    /// Share of fully visible people the detector misses.
    #[arg(long, default_value_t = 0.08)]
    pub miss: f32,
    /// Standard deviation of each box edge's error, as a share of the box size.
    #[arg(long, default_value_t = 0.03)]
    pub jitter: f32,
    /// Random false positives per frame (mean), besides two clutter spots.
    #[arg(long, default_value_t = 0.3)]
    pub false_positives: f32,
}

#[derive(Args, Debug)]
pub struct BenchSwitchArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Crops stored when the switch starts.
    #[arg(long, default_value_t = 10_000)]
    pub crops: usize,
    /// Seconds the cameras run first to store real crops (then copied up to --crops).
    #[arg(long, default_value_t = 60.0)]
    pub collect_seconds: f64,
    /// Seconds of camera rates measured before the switch.
    #[arg(long, default_value_t = 20.0)]
    pub seconds: f64,
    /// The embedder to switch to (default: the bundled crosscam-resnet18-vtest-half).
    #[arg(long)]
    pub candidate: Option<PathBuf>,
    /// `[models] reembed_pause_ms` for the switch.
    #[arg(long, default_value_t = 0)]
    pub pause_ms: u64,
    /// `[models] reembed_nice` for the switch (0–19; default: the config's, 10 unless set).
    #[arg(long)]
    pub nice: Option<i32>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct BenchClusterArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Camera counts, one step each (a fresh core and stream per step).
    #[arg(long, value_delimiter = ',', default_values_t = [50usize, 100, 200, 400, 700, 1000])]
    pub cameras: Vec<usize>,
    /// Seconds each step publishes.
    #[arg(long, default_value_t = 20.0)]
    pub seconds: f64,
    /// People in view of each camera at once (open tracklets); the bundled vtest clip has 5.6
    /// on average (30 tracklets of 14.9 s in 79.5 s).
    #[arg(long, default_value_t = 6)]
    pub people: usize,
    /// Mean tracklet length, seconds (vtest: 14.9).
    #[arg(long, default_value_t = 15.0)]
    pub tracklet_s: f64,
    /// Seconds between two descriptions of an open tracklet (the tracker's update every 25
    /// analysed frames: 5 s at 5 frames/s).
    #[arg(long, default_value_t = 5.0)]
    pub update_s: f64,
    /// Crops per observation at most (the daemon's `track.crops_per_tracklet` is 8).
    #[arg(long, default_value_t = 8)]
    pub crops: usize,
    /// An existing broker, nats://host:port (default: .deps/nats/nats-server started here).
    #[arg(long)]
    pub nats: Option<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct BenchLinkingArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// The clip the virtual cameras are cut from (default: the bundled vtest clip).
    #[arg(long)]
    pub video: Option<PathBuf>,
    /// Which camera pair: `vtest-hard` (a, then b through another view, colours and blur) or
    /// `demo` (the demo's entrance and plaza).
    #[arg(long, value_enum, default_value = "vtest-hard")]
    pub pair: crate::bench::linking::PairKind,
    /// Embedder (manifest name or ONNX file); default: the config's `models.embedder`.
    #[arg(long)]
    pub embedder: Option<String>,
    /// Clip offsets in seconds, one run each (their spread is the run-to-run spread).
    #[arg(long, value_delimiter = ',', default_values_t = [0.0f64, 2.0, 4.0])]
    pub offsets: Vec<f64>,
    /// MOTChallenge ground truth of the clip (`frame,id,x,y,w,h,...`, frames from 1, boxes in
    /// the clip's pixels); default: pseudo ground truth from tracking the continuous clip.
    #[arg(long)]
    pub gt: Option<PathBuf>,
    /// Frame rate of the --gt file's frame numbers.
    #[arg(long, default_value_t = 10.0)]
    pub gt_fps: f64,
    /// Analysed frames per second (the daemon's `analysis.fps`).
    #[arg(long, default_value_t = 5)]
    pub fps: u32,
    /// Analysis width in pixels (the daemon's `analysis.width`).
    #[arg(long, default_value_t = 640)]
    pub width: u32,
    /// Link thresholds of the precision–recall curve: FROM:TO:STEP.
    #[arg(long, default_value = "0.40:0.98:0.02")]
    pub thresholds: String,
    /// Write the precision–recall curve here (SVG).
    #[arg(long)]
    pub svg: Option<PathBuf>,
    /// Write the first run's described tracklets with their ground-truth people here (JSON
    /// lines): a fixture for replaying the linker without video or models.
    #[arg(long)]
    pub record: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

fn parse_range(s: &str) -> Result<Vec<f32>> {
    let bad = || {
        anyhow::anyhow!(
            "--thresholds {s:?}: expected FROM:TO:STEP, e.g. 0.40:0.98:0.02, within 0..1"
        )
    };
    let v: Vec<f32> = s
        .split(':')
        .map(|x| x.trim().parse::<f32>().map_err(|_| bad()))
        .collect::<Result<_>>()?;
    let [from, to, step] = v[..] else {
        return Err(bad());
    };
    if !(0.0..=1.0).contains(&from) || !(0.0..=1.0).contains(&to) || from > to || step <= 0.0 {
        return Err(bad());
    }
    let n = ((to - from) / step + 1e-4).floor() as usize;
    if n > 1000 {
        return Err(anyhow::anyhow!("--thresholds {s:?}: more than 1000 steps"));
    }
    Ok((0..=n).map(|i| from + step * i as f32).collect())
}

fn run_bench_linking(a: BenchLinkingArgs) -> Result<ExitCode> {
    let mut cfg = a.config.load()?;
    if let Some(e) = a.embedder {
        cfg.models.embedder = e;
    }
    let opts = crate::bench::linking::LinkingBenchOptions {
        video: a
            .video
            .unwrap_or_else(|| crate::paths::media("vtest-h264.mp4")),
        pair: a.pair,
        offsets: a.offsets,
        gt: a.gt,
        gt_fps: a.gt_fps,
        fps: a.fps,
        width: a.width,
        thresholds: parse_range(&a.thresholds)?,
        record: a.record,
        quiet: a.json,
    };
    anyhow::ensure!(
        opts.gt_fps.is_finite() && opts.gt_fps > 0.0,
        "--gt-fps must be a positive number"
    );
    let r = crate::bench::linking::linking(&cfg, &opts)?;
    if let Some(p) = &a.svg {
        std::fs::write(p, crate::bench::linking::curve_svg(&r))
            .map_err(|e| anyhow::anyhow!("cannot write --svg {}: {e}", p.display()))?;
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        print!("{}", crate::bench::linking::render_linking(&r));
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Args, Debug)]
pub struct BenchApiArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Seconds per phase (without clients, with clients).
    #[arg(long, default_value_t = 30.0)]
    pub seconds: f64,
    /// WebSocket clients.
    #[arg(long, default_value_t = 200)]
    pub clients: usize,
    /// Seconds of wrk per endpoint (0 = no HTTP load).
    #[arg(long, default_value_t = 10)]
    pub wrk_seconds: u32,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct BenchOutputsArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Real-time vtest cameras.
    #[arg(long, default_value_t = 4)]
    pub cameras: usize,
    /// Seconds per phase.
    #[arg(long, default_value_t = 20.0)]
    pub seconds: f64,
    /// Rounds of (receiver up, receiver down).
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct BenchGalleryArgs {
    /// Gallery sizes (prototype vectors) to measure.
    #[arg(long, value_delimiter = ',', default_values_t = [10_000usize, 100_000, 1_000_000])]
    pub sizes: Vec<usize>,
    /// Vector dimension.
    #[arg(long, default_value_t = 512)]
    pub dim: usize,
    /// Vector dimension for sizes of a million and more (1M × 512 floats is 2 GB per copy).
    #[arg(long, default_value_t = 128)]
    pub dim_large: usize,
    /// Timed queries per index and size (each timed alone).
    #[arg(long, default_value_t = 1000)]
    pub queries: usize,
    /// Stop timing exact queries after this many seconds (at least 50 are timed).
    #[arg(long, default_value_t = 60.0)]
    pub max_exact_seconds: f64,
    /// HNSW links per node.
    #[arg(long, default_value_t = 16)]
    pub m: usize,
    #[arg(long, default_value_t = 200)]
    pub ef_construction: usize,
    /// ef_construction for sizes of a million and more (the build is the long part).
    #[arg(long, default_value_t = 100)]
    pub ef_construction_large: usize,
    #[arg(long, default_value_t = 64)]
    pub ef_search: usize,
    /// Identities in the memory-per-identity measurement (0 = skip).
    #[arg(long, default_value_t = 2000)]
    pub identities: usize,
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Internal: measure only the memory of one gallery (`exact` or `hnsw`) and print it as
    /// JSON (the benchmark runs each in its own process).
    #[arg(long, hide = true)]
    pub memory_only: Option<String>,
}

fn run_bench_gallery(a: BenchGalleryArgs) -> Result<ExitCode> {
    if a.dim == 0 || a.dim_large == 0 || a.m < 2 || a.m > 128 || a.ef_search == 0 {
        anyhow::bail!("--dim, --dim-large and --ef-search must be positive and --m within 2..=128");
    }
    let opts = crate::bench::GalleryBenchOptions {
        sizes: a.sizes,
        dim: a.dim,
        dim_large: a.dim_large,
        queries: a.queries.max(1),
        max_exact_seconds: a.max_exact_seconds,
        hnsw: crate::gallery::HnswParams {
            m: a.m,
            ef_construction: a.ef_construction.max(a.m),
            ef_search: a.ef_search,
            ..Default::default()
        },
        ef_construction_large: a.ef_construction_large.max(a.m),
        identities: a.identities,
        memory_subprocess: true,
        seed: a.seed,
        quiet: a.json || a.memory_only.is_some(),
    };
    if let Some(kind) = a.memory_only {
        let kind = match kind.as_str() {
            "exact" => crate::config::IndexChoice::Exact,
            "hnsw" => crate::config::IndexChoice::Hnsw,
            other => anyhow::bail!("--memory-only takes exact or hnsw, not {other:?}"),
        };
        let row = crate::bench::gallery::measure_memory(kind, &opts)?;
        println!("{}", serde_json::to_string(&row)?);
        return Ok(ExitCode::SUCCESS);
    }
    let r = crate::bench::gallery(&opts)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        print!("{}", crate::bench::render_gallery(&r));
    }
    Ok(ExitCode::SUCCESS)
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

fn run_bench_train(a: BenchTrainArgs) -> Result<ExitCode> {
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
    /// Detector models to compare side by side (manifest names or ONNX files; the first is the
    /// reference). Without it, the config's detector is timed alone at each --batch.
    #[arg(long = "model")]
    pub models: Vec<String>,
    /// With --model: the manifest naming the models (default: the config's).
    #[arg(long)]
    pub manifest: Option<PathBuf>,
    /// With --model: timed rounds (each runs every model once, alternating the order).
    #[arg(long, default_value_t = 20)]
    pub rounds: usize,
    /// With --model: untimed warm-up rounds.
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// With --model: intra-op threads per session (0 = one per core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// With --model: how frames are placed into the input, `square` (letterboxed to 416×416) or
    /// `fit` (the short side padded only to a multiple of 32); repeat to time both in the same
    /// rounds, the later ones scored against the first (default: the config's `[detect] input`).
    #[arg(long = "input", value_enum)]
    pub inputs: Vec<crate::config::DetectInput>,
    /// With --model: the input's long side in pixels (a multiple of 32); repeat to time several
    /// in the same rounds (default: the config's `[detect] size`, else the model's own).
    #[arg(long = "size", value_parser = parse_detect_size)]
    pub sizes: Vec<u32>,
    /// Where the models run: `cuda` (the GPU ONNX Runtime with CUDA, or fail), `cpu`, or `auto`
    /// (default: the config's `[runtime] device`). One device per run: run it once with each.
    #[arg(long, value_enum)]
    pub device: Option<crate::config::DevicePref>,
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
    /// Start the real-time search at this many cameras (fewer are not measured).
    #[arg(long, default_value_t = 1)]
    pub from_cameras: usize,
    #[command(flatten)]
    pub analysis: AnalysisArgs,
    #[arg(long)]
    pub json: bool,
}

/// The detection schedule and the scene, for the camera benchmarks.
#[derive(Args, Debug)]
pub struct AnalysisArgs {
    /// Run the detector on every N-th analysed frame (overrides `[analysis] detect_every`).
    #[arg(long, value_name = "N")]
    pub detect_every: Option<u32>,
    /// Skip detection on frames where nothing moved (overrides `[analysis] motion_gate`).
    #[arg(long)]
    pub motion_gate: bool,
    /// What the cameras play: `vtest` (the bundled street clip) or `static` (the same clip with
    /// 24 s of a frozen frame after every 8 s of it: a mostly static scene).
    #[arg(long, default_value = "vtest")]
    pub scene: String,
}

impl AnalysisArgs {
    /// Applies the flags to `cfg` (validated like the config file) and returns the scene's video.
    fn apply(&self, cfg: &mut crate::config::Config) -> Result<std::path::PathBuf> {
        if let Some(n) = self.detect_every {
            cfg.analysis.detect_every = super::detect_every_flag(n)?;
        }
        cfg.analysis.motion_gate |= self.motion_gate;
        crate::bench::tracking::scene_video(
            &self.scene,
            &std::env::temp_dir().join("crosscam-bench-scenes"),
        )
    }
}

#[derive(Args, Debug)]
pub struct BenchTrackingArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// The video to track (default: the scene's).
    #[arg(long)]
    pub video: Option<PathBuf>,
    /// `vtest` or `static` (see `bench pipeline --scene`), when no --video is given.
    #[arg(long, default_value = "vtest")]
    pub scene: String,
    /// MOTChallenge ground truth for the analysed frames (frames numbered from 1). Without it,
    /// every setting is scored against the every-frame run.
    #[arg(long)]
    pub gt: Option<PathBuf>,
    /// Analysed frames per second (0 = every frame of the video). With --detections or
    /// --tracker-only: the frame rate of the sequence after --stride (the tracker's clock).
    #[arg(long, default_value_t = 5)]
    pub fps: u32,
    /// Frames scaled to this width (0 = as is).
    #[arg(long, default_value_t = 640)]
    pub width: u32,
    /// Compare only these `detect_every` values (each also with the motion gate); default 2 and 3,
    /// the motion gate alone, and 2 with the motion gate.
    #[arg(long = "detect-every", value_name = "N")]
    pub detect_every: Vec<u32>,
    /// Tracker only, no video: with --gt, use this MOTChallenge detection file; without it,
    /// --tracker-only makes detections from the ground truth (--drop, --jitter, --seed).
    #[arg(long, requires = "gt")]
    pub detections: Option<PathBuf>,
    /// Tracker only on --gt with detections made from it (no video, no detector).
    #[arg(long, requires = "gt")]
    pub tracker_only: bool,
    /// Tracker only: also run the motion gate (alone and with each --detect-every) on frames
    /// drawn from the ground truth (each person a box of their own colour on a still
    /// background, with a little noise).
    #[arg(long, requires = "gt")]
    pub motion_gate: bool,
    /// Tracker only: a mostly still sequence: after every WALK frames (after --stride) the scene
    /// stands still for STILL frames (`WALK:STILL`, e.g. 40:120 at 5 frames/s: 8 s moving, 24 s
    /// still).
    #[arg(long, value_name = "WALK:STILL", requires = "gt")]
    pub freeze: Option<String>,
    /// Tracker only: keep every K-th frame of the sequence (a 25 fps sequence at 5 is 5 frames/s).
    #[arg(long, default_value_t = 1)]
    pub stride: u64,
    /// Made-up detections: share of ground-truth boxes dropped.
    #[arg(long, default_value_t = 0.1)]
    pub drop: f32,
    /// Made-up detections: jitter of each edge, as a share of the box's width or height.
    #[arg(long, default_value_t = 0.05)]
    pub jitter: f32,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
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
    /// Where the models run: `cuda` (the GPU ONNX Runtime with CUDA, or fail), `cpu`, or `auto`
    /// (default). One device per run: run it once with each.
    #[arg(long, value_enum)]
    pub device: Option<crate::config::DevicePref>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
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

fn parse_detect_size(v: &str) -> Result<u32, String> {
    let n: u32 = v
        .parse()
        .map_err(|_| format!("expected a number of pixels, found '{v}'"))?;
    crate::config::DetectSettings::check_size(n)
}

pub fn run(cmd: BenchCommand) -> Result<ExitCode> {
    match cmd {
        BenchCommand::Eval(a) => return run_bench_eval(a),
        BenchCommand::Train(a) => return run_bench_train(a),
        BenchCommand::Gallery(a) => return run_bench_gallery(a),
        BenchCommand::Linking(a) => return run_bench_linking(a),
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
        BenchCommand::Detect(a) if !a.models.is_empty() => {
            let mut cfg = a.config.load()?;
            if let Some(d) = a.device {
                cfg.runtime.device = d;
            }
            let rt = crate::runtime::init(&cfg.runtime)?;
            let manifest = crate::models::Manifest::load(
                a.manifest.as_deref().unwrap_or(&cfg.models.manifest),
            )?;
            let frames = crate::bench::sample_frames(16, a.width)?;
            let opts = crate::bench::detect::DetectBenchOptions {
                batch: a.batch.first().copied().unwrap_or(1),
                rounds: a.rounds.max(1),
                warmup: a.warmup,
                threads: a.threads,
                quiet: a.json,
                inputs: if a.inputs.is_empty() {
                    vec![cfg.detect.input]
                } else {
                    a.inputs.clone()
                },
                sizes: if a.sizes.is_empty() {
                    vec![cfg.detect.size]
                } else {
                    a.sizes.iter().map(|&n| Some(n)).collect()
                },
            };
            // boxes are compared on 40 frames spread over the clip's first 40 s (every 5th at 5 fps)
            let check: Vec<_> = crate::bench::sample_frames(200, a.width)?
                .into_iter()
                .step_by(5)
                .collect();
            let r = crate::bench::detect::detect_models(
                rt, &manifest, &a.models, &frames, &check, &opts,
            )?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                print!("{}", crate::bench::detect::render_detect(&r));
            }
        }
        BenchCommand::Detect(a) => {
            let mut cfg = a.config.load()?;
            if let Some(d) = a.device {
                cfg.runtime.device = d;
            }
            let frames = crate::bench::sample_frames(16, a.width)?;
            let mut rs = Vec::new();
            for &b in &a.batch {
                let r = crate::bench::detect(&cfg, b, a.seconds, &frames)?;
                if !a.json {
                    println!(
                        "{} batch {} on {}: {:.1} ms/frame ({:.1} frames/s, {} frames)",
                        r.model,
                        r.batch,
                        crate::runtime::get().map_or(crate::runtime::Device::Cpu, |rt| rt.device()),
                        r.ms_per_frame,
                        r.frames_per_second,
                        r.frames
                    );
                }
                rs.push(r);
            }
            if a.json {
                println!("{}", serde_json::to_string_pretty(&rs)?);
            }
        }
        BenchCommand::Cluster(a) => {
            let cfg = a.config.load()?;
            let r = crate::bench::cluster(
                &cfg,
                &crate::bench::ClusterBenchOptions {
                    cameras: a.cameras.clone(),
                    seconds: a.seconds,
                    people: a.people,
                    tracklet_s: a.tracklet_s,
                    update_s: a.update_s,
                    crops: a.crops,
                    nats: a.nats.clone(),
                },
            )?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                print!("{}", crate::bench::render_cluster(&r));
            }
        }
        BenchCommand::Switch(a) => {
            let cfg = a.config.load()?;
            let r = crate::bench::switch(
                &cfg,
                a.crops,
                a.collect_seconds,
                a.seconds,
                a.candidate.clone(),
                a.pause_ms,
                a.nice.unwrap_or(cfg.models.reembed_nice),
            )?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                print!("{}", crate::bench::render_switch(&r));
            }
        }
        BenchCommand::Api(a) => {
            let cfg = a.config.load()?;
            let r = crate::bench::api(&cfg, a.seconds, a.clients, a.wrk_seconds)?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                print!("{}", crate::bench::render_api(&r));
            }
        }
        BenchCommand::Outputs(a) => {
            let cfg = a.config.load()?;
            let r = crate::bench::outputs(&cfg, a.cameras.max(1), a.seconds, a.rounds.max(1))?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                println!(
                    "{} cameras, {} rounds of {:.0} s: receiver up {:.2} frames/s per camera, down {:.2} ({:+.1} %); {} deliveries, at most {} queued",
                    r.cameras,
                    r.rounds,
                    r.seconds_per_phase,
                    r.fps_up,
                    r.fps_down,
                    r.change * 100.0,
                    r.delivered,
                    r.max_queued
                );
            }
        }
        BenchCommand::MotSequence(a) => {
            anyhow::ensure!(
                a.frames >= 1 && a.frames <= 1_000_000,
                "--frames: expected 1 to 1000000, found {}",
                a.frames
            );
            anyhow::ensure!(
                a.fps.is_finite() && a.fps >= 1.0 && a.fps <= 240.0,
                "--fps: expected 1 to 240, found {}",
                a.fps
            );
            anyhow::ensure!(
                a.people >= 1 && a.people <= 10_000,
                "--people: expected 1 to 10000, found {}",
                a.people
            );
            for (name, v, hi) in [
                ("--miss", a.miss, 1.0),
                ("--jitter", a.jitter, 0.5),
                ("--false-positives", a.false_positives, 20.0),
            ] {
                anyhow::ensure!(
                    v.is_finite() && (0.0..=hi).contains(&v),
                    "{name}: expected 0 to {hi}, found {v}"
                );
            }
            let o = crate::bench::sequence::SequenceOptions {
                seed: a.seed,
                frames: a.frames,
                fps: a.fps,
                people: a.people,
                miss: a.miss,
                jitter: a.jitter,
                false_positives: a.false_positives,
                ..Default::default()
            };
            let seq = match &a.from_gt {
                Some(p) => {
                    let rows = crate::track::mot::read(p)?;
                    anyhow::ensure!(!rows.is_empty(), "{}: no ground-truth boxes", p.display());
                    crate::bench::sequence::from_ground_truth(&rows, &o)
                }
                None => crate::bench::sequence::make(&o),
            };
            crate::bench::sequence::write(&seq, &a.out)?;
            let people: std::collections::BTreeSet<u32> = seq.truth.iter().map(|t| t.id).collect();
            println!(
                "{}: {} frames, {} people, {} true boxes, {} detections",
                a.out.display(),
                seq.truth.iter().map(|t| t.frame).max().unwrap_or(0),
                people.len(),
                seq.truth.len(),
                seq.detections.len()
            );
        }
        BenchCommand::Tracking(a) if a.detections.is_some() || a.tracker_only => {
            let cfg = a.config.load()?;
            anyhow::ensure!(
                a.video.is_none(),
                "--detections / --tracker-only track a detection file, not --video"
            );
            let gt = a.gt.clone().expect("clap requires --gt");
            for &n in &a.detect_every {
                super::detect_every_flag(n)?;
            }
            let r = crate::bench::tracking::tracking_detections(
                &cfg,
                &crate::bench::tracking::DetectionBenchOptions {
                    gt,
                    detections: a.detections.clone(),
                    stride: a.stride,
                    every: if a.detect_every.is_empty() {
                        vec![2, 3]
                    } else {
                        a.detect_every.clone()
                    },
                    drop: a.drop,
                    jitter: a.jitter,
                    seed: a.seed,
                    fps: a.fps as f64,
                    motion_gate: a.motion_gate,
                    freeze: a.freeze.as_deref().map(parse_freeze).transpose()?,
                },
            )?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                print!("{}", crate::bench::tracking::render_tracking(&r));
            }
        }
        BenchCommand::Tracking(a) => {
            let mut cfg = a.config.load()?;
            let video = match &a.video {
                Some(v) => v.clone(),
                None => crate::bench::tracking::scene_video(
                    &a.scene,
                    &std::env::temp_dir().join("crosscam-bench-scenes"),
                )?,
            };
            let settings = if a.detect_every.is_empty() {
                crate::bench::tracking::default_settings(&cfg)
            } else {
                let mut v = Vec::new();
                for &n in &a.detect_every {
                    cfg.analysis.detect_every = super::detect_every_flag(n)?;
                    cfg.analysis.motion_gate = false;
                    v.push((format!("detect_every={n}"), (&cfg.analysis).into()));
                    cfg.analysis.motion_gate = true;
                    v.push((
                        format!("detect_every={n}+motion_gate"),
                        (&cfg.analysis).into(),
                    ));
                }
                v
            };
            let r = crate::bench::tracking::tracking(
                &cfg,
                &crate::bench::tracking::TrackingBenchOptions {
                    video,
                    gt: a.gt.clone(),
                    fps: (a.fps > 0).then_some(a.fps),
                    width: (a.width > 0).then_some(a.width),
                    settings,
                    quiet: a.json,
                },
            )?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                print!("{}", crate::bench::tracking::render_tracking(&r));
            }
        }
        BenchCommand::Pipeline(a) => {
            let mut cfg = a.config.load()?;
            let video = a.analysis.apply(&mut cfg)?;
            let r = crate::bench::pipeline(
                &cfg,
                a.fps,
                a.width,
                a.seconds,
                a.max_cameras,
                a.from_cameras,
                Some(&video),
            )?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                println!(
                    "{} at {} fps, width {}; detector on every {} frame(s){}",
                    r.video,
                    r.analysis_fps,
                    r.width,
                    r.detect_every,
                    if r.motion_gate {
                        " when something moved"
                    } else {
                        ""
                    }
                );
                println!(
                    "bare detector (batch {}): {:.1} frames/s\n\
                     {} saturated test:black cameras -> tracklets: {:.1} frames/s => plumbing ratio {:.3}\n\
                     {} saturated vtest cameras -> tracklets: {:.1} frames/s => {:.3} (H.264 decoding shares the cores)\n\
                     {} saturated vtest cameras, whole daemon (re-id and linking too): {:.1} frames/s (mean batch {:.2}) => {:.3}",
                    r.bare_detector.batch,
                    r.bare_detector.frames_per_second,
                    r.saturated.cameras,
                    r.plumbing_fps,
                    r.plumbing_ratio,
                    r.saturated.cameras,
                    r.tracking_only_fps,
                    r.tracking_ratio,
                    r.saturated.cameras,
                    r.saturated.total_fps,
                    r.saturated.mean_batch,
                    r.daemon_ratio
                );
                for c in &r.runs {
                    println!(
                        "{} cameras at {} fps: slowest {:.2} fps, mean {:.2}, dropped {:.1}%, {}; \
                         detector {:.1} frames/s; {:.1} crops/s embedded (mean batch {:.1}); frame to identity p50 {} ms, p99 {} ms ({} decisions)",
                        c.cameras,
                        r.analysis_fps,
                        c.min_camera_fps,
                        c.mean_camera_fps,
                        c.drop_rate * 100.0,
                        if c.real_time {
                            "real time"
                        } else {
                            "NOT real time"
                        },
                        c.detected_fps,
                        c.crops_per_second,
                        c.mean_embed_batch,
                        c.latency_p50_ms,
                        c.latency_p99_ms,
                        c.latency_samples
                    );
                }
                println!("most cameras in real time: {}", r.max_real_time_cameras);
            }
        }
        BenchCommand::Embed(a) => {
            let rt = crate::runtime::init(&crate::config::RuntimeSettings {
                device: a.device.unwrap_or_default(),
                ..Default::default()
            })?;
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

/// `--freeze WALK:STILL`: two whole numbers, WALK at least 1.
fn parse_freeze(v: &str) -> Result<(u64, u64)> {
    let bad = || {
        anyhow::anyhow!(
            "--freeze {v:?}: expected WALK:STILL, two whole numbers of frames (WALK at least 1), e.g. 40:120"
        )
    };
    let (a, b) = v.split_once(':').ok_or_else(bad)?;
    let (walk, still) = (
        a.trim().parse::<u64>().map_err(|_| bad())?,
        b.trim().parse::<u64>().map_err(|_| bad())?,
    );
    anyhow::ensure!((1..=1_000_000).contains(&walk) && still <= 1_000_000, bad());
    Ok((walk, still))
}
