//! Training throughput: a few real training steps (augmentation, forward, BoT losses, backward,
//! Adam) of a ResNet at a given width on synthetic crops, timed per step, with the process's peak
//! resident memory. `crosscam bench train` prints it; docs/PERFORMANCE.md records it.

use std::time::Instant;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use super::TrainError;
use super::augment::AugmentConfig;
use super::batch::assemble;
use super::device;
use super::layout::NetLayout;
use super::model::ReidModel;
use super::sampler::PkConfig;
use super::trainer::{DecayKind, TrainConfig, TrainData, Trainer};
use crate::frame::Normalize;
use crate::onnx::resnet::ResNetSpec;

#[derive(Clone, Debug)]
pub struct BenchConfig {
    /// `resnet18`, `resnet34` or `resnet50` (re-id variant: last stride 1, BNNeck).
    pub arch: String,
    /// Width multiplier of every layer (`ResNetSpec::scaled`: a smaller network).
    pub width: f64,
    /// Width multiplier of the block-internal convs only, rounded to multiples of 8 (what pruning
    /// the free convs gives: 0.5 halves a ResNet-18's MACs).
    pub inner_width: f64,
    pub batch: usize,
    /// Timed steps (one more untimed warm-up step runs first).
    pub steps: usize,
    pub input_hw: (usize, usize),
    pub want_gpu: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    pub arch: String,
    pub width: f64,
    pub inner_width: f64,
    pub batch: usize,
    pub input: [usize; 2],
    pub backend: device::Backend,
    pub threads: usize,
    pub params: u64,
    pub gmacs: f64,
    pub warmup_seconds: f64,
    pub step_seconds: Vec<f64>,
    pub mean_step_seconds: f64,
    pub images_per_second: f64,
    /// Peak resident set size of the process (VmHWM), MiB.
    pub peak_rss_mib: f64,
}

/// Runs the benchmark.
pub fn run(cfg: &BenchConfig) -> Result<BenchReport, TrainError> {
    let spec = ResNetSpec::by_name(&cfg.arch)
        .ok_or_else(|| TrainError::Invalid(format!("unknown architecture '{}'", cfg.arch)))?
        .for_reid()
        .scaled(cfg.width)
        .with_input(cfg.input_hw.0, cfg.input_hw.1);
    let mut spec = spec;
    if cfg.inner_width != 1.0 {
        for c in spec.inner_widths.iter_mut().flatten().flatten() {
            *c = ((*c as f64 * cfg.inner_width / 8.0).round() as usize).max(1) * 8;
        }
    }
    let layout = NetLayout::from_spec(&spec, true);
    let params = layout
        .convs()
        .iter()
        .map(|c| (c.macs_per_pixel() + 2 * c.cout) as u64)
        .sum::<u64>()
        + 2 * layout.feature_dim() as u64;
    let gmacs = layout.conv_macs() as f64 / 1e9;
    let (dev, backend) = device::select(cfg.want_gpu);
    let model = ReidModel::fresh(layout, 1, &dev);
    // synthetic crops: P identities × K = 4 crops of noise
    let k = 4.min(cfg.batch).max(1);
    let p = (cfg.batch / k).max(1);
    let mut rng = StdRng::seed_from_u64(2);
    let (h, w) = cfg.input_hw;
    let images: Vec<image::RgbImage> = (0..p * k)
        .map(|_| image::RgbImage::from_fn(w as u32, h as u32, |_, _| image::Rgb(rng.random())))
        .collect();
    let labels: Vec<i64> = (0..p * k).map(|i| (i / k) as i64).collect();
    let data = TrainData::labelled(&images, &labels, cfg.input_hw, Normalize::IMAGENET)?;
    let config = TrainConfig {
        epochs: 1,
        steps_per_epoch: cfg.steps as u64 + 1,
        pk: PkConfig { p, k },
        warmup: 0.0,
        decay: DecayKind::None,
        ..TrainConfig::default()
    };
    let mut trainer = Trainer::new(model, &data, config, None)?;
    let idx: Vec<usize> = (0..p * k).collect();
    let mut times = Vec::new();
    for _ in 0..=cfg.steps {
        let t0 = Instant::now();
        let batch = assemble(
            &data.set,
            &idx,
            &AugmentConfig::default(),
            &data.norm,
            &mut rng,
            false,
        );
        trainer.train_step(&batch, None, None);
        times.push(t0.elapsed().as_secs_f64());
    }
    let warmup_seconds = times.remove(0);
    let mean = times.iter().sum::<f64>() / times.len().max(1) as f64;
    Ok(BenchReport {
        arch: cfg.arch.clone(),
        width: cfg.width,
        inner_width: cfg.inner_width,
        batch: p * k,
        input: [h, w],
        backend,
        threads: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        params,
        gmacs,
        warmup_seconds,
        step_seconds: times,
        mean_step_seconds: mean,
        images_per_second: (p * k) as f64 / mean.max(1e-9),
        peak_rss_mib: peak_rss_mib().unwrap_or(0.0),
    })
}

/// Peak resident set size of this process in MiB (Linux `VmHWM`).
pub fn peak_rss_mib() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// A table row for docs/PERFORMANCE.md.
pub fn render(r: &BenchReport) -> String {
    format!(
        "{} ×{} (inner ×{}) {}×{} batch {} on {}: {:.2} GMACs/img, {:.2} M params; {:.2} s/step ({} steps after a \
         {:.2} s warm-up) = {:.1} images/s; peak RSS {:.0} MiB\n",
        r.arch,
        r.width,
        r.inner_width,
        r.input[0],
        r.input[1],
        r.batch,
        r.backend,
        r.gmacs,
        r.params as f64 / 1e6,
        r.mean_step_seconds,
        r.step_seconds.len(),
        r.warmup_seconds,
        r.images_per_second,
        r.peak_rss_mib
    )
}
