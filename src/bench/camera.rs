//! Camera-path benchmarks: decoding, the bare detector, and cameras → tracklets end to end.
//! Each prints a table (or JSON) of what was measured, on this machine, in one run.

use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::config::{Config, DetectSettings};
use crate::frame::Frame;
use crate::ingest::{CameraState, VideoReader};
use crate::runtime::{self, SessionOptions};
use crate::server::Server;

#[derive(Debug, Serialize)]
pub struct DecodeResult {
    pub video: String,
    /// Every frame decoded and converted to RGB at the analysis width.
    pub all_frames_fps: f64,
    /// Every frame decoded, only `analysis_fps` per second of video converted (videorate first).
    pub sampled_fps: f64,
    pub analysis_fps: u32,
    pub width: u32,
    /// Seconds of video processed per second of wall time, sampled pipeline (= real-time cameras per core pair).
    pub sampled_speed: f64,
}

fn read_all(
    video: &Path,
    fps: Option<u32>,
    width: u32,
) -> anyhow::Result<(u64, Duration, Duration)> {
    let t0 = Instant::now();
    let mut n = 0;
    let mut last_pts = Duration::ZERO;
    for f in VideoReader::open(video, fps, Some(width))? {
        let f = f?;
        last_pts = f.pts;
        n += 1;
    }
    Ok((n, t0.elapsed(), last_pts))
}

/// Decode + convert throughput of one camera pipeline on a file.
pub fn decode(video: &Path, fps: u32, width: u32) -> anyhow::Result<DecodeResult> {
    let (n_all, t_all, _) = read_all(video, None, width)?;
    let (n_s, t_s, video_len) = read_all(video, Some(fps), width)?;
    Ok(DecodeResult {
        video: video.display().to_string(),
        all_frames_fps: n_all as f64 / t_all.as_secs_f64(),
        sampled_fps: n_s as f64 / t_s.as_secs_f64(),
        analysis_fps: fps,
        width,
        sampled_speed: video_len.as_secs_f64() / t_s.as_secs_f64(),
    })
}

#[derive(Debug, Serialize)]
pub struct DetectResult {
    pub model: String,
    pub batch: usize,
    pub frames: usize,
    pub ms_per_frame: f64,
    pub frames_per_second: f64,
}

/// `frames` distinct vtest frames at `width`.
pub fn sample_frames(count: usize, width: u32) -> anyhow::Result<Vec<Frame>> {
    let v = crate::paths::media("vtest.avi");
    let frames: Vec<Frame> = VideoReader::open(&v, Some(5), Some(width))?
        .take(count)
        .collect::<Result<_, _>>()?;
    anyhow::ensure!(
        frames.len() == count,
        "{} has fewer than {count} frames",
        v.display()
    );
    Ok(frames)
}

/// Bare detector throughput at `batch` on distinct frames, for about `seconds`.
pub fn detect(
    cfg: &Config,
    batch: usize,
    seconds: f64,
    frames: &[Frame],
) -> anyhow::Result<DetectResult> {
    let rt = runtime::init(&cfg.runtime)?;
    let manifest = crate::models::Manifest::load(&cfg.models.manifest)?;
    let ds = DetectSettings {
        max_batch: batch,
        ..cfg.detect.clone()
    };
    let mut det = crate::detect::open(
        &manifest,
        &cfg.models.detector,
        rt,
        &ds,
        SessionOptions::default(),
    )?;
    // warm-up
    det.detect(&frames.iter().take(batch).collect::<Vec<_>>())?;
    let t0 = Instant::now();
    let mut done = 0usize;
    let mut i = 0usize;
    while t0.elapsed().as_secs_f64() < seconds {
        let b: Vec<&Frame> = (0..batch)
            .map(|k| &frames[(i + k) % frames.len()])
            .collect();
        i += batch;
        det.detect(&b)?;
        done += batch;
    }
    let secs = t0.elapsed().as_secs_f64();
    Ok(DetectResult {
        model: cfg.models.detector.clone(),
        batch,
        frames: done,
        ms_per_frame: secs * 1e3 / done as f64,
        frames_per_second: done as f64 / secs,
    })
}

#[derive(Debug, Serialize)]
pub struct CameraRun {
    pub cameras: usize,
    pub seconds: f64,
    /// Analysed frames per second, slowest camera.
    pub min_camera_fps: f64,
    pub mean_camera_fps: f64,
    /// Dropped / delivered frames over all cameras.
    pub drop_rate: f64,
    pub total_fps: f64,
    /// Frames per second the detector ran on (less than `total_fps` with `[analysis]
    /// detect_every` or `motion_gate`).
    pub detected_fps: f64,
    pub mean_batch: f64,
    pub real_time: bool,
    /// Crops embedded per second and mean embedding batch.
    pub crops_per_second: f64,
    pub mean_embed_batch: f64,
    /// Frame-to-identity latency (ms): a tracklet's last box to its identity decision.
    pub latency_p50_ms: u64,
    pub latency_p99_ms: u64,
    pub latency_samples: usize,
}

#[derive(Debug, Serialize)]
pub struct PipelineResult {
    pub analysis_fps: u32,
    pub width: u32,
    /// What the cameras play.
    pub video: String,
    pub detect_every: u32,
    pub motion_gate: bool,
    pub bare_detector: DetectResult,
    /// Saturated run of the whole daemon (more cameras than the detector can serve).
    pub saturated: CameraRun,
    /// Saturated cameras → tracklets only (no re-id): detector frames per second.
    pub tracking_only_fps: f64,
    /// Cameras → tracklets detector throughput / bare detector throughput (H.264 decoding of
    /// every camera shares the cores).
    pub tracking_ratio: f64,
    /// The same with `test:black` cameras (next to free to produce): what the plumbing itself
    /// (queues, scaling, conversion, batching, tracking) costs the detector.
    pub plumbing_fps: f64,
    pub plumbing_ratio: f64,
    /// The whole daemon's detector throughput / bare detector throughput (re-id and linking
    /// share the cores with the detector).
    pub daemon_ratio: f64,
    pub runs: Vec<CameraRun>,
    /// Most cameras kept in real time (every camera ≥ 95 % of its rate, < 5 % dropped).
    pub max_real_time_cameras: usize,
}

/// `n` cameras playing `video` (default the vtest clip) in real time, or `source` (a camera URL)
/// when given; analysed with `cfg`'s detection schedule (`[analysis] detect_every`, `motion_gate`).
fn camera_config(
    cfg: &Config,
    n: usize,
    fps: u32,
    width: u32,
    source: Option<&str>,
    video: Option<&Path>,
) -> anyhow::Result<Config> {
    let video = video
        .map(Path::to_path_buf)
        .unwrap_or_else(|| crate::paths::media("vtest-h264.mp4"));
    let url = source
        .map(str::to_string)
        .unwrap_or_else(|| format!("file://{}", video.display()));
    let mut text = format!(
        "[server]\ndata_dir = \"{}\"\n[models]\nmanifest = \"{}\"\ndetector = \"{}\"\n[analysis]\nfps = {fps}\nwidth = {width}\ndetect_every = {}\nmotion_gate = {}\nmotion_threshold = {}\nmotion_max_skip = {}\n[detect]\nmax_batch = {}\n",
        std::env::temp_dir()
            .join(format!("crosscam-bench-{}", std::process::id()))
            .display(),
        cfg.models.manifest.display(),
        cfg.models.detector,
        cfg.analysis.detect_every,
        cfg.analysis.motion_gate,
        cfg.analysis.motion_threshold,
        cfg.analysis.motion_max_skip,
        cfg.detect.max_batch
    );
    for i in 0..n {
        text.push_str(&format!("[[cameras]]\nid = \"cam{i}\"\nurl = \"{url}\"\n"));
        if source.is_none() {
            text.push_str("realtime = true\nloop_file = true\n");
        }
    }
    Ok(Config::parse(
        &text,
        &crate::paths::project_root().join("config/bench.toml"),
    )?)
}

/// `n` real-time vtest cameras (the API benchmark's site), camera k starting 30·k s in.
pub fn camera_config_for_api(cfg: &Config, n: usize) -> anyhow::Result<Config> {
    let mut c = camera_config(cfg, n, 5, 640, None, None)?;
    for (k, cam) in c.cameras.iter_mut().enumerate() {
        cam.start_s = Some(30.0 * k as f64);
    }
    Ok(c)
}

/// Waits until every camera is live (at most 20 s), then 3 s more for the pipeline to settle.
pub(crate) fn warm_up(ingest: &crate::ingest::Ingest) {
    let t_live = Instant::now();
    while ingest.status().iter().any(|s| s.state != CameraState::Live)
        && t_live.elapsed() < Duration::from_secs(20)
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(3));
}

/// Runs `n` real-time cameras playing `video` (default vtest) for `seconds` (after a warm-up) and
/// measures them.
pub fn run_cameras(
    cfg: &Config,
    n: usize,
    fps: u32,
    width: u32,
    seconds: f64,
    video: Option<&Path>,
) -> anyhow::Result<CameraRun> {
    let c = camera_config(cfg, n, fps, width, None, video)?;
    let server = Server::start(&c, None)?;
    warm_up(&server.ingest);
    let s0 = server.status();
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(seconds));
    let s1 = server.status();
    let secs = t0.elapsed().as_secs_f64();
    let mut rates = Vec::new();
    let (mut dropped, mut delivered) = (0u64, 0u64);
    for (a, b) in s0.cameras.iter().zip(&s1.cameras) {
        rates.push((b.analysed - a.analysed) as f64 / secs);
        dropped += b.dropped - a.dropped;
        delivered += b.frames_in - a.frames_in;
    }
    let batches = (s1.analysis.batches - s0.analysis.batches).max(1) as f64;
    let frames = (s1.analysis.frames - s0.analysis.frames) as f64;
    let detected = (s1.analysis.detected_frames - s0.analysis.detected_frames) as f64;
    let crops = (s1.reid.crops - s0.reid.crops) as f64;
    let embed_batches = (s1.reid.batches - s0.reid.batches).max(1) as f64;
    server.shutdown();
    let min = rates.iter().copied().fold(f64::INFINITY, f64::min);
    let drop_rate = dropped as f64 / delivered.max(1) as f64;
    Ok(CameraRun {
        cameras: n,
        seconds: secs,
        min_camera_fps: min,
        mean_camera_fps: rates.iter().sum::<f64>() / n as f64,
        drop_rate,
        total_fps: frames / secs,
        detected_fps: detected / secs,
        mean_batch: detected / batches,
        real_time: min >= 0.95 * fps as f64 && drop_rate < 0.05,
        crops_per_second: crops / secs,
        mean_embed_batch: crops / embed_batches,
        latency_p50_ms: s1.link.latency_p50_ms,
        latency_p99_ms: s1.link.latency_p99_ms,
        latency_samples: s1.link.latency_samples,
    })
}

/// Cameras → tracklets only (ingest, detector, tracker; no re-id, no linking): `n` real-time
/// vtest cameras (or `source` cameras) for `seconds`; the detector frames per second it reaches.
pub fn run_tracking_only(
    cfg: &Config,
    n: usize,
    fps: u32,
    width: u32,
    seconds: f64,
    source: Option<&str>,
    video: Option<&Path>,
) -> anyhow::Result<f64> {
    use std::sync::Arc;
    let c = camera_config(cfg, n, fps, width, source, video)?;
    let rt = runtime::init(&c.runtime)?;
    let manifest = crate::models::Manifest::load(&c.models.manifest)?;
    let detector = crate::detect::open(
        &manifest,
        &c.models.detector,
        rt,
        &c.detect,
        SessionOptions::default(),
    )?;
    let ingest = Arc::new(crate::ingest::Ingest::new(&c, None)?);
    let (tx, rx) = crossbeam_channel::bounded(4096);
    let mut analysis = crate::server::analysis::Analysis::start(
        ingest.queue(),
        ingest.clone(),
        detector,
        c.track.clone(),
        (&c.analysis).into(),
        tx,
        Arc::new(crate::server::Live::default()),
    );
    let drain = std::thread::spawn(move || while rx.recv().is_ok() {});
    for cam in &c.cameras {
        ingest.add(cam.clone())?;
    }
    warm_up(&ingest);
    let f0 = analysis.metrics.snapshot().frames;
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(seconds));
    let frames = analysis.metrics.snapshot().frames - f0;
    let secs = t0.elapsed().as_secs_f64();
    ingest.shutdown();
    analysis.stop();
    drop(analysis);
    let _ = drain.join();
    Ok(frames as f64 / secs)
}

/// The end-to-end pipeline benchmark: bare detector vs saturated pipeline, then the most cameras
/// kept in real time.
pub fn pipeline(
    cfg: &Config,
    fps: u32,
    width: u32,
    seconds: f64,
    max_cameras: usize,
    from_cameras: usize,
    video: Option<&Path>,
) -> anyhow::Result<PipelineResult> {
    let frames = sample_frames(16, width)?;
    let bare = detect(cfg, cfg.detect.max_batch, seconds.min(15.0), &frames)?;
    // cameras enough to saturate the detector (each needs fps / detect_every detections a second)
    let demand = (bare.frames_per_second * cfg.analysis.detect_every as f64 / fps as f64).ceil()
        as usize
        + 2;
    let plumbing_fps = run_tracking_only(
        cfg,
        demand.max(2),
        fps,
        width,
        seconds,
        Some("test:black"),
        None,
    )?;
    let tracking_only_fps =
        run_tracking_only(cfg, demand.max(2), fps, width, seconds, None, video)?;
    let saturated = run_cameras(cfg, demand.max(2), fps, width, seconds, video)?;
    let plumbing_ratio = plumbing_fps / bare.frames_per_second;
    let tracking_ratio = tracking_only_fps / bare.frames_per_second;
    let daemon_ratio = saturated.total_fps / bare.frames_per_second;
    let mut runs = Vec::new();
    let mut max_rt = 0;
    // the search starts at `from_cameras` (real time at n is assumed for fewer; a run that is
    // not real time at the start says so: max_real_time_cameras stays below it)
    for n in from_cameras.max(1)..=max_cameras {
        let r = run_cameras(cfg, n, fps, width, seconds, video)?;
        let ok = r.real_time;
        runs.push(r);
        if ok {
            max_rt = n;
        } else {
            break;
        }
    }
    Ok(PipelineResult {
        analysis_fps: fps,
        width,
        video: video
            .map(Path::to_path_buf)
            .unwrap_or_else(|| crate::paths::media("vtest-h264.mp4"))
            .display()
            .to_string(),
        detect_every: cfg.analysis.detect_every,
        motion_gate: cfg.analysis.motion_gate,
        bare_detector: bare,
        saturated,
        tracking_only_fps,
        tracking_ratio,
        plumbing_fps,
        plumbing_ratio,
        daemon_ratio,
        runs,
        max_real_time_cameras: max_rt,
    })
}
